"""One Ollama host's loop: look at ``/api/ps``, ask the planner, make the warm calls.

A look is triggered by an interval job (``poll_interval``), by a one-shot job at the exact time
the planner said the next refresh is due, after each warm call, after a resume, and on demand.
Warm calls run in two lanes: **loads** one at a time in rank order (Ollama serialises loads
anyway, §4.3, and the order decides who gets evicted), and **refreshes** of loaded models, which
Ollama serves at once beside a load (§4.2), so a long cold load never lets another lease lapse.
All judgement lives in ``plan.py``; this module only does what it says.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta

import aiohttp
import structlog

from ollama_keepwarm.core import plan
from ollama_keepwarm.core.config import Config, ModelConfig
from ollama_keepwarm.core.names import match_key
from ollama_keepwarm.core.ps import PsSnapshot
from ollama_keepwarm.daemon.clocks import Clocks
from ollama_keepwarm.ollama import (
    ModelInfo,
    OllamaClient,
    OllamaError,
    OllamaUnreachableError,
)

__all__ = ["Emit", "HostKeeper", "log_event"]

_log = structlog.get_logger("ollama_keepwarm")

_WARNINGS = {
    "warm_failed",
    "capacity_conflict",
    "options_mismatch_suspected",
    "poll_failed",
    "verify_failed",
}
_ERRORS = {"gpu_lost"}


def log_event(event: plan.Event, host: str) -> None:
    """Log a planner or keeper event at the level its name deserves."""
    level = "error" if event.name in _ERRORS else "warning" if event.name in _WARNINGS else "info"
    where = {"model": event.model} if event.model else {}
    if host:
        where["host"] = host
    getattr(_log, level)(event.name, **where, **event.fields)


Emit = Callable[[plan.Event, str], None]


class HostKeeper:
    """Keeps the configured models of one Ollama host warm."""

    def __init__(
        self,
        host: str,
        models: tuple[ModelConfig, ...],
        config: Config,
        session: aiohttp.ClientSession,
        clocks: Clocks,
        on_change: Callable[[], None],
        emit: Emit = log_event,
    ) -> None:
        self.host = host
        self._emit_to = emit
        self.models = models
        self.config = config
        self.client = OllamaClient(
            session,
            host,
            request_timeout_s=config.ollama.request_timeout_s,
            load_timeout_s=config.ollama.load_timeout_s,
        )
        self._clocks = clocks
        self._on_change = on_change
        self.snapshot: PsSnapshot | None = None
        self.states: dict[str, plan.ModelState] = {m.key: plan.ModelState() for m in models}
        self.decisions: list[plan.Decision] = []
        self.infos: dict[str, ModelInfo] = {}
        self.blobs: dict[str, str] = {}
        self._unshowable: set[str] = set()
        self.ollama_up = False
        self.version: str | None = None
        self.resumed_at: datetime | None = None
        self.poll_errors = 0
        self._outage = False
        self._down_polls = 0
        self._look_lock = asyncio.Lock()
        self._queued: set[str] = set()
        self._loads: asyncio.Queue[plan.Decision] = asyncio.Queue()
        self._refreshes: asyncio.Queue[plan.Decision] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._wake: Callable[[datetime], None] = lambda _at: None

    def _emit(self, event: plan.Event) -> None:
        self._emit_to(event, self.host)

    def start(self, wake: Callable[[datetime], None]) -> None:
        """Start the two warm lanes; ``wake(at)`` asks the keeper to look again at ``at``."""
        self._wake = wake
        self._workers = [
            asyncio.create_task(self._lane(self._loads), name=f"loads {self.host}"),
            asyncio.create_task(self._lane(self._refreshes), name=f"refreshes {self.host}"),
        ]

    async def stop(self, grace_s: float) -> None:
        """Let in-flight warm calls finish for ``grace_s``, then abandon them."""
        busy = [w for w in self._workers if not w.done()]
        for queue in (self._loads, self._refreshes):
            while not queue.empty():
                queue.get_nowait()
        if busy and not self._idle.is_set():
            _log.info("waiting_for_warm_calls", host=self.host, grace_s=grace_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=grace_s)
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)

    def update_models(self, models: tuple[ModelConfig, ...], config: Config) -> None:
        """Adopt a reloaded config: keep what we learnt about models that stay, re-plan."""
        self.models, self.config = models, config
        self.states = {
            m.key: replace(
                self.states.get(m.key, plan.ModelState()),
                held_until=None,
                held_reason=None,
                strikes=(),
            )
            for m in models
        }

    @property
    def first_pass_done(self) -> bool:
        """True once every model has been tried (or deliberately left alone)."""
        held = {d.model.key for d in self.decisions if d.action is plan.Action.HOLD}
        # The decisions must post-date the last warm too, so READY goes out with a true STATUS.
        in_flight = any(d.reason in {"loading", "refreshing"} for d in self.decisions)
        return (
            self.ollama_up
            and not in_flight
            and all(st.warms or st.failures or key in held for key, st in self.states.items())
        )

    @property
    def all_warm(self) -> bool:
        """True when every model that is not paused or held is listed in ``/api/ps``."""
        return self.ollama_up and all(
            d.row is not None for d in self.decisions if d.action is not plan.Action.HOLD
        )

    # -- observe ------------------------------------------------------------------------------

    async def look(self) -> None:
        """Poll ``/api/ps``, update what we know, decide, and queue the warm calls due now."""
        if self._look_lock.locked():
            return
        async with self._look_lock:
            await self._observe()
            self._plan_and_act()

    async def _observe(self) -> None:
        try:
            if not self.ollama_up:
                self.version = await self.client.version()
            snapshot = await self.client.ps()
        except OllamaUnreachableError as exc:
            self._went_down(str(exc))
            return
        except OllamaError as exc:
            # A malformed or failing answer: keep the last snapshot, retry with backoff.
            self.poll_errors += 1
            self._down_polls += 1
            self._emit(plan.Event("poll_failed", "", {"error": str(exc)}))
            self._retry_soon()
            return
        if not self.ollama_up:
            _log.info(
                "ollama_up",
                host=self.host,
                version=self.version,
                after_outage=self._outage,
                loaded=len(snapshot.models),
            )
        self.ollama_up, self._down_polls = True, 0
        await self._learn_blobs(snapshot)
        observation = plan.observe(
            self.models,
            self.config.daemon,
            self.snapshot,
            snapshot,
            self.states,
            blobs=self.blobs,
            outage=self._outage,
        )
        self.states = observation.states
        for event in observation.events:
            self._emit(event)
        if any(event.name == "gpu_lost" for event in observation.events):
            self._on_gpu_lost()  # once per loss, however many models it hit
        self.snapshot, self._outage = snapshot, False

    def _went_down(self, error: str) -> None:
        if self.ollama_up or self._down_polls == 0:
            self._emit(plan.Event("ollama_down", "", {"error": error}))
        self.poll_errors += 1
        self.ollama_up, self._outage = False, True
        self._down_polls += 1
        # self.snapshot stays: the first look after the outage compares against it, so the
        # models a restart lost are reported (and counted) as such.
        self._retry_soon()
        self._on_change()

    def _retry_soon(self) -> None:
        # Fast, bounded cadence while Ollama is away or answering garbage: 0.25 s doubling up to
        # down_poll_max (the regular poll job keeps its own cadence beside it).
        delay = min(self.config.daemon.down_poll_max_s, 0.125 * 2 ** min(self._down_polls, 8))
        self._wake(self._clocks.wall() + timedelta(seconds=delay))

    async def _learn_blobs(self, snapshot: PsSnapshot) -> None:
        """Learn the weights blob of listed names we do not know, to match aliases (§7.1)."""
        for row in snapshot.models:
            key = match_key(row.name)
            if key in self.infos or key in self._unshowable:
                continue
            try:
                info = await self.client.show(row.name)
            except OllamaUnreachableError:
                return  # try again at the next look
            except OllamaError:
                # E.g. a model deleted while loaded (§7.5): asking at every poll won't help.
                self._unshowable.add(key)
                continue
            self.infos[key] = info
            if info.blob:
                self.blobs[key] = info.blob

    def _on_gpu_lost(self) -> None:
        command = self.config.daemon.on_gpu_lost
        if command:
            asyncio.get_running_loop().create_task(_run_hook(command, self.host))

    # -- decide and act ---------------------------------------------------------------------

    def _plan_and_act(self) -> None:
        now = self._clocks.wall()
        self.decisions = plan.decide(
            self.models,
            self.config.daemon,
            self.snapshot if self.ollama_up else None,
            self.states,
            now,
            blobs=self.blobs,
            resumed_at=self.resumed_at,
        )
        for decision in self.decisions:
            key = decision.model.key
            if decision.action is plan.Action.WARM and key not in self._queued:
                self._queued.add(key)
                self._loads.put_nowait(decision)
                _log.info("warm_queued", model=decision.model.name, reason=decision.reason)
            elif decision.action is plan.Action.REFRESH and key not in self._queued:
                self._queued.add(key)
                self._refreshes.put_nowait(decision)
                _log.debug("refresh_queued", model=decision.model.name, reason=decision.reason)
        upcoming = [d.at for d in self.decisions if d.at is not None and d.at > now]
        if upcoming:
            self._wake(min(upcoming))
        self._on_change()

    async def _lane(self, queue: asyncio.Queue[plan.Decision]) -> None:
        while True:
            decision = await queue.get()
            model = decision.model
            self._in_flight += 1
            self._idle.clear()
            try:
                if model.key in self.states:  # still configured after a reload?
                    await self._warm(model, decision.reason)
            finally:
                self._queued.discard(model.key)
                self._in_flight -= 1
                if not self._in_flight:
                    self._idle.set()
            await self.look()

    async def _warm(self, model: ModelConfig, reason: str) -> None:
        listed = any(d.row is not None for d in self.decisions if d.model.key == model.key)
        started = self._clocks.wall()
        self.states[model.key] = plan.record_warm_started(
            self.states[model.key], started, listed=listed
        )
        self._on_change()
        try:
            info = await self._info(model)
            result = await self.client.load(
                model.name,
                keep_alive=model.keep_alive_wire,
                options=model.options,
                embedding_only=info.embedding_only,
            )
        except OllamaError as exc:
            if isinstance(exc, OllamaUnreachableError):
                self._went_down(str(exc))
            st, events = plan.record_warm_failed(
                model, self.states[model.key], self._clocks.wall(), exc.status, exc.message
            )
        else:
            st, events = plan.record_warm_finished(
                model, self.states[model.key], self._clocks.wall(), result.duration_s
            )
        if model.key in self.states:
            self.states[model.key] = st
        for event in events:
            self._emit(event)
        if reason == plan.RESUMED and st.failures == 0:
            self._emit(plan.Event("refreshed_after_resume", model.name, {}))
            if model.verify:
                await self._verify(model)

    async def _verify(self, model: ModelConfig) -> None:
        """Generate one token: after a resume ps can list a runner whose GPU is gone (§7.7)."""
        try:
            await self.client.generate_one_token(
                model.name, keep_alive=model.keep_alive_wire, options=model.options
            )
        except OllamaError as exc:
            # Ollama notices the dead runner on the next request and reloads it: ask for one.
            self._emit(plan.Event("verify_failed", model.name, {"error": exc.message}))
            if model.key in self.states:
                self.states[model.key] = replace(
                    self.states[model.key], refresh_requested_at=self._clocks.wall()
                )
        else:
            _log.info("model_verified", model=model.name, host=self.host)

    async def _info(self, model: ModelConfig) -> ModelInfo:
        info = self.infos.get(model.key)
        if info is None:
            info = await self.client.show(model.name)
            self.infos[model.key] = info
            if info.blob:
                self.blobs[model.key] = info.blob
        return info


async def _run_hook(command: tuple[str, ...], host: str) -> None:
    """Run the ``on_gpu_lost`` command; its failure is logged, never fatal."""
    try:
        process = await asyncio.create_subprocess_exec(*command)
        status = await process.wait()
    except OSError as exc:
        _log.error("gpu_lost_hook_failed", host=host, command=list(command), error=str(exc))
        return
    _log.info("gpu_lost_hook_ran", host=host, command=list(command), status=status)
