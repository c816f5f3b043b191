"""What the fake remembers for the tests that drive it: runners, loads, evictions, requests.

These are plain values so tests can assert on them without reaching into the scheduler.
Times are aware UTC datetimes of the real wall clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

__all__ = [
    "EvictionRecord",
    "LoadReason",
    "LoadRecord",
    "RecordedRequest",
    "RunnerInfo",
    "wall_datetime",
]

LoadReason = Literal["cold", "reload", "repair"]


def wall_datetime(unix_ns: int) -> datetime:
    """Turn wall-clock nanoseconds into an aware UTC datetime (microsecond precision)."""
    return datetime.fromtimestamp(unix_ns / 1e9, tz=UTC)


@dataclass(frozen=True)
class RunnerInfo:
    """A snapshot of one loaded runner, as the fake sees it (more than ``/api/ps`` shows)."""

    name: str
    options: dict[str, Any]
    keep_alive_ns: int
    expires_at: datetime
    busy: int
    crashed: bool
    size_vram: int
    size: int
    digest: str
    context_length: int
    context_shift: bool = True


@dataclass
class LoadRecord:
    """One load attempt. ``finished`` is ``None`` while it runs; ``ok`` tells how it ended.

    ``changed`` says what made a reload, e.g. ``num_ctx 2048 -> 1024`` (empty for cold loads).
    """

    model: str
    reason: LoadReason
    requested_by: str
    started: datetime
    finished: datetime | None = None
    ok: bool = False
    error: str = ""
    changed: str = ""


@dataclass(frozen=True)
class EvictionRecord:
    """A loaded runner chosen to make room (count cap, memory or OOM) for another model."""

    victim: str
    for_model: str
    time: datetime
    reason: Literal["count", "memory", "oom"]


@dataclass(frozen=True)
class RecordedRequest:
    """One HTTP request to an Ollama route (``/_fake`` control calls are not recorded)."""

    time: datetime
    method: str
    path: str
    body: Any
    status: int
