"""keep_alive: parsing, defaults, last-writer-wins, timers, the stale-expiry race, unload."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from fake_helpers import capture, eventually, parse_time, post, ps, ps_names

from ollama_keepwarm.core.durations import INFINITE_NS
from ollama_keepwarm.fake.wire import parse_env_keep_alive

_S = 1_000_000_000


@pytest.mark.parametrize(
    ("keep_alive", "expected_ns"),
    [
        (1.5, 1_500_000_000),
        (300, 300 * _S),
        (-1, INFINITE_NS),
        (-0.5, INFINITE_NS),
        ("1h30m", 5400 * _S),
        ("300ms", 300_000_000),
        ("-1m", INFINITE_NS),
        (None, 7 * 60 * _S),
    ],
)
async def test_keep_alive_values_accepted(make_fake, client_for, keep_alive, expected_ns) -> None:
    """Numbers are s (fractions kept, <0 forever), strings Go durations, null default."""
    fake = await make_fake(default_keep_alive="7m")
    session = client_for(fake)
    status, _ = await post(session, "/api/generate", {"model": "tiny", "keep_alive": keep_alive})
    assert status == 200
    [runner] = fake.runners()
    assert runner.keep_alive_ns == expected_ns


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        ('"-1"', 'time: missing unit in duration "-1"'),
        ('"300"', 'time: missing unit in duration "300"'),
        ('"abc"', 'time: invalid duration "abc"'),
        ('""', 'time: invalid duration ""'),
        ('" 5m"', 'time: invalid duration " 5m"'),
        ('"1d"', 'time: unknown unit "d" in duration "1d"'),
        ("true", "Unsupported type: 'bool'"),
        ("{}", "Unsupported type: 'map[string]interface {}'"),
        ("[]", "Unsupported type: '[]interface {}'"),
    ],
)
async def test_keep_alive_errors(fake, session, raw, error) -> None:
    """Bad keep_alive values abort the request with 400 and Go's exact message; nothing loads."""
    body = '{"model":"tiny","keep_alive":' + raw + "}"
    async with session.post("/api/generate", data=body) as response:
        assert response.status == 400
        assert await response.json() == {"error": error}
    assert fake.loads == []


async def test_overflowing_keep_alive_unloads_when_idle(fake, session) -> None:
    """Seconds beyond int64 nanoseconds wrap negative, as on amd64: the model unloads when idle."""
    await post(session, "/api/generate", {"model": "tiny", "keep_alive": 1e10})
    await eventually(lambda: not fake.runners())


@pytest.mark.parametrize(
    ("raw", "expected_ns"),
    [
        (None, 300 * _S),
        ("", 300 * _S),
        ("10m", 600 * _S),
        (' "10m" ', 600 * _S),
        ("'1h'", 3600 * _S),
        ("300", 300 * _S),
        ("-1", INFINITE_NS),
        ("-1s", INFINITE_NS),
        ("0", 0),
        ("garbage", 300 * _S),
        ("1d", 300 * _S),
    ],
)
def test_env_keep_alive_parsing(raw, expected_ns) -> None:
    """OLLAMA_KEEP_ALIVE: trimmed, duration then integer seconds, 5m on garbage, <0 forever."""
    assert parse_env_keep_alive(raw) == expected_ns


async def test_server_default_zero_unloads_after_load(make_fake, client_for) -> None:
    """With default keep-alive 0, a warm call without keep_alive loads then unloads at once."""
    fake = await make_fake(default_keep_alive="0")
    session = client_for(fake)
    assert (await post(session, "/api/generate", {"model": "tiny"}))[0] == 200
    assert len(fake.loads) == 1
    await eventually(lambda: not fake.runners())


async def test_default_applies_only_on_first_load(make_fake, client_for) -> None:
    """A request without keep_alive keeps the runner's current duration (-1 stays sticky)."""
    fake = await make_fake(default_keep_alive="7m")
    session = client_for(fake)
    await post(session, "/api/generate", {"model": "tiny", "keep_alive": -1})
    await post(session, "/api/generate", {"model": "tiny", "prompt": "x", "stream": False})
    assert fake.runners()[0].keep_alive_ns == INFINITE_NS
    [row] = await ps(session)
    assert parse_time(row["expires_at"]).year > 2300


async def test_last_writer_wins(fake, session) -> None:
    """Each keep_alive replaces the duration, shorter or longer, and expires_at follows."""
    await post(session, "/api/generate", {"model": "tiny", "keep_alive": -1})
    await post(session, "/api/generate", {"model": "tiny", "keep_alive": "10m"})
    assert fake.runners()[0].keep_alive_ns == 600 * _S
    [row] = await ps(session)
    assert parse_time(row["expires_at"]) < datetime.now(UTC) + timedelta(seconds=7)
    await post(session, "/api/generate", {"model": "tiny", "keep_alive": "20m"})
    assert fake.runners()[0].keep_alive_ns == 1200 * _S


async def test_expires_at_frozen_while_busy(fake, session) -> None:
    """While a request is in flight expires_at keeps its old value, even once it is past."""
    fake.seconds_per_token = 1.0
    await post(session, "/api/generate", {"model": "tiny", "keep_alive": "2s"})
    [before] = await ps(session)
    deadline = parse_time(before["expires_at"])
    body = {"model": "tiny", "prompt": "x", "stream": False, "options": {"num_predict": 30}}
    task = asyncio.create_task(post(session, "/api/generate", body))
    await eventually(lambda: datetime.now(UTC) > deadline + timedelta(milliseconds=30))
    assert not task.done()
    [during] = await ps(session)
    assert during["expires_at"] == before["expires_at"]
    assert (await task)[0] == 200
    [after] = await ps(session)
    assert parse_time(after["expires_at"]) > datetime.now(UTC)


async def test_timer_restarts_full_length_when_idle(fake, session) -> None:
    """When the last request ends, expires_at = end + full d; with d = 0 the model unloads."""
    body = {"model": "tiny", "prompt": "x", "stream": False, "keep_alive": "5m"}
    await post(session, "/api/generate", body)
    ended = datetime.now(UTC)
    [row] = await ps(session)
    expected = ended + timedelta(seconds=300 / fake.clock.time_scale)
    assert abs(parse_time(row["expires_at"]) - expected) < timedelta(milliseconds=100)
    await post(session, "/api/generate", {**body, "keep_alive": 0})
    await eventually(lambda: not fake.runners())


@pytest.mark.parametrize("tokens", [1, 40], ids=["ends-before-the-unload", "outlasts-it"])
async def test_stale_expiry_race(make_fake, client_for, tokens) -> None:
    """A request arriving after the timer fired but before the unload is served, then unloaded:
    also when it is still running as the unload comes due (Go re-checks every 10 ms and never
    asks whether the runner was renewed meanwhile)."""
    fake = await make_fake(unload_delay_s=50.0)  # 0.5 s real window between timer and unload
    fake.seconds_per_token = 2.5  # 40 tokens: 100 s, 1 s real: past the unload
    session = client_for(fake)
    await post(session, "/api/generate", {"model": "tiny", "keep_alive": "1s"})
    fired = fake.runners()[0].expires_at + timedelta(milliseconds=30)
    await eventually(lambda: datetime.now(UTC) > fired)
    assert await ps_names(session) == ["tiny:latest"]
    status, body = await post(
        session,
        "/api/generate",
        {
            "model": "tiny",
            "prompt": "x",
            "stream": False,
            "keep_alive": "1h",
            "options": {"num_predict": tokens},
        },
    )
    assert (status, body["done"]) == (200, True)
    await eventually(lambda: not fake.runners(), within_s=2.0)
    assert [load.reason for load in fake.loads] == ["cold"]


async def test_unload_command(fake, session) -> None:
    """Empty prompt + keep_alive 0 answers done_reason unload without loading; 404 if unknown."""
    # A lease far longer than the wait below (1h is 36 s at this scale): only the unload
    # command can empty the list in time.
    await post(session, "/api/generate", {"model": "tiny", "keep_alive": "1h"})
    status, body = await post(session, "/api/generate", {"model": "tiny", "keep_alive": 0})
    expected = capture("tiny_unload.json")
    assert status == 200
    assert list(body) == list(expected)
    assert body["done_reason"] == "unload"
    await eventually(lambda: not fake.runners(), within_s=2.0)
    for keep_alive in (0, "0", "0s", 0.0):
        status, body = await post(
            session, "/api/generate", {"model": "llama3.2", "keep_alive": keep_alive}
        )
        assert (status, body["done_reason"]) == (200, "unload")
    status, body = await post(
        session, "/api/chat", {"model": "llama3.2", "messages": [], "keep_alive": 0}
    )
    assert body["message"] == {"role": "assistant", "content": ""}
    assert body["done_reason"] == "unload"
    assert len(fake.loads) == 1
    assert await post(session, "/api/generate", {"model": "nosuch", "keep_alive": 0}) == (
        404,
        {"error": "model 'nosuch' not found"},
    )


async def test_unload_while_busy_shows_expiry_now_and_unloads_after(fake, session) -> None:
    """An unload asked while a request runs (§1.4): ps shows expires_at = the moment it was
    asked, not the old lease, and the runner goes when the request ends."""
    fake.seconds_per_token = 2.5  # 40 tokens: 1 s real
    await post(session, "/api/generate", {"model": "tiny", "keep_alive": "1h"})
    busy = asyncio.create_task(
        post(
            session,
            "/api/generate",
            {"model": "tiny", "prompt": "x", "stream": False, "options": {"num_predict": 40}},
        )
    )
    await eventually(lambda: fake.runners()[0].busy == 1)
    asked = datetime.now(UTC)
    status, body = await post(session, "/api/generate", {"model": "tiny", "keep_alive": 0})
    assert (status, body["done_reason"]) == (200, "unload")
    [row] = await ps(session)
    assert abs(parse_time(row["expires_at"]) - asked) < timedelta(seconds=1)
    assert not busy.done()
    assert (await busy)[0] == 200
    await eventually(lambda: not fake.runners(), within_s=2.0)
