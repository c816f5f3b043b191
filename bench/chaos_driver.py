"""The driver of one chaos schedule: carries out each event against the fake and the keeper.

A client request is an HTTP call with ``User-Agent: chaos-client/<n>`` (the fake's records tell
it from the keeper's); ``ollama stop`` is the unload command with Ollama's CLI agent; faults go
to the fake's Python API (a wall-clock step or a suspend reaches the keeper through its
injected clocks, as it would reach the process); config reloads through
``Keeper.request_reload`` (what SIGHUP calls); pause, resume and refresh through the control
socket. Each fault, pause and reload leaves a *window* (start, end, kind, model): losses inside
one are not the keeper's to prevent (``chaos_check.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

from bench.chaos_schedule import POLL_S, SCALE, WINDOW_KINDS, Event, Kept, Schedule
from ollama_keepwarm.core.config import Config, ConfigError, parse_config
from ollama_keepwarm.daemon.clocks import ManualClocks
from ollama_keepwarm.daemon.control import send_command
from ollama_keepwarm.daemon.keeper import Keeper
from ollama_keepwarm.fake import FakeOllama

__all__ = ["CONFLICT_RETRY_S", "ClientResult", "Driver", "keeper_config"]

CLIENT_TIMEOUT_S = 60.0
CONFLICT_RETRY_S = 20
"""The keeper's ``conflict_retry`` in the schedules: also what it counts a repeated loss
within (README: a re-warm doubles "if it repeats"), so the checks use it too."""
SLOW_S = 4.0
"""How long a slowed answer takes (real seconds): past the keeper's 3 s request timeout."""


@dataclass(frozen=True)
class ClientResult:
    """One client request as the client saw it (real epoch seconds)."""

    client: int
    model: str
    sent: float
    ended: float
    status: int
    error: str = ""


def keeper_config(
    url: str,
    kept: tuple[Kept, ...],
    scratch: str,
    cgroup: str,
    windows: Mapping[str, Mapping[str, Any]] | None = None,
) -> Config:
    """The keeper's config for ``kept``; ``windows`` adds ``when``/``after_window``/``lead``
    to the models it names (times in UTC)."""
    windows = windows or {}
    raw: dict[str, Any] = {
        "ollama": {"host": url, "load_timeout": "30s", "request_timeout": "3s", "cgroup": cgroup},
        "daemon": {
            "control_socket": f"{scratch}/c.sock",
            "state_dir": scratch,
            "poll_interval": f"{int(POLL_S * 1000)}ms",
            "refresh_before": "3s",
            "health_interval": "5s",
            "down_poll_max": "300ms",
            "conflict_retry": f"{CONFLICT_RETRY_S}s",
            "timezone": "UTC",
        },
        "http": {"enabled": False},
        "models": [
            {
                "name": k.name,
                "keep_alive": k.keep_alive,
                "priority": k.priority,
                **({"options": k.options} if k.options else {}),
                **windows.get(k.name, {}),
            }
            for k in kept
        ],
    }
    return parse_config(raw, environ={})


class Driver:
    """Carries out the events of one schedule against one fake and one keeper."""

    def __init__(self, schedule: Schedule, fake: FakeOllama, scratch: str) -> None:
        self.schedule = schedule
        self.fake = fake
        self.scratch = scratch
        self.clocks = ManualClocks()
        cgroup = ""
        if fake.processes is not None and fake.processes.cgroup is not None:
            cgroup = str(fake.processes.cgroup)
        self.cgroup = cgroup
        self.kept = schedule.kept
        self.config = keeper_config(fake.url, self.kept, scratch, cgroup)
        self.next_config: Config | None = None
        self.session: aiohttp.ClientSession | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.clients: list[ClientResult] = []
        self.windows: list[tuple[float, float, str, str]] = []
        self.paused: dict[str, float] = {}
        self.open_windows: dict[str, float] = {}
        self.reloads = 0
        self.model_windows: dict[str, dict[str, Any]] = {}

    def align_window(self, now: float) -> None:
        """Give the schedule's window event (if any) its boundary: the keeper's wall clock and
        the fake's step together, before the keeper starts, so that a whole minute falls on
        the event's time (``now`` is the run's start), and its model gets a ``when`` that
        opens (warm-up of a one-minute lead) or closes at that minute."""
        event = next((e for _, e in self.schedule.active if e.kind in WINDOW_KINDS), None)
        if event is None:
            return
        at = now + event.at
        shift = math.ceil(at / 60) * 60 - at
        self.clocks.step_wall(shift)
        self.fake.step_wall(shift)
        minute = datetime.fromtimestamp(at + shift, UTC)
        hhmm = "%H:%M"
        if event.kind == "window_close":
            start = (minute - timedelta(hours=2)).strftime(hhmm)
            when = f"mon-sun {start}-{minute.strftime(hhmm)}"
            extra = {"when": [when], "after_window": event.args["after"]}
        else:
            opening = minute + timedelta(minutes=1)  # its one-minute warm-up starts at the event
            end = (opening + timedelta(hours=3)).strftime(hhmm)
            extra = {"when": [f"mon-sun {opening.strftime(hhmm)}-{end}"], "lead": "1m"}
        self.model_windows = {event.args["model"]: extra}
        self.config = keeper_config(
            self.fake.url, self.kept, self.scratch, self.cgroup, self.model_windows
        )

    def reload_config(self) -> Config:
        """What the keeper's SIGHUP reads: the next config, or a ConfigError for a bad file."""
        if self.next_config is None:
            raise ConfigError("models[0].keep_alive", "invalid duration 'soon' (chaos: a bad file)")
        config, self.next_config = self.next_config, None
        return config

    def window(self, kind: str, start: float, length: float, model: str = "") -> None:
        self.windows.append((start, start + length, kind, model))

    def spawn(self, work: Any) -> None:
        task = asyncio.ensure_future(work)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def client_request(self, event: Event) -> None:
        assert self.session is not None
        args = event.args
        body: dict[str, Any] = {
            "model": args["model"],
            "prompt": f"chaos client {args['client']} asks something",
            "stream": False,
            "options": {"num_predict": args["tokens"], **args.get("options", {})},
        }
        if "keep_alive" in args:
            body["keep_alive"] = args["keep_alive"]
        sent = time.time()
        status, error = 0, ""
        try:
            async with self.session.post(
                f"{self.fake.url}/api/generate",
                json=body,
                headers={"User-Agent": f"chaos-client/{args['client']}"},
                timeout=aiohttp.ClientTimeout(total=CLIENT_TIMEOUT_S),
            ) as response:
                await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            error = type(exc).__name__
        self.clients.append(
            ClientResult(args["client"], args["model"], sent, time.time(), status, error)
        )

    async def stop_model(self, model: str) -> None:
        assert self.session is not None
        with contextlib.suppress(aiohttp.ClientError, TimeoutError):
            async with self.session.post(
                f"{self.fake.url}/api/generate",
                json={"model": model, "keep_alive": 0},
                headers={"User-Agent": "ollama/0.0.0 (amd64 linux) Go/go1.24 chaos"},
                timeout=aiohttp.ClientTimeout(total=10),
            ) as response:
                await response.read()

    async def control(self, request: Mapping[str, Any]) -> None:
        with contextlib.suppress(Exception):
            await send_command(Path(self.config.daemon.control_socket), request, timeout_s=10)

    def _good_config(self) -> Config:
        """A changed but valid config: the same models, priorities rotated, leases swapped."""
        self.reloads += 1
        turned = tuple(
            Kept(
                k.name,
                self.kept[(i + self.reloads) % len(self.kept)].keep_alive,
                self.kept[(i + self.reloads) % len(self.kept)].priority,
                k.options,
            )
            for i, k in enumerate(self.kept)
        )
        return keeper_config(self.fake.url, turned, self.scratch, self.cgroup, self.model_windows)

    async def fire(self, event: Event, keeper: Keeper | None) -> None:
        """Carry out one event (it returns at once; lasting faults run in the background)."""
        handler = getattr(self, f"_do_{event.kind}", None)
        if handler is not None:
            await handler(event.args, keeper, time.time())

    async def _do_request(self, args: dict[str, Any], _k: Keeper | None, _now: float) -> None:
        self.spawn(self.client_request(Event(0.0, "request", args)))

    async def _do_stop(self, args: dict[str, Any], _k: Keeper | None, _now: float) -> None:
        self.spawn(self.stop_model(args["model"]))

    async def _lasting(self, kind: str, now: float, fault: Awaitable[None]) -> None:
        """Run a fault that takes time; its window lasts until it is over, plus a second."""
        self.open_windows[kind] = now
        try:
            await fault
        finally:
            self.open_windows.pop(kind, None)
            self.window(kind, now, time.time() - now + 1.0)

    async def _do_restart_fast(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        down, hang = args["down_s"], args.get("hang_s", 0.0)
        restart = self.fake.restart(down_s=down * SCALE, hang_s=hang * SCALE)
        self.spawn(self._lasting("restart", now, restart))

    _do_restart_slow = _do_restart_fast

    async def _do_crash(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        self.window("crash", now, 1.0, args["model"])
        with contextlib.suppress(KeyError):
            self.fake.crash(args["model"])

    async def _do_runtime_oom(self, _a: dict[str, Any], _k: Keeper | None, now: float) -> None:
        self.window("runtime_oom", now, 1.0)
        self.fake.runtime_oom()

    async def _do_suspend(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        self.clocks.suspend(args["seconds"])
        self.spawn(self._lasting("suspend", now, self.fake.suspend(args["seconds"] * SCALE)))

    async def _do_step_back(self, args: dict[str, Any], _k: Keeper | None, _now: float) -> None:
        # The machine's clock steps: the keeper's wall clock and the fake's move together.
        self.clocks.step_wall(args["seconds"])
        self.fake.step_wall(args["seconds"])

    _do_step_forward = _do_step_back

    async def _delay(self, prefix: str, seconds: float, for_s: float, now: float) -> None:
        self.window(f"delay {prefix}", now, for_s + 4.0)
        self.fake.set_delay(prefix, seconds * SCALE)
        self.spawn(self._clear_delay(prefix, for_s))

    async def _do_hang_ps(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        await self._delay("/api/ps", math.inf, args["for_s"], now)

    async def _do_slow_generate(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        await self._delay("/api/generate", SLOW_S, args["for_s"], now)

    async def _do_slow_show(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        await self._delay("/api/show", SLOW_S, args["for_s"], now)

    def _wrong_answers(self, prefix: str, kind: str, times: int, now: float) -> None:
        self.window(f"{kind} {prefix}", now, 2.0)
        self.fake.garble_next(prefix, kind, times=times)

    async def _do_garble_ps(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        self._wrong_answers("/api/ps", "utf8", args["times"], now)

    async def _do_garble_generate(
        self, args: dict[str, Any], _k: Keeper | None, now: float
    ) -> None:
        self._wrong_answers("/api/generate", "utf8", args["times"], now)

    async def _do_error_generate(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        self._wrong_answers("/api/generate", "500", args["times"], now)

    async def _do_fail_load(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        self.window("fail_load", now, 4.0)
        self.fake.fail_next_load(None, times=args["times"])

    async def _do_reload_good(self, _a: dict[str, Any], keeper: Keeper | None, now: float) -> None:
        if keeper is not None:
            self.next_config = self._good_config()
            self.window("reload", now, 1.0)
            keeper.request_reload()

    async def _do_reload_bad(self, _a: dict[str, Any], keeper: Keeper | None, _now: float) -> None:
        if keeper is not None:
            self.next_config = None
            keeper.request_reload()

    async def _do_pause(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        self.paused[args["model"]] = now
        request = {"command": "pause", "model": args["model"], "unload": args["unload"]}
        self.spawn(self.control(request))

    async def _do_resume(self, args: dict[str, Any], _k: Keeper | None, now: float) -> None:
        since = self.paused.pop(args["model"], None)
        if since is not None:
            self.window("pause", since, now - since + 1.0, args["model"])
        self.spawn(self.control({"command": "resume", "model": args["model"]}))

    async def _do_window_open(self, _a: dict[str, Any], _k: Keeper | None, _now: float) -> None:
        """Nothing to do: the keeper's clock reaches the boundary (:meth:`align_window`)."""

    _do_window_close = _do_window_open

    async def _do_refresh(self, args: dict[str, Any], _k: Keeper | None, _now: float) -> None:
        self.spawn(self.control({"command": "refresh", "model": args["model"]}))

    async def _clear_delay(self, prefix: str, after_s: float) -> None:
        await asyncio.sleep(after_s)
        self.fake.set_delay(prefix, None)
