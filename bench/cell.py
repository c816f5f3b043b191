"""Replay one trace against one strategy on a fresh fake Ollama, and record what happened.

A *cell* is one (trace, strategy) pair. It owns its fake Ollama, so cells never share a
scheduler and can run in separate processes. The result is plain picklable data in trace
seconds; :mod:`bench.metrics` turns it into numbers.

Clients speak ``/api/chat`` and every keeper speaks ``/api/generate`` (or ``/api/ps`` etc.), so
each request and each load the fake records can be attributed without guessing.
"""

from __future__ import annotations

import asyncio
import resource
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import aiohttp

from bench.strategies import Strategy, make_strategy
from bench.traces import (
    BIG_MODEL,
    LOAD_SECONDS_PER_GB,
    Disruption,
    DisruptionKind,
    Request,
    Trace,
)
from ollama_keepwarm.fake import FakeOllama

__all__ = [
    "CLIENT_PATH",
    "DISRUPTORS",
    "CellResult",
    "ClientResult",
    "EvictionSpan",
    "LoadSpan",
    "Loss",
    "run_cell",
]

CLIENT_PATH = "/api/chat"
MEMORY_BYTES = 48 * 2**30
"""VRAM of the simulated box: both hot models of a trace fit beside the 70B, but the 70B only
fits alone, so its load evicts everything (eviction pressure)."""
MAX_LOADED = 3
RETRY_S = 1.0
"""A client whose connection is refused (Ollama down) tries again this often (trace seconds),
as a bot with a retry wrapper does, for up to :data:`RETRY_FOR_S`."""
RETRY_FOR_S = 300.0


@dataclass(frozen=True, slots=True)
class ClientResult:
    """One client request as the client saw it (times in trace seconds)."""

    at_s: float
    model: str
    client: str
    status: int
    wait_s: float
    load_s: float
    retried: bool = False
    """The first attempt met a downed Ollama (refused or cut off) and was sent again."""


@dataclass(frozen=True, slots=True)
class LoadSpan:
    """One load the fake performed (``finished_s`` is None when it never finished)."""

    model: str
    reason: str
    requested_by: str
    started_s: float
    finished_s: float | None
    ok: bool


@dataclass(frozen=True, slots=True)
class EvictionSpan:
    """The fake chose ``victim`` to make room for ``for_model`` at ``at_s``."""

    victim: str
    for_model: str
    at_s: float


@dataclass(frozen=True, slots=True)
class Loss:
    """A kept model that was warm and stopped being so at ``at_s`` (restart, suspend, eviction).

    For a restart ``at_s`` is when Ollama answers again (the downtime is the same for everyone);
    for a suspend, the resume; for an eviction, the moment the fake chose the victim.
    """

    kind: str
    model: str
    at_s: float
    wait_for_s: float = 0.0
    """Load time of other work that had to finish first (the big model, for an eviction)."""


@dataclass(frozen=True)
class CellResult:
    """Everything one cell recorded."""

    trace: str
    strategy: str
    scale: float
    clients: tuple[ClientResult, ...]
    loads: tuple[LoadSpan, ...]
    losses: tuple[Loss, ...]
    evictions: tuple[EvictionSpan, ...]
    keeper_requests: int
    real_s: float
    cpu_s: float
    """CPU time this process used during the cell (all of it, when cells share a process)."""


class _TraceClock:
    """Maps trace seconds onto this event loop's clock and the wall clock."""

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self._loop = asyncio.get_running_loop()
        self._origin = self._loop.time()
        self._wall_origin = time.time()

    def now(self) -> float:
        return (self._loop.time() - self._origin) * self.scale

    def of_wall(self, unix_s: float) -> float:
        return (unix_s - self._wall_origin) * self.scale

    async def until(self, at_s: float) -> None:
        await asyncio.sleep(max(0.0, self._origin + at_s / self.scale - self._loop.time()))


async def _ask(
    session: aiohttp.ClientSession, url: str, request: Request, clock: _TraceClock
) -> ClientResult:
    """Send one chat request; a reply's ``load_duration`` says how long it waited for a load.

    A refused or cut connection (Ollama restarting) is retried every :data:`RETRY_S`.
    """
    payload = {
        "model": request.model,
        "messages": [{"role": "user", "content": "Summarise the thread, please."}],
        "stream": False,
        "options": {"num_predict": request.generate_s},
    }
    started = clock.now()
    status, load_ns, retried = 0, 0, False
    while True:
        try:
            async with session.post(url + CLIENT_PATH, json=payload) as reply:
                status = reply.status
                body = await reply.json(content_type=None)
                load_ns = int(body.get("load_duration", 0)) if status == 200 else 0
            break
        except (aiohttp.ClientError, OSError):
            status = 0
            if clock.now() - started > RETRY_FOR_S:
                break
            retried = True
            await clock.until(clock.now() + RETRY_S)
    wait = clock.now() - started
    return ClientResult(
        request.at_s,
        request.model,
        request.client,
        status,
        wait,
        load_ns / 1e9 * clock.scale,
        retried,
    )


def _healthy(fake: FakeOllama, models: tuple[str, ...]) -> list[str]:
    return [r.name for r in fake.runners() if not r.crashed and r.name in models]


async def _restart(
    fake: FakeOllama, strategy: Strategy, event: Disruption, clock: _TraceClock
) -> float:
    """Stop Ollama for ``length_s``; every runner is gone when it answers again."""
    await fake.restart(event.length_s)
    at = clock.now()
    await strategy.server_started()
    return at


async def _suspend(
    fake: FakeOllama, strategy: Strategy, event: Disruption, clock: _TraceClock
) -> float:
    """Sleep the machine; on resume every runner is listed but fails on first use.

    That is the NVIDIA-on-Linux case of the reference (§7.7): the next request makes Ollama
    notice and reload the runner. Crashing at the start of the sleep is the same to every
    client, since nothing is served while asleep.
    """
    for runner in fake.runners():
        fake.crash(runner.name)
    strategy.suspended()
    await fake.suspend(event.length_s)
    at = clock.now()
    strategy.resumed(event.length_s)
    return at


Disruptor = Callable[[FakeOllama, Strategy, Disruption, _TraceClock], Awaitable[float]]
DISRUPTORS: Mapping[DisruptionKind, Disruptor] = {"restart": _restart, "suspend": _suspend}
"""How to inflict each kind of disruption; each returns when (trace s) the kept models were
lost for the strategies' purposes (Ollama answering again, the resume)."""


async def _disrupt(
    fake: FakeOllama,
    strategy: Strategy,
    trace: Trace,
    clock: _TraceClock,
    losses: list[Loss],
) -> None:
    """Inject the trace's disruptions at their times; record what each took away."""
    for event in trace.disruptions:
        await clock.until(event.at_s)
        lost = _healthy(fake, trace.models)
        at = await DISRUPTORS[event.kind](fake, strategy, event, clock)
        losses += [Loss(event.kind, m, at) for m in lost]


async def _replay(url: str, trace: Trace, clock: _TraceClock, results: list[ClientResult]) -> None:
    connector = aiohttp.TCPConnector(force_close=True, limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        pending: set[asyncio.Task[ClientResult]] = set()
        for request in trace.requests:
            await clock.until(request.at_s)
            pending.add(asyncio.create_task(_ask(session, url, request, clock)))
        results += await asyncio.gather(*pending)


async def run_cell(
    trace: Trace,
    strategy_name: str,
    scale: float,
    ready: Callable[[], Awaitable[object]] | None = None,
) -> CellResult:
    """Replay ``trace`` against a fresh fake Ollama kept warm by ``strategy_name``.

    Cells that share an event loop pass the same ``ready`` (a barrier's ``wait``): each sets
    up its fake, then waits for all the others before its trace clock starts, so one cell's
    setup (a socket, first-time initialisation) cannot stall another's first trace seconds,
    where a tenth of a real second is six trace seconds.
    """
    strategy = make_strategy(strategy_name)
    fake = FakeOllama(
        max_loaded=MAX_LOADED,
        memory_bytes=MEMORY_BYTES,
        default_keep_alive=strategy.server_keep_alive,
        load_seconds_per_gb=LOAD_SECONDS_PER_GB,
        time_scale=scale,
        seconds_per_token=1.0,
    )
    started, cpu_started = time.monotonic(), _cpu_s()
    await fake.start()
    if ready is not None:
        await ready()
    clock = _TraceClock(scale)
    results: list[ClientResult] = []
    losses: list[Loss] = []
    try:
        await strategy.start(fake.url, trace.models, scale)
        await strategy.server_started()
        await asyncio.gather(
            _replay(fake.url, trace, clock, results),
            _disrupt(fake, strategy, trace, clock, losses),
        )
        await clock.until(trace.duration_s)
        await strategy.stop()
    finally:
        await fake.stop()
    loads = tuple(
        LoadSpan(
            r.model,
            r.reason,
            r.requested_by,
            clock.of_wall(r.started.timestamp()),
            clock.of_wall(r.finished.timestamp()) if r.finished else None,
            r.ok,
        )
        for r in fake.loads
    )
    evictions = tuple(
        EvictionSpan(e.victim, e.for_model, clock.of_wall(e.time.timestamp()))
        for e in fake.evictions
    )
    for eviction in evictions:
        if eviction.for_model == BIG_MODEL and eviction.victim in trace.models:
            big = [
                s.finished_s
                for s in loads
                if s.model == BIG_MODEL and s.ok and s.finished_s and s.finished_s > eviction.at_s
            ]
            rest = min(big) - eviction.at_s if big else 0.0
            losses.append(Loss("eviction", eviction.victim, eviction.at_s, rest))
    keeper_requests = sum(1 for r in fake.requests if r.path != CLIENT_PATH)
    return CellResult(
        trace=trace.name,
        strategy=strategy_name,
        scale=scale,
        clients=tuple(sorted(results, key=lambda r: r.at_s)),
        loads=loads,
        losses=tuple(sorted(losses, key=lambda loss: loss.at_s)),
        evictions=evictions,
        keeper_requests=keeper_requests,
        real_s=time.monotonic() - started,
        cpu_s=_cpu_s() - cpu_started,
    )


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime
