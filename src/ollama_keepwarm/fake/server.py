"""``FakeOllama``: the server's lifecycle, its knobs, and the faults tests inject.

The HTTP socket and the scheduler live and die together, as in a real ``ollama serve`` process:
:meth:`FakeOllama.restart` closes the listener and every connection, forgets every runner and
``keep_alive``, stays down, then listens again on the same port.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import json
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any, Literal

from aiohttp import web

from ollama_keepwarm.core.durations import INFINITE_NS, NS_PER_SECOND, format_go_duration
from ollama_keepwarm.fake.api import PROMPT_UNCACHED, OllamaRoutes, json_response
from ollama_keepwarm.fake.catalog import Catalog, Manifest, default_catalog
from ollama_keepwarm.fake.clock import Clock
from ollama_keepwarm.fake.control import ControlRoutes
from ollama_keepwarm.fake.garble import KINDS as GARBLE_KINDS
from ollama_keepwarm.fake.garble import garbled
from ollama_keepwarm.fake.processes import RunnerProcesses
from ollama_keepwarm.fake.records import (
    EvictionRecord,
    LoadRecord,
    RecordedRequest,
    Records,
    RunnerInfo,
    wall_datetime,
)
from ollama_keepwarm.fake.scheduler import LoadFailure, Scheduler, SchedulerError
from ollama_keepwarm.fake.versions import CURRENT_STABLE, Behaviour
from ollama_keepwarm.fake.wire import RequestError, format_local_time, parse_env_keep_alive

__all__ = ["FakeOllama"]

log = logging.getLogger("ollama_keepwarm.fake")

_Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_CONTROL_PREFIX = "/_fake/"
RESTART_BIND_RETRY_S = 5.0
"""How long a restart tries its port again if another process took it while the fake was down."""
Phase = Literal["stopped", "down", "starting", "ready", "suspended"]


def _keep_alive_ns(value: str | float) -> int:
    """Read the server default like ``OLLAMA_KEEP_ALIVE``; a number is seconds (§1.2)."""
    if isinstance(value, str):
        return parse_env_keep_alive(value)
    if value < 0:
        return INFINITE_NS
    return int(value * NS_PER_SECOND)


def _set_delay(delays: dict[str, float], path_prefix: str, seconds: float | None) -> None:
    if seconds is None:
        delays.pop(path_prefix, None)
    else:
        delays[path_prefix] = seconds


def _delay_for(delays: dict[str, float], path: str) -> float | None:
    """The delay of the longest prefix of ``path`` in ``delays``, if any."""
    matches = [prefix for prefix in delays if path.startswith(prefix)]
    return delays[max(matches, key=len)] if matches else None


def _text(status: int, text: str) -> web.Response:
    return web.Response(status=status, text=text, content_type="text/plain", charset="utf-8")


class FakeOllama:
    """An in-process Ollama stand-in; see the package docstring for what it models.

    Every duration it waits for (model time) is divided by ``time_scale``; the times it
    reports are real wall clock. ``ollama_version`` is what ``/api/version`` says and decides
    every version-dependent rule (:class:`~ollama_keepwarm.fake.versions.Behaviour`).

    Raises:
        VersionError: ``ollama_version`` is not MAJOR.MINOR.PATCH.
    """

    def __init__(
        self,
        catalog: Catalog | None = None,
        max_loaded: int = 3,
        memory_bytes: int = 16 * 2**30,
        default_keep_alive: str | float = "5m",
        load_seconds_per_gb: float = 1.0,
        time_scale: float = 1.0,
        ollama_version: str = CURRENT_STABLE,
        unload_delay_s: float = 0.0,
        seconds_per_token: float = 0.01,
        max_queue: int = 512,
        runner_processes: bool = False,
        seconds_per_prompt_token: float = 0.0002,
        num_parallel: int = 1,
        exit_to_row_s: float | None = None,
    ) -> None:
        self.catalog = (catalog or default_catalog()).copy()
        self.exit_to_row_s = exit_to_row_s
        """Before v0.32.4, how long after a runner's exit its ps row goes (model time; default
        ~1 ms as measured, §4.9): a test widens it to make that window certain."""
        self.max_loaded = max_loaded
        self.memory_bytes = memory_bytes
        self.default_keep_alive_ns = _keep_alive_ns(default_keep_alive)
        self.load_seconds_per_gb = load_seconds_per_gb
        self.clock = Clock(time_scale)
        self.behaviour = Behaviour.for_version(ollama_version)
        self.unload_delay_s = unload_delay_s
        self.seconds_per_token = seconds_per_token
        self.seconds_per_prompt_token = seconds_per_prompt_token
        """Prompt processing per uncached token (model time); 0.2 ms is a GPU's pace."""
        if num_parallel < 1:
            raise ValueError("num_parallel must be at least 1")
        self.num_parallel = num_parallel
        """``OLLAMA_NUM_PARALLEL``: request slots (and prompt caches) per runner."""
        self.max_queue = max_queue
        self.loads: list[LoadRecord] = []
        self.evictions: list[EvictionRecord] = []
        self.requests: list[RecordedRequest] = []
        self.records = Records()
        """Who caused each unload, wait and touch of a draining runner (``records.py``)."""
        self.host = "127.0.0.1"
        self.port = 0
        self._load_failures: deque[LoadFailure] = deque()
        self.runner_processes = runner_processes
        self.processes: RunnerProcesses | None = None
        """With ``runner_processes``, the runners' real children (made at :meth:`start`)."""
        self.scheduler = self._new_scheduler()
        self._delays: dict[str, float] = {}
        self._reply_delays: dict[str, float] = {}  # held after the answer is made, before sent
        self._garbles: list[tuple[str, str]] = []  # (path prefix, kind), see fake/garble.py
        self._holds = 0
        self._ready: asyncio.Event | None = None
        self._runner: web.AppRunner | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._restarting = asyncio.Lock()
        """One restart at a time: a restart asked for during another follows it."""
        self.phase: Phase = "stopped"
        """``stopped``, ``down`` (refusing connections), ``starting`` (accepting, not answering),
        ``ready`` or ``suspended``."""

    # --- lifecycle ------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The base URL clients use, e.g. ``http://127.0.0.1:11434``."""
        return f"http://{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (0 picks a free port, then kept across restarts)."""
        self.host = host
        self.port = port
        self.port_taken = 0
        """How often a restart found its port taken by another process and tried again."""
        self._ready = asyncio.Event()
        self._ready.set()
        if self.runner_processes and self.processes is None:
            self.processes = RunnerProcesses()
        self.scheduler = self._new_scheduler()
        self.scheduler.start()
        await self._listen()
        self.phase = "ready"

    async def stop(self) -> None:
        """Close the socket and every connection, and drop every runner."""
        self.phase = "stopped"
        await self._close_http()
        await self.scheduler.close()
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        if self.processes is not None:
            await self.processes.close()
            self.processes = None

    async def __aenter__(self) -> FakeOllama:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def ollama_version(self) -> str:
        """The version the fake reports and imitates."""
        return self.behaviour.version

    # --- faults -----------------------------------------------------------------------------

    async def restart(self, down_s: float = 1.0, hang_s: float = 0.0) -> None:
        """Stop like SIGTERM, stay down ``down_s`` (connections refused), then serve again.

        With ``hang_s`` > 0 the socket accepts connections again but answers nothing for
        ``hang_s`` more, like Ollama's start-up (§5.1). Returns once it answers again. A
        restart asked for while another is under way follows it, as systemd would: otherwise
        the later one listens first and the earlier one finds its own port taken.
        """
        async with self._restarting:
            await self._restart(down_s, hang_s)

    async def _restart(self, down_s: float, hang_s: float) -> None:
        self.phase = "down"
        await self._close_http()
        await self.scheduler.close()
        self.scheduler = self._new_scheduler()
        self.scheduler.start()
        await asyncio.sleep(self.clock.real_seconds(down_s))
        if hang_s > 0:
            self._hold()
            try:
                await self._listen(retry_s=RESTART_BIND_RETRY_S)
                self.phase = "starting"
                await asyncio.sleep(self.clock.real_seconds(hang_s))
            finally:
                self._unhold()
        else:
            await self._listen(retry_s=RESTART_BIND_RETRY_S)
        self.phase = "ready"
        log.info("fake ollama restarted on %s", self.url)

    def crash(self, name: str) -> bool:
        """Kill the runner serving ``name`` (SIGKILL its child, if any); say if one was loaded.

        Raises:
            KeyError: ``name`` is not in the catalogue.
        """
        return self.scheduler.crash(self._manifest(name))

    async def suspend(self, seconds: float, gpu_lost: bool = False) -> None:
        """Emulate a machine sleep: requests held, timers frozen, wall clock moving on (§7.7).

        Returns after the resume. With ``gpu_lost`` runners (and later loads, until a restart)
        report ``size_vram`` 0.
        """
        self._hold()
        self.clock.suspend()
        self.phase = "suspended"
        try:
            await asyncio.sleep(self.clock.real_seconds(seconds))
        finally:
            self.clock.resume()
            if gpu_lost:
                self.scheduler.lose_gpu()
            self._unhold()
            if self.phase == "suspended":
                self.phase = "ready"

    def fail_next_load(self, error: str | None = None, times: int = 1) -> None:
        """Make the next ``times`` load attempts fail with 500.

        ``None`` is the version's out-of-memory text. From v0.30 an out-of-memory failure (any
        text containing "out of memory") is retried once after evicting every other model, or
        with a lower automatic ``num_ctx`` (§4.4), so use ``times=2`` to see the 500 then.
        """
        self._load_failures.extend([LoadFailure(error)] * times)

    def garble_next(self, path_prefix: str, kind: str = "http", times: int = 1) -> None:
        """Break the next ``times`` answers to paths under ``path_prefix`` (``fake/garble.py``)."""
        if kind not in GARBLE_KINDS:
            raise ValueError(f"unknown garble kind {kind!r}: one of {', '.join(GARBLE_KINDS)}")
        self._garbles.extend([(path_prefix, kind)] * times)

    def set_delay(self, path_prefix: str, seconds: float | None) -> None:
        """Delay requests whose path starts with ``path_prefix``; ``inf`` hangs, ``None`` clears."""
        _set_delay(self._delays, path_prefix, seconds)

    def set_reply_delay(self, path_prefix: str, seconds: float | None) -> None:
        """Hold the answers of paths starting with ``path_prefix`` for ``seconds`` after they
        are made (a load done, the runner listed) and before they are sent: a slow network or a
        busy client, as a machine under load makes them. ``None`` clears."""
        _set_delay(self._reply_delays, path_prefix, seconds)

    def step_wall(self, seconds: float) -> None:
        """Step the wall clock the fake reports (timers are monotonic and do not move)."""
        self.clock.step_wall(seconds)

    def runtime_oom(self) -> int:
        """A generation ran out of memory: from v0.30 every runner expires once idle (§4.4).

        Returns how many runners were expired (0 before v0.30).
        """
        return self.scheduler.runtime_oom()

    async def unload(self, name: str) -> bool:
        """Send the unload command for ``name`` (another client's ``keep_alive: 0``).

        Returns whether a runner was loaded; like the API it does not wait for the unload.

        Raises:
            KeyError: ``name`` is not in the catalogue (the API would answer 404).
        """
        return self.scheduler.expire_now(self._manifest(name))

    # --- observation ------------------------------------------------------------------------

    def runners(self) -> list[RunnerInfo]:
        """Return the loaded runners in ``/api/ps`` order."""
        return self.scheduler.runner_infos()

    def state(self) -> dict[str, Any]:
        """Return everything ``GET /_fake/state`` shows, as JSON-ready values."""
        now = self.clock.wall_ns()
        runners = []
        for runner, expires_ns in self.scheduler.listed():
            runners.append(
                {
                    "name": runner.name,
                    "options": runner.options.as_dict(),
                    "context_shift": runner.options.context_shift,
                    "keep_alive": format_go_duration(runner.keep_alive_ns),
                    "keep_alive_ns": runner.keep_alive_ns,
                    "expires_at": format_local_time(expires_ns),
                    "busy": runner.ref_count,
                    "crashed": runner.crashed,
                    "size_vram": runner.size_vram,
                    "pid": self.processes.pid(runner.key) if self.processes else None,
                }
            )
        loading = self.scheduler.loading
        return {
            "now": format_local_time(now),
            "version": self.ollama_version,
            "phase": self.phase,
            "runners": runners,
            "cgroup": self._cgroup(),
            "loading": loading.manifest.name if loading is not None else None,
            "loads": [
                {
                    "model": r.model,
                    "reason": r.reason,
                    "requested_by": r.requested_by,
                    "started": r.started.isoformat(),
                    "finished": r.finished.isoformat() if r.finished else None,
                    "ok": r.ok,
                    "error": r.error,
                    "changed": r.changed,
                }
                for r in self.loads
            ],
            "evictions": [
                {
                    "victim": e.victim,
                    "for_model": e.for_model,
                    "time": e.time.isoformat(),
                    "reason": e.reason,
                }
                for e in self.evictions
            ],
        }

    def _cgroup(self) -> str | None:
        """The cgroup directory the runners' children are in, if any."""
        cgroup = self.processes.cgroup if self.processes is not None else None
        return str(cgroup) if cgroup is not None else None

    def spawn(self, coroutine: Awaitable[None]) -> None:
        """Run a fault in the background (the HTTP control routes reply before it ends)."""

        async def run() -> None:
            await coroutine

        task = asyncio.create_task(run())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # --- internals --------------------------------------------------------------------------

    def _manifest(self, name: str) -> Manifest:
        manifest = self.catalog.resolve(name)
        if manifest is None:
            raise KeyError(name)
        return manifest

    def _new_scheduler(self) -> Scheduler:
        return Scheduler(
            behaviour=self.behaviour,
            clock=self.clock,
            max_loaded=self.max_loaded,
            memory_bytes=self.memory_bytes,
            default_keep_alive_ns=self.default_keep_alive_ns,
            load_seconds_per_gb=self.load_seconds_per_gb,
            unload_delay_s=self.unload_delay_s,
            exit_to_row_s=self.exit_to_row_s,
            max_queue=self.max_queue,
            loads=self.loads,
            evictions=self.evictions,
            load_failures=self._load_failures,
            processes=self.processes,
            num_parallel=self.num_parallel,
            records=self.records,
        )

    def _hold(self) -> None:
        self._holds += 1
        if self._ready is not None:
            self._ready.clear()

    def _unhold(self) -> None:
        self._holds -= 1
        if self._holds == 0 and self._ready is not None:
            self._ready.set()

    async def _listen(self, retry_s: float = 0.0) -> None:
        """Serve on ``self.port``; after a restart, retry a port someone took meanwhile for up
        to ``retry_s`` (many fakes at once may be handed the same free port, as systemd would
        start Ollama again after a failed bind)."""
        deadline = asyncio.get_running_loop().time() + retry_s
        while True:
            try:
                await self._listen_once()
                return
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE or asyncio.get_running_loop().time() > deadline:
                    raise
                self.port_taken += 1
                await asyncio.sleep(0.05)

    async def _listen_once(self) -> None:
        app = web.Application(middlewares=[self._middleware])
        OllamaRoutes(self).register(app)
        ControlRoutes(self).register(app)
        runner = web.AppRunner(
            app, handler_cancellation=True, shutdown_timeout=0.0, access_log=None
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port, reuse_address=True)
        try:
            await site.start()
        except OSError:
            await runner.cleanup()
            raise
        self._runner = runner
        address = runner.addresses[0]
        self.port = int(address[1])

    async def _close_http(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()

    async def hold_reply(self, path: str) -> None:
        """Wait out the reply delay set for ``path`` (:meth:`set_reply_delay`), if any."""
        held = _delay_for(self._reply_delays, path)
        if held is not None:
            await self.clock.sleep(held)

    @web.middleware
    async def _middleware(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        """Gate, delay, map errors to Ollama's bodies, record and log every request."""
        if request.path.startswith(_CONTROL_PREFIX):
            return await self._answer(request, handler)
        if self._ready is not None:
            await self._ready.wait()
        delay = _delay_for(self._delays, request.path)
        if delay is not None:
            await self.clock.sleep(delay)
        garble = next((g for g in self._garbles if request.path.startswith(g[0])), None)
        if garble is not None:  # answered broken, not served; recorded and logged like any
            self._garbles.remove(garble)
            handler = functools.partial(garbled, kind=garble[1])
        raw = await request.read() if request.can_read_body else b""
        try:
            body: Any = json.loads(raw) if raw else None
        except ValueError:
            body = None
        started = self.clock.monotonic_ns()
        received = wall_datetime(self.clock.true_wall_ns())
        status = 499  # Go logs a cancelled request as 499
        try:
            response = await self._answer(request, handler)
            status = response.status
            return response
        finally:
            at = wall_datetime(self.clock.wall_ns())  # the log shows the server's clock
            self.requests.append(
                RecordedRequest(
                    wall_datetime(self.clock.true_wall_ns()),
                    request.method,
                    request.path,
                    body,
                    status,
                    request.headers.get("User-Agent", ""),
                    request.get(PROMPT_UNCACHED),
                    received,
                )
            )
            elapsed_ms = (self.clock.monotonic_ns() - started) / 1e6
            # Gin's line as Ollama prints it (its timestamp on the fake's clock), plus the model
            # asked for, so a user debugging a client against the fake sees what happened.
            model = body.get("model") or body.get("name") if isinstance(body, dict) else None
            log.info(
                "[GIN] %s | %3d | %10.3fms | %15s | %-7s %s%s",
                at.astimezone().strftime("%Y/%m/%d - %H:%M:%S"),
                status,
                elapsed_ms,
                request.remote or "",
                request.method,
                json.dumps(request.path),
                f" model={json.dumps(model)}" if isinstance(model, str) else "",
            )

    async def _answer(self, request: web.Request, handler: _Handler) -> web.StreamResponse:
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _text(404, "404 page not found")
        except web.HTTPMethodNotAllowed:
            return _text(405, "405 method not allowed")
        except (RequestError, SchedulerError) as error:
            return json_response(error.status, {"error": error.message})
        except ConnectionResetError:
            raise
        except Exception as error:  # Gin's recovery: a 500, never a traceback on the wire
            log.exception("fake ollama handler failed")
            return json_response(500, {"error": str(error)})
