"""Learned hours in the running daemon: the profile file, and a simulated month against the fake.

As in ``test_calendar.py``, the calendar gets a clock of its own (the leases stay on the real
one, as the fake's ``expires_at`` are real); the test moves it through a month with a spring
DST change and asks for a look at each step, as the cron jobs would. Clients are plain HTTP
requests to the fake, with no User-Agent of ours: the keeper sees them only by their traces.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import aiohttp
import structlog

from helpers import eventually, make_config, more_looks, running_keeper
from ollama_keepwarm.core import learned
from ollama_keepwarm.core.config import parse_config
from ollama_keepwarm.daemon.keeper import Keeper
from ollama_keepwarm.daemon.learned import FILENAME, LearnedStore
from ollama_keepwarm.fake import FakeOllama

BERLIN = ZoneInfo("Europe/Berlin")
MONDAY = datetime(2026, 3, 2, 0, 0, tzinfo=BERLIN)  # Berlin moves its clocks on 2026-03-29
BOT = {
    "name": "llama3.1:8b",
    "keep_alive": "1h",
    "when": "learned",
    "after_window": "unload",
}
BOT_CONFIG = parse_config({"models": [BOT]}).models[0]


def listed(fake: FakeOllama) -> bool:
    return any(r.name == "llama3.1:8b" for r in fake.runners())


# -- the file ---------------------------------------------------------------------------------


def test_profiles_survive_a_restart(tmp_path: Path) -> None:
    store = LearnedStore(tmp_path)
    store.adopt([BOT_CONFIG], MONDAY)
    assert store.record(BOT_CONFIG, MONDAY.replace(hour=9), BERLIN, cold=True)
    assert not store.record(BOT_CONFIG, MONDAY.replace(hour=9, minute=5), BERLIN, cold=False)
    store.flush()
    again = LearnedStore(tmp_path)
    again.adopt([BOT_CONFIG], MONDAY + timedelta(days=3))  # a restart: learning goes on
    assert again.profiles == store.profiles
    profile = next(iter(again.profiles.values()))
    assert (profile.since, profile.uses, profile.cold_uses) == (MONDAY, 2, 1)


def test_a_corrupt_file_is_set_aside_with_a_warning(tmp_path: Path) -> None:
    (tmp_path / FILENAME).write_text('{"format": 1, "models": {"x": {"since": ')
    store = LearnedStore(tmp_path)
    with structlog.testing.capture_logs() as logs:
        store.adopt([BOT_CONFIG], MONDAY)
    assert [e["event"] for e in logs] == ["learned_file_set_aside"]
    aside = [p.name for p in tmp_path.iterdir() if p.name.startswith(f"{FILENAME}.corrupt-")]
    assert len(aside) == 1
    assert logs[0]["moved_to"].endswith(aside[0])
    # Learning starts again, in a fresh file.
    assert json.loads((tmp_path / FILENAME).read_text())["models"]
    assert LearnedStore(tmp_path).hours(BOT_CONFIG, BERLIN, MONDAY).learning


def test_a_wrong_profile_is_set_aside_too(tmp_path: Path) -> None:
    bad = {"format": 1, "models": {"x": {"format": 1, "since": "yesterday"}}}
    (tmp_path / FILENAME).write_text(json.dumps(bad))
    with structlog.testing.capture_logs() as logs:
        LearnedStore(tmp_path).load()
    assert logs[0]["event"] == "learned_file_set_aside"
    assert not (tmp_path / FILENAME).exists()


# -- a month against the fake -----------------------------------------------------------------


async def use(keeper: Keeper, session: aiohttp.ClientSession, url: str) -> None:
    """A client's request; then a look, and wait until the keeper counted it."""
    profile = next(iter(keeper.learned.profiles.values()))
    before = profile.uses
    body = {"model": "llama3.1:8b", "prompt": "hello", "stream": False}
    async with session.post(f"{url}/api/generate", json=body) as response:
        assert response.status == 200
    keeper.calendar.fire()
    await eventually(
        lambda: next(iter(keeper.learned.profiles.values())).uses > before,
        what="the use counted",
    )


def model_entry(keeper: Keeper) -> dict[str, object]:
    return keeper.status()["hosts"][0]["models"][0]  # type: ignore[no-any-return]


async def test_a_month_learns_the_workday_and_gives_the_model_back_outside(
    fake: FakeOllama,
) -> None:
    sim = [MONDAY]
    config = make_config(fake.url, [BOT], timezone="Europe/Berlin")
    async with (
        running_keeper(config, calendar_clock=lambda: sim[0], reload_config=lambda: config) as (
            keeper,
            _,
        ),
        aiohttp.ClientSession() as session,
    ):
        await eventually(lambda: listed(fake), what="kept while learning")
        assert model_entry(keeper)["window"]["note"] == "learning (0 days of data)"  # type: ignore[index]
        for week in range(4):
            for day in range(7):
                date = MONDAY + timedelta(days=7 * week + day)
                if week and day < 5:
                    # Learned: warm before the first use, thanks to the lead...
                    sim[0] = date.replace(hour=8, minute=44)
                    keeper.calendar.fire()
                    await eventually(lambda: listed(fake), what=f"warm before {sim[0]}")
                if day < 5:
                    for hour, minute in ((9, 0), (9, 30), (10, 0)):
                        sim[0] = date.replace(hour=hour, minute=minute)
                        await use(keeper, session, fake.url)
                sim[0] = date.replace(hour=12)
                keeper.calendar.fire()
                if week:
                    # ...and given back outside the learned hours, weekends too.
                    await eventually(lambda: not listed(fake), what=f"given back at {sim[0]}")
                else:
                    await eventually(lambda: listed(fake), what=f"kept while learning {sim[0]}")
            if week == 0:
                await keeper.reload()  # a reload keeps the profile and the learning
        profile = next(iter(keeper.learned.profiles.values()))
        assert (profile.uses, profile.cold_uses) == (60, 0)  # every use found it warm
        entry = model_entry(keeper)
        assert entry["learned"]["hours"] == (  # type: ignore[index]
            "kept mon-fri 08:45-10:30, learned from 3 weeks"
        )
        assert entry["window"]["note"] == (  # type: ignore[index]
            "next window Mon 08:45 (kept mon-fri 08:45-10:30, learned from 3 weeks)"
        )
        # A use at night pays a cold start once, and counts from then on.
        sim[0] = datetime(2026, 3, 30, 21, 0, tzinfo=BERLIN)
        keeper.calendar.fire()
        await eventually(lambda: not listed(fake), what="outside at night")
        await use(keeper, session, fake.url)
        # Cold once. (Its load and its end may be seen as two uses: one slot either way.)
        assert next(iter(keeper.learned.profiles.values())).cold_uses == 1
        sim[0] = datetime(2026, 3, 30, 21, 20, tzinfo=BERLIN)
        keeper.calendar.fire()
        await eventually(
            lambda: str(model_entry(keeper)["window"]["note"]).startswith("kept until 21:30"),  # type: ignore[index]
            what="the night's slot kept",
        )
        assert listed(fake)
        metrics = keeper.metrics.exposition().decode()
        assert 'ollama_keepwarm_learned_cold_uses_total{host="' in metrics
        kept = 5 * 105 + 45  # mon-fri 08:45-10:30, and mon 20:45-21:30
        share = learned.kept_share(keeper.calendar.learned_hours(keeper.config.models[0]))
        assert share == kept / (7 * 24 * 60)
    # Written at each new slot and at stop: a restart starts where this one ended.
    again = LearnedStore(Path(config.daemon.state_dir))
    again.load()
    assert again.profiles == keeper.learned.profiles


async def test_our_own_warms_renewals_and_primes_are_never_uses(fake: FakeOllama) -> None:
    """Short leases make the keeper renew every second or so, and a prime follows each load:
    every one of those moves the lease, and none of them is a client's use. A restart of
    Ollama makes the keeper load and prime again."""
    sim = [MONDAY.replace(hour=9)]
    bot = {**BOT, "keep_alive": "2s", "prime": "You are a helpful bot. " * 20}
    config = make_config(fake.url, [bot], timezone="Europe/Berlin")
    async with running_keeper(config, calendar_clock=lambda: sim[0]) as (keeper, _):
        await eventually(lambda: fake.url in keeper.hosts, what="started")
        host = keeper.hosts[fake.url]
        await eventually(lambda: host.primes[BOT_CONFIG.key].primes >= 1, what="primed")
        await more_looks(keeper, 30)
        await fake.restart(down_s=0.3)
        await eventually(lambda: host.primes[BOT_CONFIG.key].primes >= 2, what="primed again")
        await more_looks(keeper, 30)
        warms = sum(st.warms for st in host.states.values())
        assert warms >= 3  # loads and renewals, all ours
        profile = next(iter(keeper.learned.profiles.values()))
        assert profile.uses == 0
