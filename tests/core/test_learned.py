"""Learned hours as tables with an explicit ``now``: slots, decay, threshold, DST, the file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import MappingProxyType
from zoneinfo import ZoneInfo

import pytest

from ollama_keepwarm.core import learned, windows
from ollama_keepwarm.core.config import ConfigError, parse_config
from ollama_keepwarm.core.envconfig import parse_models
from ollama_keepwarm.core.learned import Profile, hours, record, slot_of, verdict
from ollama_keepwarm.core.windows import Interval

BERLIN = ZoneInfo("Europe/Berlin")
# Monday 2026-03-02: four weeks later (2026-03-29) Berlin moves its clocks forward.
MONDAY = datetime(2026, 3, 2, tzinfo=BERLIN)


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


def workweeks(weeks: int, start: datetime = MONDAY, zone: ZoneInfo = BERLIN) -> Profile:
    """A team that uses the model mon-fri at 09:00, 12:00 and 17:00 local, ``weeks`` weeks."""
    profile = Profile(since=start)
    for week in range(weeks):
        for day in range(5):
            base = (start + timedelta(days=7 * week + day)).replace(tzinfo=None)
            for hour in (9, 12, 17):
                profile = record(
                    profile, base.replace(hour=hour).replace(tzinfo=zone), zone, cold=False
                )
    return profile


@pytest.mark.parametrize(
    ("moment", "slot"),
    [
        (at(2026, 3, 2, 0, 0), 0),
        (at(2026, 3, 2, 0, 14), 0),
        (at(2026, 3, 2, 0, 15), 1),
        (at(2026, 3, 2, 8, 30), 34),
        (at(2026, 3, 8, 23, 59), learned.WEEK_SLOTS - 1),
        # DST: 08:30 local is the same slot in winter and in summer.
        (at(2026, 3, 30, 8, 30), 34),
        # A UTC instant is placed by its local time in the zone.
        (datetime(2026, 3, 2, 7, 30, tzinfo=UTC), 34),
    ],
)
def test_slot_of(moment: datetime, slot: int) -> None:
    assert slot_of(moment, BERLIN)[1] == slot


def test_a_slot_is_marked_once_a_week_and_decays() -> None:
    p = Profile(since=MONDAY)
    p = record(p, at(2026, 3, 2, 9, 1), BERLIN, cold=True)
    p = record(p, at(2026, 3, 2, 9, 14), BERLIN, cold=False)  # same slot, same week
    assert p.uses == 2
    assert p.cold_uses == 1
    week = slot_of(MONDAY, BERLIN)[0]
    assert p.slots[36] == (1.0, week)
    p = record(p, at(2026, 3, 16, 9, 5), BERLIN, cold=False)  # two weeks later
    assert p.slots[36] == pytest.approx((1.0 * learned.DECAY**2 + 1.0, week + 2))


def test_a_clock_stepped_back_never_marks_a_week_twice() -> None:
    p = record(Profile(since=MONDAY), at(2026, 3, 9, 9, 0), BERLIN, cold=False)
    stepped = record(p, at(2026, 3, 2, 9, 0), BERLIN, cold=False)
    assert stepped.slots == p.slots
    assert stepped.uses == 2


@pytest.mark.parametrize(
    ("now", "learning", "text"),
    [
        (MONDAY, True, "learning (0 days of data)"),
        (at(2026, 3, 3, 0, 0), True, "learning (1 day of data)"),
        (at(2026, 3, 5, 12, 0), True, "learning (3 days of data)"),
        (at(2026, 3, 9, 0, 0), False, "kept mon-fri 08:45-09:30, mon-fri 11:45-12:30, "),
    ],
)
def test_learning_for_a_week(now: datetime, learning: bool, text: str) -> None:
    result = hours(workweeks(1), BERLIN, now, learned.DEFAULT_THRESHOLD)
    assert result.learning is learning
    assert result.text.startswith(text)


def test_hours_of_a_workweek_with_neighbours() -> None:
    result = hours(workweeks(3), BERLIN, at(2026, 3, 23, 0, 0), 0.25)
    assert not result.learning
    assert learned.when_texts(result.intervals) == [
        "mon-fri 08:45-09:30",
        "mon-fri 11:45-12:30",
        "mon-fri 16:45-17:30",
    ]
    assert result.text.endswith("learned from 3 weeks")
    assert learned.kept_share(result) == pytest.approx(15 * 45 / windows.WEEK_MINUTES)


@pytest.mark.parametrize(
    ("threshold", "kept_friday"),
    [
        # Friday 17:00 used only in the first of four weeks: its own share is
        # 0.7^3 / (1+.7+.49+.343); the other weekdays' 17:00 never: pooled, a fifth of that.
        (0.05, True),
        (0.1, False),
    ],
)
def test_threshold_decay_and_pooling(threshold: float, kept_friday: bool) -> None:
    p = Profile(since=MONDAY)
    for week in range(4):
        p = record(p, at(2026, 3, 2 + 7 * week, 9, 0), BERLIN, cold=False)
    p = record(p, at(2026, 3, 6, 17, 0), BERLIN, cold=False)
    own = 0.7**3 / (1 + 0.7 + 0.49 + 0.343)
    shares = learned.shares(p, BERLIN, at(2026, 3, 29, 23, 0))
    assert shares[4 * 96 + 68] == pytest.approx((own + own / 5) / 2)
    assert shares[0 * 96 + 68] == pytest.approx(own / 5 / 2)  # Monday 17:00: pooled only
    assert shares[5 * 96 + 68] == 0  # Saturday: another kind of day
    v = verdict(p, BERLIN, 1, at(2026, 3, 27, 17, 5), threshold)  # the 4th friday
    assert v.kept is kept_friday


def test_gaps_up_to_an_hour_are_kept() -> None:
    p = Profile(since=MONDAY)
    for week in range(2):
        for day in range(5):
            for hour, minute in ((9, 0), (10, 30), (13, 0)):
                moment = at(2026, 3, 2 + 7 * week + day, hour, minute)
                p = record(p, moment, BERLIN, cold=False)
    result = hours(p, BERLIN, at(2026, 3, 16, 0, 0), 0.25)
    # 08:45-09:30 and 10:15-11:00 are 45 min apart: one span; 13:00's is 2 h away.
    assert learned.when_texts(result.intervals) == ["mon-fri 08:45-11:00", "mon-fri 12:45-13:30"]


def test_a_use_outside_the_hours_counts_at_once() -> None:
    """A cold use in a never-used slot keeps that slot and its neighbours from then on."""
    p = workweeks(3)
    late = at(2026, 3, 25, 22, 0)
    assert not verdict(p, BERLIN, 1, late, 0.25).kept
    p = record(p, late, BERLIN, cold=True)
    assert verdict(p, BERLIN, 1, late + timedelta(minutes=5), 0.25).kept
    assert verdict(p, BERLIN, 1, late + timedelta(minutes=20), 0.25).kept  # the neighbour


@pytest.mark.parametrize(
    ("now", "kept", "inside", "note"),
    [
        (at(2026, 3, 23, 9, 0), True, True, "kept until 09:30 (kept mon-fri"),
        (at(2026, 3, 23, 10, 0), False, False, "next window 11:45 (kept mon-fri"),
        (at(2026, 3, 23, 11, 42), True, False, "warming for window 11:45"),  # lead 5 min
        (at(2026, 3, 28, 10, 0), False, False, "next window Mon 08:45"),
        # After the spring change (2026-03-29): the same local hours.
        (at(2026, 3, 30, 9, 0), True, True, "kept until 09:30"),
        (at(2026, 3, 30, 8, 40), True, False, "warming for window 08:45"),
    ],
)
def test_verdict_is_a_window_verdict(now: datetime, kept: bool, inside: bool, note: str) -> None:
    v = verdict(workweeks(3), BERLIN, 5, now, 0.25)
    assert (v.kept, v.inside) == (kept, inside)
    assert v.note.startswith(note)


def test_never_used_is_never_kept_after_learning() -> None:
    v = verdict(Profile(since=MONDAY), BERLIN, 1, at(2026, 3, 20, 9, 0), 0.25)
    assert (v.kept, v.inside) == (False, False)
    assert v.note == "not kept: no use seen often enough in 2 weeks"


def test_a_clock_stepped_back_before_since_is_learning() -> None:
    v = verdict(workweeks(2), BERLIN, 1, at(2026, 2, 1, 3, 0), 0.25)
    assert v.kept
    assert v.note == "learning (0 days of data)"


@pytest.mark.parametrize(
    ("intervals", "texts"),
    [
        ([Interval(480, 60)], ["mon 08:00-09:00"]),
        ([Interval(d * 1440 + 480, 60) for d in (0, 1, 2)], ["mon-wed 08:00-09:00"]),
        ([Interval(d * 1440 + 480, 60) for d in (0, 1)], ["mon,tue 08:00-09:00"]),
        ([Interval(4 * 1440 + 1320, 240)], ["fri 22:00-24:00", "sat 00:00-02:00"]),
        ([Interval(6 * 1440 + 1380, 120)], ["mon 00:00-01:00", "sun 23:00-24:00"]),
        ([Interval(0, windows.WEEK_MINUTES)], ["mon-sun 00:00-24:00"]),
    ],
)
def test_when_texts_parse_back(intervals: list[Interval], texts: list[str]) -> None:
    assert learned.when_texts(intervals) == texts
    assert windows.parse_windows(texts) == windows.merge(intervals)


@pytest.mark.parametrize(
    ("value", "expected"),
    [("balanced", 0.25), ("Frugal", 0.5), ("generous", 0.1), (0.3, 0.3), ("0.4", 0.4), (1, 1.0)],
)
def test_parse_threshold(value: object, expected: float) -> None:
    assert learned.parse_threshold(value) == expected


@pytest.mark.parametrize("value", [0, -0.1, 1.5, "often", True, [0.2], float("nan")])
def test_parse_threshold_refuses(value: object) -> None:
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        learned.parse_threshold(value)


def test_json_round_trip() -> None:
    p = record(workweeks(2), at(2026, 3, 20, 22, 0), BERLIN, cold=True)
    assert learned.from_json(learned.to_json(p)) == p


@pytest.mark.parametrize(
    "raw",
    [
        [],
        {"format": 2, "since": MONDAY.isoformat()},
        {"format": 1},
        {"format": 1, "since": "2026-03-02T00:00:00"},  # naive
        {"format": 1, "since": MONDAY.isoformat(), "slots": {"672": [1.0, 3]}},
        {"format": 1, "since": MONDAY.isoformat(), "slots": {"3": [-1.0, 3]}},
        {"format": 1, "since": MONDAY.isoformat(), "slots": {"3": "x"}},
    ],
)
def test_from_json_refuses(raw: object) -> None:
    with pytest.raises((ValueError, KeyError, TypeError)):
        learned.from_json(raw)


# -- config -----------------------------------------------------------------------------------


def model(**keys: object) -> dict[str, object]:
    return {"models": [{"name": "llama3.2", **keys}]}


@pytest.mark.parametrize(
    ("keys", "is_learned", "threshold"),
    [
        ({"when": "learned"}, True, 0.25),
        ({"when": ["learned"], "learn_threshold": "frugal"}, True, 0.5),
        ({"when": "learned", "learn_threshold": 0.15, "after_window": "unload"}, True, 0.15),
        ({"when": "learned", "lead": "5m"}, True, 0.25),
        ({}, False, 0.25),
        ({"when": ["mon 08:00-09:00"]}, False, 0.25),
    ],
)
def test_config_learned(keys: dict[str, object], is_learned: bool, threshold: float) -> None:
    m = parse_config(model(**keys)).models[0]
    assert (m.learned, m.learn_threshold) == (is_learned, threshold)
    if is_learned:
        assert m.when is None


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"learn_threshold": 0.3}, 'has no effect without when = "learned"'),
        ({"when": ["learned", "mon 08:00-09:00"]}, "cannot be mixed"),
        ({"when": "learned", "learn_threshold": 2}, "not in (0, 1]"),
        ({"when": "learned", "learn_threshold": "often"}, "neither a number"),
    ],
)
def test_config_learned_refused(keys: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=r"learn_threshold|when") as caught:
        parse_config(model(**keys))
    assert message in str(caught.value)


def test_env_learned() -> None:
    tables = parse_models("llama3.2?when=learned&learn_threshold=frugal")
    assert [dict(t) for t in tables] == [
        {"name": "llama3.2", "when": ["learned"], "learn_threshold": "frugal"}
    ]
    m = parse_config({"models": [dict(t) for t in tables]}).models[0]
    assert m.learned
    assert m.learn_threshold == 0.5


def test_profile_slots_are_read_only() -> None:
    p = record(Profile(since=MONDAY), MONDAY, BERLIN, cold=False)
    assert isinstance(p.slots, MappingProxyType)


def test_clock_steps_forward_and_back() -> None:
    """A clock a year ahead marks a far week; back again, nothing breaks or goes negative."""
    p = workweeks(2)
    ahead = record(p, at(2027, 3, 3, 9, 0), BERLIN, cold=False)
    back = record(ahead, at(2026, 3, 18, 9, 0), BERLIN, cold=False)
    result = hours(back, BERLIN, at(2026, 3, 18, 10, 0), 0.25)
    assert not result.learning
    assert all(0 <= share <= 1 for share in learned.shares(back, BERLIN, at(2026, 3, 18, 10, 0)))
    # A year on, two weeks of history from long ago keep nothing, but the year's use counts.
    later = hours(ahead, BERLIN, at(2027, 3, 3, 9, 5), 0.25)
    assert learned.when_texts(later.intervals) == ["wed 08:45-09:30"]
