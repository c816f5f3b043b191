"""The scheduler: loads, queueing, capacity, eviction order, reloads, crashes, disconnects."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest
from fake_helpers import eventually, post, ps, ps_names

from ollama_keepwarm.core.durations import INFINITE_NS

_BUSY = {"prompt": "x", "stream": False, "options": {"num_predict": 40}}


def _loading(fake, name: str):
    return lambda: (
        fake.scheduler.loading is not None and fake.scheduler.loading.manifest.name == name
    )


async def test_aliases_share_one_runner(fake, session) -> None:
    """Names over the same weights share one runner, one ps row and one keep_alive."""
    await post(session, "/api/generate", {"model": "llama3.2", "keep_alive": "10m"})
    await post(session, "/api/generate", {"model": "llama3.2:3b", "keep_alive": -1})
    assert len(fake.loads) == 1
    [runner] = fake.runners()
    assert (runner.name, runner.keep_alive_ns) == ("llama3.2:latest", INFINITE_NS)
    assert len(await ps(session)) == 1


async def test_loads_are_serialised_fifo_and_loaded_models_bypass(make_fake, client_for) -> None:
    """Loads run one at a time in arrival order; a warm call to a loaded model does not queue."""
    fake = await make_fake(load_seconds_per_gb=5.0)
    session = client_for(fake)
    await post(session, "/api/generate", {"model": "tiny"})
    first = asyncio.create_task(post(session, "/api/generate", {"model": "llama3.1:8b"}))
    await eventually(_loading(fake, "llama3.1:8b"))
    second = asyncio.create_task(post(session, "/api/generate", {"model": "qwen2.5-coder:7b"}))
    await eventually(lambda: fake.scheduler.queued == 1)
    assert (await post(session, "/api/generate", {"model": "tiny"}))[0] == 200
    assert not first.done()
    await asyncio.gather(first, second)
    big, other = fake.loads[1], fake.loads[2]
    assert (big.model, other.model) == ("llama3.1:8b", "qwen2.5-coder:7b")
    assert big.finished is not None
    assert other.started >= big.finished
    assert len(fake.loads) == 3


async def test_queue_full_gives_503(make_fake, client_for) -> None:
    """With the queue full, a request needing a load gets 503 with Ollama's two-space text."""
    fake = await make_fake(load_seconds_per_gb=10.0, max_queue=1)
    session = client_for(fake)
    first = asyncio.create_task(post(session, "/api/generate", {"model": "llama3.1:8b"}))
    await eventually(_loading(fake, "llama3.1:8b"))
    second = asyncio.create_task(post(session, "/api/generate", {"model": "tiny"}))
    await eventually(lambda: fake.scheduler.queued == 1)
    assert await post(session, "/api/generate", {"model": "llama3.2"}) == (
        503,
        {"error": "server busy, please try again.  maximum pending requests exceeded"},
    )
    await asyncio.gather(first, second)


async def test_count_cap_evicts(make_fake, client_for) -> None:
    """No more than max_loaded runners: a new load evicts one."""
    fake = await make_fake(max_loaded=2)
    session = client_for(fake)
    for name in ("tiny", "llama3.2", "nomic-embed-text"):
        await post(session, "/api/embed", {"model": name})
    assert len(await ps(session)) == 2
    assert [(e.for_model, e.reason) for e in fake.evictions] == [
        ("nomic-embed-text:latest", "count")
    ]


@pytest.mark.parametrize("version", ["0.24.0", "0.32.15"])
async def test_memory_budget_evicts_and_first_model_loads_partially(
    make_fake, client_for, version
) -> None:
    """An extra model that does not fit the free VRAM evicts; the first loads even if too big."""
    fake = await make_fake(ollama_version=version, memory_bytes=8 * 10**9)
    session = client_for(fake)
    await post(session, "/api/generate", {"model": "llama3.1:8b"})
    await post(session, "/api/generate", {"model": "qwen2.5-coder:7b"})
    assert await ps_names(session) == ["qwen2.5-coder:7b"]
    assert [(e.victim, e.reason) for e in fake.evictions] == [("llama3.1:8b", "memory")]
    await post(session, "/api/generate", {"model": "llama3.3:70b"})
    [row] = await ps(session)
    assert (row["name"], row["size_vram"]) == ("llama3.3:70b", 8 * 10**9)
    assert row["size"] > row["size_vram"]


async def test_eviction_prefers_shortest_setting_not_lru(make_fake, client_for) -> None:
    """The victim has the shortest keep-alive setting, not the least recent use; -1 is evictable."""
    fake = await make_fake(max_loaded=3)
    session = client_for(fake)
    await post(session, "/api/generate", {"model": "tiny", "keep_alive": -1})
    await post(session, "/api/generate", {"model": "llama3.2", "keep_alive": "10m"})
    await post(session, "/api/generate", {"model": "llama3.1", "keep_alive": "1h"})
    await post(session, "/api/generate", {"model": "llama3.2", "keep_alive": "10m"})  # most recent
    await post(session, "/api/generate", {"model": "qwen2.5-coder:7b", "keep_alive": "1h"})
    assert [e.victim for e in fake.evictions] == ["llama3.2:latest"]
    single = await make_fake(max_loaded=1)
    other = client_for(single)
    await post(other, "/api/generate", {"model": "tiny", "keep_alive": -1})
    await post(other, "/api/generate", {"model": "llama3.2"})
    assert await ps_names(other) == ["llama3.2:latest"]


async def test_eviction_tie_breaks_on_blob_path_and_prefers_idle(make_fake, client_for) -> None:
    """Equal settings evict the model whose blob path sorts first; a busy one is skipped."""
    fake = await make_fake(max_loaded=2)
    fake.seconds_per_token = 1.0
    session = client_for(fake)
    names = ["tiny:latest", "llama3.2:3b"]
    blobs = {name: fake.catalog.resolve(name).model.blob_path for name in names}
    first = min(names, key=blobs.__getitem__)
    # Loaded in reverse blob order, so neither load order nor map order picks `first`.
    for name in sorted(names, key=blobs.__getitem__, reverse=True):
        await post(session, "/api/generate", {"model": name, "keep_alive": "10m"})
    await post(session, "/api/generate", {"model": "llama3.1"})
    assert fake.evictions[-1].victim == first
    # Now make the blob-path-first model busy: the idle one goes instead.
    await post(session, "/api/generate", {"model": first, "keep_alive": "10m"})
    survivors = {r.name for r in fake.runners()}
    assert first in survivors
    candidates = sorted(survivors, key=lambda n: fake.catalog.resolve(n).model.blob_path)
    busy_name = candidates[0]
    task = asyncio.create_task(post(session, "/api/generate", {"model": busy_name, **_BUSY}))
    await eventually(lambda: any(r.busy for r in fake.runners()))
    await post(session, "/api/generate", {"model": "qwen2.5-coder:7b"})
    assert fake.evictions[-1].victim == candidates[1]
    await task


async def test_draining_victim_revived_by_keep_alive(make_fake, client_for) -> None:
    """A busy eviction victim that gets a keep_alive request is revived; the load waits."""
    fake = await make_fake(max_loaded=1)
    fake.seconds_per_token = 1.0
    session = client_for(fake)
    await post(session, "/api/generate", {"model": "tiny", "keep_alive": "10m"})
    busy = asyncio.create_task(post(session, "/api/generate", {"model": "tiny", **_BUSY}))
    await eventually(lambda: fake.runners()[0].busy == 1)
    pending = asyncio.create_task(post(session, "/api/generate", {"model": "llama3.2"}))
    await eventually(lambda: fake.runners()[0].keep_alive_ns == 0)  # marked as victim
    await post(session, "/api/generate", {"model": "tiny", "keep_alive": "20s"})
    assert fake.runners()[0].keep_alive_ns == 20 * 10**9
    await busy
    assert [r.name for r in fake.runners()] == ["tiny:latest"]  # timer, not unload
    assert not pending.done()
    assert (await pending)[0] == 200  # once tiny's 20 s (0.2 s real) timer unloads it
    assert [r.name for r in fake.runners()] == ["llama3.2:latest"]


async def test_reload_on_load_options_as_requested(make_fake, client_for) -> None:
    """num_ctx equal to ps context_length reloads a default runner (v0.24); num_gpu -1 does not."""
    fake = await make_fake(ollama_version="0.24.0")  # v0.32 clamps first: see test_versions.py
    session = client_for(fake)
    await post(session, "/api/generate", {"model": "tiny"})
    [row] = await ps(session)
    assert row["context_length"] == 2048
    await post(session, "/api/generate", {"model": "tiny", "options": {"num_gpu": -1}})
    assert len(fake.loads) == 1
    await post(session, "/api/generate", {"model": "tiny", "options": {"num_ctx": 2048}})
    assert [load.reason for load in fake.loads] == ["cold", "reload"]
    await post(session, "/api/generate", {"model": "tiny"})
    await post(session, "/api/generate", {"model": "tiny", "options": {"num_gpu": 0}})
    await post(
        session, "/api/generate", {"model": "tiny", "options": {"num_gpu": 0, "main_gpu": 1}}
    )
    assert [load.reason for load in fake.loads] == ["cold", "reload", "reload", "reload", "reload"]
    assert len(await ps(session)) == 1


async def test_no_reload_on_sampling_options_or_keep_alive(fake, session) -> None:
    """Temperature, num_predict and keep_alive changes reuse the runner."""
    await post(session, "/api/generate", {"model": "tiny", "options": {"num_ctx": 4096}})
    for options in ({"temperature": 0.1}, {"top_k": 3, "num_predict": 2}, {"num_ctx": 4096}):
        await post(
            session, "/api/generate", {"model": "tiny", "options": options, "keep_alive": "9m"}
        )
    assert len(fake.loads) == 1


@pytest.mark.parametrize(
    ("version", "memory", "num_ctx", "context_length"),
    [
        ("0.24.0", 16 * 2**30, 4096, 4096),
        ("0.24.0", 24 * 2**30, 32768, 32768),
        ("0.24.0", 48 * 2**30, 262144, 131072),  # the runner keeps what was asked
        ("0.32.15", 48 * 2**30, 131072, 131072),  # the runner keeps what it got
    ],
)
async def test_default_num_ctx_tiers(
    make_fake, client_for, version, memory, num_ctx, context_length
) -> None:
    """Default num_ctx follows total VRAM tiers; ps context_length is it clamped to training."""
    fake = await make_fake(ollama_version=version, memory_bytes=memory)
    session = client_for(fake)
    await post(session, "/api/generate", {"model": "llama3.1"})
    [runner] = fake.runners()
    assert runner.options["num_ctx"] == num_ctx
    assert (await ps(session))[0]["context_length"] == context_length


async def test_reload_waits_for_drain(fake, session) -> None:
    """A reload waits for in-flight requests on the old runner before it loads again."""
    fake.seconds_per_token = 1.0
    await post(session, "/api/generate", {"model": "tiny"})
    busy = asyncio.create_task(post(session, "/api/generate", {"model": "tiny", **_BUSY}))
    await eventually(lambda: fake.runners()[0].busy == 1)
    reload = asyncio.create_task(
        post(session, "/api/generate", {"model": "tiny", "options": {"num_ctx": 1024}})
    )
    await eventually(lambda: fake.runners()[0].keep_alive_ns == 0)
    assert not busy.done()
    assert len(fake.loads) == 1
    await asyncio.gather(busy, reload)
    assert fake.loads[-1].reason == "reload"
    assert fake.runners()[0].context_length == 1024


async def test_crashed_runner_listed_until_next_request(fake, session) -> None:
    """A crashed runner stays in ps unchanged; the next request repairs it with a real load."""
    await post(session, "/api/generate", {"model": "llama3.1"})
    before = await ps(session)
    assert fake.crash("llama3.1:latest") is True
    assert await ps(session) == before
    _, reply = await post(
        session, "/api/generate", {"model": "llama3.1", "prompt": "x", "stream": False}
    )
    assert [load.reason for load in fake.loads] == ["cold", "repair"]
    assert reply["load_duration"] > 0.9 * 4.92e9 / fake.clock.time_scale
    assert not fake.runners()[0].crashed


async def test_crash_fails_in_flight_request(fake, session) -> None:
    """A request in flight when its runner dies gets a 500 with the runner's error."""
    fake.seconds_per_token = 1.0
    await post(session, "/api/generate", {"model": "tiny"})
    task = asyncio.create_task(post(session, "/api/generate", {"model": "tiny", **_BUSY}))
    await eventually(lambda: fake.runners()[0].busy == 1)
    fake.crash("tiny")
    status, body = await task
    assert status == 500
    assert body["error"].startswith("model runner has unexpectedly stopped")


async def test_client_disconnect_aborts_load_and_skips_queued(make_fake, client_for) -> None:
    """A client leaving during its load aborts it; a queued request whose client left is skipped."""
    fake = await make_fake(load_seconds_per_gb=10.0)
    session = client_for(fake)
    loading = asyncio.create_task(post(session, "/api/generate", {"model": "llama3.1:8b"}))
    await eventually(_loading(fake, "llama3.1:8b"))
    queued = asyncio.create_task(post(session, "/api/generate", {"model": "llama3.2"}))
    await eventually(lambda: fake.scheduler.queued == 1)
    queued.cancel()
    loading.cancel()
    await eventually(lambda: fake.loads[0].finished is not None)
    assert (fake.loads[0].ok, fake.loads[0].error) == (False, "context canceled")
    await eventually(lambda: fake.scheduler.loading is None and fake.scheduler.queued == 0)
    assert len(fake.loads) == 1
    assert await ps(session) == []


@pytest.mark.parametrize("version", ["0.24.0", "0.32.15"])
async def test_negative_num_gpu_never_reloads(make_fake, client_for, version) -> None:
    """A request's num_gpu -1 (the default) is ignored, even against a runner at num_gpu 10."""
    fake = await make_fake(ollama_version=version)
    session = client_for(fake)
    await post(session, "/api/generate", {"model": "tiny", "options": {"num_gpu": 10}})
    await post(session, "/api/generate", {"model": "tiny", "options": {"num_gpu": -1}})
    await post(session, "/api/generate", {"model": "tiny"})
    assert [load.reason for load in fake.loads] == ["cold"]
    assert fake.runners()[0].options["num_gpu"] == 10
    await post(session, "/api/generate", {"model": "tiny", "options": {"num_gpu": 0}})
    assert [load.reason for load in fake.loads] == ["cold", "reload"]
    assert fake.loads[-1].changed == "num_gpu 10 -> 0"


async def test_timer_starts_when_the_last_of_overlapping_requests_ends(fake, session) -> None:
    """Two overlapping requests: the one ending first starts no timer; the later end does.

    expires_at stays frozen while the long request runs, and the model unloads d after the
    long request ends, not d after the short one (which would be earlier, as here d is longer
    than what is left of the long request).
    """
    fake.seconds_per_token = 1.0  # 10 ms a token at the tests' scale
    await post(session, "/api/generate", {"model": "tiny", "keep_alive": "50s"})  # 0.5 s real
    frozen = fake.runners()[0].expires_at
    long = {"model": "tiny", "prompt": "x", "stream": False, "options": {"num_predict": 30}}
    task = asyncio.create_task(post(session, "/api/generate", long))
    await eventually(lambda: fake.runners()[0].busy == 1)
    assert (await post(session, "/api/generate", {"model": "tiny"}))[0] == 200  # overlaps
    [runner] = fake.runners()
    assert (runner.busy, runner.expires_at) == (1, frozen)  # no timer while one is in flight
    assert not task.done()
    assert (await task)[0] == 200
    ended = time.monotonic()
    [runner] = fake.runners()
    expected = datetime.now(UTC) + timedelta(seconds=0.5)
    assert abs(runner.expires_at - expected) < timedelta(milliseconds=100)
    await eventually(lambda: not fake.runners())
    assert time.monotonic() - ended > 0.4  # unloaded ~0.5 s after the *later* end


async def test_close_ends_a_loop_that_lost_its_cancellation(fake) -> None:
    """A stop ends the scheduler's loops even when one lost a cancellation (chaos 0.24.0 seed
    383 hung in ``close``: a runner starting while the server stopped saw its pipe close as
    the cancellation came, and on Python 3.11 ``asyncio.wait_for`` returned the read, not the
    cancellation; the pending loop went back to its queue and the stop waited for ever)."""
    lost = asyncio.Event()

    async def swallows_one_cancel() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            lost.set()
        await asyncio.Event().wait()  # back to waiting, as the pending loop did

    scheduler = fake.scheduler
    stubborn = asyncio.create_task(swallows_one_cancel())
    scheduler._tasks.append(stubborn)
    await asyncio.wait_for(scheduler.close(), 10)
    assert lost.is_set()
    assert stubborn.done()
