"""The status view: one JSON document, and the table ``ollama-keepwarm status`` prints from it.

The document is built from the planner's decisions, so the CLI, ``/status`` and the STATUS= line
agree. Times in the table follow ``ollama ps``: ``Forever`` for leases over 20 years,
``Stopping...`` for a lease already past (reference §1.5).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from ollama_keepwarm.core import plan
from ollama_keepwarm.core.prime import PrimeState
from ollama_keepwarm.core.ps import PsSnapshot, RunningModel
from ollama_keepwarm.core.runners import RunnerTable

__all__ = [
    "DaemonView",
    "HostView",
    "build_status",
    "model_entry",
    "processes_entry",
    "processor",
    "reload_note",
    "render_table",
    "until_text",
]

FOREVER_AFTER_S = 20 * 365 * 86400


class HostView(Protocol):
    """What the view reads of one host's loop (a :class:`~.host.HostKeeper` provides it)."""

    @property
    def host(self) -> str: ...
    @property
    def ollama_up(self) -> bool: ...
    @property
    def version(self) -> str | None: ...
    @property
    def poll_errors(self) -> int: ...
    @property
    def snapshot(self) -> PsSnapshot | None: ...
    @property
    def states(self) -> Mapping[str, plan.ModelState]: ...
    @property
    def decisions(self) -> Sequence[plan.Decision]: ...
    @property
    def all_warm(self) -> bool: ...
    @property
    def crash_watch_source(self) -> str: ...
    @property
    def runner_table(self) -> RunnerTable: ...
    @property
    def primes(self) -> Mapping[str, PrimeState]: ...


@dataclass(frozen=True, slots=True)
class DaemonView:
    """What the keeper hands the view: its hosts and a few facts, read-only, never itself."""

    hosts: Sequence[HostView]
    ready: bool
    resumes: int
    config_source: str
    # A failed reload (issue 24): shown until a good one; the daemon runs the older config.
    config_loaded_at: datetime | None = None
    reload_failed_at: datetime | None = None
    reload_error: str = ""
    learned: Mapping[tuple[str, str], Mapping[str, Any]] = field(default_factory=dict)
    """Learned hours by (host, model name): ``LearnedStore.entry`` (issue 25)."""


def reload_note(view: DaemonView) -> str | None:
    """ "config reload failed at T: <reason>; running the config loaded at T0", or None."""
    if view.reload_failed_at is None:
        return None
    loaded = f"{view.config_loaded_at:%Y-%m-%d %H:%M:%S}" if view.config_loaded_at else "start"
    return (
        f"config reload failed at {view.reload_failed_at:%Y-%m-%d %H:%M:%S}: "
        f"{view.reload_error}; running the config loaded at {loaded}"
    )


_COLOURS = {
    "warm": "32",
    "loading": "36",
    "cold": "33",
    "error": "31",
    "conflict": "31",
    "paused": "35",
    "wedged": "31",
    "outside": "35",
}


def processor(row: RunningModel | None) -> str:
    """Return the PROCESSOR column as ``ollama ps`` derives it from size and size_vram (§3.1)."""
    if row is None:
        return "-"
    if row.size_vram_bytes == 0:
        return "100% CPU"
    if row.size_bytes == 0 or row.size_vram_bytes > row.size_bytes:
        return "Unknown"
    if row.size_vram_bytes == row.size_bytes:
        return "100% GPU"
    gpu = round(100 * row.size_vram_bytes / row.size_bytes)
    return f"{100 - gpu}%/{gpu}% CPU/GPU"


_UNITS = (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1))


def _count(count: int, unit: str) -> str:
    return f"{count} {unit}{'s' if count != 1 else ''}"


def _span(seconds: float) -> str:
    """A time left in words. Below ten of the largest unit the next one is added, so 1m51s
    reads "1 minute 51 seconds", not "1 minute"; above, the part left off is under 10%."""
    seconds = int(seconds)
    for i, (unit, size) in enumerate(_UNITS[:-1]):
        if seconds >= size:
            count, rest = divmod(seconds, size)
            smaller, smaller_size = _UNITS[i + 1]
            extra = rest // smaller_size
            if count < 10 and extra:
                return f"{_count(count, unit)} {_count(extra, smaller)}"
            return _count(count, unit)
    return _count(seconds, "second")


def until_text(expires_at: datetime | None, now: datetime) -> str:
    """Render a lease end like ``ollama ps``'s UNTIL column."""
    if expires_at is None:
        return "-"
    left = (expires_at - now).total_seconds()
    if left > FOREVER_AFTER_S:
        return "Forever"
    if left <= 0:
        return "Stopping..."
    return f"{_span(left)} from now"


def _seconds(at: datetime | None, now: datetime) -> float | None:
    if at is None:
        return None
    left = (at - now).total_seconds()
    return None if left > FOREVER_AFTER_S else round(left, 3)


def prime_entry(decision: plan.Decision, st: PrimeState | None) -> dict[str, Any] | None:
    """Whether the model's prefix is cached since its last load, and what it cost (issue 14)."""
    prefix = decision.model.prime
    if prefix is None:
        return None
    st = st or PrimeState()
    return {
        "primed": st.primed(prefix) and decision.row is not None,
        "primed_at": st.primed_at.isoformat() if st.primed_at else None,
        "loaded_at": st.loaded_at.isoformat() if st.loaded_at else None,
        "after": st.load_cause or None,
        "endpoint": prefix.endpoint,
        "prompt_tokens": st.prompt_tokens,
        "prompt_eval_s": None if st.prompt_eval_s is None else round(st.prompt_eval_s, 3),
        "duration_s": None if st.duration_s is None else round(st.duration_s, 3),
        "primes": st.primes,
        "last_error": st.last_error,
    }


def model_entry(
    decision: plan.Decision,
    state: plan.ModelState,
    now: datetime,
    prime: PrimeState | None = None,
) -> dict[str, Any]:
    """One model's line of the status document."""
    row = decision.row
    next_refresh = decision.at if decision.action is plan.Action.WAIT and row else None
    if decision.action is plan.Action.REFRESH:
        next_refresh = now
    wedged = state.wedged_since is not None and row is not None
    return {
        "name": decision.model.name,
        "host": decision.model.host,
        # A listed model whose runner hangs is not warm: /readyz says so (daemon/crashwatch.py).
        "state": "wedged" if wedged else plan.describe_state(decision),
        "reason": decision.reason,
        "priority": decision.model.priority,
        "listed_as": row.name if row else None,
        "expires_at": row.expires_at.isoformat() if row else None,
        "until": until_text(row.expires_at if row else None, now),
        "lease_left_s": _seconds(row.expires_at, now) if row else None,
        "next_refresh_in_s": _seconds(next_refresh, now) if next_refresh else None,
        "last_warm_s": (
            round(state.last_warm_duration_s, 3) if state.last_warm_duration_s is not None else None
        ),
        "last_warm_at": state.last_warm_ok_at.isoformat() if state.last_warm_ok_at else None,
        "processor": processor(row),
        "size": row.size_bytes if row else None,
        "size_vram": row.size_vram_bytes if row else None,
        "last_error": state.last_error,
        "warms": state.warms,
        "reloads": state.reloads,
        "wedged_since": state.wedged_since.isoformat() if wedged and state.wedged_since else None,
        "prime": prime_entry(decision, prime),
        "window": _window(decision),
    }


def _window(decision: plan.Decision) -> dict[str, Any] | None:
    """The calendar's view of a model with `when`: inside?, until, next opening, the note."""
    verdict = decision.window
    if verdict is None:
        return None
    return {
        "inside": verdict.inside,
        "kept": verdict.kept,
        "until": verdict.until.isoformat() if verdict.until else None,
        "opens": verdict.opens.isoformat() if verdict.opens else None,
        "note": verdict.note,
    }


def processes_entry(table: RunnerTable) -> dict[str, Any]:
    """What the keeper sees of a host's runner processes (issue 21), and what it cannot."""
    return {
        "visible": table.visible,
        "source": table.source,
        "cannot_see": list(table.cannot_see),
        "runners": [
            {
                "pid": r.pid,
                "blob": r.blob,
                "flavour": r.flavour,
                "port": r.port,
                "options": dict(r.options),
                "age_s": round(max(0.0, table.at - r.started_at), 1),
            }
            for r in sorted(table.runners, key=lambda r: r.pid)
        ],
    }


def _host_entry(keeper: HostView, now: datetime) -> dict[str, Any]:
    return {
        "host": keeper.host,
        "ollama_up": keeper.ollama_up,
        "version": keeper.version,
        "poll_errors": keeper.poll_errors,
        "crash_watch": keeper.crash_watch_source,
        "processes": processes_entry(keeper.runner_table),
        "polled_at": keeper.snapshot.taken_at.isoformat() if keeper.snapshot else None,
        "models": [
            model_entry(
                d,
                keeper.states.get(d.model.key, plan.ModelState()),
                now,
                keeper.primes.get(d.model.key),
            )
            for d in keeper.decisions
        ],
    }


def build_status(view: DaemonView, now: datetime) -> dict[str, Any]:
    """Build the whole status document from what a running keeper shows of itself."""
    hosts = [_host_entry(k, now) for k in view.hosts]
    for host in hosts:
        for model in host["models"]:
            model["learned"] = view.learned.get((model["host"], model["name"]))
    decisions = [d for k in view.hosts for d in k.decisions]
    return {
        "source": "daemon",
        "now": now.isoformat(),
        "ready": view.ready,
        "all_warm": all(k.all_warm for k in view.hosts),
        "summary": plan.summarize(decisions, now, ollama_up=all(k.ollama_up for k in view.hosts)),
        "resumes": view.resumes,
        "config": view.config_source,
        "config_reload": _reload_entry(view),
        "hosts": hosts,
    }


def _reload_entry(view: DaemonView) -> dict[str, Any] | None:
    note = reload_note(view)
    if note is None or view.reload_failed_at is None:
        return None
    return {
        "failed_at": view.reload_failed_at.isoformat(),
        "error": view.reload_error,
        "running_config_loaded_at": (
            view.config_loaded_at.isoformat() if view.config_loaded_at else None
        ),
        "note": note,
    }


_COLUMNS = (
    ("NAME", "name"),
    ("STATE", "state"),
    ("UNTIL", "until"),
    ("NEXT REFRESH", "next"),
    ("LAST WARM", "last"),
    ("PROCESSOR", "processor"),
    ("PRIMED", "primed"),
    ("WINDOW", "window"),
    ("REASON", "reason"),
)


def _cells(model: Mapping[str, Any]) -> dict[str, str]:
    nxt = model.get("next_refresh_in_s")
    last = model.get("last_warm_s")
    return {
        "name": str(model["name"]),
        "state": str(model["state"]),
        "until": str(model["until"]),
        "next": "-" if nxt is None else ("now" if nxt < 1 else f"in {_span(nxt)}"),
        "last": "-" if last is None else f"{last:.1f}s",
        "processor": str(model["processor"]),
        "primed": _primed_cell(model.get("prime")),
        "window": str((model.get("window") or {}).get("note", "-")),
        "reason": str(model["reason"]),
    }


def _primed_cell(prime: Mapping[str, Any] | None) -> str:
    if not prime:
        return "-"
    if prime.get("primed"):
        tokens = prime.get("prompt_tokens")
        return f"yes ({tokens} tok)" if tokens is not None else "yes"
    return "failing" if prime.get("last_error") else "no"


def render_table(document: Mapping[str, Any], *, colour: bool = False) -> str:
    """Render the status document as a table in the spirit of ``ollama ps``."""
    lines: list[str] = []
    reload = document.get("config_reload")
    if isinstance(reload, Mapping) and reload.get("note"):
        note = f"WARNING: {reload['note']}"
        lines.append(f"\x1b[31m{note}\x1b[0m" if colour else note)
    hosts: Sequence[Mapping[str, Any]] = document.get("hosts", [])
    for host in hosts:
        up = "up" if host.get("ollama_up") else "DOWN"
        version = f" v{host['version']}" if host.get("version") else ""
        lines.append(f"Ollama {host['host']} ({up}{version}) · {document.get('summary', '')}")
        rows = [_cells(m) for m in host.get("models", [])]
        # The PRIMED column only where some model has a prefix to prime; WINDOW only where a
        # model has `when`.
        primed = any(r["primed"] != "-" for r in rows)
        windowed = any(m.get("window") for m in host.get("models", []))
        columns = [
            (t, k) for t, k in _COLUMNS if (k != "window" or windowed) and (k != "primed" or primed)
        ]
        widths = {key: max([len(title)] + [len(r[key]) for r in rows]) for title, key in columns}
        lines.append("    ".join(t.ljust(widths[k]) for t, k in columns).rstrip())
        for row in rows:
            cells = []
            for _title, key in columns:
                text = row[key].ljust(widths[key])
                if colour and key == "state" and row["state"] in _COLOURS:
                    text = f"\x1b[{_COLOURS[row['state']]}m{text}\x1b[0m"
                cells.append(text)
            lines.append("    ".join(cells).rstrip())
    return "\n".join(lines) + "\n"
