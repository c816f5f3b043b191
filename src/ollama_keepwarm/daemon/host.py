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
import functools
import math
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import aiohttp
import structlog

from ollama_keepwarm.core import crash, plan, usage
from ollama_keepwarm.core import prime as priming
from ollama_keepwarm.core.config import Config, ModelConfig
from ollama_keepwarm.core.names import match_key
from ollama_keepwarm.core.ps import PsSnapshot
from ollama_keepwarm.core.runners import RunnerEvent, RunnerTable
from ollama_keepwarm.core.windows import WindowVerdict
from ollama_keepwarm.daemon.clocks import Clocks
from ollama_keepwarm.daemon.crashwatch import CrashWatch, choose_source, unseen
from ollama_keepwarm.ollama import (
    ModelInfo,
    OllamaClient,
    OllamaError,
    OllamaTimeoutError,
    OllamaUnreachableError,
)

__all__ = ["Emit", "HostKeeper", "log_event", "version_at_least"]

_log = structlog.get_logger("ollama_keepwarm")

_WARNINGS = {
    "warm_failed",
    "capacity_conflict",
    "options_mismatch",
    "warm_timed_out",
    "poll_failed",
    "verify_failed",
    "prime_failed",
    "release_failed",
}
_WARNINGS |= {"runner_wedged", "crash_watch_off", "call_crashed"}
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
        on_cold_load: Callable[[ModelConfig, float], None] = lambda _m, _s: None,
    ) -> None:
        self.host = host
        self._emit_to = emit
        self._on_cold_load = on_cold_load
        self.models = models
        self.config = config
        self._session = session
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
        self.primes: dict[str, priming.PrimeState] = {m.key: priming.PrimeState() for m in models}
        self.decisions: list[plan.Decision] = []
        self._init_shows()
        self._reloaded_by_others: set[str] = set()  # kept models a client (re)loaded since
        self._client_runner_in_call: set[str] = set()  # ... during a call of ours for them
        self._evicted_by_ours: dict[str, str] = {}  # victim key -> our model's key, since
        self._runner_history: list[RunnerEvent] = []  # the watch's events of the last gap
        self._elsewhere: frozenset[str] = frozenset()  # kept models a client is loading now
        self._room = plan.Room()  # the room a cold load of ours would need (plan.room_taken)
        self._foreign_runners: dict[str, int] = {}  # key -> pid of a runner we did not start
        self._last_exit_seen: float | None = None  # monotonic: Ollama serves its queue then
        self._own_runners: dict[str, int] = {}  # key -> pid our call in flight started
        self._sent: dict[str, float] = {}  # key -> when our call in flight was sent (monotonic)
        self.ollama_up = False
        self.version: str | None = None
        self.resumed_at: datetime | None = None
        self.poll_errors = 0
        self.looks = 0
        """Finished looks: tests wait on it before asserting that nothing happened."""
        self._outage = False
        self._down_polls = 0
        self._look_lock = asyncio.Lock()
        self._look_again = False
        self._snapshot_asked = -math.inf  # monotonic time the current snapshot was asked for
        self._wall_offset = self._clock_offset()  # wall - boottime: only a step changes it
        self._lease_map: dict[datetime, datetime] = {}  # expires_at printed -> read, after a step
        self._init_calls()
        self._wake: Callable[[datetime], None] = lambda _at: None
        self.crash_watch: CrashWatch | None = None
        self.crash_watch_source = "not started"
        """Where Ollama's processes are watched (shown in status), or why they are not."""
        self.runner_table: RunnerTable = unseen("not started")
        """The runners seen at the last rescan (issue 21; ``status --json`` shows it)."""
        self.wedge_slack_s: float | None = None  # Ollama's own waits, see crash.wedge_bound_s
        self.queue_settle_s = plan.QUEUE_SETTLE_S  # see plan.queue_settles_at
        self.window_of: Callable[[ModelConfig], WindowVerdict | None] = lambda _m: None
        """The calendar's verdict per model (``daemon/calendar.py``), asked at every look."""
        self.on_use: Callable[[str, datetime, bool], None] = lambda _name, _at, _cold: None
        """Told of each use by someone else seen at a look (name, when, cold): learned hours."""

    def _init_calls(self) -> None:
        """The bookkeeping of our own calls: queued, in flight, ended."""
        self._call_ended: dict[str, float] = {}  # monotonic end of our last call, per model
        self._queued: set[str] = set()
        self._loads: asyncio.Queue[plan.Decision] = asyncio.Queue()
        self._workers: list[asyncio.Task[None]] = []
        self._calls: set[asyncio.Task[None]] = set()
        self._refreshes: dict[str, tuple[plan.Decision, asyncio.Task[None]]] = {}
        """Refreshes and loads in flight, per model: withdrawn when the model must be left
        alone (plan.withdraw)."""
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False  # no new call once a stop began: only those in flight finish

    def _init_shows(self) -> None:
        """What ``/api/show`` told, per match key, and how asking it went."""
        self.infos: dict[str, ModelInfo] = {}
        self.blobs: dict[str, str] = {}
        self._unshowable: set[str] = set()
        self._digests: dict[str, str] = {}  # listed name -> manifest digest we learnt it with
        self._show_failures: dict[str, tuple[int, float]] = {}  # key -> (failures, retry at)

    def _emit(self, event: plan.Event) -> None:
        self._note_load(event)
        self._emit_to(event, self.host)

    def start(self, wake: Callable[[datetime], None]) -> None:
        """Start the load lane; ``wake(at)`` asks the keeper to look again at ``at``."""
        self._wake = wake
        self._workers = [asyncio.create_task(self._load_lane(), name=f"loads {self.host}")]

    async def stop(self, grace_s: float) -> None:
        """Let in-flight warm calls finish for ``grace_s``, then abandon them.

        No call starts meanwhile: the look that follows each call still plans (``status``
        stays true) but queues nothing, or a call ending in the grace would start the next
        load (chaos 0.24.0 seeds 2 and 87: a re-warm sent seconds after the stop began).
        """
        self._stopping = True
        while not self._loads.empty():
            self._loads.get_nowait()
        if not self._idle.is_set():
            _log.info("waiting_for_warm_calls", host=self.host, grace_s=grace_s)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), timeout=grace_s)
        if self.crash_watch is not None:
            await self.crash_watch.stop()
        tasks = [*self._workers, *self._calls]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def update_models(self, models: tuple[ModelConfig, ...], config: Config) -> None:
        """Adopt a reloaded config: keep what we learnt about models that stay, re-plan.

        A new config is a reason to try held models again: the set or the room may differ.
        """
        if config.ollama.cgroup != self.config.ollama.cgroup:
            if self.crash_watch is not None:
                self._spawn(self.crash_watch.stop())
            self.crash_watch = None  # chosen again at the next look, even if it was off
            self.crash_watch_source = "not started"
            self.runner_table = unseen("not started")
        old_ollama = self.config.ollama
        if (old_ollama.request_timeout_s, old_ollama.load_timeout_s) != (
            config.ollama.request_timeout_s,
            config.ollama.load_timeout_s,
        ):
            # Calls in flight keep the client they started with; new ones use the new limits.
            self.client = OllamaClient(
                self._session,
                self.host,
                request_timeout_s=config.ollama.request_timeout_s,
                load_timeout_s=config.ollama.load_timeout_s,
            )
        self.states = plan.adopt_config(self.models, models, self.states)
        self.models, self.config = models, config
        self.primes = {m.key: self.primes.get(m.key, priming.PrimeState()) for m in models}

    def note_resume(self, now: datetime) -> None:
        """The machine woke up: refresh every model now, and forget timeouts met while asleep
        (a call in flight across a suspend proves nothing about the model)."""
        self.resumed_at = now
        self.states = plan.forgive_timeouts(self.states)

    def request_refresh(self, model: ModelConfig, now: datetime) -> None:
        """An operator asked: refresh ``model`` now, and try it again if it is held."""
        self.states = plan.release_holds(self.states, only=model.key)
        self.states[model.key] = replace(self.states[model.key], refresh_requested_at=now)

    async def unload_and_confirm(self, model: ModelConfig, within_s: float | None = None) -> bool:
        """Unload a paused ``model`` and look until ps no longer lists it (``within_s`` at most:
        by default the load time limit, as a load of ours in flight finishes first).

        The unload is a state of the plan (``plan.pause_with_unload``): the load lane makes it
        when nothing of ours is in flight. Confirmed only by a look that no longer lists it
        with no call in flight: what ``pause --unload`` answers must be true.
        """
        self.states[model.key] = plan.pause_with_unload(self.states[model.key])
        limit = self.config.ollama.load_timeout_s if within_s is None else within_s
        deadline = self._clocks.monotonic() + limit
        while True:
            await self.look(fresh=True)
            st = self.states.get(model.key)
            listed = any(d.model.key == model.key and d.row is not None for d in self.decisions)
            if st is None or (not listed and st.in_flight_since is None):
                return True
            if self._clocks.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)

    @property
    def first_pass_done(self) -> bool:
        """True once every model is warm or deliberately left alone, or has failed.

        A cold model that is still going to be warmed (a higher-ranked one a lower one
        evicted, say) keeps it false, so READY=1 never goes out while it is cold.
        """
        return self.ollama_up and plan.first_pass_done(self.decisions, configured=bool(self.models))

    @property
    def all_warm(self) -> bool:
        """True when every model that is not paused, held or outside its windows is listed."""
        return self.ollama_up and plan.all_warm(self.decisions)

    # -- observe ------------------------------------------------------------------------------

    async def look(self, *, fresh: bool = False) -> None:
        """Poll ``/api/ps``, update what we know, decide, and queue the warm calls due now.

        A look asked for while one runs is not dropped: it runs right after, on a fresh
        snapshot, so a call that ended meanwhile is judged on what Ollama says now. The
        caller is not kept waiting for it unless ``fresh``: then this returns only after a
        look whose poll began after the call, for a caller that reads ``decisions`` next
        (the running look's were taken from an older snapshot).
        """
        if self._look_lock.locked() and not fresh:
            self._look_again = True
            return
        async with self._look_lock:
            while True:
                self._look_again = False
                try:
                    await self._observe()
                    self._plan_and_act()
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # a garbled answer, a bug: the next look retries
                    self.poll_errors += 1
                    self._down_polls += 1
                    _log.exception("look_failed", host=self.host, error=repr(exc))
                    self._retry_soon()
                self.looks += 1
                if not self._look_again:
                    break

    def _clock_offset(self) -> tuple[float, float]:
        """(wall - boottime, boottime - monotonic): a step moves the first, a suspend the second."""
        boot = self._clocks.boottime()
        return self._clocks.wall().timestamp() - boot, boot - self._clocks.monotonic()

    def _notice_wall_step(self) -> None:
        """Re-anchor every time we hold when the wall clock stepped (core/plan/jumps.py).

        A suspend is left to the resume rules (every model is refreshed once anyway).
        """
        offset = self._clock_offset()
        step = plan.wall_step(self._wall_offset, offset)
        self._wall_offset = offset
        if step is None:
            return
        delta = timedelta(seconds=step)
        self.states = {k: plan.shift_times(st, delta) for k, st in self.states.items()}
        self.primes = {k: plan.shift_times(st, delta) for k, st in self.primes.items()}
        self._lease_map = plan.remember_leases(self._lease_map, self.snapshot, delta)
        if self.snapshot is not None:
            self.snapshot = plan.shift_times(self.snapshot, delta)
        if self.resumed_at is not None:
            self.resumed_at += delta
        self._emit(plan.Event("wall_clock_stepped", "", {"seconds": round(step, 3)}))

    async def _observe(self) -> None:
        asked = self._clocks.monotonic()
        self._notice_wall_step()
        try:
            if not self.ollama_up:
                self.version = await self.client.version()
            snapshot = await self.client.ps()
            # Our clock, not the client's: every time the plan compares comes from one clock.
            snapshot = replace(snapshot, taken_at=self._clocks.wall())
            snapshot, self._lease_map = plan.remap_leases(snapshot, self._lease_map)
        except OllamaUnreachableError as exc:
            self._went_down(str(exc))
            return
        except OllamaError as exc:
            # A malformed, failing or hung answer: keep the last snapshot, retry with backoff.
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
        self._ensure_crash_watch()
        await self._learn_blobs(snapshot)
        if self.crash_watch is not None:
            # The runner table as of this snapshot, not of the last rescan: a loss is judged on
            # whether a client's runner started for the model (issue 21).
            self.crash_watch.rescan()
        reloaded, self._reloaded_by_others = self._reloaded_by_others, set()
        evicted, self._evicted_by_ours = self._evicted_by_ours, {}
        self._note_uses(snapshot)  # learned hours: before the snapshot becomes the last
        loading = plan.unlisted_runners(self.runner_table, snapshot, self.blobs)
        observation = plan.observe(
            self.models,
            self.config.daemon,
            self.snapshot,
            snapshot,
            self.states,
            blobs=self.blobs,
            outage=self._outage,
            runtime_oom_expires_all=version_at_least(self.version, 0, 30),
            processes_visible=self.runner_table.visible,
            reloaded_by_others=reloaded,
            loading_count=loading,
            evicted_by_ours=evicted,
        )
        self.states = observation.states
        for event in observation.events:
            self._emit(event)
        self._observe_runners(snapshot, asked, reloaded)
        rows = plan.match_rows(self.models, snapshot, self.blobs)
        self._room = plan.Room(
            plan.room_taken(
                self.models, self.states, self.snapshot, snapshot, self.runner_table, self.blobs
            ),
            plan.occupied(self.models, self.states, snapshot, rows, loading),
        )
        if any(event.name == "gpu_lost" for event in observation.events):
            self._on_gpu_lost()  # once per loss, however many models it hit
        self.snapshot, self._outage, self._snapshot_asked = snapshot, False, asked

    def _observe_runners(self, snapshot: PsSnapshot, asked: float, reloaded: set[str]) -> None:
        """Settle runner exits on this snapshot; see clients' loads and their argv (issue 21)."""
        rows = plan.match_rows(self.models, snapshot, self.blobs)
        before = {r.name for r in self.snapshot.models} if self.snapshot else set()
        left = bool(before - {r.name for r in snapshot.models})
        self.states, died = plan.settle_runner_exits(
            self.models,
            self.states,
            rows,
            asked,
            snapshot.taken_at,
            any_row_left=left,
            table=self.runner_table,
            blobs=self.blobs,
        )
        for event in died:
            self._emit(event)
        due = plan.exit_settles_at(self.states)
        if due is not None:  # judge a runner's exit once a reload would show (plan)
            wait = max(0.0, due - self._clocks.monotonic())
            self._wake(self._clocks.wall() + timedelta(seconds=wait))
        for model in self.models:
            if model.key in reloaded:
                st, events = plan.note_client_reload(model, self.states[model.key])
                self.states[model.key] = st
                for event in events:
                    self._emit(event)
        for model in self.models:
            pid = self._foreign_runners.get(model.key)
            blob = self.blobs.get(model.key)
            if pid is None and self.states[model.key].last_warm_ok_at is None and blob:
                # Found loaded, never called by us: compare its argv before we claim it
                # (a claim with other options would reload a client's runner, item 12).
                found = self.runner_table.by_blob(blob)
                pid = found[-1].pid if found else None
            runner = self.runner_table.by_pid(pid) if pid is not None else None
            if runner is None:
                self._foreign_runners.pop(model.key, None)
            elif rows[model.key] is not None:
                st, events = plan.note_argv_mismatch(model, self.states[model.key], runner)
                self.states[model.key] = st
                for event in events:
                    self._emit(event)
        self._elsewhere = plan.loading_elsewhere(
            self.models, self.states, self.runner_table, self.blobs, rows
        )

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
        # down_poll_max (the regular poll keeps its own cadence beside it).
        delay = plan.down_poll_delay_s(self._down_polls, self.config.daemon.down_poll_max_s)
        self._wake(self._clocks.wall() + timedelta(seconds=delay))

    async def _learn_blobs(self, snapshot: PsSnapshot) -> None:
        """Learn the weights blob of listed names we do not know, to match aliases (§7.1).

        A name pulled again (another digest) is asked again: its blob changed (§7.6).
        """
        stale, self._digests = plan.repulled(
            self._digests, [(match_key(r.name), r.digest) for r in snapshot.models]
        )
        for key in stale:
            old_blob = self.blobs.pop(key, None)
            self.infos.pop(key, None)
            self._unshowable.discard(key)
            self._show_failures.pop(key, None)
            for other in [k for k, b in self.blobs.items() if b == old_blob]:
                self.blobs.pop(other, None)  # configured aliases learn theirs at the next warm
                self.infos.pop(other, None)
        for row in snapshot.models:
            key = match_key(row.name)
            if key in self.infos or key in self._unshowable:
                continue
            failures, retry_at = self._show_failures.get(key, (0, -math.inf))
            if self._clocks.monotonic() < retry_at:
                continue
            try:
                info = await self.client.show(row.name)
            except OllamaUnreachableError:
                return  # try again at the next look
            except OllamaError as exc:
                wait = plan.show_failure(exc.status, failures + 1, key)
                if wait is None:  # e.g. a model deleted while loaded (§7.5)
                    self._unshowable.add(key)
                else:
                    self._show_failures[key] = (failures + 1, self._clocks.monotonic() + wait)
                continue
            self._show_failures.pop(key, None)
            self.infos[key] = info
            if info.blob:
                self.blobs[key] = info.blob

    def _ensure_crash_watch(self) -> None:
        """Watch Ollama's processes, once it answers (its cgroup may not exist before)."""
        if self.crash_watch is not None or self.crash_watch_source.startswith("off"):
            return
        default = self.host == self.config.ollama.host
        source, why = choose_source(self.config.ollama.cgroup, self.host, default_host=default)
        if source is None:
            self.crash_watch_source = f"off: {why}"
            self.runner_table = unseen(f"off: {why}")
            if self.config.ollama.cgroup not in {"", "auto"}:  # asked for, and not possible
                self._emit(plan.Event("crash_watch_off", "", {"reason": why}))
            else:
                _log.info("crash_watch_off", host=self.host, reason=why)
            return
        self.crash_watch_source = source.description
        self.crash_watch = CrashWatch(source, self._runners_changed, clock=self._clocks.monotonic)
        self.crash_watch.start()
        self.runner_table = self.crash_watch.table
        _log.info("crash_watch_started", host=self.host, source=source.description, why=why)

    def _runners_changed(self, events: Sequence[RunnerEvent], table: RunnerTable) -> None:
        """The runner watch saw runners start or end (issue 21): note it, look again.

        The plan settles an exit on the next snapshot (core/plan/processes.py): a crash is
        checked, an unload goes through the loss rules. A runner started while no call of
        ours was in flight for its model is someone else's.
        """
        self.runner_table = table
        others, self._own_runners = plan.attribute_starts(
            self.models, self.states, self.blobs, events, self._own_runners, self._sent
        )
        self._evicted_by_ours.update(
            plan.evicted_by_ours(
                self.models, self.states, self.blobs, self._runner_history, events, table
            )
        )
        listed = {d.model.key for d in self.decisions if d.row is not None}
        mismatched = {k for k, st in self.states.items() if st.mismatch_reported}
        replaced = plan.reloads(
            others, self.blobs, self._runner_history, events, listed, mismatched
        )
        if events:
            newest = events[-1].at
            self._runner_history = [
                e for e in (*self._runner_history, *events) if newest - e.at <= plan.EVICTION_GAP_S
            ]
        self._foreign_runners.update(others)
        self._reloaded_by_others.update(replaced)
        self._client_runner_in_call.update(k for k in others if self.states[k].in_flight_since)
        exited = [e for e in events if e.kind == "exited"]
        if not exited:
            return
        self._last_exit_seen = max(e.at for e in exited)
        self.states = plan.note_runner_exits(
            self.models, self.states, exited, table, self.blobs, listed
        )
        pids = sorted(e.runner.pid for e in exited)
        _log.info("ollama_process_exited", host=self.host, pids=pids)
        self._spawn(self.look())  # the loss rules at once; a crash is judged later (plan)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``work`` as a task kept referenced until it ends (an unreferenced task can be
        collected mid-flight), and ended by :meth:`stop`."""
        task = asyncio.get_running_loop().create_task(work)
        self._calls.add(task)
        task.add_done_callback(self._calls.discard)
        return task

    def _on_gpu_lost(self) -> None:
        command = self.config.daemon.on_gpu_lost
        if command:
            self._spawn(_run_hook(command, self.host))

    # -- decide and act ---------------------------------------------------------------------

    def _plan_and_act(self) -> None:
        now = self._clocks.wall()
        for model in self.models:
            self.states[model.key] = plan.apply_window(
                self.states[model.key], self.window_of(model)
            )
        unconfirmed = plan.unconfirmed(self._call_ended, self._snapshot_asked)
        self.decisions = plan.decide(
            self.models,
            self.config.daemon,
            self.snapshot if self.ollama_up else None,
            self.states,
            now,
            blobs=self.blobs,
            resumed_at=self.resumed_at,
            unconfirmed=unconfirmed,
            loading_elsewhere=self._elsewhere,
            room=self._room,
        )
        if self._stopping:
            self._on_change()
            return
        for key, (in_flight, task) in list(self._refreshes.items()):
            if key in self.states and plan.withdraw(
                in_flight,
                self.states[key],
                now,
                room=self._room,
                started=self._own_runner_alive(key),
                client_started=key in self._client_runner_in_call,
            ):
                # Still queued inside Ollama behind a client's reload, it would reload the
                # client's runner with our options; Ollama skips it once we hang up.
                withdrawn = "refresh" if in_flight.action is plan.Action.REFRESH else "load"
                _log.info(f"{withdrawn}_withdrawn", model=in_flight.model.name, host=self.host)
                del self._refreshes[key]
                task.cancel()
        for decision in plan.queue_order(self.decisions):
            key = decision.model.key
            if key in self._queued:
                continue
            if decision.action in {plan.Action.WARM, plan.Action.UNLOAD}:
                self._queued.add(key)
                self._loads.put_nowait(decision)
                _log.info(
                    "warm_queued" if decision.action is plan.Action.WARM else "release_queued",
                    model=decision.model.name,
                    reason=decision.reason,
                )
            elif decision.action is plan.Action.REFRESH:
                # Refreshes run side by side: Ollama serves a loaded model at once (§4.2), and
                # one slow repair (a 70B reload) must not hold back other leases.
                self._queued.add(key)
                _log.debug("refresh_queued", model=decision.model.name, reason=decision.reason)
                task = asyncio.get_running_loop().create_task(self._call(decision))
                self._calls.add(task)
                task.add_done_callback(self._calls.discard)
                self._refreshes[key] = (decision, task)
                task.add_done_callback(functools.partial(self._refresh_done, key))
        self._start_primes(now)
        upcoming = [d.at for d in self.decisions if d.at is not None and d.at > now]
        if upcoming:
            self._wake(min(upcoming))
        self._on_change()

    def _own_runner_alive(self, key: str) -> bool:
        """Whether the runner our call in flight started still runs (a client's reload may have
        replaced it while our request waits in Ollama's queue)."""
        pid = self._own_runners.get(key)
        return pid is not None and self.runner_table.by_pid(pid) is not None

    def _refresh_done(self, key: str, task: asyncio.Task[None]) -> None:
        if key in self._refreshes and self._refreshes[key][1] is task:
            del self._refreshes[key]

    async def _load_lane(self) -> None:
        """Make the queued loads and releases one at a time; nothing but cancellation ends it."""
        while True:
            decision = await self._loads.get()
            if decision.action is plan.Action.WARM and decision.row is None:
                await self._let_queue_show()
            if self._stopping:
                continue
            key = decision.model.key
            # A task of its own, so plan.withdraw can take back a load queued behind a
            # client's runner without ending the lane.
            task = self._spawn(self._call(decision))
            if decision.action is plan.Action.WARM:
                self._refreshes[key] = (decision, task)
                task.add_done_callback(functools.partial(self._refresh_done, key))
            try:
                await asyncio.wait({task})
            except asyncio.CancelledError:
                task.cancel()
                raise
            if not task.cancelled() and task.exception() is not None:
                # _call guards itself; this is the lane's last defence
                exc = task.exception()
                _log.error("load_lane_restarted", host=self.host, error=repr(exc), exc_info=exc)

    async def _let_queue_show(self) -> None:
        """Before a cold load: wait until a client's load Ollama queued behind the last runner
        exit or the end of our last call has had time to start its runner
        (plan.queue_settles_at), so the read just before our send sees it and we never queue
        behind it (``_client_loading``). An exit seen meanwhile moves the mark; never longer
        than twice the settle in all."""
        give_up = self._clocks.monotonic() + 2 * self.queue_settle_s
        while True:
            at = plan.queue_settles_at(
                self._last_exit_seen,
                max(self._call_ended.values(), default=None),
                visible=self.runner_table.visible,
                settle_s=self.queue_settle_s,
            )
            now = self._clocks.monotonic()
            if at is None or at <= now or now >= give_up:
                return
            await asyncio.sleep(min(at, give_up) - now)

    async def _call(self, decision: plan.Decision) -> None:
        """Make one decided call; whatever it raises is logged, never the end of a lane.

        A call queued before a config reload is made with the model's current config (its
        options may have changed meanwhile, issue 22 item 10).
        """
        current = next((m for m in self.models if m.key == decision.model.key), None)
        if current is not None and current != decision.model:
            decision = replace(decision, model=current)
        model = decision.model
        self._in_flight += 1
        self._idle.clear()
        try:
            if self._still_wanted(decision):
                if decision.action is plan.Action.UNLOAD:
                    await self._release(model, decision.reason)
                else:
                    await self._warm(decision)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of ours, a garbled answer: never the end of a lane
            _log.exception("call_failed_unexpectedly", model=model.name, host=self.host)
            if model.key in self.states:
                st, events = plan.record_call_crashed(
                    model,
                    self.states[model.key],
                    self._clocks.wall(),
                    repr(exc),
                    lease_end=decision.lease_end,
                )
                self.states[model.key] = st
                for event in events:
                    self._emit(event)
        finally:
            self._client_runner_in_call.discard(model.key)
            self._call_ended[model.key] = self._clocks.monotonic()
            self._queued.discard(model.key)
            self._in_flight -= 1
            if not self._in_flight:
                self._idle.set()
        await self.look()  # guarded: a look never raises but for cancellation

    def _still_wanted(self, decision: plan.Decision) -> bool:
        """A queued call is made only if the latest plan still asks for it (and the model is
        still configured): a look meanwhile may have seen a client's runner to leave alone."""
        latest = next((d for d in self.decisions if d.model.key == decision.model.key), None)
        return plan.still_wanted(decision, latest, configured=decision.model.key in self.states)

    async def _release(self, model: ModelConfig, reason: str) -> None:
        """Unload a model held for capacity (so the higher-ranked ones fit, §1.4), or whose
        window closed with ``after_window = "unload"``."""
        try:
            await self.client.unload(model.name)
        except OllamaError as exc:
            if model.key in self.states:
                st, events = plan.record_release_failed(
                    model, self.states[model.key], self._clocks.wall(), exc.message
                )
                self.states[model.key] = st
                for event in events:
                    self._emit(event)
        else:
            if model.key in self.states:
                self.states[model.key] = plan.record_release_sent(self.states[model.key])
            why = "model_unloaded_after_window" if reason.startswith(plan.OUTSIDE) else ""
            why = "model_unloaded_on_pause" if reason.startswith("paused") else why
            _log.info(why or "model_released_for_room", model=model.name, host=self.host)

    def _client_loading(self, model: ModelConfig) -> bool:
        """Read the runners just before a load of ours: a client's load begun since the last
        look is someone else's, not taken for ours, and never raced (plan.client_loading)."""
        if self.crash_watch is None:
            return False
        self.crash_watch.rescan()
        pid = self._foreign_runners.get(model.key)
        if not plan.client_loading(self.blobs.get(model.key), self.runner_table, pid):
            return False
        _log.info("load_withdrawn", model=model.name, host=self.host, pid=pid)
        return True

    async def _warm(self, decision: plan.Decision) -> None:
        model, reason = decision.model, decision.reason
        listed = decision.row is not None
        if not listed and self._client_loading(model):
            return
        self._own_runners.pop(model.key, None)  # this call's runner is yet to start
        self._sent[model.key] = self._clocks.monotonic()  # after the runners were read
        seen_at_start = self.snapshot  # a look during the call may list the runner it loads
        started = self._clocks.wall()
        st = self.states[model.key]
        limit_s = plan.load_timeout_s(st, self.config.ollama.load_timeout_s)
        self.states[model.key] = plan.record_warm_started(
            st, started, listed=listed, row=decision.row, renews=decision.renew
        )
        self._on_change()
        events: list[plan.Event]
        wedge = (
            asyncio.get_running_loop().create_task(self._watch_wedge(model, st.cold_load_s))
            if listed
            else None
        )
        try:
            info = await self._info(model)
            result = await self.client.load(
                model.name,
                keep_alive=model.keep_alive_wire if decision.renew else None,
                options=model.options,
                embedding_only=info.embedding_only,
                timeout_s=limit_s,
            )
        except asyncio.CancelledError:
            # Withdrawn (plan.withdraw) or the daemon is stopping: no call of ours is in flight.
            if model.key in self.states:
                self.states[model.key] = plan.record_call_withdrawn(self.states[model.key])
            raise
        except OllamaTimeoutError as exc:
            st, events = plan.record_warm_timed_out(
                model,
                self.states[model.key],
                self._clocks.wall(),
                limit_s=exc.limit_s,
                waited_s=exc.waited_s,
                configured_s=self.config.ollama.load_timeout_s,
            )
        except OllamaError as exc:
            if isinstance(exc, OllamaUnreachableError):
                self._went_down(str(exc))
            st, events = plan.record_warm_failed(
                model,
                self.states[model.key],
                self._clocks.wall(),
                exc.status,
                exc.message,
                lease_end=decision.lease_end,
            )
        else:
            if self.crash_watch is not None and (not listed or reason == plan.RUNNER_CHECK):
                # Read the runners while this call still counts as in flight: a runner it
                # started is ours, not a client's (core/plan/processes.py).
                self.crash_watch.rescan()
            # Its blob is known now: was it listed under another name all along (§7.1)? Asked
            # of the snapshot the call began on: a look since may list the runner it loaded.
            resident = not listed and (
                plan.match_rows([model], seen_at_start, self.blobs)[model.key] is not None
            )
            st, events = plan.record_warm_finished(
                model,
                self.states[model.key],
                self._clocks.wall(),
                result.duration_s,
                resident=resident,
            )
            if any(e.name == "model_warmed" and e.fields.get("loaded") for e in events):
                self._on_cold_load(model, result.duration_s)
            st = crash.after_call(st, events, self._clocks.wall(), ok=True)
        finally:
            if wedge is not None:
                wedge.cancel()
        if model.key in self.states:
            self.states[model.key] = st
        for event in events:
            self._emit(event)
        resumed, verify = plan.verify_after(decision, st)
        if resumed:
            self._emit(plan.Event("refreshed_after_resume", model.name, {}))
        if verify:
            await self._verify(model)

    async def _watch_wedge(self, model: ModelConfig, cold_load_s: float | None) -> None:
        """Report ``runner_wedged`` if this refresh outlasts its bound while Ollama answers.

        A call queued behind another load is not wedged: where runners are visible, the bound
        counts from its own runner's start, or the last other load's (issue 21 item 4).
        """
        began = self._clocks.monotonic()
        bound = crash.wedge_bound_s(cold_load_s, slack_s=self.wedge_slack_s)
        blob = self.blobs.get(model.key)
        due = bound
        while due > 0:  # re-judged when the bound would end: loads ahead of it may have started
            await asyncio.sleep(due)
            now = self._clocks.monotonic()
            queued = plan.queued_not_wedged(self.runner_table, blob, began, now, bound)
            due = min(1.0, bound / 4) if queued else 0.0
        try:
            await self.client.version()
        except OllamaError:
            return  # Ollama itself is away or hung: not this runner's fault
        st = self.states.get(model.key)
        if st is None:
            return
        st, events, run_hook = crash.record_wedged(
            model, st, self._clocks.wall(), cold_load_s, ollama_answers=True
        )
        self.states[model.key] = st
        for event in events:
            self._emit(event)
        self._on_change()
        command = self.config.daemon.on_runner_wedged
        if run_hook and command:
            await _run_hook(command, self.host, "runner_wedged")

    async def _verify(self, model: ModelConfig) -> None:
        """Compute once: after a resume ps can list a runner whose GPU is gone (§7.7)."""
        try:
            info = await self._info(model)
            await self.client.generate_one_token(
                model.name,
                keep_alive=model.keep_alive_wire,
                options=model.options,
                embedding_only=info.embedding_only,
            )
        except OllamaError as exc:
            # Ollama notices the dead runner on the next request and reloads it: ask for one.
            self._emit(plan.Event("verify_failed", model.name, {"error": exc.message}))
            if model.key in self.states:
                self.states[model.key] = plan.record_verify_failed(
                    self.states[model.key], self._clocks.wall()
                )
        else:
            _log.info("model_verified", model=model.name, host=self.host)

    # -- priming (issue 14): after a load nobody used yet, the clients' prefix, once -----------
    # Only our own loads, crash repairs and resumes count (core/prime.py LOAD_EVENTS): a model a
    # client loaded (or found loaded at start) holds that client's conversation in its slot,
    # and a prime would overwrite it (issue 22 item 3).

    def _note_load(self, event: plan.Event) -> None:
        """A load of ours, a reload, a resume: the runner's prompt cache may be empty."""
        cause = plan.prime_cause(event.name, event.fields)
        if cause is None:
            return
        for model in self.models:
            if model.name == event.model and model.key in self.primes:
                self.primes[model.key] = priming.note_load(
                    self.primes[model.key], self._clocks.wall(), cause
                )

    def _note_uses(self, snapshot: PsSnapshot) -> None:
        """Learned hours (``core/usage.py``): uses by someone else, i.e. with no call of ours
        (a warm, a refresh, a prime) in flight or ended since the last snapshot was asked."""
        last = self.snapshot
        before = (
            None if last is None or self._outage else plan.match_rows(self.models, last, self.blobs)
        )
        ours = {
            m.key
            for m in self.models
            if self.states[m.key].in_flight_since is not None
            or m.key in self._queued
            or self._call_ended.get(m.key, -math.inf) > self._snapshot_asked
            or self.primes[m.key].in_flight_since is not None
            or (
                last is not None and (self.primes[m.key].primed_at or last.taken_at) > last.taken_at
            )
        }
        after = plan.match_rows(self.models, snapshot, self.blobs)
        names = {m.key: m.name for m in self.models}
        for use in usage.foreign_uses(before, after, ours):
            self.on_use(names[use.key], snapshot.taken_at, use.cold)

    def _start_primes(self, now: datetime) -> None:
        """Start the primes due now, side by side like refreshes: never in the load lane."""
        for decision in self.decisions:
            model = decision.model
            st = self.primes.get(model.key)
            if st is None or not priming.is_due(
                model.prime,
                st,
                now,
                listed=decision.row is not None,
                leave_alone=plan.leave_alone(self.states[model.key], now)
                or decision.action is plan.Action.UNLOAD,
                warm_in_flight=self.states[model.key].in_flight_since is not None,
            ):
                continue
            self.primes[model.key] = priming.record_prime_started(st, now)
            task = asyncio.get_running_loop().create_task(self._prime(model, st.loaded_at))
            self._calls.add(task)
            task.add_done_callback(self._calls.discard)

    async def _prime(self, model: ModelConfig, load: datetime | None) -> None:
        """Send the prefix once; a failure is logged and retried later with back-off."""
        prefix = model.prime
        if prefix is None:
            return
        # No keep_alive: the model was just loaded with ours, and a prime must never revive a
        # runner that Ollama drains for another client's load (§4.5).
        payload = prefix.payload(model.name, keep_alive=None, options=model.options)
        try:
            result = await self.client.prime(
                prefix.endpoint, payload, timeout_s=self.config.ollama.load_timeout_s
            )
        except (OllamaError, ValueError) as exc:
            if model.key not in self.primes:
                return
            error = exc.message if isinstance(exc, OllamaError) else str(exc)
            st = priming.record_prime_failed(self.primes[model.key], self._clocks.wall(), error)
            self.primes[model.key] = st
            retry = st.backoff_until or self._clocks.wall()
            self._emit(
                plan.Event(
                    "prime_failed",
                    model.name,
                    {
                        "error": error,
                        "attempt": st.failures,
                        "retry_in_s": round((retry - self._clocks.wall()).total_seconds(), 1),
                    },
                )
            )
            self._wake(retry)
        else:
            if model.key not in self.primes:
                return
            st = self.primes[model.key]
            self.primes[model.key] = priming.record_prime_finished(
                st,
                prefix,
                load,
                self._clocks.wall(),
                duration_s=result.duration_s,
                prompt_tokens=result.prompt_tokens,
                prompt_eval_s=result.prompt_eval_s,
            )
            fields: dict[str, object] = {
                "duration_s": round(result.duration_s, 3),
                "prompt_tokens": result.prompt_tokens,
                "prompt_eval_s": (
                    round(result.prompt_eval_s, 3) if result.prompt_eval_s is not None else None
                ),
                "after": st.load_cause,
            }
            self._emit(plan.Event("model_primed", model.name, fields))
        self._on_change()

    async def _info(self, model: ModelConfig) -> ModelInfo:
        info = self.infos.get(model.key)
        if info is None:
            info = await self.client.show(model.name)
            self.infos[model.key] = info
            if info.blob:
                self.blobs[model.key] = info.blob
        return info


def version_at_least(version: str | None, major: int, minor: int) -> bool:
    """Compare Ollama's ``major.minor`` (dev builds say ``0.0.0``: they are treated as old)."""
    if not version:
        return False
    parts = version.split("-")[0].split(".")
    try:
        return (int(parts[0]), int(parts[1])) >= (major, minor)
    except (ValueError, IndexError):
        return False


async def _run_hook(command: tuple[str, ...], host: str, what: str = "gpu_lost") -> None:
    """Run the ``on_gpu_lost`` (or ``on_runner_wedged``) command; a failure is logged, not fatal."""
    try:
        process = await asyncio.create_subprocess_exec(*command)
        status = await process.wait()
    except OSError as exc:
        _log.error(f"{what}_hook_failed", host=host, command=list(command), error=str(exc))
        return
    _log.info(f"{what}_hook_ran", host=host, command=list(command), status=status)
