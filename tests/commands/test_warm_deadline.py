"""The ExecStartPost one-shot never starts a load it cannot finish inside its bound (issue 10)."""

from __future__ import annotations

from helpers import FAST_FAKE, make_config
from ollama_keepwarm.commands.oneshot import warm_all
from ollama_keepwarm.daemon.state import LoadTimeStore
from ollama_keepwarm.fake import FakeOllama


async def test_a_load_measured_too_long_is_left_to_the_daemon() -> None:
    """The daemon measured 70B at 100 s: with 3 s left, it is not started; the rest is warm."""
    async with FakeOllama(**FAST_FAKE, memory_bytes=128 * 2**30) as fake:
        config = make_config(
            fake.url, [{"name": "llama3.3:70b", "priority": 10}, {"name": "tiny", "priority": 5}]
        )
        said: list[str] = []
        times = {LoadTimeStore.key(fake.url, "llama3.3:70b"): 100.0}
        outcomes, reached = await warm_all(
            config, 5.0, said.append, deadline_s=3.0, load_times=times
        )
    assert reached
    by_name = {o.name: o for o in outcomes}
    assert by_name["llama3.3:70b"].skipped
    assert "left to the daemon" in by_name["llama3.3:70b"].detail
    assert by_name["tiny"].ok
    assert not by_name["tiny"].skipped
    assert [ld.model for ld in fake.loads] == ["tiny:latest"]  # nothing started and aborted


async def test_without_measurements_this_runs_pace_decides() -> None:
    """No times known: after the first load, a model far bigger at that pace is not started."""
    async with FakeOllama(
        **{**FAST_FAKE, "load_seconds_per_gb": 0.4}, memory_bytes=128 * 2**30
    ) as fake:  # 8B: ~2 s, so 70B at that pace: ~17 s
        config = make_config(
            fake.url,
            [{"name": "llama3.1:8b", "priority": 10}, {"name": "llama3.3:70b", "priority": 5}],
        )
        outcomes, _ = await warm_all(config, 5.0, lambda _s: None, deadline_s=6.0, load_times={})
    by_name = {o.name: o for o in outcomes}
    assert by_name["llama3.1:8b"].ok
    assert by_name["llama3.3:70b"].skipped
    assert all(ld.ok for ld in fake.loads)
    assert [ld.model for ld in fake.loads] == ["llama3.1:8b"]


async def test_the_daemon_records_cold_load_times_for_the_one_shot(tmp_path: object) -> None:
    """What the one-shot reads is what the daemon wrote: one entry per cold load."""
    from helpers import running_keeper

    async with FakeOllama(**FAST_FAKE) as fake:
        config = make_config(fake.url, [{"name": "tiny"}])
        async with running_keeper(config) as (keeper, _):
            await keeper.ready.wait()
        store = LoadTimeStore(__import__("pathlib").Path(config.daemon.state_dir))
        times = store.load()
    assert list(times) == [LoadTimeStore.key(fake.url, "tiny:latest")]
    assert times[LoadTimeStore.key(fake.url, "tiny:latest")] > 0
