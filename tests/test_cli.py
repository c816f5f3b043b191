"""The CLI as a real process: exit codes, notify datagrams, signals, status."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from helpers import eventually
from ollama_keepwarm.fake import FakeOllama

MODELS = """
[[models]]
name = "llama3.1:8b"
keep_alive = "10m"

[[models]]
name = "nomic-embed-text"
keep_alive = -1
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def write_config(path: Path, url: str, models: str = MODELS, http_port: int | None = None) -> Path:
    http = f"enabled = true\nport = {http_port}" if http_port else "enabled = false"
    scratch = SCRATCH.setdefault(path, tempfile.mkdtemp(prefix="okw", dir="/tmp"))
    path.write_text(
        f'[ollama]\nhost = "{url}"\nrequest_timeout = "5s"\n'
        f'[daemon]\npoll_interval = "200ms"\nrefresh_before = "1s"\n'
        f'control_socket = "{scratch}/c.sock"\nstate_dir = "{scratch}"\n'
        f"[http]\n{http}\n{models}"
    )
    return path


SCRATCH: dict[Path, str] = {}
"""A short directory per config file for its control socket (socket paths max 108 bytes)."""


async def run_cli(
    *args: str, env: dict[str, str] | None = None, within: float = 30
) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ollama_keepwarm",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1", **(env or {})},
    )
    out, err = await asyncio.wait_for(process.communicate(), within)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize("command", ["run", "warm", "check"])
async def test_bad_config_exits_78_naming_the_key(tmp_path: Path, command: str) -> None:
    """Every command refuses an invalid config with status 78 and the key path."""
    config = tmp_path / "c.toml"
    config.write_text('[[models]]\nname = "m"\nkeep_alive = "1d"\n')
    code, _, err = await run_cli(command, "-c", str(config))
    assert code == 78
    assert 'models[0].keep_alive: time: unknown unit "d" in duration "1d"' in err


async def test_missing_config_exits_78(tmp_path: Path) -> None:
    """A config file that does not exist is a config error too."""
    code, _, err = await run_cli("check", "-c", str(tmp_path / "nope.toml"))
    assert (code, "cannot read" in err) == (78, True)


async def test_warm_once_all_warm(fake: FakeOllama, tmp_path: Path) -> None:
    """`warm` loads every model and exits 0."""
    config = write_config(tmp_path / "c.toml", fake.url)
    code, _, err = await run_cli("warm", "-c", str(config))
    assert code == 0, err
    assert "2/2 warm" in err
    assert {r.name for r in fake.runners()} == {"llama3.1:8b", "nomic-embed-text:latest"}


async def test_warm_once_reports_failures(fake: FakeOllama, tmp_path: Path) -> None:
    """`warm` exits 1 and names the model that could not be warmed, and why."""
    config = write_config(
        tmp_path / "c.toml", fake.url, MODELS + '\n[[models]]\nname = "no-such-model"\n'
    )
    code, _, err = await run_cli("warm", "-c", str(config))
    assert code == 1
    assert err.count("not warm: no-such-model: not_found") == 1  # said once, not twice
    assert "run `ollama pull no-such-model`" in err


async def test_warm_gives_up_when_ollama_never_answers(tmp_path: Path) -> None:
    """`warm --timeout` exits 69 when Ollama never answers."""
    config = write_config(tmp_path / "c.toml", f"http://127.0.0.1:{free_port()}")
    code, _, err = await run_cli("warm", "-c", str(config), "--timeout", "1s")
    assert code == 69
    assert "waiting for Ollama" in err
    assert "connection refused" in err
    assert "ssl:default" not in err  # aiohttp's words, not ours
    assert "Ollama at http://127.0.0.1:" in err
    assert "never answered within 1s" in err


async def test_check_prints_the_plan(fake: FakeOllama, tmp_path: Path) -> None:
    """`check` reaches Ollama and says what the keeper would do, model by model: warm what is
    not loaded, claim the lease of what a client loaded."""
    config = write_config(tmp_path / "c.toml", fake.url)
    code, out, _ = await run_cli("check", "-c", str(config))
    assert code == 0
    assert f"Ollama {fake.ollama_version}, 0 loaded" in out
    assert re.search(r"^  llama3\.1:8b +warm +not loaded$", out, re.M), out
    assert re.search(
        r"^  nomic-embed-text +warm +not loaded  \[embedding-only: warmed through /api/embed\]$",
        out,
        re.M,
    ), out
    async with aiohttp.ClientSession() as session:
        body = {"model": "llama3.1:8b", "keep_alive": "1m"}
        async with session.post(f"{fake.url}/api/generate", json=body) as response:
            assert response.status == 200
    code, out, _ = await run_cli("check", "-c", str(config))
    assert code == 0
    assert f"Ollama {fake.ollama_version}, 1 loaded" in out
    assert re.search(r"^  llama3\.1:8b +refresh +claim the lease$", out, re.M), out


async def test_check_reports_a_model_that_is_not_pulled(fake: FakeOllama, tmp_path: Path) -> None:
    """`check` exits 1 and says to pull a configured model Ollama does not have."""
    config = write_config(
        tmp_path / "c.toml", fake.url, MODELS + '\n[[models]]\nname = "no-such-model"\n'
    )
    code, out, _ = await run_cli("check", "-c", str(config))
    assert code == 1
    assert "no-such-model" in out
    assert "PROBLEM not_found" in out
    assert "run `ollama pull no-such-model`" in out  # the name, not a literal <name>


@pytest.mark.parametrize("fake", ["0.24.0"], indirect=True)
async def test_check_names_an_option_the_running_ollama_ignores(
    fake: FakeOllama, tmp_path: Path
) -> None:
    """draft_num_predict is a load option since 0.30: against 0.24 `check` says it is ignored."""
    models = '[[models]]\nname = "llama3.1:8b"\noptions = { draft_num_predict = 4 }\n'
    config = write_config(tmp_path / "c.toml", fake.url, models)
    code, out, _ = await run_cli("check", "-c", str(config))
    assert code == 1
    assert (
        "PROBLEM options: Ollama 0.24.0 does not read draft_num_predict (Ollama 0.30.0+); "
        "it would ignore them" in out
    ), out


@pytest.fixture(name="notify_socket")
def _notify_socket() -> Iterator[tuple[socket.socket, str]]:
    """A real AF_UNIX datagram socket on a short path, as systemd's NOTIFY_SOCKET."""
    directory = Path(tempfile.mkdtemp(prefix="kw", dir="/tmp"))
    path = directory / "n"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.setblocking(False)
    yield sock, str(path)
    sock.close()
    path.unlink()
    directory.rmdir()


class Daemon:
    """A daemon subprocess and the datagrams it sent."""

    def __init__(self, process: asyncio.subprocess.Process, sock: socket.socket) -> None:
        self.process = process
        self.sock = sock
        self.messages: list[str] = []

    def drain(self) -> list[str]:
        while True:
            try:
                self.messages.append(self.sock.recv(4096).decode())
            except BlockingIOError:
                return self.messages

    async def wait_for(self, message: str, after: int = 0, within: float = 15) -> int:
        """Wait until ``message`` was sent (at index >= after); return its index."""

        def seen() -> int | None:
            for i, m in enumerate(self.drain()[after:], start=after):
                if m == message or m.startswith(message):
                    return i + 1
            return None

        found = await eventually(seen, within=within, what=message)
        return found - 1


@asynccontextmanager
async def daemon(
    config: Path, notify: tuple[socket.socket, str], **env: str
) -> AsyncIterator[Daemon]:
    sock, path = notify
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ollama_keepwarm",
        "run",
        "-c",
        str(config),
        "--log-format",
        "logfmt",
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NOTIFY_SOCKET": path, **env},
    )
    running = Daemon(process, sock)
    try:
        yield running
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def test_daemon_lifecycle_notify_reload_stop(
    fake: FakeOllama, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    """READY after the first warm; SIGHUP good and bad; WATCHDOG; SIGTERM exits 0 with STOPPING."""
    config = write_config(tmp_path / "c.toml", fake.url)
    async with daemon(config, notify_socket, WATCHDOG_USEC="400000") as d:
        ready = await d.wait_for("READY=1")
        assert {r.name for r in fake.runners()} == {"llama3.1:8b", "nomic-embed-text:latest"}
        await d.wait_for("STATUS=2/2 warm")
        await d.wait_for("WATCHDOG=1", after=ready)

        # A bad config on SIGHUP: the running config stays, no RELOADING.
        config.write_text(config.read_text() + "\nbogus = 1\n")
        mark = len(d.drain())
        d.process.send_signal(signal.SIGHUP)
        await d.wait_for("STATUS=config reload failed", after=mark)
        assert not any(m.startswith("RELOADING=1") for m in d.drain()[mark:])

        # A good one: RELOADING=1 with MONOTONIC_USEC, then READY=1, and the new model is warmed.
        write_config(config, fake.url, MODELS + '\n[[models]]\nname = "qwen2.5-coder:7b"\n')
        mark = len(d.drain())
        d.process.send_signal(signal.SIGHUP)
        reloading = await d.wait_for("RELOADING=1", after=mark)
        assert "\nMONOTONIC_USEC=" in d.messages[reloading]
        await d.wait_for("READY=1", after=reloading)
        await eventually(
            lambda: "qwen2.5-coder:7b" in {r.name for r in fake.runners()},
            what="the model added by the reload",
        )

        d.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(d.process.wait(), 15) == 0
        assert d.drain()[-1] == "STOPPING=1"
        assert d.process.stderr is not None
        log = (await d.process.stderr.read()).decode()
    assert "event=config_reload_failed" in log
    assert "event=config_reloaded" in log
    assert "event=model_warmed" in log
    assert "timestamp" not in log  # journald-style key=value lines carry no timestamps
    assert "Traceback" not in log  # a stop ends in-flight polls cleanly
    assert {r.name for r in fake.runners()} >= {"llama3.1:8b"}  # left loaded on stop


async def test_status_from_daemon_and_from_ollama(
    fake: FakeOllama, tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    """`status` reads the daemon's /status; with no daemon it falls back to Ollama's own view."""
    config = write_config(tmp_path / "c.toml", fake.url, http_port=free_port())
    async with daemon(config, notify_socket) as d:
        await d.wait_for("READY=1")
        code, out, err = await run_cli("status", "-c", str(config), "--json")
        assert code == 0
        document: dict[str, Any] = json.loads(out)
        assert document["source"] == "daemon"
        assert "status from the daemon at " in err  # which daemon answered, on stderr
        models = document["hosts"][0]["models"]
        assert [(m["name"], m["state"]) for m in models] == [
            ("llama3.1:8b", "warm"),
            ("nomic-embed-text", "warm"),
        ]
        assert models[1]["until"] == "Forever"
        code, table, _ = await run_cli("status", "-c", str(config))
        assert "NAME" in table
        assert "Forever" in table
        # `check` asks the daemon first and shows its view, not a fresh plan (issue 24).
        code, out, _ = await run_cli("check", "-c", str(config))
        assert code == 0
        assert re.search(r"^the daemon at .* keeps them; its view:$", out, re.M), out
        assert re.search(r"^  llama3\.1:8b +warm ", out, re.M), out
        assert "claim the lease" not in out
        d.process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(d.process.wait(), 15) == 0
    code, out, err = await run_cli("status", "-c", str(config), "--json")
    assert code == 0
    document = json.loads(out)
    assert document["source"] == "ollama"
    assert f"status from no daemon; Ollama at {fake.url}" in err
    # Nothing will refresh them: no "now" under NEXT REFRESH, and the summary says so.
    assert "nobody is keeping these models" in document["summary"]
    assert all(m["next_refresh_in_s"] is None for h in document["hosts"] for m in h["models"])
    reasons = {m["reason"] for h in document["hosts"] for m in h["models"]}
    assert all(r.startswith("nobody keeps it (a keeper would ") for r in reasons), reasons
    code, out, _ = await run_cli("check", "-c", str(config))
    assert "no daemon answered: nobody is keeping these models; a keeper would:" in out


async def test_status_with_nothing_answering_says_where_it_looked(tmp_path: Path) -> None:
    """Exit 69 names the socket, the endpoint and the Ollama URL it tried."""
    url = f"http://127.0.0.1:{free_port()}"
    config = write_config(tmp_path / "c.toml", url, http_port=free_port())
    code, _, err = await run_cli("status", "-c", str(config))
    assert code == 69
    assert "the daemon's socket " in err
    assert f"Ollama at {url}" in err


async def test_check_with_no_models_exits_1(fake: FakeOllama, tmp_path: Path) -> None:
    """A config that keeps nothing is an error for `check`, with a message that says so."""
    config = write_config(tmp_path / "c.toml", fake.url, models="")
    code, _, err = await run_cli("check", "-c", str(config))
    assert code == 1
    assert "keeps no models" in err


@pytest.mark.parametrize(
    ("argv", "option", "words"),
    [
        (["run", "--help"], "--log-level", "the least severe events"),
        (["fake-ollama", "--help"], "--load-seconds-per-gb", "load time per GB"),
        (["fake-ollama", "--help"], "--unload-delay", "stale-expiry race"),
        (["fake-ollama", "--help"], "--seconds-per-token", "generation time per output token"),
    ],
)
async def test_every_option_says_what_it_does(argv: list[str], option: str, words: str) -> None:
    """--help explains each option (argparse wraps lines, so compare without white space)."""
    code, out, _ = await run_cli(*argv)
    assert code == 0
    flat = " ".join(out.split())
    assert option in flat
    assert words in flat


async def test_demo_runs_and_ends_by_itself() -> None:
    """The README's main command: the demo narrates the first warm and exits 0."""
    code, out, err = await run_cli("demo", "--duration", "8", within=60)
    assert code == 0
    assert "READY: the first warm pass is done" in out
    assert "Summary:" in out
    assert "Traceback" not in out + err
    summary = next(line for line in out.splitlines() if line.startswith("Summary:"))
    assert not re.search(r"\b1 [a-z ]+s\b", summary), summary  # "1 lease renewal", not "1 ...s"
    assert "other client's" not in summary  # an 8 s demo has no client scene
    assert "Its times are real time" in out  # the table is in one time scale, and says which
    table = out.split("trace time.")[1].split("Summary:")[0]
    assert "minute" not in table, table  # no real-time hour ("in 59 minutes") beside seconds
