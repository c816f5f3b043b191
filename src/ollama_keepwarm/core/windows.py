"""Calendar windows: when a model is kept, and from when it must be warmed, as pure code.

A model's ``when = ["mon-fri 08:00-19:00", "sat 10:00-14:00"]`` is parsed into weekly intervals
(minutes since Monday 00:00, local time), merged where they overlap or touch. Every boundary is
an APScheduler 3 :class:`CronTrigger` in the configured zone, so the daemon's jobs and this
module's verdicts are computed by the same code; only its daylight-saving edge cases are
normalised here to what Vixie cron does (APScheduler 3.11 fires a time in the skipped hour an
hour late, and a time in the repeated hour twice):

* a boundary in the hour a spring change skips takes effect at the change itself (the first
  instant the clock reads that time or later);
* a boundary in the hour an autumn change repeats takes effect once, on the first pass.

"Inside" is then "the next boundary is a closing", which holds across DST by construction.
Everything is a function of (windows, zone, lead, now): no clock is read here.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo

from apscheduler.triggers.cron import CronTrigger

__all__ = [
    "DAYS",
    "WEEK_MINUTES",
    "Boundary",
    "Interval",
    "WindowError",
    "WindowVerdict",
    "derived_lead_s",
    "evaluate",
    "lead_minutes",
    "merge",
    "next_fire",
    "parse_window",
    "parse_windows",
    "triggers",
]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DAY_MINUTES = 24 * 60
WEEK_MINUTES = 7 * DAY_MINUTES
LEAD_MARGIN_S = 30.0
"""Derived leads add this to the loads that must come first: a poll, a slow /api/show."""
LEAD_LOAD_FACTOR = 1.25
"""...and a quarter of those loads: a load is rarely faster than the last one measured."""
UNMEASURED_LOAD_S = 60.0
"""The load time assumed for a model never loaded yet (a 70B model takes about 45 s)."""
MAX_LEAD_S = 24 * 3600.0
"""A lead is at most a day: longer is a window that starts earlier."""

_WINDOW = re.compile(r"^\s*(?:(?P<days>[a-z,\-\s]+?)\s+)?(?P<start>\S+)\s*-\s*(?P<end>\S+)\s*$")
_TIME = re.compile(r"^(?P<h>\d{1,2}):(?P<m>\d{2})$")


class WindowError(ValueError):
    """A window that does not parse; ``str()`` says what is wrong with the text."""


@dataclass(frozen=True, slots=True, order=True)
class Interval:
    """One weekly span of local time: ``start`` minutes after Monday 00:00, ``length`` long."""

    start: int
    length: int

    @property
    def end(self) -> int:
        """The closing, as minutes after Monday 00:00 (wrapped into the week)."""
        return (self.start + self.length) % WEEK_MINUTES


@dataclass(frozen=True, slots=True)
class Boundary:
    """A cron job's meaning: ``kind`` is open, close or warm (an opening minus the lead)."""

    kind: str
    interval: Interval
    trigger: CronTrigger


@dataclass(frozen=True, slots=True)
class WindowVerdict:
    """Whether a windowed model is kept at ``now``, and what to show about it.

    ``kept`` is true inside a window and in the lead before one (warming early); ``inside``
    only within. ``until`` is the current window's closing; ``opens`` the next opening.
    """

    kept: bool
    inside: bool
    until: datetime | None
    opens: datetime | None
    warm_from: datetime | None
    note: str


# -- parsing ----------------------------------------------------------------------------------


def _day(text: str) -> int:
    name = text.strip()[:3]
    if text.strip() not in {name, _long_day(name)} or name not in DAYS:
        raise WindowError(f"unknown day {text.strip()!r} (use mon, tue, wed, thu, fri, sat, sun)")
    return DAYS.index(name)


def _long_day(short: str) -> str:
    return {
        "mon": "monday",
        "tue": "tuesday",
        "wed": "wednesday",
        "thu": "thursday",
        "fri": "friday",
        "sat": "saturday",
        "sun": "sunday",
    }.get(short, "")


def _days(text: str | None) -> list[int]:
    if text is None or text.strip() in {"daily", "every day", "*"}:
        return list(range(7))
    days: list[int] = []
    for part in text.split(","):
        if "-" in part:
            first, _, last = part.partition("-")
            a, b = _day(first), _day(last)
            days.extend((a + i) % 7 for i in range((b - a) % 7 + 1))  # fri-mon wraps
        else:
            days.append(_day(part))
    return sorted(set(days))


def _minute(text: str, *, end: bool) -> int:
    match = _TIME.match(text)
    if not match:
        raise WindowError(f"{text!r} is not a time such as 08:00")
    hours, minutes = int(match["h"]), int(match["m"])
    if (hours, minutes) == (24, 0) and end:
        return DAY_MINUTES
    if hours > 23 or minutes > 59:
        raise WindowError(f"{text!r} is not a time of day (00:00 to 23:59, or 24:00 as an end)")
    return hours * 60 + minutes


def parse_window(text: str) -> list[Interval]:
    """Parse ``"mon-fri 08:00-19:00"`` into one interval per day.

    Days are optional (every day), may be lists and ranges (``mon,wed``, ``fri-mon``); an end
    at or before the start runs past midnight (``22:00-06:00``); ``00:00-24:00`` is all day.
    """
    match = _WINDOW.match(text.lower())
    if not match:
        raise WindowError('expected "[days] HH:MM-HH:MM", e.g. "mon-fri 08:00-19:00"')
    start, end = _minute(match["start"], end=False), _minute(match["end"], end=True)
    length = (end - start) % DAY_MINUTES or DAY_MINUTES
    return [Interval(day * DAY_MINUTES + start, length) for day in _days(match["days"])]


def merge(intervals: Sequence[Interval]) -> tuple[Interval, ...]:
    """Merge overlapping or touching intervals on the weekly circle.

    A union that covers the whole week is one interval of a week's length: always kept.
    """
    if not intervals:
        return ()
    spans = sorted((i.start, i.start + i.length) for i in intervals)
    merged: list[list[int]] = []
    for start, end in spans:
        if merged and start <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], end)
        else:
            merged.append([start, end])
    # The circle: a span past Sunday midnight may reach into the first ones.
    while len(merged) > 1 and merged[-1][1] - WEEK_MINUTES >= merged[0][0]:
        first = merged.pop(0)
        merged[-1][1] = max(merged[-1][1], first[1] + WEEK_MINUTES)
    if merged[-1][1] - merged[0][0] >= WEEK_MINUTES and len(merged) == 1:
        return (Interval(0, WEEK_MINUTES),)
    return tuple(
        Interval(start % WEEK_MINUTES, min(end - start, WEEK_MINUTES)) for start, end in merged
    )


def parse_windows(texts: Sequence[str]) -> tuple[Interval, ...]:
    """Parse and merge a model's ``when`` list (already checked to be strings)."""
    return merge([i for text in texts for i in parse_window(text)])


# -- triggers ---------------------------------------------------------------------------------


def _cron(minute_of_week: int, zone: tzinfo) -> CronTrigger:
    day, rest = divmod(minute_of_week % WEEK_MINUTES, DAY_MINUTES)
    return CronTrigger(
        day_of_week=DAYS[day], hour=rest // 60, minute=rest % 60, second=0, timezone=zone
    )


def triggers(
    intervals: Sequence[Interval], zone: tzinfo, lead_min: int = 0
) -> tuple[Boundary, ...]:
    """The cron jobs of a model's windows: each opening, each closing, each warm-up start."""
    found: list[Boundary] = []
    for interval in intervals:
        if interval.length >= WEEK_MINUTES:
            continue  # always kept: nothing ever happens
        found.append(Boundary("open", interval, _cron(interval.start, zone)))
        found.append(Boundary("close", interval, _cron(interval.end, zone)))
        if lead_min:
            found.append(Boundary("warm", interval, _cron(interval.start - lead_min, zone)))
    return tuple(found)


def _gap_end(naive: datetime, zone: tzinfo) -> datetime:
    """The first instant the clock reads ``naive`` or later, for a time in a skipped hour.

    Zones change offsets on whole seconds, so a search over whole seconds finds it exactly.
    """
    lo = math.floor(naive.replace(tzinfo=zone, fold=1).timestamp())  # before the change
    hi = math.ceil(naive.replace(tzinfo=zone, fold=0).timestamp())  # after it
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).replace(tzinfo=None) >= naive:
            hi = mid
        else:
            lo = mid
    return datetime.fromtimestamp(hi, zone)


def next_fire(trigger: CronTrigger, after: datetime) -> datetime | None:
    """The trigger's next fire time strictly after ``after``, as Vixie cron would fire it."""
    zone = trigger.timezone
    # UTC arithmetic: adding to a local time in the repeated hour would drop its fold.
    probe = after.astimezone(UTC) + timedelta(microseconds=1)
    for _ in range(3):
        fire: datetime | None = trigger.get_next_fire_time(None, probe)
        if fire is None:
            return None
        naive = fire.replace(tzinfo=None)
        real = fire.astimezone(UTC).astimezone(zone)
        if real.replace(tzinfo=None) != naive:
            at = _gap_end(naive, zone)  # in a skipped hour: at the change
            if at > after:
                return at
        elif real.fold == 1 and naive.replace(tzinfo=zone, fold=0).utcoffset() != real.utcoffset():
            pass  # the repeated hour's second pass: fired already on the first
        else:
            return real
        probe = fire.astimezone(UTC) + timedelta(seconds=1)
    return None


# -- verdicts ---------------------------------------------------------------------------------


def lead_minutes(lead_s: float) -> int:
    """Leads are whole minutes (cron jobs are), rounded up: early, never late."""
    return max(1, math.ceil(min(lead_s, MAX_LEAD_S) / 60))


def derived_lead_s(own_load_s: float | None, before_s: Sequence[float | None] = ()) -> float:
    """The default lead: this model's load plus those queued before it, with a margin.

    ``before_s`` are the load times of the higher-ranked models of the same host that open at
    the same time: loads are serialised in rank order, so this one starts after them.
    """
    loads = [UNMEASURED_LOAD_S if s is None else s for s in (own_load_s, *before_s)]
    return LEAD_MARGIN_S + LEAD_LOAD_FACTOR * sum(loads)


def _at(when: datetime, now: datetime) -> str:
    """``19:00`` today, ``Mon 08:00`` within a week, else the date."""
    local = when
    if local.date() == now.astimezone(when.tzinfo).date():
        return f"{local:%H:%M}"
    if when - now < timedelta(days=6):
        return f"{local:%a %H:%M}"
    return f"{local:%a %Y-%m-%d %H:%M}"


def evaluate(
    intervals: Sequence[Interval], zone: tzinfo, lead_min: int, now: datetime
) -> WindowVerdict:
    """Is the model kept at ``now``, until when, and when does its next window open?

    Inside means the next boundary is a closing (on a tie, as when a spring change skips a
    closing and the next opening alike, the window that was open is still open until then);
    warming means outside, with
    the warm-up start of the next opening already past (its next fire comes after the opening).
    """
    if not intervals:
        return WindowVerdict(False, False, None, None, None, "never kept (when = [])")
    if any(i.length >= WEEK_MINUTES for i in intervals):
        return WindowVerdict(True, True, None, None, None, "kept all week")
    now = now.astimezone(zone)
    opens: list[tuple[datetime, Interval]] = []
    closes: list[datetime] = []
    for interval in intervals:
        opening = next_fire(_cron(interval.start, zone), now)
        closing = next_fire(_cron(interval.end, zone), now)
        if opening is not None:
            opens.append((opening, interval))
        if closing is not None:
            closes.append(closing)
    first_open = min(opens, key=lambda pair: pair[0], default=None)
    first_close = min(closes, default=None)
    if first_close is not None and (first_open is None or first_close <= first_open[0]):
        return WindowVerdict(
            True, True, first_close, None, None, f"kept until {_at(first_close, now)}"
        )
    if first_open is None:
        return WindowVerdict(False, False, None, None, None, "no window ahead")
    opening, interval = first_open
    warm = next_fire(_cron(interval.start - lead_min, zone), now)
    warm_from = (opening.astimezone(UTC) - timedelta(minutes=lead_min)).astimezone(zone)
    warming = warm is None or warm > opening
    note = f"{'warming for' if warming else 'next'} window {_at(opening, now)}"
    return WindowVerdict(warming, False, None, opening, warm_from, note)
