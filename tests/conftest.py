"""Shared fixtures: a fake Ollama on loopback, configs pointing at it, a running keeper."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import structlog

sys.path.insert(0, str(Path(__file__).parent))

from helpers import RecordingNotifier  # noqa: E402

from ollama_keepwarm.clocks import ManualClocks  # noqa: E402
from ollama_keepwarm.config import Config, parse_config  # noqa: E402
from ollama_keepwarm.fake import FakeOllama  # noqa: E402
from ollama_keepwarm.keeper import Keeper  # noqa: E402

FAST_FAKE: dict[str, Any] = {"load_seconds_per_gb": 0.05, "seconds_per_token": 0.001}


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """Each test starts from structlog's defaults (capture_logs patches them)."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(name="fake")
async def _fake() -> AsyncIterator[FakeOllama]:
    """A fake Ollama with fast loads, on 127.0.0.1 and a free port."""
    async with FakeOllama(**FAST_FAKE) as fake:
        yield fake


def make_config(url: str, models: list[dict[str, Any]], **daemon: Any) -> Config:
    """A config for tests: fast cadence, no HTTP endpoint unless asked."""
    raw: dict[str, Any] = {
        "ollama": {"host": url, "load_timeout": "30s", "request_timeout": "5s"},
        "daemon": {
            "poll_interval": "100ms",
            "refresh_before": "400ms",
            "health_interval": "1h",
            "down_poll_max": "200ms",
            **daemon,
        },
        "http": {"enabled": False},
        "models": models,
    }
    return parse_config(raw, environ={})


@asynccontextmanager
async def running_keeper(
    config: Config,
    *,
    clocks: ManualClocks | None = None,
    reload_config: Callable[[], Config] | None = None,
) -> AsyncIterator[tuple[Keeper, RecordingNotifier]]:
    """Run a Keeper as a task; stop it and check it exited cleanly afterwards."""
    notifier = RecordingNotifier()
    keeper = Keeper(
        config,
        notifier=notifier,
        clocks=clocks or ManualClocks(),
        reload_config=reload_config,
        handle_signals=False,
    )
    task = asyncio.create_task(keeper.run())
    try:
        yield keeper, notifier
    finally:
        keeper.request_stop()
        assert await asyncio.wait_for(task, timeout=15) == 0
