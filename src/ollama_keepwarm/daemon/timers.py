"""The daemon's cadence on the event loop's monotonic clock: polls, ticks, the watchdog, wakes.

Wall-clock schedulers (APScheduler's interval and date triggers among them) compute the next run
as a wall time: when NTP steps the clock at boot, or someone runs ``date -s``, a backward step of
an hour stops them for an hour. ``loop.call_later`` counts on ``time.monotonic``, which never
steps, so the keeper keeps polling whatever the wall clock does. Calendar jobs, which *are* about
wall time, stay with APScheduler.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import structlog

__all__ = ["Alarm", "Every"]

_log = structlog.get_logger("ollama_keepwarm")


class Every:
    """Call ``callback`` every ``interval_s`` seconds until cancelled; errors are logged."""

    def __init__(self, interval_s: float, callback: Callable[[], None], name: str) -> None:
        self.interval_s = interval_s
        self._callback = callback
        self._name = name
        self._handle: asyncio.TimerHandle | None = None

    def start(self) -> None:
        """Start (or restart) the cadence: the first call comes one interval from now."""
        self.cancel()
        self._handle = asyncio.get_running_loop().call_later(self.interval_s, self._fire)

    def cancel(self) -> None:
        """Stop calling."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        # Re-arm first: a callback that raises must not end the cadence.
        self._handle = asyncio.get_running_loop().call_later(self.interval_s, self._fire)
        try:
            self._callback()
        except Exception:
            _log.exception("timer_callback_failed", timer=self._name)


class Alarm:
    """One pending wake-up: asking for an earlier one replaces it, a later one is ignored."""

    def __init__(self, callback: Callable[[], None]) -> None:
        self._callback = callback
        self._handle: asyncio.TimerHandle | None = None

    def ring_in(self, delay_s: float) -> None:
        """Call back in ``delay_s`` seconds, unless a call is already due sooner."""
        loop = asyncio.get_running_loop()
        due = loop.time() + max(0.0, delay_s)
        if self._handle is not None and not self._handle.cancelled() and self._handle.when() <= due:
            return
        self.cancel()
        self._handle = loop.call_at(due, self._ring)

    def cancel(self) -> None:
        """Forget the pending wake-up."""
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _ring(self) -> None:
        self._handle = None
        self._callback()
