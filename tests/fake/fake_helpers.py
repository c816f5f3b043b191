"""Helpers for the fake-Ollama tests: HTTP shortcuts, waiting on conditions, the captures."""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

CAPTURES = Path(
    os.environ.get("OKW_SHARED") or Path(__file__).resolve().parents[3] / "shared",
    "ollama-captures",
)
"""``../shared`` beside the checkout, as in CI (a clone in any folder, with shared/ next to it);
``$OKW_SHARED`` where the tests run from a copy elsewhere (``tools/mutate.py``)."""
SCALE = 100.0
"""Tests run the fake 100x faster than real time: "5m" lasts 3 s, a 4.9 GB load 49 ms."""


def capture(name: str) -> Any:
    """Return a capture from a real Ollama v0.24 server, parsed (dict order kept)."""
    return json.loads((CAPTURES / name).read_text())


async def eventually(
    predicate: Callable[[], Awaitable[bool] | bool], within_s: float = 5.0, interval: float = 0.005
) -> None:
    """Poll ``predicate`` until it is true; fail after ``within_s`` real seconds."""
    deadline = time.monotonic() + within_s
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {within_s} s")
        await asyncio.sleep(interval)


async def call(
    session: aiohttp.ClientSession, method: str, path: str, body: Any = None, **kwargs: Any
) -> tuple[int, Any]:
    """Send one request; return (status, parsed JSON or text)."""
    data = kwargs.pop("data", None)
    if body is not None:
        data = json.dumps(body)
    async with session.request(method, path, data=data, **kwargs) as response:
        text = await response.text()
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text


async def post(session: aiohttp.ClientSession, path: str, body: Any) -> tuple[int, Any]:
    """POST JSON and return (status, parsed body)."""
    return await call(session, "POST", path, body)


async def ps(session: aiohttp.ClientSession) -> list[dict[str, Any]]:
    """Return the ``models`` list of ``GET /api/ps``."""
    status, body = await call(session, "GET", "/api/ps")
    assert status == 200
    return list(body["models"])


async def ps_names(session: aiohttp.ClientSession) -> list[str]:
    """Return the names listed by ``/api/ps``, in its order."""
    return [row["name"] for row in await ps(session)]


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 time as Ollama prints it (Python 3.11 handles nanoseconds)."""
    return datetime.fromisoformat(text)
