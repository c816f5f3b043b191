"""Run one chaos schedule: the real keeper against the fake, over real sockets, in one loop.

The keeper is the daemon's own :class:`~ollama_keepwarm.daemon.keeper.Keeper` (what
``ollama-keepwarm run`` starts) with injected clocks, on a fresh fake with runner processes;
``chaos_driver.py`` carries out the events. Its logs are captured (with the time) through
structlog, its ``status`` and the event loop's lag are sampled every :data:`SAMPLE_S`.

Everything the checks need is copied into a plain, picklable :class:`Outcome`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import random
import resource
import shutil
import tempfile
import time
from collections.abc import MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from bench.chaos_driver import ClientResult, Driver
from bench.chaos_schedule import LOAD_S_PER_GB, SCALE, TOKEN_S, Schedule
from ollama_keepwarm.daemon.keeper import Keeper
from ollama_keepwarm.fake import EvictionRecord, FakeOllama, LoadRecord, RecordedRequest
from ollama_keepwarm.fake.records import Records

__all__ = ["ClientResult", "Outcome", "run_schedule"]

STOP_TIMEOUT_S = 30.0
LOWEST_PORT = 10_000
"""The fake listens on a port from here up to the kernel's ephemeral range: a restarting fake
gives its port up while down, and in the ephemeral range another schedule's client socket
could take it for as long as its connection lives (0.24.0 seeds 110 and 493 at 14 jobs)."""
SAMPLE_S = 0.1
RESOURCES_EVERY_S = 10.0


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


def _rss_kib() -> int:
    with contextlib.suppress(OSError):
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _fds() -> int:
    with contextlib.suppress(OSError):
        return sum(1 for _ in Path("/proc/self/fd").iterdir())
    return -1


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
        await start_outside_ephemeral(fake)
        try:
            return await _run(schedule, fake, scratch, logs, loop_errors)
        finally:
            await fake.stop()
    finally:
        loop.set_exception_handler(old_handler)
        structlog.configure(**saved)
        shutil.rmtree(scratch, ignore_errors=True)


def _ephemeral_low() -> int:
    with contextlib.suppress(OSError, ValueError, IndexError):
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    return 32768


async def start_outside_ephemeral(fake: FakeOllama, attempts: int = 50) -> None:
    """Start ``fake`` on a free port below the ephemeral range (see :data:`LOWEST_PORT`)."""
    high = max(LOWEST_PORT + 1, _ephemeral_low())
    for _ in range(attempts - 1):
        try:
            await fake.start(port=random.randrange(LOWEST_PORT, high))
            return
        except OSError as exc:
            await fake.stop()
            if exc.errno != errno.EADDRINUSE:
                raise
    await fake.start()  # the kernel's choice: the ephemeral range, as before


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
    driver = Driver(schedule, fake, scratch)
    driver.align_window(time.time())
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
