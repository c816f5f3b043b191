"""The daemon's lifecycle: start → keep → reload → stop, and what operators ask of it.

:class:`Keeper` owns the process-wide pieces: the scheduler, signals, systemd notifications, the
HTTP endpoint, the control socket, suspend detection and the pause file. The work per Ollama host
is a :class:`~ollama_keepwarm.daemon.host.HostKeeper`; all judgement lives in ``plan.py``.
"""

from __future__ import annotations

import asyncio
import functools
import signal
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from aiohttp import web
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from ollama_keepwarm.core import plan
from ollama_keepwarm.core.config import Config, ModelConfig
from ollama_keepwarm.core.names import match_key
from ollama_keepwarm.daemon import http_api
from ollama_keepwarm.daemon.calendar import Calendar
from ollama_keepwarm.daemon.clocks import Clocks, SuspendDetector, SystemClocks
from ollama_keepwarm.daemon.control import ControlServer, default_socket_path
from ollama_keepwarm.daemon.host import HostKeeper, log_event
from ollama_keepwarm.daemon.learned import LearnedStore
from ollama_keepwarm.daemon.metrics import Metrics
from ollama_keepwarm.daemon.sleep_signal import SleepSignal
from ollama_keepwarm.daemon.state import LoadTimeStore, Pause, PauseStore, default_state_dir
from ollama_keepwarm.daemon.status import DaemonView, build_status
from ollama_keepwarm.daemon.systemd import Notifier, NullNotifier, watchdog_interval_s
from ollama_keepwarm.daemon.timers import Alarm, Every
from ollama_keepwarm.ollama import OllamaError, keeper_session

__all__ = ["Keeper"]

_log = structlog.get_logger("ollama_keepwarm")

PAUSED_FOREVER = datetime.max.replace(tzinfo=UTC)
STOP_GRACE_S = 10.0
"""How long SIGTERM waits for in-flight warm calls before abandoning them."""
RESUME_DEDUP_S = 10.0
"""Resume reports this close together (logind's signal, the clock gap) are one resume."""


class _UntilStopping:
    """Pass messages on until ``STOPPING=1``, then none: a STATUS= or READY=1 sent by a call
    that ends during the stop grace would tell systemd the unit is running again."""

    def __init__(self, notifier: Notifier) -> None:
        self._notifier = notifier
        self._stopped = False

    def ready(self) -> None:
        """Say start-up (or a reload) is complete, unless stopping."""
        if not self._stopped:
            self._notifier.ready()

    def reloading(self) -> None:
        """Say a configuration reload has begun, unless stopping."""
        if not self._stopped:
            self._notifier.reloading()

    def stopping(self) -> None:
        """Say shutdown has begun; nothing after it."""
        if not self._stopped:
            self._stopped = True
            self._notifier.stopping()

    def status(self, text: str) -> None:
        """Replace the status line, unless stopping."""
        if not self._stopped:
            self._notifier.status(text)

    def watchdog(self) -> None:
        """Keep the watchdog fed while stopping too: the grace can outlast its interval."""
        self._notifier.watchdog()


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
        calendar_clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.config = config
        self._notifier: Notifier = _UntilStopping(notifier or NullNotifier())
        self._clocks = clocks or SystemClocks()
        self._reload_config = reload_config
        self._handle_signals = handle_signals
        self.hosts: dict[str, HostKeeper] = {}
        self.ready = asyncio.Event()
        self.started_at = self._clocks.wall()
        self._config_loaded_at = self.started_at
        # input (issue 24): the last failed reload, shown by status until a good one.
        self._reload_failed: tuple[datetime, str] | None = None
        self.resumes = 0
        self._should_exit = asyncio.Event()
        self._scheduler: Any = None
        self._session: aiohttp.ClientSession | None = None
        self._detector = SuspendDetector(self._clocks, config.daemon.resume_threshold_s)
        self._reloading: asyncio.Task[None] | None = None
        self._http: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._last_resume = -RESUME_DEDUP_S
        self._sleep_signal = SleepSignal(self._resumed_by_logind, bus_address=dbus_address)
        state_dir = (
            Path(config.daemon.state_dir) if config.daemon.state_dir else default_state_dir()
        )
        self._store = PauseStore(state_dir)
        self._load_times = LoadTimeStore(state_dir)
        self._timers: dict[str, Every] = {}
        self._alarms: dict[str, Alarm] = {}
        self.pauses: dict[str, Pause] = {}
        # Windows are wall time; tests hand the calendar a clock of their own to walk a week.
        self.learned = LearnedStore(state_dir)
        self.calendar = Calendar(calendar_clock or self._clocks.wall, self._look_all, self.learned)
        self.metrics = Metrics(self.status)  # after the calendar: a scrape reads learned hours
        self._control = ControlServer(
            Path(config.daemon.control_socket)
            if config.daemon.control_socket
            else default_socket_path(),
            self.handle_command,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    async def run(self) -> int:
        """Run until asked to stop; return the process exit status."""
        async with keeper_session() as session:
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
        # Calendar jobs only; the cadence (polls, tick, watchdog) is on the monotonic clock.
        self._scheduler = AsyncIOScheduler(timezone="UTC")
        self._scheduler.start()
        if not self.config.models:
            _log.warning(
                "no_models_configured",
                config=str(self.config.source or "the environment"),
                hint="add [[models]] tables (or OLLAMA_KEEPWARM_MODELS); nothing will be kept warm",
            )
        self.calendar.configure(self.config, self._load_time_of)
        self.calendar.start(self._scheduler)
        self.pauses = self._store.load()
        self._build_hosts()
        self._schedule_jobs()
        if self._handle_signals:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, self.request_stop)
            loop.add_signal_handler(signal.SIGINT, self.request_stop)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
        if self.config.http.enabled:
            self._http = await http_api.serve(
                self.status, self.metrics.exposition, self.config.http.host, self.config.http.port
            )
        await self._control.start()
        await self._sleep_signal.start()
        self._notifier.status(f"waiting for Ollama at {', '.join(self.config.hosts) or '-'}")
        self._look_all()

    async def _shutdown(self) -> None:
        _log.info("keeper_stopping")
        self._notifier.stopping()
        if self._handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
        self._scheduler.shutdown(wait=False)
        for timer in self._timers.values():
            timer.cancel()
        for alarm in self._alarms.values():
            alarm.cancel()
        await asyncio.gather(*(k.stop(STOP_GRACE_S) for k in self.hosts.values()))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.cleanup()
        await self._control.stop()
        self._sleep_signal.stop()
        self.learned.flush()
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
        """Ask the daemon to re-read its config (SIGHUP). Records intent; none once stopping."""
        if self._should_exit.is_set():
            _log.info("config_reload_ignored", reason="stopping")
            return
        if self._reloading is None or self._reloading.done():
            self._reloading = asyncio.get_running_loop().create_task(self.reload())

    # -- wiring ---------------------------------------------------------------------------------

    def _build_hosts(self) -> None:
        assert self._session is not None
        wanted = self.config.hosts
        for host in list(self.hosts):
            if host not in wanted:
                self._timers.pop(f"poll {host}").cancel()
                self._alarms.pop(host).cancel()
                self._spawn(self.hosts.pop(host).stop(0))
        for host in wanted:
            models = tuple(m for m in self.config.models if m.host == host)
            if host in self.hosts:
                self.hosts[host].update_models(models, self.config)
                continue
            keeper = HostKeeper(
                host,
                models,
                self.config,
                self._session,
                self._clocks,
                self._publish,
                self._emit,
                on_cold_load=functools.partial(self._remember_load_time, host),
            )
            self._alarms[host] = Alarm(functools.partial(self._look_host, host))
            keeper.window_of = self.calendar.verdict
            keeper.on_use = functools.partial(self._note_use, host)
            keeper.start(functools.partial(self._wake_at, keeper))
            self.hosts[host] = keeper
        self._apply_pauses()

    def _schedule_jobs(self) -> None:
        """(Re)start the cadence: a poll per host, the 1 s tick, the watchdog (monotonic)."""
        daemon = self.config.daemon
        wanted: dict[str, tuple[float, Callable[[], None]]] = {
            f"poll {host}": (daemon.poll_interval_s, functools.partial(self._look_host, host))
            for host in self.hosts
        }
        wanted["tick"] = (1.0, lambda: self._spawn(self._tick()))
        interval = watchdog_interval_s()
        if interval:
            wanted["watchdog"] = (interval, self._notifier.watchdog)
            self._notifier.watchdog()
        for name, timer in list(self._timers.items()):
            if name not in wanted or timer.interval_s != wanted[name][0]:
                self._timers.pop(name).cancel()
        for name, (seconds, callback) in wanted.items():
            if name not in self._timers:
                self._timers[name] = Every(seconds, callback, name)
                self._timers[name].start()

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        """Run ``work`` as a task we keep track of, so shutdown can end it cleanly."""
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _look_now(self, keeper: HostKeeper) -> None:
        self._spawn(keeper.look())

    def _look_all(self) -> None:
        """Look at every host now (after a start, reload, resume, pause or refresh)."""
        for keeper in self.hosts.values():
            self._look_now(keeper)

    def _look_host(self, host: str) -> None:
        keeper = self.hosts.get(host)
        if keeper is not None and not self._should_exit.is_set():
            self._look_now(keeper)

    def _wake_at(self, keeper: HostKeeper, at: datetime) -> None:
        """Look at ``keeper``'s host again at ``at`` (the exact refresh time, not the next poll).

        ``at`` is a wall time (leases are); the wait is turned into a monotonic delay now, so a
        wall-clock step afterwards does not move it.
        """
        alarm = self._alarms.get(keeper.host)
        if alarm is None or self._should_exit.is_set():
            return
        alarm.ring_in((at - self._clocks.wall()).total_seconds())

    def _remember_load_time(self, host: str, model: ModelConfig, seconds: float) -> None:
        """Keep each cold load's time for the ExecStartPost one-shot (``warm --timeout``)."""
        self._load_times.record(LoadTimeStore.key(host, model.key), seconds)
        self.calendar.note_load(model, seconds)

    def _note_use(self, host: str, name: str, at: datetime, cold: bool) -> None:
        """A client used a model: learned hours count it at the calendar's time (wall time;
        a simulated week in tests), so ``at`` (the look's) only tells when it was seen."""
        del at
        self.calendar.note_use(host, name, cold=cold)

    def _load_time_of(self, model: ModelConfig) -> float | None:
        """The last measured cold load of ``model`` (the calendar derives leads from it)."""
        return self._load_times.load().get(LoadTimeStore.key(model.host, model.key))

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
            self._look_all()
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
            keeper.note_resume(now)
        self._look_all()

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
            _log.error(
                "config_reload_failed",
                error=str(exc),
                keeping=f"the running config, loaded at {self._config_loaded_at:%Y-%m-%d %H:%M:%S}",
            )
            self._notifier.status(f"config reload failed, kept the running config: {exc}")
            self._reload_failed = (self._clocks.wall(), str(exc))  # input (issue 24)
            return
        self._reload_failed = None  # input (issue 24)
        self._notifier.reloading()
        old_daemon = self.config.daemon
        fixed = _restart_only_changes(self.config, new)
        if fixed:
            _log.warning(
                "config_needs_restart",
                keys=fixed,
                hint="these are read at start only; the running values stay until the daemon "
                "restarts (systemctl restart ollama-keepwarm)",
            )
        self.config = new
        self._config_loaded_at = self._clocks.wall()
        self.calendar.configure(new, self._load_time_of)
        self._build_hosts()
        if new.daemon != old_daemon:
            self._detector.threshold_s = new.daemon.resume_threshold_s
        self._schedule_jobs()
        _log.info("config_reloaded", models=[m.name for m in new.models])
        self._look_all()
        self._notifier.ready()

    # -- operator controls ------------------------------------------------------------------

    def _apply_pauses(self) -> None:
        for keeper in self.hosts.values():
            for model in keeper.models:
                pause = self.pauses.get(model.key)
                until = (pause.until or PAUSED_FOREVER) if pause else None
                keeper.states[model.key] = plan.apply_pause(keeper.states[model.key], until)

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
        self._look_all()
        _log.info(
            "model_paused",
            model=models[0].name,
            until=until.isoformat() if until else None,
            unload=unload,
        )
        confirmed = True
        if unload:
            for model in models:
                confirmed &= await self.hosts[model.host].unload_and_confirm(model)
        how_long = f"until {until:%Y-%m-%d %H:%M:%S %Z}" if until else "until resumed"
        said = f"paused {models[0].name} {how_long}"
        if unload and confirmed:
            return said + " and unloaded it"
        if unload:  # what /api/ps says now; the unload still happens once a load ends
            return said + "; it is still loaded: it will be unloaded as soon as Ollama lets it"
        return said

    def resume(self, name: str) -> str:
        """Keep ``name`` warm again."""
        models = self._configured(name)
        if not models:
            raise LookupError(f"{name} is not a configured model")
        if self.pauses.pop(models[0].key, None) is None:
            return f"{models[0].name} was not paused"
        self._store.save(self.pauses)
        self._apply_pauses()
        self._look_all()
        _log.info("model_resumed", model=models[0].name)
        return f"resumed {models[0].name}"

    def refresh(self, name: str | None) -> str:
        """Refresh ``name`` (or every model) now, whatever its lease says."""
        models = self._configured(name) if name else list(self.config.models)
        if not models:
            raise LookupError(f"{name} is not a configured model")
        now = self._clocks.wall()
        for model in models:
            self.hosts[model.host].request_refresh(model, now)
        self._look_all()
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
        view = DaemonView(
            hosts=tuple(self.hosts.values()),
            ready=self.ready.is_set(),
            resumes=self.resumes,
            config_source=str(self.config.source or ""),
            config_loaded_at=self._config_loaded_at,
            reload_failed_at=self._reload_failed[0] if self._reload_failed else None,
            reload_error=self._reload_failed[1] if self._reload_failed else "",
            learned={
                (m.host, m.name): entry
                for m in self.config.models
                if (entry := self.calendar.learned_entry(m)) is not None
            },
        )
        return build_status(view, self._clocks.wall())


def _restart_only_changes(old: Config, new: Config) -> list[str]:
    """The keys a reload cannot move (the listeners and the state are opened at start)."""
    keys = []
    if old.http != new.http:
        keys += [
            f"http.{k}"
            for k in ("enabled", "host", "port")
            if getattr(old.http, k) != getattr(new.http, k)
        ]
    for key in ("control_socket", "state_dir"):
        if getattr(old.daemon, key) != getattr(new.daemon, key):
            keys.append(f"daemon.{key}")
    return keys
