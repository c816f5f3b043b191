"""Fixtures for the fake-Ollama tests: a factory for started fakes and a client session."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from fake_helpers import SCALE

from ollama_keepwarm.fake import FakeOllama

FakeFactory = Callable[..., Awaitable[FakeOllama]]


@pytest.fixture
async def make_fake() -> AsyncIterator[FakeFactory]:
    """Start fakes on 127.0.0.1:0 with test-speed defaults; stop them all afterwards."""
    started: list[FakeOllama] = []

    async def factory(**kwargs: Any) -> FakeOllama:
        kwargs.setdefault("time_scale", SCALE)
        fake = FakeOllama(**kwargs)
        await fake.start(host="127.0.0.1", port=0)
        started.append(fake)
        return fake

    yield factory
    for fake in started:
        await fake.stop()


@pytest.fixture
async def fake(make_fake: FakeFactory) -> FakeOllama:
    """A started fake with the default catalogue and knobs (CPU-only memory off: 16 GiB)."""
    return await make_fake()


@pytest.fixture
async def session(fake: FakeOllama) -> AsyncIterator[aiohttp.ClientSession]:
    """A client session on the ``fake`` fixture's URL."""
    async with aiohttp.ClientSession(fake.url) as client:
        yield client


@pytest.fixture
async def client_for() -> AsyncIterator[Callable[[FakeOllama], aiohttp.ClientSession]]:
    """Open client sessions on other fakes; close them afterwards."""
    sessions: list[aiohttp.ClientSession] = []

    def open_session(fake: FakeOllama) -> aiohttp.ClientSession:
        client = aiohttp.ClientSession(fake.url)
        sessions.append(client)
        return client

    yield open_session
    for client in sessions:
        await client.close()
