"""The crash watch (issue 13): a runner killed with SIGKILL is reloaded without a client request.

The fake's runners are real children (``runner_processes=True``); the keeper polls ``/api/ps`` every
30 minutes here and pings every hour, so only the watch can notice the death.
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from structlog.testing import capture_logs

from helpers import FAST_FAKE, eventually, make_config, running_keeper
from ollama_keepwarm.core.config import Config, parse_config
from ollama_keepwarm.core.runners import FLAVOUR_UNKNOWN, RunnerEvent
from ollama_keepwarm.daemon.crashwatch import (
    REREADS,
    CgroupPids,
    ProcessTablePids,
    RunnerWatch,
    choose_source,
    unseen,
)
from ollama_keepwarm.daemon.keeper import Keeper
from ollama_keepwarm.daemon.status import processes_entry
from ollama_keepwarm.fake import FakeOllama
from ollama_keepwarm.fake.records import who

LLAMA = {"name": "llama3.1:8b", "keep_alive": "1h", "priority": 10}
CODER = {"name": "qwen2.5-coder:7b", "keep_alive": "1h", "priority": 5}
QUIET = {"poll_interval": "30m", "health_interval": "1h", "refresh_before": "40m"}


def _config(url: str, cgroup: str, models: list[dict[str, Any]], **daemon: Any) -> Config:
    base = make_config(url, models, **{**QUIET, **daemon})
    return parse_config(
        {
            "ollama": {
                "host": url,
                "load_timeout": "30s",
                "request_timeout": "5s",
                "cgroup": cgroup,
            },
            "daemon": {
                "control_socket": base.daemon.control_socket,
                "state_dir": base.daemon.state_dir,
                **QUIET,
                **daemon,
            },
            "http": {"enabled": False},
            "models": models,
        },
        environ={},
    )


def _cgroup_of(fake: FakeOllama) -> Path:
    assert fake.processes is not None
    if fake.processes.cgroup is None:
        if os.environ.get("CI") == "true" and os.geteuid() == 0:
            pytest.fail("CI runs as root: the fake must be able to make a cgroup")
        pytest.skip("cannot create a cgroup v2 here: the process-table test covers the watch")
    return fake.processes.cgroup


def _pid(fake: FakeOllama, name: str) -> int:
    pid = next(r["pid"] for r in fake.state()["runners"] if r["name"] == name)
    assert isinstance(pid, int)
    return pid


async def _known(keeper: Keeper, url: str, *pids: int) -> None:
    """Wait until the watch has seen these processes (a rescan after their runner loaded)."""
    host = keeper.hosts[url]
    await eventually(
        lambda: host.crash_watch is not None and set(pids) <= host.crash_watch.known,
        what=f"the watch knowing {pids}",
    )


async def test_a_killed_runner_is_reloaded_within_detection_plus_its_load() -> None:
    """Done when (issue 13): reloaded within 0.5 s + its load time, no client request."""
    async with FakeOllama(runner_processes=True, **FAST_FAKE) as fake:
        config = _config(fake.url, str(_cgroup_of(fake)), [LLAMA, CODER])
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await asyncio.wait_for(keeper.ready.wait(), 10)
                host = keeper.hosts[fake.url]
                assert host.crash_watch_source.startswith("cgroup ")
                first = next(ld for ld in fake.loads if ld.model == LLAMA["name"])
                assert first.finished is not None
                load_s = (first.finished - first.started).total_seconds()
                await _known(keeper, fake.url, _pid(fake, LLAMA["name"]))
                killed = time.monotonic()
                os.kill(_pid(fake, LLAMA["name"]), signal.SIGKILL)
                await eventually(
                    lambda: [ld for ld in fake.loads if ld.reason == "repair" and ld.ok],
                    within=5,
                    what="the keeper's repair load",
                )
                repaired = time.monotonic() - killed
                # The repaired runner is then given our lease again (it took the default).
                await eventually(
                    lambda: all(r.keep_alive_ns == 3600 * 10**9 for r in fake.runners()),
                    what="our keep_alive back on the repaired runner",
                )
                metrics = keeper.metrics.exposition().decode()
    assert repaired <= 0.5 + load_s + 0.3, (repaired, load_s)  # + the fake's own start-up
    repair = next(ld for ld in fake.loads if ld.reason == "repair")
    assert repair.model == LLAMA["name"]
    clients = [r for r in fake.requests if r.path == "/api/generate" and r.body.get("prompt")]
    assert not clients
    reloaded = [e for e in logs if e["event"] == "runner_reloaded"]
    assert [e["expected"] for e in reloaded] == [True]
    assert not [e for e in logs if e["log_level"] in {"warning", "error"}]
    assert 'repairs_total{cause="reload",host=' in metrics


@pytest.mark.parametrize("version", ["0.24.0", "0.32.15"])
async def test_a_normal_unload_is_no_crash_and_checks_no_other_model(version: str) -> None:
    """`ollama stop` ends a runner: its model leaves ps, so it is an unload (loss rules, warmed
    back at the next look), not a crash; the runner that ended names its blob, so no other
    model is pinged (issue 21 items 1 and 3: a check of every listed model is what fought a
    capacity conflict; a wait after a loss soon after our own load delayed the repair)."""
    async with FakeOllama(runner_processes=True, ollama_version=version, **FAST_FAKE) as fake:
        config = _config(fake.url, str(_cgroup_of(fake)), [LLAMA, CODER], poll_interval="100ms")
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await asyncio.wait_for(keeper.ready.wait(), 10)
                host = keeper.hosts[fake.url]
                assert fake.processes is not None
                await _known(keeper, fake.url, *fake.processes.pids().values())
                pings = len(fake.requests)
                await fake.unload(CODER["name"])  # ollama stop: the keeper warms it back
                await eventually(
                    lambda: host.crash_watch is not None and host.crash_watch.exits >= 1,
                    what="the exit seen",
                )
                await eventually(
                    lambda: any(e["event"] == "model_vanished" for e in logs),
                    what="the stopped model seen gone",
                )
                await eventually(
                    lambda: CODER["name"] in {r.name for r in fake.runners()},
                    what="the stopped model warmed back",
                )
                llama = host.states["llama3.1:8b"]
                assert llama.check_requested_at is None
                assert not llama.expect_reload
                calls = [
                    r
                    for r in fake.requests[pings:]
                    if r.path == "/api/generate" and r.body.get("model") == LLAMA["name"]
                ]
                assert calls == []
    assert not [ld for ld in fake.loads if ld.reason in {"repair", "reload"}]
    assert not [e for e in logs if e["event"] in {"runner_reloaded", "runner_died"}]
    assert not [e for e in logs if e["log_level"] in {"warning", "error"}]
    vanished = next(e for e in logs if e["event"] == "model_vanished")
    assert vanished["evidence"] == "none"
    # Issue 21 item 3: no sign of a client's reload, so back at the next look (one poll: a
    # client's reload shows its runner by then), however soon after our own load of it.
    assert vanished["rewarm_delay_s"] <= 0.1


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@asynccontextmanager
async def _fake_process(*args: str) -> AsyncIterator[str]:
    """The fake Ollama in its own process, as a real Ollama would be: yield its URL."""
    port = _free_port()
    process = subprocess.Popen(  # noqa: ASYNC220 - started once; its output goes nowhere
        [sys.executable, "-m", "ollama_keepwarm", "fake-ollama", "--port", str(port), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"

    async def up() -> bool:
        try:
            async with aiohttp.ClientSession() as s, s.get(f"{url}/api/version") as r:
                return r.status == 200
        except aiohttp.ClientError:
            return False

    try:
        await eventually(up, within=20, what="the fake Ollama process")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=10)


async def _state(url: str) -> dict[str, Any]:
    async with aiohttp.ClientSession() as s, s.get(f"{url}/_fake/state") as r:
        result: dict[str, Any] = await r.json()
        return result


async def test_without_a_cgroup_the_process_table_is_watched() -> None:
    """No cgroup to read (``auto`` finds no ollama.service here): Ollama's descendants are."""
    async with _fake_process(
        "--runner-processes", "--load-seconds-per-gb", "0.05", "--seconds-per-token", "0.001"
    ) as url:
        source, why = choose_source("auto", url, default_host=True)
        if isinstance(source, CgroupPids):
            pytest.skip(f"this machine has a readable ollama.service cgroup: {why}")
        config = _config(url, "auto", [LLAMA])
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            host = keeper.hosts[url]
            await eventually(lambda: host.crash_watch is not None, what="the watch started")
            assert host.crash_watch_source.startswith("process table"), host.crash_watch_source
            pid = (await _state(url))["runners"][0]["pid"]
            await _known(keeper, url, pid)
            killed = time.monotonic()
            os.kill(pid, signal.SIGKILL)

            async def repaired() -> bool:
                loads = (await _state(url))["loads"]
                return any(ld["reason"] == "repair" and ld["ok"] for ld in loads)

            await eventually(repaired, within=5, what="the repair load")
            elapsed = time.monotonic() - killed
    assert elapsed < 0.5 + 1.0, elapsed  # a pidfd event; the 8B loads in ~0.25 s here


def test_off_and_remote_hosts_are_not_watched() -> None:
    assert choose_source("", "http://127.0.0.1:11434", default_host=True)[0] is None
    source, why = choose_source("auto", "http://192.0.2.1:11434", default_host=False)
    assert source is None
    assert "another machine" in why
    source, why = choose_source("/nonexistent/cgroup", "http://127.0.0.1:1", default_host=True)
    assert source is None
    assert "cgroup.procs" in why


def test_the_process_table_never_takes_ourselves_for_ollama() -> None:
    """Our own children are not Ollama's runners (an in-process fake, a test)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        table = ProcessTablePids(sock.getsockname()[1])
        assert table.server is None
        table.read()
        assert table.server != os.getpid()


async def test_a_refresh_that_hangs_while_ollama_answers_is_a_wedged_runner(
    tmp_path: Path,
) -> None:
    """Reported once, after a bound from the load time; shown, counted, hooked; then cleared."""
    marker = tmp_path / "hook-ran"
    hook = [sys.executable, "-c", f"open({str(marker)!r}, 'a').write('x')"]
    async with FakeOllama(**FAST_FAKE) as fake:
        config = _config(fake.url, "", [LLAMA], on_runner_wedged=hook)
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await asyncio.wait_for(keeper.ready.wait(), 10)
                host = keeper.hosts[fake.url]
                host.wedge_slack_s = 0.2  # instead of Ollama's own 15 s of waits
                fake.set_delay("/api/generate", 2.0)  # the runner hangs; /api/version answers
                keeper.refresh(LLAMA["name"])
                await eventually(marker.exists, within=5, what="the on_runner_wedged hook")
                status = keeper.status()["hosts"][0]
                metrics = keeper.metrics.exposition().decode()
                fake.set_delay("/api/generate", None)
                await eventually(
                    lambda: keeper.status()["hosts"][0]["models"][0]["state"] == "warm",
                    within=5,
                    what="the wedge over once the refresh answers",
                )
    assert status["models"][0]["state"] == "wedged"
    assert status["models"][0]["wedged_since"]
    assert status["crash_watch"].startswith("off")
    assert "ollama_keepwarm_runners_wedged_total" in metrics
    wedged = [e for e in logs if e["event"] == "runner_wedged"]
    assert len(wedged) == 1
    assert wedged[0]["log_level"] == "warning"
    assert marker.read_text() == "x"


class _Pids:
    """A pid source the test sets by hand (the /proc it reads is a directory of the test's)."""

    description = "test pids"
    rescan_s = 3600.0

    def __init__(self) -> None:
        self.pids: frozenset[int] | None = frozenset()

    def read(self) -> frozenset[int] | None:
        return self.pids


def _proc_entry(proc: Path, pid: int, *argv: str) -> None:
    (proc / str(pid)).mkdir(parents=True, exist_ok=True)
    (proc / str(pid) / "cmdline").write_bytes(b"".join(a.encode() + b"\0" for a in argv))


BLOB = "sha256-" + "ab" * 32
SERVER_ARGV = ("/usr/local/bin/ollama", "serve")
RUNNER_ARGV = ("/usr/local/bin/ollama", "runner", "--model", f"/m/blobs/{BLOB}", "--port", "9")


async def test_the_watch_reports_runners_only_and_reads_a_fork_again(tmp_path: Path) -> None:
    """``ollama serve`` is no runner; a fork still showing it is read again until it execs."""
    source = _Pids()
    changes: list[tuple[tuple[str, int, str], ...]] = []
    now = [0.0]
    watch = RunnerWatch(
        source,
        lambda events, _t: changes.append(
            tuple((e.kind, e.runner.pid, e.runner.blob) for e in events)
        ),
        proc=tmp_path,
        clock=lambda: now[0],
    )
    _proc_entry(tmp_path, 100, *SERVER_ARGV)
    _proc_entry(tmp_path, 101, *SERVER_ARGV)  # forked, not exec'd yet
    source.pids = frozenset({100, 101})
    now[0] = 1.0
    watch.rescan()
    assert changes == []
    assert watch.table.runners == ()
    _proc_entry(tmp_path, 101, *RUNNER_ARGV)  # now exec'd: the runner
    now[0] = 2.0
    watch.rescan()
    assert changes == [(("started", 101, BLOB),)]
    # Started by its first listing, as a fork: a call of ours sent after it is not its cause.
    assert watch.table.by_blob(BLOB)[0].started_at == 1.0
    assert watch.table.visible
    source.pids = frozenset({100})
    watch.rescan()
    assert changes[-1] == (("exited", 101, BLOB),)
    assert watch.exits == 1
    for _ in range(REREADS + 1):  # the server is read again a few times only, then left alone
        watch.rescan()
    (tmp_path / "100" / "cmdline").unlink()
    _proc_entry(tmp_path, 100, *RUNNER_ARGV)
    watch.rescan()
    assert watch.table.runners == ()


@pytest.mark.skipif(not hasattr(time, "CLOCK_BOOTTIME"), reason="Linux's boot clock")
async def test_a_runners_start_is_bounded_by_its_start_time_in_proc(tmp_path: Path) -> None:
    """A runner first listed now that started earlier (``/proc/<pid>/stat`` field 22, clock
    ticks after boot) is dated by that start, rounded up a tick: never too early."""
    source = _Pids()
    watch = RunnerWatch(source, lambda _e, _t: None, proc=tmp_path, clock=lambda: 100.0)
    hz = os.sysconf("SC_CLK_TCK")
    ticks = int((time.clock_gettime(time.CLOCK_BOOTTIME) - 5.0) * hz)
    _proc_entry(tmp_path, 101, *RUNNER_ARGV)
    fields = ["S"] + ["0"] * 18 + [str(ticks)] + ["0"] * 10
    (tmp_path / "101" / "stat").write_bytes(f"101 (ollama (x)) {' '.join(fields)}".encode())
    source.pids = frozenset({101})
    watch.rescan()
    started = watch.table.by_blob(BLOB)[0].started_at
    assert 95.0 - 0.5 < started < 95.0 + 0.5  # 5 s before "now" (100.0), to a tick and a read


async def test_a_hidden_process_still_reports_its_exit_and_makes_the_table_not_visible(
    tmp_path: Path,
) -> None:
    """``/proc`` hides its command line (hidepid, ProtectProc=): pids only, said so."""
    source = _Pids()
    events: list[RunnerEvent] = []
    watch = RunnerWatch(source, lambda e, _t: events.extend(e), proc=tmp_path)
    child = subprocess.Popen(  # noqa: ASYNC220 - a live pid with no entry in the test's /proc
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    try:
        source.pids = frozenset({child.pid})
        watch.rescan()
        assert [(e.kind, e.runner.flavour) for e in events] == [("started", FLAVOUR_UNKNOWN)]
        assert not watch.table.visible
        assert "pids only" in watch.table.source
    finally:
        assert child.stdin is not None
        child.stdin.close()
        child.wait()
    source.pids = frozenset()
    watch.rescan()
    assert [(e.kind, e.runner.pid) for e in events][-1] == ("exited", child.pid)


@pytest.mark.parametrize("version", ["0.24.0", "0.32.15"])
async def test_the_runner_table_names_each_runners_blob_and_options(version: str) -> None:
    """Through the fake's runner children, on both versions: start, table, status, kill."""
    async with FakeOllama(runner_processes=True, ollama_version=version, **FAST_FAKE) as fake:
        config = _config(fake.url, str(_cgroup_of(fake)), [{**LLAMA, "options": {"num_thread": 2}}])
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            host = keeper.hosts[fake.url]
            pid = _pid(fake, LLAMA["name"])
            await eventually(lambda: host.runner_table.by_pid(pid) is not None, what="the runner")
            table = host.runner_table
            runner = table.by_pid(pid)
            assert runner is not None
            blob = host.blobs[LLAMA["name"]]
            assert runner.blob == blob
            assert table.visible
            assert table.source.startswith("cgroup ")
            if version == "0.24.0":
                assert (runner.flavour, dict(runner.options)) == ("runner", {})
            else:
                assert runner.flavour == "llama-server"
                assert runner.options["num_thread"] == 2
                assert runner.options["num_ctx"] == 4096
            entry = processes_entry(table)
            assert entry["visible"] is True
            assert [r["blob"] for r in entry["runners"]] == [blob]
            os.kill(pid, signal.SIGKILL)
            await eventually(
                lambda: host.runner_table.by_pid(pid) is None, what="the exit in the table"
            )


def test_a_host_with_no_watch_says_why_in_its_table() -> None:
    source, why = choose_source("auto", "http://192.0.2.1:11434", default_host=False)
    assert source is None
    table = unseen(f"off: {why}")
    assert not table.visible
    assert processes_entry(table)["cannot_see"] == [f"off: {why}"]


@pytest.mark.parametrize("version", ["0.24.0", "0.32.15"])
async def test_two_kept_models_that_do_not_fit_settle_without_a_war(version: str) -> None:
    """Issue 21 item 1: one model fits, two are kept. An eviction by our own load ends the
    victim's runner; that exit is an unload (its model leaves ps), never a crash to repair:
    at most one extra load of each before the capacity conflict settles it."""
    async with FakeOllama(
        runner_processes=True, ollama_version=version, max_loaded=1, **FAST_FAKE
    ) as fake:
        low = {**CODER, "priority": 0}
        config = _config(fake.url, str(_cgroup_of(fake)), [LLAMA, low], poll_interval="100ms")
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await eventually(
                    lambda: any(e["event"] == "capacity_conflict" for e in logs),
                    within=20,
                    what="the capacity conflict",
                )
                await eventually(lambda: LLAMA["name"] in {r.name for r in fake.runners()})
                await asyncio.wait_for(keeper.ready.wait(), 10)
                settled = len(fake.loads)
                for _ in range(20):
                    await asyncio.sleep(0)
                host = keeper.hosts[fake.url]
                looks = host.looks
                await eventually(lambda: host.looks >= looks + 10, what="ten more looks")
    per_model = {
        m: [ld for ld in fake.loads if ld.model == m] for m in (LLAMA["name"], CODER["name"])
    }
    assert all(len(loads) <= 2 for loads in per_model.values()), fake.loads
    assert len(fake.loads) == settled, "loads went on after the conflict settled"
    assert not [e for e in logs if e["event"] == "runner_reloaded"]
    assert not [ld for ld in fake.loads if ld.reason == "repair"]


@pytest.mark.parametrize("version", ["0.24.0", "0.32.15"])
async def test_a_client_with_other_invisible_options_is_not_fought(version: str) -> None:
    """Issue 21 item 2: a client calls the kept model every 0.3 s with num_thread 1 (an option
    /api/ps cannot show). Alone it pays one reload; beside the keeper at most two, and the
    keeper says options_mismatch instead of taking each reload for a crash repair."""
    async with FakeOllama(runner_processes=True, ollama_version=version, **FAST_FAKE) as fake:
        config = _config(fake.url, str(_cgroup_of(fake)), [LLAMA], poll_interval="100ms")
        paid = 0
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await asyncio.wait_for(keeper.ready.wait(), 10)
                body = {
                    "model": LLAMA["name"],
                    "prompt": "hi",
                    "stream": False,
                    "options": {"num_thread": 1, "num_predict": 1},
                }
                for _ in range(20):
                    async with (
                        aiohttp.ClientSession() as s,
                        s.post(f"{fake.url}/api/generate", json=body) as r,
                    ):
                        answer = await r.json()
                    paid += answer.get("load_duration", 0) > 100_000_000  # 0.1 s: a load
                    host = keeper.hosts[fake.url]
                    target = host.looks + 3
                    await eventually(
                        lambda h=host, n=target: h.looks >= n,  # type: ignore[misc]
                        what="three looks",
                    )
    assert paid <= 2, paid
    assert [e for e in logs if e["event"] == "options_mismatch"]


@pytest.mark.parametrize("version", ["0.24.0", "0.32.15"])
async def test_a_repair_queued_behind_another_is_not_wedged(version: str) -> None:
    """Issue 21 item 4: two runners die; Ollama loads one model at a time, so the second
    repair waits behind the first. Queued is not wedged: no runner_wedged, no hook."""
    slow = {**FAST_FAKE, "load_seconds_per_gb": 0.3}  # ~1.5 s per load
    async with FakeOllama(runner_processes=True, ollama_version=version, **slow) as fake:
        config = _config(fake.url, str(_cgroup_of(fake)), [LLAMA, CODER])
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await asyncio.wait_for(keeper.ready.wait(), 20)
                host = keeper.hosts[fake.url]
                host.wedge_slack_s = 0.0  # the bound is twice the measured load: ~3 s
                pids = [_pid(fake, LLAMA["name"]), _pid(fake, CODER["name"])]
                await _known(keeper, fake.url, *pids)
                for pid in pids:
                    os.kill(pid, signal.SIGKILL)
                await eventually(
                    lambda: len([ld for ld in fake.loads if ld.reason == "repair" and ld.ok]) >= 2,
                    within=20,
                    what="both repairs",
                )
    assert not [e for e in logs if e["event"] == "runner_wedged"]


async def test_a_reload_applies_request_timeout_and_can_turn_the_watch_on() -> None:
    """Issue 22 item 10: SIGHUP with a new request_timeout uses it; a crash watch that was
    off (cgroup = "") is started when a reload turns it on."""
    async with FakeOllama(runner_processes=True, **FAST_FAKE) as fake:
        off = _config(fake.url, "", [LLAMA])
        on = _config(fake.url, str(_cgroup_of(fake)), [LLAMA])
        on = replace(on, ollama=replace(on.ollama, request_timeout_s=7.0))
        configs = [off]
        async with running_keeper(off, reload_config=lambda: configs[-1]) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            host = keeper.hosts[fake.url]
            assert host.crash_watch_source.startswith("off")
            configs.append(on)
            await keeper.reload()
            await eventually(lambda: host.crash_watch is not None, what="the watch started")
            assert host.crash_watch_source.startswith("cgroup ")
            assert host.client._short.total == 7.0


async def test_a_clients_runner_found_at_start_is_not_claimed_with_other_options() -> None:
    """Issue 22 item 12: a client loaded the kept model with num_ctx 2048; we keep it with
    8192. On v0.30+ the runner's argv says so before any call of ours: no claim reloads it."""
    async with FakeOllama(runner_processes=True, ollama_version="0.32.15", **FAST_FAKE) as fake:
        body = {"model": LLAMA["name"], "prompt": "hi", "stream": False}
        body["options"] = {"num_ctx": 2048, "num_predict": 1}
        async with aiohttp.ClientSession() as s, s.post(f"{fake.url}/api/generate", json=body):
            pass
        loads = len(fake.loads)
        kept = {**LLAMA, "options": {"num_ctx": 8192}}
        config = _config(fake.url, str(_cgroup_of(fake)), [kept], poll_interval="100ms")
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await eventually(
                    lambda: any(e["event"] == "options_mismatch" for e in logs),
                    what="the mismatch said",
                )
                host = keeper.hosts[fake.url]
                target = host.looks + 5
                await eventually(lambda: host.looks >= target, what="five more looks")
        assert len(fake.loads) == loads, "a call of ours reloaded the client's runner"


async def _client_generate(fake: FakeOllama, body: dict[str, Any]) -> None:
    """A client's request (its own User-Agent: the fake records it as a client's)."""
    agent = {"User-Agent": "curl/8.5.0"}
    async with (
        aiohttp.ClientSession(headers=agent) as s,
        s.post(f"{fake.url}/api/generate", json={"stream": False, **body}) as r,
    ):
        await r.read()


@pytest.mark.parametrize("version", ["0.24.0", "0.32.15"])
async def test_a_clients_reload_queued_behind_our_load_is_not_fought(version: str) -> None:
    """Chaos 0.24.0 seed 28: a client asks for the kept model with num_thread 1 while our
    re-warm loads it. Ollama serves the client the moment ours answers: it expires our runner
    (ps drops it as expired) and reloads it with the client's options. Its runner's exit is no
    crash to check (the check, queued behind the client's reload, reloaded it), nor is the
    client's runner ours: at most the one reload of ours that an eviction looks like until
    then, and options_mismatch is said (issue 21: at most two in a minute)."""
    slow = {**FAST_FAKE, "load_seconds_per_gb": 0.3}  # ~1.5 s per load
    async with FakeOllama(runner_processes=True, ollama_version=version, **slow) as fake:
        config = _config(fake.url, str(_cgroup_of(fake)), [LLAMA], poll_interval="100ms")
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await asyncio.wait_for(keeper.ready.wait(), 20)
                host = keeper.hosts[fake.url]
                key = next(iter(host.states))
                await _client_generate(fake, {"model": LLAMA["name"], "keep_alive": 0})
                await eventually(
                    lambda: host.states[key].in_flight_since is not None,
                    within=10,
                    what="our re-warm in flight",
                )
                options = {"num_thread": 1, "num_predict": 1}
                body = {"model": LLAMA["name"], "prompt": "hi", "options": options}
                await _client_generate(fake, body)
                target = host.looks + 10
                await eventually(lambda: host.looks >= target, what="ten more looks")
    fights = [
        ld
        for ld in fake.loads
        if who(ld.caller) == "keeper" and ld.replaced_by and who(ld.replaced_by) == "client"
    ]
    said = [e for e in logs if e["event"] == "options_mismatch"]
    assert len(fights) <= 1, [e["event"] for e in logs]  # the one that says it (issue 21)
    assert said, [e["event"] for e in logs]


@pytest.mark.parametrize("version", ["0.24.0", "0.32.15"])
async def test_a_clients_runner_back_at_our_context_is_still_left_alone(version: str) -> None:
    """Chaos 0.32.15 seed 62, 0.24.0 seed 135: one client reloads the kept model with num_ctx
    8192 (a mismatch, said), another reloads it with num_thread 1 at our context, with a
    short lease. ps shows num_ctx only (§3.1): that runner is still a client's with other
    options (§4.6), so no call of ours goes to it while it is resident."""
    async with FakeOllama(runner_processes=True, ollama_version=version, **FAST_FAKE) as fake:
        config = _config(fake.url, str(_cgroup_of(fake)), [LLAMA], poll_interval="100ms")

        def keeper_fought() -> bool:
            return any(
                who(ld.caller) == "keeper" and ld.replaced_by and who(ld.replaced_by) == "client"
                for ld in fake.loads
            )

        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await asyncio.wait_for(keeper.ready.wait(), 10)
                host = keeper.hosts[fake.url]
                wide = {"num_ctx": 8192, "num_predict": 1}
                body = {"model": LLAMA["name"], "prompt": "hi", "options": wide}
                await _client_generate(fake, {**body, "keep_alive": "1h"})
                await eventually(
                    lambda: any(e["event"] == "options_mismatch" for e in logs),
                    what="the mismatch said",
                )
                target = host.looks + 3
                await eventually(lambda: host.looks >= target, what="three looks")
                narrow = {"num_thread": 1, "num_predict": 1}
                body = {"model": LLAMA["name"], "prompt": "hi", "options": narrow}
                await _client_generate(fake, {**body, "keep_alive": "2s"})
                # Its lease runs out (a renewal of ours would be due before): the runner goes.
                await eventually(
                    lambda: not fake.state()["runners"] or keeper_fought(),
                    within=10,
                    what="the client's runner gone",
                )
    fights = [
        ld
        for ld in fake.loads
        if who(ld.caller) == "keeper" and ld.replaced_by and who(ld.replaced_by) == "client"
    ]
    assert not fights, [e["event"] for e in logs]
    print("EVENTS", [(e["event"], e.get("model"), e.get("reason")) for e in logs])
    print("LOADS", [(ld.model, ld.reason, who(ld.caller)) for ld in fake.loads])


@pytest.mark.parametrize("version", ["0.24.0", "0.32.15"])
async def test_a_client_using_a_kept_model_evicted_earlier_is_no_options_mismatch(
    version: str,
) -> None:
    """One slot; a client asks for another model (the kept one is evicted), then for the kept
    one with its options as configured. Its runner is a load of a model that was gone, not a
    reload: Ollama reloads only for other options (§4.6). The keeper said options_mismatch
    here, and left the client's runner unrenewed, as if it had other options."""
    async with FakeOllama(
        runner_processes=True, ollama_version=version, max_loaded=1, **FAST_FAKE
    ) as fake:
        config = _config(fake.url, str(_cgroup_of(fake)), [LLAMA], poll_interval="100ms")
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await asyncio.wait_for(keeper.ready.wait(), 10)
                async with aiohttp.ClientSession() as session:
                    for model in (CODER["name"], LLAMA["name"]):
                        body = {"model": model, "prompt": "hi", "stream": False}
                        async with session.post(f"{fake.url}/api/generate", json=body) as r:
                            assert r.status == 200
                host = keeper.hosts[fake.url]
                target = host.looks + 10
                await eventually(lambda: host.looks >= target, what="ten more looks")
                await eventually(
                    lambda: host.decisions[0].row is not None, what="the kept model listed"
                )
                assert not next(iter(host.states.values())).foreign  # its lease is renewed
    assert any(ld.model == LLAMA["name"] and who(ld.caller) == "client" for ld in fake.loads)
    assert not [e for e in logs if e["event"] == "options_mismatch"]


def _keeper_calls(fake: FakeOllama, model: str) -> list[Any]:
    """The keeper's requests for ``model`` the fake answered (or saw cancelled: 499)."""
    return [
        r
        for r in fake.requests
        if who(r.user_agent) == "keeper"
        and isinstance(r.body, dict)
        and r.body.get("model") == model
    ]


@pytest.mark.parametrize("version", ["0.24.0", "0.32.15"])
async def test_a_clients_load_queued_behind_ours_is_not_raced_by_our_next(version: str) -> None:
    """Chaos 0.32.15 seed 128: a client asks for a kept model (with num_thread 1) while our load
    of another runs; Ollama queues it, and serves it the moment ours answers. Our lane's next
    load, of that same model, went out in that instant, before the client's runner could be
    read: queued behind the client's load, it reloaded the client's runner with our options.
    A cold load waits a moment after our last call (``plan.queue_settles_at``; made long here,
    as a busy machine may start the fake's runner children slowly), and the read before it
    sees the client's load: withdrawn, never sent."""
    slow = {**FAST_FAKE, "load_seconds_per_gb": 0.3}  # ~1.5 s per load
    async with FakeOllama(runner_processes=True, ollama_version=version, **slow) as fake:
        config = _config(fake.url, str(_cgroup_of(fake)), [LLAMA, CODER], poll_interval="100ms")
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                host = await eventually(lambda: keeper.hosts.get(fake.url), what="the host")
                host.queue_settle_s = 2.0
                llama = next(k for k in host.states if k.startswith("llama"))
                await eventually(
                    lambda: host.states[llama].in_flight_since is not None,
                    what="our load of llama3.1:8b in flight",
                )
                options = {"num_thread": 1, "num_predict": 1}
                body = {"model": CODER["name"], "prompt": "hi", "options": options}
                await _client_generate(fake, {**body, "keep_alive": "1h"})
                await asyncio.wait_for(keeper.ready.wait(), 20)
                target = host.looks + 10
                await eventually(lambda: host.looks >= target, what="ten more looks")
    clients = [ld for ld in fake.loads if ld.model == CODER["name"] and who(ld.caller) == "client"]
    assert clients
    assert clients[0].finished is not None
    raced = [r for r in _keeper_calls(fake, CODER["name"]) if r.received < clients[0].finished]
    assert not raced, [e["event"] for e in logs]  # nothing of ours queued behind its load
    fights = [
        ld
        for ld in fake.loads
        if who(ld.caller) == "keeper" and ld.replaced_by and who(ld.replaced_by) == "client"
    ]
    if version != "0.24.0":  # argv shows the client's -t 1: said at once, never called
        assert not fights, [e["event"] for e in logs]
