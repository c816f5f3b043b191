"""Wall-clock steps: keep every time the planner holds true when the wall clock jumps.

The plan's times are wall times, because ``expires_at`` is (§1.5); but Ollama's timers run on
the monotonic clock, and so must our waits. When the wall clock steps (NTP at boot, a local-time
RTC on a dual-boot machine, ``date -s``), every time we hold and every ``expires_at`` Ollama
printed *before* the step are off by the step: a step back of an hour makes every lease look an
hour longer, and all of them lapse. The keeper notices a step as a change of ``wall - boottime``
(which a suspend does not change) and re-anchors, with these pure functions:

* every time in a model's state moves by the step, except the operator's pause end (a wall
  time they chose) and the calendar's verdict (about wall time);
* each ``expires_at`` listed before the step is remembered with its corrected value, and a row
  that still shows it later is read corrected; a lease set after the step is printed right.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields, is_dataclass, replace
from datetime import datetime, timedelta
from typing import Any, TypeVar

from ollama_keepwarm.core.ps import PsSnapshot, RunningModel

__all__ = ["WALL_STEP_S", "remap_leases", "remember_leases", "shift_times", "wall_step"]

WALL_STEP_S = 2.0
"""A change of ``wall - boottime`` this large between two looks is a step (NTP slews less)."""

_KEPT_AS_WALL = frozenset({"paused_until", "window"})
"""Fields that are about wall time itself: never shifted."""

T = TypeVar("T")


def shift_times(value: T, delta: timedelta) -> T:
    """``value`` with every datetime in it (fields, tuples, rows) moved by ``delta``."""
    return _shift(value, delta)  # type: ignore[no-any-return]


def _shift(value: Any, delta: timedelta) -> Any:
    if isinstance(value, datetime):
        return value + delta
    if isinstance(value, tuple):
        return tuple(_shift(v, delta) for v in value)
    if is_dataclass(value) and not isinstance(value, type):
        changes = {
            f.name: _shift(getattr(value, f.name), delta)
            for f in fields(value)
            if f.name not in _KEPT_AS_WALL
        }
        return replace(value, **changes)
    return value


def remember_leases(
    known: Mapping[datetime, datetime], snapshot: PsSnapshot | None, delta: timedelta
) -> dict[datetime, datetime]:
    """After a step of ``delta``: each ``expires_at`` printed so far -> its corrected value.

    ``known`` holds the corrections of earlier steps (as printed -> as read); they move too.
    """
    corrected = {printed: read + delta for printed, read in known.items()}
    for row in snapshot.models if snapshot else ():
        printed = next((p for p, r in known.items() if r == row.expires_at), row.expires_at)
        corrected[printed] = row.expires_at + delta
    return corrected


def remap_leases(
    snapshot: PsSnapshot, known: Mapping[datetime, datetime]
) -> tuple[PsSnapshot, dict[datetime, datetime]]:
    """Read ``snapshot`` with the corrections of past steps; forget those no row shows any more."""
    if not known:
        return snapshot, {}
    rows: list[RunningModel] = []
    still: dict[datetime, datetime] = {}
    for row in snapshot.models:
        read = known.get(row.expires_at)
        if read is not None:
            still[row.expires_at] = read
        rows.append(row if read is None else replace(row, expires_at=read))
    return replace(snapshot, models=tuple(rows)), still


def wall_step(before: tuple[float, float], now: tuple[float, float]) -> float | None:
    """The wall clock's step in seconds between two readings of ``(wall - boottime, boottime -
    monotonic)``, or None. A suspend moves the second (left to the resume rules); slewing by
    NTP stays under :data:`WALL_STEP_S`."""
    step, slept = now[0] - before[0], now[1] - before[1]
    if abs(step) < WALL_STEP_S or abs(slept) >= WALL_STEP_S:
        return None
    return step
