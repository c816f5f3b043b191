"""A pod without Kubernetes: Ollama and the keeper as two processes, probed as a kubelet would.

The keeper starts first (a native sidecar does), is configured by its environment alone (no
``-c``, no file, as in the image), and ``/readyz`` must follow the models: 503 while cold, 200
once warm, 503 when Ollama restarts and forgets them, 200 again after the re-warm. SIGTERM must
end it well inside a pod's grace period.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path

import aiohttp
import pytest

from helpers import eventually

MODELS = "llama3.1:8b?keep_alive=10m&num_ctx=4096&priority=10,nomic-embed-text?keep_alive=-1"
GRACE_S = 30.0
"""Kubernetes' default terminationGracePeriodSeconds; the keeper must be gone well before."""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def bare_environment(**extra: str) -> dict[str, str]:
    """What a container has: PATH, HOME, and the variables its manifest sets. No TTY, no journal."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tempfile.gettempdir(), **extra}


@asynccontextmanager
async def process(
    *args: str, env: dict[str, str], cwd: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """Run ``python -m ollama_keepwarm ARGS``; kill it on the way out if it still runs."""
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ollama_keepwarm",
        *args,
        env=env,
        cwd=cwd,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        yield child
    finally:
        if child.returncode is None:
            with suppress(ProcessLookupError):
                child.kill()
            await child.wait()


async def probe(session: aiohttp.ClientSession, url: str) -> int | None:
    """One kubelet httpGet probe: the status code, or None when nothing answered in time."""
    try:
        async with session.get(url, timeout=aiohttp.ClientTimeout(total=1)) as response:
            await response.read()
            return response.status
    except (aiohttp.ClientError, TimeoutError):
        return None


async def test_readyz_follows_the_models_through_a_restart(tmp_path: Path) -> None:
    """503 -> 200 after the warm, 503 after an Ollama restart, 200 after the re-warm."""
    if Path("/etc/ollama-keepwarm/config.toml").exists():
        pytest.skip("/etc/ollama-keepwarm/config.toml exists: it would win over the environment")
    ollama_port, keeper_port = free_port(), free_port()
    scratch = tempfile.mkdtemp(prefix="okw", dir="/tmp")  # short: a socket path has 108 bytes
    keeper_env = bare_environment(
        OLLAMA_HOST=f"127.0.0.1:{ollama_port}",
        OLLAMA_KEEPWARM_MODELS=MODELS,
        OLLAMA_KEEPWARM_POLL_INTERVAL="100ms",
        OLLAMA_KEEPWARM_REFRESH_BEFORE="400ms",
        OLLAMA_KEEPWARM_DOWN_POLL_MAX="200ms",
        OLLAMA_KEEPWARM_HTTP_HOST="127.0.0.1",
        OLLAMA_KEEPWARM_HTTP_PORT=str(keeper_port),
        OLLAMA_KEEPWARM_CONTROL_SOCKET=f"{scratch}/control.sock",
        OLLAMA_KEEPWARM_STATE_DIR=scratch,
    )
    fake_args = ("fake-ollama", "--port", str(ollama_port), "--load-seconds-per-gb", "0.05")
    readyz = f"http://127.0.0.1:{keeper_port}/readyz"
    seen: list[int | None] = []

    async def status_is(session: aiohttp.ClientSession, wanted: int) -> bool:
        seen.append(await probe(session, readyz))
        return seen[-1] == wanted

    async with (
        aiohttp.ClientSession() as session,
        process("run", env=keeper_env, cwd=tmp_path) as keeper,
    ):
        # The sidecar is up (its startupProbe on /healthz) before Ollama even starts...
        healthz = f"http://127.0.0.1:{keeper_port}/healthz"
        await eventually(lambda: _is_200(session, healthz), within=15, what="/healthz 200")
        assert await probe(session, readyz) == 503  # ...and not ready: nothing is warm
        async with process(*fake_args, env=bare_environment(), cwd=tmp_path):
            await eventually(lambda: status_is(session, 200), within=20, what="ready after warm")
            async with session.post(
                f"http://127.0.0.1:{ollama_port}/_fake/restart", json={"down_s": 1.0}
            ) as response:
                assert response.status == 202
            await eventually(lambda: status_is(session, 503), within=10, what="503 on restart")
            await eventually(lambda: status_is(session, 200), within=20, what="ready again")
            async with session.get(f"http://127.0.0.1:{keeper_port}/status") as response:
                document = await response.json()
            states = {m["name"]: m["state"] for h in document["hosts"] for m in h["models"]}
            assert states == {"llama3.1:8b": "warm", "nomic-embed-text": "warm"}

            started = time.monotonic()
            keeper.send_signal(signal.SIGTERM)
            stdout, stderr = await asyncio.wait_for(keeper.communicate(), GRACE_S)
            stopped_in_s = time.monotonic() - started
    assert keeper.returncode == 0, stderr.decode()
    assert stopped_in_s < GRACE_S / 3
    # Collapse the probe history into its transitions: the story a kubelet saw.
    transitions = [code for i, code in enumerate(seen) if i == 0 or seen[i - 1] != code]
    assert transitions == [503, 200, 503, 200], seen
    # No TTY and no journal: every log line is a JSON object on stdout, for the collector.
    events = [json.loads(line) for line in stdout.decode().splitlines() if line.strip()]
    names = [event["event"] for event in events]
    assert "ollama_down" in names
    assert "keeper_stopped" in names


async def _is_200(session: aiohttp.ClientSession, url: str) -> bool:
    return await probe(session, url) == 200
