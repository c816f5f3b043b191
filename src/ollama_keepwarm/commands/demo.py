"""``ollama-keepwarm demo``: the daemon against the built-in fake Ollama, narrated.

A few minutes of a GPU box's life, compressed: the fake runs 60 times faster than real time (a
30-minute lease lasts 30 s), and the keeper runs with its real code and a config to match. The
scenes are the ones users meet: the first warm, a lease renewed before it runs out, a model
evicted by another client's load, a server restart. Nothing here needs a GPU or a real Ollama.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from ollama_keepwarm.core.config import parse_config
from ollama_keepwarm.daemon.keeper import Keeper
from ollama_keepwarm.daemon.status import render_table
from ollama_keepwarm.fake import FakeOllama

__all__ = ["run_demo"]

TIME_SCALE = 60.0
MODELS = [
    {"name": "llama3.1:8b", "keep_alive": "30m", "priority": 10},
    {"name": "qwen2.5-coder:7b", "keep_alive": "30m", "priority": 5},
    {"name": "nomic-embed-text", "keep_alive": -1},
]
_SHOWN = {
    "ready": "READY: the first warm pass is done",
    "model_warmed": "loaded",
    "model_refreshed": "lease renewed",
    "model_vanished": "vanished",
    "ollama_down": "Ollama is not answering; polling fast",
    "ollama_up": "Ollama answers",
    "capacity_conflict": "capacity conflict",
    "warm_failed": "warm failed",
    "options_mismatch": "options mismatch",
    "warm_timed_out": "warm timed out",
    "model_released": "released",
    "capacity_retry": "room again: retrying a held model",
}


class _Narrator:
    """A structlog processor that turns the keeper's events into story lines, and counts them."""

    def __init__(self, started: float, write: Callable[[str], None]) -> None:
        self.started = started
        self.write = write
        self.counts: Counter[str] = Counter()

    def __call__(self, _logger: Any, _method: str, event: MutableMapping[str, Any]) -> str:
        name = str(event.get("event"))
        self.counts[name] += 1
        if name not in _SHOWN:
            raise structlog.DropEvent
        details = []
        if event.get("model"):
            details.append(str(event["model"]))
        for key in ("cause", "during_load_of", "rewarm_delay_s", "duration_s", "keeps", "status"):
            if key in event:
                details.append(f"{key}={event[key]}")
        text = f"{_SHOWN[name]}: {', '.join(details)}" if details else _SHOWN[name]
        self.write(f"  {self.clock()}  {text}")
        raise structlog.DropEvent

    def clock(self) -> str:
        return f"[{time.monotonic() - self.started:5.1f}s]"


def _plural(count: int, noun: str) -> str:
    """ "1 lease renewal", "2 lease renewals"."""
    return f"{count} {noun}{'' if count == 1 else 's'}"


async def _client_load(url: str, model: str) -> None:
    """Another client's request: the keep_alive its library defaults to (none sent)."""
    async with aiohttp.ClientSession() as session:
        body = {"model": model, "prompt": "hello", "stream": False}
        async with session.post(f"{url}/api/generate", json=body) as response:
            await response.read()


async def _wait(predicate: Callable[[], bool], deadline: float) -> bool:
    while not predicate():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def run_demo(duration_s: float = 45.0, write: Callable[[str], None] | None = None) -> int:
    """Run the narrated demo for about ``duration_s`` seconds; return an exit status."""
    say = write or (lambda text: print(text, flush=True))
    started = time.monotonic()
    end = started + duration_s
    narrator = _Narrator(started, say)
    structlog.configure(processors=[narrator], cache_logger_on_first_use=False)

    scratch = Path(tempfile.mkdtemp(prefix="okw-demo-"))
    async with FakeOllama(time_scale=TIME_SCALE, load_seconds_per_gb=20.0, max_loaded=3) as fake:
        config = parse_config(
            {
                "ollama": {"host": fake.url},
                "daemon": {
                    "poll_interval": "1s",
                    "refresh_before": "8s",
                    # The fake's hour is a minute: so is the health check's, or the final
                    # table would mix trace time (leases) with real time ("in 59 minutes").
                    "health_interval": f"{3600 / TIME_SCALE:g}s",
                    # Its own socket and state, away from any real daemon on this machine.
                    "control_socket": str(scratch / "control.sock"),
                    "state_dir": str(scratch),
                },
                "http": {"enabled": False},
                "models": MODELS,
            },
            environ={},
        )
        say(
            f"ollama-keepwarm demo: a fake Ollama at {fake.url}, {TIME_SCALE:g}x faster than "
            "real time\n(a 30-minute lease lasts 30 s; an 8B model loads in ~1.6 s).\n"
        )
        say("Scene 1: the keeper starts and warms three models, one at a time, by priority.")
        keeper = Keeper(config, handle_signals=False)
        task = asyncio.create_task(keeper.run())
        ok = await _wait(keeper.ready.is_set, end)

        def listed() -> set[str]:
            return {r.name for r in fake.runners()}

        client_loads = 0
        if ok and time.monotonic() + 20 < end:
            say("\nScene 2: leases run out after 30 s; the keeper renews each ~8 s before.")
            renewed = narrator.counts["model_refreshed"]
            await _wait(lambda: narrator.counts["model_refreshed"] > renewed, end)
        if time.monotonic() + 8 < end:
            say(
                "\nScene 3: another client loads llama3.2:3b with the default 5m keep-alive. "
                "Ollama can hold 3 models,\nso it evicts one of ours (equal leases: the one "
                "whose weights hash sorts first)."
            )
            evictions = len(fake.evictions)
            client_loads += 1
            await _client_load(fake.url, "llama3.2:3b")
            await _wait(
                lambda: (
                    len(fake.evictions) > evictions + 1
                    and len(listed()) == 3
                    and "llama3.2:3b:latest" not in listed()
                ),
                end,
            )
            for eviction in fake.evictions[evictions:]:
                say(f"  Ollama evicted {eviction.victim} to make room for {eviction.for_model}.")
            if "llama3.2:3b:latest" not in listed() and len(listed()) == 3:
                say(
                    "  The keeper waited until the client's load was done, then re-warmed what "
                    "was lost. Ollama evicts the\n  shortest keep-alive setting first among idle "
                    "models (5m < 30m), so the client's model gave way:\n  its next request "
                    "will be a cold start. Kept models win over short leases by design;\n  "
                    "`ollama-keepwarm pause` gives their VRAM back when another job needs it."
                )
        if time.monotonic() + 8 < end:
            say("\nScene 4: Ollama restarts (3 minutes down in trace time). Every model is lost.")
            await fake.restart(down_s=180)
            await _wait(lambda: len(listed()) == 3, end)
            say("  All three are warm again before any client asks.")
        await _wait(lambda: False, end)
        say(
            "\nStatus at the end (what `ollama-keepwarm status` shows). Its times are real "
            f"time: the fake runs {TIME_SCALE:g}x\nfaster, so 30 seconds here is 30 minutes "
            "of trace time.\n"
        )
        say(render_table(keeper.status()))
        keeper.request_stop()
        await task
        counts = narrator.counts
        say(
            f"Summary: {_plural(len(fake.loads), 'load')} in Ollama"
            + (" (one was the other client's)" if client_loads else "")
            + f", {_plural(counts['model_refreshed'], 'lease renewal')}, "
            f"{_plural(len(fake.evictions), 'eviction')}, "
            f"{_plural(counts['warm_failed'], 'failed warm')}, "
            f"in {time.monotonic() - started:.0f}s."
        )
        say(
            "Next: `ollama-keepwarm fake-ollama --port 11434` gives you the fake to poke at; "
            "`ollama-keepwarm check -c config.toml` checks a real setup."
        )
    structlog.reset_defaults()
    shutil.rmtree(scratch, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(run_demo()))
