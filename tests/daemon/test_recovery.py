"""Surviving suspend/resume, server restarts and runner crashes (issue 5)."""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from garbling import GarblingProxy
from structlog.testing import capture_logs

from helpers import FAST_FAKE, eventually, make_config, more_looks, running_keeper
from ollama_keepwarm.daemon.clocks import ManualClocks
from ollama_keepwarm.fake import FakeOllama

LLAMA = {"name": "llama3.1:8b", "keep_alive": "1h", "priority": 10}
CODER = {"name": "qwen2.5-coder:7b", "keep_alive": "1h", "priority": 5}
EMBED = {"name": "nomic-embed-text", "keep_alive": -1}
ALL = {"llama3.1:8b", "qwen2.5-coder:7b", "nomic-embed-text:latest"}


def listed(fake: FakeOllama) -> set[str]:
    return {r.name for r in fake.runners()}


async def generate(fake: FakeOllama, model: str) -> dict[str, Any]:
    """A client request; its load_duration says whether it waited for a load."""
    body = {"model": model, "prompt": "hi", "stream": False, "options": {"num_predict": 1}}
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{fake.url}/api/generate", json=body) as response,
    ):
        assert response.status == 200
        result: dict[str, Any] = await response.json()
        return result


async def test_suspend_of_an_hour_refreshes_everything_within_a_second(tmp_path: Path) -> None:
    """After a (simulated) hour of sleep every model is refreshed at once; a lost GPU is reported
    and the on_gpu_lost hook runs once."""
    marker = tmp_path / "hook-ran"
    hook = [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x')"]
    clocks = ManualClocks()
    async with FakeOllama(**FAST_FAKE) as fake:
        config = make_config(
            fake.url, [LLAMA, CODER, EMBED], resume_threshold="1s", on_gpu_lost=hook
        )
        with capture_logs() as logs:
            async with running_keeper(config, clocks=clocks) as (keeper, _):
                await asyncio.wait_for(keeper.ready.wait(), 10)
                before = {r.name: r.expires_at for r in fake.runners()}
                # The machine sleeps: the fake holds requests and freezes its timers, our boot
                # clock runs ahead of the monotonic one; both wake together.
                await fake.suspend(0.3, gpu_lost=True)
                clocks.suspend(3600)
                resumed = datetime.now(UTC)
                await eventually(
                    lambda: all(r.expires_at > before[r.name] for r in fake.runners()),
                    within=3,
                    what="every lease refreshed",
                )
                refreshed = datetime.now(UTC)
                await eventually(marker.exists, within=5, what="the on_gpu_lost hook")
                await more_looks(keeper, 5)
                assert listed(fake) == ALL
    assert (refreshed - resumed).total_seconds() < 1.0
    assert marker.read_text() == "x"  # ran once
    assert keeper.resumes == 1
    events = [e["event"] for e in logs]
    assert "resumed_from_suspend" in events
    assert events.count("gpu_lost") == 3  # one per model
    assert [ld.reason for ld in fake.loads] == ["cold"] * 3  # refreshed, not reloaded


async def test_verify_generates_one_token_after_resume() -> None:
    """With verify = true a resume is followed by a 1-token generation per such model."""
    clocks = ManualClocks()
    async with FakeOllama(**FAST_FAKE) as fake:
        config = make_config(fake.url, [{**LLAMA, "verify": True}, CODER], resume_threshold="1s")
        async with running_keeper(config, clocks=clocks) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            clocks.suspend(600)

            def verifications() -> list[Any]:
                return [
                    r
                    for r in fake.requests
                    if r.path == "/api/generate"
                    and isinstance(r.body, dict)
                    and r.body.get("prompt")
                ]

            await eventually(verifications, within=3, what="a verification")
            checked = verifications()
            assert [r.body["model"] for r in checked] == ["llama3.1:8b"]
            assert checked[0].body["options"] == {"num_predict": 1}
            assert checked[0].status == 200


async def test_ten_restarts_in_a_row_none_missed_no_storm() -> None:
    """Ten server restarts: every model back after each, and bounded requests while down.

    How fast they come back is a benchmark's business (docs/benchmarks.md); here each restart
    must be repaired at all, with a handful of calls, not a flood."""
    down_s = 0.2
    async with FakeOllama(**FAST_FAKE) as fake:
        config = make_config(fake.url, [LLAMA, EMBED])
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            for round_ in range(10):
                sent_before = len(fake.requests)
                loads_before = len(fake.loads)
                await fake.restart(down_s=down_s)
                await eventually(
                    lambda: listed(fake) == {"llama3.1:8b", "nomic-embed-text:latest"},
                    within=5,
                    what=f"both models back after restart {round_}",
                )
                assert len(fake.loads) - loads_before == 2  # one load each, no duplicate
                # The fake records only requests it answered; after coming back, the keeper
                # needed a handful of calls, not a flood.
                assert len(fake.requests) - sent_before < 30
            # While down: the regular poll (100 ms) plus the fast retry (<= 200 ms), no more.
            assert keeper.hosts[fake.url].poll_errors <= 10 * (down_s * (1 / 0.1 + 1 / 0.2) + 2)


async def test_crashed_runner_is_repaired_within_health_interval() -> None:
    """A crashed runner stays listed; the health refresh makes Ollama reload it, so a client
    request afterwards is warm."""
    async with FakeOllama(**FAST_FAKE) as fake:
        config = make_config(fake.url, [LLAMA], health_interval="1s")
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await asyncio.wait_for(keeper.ready.wait(), 10)
                crashed_at = datetime.now(UTC)
                assert fake.crash("llama3.1:8b")
                assert listed(fake) == {"llama3.1:8b"}  # still listed, as Ollama does
                await eventually(
                    lambda: [ld for ld in fake.loads if ld.reason == "repair" and ld.finished],
                    within=3,
                    what="a repair load",
                )
                repaired = next(ld for ld in fake.loads if ld.reason == "repair")
                assert repaired.finished is not None
                assert (repaired.finished - crashed_at).total_seconds() < 1.0 + 1.0
                reply = await generate(fake, "llama3.1:8b")
                assert reply["load_duration"] < 50_000_000  # warm: no load waited for
    assert any(e["event"] == "runner_reloaded" for e in logs)


async def test_a_garbled_answer_never_ends_the_load_lane() -> None:
    """Issue 22 item 5: one answer aiohttp cannot frame (here the look after the first load)
    must not end the load lane: the second model is still loaded, and the keeper says so."""
    async with FakeOllama(**FAST_FAKE) as fake:

        def garble(line: str, _body: bytes) -> bool:
            # The look that follows the first load (polls are an hour apart: no other look).
            return line.startswith("GET /api/ps") and bool(listed(fake)) and not proxy.garbled

        async with GarblingProxy(fake.url, garble) as proxy:
            config = make_config(proxy.url, [LLAMA, CODER], poll_interval="1h", refresh_before="2h")
            async with running_keeper(config):
                await eventually(lambda: proxy.garbled, what="a garbled /api/ps answer")
                await eventually(
                    lambda: listed(fake) == {"llama3.1:8b", "qwen2.5-coder:7b"},
                    within=15,
                    what="both models loaded after the garbled answer",
                )


async def test_a_call_that_raises_backs_off_and_closes_its_load_window() -> None:
    """Issue 22 item 5: a warm call that raises anything backs that model off (no spin) and
    closes its load window (else that model is blamed for every later eviction)."""
    async with (
        FakeOllama(**FAST_FAKE) as fake,
        GarblingProxy(fake.url, lambda line, _body: line.startswith("POST /api/")) as proxy,
        running_keeper(make_config(proxy.url, [LLAMA])) as (keeper, _),
    ):
        await eventually(lambda: proxy.garbled, what="a garbled load answer")
        host = next(iter(keeper.hosts.values()))
        await more_looks(keeper, 20)
        st = host.states["llama3.1:8b"]
        assert len(proxy.garbled) <= 2, "retried without back-off"
        assert st.backoff_until is not None
        assert st.load_window is not None
        assert st.load_window[1] is not None


async def test_a_failed_release_is_retried() -> None:
    """Issue 22 item 9: outside its window (after_window = "unload") the model is unloaded;
    when that unload fails once (a garbled answer), it is sent again, not forgotten."""
    from zoneinfo import ZoneInfo

    sunday = datetime(2025, 3, 30, 12, 0, tzinfo=ZoneInfo("UTC"))
    bot = {**LLAMA, "when": ["mon-fri 08:00-19:00"], "after_window": "unload"}

    def garble(line: str, body: bytes) -> bool:
        return b'"keep_alive": 0' in body.replace(b'":0', b'": 0') and not proxy.garbled

    async with FakeOllama(**FAST_FAKE) as fake:
        await generate(fake, "llama3.1:8b")  # a client loaded it
        async with GarblingProxy(fake.url, garble) as proxy:
            config = make_config(proxy.url, [bot])
            async with running_keeper(config, calendar_clock=lambda: sunday):
                await eventually(lambda: proxy.garbled, what="the garbled unload")
                await eventually(lambda: not listed(fake), within=15, what="unloaded after all")


async def test_a_slow_show_does_not_make_an_alias_unmatchable() -> None:
    """Issue 22 item 6: a client loaded llama3.1:8b; the keeper keeps its alias llama3.1.
    The first /api/show answers too late: a timeout is transient, so the listed name's blob is
    asked again and the alias matches (warm), instead of never."""
    async with FakeOllama(**FAST_FAKE) as fake:
        await generate(fake, "llama3.1:8b")
        fake.set_delay("/api/show", 2.0)
        config = make_config(fake.url, [{"name": "llama3.1", "keep_alive": "1h"}])
        config = replace(config, ollama=replace(config.ollama, request_timeout_s=0.5))
        async with running_keeper(config) as (keeper, _):
            host = await eventually(lambda: next(iter(keeper.hosts.values()), None), what="host")
            await eventually(lambda: host.looks >= 2, what="two looks with a slow show")
            fake.set_delay("/api/show", None)
            await eventually(
                lambda: keeper.status()["hosts"][0]["models"][0]["state"] == "warm",
                within=20,
                what="the alias matched",
            )


async def test_a_warm_of_an_alias_already_loaded_is_no_cold_load() -> None:
    """Issue 22 item 7: a client loaded llama3.1:8b; our first warm of its alias llama3.1 finds
    the runner resident (§7.1) and answers in milliseconds. That is no cold load: it must not
    become the measured load time (warm --deadline, calendar leads, the reload floor)."""
    async with FakeOllama(**FAST_FAKE) as fake:
        await generate(fake, "llama3.1:8b")
        loads = len(fake.loads)
        config = make_config(fake.url, [{"name": "llama3.1", "keep_alive": "1h"}])
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            host = next(iter(keeper.hosts.values()))
            st = host.states["llama3.1:latest"]
            assert len(fake.loads) == loads  # no load happened
            assert st.cold_load_s is None
            assert keeper._load_time_of(host.models[0]) is None


async def test_a_renewal_answered_500_is_retried_before_its_lease_ends() -> None:
    """Chaos 0.32.15 seed 212: a renewal answered 500 backed off (4.8 s for this model) past
    the end of the lease it was renewing (4 s left), and the runner expired under the keeper:
    the next client paid a cold start. It is tried again within the lease instead."""
    model = {"name": "llama3.1:8b", "keep_alive": "8s"}
    async with FakeOllama(**FAST_FAKE) as fake:
        config = make_config(fake.url, [model], refresh_before="4s")
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            fake.garble_next("/api/generate", "500")

            def renewals() -> list[int]:
                # The keeper's calls after its load (a renewal of a lease that is ours is a
                # ping, without keep_alive: core/plan/leases.py); no client calls here.
                return [r.status for r in fake.requests if r.path == "/api/generate"][1:]

            await eventually(
                lambda: renewals()[:2] == [500, 200] or bool(fake.records.unloads),
                within=15,
                what="the failed renewal and the one after it, or the lease's end",
            )
            assert not fake.records.unloads, "the lease lapsed while the renewal backed off"
            assert listed(fake) == {"llama3.1:8b"}
