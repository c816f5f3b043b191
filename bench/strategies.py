"""The six ways to keep a model warm that the benchmark compares, behind one small interface.

Each strategy says how the server is configured (``server_keep_alive``: what
``OLLAMA_KEEP_ALIVE`` would be) and reacts to the server's lifecycle the way it would in
production: a one-shot preload runs after every server start (``ExecStartPost=`` runs on each
start, not after a suspend or a crash), a cron job fires on wall-clock ticks (and misses the
ones that fall while the machine sleeps), and ollama-keepwarm runs for the whole trace.

Every keeper duration is divided by the time scale, so "defaults" means the defaults of
:mod:`ollama_keepwarm.core.config` on the compressed clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from dataclasses import fields
from pathlib import Path
from typing import Any, Protocol

import aiohttp

from bench.traces import CRON_PERIOD_S
from ollama_keepwarm.commands.oneshot import warm_all
from ollama_keepwarm.core.config import (
    DEFAULT_KEEP_ALIVE_S,
    Config,
    DaemonConfig,
    OllamaConfig,
    parse_config,
)
from ollama_keepwarm.core.config.table import MIN_POLL_S, MIN_TIMEOUT_S
from ollama_keepwarm.daemon.keeper import Keeper

with contextlib.suppress(ImportError):
    # The daemon imports its D-Bus library when it starts (daemon/sleep_signal.py). Inside a
    # cell that first import is tens of milliseconds of a blocked event loop, several trace
    # seconds at the bench's time scales, charged to whichever cell is mid-race: import it now.
    import dbus_fast.aio  # noqa: F401

__all__ = ["STRATEGIES", "Strategy", "make_strategy", "scaled_config"]

_PRELOAD_TIMEOUT_S = 45.0  # `ollama-keepwarm warm --timeout 45s` in the shipped drop-in


def scaled_config(
    url: str,
    models: tuple[str, ...],
    scale: float,
    scratch: Path,
    *,
    http: bool = False,
    keep_alive: float = DEFAULT_KEEP_ALIVE_S,
) -> dict[str, Any]:
    """Return ollama-keepwarm's default config as raw TOML data on the compressed clock.

    Durations the daemon waits for itself (poll, refresh margin, timeouts, ...) are divided by
    ``scale``. The lease (``keep_alive``) is not: Ollama is the one that waits for it, and the fake
    already divides every duration it waits for by its ``time_scale``. Its ``expires_at`` comes
    back in real wall time, so the daemon's scaled margins line up with it. The control socket
    and the pause file go to ``scratch``, away from any real daemon's (and from other cells').
    """
    ollama, daemon = OllamaConfig(), DaemonConfig()
    durations = {f.name: getattr(daemon, f.name) for f in fields(daemon) if f.name.endswith("_s")}
    # The config refuses polls and timeouts too short for a real Ollama; at a high time scale the
    # compressed ones are floored there (a poll a little slower than scaled, never a refusal).
    floors = {"poll_interval_s": MIN_POLL_S, "down_poll_max_s": MIN_POLL_S}
    return {
        "ollama": {
            "host": url,
            "load_timeout": max(ollama.load_timeout_s / scale, MIN_TIMEOUT_S),
            "request_timeout": max(ollama.request_timeout_s / scale, MIN_TIMEOUT_S),
        },
        "daemon": {
            **{
                name.removesuffix("_s"): max(value / scale, floors.get(name, 0.0))
                for name, value in durations.items()
            },
            "control_socket": str(scratch / "control.sock"),
            "state_dir": str(scratch),
        },
        "http": {"enabled": http, "host": "127.0.0.1", "port": 0},
        "models": [{"name": m, "keep_alive": keep_alive} for m in models],
    }


def _config(
    url: str,
    models: tuple[str, ...],
    scale: float,
    scratch: Path,
    keep_alive: float = DEFAULT_KEEP_ALIVE_S,
) -> Config:
    raw = scaled_config(url, models, scale, scratch, keep_alive=keep_alive)
    return parse_config(raw, environ={})


class Strategy(Protocol):
    """How one keep-warm recipe reacts to the server's lifecycle."""

    name: str
    label: str
    server_keep_alive: str | float

    async def start(self, url: str, models: tuple[str, ...], scale: float) -> None:
        """Begin, as the machine boots (Ollama is starting at the same moment)."""

    async def server_started(self) -> None:
        """Ollama (re)started and answers: what ``ExecStartPost=`` would run now."""

    def suspended(self) -> None:
        """The machine goes to sleep."""

    def resumed(self, slept_s: float) -> None:
        """The machine woke after ``slept_s`` trace seconds."""

    async def stop(self) -> None:
        """End of the trace: stop and wait for anything in flight."""


class NoKeeper:
    """(1) Nothing: Ollama's default 5-minute lease, renewed by client requests only."""

    name = "none"
    label = "no keeper (keep_alive 5m)"
    server_keep_alive: str | float = "5m"

    async def start(self, url: str, models: tuple[str, ...], scale: float) -> None:
        """Nothing to start."""

    async def server_started(self) -> None:
        """Nothing runs on start."""

    def suspended(self) -> None:
        """Nothing to pause."""

    def resumed(self, slept_s: float) -> None:
        """Nothing to resume."""

    async def stop(self) -> None:
        """Nothing to stop."""


class KeepForever(NoKeeper):
    """(2) ``OLLAMA_KEEP_ALIVE=-1``: whatever a client loads stays until evicted or restarted."""

    name = "forever"
    label = "`OLLAMA_KEEP_ALIVE=-1`"
    server_keep_alive: str | float = -1


class Preload(NoKeeper):
    """(3) ``ExecStartPost=ollama-keepwarm warm``: one warm pass after every server start."""

    name = "preload"
    label = "preload at server start (`ExecStartPost=`)"
    preload_keep_alive: float = DEFAULT_KEEP_ALIVE_S
    """The lease the one-shot warm asks for: the shipped config's default, 1 h."""

    def __init__(self) -> None:
        self._config: Config | None = None
        self._scratch: tempfile.TemporaryDirectory[str] | None = None
        self._scale = 1.0
        self._runs: set[asyncio.Task[Any]] = set()

    async def start(self, url: str, models: tuple[str, ...], scale: float) -> None:
        """Remember what to warm; the server start triggers the first pass."""
        self._scratch = tempfile.TemporaryDirectory(prefix="bench-preload-")
        scratch = Path(self._scratch.name)
        self._config = _config(url, models, scale, scratch, self.preload_keep_alive)
        self._scale = scale

    async def server_started(self) -> None:
        """Run the one-shot warm in the background, as systemd runs ExecStartPost."""
        assert self._config is not None
        run = warm_all(self._config, _PRELOAD_TIMEOUT_S / self._scale, lambda _line: None)
        task = asyncio.create_task(run)
        self._runs.add(task)
        task.add_done_callback(self._runs.discard)

    async def stop(self) -> None:
        """Let a pass in flight finish (it never cancels a load)."""
        await asyncio.gather(*self._runs, return_exceptions=True)
        if self._scratch is not None:
            self._scratch.cleanup()


class ForeverPreload(Preload):
    """(3b) ``OLLAMA_KEEP_ALIVE=-1`` plus the ``ExecStartPost=`` preload, asking for ``-1`` too.

    What users of (2) actually run: the preload loads the models at every server start (as a
    ``curl`` without ``keep_alive`` would, with the server default -1), and no model ever
    expires; a suspend or an eviction still loses it until a client asks again.
    """

    name = "forever+preload"
    label = "`OLLAMA_KEEP_ALIVE=-1` + preload at server start"
    server_keep_alive: str | float = -1
    preload_keep_alive: float = -1


class Cron(NoKeeper):
    """(4) ``*/4 * * * * curl .../api/generate -d '{"model": ...}'``: no keep_alive, no prompt."""

    name = "cron"
    label = "cron warm every 4 min"

    def __init__(self) -> None:
        self._task: asyncio.Task[None] | None = None
        self._asleep = False

    async def start(self, url: str, models: tuple[str, ...], scale: float) -> None:
        """Start ticking at trace time 0, on 4-minute boundaries."""
        self._task = asyncio.create_task(self._loop(url, models, scale))

    def suspended(self) -> None:
        """Ticks that fall while asleep are skipped, as crond does."""
        self._asleep = True

    def resumed(self, slept_s: float) -> None:
        """Tick again from the next boundary."""
        self._asleep = False

    async def stop(self) -> None:
        """Stop ticking."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self, url: str, models: tuple[str, ...], scale: float) -> None:
        loop = asyncio.get_running_loop()
        origin = loop.time()
        tick = 0
        connector = aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector) as session:
            while True:
                await asyncio.sleep(max(0.0, origin + tick * CRON_PERIOD_S / scale - loop.time()))
                tick += 1
                if self._asleep:
                    continue
                for model in models:  # one crontab line per model, run one after the other
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        payload = {"model": model}
                        async with session.post(f"{url}/api/generate", json=payload) as reply:
                            await reply.read()


class Keepwarm(NoKeeper):
    """(5) The ollama-keepwarm daemon with its default configuration."""

    name = "keepwarm"
    label = "ollama-keepwarm (defaults)"

    def __init__(self) -> None:
        self.keeper: Keeper | None = None
        self._task: asyncio.Task[int] | None = None
        self._scratch = tempfile.TemporaryDirectory(prefix="bench-keepwarm-")

    async def start(self, url: str, models: tuple[str, ...], scale: float) -> None:
        """Start the daemon in this event loop (no signals, no HTTP endpoint)."""
        config = _config(url, models, scale, Path(self._scratch.name))
        self.keeper = Keeper(config, handle_signals=False)
        self._task = asyncio.create_task(self.keeper.run())

    def resumed(self, slept_s: float) -> None:
        """Do what the daemon's suspend detector does on its next 1 s tick.

        The detector compares CLOCK_BOOTTIME with CLOCK_MONOTONIC, which a simulated suspend
        cannot move, and its 1 s tick is not a configurable duration the bench could scale.
        """
        if self.keeper is not None:
            self.keeper.note_resume(slept_s, source="bench")

    async def stop(self) -> None:
        """Stop the daemon and check it exited cleanly."""
        if self.keeper is not None and self._task is not None:
            self.keeper.request_stop()
            status = await self._task
            if status != 0:
                raise RuntimeError(f"keeper exited with {status}")
        self._scratch.cleanup()


STRATEGIES: dict[str, type[NoKeeper]] = {
    s.name: s for s in (NoKeeper, KeepForever, Preload, ForeverPreload, Cron, Keepwarm)
}
"""The six strategies, in the order the tables list them."""


def make_strategy(name: str) -> Strategy:
    """Return a fresh strategy by name."""
    return STRATEGIES[name]()
