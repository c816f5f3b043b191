"""The invariants of issue 23, checked on one run's :class:`~bench.chaos_run.Outcome`.

Judged only from the fake's own records of who caused what (``fake/records.py``), the keeper's
log events and its ``status`` samples, never from the keeper's internals:

1. no runner a client loaded with other options is reloaded by the keeper after it said
   ``options_mismatch`` (until the mismatch may end: the model gone longer than a reload
   takes, Ollama restarted, the config reloaded), and it says so within two such reloads in
   a minute;
2. no client load or request waits on a runner the keeper revived or kept busy (a call of
   ours that reached it beside a client's own request held nothing up);
3. every kept model lost (or not yet loaded at start) is asked for again within a poll plus the
   loads that had to come first (time the fake spent loading, or a call of ours for another
   model waited in its queue, or the keeper's queue settle after a load, a call or a runner's
   exit where it sees runners, is not counted), counted from
   the end of any fault active when it was lost (time inside a fault that began later is not
   counted either), unless it is held and ``status`` says why
   (paused, conflict, outside, mismatch, backing off, wedged), or it was lost before in the
   last :data:`REPEAT_S`, by anyone, as the keeper counts a streak (a repeat may back off); a kept
   lease the keeper let lapse (with no fault, no load waiting for it) is a loss it caused;
   a model whose ``when`` window opens (its warm-up starts) is asked for within the same
   bound (``status`` may say "outside" for a poll after the opening), unless it is resident
   then and no client's lease of it lapses next (warm; later losses are judged each); and
   the keeper keeps no model outside its window: no call of ours loads, renews or pings it
   after its window closed (or before its warm-up started), beyond the same bound;
4. the keeper never died, never spun (calls per second; its loads evicting its own kept
   models more than :data:`SELF_FIGHTS` times; ``call_crashed`` storms), no lane or task
   ended, no exception went unlogged, it called nothing wedged that was queued behind another
   load, and no two loads of one model of ours were in flight together;
5. over a long run its RSS, file descriptors and tasks stay flat.

Bounds are generous and absorb the machine's load: every reaction bound adds twice the worst
event-loop lag measured around it, so a busy box slows the keeper and the bound alike.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime

from bench.chaos_driver import CONFLICT_RETRY_S
from bench.chaos_run import Outcome
from bench.chaos_schedule import POLL_S, WINDOW_KINDS
from ollama_keepwarm.core.plan import QUEUE_SETTLE_S
from ollama_keepwarm.fake.records import RecordedRequest, who

__all__ = ["HELD_STATES", "REPEAT_S", "Verdict", "Violation", "check"]

HELD_STATES = {"paused", "conflict", "outside", "mismatch", "error", "wedged"}
REPEAT_S = float(CONFLICT_RETRY_S)
"""A loss this soon after a client's is a repeat, which may back off: the window the keeper
counts repeats in (its ``conflict_retry``). A shorter one here flagged the keeper's own
documented doubling as a slow re-warm (a compressed day on 0.32.15)."""
MARGIN_S = 0.35
SPIN_PER_S = 80
MISMATCH_WITHIN = 2
MISMATCH_MINUTE_S = 60.0
"""Issue 21: a client with other options pays at most two reloads in a minute."""
LONG_RUN_S = 120.0
SELF_FIGHTS = 2
"""Evictions of one kept model by our own loads of another (outside operator actions) that
settling may take: issue 21 allows one extra load of each."""
WEDGE_QUEUE_S = 1.0


@dataclass(frozen=True)
class Violation:
    """One broken invariant: its number, what happened, and when (seconds into the run)."""

    invariant: int
    what: str
    at: float

    def describe(self) -> str:
        """One line for the report."""
        return f"inv {self.invariant} @{self.at:6.2f}s: {self.what}"


@dataclass(frozen=True)
class Verdict:
    """What the checks found in one run."""

    violations: tuple[Violation, ...]
    client_requests: int
    harmed_requests: int

    @property
    def invariants(self) -> frozenset[int]:
        """The invariants broken."""
        return frozenset(v.invariant for v in self.violations)


def _t(value: datetime) -> float:
    return value.timestamp()


class _Checker:
    def __init__(self, outcome: Outcome) -> None:
        self.o = outcome
        self.violations: list[Violation] = []
        self.harmed: set[tuple[str, float]] = set()
        self.kept_blobs = {blob: name for name, blob in outcome.kept_keys.items()}
        self.settles = self._queue_settles()

    def _queue_settles(self) -> list[float]:
        """When the keeper's wait before a cold load began, where it saw Ollama's runners: the
        end of each load and of each call of ours, and each runner's exit. Its design waits
        :data:`QUEUE_SETTLE_S` after the last of those (``plan.queue_settles_at``), so a
        client's load Ollama queued behind them shows its runner first (invariant 1). Part of
        what the loads that had to come first cost, as their loading is."""
        if not any(e.get("event") == "crash_watch_started" for e in self.o.logs):
            return []
        marks = [_t(ld.finished) for ld in self.o.loads if ld.finished]
        marks += [_t(u.time) for u in self.o.records.unloads]
        marks += [
            _t(r.time)
            for r in self.o.requests
            if who(r.user_agent) == "keeper" and r.path in {"/api/generate", "/api/embed"}
        ]
        return sorted(marks)

    def blob(self, name: str) -> str:
        return self.o.blobs.get(name, self.o.blobs.get(name.split(":", maxsplit=1)[0], name))

    def flag(self, invariant: int, what: str, at: float) -> None:
        self.violations.append(Violation(invariant, what, at - self.o.started))

    # -- invariant 1 --------------------------------------------------------------------------

    def _resets(self, blob: str) -> list[float]:
        """When a mismatch of ``blob`` may end: the model was gone longer than a reload takes
        (less a poll, the keeper's view), Ollama restarted, or the config was reloaded."""
        spans = [
            _t(ld.finished) - _t(ld.started)
            for ld in self.o.loads
            if ld.ok and ld.finished and self.blob(ld.model) == blob
        ]
        reload_s = max(spans, default=0.0)
        starts = sorted(_t(ld.started) for ld in self.o.loads if self.blob(ld.model) == blob)
        resets = [start for start, _end, kind, _m in self.o.windows if kind == "reload"]
        for unload in self.o.records.unloads:
            if self.blob(unload.model) != blob:
                continue
            gone = _t(unload.time)
            back = next((t for t in starts if t >= gone), None)
            if unload.cause == "restart":
                resets.append(gone)
            elif back is not None and back - gone > reload_s - POLL_S:
                resets.append(back)
        return sorted(resets)

    def options_fights(self) -> None:
        """Invariant 1, per options-mismatch episode of each model."""
        events: dict[str, list[tuple[float, str]]] = defaultdict(list)
        for entry in self.o.logs:
            if entry.get("event") == "options_mismatch" and entry.get("model"):
                events[self.blob(str(entry["model"]))].append((entry["t"], "said"))
        for load in self.o.loads:
            if load.reason != "reload" or not load.replaced_by or _t(load.started) > self.o.ended:
                continue
            if who(load.caller) == "keeper" and who(load.replaced_by) == "client":
                events[self.blob(load.model)].append((_t(load.started), "fight"))
            elif who(load.caller) == "client" and who(load.replaced_by) == "keeper":
                self.harmed.add(("reload", _t(load.started)))
        for blob, happened in events.items():
            if not any(kind == "fight" for _, kind in happened):
                continue
            name = self.kept_blobs.get(blob, blob[:12])
            happened += [(t, "reset") for t in self._resets(blob)]
            said, unsaid = False, list[float]()  # a reset ends an episode, not a minute's count
            for t, kind in sorted(happened, key=lambda e: (e[0], e[1] != "reset")):
                if kind == "reset":
                    said = False
                elif kind == "said":
                    said, unsaid = True, []
                elif said:
                    self.flag(
                        1,
                        f"keeper reloaded a client's runner of {name} after saying "
                        "options_mismatch",
                        t,
                    )
                else:
                    unsaid = [u for u in unsaid if t - u < MISMATCH_MINUTE_S] + [t]
                    if len(unsaid) == MISMATCH_WITHIN + 1:
                        self.flag(
                            1,
                            f"keeper reloaded a client's runner of {name} "
                            f"{len(unsaid)} times in a minute without saying "
                            "options_mismatch",
                            t,
                        )

    # -- invariant 2 --------------------------------------------------------------------------

    def waits_on_us(self) -> None:
        for wait in self.o.records.waits:
            if who(wait.caller) != "client" or _t(wait.started) > self.o.ended:
                continue
            # A ping that overlapped a client's own request on that runner held nothing up.
            ours = [
                t
                for t in wait.touches
                if who(t.caller) == "keeper" and (t.kind == "revived" or t.alone)
            ]
            if not ours:
                continue
            kinds = ",".join(sorted({t.kind for t in ours}))
            waited = _t(wait.ended) - _t(wait.started)
            self.harmed.add(("wait", _t(wait.started)))
            self.flag(
                2,
                f"a client's request for {wait.model} waited {waited:.2f}s on "
                f"{ours[0].model}, which the keeper {kinds} ({len(ours)} calls)",
                _t(wait.started),
            )

    # -- invariant 3 --------------------------------------------------------------------------

    def _fault_end(self, at: float, model: str) -> float:
        """When the faults (and pauses, reloads) active at ``at`` for ``model`` have all ended.

        A loss during a fault is not the keeper's to prevent, but once the fault is over the
        keeper has a poll to ask for the model again, like after any other loss.
        """
        end, moved = at, True
        while moved:
            moved = False
            for start, stop, _kind, about in self.o.windows:
                if (not about or about == model) and start <= end < stop:
                    end, moved = stop, True
        return end

    def _held(self, model: str, at: float, until: float) -> bool:
        for t, models in self.o.statuses:
            if at <= t <= until + POLL_S and models.get(model, ("", ""))[0] in HELD_STATES:
                return True
        return False

    def _busy_loading(self, at: float, until: float, blob: str) -> float:
        """Time in [at, until] the fake spent loading, or a call of ours for another model
        waited in its queue (the keeper loads one model at a time: those came first), or the
        keeper's queue settle after a load, a call or a runner's exit ran (``settles``), or a
        fault for this model (or all) was active: a fault that begins after the loss (a slow
        ``/api/generate`` holding our call) delays the answer, not the keeper's asking."""
        model = self.kept_blobs.get(blob, "")
        spans = [
            (max(at, _t(ld.started)), min(until, _t(ld.finished) if ld.finished else until))
            for ld in self.o.loads
        ]
        spans += [
            (max(at, start), min(until, stop))
            for start, stop, _kind, about in self.o.windows
            if not about or about == model
        ]
        spans += [
            (max(at, _t(w.started)), min(until, _t(w.ended)))
            for w in self.o.records.waits
            if who(w.caller) == "keeper" and self.blob(w.model) != blob
        ]
        spans += [(max(at, t), min(until, t + QUEUE_SETTLE_S)) for t in self.settles]
        spans.sort()
        total, reach = 0.0, at
        for first, end in spans:
            start = max(first, reach)
            if end > start:
                total += end - start
                reach = end
        return total

    def _lag(self, at: float, until: float) -> float:
        return max((lag for t, lag in self.o.lags if at - 1.0 <= t <= until + 1.0), default=0.0)

    def _waited_on(self, blob: str, at: float) -> bool:
        """Whether a load was waiting for this model's runner at ``at`` (inv 2 judges that)."""
        return any(
            _t(w.started) <= at <= _t(w.ended) + POLL_S
            and (self.blob(w.model) == blob or any(self.blob(t.model) == blob for t in w.touches))
            for w in self.o.records.waits
            if who(w.caller) == "client"
        )

    def _lapsed(self, blob: str, model: str, at: float, cause: str, caller: str) -> bool:
        if cause != "expired" or who(caller) != "keeper" or self._waited_on(blob, at):
            return False
        return self._fault_end(at, model) == at and not self._held(model, at, at)

    def losses(self) -> None:
        """Invariant 3 over every loss of a kept model, and its first warm at start."""
        last_loss: dict[str, float] = {}
        losses = [(self.o.started, blob, "start", "", "") for blob in self.kept_blobs]
        losses += self._openings()
        for unload in self.o.records.unloads:
            blob = self.blob(unload.model)
            if _t(unload.time) > self.o.ended:
                continue  # the keeper is stopping: nothing to judge
            if blob in self.kept_blobs and unload.cause != "crashed":
                losses.append((_t(unload.time), blob, unload.cause, unload.caller, "loss"))
        for at, blob, cause, caller, kind in sorted(losses):
            model = self.kept_blobs[blob]
            repeat = at - last_loss.get(blob, -1e18) < REPEAT_S
            if kind:
                # Any loss starts or continues a streak, as the keeper counts it (its last
                # loss, by whoever): the next within REPEAT_S may back off.
                last_loss[blob] = at
            if self._lapsed(blob, model, at, cause, caller):
                self.flag(3, f"{model}'s lease, set by the keeper, lapsed", at)
            if repeat:
                continue
            if cause == "window" and self._resident_kept(blob, at):
                continue  # warm all along: nothing of ours is due (seed 451 on 0.32.15)
            since = self._fault_end(at, model)
            back = self._back(blob, at, claims=cause == "window")
            if back is not None and back <= since:
                continue  # asked for again during the fault
            until = back if back is not None else self.o.ended
            # A window's opening: status may say "outside" until the next poll sees it.
            if self._held(model, at + POLL_S if cause == "window" else at, until):
                continue
            lag = self._lag(since, until)
            bound = POLL_S + MARGIN_S + 2 * lag
            if back is None and self.o.ended - since < bound + 1.0:
                continue  # too close to the end to judge
            reaction = until - since - self._busy_loading(since, until, blob)
            if reaction > bound:
                by = (who(caller) if caller else "nobody") if kind else "-"
                what = f"lost ({cause} by {by})" if kind else "not loaded at start"
                if cause == "window":
                    what = "not loaded after its window opened"
                after = (
                    f" after the fault ended at {since - self.o.started:.2f}s" if since > at else ""
                )
                came = (
                    f"asked for again {reaction:.2f}s{after}" if back else "never asked for again"
                )
                self.flag(
                    3,
                    f"{model} {what}, {came} (bound {bound:.2f}s: a poll + {MARGIN_S}s + "
                    f"2 x lag {lag:.2f}s; time spent loading or in a fault not counted)",
                    at,
                )

    def _kept_spans(self) -> list[tuple[str, list[tuple[float, float]]]]:
        """For the schedule's window event: its model and the real times it is kept.

        The event's minute ``M`` fell on its time (``Driver.align_window``); a close keeps the
        model for keeper wall times in [M - 2 h, M), an opening (its warm-up, a one-minute lead)
        in [M, M + 3 h + 1 min). A wall-clock step moves the keeper's wall clock, so it moves
        where in the run those lie: a step forward can open a window early or close it.
        """
        spans = []
        steps = sorted(
            (self.o.started + e.at, float(e.args["seconds"]))
            for _, e in self.o.schedule.active
            if e.kind in ("step_back", "step_forward")
        )
        for _, event in self.o.schedule.active:
            if event.kind not in WINDOW_KINDS:
                continue
            at = self.o.started + event.at
            lo, hi = (-7200.0, 0.0) if event.kind == "window_close" else (0.0, 3 * 3600.0 + 60.0)
            edges = [self.o.started, *(t for t, _ in steps), self.o.ended]
            kept: list[tuple[float, float]] = []
            moved = 0.0
            for i, (a, b) in enumerate(itertools.pairwise(edges)):
                moved += steps[i - 1][1] if i else 0.0
                first, last = max(a, at - moved + lo), min(b, at - moved + hi)
                if first < last:
                    if kept and kept[-1][1] >= first:
                        kept[-1] = (kept[-1][0], last)
                    else:
                        kept.append((first, last))
            spans.append((str(event.args["model"]), kept))
            break  # one boundary per run (the keeper's clock runs at real pace)
        return spans

    def _our_calls(self, blob: str) -> list[RecordedRequest]:
        """Our calls that load, renew or ping ``blob`` (not an unload)."""
        calls = []
        for request in self.o.requests:
            body = request.body if isinstance(request.body, dict) else {}
            if (
                who(request.user_agent) == "keeper"
                and request.path in {"/api/generate", "/api/chat", "/api/embed"}
                and self.blob(str(body.get("model", ""))) == blob
                and body.get("keep_alive") not in (0, "0", "0s")
            ):
                calls.append(request)
        return calls

    def _openings(self) -> list[tuple[float, str, str, str, str]]:
        """A window that opens (or reopens) during the run, as a loss at that moment."""
        return [
            (first, self.blob(model), "window", "", "")
            for model, kept in self._kept_spans()
            for first, _last in kept
            if first > self.o.started
        ]

    def outside_windows(self) -> None:
        """Invariant 3's mirror: nothing of ours keeps a model outside its window."""
        for model, kept in self._kept_spans():
            for request in self._our_calls(self.blob(model)):
                t = _t(request.received or request.time)  # when we asked, not when answered
                if any(first <= t < last for first, last in kept):
                    continue
                # How far outside: from the nearest edge of a kept span (or the start).
                edges = [(t - last, "after its window closed") for _, last in kept if last <= t]
                edges += [
                    (first - t, "before its warm-up started") for first, _ in kept if t < first
                ]
                late, where = min(edges, default=(t - self.o.started, "outside its window"))
                lag = self._lag(t - late, t + late)
                bound = POLL_S + MARGIN_S + 2 * lag
                if late > bound:
                    self.flag(
                        3,
                        f"{model} kept outside its window: a call of ours {late:.2f}s {where}"
                        f" (bound {bound:.2f}s)",
                        t,
                    )
                    break

    def _resident_kept(self, blob: str, at: float) -> bool:
        """Whether ``blob`` is resident at ``at`` and stays so until an unload that is no lapse
        of a client's lease. A window that opens on it asks for nothing: it is warm, and each
        later loss is judged on its own (a lease of ours that lapses, by ``_lapsed``); only a
        client's lease, which the keeper should claim, still wants a call of ours."""
        ends = [
            _t(ld.finished)
            for ld in self.o.loads
            if self.blob(ld.model) == blob and ld.ok and ld.finished is not None
        ]
        loaded = max((e for e in ends if e <= at), default=None)
        if loaded is None:
            return False
        gone = sorted(
            (_t(u.time), u.cause, u.caller)
            for u in self.o.records.unloads
            if self.blob(u.model) == blob and _t(u.time) > loaded
        )
        if gone and gone[0][0] <= at:
            return False  # unloaded before the opening
        return not gone or not (gone[0][1] == "expired" and who(gone[0][2]) == "client")

    def _back(self, blob: str, at: float, claims: bool = False) -> float | None:
        """When the model was asked for again after ``at``: a load by anyone, or our call
        (with ``claims``, also any call of ours to it: a model a client loaded before its
        window opened is kept by our first renewal, no load needed)."""
        starts = [_t(ld.started) for ld in self.o.loads if self.blob(ld.model) == blob]
        # A call of ours still queued at the loss asked before it and keeps asking: Ollama
        # serves it in turn (seed 259 on 0.24.0), and a second one would be two in flight.
        starts += [
            max(_t(w.started), at) if _t(w.started) <= at <= _t(w.ended) else _t(w.started)
            for w in self.o.records.waits
            if self.blob(w.model) == blob and who(w.caller) == "keeper"
        ]
        if claims:
            starts += [_t(r.received or r.time) for r in self._our_calls(blob)]
        later = [t for t in starts if t >= at]
        return min(later) if later else None

    # -- invariant 4 --------------------------------------------------------------------------

    def health(self) -> None:
        o = self.o
        if o.keeper_died:
            self.flag(4, o.keeper_died, o.ended)
        if o.exit_code not in (0, None):
            self.flag(4, f"keeper exited {o.exit_code}", o.ended)
        for message in o.loop_errors:
            self.flag(4, f"unlogged exception: {message}", o.ended)
        for lane in o.lanes_ended:
            self.flag(4, f"a lane ended: {lane}", o.ended)
        for entry in o.logs:
            if entry.get("exc_info") or entry.get("log_level") in ("critical", "exception"):
                self.flag(4, f"logged a crash: {entry.get('event')}", entry["t"])
        per_second = Counter(int(_t(r.time)) for r in o.requests if who(r.user_agent) == "keeper")
        for second, count in sorted(per_second.items()):
            if count > SPIN_PER_S:
                self.flag(4, f"keeper spun: {count} requests in one second", float(second))
                break
        crashed = [e for e in o.logs if e.get("event") == "call_crashed"]
        if len(crashed) > 20:
            self.flag(4, f"keeper spun: {len(crashed)} call_crashed", crashed[20]["t"])
        self._self_fights()
        self._wedged_while_queued()
        ours = defaultdict(list)
        for wait in o.records.waits:
            if who(wait.caller) == "keeper":
                ours[self.blob(wait.model)].append((_t(wait.started), _t(wait.ended)))
        for blob, spans in ours.items():
            spans.sort()
            for (_, end), (start, _) in itertools.pairwise(spans):
                if start < end:
                    name = self.kept_blobs.get(blob, blob[:12])
                    self.flag(4, f"two loads of {name} of ours in flight together", start)
                    break

    def _loaded_by(self, victim: str, at: float) -> str:
        """Who loaded the runner evicted at ``at``: its unload record, the first after."""
        unloads = [
            u
            for u in self.o.records.unloads
            if u.model == victim and u.cause in ("evicted", "oom") and _t(u.time) >= at
        ]
        return min(unloads, key=lambda u: u.time).loaded_by if unloads else ""

    def _self_fights(self) -> None:
        """Kept models that do not fit settle: our loads evict each of our runners of a kept
        model at most twice. A client's runner of a kept model (one we hold, or loaded with
        its own options) evicted by our re-warms is a keeper-client conflict, which the loss
        rules' back-off bounds, not the keeper fighting itself.

        An operator's ``refresh`` of a model orders it tried again, a hold included: the
        evictions of that model after it are counted afresh, as at start (0.32.15 seed 690:
        a held model refreshed, loaded, evicted a higher one and was evicted by its re-warm)."""
        refreshed = [
            (self.o.started + e.at, self.blob(str(e.args.get("model"))))
            for _, e in self.o.schedule.active
            if e.kind == "refresh"
        ]
        count: Counter[str] = Counter()
        last: dict[str, float] = {}
        for eviction in sorted(self.o.evictions, key=lambda e: e.time):
            at = _t(eviction.time)
            victim, winner = self.blob(eviction.victim), self.blob(eviction.for_model)
            if any(b == victim and last.get(victim, -1e18) < t <= at for t, b in refreshed):
                count[victim] = 0
            last[victim] = at
            if (
                who(eviction.caller) == "keeper"
                and who(self._loaded_by(eviction.victim, at)) == "keeper"
                and victim in self.kept_blobs
                and winner in self.kept_blobs
                and at <= self.o.ended
                and not any(start <= at <= end for start, end, _k, _m in self.o.windows)
            ):
                count[victim] += 1
                if count[victim] == SELF_FIGHTS + 1:
                    name = self.kept_blobs[victim]
                    self.flag(4, f"our loads evicted kept {name} {count[victim]} times", at)

    def _wedged_while_queued(self) -> None:
        """A repair waiting behind another load is queued, not wedged."""
        for entry in self.o.logs:
            if entry.get("event") != "runner_wedged":
                continue
            at, model = entry["t"], self.blob(str(entry.get("model")))
            others = [
                ld
                for ld in self.o.loads
                if self.blob(ld.model) != model
                and _t(ld.started) <= at
                and (ld.finished is None or _t(ld.finished) >= at - WEDGE_QUEUE_S)
            ]
            if others:
                self.flag(4, f"called {entry.get('model')} wedged while another load ran", at)

    # -- invariant 5 --------------------------------------------------------------------------

    def flat(self) -> None:
        o = self.o
        if o.schedule.duration_s < LONG_RUN_S or len(o.resources) < 2:
            return
        # From a tenth into the run (start-up, imports and first loads done) to its end.
        settled = o.started + 0.1 * (o.ended - o.started)
        base = next((r for r in o.resources if r[0] >= settled), o.resources[0])
        (_, rss0, fd0, tasks0), (t1, rss1, fd1, tasks1) = base, o.resources[-1]
        if rss1 - rss0 > 64 * 1024:
            self.flag(5, f"RSS grew {rss0} -> {rss1} KiB", t1)
        if fd1 - fd0 > 16:
            self.flag(5, f"open fds grew {fd0} -> {fd1}", t1)
        if tasks1 - tasks0 > 40:
            self.flag(5, f"asyncio tasks grew {tasks0} -> {tasks1}", t1)


def check(outcome: Outcome) -> Verdict:
    """Check every invariant on one run."""
    checker = _Checker(outcome)
    checker.options_fights()
    checker.waits_on_us()
    checker.losses()
    checker.outside_windows()
    checker.health()
    checker.flat()
    violations = tuple(sorted(checker.violations, key=lambda v: (v.at, v.invariant)))
    return Verdict(violations, len(outcome.clients), len(checker.harmed))
