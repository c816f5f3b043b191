"""The fake's request log: Gin's line with a timestamp and the model asked for (issue 24)."""

from __future__ import annotations

import logging
import re

import aiohttp
import pytest
from fake_helpers import post

from ollama_keepwarm.fake import FakeOllama


async def test_each_request_is_logged_with_its_time_and_model(
    fake: FakeOllama, session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    """A user debugging a client against the fake sees when each request came and for what."""
    with caplog.at_level(logging.INFO, logger="ollama_keepwarm.fake"):
        await post(session, "/api/generate", {"model": "tiny", "prompt": "", "stream": False})
        async with session.get("/api/ps") as response:
            await response.read()
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("[GIN]")]
    stamp = r"\[GIN\] \d{4}/\d\d/\d\d - \d\d:\d\d:\d\d \| "
    assert re.match(stamp + r'200 \|.*\| POST +"/api/generate" model="tiny"$', lines[0]), lines
    assert re.match(stamp + r'200 \|.*\| GET +"/api/ps"$', lines[1]), lines
