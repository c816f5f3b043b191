"""Two clocks: the wall clock the fake reports, and a scaled, suspendable one it waits on.

Ollama's timers run on a monotonic clock that stops while the machine sleeps (reference §7.7),
while ``expires_at`` is wall time. The fake mirrors that split: :meth:`Clock.sleep` divides every
wait by ``time_scale`` and pauses while "suspended", and :meth:`Clock.wall_ns` is the real
``time.time_ns()``, plus any step a test made (:meth:`Clock.step_wall`; waits never step).
"""

from __future__ import annotations

import asyncio
import math
import time

__all__ = ["Clock"]


class Clock:
    """Scaled, suspend-aware waiting; real wall-clock reading."""

    def __init__(self, time_scale: float = 1.0) -> None:
        if not time_scale > 0 or math.isinf(time_scale):
            raise ValueError(f"time_scale must be a positive finite number, got {time_scale!r}")
        self.time_scale = time_scale
        self._running = asyncio.Event()
        self._running.set()
        self._suspended = asyncio.Event()
        self.wall_step_ns = 0
        """A wall-clock step (``step_wall``): NTP or ``date -s`` moved the machine's clock."""

    def wall_ns(self) -> int:
        """Return wall-clock time in ns since the epoch (what ``expires_at`` is based on)."""
        return time.time_ns() + self.wall_step_ns

    @staticmethod
    def true_wall_ns() -> int:
        """Return the real wall clock, without any step: what the records are stamped with."""
        return time.time_ns()

    def step_wall(self, seconds: float) -> None:
        """Step the wall clock; timers (monotonic, like Go's) and stored times do not move."""
        self.wall_step_ns += int(seconds * 1e9)

    @staticmethod
    def monotonic_ns() -> int:
        """Return real monotonic time in ns (for measured durations such as ``load_duration``)."""
        return time.monotonic_ns()

    def real_seconds(self, model_seconds: float) -> float:
        """Convert a duration in the simulated Ollama's time into real seconds."""
        return model_seconds / self.time_scale

    @property
    def is_suspended(self) -> bool:
        """Tell whether timers are currently frozen."""
        return self._suspended.is_set()

    def suspend(self) -> None:
        """Freeze every :meth:`sleep` in progress; their remaining time is kept."""
        self._running.clear()
        self._suspended.set()

    def resume(self) -> None:
        """Let frozen sleeps continue with the time they had left."""
        self._suspended.clear()
        self._running.set()

    async def sleep(self, model_seconds: float) -> None:
        """Wait ``model_seconds / time_scale`` real seconds, not counting suspended time.

        ``inf`` waits forever (until cancelled).
        """
        if math.isinf(model_seconds):
            await asyncio.Event().wait()
        remaining = self.real_seconds(model_seconds)
        loop = asyncio.get_running_loop()
        while remaining > 0:
            await self._running.wait()
            started = loop.time()
            try:
                async with asyncio.timeout(remaining):
                    await self._suspended.wait()
            except TimeoutError:
                return
            remaining -= loop.time() - started
