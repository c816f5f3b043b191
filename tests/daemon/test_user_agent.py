"""The keeper names itself to Ollama: ``User-Agent: ollama-keepwarm/<version>``.

An operator reading a proxy's or an ingress's log, and the fake's records (which tell the
keeper's calls from clients' by it), see which requests were the keeper's; aiohttp's default
(``Python/3.x aiohttp/3.x``) says nothing, and many clients send it too.
"""

from __future__ import annotations

import asyncio

from helpers import FAST_FAKE, make_config, running_keeper
from ollama_keepwarm import __version__
from ollama_keepwarm.commands.oneshot import warm_all
from ollama_keepwarm.fake import FakeOllama


async def test_the_daemons_calls_carry_its_name() -> None:
    async with FakeOllama(**FAST_FAKE) as fake:
        config = make_config(fake.url, [{"name": "tiny", "keep_alive": "1h"}])
        async with running_keeper(config) as (keeper, _):
            await asyncio.wait_for(keeper.ready.wait(), 10)
        agents = {r.user_agent for r in fake.requests}
    assert agents == {f"ollama-keepwarm/{__version__}"}


async def test_the_one_shot_warm_carries_its_name() -> None:
    async with FakeOllama(**FAST_FAKE) as fake:
        config = make_config(fake.url, [{"name": "tiny", "keep_alive": "1h"}])
        await warm_all(config, 5.0, lambda _line: None)
        agents = {r.user_agent for r in fake.requests}
    assert agents == {f"ollama-keepwarm/{__version__}"}
