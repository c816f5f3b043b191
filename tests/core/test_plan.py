"""The planner's rules, as tables over plain data with an explicit ``now``."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from ollama_keepwarm.core import plan
from ollama_keepwarm.core.config import DaemonConfig, ModelConfig
from ollama_keepwarm.core.ps import PsSnapshot, RunningModel

NOW = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
DAEMON = DaemonConfig(
    poll_interval_s=5, refresh_before_s=120, health_interval_s=3600, conflict_retry_s=1800
)
LLAMA = ModelConfig(name="llama3.1:8b", keep_alive_s=1800, priority=10)
CODER = ModelConfig(name="qwen2.5-coder:7b", keep_alive_s=1800, priority=5)
EMBED = ModelConfig(name="nomic-embed-text", keep_alive_s=math.inf)


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def row(name: str, expires_in_s: float, *, now: datetime = NOW, vram: int = 4_000) -> RunningModel:
    return RunningModel(
        name=name,
        size_bytes=4_000,
        size_vram_bytes=vram,
        digest="d" * 64,
        expires_at=now + s(expires_in_s),
        context_length=4096,
    )


def snap(*rows: RunningModel, at: datetime = NOW) -> PsSnapshot:
    return PsSnapshot(taken_at=at, models=rows)


def warmed(at: datetime, **changes: object) -> plan.ModelState:
    return replace(plan.ModelState(last_warm_ok_at=at, warms=1, cold_load_s=5.0), **changes)


def one(
    model: ModelConfig,
    snapshot: PsSnapshot | None,
    state: plan.ModelState,
    now: datetime = NOW,
    **kw: object,
) -> plan.Decision:
    decisions = plan.decide([model], DAEMON, snapshot, {model.key: state}, now, **kw)  # type: ignore[arg-type]
    assert len(decisions) == 1
    return decisions[0]


class TestDecide:
    """What to do with one model, for every situation the reference describes."""

    def test_absent_never_warmed_is_warmed(self) -> None:
        """A configured model that is not loaded is warmed at once."""
        d = one(LLAMA, snap(), plan.ModelState())
        assert (d.action, d.reason) == (plan.Action.WARM, "not loaded")

    def test_absent_with_warm_in_flight_is_loading_not_vanished(self) -> None:
        """Loads are invisible in /api/ps (§3.5): absent + our warm in flight means loading."""
        st = plan.record_warm_started(plan.ModelState(), NOW - s(3), listed=False)
        d = one(LLAMA, snap(), st)
        assert (d.action, d.reason) == (plan.Action.WAIT, "loading")

    def test_listed_but_never_claimed_is_refreshed(self) -> None:
        """A model someone else loaded gets our lease on the first look."""
        d = one(LLAMA, snap(row("llama3.1:8b", 200)), plan.ModelState())
        assert (d.action, d.reason) == (plan.Action.REFRESH, "claim the lease")

    def test_healthy_lease_waits_until_exact_refresh_time(self) -> None:
        """A lease far from its end waits until expires_at - refresh_before, not the next poll."""
        st = warmed(NOW - s(60))
        d = one(LLAMA, snap(row("llama3.1:8b", 1740)), st)
        assert d.action is plan.Action.WAIT
        assert d.at == NOW + s(1740 - 120)
        assert d.reason == "lease ending"

    def test_lease_inside_refresh_window_is_refreshed(self) -> None:
        """Inside refresh_before of expires_at the lease is renewed."""
        st = warmed(NOW - s(1700))
        d = one(LLAMA, snap(row("llama3.1:8b", 100)), st)
        assert (d.action, d.reason) == (plan.Action.REFRESH, "lease ending")

    def test_short_lease_refreshes_at_half_its_length(self) -> None:
        """A lease shorter than 2 x refresh_before is renewed half-way, never after it ends."""
        short = replace(LLAMA, keep_alive_s=60)
        st = warmed(NOW)
        d = one(short, snap(row("llama3.1:8b", 60)), st)
        assert d.at == NOW + s(30)

    def test_frozen_lease_in_past_is_pinged_once_then_left_alone(self) -> None:
        """A busy model's expires_at stays in the past (§1.3): one ping (no keep_alive: it may
        be drained for another load, §4.5), then nothing until expires_at moves (issue 22)."""
        listed = snap(row("llama3.1:8b", -50))
        first = one(LLAMA, listed, warmed(NOW - s(2000)))
        assert (first.action, first.renew) == (plan.Action.REFRESH, False)
        # We just pinged, and ps still shows the value it had then: frozen.
        after = warmed(NOW - s(10), renewed_expiry=listed.models[0].expires_at)
        d = one(LLAMA, listed, after)
        assert (d.action, d.at) == (plan.Action.WAIT, None)
        assert d.reason.startswith("busy")

    def test_a_lease_that_lapses_anew_after_each_ping_is_not_pinged_again_at_once(self) -> None:
        """A runner Ollama drains for a client's reload has ``d`` = 0: each request that ends
        on it leaves ``expires_at`` at that moment, in the past (§1.3, §1.5), so it is never
        the value our call started with. Chaos seed 3 on 0.32.15: 33 pings in 40 ms held the
        runner busy while the client's reload waited. A lease still lapsed after our own call
        ended is stopping or busy: the next call waits a whole stale interval."""
        pinged_at = NOW - s(0.01)
        lapsed = snap(row("llama3.1:8b", -0.005))  # set when our ping ended, then unmoved
        st = warmed(pinged_at, renewed_expiry=NOW - s(0.02))
        d = one(LLAMA, lapsed, st)
        assert (d.action, d.at) == (plan.Action.WAIT, pinged_at + plan.stale_interval(DAEMON))
        assert d.reason.startswith("stopping or busy")

    @pytest.mark.parametrize(
        ("pinged_ago_s", "expires_in_s", "expected"),
        [
            pytest.param(None, 20, (plan.Action.REFRESH, False), id="due-a-ping-first"),
            pytest.param(1, 59, (plan.Action.REFRESH, True), id="moved-by-our-ping-claim"),
            pytest.param(1, "frozen", (plan.Action.WAIT, False), id="busy-no-claim"),
            pytest.param(1, -1, (plan.Action.WAIT, False), id="drained-no-claim"),
            pytest.param(1, -0.5, (plan.Action.WAIT, False), id="moved-but-lapsed-no-claim"),
            pytest.param(30, 40, (plan.Action.REFRESH, False), id="moved-long-ago-ping-again"),
        ],
    )
    def test_a_clients_lease_is_claimed_only_right_after_our_ping_moved_it(
        self, pinged_ago_s: float | None, expires_in_s: float | str, expected: object
    ) -> None:
        """A runner Ollama marked as a load's victim while busy still shows its old lease
        (§4.5), and a claim (our keep_alive) would revive it, the load waiting (chaos seed 30
        on 0.24.0: a client's load waited 12 s). A ping cannot revive it, and its end
        restarts the timer only of an idle runner with d > 0: a lease moved past our ping's
        end, on the look right after it, is the proof a claim needs."""
        old = NOW + s(20)
        if pinged_ago_s is None:
            st = warmed(NOW - s(300), lease_ours=False, renewed_expiry=NOW - s(250))
        else:
            st = warmed(NOW - s(pinged_ago_s), lease_ours=False, renewed_expiry=old)
        expires = old if expires_in_s == "frozen" else NOW + s(float(expires_in_s))
        d = one(LLAMA, snap(row("llama3.1:8b", (expires - NOW).total_seconds())), st)
        assert (d.action, d.renew) == expected, d.reason

    @pytest.mark.parametrize(
        ("expires_after_look_s", "seen_ago_s", "called"),
        [
            pytest.param(0.0, 0.0, False, id="now-plus-zero-at-the-look"),
            pytest.param(-4.0, 0.0, False, id="within-a-poll-before-the-look"),
            pytest.param(0.0, 3.0, False, id="the-last-look-a-while-ago-said-now"),
            pytest.param(-6.0, 0.0, True, id="older-than-a-poll-pinged-as-before"),
            pytest.param(-50.0, 0.0, True, id="frozen-in-the-past-pinged-once"),
        ],
    )
    def test_a_lease_that_tracks_the_look_is_draining_and_left_alone(
        self, expires_after_look_s: float, seen_ago_s: float, called: bool
    ) -> None:
        """Chaos seed 70 on 0.24.0: a client reloaded the kept model with ``keep_alive: 0``
        and others kept it busy, so ps showed now + 0 at every look (§1.5, ``d`` = 0, first
        request not ended). A stale interval after our last call we pinged it, holding busy
        the runner a client's load waited for. No call renews a ``d`` of 0: none is made until
        it goes (or its ``expires_at`` stops tracking the look)."""
        seen = NOW - s(seen_ago_s)
        listed = snap(row("llama3.1:8b", expires_after_look_s, now=seen), at=seen)
        st = warmed(NOW - s(1000), renewed_expiry=NOW - s(2000))
        d = one(LLAMA, listed, st)
        assert (d.action is plan.Action.REFRESH) is called, d
        if not called:
            assert (d.at, d.renew) == (None, False)
            assert d.reason.startswith("draining")

    @pytest.mark.parametrize(
        "fail",
        [
            pytest.param(
                lambda st, at: plan.record_warm_failed(LLAMA, st, at, 200, "not JSON")[0],
                id="failed",
            ),
            pytest.param(
                lambda st, at: plan.record_call_crashed(LLAMA, st, at, "garbled")[0],
                id="crashed",
            ),
            pytest.param(
                lambda st, at: plan.record_warm_timed_out(
                    LLAMA, st, at, limit_s=10, waited_s=10, configured_s=10
                )[0],
                id="timed-out",
            ),
            pytest.param(
                lambda st, at: plan.record_warm_failed(LLAMA, st, at, 0, "refused")[0],
                id="unreachable",
            ),
        ],
    )
    def test_a_lease_unmoved_by_a_failed_call_is_not_frozen(self, fail: object) -> None:
        """A call that failed tells nothing about the lease: Ollama may never have served it
        (a garbled answer, an outage). Chaos seed 235 on 0.24.0: a refresh answered with
        garbage left ``expires_at`` where it was, the keeper read that as busy (frozen, §1.3)
        and never called again; the lease it had set lapsed. Once the back-off ends, the
        renewal is due as for any lease."""
        listed = snap(row("llama3.1:8b", 60))
        started = plan.record_warm_started(
            warmed(NOW - s(1700)), NOW - s(10), listed=True, row=listed.models[0]
        )
        st = fail(started, NOW - s(9))  # type: ignore[operator]
        d = one(LLAMA, listed, st, NOW + s(5))  # back-off over, 55 s left, 120 s margin
        assert d.action is plan.Action.REFRESH, d.reason

    def test_frozen_lease_in_future_waits_for_it_to_move(self) -> None:
        """Inside the window, if our call did not move expires_at, nothing more is due."""
        listed = snap(row("llama3.1:8b", 60))
        st = warmed(NOW - s(1), renewed_expiry=listed.models[0].expires_at)
        d = one(LLAMA, listed, st, NOW + s(3000))
        assert (d.action, d.at) == (plan.Action.WAIT, None)

    def test_many_polls_of_a_frozen_lease_give_one_call_in_all(self) -> None:
        """Simulated over 10 minutes of 5 s polls, a busy model is called once, without
        keep_alive; when its lease moves (the client's request ended), it is renewed again."""
        listed_expiry = NOW - s(30)
        st = warmed(NOW - s(1000))
        calls = []
        for tick in range(0, 600, 5):
            now = NOW + s(tick)
            d = one(
                LLAMA,
                snap(row("llama3.1:8b", (listed_expiry - now).total_seconds(), now=now), at=now),
                st,
                now,
            )
            if d.action is plan.Action.REFRESH:
                calls.append((tick, d.renew))
                st = replace(st, last_warm_ok_at=now, renewed_expiry=listed_expiry)
        assert calls == [(0, False)]
        moved = snap(row("llama3.1:8b", 1000, now=NOW + s(600)), at=NOW + s(600))
        d = one(LLAMA, moved, st, NOW + s(600))
        assert d.action is plan.Action.WAIT
        assert d.at is not None

    def test_a_lease_of_ours_is_renewed_by_a_ping(self) -> None:
        """Once the runner's duration is ours, renewals leave keep_alive out: the ping restarts
        Ollama's timer with it (§1.3) and never revives a runner drained for a load (§4.5)."""
        st = warmed(NOW - s(1700), lease_ours=True)
        d = one(LLAMA, snap(row("llama3.1:8b", 100)), st)
        assert (d.action, d.reason, d.renew) == (plan.Action.REFRESH, "lease ending", False)

    @pytest.mark.parametrize(
        ("expires_in_s", "claim"),
        [(100, True), (-5, False)],
        ids=["idle: claim with keep_alive", "busy or stopping: ping"],
    )
    def test_keep_alive_only_reaches_an_idle_model(self, expires_in_s: float, claim: bool) -> None:
        """Claiming the lease (or an operator's refresh) carries keep_alive only while
        expires_at lies ahead; a passed one means busy or stopping (issue 22 item 1)."""
        claimed = one(LLAMA, snap(row("llama3.1:8b", expires_in_s)), plan.ModelState())
        assert (claimed.reason, claimed.renew) == ("claim the lease", claim)
        asked = warmed(NOW - s(10), refresh_requested_at=NOW - s(1))
        refresh = one(LLAMA, snap(row("llama3.1:8b", expires_in_s)), asked)
        assert (refresh.reason, refresh.renew) == ("refresh requested", claim)

    @pytest.mark.parametrize(
        ("client_lease_s", "ours"),
        [(1800, True), (60, False), (7200, False)],
        ids=["our length", "a client's shorter one", "a client's longer one"],
    )
    def test_a_lease_a_client_set_is_claimed_again(self, client_lease_s: float, ours: bool) -> None:
        """A new expires_at that no call of ours explains, of another length than ours: the
        next renewal carries keep_alive again."""
        before = snap(row("llama3.1:8b", 600, now=NOW - s(5)), at=NOW - s(5))
        after = snap(row("llama3.1:8b", client_lease_s))
        st = warmed(NOW - s(100), lease_ours=True)
        seen = observe([LLAMA], before, after, {LLAMA.key: st}).states[LLAMA.key]
        assert seen.lease_ours is ours

    def test_forever_lease_gets_health_refresh(self) -> None:
        """keep_alive -1 never expires, but is refreshed every health_interval (§4.8)."""
        st = warmed(NOW - s(10))
        d = one(EMBED, snap(row("nomic-embed-text:latest", 9e9)), st)
        assert (d.action, d.reason) == (plan.Action.WAIT, "health check")
        assert d.at == NOW - s(10) + s(DAEMON.health_interval_s)
        due = one(EMBED, snap(row("nomic-embed-text:latest", 9e9)), warmed(NOW - s(3601)))
        assert (due.action, due.reason) == (plan.Action.REFRESH, "health check")

    def test_health_refresh_comes_before_a_long_lease_ends(self) -> None:
        """A 30-minute lease is still pinged every health_interval, to catch dead runners."""
        daemon = replace(DAEMON, health_interval_s=300)
        st = warmed(NOW - s(60))
        d = plan.decide([LLAMA], daemon, snap(row("llama3.1:8b", 1740)), {LLAMA.key: st}, NOW)[0]
        assert (d.action, d.reason, d.at) == (plan.Action.WAIT, "health check", NOW + s(240))

    def test_resume_refreshes_everything_at_once(self) -> None:
        """After a resume every listed model is refreshed, whatever its expires_at says."""
        st = warmed(NOW - s(60))
        d = one(LLAMA, snap(row("llama3.1:8b", 1700)), st, resumed_at=NOW - s(1))
        assert (d.action, d.reason) == (plan.Action.REFRESH, "resumed from suspend")
        again = one(LLAMA, snap(row("llama3.1:8b", 1700)), warmed(NOW), resumed_at=NOW - s(1))
        assert again.action is plan.Action.WAIT

    def test_requested_refresh(self) -> None:
        """A refresh asked for by the operator happens once: the look after it waits again."""
        st = warmed(NOW - s(60), refresh_requested_at=NOW - s(1))
        d = one(LLAMA, snap(row("llama3.1:8b", 1700)), st)
        assert (d.action, d.reason) == (plan.Action.REFRESH, "refresh requested")
        st = plan.record_warm_started(st, NOW, listed=True, row=d.row)
        st, _ = plan.record_warm_finished(LLAMA, st, NOW + s(0.02), 0.02)
        later = NOW + s(5)
        after = one(LLAMA, snap(row("llama3.1:8b", 1800, now=later), at=later), st, later)
        assert (after.action, after.reason) == (plan.Action.WAIT, "lease ending")

    def test_vanished_model_is_rewarmed_with_cause(self) -> None:
        """A model we warmed that is gone is warmed again, saying why it went."""
        st = warmed(NOW - s(60), vanish_reason="evicted")
        d = one(LLAMA, snap(), st)
        assert (d.action, d.reason) == (plan.Action.WARM, "vanished (evicted)")

    def test_ollama_unreachable_waits(self) -> None:
        """Without a snapshot nothing is decided but waiting."""
        d = one(LLAMA, None, plan.ModelState())
        assert (d.action, d.reason) == (plan.Action.WAIT, "waiting for Ollama")

    def test_paused_model_is_held(self) -> None:
        """A paused model is left alone until the pause ends."""
        st = plan.ModelState(paused_until=NOW + s(60))
        assert one(LLAMA, snap(), st).action is plan.Action.HOLD
        assert one(LLAMA, snap(), st, NOW + s(61)).action is plan.Action.WARM

    def test_backoff_delays_only_this_model(self) -> None:
        """A failing model waits out its backoff; the others are decided as usual."""
        failing = plan.ModelState(backoff_until=NOW + s(30), last_error="not_found: x")
        decisions = plan.decide(
            [LLAMA, CODER], DAEMON, snap(), {LLAMA.key: failing, CODER.key: plan.ModelState()}, NOW
        )
        by_name = {d.model.name: d for d in decisions}
        assert by_name[LLAMA.name].action is plan.Action.WAIT
        assert by_name[LLAMA.name].at == NOW + s(30)
        assert by_name[CODER.name].action is plan.Action.WARM

    def test_decisions_come_in_rank_order(self) -> None:
        """Higher priority first, then config order, so loads happen in a deliberate order."""
        low_first = ModelConfig(name="a", priority=1)
        decisions = plan.decide([low_first, CODER, LLAMA, EMBED], DAEMON, snap(), {}, NOW)
        assert [d.model.name for d in decisions] == [LLAMA.name, CODER.name, "a", EMBED.name]


class TestMatching:
    """ps rows are matched by normalised name, then by shared weights."""

    @pytest.mark.parametrize(
        ("configured", "listed"),
        [
            ("llama3.2", "llama3.2:latest"),
            ("Llama3.2", "llama3.2:latest"),
            ("library/llama3.2", "llama3.2:latest"),
            ("registry.ollama.ai/library/llama3.2:3b", "llama3.2:3b"),
            ("myuser/model", "myuser/model:latest"),
            ("hf.co/bartowski/X-GGUF:Q4_K_M", "hf.co/bartowski/X-GGUF:Q4_K_M"),
        ],
    )
    def test_names_match(self, configured: str, listed: str) -> None:
        """Equivalent spellings of one model match its ps row."""
        model = ModelConfig(name=configured)
        assert plan.match_rows([model], snap(row(listed, 10)))[model.key] is not None

    def test_different_tags_do_not_match_by_name(self) -> None:
        """llama3.2 is llama3.2:latest, not llama3.2:1b."""
        model = ModelConfig(name="llama3.2")
        assert plan.match_rows([model], snap(row("llama3.2:1b", 10)))[model.key] is None

    def test_alias_matches_through_shared_blob(self) -> None:
        """An alias over the same weights is warm when the loader's name is listed (§7.1)."""
        model = ModelConfig(name="llama3.2")
        blobs = {"llama3.2:latest": "sha256-abc", "llama3.2:3b": "sha256-abc"}
        found = plan.match_rows([model], snap(row("llama3.2:3b", 10)), blobs)
        assert found[model.key] is not None
        assert found[model.key].name == "llama3.2:3b"  # type: ignore[union-attr]


def observe(
    models: list[ModelConfig],
    before: PsSnapshot,
    after: PsSnapshot,
    states: dict[str, plan.ModelState],
    **kw: bool,
) -> plan.Observation:
    return plan.observe(models, DAEMON, before, after, states, **kw)


class TestObserve:
    """Why a model vanished, and who is in conflict with whom."""

    def test_expired_lease(self) -> None:
        """A model gone at its expires_at expired."""
        before = snap(row("llama3.1:8b", 3))
        after = snap(at=NOW + s(5))
        obs = observe([LLAMA], before, after, {LLAMA.key: warmed(NOW - s(100))})
        assert [e.fields["cause"] for e in obs.events] == ["expired"]

    @pytest.mark.parametrize(
        ("first_seen_before_s", "cause"),
        [
            (None, "expired"),  # no history: read as an expiry, as before
            (600, "expired"),  # the lease ran its course
            (2.5, "expired"),  # a short lease of ours, seen 2.5 s before its end
            (0, "evicted"),  # d = 0: expires_at was already "now" when first seen
            (-3, "evicted"),  # an `ollama stop`: expires_at set to a past moment
        ],
    )
    def test_a_lease_cut_to_nothing_is_no_expiry(
        self, first_seen_before_s: float | None, cause: str
    ) -> None:
        """A runner Ollama drains (an eviction victim chosen while loading or busy shows now
        + 0 at every look, §4.5; `ollama stop` sets expires_at to now, §1.4) was taken away:
        its loss backs off if it repeats. Only a lease that ran its course expired (0.24.0
        chaos seed 10: a client's load took the slot at every re-warm of ours, at once)."""
        expires = NOW + s(0.5)
        history: dict[str, object] = {}
        if first_seen_before_s is not None:
            history["lease_seen"] = (expires, expires - s(first_seen_before_s))
        before = snap(row("llama3.1:8b", 0.5))
        obs = observe([LLAMA], before, snap(at=NOW + s(1)), {LLAMA.key: warmed(NOW, **history)})
        assert [e.fields["cause"] for e in obs.events] == [cause]

    def test_outage_means_restart(self) -> None:
        """Models lost while Ollama was unreachable were lost to a restart."""
        obs = observe(
            [LLAMA],
            snap(row("llama3.1:8b", 1000)),
            snap(at=NOW + s(5)),
            {LLAMA.key: warmed(NOW)},
            outage=True,
        )
        assert obs.events[0].fields["cause"] == "restart"

    def test_everything_gone_at_once_means_restart(self) -> None:
        """Every model gone between two polls, nothing else listed: a restart we did not see."""
        before = snap(row("llama3.1:8b", 1000), row("other:latest", 1000))
        obs = observe([LLAMA], before, snap(at=NOW + s(5)), {LLAMA.key: warmed(NOW)})
        assert obs.events[0].fields["cause"] == "restart"

    def test_eviction_by_someone_else(self) -> None:
        """Gone early while something else is listed: evicted by another client."""
        before = snap(row("llama3.1:8b", 1000))
        after = snap(row("big:70b", 300, now=NOW + s(5)), at=NOW + s(5))
        obs = observe([LLAMA], before, after, {LLAMA.key: warmed(NOW)})
        assert obs.events[0].fields["cause"] == "evicted"
        assert "evicted_by" not in obs.events[0].fields
        # First time, long after our own load: at once (a fast restart looks the same).
        assert obs.states[LLAMA.key].rewarm_not_before is None

    def test_a_loss_soon_after_our_load_waits(self) -> None:
        """Gone within a minute of our own load: maybe a client reloading it with its options;
        the re-warm waits 1.5 cold loads (7.5 s), so its runner can be seen."""
        loaded = warmed(NOW - s(20), load_window=(NOW - s(25), NOW - s(20)))
        before = snap(row("llama3.1:8b", 1000))
        obs = observe([LLAMA], before, snap(at=NOW + s(5)), {LLAMA.key: loaded})
        assert obs.states[LLAMA.key].rewarm_not_before == NOW + s(5) + s(7.5)
        late = warmed(NOW - s(61), load_window=(NOW - s(66), NOW - s(61)))
        obs = observe([LLAMA], before, snap(at=NOW + s(5)), {LLAMA.key: late})
        assert obs.states[LLAMA.key].rewarm_not_before is None

    def evicted_at(self, st: plan.ModelState, t: datetime) -> plan.ModelState:
        """Listed at ``t``, gone at ``t + 5`` with another client's model in its place."""
        before = snap(row("llama3.1:8b", 1000, now=t), at=t)
        after = snap(row("big:70b", 300, now=t + s(5)), at=t + s(5))
        return observe([LLAMA], before, after, {LLAMA.key: st}).states[LLAMA.key]

    def test_a_loss_to_another_client_waits_before_the_rewarm(self) -> None:
        """The re-warm after a repeated external eviction waits the settle delay: the look
        right after waits, the look after the delay warms."""
        st = self.evicted_at(warmed(NOW - s(100)), NOW - s(100))
        st = replace(st, rewarm_not_before=None)
        st = self.evicted_at(st, NOW)
        soon = one(LLAMA, snap(row("big:70b", 300), at=NOW + s(6)), st, NOW + s(6))
        assert (soon.action, soon.at) == (plan.Action.WAIT, NOW + s(12.5))
        later = one(LLAMA, snap(row("big:70b", 300), at=NOW + s(13)), st, NOW + s(13))
        assert later.action is plan.Action.WARM

    def test_loss_delays_are_capped(self) -> None:
        """However often it repeats, a re-warm never waits more than 10 minutes."""
        st, t, delays = warmed(NOW), NOW, []
        for _ in range(10):
            st = self.evicted_at(st, t)
            wait = st.rewarm_not_before
            delays.append((wait - (t + s(5))).total_seconds() if wait else 0.0)
            t += s(delays[-1] + 60)
        assert delays[0] is None or delays[0] == 0  # the first, long after our load: at once
        assert delays[1:] == [7.5, 15, 30, 60, 120, 240, 480, 600, 600]

    def test_a_loss_long_after_the_last_starts_the_streak_again(self) -> None:
        """Losses more than conflict_retry apart are not "in a row": the short delay again."""
        first = self.evicted_at(warmed(NOW), NOW)
        second = self.evicted_at(first, NOW + s(60))
        assert second.rewarm_not_before == NOW + s(65) + s(7.5)  # in a row: it waits
        again = self.evicted_at(second, NOW + s(60 + DAEMON.conflict_retry_s + 60))
        assert again.rewarm_not_before is None  # a new streak: at once again

    def test_a_lone_model_gone_is_evicted_not_a_restart(self) -> None:
        """One model gone with nothing else listed says neither restart nor OOM (an `ollama
        stop`, an eviction whose loader is still invisible, a restart faster than a poll):
        evicted, and re-warmed at once the first time."""
        before = snap(row("llama3.1:8b", 1000))
        obs = observe([LLAMA], before, snap(at=NOW + s(5)), {LLAMA.key: warmed(NOW)})
        assert obs.events[0].fields["cause"] == "evicted"
        assert obs.events[0].fields["rewarm_delay_s"] == 0.0

    @pytest.mark.parametrize(
        ("expires_after_gone_s", "cause"),
        [(-3, "expired"), (0, "expired"), (0.9, "expired"), (1.5, "evicted"), (60, "evicted")],
    )
    def test_gone_within_a_second_of_expires_at_expired(
        self, expires_after_gone_s: float, cause: str
    ) -> None:
        """ps shows whole seconds and timers fire a little early: a model gone up to 1 s before
        its expires_at expired; any earlier it was evicted."""
        gone = NOW + s(5)
        before = snap(row("llama3.1:8b", 5 + expires_after_gone_s), row("other:latest", 900))
        after = snap(row("other:latest", 895, now=gone), at=gone)
        obs = observe([LLAMA], before, after, {LLAMA.key: warmed(NOW - s(100))})
        assert obs.events[0].fields["cause"] == cause

    def test_repeated_external_evictions_back_off(self) -> None:
        """The third eviction by other clients in a row delays the re-warm, growing each time."""
        st = warmed(NOW)
        delays = []
        t = NOW
        for _ in range(5):
            before = snap(row("llama3.1:8b", 1000, now=t), at=t)
            after = snap(row("big:70b", 300, now=t + s(5)), at=t + s(5))
            st = observe([LLAMA], before, after, {LLAMA.key: st}).states[LLAMA.key]
            wait = st.rewarm_not_before
            delays.append((wait - (t + s(5))).total_seconds() if wait else 0.0)
            t += s(60)
        # The first at once; then 1.5 x the 5 s cold load, twice as long each time in a row.
        assert delays == [0.0, 7.5, 15.0, 30.0, 60.0]

    def test_loaded_model_is_not_vanished(self) -> None:
        """No event for a model that is still listed."""
        obs = observe(
            [LLAMA],
            snap(row("llama3.1:8b", 100)),
            snap(row("llama3.1:8b", 95), at=NOW + s(5)),
            {LLAMA.key: warmed(NOW)},
        )
        assert obs.events == []

    def test_client_with_other_context_is_an_options_mismatch(self) -> None:
        """ps showing another context_length than our own warm gave: reported once (§4.6)."""
        ours = replace(row("llama3.1:8b", 1000), context_length=8192)
        theirs = replace(row("llama3.1:8b", 1000), context_length=4096)
        after_warm = observe(
            [LLAMA], snap(at=NOW - s(5)), snap(ours), {LLAMA.key: warmed(NOW - s(1))}
        )
        assert after_warm.states[LLAMA.key].own_context == 8192
        assert after_warm.events == []
        later = NOW + s(5)
        obs = observe([LLAMA], snap(ours), snap(theirs, at=later), after_warm.states)
        assert [e.name for e in obs.events] == ["options_mismatch"]
        assert (obs.events[0].fields["context_length"], obs.events[0].fields["ours"]) == (
            4096,
            8192,
        )
        again = observe([LLAMA], snap(theirs, at=later), snap(theirs, at=later + s(5)), obs.states)
        assert again.events == []

    @pytest.mark.parametrize("foreign_context", [8192, None])
    def test_a_clients_runner_at_our_context_keeps_the_mismatch(
        self, foreign_context: int | None
    ) -> None:
        """ps shows num_ctx only: a client's runner that replaced another client's at our
        context may still differ in num_thread, num_batch, use_mmap (§4.6), and a call of ours
        would reload it (chaos 0.32.15 seeds 62, 105, 275; 0.24.0 seeds 135, 402). The
        mismatch stays, without naming a context, until the model is gone or we load it."""
        st = warmed(NOW - s(60), own_context=4096, foreign=True, foreign_context=foreign_context)
        st = replace(st, mismatch_reported=True)
        theirs = replace(row("llama3.1:8b", 1000), context_length=8192)
        at_ours = row("llama3.1:8b", 1000)
        before = snap(theirs) if foreign_context else snap(at_ours)
        later = NOW + s(5)
        obs = observe([LLAMA], before, snap(at_ours, at=later), {LLAMA.key: st})
        kept = obs.states[LLAMA.key]
        assert (kept.foreign, kept.foreign_context) == (True, None)
        assert obs.events == []
        d = one(LLAMA, snap(at_ours, at=later), kept, later)
        assert d.action is plan.Action.HOLD
        assert d.reason.startswith(plan.MISMATCH)

    def test_same_context_is_no_mismatch(self) -> None:
        """A refresh that keeps the context we set says nothing."""
        ours = replace(row("llama3.1:8b", 1000), context_length=8192)
        first = observe([LLAMA], snap(at=NOW - s(5)), snap(ours), {LLAMA.key: warmed(NOW - s(1))})
        second = observe([LLAMA], snap(ours), snap(ours, at=NOW + s(5)), first.states)
        assert second.events == []

    def test_gpu_lost(self) -> None:
        """size_vram dropping to 0 while listed means the GPU was lost (§7.7)."""
        states = {LLAMA.key: warmed(NOW, last_row=row("llama3.1:8b", 100))}
        obs = observe(
            [LLAMA],
            snap(row("llama3.1:8b", 100)),
            snap(row("llama3.1:8b", 100, vram=0), at=NOW + s(5)),
            states,
        )
        assert [e.name for e in obs.events] == ["gpu_lost"]

    def conflict_round(
        self,
        states: dict[str, plan.ModelState],
        loader: ModelConfig,
        victim: ModelConfig,
        t: datetime,
    ) -> plan.Observation:
        """Our load of ``loader`` ran during (t, t+5] and ``victim`` vanished meanwhile."""
        states = dict(states)
        st = plan.record_warm_started(states[loader.key], t + s(1), listed=False)
        st, _ = plan.record_warm_finished(loader, st, t + s(4), 3.0)
        states[loader.key] = st
        before = snap(row(victim.name, 1000, now=t), at=t)
        after = snap(row(loader.name, 1800, now=t + s(5)), at=t + s(5))
        return observe([LLAMA, CODER], before, after, states)

    def test_our_load_evicting_a_kept_model_is_attributed(self) -> None:
        """A kept model gone while we loaded another was evicted by our load."""
        states = {LLAMA.key: warmed(NOW), CODER.key: warmed(NOW)}
        obs = self.conflict_round(states, CODER, LLAMA, NOW)
        vanished = [e for e in obs.events if e.name == "model_vanished"]
        assert vanished[0].fields["during_load_of"] == CODER.name
        assert not [e for e in obs.events if e.name == "capacity_conflict"]

    def test_second_eviction_holds_the_lower_priority_model(self) -> None:
        """Two kept models that keep evicting each other: the lower-ranked one is held."""
        states = {LLAMA.key: warmed(NOW), CODER.key: warmed(NOW)}
        first = self.conflict_round(states, CODER, LLAMA, NOW)
        second = self.conflict_round(first.states, LLAMA, CODER, NOW + s(10))
        conflicts = [e for e in second.events if e.name == "capacity_conflict"]
        assert [(e.model, e.fields["keeps"]) for e in conflicts] == [(CODER.name, [LLAMA.name])]
        held = second.states[CODER.key]
        assert held.held_since == NOW + s(15)
        decisions = plan.decide(
            [LLAMA, CODER], DAEMON, snap(at=NOW + s(16)), second.states, NOW + s(16)
        )
        by_name = {d.model.name: d.action for d in decisions}
        assert by_name == {LLAMA.name: plan.Action.WARM, CODER.name: plan.Action.HOLD}

    def test_strikes_further_apart_than_twice_conflict_retry_are_no_conflict(self) -> None:
        """Two evictions by our loads an hour and more apart are coincidences, not a set that
        does not fit: no hold. (Within the window the second one holds: the test above.)"""
        states = {LLAMA.key: warmed(NOW), CODER.key: warmed(NOW)}
        first = self.conflict_round(states, CODER, LLAMA, NOW)
        later = NOW + s(2 * DAEMON.conflict_retry_s + 10)
        second = self.conflict_round(first.states, LLAMA, CODER, later)
        assert [e.fields.get("during_load_of") for e in second.events] == [LLAMA.name]
        assert not [e for e in second.events if e.name == "capacity_conflict"]
        assert second.states[CODER.key].held_since is None

    def outside_eviction(self, states: dict[str, plan.ModelState], t: datetime) -> plan.Observation:
        """Both kept models listed at ``t``; at ``t + 5`` LLAMA is gone, a client's model in."""
        before = snap(row(LLAMA.name, 1000, now=t), row(CODER.name, 1000, now=t), at=t)
        after = snap(
            row(CODER.name, 995, now=t + s(5)), row("big:70b", 300, now=t + s(5)), at=t + s(5)
        )
        return observe([LLAMA, CODER], before, after, states)

    def test_an_outside_eviction_long_after_our_load_is_not_ours(self) -> None:
        """A kept model evicted by another client is not blamed on a load of ours that ended
        long before: no strike, the external-loss rule instead (at once the first time, a
        delay when it repeats), and never a hold."""
        states = {LLAMA.key: warmed(NOW), CODER.key: warmed(NOW)}
        st = plan.record_warm_started(states[CODER.key], NOW + s(1), listed=False)
        states[CODER.key], _ = plan.record_warm_finished(CODER, st, NOW + s(4), 3.0)
        t = NOW + s(100)
        for round_ in range(3):
            obs = self.outside_eviction(states, t)
            gone = obs.events[0]
            assert (gone.name, gone.fields["cause"]) == ("model_vanished", "evicted")
            assert "during_load_of" not in gone.fields
            assert gone.fields["rewarm_delay_s"] == (
                0.0 if round_ == 0 else 7.5 * 2 ** (round_ - 1)
            )
            states = dict(obs.states)
            states[LLAMA.key] = replace(states[LLAMA.key], rewarm_not_before=None)
            t += s(100)
        assert all(st.held_since is None for st in states.values())

    def test_a_failed_load_of_ours_closes_its_window(self) -> None:
        """A load of ours that failed took no room afterwards: a later outside eviction is
        the other client's, not a strike against the failed model."""
        states = {LLAMA.key: warmed(NOW), CODER.key: warmed(NOW)}
        st = plan.record_warm_started(states[CODER.key], NOW + s(1), listed=False)
        states[CODER.key], _ = plan.record_warm_failed(CODER, st, NOW + s(2), 500, "exit 2")
        obs = self.outside_eviction(states, NOW + s(100))
        assert "during_load_of" not in obs.events[0].fields
        assert obs.states[LLAMA.key].strikes == ()

    def test_thrash_is_bounded(self) -> None:
        """However long two models fight, the weaker is held after a bounded number of loads."""
        states = {LLAMA.key: warmed(NOW), CODER.key: warmed(NOW)}
        loads = 0
        t = NOW
        pair = (CODER, LLAMA)
        for _ in range(20):
            decisions = {
                d.model.key: d for d in plan.decide([LLAMA, CODER], DAEMON, snap(at=t), states, t)
            }
            loader, victim = pair
            if decisions[loader.key].action is not plan.Action.WARM:
                break
            loads += 1
            states = self.conflict_round(states, loader, victim, t).states
            pair = (victim, loader)
            t += s(10)
        assert loads <= 3
        assert states[CODER.key].held_since is not None
        assert states[LLAMA.key].held_since is None

    @pytest.mark.parametrize("foreign", [True, False])
    def test_a_held_model_a_client_keeps_loaded_takes_room(self, foreign: bool) -> None:
        """Two models held, the lower one reloaded by a client with its options (left alone,
        chaos 0.32.15 seed 69): its runner stays, so its room is taken, and the top held model
        is not retried into it (its load would evict LLAMA). Held and ours, it is unloaded
        next: its room is the retried model's."""
        held = warmed(NOW, held_since=NOW, held_reason=plan.CAPACITY, held_room=2)
        states = {
            LLAMA.key: warmed(NOW),
            CODER.key: held,
            EMBED.key: replace(held, foreign=foreign),
        }
        listed = snap(row(LLAMA.name, 1000), row(EMBED.name, 1000), at=NOW + s(5))
        obs = observe([LLAMA, CODER, EMBED], listed, listed, states)
        retried = [e for e in obs.events if e.name == "capacity_retry"]
        assert bool(retried) is not foreign
        assert (obs.states[CODER.key].held_since is None) is not foreign

    @pytest.mark.parametrize(
        ("client_vram", "coder_vram", "beside", "retried"),
        [
            pytest.param(1_000, 5_000, 1_000, False, id="a-small-model-left-no-room-for-a-big-one"),
            pytest.param(6_000, 5_000, 1_000, True, id="room-as-large-as-it-freed"),
            pytest.param(1_000, 5_000, 4_000, True, id="it-was-resident-beside-as-much-before"),
            pytest.param(1_000, 0, 0, True, id="a-cpu-runner-the-count-decides"),
        ],
    )
    def test_a_held_model_is_retried_only_into_room_its_vram_fits(
        self, client_vram: int, coder_vram: int, beside: int, retried: bool
    ) -> None:
        """Chaos 0.24.0 seed 295: CODER held beside LLAMA and a client's small model; the
        small one expired, one model fewer was taken for room, and CODER's load evicted LLAMA
        a third time. Where memory decides (§4.4 step 3), room is VRAM: what was resident
        beside it before, or freed since the hold as large as it is."""
        held = warmed(
            NOW,
            held_since=NOW,
            held_reason=plan.CAPACITY,
            vram_bytes=coder_vram,
            vram_beside=beside,
        )
        states = {LLAMA.key: warmed(NOW), CODER.key: held}
        both = snap(row(LLAMA.name, 1000), row("tiny", 100, vram=client_vram), at=NOW + s(5))
        obs = observe([LLAMA, CODER], both, both, states)
        alone = snap(row(LLAMA.name, 1000), at=NOW + s(10))
        obs = observe([LLAMA, CODER], both, alone, obs.states)
        assert [e.name for e in obs.events] == (["capacity_retry"] if retried else [])

    def test_the_room_a_model_needs_is_read_from_its_own_runner_with_our_options(self) -> None:
        """Its VRAM and what fit beside it come from ps rows of its runner with our options."""
        listed = snap(row(LLAMA.name, 1000, vram=3_000), row("tiny", 100, vram=700))
        obs = observe([LLAMA], listed, listed, {LLAMA.key: warmed(NOW)})
        assert (obs.states[LLAMA.key].vram_bytes, obs.states[LLAMA.key].vram_beside) == (3_000, 700)
        foreign = replace(warmed(NOW), foreign=True)
        obs = observe([LLAMA], listed, listed, {LLAMA.key: foreign})
        assert (obs.states[LLAMA.key].vram_bytes, obs.states[LLAMA.key].vram_beside) == (0, 0)


class TestWarmOutcomes:
    """What a finished or failed warm call teaches the planner."""

    def test_cold_load_is_measured(self) -> None:
        """A warm of an absent model records its wall time as the cold load time."""
        st = plan.record_warm_started(plan.ModelState(), NOW, listed=False)
        st, events = plan.record_warm_finished(LLAMA, st, NOW + s(7), 7.0)
        assert st.cold_load_s == 7.0
        assert [e.name for e in events] == ["model_warmed"]

    def test_fast_refresh_is_not_a_reload(self) -> None:
        """A refresh of a loaded model in 20 ms is just a refresh."""
        st = plan.record_warm_started(warmed(NOW - s(100)), NOW, listed=True)
        st, events = plan.record_warm_finished(LLAMA, st, NOW, 0.02)
        assert [e.name for e in events] == ["model_refreshed"]
        assert st.reloads == 0

    def test_two_reloading_refreshes_in_a_row_are_a_mismatch_reported_once(self) -> None:
        """One slow refresh is a repair; two in a row mean other options: warn once, let go."""
        st = warmed(NOW - s(100))
        names = []
        for _ in range(3):
            st = plan.record_warm_started(st, NOW, listed=True)
            st, events = plan.record_warm_finished(LLAMA, st, NOW + s(4), 4.0)
            names.append([e.name for e in events])
        assert names[0] == ["model_refreshed", "runner_reloaded"]
        assert names[1] == ["model_refreshed", "runner_reloaded", "options_mismatch"]
        assert names[2] == ["model_refreshed", "runner_reloaded"]
        assert st.reloads == 3
        assert st.foreign  # left alone while that runner is resident

    def test_an_expected_reload_is_a_repair_not_a_mismatch(self) -> None:
        """A refresh after a runner may have died reloads it: never counted as a mismatch."""
        st = warmed(NOW - s(100))
        for _ in range(3):
            st = plan.record_warm_started(replace(st, expect_reload=True), NOW, listed=True)
            st, events = plan.record_warm_finished(LLAMA, st, NOW + s(4), 4.0)
            assert "options_mismatch" not in [e.name for e in events]
        assert (st.reload_streak, st.foreign, st.reloads) == (0, False, 3)

    @pytest.mark.parametrize(
        ("status", "message", "kind"),
        [
            (404, "model 'x' not found", "not_found"),
            (400, "invalid options", "bad_request"),
            (500, "llama-server reported out-of-memory during startup: x", "out_of_memory"),
            (503, "server busy, please try again.  maximum pending requests exceeded", "busy"),
            (500, "llama-server process has terminated: exit status 2", "server_error"),
            (0, "connection refused", "unreachable"),
        ],
    )
    def test_errors_are_classified(self, status: int, message: str, kind: str) -> None:
        """Ollama's statuses and texts map to kinds with a hint."""
        assert plan.classify_error(status, message)[0] == kind

    def test_failure_backs_off_exponentially_with_jitter(self) -> None:
        """Each failure doubles the wait (±25 %), up to a cap."""
        delays = [plan.backoff_delay_s("server_error", n, "m") for n in range(1, 12)]
        assert 3.75 <= delays[0] <= 6.25
        assert all(0.75 * 5 * 2**i <= d or d >= 300 * 0.75 for i, d in enumerate(delays))
        assert max(delays) <= 300 * 1.25
        assert delays[1] > delays[0]

    def test_jitter_spreads_models_apart(self) -> None:
        """Models failing together do not retry in lockstep: their first waits differ, and the
        same (model, attempt) always gives the same wait (the tests rely on it)."""
        waits = [plan.backoff_delay_s("server_error", 1, f"model-{i}") for i in range(20)]
        assert all(3.75 <= w <= 6.25 for w in waits)
        assert len(set(waits)) == 20
        assert max(waits) - min(waits) > 1.0
        assert 5.0 not in waits
        assert waits == [plan.backoff_delay_s("server_error", 1, f"model-{i}") for i in range(20)]

    @pytest.mark.parametrize(
        ("kind", "first", "cap"),
        [
            ("not_found", 30, 900),
            ("bad_request", 60, 1800),
            ("out_of_memory", 15, 600),
            ("timed_out", 10, 600),
            ("busy", 5, 120),
            ("server_error", 5, 300),
        ],
    )
    def test_each_kind_has_its_own_backoff(self, kind: str, first: float, cap: float) -> None:
        """A missing model waits 30 s first (pulling takes a while), a full queue 5 s."""
        assert 0.75 * first <= plan.backoff_delay_s(kind, 1, LLAMA.name) <= 1.25 * first
        assert 0.75 * cap <= plan.backoff_delay_s(kind, 40, LLAMA.name) <= 1.25 * cap

    def test_repeated_failures_wait_longer_each_time(self) -> None:
        """Two failed warms in a row: the second waits longer, and says it is attempt 2."""
        st = plan.ModelState()
        waits, attempts = [], []
        for attempt in range(3):
            t = NOW + s(1000 * attempt)
            st = plan.record_warm_started(st, t, listed=False)
            st, events = plan.record_warm_failed(LLAMA, st, t, 500, "llama runner exited")
            assert one(LLAMA, snap(at=t), st, t).action is plan.Action.WAIT
            waits.append((st.backoff_until - t).total_seconds())  # type: ignore[operator]
            attempts.append(events[0].fields["attempt"])
        assert attempts == [1, 2, 3]
        assert waits[0] < waits[1] < waits[2]

    def test_a_missing_model_waits_the_not_found_backoff(self) -> None:
        """A 404 is retried after about 30 s, not the generic 5 s: the operator must pull."""
        st = plan.record_warm_started(plan.ModelState(), NOW, listed=False)
        st, _ = plan.record_warm_failed(LLAMA, st, NOW, 404, "model 'x' not found")
        assert one(LLAMA, snap(at=NOW + s(20)), st, NOW + s(20)).action is plan.Action.WAIT
        assert one(LLAMA, snap(at=NOW + s(40)), st, NOW + s(40)).action is plan.Action.WARM

    def test_refresh_of_a_model_we_never_loaded_is_judged_by_the_floor(self) -> None:
        """Without a cold load of ours to compare with, only a refresh slower than the floor
        (0.1 s; a loaded model answers in 10-20 ms) is taken for a reload."""
        for duration, reloaded in ((0.02, False), (0.5, True)):
            st = plan.record_warm_started(plan.ModelState(), NOW, listed=True)
            st, events = plan.record_warm_finished(LLAMA, st, NOW + s(duration), duration)
            assert ("runner_reloaded" in [e.name for e in events]) is reloaded, duration
            assert st.reloads == int(reloaded)

    def test_not_found_hints_ollama_pull(self) -> None:
        """An unknown model backs off and tells the operator to pull it."""
        st = plan.record_warm_started(plan.ModelState(), NOW, listed=False)
        st, events = plan.record_warm_failed(LLAMA, st, NOW, 404, "model 'x' not found")
        assert st.backoff_until is not None
        assert st.backoff_until > NOW
        assert "ollama pull" in str(events[0].fields["hint"])
        assert st.in_flight_since is None

    def test_unreachable_is_not_the_models_fault(self) -> None:
        """A connection error does not back the model off: it is re-warmed when Ollama returns."""
        st = plan.record_warm_started(plan.ModelState(), NOW, listed=False)
        st, events = plan.record_warm_failed(LLAMA, st, NOW, 0, "connection refused")
        assert (st.backoff_until, st.failures, events) == (None, 0, [])

    @pytest.mark.parametrize(
        ("delay", "lease_left", "waits"),
        [
            (5.2, None, 5.2),  # a cold model: its backoff
            (5.2, 300.0, 5.2),  # the lease ends long after the backoff
            (5.2, 5.0, 2.5),  # chaos 0.32.15 seed 212: half of what is left
            (5.2, 1.5, 1.0),  # never sooner than the floor ...
            (5.2, 0.4, 1.0),  # ... however near the end: no busy loop
            (0.8, 5.0, 0.8),  # a backoff already inside the lease
            (5.2, -3.0, 5.2),  # a lease past: busy or stopping, no renewal to save
            (5.2, 100 * 365 * 86400.0, 5.2),  # keep_alive -1
        ],
    )
    def test_a_failed_renewal_is_retried_before_its_lease_ends(
        self, delay: float, lease_left: float | None, waits: float
    ) -> None:
        """A listed model's failed call waits at most half the lease it has left (1 s at least)."""
        lease_end = None if lease_left is None else NOW + s(lease_left)
        assert plan.retry_delay_s(delay, NOW, lease_end) == pytest.approx(waits)

    def test_one_failed_renewal_does_not_let_the_lease_lapse(self) -> None:
        """A renewal answered 500 with 5 s of lease left is tried again in 2.5 s, not after the
        5 s backoff, by which time the runner would have expired (chaos 0.32.15 seed 212)."""
        listed = row("llama3.1:8b", 5, now=NOW)
        st = plan.record_warm_started(warmed(NOW - s(100)), NOW, listed=True, row=listed)
        st, events = plan.record_warm_failed(
            LLAMA, st, NOW, 500, "injected", lease_end=listed.expires_at
        )
        assert events[0].fields["retry_in_s"] == 2.5
        waiting = one(LLAMA, snap(listed, at=NOW + s(2)), st, NOW + s(2))
        assert (waiting.action, waiting.at) == (plan.Action.WAIT, NOW + s(2.5))
        again = one(LLAMA, snap(listed, at=NOW + s(2.6)), st, NOW + s(2.6))
        assert again.action is plan.Action.REFRESH

    def test_a_renewal_failing_every_time_is_retried_a_few_times_and_never_spins(self) -> None:
        """Each failure waits its backoff or half what is left, down to the 1 s floor: seven
        tries in a 30 s lease (0, 4.8, 15.5, 22.8, 26.4, 28.2, 29.2 s), each at least a second
        after the last, then the lease ends and the cold model's own backoff rules."""
        listed = row("llama3.1:8b", 30, now=NOW)
        st, t, tries = warmed(NOW - s(100)), NOW, [NOW]
        while True:
            st = plan.record_warm_started(st, t, listed=True, row=listed)
            st, _ = plan.record_warm_failed(LLAMA, st, t, 500, "x", lease_end=listed.expires_at)
            assert st.backoff_until is not None
            t = st.backoff_until
            if t >= listed.expires_at:
                break
            tries.append(t)
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(tries)]
        assert len(tries) == 7
        assert min(gaps) >= 1.0


class TestSummary:
    """The one-line STATUS."""

    def test_summary_line(self) -> None:
        """Counts warm models and names the next refresh."""
        states = {LLAMA.key: warmed(NOW - s(60)), CODER.key: warmed(NOW - s(60))}
        listed = snap(row("llama3.1:8b", 1740), row("qwen2.5-coder:7b", 600))
        decisions = plan.decide([LLAMA, CODER, EMBED], DAEMON, listed, states, NOW)
        assert (
            plan.summarize(decisions, NOW)
            == "2/3 warm · 1 cold (nomic-embed-text) · next refresh qwen2.5-coder:7b in 8m"
        )

    def test_summary_names_what_is_not_warm(self) -> None:
        """A short STATUS names the models that are not warm, so READY after a timeout says
        what is still cold."""
        loading = plan.record_warm_started(plan.ModelState(), NOW, listed=False)
        failing = plan.ModelState(backoff_until=NOW + s(60), last_error="not_found: x")
        listed = snap(row("llama3.1:8b", 1740))
        states = {LLAMA.key: warmed(NOW), CODER.key: loading, EMBED.key: failing}
        decisions = plan.decide([LLAMA, CODER, EMBED], DAEMON, listed, states, NOW)
        assert plan.summarize(decisions, NOW) == (
            "1/3 warm · 1 loading (qwen2.5-coder:7b) · 1 error (nomic-embed-text) · "
            "next refresh llama3.1:8b in 27m"
        )

    def test_summary_counts_without_names_when_many(self) -> None:
        """Past two models of one state, only the count is shown."""
        many = [ModelConfig(name=f"m{i}") for i in range(3)]
        decisions = plan.decide(many, DAEMON, snap(), {}, NOW)
        assert plan.summarize(decisions, NOW) == "0/3 warm · 3 cold"

    def test_summary_when_down(self) -> None:
        """While Ollama is away the line says where we are waiting."""
        assert plan.summarize([], NOW, ollama_up=False, host="http://h:1") == (
            "waiting for Ollama at http://h:1"
        )


class TestSmallRules:
    """Rules that are one line each, checked by what the planner decides."""

    def test_a_clients_short_lease_is_renewed_half_way(self) -> None:
        """A client set a 60 s lease on our model (last writer wins, §1.3): renewed half-way
        through it, not at once and not after it ends."""
        st = warmed(NOW - s(600))
        listed = snap(row("llama3.1:8b", 60))
        st = observe(
            [LLAMA], snap(row("llama3.1:8b", 1000), at=NOW - s(5)), listed, {LLAMA.key: st}
        )
        d = one(LLAMA, listed, st.states[LLAMA.key])
        assert (d.action, d.reason, d.at) == (plan.Action.WAIT, "lease ending", NOW + s(30))

    def test_a_health_ping_carries_no_keep_alive(self) -> None:
        """A health check must not revive a runner Ollama is draining: renew is False for it,
        and for a lease renewal too until a ping proved the runner idle (then the claim)."""
        health = one(EMBED, snap(row("nomic-embed-text:latest", 9e9)), warmed(NOW - s(3601)))
        lease = one(LLAMA, snap(row("llama3.1:8b", 100)), warmed(NOW - s(1700)))
        assert (health.reason, health.renew) == ("health check", False)
        assert (lease.reason, lease.renew) == ("lease ending", False)
        pinged = warmed(NOW - s(1), renewed_expiry=NOW + s(100))
        claim = one(LLAMA, snap(row("llama3.1:8b", 1799)), pinged)
        assert (claim.reason, claim.renew) == (plan.CLAIM, True)

    def test_a_model_whose_call_ended_after_the_snapshot_waits(self) -> None:
        """Absent from a snapshot asked for before our load ended may mean "was loading":
        wait for the next look instead of loading twice."""
        decisions = plan.decide(
            [LLAMA], DAEMON, snap(), {LLAMA.key: warmed(NOW)}, NOW, unconfirmed={LLAMA.key}
        )
        assert (decisions[0].action, decisions[0].reason) == (plan.Action.WAIT, "confirming")

    def test_a_held_resident_model_is_unloaded_once(self) -> None:
        """A model held for capacity gives its room back: one unload, then it is only held."""
        held = warmed(NOW, held_since=NOW, held_reason=f"{plan.CAPACITY}: x")
        listed = snap(row("llama3.1:8b", 1000))
        assert one(LLAMA, listed, held).action is plan.Action.UNLOAD
        assert one(LLAMA, listed, plan.record_release_sent(held)).action is plan.Action.HOLD

    def test_a_clients_runner_with_other_options_is_left_alone(self) -> None:
        """While a runner with other load options is resident, no call of ours touches it."""
        st = warmed(NOW - s(3000), foreign=True, foreign_context=1024)
        d = one(LLAMA, snap(row("llama3.1:8b", 10)), st)
        assert d.action is plan.Action.HOLD
        assert d.reason.startswith(plan.MISMATCH)
        assert "context 1024" in d.reason

    @pytest.mark.parametrize(
        ("cold_load_s", "timeouts", "limit"),
        [(None, 0, 30), (5, 0, 30), (20, 0, 60), (None, 1, 60), (None, 2, 120), (None, 40, 21600)],
    )
    def test_load_time_limit_learns_and_doubles(
        self, cold_load_s: float | None, timeouts: int, limit: float
    ) -> None:
        """The limit is load_timeout, or three measured cold loads, doubled per timeout, at
        most six hours: giving up aborts the load inside Ollama (§2.6)."""
        st = plan.ModelState(cold_load_s=cold_load_s, timeouts=timeouts)
        assert plan.load_timeout_s(st, 30) == limit


class TestOutOfMemory:
    """Everything dropped at once by an out-of-memory rule (§4.4): named, repaired, bounded."""

    def test_everything_gone_on_a_current_server_is_oom_repeats_back_off(self) -> None:
        """v0.30+: all at once without an outage is 'oom'; the first re-warm is at once, a
        repeat in a row waits a poll, then twice that."""
        states = {LLAMA.key: warmed(NOW), CODER.key: warmed(NOW)}
        waits = []
        t = NOW
        for _ in range(3):
            before = snap(row(LLAMA.name, 1000, now=t), row(CODER.name, 1000, now=t), at=t)
            obs = plan.observe(
                [LLAMA, CODER],
                DAEMON,
                before,
                snap(at=t + s(5)),
                states,
                runtime_oom_expires_all=True,
            )
            assert {e.fields["cause"] for e in obs.events} == {"oom"}
            states = obs.states
            wait = states[LLAMA.key].rewarm_not_before
            assert wait == states[CODER.key].rewarm_not_before  # same time: rank order holds
            waits.append((wait - (t + s(5))).total_seconds() if wait else 0.0)
            t += s(60)
        assert waits == [0.0, 5.0, 10.0]

    def test_everything_gone_during_our_load_is_oom(self) -> None:
        """Our load failing out of memory makes Ollama evict all others (§4.4 item 4)."""
        other = ModelConfig(name="llama3.2:3b", keep_alive_s=1800)
        st = plan.record_warm_started(warmed(NOW), NOW + s(1), listed=False)
        states = {LLAMA.key: st, CODER.key: warmed(NOW), other.key: warmed(NOW)}
        before = snap(row(CODER.name, 1000), row(other.name, 1000))
        obs = plan.observe([LLAMA, CODER, other], DAEMON, before, snap(at=NOW + s(5)), states)
        causes = {e.model: e.fields["cause"] for e in obs.events if e.name == "model_vanished"}
        assert causes == {CODER.name: "oom", other.name: "oom"}


def test_a_resume_forgives_timeouts_not_other_errors() -> None:
    """A call in flight across a suspend timed out: after the resume it is retried at once
    (the resume refresh), while a model that is not pulled keeps its back-off."""
    timed_out, _ = plan.record_warm_timed_out(
        LLAMA, warmed(NOW), NOW, limit_s=600, waited_s=600, configured_s=600
    )
    missing, _ = plan.record_warm_failed(CODER, warmed(NOW), NOW, 404, "model 'x' not found")
    states = plan.forgive_timeouts({LLAMA.key: timed_out, CODER.key: missing})
    assert states[LLAMA.key].backoff_until is None
    assert states[CODER.key].backoff_until == missing.backoff_until
    woke = NOW + s(0.5)
    d = one(LLAMA, snap(row(LLAMA.name, 900)), states[LLAMA.key], NOW + s(1), resumed_at=woke)
    assert (d.action, d.reason) == (plan.Action.REFRESH, plan.RESUMED)


def test_a_crashed_call_backs_off_and_closes_its_load_window() -> None:
    """Issue 22 item 5: a call that raised is over (window closed) and backs off, growing."""
    st = plan.record_warm_started(plan.ModelState(), NOW, listed=False)
    first, events = plan.record_call_crashed(LLAMA, st, NOW + s(1), "ClientResponseError()")
    assert first.in_flight_since is None
    assert first.load_window == (NOW, NOW + s(1))
    assert first.backoff_until is not None
    assert first.backoff_until > NOW + s(1)
    assert [e.name for e in events] == ["call_crashed"]
    second, _ = plan.record_call_crashed(LLAMA, first, NOW + s(60), "again")
    assert second.failures == 2
    assert second.backoff_until is not None
    assert (second.backoff_until - (NOW + s(60))) > (first.backoff_until - (NOW + s(1)))
    assert one(LLAMA, snap(), second, NOW + s(61)).action is plan.Action.WAIT


def test_a_failed_release_is_sent_again_after_a_back_off() -> None:
    """Issue 22 item 9: release_sent is noted only once Ollama took the unload; a failure
    is sent again at the next look, a second one backs off, then the held model is unloaded
    again. Chaos seed 231 on 0.24.0: one garbled answer to the release of a model held for
    capacity kept a kept model, waiting for that room, unloaded 4.8 s more."""
    held = plan.ModelState(held_since=NOW, held_reason=plan.CAPACITY, last_warm_ok_at=NOW)
    listed = snap(row("llama3.1:8b", 600))
    assert one(LLAMA, listed, held).action is plan.Action.UNLOAD
    once, events = plan.record_release_failed(LLAMA, held, NOW, "garbled")
    assert [e.name for e in events] == ["release_failed"]
    assert one(LLAMA, listed, once, NOW + s(1)).action is plan.Action.UNLOAD
    failed, _ = plan.record_release_failed(LLAMA, once, NOW + s(1), "garbled")
    assert one(LLAMA, listed, failed, NOW + s(2)).action is plan.Action.HOLD
    assert failed.backoff_until is not None
    later = failed.backoff_until + s(1)
    assert one(LLAMA, listed, failed, later).action is plan.Action.UNLOAD
    done = plan.record_release_sent(failed)
    assert one(LLAMA, listed, done, later).action is plan.Action.HOLD


@pytest.mark.parametrize(
    ("state", "wanted"),
    [
        # Chaos 0.32.15 seed 572: held for capacity while its timed-out load backs off.
        (dict(held_since=NOW, held_reason=plan.CAPACITY), plan.Action.UNLOAD),
        # pause --unload while a failed load backs off: the operator's unload is done.
        (dict(paused_until=NOW + s(3600), unload_wanted=True), plan.Action.UNLOAD),
        # Only a failed release's own back-off delays the next release.
        (
            dict(held_since=NOW, held_reason=plan.CAPACITY, last_error="release failed: x"),
            plan.Action.HOLD,
        ),
    ],
    ids=["held", "paused with unload", "release failed"],
)
def test_a_load_backing_off_does_not_delay_a_release(
    state: dict[str, object], wanted: plan.Action
) -> None:
    """A model backing off after a failed load is still released when it is held, paused
    with ``--unload`` or out of its window: the back-off is for its next load. Else the held
    model's room is never freed and the kept model below it waits on it ("making room")."""
    backing_off = replace(
        plan.ModelState(last_warm_ok_at=NOW - s(60), failures=1),
        backoff_until=NOW + s(11),
        last_error="timed_out: no answer within 3s",
    )
    st = replace(backing_off, **state)  # type: ignore[arg-type]
    listed = snap(row("llama3.1:8b", 600))
    assert one(LLAMA, listed, st, NOW + s(1)).action is wanted


@pytest.mark.parametrize(
    ("status", "permanent"),
    [(404, True), (400, True), (0, False), (500, False), (502, False)],
    ids=["deleted", "bad name", "timeout or outage", "server error", "garbled"],
)
def test_only_a_show_that_cannot_succeed_is_given_up(status: int, permanent: bool) -> None:
    """Issue 22 item 6: a timeout is transient; only 404/400 file a name as unshowable."""
    wait = plan.show_failure(status, 1, "llama3.1:8b")
    assert (wait is None) is permanent
    if wait is not None:
        assert wait > 0
        later = plan.show_failure(status, 3, "llama3.1:8b")
        assert later is not None
        assert later > wait


def test_a_warm_that_answered_like_a_loaded_model_was_no_load() -> None:
    """Issue 22 item 7: absent from ps only because its alias was not matched yet (its blob
    unknown): the runner was resident, no load time is learnt."""
    st = plan.record_warm_started(plan.ModelState(), NOW, listed=False)
    quick, events = plan.record_warm_finished(LLAMA, st, NOW, 0.001, resident=True)
    assert quick.cold_load_s is None
    assert events[0].fields["loaded"] is False
    slow, events = plan.record_warm_finished(LLAMA, st, NOW, 4.2)
    assert slow.cold_load_s == 4.2
    assert events[0].fields["loaded"] is True


def test_pause_with_unload_waits_for_our_load_then_unloads() -> None:
    """Issue 22 item 4: paused with --unload is a state: while our load is in flight it holds,
    once the model is listed and nothing of ours runs it is unloaded, once."""
    paused = plan.pause_with_unload(plan.apply_pause(plan.ModelState(), NOW + s(3600)))
    loading = replace(paused, in_flight_since=NOW)
    listed = snap(row("llama3.1:8b", 3600))
    assert one(LLAMA, snap(), loading).action is plan.Action.HOLD
    assert one(LLAMA, listed, paused).action is plan.Action.UNLOAD
    assert one(LLAMA, listed, plan.record_release_sent(paused)).action is plan.Action.HOLD
    resumed = plan.apply_pause(paused, None)
    assert not resumed.unload_wanted
