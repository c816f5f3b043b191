"""Ollama's scheduler (``server/sched.go``) in asyncio: runners, keep-alive timers, loads, eviction.

The rules are the reference's (§1.3, §4), including the awkward ones a keep-warm daemon must
survive: last-writer-wins ``keep_alive``, a timer that only starts when the last request ends,
the stale-expiry race, eviction by shortest keep-alive *setting* then blob path (not LRU),
revival of a draining victim. Where versions differ (reload rules, memory fitting, OOM paths) it
asks its :class:`~ollama_keepwarm.fake.versions.Behaviour`; the option rules are in ``options``.

Two tasks do the work, like Go's two goroutines: :meth:`Scheduler._process_pending` takes queued
requests one at a time (so loads are serialised, FIFO), and :meth:`Scheduler._process_expired`
unloads runners whose timer fired or that were marked, re-checking ``ref_count`` every 10 ms.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ollama_keepwarm.core.durations import INFINITE_NS, NS_PER_SECOND
from ollama_keepwarm.fake import options as load_options
from ollama_keepwarm.fake.catalog import CatalogModel, Manifest
from ollama_keepwarm.fake.clock import Clock
from ollama_keepwarm.fake.options import LoadOptions
from ollama_keepwarm.fake.processes import RunnerProcesses, runner_argv
from ollama_keepwarm.fake.prompt_cache import PromptCache
from ollama_keepwarm.fake.records import (
    EvictionRecord,
    LoadReason,
    LoadRecord,
    Records,
    RunnerInfo,
    Touch,
    UnloadCause,
    UnloadRecord,
    WaitRecord,
    wall_datetime,
)
from ollama_keepwarm.fake.versions import CURRENT_STABLE, Behaviour

__all__ = [
    "OOM_ERROR",
    "LoadFailure",
    "Runner",
    "Scheduler",
    "SchedulerError",
]

OOM_ERROR = Behaviour.for_version(CURRENT_STABLE).oom_error
"""What a load that ran out of GPU memory says in the current stable version (§2.6)."""

QUEUE_FULL = "server busy, please try again.  maximum pending requests exceeded"
_UNLOAD_RETRY_S = 0.01  # Go retries an expired-but-busy runner every 10 ms (real time)
_EXIT_TO_ROW_S = 0.001  # before v0.32.4: the runner exits, its ps row goes ~1 ms later (§4.9)
_ROW_TO_EXIT_S = 0.014  # from v0.32.4: the row goes, llama-server exits ~14 ms later (§4.9)
_GIB = 2**30


class SchedulerError(Exception):
    """A request the scheduler could not serve: becomes ``{"error": message}`` with ``status``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class LoadFailure:
    """An injected load failure; ``None`` is the version's out-of-memory text.

    From v0.30 an out-of-memory one (its text says so, as ``llm.IsOutOfMemory`` checks) makes
    Ollama evict all other models and retry once (§4.4).
    """

    message: str | None = None

    def text(self, behaviour: Behaviour) -> str:
        """Return the error the client gets."""
        return behaviour.oom_error if self.message is None else self.message

    @property
    def oom(self) -> bool:
        """Tell whether Ollama would take this for an out-of-memory error."""
        return self.message is None or "out of memory" in self.message.lower()


@dataclass(eq=False)
class Runner:
    """One loaded model: the child process Ollama would run, keyed by weights blob."""

    manifest: Manifest
    options: LoadOptions
    keep_alive_ns: int
    size_vram: int
    ref_count: int = 1
    expires_at_ns: int | None = None
    """``None`` is Go's zero ``expiresAt``: ps shows now + d until the first request ends."""
    crashed: bool = False
    timer: asyncio.Task[None] | None = None
    unload_begun: bool = False
    slots: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    cache: PromptCache = field(default_factory=PromptCache)
    """Each slot's last prompt (``prompt_cache.py``): a new runner starts with none."""
    loaded_by: str = ""
    """Who caused what (``records.py``): the ``User-Agent`` that asked for this load, ..."""
    keep_alive_by: str = ""
    """... the one whose ``keep_alive`` is in force, ..."""
    draining: tuple[UnloadCause, str] | None = None
    """... and why (and for whom) it is marked for unload, until a ``keep_alive`` revives it."""
    touches: list[Touch] = field(default_factory=list)
    """Requests that reached it while it was draining (what a waiting load waited on)."""

    @property
    def key(self) -> str:
        """The weights blob: aliases share it, so they share this runner (§7.1)."""
        return self.manifest.model.blob

    @property
    def name(self) -> str:
        """The name the runner was loaded under; ``/api/ps`` keeps showing it."""
        return self.manifest.name

    @property
    def context_length(self) -> int:
        """What ps shows: the runner's ``num_ctx`` clamped to the training context (§3.1)."""
        return min(self.options.num_ctx, self.manifest.model.context_length)


@dataclass(eq=False)
class _Pending:
    manifest: Manifest
    options: LoadOptions
    keep_alive_ns: int | None
    path: str
    future: asyncio.Future[Runner]
    gone: asyncio.Event = field(default_factory=asyncio.Event)
    caller: str = ""
    victims: list[Runner] = field(default_factory=list)
    replaced_by: str = ""
    loaded: bool = False


def _offloaded_bytes(options: LoadOptions, model: CatalogModel) -> int:
    """The weights a load puts on the GPU: all for ``num_gpu`` < 0, else that many layers."""
    layers = model.block_count + 1  # the output layer counts as one, as in Ollama
    if options.num_gpu < 0 or options.num_gpu >= layers:
        return model.size
    return model.size * options.num_gpu // layers


def _partial_offload(options: LoadOptions, model: CatalogModel) -> bool:
    """``explicitPartialGPUOffload``: 0 < ``num_gpu`` < the model's layers + 1."""
    return 0 < options.num_gpu < model.block_count + 1


def default_num_ctx(memory_bytes: int) -> int:
    """Return the automatic context Ollama picks from total VRAM (§4.7)."""
    if memory_bytes >= 47 * _GIB:
        return 262144
    if memory_bytes >= 23 * _GIB:
        return 32768
    return 4096


CLOSE_RECANCEL_S = 0.1
"""How long ``Scheduler.close`` waits for its loops before it cancels them again."""


async def _first(*aws: Coroutine[Any, Any, Any]) -> int:
    """Run the awaitables until one finishes; cancel the rest; return the winner's index."""
    tasks = [asyncio.ensure_future(aw) for aw in aws]
    try:
        done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return next(i for i, task in enumerate(tasks) if task in done)


class Scheduler:
    """The loaded set and the load queue of one server lifetime (a restart makes a new one)."""

    def __init__(
        self,
        *,
        behaviour: Behaviour,
        clock: Clock,
        max_loaded: int,
        memory_bytes: int,
        default_keep_alive_ns: int,
        load_seconds_per_gb: float,
        unload_delay_s: float,
        exit_to_row_s: float | None = None,
        max_queue: int,
        loads: list[LoadRecord],
        evictions: list[EvictionRecord],
        load_failures: deque[LoadFailure],
        processes: RunnerProcesses | None = None,
        num_parallel: int = 1,
        records: Records | None = None,
    ) -> None:
        self.behaviour = behaviour
        self.records = records if records is not None else Records()
        """Who caused each unload and wait (``records.py``), shared across restarts."""
        self.num_parallel = num_parallel
        self.clock = clock
        self.max_loaded = max_loaded
        self.memory_bytes = memory_bytes
        self.default_keep_alive_ns = default_keep_alive_ns
        self.load_seconds_per_gb = load_seconds_per_gb
        self.unload_delay_s = unload_delay_s
        self.exit_to_row_s = _EXIT_TO_ROW_S if exit_to_row_s is None else exit_to_row_s
        self.default_num_ctx = default_num_ctx(memory_bytes)
        self.loaded: dict[str, Runner] = {}
        self.loading: _Pending | None = None
        self.gpu_lost = False
        self._loads = loads
        self._evictions = evictions
        self._load_failures = load_failures
        self.processes = processes
        """Real children for the runners (``runner_processes=True``), else ``None``."""
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue(maxsize=max_queue)
        self._expired: asyncio.Queue[Runner] = asyncio.Queue()
        self._unloaded = asyncio.Event()
        self._loaded_mu = asyncio.Lock()
        """Held while a runner is unloaded, as Go's ``loadedMu``: no request takes it meanwhile."""
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the pending-request and unload loops."""
        self._tasks = [
            asyncio.create_task(self._process_pending(), name="fake-ollama-pending"),
            asyncio.create_task(self._process_expired(), name="fake-ollama-expired"),
        ]

    async def close(self) -> None:
        """Forget everything, as a server process exit does (§7.8)."""
        self._closed = True
        if self.processes is not None:
            self.processes.stop_all()
        for runner in self.loaded.values():
            if runner.timer is not None:
                runner.timer.cancel()
            self._record_unload(runner, ("restart", ""))
        self.loaded.clear()
        while not self._queue.empty():
            self._queue.get_nowait().future.cancel()
        # Cancelled again until it ends: a cancellation that meets a result already there can
        # be lost (``asyncio.wait_for`` before Python 3.12), and the loop would wait on.
        running = {task for task in self._tasks if not task.done()}
        while running:
            for task in running:
                task.cancel()
            _done, running = await asyncio.wait(running, timeout=CLOSE_RECANCEL_S)

    # --- requests -------------------------------------------------------------------------

    def options_for(
        self,
        manifest: Manifest,
        requested: Mapping[str, Any] | None,
        shift: bool | None = None,
    ) -> LoadOptions:
        """Return the load-time options a request asks for: defaults, Modelfile, then request."""
        model = manifest.model
        return load_options.requested(
            self.behaviour,
            default_num_ctx=self.default_num_ctx,
            modelfile=model.parameters,
            options=requested,
            shift=shift,
            family=model.family,
            embedding="embedding" in model.capabilities,
        )

    async def acquire(
        self,
        manifest: Manifest,
        requested_options: Mapping[str, Any] | None,
        keep_alive_ns: int | None,
        path: str,
        shift: bool | None = None,
        caller: str = "",
    ) -> Runner:
        """Return a runner for ``manifest`` with one more reference; load it if needed.

        A loaded runner with matching options is used at once (no queue, no 503, §4.2).
        Otherwise the request joins the FIFO queue; cancelling the caller aborts its load (§2.6).
        ``shift`` is the request's context-shift field (generate and chat only); ``caller``
        its ``User-Agent``, for the records of who caused what.

        Raises:
            SchedulerError: 503 when the queue is full, 500 when the load fails.
        """
        options = self.options_for(manifest, requested_options, shift)
        async with self._loaded_mu:  # GetRunner's look at the loaded set waits for an unload
            pass
        runner = self.loaded.get(manifest.model.blob)
        if runner is not None and self._reload_reason(runner, options) is None:
            self._use(runner, keep_alive_ns, caller)
            return runner
        future: asyncio.Future[Runner] = asyncio.get_running_loop().create_future()
        pending = _Pending(manifest, options, keep_alive_ns, path, future, caller=caller)
        future.add_done_callback(lambda f: pending.gone.set() if f.cancelled() else None)
        try:
            self._queue.put_nowait(pending)
        except asyncio.QueueFull:
            raise SchedulerError(503, QUEUE_FULL) from None
        started = self.clock.true_wall_ns()
        try:
            return await future
        except asyncio.CancelledError:
            if future.done() and not future.cancelled() and future.exception() is None:
                self.release(future.result())
            raise
        finally:
            self._record_wait(pending, started)

    def release(self, runner: Runner) -> None:
        """End one request on ``runner``: the last one starts a full-length timer (§1.3 rule 3)."""
        if self._closed:
            return
        runner.ref_count -= 1
        if runner.ref_count > 0:
            return
        duration = runner.keep_alive_ns
        if duration <= 0:
            self._expired.put_nowait(runner)
            return
        runner.expires_at_ns = self.clock.wall_ns() + self._real_ns(duration)
        if duration != INFINITE_NS:
            runner.timer = asyncio.create_task(self._expire_after(runner, duration))

    def expire_now(self, manifest: Manifest, caller: str = "") -> bool:
        """Apply the unload command (§1.4): ``expires_at`` = now, ``d`` = 0, unload when idle."""
        runner = self.loaded.get(manifest.model.blob)
        if runner is None:
            return False
        runner.expires_at_ns = self.clock.wall_ns()
        self._mark_for_unload(runner, ("stopped", caller))
        return True

    def runtime_oom(self) -> int:
        """A generation ran out of memory: from v0.30 expire every runner once idle (§4.4).

        Returns how many runners were expired (none before v0.30, where only the failing
        request saw the error).
        """
        if not self.behaviour.runtime_oom_expires_all:
            return 0
        runners = list(self.loaded.values())
        for runner in runners:
            self._mark_for_unload(runner, ("oom", ""))
        return len(runners)

    def crash(self, manifest: Manifest) -> bool:
        """Kill a runner's process: it stays listed, unchanged, until its next request (§4.8)."""
        runner = self.loaded.get(manifest.model.blob)
        if runner is None:
            return False
        runner.crashed = True
        if self.processes is not None:
            self.processes.kill(runner.key)
        runner.cache.clear()
        return True

    def lose_gpu(self) -> None:
        """Make every runner, and every later load, report ``size_vram`` 0 (§7.7)."""
        self.gpu_lost = True
        for runner in self.loaded.values():
            runner.size_vram = 0

    # --- what clients see -----------------------------------------------------------------

    @property
    def queued(self) -> int:
        """Return how many requests wait in the load queue (not counting the one being served)."""
        return self._queue.qsize()

    def expires_at_ns(self, runner: Runner, now_ns: int) -> int:
        """Return ``expires_at`` as ps shows it: the stored value, or now + d if never set."""
        if runner.expires_at_ns is not None:
            return runner.expires_at_ns
        return now_ns + self._real_ns(runner.keep_alive_ns)

    def listed(self) -> list[tuple[Runner, int]]:
        """Return (runner, expires_at ns) sorted as ``/api/ps``: descending, whole seconds."""
        now = self.clock.wall_ns()
        rows = [(runner, self.expires_at_ns(runner, now)) for runner in self.loaded.values()]
        rows.sort(key=lambda row: -(row[1] // NS_PER_SECOND))
        return rows

    def runner_infos(self) -> list[RunnerInfo]:
        """Return a snapshot of every runner, in ps order."""
        return [
            RunnerInfo(
                name=runner.name,
                options=runner.options.as_dict(),
                context_shift=runner.options.context_shift,
                keep_alive_ns=runner.keep_alive_ns,
                expires_at=wall_datetime(expires),
                busy=runner.ref_count,
                crashed=runner.crashed,
                size_vram=runner.size_vram,
                size=runner.manifest.model.size,
                digest=runner.manifest.digest,
                context_length=runner.context_length,
            )
            for runner, expires in self.listed()
        ]

    # --- internals ------------------------------------------------------------------------

    def _real_ns(self, duration_ns: int) -> int:
        if duration_ns == INFINITE_NS:
            return INFINITE_NS
        return int(duration_ns / self.clock.time_scale)

    def _use(self, runner: Runner, keep_alive_ns: int | None, caller: str = "") -> None:
        """Start a request on a loaded runner (``useLoadedRunner``): stop the timer, maybe set d."""
        runner.ref_count += 1
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None
        revived = keep_alive_ns is not None and keep_alive_ns > 0
        if runner.draining is not None and runner.draining[0] != "stopped":
            touch = Touch(
                runner.name,
                "revived" if revived else "busy",
                caller,
                self._record_time(),
                alone=runner.ref_count == 1,
            )
            runner.touches.append(touch)
            self.records.touches.append(touch)
        if revived:
            runner.draining = None  # a timer now, not an unload (§4.5)
        if keep_alive_ns is not None:
            runner.keep_alive_ns = keep_alive_ns
            runner.keep_alive_by = caller

    def _mark_for_unload(self, runner: Runner, why: tuple[UnloadCause, str]) -> None:
        if runner.timer is not None:
            runner.timer.cancel()
            runner.timer = None
        runner.keep_alive_ns = 0
        runner.draining = why
        if runner.ref_count <= 0:
            self._expired.put_nowait(runner)

    def _record_time(self) -> datetime:
        """Records are stamped with the true wall clock: a ``step_wall`` fault does not move
        them, so a test can line them up with its own clock."""
        return wall_datetime(self.clock.true_wall_ns())

    def _record_unload(self, runner: Runner, why: tuple[UnloadCause, str] | None) -> None:
        cause, caller = why or runner.draining or ("expired", runner.keep_alive_by)
        self.records.unloads.append(
            UnloadRecord(runner.name, self._record_time(), cause, caller, runner.loaded_by)
        )

    def _record_wait(self, pending: _Pending, started_ns: int) -> None:
        started, ended = wall_datetime(started_ns), self._record_time()
        touches = tuple(
            touch
            for victim in pending.victims
            for touch in victim.touches
            if started <= touch.time <= ended
        )
        self.records.waits.append(
            WaitRecord(
                pending.manifest.name,
                pending.caller,
                pending.path,
                started,
                ended,
                pending.loaded,
                touches,
            )
        )

    def _reload_reason(self, runner: Runner, options: LoadOptions) -> tuple[LoadReason, str] | None:
        """Return why ``runner`` cannot serve ``options`` (``needsReload``) and what differs."""
        if not runner.crashed and self.processes is not None and self.processes.dead(runner.key):
            runner.crashed = True  # died a moment ago: our wait for the child has not run yet
        if runner.crashed:
            return "repair", "runner not responding"  # the health ping fails
        changed = load_options.reload_reason(
            self.behaviour, runner.options, options, train_ctx=runner.manifest.model.context_length
        )
        return None if changed is None else ("reload", changed)

    async def _expire_after(self, runner: Runner, duration_ns: int) -> None:
        await self.clock.sleep(duration_ns / NS_PER_SECOND)
        runner.timer = None
        self._expired.put_nowait(runner)

    def _find_victim(self, candidates: Iterable[Runner]) -> Runner:
        """Pick Ollama's eviction victim: shortest d setting, then blob path; idle first (§4.5)."""
        ordered = sorted(candidates, key=lambda r: (r.keep_alive_ns, r.manifest.model.blob_path))
        return next((r for r in ordered if r.ref_count <= 0), ordered[0])

    def _on_cpu(self, options: LoadOptions) -> bool:
        """No GPU for this load: a CPU-only host, a lost GPU, or ``num_gpu`` 0 (§4.4)."""
        return self.memory_bytes <= 0 or self.gpu_lost or options.num_gpu == 0

    def _free_vram(self) -> int:
        return max(0, self.memory_bytes - sum(r.size_vram for r in self.loaded.values()))

    def _fits(self, pending: _Pending) -> bool:
        """Tell whether an additional model may load beside the others without an eviction.

        From v0.30 the pre-flight check wants the prediction (here: the weights) within 80 % of
        the free VRAM, and an explicit partial ``num_gpu`` skips it; before, the layers asked for
        (all of them for ``num_gpu`` < 0) had to fit in the free VRAM. The first model and
        CPU loads always go ahead.
        """
        if not self.loaded or self._on_cpu(pending.options):
            return True
        model = pending.manifest.model
        if self.behaviour.preflight_80_percent:
            if _partial_offload(pending.options, model):
                return True
            return model.size <= 0.8 * self._free_vram()
        return _offloaded_bytes(pending.options, model) <= self._free_vram()

    def _record_eviction(self, victim: Runner, pending: _Pending, reason: Any) -> None:
        self._evictions.append(
            EvictionRecord(
                victim.name,
                pending.manifest.name,
                self._record_time(),
                reason,
                pending.caller,
            )
        )

    async def _wait_for_unload(self, pending: _Pending) -> None:
        await _first(self._unloaded.wait(), pending.gone.wait())
        self._unloaded.clear()

    async def _process_pending(self) -> None:
        while True:
            pending = await self._queue.get()
            if pending.future.done():
                continue  # the client left while queued: skipped (§2.6)
            try:
                await self._serve(pending)
            except Exception as error:  # a bug must not wedge the queue; report it as Go would
                if not pending.future.done():
                    pending.future.set_exception(SchedulerError(500, str(error)))
            finally:
                self.loading = None

    async def _serve(self, pending: _Pending) -> None:
        reason: LoadReason = "cold"
        changed = ""
        while not pending.future.done():
            async with self._loaded_mu:  # processPending's look waits for an unload too
                pass
            runner = self.loaded.get(pending.manifest.model.blob)
            if runner is not None:
                why = self._reload_reason(runner, pending.options)
                if why is None:
                    self._use(runner, pending.keep_alive_ns)
                    pending.future.set_result(runner)
                    return
                (reason, changed), victim = why, runner
                pending.replaced_by = runner.loaded_by
                cause: UnloadCause = "crashed" if reason == "repair" else "reload"
            elif len(self.loaded) >= self.max_loaded:
                victim = self._find_victim(self.loaded.values())
                self._record_eviction(victim, pending, "count")
                cause = "evicted"
            elif self._fits(pending):
                await self._load(pending, reason, changed)
                return
            else:
                victim = self._find_victim(self.loaded.values())
                self._record_eviction(victim, pending, "memory")
                cause = "evicted"
            self._unloaded.clear()
            if victim.draining is None:
                self._mark_for_unload(victim, (cause, pending.caller))
            else:
                self._mark_for_unload(victim, victim.draining)
            pending.victims.append(victim)
            await self._wait_for_unload(pending)

    async def _load(self, pending: _Pending, reason: LoadReason, changed: str) -> None:
        """Load one model, taking size times ``load_seconds_per_gb``; abort if the client leaves.

        An out-of-memory failure is retried once from v0.30: with a lower automatic
        ``num_ctx`` if there is one, after evicting every other model if any is loaded (§4.4).
        """
        self.loading = pending
        model = pending.manifest.model
        record = LoadRecord(
            model=pending.manifest.name,
            reason=reason,
            requested_by=pending.path,
            started=self._record_time(),
            changed=changed,
            caller=pending.caller,
            replaced_by=pending.replaced_by,
        )
        pending.loaded = True
        self._loads.append(record)
        retried = False
        await self._start_process(pending)  # the runner exists from the start of a load (§4.9)
        while True:
            seconds = model.size / 1e9 * self.load_seconds_per_gb
            if await _first(self.clock.sleep(seconds), pending.gone.wait()) == 1:
                self._stop_process(pending)
                self._finish(record, "context canceled")
                return
            failure = self._load_failures.popleft() if self._load_failures else None
            if failure is None and self._process_died(pending):
                failure = LoadFailure(
                    f"{self._runner_noun()} process has terminated: signal: killed"
                )
            if failure is None:
                break
            self._stop_process(pending)  # a failed runner exits
            if failure.oom and self.behaviour.oom_load_evicts_all and not retried:
                lowered = load_options.lower_automatic_context(
                    pending.options, model.context_length
                )
                if lowered is not None or self.loaded:
                    retried = True
                    pending.options = lowered or pending.options
                    await self._evict_all(pending)
                    if pending.gone.is_set():
                        self._finish(record, "context canceled")
                        return
                    await self._start_process(pending)
                    continue
            message = failure.text(self.behaviour)
            self._finish(record, message)
            pending.future.set_exception(SchedulerError(500, message))
            return
        self._place(pending)
        self._finish(record, "")

    def _runner_noun(self) -> str:
        return "llama-server" if self.behaviour.checks_context_shift else "llama runner"

    def _kept(self, pending: _Pending) -> LoadOptions:
        """The options the runner keeps once it has loaded what ``pending`` asks for."""
        model = pending.manifest.model
        return load_options.at_load(
            self.behaviour,
            pending.options,
            train_ctx=model.context_length,
            completion=not model.is_embedding_only,
            on_cpu=self._on_cpu(pending.options),
        )

    def _parallel(self, pending: _Pending) -> int:
        """OLLAMA_NUM_PARALLEL request slots; one for an embedding model (§4.7)."""
        return 1 if pending.manifest.model.is_embedding_only else self.num_parallel

    async def _start_process(self, pending: _Pending) -> None:
        """Start the runner's child with the argv the imitated version gives it."""
        if self.processes is None:
            return
        model = pending.manifest.model
        argv = runner_argv(
            self.behaviour,
            blob_path=model.blob_path,
            port=self.processes.free_port(),
            options=self._kept(pending),
            parallel=self._parallel(pending),
            embedding=model.is_embedding_only,
            on_cpu=self._on_cpu(pending.options),
        )
        await self.processes.start(model.blob, self._died(pending.manifest), argv)

    def _stop_process(self, pending: _Pending) -> None:
        if self.processes is not None:
            self.processes.stop(pending.manifest.model.blob)

    def _process_died(self, pending: _Pending) -> bool:
        return self.processes is not None and self.processes.dead(pending.manifest.model.blob)

    def _died(self, manifest: Manifest) -> Callable[[], None]:
        def mark() -> None:
            runner = self.loaded.get(manifest.model.blob)
            if runner is not None and not self._closed:
                runner.crashed = True  # listed, unchanged, until its next request (§4.8)

        return mark

    async def _evict_all(self, pending: _Pending) -> None:
        self._unloaded.clear()
        for runner in list(self.loaded.values()):
            self._record_eviction(runner, pending, "oom")
            self._mark_for_unload(runner, ("oom", pending.caller))
            pending.victims.append(runner)
        while self.loaded and not pending.gone.is_set():
            await self._wait_for_unload(pending)

    def _place(self, pending: _Pending) -> None:
        model = pending.manifest.model
        on_cpu = self._on_cpu(pending.options)
        # Best fit: the layers asked for, as many as the free VRAM holds; the rest on the CPU.
        wanted = _offloaded_bytes(pending.options, model)
        size_vram = 0 if on_cpu else min(wanted, self._free_vram())
        keep_alive = pending.keep_alive_ns
        kept = self._kept(pending)
        runner = Runner(
            manifest=pending.manifest,
            options=kept,
            keep_alive_ns=self.default_keep_alive_ns if keep_alive is None else keep_alive,
            size_vram=size_vram,
            loaded_by=pending.caller,
            keep_alive_by=pending.caller if keep_alive is not None else "",
        )
        # OLLAMA_NUM_PARALLEL request slots, each with its own prompt cache (§4.7).
        parallel = self._parallel(pending)
        runner.slots, runner.cache = asyncio.Semaphore(parallel), PromptCache(parallel)
        self.loaded[runner.key] = runner
        pending.future.set_result(runner)

    def _finish(self, record: LoadRecord, error: str) -> None:
        record.finished = self._record_time()
        record.ok = not error
        record.error = error

    async def _process_expired(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            runner = await self._expired.get()
            if self.loaded.get(runner.key) is not runner:
                continue  # already unloaded (queued twice: timer and eviction)
            if not runner.unload_begun:
                runner.unload_begun = True
                if self.unload_delay_s > 0:
                    await self.clock.sleep(self.unload_delay_s)
            if runner.ref_count > 0:
                # Go re-checks every 10 ms and never asks whether the runner was renewed:
                # this is the stale-expiry race (§1.3).
                loop.call_later(_UNLOAD_RETRY_S, self._requeue, runner)
                continue
            if runner.timer is not None:
                runner.timer.cancel()
                runner.timer = None
            async with self._loaded_mu:
                await self._unload(runner)
            self._unloaded.set()

    async def _unload(self, runner: Runner) -> None:
        """Kill ``runner``'s process and drop its row, in the order its version shows (§4.9).

        Go kills the runner, waits for its exit, then deletes the row, all under ``loadedMu``.
        Before v0.32.4 ``/api/ps`` reads the set without that lock: the process is gone, then
        the row. From v0.32.4 ``/api/ps`` waits for the lock, so a poll made during the kill
        answers without the row: seen from outside, the row goes first and the process ~14 ms
        later, which is what the fake shows (its ps answers at once instead of waiting).
        """
        processes = self.processes
        child = processes.detach(runner.key) if processes is not None else None
        if child is None or processes is None:  # no process to end: only the row goes
            del self.loaded[runner.key]
        elif self.behaviour.unload_row_first:
            del self.loaded[runner.key]
            await self.clock.sleep(_ROW_TO_EXIT_S)
            await processes.end(child)
        else:
            await processes.end(child)
            await self.clock.sleep(self.exit_to_row_s)
            del self.loaded[runner.key]
        self._record_unload(runner, None)

    def _requeue(self, runner: Runner) -> None:
        if not self._closed:
            self._expired.put_nowait(runner)
