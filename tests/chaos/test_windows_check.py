"""The oracle's window checks on made-up outcomes: each can fail, and each passes a keeper
that keeps the window (no keeper runs here; ``test_chaos.py`` runs the real one)."""

from __future__ import annotations

from datetime import UTC, datetime

from bench.chaos_check import check
from bench.chaos_run import Outcome
from bench.chaos_schedule import Event, Kept, Schedule

from ollama_keepwarm.fake import LoadRecord
from ollama_keepwarm.fake.records import RecordedRequest, Records

T0 = 1_800_000_000.0
OURS = "ollama-keepwarm/0.1.0"
BLOB = "sha256-" + "a" * 64


def _at(seconds: float) -> datetime:
    return datetime.fromtimestamp(T0 + seconds, UTC)


def _call(seconds: float, keep_alive: object = "1h") -> RecordedRequest:
    body = {"model": "tiny", "prompt": "", "keep_alive": keep_alive}
    return RecordedRequest(_at(seconds), "POST", "/api/generate", body, 200, OURS)


def _load(seconds: float) -> LoadRecord:
    return LoadRecord(
        "tiny:latest", "cold", "tiny", _at(seconds), _at(seconds + 0.05), ok=True, caller=OURS
    )


def _outcome(
    event: Event,
    requests: list[RecordedRequest],
    loads: list[LoadRecord],
    *,
    also: tuple[Event, ...] = (),
) -> Outcome:
    schedule = Schedule(
        seed=0,
        version="0.32.15",
        max_loaded=3,
        memory_gb=48,
        kept=(Kept("tiny", "1h", 5),),
        events=tuple(sorted((event, *also), key=lambda e: e.at)),
        duration_s=12.0,
    )
    quiet = [(T0 + i / 10, 0.0) for i in range(160)]
    return Outcome(
        schedule=schedule,
        started=T0,
        ended=T0 + 16.0,
        kept_keys={"tiny": BLOB},
        blobs={"tiny": BLOB, "tiny:latest": BLOB},
        loads=loads,
        evictions=[],
        records=Records(),
        requests=requests,
        logs=[],
        clients=[],
        statuses=[],
        lags=quiet,
    )


def _window_violations(outcome: Outcome) -> list[str]:
    return [v.what for v in check(outcome).violations if "window" in v.what]


def test_a_call_of_ours_after_the_close_is_keeping_it_outside_its_window() -> None:
    close = Event(5.0, "window_close", {"model": "tiny", "after": "expire"})
    renewal_late = _outcome(close, [_call(1.0), _call(8.0)], [_load(0.01)])
    assert _window_violations(renewal_late) == [
        "tiny kept outside its window: a call of ours 3.00s after its window closed (bound 0.55s)"
    ]
    unload = _outcome(close, [_call(1.0), _call(5.3, keep_alive=0)], [_load(0.01)])
    assert _window_violations(unload) == []


def test_an_opening_must_be_followed_by_a_load_within_a_poll() -> None:
    opening = Event(5.0, "window_open", {"model": "tiny"})
    late = _outcome(opening, [_call(8.0)], [_load(8.0)])
    [what] = _window_violations(late)
    assert what.startswith("tiny not loaded after its window opened, asked for again 3.00s")
    early = _outcome(opening, [_call(2.0), _call(5.1)], [_load(2.0)])
    assert _window_violations(early) == [
        "tiny kept outside its window: a call of ours 3.00s before its warm-up started "
        "(bound 0.55s)"
    ]
    on_time = _outcome(opening, [_call(5.1)], [_load(5.1)])
    assert _window_violations(on_time) == []


def test_a_wall_clock_step_moves_the_window_with_the_keepers_clock() -> None:
    """A step forward of an hour at 3 s puts the keeper inside a window that opens (by the
    schedule's reckoning) at 5 s: its claim right after the step keeps the window (chaos seed
    22 on 0.32.15); and a step back of 3 h at 6 s takes it out again."""
    opening = Event(5.0, "window_open", {"model": "tiny"})
    forward = Event(3.0, "step_forward", {"seconds": 3600})
    claimed = _outcome(opening, [_call(3.05)], [], also=(forward,))
    assert _window_violations(claimed) == []
    back = Event(6.0, "step_back", {"seconds": -3 * 3600})
    stayed = _outcome(opening, [_call(3.05), _call(8.0)], [], also=(forward, back))
    assert _window_violations(stayed) == [
        "tiny kept outside its window: a call of ours 2.00s after its window closed (bound 0.55s)"
    ]
