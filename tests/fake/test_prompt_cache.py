"""The fake's prompt processing: slot caches, longest-prefix reuse, real durations (issue 14)."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest
from fake_helpers import SCALE

from conftest import FakeFactory
from ollama_keepwarm.fake.prompt_cache import (
    PromptCache,
    chat_tokens,
    common_prefix,
    generate_tokens,
)

SYSTEM = "You are a helpful bot. " + "Follow the house rules carefully and cite tools. " * 60
PER_TOKEN = 0.05  # model seconds per uncached prompt token: 0.5 ms real at SCALE 100


@pytest.mark.parametrize(
    ("slots", "prompts", "uncached"),
    [
        (1, [["a", "b", "c"], ["a", "b", "c"]], [3, 1]),  # a full match still evaluates one
        (1, [["a", "b", "c"], ["a", "b", "d", "e"]], [3, 2]),
        (1, [["a", "b"], ["x", "y"], ["a", "b"]], [2, 2, 2]),  # one slot: the other evicted it
        (2, [["a", "b"], ["x", "y"], ["a", "b"], ["x", "y", "z"]], [2, 2, 1, 1]),
        (
            2,
            [["a", "b", "c"], ["a", "q"], ["a", "b", "c", "d"]],
            [3, 1, 1],
        ),  # copied to a free slot
    ],
)
def test_slots_reuse_the_longest_common_prefix(
    slots: int, prompts: list[list[str]], uncached: list[int]
) -> None:
    cache = PromptCache(slots)
    seen = []
    for tokens in prompts:
        with cache.slot(tokens) as n:
            seen.append(n)
    assert seen == uncached


def test_the_crude_template_shares_the_leading_messages() -> None:
    system = {"role": "system", "content": "Be brief, and kind."}
    primed = chat_tokens([system])
    asked = chat_tokens([system, {"role": "user", "content": "Why is the sky blue?"}])
    assert common_prefix(primed, asked) == len(primed) - 1  # all but the assistant's marker
    assert generate_tokens("sys says", raw=True) == ["sys", "says"]
    assert generate_tokens("q", "s")[:3] == ["<|system|>", "s", "<|end|>"]


async def chat(session: aiohttp.ClientSession, question: str, **extra: Any) -> dict[str, Any]:
    body = {
        "model": "llama3.1:8b",
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
        ],
        "stream": False,
        "options": {"num_predict": 1},
        **extra,
    }
    async with session.post("/api/chat", json=body) as response:
        assert response.status == 200, await response.text()
        reply: dict[str, Any] = await response.json()
        return reply


async def test_a_repeated_prefix_is_processed_once(make_fake: FakeFactory) -> None:
    """The second request pays only its own question; the counts are the whole prompt."""
    fake = await make_fake(seconds_per_prompt_token=PER_TOKEN)
    async with aiohttp.ClientSession(fake.url) as session:
        first = await chat(session, "What is the first rule?")
        second = await chat(session, "And what is the second one?")
    total = len(chat_tokens([{"role": "system", "content": SYSTEM}]))
    assert first["prompt_eval_count"] > total > 500
    assert second["prompt_eval_count"] == first["prompt_eval_count"] + 1
    # The whole prompt at 0.5 ms a token, then only the ~10 tokens after the system prompt.
    assert first["prompt_eval_duration"] >= first["prompt_eval_count"] * PER_TOKEN / SCALE * 1e9
    assert second["prompt_eval_duration"] < first["prompt_eval_duration"] / 10


async def test_a_restart_or_a_crash_empties_the_slots(make_fake: FakeFactory) -> None:
    fake = await make_fake(seconds_per_prompt_token=PER_TOKEN)
    async with aiohttp.ClientSession(fake.url) as session:
        cold = await chat(session, "One?")
        assert fake.crash("llama3.1:8b")
        after_crash = await chat(session, "One?")  # a new runner: nothing cached
        hit = await chat(session, "One?")
        await fake.restart(down_s=0.1)
        after_restart = await chat(session, "One?")
    assert hit["prompt_eval_duration"] < after_crash["prompt_eval_duration"] / 10
    assert hit["prompt_eval_duration"] < after_restart["prompt_eval_duration"] / 10
    assert after_crash["prompt_eval_duration"] > cold["prompt_eval_duration"] / 2


async def test_parallel_slots_keep_two_prefixes(make_fake: FakeFactory) -> None:
    """With OLLAMA_NUM_PARALLEL=2 two alternating system prompts both stay cached."""
    fake = await make_fake(seconds_per_prompt_token=PER_TOKEN, num_parallel=2)
    other = {"role": "system", "content": "Another assistant entirely. " * 200}

    async def ask(system: dict[str, str]) -> int:
        body = {
            "model": "llama3.1:8b",
            "messages": [system, {"role": "user", "content": "hi"}],
            "stream": False,
            "options": {"num_predict": 1},
        }
        async with session.post("/api/chat", json=body) as response:
            return int((await response.json())["prompt_eval_duration"])

    ours = {"role": "system", "content": SYSTEM}
    async with aiohttp.ClientSession(fake.url) as session:
        cold = [await ask(ours), await ask(other)]
        warm = [await ask(ours), await ask(other)]
    assert all(w < c / 10 for w, c in zip(warm, cold, strict=True))
