"""A failed reload is shown by status, /status and /readyz until a good reload (issue 24)."""

from __future__ import annotations

import json
import socket

import aiohttp

from helpers import FAST_FAKE, eventually, make_config, running_keeper
from ollama_keepwarm.core.config import Config, ConfigError
from ollama_keepwarm.daemon.status import render_table
from ollama_keepwarm.fake import FakeOllama

TINY = {"name": "tiny", "keep_alive": "1h"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def get_json(url: str) -> tuple[int, dict[str, object]]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, json.loads(await response.text())


async def test_a_failed_reload_shows_until_a_good_one() -> None:
    """status, /status and /readyz say "config reload failed at T: <reason>; running the
    config loaded at T0" after a bad reload, and stop saying it after a good one."""
    port = free_port()
    async with FakeOllama(**FAST_FAKE) as fake:
        config = make_config(fake.url, [TINY], http={"enabled": True, "port": port})
        answers: list[Config | ConfigError] = [ConfigError("models[0].name", "is required")]

        def reload_config() -> Config:
            answer = answers.pop(0) if answers else config
            if isinstance(answer, ConfigError):
                raise answer
            return answer

        async with running_keeper(config, reload_config=reload_config) as (keeper, _):
            await eventually(keeper.ready.is_set, what="the model warm")
            assert keeper.status()["config_reload"] is None
            await keeper.reload()
            document = keeper.status()
            note = document["config_reload"]["note"]
            assert note.startswith("config reload failed at ")
            assert ": models[0].name: is required; running the config loaded at " in note
            assert f"WARNING: {note}" in render_table(document)
            base = f"http://127.0.0.1:{port}"
            status, body = await get_json(f"{base}/status")
            assert (status, body["config_reload"]) == (200, document["config_reload"])
            status, body = await get_json(f"{base}/readyz")
            # The kept models are still warm: ready, and the failed reload said.
            assert (status, body["ready"], body["config_reload_failed"]) == (200, True, note)
            await keeper.reload()  # a good one
            assert keeper.status()["config_reload"] is None
            status, body = await get_json(f"{base}/readyz")
            assert (status, "config_reload_failed" in body) == (200, False)
