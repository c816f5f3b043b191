"""The daemon against the fake Ollama over real loopback HTTP (issue 3's acceptance list)."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from helpers import FAST_FAKE, VERSIONS, eventually, make_config, more_looks, running_keeper
from ollama_keepwarm.core.plan import Action
from ollama_keepwarm.daemon.clocks import ManualClocks
from ollama_keepwarm.fake import FakeOllama

LLAMA = {"name": "llama3.1:8b", "keep_alive": "30s", "priority": 10}
CODER = {
    "name": "qwen2.5-coder:7b",
    "keep_alive": "30s",
    "options": {"num_ctx": 8192},
    "priority": 5,
}
EMBED = {"name": "nomic-embed-text", "keep_alive": -1}


def listed(fake: FakeOllama) -> set[str]:
    return {r.name for r in fake.runners()}


def warm_calls(fake: FakeOllama, model: str) -> list[Any]:
    return [
        r
        for r in fake.requests
        if r.path in {"/api/generate", "/api/embed"}
        and isinstance(r.body, dict)
        and r.body.get("model") == model
    ]


async def client_post(fake: FakeOllama, path: str, body: dict[str, Any]) -> dict[str, Any]:
    async with aiohttp.ClientSession() as session, session.post(fake.url + path, json=body) as r:
        result: dict[str, Any] = await r.json()
        return result


async def test_warms_all_models_at_start_embedder_through_embed(fake: FakeOllama) -> None:
    """Three models, one embedding-only: all listed in ps, the embedder loaded through embed."""
    config = make_config(fake.url, [LLAMA, CODER, EMBED])
    async with running_keeper(config) as (keeper, notifier):
        await asyncio.wait_for(keeper.ready.wait(), 10)
        assert listed(fake) == {"llama3.1:8b", "qwen2.5-coder:7b", "nomic-embed-text:latest"}
        embed_calls = warm_calls(fake, "nomic-embed-text")
        assert [c.path for c in embed_calls] == ["/api/embed"]
        assert embed_calls[0].body == {"model": "nomic-embed-text", "keep_alive": -1}
        assert "READY=1" in notifier.messages
        # Loads happen one at a time in priority order.
        assert [ld.model for ld in fake.loads] == [
            "llama3.1:8b",
            "qwen2.5-coder:7b",
            "nomic-embed-text:latest",
        ]
        assert notifier.statuses()[-1].startswith("3/3 warm")


@pytest.mark.parametrize("fake", VERSIONS, indirect=True)
async def test_lease_renewed_before_expiry_for_many_cycles(fake: FakeOllama) -> None:
    """A short lease is renewed before it ends, cycle after cycle: one load, no gap."""
    model = {"name": "llama3.1:8b", "keep_alive": "1s"}
    config = make_config(fake.url, [model])
    async with running_keeper(config) as (keeper, _):
        await asyncio.wait_for(keeper.ready.wait(), 10)
        start = len(warm_calls(fake, "llama3.1:8b"))
        await eventually(
            lambda: len(warm_calls(fake, "llama3.1:8b")) >= start + 6,
            within=20,
            what="six renewals",
        )
        assert [ld.reason for ld in fake.loads] == ["cold"]  # never expired, never reloaded
        times = [c.time for c in warm_calls(fake, "llama3.1:8b")]
        gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
        assert max(gaps) < 1.0  # always renewed inside the 1 s lease
        assert min(gaps) >= 0.4  # ...and not more than about once per lease half-period


@pytest.mark.parametrize("fake", VERSIONS, indirect=True)
async def test_unloaded_model_is_back_with_exact_options(fake: FakeOllama) -> None:
    """A model unloaded by someone else (keep_alive 0) is warmed again with its options."""
    config = make_config(fake.url, [LLAMA, CODER])
    async with running_keeper(config) as (keeper, _):
        await asyncio.wait_for(keeper.ready.wait(), 10)
        reply = await client_post(
            fake, "/api/generate", {"model": "qwen2.5-coder:7b", "keep_alive": 0}
        )
        assert reply["done_reason"] == "unload"
        await eventually(lambda: "qwen2.5-coder:7b" not in listed(fake), what="unload")
        await eventually(lambda: "qwen2.5-coder:7b" in listed(fake), within=5, what="re-warm")
        last = warm_calls(fake, "qwen2.5-coder:7b")[-1]
        assert last.body == {
            "model": "qwen2.5-coder:7b",
            "keep_alive": "30s",
            "options": {"num_ctx": 8192},
        }
        runner = next(r for r in fake.runners() if r.name == "qwen2.5-coder:7b")
        assert runner.options["num_ctx"] == 8192


@pytest.mark.parametrize("fake", VERSIONS, indirect=True)
async def test_model_back_after_restart(fake: FakeOllama) -> None:
    """Every model lost in a server restart is warmed again once the server answers."""
    config = make_config(fake.url, [LLAMA, EMBED])
    with capture_logs() as logs:
        async with running_keeper(config) as (keeper, notifier):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            await fake.restart(down_s=0.5)
            await eventually(
                lambda: listed(fake) == {"llama3.1:8b", "nomic-embed-text:latest"},
                within=5,
                what="both models back",
            )
            assert any(s.startswith("waiting for Ollama") for s in notifier.statuses())
    lost = [(e["model"], e["cause"]) for e in logs if e["event"] == "model_vanished"]
    assert sorted(lost) == [("llama3.1:8b", "restart"), ("nomic-embed-text", "restart")]


@pytest.mark.parametrize("ollama_version", VERSIONS)
async def test_evicted_by_another_client_is_back(ollama_version: str) -> None:
    """A kept model evicted by another client's load is warmed again."""
    async with FakeOllama(ollama_version=ollama_version, **FAST_FAKE, max_loaded=1) as fake:
        await _evicted_by_another_client_is_back(fake)


async def _evicted_by_another_client_is_back(fake: FakeOllama) -> None:
    config = make_config(fake.url, [LLAMA])
    async with running_keeper(config) as (keeper, _):
        await asyncio.wait_for(keeper.ready.wait(), 10)
        # Another client loads a big model with a long lease: Ollama evicts ours for it.
        await client_post(fake, "/api/generate", {"model": "llama3.2:3b", "keep_alive": "10m"})
        await eventually(
            lambda: "llama3.1:8b" in listed(fake) and len(fake.evictions) >= 2,
            within=5,
            what="re-warm after eviction",
        )
        assert fake.evictions[0].victim == "llama3.1:8b"


@pytest.mark.parametrize("fake", VERSIONS, indirect=True)
async def test_busy_model_refreshed_at_most_once_per_interval(fake: FakeOllama) -> None:
    """While a client keeps the model busy, expires_at is frozen: no refresh storm."""
    model = {"name": "llama3.1:8b", "keep_alive": "600ms"}
    config = make_config(fake.url, [model], refresh_before="300ms")
    async with running_keeper(config) as (keeper, _):
        await asyncio.wait_for(keeper.ready.wait(), 10)
        # A 2-second generation (2000 tokens x 1 ms): the lease end passes while it runs.
        generation = asyncio.create_task(
            client_post(
                fake,
                "/api/generate",
                {
                    "model": "llama3.1:8b",
                    "prompt": "hi",
                    "stream": False,
                    "options": {"num_predict": 2000},
                },
            )
        )
        await eventually(lambda: any(r.busy for r in fake.runners()), what="busy")
        started = datetime.now(UTC)
        busy_from = len(warm_calls(fake, "llama3.1:8b"))
        await generation
        busy_s = (datetime.now(UTC) - started).total_seconds()
        refreshes = len(warm_calls(fake, "llama3.1:8b")) - busy_from
        assert refreshes >= 2  # the lease end passed during the generation: refreshed
        # stale interval = max(poll_interval 100 ms, refresh_before 300 ms); one more at each end.
        assert refreshes <= busy_s / 0.3 + 2, (refreshes, busy_s)
        assert "llama3.1:8b" in listed(fake)


@pytest.mark.parametrize("ollama_version", VERSIONS)
async def test_capacity_conflict_keeps_higher_priority(ollama_version: str) -> None:
    """Two kept models that cannot both be loaded: bounded warms, the stronger one stays."""
    async with FakeOllama(ollama_version=ollama_version, **FAST_FAKE, max_loaded=1) as fake:
        await _capacity_conflict_keeps_higher_priority(fake)


async def _capacity_conflict_keeps_higher_priority(fake: FakeOllama) -> None:
    config = make_config(fake.url, [CODER, LLAMA])  # LLAMA has the higher priority
    with capture_logs() as logs:
        async with running_keeper(config) as (keeper, notifier):
            await eventually(
                lambda: any(e["event"] == "capacity_conflict" for e in logs),
                within=10,
                what="a capacity conflict",
            )
            await eventually(lambda: listed(fake) == {"llama3.1:8b"}, what="llama to stay")
            loads_then = len(fake.loads)
            await eventually(
                lambda: keeper.status()["hosts"][0]["models"][1]["state"] == "conflict",
                what="status shows the conflict",
            )
            # A while later: no more loads, the weaker model is held and reported.
            await asyncio.wait_for(keeper.ready.wait(), 5)
            await more_looks(keeper, 10)
            assert len(fake.loads) == loads_then
            assert len(fake.loads) <= 4
            assert any("conflict" in s for s in notifier.statuses())
    conflict = next(e for e in logs if e["event"] == "capacity_conflict")
    assert conflict["model"] == "qwen2.5-coder:7b"
    assert conflict["keeps"] == ["llama3.1:8b"]


async def test_unknown_model_backs_off_without_hurting_others(fake: FakeOllama) -> None:
    """An unknown model gets a clear error and backoff; the other models are warm."""
    config = make_config(fake.url, [LLAMA, {"name": "no-such-model"}])
    with capture_logs() as logs:
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            assert "llama3.1:8b" in listed(fake)
            await more_looks(keeper, 10)
            status = keeper.status()["hosts"][0]["models"]
    failures = [e for e in logs if e["event"] == "warm_failed"]
    assert len(failures) == 1  # backed off (first retry is ~30 s away), not retried each poll
    assert failures[0]["kind"] == "not_found"
    assert "ollama pull" in failures[0]["hint"]
    assert {m["name"]: m["state"] for m in status} == {
        "llama3.1:8b": "warm",
        "no-such-model": "error",
    }


async def test_waits_for_ollama_at_start() -> None:
    """Started before Ollama, the keeper waits, then warms as soon as it answers."""
    probe = FakeOllama(**FAST_FAKE)
    await probe.start()
    port = probe.port
    url = probe.url
    await probe.stop()
    config = make_config(url, [LLAMA])
    async with running_keeper(config) as (keeper, notifier):
        await eventually(
            lambda: any(s.startswith("waiting for Ollama") for s in notifier.statuses()),
            what="waiting status",
        )
        assert not keeper.ready.is_set()
        async with FakeOllama(**FAST_FAKE) as fake:
            await fake.stop()
            await fake.start(port=port)
            await asyncio.wait_for(keeper.ready.wait(), 10)
            assert listed(fake) == {"llama3.1:8b"}


async def test_reload_swaps_config_and_bad_reload_keeps_it(fake: FakeOllama) -> None:
    """A valid reload warms the new model; an invalid one keeps the running config."""
    from ollama_keepwarm.core.config import ConfigError

    configs = [make_config(fake.url, [LLAMA, EMBED])]

    def reload_config() -> Any:
        if len(configs) == 1:
            raise ConfigError("models[0].keep_alive", "must be a duration")
        return configs[-1]

    config = make_config(fake.url, [LLAMA])
    async with running_keeper(config, reload_config=reload_config) as (keeper, notifier):
        await asyncio.wait_for(keeper.ready.wait(), 10)
        with capture_logs() as logs:
            await keeper.reload()
        assert [e["event"] for e in logs] == ["config_reload_failed"]
        assert logs[0]["keeping"].startswith("the running config, loaded at ")
        assert keeper.config is config
        assert "RELOADING=1" not in notifier.messages
        configs.append(configs[0])
        await keeper.reload()
        assert keeper.config is configs[0]
        await eventually(lambda: "nomic-embed-text:latest" in listed(fake), what="new model")
        reload_at = notifier.messages.index("RELOADING=1")
        assert "READY=1" in notifier.messages[reload_at:]


async def test_reload_says_which_keys_need_a_restart(fake: FakeOllama) -> None:
    """A reload that changes the endpoint's port or the socket says they wait for a restart."""
    config = make_config(fake.url, [LLAMA])
    moved = replace(
        config,
        http=replace(config.http, port=config.http.port + 1),
        daemon=replace(config.daemon, control_socket=config.daemon.control_socket + ".2"),
    )
    async with running_keeper(config, reload_config=lambda: moved) as (keeper, _):
        await asyncio.wait_for(keeper.ready.wait(), 10)
        with capture_logs() as logs:
            await keeper.reload()
    warning = next(e for e in logs if e["event"] == "config_needs_restart")
    assert warning["keys"] == ["http.port", "daemon.control_socket"]


async def test_suspend_triggers_immediate_refresh(fake: FakeOllama) -> None:
    """A resume refreshes every model at once, not at its (now stale) expires_at."""
    clocks = ManualClocks()
    config = make_config(
        fake.url, [{"name": "llama3.1:8b", "keep_alive": "1h"}], resume_threshold="1s"
    )
    async with running_keeper(config, clocks=clocks) as (keeper, _):
        await asyncio.wait_for(keeper.ready.wait(), 10)
        before = len(warm_calls(fake, "llama3.1:8b"))
        clocks.suspend(3600)
        await eventually(
            lambda: len(warm_calls(fake, "llama3.1:8b")) > before,
            within=3,
            what="refresh after resume",
        )
        assert keeper.resumes == 1


@pytest.mark.parametrize("body", ["not json", '{"models": "nope"}', '{"models":[{"x":1}]}'])
async def test_malformed_ps_is_retried_not_fatal(body: str) -> None:
    """A malformed /api/ps answer is logged and retried with backoff, never a crash."""
    from aiohttp import web

    hits: list[float] = []

    async def ps(_request: web.Request) -> web.Response:
        hits.append(asyncio.get_running_loop().time())
        return web.Response(text=body, content_type="application/json")

    async def version(_request: web.Request) -> web.Response:
        return web.json_response({"version": "0.33.0"})

    app = web.Application()
    app.router.add_get("/api/ps", ps)
    app.router.add_get("/api/version", version)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        config = make_config(f"http://127.0.0.1:{port}", [LLAMA])
        with capture_logs() as logs:
            async with running_keeper(config):
                await eventually(lambda: len(hits) >= 5, what="five polls")
        assert any(e["event"] == "poll_failed" for e in logs)
        # Not a busy loop: on average no more than one poll per 50 ms (poll_interval is 100 ms).
        assert (hits[-1] - hits[0]) / (len(hits) - 1) > 0.05
    finally:
        await runner.cleanup()


@pytest.mark.parametrize("ollama_version", VERSIONS)
async def test_options_mismatch_with_a_client_is_reported_once(ollama_version: str) -> None:
    """A client loading the model with another num_ctx than ours is spotted in ps, reported
    once with the fix, and then left alone: the keeper does not reload it back."""
    async with FakeOllama(
        ollama_version=ollama_version, **{**FAST_FAKE, "load_seconds_per_gb": 0.2}
    ) as fake:
        model = {"name": "qwen2.5-coder:7b", "keep_alive": "1h", "options": {"num_ctx": 8192}}
        config = make_config(fake.url, [model])
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await asyncio.wait_for(keeper.ready.wait(), 10)
                for round_ in range(2):
                    await client_post(
                        fake,
                        "/api/generate",
                        {
                            "model": "qwen2.5-coder:7b",
                            "prompt": "hi",
                            "stream": False,
                            "options": {"num_ctx": 4096, "num_predict": 400},
                        },
                    )
                    await eventually(
                        lambda: any(e["event"] == "options_mismatch" for e in logs),
                        what=f"the mismatch reported (round {round_})",
                    )
                reloads = [ld for ld in fake.loads if ld.reason == "reload"]
                assert len(reloads) == 1  # the client's own; none of ours after it
                assert all(r.options["num_ctx"] == 4096 for r in fake.runners())
    warnings = [e for e in logs if e["event"] == "options_mismatch"]
    assert len(warnings) == 1
    assert (warnings[0]["context_length"], warnings[0]["ours"]) == (4096, 8192)
    assert "num_ctx = 4096" in warnings[0]["fix"]


async def test_models_on_two_hosts_are_kept_independently() -> None:
    """Each model warms on its own endpoint; one host going down does not disturb the other."""
    async with FakeOllama(**FAST_FAKE) as gpu1, FakeOllama(**FAST_FAKE) as gpu2:
        config = make_config(gpu1.url, [LLAMA, {**EMBED, "host": gpu2.url}])
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            assert listed(gpu1) == {"llama3.1:8b"}
            assert listed(gpu2) == {"nomic-embed-text:latest"}
            calls = len(gpu1.requests)
            await gpu2.restart(down_s=0.5)
            await eventually(
                lambda: listed(gpu2) == {"nomic-embed-text:latest"},
                what="the embedder back on gpu2",
            )
            assert keeper.hosts[gpu1.url].ollama_up
            # gpu1 only saw polls meanwhile: no re-warm because of gpu2's restart.
            assert {r.path for r in gpu1.requests[calls:]} <= {"/api/ps"}


async def test_listed_model_without_manifest_is_asked_about_once(fake: FakeOllama) -> None:
    """A model deleted while loaded stays listed but /api/show 404s (§7.5): ask once, not at
    every poll."""
    await client_post(fake, "/api/generate", {"model": "llama3.2:3b", "keep_alive": -1})
    async with (
        aiohttp.ClientSession() as session,
        session.delete(f"{fake.url}/api/delete", json={"model": "llama3.2:3b"}) as response,
    ):
        assert response.status == 200
    config = make_config(fake.url, [LLAMA])
    async with running_keeper(config) as (keeper, _):
        await asyncio.wait_for(keeper.ready.wait(), 10)
        await more_looks(keeper, 10)
    shows = [
        r
        for r in fake.requests
        if r.path == "/api/show"
        and isinstance(r.body, dict)
        and r.body.get("model") == "llama3.2:3b"
    ]
    assert [r.status for r in shows] == [404]
    assert "llama3.2:3b" in listed(fake)


async def test_runtime_oom_is_named_and_repaired_in_priority_order() -> None:
    """0.30+: a runtime OOM expires every model at once (§4.4): cause 'oom', not 'restart',
    and the kept models come back highest priority first."""
    async with FakeOllama(ollama_version="0.32.15", **FAST_FAKE) as fake:
        config = make_config(fake.url, [CODER, LLAMA, EMBED])
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await asyncio.wait_for(keeper.ready.wait(), 10)
                loads = len(fake.loads)
                assert fake.runtime_oom() == 3
                await eventually(
                    lambda: len(listed(fake)) == 3 and len(fake.loads) >= loads + 3,
                    within=15,
                    what="all three back",
                )
                again = [ld.model for ld in fake.loads[loads:]]
    causes = {e["model"]: e["cause"] for e in logs if e["event"] == "model_vanished"}
    assert causes == {"llama3.1:8b": "oom", "qwen2.5-coder:7b": "oom", "nomic-embed-text": "oom"}
    assert again == ["llama3.1:8b", "qwen2.5-coder:7b", "nomic-embed-text:latest"]


async def test_old_server_loses_everything_only_to_a_restart() -> None:
    """Before 0.30 no runtime OOM expires models: everything gone at once is a restart."""
    async with FakeOllama(ollama_version="0.24.0", **FAST_FAKE) as fake:
        config = make_config(fake.url, [LLAMA, EMBED])
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await asyncio.wait_for(keeper.ready.wait(), 10)
                assert fake.runtime_oom() == 0  # nothing happens on this version
                await fake.restart(down_s=0.0)
                await eventually(lambda: len(listed(fake)) == 2, within=10, what="both back")
    causes = [e["cause"] for e in logs if e["event"] == "model_vanished"]
    assert causes
    assert set(causes) == {"restart"}


async def test_no_status_after_stopping() -> None:
    """Issue 22 item 11: once STOPPING=1 is sent, nothing else is: a warm call that ends during
    the stop grace, a SIGHUP or a pause meanwhile must not send STATUS= or RELOADING=1."""
    async with FakeOllama(load_seconds_per_gb=0.3, seconds_per_token=0.001) as fake:
        config = make_config(fake.url, [LLAMA])
        async with running_keeper(config, reload_config=lambda: config) as (keeper, notifier):
            await eventually(
                lambda: any(
                    st.in_flight_since for h in keeper.hosts.values() for st in h.states.values()
                ),
                what="the load in flight",
            )
            keeper.request_stop()
            await eventually(lambda: "STOPPING=1" in notifier.messages, what="STOPPING=1")
            keeper.request_reload()
        stop = notifier.messages.index("STOPPING=1")
        assert notifier.messages[stop + 1 :] == []


async def test_no_call_starts_once_a_stop_began() -> None:
    """Chaos 0.24.0 seeds 2 and 87: with calls of ours in flight when the stop began, the
    look after one of them saw a kept model lost and sent its re-warm, seconds after the stop
    (the grace waits for the others). Only the calls in flight finish; nothing new starts,
    however due (here an operator's refresh, due at once)."""
    async with FakeOllama(**FAST_FAKE) as fake:
        config = make_config(fake.url, [LLAMA, CODER])
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            host = keeper.hosts[fake.url]
            fake.set_delay("/api/generate", 1.0)  # the refresh below stays in flight
            keeper.refresh(LLAMA["name"])
            await eventually(
                lambda: any(st.in_flight_since for st in host.states.values()),
                what="the refresh in flight",
            )
            stopping = asyncio.create_task(host.stop(10.0))
            await asyncio.sleep(0)  # the stop begins: it now waits for the refresh
            asked = len(fake.requests)
            keeper.refresh(CODER["name"])  # a call due now, as a lost model's re-warm is
            await host.look()
            assert {d.model.name: d.action for d in host.decisions}[CODER["name"]] in {
                Action.REFRESH,
                Action.WAIT,
            }  # planned (status stays true) ...
            fake.set_delay("/api/generate", None)
            await stopping
            late = [
                r
                for r in fake.requests[asked:]
                if isinstance(r.body, dict) and r.body.get("model") == CODER["name"]
            ]
            assert late == []  # ... and never sent


async def test_pause_with_unload_during_our_own_load_unloads_once_it_ends() -> None:
    """Issue 22 item 4: `pause --unload` while our load of that model is in flight: the model
    is unloaded once the load ends (never left loaded with our lease), and the answer says
    "unloaded" only when /api/ps confirms it."""
    async with FakeOllama(load_seconds_per_gb=0.3, seconds_per_token=0.001) as fake:
        config = make_config(fake.url, [LLAMA])
        async with running_keeper(config) as (keeper, _):
            await eventually(
                lambda: any(
                    st.in_flight_since for h in keeper.hosts.values() for st in h.states.values()
                ),
                what="our load in flight",
            )
            answer = await keeper.pause("llama3.1:8b", None, unload=True)
            if "unloaded it" in answer:
                assert "llama3.1:8b" not in listed(fake)
            await eventually(lambda: fake.loads and fake.loads[0].finished, what="load ended")
            await more_looks(keeper, 10)
            assert "llama3.1:8b" not in listed(fake)


async def test_pause_with_unload_is_confirmed_only_by_a_look_that_began_after_it() -> None:
    """CI flake of stop 30: `pause --unload` answered "unloaded it" while ps still listed the
    model. Its confirming look was asked for while another look was running, so it returned at
    once, and the answer was read off that older look's decisions (taken before the model was
    loaded again). A look that confirms must poll after the question was asked."""
    async with FakeOllama(**FAST_FAKE) as fake:
        config = make_config(fake.url, [LLAMA])
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            host = keeper.hosts[fake.url]
            await keeper.pause(LLAMA["name"], None, unload=False)
            await client_post(fake, "/api/generate", {"model": LLAMA["name"], "keep_alive": 0})
            await eventually(lambda: LLAMA["name"] not in listed(fake), what="ollama stop")
            await more_looks(keeper, 1)  # the keeper's last look: not listed
            await client_post(
                fake, "/api/generate", {"model": LLAMA["name"], "keep_alive": "10m"}
            )  # a client loads it again; no look of the keeper has seen it yet
            assert LLAMA["name"] in listed(fake)
            fake.set_delay("/api/ps", 0.5)
            running = asyncio.create_task(host.look())
            await asyncio.sleep(0)  # that look takes the lock and waits on its poll
            fake.set_delay("/api/ps", None)
            model = keeper.config.models[0]
            confirmed = await host.unload_and_confirm(model, within_s=10)
            await running
            assert confirmed
            assert LLAMA["name"] not in listed(fake)
