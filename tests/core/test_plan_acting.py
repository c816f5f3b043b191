"""The rules around the keeper's calls, moved out of daemon/host.py (issue 22), as tables."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ollama_keepwarm.core import crash, plan
from ollama_keepwarm.core.config import ModelConfig
from ollama_keepwarm.core.ps import RunningModel
from ollama_keepwarm.core.windows import WindowVerdict

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
LLAMA = ModelConfig(name="llama3.1:8b", keep_alive_s=1800, priority=10)
VERIFY = replace(LLAMA, verify=True)


LISTED = RunningModel("llama3.1:8b", 1, 1, "d" * 64, NOW, 1024)


def decision(action: plan.Action, reason: str = "", model: ModelConfig = LLAMA) -> plan.Decision:
    return plan.Decision(model, action, reason)


@pytest.mark.parametrize(
    ("queued", "latest", "configured", "made"),
    [
        (plan.Action.WARM, None, True, True),
        (plan.Action.WARM, (plan.Action.WARM, "not loaded"), True, True),
        (plan.Action.WARM, (plan.Action.HOLD, "options mismatch"), True, False),
        (plan.Action.REFRESH, (plan.Action.WAIT, "confirming"), True, True),
        (plan.Action.WARM, (plan.Action.WARM, "not loaded"), False, False),
    ],
    ids=["no plan yet", "still asked", "left alone since", "confirming", "unconfigured"],
)
def test_a_queued_call_is_made_only_if_still_wanted(
    queued: plan.Action,
    latest: tuple[plan.Action, str] | None,
    configured: bool,
    made: bool,
) -> None:
    last = decision(*latest) if latest else None
    assert plan.still_wanted(decision(queued), last, configured=configured) is made


def test_a_snapshot_older_than_our_call_confirms_nothing() -> None:
    assert plan.unconfirmed({"a": 5.0, "b": 1.0}, 2.0) == {"a"}


@pytest.mark.parametrize(
    ("state", "alone"),
    [
        (plan.ModelState(), False),
        (plan.ModelState(paused_until=NOW + timedelta(hours=1)), True),
        (plan.ModelState(held_since=NOW), True),
        (plan.ModelState(foreign=True), True),
        (plan.ModelState(window=WindowVerdict(False, False, None, None, None, "closed")), True),
    ],
    ids=["kept", "paused", "held", "a client's runner", "outside its window"],
)
def test_primes_leave_alone_what_the_state_says(state: plan.ModelState, alone: bool) -> None:
    """From the state, not a decision: a "confirming" wait no longer hides a hold."""
    assert plan.leave_alone(state, NOW) is alone


@pytest.mark.parametrize(
    ("model", "reason", "failures", "expected"),
    [
        (VERIFY, plan.RESUMED, 0, (True, True)),
        (LLAMA, plan.RESUMED, 0, (True, False)),
        (VERIFY, plan.RESUMED, 1, (False, False)),
        (VERIFY, "lease ending", 0, (False, False)),
    ],
)
def test_verify_after_resume(
    model: ModelConfig, reason: str, failures: int, expected: tuple[bool, bool]
) -> None:
    st = plan.ModelState(failures=failures)
    assert plan.verify_after(decision(plan.Action.REFRESH, reason, model), st) == expected
    failed = plan.record_verify_failed(st, NOW)
    assert (failed.refresh_requested_at, failed.expect_reload) == (NOW, True)


def test_a_config_change_ends_holds_and_mismatches_and_keeps_the_rest() -> None:
    states = {
        LLAMA.key: plan.ModelState(foreign=True, mismatch_reported=True, warms=3),
        "gone": plan.ModelState(warms=1),
    }
    held = {**states, LLAMA.key: replace(states[LLAMA.key], held_since=NOW)}
    adopted = plan.adopt_config([LLAMA], [LLAMA], held)
    assert set(adopted) == {LLAMA.key}
    st = adopted[LLAMA.key]
    assert (st.foreign, st.mismatch_reported, st.held_since, st.warms) == (False, False, None, 3)


@pytest.mark.parametrize(
    ("priorities", "changed_options", "held_after"),
    [
        pytest.param((10, 5, 1), False, {"c"}, id="same-ranks-same-hold"),
        pytest.param((1, 10, 5), False, {"a"}, id="ranks-rotated-the-new-lowest-is-held"),
        pytest.param((1, 10, 5), True, set(), id="options-changed-every-hold-tried-again"),
    ],
)
def test_a_config_that_only_ranks_again_keeps_as_many_held(
    priorities: tuple[int, int, int], changed_options: bool, held_after: set[str]
) -> None:
    """Chaos 0.24.0 seed 125: a reload that rotated priorities ended every hold, and the kept
    set fought its way back to one hold, our loads evicting one model three times. The room
    is what it was: as many are held, the lowest-ranked by the new config."""
    old = [
        ModelConfig(name=n, keep_alive_s=600, priority=p)
        for n, p in zip("abc", (10, 5, 1), strict=True)
    ]
    new = [replace(m, priority=p) for m, p in zip(old, priorities, strict=True)]
    if changed_options:
        new[0] = replace(new[0], options={"num_ctx": 8192})
    states = {m.key: plan.ModelState(warms=1) for m in old}
    states[old[2].key] = replace(states[old[2].key], held_since=NOW, held_reason="capacity")
    adopted = plan.adopt_config(old, new, states)
    assert {m.name for m in new if adopted[m.key].held_since is not None} == held_after
    if held_after == {"a"}:
        assert adopted[new[0].key].held_reason == (
            f"{plan.CAPACITY}: does not fit beside b, c; held until there is room"
        )


def test_a_wedge_is_reported_once_and_only_while_ollama_answers() -> None:
    st = plan.ModelState(in_flight_since=NOW)
    later = NOW + timedelta(seconds=40)
    away, events, hook = crash.record_wedged(LLAMA, st, later, 5.0, ollama_answers=False)
    assert (away, events, hook) == (st, [], False)
    wedged, events, hook = crash.record_wedged(LLAMA, st, later, 5.0, ollama_answers=True)
    assert wedged.wedged_since == later
    assert [e.name for e in events] == ["runner_wedged"]
    assert events[0].fields["waited_s"] == 40.0
    assert hook
    again = crash.record_wedged(LLAMA, wedged, later, 5.0, ollama_answers=True)
    assert again == (wedged, [], False)


def test_a_name_pulled_again_is_asked_again() -> None:
    """Issue 22 item 12: the show/blob caches follow a re-pull (§7.6): another digest."""
    stale, seen = plan.repulled({}, [("llama3.1:8b", "a" * 64)])
    assert stale == set()
    stale, seen = plan.repulled(seen, [("llama3.1:8b", "a" * 64)])
    assert stale == set()
    stale, seen = plan.repulled(seen, [("llama3.1:8b", "b" * 64)])
    assert stale == {"llama3.1:8b"}
    assert seen == {"llama3.1:8b": "b" * 64}


def test_ready_and_all_warm_from_the_decisions() -> None:
    """READY=1 waits for every model to settle; /readyz for every kept model to be listed."""

    row = RunningModel("llama3.1:8b", 1, 1, "d" * 64, NOW, 4096)
    warm = plan.Decision(LLAMA, plan.Action.WAIT, "lease ending", NOW, row)
    cold = decision(plan.Action.WARM, "not loaded")
    paused = decision(plan.Action.HOLD, "paused")
    assert plan.first_pass_done([warm, paused])
    assert not plan.first_pass_done([warm, cold])
    assert not plan.first_pass_done([])
    assert plan.first_pass_done([], configured=False)
    assert plan.all_warm([warm, paused])
    assert not plan.all_warm([warm, cold])


@pytest.mark.parametrize(("polls", "delay"), [(1, 0.25), (2, 0.5), (20, 2.0)])
def test_looks_while_ollama_is_away_double_up_to_the_cap(polls: int, delay: float) -> None:
    assert plan.down_poll_delay_s(polls, 2.0) == delay


def test_releases_go_first_and_only_unused_loads_prime() -> None:
    warm, unload = decision(plan.Action.WARM), decision(plan.Action.UNLOAD)
    assert plan.queue_order([warm, unload]) == [unload, warm]
    assert plan.prime_cause("model_warmed", {"loaded": True}) == "warm"
    assert plan.prime_cause("model_warmed", {"loaded": False}) is None
    assert plan.prime_cause("runner_reloaded", {}) == "reload"
    assert plan.prime_cause("model_refreshed", {}) is None


@pytest.mark.parametrize(
    ("call", "state", "withdrawn"),
    [
        (plan.Action.REFRESH, plan.ModelState(), False),
        (plan.Action.REFRESH, plan.ModelState(foreign=True), True),
        (plan.Action.REFRESH, plan.ModelState(held_since=NOW), True),
        (plan.Action.REFRESH, plan.ModelState(paused_until=NOW + timedelta(hours=1)), True),
        (plan.Action.WARM, plan.ModelState(foreign=True), False),
        (plan.Action.WARM, plan.ModelState(foreign=True, last_row=LISTED), True),
        (plan.Action.WARM, plan.ModelState(held_since=NOW, last_row=LISTED), False),
        (plan.Action.UNLOAD, plan.ModelState(held_since=NOW), False),
    ],
    ids=[
        "still kept",
        "a client's runner since",
        "held since",
        "paused since",
        "a load of ours while the client's runner is gone stands",
        "a load queued behind a client's listed runner with other options",
        "a load of a held model stands",
        "a release stands",
    ],
)
def test_a_refresh_in_flight_is_withdrawn_when_the_model_must_be_left_alone(
    call: plan.Action, state: plan.ModelState, withdrawn: bool
) -> None:
    """A ping or renewal queued inside Ollama (waiting for a client's reload to end) would
    reload the client's runner with our options when it is served; withdrawn, Ollama skips
    it (a request cancelled while queued is skipped, §2.6). A load of ours sent while the model
    was gone, then queued behind a client's load of it with other options, is the same fight
    (chaos 0.32.15 seed 30): withdrawn once that runner is listed. Otherwise a load is not
    aborted: that would throw away a load already paid for."""
    assert plan.withdraw(decision(call), state, NOW) is withdrawn


@pytest.mark.parametrize(
    ("client_started", "started", "foreign", "withdrawn"),
    [
        (True, False, True, True),
        (True, True, True, False),
        (False, False, True, False),
        (True, False, False, True),
        (False, False, False, False),
    ],
    ids=[
        "a client's runner replaced ours while our load waits",
        "our load's runner runs",
        "no client's runner during our call",
        "a client's load of the model began first, no mismatch known yet",
        "nothing of a client's",
    ],
)
def test_a_load_queued_behind_a_clients_reload_is_withdrawn_before_it_is_listed(
    client_started: bool, started: bool, foreign: bool, withdrawn: bool
) -> None:
    """Chaos 0.24.0 seed 262: our load went out as a client's load of the model began; a
    second client's request with other options reloaded it (options_mismatch) while ours
    waited in Ollama's queue, no row listing it yet. Served, ours would reload the client's
    runner: withdrawn, unless a runner of our own call runs (a load already paid for).
    Chaos 0.32.15 seed 238: the client's load (other options) was first, the model gone, so
    no mismatch was known: queued behind it, ours would have reloaded it just the same."""
    state = plan.ModelState(foreign=foreign)
    assert (
        plan.withdraw(
            decision(plan.Action.WARM), state, NOW, started=started, client_started=client_started
        )
        is withdrawn
    )
