"""The invariants of issue 23, checked on one run's :class:`~bench.chaos_run.Outcome`.

Judged only from the fake's own records of who caused what (``fake/records.py``), the keeper's
log events and its ``status`` samples, never from the keeper's internals:

1. no runner a client loaded with other options is reloaded by the keeper after it said
   ``options_mismatch``, and it says so within two such reloads;
2. no client load or request waits on a runner the keeper revived or kept busy;
3. every kept model lost while no fault was active is asked for again within a poll plus the
   loads that had to come first (time the fake spent loading is not counted), unless it is held
   and ``status`` says why (paused, conflict, outside, mismatch, backing off, wedged), or it was
   lost before in the last :data:`REPEAT_S` (a repeat may back off); a kept lease the keeper
   itself let lapse is a loss it caused;
4. the keeper never died, never spun, no lane or task ended, no exception went unlogged, and no
   two loads of one model of ours were in flight together;
5. over a long run its RSS, file descriptors and tasks stay flat.

Bounds are generous and absorb the machine's load: every reaction bound adds twice the worst
event-loop lag measured around it, so a busy box slows the keeper and the bound alike.
"""

from __future__ import annotations

import itertools
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import datetime

from bench.chaos_run import Outcome
from bench.chaos_schedule import POLL_S
from ollama_keepwarm.fake.records import who

__all__ = ["HELD_STATES", "REPEAT_S", "Verdict", "Violation", "check"]

HELD_STATES = {"paused", "conflict", "outside", "mismatch", "error", "wedged"}
REPEAT_S = 10.0
MARGIN_S = 0.35
SPIN_PER_S = 80
MISMATCH_WITHIN = 2
LONG_RUN_S = 120.0


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

    def blob(self, name: str) -> str:
        return self.o.blobs.get(name, self.o.blobs.get(name.split(":", maxsplit=1)[0], name))

    def flag(self, invariant: int, what: str, at: float) -> None:
        self.violations.append(Violation(invariant, what, at - self.o.started))

    # -- invariant 1 --------------------------------------------------------------------------

    def options_fights(self) -> None:
        said: dict[str, float] = {}
        for entry in self.o.logs:
            if entry.get("event") == "options_mismatch" and entry.get("model"):
                said.setdefault(self.blob(str(entry["model"])), entry["t"])
        fights: dict[str, list[float]] = defaultdict(list)
        for load in self.o.loads:
            if load.reason != "reload" or not load.replaced_by:
                continue
            if who(load.caller) == "keeper" and who(load.replaced_by) == "client":
                fights[self.blob(load.model)].append(_t(load.started))
            elif who(load.caller) == "client" and who(load.replaced_by) == "keeper":
                self.harmed.add(("reload", _t(load.started)))
        for blob, times in fights.items():
            name = self.kept_blobs.get(blob, blob[:12])
            first_said = said.get(blob)
            before = [t for t in times if first_said is None or t < first_said]
            if len(before) > MISMATCH_WITHIN:
                how = "never said" if first_said is None else "said only after them"
                self.flag(
                    1,
                    f"keeper reloaded a client's runner of {name} {len(before)} times; "
                    f"options_mismatch {how}",
                    before[MISMATCH_WITHIN],
                )
            after = [t for t in times if first_said is not None and t > first_said]
            if after:
                self.flag(
                    1,
                    f"keeper reloaded a client's runner of {name} {len(after)} times after "
                    "saying options_mismatch",
                    after[0],
                )

    # -- invariant 2 --------------------------------------------------------------------------

    def waits_on_us(self) -> None:
        for wait in self.o.records.waits:
            if who(wait.caller) != "client":
                continue
            ours = [t for t in wait.touches if who(t.caller) == "keeper"]
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

    def _excused(self, at: float, until: float, model: str) -> str:
        for start, end, kind, about in self.o.windows:
            if about and about != model:
                continue
            if start <= at <= end or at <= start <= until:
                return kind
        return ""

    def _held(self, model: str, at: float, until: float) -> bool:
        for t, models in self.o.statuses:
            if at <= t <= until + POLL_S and models.get(model, ("", ""))[0] in HELD_STATES:
                return True
        return False

    def _busy_loading(self, at: float, until: float) -> float:
        spans = sorted(
            (max(at, _t(ld.started)), min(until, _t(ld.finished) if ld.finished else until))
            for ld in self.o.loads
        )
        total, reach = 0.0, at
        for first, end in spans:
            start = max(first, reach)
            if end > start:
                total += end - start
                reach = end
        return total

    def _lag(self, at: float, until: float) -> float:
        return max((lag for t, lag in self.o.lags if at - 1.0 <= t <= until + 1.0), default=0.0)

    def losses(self) -> None:
        last_loss: dict[str, float] = {}
        for unload in self.o.records.unloads:
            blob = self.blob(unload.model)
            model = self.kept_blobs.get(blob)
            if model is None or unload.cause in ("restart", "crashed"):
                continue
            at = _t(unload.time)
            repeat = at - last_loss.get(blob, -1e18) < REPEAT_S
            last_loss[blob] = at
            back = self._back(blob, at)
            until = back if back is not None else self.o.ended
            if self._excused(at, until, model) or self._held(model, at, until):
                continue
            if unload.cause == "expired" and who(unload.caller) == "keeper":
                self.flag(3, f"{model}'s lease, set by the keeper, lapsed", at)
            if repeat:
                continue
            lag = self._lag(at, until)
            bound = POLL_S + MARGIN_S + 2 * lag
            if back is None and self.o.ended - at < bound + 1.0:
                continue  # too close to the end to judge
            reaction = until - at - self._busy_loading(at, until)
            if reaction > bound:
                by = who(unload.caller) if unload.caller else "nobody"
                came = f"asked for again after {reaction:.2f}s" if back else "never asked for again"
                self.flag(
                    3,
                    f"{model} lost ({unload.cause} by {by}), {came} "
                    f"(bound {bound:.2f}s: a poll + {MARGIN_S}s + 2 x lag {lag:.2f}s)",
                    at,
                )

    def _back(self, blob: str, at: float) -> float | None:
        """When the model was asked for again after ``at``: a load by anyone, or our call."""
        starts = [_t(ld.started) for ld in self.o.loads if self.blob(ld.model) == blob]
        starts += [
            _t(w.started)
            for w in self.o.records.waits
            if self.blob(w.model) == blob and who(w.caller) == "keeper"
        ]
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

    # -- invariant 5 --------------------------------------------------------------------------

    def flat(self) -> None:
        o = self.o
        if o.schedule.duration_s < LONG_RUN_S or len(o.resources) < 2:
            return
        (_, rss0, fd0, tasks0), (t1, rss1, fd1, tasks1) = o.resources[0], o.resources[-1]
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
    checker.health()
    checker.flat()
    violations = tuple(sorted(checker.violations, key=lambda v: (v.at, v.invariant)))
    return Verdict(violations, len(outcome.clients), len(checker.harmed))
