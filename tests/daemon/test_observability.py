"""Metrics, readiness, the status view, and pause/resume/refresh over the control socket."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import stat
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import FAST_FAKE, eventually, make_config, more_looks, running_keeper
from ollama_keepwarm.core import plan
from ollama_keepwarm.core.config import ModelConfig
from ollama_keepwarm.core.ps import RunningModel
from ollama_keepwarm.daemon.control import ControlError, send_command
from ollama_keepwarm.daemon.state import Pause, PauseStore
from ollama_keepwarm.daemon.status import model_entry, render_table
from ollama_keepwarm.fake import FakeOllama

LLAMA = {"name": "llama3.1:8b", "keep_alive": "1h", "priority": 10}
EMBED = {"name": "nomic-embed-text", "keep_alive": -1}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, await response.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Parse an exposition with prometheus-client's own parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = tuple(sorted((k, v) for k, v in sample.labels.items() if k != "host"))
            found[(sample.name, labels)] = sample.value
    return found


def listed(fake: FakeOllama) -> set[str]:
    return {r.name for r in fake.runners()}


async def test_metrics_follow_the_fake() -> None:
    """/metrics parses, and its values change as models are warmed, lost and re-warmed."""
    port = free_port()
    async with FakeOllama(**FAST_FAKE) as fake:
        config = make_config(fake.url, [LLAMA, EMBED], http={"enabled": True, "port": port})
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            metrics_url = f"http://127.0.0.1:{port}/metrics"
            status, text = await get(metrics_url)
            assert status == 200
            first = samples(text)
            llama = (("model", "llama3.1:8b"),)
            assert first[("ollama_keepwarm_model_resident", llama)] == 1.0
            assert first[("ollama_keepwarm_ollama_up", ())] == 1.0
            assert first[("ollama_keepwarm_ready", ())] == 1.0
            assert first[("ollama_keepwarm_cold_loads_total", llama)] == 1.0
            assert first[("ollama_keepwarm_warms_total", (*llama, ("result", "ok")))] == 1.0
            forever = first[
                ("ollama_keepwarm_model_lease_seconds", (("model", "nomic-embed-text"),))
            ]
            assert forever == float("inf")
            assert 3000 < first[("ollama_keepwarm_model_lease_seconds", llama)] <= 3600

            await fake.unload("llama3.1:8b")
            await eventually(
                lambda: (
                    keeper.hosts[fake.url].states["llama3.1:8b"].cold_load_s is not None
                    and len(fake.loads) >= 3
                ),
                what="the re-warm",
            )
            await eventually(lambda: "llama3.1:8b" in listed(fake), what="llama back")

            async def repaired() -> dict[Any, float] | None:
                found = samples((await get(metrics_url))[1])
                key = ("ollama_keepwarm_repairs_total", (("cause", "evicted"), *llama))
                return found if found.get(key) == 1.0 else None

            after = await eventually(repaired, what="a repair counted")
            assert after[("ollama_keepwarm_cold_loads_total", llama)] == 2.0
            assert after[("ollama_keepwarm_model_resident", llama)] == 1.0


async def test_readyz_flips_as_models_come_and_go() -> None:
    """/readyz is 503 while a kept model is cold, 200 once all are warm, and flips back."""
    port = free_port()
    slow = {**FAST_FAKE, "load_seconds_per_gb": 0.3}  # an 8B model loads in ~1.5 s
    async with FakeOllama(**slow) as fake:
        config = make_config(fake.url, [LLAMA], http={"enabled": True, "port": port})
        ready_url = f"http://127.0.0.1:{port}/readyz"
        async with running_keeper(config) as (keeper, _):

            async def code() -> int | None:
                try:
                    return (await get(ready_url))[0]
                except aiohttp.ClientConnectionError:
                    return None

            status, body = await eventually(lambda: _answer(ready_url), what="an answer")
            assert status == 503
            cold = json.loads(body)["cold"]
            assert [c["name"] for c in cold] == ["llama3.1:8b"]
            await eventually(lambda: _is(code, 200), within=10, what="ready")
            await fake.unload("llama3.1:8b")
            await eventually(lambda: _is(code, 503), within=5, what="not ready while reloading")
            await eventually(lambda: _is(code, 200), within=10, what="ready again")
            status, _ = await get(f"http://127.0.0.1:{port}/healthz")
            assert status == 200
            assert keeper.ready.is_set()


async def _answer(url: str) -> tuple[int, str] | None:
    try:
        return await get(url)
    except aiohttp.ClientConnectionError:
        return None


async def _is(probe: Any, value: int) -> bool:
    return bool(await probe() == value)


async def test_pause_unload_resume_refresh_over_the_socket() -> None:
    """A paused model is unloaded and stays so while the keeper runs; resume brings it back;
    refresh sends a warm call now; the pause survives a restart of the keeper."""
    async with FakeOllama(**FAST_FAKE) as fake:
        config = make_config(fake.url, [LLAMA, EMBED])
        socket_path = Path(config.daemon.control_socket)
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            reply = await send_command(
                socket_path, {"command": "pause", "model": "Llama3.1:8B", "unload": True}
            )
            assert reply == {
                "ok": True,
                "message": "paused llama3.1:8b until resumed and unloaded it",
            }
            await eventually(lambda: "llama3.1:8b" not in listed(fake), what="unloaded")
            await more_looks(keeper, 10)
            assert "llama3.1:8b" not in listed(fake)
            assert keeper.status()["hosts"][0]["models"][0]["state"] == "paused"
            readyz = keeper.status()["all_warm"]
            assert readyz is True  # a paused model does not make the keeper unready

        # A new keeper on the same state directory keeps the pause.
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            await more_looks(keeper, 10)
            assert "llama3.1:8b" not in listed(fake)
            reply = await send_command(socket_path, {"command": "resume", "model": "llama3.1:8b"})
            assert reply == {"ok": True, "message": "resumed llama3.1:8b"}
            await eventually(lambda: "llama3.1:8b" in listed(fake), what="warm again")
            before = len([r for r in fake.requests if r.path == "/api/embed"])
            reply = await send_command(
                socket_path, {"command": "refresh", "model": "nomic-embed-text"}
            )
            assert reply["ok"]
            await eventually(
                lambda: len([r for r in fake.requests if r.path == "/api/embed"]) > before,
                what="a refresh",
            )
            reply = await send_command(socket_path, {"command": "pause", "model": "nope"})
            assert reply == {"ok": False, "message": "nope is not a configured model"}


async def test_timed_pause_ends_by_itself() -> None:
    """`pause --for` ends on its own and the model is warmed again."""
    async with FakeOllama(**FAST_FAKE) as fake:
        config = make_config(fake.url, [LLAMA])
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            reply = await send_command(
                Path(config.daemon.control_socket),
                {"command": "pause", "model": "llama3.1:8b", "for_s": 1.5, "unload": True},
            )
            assert reply["ok"]
            await eventually(lambda: "llama3.1:8b" not in listed(fake), what="unloaded")
            await eventually(
                lambda: "llama3.1:8b" in listed(fake), within=5, what="warm again after the pause"
            )
            assert keeper.pauses == {}


def test_pause_file_corrupt_is_ignored(tmp_path: Path) -> None:
    """A corrupt state file is reported and ignored; saving writes a valid one atomically."""
    store = PauseStore(tmp_path)
    store.path.write_text("{not json")
    assert store.load() == {}
    until = datetime(2026, 11, 22, 18, 0, tzinfo=UTC)
    store.save({"llama3.1:8b": Pause("llama3.1:8b", until), "x:latest": Pause("x", None)})
    assert store.load() == {
        "llama3.1:8b": Pause("llama3.1:8b", until),
        "x:latest": Pause("x", None),
    }
    assert [p.name for p in tmp_path.iterdir()] == ["pauses.json"]  # no temporary left


async def test_cli_pause_and_socket_permissions(tmp_path: Path) -> None:
    """pause, resume and refresh work from the CLI through the socket; the socket is 0660, so
    another user cannot use it."""
    async with FakeOllama(**FAST_FAKE) as fake:
        config = make_config(fake.url, [LLAMA])
        socket_path = Path(config.daemon.control_socket)
        config_file = tmp_path / "c.toml"
        config_file.write_text(
            f'[ollama]\nhost = "{fake.url}"\n[daemon]\ncontrol_socket = "{socket_path}"\n'
            f'state_dir = "{socket_path.parent}"\n[http]\nenabled = false\n'
            '[[models]]\nname = "llama3.1:8b"\n'
        )
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            assert stat.S_IMODE(socket_path.stat().st_mode) == 0o660

            async def cli(*args: str) -> str:
                process = await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "ollama_keepwarm",
                    *args,
                    "-c",
                    str(config_file),
                    stdout=asyncio.subprocess.PIPE,
                )
                out, _ = await process.communicate()
                assert process.returncode == 0, args
                return out.decode().strip()

            assert (await cli("pause", "llama3.1:8b", "--unload")) == (
                "paused llama3.1:8b until resumed and unloaded it"
            )
            await eventually(lambda: "llama3.1:8b" not in listed(fake), what="unloaded")
            assert (await cli("resume", "llama3.1:8b")) == "resumed llama3.1:8b"
            await eventually(lambda: "llama3.1:8b" in listed(fake), what="warm again")
            calls = len([r for r in fake.requests if r.path == "/api/generate"])
            assert (await cli("refresh")) == "refreshing llama3.1:8b"
            await eventually(
                lambda: len([r for r in fake.requests if r.path == "/api/generate"]) > calls,
                what="the refresh",
            )
            assert (await cli("pause", "llama3.1:8b", "--for", "1h")).startswith(
                "paused llama3.1:8b until "
            )
            assert keeper.pauses["llama3.1:8b"].until is not None
            if os.geteuid() != 0 or not Path("/usr/bin/python3").exists():
                pytest.skip("the permission check needs root and /usr/bin/python3")
            socket_path.parent.chmod(0o755)  # only the socket's own mode stands in the way
            # The system interpreter (readable by anyone), stdlib only: just try to connect.
            probe = (
                f"import socket; s = socket.socket(socket.AF_UNIX); s.connect({str(socket_path)!r})"
            )
            result = await asyncio.to_thread(
                subprocess.run,
                ["/usr/bin/python3", "-c", probe],
                capture_output=True,
                text=True,
                user=65534,
                group=65534,
                env={"HOME": "/"},
                check=False,
            )
            assert result.returncode != 0
            assert "PermissionError" in result.stderr
            assert "llama3.1:8b" in keeper.pauses  # the other user changed nothing


async def test_send_command_without_daemon(tmp_path: Path) -> None:
    """No daemon: a clear error, not a traceback."""
    with pytest.raises(ControlError, match="no daemon listening"):
        await send_command(tmp_path / "none.sock", {"command": "status"})


NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)
GOLDEN = """\
Ollama http://127.0.0.1:11434 (up v0.33.0) · 2/2 warm · 1 paused (qwen2.5-coder:7b) · next refresh llama3.1:8b in 27m
NAME                STATE     UNTIL                  NEXT REFRESH     LAST WARM    PROCESSOR          REASON
llama3.1:8b         warm      29 minutes from now    in 27 minutes    4.2s         100% GPU           lease ending
qwen2.5-coder:7b    paused    -                      -                -            -                  paused
nomic-embed-text    warm      Forever                in 59 minutes    0.3s         50%/50% CPU/GPU    health check
"""  # noqa: E501


def golden_document() -> dict[str, Any]:
    models = [
        ModelConfig(name="llama3.1:8b", keep_alive_s=1800, priority=10),
        ModelConfig(name="qwen2.5-coder:7b", priority=5),
        ModelConfig(name="nomic-embed-text", keep_alive_s=float("inf")),
    ]
    rows = [
        RunningModel(
            "llama3.1:8b",
            4_900_000_000,
            4_900_000_000,
            "a" * 64,
            NOW + timedelta(minutes=29, seconds=30),
            4096,
        ),
        RunningModel(
            "nomic-embed-text:latest",
            600_000_000,
            300_000_000,
            "b" * 64,
            NOW + timedelta(days=106751),
            2048,
        ),
    ]
    states = {
        models[0].key: plan.ModelState(
            last_warm_ok_at=NOW - timedelta(seconds=30), last_warm_duration_s=4.2
        ),
        models[1].key: plan.ModelState(paused_until=NOW + timedelta(days=1)),
        models[2].key: plan.ModelState(
            last_warm_ok_at=NOW - timedelta(seconds=30), last_warm_duration_s=0.3
        ),
    }
    from ollama_keepwarm.core.config import DaemonConfig
    from ollama_keepwarm.core.ps import PsSnapshot

    decisions = plan.decide(
        models, DaemonConfig(health_interval_s=3600), PsSnapshot(NOW, tuple(rows)), states, NOW
    )
    return {
        "summary": plan.summarize(decisions, NOW),
        "hosts": [
            {
                "host": "http://127.0.0.1:11434",
                "ollama_up": True,
                "version": "0.33.0",
                "models": [model_entry(d, states[d.model.key], NOW) for d in decisions],
            }
        ],
    }


def test_status_table_golden() -> None:
    """The status table, without colour, is exactly this."""
    assert render_table(golden_document()) == GOLDEN


def test_status_table_colours_only_state() -> None:
    """With colour on, only the STATE cells get ANSI codes."""
    coloured = render_table(golden_document(), colour=True)
    assert "\x1b[32mwarm" in coloured
    assert coloured.replace("\x1b[32m", "").replace("\x1b[35m", "").replace("\x1b[0m", "") == (
        GOLDEN
    )


MODEL_SCHEMA = {
    "name": str,
    "host": str,
    "state": str,
    "reason": str,
    "priority": int,
    "listed_as": (str, type(None)),
    "expires_at": (str, type(None)),
    "until": str,
    "lease_left_s": (float, int, type(None)),
    "next_refresh_in_s": (float, int, type(None)),
    "last_warm_s": (float, type(None)),
    "last_warm_at": (str, type(None)),
    "processor": str,
    "size": (int, type(None)),
    "size_vram": (int, type(None)),
    "last_error": (str, type(None)),
    "warms": int,
    "reloads": int,
    "prime": (dict, type(None)),  # None when no prefix is configured (tests/daemon/test_prime.py)
    "window": (dict, type(None)),
    "learned": (dict, type(None)),  # learned hours (issue 25)
    "wedged_since": (str, type(None)),
}


async def test_status_json_schema() -> None:
    """`status --json` (the daemon's /status document) has a fixed shape."""
    async with FakeOllama(**FAST_FAKE) as fake:
        config = make_config(fake.url, [LLAMA, EMBED])
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            document = json.loads(json.dumps(keeper.status()))
    assert set(document) == {
        "source",
        "now",
        "ready",
        "all_warm",
        "summary",
        "resumes",
        "config",
        "config_reload",  # None, or the failed reload (tests/daemon/test_reload_failed.py)
        "hosts",
    }
    assert document["source"] == "daemon"
    for host in document["hosts"]:
        assert set(host) == {
            "host",
            "ollama_up",
            "version",
            "poll_errors",
            "crash_watch",
            "processes",
            "polled_at",
            "models",
        }
        for model in host["models"]:
            assert set(model) == set(MODEL_SCHEMA)
            for key, kind in MODEL_SCHEMA.items():
                assert isinstance(model[key], kind), (key, model[key])
            assert model["state"] in {"warm", "loading", "cold", "paused", "conflict", "error"}
