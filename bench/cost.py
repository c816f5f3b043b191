"""The daemon's own cost: RSS and CPU of ``python -m ollama_keepwarm run`` keeping 10 models.

The daemon runs as a real subprocess (its own interpreter, its CLI, its logging to a pipe we
drop), against an in-process fake Ollama with ten small models that all fit. Memory is VmRSS
(and its peak, VmHWM) from ``/proc/PID/status``; CPU is utime + stime from ``/proc/PID/stat``
over the measured window, as a percentage of one core.

On the compressed clock the daemon does an hour's work (polls, refreshes, health pings) in
``3600 / scale`` real seconds, so that CPU percentage is ``scale`` times what the same hour costs
in real time. We report it as measured, plus CPU seconds per simulated hour, plus a short
uncompressed window, which is what an idle daemon actually costs between refreshes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.strategies import scaled_config
from ollama_keepwarm.fake import Catalog, CatalogModel, FakeOllama

__all__ = ["IdleCost", "measure_idle"]

MODELS = 10
_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class IdleCost:
    """What the daemon cost over one measured window."""

    scale: float
    trace_s: float
    real_s: float
    cpu_s: float
    rss_mb: float
    peak_rss_mb: float
    requests: int

    @property
    def cpu_pct(self) -> float:
        """CPU time over real elapsed time, in percent of one core."""
        return 100.0 * self.cpu_s / self.real_s


def _catalog() -> Catalog:
    return Catalog(
        CatalogModel(f"bench-small-{i}:1b", 300_000_000 + i, parameter_size="1B")
        for i in range(MODELS)
    )


def _cpu_s(pid: int) -> float:
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime (fields 14, 15)


def _memory_mb(pid: int) -> tuple[float, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in {"VmRSS", "VmHWM"}:
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def _toml(raw: dict[str, object]) -> str:
    """Write the few shapes our config uses as TOML (no writer in the stdlib)."""
    lines: list[str] = []
    for table in ("ollama", "daemon", "http"):
        lines.append(f"[{table}]")
        for key, value in raw[table].items():  # type: ignore[attr-defined]
            lines.append(f"{key} = {_value(value)}")
    for model in raw["models"]:  # type: ignore[attr-defined]
        lines.append("[[models]]")
        lines += [f"{key} = {_value(value)}" for key, value in model.items()]
    return "\n".join(lines) + "\n"


def _value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


async def _wait_warm(fake: FakeOllama, process: asyncio.subprocess.Process) -> None:
    deadline = time.monotonic() + 60
    while len(fake.runners()) < MODELS:
        if process.returncode is not None or time.monotonic() > deadline:
            raise RuntimeError("the daemon did not warm its 10 models within 60 s")
        await asyncio.sleep(0.05)


async def measure_idle(scale: float, trace_s: float) -> IdleCost:
    """Run the daemon for ``trace_s`` trace seconds of idleness after its first warm pass."""
    fake = FakeOllama(
        catalog=_catalog(), max_loaded=MODELS, memory_bytes=64 * 2**30, time_scale=scale
    )
    await fake.start()
    models = tuple(f"bench-small-{i}:1b" for i in range(MODELS))
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "config.toml"
        config.write_text(_toml(scaled_config(fake.url, models, scale, Path(tmp), http=True)))
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "ollama_keepwarm",
            "run",
            "-c",
            str(config),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            await _wait_warm(fake, process)
            before_requests = len(fake.requests)
            cpu0, t0 = _cpu_s(process.pid), time.monotonic()
            peak = 0.0
            while time.monotonic() - t0 < trace_s / scale:
                await asyncio.sleep(min(0.5, trace_s / scale / 10))
                rss, hwm = _memory_mb(process.pid)
                peak = max(peak, hwm)
            cpu1, t1 = _cpu_s(process.pid), time.monotonic()
            requests = len(fake.requests) - before_requests
        finally:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            await process.wait()
            await fake.stop()
    return IdleCost(scale, trace_s, t1 - t0, cpu1 - cpu0, rss, peak, requests)
