"""Run one chaos schedule: the real keeper against the fake, over real sockets, in one loop.

The keeper is the daemon's own :class:`~ollama_keepwarm.daemon.keeper.Keeper` (what
``ollama-keepwarm run`` starts), with injected clocks so a wall-clock step or a suspend reaches
it as it would reach the process: the fake and the keeper step together. Config reloads go
through ``Keeper.request_reload`` (what SIGHUP calls); pause, resume and refresh through the
control socket. Clients send ``User-Agent: chaos-client/<n>``; the fake's records
(``fake/records.py``) tell their requests from the keeper's.

Everything the checks need is copied into a plain, picklable :class:`Outcome`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import resource
import shutil
import tempfile
import time
from collections.abc import Awaitable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from bench.chaos_schedule import LOAD_S_PER_GB, POLL_S, SCALE, TOKEN_S, Event, Kept, Schedule
from ollama_keepwarm.core.config import Config, ConfigError, parse_config
from ollama_keepwarm.daemon.clocks import ManualClocks
from ollama_keepwarm.daemon.control import send_command
from ollama_keepwarm.daemon.keeper import Keeper
from ollama_keepwarm.fake import EvictionRecord, FakeOllama, LoadRecord, RecordedRequest
from ollama_keepwarm.fake.records import Records
from ollama_keepwarm.fake.server import AnswerFault

__all__ = ["ClientResult", "Outcome", "run_schedule"]

CLIENT_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
SAMPLE_S = 0.1
RESOURCES_EVERY_S = 10.0
SLOW_S = 4.0
"""How long a slowed answer takes (real seconds): past the keeper's 3 s request timeout."""


@dataclass(frozen=True)
class ClientResult:
    """One client request as the client saw it (real epoch seconds)."""

    client: int
    model: str
    sent: float
    ended: float
    status: int
    error: str = ""


@dataclass
class Outcome:
    """What one run left behind, for the checks (times are real epoch seconds)."""

    schedule: Schedule
    started: float
    ended: float
    kept_keys: dict[str, str]
    """Config model name -> weights blob (aliases share one)."""
    blobs: dict[str, str]
    """Every catalogue name (and alias) -> weights blob."""
    loads: list[LoadRecord]
    evictions: list[EvictionRecord]
    records: Records
    requests: list[RecordedRequest]
    logs: list[dict[str, Any]]
    clients: list[ClientResult]
    statuses: list[tuple[float, dict[str, tuple[str, str]]]]
    """(time, {config name: (state, reason)}) every :data:`SAMPLE_S`."""
    lags: list[tuple[float, float]]
    """(time, how late a :data:`SAMPLE_S` sleep woke): the event loop's delay at that time."""
    windows: list[tuple[float, float, str, str]] = field(default_factory=list)
    """(start, end, kind, model or "") of each fault, pause or reload: losses inside are excused."""
    exit_code: int | None = None
    keeper_died: str = ""
    loop_errors: list[str] = field(default_factory=list)
    lanes_ended: list[str] = field(default_factory=list)
    resources: list[tuple[float, int, int, int]] = field(default_factory=list)
    """(time, RSS KiB, open fds, asyncio tasks) before the keeper starts, every
    :data:`RESOURCES_EVERY_S` while it runs, and at the end."""


def _config(url: str, kept: tuple[Kept, ...], scratch: str, cgroup: str) -> Config:
    raw: dict[str, Any] = {
        "ollama": {"host": url, "load_timeout": "30s", "request_timeout": "3s", "cgroup": cgroup},
        "daemon": {
            "control_socket": f"{scratch}/c.sock",
            "state_dir": scratch,
            "poll_interval": f"{int(POLL_S * 1000)}ms",
            "refresh_before": "3s",
            "health_interval": "5s",
            "down_poll_max": "300ms",
            "conflict_retry": "20s",
        },
        "http": {"enabled": False},
        "models": [
            {
                "name": k.name,
                "keep_alive": k.keep_alive,
                "priority": k.priority,
                **({"options": k.options} if k.options else {}),
            }
            for k in kept
        ],
    }
    return parse_config(raw, environ={})


def _rss_kib() -> int:
    with contextlib.suppress(OSError):
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _fds() -> int:
    with contextlib.suppress(OSError):
        return sum(1 for _ in Path("/proc/self/fd").iterdir())
    return -1


class _Driver:
    """Carries out the events of one schedule against one fake and one keeper."""

    def __init__(self, schedule: Schedule, fake: FakeOllama, scratch: str) -> None:
        self.schedule = schedule
        self.fake = fake
        self.scratch = scratch
        self.clocks = ManualClocks()
        cgroup = ""
        if fake.processes is not None and fake.processes.cgroup is not None:
            cgroup = str(fake.processes.cgroup)
        self.cgroup = cgroup
        self.kept = schedule.kept
        self.config = _config(fake.url, self.kept, scratch, cgroup)
        self.next_config: Config | None = None
        self.session: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.clients: list[ClientResult] = []
        self.windows: list[tuple[float, float, str, str]] = []
        self.paused: dict[str, float] = {}
        self.open_windows: dict[str, float] = {}
        self.reloads = 0

    def reload_config(self) -> Config:
        """What the keeper's SIGHUP reads: the next config, or a ConfigError for a bad file."""
        if self.next_config is None:
            raise ConfigError("models[0].keep_alive", "invalid duration 'soon' (chaos: a bad file)")
        config, self.next_config = self.next_config, None
        return config

    def window(self, kind: str, start: float, length: float, model: str = "") -> None:
        self.windows.append((start, start + length, kind, model))

    def spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def client_request(self, event: Event) -> None:
        assert self.session is not None
        args = event.args
        body: dict[str, Any] = {
            "model": args["model"],
            "prompt": f"chaos client {args['client']} asks something",
            "stream": False,
            "options": {"num_predict": args["tokens"], **args.get("options", {})},
        }
        if "keep_alive" in args:
            body["keep_alive"] = args["keep_alive"]
        sent = time.time()
        status, error = 0, ""
        try:
            async with self.session.post(
                f"{self.fake.url}/api/generate",
                json=body,
                headers={"User-Agent": f"chaos-client/{args['client']}"},
                timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S),
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            error = type(exc).__name__
        self.clients.append(
            ClientResult(args["client"], args["model"], sent, time.time(), status, error)
        )

    async def stop_model(self, model: str) -> None:
        assert self.session is not None
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with self.session.post(
                f"{self.fake.url}/api/generate",
                json={"model": model, "keep_alive": 0},
                headers={"User-Agent": "ollama/0.0.0 (amd64 linux) Go/go1.24 chaos"},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as response:
                await response.read()

    async def control(self, request: Mapping[str, Any]) -> None:
        with contextlib.suppress(Exception):
            await send_command(Path(self.config.daemon.control_socket), request, timeout_s=10)

    def _good_config(self) -> Config:
        """A changed but valid config: the same models, priorities rotated, leases swapped."""
        self.reloads += 1
        turned = tuple(
            Kept(
                k.name,
                self.kept[(i + self.reloads) % len(self.kept)].keep_alive,
                self.kept[(i + self.reloads) % len(self.kept)].priority,
                k.options,
            )
            for i, k in enumerate(self.kept)
        )
        return _config(self.fake.url, turned, self.scratch, self.cgroup)

    async def fire(self, event: Event, keeper: Keeper | None) -> None:
        """Carry out one event (it returns at once; lasting faults run in the background)."""
        handler = getattr(self, f"_do_{event.kind}", None)
        if handler is not None:
            await handler(event.args, keeper, time.time())

    async def _do_request(self, args: dict[str, Any], _k: Keeper | None, _now: float) -> None:
        self.spawn(self.client_request(Event(0.0, "request", args)))

    async def _do_stop(self, args: dict[str, Any], _k: Keeper | None, _now: float) -> None:
        self.spawn(self.stop_model(args["model"]))

    async def _lasting(self, kind: str, now: float, fault: Awaitable[None]) -> None:
        """Run a fault that takes time; its window lasts until it is over, plus a second."""
        self.open_windows[kind] = now
        try:
            await fault
        finally:
            self.open_windows.pop(kind, None)
            self.window(kind, now, time.time() - now + 1.0)

    async def _do_restart_fast(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        down, hang = args["down_s"], args.get("hang_s", 0.0)
        restart = self.fake.restart(down_s=down * SCALE, hang_s=hang * SCALE)
        self.spawn(self._lasting("restart", now, restart))

    _do_restart_slow = _do_restart_fast

    async def _do_crash(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        self.window("crash", now, 1.0, args["model"])
        with contextlib.suppress(KeyError):
            self.fake.crash(args["model"])

    async def _do_runtime_oom(self, _a: dict[str, Any], _k: Keeper | None, now: float) -> None:
        self.window("runtime_oom", now, 1.0)
        self.fake.runtime_oom()

    async def _do_suspend(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        self.clocks.suspend(args["seconds"])
        self.spawn(self._lasting("suspend", now, self.fake.suspend(args["seconds"] * SCALE)))

    async def _do_step_back(self, args: dict[str, Any], _k: Keeper | None, _now: float) -> None:
        # The machine's clock steps: the keeper's wall clock and the fake's move together.
        self.clocks.step_wall(args["seconds"])
        self.fake.step_wall(args["seconds"])

    _do_step_forward = _do_step_back

    async def _delay(self, prefix: str, seconds: float, for_s: float, now: float) -> None:
        self.window(f"delay {prefix}", now, for_s + 4.0)
        self.fake.set_delay(prefix, seconds * SCALE)
        self.spawn(self._clear_delay(prefix, for_s))

    async def _do_hang_ps(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        await self._delay("/api/ps", math.inf, args["for_s"], now)

    async def _do_slow_generate(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        await self._delay("/api/generate", SLOW_S, args["for_s"], now)

    async def _do_slow_show(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        await self._delay("/api/show", SLOW_S, args["for_s"], now)

    def _wrong_answers(self, prefix: str, kind: AnswerFault, times: int, now: float) -> None:
        self.window(f"{kind} {prefix}", now, 2.0)
        self.fake.fail_next_answers(prefix, kind, times=times)

    async def _do_garble_ps(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        self._wrong_answers("/api/ps", "garble", args["times"], now)

    async def _do_garble_generate(
        self, args: dict[str, Any], _k: Keeper | None, now: float
    ) -> None:
        self._wrong_answers("/api/generate", "garble", args["times"], now)

    async def _do_error_generate(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        self._wrong_answers("/api/generate", "500", args["times"], now)

    async def _do_fail_load(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        self.window("fail_load", now, 4.0)
        self.fake.fail_next_load(None, times=args["times"])

    async def _do_reload_good(self, _a: dict[str, Any], keeper: Keeper | None, now: float) -> None:
        if keeper is not None:
            self.next_config = self._good_config()
            self.window("reload", now, 1.0)
            keeper.request_reload()

    async def _do_reload_bad(self, _a: dict[str, Any], keeper: Keeper | None, _now: float) -> None:
        if keeper is not None:
            self.next_config = None
            keeper.request_reload()

    async def _do_pause(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        self.paused[args["model"]] = now
        request = {"command": "pause", "model": args["model"], "unload": args["unload"]}
        self.spawn(self.control(request))

    async def _do_resume(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        since = self.paused.pop(args["model"], None)
        if since is not None:
            self.window("pause", since, now - since + 1.0, args["model"])
        self.spawn(self.control({"command": "resume", "model": args["model"]}))

    async def _do_refresh(self, args: dict[str, Any], _k: Keeper | None, _now: float) -> None:
        self.spawn(self.control({"command": "refresh", "model": args["model"]}))

    async def _clear_delay(self, prefix: str, after_s: float) -> None:
        await asyncio.sleep(after_s)
        self.fake.set_delay(prefix, None)


def _capture(logs: list[dict[str, Any]]) -> Any:
    def processor(_logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        logs.append({**event_dict, "log_level": method, "t": time.time()})
        raise structlog.DropEvent

    return processor


async def run_schedule(schedule: Schedule) -> Outcome:
    """Run ``schedule`` once and return everything the checks need."""
    logs: list[dict[str, Any]] = []
    saved = structlog.get_config()
    structlog.configure(processors=[_capture(logs)], cache_logger_on_first_use=False)
    logging.getLogger("apscheduler").setLevel(logging.CRITICAL)
    logging.getLogger("ollama_keepwarm.fake").setLevel(logging.WARNING)
    loop = asyncio.get_running_loop()
    loop_errors: list[str] = []
    old_handler = loop.get_exception_handler()
    loop.set_exception_handler(
        lambda _l, ctx: loop_errors.append(f"{ctx.get('message')}: {ctx.get('exception')!r}")
    )
    scratch = tempfile.mkdtemp(prefix="okwc", dir="/tmp")
    fake = FakeOllama(
        ollama_version=schedule.version,
        max_loaded=schedule.max_loaded,
        memory_bytes=schedule.memory_gb * 2**30,
        time_scale=SCALE,
        load_seconds_per_gb=LOAD_S_PER_GB * SCALE,
        seconds_per_token=TOKEN_S * SCALE,
        seconds_per_prompt_token=0.0,
        runner_processes=True,
    )
    try:
        async with fake:
            return await _run(schedule, fake, scratch, logs, loop_errors)
    finally:
        loop.set_exception_handler(old_handler)
        structlog.configure(**saved)
        shutil.rmtree(scratch, ignore_errors=True)


class _Sampler:
    """Samples the keeper's status and the event loop's lag every :data:`SAMPLE_S`."""

    def __init__(self, keeper: Keeper) -> None:
        self.keeper = keeper
        self.statuses: list[tuple[float, dict[str, tuple[str, str]]]] = []
        self.lags: list[tuple[float, float]] = []
        self.resources: list[tuple[float, int, int, int]] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        next_resources = time.monotonic()
        while True:
            if time.monotonic() >= next_resources:
                self.resources.append(_resources())
                next_resources += RESOURCES_EVERY_S
            before = time.monotonic()
            await asyncio.sleep(SAMPLE_S)
            now = time.time()
            self.lags.append((now, max(0.0, time.monotonic() - before - SAMPLE_S)))
            with contextlib.suppress(Exception):
                hosts = self.keeper.status().get("hosts", [])
                models = [m for host in hosts for m in host.get("models", [])]
                self.statuses.append(
                    (now, {m["name"]: (str(m["state"]), str(m["reason"])) for m in models})
                )


async def _stop(keeper: Keeper, task: asyncio.Task[int]) -> tuple[int | None, str]:
    """Stop the keeper as SIGTERM would; return its exit code and how it died, if it did."""
    died = ""
    if task.done():
        exc = task.exception()
        died = f"keeper.run ended early: {exc!r}" if exc else "keeper.run returned"
    keeper.request_stop()
    try:
        return await asyncio.wait_for(asyncio.shield(task), STOP_TIMEOUT_S), died
    except TimeoutError:
        task.cancel()
        return None, died or f"keeper did not stop within {STOP_TIMEOUT_S:g}s"
    except Exception as exc:
        return None, died or f"keeper.run raised {exc!r}"


def _resources() -> tuple[float, int, int, int]:
    return (time.time(), _rss_kib(), _fds(), len(asyncio.all_tasks()))


def _blobs(fake: FakeOllama, schedule: Schedule, logs: list[dict[str, Any]]) -> dict[str, str]:
    """Every name the run saw -> its weights blob (aliases share one runner)."""
    names = {k.name for k in schedule.kept} | {m.name for m in fake.catalog.manifests()}
    names |= {ld.model for ld in fake.loads} | {u.model for u in fake.records.unloads}
    names |= {w.model for w in fake.records.waits} | {str(e.get("model")) for e in logs}
    blobs = {}
    for name in names:
        manifest = fake.catalog.resolve(name)
        if manifest is not None:
            blobs[name] = manifest.model.blob
    return blobs


async def _run(
    schedule: Schedule,
    fake: FakeOllama,
    scratch: str,
    logs: list[dict[str, Any]],
    loop_errors: list[str],
) -> Outcome:
    driver = _Driver(schedule, fake, scratch)
    events = [e for _, e in schedule.active]
    for event in [e for e in events if e.at <= 0.0]:
        await driver.fire(event, None)  # before the keeper starts (a slow /api/show at start)
    keeper = Keeper(
        driver.config,
        clocks=driver.clocks,
        reload_config=driver.reload_config,
        handle_signals=False,
        dbus_address="unix:path=/nonexistent/bus",
    )
    started = time.time()
    resources = [_resources()]
    task = asyncio.create_task(keeper.run())
    sampler = _Sampler(keeper)
    async with aiohttp.ClientSession() as session:
        driver.session = session
        for event in [e for e in events if e.at > 0.0]:
            delay = started + event.at - time.time()
            if delay > 0:
                await asyncio.wait({task}, timeout=delay)
            if task.done():
                break
            await driver.fire(event, keeper)
        await asyncio.wait({task}, timeout=max(0.0, started + schedule.run_s - time.time()))
        for prefix in ("/api/ps", "/api/generate", "/api/show"):
            fake.set_delay(prefix, None)
        ended = time.time()
        lanes = [
            f"{host.host}: {w.get_name()}"
            for host in keeper.hosts.values()
            for w in getattr(host, "_workers", [])
            if w.done()
        ]
        resources += [*sampler.resources, _resources()]
        exit_code, died = await _stop(keeper, task)
        sampler.task.cancel()
        for pending in list(driver.tasks):
            pending.cancel()
        await asyncio.gather(sampler.task, *driver.tasks, return_exceptions=True)
    blobs = _blobs(fake, schedule, logs)
    return Outcome(
        schedule=schedule,
        started=started,
        ended=ended,
        kept_keys={k.name: blobs[k.name] for k in schedule.kept},
        blobs=blobs,
        loads=list(fake.loads),
        evictions=list(fake.evictions),
        records=fake.records,
        requests=list(fake.requests),
        logs=logs,
        clients=driver.clients,
        statuses=sampler.statuses,
        lags=sampler.lags,
        windows=driver.windows
        + [(since, ended + 1.0, "pause", m) for m, since in driver.paused.items()]
        + [(since, ended + 1.0, kind, "") for kind, since in driver.open_windows.items()],
        exit_code=exit_code,
        keeper_died=died,
        loop_errors=loop_errors,
        lanes_ended=lanes,
        resources=resources,
    )
