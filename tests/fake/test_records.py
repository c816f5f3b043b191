"""The fake's records of who caused what: the facts the client-harm oracle judges the keeper by.

Callers are told apart by ``User-Agent`` (``records.who``): ``ollama-keepwarm/<version>`` is
the keeper; anything else is a client.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from fake_helpers import eventually

from ollama_keepwarm.fake.records import who

KEEPER = {"User-Agent": "ollama-keepwarm/0.1.0"}
CLIENT = {"User-Agent": "chaos-client/0"}
BUSY = {"prompt": "x", "stream": False, "options": {"num_predict": 40}}


async def _post(session: aiohttp.ClientSession, body: Any, headers: dict[str, str]) -> int:
    async with session.post("/api/generate", json=body, headers=headers) as response:
        await response.read()
        return response.status


def test_who_tells_the_keeper_from_clients() -> None:
    assert who("ollama-keepwarm/1.4.0") == "keeper"
    assert who("Python/3.12 aiohttp/3.10.11") == "client"
    assert who("ollama/0.32.15 (amd64 linux) Go/go1.24.1") == "client"
    assert who("chaos-client/3") == "client"
    assert who("") == "client"


async def test_a_keepers_renewal_of_a_draining_victim_is_recorded_on_the_wait(
    make_fake, client_for
) -> None:
    """The harm of issue 22 item 1 in the records: the client's load waited on a runner the
    keeper revived, and the victim's unload says the reviver's keep_alive expired it."""
    fake = await make_fake(max_loaded=1)
    fake.seconds_per_token = 1.0
    session = client_for(fake)
    await _post(session, {"model": "tiny", "keep_alive": "10m"}, KEEPER)
    busy = asyncio.create_task(_post(session, {"model": "tiny", **BUSY}, CLIENT))
    await eventually(lambda: fake.runners()[0].busy == 1)
    other = asyncio.create_task(_post(session, {"model": "llama3.2"}, CLIENT))
    await eventually(lambda: fake.runners()[0].keep_alive_ns == 0)  # the eviction victim
    await _post(session, {"model": "tiny", "keep_alive": "20s"}, KEEPER)  # a renewal
    await busy
    assert await other == 200
    [eviction] = fake.evictions
    assert (eviction.victim, who(eviction.caller)) == ("tiny:latest", "client")
    [wait] = [w for w in fake.records.waits if w.model == "llama3.2:latest"]
    assert who(wait.caller) == "client"
    assert wait.loaded
    assert [(t.kind, who(t.caller)) for t in wait.touches] == [("revived", "keeper")]
    unload = next(u for u in fake.records.unloads if u.model == "tiny:latest")
    assert (unload.cause, who(unload.caller), who(unload.loaded_by)) == (
        "expired",
        "keeper",
        "keeper",
    )
    [first, second] = fake.loads
    assert (who(first.caller), who(second.caller)) == ("keeper", "client")


async def test_reloads_stops_and_restarts_say_who(make_fake, client_for) -> None:
    fake = await make_fake(ollama_version="0.24.0")
    session = client_for(fake)
    await _post(session, {"model": "tiny", "options": {"num_thread": 1}}, CLIENT)
    await _post(session, {"model": "tiny", "options": {"num_ctx": 1024}}, KEEPER)
    reload = fake.loads[-1]
    assert (reload.reason, who(reload.caller), who(reload.replaced_by)) == (
        "reload",
        "keeper",
        "client",
    )
    await _post(session, {"model": "tiny", "keep_alive": 0}, CLIENT)  # ollama stop
    await eventually(lambda: not fake.runners())
    causes = [(u.cause, who(u.caller)) for u in fake.records.unloads]
    assert causes == [("reload", "keeper"), ("stopped", "client")]
    await _post(session, {"model": "tiny"}, KEEPER)
    await fake.restart(down_s=0.0)
    assert fake.records.unloads[-1].cause == "restart"


async def test_garbled_and_500_answers_and_a_wall_clock_step(make_fake, client_for) -> None:
    fake = await make_fake()
    session = client_for(fake)
    fake.garble_next("/api/ps", "utf8")
    fake.garble_next("/api/generate", "500")
    async with session.get("/api/ps") as response:
        raw = await response.read()
        assert response.status == 200
    assert raw.startswith(b'{"models"')
    assert not raw.endswith(b"}")
    assert await _post(session, {"model": "tiny"}, CLIENT) == 500
    assert await _post(session, {"model": "tiny"}, CLIENT) == 200
    before = fake.clock.wall_ns()
    async with session.post("/_fake/step_wall", json={"seconds": -3600}) as response:
        assert response.status == 200
    assert fake.clock.wall_ns() < before - 3500 * 10**9
    async with session.get("/_fake/records") as response:
        records = await response.json()
    assert [ld["caller"] for ld in records["loads"]] == ["chaos-client/0"]
