"""Clocks, and noticing a suspend by comparing two of them.

``CLOCK_BOOTTIME`` keeps counting while the machine sleeps; ``CLOCK_MONOTONIC`` does not. Ollama's
keep-alive timers run on the monotonic clock (reference §7.7), so after a resume its ``expires_at``
values lie in the past while the models are still loaded, and a GPU may be gone. When the gap
between the two clocks grows, we slept. The clocks are injectable so tests can fake a suspend.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

__all__ = ["Clocks", "ManualClocks", "SuspendDetector", "SystemClocks"]


class Clocks(Protocol):
    """The three clocks the keeper reads."""

    def wall(self) -> datetime:
        """Timezone-aware wall-clock time: what ``expires_at`` is compared with."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that stops while the machine is suspended."""
        ...

    def boottime(self) -> float:
        """Seconds on a clock that keeps counting while the machine is suspended."""
        ...


class SystemClocks:
    """The real clocks (Linux ``CLOCK_BOOTTIME``; elsewhere it equals monotonic: no detection)."""

    def wall(self) -> datetime:
        """Return now, in the local zone."""
        return datetime.now().astimezone()

    def monotonic(self) -> float:
        """Return ``CLOCK_MONOTONIC``."""
        return time.monotonic()

    def boottime(self) -> float:
        """Return ``CLOCK_BOOTTIME`` where the platform has it."""
        clock = getattr(time, "CLOCK_BOOTTIME", None)
        return time.clock_gettime(clock) if clock is not None else time.monotonic()


@dataclass
class ManualClocks:
    """Real clocks plus a hand-set suspend offset, for tests: ``suspend(3600)`` fakes an hour."""

    slept_s: float = 0.0
    wall_step_s: float = 0.0
    _system: SystemClocks = field(default_factory=SystemClocks)

    def suspend(self, seconds: float) -> None:
        """Make the boot clock run ahead of the monotonic one, as a sleep would."""
        self.slept_s += seconds

    def step_wall(self, seconds: float) -> None:
        """Step the wall clock (NTP at boot, ``date -s``); the monotonic clocks do not move."""
        self.wall_step_s += seconds

    def wall(self) -> datetime:
        """Return the real wall clock, plus any step."""
        return self._system.wall() + timedelta(seconds=self.wall_step_s)

    def monotonic(self) -> float:
        """Return the real monotonic clock."""
        return self._system.monotonic()

    def boottime(self) -> float:
        """Return the monotonic clock plus the faked sleep."""
        return self._system.monotonic() + self.slept_s


class SuspendDetector:
    """Reports how long the machine slept since the last check, if longer than ``threshold_s``."""

    def __init__(self, clocks: Clocks, threshold_s: float) -> None:
        self._clocks = clocks
        self.threshold_s = threshold_s
        self._gap = clocks.boottime() - clocks.monotonic()

    def check(self) -> float | None:
        """Return the seconds slept since the previous check, or None when we did not sleep."""
        gap = self._clocks.boottime() - self._clocks.monotonic()
        slept, self._gap = gap - self._gap, gap
        return slept if slept >= self.threshold_s else None
