"""Calendar windows as tables with an explicit ``now``, through a week with a DST change."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest

from ollama_keepwarm.core import windows
from ollama_keepwarm.core.config import ConfigError, parse_config
from ollama_keepwarm.core.windows import Interval, evaluate, parse_window, parse_windows

BERLIN = ZoneInfo("Europe/Berlin")
WORKDAY = ["mon-fri 08:00-19:00", "sat 10:00-14:00"]


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=BERLIN)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mon 08:00-19:00", [Interval(480, 660)]),
        ("sat 10:00-14:00", [Interval(5 * 1440 + 600, 240)]),
        ("fri 22:00-02:00", [Interval(4 * 1440 + 1320, 240)]),  # across midnight
        ("sun 00:00-24:00", [Interval(6 * 1440, 1440)]),
        ("mon,wed 09:00-10:00", [Interval(540, 60), Interval(2 * 1440 + 540, 60)]),
        (
            "sat-mon 09:00-10:00",
            [Interval(540, 60), Interval(5 * 1440 + 540, 60), Interval(6 * 1440 + 540, 60)],
        ),
        ("Monday 08:00-09:00", [Interval(480, 60)]),
    ],
)
def test_parse_window(text: str, expected: list[Interval]) -> None:
    assert parse_window(text) == expected


def test_daily_when_days_are_left_out() -> None:
    assert len(parse_window("08:00-09:00")) == 7


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mon-fry 08:00-19:00", "unknown day 'fry'"),
        ("mon 8-19", "is not a time such as 08:00"),
        ("mon 25:00-26:00", "not a time of day"),
        ("mon 08:00", "expected"),
        ("mon 08:00-24:00", ""),  # 24:00 is a valid end
    ],
)
def test_bad_window_texts(text: str, message: str) -> None:
    if not message:
        parse_window(text)
        return
    with pytest.raises(windows.WindowError, match=message):
        parse_window(text)


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["mon 08:00-12:00", "mon 11:00-14:00"], (Interval(480, 360),)),  # overlap
        (["mon 08:00-12:00", "mon 12:00-14:00"], (Interval(480, 360),)),  # touching
        (["sun 22:00-02:00", "mon 01:00-03:00"], (Interval(6 * 1440 + 1320, 300),)),  # wraps
        (["00:00-24:00"], (Interval(0, windows.WEEK_MINUTES),)),  # all week
        (["mon 08:00-09:00", "tue 08:00-09:00"], (Interval(480, 60), Interval(1920, 60))),
    ],
)
def test_overlapping_windows_merge(texts: list[str], expected: tuple[Interval, ...]) -> None:
    assert parse_windows(texts) == expected


def _config(model: dict[str, object], **daemon: object) -> object:
    return parse_config({"daemon": daemon, "models": [{"name": "m", **model}]}, environ={})


@pytest.mark.parametrize(
    ("model", "daemon", "message"),
    [
        (
            {"when": ["mon-fri 08:00-19:00", "mon-fry 8:00"]},
            {},
            "models[0].when[1]: 'mon-fry 8:00': ",
        ),
        ({"when": [1]}, {}, "models[0].when: must be a list of windows"),
        (
            {"when": ["mon 08:00-09:00"], "after_window": "stop"},
            {},
            "models[0].after_window: must be one of expire, unload",
        ),
        ({"lead": "5m"}, {}, "models[0].lead: has no effect without `when`"),
        (
            {"when": ["mon 08:00-09:00"]},
            {"timezone": "Mars/Olympus"},
            "daemon.timezone: 'Mars/Olympus' is not an IANA time zone",
        ),
    ],
)
def test_config_errors_name_the_key_and_text(
    model: dict[str, object], daemon: dict[str, object], message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        _config(model, **daemon)
    assert str(caught.value).startswith(message)


def test_config_keys() -> None:
    config = _config(
        {"when": WORKDAY, "after_window": "unload", "lead": "3m"}, timezone="Europe/Berlin"
    )
    model = config.models[0]  # type: ignore[attr-defined]
    assert model.when == parse_windows(WORKDAY)
    assert (model.after_window, model.lead_s) == ("unload", 180.0)
    assert config.daemon.timezone == "Europe/Berlin"  # type: ignore[attr-defined]
    never = _config({"when": []}).models[0]  # type: ignore[attr-defined]
    assert never.when == ()


@pytest.mark.parametrize(
    ("now", "kept", "inside", "note"),
    [
        (at(2025, 3, 24, 7, 0), False, False, "next window 08:00"),
        (at(2025, 3, 24, 7, 58), True, False, "warming for window 08:00"),  # the lead: 2 min
        (at(2025, 3, 24, 8, 0), True, True, "kept until 19:00"),
        (at(2025, 3, 24, 18, 59, 59), True, True, "kept until 19:00"),
        (at(2025, 3, 24, 19, 0), False, False, "next window Tue 08:00"),
        (at(2025, 3, 28, 20, 0), False, False, "next window Sat 10:00"),
        (at(2025, 3, 29, 14, 0), False, False, "next window Mon 08:00"),
    ],
)
def test_evaluate(now: datetime, kept: bool, inside: bool, note: str) -> None:
    verdict = evaluate(parse_windows(WORKDAY), BERLIN, 2, now)
    assert (verdict.kept, verdict.inside, verdict.note) == (kept, inside, note)


def test_empty_list_means_never() -> None:
    assert not evaluate((), BERLIN, 1, at(2025, 3, 24, 9, 0)).kept


def _walk(texts: list[str], start: datetime, end: datetime, lead: int = 2) -> list[str]:
    """Every change of verdict from start to end, stepping from boundary to boundary."""
    intervals = parse_windows(texts)
    seen, now = [], start
    while now < end:
        verdict = evaluate(intervals, BERLIN, lead, now)
        seen.append(
            f"{now.isoformat()} {'in' if verdict.inside else 'warm' if verdict.kept else 'out'}"
        )
        upcoming = [verdict.until, verdict.opens if verdict.kept else verdict.warm_from]
        now = min(t for t in upcoming if t is not None)
    return seen


def test_a_week_across_the_spring_change_opens_at_local_eight() -> None:
    """Berlin skips 02:00-03:00 on Sunday 30 March 2025: Monday opens at 08:00 CEST."""
    walk = _walk(WORKDAY, at(2025, 3, 28, 12, 0), at(2025, 4, 1, 0, 0))
    assert walk == [
        "2025-03-28T12:00:00+01:00 in",
        "2025-03-28T19:00:00+01:00 out",
        "2025-03-29T09:58:00+01:00 warm",
        "2025-03-29T10:00:00+01:00 in",
        "2025-03-29T14:00:00+01:00 out",
        "2025-03-31T07:58:00+02:00 warm",
        "2025-03-31T08:00:00+02:00 in",
        "2025-03-31T19:00:00+02:00 out",
    ]


def test_the_autumn_change_and_windows_inside_the_changed_hour() -> None:
    """A boundary in the skipped hour fires at the change; in the repeated one, once."""
    spring = _walk(["sun 01:00-02:15", "sun 02:30-04:00"], at(2025, 3, 29, 12), at(2025, 3, 31))
    assert spring == [
        "2025-03-29T12:00:00+01:00 out",
        "2025-03-30T00:58:00+01:00 warm",
        "2025-03-30T01:00:00+01:00 in",  # the first window closes at the change, 03:00 CEST,
        "2025-03-30T03:00:00+02:00 in",  # when the second one opens: no gap between them
        "2025-03-30T04:00:00+02:00 out",
    ]
    autumn = _walk(["sun 02:30-02:45"], at(2025, 10, 25, 12), at(2025, 10, 27))
    assert autumn == [
        "2025-10-25T12:00:00+02:00 out",
        "2025-10-26T02:28:00+02:00 warm",
        "2025-10-26T02:30:00+02:00 in",
        "2025-10-26T02:45:00+02:00 out",  # not again at 02:30 CET
    ]


def test_next_fire_is_the_cron_triggers_own_time_away_from_dst() -> None:
    """Off the changed hours next_fire is APScheduler's get_next_fire_time, to the second."""
    trigger = windows.triggers(parse_windows(["mon 08:00-19:00"]), BERLIN)[0].trigger
    now = datetime(2025, 3, 29, 12, tzinfo=UTC)
    assert windows.next_fire(trigger, now) == trigger.get_next_fire_time(None, now)
    assert windows.next_fire(trigger, now) == at(2025, 3, 31, 8, 0)
    assert windows.next_fire(trigger, at(2025, 3, 31, 8, 0)) == at(2025, 4, 7, 8, 0)


@pytest.mark.parametrize(
    ("own", "before", "minutes"),
    [
        (None, [], 2),  # never measured: 60 s assumed, +25 %, +30 s = 105 s
        (4.9, [], 1),
        (42.5, [], 2),
        (4.9, [42.5], 2),  # queued behind a 70B model opening at the same time
        (300.0, [], 7),
    ],
)
def test_derived_leads(own: float | None, before: list[float | None], minutes: int) -> None:
    assert windows.lead_minutes(windows.derived_lead_s(own, before)) == minutes


def test_triggers_per_interval() -> None:
    kinds = [b.kind for b in windows.triggers(parse_windows(WORKDAY), BERLIN, 2)]
    assert kinds == ["open", "close", "warm"] * 6
    assert windows.triggers(parse_windows(["00:00-24:00"]), BERLIN, 2) == ()
