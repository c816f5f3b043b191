"""Test helpers: waiting with a deadline, and a notifier that records what it was told."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


async def eventually(
    probe: Callable[[], T | Awaitable[T]],
    *,
    timeout: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if asyncio.iscoroutine(value) or isinstance(value, Awaitable):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


@dataclass
class RecordingNotifier:
    """A Notifier that keeps every message, like structlog's CapturingLogger."""

    messages: list[str] = field(default_factory=list)

    def ready(self) -> None:
        self.messages.append("READY=1")

    def reloading(self) -> None:
        self.messages.append("RELOADING=1")

    def stopping(self) -> None:
        self.messages.append("STOPPING=1")

    def status(self, text: str) -> None:
        self.messages.append(f"STATUS={text}")

    def watchdog(self) -> None:
        self.messages.append("WATCHDOG=1")

    def statuses(self) -> list[str]:
        return [m.removeprefix("STATUS=") for m in self.messages if m.startswith("STATUS=")]
