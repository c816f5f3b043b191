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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp

from ollama_keepwarm.core import plan
from ollama_keepwarm.core.config import Config, ModelConfig
from ollama_keepwarm.core.prime import Prime
from ollama_keepwarm.core.ps import PsSnapshot
from ollama_keepwarm.ollama import OllamaClient, OllamaError, OllamaUnreachableError

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


async def warm_all(config: Config, timeout_s: float, say: Say) -> tuple[list[WarmOutcome], bool]:
    """Warm every configured model once; return the outcomes and whether Ollama answered."""
    outcomes: list[WarmOutcome] = []
    reached = True
    async with aiohttp.ClientSession() as session:
        for host in config.hosts:
            client = OllamaClient(
                session,
                host,
                request_timeout_s=config.ollama.request_timeout_s,
                load_timeout_s=config.ollama.load_timeout_s,
            )
            version = await wait_for_ollama(client, timeout_s, say)
            models = plan.ranked(m for m in config.models if m.host == host)
            if version is None:
                reached = False
                outcomes += [
                    WarmOutcome(m.name, False, f"Ollama at {host} never answered") for m in models
                ]
                continue
            for model in models:
                if not sys.stderr.isatty():  # a terminal gets a ticking line instead
                    say(f"loading {model.name} ...")
                outcomes.append(await _warm_one(client, model))
                say(f"  {outcomes[-1].name}: {outcomes[-1].detail}")
    return outcomes, reached


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


async def _warm_one(client: OllamaClient, model: ModelConfig) -> WarmOutcome:
    try:
        info = await client.show(model.name)
        result = await _ticking(
            f"loading {model.name}",
            client.load(
                model.name,
                keep_alive=model.keep_alive_wire,
                options=model.options,
                embedding_only=info.embedding_only,
            ),
            tty=sys.stderr.isatty(),
        )
    except OllamaError as exc:
        kind, hint = plan.classify_error(exc.status, exc.message)
        return WarmOutcome(model.name, False, f"{kind}: {exc.message} ({hint})")
    return WarmOutcome(
        model.name,
        True,
        f"warm in {result.duration_s:.1f}s via {result.endpoint}",
        result.duration_s,
    )


async def check(config: Config, timeout_s: float, say: Say) -> tuple[bool, int, list[str]]:
    """Reach every host, check each model exists, and say what the keeper would do now.

    Returns whether every host answered, how many models have a problem, and the lines to print.
    """
    lines: list[str] = []
    reached, problems = True, 0
    async with aiohttp.ClientSession() as session:
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
                problems += note.startswith("PROBLEM")
                lines.append(
                    f"  {decision.model.name:<32} {decision.action.value:<8} {decision.reason}"
                    + (f"  [{note}]" if note else "")
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
        kind, hint = plan.classify_error(exc.status, exc.message)
        return f"PROBLEM {kind}: {exc.message} ({hint})"
    return "embedding-only: warmed through /api/embed" if info.embedding_only else ""
