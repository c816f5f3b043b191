"""Fault injection: restart, suspend, delays, delete, the /_fake HTTP routes and the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from datetime import UTC, datetime, timedelta

import aiohttp
import pytest
from fake_helpers import call, eventually, parse_time, post, ps, ps_names

from ollama_keepwarm.fake import CatalogModel, load_catalog, parse_size
from ollama_keepwarm.fake.cli import max_loaded_from_env


async def test_restart_forgets_everything(make_fake, client_for) -> None:
    """A restart refuses connections while down, then lists nothing and forgets keep_alive."""
    fake = await make_fake(default_keep_alive="7m")
    session = client_for(fake)
    await post(session, "/api/generate", {"model": "tiny", "keep_alive": -1})
    port = fake.port
    restart = asyncio.create_task(fake.restart(down_s=30.0))
    refused = False
    while not restart.done():
        try:
            async with aiohttp.ClientSession() as probe, probe.get(f"{fake.url}/"):
                pass
        except aiohttp.ClientConnectorError:
            refused = True
            break
    await restart
    assert refused
    assert fake.port == port
    assert await ps(session) == []
    await post(session, "/api/generate", {"model": "tiny"})
    assert fake.runners()[0].keep_alive_ns == 7 * 60 * 10**9


async def test_restart_waits_for_its_port_if_another_process_took_it(fake) -> None:
    """Many fakes at once (the chaos oracle's) may be handed the port a restarting one left:
    the restart tries it again until it is free, as systemd restarts a failed Ollama."""
    squatter = socket.socket()
    restart = asyncio.create_task(fake.restart(down_s=0.5 * fake.clock.time_scale))  # 0.5 s
    await eventually(lambda: fake.phase == "down")
    squatter.bind(("127.0.0.1", fake.port))
    squatter.listen()
    await eventually(lambda: fake.port_taken > 0)  # it tried the taken port
    assert not restart.done()
    squatter.close()
    await asyncio.wait_for(restart, 10)
    async with aiohttp.ClientSession(fake.url) as session:
        assert await call(session, "GET", "/") == (200, "Ollama is running")


async def test_a_restart_during_a_restart_follows_it(fake) -> None:
    """Two restarts that overlap (chaos 0.24.0 seed 110: a slow restart while a fast one was
    still under way) are two restarts in a row, as systemd would do them: neither finds the
    port held by the other and raises "address already in use"."""
    scale = fake.clock.time_scale
    first = asyncio.create_task(fake.restart(down_s=0.5 * scale))  # 0.5 s down
    await eventually(lambda: fake.phase == "down")
    second = asyncio.create_task(fake.restart(down_s=0.05 * scale))  # ends inside the first
    await asyncio.wait_for(asyncio.gather(first, second), 10)
    assert fake.port_taken == 0
    async with aiohttp.ClientSession(fake.url) as session:
        assert await call(session, "GET", "/") == (200, "Ollama is running")


async def test_restart_accepts_but_hangs_until_ready(fake) -> None:
    """With hang_s, the socket accepts again before the server answers anything."""
    restart = asyncio.create_task(fake.restart(down_s=0.0, hang_s=50.0))
    timeout = aiohttp.ClientTimeout(total=0.1)
    async with aiohttp.ClientSession(fake.url, timeout=timeout) as probe:
        await eventually(lambda: fake.phase == "starting")
        with pytest.raises(TimeoutError):
            await probe.get("/")
        assert not restart.done()
    await restart
    async with aiohttp.ClientSession(fake.url) as session:
        assert await call(session, "GET", "/") == (200, "Ollama is running")


async def test_suspend_freezes_timers_and_holds_requests(make_fake, client_for) -> None:
    """During a suspend timers stop and requests wait; after it expires_at is past, still loaded."""
    fake = await make_fake(memory_bytes=8 * 2**30)
    session = client_for(fake)
    await post(session, "/api/generate", {"model": "tiny", "keep_alive": "20s"})
    started = datetime.now(UTC)
    suspend = asyncio.create_task(fake.suspend(40.0, gpu_lost=True))  # 0.4 s real
    await eventually(lambda: fake.clock.is_suspended)
    held = asyncio.create_task(call(session, "GET", "/api/version"))
    await suspend
    resumed = datetime.now(UTC)
    await held
    assert fake.requests[-1].time >= started + timedelta(seconds=0.38)
    [row] = await ps(session)
    assert parse_time(row["expires_at"]) < resumed
    assert row["size_vram"] == 0
    await eventually(lambda: not fake.runners(), within_s=2.0)
    # The GPU stays lost until a restart: a later load lands on the CPU too.
    await post(session, "/api/generate", {"model": "tiny", "keep_alive": "20s"})
    [row] = await ps(session)
    assert row["size_vram"] == 0


async def test_delete_does_not_unload(fake, session) -> None:
    """Deleting a loaded model leaves it loaded, and the unload command then answers 404."""
    await post(session, "/api/generate", {"model": "tiny", "keep_alive": -1})
    status, _ = await call(session, "DELETE", "/api/delete", {"model": "tiny"})
    assert status == 200
    assert await ps_names(session) == ["tiny:latest"]
    assert await post(session, "/api/generate", {"model": "tiny", "keep_alive": 0}) == (
        404,
        {"error": "model 'tiny' not found"},
    )
    assert await ps_names(session) == ["tiny:latest"]


async def test_delay_and_hang_by_path_prefix(fake, session) -> None:
    """set_delay slows or hangs matching paths only; None removes it."""
    fake.set_delay("/api/ps", float("inf"))
    with pytest.raises(TimeoutError):
        await session.get("/api/ps", timeout=aiohttp.ClientTimeout(total=0.1))
    assert (await call(session, "GET", "/api/version"))[0] == 200
    fake.set_delay("/api/ps", None)
    assert await ps(session) == []


async def test_control_routes_over_http(fake, session) -> None:
    """/_fake routes crash, fail loads and report state; they are not recorded as requests."""
    await post(session, "/api/generate", {"model": "tiny"})
    assert await post(session, "/_fake/crash", {"model": "tiny"}) == (200, {"crashed": True})
    status, state = await call(session, "GET", "/_fake/state")
    assert status == 200
    [runner] = state["runners"]
    assert (runner["name"], runner["crashed"], runner["busy"]) == ("tiny:latest", True, 0)
    assert runner["options"]["num_ctx"] == 2048  # v0.30+ keeps the clamped context
    assert state["version"] == "0.32.15"
    assert state["loads"][0]["reason"] == "cold"
    assert (await post(session, "/_fake/fail_next_load", {"error": "boom"}))[0] == 200
    assert await post(session, "/api/generate", {"model": "tiny"}) == (500, {"error": "boom"})
    assert await post(session, "/_fake/runtime_oom", {}) == (200, {"expired": 0})  # none idle
    assert (await post(session, "/_fake/delay", {"path_prefix": "/api/ps", "seconds": 1}))[0] == 200
    assert fake._delays == {"/api/ps": 1.0}
    assert all(not r.path.startswith("/_fake") for r in fake.requests)
    assert (await post(session, "/_fake/restart", {"down_s": 20}))[0] == 202
    await eventually(lambda: fake.phase == "down")
    await eventually(lambda: fake.phase == "ready")
    assert await ps(session) == []


def test_catalog_file_and_sizes(tmp_path) -> None:
    """A TOML catalogue defines models, sizes with units and aliases over one blob."""
    path = tmp_path / "models.toml"
    path.write_text(
        '[[models]]\nname = "m:1b"\nsize = "1.5GB"\ncapabilities = ["completion"]\n'
        'context_length = 8192\naliases = ["m"]\n'
    )
    catalog = load_catalog(path)
    assert catalog.resolve("M").name == "m:latest"
    assert catalog.resolve("m").model == catalog.resolve("m:1b").model
    assert catalog.resolve("m").model.size == 1_500_000_000
    assert parse_size("16GiB") == 16 * 2**30
    assert CatalogModel("x", 1).blob != CatalogModel("y", 1).blob
    assert max_loaded_from_env(" '2' ") == 2
    assert max_loaded_from_env("0") == 3


async def test_cli_serves_and_stops_on_sigterm(tmp_path) -> None:
    """`ollama-keepwarm fake-ollama` serves the API, logs requests and exits 0 on SIGTERM."""
    env = {**os.environ, "OLLAMA_KEEP_ALIVE": "-1", "OLLAMA_MAX_LOADED_MODELS": "1"}
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "ollama_keepwarm", "fake-ollama", "--port", "0",
        "--time-scale", "100",
        env=env, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stderr is not None
    line = (await asyncio.wait_for(process.stderr.readline(), 10)).decode()
    url = line.split()[-1]
    assert url.startswith("http://127.0.0.1:")
    async with aiohttp.ClientSession(url) as session:
        await post(session, "/api/generate", {"model": "tiny"})
        await post(session, "/api/generate", {"model": "llama3.2"})
        [row] = await ps(session)
        assert row["name"] == "llama3.2:latest"
        assert parse_time(row["expires_at"]).year > 2300
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 10) == 0
    logged = (await process.stderr.read()).decode()
    assert '"/api/ps"' in logged
