"""`ollama-keepwarm learned` and `check`: the learned hours as the daemon last wrote them."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from ollama_keepwarm.cli import main
from ollama_keepwarm.core.config import load_config
from ollama_keepwarm.daemon.learned import FILENAME, LearnedStore
from ollama_keepwarm.fake import FakeOllama

BERLIN = ZoneInfo("Europe/Berlin")
_NOW = datetime.now(BERLIN)
MONDAY = (_NOW - timedelta(days=_NOW.weekday() + 21)).replace(
    hour=0, minute=0, second=0, microsecond=0
)
"""Three weeks of data before this week: the commands judge the profile at the real now."""


def setup(tmp_path: Path, url: str = "http://127.0.0.1:1") -> Path:
    """A config with one learned model, and three weeks of workday uses in its state."""
    state = tmp_path / "state"
    config = tmp_path / "c.toml"
    config.write_text(
        f'[ollama]\nhost = "{url}"\n[daemon]\nstate_dir = "{state}"\ntimezone = "Europe/Berlin"\n'
        '[http]\nenabled = false\n[[models]]\nname = "llama3.1:8b"\nwhen = "learned"\n'
        '[[models]]\nname = "nomic-embed-text"\n'
    )
    model = load_config(config).models[0]
    store = LearnedStore(state)
    store.adopt([model], MONDAY)
    for day in range(21):
        if day % 7 < 5:
            at = (MONDAY + timedelta(days=day)).replace(hour=9)
            store.record(model, at, BERLIN, cold=day == 0)
    store.flush()
    return config


def test_learned_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = setup(tmp_path)
    assert main(["learned", "-c", str(config), "--json"]) == 0
    document = json.loads(capsys.readouterr().out)
    (entry,) = document["models"]
    assert entry["name"] == "llama3.1:8b"
    assert not entry["learning"]
    assert entry["when"] == ["mon-fri 08:45-09:30"]
    assert (entry["uses"], entry["cold_uses"]) == (15, 1)
    assert entry["slots"][0]["day"] == "mon"
    assert entry["slots"][0]["at"] == "09:00"
    assert entry["slots"][0]["share"] > 0.5


def test_learned_text_and_a_corrupt_file_left_in_place(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = setup(tmp_path)
    assert main(["learned", "-c", str(config)]) == 0
    out = capsys.readouterr().out
    assert "llama3.1:8b" in out
    assert 'as fixed windows: when = ["mon-fri 08:45-09:30"]' in out
    assert "15 uses seen, 1 found it cold" in out
    (tmp_path / "state" / FILENAME).write_text("{")
    assert main(["learned", "-c", str(config)]) == 0
    assert "no data yet" in capsys.readouterr().out
    assert (tmp_path / "state" / FILENAME).read_text() == "{"  # a reader moves nothing


async def test_check_prints_the_learned_hours(fake: FakeOllama, tmp_path: Path) -> None:
    config = setup(tmp_path, fake.url)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "ollama_keepwarm",
        "check",
        "-c",
        str(config),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "NO_COLOR": "1"},
    )
    out, _ = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0
    text = out.decode()
    assert "learned hours:" in text
    assert "kept mon-fri 08:45-09:30, learned from" in text
