"""The keeper against Ollama's scheduler: no feedback loop that causes the cold starts it prevents.

Each test is one of the loops issue 10 saw on a real Ollama, reproduced against the fake over real
sockets: a client's other ``num_ctx``, a client's short lease, a load slower than ``load_timeout``,
two kept models that do not fit, and the races and pings around them.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from helpers import FAST_FAKE, eventually, make_config, more_looks, running_keeper
from ollama_keepwarm.daemon.clocks import ManualClocks
from ollama_keepwarm.daemon.host import HostKeeper
from ollama_keepwarm.fake import FakeOllama

LLAMA = "llama3.1:8b"

# Every scenario runs against the old (0.24) and the current (0.32) scheduler rules.
pytestmark = pytest.mark.parametrize("ollama_version", ["0.24.0", "0.32.15"])


def listed(fake: FakeOllama) -> set[str]:
    return {r.name for r in fake.runners()}


def keeper_calls(fake: FakeOllama, model: str) -> list[Any]:
    """The keeper's load/renew/ping calls: empty prompt, no messages, no input."""
    return [
        r
        for r in fake.requests
        if r.path in {"/api/generate", "/api/embed"}
        and isinstance(r.body, dict)
        and r.body.get("model") == model
        and not r.body.get("prompt")
        and not r.body.get("input")
    ]


async def post(fake: FakeOllama, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.post(fake.url + path, json=body) as r:
        result: dict[str, Any] = await r.json()
        return result


def host_of(keeper: Any) -> HostKeeper:
    host: HostKeeper = next(iter(keeper.hosts.values()))
    return host


def state_of(keeper: Any, name: str) -> dict[str, Any]:
    models = [m for h in keeper.status()["hosts"] for m in h["models"] if m["name"] == name]
    return models[0] if models else {"state": None}


async def test_client_with_other_num_ctx_is_left_alone_once_seen(ollama_version: str) -> None:
    """A client loading the model with num_ctx 1024 while the config has no options: after the
    keeper sees it, the keeper causes no more runner starts however long the client goes on."""
    async with FakeOllama(
        ollama_version=ollama_version, **{**FAST_FAKE, "load_seconds_per_gb": 0.1}
    ) as fake:
        config = make_config(fake.url, [{"name": LLAMA, "keep_alive": "1h"}])
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await asyncio.wait_for(keeper.ready.wait(), 10)
                request = {"model": LLAMA, "prompt": "hi", "options": {"num_ctx": 1024}}
                seen = False
                for _ in range(60):  # the client's own pace: one request every ~0.1 s
                    await post(fake, "/api/generate", {**request, "stream": False})
                    seen = seen or any(e["event"] == "options_mismatch" for e in logs)
                    if seen:
                        break
                    await asyncio.sleep(0.1)
                assert seen, "the mismatch was never seen"
                loads_at_detection = len(fake.loads)
                for _ in range(20):
                    await post(fake, "/api/generate", {**request, "stream": False})
                await more_looks(keeper, 10)
                assert len(fake.loads) == loads_at_detection  # keeper-caused reloads: 0
                assert state_of(keeper, LLAMA)["state"] == "mismatch"
                assert any(r.options.get("num_ctx") == 1024 for r in fake.runners())
                metrics = keeper.metrics.exposition().decode()
                gauge = f'model_options_mismatch{{host="{fake.url}",model="{LLAMA}"}} 1.0'
                assert f"ollama_keepwarm_{gauge}" in metrics
    warnings = [e for e in logs if e["event"] == "options_mismatch"]
    assert len(warnings) == 1
    assert warnings[0]["context_length"] == 1024
    assert "options = { num_ctx = 1024 }" in warnings[0]["fix"]


async def test_mismatched_runner_gone_is_warmed_again_with_our_options(ollama_version: str) -> None:
    """Left alone while the client's runner is resident; warmed with ours once it is gone."""
    async with FakeOllama(ollama_version=ollama_version, **FAST_FAKE) as fake:
        config = make_config(fake.url, [{"name": LLAMA, "keep_alive": "1h"}])
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            ours = fake.runners()[0].options.get("num_ctx")
            await post(
                fake,
                "/api/generate",
                {"model": LLAMA, "prompt": "hi", "stream": False, "options": {"num_ctx": 1024}},
            )
            await eventually(
                lambda: state_of(keeper, LLAMA)["state"] == "mismatch", what="mismatch seen"
            )
            await fake.unload(LLAMA)  # the client's runner goes away
            await eventually(
                lambda: any(r.options.get("num_ctx") == ours for r in fake.runners()),
                what="our runner back",
            )
            await eventually(lambda: state_of(keeper, LLAMA)["state"] == "warm", what="warm")


async def test_short_client_lease_is_renewed_before_it_ends(ollama_version: str) -> None:
    """A client's keep_alive shorter than refresh_before, right after our renewal: the keeper
    renews before that lease ends (the frozen-lease rule only holds when nothing moved): a
    ping first, which cannot revive a runner a load marked as its victim, then, as the ping
    moved the lease (the runner was idle), the claim with our keep_alive."""
    async with FakeOllama(ollama_version=ollama_version, **FAST_FAKE) as fake:
        config = make_config(fake.url, [{"name": LLAMA, "keep_alive": "1h"}], refresh_before="2s")
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            renewals = len(keeper_calls(fake, LLAMA))
            await post(
                fake,
                "/api/generate",
                {"model": LLAMA, "prompt": "hi", "stream": False, "keep_alive": "1s"},
            )
            client_at = datetime.now(UTC)
            await eventually(
                lambda: any(
                    c.body.get("keep_alive") == "1h0m0s"
                    for c in keeper_calls(fake, LLAMA)[renewals:]
                ),
                within=5,
                what="the lease claimed back",
            )
            ping = keeper_calls(fake, LLAMA)[renewals]
            assert "keep_alive" not in ping.body
            assert (ping.time - client_at).total_seconds() < 1.0  # before the 1 s lease ended
            await more_looks(keeper, 5)
            assert LLAMA in listed(fake)
            assert not fake.evictions


async def test_load_slower_than_load_timeout_backs_off_and_waits_longer(
    ollama_version: str,
) -> None:
    """A load longer than load_timeout: a timeout, not an outage; the next attempt waits longer
    and after a back-off, so the load is never aborted in a loop and finally succeeds."""
    async with FakeOllama(
        ollama_version=ollama_version, **{**FAST_FAKE, "load_seconds_per_gb": 0.3}
    ) as fake:  # ~1.5 s
        config = make_config(
            fake.url,
            [{"name": LLAMA, "keep_alive": "1h"}, {"name": "tiny", "keep_alive": "1h"}],
        )
        config = config.__class__(
            ollama=config.ollama.__class__(**{**_fields(config.ollama), "load_timeout_s": 0.4}),
            daemon=config.daemon,
            http=config.http,
            models=config.models,
            source=config.source,
        )
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await eventually(
                    lambda: any(e["event"] == "warm_timed_out" for e in logs), what="a timeout"
                )
                assert "tiny:latest" in listed(fake) or await eventually(
                    lambda: "tiny:latest" in listed(fake), what="the other model carries on"
                )
                first = next(e for e in logs if e["event"] == "warm_timed_out")
                assert first["load_timeout_s"] == 0.4
                assert first["next_timeout_s"] > 0.4
                assert first["retry_in_s"] >= 7.5  # 10 s ±25 %: never retried at once
                assert not any(e["event"] == "ollama_down" for e in logs)
                await more_looks(keeper, 10)
                llama_loads = [ld for ld in fake.loads if ld.model == LLAMA]
                assert len(llama_loads) == 1  # one aborted load, then waiting, not a loop


def _fields(obj: Any) -> dict[str, Any]:
    return {name: getattr(obj, name) for name in obj.__dataclass_fields__}


async def test_top_priority_model_is_never_evicted_for_a_held_one(ollama_version: str) -> None:
    """OLLAMA_MAX_LOADED_MODELS=1, priorities 10 and 0: once the low one is held, it is not
    tried again on a timer, so the priority-10 model is never evicted again."""
    async with FakeOllama(ollama_version=ollama_version, **FAST_FAKE, max_loaded=1) as fake:
        models = [
            {"name": "qwen2.5-coder:7b", "keep_alive": "1h", "priority": 0},
            {"name": LLAMA, "keep_alive": "1h", "priority": 10},
        ]
        config = make_config(fake.url, models, conflict_retry="300ms")
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, notifier):
                await eventually(
                    lambda: any(e["event"] == "capacity_conflict" for e in logs), what="conflict"
                )
                await eventually(lambda: listed(fake) == {LLAMA}, what="llama kept")
                evictions = len(fake.evictions)
                await asyncio.wait_for(keeper.ready.wait(), 10)
                await more_looks(keeper, 30)  # ten conflict_retry periods and more
                assert len(fake.evictions) == evictions
                assert listed(fake) == {LLAMA}
                assert state_of(keeper, "qwen2.5-coder:7b")["state"] == "conflict"
                assert "READY=1" in notifier.messages
    conflict = next(e for e in logs if e["event"] == "capacity_conflict")
    assert (conflict["model"], conflict["keeps"]) == ("qwen2.5-coder:7b", [LLAMA])


async def test_refreshing_one_model_leaves_another_models_hold_alone(
    ollama_version: str,
) -> None:
    """``refresh llama`` asks for llama only: the held model stays held (chaos seed 3 on
    0.24.0: a refresh of the top model released the low one, whose load evicted it again).
    ``refresh`` of the held model itself, or of every model, tries it again."""
    async with FakeOllama(ollama_version=ollama_version, **FAST_FAKE, max_loaded=1) as fake:
        models = [
            {"name": "qwen2.5-coder:7b", "keep_alive": "1h", "priority": 0},
            {"name": LLAMA, "keep_alive": "1h", "priority": 10},
        ]
        config = make_config(fake.url, models, conflict_retry="300ms")
        async with running_keeper(config) as (keeper, _):
            await eventually(
                lambda: (
                    state_of(keeper, "qwen2.5-coder:7b")["state"] == "conflict"
                    and listed(fake) == {LLAMA}
                ),
                what="the low one held, the high one loaded",
            )
            evictions = len(fake.evictions)
            keeper.refresh(LLAMA)
            await eventually(
                lambda: (
                    len(keeper_calls(fake, LLAMA)) > 0
                    and state_of(keeper, LLAMA)["state"] == "warm"
                ),
                what="llama refreshed",
            )
            await more_looks(keeper, 10)
            assert state_of(keeper, "qwen2.5-coder:7b")["state"] == "conflict"
            assert len(fake.evictions) == evictions
            keeper.refresh("qwen2.5-coder:7b")
            await eventually(
                lambda: (
                    state_of(keeper, "qwen2.5-coder:7b")["state"] != "conflict"
                    or len(fake.evictions) > evictions
                ),
                what="the held one tried again",
            )


async def test_three_kept_models_room_for_two_hold_the_lowest(ollama_version: str) -> None:
    """Whole-set priorities: with room for two of three, the lowest-ranked is held, whichever
    pair happened to collide; the other two stay loaded."""
    async with FakeOllama(ollama_version=ollama_version, **FAST_FAKE, max_loaded=2) as fake:
        models = [
            {"name": "llama3.2:3b", "keep_alive": "1h", "priority": 0},
            {"name": "qwen2.5-coder:7b", "keep_alive": "1h", "priority": 5},
            {"name": LLAMA, "keep_alive": "1h", "priority": 10},
        ]
        config = make_config(fake.url, models)
        async with running_keeper(config) as (keeper, _):
            await eventually(
                lambda: (
                    listed(fake) == {LLAMA, "qwen2.5-coder:7b"}
                    and state_of(keeper, "llama3.2:3b")["state"] == "conflict"
                ),
                what="the two higher ones loaded, the lowest held",
            )
            loads = len(fake.loads)
            await more_looks(keeper, 20)
            assert len(fake.loads) == loads
            assert state_of(keeper, LLAMA)["state"] == "warm"
            assert state_of(keeper, "qwen2.5-coder:7b")["state"] == "warm"


async def test_held_model_comes_back_when_room_appears(ollama_version: str) -> None:
    """Evidence of room (another client's model gone) ends a hold; a timer never does."""
    async with FakeOllama(
        ollama_version=ollama_version, **FAST_FAKE, max_loaded=2, memory_bytes=128 * 2**30
    ) as fake:
        # Another client's model, never the first victim (an infinite lease sorts last, §4.5).
        await post(fake, "/api/generate", {"model": "llama3.3:70b", "keep_alive": -1})
        models = [
            {"name": "qwen2.5-coder:7b", "keep_alive": "1h", "priority": 0},
            {"name": LLAMA, "keep_alive": "1h", "priority": 10},
        ]
        config = make_config(fake.url, models, conflict_retry="200ms")
        async with running_keeper(config) as (keeper, _):
            await eventually(
                lambda: state_of(keeper, "qwen2.5-coder:7b")["state"] == "conflict",
                what="the low one held",
            )
            await more_looks(keeper, 10)
            assert state_of(keeper, "qwen2.5-coder:7b")["state"] == "conflict"
            await fake.unload("llama3.3:70b")  # the other client's model goes away
            await eventually(
                lambda: listed(fake) == {LLAMA, "qwen2.5-coder:7b"}, what="both kept now"
            )


async def test_health_ping_carries_no_keep_alive(ollama_version: str) -> None:
    """A health ping leaves the duration as it is (§0 fact 2); a lease renewal sets ours."""
    async with FakeOllama(ollama_version=ollama_version, **FAST_FAKE) as fake:
        config = make_config(
            fake.url, [{"name": LLAMA, "keep_alive": "1h"}], health_interval="300ms"
        )
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            await eventually(lambda: len(keeper_calls(fake, LLAMA)) >= 3, what="two pings")
            first, *pings = keeper_calls(fake, LLAMA)
            assert first.body["keep_alive"] == "1h0m0s"
            assert pings
            assert all("keep_alive" not in p.body for p in pings)


async def test_health_ping_does_not_revive_a_draining_victim(ollama_version: str) -> None:
    """Our busy model chosen for eviction drains; our pings meanwhile do not revive it, so the
    other client's load goes ahead when the generation ends (§4.5)."""
    async with FakeOllama(ollama_version=ollama_version, **FAST_FAKE, max_loaded=1) as fake:
        config = make_config(
            fake.url, [{"name": LLAMA, "keep_alive": "1h"}], health_interval="100ms"
        )
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            generation = {"model": LLAMA, "prompt": "x", "stream": False}
            busy = asyncio.create_task(
                post(fake, "/api/generate", {**generation, "options": {"num_predict": 1500}})
            )
            await eventually(lambda: any(r.busy for r in fake.runners()), what="busy")
            other = asyncio.create_task(post(fake, "/api/generate", {"model": "tiny"}))
            await eventually(lambda: fake.evictions, what="ours chosen to make room")
            pings = len(keeper_calls(fake, LLAMA))
            await eventually(lambda: len(keeper_calls(fake, LLAMA)) > pings, what="a ping")
            await busy
            reply = await asyncio.wait_for(other, 10)
            assert reply["done_reason"] == "load"


async def test_one_slow_repair_does_not_delay_other_renewals(ollama_version: str) -> None:
    """A 70B reload in flight; a small model's 1 s lease is still renewed in time."""
    big = {**FAST_FAKE, "load_seconds_per_gb": 0.06, "memory_bytes": 128 * 2**30}
    async with FakeOllama(ollama_version=ollama_version, **big) as fake:  # the 70B reload: ~2.5 s
        models = [
            {"name": "llama3.3:70b", "keep_alive": "1h", "priority": 10},
            {"name": "tiny", "keep_alive": "1s"},
        ]
        config = make_config(fake.url, models)
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 20)
            fake.crash("llama3.3:70b")
            keeper.refresh("llama3.3:70b")  # the repair: a reload of ~2.5 s
            await eventually(
                lambda: any(
                    ld.model == "llama3.3:70b" and ld.finished is None for ld in fake.loads
                ),
                what="the repair under way",
            )
            while any(ld.finished is None for ld in fake.loads):
                assert "tiny:latest" in listed(fake)
                await asyncio.sleep(0.05)
            assert [ld.model for ld in fake.loads if ld.model == "tiny:latest"] == ["tiny:latest"]


async def test_verify_on_an_embedding_model_embeds(ollama_version: str) -> None:
    """verify = true after a resume: an embedding-only model is checked through /api/embed."""
    async with FakeOllama(ollama_version=ollama_version, **FAST_FAKE) as fake:
        config = make_config(
            fake.url, [{"name": "nomic-embed-text", "keep_alive": -1, "verify": True}]
        )
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await asyncio.wait_for(keeper.ready.wait(), 10)
                keeper.note_resume(3600)
                await eventually(
                    lambda: any(e["event"] in {"model_verified", "verify_failed"} for e in logs),
                    what="the verification",
                )
    assert any(e["event"] == "model_verified" for e in logs)
    checks = [r for r in fake.requests if r.path == "/api/embed" and r.body.get("input")]
    assert checks
    assert checks[0].body["input"] == "ping"


async def test_crash_repairs_are_not_options_mismatches(ollama_version: str) -> None:
    """Runners killed, then refreshed: each refresh reloads once; that is no mismatch."""
    async with FakeOllama(ollama_version=ollama_version, **FAST_FAKE) as fake:
        models = [
            {"name": LLAMA, "keep_alive": "1h"},
            {"name": "qwen2.5-coder:7b", "keep_alive": "1h"},
        ]
        config = make_config(fake.url, models)
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await asyncio.wait_for(keeper.ready.wait(), 10)
                for name in (LLAMA, "qwen2.5-coder:7b"):
                    fake.crash(name)
                keeper.refresh(None)
                await eventually(
                    lambda: len([e for e in logs if e["event"] == "runner_reloaded"]) == 2,
                    what="both repaired",
                )
                await more_looks(keeper, 5)
    assert not [e for e in logs if e["event"] == "options_mismatch"]


async def test_pause_unload_is_no_eviction_and_status_says_not_loaded(ollama_version: str) -> None:
    """pause --unload: the model is shown not loaded at once, and no repair is counted."""
    async with FakeOllama(
        ollama_version=ollama_version, **{**FAST_FAKE, "unload_delay_s": 0.3}
    ) as fake:
        config = make_config(fake.url, [{"name": LLAMA, "keep_alive": "1h"}])
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            await keeper.pause(LLAMA, None, unload=True)
            entry = state_of(keeper, LLAMA)
            assert (entry["state"], entry["listed_as"]) == ("paused", None)
            await more_looks(keeper, 3)
            text = keeper.metrics.exposition().decode()
            assert 'cause="evicted"' not in text


async def test_a_look_during_a_warm_never_loads_twice(ollama_version: str) -> None:
    """A slow /api/ps answer straddles the end of our load: the stale snapshot must not send a
    second load, nor overwrite the measured cold load time with a ~10 ms renewal."""
    async with FakeOllama(ollama_version=ollama_version, **FAST_FAKE) as fake:
        fake.set_delay("/api/ps", 0.3)
        config = make_config(fake.url, [{"name": LLAMA, "keep_alive": "1h"}])
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 15)
            await more_looks(keeper, 5)
            calls = keeper_calls(fake, LLAMA)
            assert len(calls) == 1
            st = host_of(keeper).states[next(iter(host_of(keeper).states))]
            assert st.cold_load_s is not None
            assert st.cold_load_s > 0.1


async def test_ollama_stop_during_our_load_holds_nothing(ollama_version: str) -> None:
    """A kept model stopped by a user while we load another (room for both): re-warmed, and
    nothing is held for a capacity conflict that was not there."""
    async with FakeOllama(
        ollama_version=ollama_version, **{**FAST_FAKE, "load_seconds_per_gb": 0.2}
    ) as fake:
        models = [
            {"name": "tiny", "keep_alive": "1h", "priority": 10},
            {"name": LLAMA, "keep_alive": "1h", "priority": 0},
        ]
        config = make_config(fake.url, models)
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await eventually(
                    lambda: any(ld.model == LLAMA and ld.finished is None for ld in fake.loads),
                    what="our long load under way",
                )
                await fake.unload("tiny")
                await asyncio.wait_for(keeper.ready.wait(), 15)
                await eventually(lambda: listed(fake) == {"tiny:latest", LLAMA}, what="both")
                await more_looks(keeper, 5)
    assert not [e for e in logs if e["event"] == "capacity_conflict"]


@pytest.mark.parametrize("failures", [1030, 5000])
async def test_a_model_failing_for_ever_does_not_kill_the_lane(
    failures: int, ollama_version: str
) -> None:
    """Back-off exponents are capped: thousands of failures in a row stay a back-off."""
    async with FakeOllama(ollama_version=ollama_version, **FAST_FAKE) as fake:
        config = make_config(fake.url, [{"name": "no-such-model"}, {"name": LLAMA}])
        async with running_keeper(config) as (keeper, _):
            await eventually(lambda: keeper.hosts, what="the host loop")
            host = host_of(keeper)
            key = next(k for k in host.states if k.startswith("no-such"))
            host.states[key] = replace(host.states[key], failures=failures)
            await asyncio.wait_for(keeper.ready.wait(), 10)
            assert state_of(keeper, "no-such-model")["state"] == "error"
            keeper.refresh(LLAMA)
            await more_looks(keeper, 3)
            assert all(not w.done() for w in host._workers)


async def test_a_backward_wall_clock_step_does_not_stop_polling(
    ollama_version: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """NTP or `date -s` steps the wall clock back an hour: polling goes on (monotonic cadence).

    The step is made for the keeper's clocks and for APScheduler's notion of now, as a real
    step would be for both; a wall-clock scheduler would wait an hour for its next run."""
    import apscheduler.schedulers.base as apscheduler_base

    clocks = ManualClocks()
    async with FakeOllama(ollama_version=ollama_version, **FAST_FAKE) as fake:
        config = make_config(fake.url, [{"name": LLAMA, "keep_alive": "1h"}])
        async with running_keeper(config, clocks=clocks) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)

            class SteppedBack(datetime):
                @classmethod
                def now(cls, tz: Any = None) -> Any:
                    return datetime.now(tz) - timedelta(hours=1)

            monkeypatch.setattr(apscheduler_base, "datetime", SteppedBack)
            clocks.step_wall(-3600)
            polls = len([r for r in fake.requests if r.path == "/api/ps"])
            await eventually(
                lambda: len([r for r in fake.requests if r.path == "/api/ps"]) >= polls + 10,
                within=5,
                what="ten more polls after the step",
            )


async def test_a_busy_kept_model_gives_way_to_another_clients_load(ollama_version: str) -> None:
    """Issue 22 item 1: one model fits; a client keeps the kept model busy and another client
    asks for another model. Ollama drains the kept one for it (§4.5): nothing of ours may
    revive it, so the other client is answered once the first one's request ends."""
    async with FakeOllama(ollama_version=ollama_version, **FAST_FAKE, max_loaded=1) as fake:
        config = make_config(fake.url, [{"name": LLAMA, "keep_alive": "2s"}], refresh_before="1s")
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            long_turn = {"model": LLAMA, "prompt": "hi", "stream": False}
            a = asyncio.create_task(
                post(fake, "/api/generate", {**long_turn, "options": {"num_predict": 4000}})
            )
            await eventually(lambda: any(r.busy for r in fake.runners()), what="busy")
            other = {"model": "qwen2.5-coder:7b", "prompt": "hi", "stream": False}
            b = asyncio.create_task(post(fake, "/api/generate", other))
            await a
            # Alone, B is answered right after A (its load is ~0.25 s); a revived runner makes
            # it wait for the kept model's lease, renewed forever.
            answer = await asyncio.wait_for(b, 10)
            assert answer.get("done"), answer
            evicted = [e for e in fake.evictions if e.victim == LLAMA]
            assert evicted
            assert evicted[0].for_model == "qwen2.5-coder:7b"


async def test_a_backward_wall_clock_step_lapses_no_lease(ollama_version: str) -> None:
    """Issue 22 item 2: the wall clock steps back a minute, for Ollama and for us, while a
    3 s lease runs. Ollama's timers are monotonic, so the lease printed before the step ends a
    minute "earlier" than it says: it is renewed in time, and never expires."""
    clocks = ManualClocks()
    async with FakeOllama(ollama_version=ollama_version, **FAST_FAKE) as fake:
        config = make_config(fake.url, [{"name": LLAMA, "keep_alive": "3s"}], refresh_before="1s")
        async with running_keeper(config, clocks=clocks) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            loads = len(fake.loads)
            fake.clock.step_wall(-60)
            clocks.step_wall(-60)
            await more_looks(keeper, 80)  # 8 s of 100 ms polls: more than two leases
            assert LLAMA in listed(fake)
            assert len(fake.loads) == loads, "the lease lapsed and the model was loaded again"


async def test_a_kept_runner_with_a_zero_duration_is_left_to_drain(ollama_version: str) -> None:
    """Chaos seed 70 on 0.24.0: a client loaded the kept model with ``keep_alive: 0`` and kept
    it busy, so ps showed now + 0 at every look (§1.5). We pinged it every stale interval,
    each ping holding busy a runner another client's load may wait for; none could renew a
    duration of 0. After the first look's claim, nothing is called while it drains."""
    async with FakeOllama(ollama_version=ollama_version, **FAST_FAKE) as fake:
        generation = {"model": LLAMA, "prompt": "x", "stream": False, "keep_alive": 0}
        busy = asyncio.create_task(
            post(fake, "/api/generate", {**generation, "options": {"num_predict": 60_000}})
        )
        try:
            await eventually(lambda: any(r.busy for r in fake.runners()), what="busy")
            config = make_config(fake.url, [{"name": LLAMA, "keep_alive": "1h"}])
            async with running_keeper(config) as (keeper, _):
                await eventually(lambda: keeper_calls(fake, LLAMA), what="the first claim")
                claimed = len(keeper_calls(fake, LLAMA))
                await more_looks(keeper, 20)  # five stale intervals (400 ms) of 100 ms looks
                assert not busy.done()
                assert len(keeper_calls(fake, LLAMA)) == claimed
                assert state_of(keeper, LLAMA).get("reason", "").startswith("draining")
        finally:
            busy.cancel()


def _cgroup_or_skip(fake: FakeOllama) -> str:
    assert fake.processes is not None
    if fake.processes.cgroup is None:
        pytest.skip("cannot create a cgroup v2 here: the runner watch cannot see processes")
    return str(fake.processes.cgroup)


async def test_three_kept_models_settle_on_one_eviction_where_runners_show_it(
    ollama_version: str,
) -> None:
    """Chaos seeds 2, 3, 35 on 0.24.0 (issue 21 item 1, issue 23 invariant 4): room for two
    of three kept models, runner processes visible. The third load evicts the top one; the
    runner watch shows that eviction (the victim's runner ended, ours started next), so it
    settles the conflict: the lowest is held at once and no kept model is loaded more than
    twice, nor evicted by our loads more than once."""
    async with FakeOllama(
        ollama_version=ollama_version, **FAST_FAKE, max_loaded=2, runner_processes=True
    ) as fake:
        models = [
            {"name": LLAMA, "keep_alive": "1h", "priority": 10},
            {"name": "qwen2.5-coder:7b", "keep_alive": "1h", "priority": 5},
            {"name": "llama3.2:3b", "keep_alive": "1h", "priority": 0},
        ]
        config = make_config(fake.url, models)
        config = replace(config, ollama=replace(config.ollama, cgroup=_cgroup_or_skip(fake)))
        async with running_keeper(config) as (keeper, _):
            await eventually(
                lambda: (
                    listed(fake) == {LLAMA, "qwen2.5-coder:7b"}
                    and state_of(keeper, "llama3.2:3b")["state"] == "conflict"
                ),
                within=20,
                what="the two higher ones loaded, the lowest held",
            )
            await more_looks(keeper, 20)
    loads = {m["name"]: sum(ld.model == m["name"] for ld in fake.loads) for m in models}
    assert max(loads.values()) <= 2, loads
    ours = [e for e in fake.evictions if e.for_model in loads and e.victim in loads]
    victims = [e.victim for e in ours]
    assert all(victims.count(v) <= 1 for v in victims), ours
    assert len(ours) <= 1, ours


async def test_ollama_stop_during_our_load_holds_nothing_where_runners_show(
    ollama_version: str,
) -> None:
    """The runners visible, a user's `ollama stop` of a kept model while our load of another
    runs (room for both) is no proved eviction: our runner was loading before the victim
    ended. Nothing is held, both come back. (A stop within one rescan of our runner's spawn
    cannot be told from an eviction: the watch sees both at once.)"""
    async with FakeOllama(
        ollama_version=ollama_version,
        **{**FAST_FAKE, "load_seconds_per_gb": 0.2},
        runner_processes=True,
    ) as fake:
        models = [
            {"name": "tiny", "keep_alive": "1h", "priority": 10},
            {"name": LLAMA, "keep_alive": "1h", "priority": 0},
        ]
        config = make_config(fake.url, models)
        config = replace(config, ollama=replace(config.ollama, cgroup=_cgroup_or_skip(fake)))
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await eventually(
                    lambda: any(ld.model == LLAMA and ld.finished is None for ld in fake.loads),
                    what="our long load under way",
                )
                host = host_of(keeper)
                await eventually(
                    lambda: len(host.runner_table.runners) == 2, what="our runner seen loading"
                )
                await fake.unload("tiny")
                await asyncio.wait_for(keeper.ready.wait(), 15)
                await eventually(lambda: listed(fake) == {"tiny:latest", LLAMA}, what="both")
                await more_looks(keeper, 5)
    assert not [e for e in logs if e["event"] == "capacity_conflict"]
