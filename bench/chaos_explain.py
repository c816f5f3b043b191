"""A timeline of one chaos run, to see why an invariant broke (``python -m bench.chaos --explain``).

Every record of the fake (loads, unloads, waits that met a draining runner), the keeper's
decisive log events and each change of a kept model's ``status`` state, in time order, in
seconds since the keeper started.
"""

from __future__ import annotations

from typing import Any

from bench.chaos_run import Outcome
from ollama_keepwarm.fake.records import who

__all__ = ["timeline"]

QUIET = {
    "calendar_scheduled",
    "control_socket_listening",
    "logind_signal_unavailable",
    "keeper_starting",
    "warm_queued",
    "refresh_queued",
}


def _fields(entry: dict[str, Any]) -> str:
    skip = {"event", "t", "host", "log_level", "hint", "timestamp"}
    return " ".join(f"{k}={v}" for k, v in entry.items() if k not in skip)


def timeline(outcome: Outcome) -> list[str]:
    """The run's events as lines, in time order."""
    t0 = outcome.started
    rows: list[tuple[float, str]] = []
    for _, event in outcome.schedule.active:
        rows.append((t0 + event.at, f"EVENT   {event.kind} {event.args}"))
    for load in outcome.loads:
        end = f"{load.finished.timestamp() - t0:.2f}" if load.finished else "-"
        text = f"LOAD    {load.model} {load.reason} by {who(load.caller)} until {end}"
        if load.replaced_by:
            text += f" (replacing {who(load.replaced_by)}'s: {load.changed})"
        if not load.ok:
            text += f" FAILED {load.error[:40]}"
        rows.append((load.started.timestamp(), text))
    for unload in outcome.records.unloads:
        by = who(unload.caller) if unload.caller else "-"
        text = f"UNLOAD  {unload.model} {unload.cause} by {by}"
        rows.append((unload.time.timestamp(), text))
    for wait in outcome.records.waits:
        if wait.touches or who(wait.caller) == "keeper":
            touches = ", ".join(f"{t.kind} by {who(t.caller)}" for t in wait.touches[:3])
            waited = wait.ended.timestamp() - wait.started.timestamp()
            text = f"WAIT    {who(wait.caller)} for {wait.model} {waited:.2f}s {touches}"
            rows.append((wait.started.timestamp(), text))
    for entry in outcome.logs:
        if entry.get("event") not in QUIET:
            rows.append((entry["t"], f"LOG     {entry.get('event')} {_fields(entry)}"))
    last: dict[str, tuple[str, str]] = {}
    for t, models in outcome.statuses:
        for name, state in models.items():
            if last.get(name) != state:
                last[name] = state
                rows.append((t, f"STATUS  {name}: {state[0]} ({state[1]})"))
    return [f"{t - t0:7.2f} {text}" for t, text in sorted(rows, key=lambda row: row[0])]
