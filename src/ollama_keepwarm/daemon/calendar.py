"""The calendar: APScheduler cron jobs at every window's opening, closing and warm-up start.

The verdict itself ("kept now?") is pure (``core/windows.py``) and asked at every look, so a
missed job (a suspend, a wall-clock step) costs at most one poll. The jobs make the boundary
exact: at a warm-up start, an opening or a closing the keeper looks at once instead of at
the next poll. They are wall-clock jobs on purpose: a window is wall time, and a monotonic
timer set on Friday for Monday 08:00 would fire late after a weekend's suspend.

Leads are derived per model from the last measured cold load of it and of the higher-ranked
models of its host that open at the same time (loads are serialised in rank order), unless
``lead`` is configured; a new measurement that changes the whole minutes reschedules.

Learned hours (``when = "learned"``, ``core/learned.py``) are windows the keeper writes itself:
their intervals come from the profile (``daemon/learned.py``), get the same leads, jobs and
verdicts, and are rescheduled when a use changes them. While learning there are none: the
model is kept always.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import structlog
import tzlocal

from ollama_keepwarm.core import learned, windows
from ollama_keepwarm.core.config import Config, ModelConfig
from ollama_keepwarm.core.plan import ranked
from ollama_keepwarm.daemon.learned import LearnedStore, profile_key

__all__ = ["Calendar", "Job"]

_log = structlog.get_logger("ollama_keepwarm")

LoadTime = Callable[[ModelConfig], float | None]


@dataclass(frozen=True, slots=True)
class Job:
    """One scheduled boundary of one model (what the scheduler runs, and what tests walk)."""

    model: ModelConfig
    boundary: windows.Boundary


class Calendar:
    """Owns the windowed models' cron jobs and answers "is this model kept now?"."""

    def __init__(
        self,
        now: Callable[[], datetime],
        on_boundary: Callable[[], None],
        learned_store: LearnedStore | None = None,
    ) -> None:
        self._now = now
        self.learned = learned_store
        self._scheduled: dict[str, tuple[windows.Interval, ...]] = {}
        self._on_boundary = on_boundary
        self._scheduler: Any = None
        self._leads: dict[tuple[str, str], int] = {}
        self._models: tuple[ModelConfig, ...] = ()
        self._load_time: LoadTime = lambda _m: None
        self.zone: tzinfo = ZoneInfo("UTC")
        self.jobs: list[Job] = []

    def start(self, scheduler: Any) -> None:
        """Schedule on ``scheduler`` (an APScheduler 3 scheduler, started by the keeper)."""
        self._scheduler = scheduler
        self._reschedule()

    def configure(self, config: Config, load_time: LoadTime) -> None:
        """Adopt a (re)loaded config: the zone, the windows, the leads; warn about `when = []`."""
        name = config.daemon.timezone
        self.zone = ZoneInfo(name) if name else tzlocal.get_localzone()
        self._models = tuple(m for m in config.models if m.when is not None or m.learned)
        self._load_time = load_time
        if self.learned is not None:
            self.learned.adopt(self._models, self._now())
        for model in self._models:
            if not model.when and not model.learned:
                _log.warning(
                    "model_never_kept",
                    model=model.name,
                    hint="its `when` is an empty list: it is never kept; remove the model or "
                    "give it a window",
                )
        self._leads = self._compute_leads()
        self._reschedule()

    def note_load(self, model: ModelConfig, seconds: float) -> None:
        """A cold load was measured: reschedule when the lead's whole minutes change."""
        del model, seconds  # read back through load_time, which the keeper has just updated
        leads = self._compute_leads()
        if leads != self._leads:
            self._leads = leads
            self._reschedule()

    def lead_min(self, model: ModelConfig) -> int:
        """The whole minutes before an opening at which ``model``'s warm-up starts."""
        return self._leads.get((model.host, model.key), 1)

    def verdict(self, model: ModelConfig) -> windows.WindowVerdict | None:
        """Kept now? None for a model without `when` (always kept)."""
        if model.learned:
            hours = self.learned_hours(model)
            if hours.intervals != self._scheduled.get(profile_key(model), ()):
                self._leads = self._compute_leads()
                self._reschedule()
            return learned.judge(hours, self.zone, self.lead_min(model), self._now())
        if model.when is None:
            return None
        return windows.evaluate(model.when, self.zone, self.lead_min(model), self._now())

    def learned_hours(self, model: ModelConfig) -> learned.LearnedHours:
        """A learned model's hours now (learning, without a store: tests of other parts)."""
        if self.learned is None:
            return learned.hours(learned.Profile(since=self._now()), self.zone, self._now(), 1.0)
        return self.learned.hours(model, self.zone, self._now())

    def learned_entry(self, model: ModelConfig) -> dict[str, Any] | None:
        """What status and /metrics show of a learned model (None: not learned)."""
        if not model.learned or self.learned is None:
            return None
        return self.learned.entry(model, self.zone, self._now())

    def note_use(self, host: str, name: str, *, cold: bool) -> None:
        """Someone else used ``name`` on ``host`` (``core/usage.py``): count it, if learned.

        It is placed by this calendar's clock: wall time, as the windows are.
        """
        if self.learned is None:
            return
        for model in self._models:
            if model.learned and model.host == host and model.name == name:
                self.learned.record(model, self._now(), self.zone, cold=cold)

    def _intervals(self, model: ModelConfig) -> tuple[windows.Interval, ...]:
        if model.learned:
            return self.learned_hours(model).intervals
        return model.when or ()

    def fire(self) -> None:
        """What every job runs: look at once (the verdict is asked again there)."""
        self._on_boundary()

    async def _job(self) -> None:
        """:meth:`fire` as the scheduler runs it: a coroutine function, so on the event loop
        (APScheduler 3 hands a plain function to a worker thread, where no loop runs)."""
        self.fire()

    def _compute_leads(self) -> dict[tuple[str, str], int]:
        leads: dict[tuple[str, str], int] = {}
        order = ranked(self._models)
        for i, model in enumerate(order):
            if model.lead_s is not None:
                seconds = model.lead_s
            else:
                seconds = max(
                    (
                        windows.derived_lead_s(
                            self._load_time(model), self._queued_before(order[:i], model, start)
                        )
                        for start in {iv.start for iv in self._intervals(model)}
                    ),
                    default=windows.derived_lead_s(self._load_time(model)),
                )
            leads[(model.host, model.key)] = windows.lead_minutes(seconds)
        return leads

    def _reschedule(self) -> None:
        intervals = {profile_key(m): self._intervals(m) for m in self._models}
        self._scheduled = {k: v for k, v in intervals.items() if v}
        self.jobs = [
            Job(model, boundary)
            for model in self._models
            for boundary in windows.triggers(
                intervals[profile_key(model)], self.zone, self.lead_min(model)
            )
        ]
        if self._scheduler is None:
            return
        for job in self._scheduler.get_jobs():
            if job.id.startswith("window "):
                job.remove()
        for i, job in enumerate(self.jobs):
            self._scheduler.add_job(
                self._job,
                job.boundary.trigger,
                id=f"window {i} {job.boundary.kind} {job.model.name}",
                coalesce=True,
                misfire_grace_time=None,  # late (after a suspend) is better than never
            )
        _log.debug("calendar_scheduled", jobs=len(self.jobs), zone=str(self.zone))

    def _queued_before(
        self, higher: Sequence[ModelConfig], model: ModelConfig, start: int
    ) -> list[float | None]:
        """The load times of the higher-ranked models of ``model``'s host opening at ``start``."""
        return [
            self._load_time(other)
            for other in higher
            if other.host == model.host and any(iv.start == start for iv in self._intervals(other))
        ]
