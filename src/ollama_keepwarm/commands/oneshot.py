"""One-shot work: ``warm`` (the ExecStartPost companion) and ``check``.

Both wait for Ollama, then act once and exit with a status a unit file or a script can use. The
warm is sequential in rank order, like the daemon's first pass, and never cancels a load it
started (a disconnect aborts the load inside Ollama): the overall ``--timeout`` only bounds how
long we wait for Ollama to answer, plus each load's own ``load_timeout``.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from ollama_keepwarm.core import plan
from ollama_keepwarm.core.config import Config, ModelConfig
from ollama_keepwarm.core.options import options_unknown_to
from ollama_keepwarm.core.prime import Prime
from ollama_keepwarm.core.ps import PsSnapshot
from ollama_keepwarm.daemon.state import LoadTimeStore
from ollama_keepwarm.ollama import (
    OllamaClient,
    OllamaError,
    OllamaUnreachableError,
    keeper_session,
)

__all__ = ["WarmOutcome", "check", "wait_for_ollama", "warm_all"]

Say = Callable[[str], None]
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class WarmOutcome:
    """What happened to one model in a one-shot warm."""

    name: str
    ok: bool
    detail: str
    duration_s: float = 0.0
    skipped: bool = False
    """Not tried: its load would not have finished inside the bound (the daemon warms it)."""


async def wait_for_ollama(client: OllamaClient, timeout_s: float, say: Say) -> str | None:
    """Poll ``/api/version`` with backoff until it answers; None when ``timeout_s`` ran out."""
    deadline = time.monotonic() + timeout_s
    delay, announced = 0.25, False
    while True:
        try:
            return await client.version()
        except OllamaError as exc:
            if not announced:
                say(f"waiting for Ollama at {client.base_url} ({exc.message})")
                announced = True
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        await asyncio.sleep(min(delay, left))
        delay = min(delay * 2, 2.0)


SAFETY = 1.25
"""A load is started only when 1.25 x its expected time (plus a second) fits in what is left."""


def expected_load_s(
    model: ModelConfig,
    host: str,
    measured: Mapping[str, float],
    sizes: Mapping[str, int],
    seconds_per_byte: float | None,
) -> float | None:
    """How long ``model`` should take to load: the daemon's last measurement, else its size at
    the pace of this run's loads so far, else unknown (None)."""
    known = measured.get(LoadTimeStore.key(host, model.key))
    if known is not None:
        return known
    size = sizes.get(model.key)
    if size and seconds_per_byte is not None:
        return size * seconds_per_byte
    return None


async def warm_all(
    config: Config,
    timeout_s: float,
    say: Say,
    *,
    deadline_s: float | None = None,
    load_times: Mapping[str, float] | None = None,
) -> tuple[list[WarmOutcome], bool]:
    """Warm every configured model once; return the outcomes and whether Ollama answered.

    With ``deadline_s`` (the ExecStartPost bound), a load is only started when it can finish
    in time, judged from ``load_times`` (what the daemon measured) or from this run's pace: a
    load cut short is aborted inside Ollama and wasted (§2.6). The rest is left to the daemon,
    in priority order, and said so.
    """
    started = time.monotonic()
    measured = dict(load_times or {})
    outcomes: list[WarmOutcome] = []
    reached = True
    async with keeper_session() as session:
        for host in config.hosts:
            client = OllamaClient(
                session,
                host,
                request_timeout_s=config.ollama.request_timeout_s,
                load_timeout_s=config.ollama.load_timeout_s,
            )
            wait_s = timeout_s if deadline_s is None else min(timeout_s, deadline_s)
            version = await wait_for_ollama(client, wait_s, say)
            models = plan.ranked(m for m in config.models if m.host == host)
            if version is None:
                reached = False
                outcomes += [
                    WarmOutcome(m.name, False, f"Ollama at {host} never answered") for m in models
                ]
                continue
            sizes = await _sizes(client) if deadline_s is not None else {}
            pace: float | None = None
            for model in models:
                limit: float | None = None
                if deadline_s is not None:
                    left = deadline_s - (time.monotonic() - started)
                    expected = expected_load_s(model, host, measured, sizes, pace)
                    if left <= 1.0 or (expected is not None and SAFETY * expected + 1.0 > left):
                        detail = f"left to the daemon: {left:.0f}s left in the bound" + (
                            f", its load takes ~{expected:.0f}s" if expected else ""
                        )
                        outcomes.append(WarmOutcome(model.name, True, detail, skipped=True))
                        say(f"  {model.name}: {detail}")
                        continue
                    limit = left
                if not sys.stderr.isatty():  # a terminal gets a ticking line instead
                    say(f"loading {model.name} ...")
                outcome = await _warm_one(client, model, limit)
                outcomes.append(outcome)
                if outcome.ok and outcome.duration_s > 0.5 and sizes.get(model.key):
                    pace = outcome.duration_s / sizes[model.key]
                say(
                    f"  {outcome.name}: {outcome.detail}"
                    if outcome.ok
                    else f"not warm: {outcome.name}: {outcome.detail}"
                )
    return outcomes, reached


async def _sizes(client: OllamaClient) -> dict[str, int]:
    """Model sizes from ``/api/tags`` (for the load-time estimate); none if it fails."""
    try:
        return await client.sizes()
    except OllamaError:
        return {}


async def _ticking(label: str, work: Awaitable[T], *, tty: bool) -> T:
    """Await ``work``; on a terminal, keep a "loading X 12s" line ticking meanwhile."""
    task = asyncio.ensure_future(work)
    if not tty:
        return await task
    started = time.monotonic()
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=0.5)
            if done:
                return task.result()
            sys.stderr.write(f"\r\x1b[K{label} {time.monotonic() - started:.0f}s")
            sys.stderr.flush()
    finally:
        sys.stderr.write("\r\x1b[K")
        sys.stderr.flush()


async def _warm_one(
    client: OllamaClient, model: ModelConfig, limit_s: float | None = None
) -> WarmOutcome:
    try:
        info = await client.show(model.name)
        result = await _ticking(
            f"loading {model.name}",
            client.load(
                model.name,
                keep_alive=model.keep_alive_wire,
                options=model.options,
                embedding_only=info.embedding_only,
                timeout_s=limit_s,
            ),
            tty=sys.stderr.isatty(),
        )
    except OllamaError as exc:
        kind, hint = plan.classify_error(exc.status, exc.message, model.name)
        return WarmOutcome(model.name, False, f"{kind}: {exc.message} ({hint})")
    return WarmOutcome(
        model.name,
        True,
        f"warm in {result.duration_s:.1f}s via {result.endpoint}",
        result.duration_s,
    )


def _daemon_rows(daemon: Mapping[str, Any] | None) -> dict[tuple[str, str], Mapping[str, Any]]:
    """The running daemon's model rows by (host, name), from its status document."""
    rows: dict[tuple[str, str], Mapping[str, Any]] = {}
    for host in (daemon or {}).get("hosts", []):
        for row in host.get("models", []):
            rows[(str(host.get("host")), str(row.get("name")))] = row
    return rows


async def check(
    config: Config, timeout_s: float, say: Say, daemon: Mapping[str, Any] | None = None
) -> tuple[bool, int, list[str]]:
    """Reach every host, check each model exists, and say what is done about each.

    With ``daemon`` (the running daemon's status document) each line is the daemon's view: it
    keeps them, and a fresh plan ("claim the lease") would be false. Without, the lines say
    what a keeper would do on start, and that nobody keeps them now.

    Returns whether every host answered, how many models have a problem, and the lines to print.
    """
    kept = _daemon_rows(daemon)
    lines: list[str] = []
    if daemon is None:
        lines.append("no daemon answered: nobody is keeping these models; a keeper would:")
    else:
        lines.append(f"{daemon.get('reached', 'the daemon')} keeps them; its view:")
    reached, problems = True, 0
    async with keeper_session() as session:
        for host in config.hosts:
            client = OllamaClient(session, host, request_timeout_s=config.ollama.request_timeout_s)
            version = await wait_for_ollama(client, timeout_s, say)
            snapshot: PsSnapshot | None = None
            if version is not None:
                try:
                    snapshot = await client.ps()
                except (OllamaUnreachableError, OllamaError) as exc:
                    say(f"/api/ps failed: {exc}")
            if snapshot is None:
                reached = False
                lines.append(f"{host}: unreachable")
                continue
            models = tuple(m for m in config.models if m.host == host)
            now = snapshot.taken_at
            lines.append(f"{host}: Ollama {version}, {len(snapshot.models)} loaded")
            for decision in plan.decide(models, config.daemon, snapshot, {}, now):
                note = await _model_note(client, decision.model)
                ignored = options_unknown_to(version or "", decision.model.options)
                if ignored and not note.startswith("PROBLEM"):
                    note = (
                        f"PROBLEM options: Ollama {version} does not read {', '.join(ignored)}; "
                        "it would ignore them"
                    )
                problems += note.startswith("PROBLEM")
                row = kept.get((host, decision.model.name))
                if daemon is None:
                    what, why = decision.action.value, decision.reason
                elif row is None:
                    what, why = "-", "not kept by the running daemon (reload it to take this file)"
                else:
                    what, why = str(row.get("state")), str(row.get("reason"))
                lines.append(
                    f"  {decision.model.name:<32} {what:<8} {why}" + (f"  [{note}]" if note else "")
                )
                prefix = decision.model.prime
                if prefix is not None and not note.startswith("PROBLEM"):
                    prime_lines, failed = await _prime_note(
                        client, decision.model, prefix, listed=decision.row is not None
                    )
                    lines += prime_lines
                    problems += failed
    return reached, problems, lines


_SHOWN_CHARS = 72


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= _SHOWN_CHARS else flat[: _SHOWN_CHARS - 3] + "..."


async def _prime_note(
    client: OllamaClient, model: ModelConfig, prefix: Prime, *, listed: bool
) -> tuple[list[str], bool]:
    """Show the prefix the keeper will prime and, if the model is loaded, its token count.

    The count comes from a dry run of the very priming request (Ollama's ``prompt_eval_count``
    after its template rendered the prefix); it primes the loaded runner as a side effect.
    An unloaded model is not loaded just to count.
    """
    source = f" from {prefix.source}" if prefix.source else ""
    roles = ", ".join(m.role for m in prefix.messages)
    how = "raw prompt" if prefix.raw else f"{len(prefix.messages)} message(s): {roles}"
    lines = [
        f"    prime{source}: {how}, {len(prefix.text)} chars, via {prefix.endpoint}",
        f"      {_one_line(prefix.text)!r}",
    ]
    try:
        info = await client.show(model.name)
    except OllamaError:
        info = None
    if info is not None and not prefix.raw:
        template = _one_line(info.template) if info.template else "(none: the prefix as is)"
        lines.append(f"      rendered through the model's template: {template}")
    if not listed:
        lines.append(
            "      token count: the model is not loaded; the keeper's first prime reports it "
            "(ollama-keepwarm status, PRIMED)"
        )
        return lines, False
    payload = prefix.payload(model.name, keep_alive=model.keep_alive_wire, options=model.options)
    try:
        result = await client.prime(prefix.endpoint, payload)
    except OllamaError as exc:
        lines.append(f"      PROBLEM: the priming request failed: {exc.message}")
        return lines, True
    spent = "" if result.prompt_eval_s is None else f", {result.prompt_eval_s:.2f}s of it prompt"
    lines.append(
        f"      {result.prompt_tokens} tokens as rendered (dry request: "
        f"{result.duration_s:.2f}s{spent}; the runner has it cached now)"
    )
    return lines, False


async def _model_note(client: OllamaClient, model: ModelConfig) -> str:
    """Ask ``/api/show`` about a model: missing, embedding-only, or fine."""
    try:
        info = await client.show(model.name)
    except OllamaError as exc:
        kind, hint = plan.classify_error(exc.status, exc.message, model.name)
        return f"PROBLEM {kind}: {exc.message} ({hint})"
    return "embedding-only: warmed through /api/embed" if info.embedding_only else ""
