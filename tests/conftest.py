"""Shared fixtures: a fake Ollama on loopback, configs pointing at it, a running keeper."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import structlog

from helpers import FAST_FAKE
from ollama_keepwarm.fake import FakeOllama


@pytest.fixture(autouse=True)
def _fresh_structlog() -> Iterator[None]:
    """Each test starts from structlog's defaults (capture_logs patches them)."""
    structlog.reset_defaults()
    yield
    structlog.reset_defaults()


@pytest.fixture(name="fake")
async def _fake(request: pytest.FixtureRequest) -> AsyncIterator[FakeOllama]:
    """A fake Ollama with fast loads, on 127.0.0.1 and a free port.

    Parametrise it indirectly with an Ollama version (``BOTH_VERSIONS``) to run a test against
    the old and the current scheduler rules; by default it is the current stable.
    """
    version = getattr(request, "param", None)
    extra = {"ollama_version": version} if version else {}
    async with FakeOllama(**FAST_FAKE, **extra) as fake:
        yield fake
