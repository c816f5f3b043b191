"""The fake's runners as real child processes (issue 13): killed, they crash like Ollama's."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable
from pathlib import Path

import aiohttp
import pytest

from conftest import FakeFactory
from helpers import FAST_FAKE, eventually
from ollama_keepwarm.core.runners import parse_runner_cmdline
from ollama_keepwarm.fake import FakeOllama
from ollama_keepwarm.fake.processes import LLAMA_SERVER_BIN, OLLAMA_BIN

MODEL = "llama3.1:8b"


async def _warm(fake: FakeOllama, model: str = MODEL) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{fake.url}/api/generate", json={"model": model}) as response,
    ):
        assert response.status == 200


def _alive(pid: int) -> bool:
    """Running, not a zombie (a zombie still answers kill(0)); gone once reaped."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in {"Z", "X"}


def _pid(fake: FakeOllama, name: str = MODEL) -> int:
    assert fake.processes is not None
    runner = next(r for r in fake.state()["runners"] if r["name"] == name)
    pid = runner["pid"]
    assert isinstance(pid, int)
    return pid


async def test_a_loaded_runner_is_a_child_that_a_sigkill_crashes(make_fake: FakeFactory) -> None:
    fake = await make_fake(runner_processes=True, **FAST_FAKE)
    await _warm(fake)
    pid = _pid(fake)
    assert _alive(pid)
    os.kill(pid, signal.SIGKILL)
    await eventually(lambda: fake.runners()[0].crashed, what="the runner marked crashed")
    assert [r.name for r in fake.runners()] == [MODEL]  # still listed, unchanged (§4.8)
    await _warm(fake)  # the next request repairs it
    assert [ld.reason for ld in fake.loads] == ["cold", "repair"]
    assert _pid(fake) != pid
    assert not fake.runners()[0].crashed


async def test_fake_crash_kills_the_child(make_fake: FakeFactory) -> None:
    fake = await make_fake(runner_processes=True, **FAST_FAKE)
    await _warm(fake)
    pid = _pid(fake)
    assert fake.crash(MODEL)
    await eventually(lambda: not _alive(pid), what="the child killed")
    assert fake.runners()[0].crashed


async def test_unload_and_stop_end_the_children_without_a_crash(make_fake: FakeFactory) -> None:
    fake = await make_fake(runner_processes=True, **FAST_FAKE)
    await _warm(fake)
    await _warm(fake, "qwen2.5-coder:7b")
    first, second = _pid(fake), _pid(fake, "qwen2.5-coder:7b")
    await fake.unload(MODEL)
    await eventually(lambda: not _alive(first), what="the unloaded runner's child gone")
    assert [r.name for r in fake.runners()] == ["qwen2.5-coder:7b"]
    assert not fake.runners()[0].crashed
    await fake.stop()
    assert not _alive(second)


async def test_without_the_option_no_process_is_spawned(fake: FakeOllama) -> None:
    await _warm(fake)
    assert fake.processes is None
    assert fake.state()["runners"][0]["pid"] is None


async def test_the_children_are_in_a_cgroup_when_one_can_be_made(make_fake: FakeFactory) -> None:
    fake = await make_fake(runner_processes=True, **FAST_FAKE)
    assert fake.processes is not None
    if fake.processes.cgroup is None:
        if os.environ.get("CI") == "true" and os.geteuid() == 0:
            pytest.fail("CI runs as root: the fake must be able to make a cgroup")
        pytest.skip("cannot create a cgroup v2 here (not root, or no writable cgroup2 mount)")
    await _warm(fake)
    procs = (fake.processes.cgroup / "cgroup.procs").read_text().split()
    assert str(_pid(fake)) in procs
    cgroup = fake.processes.cgroup
    await fake.stop()
    assert not cgroup.exists()  # removed with the server


def _cmdline(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    assert raw.endswith(b"\0")
    assert not raw.endswith(b"\0\0")  # exactly Ollama's bytes: no padding left over
    return raw[:-1].decode().split("\0")


async def _generate(fake: FakeOllama, model: str, **body: object) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{fake.url}/api/generate", json={"model": model, **body}) as response,
    ):
        assert response.status == 200


@pytest.mark.parametrize(
    ("version", "options", "memory", "expected"),
    [
        pytest.param(
            "0.24.0", {"num_thread": 1}, 16 * 2**30,
            [OLLAMA_BIN, "runner", "--model", "BLOB", "--port", "PORT"],
            id="0.24: blob and port only",
        ),
        pytest.param(
            "0.32.15", {}, 0,
            [LLAMA_SERVER_BIN, "--model", "BLOB", "--port", "PORT", "--host", "127.0.0.1",
             "--no-webui", "--offline", "-c", "8192", "-np", "2", "--log-verbosity", "4",
             "--no-log-prefix", "--no-log-timestamps", "--load-mode", "none", "--flash-attn",
             "off", "-b", "512", "-ub", "512", "--context-shift"],
            id="0.32.15 on a CPU: automatic options",
        ),
        pytest.param(
            "0.32.15", {"num_ctx": 8192, "num_thread": 1, "num_gpu": 20, "main_gpu": 0},
            16 * 2**30,
            [LLAMA_SERVER_BIN, "--model", "BLOB", "--port", "PORT", "--host", "127.0.0.1",
             "--no-webui", "--offline", "-c", "16384", "-np", "2", "--log-verbosity", "4",
             "--no-log-prefix", "--no-log-timestamps", "--flash-attn", "auto", "-b", "1024",
             "-ub", "1024", "-ngl", "20", "-t", "1", "--split-mode", "none", "--main-gpu", "0",
             "--context-shift"],
            id="0.32.15 a client's options",
        ),
        pytest.param(
            "0.32.0", {"use_mmap": False}, 16 * 2**30,
            [LLAMA_SERVER_BIN, "--model", "BLOB", "--port", "PORT", "--host", "127.0.0.1",
             "--no-webui", "--offline", "-c", "8192", "-np", "2", "--log-verbosity", "4",
             "--no-log-prefix", "--no-log-timestamps", "--no-mmap", "--flash-attn", "auto",
             "-b", "512", "-ub", "512", "--context-shift"],
            id="0.32.0 says --no-mmap",
        ),
    ],
)  # fmt: skip
async def test_a_runner_child_carries_the_argv_of_the_version(
    make_fake: FakeFactory,
    version: str,
    options: dict[str, object],
    memory: int,
    expected: list[str],
) -> None:
    fake = await make_fake(
        runner_processes=True,
        ollama_version=version,
        memory_bytes=memory,
        num_parallel=2,
        **FAST_FAKE,
    )
    await _generate(fake, MODEL, options=options)
    pid = _pid(fake)
    argv = _cmdline(pid)
    manifest = fake.catalog.resolve(MODEL)
    assert manifest is not None
    model = manifest.model
    port = argv[argv.index("--port") + 1]
    assert int(port) > 0
    assert argv == [
        model.blob_path if a == "BLOB" else port if a == "PORT" else a for a in expected
    ]
    comm = Path(f"/proc/{pid}/comm").read_text().strip()
    assert comm == Path(expected[0]).name
    parsed = parse_runner_cmdline(Path(f"/proc/{pid}/cmdline").read_bytes())
    assert parsed is not None
    assert parsed.blob == f"sha256-{model.blob}"


async def test_an_embedding_model_gets_one_slot_and_its_batch(make_fake: FakeFactory) -> None:
    fake = await make_fake(runner_processes=True, num_parallel=4, **FAST_FAKE)
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            f"{fake.url}/api/embed", json={"model": "nomic-embed-text", "input": []}
        ) as response,
    ):
        assert response.status == 200
    assert fake.processes is not None
    (pid,) = fake.processes.pids().values()
    argv = _cmdline(pid)
    assert argv[argv.index("-np") + 1] == "1"
    assert "--embedding" in argv
    assert argv[argv.index("-b") + 1] == "2048"


async def test_the_child_exists_from_the_start_of_the_load(make_fake: FakeFactory) -> None:
    """A load in flight is a process with no /api/ps row (§4.9); a failed load ends it."""
    fake = await make_fake(runner_processes=True, load_seconds_per_gb=2.0)
    assert fake.processes is not None
    processes = fake.processes
    task = asyncio.create_task(_warm(fake))
    await eventually(processes.pids, what="the child of the load in flight")
    assert fake.runners() == []
    (pid,) = processes.pids().values()
    assert _alive(pid)
    parsed = parse_runner_cmdline(Path(f"/proc/{pid}/cmdline").read_bytes())
    assert parsed is not None
    assert parsed.flavour == "llama-server"
    task.cancel()  # the client leaves: the load is cancelled and its runner exits
    await asyncio.gather(task, return_exceptions=True)
    await eventually(lambda: not _alive(pid), what="the cancelled load's child gone")
    assert fake.loads[0].error == "context canceled"


async def test_a_failed_load_ends_its_child_and_a_killed_loading_child_fails_it(
    make_fake: FakeFactory,
) -> None:
    fake = await make_fake(runner_processes=True, ollama_version="0.24.0", **FAST_FAKE)
    assert fake.processes is not None
    fake.fail_next_load("boom")
    async with (
        aiohttp.ClientSession() as session,
        session.post(f"{fake.url}/api/generate", json={"model": MODEL}) as response,
    ):
        assert response.status == 500
    assert fake.processes.pids() == {}
    fake.load_seconds_per_gb = fake.scheduler.load_seconds_per_gb = 2.0
    processes = fake.processes
    async with aiohttp.ClientSession() as session:
        request = asyncio.create_task(
            session.post(f"{fake.url}/api/generate", json={"model": MODEL})
        )
        await eventually(processes.pids, what="the loading child")
        (pid,) = processes.pids().values()
        os.kill(pid, signal.SIGKILL)
        async with await request as response:
            assert response.status == 500
            body = await response.json()
    assert body["error"] == "llama runner process has terminated: signal: killed"
    assert fake.runners() == []


async def test_an_eviction_ends_the_victims_child_without_a_crash(make_fake: FakeFactory) -> None:
    fake = await make_fake(runner_processes=True, max_loaded=1, **FAST_FAKE)
    await _warm(fake)
    victim = _pid(fake)
    await _warm(fake, "qwen2.5-coder:7b")
    await eventually(lambda: not _alive(victim), what="the evicted runner's child gone")
    assert [r.name for r in fake.runners()] == ["qwen2.5-coder:7b"]
    assert not fake.runners()[0].crashed
    assert fake.evictions[0].victim == MODEL


async def _is(state: Awaitable[tuple[bool, bool]], expected: tuple[bool, bool]) -> bool:
    return await state == expected


@pytest.mark.parametrize(
    ("version", "between"),
    [
        pytest.param("0.24.0", (False, True), id="0.24: the process exits, then the row goes"),
        pytest.param("0.32.15", (True, False), id="0.32.15: the row goes, then the process"),
    ],
)
@pytest.mark.parametrize("cause", ["ollama stop", "eviction"])
async def test_an_unload_ends_process_and_row_in_the_versions_order(
    make_fake: FakeFactory, version: str, between: tuple[bool, bool], cause: str
) -> None:
    """§4.9, issue 21 item 1: what a poll of /proc and /api/ps sees between the two ends.

    States are (process alive, model listed). The fake's clock is frozen before the unload,
    so the state between the process's exit and the row's removal holds still for the polls
    (the gap is a clock wait); after the resume both are gone. The other order never shows.
    """
    fake = await make_fake(runner_processes=True, ollama_version=version, max_loaded=1, **FAST_FAKE)
    await _warm(fake)
    pid = _pid(fake)
    states: list[tuple[bool, bool]] = []

    async def observe(session: aiohttp.ClientSession) -> tuple[bool, bool]:
        alive = _alive(pid)
        async with session.get(f"{fake.url}/api/ps") as response:
            names = [m["name"] for m in (await response.json())["models"]]
        state = (alive, MODEL in names)
        if not states or states[-1] != state:
            states.append(state)
        return state

    fake.clock.suspend()
    other = "qwen2.5-coder:7b"
    evicting = asyncio.create_task(_warm(fake, other)) if cause == "eviction" else None
    if evicting is None:
        assert await fake.unload(MODEL)
    async with aiohttp.ClientSession() as session:
        try:
            await eventually(
                lambda: _is(observe(session), between), interval=0.001, what=f"state {between}"
            )
        finally:
            fake.clock.resume()
        await eventually(lambda: _is(observe(session), (False, False)), what="both gone")
    if evicting is not None:
        await evicting
        assert [r.name for r in fake.runners()] == [other]
    forbidden = (not between[0], not between[1])
    assert forbidden not in states, states
    assert states[-2:] == [between, (False, False)], states


@pytest.mark.parametrize("version", ["0.24.0", "0.32.15"])
async def test_a_stop_in_the_middle_of_an_unload_ends_the_child(
    make_fake: FakeFactory, version: str
) -> None:
    """A server stop kills every runner (§4.8), also one whose unload is half done."""
    fake = await make_fake(runner_processes=True, ollama_version=version, **FAST_FAKE)
    await _warm(fake)
    pid = _pid(fake)
    fake.clock.suspend()  # the unload stops between the process's end and the row's
    assert await fake.unload(MODEL)
    await eventually(
        lambda: (not _alive(pid)) if version == "0.24.0" else fake.runners() == [],
        what="the unload half done",
    )
    await asyncio.wait_for(fake.stop(), 10.0)  # it waits for every child it killed
    assert not _alive(pid)
