"""An eviction's runner exit is no crash, however fast the keeper looks (issue 21 item 1).

Before v0.32.4 the evicted runner exits first and its ps row goes a few ms later (§4.9). A
keeper that looked within those ms after seeing the exit found the model still listed,
called it a crash, and "repaired" it with a ping that reloaded it, evicting whatever had
taken the room (chaos seed 7 on 0.24.0: a client's model, over and over). The fake here
widens that window to 0.1 s so the interleaving is certain rather than lucky.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import aiohttp
import pytest
from structlog.testing import capture_logs

from helpers import FAST_FAKE, make_config, more_looks, running_keeper
from ollama_keepwarm.fake import FakeOllama

LLAMA = "llama3.1:8b"


def _cgroup_or_skip(fake: FakeOllama) -> str:
    assert fake.processes is not None
    if fake.processes.cgroup is None:
        pytest.skip("cannot create a cgroup v2 here: the runner watch cannot see processes")
    return str(fake.processes.cgroup)


async def test_an_evicted_runners_exit_is_no_crash_while_its_row_lingers() -> None:
    async with FakeOllama(
        ollama_version="0.24.0",
        **FAST_FAKE,
        max_loaded=1,
        runner_processes=True,
        exit_to_row_s=0.1,
    ) as fake:
        config = make_config(fake.url, [{"name": LLAMA, "keep_alive": "1h"}])
        config = replace(config, ollama=replace(config.ollama, cgroup=_cgroup_or_skip(fake)))
        with capture_logs() as logs:
            async with running_keeper(config) as (keeper, _):
                await asyncio.wait_for(keeper.ready.wait(), 10)
                async with (
                    aiohttp.ClientSession() as session,
                    session.post(
                        fake.url + "/api/generate",
                        json={"model": "tiny", "prompt": "hi", "stream": False},
                    ) as response,
                ):
                    assert response.status == 200
                await more_looks(keeper, 5)  # the look after the exit, and a settled one
    assert not [e for e in logs if e["event"] == "runner_died"]
    [vanished] = [e for e in logs if e["event"] == "model_vanished"]
    assert vanished["cause"] == "evicted"
