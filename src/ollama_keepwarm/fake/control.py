"""Fault injection over HTTP, under ``/_fake/`` (a prefix no real Ollama serves).

These mirror the Python API of :class:`~ollama_keepwarm.fake.server.FakeOllama` for clients in
another process (the demo, a benchmark, a shell). Faults that take time (restart, suspend) reply
``202`` at once and run in the background; they are not held by a suspend, and not recorded in
``FakeOllama.requests``.

Routes and bodies (each mirrors the :class:`FakeOllama` method of the same name)::

    GET  /_fake/state           (runners, current load, load and eviction logs)
    POST /_fake/restart         {"down_s": 1.0, "hang_s": 0.0}
    POST /_fake/crash           {"model": "llama3.1:8b"}
    POST /_fake/suspend         {"seconds": 30, "gpu_lost": false}
    POST /_fake/fail_next_load  {"error": null, "times": 1}
    POST /_fake/delay           {"path_prefix": "/api/ps", "seconds": 2}  ("inf", null)
    POST /_fake/garble          {"path_prefix": "/api/ps", "kind": "http", "times": 1}
    POST /_fake/runtime_oom
    POST /_fake/unload          {"model": "llama3.1:8b"}
    POST /_fake/step_wall       {"seconds": -3600}
    GET  /_fake/records         (who caused each load, eviction, unload and wait: records.py)
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable
from typing import Any, Protocol

from aiohttp import web

from ollama_keepwarm.fake.api import json_response
from ollama_keepwarm.fake.records import EvictionRecord, LoadRecord, Records, records_json
from ollama_keepwarm.fake.wire import RequestError

__all__ = ["ControlRoutes", "FaultTarget"]


async def _body(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        value = json.loads(raw)
    except ValueError as error:
        raise RequestError(400, f"invalid JSON: {error}") from None
    if not isinstance(value, dict):
        raise RequestError(400, "expected a JSON object")
    return value


def _number(body: dict[str, Any], key: str, default: float) -> float:
    value = body.get(key, default)
    if value == "inf":
        return math.inf
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise RequestError(400, f"{key} must be a non-negative number")
    return float(value)


def _model(body: dict[str, Any]) -> str:
    name = body.get("model")
    if not isinstance(name, str) or not name:
        raise RequestError(400, "model is required")
    return name


class FaultTarget(Protocol):
    """The fault methods these routes call (a :class:`FakeOllama` provides them)."""

    def state(self) -> dict[str, Any]: ...
    def spawn(self, coroutine: Awaitable[None]) -> None: ...
    async def restart(self, down_s: float = 1.0, hang_s: float = 0.0) -> None: ...
    def crash(self, name: str) -> bool: ...
    async def suspend(self, seconds: float, gpu_lost: bool = False) -> None: ...
    def fail_next_load(self, error: str | None = None, times: int = 1) -> None: ...
    def set_delay(self, path_prefix: str, seconds: float | None) -> None: ...
    def garble_next(self, path_prefix: str, kind: str = "http", times: int = 1) -> None: ...
    def runtime_oom(self) -> int: ...
    async def unload(self, name: str) -> bool: ...
    def step_wall(self, seconds: float) -> None: ...
    @property
    def loads(self) -> list[LoadRecord]: ...
    @property
    def evictions(self) -> list[EvictionRecord]: ...
    @property
    def records(self) -> Records: ...


class ControlRoutes:
    """The ``/_fake/`` handlers of one :class:`FakeOllama`."""

    def __init__(self, fake: FaultTarget) -> None:
        self.fake = fake

    def register(self, app: web.Application) -> None:
        """Add the control routes to ``app``."""
        router = app.router
        router.add_get("/_fake/state", self.state)
        router.add_post("/_fake/restart", self.restart)
        router.add_post("/_fake/crash", self.crash)
        router.add_post("/_fake/suspend", self.suspend)
        router.add_post("/_fake/fail_next_load", self.fail_next_load)
        router.add_post("/_fake/delay", self.delay)
        router.add_post("/_fake/garble", self.garble)
        router.add_post("/_fake/runtime_oom", self.runtime_oom)
        router.add_post("/_fake/unload", self.unload)
        router.add_post("/_fake/step_wall", self.step_wall)
        router.add_get("/_fake/records", self.records)

    async def state(self, _request: web.Request) -> web.Response:
        """Return runners, the current load, and the load and eviction logs."""
        return json_response(200, self.fake.state())

    async def restart(self, request: web.Request) -> web.StreamResponse:
        """Reply 202, then restart (this very connection is closed by it)."""
        body = await _body(request)
        down_s = _number(body, "down_s", 1.0)
        hang_s = _number(body, "hang_s", 0.0)
        response = json_response(202, {"status": "restarting"})
        await response.prepare(request)
        await response.write_eof()
        self.fake.spawn(self.fake.restart(down_s=down_s, hang_s=hang_s))
        return response

    async def crash(self, request: web.Request) -> web.Response:
        """Kill one runner; 404 for a name not in the catalogue."""
        name = _model(await _body(request))
        try:
            crashed = self.fake.crash(name)
        except KeyError:
            raise RequestError(404, f"model '{name}' not found") from None
        return json_response(200, {"crashed": crashed})

    async def suspend(self, request: web.Request) -> web.Response:
        """Reply 202, then suspend for ``seconds``."""
        body = await _body(request)
        seconds = _number(body, "seconds", 10.0)
        gpu_lost = bool(body.get("gpu_lost", False))
        self.fake.spawn(self.fake.suspend(seconds, gpu_lost=gpu_lost))
        return json_response(202, {"status": "suspending"})

    async def fail_next_load(self, request: web.Request) -> web.Response:
        """Make the next load(s) fail; ``error: null`` is Ollama's OOM text."""
        body = await _body(request)
        error = body.get("error")
        if error is not None and not isinstance(error, str):
            raise RequestError(400, "error must be a string or null")
        self.fake.fail_next_load(error, times=int(_number(body, "times", 1)))
        return json_response(200, {"status": "armed"})

    async def delay(self, request: web.Request) -> web.Response:
        """Set or clear (``seconds: null``) a delay on a path prefix."""
        body = await _body(request)
        prefix = body.get("path_prefix")
        if not isinstance(prefix, str):
            raise RequestError(400, "path_prefix is required")
        seconds = None if body.get("seconds") is None else _number(body, "seconds", 0.0)
        self.fake.set_delay(prefix, seconds)
        return json_response(200, {"path_prefix": prefix, "seconds": body.get("seconds")})

    async def garble(self, request: web.Request) -> web.Response:
        """Break the next answer(s) to a path prefix (kinds in ``fake/garble.py``)."""
        body = await _body(request)
        prefix, kind = body.get("path_prefix"), body.get("kind", "http")
        if not isinstance(prefix, str) or not isinstance(kind, str):
            raise RequestError(400, "path_prefix and kind must be strings")
        try:
            self.fake.garble_next(prefix, kind, times=int(_number(body, "times", 1)))
        except ValueError as error:
            raise RequestError(400, str(error)) from None
        return json_response(200, {"status": "armed"})

    async def runtime_oom(self, _request: web.Request) -> web.Response:
        """A generation ran out of memory: v0.30+ expires every runner; say how many."""
        return json_response(200, {"expired": self.fake.runtime_oom()})

    async def unload(self, request: web.Request) -> web.Response:
        """Send the unload command for one model."""
        name = _model(await _body(request))
        try:
            unloaded = await self.fake.unload(name)
        except KeyError:
            raise RequestError(404, f"model '{name}' not found") from None
        return json_response(200, {"unloading": unloaded})

    async def step_wall(self, request: web.Request) -> web.Response:
        """Step the wall clock the fake reports by ``seconds`` (either sign)."""
        seconds = (await _body(request)).get("seconds")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float):
            raise RequestError(400, "seconds must be a number")
        self.fake.step_wall(float(seconds))
        return json_response(200, {"stepped_s": seconds})

    async def records(self, _request: web.Request) -> web.Response:
        """Return who caused each load, eviction, unload and wait."""
        return json_response(
            200, records_json(self.fake.loads, self.fake.evictions, self.fake.records)
        )
