"""Priming the clients' prompt prefix after every load the keeper sees (issue 14).

Against the fake's slot caches: the tests assert a cache hit by the prompt tokens the fake had
to process past the slot's cached prefix (``RecordedRequest.prompt_uncached``), not merely that
a request was sent, and not by timing (a busy machine stretches any duration).
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from structlog.testing import capture_logs

from helpers import FAST_FAKE, eventually, make_config, more_looks, running_keeper
from ollama_keepwarm.daemon.keeper import Keeper
from ollama_keepwarm.fake import FakeOllama

SYSTEM = "You are the support bot of a shop. " + "Answer with the house rules in mind. " * 80
PER_TOKEN = 0.002  # real seconds per uncached prompt token: the ~600-token prefix costs ~1.2 s
BOT = {"name": "llama3.1:8b", "keep_alive": "30s", "prime": SYSTEM}


def fake_with_prompt_cost(**extra: Any) -> FakeOllama:
    return FakeOllama(**{**FAST_FAKE, "seconds_per_prompt_token": PER_TOKEN, **extra})


PREFIX_TOKENS = 500  # the system prompt alone is ~1000 words: a miss processes all of them
HIT_TOKENS = 20  # a hit processes only the question and the template around it


async def ask(fake: FakeOllama, question: str, model: str = "llama3.1:8b") -> int:
    """A client's chat request with the same system prompt; the prompt tokens not cached."""
    body = {
        "model": model,
        "messages": [
            {"role": "system", "content": SYSTEM},
            {"role": "user", "content": question},
        ],
        "stream": False,
        "keep_alive": "30s",
        "options": {"num_predict": 1},
    }
    async with (
        aiohttp.ClientSession() as session,
        session.post(fake.url + "/api/chat", json=body) as response,
    ):
        assert response.status == 200, await response.text()

    def recorded() -> int | None:
        for r in reversed(fake.requests):
            if r.path == "/api/chat" and isinstance(r.body, dict) and r.body == body:
                return r.prompt_uncached
        return None

    # The fake records a request just after its reply is sent: wait for the record.
    return int(await eventually(recorded, what="the request recorded"))


def primes(fake: FakeOllama, model: str = "llama3.1:8b") -> list[Any]:
    """The keeper's priming requests: chat with the prefix alone and num_predict 1."""
    return [
        r
        for r in fake.requests
        if r.path == "/api/chat"
        and isinstance(r.body, dict)
        and r.body.get("model") == model
        and len(r.body.get("messages", [])) == 1
    ]


def prime_status(keeper: Keeper, model: str = "llama3.1:8b") -> dict[str, Any]:
    for host in keeper.status()["hosts"]:
        for entry in host["models"]:
            if entry["name"] == model:
                prime: dict[str, Any] = entry["prime"]
                return prime
    return {"primed": False, "primes": 0}  # before the first look


async def primed(keeper: Keeper, count: int = 1) -> bool:
    st = prime_status(keeper)
    return bool(st["primed"]) and st["primes"] >= count


async def test_first_request_after_the_keeper_warms_is_a_cache_hit() -> None:
    """Without priming the first request pays the whole prefix; after it, only its question."""
    async with fake_with_prompt_cost() as fake:
        cold = await ask(fake, "How do I return a parcel?")  # nobody primed: the whole prefix
        hit = await ask(fake, "Where is my order number?")
        await fake.unload("llama3.1:8b")
        await eventually(lambda: not fake.runners(), what="unloaded")
        config = make_config(fake.url, [BOT])
        async with running_keeper(config) as (keeper, _):
            await eventually(lambda: primed(keeper), what="primed")
            first = await ask(fake, "How do I return a parcel?")
            status = prime_status(keeper)
        body = primes(fake)[0].body
    assert cold > PREFIX_TOKENS  # the fake models the cache at all
    assert hit < HIT_TOKENS
    assert first < HIT_TOKENS, (first, hit, cold)  # a cache hit, not the whole prefix
    assert body["options"] == {"num_predict": 1}  # exactly our (empty) options, one token
    assert "keep_alive" not in body  # the runner keeps ours; a drained one is never revived
    assert body["stream"] is False
    assert status["after"] == "warm"
    assert status["prompt_tokens"] > 500


async def test_a_restart_primes_again_a_renewal_does_not() -> None:
    async with fake_with_prompt_cost() as fake:
        config = make_config(fake.url, [{**BOT, "keep_alive": "1s"}])
        async with running_keeper(config) as (keeper, _):
            await eventually(lambda: primed(keeper), what="primed")
            renewals = len([r for r in fake.requests if r.path == "/api/generate"])
            await eventually(
                lambda: (
                    len([r for r in fake.requests if r.path == "/api/generate"]) >= renewals + 3
                ),
                what="three lease renewals",
            )
            assert len(primes(fake)) == 1  # renewals of a runner that did not reload
            await fake.restart(down_s=0.2)
            await eventually(lambda: primed(keeper, 2), within=15, what="primed after restart")
            first = await ask(fake, "Is the shop open today?")
            hit = await ask(fake, "Is the shop open tomorrow?")
            assert prime_status(keeper)["after"] == "warm"
        assert len(primes(fake)) == 2
    assert first < HIT_TOKENS, (first, hit)  # primed after the restart: a cache hit
    assert hit < HIT_TOKENS


async def test_our_cold_load_listed_before_its_answer_arrives_is_primed() -> None:
    """Busy-machine flake of stop 30 (the test above waited 10 s for a first prime): a look ran
    between Ollama listing our new runner and our call reading its answer, and the end of the
    call took that listing for the model resident under another name all along (no load, so no
    prime). Whether it was resident is what the snapshot said when the call began."""
    async with fake_with_prompt_cost() as fake:
        fake.set_reply_delay("/api/generate", 3.0)  # the load is done; its answer is not read
        config = make_config(fake.url, [BOT])
        async with running_keeper(config) as (keeper, _):
            await eventually(fake.runners, what="our runner listed")
            host = keeper.hosts[fake.url]
            await host.look(fresh=True)  # sees it listed while our call is still in flight
            assert any(st.in_flight_since for st in host.states.values())
            fake.set_reply_delay("/api/generate", None)
            await eventually(lambda: primed(keeper), what="primed")
            assert prime_status(keeper)["after"] == "warm"


async def test_a_crash_repair_primes_again_a_model_found_loaded_does_not() -> None:
    async with fake_with_prompt_cost() as fake:
        config = make_config(fake.url, [BOT], health_interval="300ms")
        async with running_keeper(config) as (keeper, _):
            await eventually(lambda: primed(keeper), what="primed")
            assert fake.crash("llama3.1:8b")
            # The next health ping finds the dead runner, Ollama reloads it: runner_reloaded.
            await eventually(lambda: primed(keeper, 2), within=15, what="primed after crash")
            assert prime_status(keeper)["after"] == "reload"
            first = await ask(fake, "Can I pay by card?")
            hit = await ask(fake, "Can I pay in cash?")
            assert first < HIT_TOKENS, (first, hit)
            assert hit < HIT_TOKENS
        primes_before = len(primes(fake))
        async with running_keeper(config) as (keeper, _):
            # A keeper that finds the model loaded leaves its slots alone: someone may have
            # used them since the load (issue 22 item 3).
            await more_looks(keeper, 5)
            assert len(primes(fake)) == primes_before


async def test_a_failing_prime_is_logged_and_blocks_no_warm() -> None:
    """An embedding model cannot chat: its prime fails, is retried later, the rest is warm."""
    async with fake_with_prompt_cost() as fake:
        embed = {"name": "nomic-embed-text", "keep_alive": "30s", "prime": "x", "priority": 9}
        config = make_config(fake.url, [embed, {**BOT, "priority": 1}])
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await asyncio.wait_for(keeper.ready.wait(), 10)
                await eventually(lambda: primed(keeper), what="the chat model primed")
                await eventually(
                    lambda: any(e["event"] == "prime_failed" for e in logs), what="prime_failed"
                )
                failing = prime_status(keeper, "nomic-embed-text")
                metrics = keeper.metrics.exposition().decode()
    failed = next(e for e in logs if e["event"] == "prime_failed")
    assert failed["log_level"] == "warning"
    assert failed["retry_in_s"] > 0
    assert "does not support chat" in failed["error"]
    assert failing["primed"] is False
    assert failing["last_error"]
    assert 'ollama_keepwarm_primes_total{host="' in metrics
    assert 'result="error"' in metrics
    assert "ollama_keepwarm_prime_duration_seconds_count" in metrics


async def test_check_shows_the_prefix_and_counts_its_tokens(tmp_path: Any) -> None:
    """`check` renders what will be cached; a loaded model gets a dry request that counts it."""
    from ollama_keepwarm.commands.oneshot import check
    from ollama_keepwarm.core.config import load_config

    (tmp_path / "bot.txt").write_text(SYSTEM)
    file = tmp_path / "c.toml"
    async with fake_with_prompt_cost() as fake:
        file.write_text(
            f'[ollama]\nhost = "{fake.url}"\n[[models]]\nname = "llama3.1:8b"\n'
            'prime_file = "bot.txt"\n[[models]]\nname = "qwen2.5-coder:7b"\nprime = "Code."\n'
        )
        config = load_config(file, environ={})
        await ask(fake, "warm it up")  # loaded by a client; the coder stays unloaded
        reached, problems, lines = await check(config, 5, lambda _line: None)
    text = "\n".join(lines)
    assert reached
    assert problems == 0
    assert "prime from bot.txt: 1 message(s): system" in text
    assert "via /api/chat" in text
    assert "You are the support bot of a shop." in text
    tokens = next(line for line in lines if "tokens as rendered" in line)
    assert int(tokens.split()[0]) > 500
    assert "not loaded; the keeper's first prime reports it" in text  # the coder


async def test_a_clients_conversation_is_not_overwritten_by_a_prime() -> None:
    """Issue 22 item 3: a client loaded the model and filled its one slot with a long history;
    the keeper (starting now, or seeing the client's load) must not prime over it: the
    client's next turn stays a cache hit."""
    history = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Here is my order history. " * 150},
    ]

    async def turn(fake: FakeOllama, messages: list[dict[str, str]]) -> float:
        body = {
            "model": "llama3.1:8b",
            "messages": messages,
            "stream": False,
            "options": {"num_predict": 1},
        }
        async with (
            aiohttp.ClientSession() as session,
            session.post(fake.url + "/api/chat", json=body) as response,
        ):
            reply = await response.json()
        return float(reply["prompt_eval_duration"]) / 1e9

    async with fake_with_prompt_cost() as fake:
        first = await turn(fake, history)
        config = make_config(fake.url, [BOT])
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
            await more_looks(keeper, 5)
            follow_up = [*history, {"role": "user", "content": "And the last one?"}]
            second = await turn(fake, follow_up)
        assert primes(fake) == []
    assert second < first / 3, (first, second)
