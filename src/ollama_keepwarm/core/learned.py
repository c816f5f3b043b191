"""Learned hours: when clients use a model, as a weekly profile, and the hours kept from it.

A model with ``when = "learned"`` is kept in the hours its clients use it. Each use the keeper
sees (``core/usage.py``) marks its 15-minute slot of the week (local time in the configured
zone, so 08:30 is 08:30 in summer and in winter): 96 slots a day, 7 days. A slot counts once per
week however many uses fall in it, and each week's mark weighs ``DECAY`` times the next one's,
so recent weeks count most. A slot's *share* is its decayed marks over the decayed weeks the
keeper has watched that slot: 1.0 is "used in every watched week", 0.3 "in about a third".

The kept hours are the slots whose share (half their own, half the same time on the days of
their kind: weekdays, weekend) reaches ``learn_threshold`` (a number, or a named level), and
the slots used this week; widened by ``NEIGHBOURS`` slots on each side to absorb drift (a
meeting that starts ten minutes late), with gaps of up to an hour between them kept too; the
lead a load needs is added by the calendar, as for written windows. The verdict is a
:class:`~ollama_keepwarm.core.windows.WindowVerdict` from the same ``windows.evaluate``, so
``after_window`` and everything the plan does with windows applies.

Until ``LEARN_DAYS`` of data exist the model is kept always ("learning (3 days of data)"). A
use outside the kept hours pays one cold start and counts at once: a slot used this week is
kept, so the rest of that quarter-hour and the next are (the session it started stays warm);
in later weeks it counts by its share like any other.

Everything is a function of (profile, zone, threshold, now): no clock is read here, and the
profile's JSON form is built and read here too so it is tested as a table.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, tzinfo
from types import MappingProxyType
from typing import Any

from ollama_keepwarm.core import windows

__all__ = [
    "DECAY",
    "DEFAULT_THRESHOLD",
    "LEARN_DAYS",
    "LEVELS",
    "NEIGHBOURS",
    "SLOT_MINUTES",
    "WEEK_SLOTS",
    "LearnedHours",
    "Profile",
    "describe",
    "from_json",
    "hours",
    "judge",
    "kept_share",
    "parse_threshold",
    "record",
    "shares",
    "slot_of",
    "to_json",
    "verdict",
    "when_texts",
]

SLOT_MINUTES = 15
DAY_SLOTS = 24 * 60 // SLOT_MINUTES
WEEK_SLOTS = 7 * DAY_SLOTS
DECAY = 0.7
"""Each week back weighs this much of the one after it (a half-life of about two weeks)."""
LEARN_DAYS = 7.0
"""Days of data before the learned hours are used; until then the model is kept always."""
NEIGHBOURS = 1
"""Slots kept on each side of a kept slot: usage drifts by a quarter of an hour."""
MAX_GAP_SLOTS = 4
"""Gaps of up to an hour between kept slots are kept: a reload costs more than the hour saves
(a lunch break, a pause between two sessions)."""
DAY_KINDS = ((0, 1, 2, 3, 4), (5, 6))
"""Days whose same hours inform each other: weekdays, and the weekend."""
HORIZON_WEEKS = 60
"""Weeks older than this weigh under 1e-9: not summed."""
LEVELS: Mapping[str, float] = MappingProxyType({"generous": 0.1, "balanced": 0.25, "frugal": 0.5})
"""Named thresholds: keep slots used in a tenth, a quarter, or half of the recent weeks."""
DEFAULT_THRESHOLD = LEVELS["balanced"]
_EPOCH = date(2001, 1, 1)  # a Monday: week numbers count from it
_FORMAT = 1


@dataclass(frozen=True, slots=True)
class Profile:
    """One model's usage: when learning started, and each used slot's decayed marks.

    ``slots`` maps a slot of the week to ``(score, week)``: its decayed marks as of ``week``,
    the last week a use marked it. ``uses`` and ``cold_uses`` count every use seen (a cold use
    found the model unloaded: the client paid a load).
    """

    since: datetime
    slots: Mapping[int, tuple[float, int]] = field(default_factory=lambda: MappingProxyType({}))
    uses: int = 0
    cold_uses: int = 0
    last_use: datetime | None = None


@dataclass(frozen=True, slots=True)
class LearnedHours:
    """What the profile says now: still learning, or the kept intervals and how they read."""

    learning: bool
    days: float
    intervals: tuple[windows.Interval, ...]  # () while learning: kept always
    text: str  # "kept mon-fri 08:15-18:45, learned from 3 weeks" / "learning (3 days of data)"


def parse_threshold(value: object) -> float:
    """``learn_threshold``: a share in (0, 1], or one of the named levels.

    Raises:
        ValueError: anything else, with what would be accepted.
    """
    names = ", ".join(f"{k} ({v:g})" for k, v in LEVELS.items())
    if isinstance(value, str):
        text = value.strip().lower()
        if text in LEVELS:
            return LEVELS[text]
        try:
            value = float(text)
        except ValueError:
            raise ValueError(
                f"{value!r} is neither a number in (0, 1] nor one of {names}"
            ) from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"must be a number in (0, 1] or one of {names}")
    number = float(value)
    if not 0 < number <= 1 or math.isnan(number):
        raise ValueError(f"{number:g} is not in (0, 1]: it is the share of weeks a slot is used")
    return number


def slot_of(at: datetime, zone: tzinfo) -> tuple[int, int]:
    """The week number and the slot of the week of ``at``, in local time of ``zone``."""
    local = at.astimezone(zone)
    week = (local.date() - _EPOCH).days // 7
    slot = local.weekday() * DAY_SLOTS + (local.hour * 60 + local.minute) // SLOT_MINUTES
    return week, slot


def record(profile: Profile, at: datetime, zone: tzinfo, *, cold: bool) -> Profile:
    """Count one use at ``at``: its slot is marked once a week, the counters always.

    A clock stepped back to a week already marked marks nothing again (never twice a week).
    """
    week, slot = slot_of(at, zone)
    counted = replace(
        profile,
        uses=profile.uses + 1,
        cold_uses=profile.cold_uses + int(cold),
        last_use=at if profile.last_use is None else max(profile.last_use, at),
    )
    score, marked = profile.slots.get(slot, (0.0, week - 1))
    if week <= marked:
        return counted
    slots = dict(profile.slots)
    slots[slot] = (score * DECAY ** (week - marked) + 1.0, week)
    return replace(counted, slots=MappingProxyType(slots))


def _watched(since: tuple[int, int], now: tuple[int, int], slot: int) -> float:
    """The decayed weight of the weeks in which ``slot`` passed between ``since`` and ``now``."""
    first = since[0] if slot >= since[1] else since[0] + 1
    last = now[0] if slot <= now[1] else now[0] - 1
    first = max(first, now[0] - HORIZON_WEEKS)
    if last < first:
        return 0.0
    # A geometric sum: DECAY^(now-last) + ... + DECAY^(now-first).
    return DECAY ** (now[0] - last) * (1 - DECAY ** (last - first + 1)) / (1 - DECAY)


def _own_shares(profile: Profile, zone: tzinfo, now: datetime) -> list[float]:
    """Each slot's share of the watched weeks in which it was used, decayed, in [0, 1]."""
    here = slot_of(now, zone)
    start = slot_of(profile.since, zone)
    result = [0.0] * WEEK_SLOTS
    for slot, (score, week) in profile.slots.items():
        decayed = score * DECAY ** max(0, here[0] - week)
        watched = _watched(start, here, slot)
        result[slot] = min(1.0, decayed / watched) if watched > 0 else min(1.0, decayed)
    return result


def shares(profile: Profile, zone: tzinfo, now: datetime) -> list[float]:
    """Each slot's share, as the threshold is held to it: half its own, half the mean of the
    same time on the days of its kind (``DAY_KINDS``: weekdays, the weekend).

    One weekday's own history is thin (a holiday, a day a hobbyist skipped); the same hour on
    the other weekdays says more. The own half keeps a habit of one day (Friday's late batch)
    and the pooled half lets a one-off use fade faster.
    """
    own = _own_shares(profile, zone, now)
    result = [0.0] * WEEK_SLOTS
    for kind in DAY_KINDS:
        for minute in range(DAY_SLOTS):
            pooled = sum(own[day * DAY_SLOTS + minute] for day in kind) / len(kind)
            for day in kind:
                slot = day * DAY_SLOTS + minute
                result[slot] = (own[slot] + pooled) / 2
    return result


def _kept_slots(profile: Profile, zone: tzinfo, now: datetime, threshold: float) -> set[int]:
    """Slots at the threshold, or used this week (a use counts at once), with neighbours;
    then gaps of at most ``MAX_GAP_SLOTS`` between kept slots (not worth a reload) are kept."""
    week = slot_of(now, zone)[0]
    used = {s for s, share in enumerate(shares(profile, zone, now)) if share >= threshold - 1e-9}
    used |= {s for s, (_score, marked) in profile.slots.items() if marked == week}
    kept = {(s + d) % WEEK_SLOTS for s in used for d in range(-NEIGHBOURS, NEIGHBOURS + 1)}
    if not kept or len(kept) == WEEK_SLOTS:
        return kept
    ordered = sorted(kept)
    for before, after in zip(ordered, [*ordered[1:], ordered[0] + WEEK_SLOTS], strict=True):
        if 1 < after - before <= MAX_GAP_SLOTS + 1:
            kept.update(s % WEEK_SLOTS for s in range(before + 1, after))
    return kept


def _weeks(days: float) -> str:
    weeks = int(days // 7)
    return f"{weeks} week{'s' * (weeks != 1)}" if weeks else f"{int(days)} days"


def hours(profile: Profile, zone: tzinfo, now: datetime, threshold: float) -> LearnedHours:
    """The learned hours at ``now``: learning (kept always) or the kept intervals."""
    days = max(0.0, (now - profile.since).total_seconds() / 86400)
    if days < LEARN_DAYS:
        whole = int(days)
        return LearnedHours(True, days, (), f"learning ({whole} day{'s' * (whole != 1)} of data)")
    slots = _kept_slots(profile, zone, now, threshold)
    intervals = windows.merge(
        [windows.Interval(s * SLOT_MINUTES, SLOT_MINUTES) for s in sorted(slots)]
    )
    if not intervals:
        text = f"not kept: no use seen often enough in {_weeks(days)}"
    else:
        text = f"kept {describe(intervals)}, learned from {_weeks(days)}"
    return LearnedHours(False, days, intervals, text)


def verdict(
    profile: Profile, zone: tzinfo, lead_min: int, now: datetime, threshold: float
) -> windows.WindowVerdict:
    """Kept at ``now``? The windows' verdict over the learned hours, noted as learned."""
    return judge(hours(profile, zone, now, threshold), zone, lead_min, now)


def judge(
    learned: LearnedHours, zone: tzinfo, lead_min: int, now: datetime
) -> windows.WindowVerdict:
    """:func:`verdict` from hours already derived (the daemon caches them per slot)."""
    if learned.learning:
        return windows.WindowVerdict(True, True, None, None, None, learned.text)
    if not learned.intervals:
        return windows.WindowVerdict(False, False, None, None, None, learned.text)
    found = windows.evaluate(learned.intervals, zone, lead_min, now)
    return replace(found, note=f"{found.note} ({learned.text})")


def kept_share(learned: LearnedHours) -> float:
    """The share of the week the model is kept (1.0 while learning)."""
    if learned.learning:
        return 1.0
    return min(1.0, sum(i.length for i in learned.intervals) / windows.WEEK_MINUTES)


# -- as text ----------------------------------------------------------------------------------


def _clock(minute: int) -> str:
    return f"{minute // 60:02d}:{minute % 60:02d}"


def _day_list(days: Sequence[int]) -> str:
    runs: list[list[int]] = []
    for day in sorted(days):
        if runs and day == runs[-1][-1] + 1:
            runs[-1].append(day)
        else:
            runs.append([day])
    parts = []
    for run in runs:
        first, last = windows.DAYS[run[0]], windows.DAYS[run[-1]]
        parts.append(
            first if len(run) == 1 else f"{first}-{last}" if len(run) > 2 else f"{first},{last}"
        )
    return ",".join(parts)


def when_texts(intervals: Sequence[windows.Interval]) -> list[str]:
    """The intervals as ``when`` windows (``"mon-fri 08:15-18:45"``), cut at midnights.

    Each text parses back with ``windows.parse_window``; together they merge to ``intervals``.
    Days that share a span share a text, in the order of the week.
    """
    if any(i.length >= windows.WEEK_MINUTES for i in intervals):
        return ["mon-sun 00:00-24:00"]
    pieces: dict[tuple[int, int], list[int]] = {}
    for interval in intervals:
        start, end = interval.start, interval.start + interval.length
        while start < end:
            day = start // windows.DAY_MINUTES
            stop = min(end, (day + 1) * windows.DAY_MINUTES)
            begin = start - day * windows.DAY_MINUTES
            pieces.setdefault((begin, stop - day * windows.DAY_MINUTES), []).append(day % 7)
            start = stop
    ordered = sorted(pieces.items(), key=lambda item: (min(item[1]), item[0]))
    return [f"{_day_list(days)} {_clock(a)}-{_clock(b)}" for (a, b), days in ordered]


def describe(intervals: Sequence[windows.Interval]) -> str:
    """The kept hours in one line: ``"mon-fri 08:15-18:45, sat 10:00-12:00"``."""
    if any(i.length >= windows.WEEK_MINUTES for i in intervals):
        return "all week"
    return ", ".join(when_texts(intervals))


# -- the file's form --------------------------------------------------------------------------


def to_json(profile: Profile) -> dict[str, Any]:
    """The profile as JSON data (what ``daemon/learned.py`` writes)."""
    return {
        "format": _FORMAT,
        "since": profile.since.isoformat(),
        "uses": profile.uses,
        "cold_uses": profile.cold_uses,
        "last_use": profile.last_use.isoformat() if profile.last_use else None,
        "slots": {
            str(s): [round(score, 6), week] for s, (score, week) in sorted(profile.slots.items())
        },
    }


def from_json(raw: Any) -> Profile:
    """Read :func:`to_json`'s form back.

    Raises:
        ValueError: a document that is not a profile (wrong types, slots out of the week,
            a naive time): the caller sets the file aside.
    """
    if not isinstance(raw, dict) or raw.get("format") != _FORMAT:
        raise ValueError("not a learned-hours profile (format 1)")
    since = datetime.fromisoformat(str(raw["since"]))
    last = raw.get("last_use")
    last_use = datetime.fromisoformat(str(last)) if last else None
    for moment in (since, last_use):
        if moment is not None and moment.tzinfo is None:
            raise ValueError("times must carry their offset")
    slots: dict[int, tuple[float, int]] = {}
    for key, value in dict(raw.get("slots", {})).items():
        slot = int(key)
        score, week = value
        if not 0 <= slot < WEEK_SLOTS or not math.isfinite(float(score)) or float(score) < 0:
            raise ValueError(f"slot {key!r}: {value!r} is not a slot of the week and a score")
        slots[slot] = (float(score), int(week))
    uses, cold = int(raw.get("uses", 0)), int(raw.get("cold_uses", 0))
    return Profile(since, MappingProxyType(slots), uses, cold, last_use)
