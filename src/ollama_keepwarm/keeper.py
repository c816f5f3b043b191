"""The daemon: observe ``/api/ps``, ask the planner, act, and tell systemd.

One :class:`HostKeeper` per Ollama host runs the loop *look → plan → act*. A look is triggered by
an interval job (``poll_interval``), by a one-shot job at the exact time the planner said the next
refresh is due, after each warm call, after a resume, and on demand. Warm calls run in two lanes
per host: **loads** one at a time in rank order (Ollama serialises loads anyway, §4.3, and the
order decides who gets evicted), and **refreshes** of loaded models, which Ollama serves at once
beside a load (§4.2). All judgement lives in ``plan.py``; this module only does what it says.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
from collections.abc import Callable, Mapping
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from ollama_keepwarm import http_api, plan
from ollama_keepwarm.clocks import Clocks, SuspendDetector, SystemClocks
from ollama_keepwarm.config import Config, ModelConfig
from ollama_keepwarm.control import ControlServer, default_socket_path
from ollama_keepwarm.metrics import Metrics
from ollama_keepwarm.names import match_key
from ollama_keepwarm.ollama import (
    ModelInfo,
    OllamaClient,
    OllamaError,
    OllamaUnreachableError,
    PsSnapshot,
)
from ollama_keepwarm.sleep_signal import SleepSignal
from ollama_keepwarm.state import Pause, PauseStore, default_state_dir
from ollama_keepwarm.status import build_status
from ollama_keepwarm.systemd import Notifier, NullNotifier, watchdog_interval_s

__all__ = ["HostKeeper", "Keeper"]

_log = structlog.get_logger("ollama_keepwarm")

_WARNINGS = {
    "warm_failed",
    "capacity_conflict",
    "options_mismatch_suspected",
    "poll_failed",
    "verify_failed",
}
_ERRORS = {"gpu_lost"}
PAUSED_FOREVER = datetime.max.replace(tzinfo=UTC)
STOP_GRACE_S = 10.0
RESUME_DEDUP_S = 10.0
"""Resume reports this close together (logind's signal, the clock gap) are one resume."""
"""How long SIGTERM waits for in-flight warm calls before abandoning them."""


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
            if key in self.blobs or key in self.infos:
                continue
            with contextlib.suppress(OllamaError):
                info = await self.client.show(row.name)
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


class Keeper:
    """The daemon's lifecycle: start → keep → reload → stop."""

    def __init__(
        self,
        config: Config,
        *,
        notifier: Notifier | None = None,
        clocks: Clocks | None = None,
        reload_config: Callable[[], Config] | None = None,
        handle_signals: bool = True,
        dbus_address: str | None = None,
    ) -> None:
        self.config = config
        self._notifier = notifier or NullNotifier()
        self._clocks = clocks or SystemClocks()
        self._reload_config = reload_config
        self._handle_signals = handle_signals
        self.hosts: dict[str, HostKeeper] = {}
        self.ready = asyncio.Event()
        self.started_at = self._clocks.wall()
        self.resumes = 0
        self._should_exit = asyncio.Event()
        self._scheduler: Any = None
        self._session: aiohttp.ClientSession | None = None
        self._detector = SuspendDetector(self._clocks, config.daemon.resume_threshold_s)
        self._reloading: asyncio.Task[None] | None = None
        self._http: web.AppRunner | None = None
        self.metrics = Metrics(self.status)
        self._last_resume = -RESUME_DEDUP_S
        self._sleep_signal = SleepSignal(self._resumed_by_logind, bus_address=dbus_address)
        self._store = PauseStore(
            Path(config.daemon.state_dir) if config.daemon.state_dir else default_state_dir()
        )
        self.pauses: dict[str, Pause] = {}
        self._control = ControlServer(
            Path(config.daemon.control_socket)
            if config.daemon.control_socket
            else default_socket_path(),
            self.handle_command,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until asked to stop; return the process exit status."""
        async with aiohttp.ClientSession() as session:
            self._session = session
            await self._startup()
            try:
                await self._should_exit.wait()
            finally:
                await self._shutdown()
        return 0

    async def _startup(self) -> None:
        _log.info(
            "keeper_starting",
            models=[m.name for m in self.config.models],
            hosts=list(self.config.hosts),
            config=str(self.config.source or ""),
        )
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._scheduler.start()
        self.pauses = self._store.load()
        self._build_hosts()
        self._schedule_jobs()
        if self._handle_signals:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        if self.config.http.enabled:
            self._http = await http_api.serve(self, self.config.http.host, self.config.http.port)
        await self._control.start()
        await self._sleep_signal.start()
        self._notifier.status(f"waiting for Ollama at {', '.join(self.config.hosts) or '-'}")
        for keeper in self.hosts.values():
            self._look_now(keeper)

    async def _shutdown(self) -> None:
        _log.info("keeper_stopping")
        self._notifier.stopping()
        if self._handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        self._scheduler.shutdown(wait=False)
        await asyncio.gather(*(k.stop(STOP_GRACE_S) for k in self.hosts.values()))
        if self._http is not None:
            await self._http.cleanup()
        await self._control.stop()
        self._sleep_signal.stop()
        warms = sum(st.warms for k in self.hosts.values() for st in k.states.values())
        _log.info(
            "keeper_stopped",
            warms=warms,
            resumes=self.resumes,
            note="models stay loaded until their lease runs out",
        )

    def request_stop(self) -> None:
        """Ask the daemon to stop (SIGTERM, SIGINT). Only records intent."""
        self._should_exit.set()

    def request_reload(self) -> None:
        """Ask the daemon to re-read its config (SIGHUP). Only records intent."""
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.get_running_loop().create_task(self.reload())

    # -- wiring ---------------------------------------------------------------------------------

    def _build_hosts(self) -> None:
        assert self._session is not None
        wanted = self.config.hosts
        for host in list(self.hosts):
            if host not in wanted:
                self._scheduler.remove_job(f"poll {host}")
                asyncio.get_running_loop().create_task(self.hosts.pop(host).stop(0))
        for host in wanted:
            models = tuple(m for m in self.config.models if m.host == host)
            if host in self.hosts:
                self.hosts[host].update_models(models, self.config)
                continue
            keeper = HostKeeper(
                host, models, self.config, self._session, self._clocks, self._publish, self._emit
            )
            keeper.start(functools.partial(self._wake_at, keeper))
            self.hosts[host] = keeper
        self._apply_pauses()

    def _schedule_jobs(self) -> None:
        daemon = self.config.daemon
        for host, keeper in self.hosts.items():
            self._scheduler.add_job(
                keeper.look,
                "interval",
                seconds=daemon.poll_interval_s,
                id=f"poll {host}",
                replace_existing=True,
                coalesce=True,
                max_instances=1,
                misfire_grace_time=None,
            )
        self._scheduler.add_job(
            self._tick,
            "interval",
            seconds=1.0,
            id="tick",
            replace_existing=True,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=None,
        )
        interval = watchdog_interval_s()
        if interval:
            self._scheduler.add_job(
                self._notifier.watchdog,
                "interval",
                seconds=interval,
                id="watchdog",
                replace_existing=True,
                coalesce=True,
                misfire_grace_time=None,
            )
            self._notifier.watchdog()

    def _look_now(self, keeper: HostKeeper) -> None:
        asyncio.get_running_loop().create_task(keeper.look())

    def _wake_at(self, keeper: HostKeeper, at: datetime) -> None:
        """Look at ``keeper``'s host again at ``at`` (the exact refresh time, not the next poll)."""
        if self._should_exit.is_set():
            return
        job_id = f"wake {keeper.host}"
        job = self._scheduler.get_job(job_id)
        if job is not None and job.next_run_time is not None and job.next_run_time <= at:
            return
        self._scheduler.add_job(
            keeper.look,
            "date",
            run_date=at,
            id=job_id,
            replace_existing=True,
            misfire_grace_time=None,
        )

    def _emit(self, event: plan.Event, host: str) -> None:
        log_event(event, host)
        self.metrics.on_event(event.name, host, event.model, event.fields)

    async def _tick(self) -> None:
        """Once a second: notice a resume from suspend, end pauses, keep STATUS fresh."""
        slept = self._detector.check()
        if slept is not None:
            self.note_resume(slept)
        now = self._clocks.wall()
        ended = [key for key, p in self.pauses.items() if p.until is not None and p.until <= now]
        for key in ended:
            _log.info("pause_ended", model=self.pauses.pop(key).name)
        if ended:
            self._store.save(self.pauses)
            self._apply_pauses()
        self._publish()

    def _resumed_by_logind(self) -> None:
        # Consume the clock gap too, so the next tick does not report the same resume again.
        slept = self._detector.check()
        self.note_resume(slept or 0.0, source="logind")

    def note_resume(self, slept_s: float, *, source: str = "clocks") -> None:
        """React to a resume: refresh every kept model now; ``expires_at`` values are stale."""
        # logind and the clock comparison usually both report one wake-up: count it once.
        monotonic = self._clocks.monotonic()
        if monotonic - self._last_resume < RESUME_DEDUP_S:
            return
        self._last_resume = monotonic
        self.resumes += 1
        now = self._clocks.wall()
        fields = {"slept_s": round(slept_s, 1), "source": source}
        self._emit(plan.Event("resumed_from_suspend", "", fields), "")
        for keeper in self.hosts.values():
            keeper.resumed_at = now
            self._look_now(keeper)

    def _publish(self) -> None:
        """Update STATUS=, and send READY=1 once the first warm pass is over."""
        now = self._clocks.wall()
        decisions = [d for k in self.hosts.values() for d in k.decisions]
        down = [k.host for k in self.hosts.values() if not k.ollama_up]
        line = plan.summarize(decisions, now, ollama_up=not down, host=", ".join(down))
        if not self.ready.is_set():
            waited = (now - self.started_at).total_seconds()
            first_pass = all(k.first_pass_done for k in self.hosts.values())
            if first_pass or waited >= self.config.daemon.ready_timeout_s:
                self.ready.set()
                self._notifier.ready()
                _log.info(
                    "ready", status=line, first_pass_done=first_pass, waited_s=round(waited, 1)
                )
        self._notifier.status(line)

    # -- reload ---------------------------------------------------------------------------------

    async def reload(self) -> None:
        """Re-read the config as a transaction: a bad file changes nothing."""
        if self._reload_config is None:
            _log.warning("config_reload_unsupported")
            return
        try:
            new = self._reload_config()
        except Exception as exc:  # a ConfigError, or the file vanished: keep running as we are
            _log.error("config_reload_failed", error=str(exc), keeping=str(self.config.source))
            self._notifier.status(f"config reload failed, kept the running config: {exc}")
            return
        self._notifier.reloading()
        old_daemon = self.config.daemon
        self.config = new
        self._build_hosts()
        if new.daemon != old_daemon:
            self._detector.threshold_s = new.daemon.resume_threshold_s
        self._schedule_jobs()
        _log.info("config_reloaded", models=[m.name for m in new.models])
        for keeper in self.hosts.values():
            self._look_now(keeper)
        self._notifier.ready()

    # -- operator controls ------------------------------------------------------------------

    def _apply_pauses(self) -> None:
        for keeper in self.hosts.values():
            for model in keeper.models:
                pause = self.pauses.get(model.key)
                until = (pause.until or PAUSED_FOREVER) if pause else None
                keeper.states[model.key] = replace(keeper.states[model.key], paused_until=until)
            self._look_now(keeper)

    def _configured(self, name: str) -> list[ModelConfig]:
        key = match_key(name)
        return [m for m in self.config.models if m.key == key]

    async def pause(self, name: str, for_s: float | None, *, unload: bool) -> str:
        """Stop keeping ``name`` warm (for ``for_s`` seconds, or until resumed); maybe unload it."""
        models = self._configured(name)
        if not models:
            raise LookupError(f"{name} is not a configured model")
        until = self._clocks.wall() + timedelta(seconds=for_s) if for_s else None
        self.pauses[models[0].key] = Pause(models[0].name, until)
        self._store.save(self.pauses)
        self._apply_pauses()
        _log.info(
            "model_paused",
            model=models[0].name,
            until=until.isoformat() if until else None,
            unload=unload,
        )
        if unload:
            for model in models:
                await self.hosts[model.host].client.unload(model.name)
        how_long = f"until {until:%Y-%m-%d %H:%M:%S %Z}" if until else "until resumed"
        return f"paused {models[0].name} {how_long}" + (" and unloaded it" if unload else "")

    def resume(self, name: str) -> str:
        """Keep ``name`` warm again."""
        models = self._configured(name)
        if not models:
            raise LookupError(f"{name} is not a configured model")
        if self.pauses.pop(models[0].key, None) is None:
            return f"{models[0].name} was not paused"
        self._store.save(self.pauses)
        self._apply_pauses()
        _log.info("model_resumed", model=models[0].name)
        return f"resumed {models[0].name}"

    def refresh(self, name: str | None) -> str:
        """Refresh ``name`` (or every model) now, whatever its lease says."""
        models = self._configured(name) if name else list(self.config.models)
        if not models:
            raise LookupError(f"{name} is not a configured model")
        now = self._clocks.wall()
        for model in models:
            keeper = self.hosts[model.host]
            keeper.states[model.key] = replace(keeper.states[model.key], refresh_requested_at=now)
        for keeper in self.hosts.values():
            self._look_now(keeper)
        return "refreshing " + ", ".join(m.name for m in models)

    async def handle_command(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """Serve one control-socket request."""
        command, model = request.get("command"), request.get("model")
        try:
            if command == "pause" and isinstance(model, str):
                for_s = request.get("for_s")
                message = await self.pause(
                    model, float(for_s) if for_s else None, unload=bool(request.get("unload"))
                )
            elif command == "resume" and isinstance(model, str):
                message = self.resume(model)
            elif command == "refresh":
                message = self.refresh(model if isinstance(model, str) else None)
            elif command == "status":
                return {"ok": True, "status": self.status()}
            else:
                return {"ok": False, "message": f"unknown command {command!r}"}
        except LookupError as exc:
            return {"ok": False, "message": str(exc.args[0])}
        except OllamaError as exc:
            return {"ok": False, "message": f"Ollama: {exc}"}
        return {"ok": True, "message": message}

    # -- views ----------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """Return the daemon's view of every model, for ``status`` and ``/status``."""
        return build_status(self, self._clocks.wall())
