"""Views: one word per model for the status table, one line for systemd's STATUS=."""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime

from ollama_keepwarm.core.plan.model import CAPACITY, MISMATCH, OUTSIDE, Action, Decision

SUMMARY_NAMES = 2
"""Up to this many models of one state are named in the STATUS line."""


def describe_state(decision: Decision) -> str:
    """One word for a model's state, as the status table shows it."""
    if decision.action is Action.HOLD and decision.reason == "paused":
        return "paused"
    if decision.reason.startswith(CAPACITY):
        return "conflict"
    if decision.action is Action.HOLD and decision.reason.startswith(OUTSIDE):
        return "outside"
    if decision.reason.startswith(MISMATCH):
        return "mismatch"
    if decision.reason == "loading":
        return "loading"
    if decision.row is not None:
        return "warm"
    if decision.reason.startswith("backing off"):
        return "error"
    return "cold"


def first_pass_done(decisions: Sequence[Decision], *, configured: bool = True) -> bool:
    """Every model warm or deliberately left alone, or failed (READY=1 may go out).

    A cold model that is still going to be warmed (a higher-ranked one a lower one evicted,
    say) keeps it false, so READY=1 never goes out while it is cold. No models: done.
    """
    if not configured:
        return True
    settled = {"warm", "paused", "conflict", "mismatch", "error", "outside"}
    return bool(decisions) and all(describe_state(d) in settled for d in decisions)


def all_warm(decisions: Sequence[Decision]) -> bool:
    """Every model that is not paused, held or outside its windows is listed (``/readyz``)."""
    return all(
        d.row is not None
        for d in decisions
        if describe_state(d) not in {"paused", "conflict", "outside"}
        and (d.window is None or d.window.inside)
    )


def _human(seconds: float) -> str:
    if math.isinf(seconds) or seconds > 20 * 365 * 86400:
        return "forever"
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def summarize(
    decisions: Sequence[Decision], now: datetime, *, ollama_up: bool = True, host: str = ""
) -> str:
    """Build the one-line STATUS: ``3/3 warm · next refresh llama3.1:8b in 4m``."""
    if not ollama_up:
        return f"waiting for Ollama at {host}" if host else "waiting for Ollama"
    states = [describe_state(d) for d in decisions]
    wanted = [s for s in states if s not in {"paused", "outside"}]
    parts = [f"{states.count('warm')}/{len(wanted)} warm"]
    for word in ("loading", "cold", "error", "conflict", "mismatch", "paused", "outside"):
        names = [d.model.name for d, state in zip(decisions, states, strict=True) if state == word]
        if names:
            # Name them while the line stays short: "1 loading (llama3.3:70b)".
            shown = f" ({', '.join(names)})" if len(names) <= SUMMARY_NAMES else ""
            parts.append(f"{len(names)} {word}{shown}")
    windowed = [d for d in decisions if d.window is not None]
    if 0 < len(windowed) <= SUMMARY_NAMES:
        # "llama3.1:8b kept until 19:00", "llama3.1:8b next window Mon 08:00"
        parts.extend(f"{d.model.name} {d.window.note}" for d in windowed if d.window)
    upcoming = [d for d in decisions if d.action is Action.WAIT and d.at and d.row is not None]
    if upcoming:
        first = min(upcoming, key=lambda d: d.at or now)
        parts.append(
            f"next refresh {first.model.name} in "
            f"{_human(((first.at or now) - now).total_seconds())}"
        )
    return " · ".join(parts)
