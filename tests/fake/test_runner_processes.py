"""The fake's runners as real child processes (issue 13): killed, they crash like Ollama's."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import aiohttp
import pytest

from conftest import FakeFactory
from helpers import FAST_FAKE, eventually
from ollama_keepwarm.fake import FakeOllama

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
