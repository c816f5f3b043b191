"""Crash → warm again, with and without the crash watch (issue 13): p50/p99 over N SIGKILLs.

    python -m bench.crash [--kills 15] [--seed 7]

One fake Ollama whose runners are real child processes in a cgroup (run as root; without a
cgroup the watch falls back to the process table only for an Ollama in another process, so
this benchmark needs the cgroup), one kept 8B model loading in ~1 s (the issue's 1.5-2 s
reload on real hardware), and the real daemon. Each round kills the runner at a random moment
and measures, in real time, from the kill until Ollama's repair load of it finished, with no
client request. With the watch: the cgroup is polled every 0.2 s. Without it, only the
keeper's health ping (``health_interval``, 5 min by default, 10 s here so the rounds end)
finds the dead runner; its times scale with that interval. Without the watch two repairs
in a row would be taken for an options mismatch (the planner's MISMATCH_RELOADS), so that arm
lets one healthy ping come between two kills.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from typing import Any

from ollama_keepwarm.core.config import parse_config
from ollama_keepwarm.daemon.keeper import Keeper
from ollama_keepwarm.fake import FakeOllama

MODEL = "llama3.1:8b"
HEALTH_S = 10.0


async def _until(probe: Any, within: float) -> None:
    deadline = time.monotonic() + within
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError("no repair (or the watch never saw the runner)")
        await asyncio.sleep(0.005)


async def _arm(watch: bool, kills: int, rng: random.Random) -> list[float]:
    times: list[float] = []
    async with FakeOllama(runner_processes=True, load_seconds_per_gb=0.2) as fake:
        assert fake.processes is not None
        if fake.processes.cgroup is None:
            sys.exit("bench.crash: cannot create a cgroup here (run as root on cgroup v2)")
        scratch = tempfile.mkdtemp(prefix="okwb", dir="/tmp")
        config = parse_config(
            {
                "ollama": {"host": fake.url, "cgroup": str(fake.processes.cgroup) if watch else ""},
                "daemon": {
                    "control_socket": f"{scratch}/c.sock",
                    "state_dir": scratch,
                    "health_interval": f"{HEALTH_S:g}s",
                },
                "http": {"enabled": False},
                "models": [{"name": MODEL, "keep_alive": "1h"}],
            },
            environ={},
        )
        keeper = Keeper(config, handle_signals=False, dbus_address="unix:path=/nonexistent")
        task = asyncio.create_task(keeper.run())
        await asyncio.wait_for(keeper.ready.wait(), 30)
        host = keeper.hosts[fake.url]
        for _ in range(kills):
            await asyncio.sleep(rng.uniform(0.5, HEALTH_S))  # a crash at any moment
            pid = fake.processes.pid(fake.scheduler.loaded[next(iter(fake.scheduler.loaded))].key)
            if watch:
                await _until(lambda p=pid: host.crash_watch and p in host.crash_watch.known, 5)
            repairs = sum(1 for ld in fake.loads if ld.reason == "repair" and ld.ok)
            killed = time.monotonic()
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            await _until(
                lambda n=repairs: (
                    sum(1 for ld in fake.loads if ld.reason == "repair" and ld.ok) > n
                ),
                HEALTH_S + 30,
            )
            times.append(time.monotonic() - killed)
            print(f"watch={watch} kill -> repaired {times[-1]:.2f} s", file=sys.stderr)
            if not watch:
                # Two health-ping repairs in a row look like an options mismatch to the planner
                # (MISMATCH_RELOADS) and it stops pinging: let one healthy ping come between.
                await asyncio.sleep(HEALTH_S + 1)
        keeper.request_stop()
        await task
    return times


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def main(kills: int, seed: int) -> None:
    rows = []
    for watch in (True, False):
        times = await _arm(watch, kills, random.Random(seed))
        rows.append((watch, times))
    for watch, times in rows:
        print(
            f"| {'cgroup watch (0.2 s)' if watch else f'health ping only ({HEALTH_S:g} s)'} "
            f"| {len(times)} | {statistics.median(times):.2f} s | {_pct(times, 0.99):.2f} s "
            f"| {max(times):.2f} s |"
        )


if __name__ == "__main__":
    import logging

    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--kills", type=int, default=15)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    asyncio.run(main(args.kills, args.seed))
