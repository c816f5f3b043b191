"""The first answer after a loss, with and without priming the prompt prefix (issue 14).

One fake Ollama on the compressed clock, one 8B model, a bot that sends the same ~1400-token
system prompt with every question (the issue's measurement: 32.4 s of prompt processing the
first time on a CPU, ~0.6 s with the prefix cached, so 25 ms a token). Each trial restarts
Ollama (down 10 s: longer than a poll, so the keeper sees the outage), then the bot's next
question arrives a random 5-90 s after Ollama is back; we record how long its answer took and
how much of that was prompt processing, then a second question of the same length: the cache
hit to compare with. The strategies:

* ``none``: no keeper, ``OLLAMA_KEEP_ALIVE`` as configured (the bot loads the model itself);
* ``keepwarm``: the daemon's defaults, no ``prime``;
* ``keepwarm+prime``: the same with ``prime`` = the bot's system prompt.

Run: ``python -m bench.prime [--trials 25] [--seed 7]`` (about 2 minutes on 2 cores). Times are
in model (trace) seconds: real seconds times the time scale.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench.strategies import scaled_config
from ollama_keepwarm.core.config import parse_config
from ollama_keepwarm.daemon.keeper import Keeper
from ollama_keepwarm.fake import FakeOllama

MODEL = "llama3.1:8b"
SCALE = 50.0
PER_PROMPT_TOKEN_S = 32.4 / 1300  # the CPU measurement
SYSTEM = (
    "You are the support bot of an online shop. Follow the house rules, use the tools, and "
    "answer in the customer's language. "
) + " ".join(f"Rule {i}: be precise about orders, refunds and delivery times." for i in range(105))
QUESTIONS = (  # the same length (20 crude tokens), so first and hit compare like for like
    "Hello, I ordered two pairs of running shoes last week and the parcel has not arrived yet.",
    "Hi there, can I still return a winter jacket that I bought about five weeks ago online?",
    "Good morning, do you ship furniture to Oslo, and how long does the delivery usually take?",
)
STRATEGIES = ("none", "keepwarm", "keepwarm+prime")


@dataclass(frozen=True, slots=True)
class Trial:
    """One loss: the first answer after it, and the cache hit right after (model seconds)."""

    first_s: float
    first_prompt_s: float
    hit_prompt_s: float


async def _ask(session: aiohttp.ClientSession, url: str, question: str) -> tuple[float, float]:
    body = {
        "model": MODEL,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
        ],
        "stream": False,
        "options": {"num_predict": 8},
    }
    started = time.monotonic()
    while True:  # a bot retries while Ollama is down
        try:
            async with session.post(f"{url}/api/chat", json=body) as reply:
                data: dict[str, Any] = await reply.json()
                break
        except (aiohttp.ClientError, OSError):
            await asyncio.sleep(0.5 / SCALE)
    return (time.monotonic() - started) * SCALE, data["prompt_eval_duration"] / 1e9 * SCALE


async def _run(strategy: str, trials: int, seed: int) -> list[Trial]:
    rng = random.Random(seed)
    fake = FakeOllama(
        time_scale=SCALE,
        memory_bytes=48 * 2**30,
        seconds_per_prompt_token=PER_PROMPT_TOKEN_S,
        default_keep_alive="5m",
    )
    await fake.start()
    keeper: Keeper | None = None
    task: asyncio.Task[int] | None = None
    with tempfile.TemporaryDirectory(prefix="bench-prime-") as scratch:
        if strategy != "none":
            raw = scaled_config(fake.url, (MODEL,), SCALE, Path(scratch))
            if strategy == "keepwarm+prime":
                raw["models"][0]["prime"] = SYSTEM
            keeper = Keeper(parse_config(raw, environ={}), handle_signals=False)
            task = asyncio.create_task(keeper.run())
            await asyncio.wait_for(keeper.ready.wait(), 60)
        results = []
        async with aiohttp.ClientSession() as session:
            await _ask(session, fake.url, QUESTIONS[0])  # the bot has been running
            for i in range(trials):
                await fake.restart(down_s=10.0)
                await asyncio.sleep(rng.uniform(5.0, 90.0) / SCALE)
                first, first_prompt = await _ask(session, fake.url, QUESTIONS[i % 3])
                _, hit_prompt = await _ask(session, fake.url, QUESTIONS[(i + 1) % 3])
                results.append(Trial(first, first_prompt, hit_prompt))
        if keeper is not None and task is not None:
            keeper.request_stop()
            await task
    await fake.stop()
    return results


def _p(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> None:
    """Print one markdown table row per strategy."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=25)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    print(
        "| strategy | first answer after a restart, p50 | p99 | its prompt processing, p50 "
        "| p99 | a cache-hit request's, p50 | first / hit (p50) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for strategy in STRATEGIES:
        trials = asyncio.run(_run(strategy, args.trials, args.seed))
        first = [t.first_s for t in trials]
        prompt = [t.first_prompt_s for t in trials]
        hit = [t.hit_prompt_s for t in trials]
        ratio = statistics.median(p / h for p, h in zip(prompt, hit, strict=True))
        print(
            f"| {strategy} | {_p(first, 0.5):.2f} s | {_p(first, 0.99):.2f} s "
            f"| {_p(prompt, 0.5):.2f} s | {_p(prompt, 0.99):.2f} s | {_p(hit, 0.5):.2f} s "
            f"| {ratio:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
