"""Runner processes (issue 21): crash or unload, whose runner, queued or wedged, as tables."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ollama_keepwarm.core import plan
from ollama_keepwarm.core.config import DaemonConfig, ModelConfig
from ollama_keepwarm.core.plan.mismatch import mismatch_outlasted
from ollama_keepwarm.core.plan.processes import argv_mismatch
from ollama_keepwarm.core.ps import PsSnapshot, RunningModel
from ollama_keepwarm.core.runners import RunnerEvent, RunnerProcess, RunnerTable

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
LLAMA = ModelConfig(name="llama3.1:8b", keep_alive_s=1800, priority=10)
CODER = ModelConfig(name="qwen2.5-coder:7b", keep_alive_s=1800, priority=5)
BLOBS = {LLAMA.key: "sha256-aaa", CODER.key: "sha256-ccc"}
ROW = RunningModel("llama3.1:8b", 1, 1, "d" * 64, NOW, 4096)


def runner(
    blob: str, pid: int = 10, started: float = 0.0, flavour: str = "runner"
) -> RunnerProcess:
    return RunnerProcess(pid, blob, flavour, 1234, {}, started)


def table(*runners: RunnerProcess, visible: bool = True) -> RunnerTable:
    return RunnerTable(visible, "cgroup test", runners, 100.0)


def exited(blob: str, at: float = 50.0, flavour: str = "runner") -> RunnerEvent:
    return RunnerEvent("exited", runner(blob, flavour=flavour), at)


def states() -> dict[str, plan.ModelState]:
    return {LLAMA.key: plan.ModelState(warms=1), CODER.key: plan.ModelState(warms=1)}


def test_an_exit_concerns_only_the_model_whose_blob_it_served() -> None:
    """The runner names its blob: the other listed model is never checked (issue 21 item 1)."""
    noted = plan.note_runner_exits(
        [LLAMA, CODER], states(), [exited("sha256-ccc")], table(), BLOBS, {LLAMA.key, CODER.key}
    )
    assert noted[LLAMA.key].runner_exit_at is None
    assert noted[CODER.key].runner_exit_at == 50.0
    assert noted[CODER.key].runner_exit_named


@pytest.mark.parametrize(
    ("listed", "asked", "alive", "crash"),
    [
        (True, 60.0, (), True),  # still listed after its runner's exit: a crash
        (False, 60.0, (), False),  # gone from ps: an unload, the loss rules decide
        (True, 40.0, (), None),  # a snapshot older than the exit decides nothing
        (True, 60.0, ("sha256-aaa",), False),  # another runner serves it: a reload
    ],
    ids=["crash", "unload", "older snapshot", "reloaded"],
)
def test_an_exit_is_settled_on_a_snapshot_asked_after_it(
    listed: bool, asked: float, alive: tuple[str, ...], crash: bool | None
) -> None:
    pending = {**states(), LLAMA.key: plan.ModelState(runner_exit_at=50.0, runner_exit_named=True)}
    rows = {LLAMA.key: ROW if listed else None, CODER.key: None}
    live = table(*(runner(b, pid=11) for b in alive))
    settled, events = plan.settle_runner_exits(
        [LLAMA, CODER], pending, rows, asked, NOW, any_row_left=False, table=live, blobs=BLOBS
    )
    st = settled[LLAMA.key]
    if crash is None:
        assert st.runner_exit_at == 50.0
        return
    assert st.runner_exit_at is None
    assert (st.check_requested_at == NOW) is crash
    assert [e.name for e in events] == (["runner_died"] if crash else [])


@pytest.mark.parametrize(("any_row_left", "crash"), [(False, True), (True, False)])
def test_where_processes_are_not_visible_an_unload_explains_an_exit(
    any_row_left: bool, crash: bool
) -> None:
    """An exit naming no model: listed models are checked only if no row left ps."""
    hidden = table(visible=False)
    noted = plan.note_runner_exits(
        [LLAMA], states(), [exited("", flavour="unknown")], hidden, BLOBS, {LLAMA.key}
    )
    settled, _ = plan.settle_runner_exits(
        [LLAMA], noted, {LLAMA.key: ROW}, 60.0, NOW, any_row_left=any_row_left
    )
    assert (settled[LLAMA.key].check_requested_at is not None) is crash


def test_a_runner_started_while_no_load_of_ours_runs_is_a_clients() -> None:
    started = [RunnerEvent("started", runner("sha256-aaa", pid=12), 70.0)]
    assert plan.attribute_starts([LLAMA], states(), BLOBS, started, {})[0] == {LLAMA.key: 12}
    loading = {LLAMA.key: plan.ModelState(in_flight_since=NOW)}
    assert plan.attribute_starts([LLAMA], loading, BLOBS, started, {})[0] == {}
    pinging = {LLAMA.key: plan.ModelState(in_flight_since=NOW, in_flight_was_listed=True)}
    assert plan.attribute_starts([LLAMA], pinging, BLOBS, started, {})[0] == {LLAMA.key: 12}


LOADING = plan.ModelState(warms=1, in_flight_since=NOW)


@pytest.mark.parametrize(
    ("state", "claimed", "pids", "others", "claims"),
    [
        (LOADING, {}, [12], {}, {LLAMA.key: 12}),
        (LOADING, {LLAMA.key: 12}, [12], {}, {LLAMA.key: 12}),
        (LOADING, {LLAMA.key: 12}, [13], {LLAMA.key: 13}, {LLAMA.key: 12}),
        (LOADING, {}, [12, 13], {LLAMA.key: 13}, {LLAMA.key: 12}),
        (plan.ModelState(warms=1), {}, [12], {LLAMA.key: 12}, {}),
    ],
    ids=[
        "the first start during our load is ours",
        "seen again, still ours",
        "a second start while our load is in flight is a client's",
        "two starts in one read: the second is a client's",
        "no call of ours in flight: a client's",
    ],
)
def test_a_call_of_ours_starts_one_runner_a_second_start_is_a_clients(
    state: plan.ModelState,
    claimed: dict[str, int],
    pids: list[int],
    others: dict[str, int],
    claims: dict[str, int],
) -> None:
    """A client's request queued behind our load is served the moment ours answers; its
    reload's runner starts before our read at the end of our call (chaos 0.24.0 seed 28).
    It was taken for ours, so the client's reloads went unsaid and were fought."""
    started = [RunnerEvent("started", runner("sha256-aaa", pid=pid), 70.0) for pid in pids]
    assert plan.attribute_starts([LLAMA], {LLAMA.key: state}, BLOBS, started, claimed) == (
        others,
        claims,
    )


@pytest.mark.parametrize(
    ("started_at", "others", "claims"),
    [(69.99, {LLAMA.key: 12}, {}), (70.0, {}, {LLAMA.key: 12}), (70.5, {}, {LLAMA.key: 12})],
    ids=["started before our call was sent", "as it was sent", "after"],
)
def test_a_runner_started_before_our_call_was_sent_is_not_ours(
    started_at: float, others: dict[str, int], claims: dict[str, int]
) -> None:
    """Chaos 0.32.15 seed 238, 0.24.0 seed 413: a client's load began the moment before ours
    went out; its runner, a fork of the server until it execs, named its model only after
    our call was sent and was taken for ours, so ours (queued, other options) reloaded it."""
    early = replace(runner("sha256-aaa", pid=12), started_at=started_at)
    started = [RunnerEvent("started", early, 71.0)]
    found = plan.attribute_starts(
        [LLAMA], {LLAMA.key: LOADING}, BLOBS, started, {}, {LLAMA.key: 70.0}
    )
    assert found == (others, claims)


@pytest.mark.parametrize(
    ("runners", "pid", "visible", "raced"),
    [
        ((runner("sha256-aaa", pid=13),), 13, True, True),
        ((runner("sha256-aaa", pid=13),), None, True, False),
        ((), 13, True, False),
        ((runner("sha256-ccc", pid=13),), 13, True, False),
        ((runner("sha256-aaa", pid=13),), 13, False, False),
    ],
    ids=[
        "a client's runner of its blob is alive: do not load",
        "no runner started by someone else",
        "the client's runner has gone",
        "the pid serves another blob now",
        "processes not visible",
    ],
)
def test_a_load_about_to_go_out_never_races_a_clients_runner(
    runners: tuple[RunnerProcess, ...], pid: int | None, visible: bool, raced: bool
) -> None:
    """Read just before our load: a client's load begun since the last look is not raced."""
    assert plan.client_loading("sha256-aaa", table(*runners, visible=visible), pid) is raced


def test_a_clients_reload_is_a_mismatch_said_once() -> None:
    st, events = plan.note_client_reload(LLAMA, plan.ModelState(warms=1))
    assert st.foreign
    assert [e.name for e in events] == ["options_mismatch"]
    again, events = plan.note_client_reload(LLAMA, st)
    assert (again, events) == (st, [])


def test_a_load_in_flight_elsewhere_is_never_raced() -> None:
    busy = table(runner("sha256-aaa"))
    rows = {LLAMA.key: None, CODER.key: None}
    assert plan.loading_elsewhere([LLAMA, CODER], states(), busy, BLOBS, rows) == {LLAMA.key}
    assert plan.loading_elsewhere([LLAMA], states(), table(visible=False), BLOBS, rows) == set()
    empty = PsSnapshot(NOW)
    decided = plan.decide([LLAMA], DaemonConfig(), empty, {}, NOW, loading_elsewhere={LLAMA.key})
    assert (decided[0].action, decided[0].reason) == (plan.Action.WAIT, "a client is loading it")
    assert plan.decide([LLAMA], DaemonConfig(), empty, {}, NOW)[0].action is plan.Action.WARM


@pytest.mark.parametrize(
    ("runners", "queued"),
    [
        ((), False),  # nothing else loading: the bound counts from the call's start
        ((("sha256-ccc", 5.0),), True),  # another load started after ours began: queued
        ((("sha256-aaa", 5.0),), True),  # our own runner started 5 s in: counts from there
        ((("sha256-ccc", -1.0),), False),  # an older runner: not a load ahead of ours
    ],
)
def test_queued_is_not_wedged(runners: tuple[tuple[str, float], ...], queued: bool) -> None:
    live = table(*(runner(b, pid=20 + i, started=t) for i, (b, t) in enumerate(runners)))
    assert plan.queued_not_wedged(live, "sha256-aaa", 0.0, 6.0, 3.0) is queued


def test_a_model_a_client_is_reloading_is_no_evidence_of_room() -> None:
    """Issue 22 item 12: absent from ps while a client reloads it, its runner still takes room."""
    other = RunningModel("mistral:7b", 1, 1, "e" * 64, NOW, 4096)
    snapshot = PsSnapshot(NOW, (ROW,))
    blobs = {**BLOBS, "mistral:7b": "sha256-mmm"}
    reloading = table(runner("sha256-aaa", pid=1), runner("sha256-mmm", pid=2))
    assert plan.unlisted_runners(reloading, snapshot, blobs) == 1
    assert plan.unlisted_runners(reloading, PsSnapshot(NOW, (ROW, other)), blobs) == 0
    assert plan.unlisted_runners(table(visible=False), snapshot, blobs) == 0


SMALL = ModelConfig(name="llama3.2:3b", keep_alive_s=1800, priority=0)
THREE = [LLAMA, CODER, SMALL]
THREE_BLOBS = {**BLOBS, SMALL.key: "sha256-sss"}


def started(blob: str, at: float, pid: int = 20) -> RunnerEvent:
    return RunnerEvent("started", runner(blob, pid, at), at)


def loading(key: str) -> dict[str, plan.ModelState]:
    """Every model warm once; a load of ours in flight for ``key``."""
    sts = {m.key: plan.ModelState(warms=1) for m in THREE}
    sts[key] = plan.record_warm_started(sts[key], NOW, listed=False)
    return sts


@pytest.mark.parametrize(
    ("earlier", "events", "ours", "proved"),
    [
        # Ollama ends the victim, then starts our runner: seen in one rescan, or two.
        ((), (exited("sha256-aaa", 50.0), started("sha256-sss", 50.0)), SMALL, True),
        ((exited("sha256-aaa", 50.0),), (started("sha256-sss", 50.2),), SMALL, True),
        # `ollama stop` while our runner is already loading: its exit comes after our start.
        ((started("sha256-sss", 49.0),), (exited("sha256-aaa", 50.0),), SMALL, False),
        # A client's load started between: the room went to it.
        (
            (exited("sha256-aaa", 50.0), started("sha256-bbb", 50.1, pid=30)),
            (started("sha256-sss", 50.2),),
            SMALL,
            False,
        ),
        # Too long before our start to be the room Ollama made for it.
        ((exited("sha256-aaa", 40.0),), (started("sha256-sss", 50.0),), SMALL, False),
        # No load of ours in flight: the runner that started is a client's.
        ((), (exited("sha256-aaa", 50.0), started("sha256-sss", 50.0)), None, False),
    ],
    ids=["one rescan", "two rescans", "stop during our load", "client first", "gap", "client"],
)
def test_an_eviction_by_our_load_is_proved_by_the_runners(
    earlier: tuple[RunnerEvent, ...],
    events: tuple[RunnerEvent, ...],
    ours: ModelConfig | None,
    proved: bool,
) -> None:
    """Chaos seeds 2, 3, 35 on 0.24.0: the victim's exit right before our runner's start is
    Ollama making room for our load; anything else proves nothing."""
    sts = loading(ours.key) if ours else {m.key: plan.ModelState(warms=1) for m in THREE}
    found = plan.evicted_by_ours(THREE, sts, THREE_BLOBS, earlier, events)
    assert found == ({LLAMA.key: SMALL.key} if proved else {})


def _row(model: ModelConfig, at: datetime) -> RunningModel:
    return RunningModel(model.name, 1, 1, "d" * 64, at + timedelta(minutes=30), 4096)


@pytest.mark.parametrize("proved", [True, False], ids=["proved", "timing only"])
def test_one_proved_eviction_holds_the_lowest_kept_model(proved: bool) -> None:
    """Room for two of three: our load of the lowest evicted the top one. Proved by the
    runners, that one eviction holds the lowest at once (at most one extra load of each);
    on timing alone it takes a second one (an `ollama stop` may coincide)."""
    sts = loading(SMALL.key)
    later = NOW + timedelta(seconds=5)
    before = PsSnapshot(NOW, (_row(LLAMA, NOW), _row(CODER, NOW)))
    after = PsSnapshot(later, (_row(CODER, later),))
    obs = plan.observe(
        THREE,
        DaemonConfig(),
        before,
        after,
        sts,
        blobs=THREE_BLOBS,
        processes_visible=True,
        evicted_by_ours={LLAMA.key: SMALL.key} if proved else {},
    )
    conflicts = [(e.model, e.fields["keeps"]) for e in obs.events if e.name == "capacity_conflict"]
    assert conflicts == ([(SMALL.name, [LLAMA.name, CODER.name])] if proved else [])
    assert (obs.states[SMALL.key].held_since is not None) is proved


def test_a_proof_a_look_after_the_loss_still_settles_it() -> None:
    """The runner watch may show our runner's start a rescan after the look that saw the loss."""
    sts = loading(SMALL.key)
    t1, t2 = NOW + timedelta(seconds=5), NOW + timedelta(seconds=6)
    before = PsSnapshot(NOW, (_row(LLAMA, NOW), _row(CODER, NOW)))
    gone = PsSnapshot(t1, (_row(CODER, t1),))
    first = plan.observe(THREE, DaemonConfig(), before, gone, sts, blobs=THREE_BLOBS)
    assert first.states[SMALL.key].held_since is None
    second = plan.observe(
        THREE,
        DaemonConfig(),
        gone,
        PsSnapshot(t2, (_row(CODER, t2),)),
        first.states,
        blobs=THREE_BLOBS,
        evicted_by_ours={LLAMA.key: SMALL.key},
    )
    assert second.states[SMALL.key].held_since is not None


def test_a_held_model_still_resident_is_unloaded_before_another_load() -> None:
    """Its room is what the victim's re-warm needs: loading first would evict a third kept
    model and hold that one too (the hold cascading down the ranks)."""
    sts = {m.key: plan.ModelState(warms=1, last_warm_ok_at=NOW) for m in THREE}
    sts[SMALL.key] = replace(sts[SMALL.key], held_since=NOW, held_reason="capacity conflict")
    now = NOW + timedelta(seconds=1)
    resident = PsSnapshot(now, (_row(CODER, now), _row(SMALL, now)))
    actions = {
        d.model.key: d.action for d in plan.decide(THREE, DaemonConfig(), resident, sts, now)
    }
    assert actions == {
        LLAMA.key: plan.Action.WAIT,
        CODER.key: plan.Action.WAIT,
        SMALL.key: plan.Action.UNLOAD,
    }
    released = PsSnapshot(now, (_row(CODER, now),))
    sts[SMALL.key] = plan.record_release_sent(sts[SMALL.key])
    decisions = plan.decide(THREE, DaemonConfig(), released, sts, now)
    assert decisions[0].action is plan.Action.WARM


@pytest.mark.parametrize(
    ("alive", "held", "proved"),
    [
        (("sha256-ccc", "sha256-sss"), False, True),  # only kept models: the set does not fit
        (("sha256-ccc", "sha256-sss", "sha256-big"), False, False),  # a client's model too
        (("sha256-ccc", "sha256-sss"), True, False),  # a model we hold, a client's runner
    ],
    ids=["kept only", "a client's model", "a held model"],
)
def test_an_eviction_proves_a_conflict_only_among_kept_models(
    alive: tuple[str, ...], held: bool, proved: bool
) -> None:
    """Chaos seed 7 on 0.24.0: our load evicted a kept model while a client's runner of a model
    we hold took room; the kept set alone fits, so that eviction holds nothing more."""
    sts = loading(SMALL.key)
    if held:
        sts[CODER.key] = replace(sts[CODER.key], held_since=NOW)
    events = (exited("sha256-aaa", 50.0), started("sha256-sss", 50.0))
    runners = table(*(runner(b, pid=i) for i, b in enumerate(alive)))
    found = plan.evicted_by_ours(THREE, sts, THREE_BLOBS, (), events, runners)
    assert found == ({LLAMA.key: SMALL.key} if proved else {})


@pytest.mark.parametrize(
    ("lapsed_at_s", "reported", "waits"),
    [
        (0.0, True, True),
        (1.0, True, True),
        (1800.0, True, False),
        (-5.0, True, False),
        (0.0, False, False),
    ],
    ids=[
        "lapsed as our call ended: a reload for a client queued behind it, wait a look",
        "lapsed long before ours would: stopped, wait a look",
        "our own lease ran out: at once",
        "a lease older than our last call ran out: at once",
        "no client seen reloading it: an eviction looks the same, at once",
    ],
)
def test_a_lease_cut_short_waits_a_look_before_the_re_warm(
    lapsed_at_s: float, reported: bool, waits: bool
) -> None:
    """Chaos 0.24.0 seed 28: a client's request with other options, queued behind our load,
    is served the moment ours answers; Ollama expires our runner to reload it, so it leaves
    ps as "expired" before the client's runner shows. Re-warmed at once, our load queued
    behind the client's reload and reloaded it again. A lease that lapsed long before the one
    our call set is no expiry of ours: the re-warm waits a look, and the client's runner is
    seen (a mismatch said, its load never raced)."""
    daemon = DaemonConfig(poll_interval_s=0.2)
    warmed_at = NOW.replace(minute=0)
    old = RunningModel(
        "llama3.1:8b", 1, 1, "d" * 64, warmed_at + timedelta(seconds=lapsed_at_s), 4096
    )
    st = plan.ModelState(warms=2, last_warm_ok_at=warmed_at, mismatch_reported=reported)
    gone = warmed_at + timedelta(seconds=lapsed_at_s + 1)
    observed = plan.observe(
        [LLAMA],
        daemon,
        PsSnapshot(warmed_at + timedelta(seconds=lapsed_at_s), (old,)),
        PsSnapshot(gone, ()),
        {LLAMA.key: st},
        blobs=BLOBS,
        processes_visible=True,
    )
    assert [e.fields["cause"] for e in observed.events] == ["expired"]
    assert (observed.states[LLAMA.key].rewarm_not_before is not None) is waits


@pytest.mark.parametrize(
    ("asked", "pending", "checked"),
    [(50.1, True, False), (50.3, False, True)],
    ids=["asked right after the exit: not judged yet", "asked once a reload would show"],
)
def test_a_named_exit_is_judged_only_once_a_reload_would_show(
    asked: float, pending: bool, checked: bool
) -> None:
    """A client's reload ends our runner; v0.24 drops the row a few ms after the exit, and the
    client's runner is still starting. Judged on a snapshot asked at once, the model looked
    crashed, and our check, queued behind the client's reload, reloaded it (chaos 0.24.0
    seed 28). The exit waits :data:`EXIT_SETTLE_S`; the host looks again then."""
    noted = plan.note_runner_exits(
        [LLAMA], states(), [exited("sha256-aaa", at=50.0)], table(), BLOBS, {LLAMA.key}
    )
    assert plan.exit_settles_at(noted) == pytest.approx(50.25)
    settled, died = plan.settle_runner_exits(
        [LLAMA], noted, {LLAMA.key: ROW}, asked, NOW, any_row_left=False, table=table(), blobs=BLOBS
    )
    assert (settled[LLAMA.key].runner_exit_at is not None) is pending
    assert bool(died) is checked


def test_a_clients_runner_that_just_ended_keeps_the_mismatch() -> None:
    """Chaos 0.24.0 seed 28: two clients reload the kept model in turn with their options; no
    look listed it in between, so it looked gone since the last loss, longer than a reload
    takes, and our load went out (queued behind the next client's reload, to reload it). A
    runner of it that just ended says it was there: the mismatch lasts, counted from then."""
    daemon = DaemonConfig(poll_interval_s=0.2)
    gone_long = plan.ModelState(
        warms=2, foreign=True, cold_load_s=1.4, last_vanished_at=NOW - timedelta(seconds=3)
    )
    assert mismatch_outlasted(gone_long, daemon, NOW)
    noted = plan.note_runner_exits(
        [LLAMA], {LLAMA.key: gone_long}, [exited("sha256-aaa", at=50.0)], table(), BLOBS, set()
    )
    assert not mismatch_outlasted(noted[LLAMA.key], daemon, NOW)
    settled, _ = plan.settle_runner_exits(
        [LLAMA], noted, {LLAMA.key: None}, 51.0, NOW, any_row_left=False, table=table(), blobs=BLOBS
    )
    assert settled[LLAMA.key].last_vanished_at == NOW
    assert not mismatch_outlasted(settled[LLAMA.key], daemon, NOW + timedelta(seconds=1))


def _event(kind: str, blob: str, pid: int, at: float) -> RunnerEvent:
    return RunnerEvent(kind, runner(blob, pid=pid), at)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("earlier", "listed", "reload"),
    [
        ([_event("exited", "sha256-aaa", 11, 70.9)], False, True),
        (
            [_event("exited", "sha256-aaa", 11, 70.0), _event("started", "sha256-ccc", 12, 70.1)],
            True,
            False,
        ),
        ([], False, False),
        ([], True, True),
        ([_event("exited", "sha256-aaa", 11, 60.0)], False, False),
        ([_event("exited", "sha256-ccc", 11, 70.9)], False, False),
    ],
    ids=[
        "our runner ended, the client's started next: a reload",
        "another model's load took the room first: a fresh load",
        "the model was gone, no runner of it ended: a fresh load",
        "listed at the last look, its exit not seen this close: a reload",
        "it ended long before: a fresh load",
        "another model's runner ended: no reload of this one",
    ],
)
def test_only_a_start_in_place_of_a_runner_of_the_same_model_is_a_reload(
    earlier: list[RunnerEvent], listed: bool, reload: bool
) -> None:
    """A client using a kept model that was evicted earlier is no evidence of other options:
    the keeper said options_mismatch for it and left the runner unrenewed. Ollama reloads a
    loaded model only for other options (§4.6), ending its runner and starting the new one
    next (§4.9)."""
    started = [_event("started", "sha256-aaa", 13, 71.0)]
    found = plan.reloads({LLAMA.key: 13}, BLOBS, earlier, started, {LLAMA.key} if listed else ())
    assert found == ({LLAMA.key: 13} if reload else {})


def test_a_start_of_a_model_a_client_uses_with_other_options_counts_as_its_reload() -> None:
    """Chaos 0.32.15 seed 85: options_mismatch said, the model held and unloaded; the client
    loaded it again (no runner of it ended just before). Taken for a fresh load, it was
    tried into by a capacity retry, which reloaded the client's runner."""
    started = [_event("started", "sha256-aaa", 13, 71.0)]
    assert plan.reloads({LLAMA.key: 13}, BLOBS, [], started) == {}
    assert plan.reloads({LLAMA.key: 13}, BLOBS, [], started, (), {LLAMA.key}) == {LLAMA.key: 13}


@pytest.mark.parametrize(
    ("last_exit", "last_call_ended", "visible", "settles_at"),
    [
        (None, None, True, None),  # nothing happened: at once
        (10.0, None, True, 10.0 + plan.QUEUE_SETTLE_S),  # after a runner's exit
        (None, 12.0, True, 12.0 + plan.QUEUE_SETTLE_S),  # after a call of ours
        (10.0, 12.0, True, 12.0 + plan.QUEUE_SETTLE_S),  # the later of the two
        (13.0, 12.0, True, 13.0 + plan.QUEUE_SETTLE_S),
        (10.0, 12.0, False, None),  # runners not visible: waiting would show nothing
    ],
)
def test_a_cold_load_waits_for_the_queue_behind_an_exit_or_our_call(
    last_exit: float | None, last_call_ended: float | None, visible: bool, settles_at: float | None
) -> None:
    """Chaos 0.32.15 seeds 128, 248, 494: a re-warm sent the instant a client's queued load
    began queued behind it, and reloaded the client's runner."""
    assert plan.queue_settles_at(last_exit, last_call_ended, visible=visible) == settles_at


@pytest.mark.parametrize(
    ("configured", "flavour", "argv", "differ"),
    [
        ({}, "llama-server", {"num_thread": 1}, {"num_thread": 1}),  # ours unset: 0
        ({}, "llama-server", {}, {}),
        ({"num_thread": 4}, "llama-server", {}, {"num_thread": 0}),  # theirs unset
        ({"num_thread": 4}, "llama-server", {"num_thread": 4}, {}),
        ({"num_thread": -1}, "llama-server", {}, {}),  # unset, said as Ollama's -1
        ({}, "runner", {}, {}),  # v0.24: argv carries no options, absent is unknown
        ({}, "llama-server", {"num_batch": 1024}, {}),  # may be automatic: not compared
        ({"num_batch": 512}, "llama-server", {"num_batch": 1024}, {"num_batch": 1024}),
    ],
)
def test_a_clients_num_thread_shows_in_argv_even_when_the_config_leaves_it_unset(
    configured: dict[str, object], flavour: str, argv: dict[str, object], differ: dict[str, object]
) -> None:
    """Chaos 0.32.15 seed 494: a client's runner started with ``-t 1``; the config sets no
    num_thread, so the keeper saw no mismatch and claimed the lease, and the claim reloaded
    it (num_thread must match exactly, §4.6)."""
    model = ModelConfig(name="llama3.1:8b", keep_alive_s=1800, options=configured)
    process = RunnerProcess(10, "sha256-aaa", flavour, 1234, argv, 0.0)
    assert argv_mismatch(model, process) == differ
