"""Test helpers: waiting with a deadline, and a notifier that records what it was told."""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from ollama_keepwarm.core.config import Config, parse_config
from ollama_keepwarm.daemon.clocks import ManualClocks
from ollama_keepwarm.daemon.keeper import Keeper

T = TypeVar("T")

VERSIONS = ("0.24.0", "0.32.15")
"""The Ollama versions whose scheduler rules differ (before and since v0.30): tests of load
options, eviction and restarts run against both."""

FAST_FAKE: dict[str, Any] = {"load_seconds_per_gb": 0.05, "seconds_per_token": 0.001}
"""Fake Ollama settings for tests: an 8B model loads in ~0.25 s, a token takes 1 ms."""


async def eventually(
    probe: Callable[[], T | Awaitable[T]],
    *,
    within: float = 10.0,
    interval: float = 0.02,
    what: str = "condition",
) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        value = probe()
        if asyncio.iscoroutine(value) or isinstance(value, Awaitable):
            value = await value
        if value:
            return value  # type: ignore[return-value]
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {within}s waiting for {what}")
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


def make_config(
    url: str, models: list[dict[str, Any]], http: dict[str, Any] | None = None, **daemon: Any
) -> Config:
    """A config for tests: fast cadence, its own control socket and state, no HTTP endpoint."""
    scratch = tempfile.mkdtemp(prefix="okw", dir="/tmp")  # short: a socket path has 108 bytes
    raw: dict[str, Any] = {
        "ollama": {"host": url, "load_timeout": "30s", "request_timeout": "5s"},
        "daemon": {
            "control_socket": f"{scratch}/c.sock",
            "state_dir": scratch,
            "poll_interval": "100ms",
            "refresh_before": "400ms",
            "health_interval": "1h",
            "down_poll_max": "200ms",
            **daemon,
        },
        "http": http or {"enabled": False},
        "models": models,
    }
    return parse_config(raw, environ={})


@asynccontextmanager
async def running_keeper(
    config: Config,
    *,
    clocks: ManualClocks | None = None,
    reload_config: Callable[[], Config] | None = None,
    dbus_address: str | None = "unix:path=/nonexistent/bus",
    calendar_clock: Callable[[], datetime] | None = None,
) -> AsyncIterator[tuple[Keeper, RecordingNotifier]]:
    """Run a Keeper as a task; stop it and check it exited cleanly afterwards."""
    notifier = RecordingNotifier()
    keeper = Keeper(
        config,
        notifier=notifier,
        clocks=clocks or ManualClocks(),
        reload_config=reload_config,
        handle_signals=False,
        dbus_address=dbus_address,  # tests never listen to the machine's real logind
        calendar_clock=calendar_clock,
    )
    task = asyncio.create_task(keeper.run())
    try:
        yield keeper, notifier
    finally:
        keeper.request_stop()
        assert await asyncio.wait_for(task, timeout=15) == 0


async def more_looks(keeper: Keeper, count: int, within: float = 15.0) -> None:
    """Wait until every host of ``keeper`` has finished ``count`` more looks (poll, decide, act).

    The positive signal a "nothing happened" assertion needs: counting ``/api/ps`` requests
    at the fake says a poll was answered, not that the keeper acted on it, and a fixed wait
    passes whenever the bad event is merely slower than the wait.
    """
    targets = {host: host.looks + count for host in keeper.hosts.values()}
    await eventually(
        lambda: all(host.looks >= n for host, n in targets.items()),
        within=within,
        what=f"{count} more looks",
    )
