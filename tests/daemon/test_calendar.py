"""Windows in the running daemon: a simulated week with a DST change, against the fake.

The calendar gets a clock of its own (the leases stay on the real one, as the fake's
``expires_at`` are real), and the test plays APScheduler: it moves that clock to the next
fire time of the calendar's own cron jobs and runs the job, as the scheduler would then.
"""

from __future__ import annotations

import asyncio
from datetime import datetime
from zoneinfo import ZoneInfo

from helpers import eventually, make_config, running_keeper
from ollama_keepwarm.core import windows
from ollama_keepwarm.fake import FakeOllama

BERLIN = ZoneInfo("Europe/Berlin")
BOT = {
    "name": "llama3.1:8b",
    "keep_alive": "30s",
    "when": ["mon-fri 08:00-19:00", "sat 10:00-14:00"],
    "after_window": "unload",
    "priority": 10,
}


def until_iso(opening: datetime) -> str:
    end = opening.replace(hour=14 if opening.weekday() == 5 else 19)
    return end.isoformat()


def listed(fake: FakeOllama) -> set[str]:
    return {r.name for r in fake.runners()}


async def test_a_week_with_a_dst_change_loads_at_each_opening_and_unloads_at_each_end(
    fake: FakeOllama,
) -> None:
    sim = [datetime(2025, 3, 28, 12, 0, tzinfo=BERLIN)]  # Friday, inside; DST on Sunday
    config = make_config(fake.url, [BOT], timezone="Europe/Berlin")
    async with running_keeper(
        config, calendar_clock=lambda: sim[0], reload_config=lambda: config
    ) as (keeper, notifier):
        await eventually(lambda: "llama3.1:8b" in listed(fake), what="loaded inside")
        assert len(keeper.calendar._scheduler.get_jobs()) == 18  # 6 windows x open/close/warm
        # The measured 0.25 s load gives a one-minute lead (30 s margin, rounded up).
        seen: list[str] = []
        end = datetime(2025, 4, 1, 9, 0, tzinfo=BERLIN)
        while True:
            nxt = min(
                t
                for job in keeper.calendar.jobs
                if (t := windows.next_fire(job.boundary.trigger, sim[0])) is not None
            )
            if nxt > end:
                break
            kinds = {
                j.boundary.kind
                for j in keeper.calendar.jobs
                if windows.next_fire(j.boundary.trigger, sim[0]) == nxt
            }
            sim[0] = nxt
            keeper.calendar.fire()
            seen.append(f"{nxt:%a %H:%M%z} {'/'.join(sorted(kinds))}")
            if "close" in kinds:
                await eventually(lambda: not listed(fake), what=f"unloaded at {nxt}")
            elif "warm" in kinds:
                await eventually(lambda: "llama3.1:8b" in listed(fake), what=f"warm at {nxt}")
            else:  # the opening: loaded already, by the warm-up the lead started
                assert "llama3.1:8b" in listed(fake), f"not loaded at the opening {nxt}"
                note = "kept until " + ("14:00" if nxt.weekday() == 5 else "19:00")
                want = {"inside": True, "kept": True, "until": until_iso(nxt), "opens": None}
                want["note"] = note
                await eventually(
                    lambda want=want: keeper.status()["hosts"][0]["models"][0]["window"] == want,
                    what=f"inside at {nxt}",
                )
            if nxt == datetime(2025, 3, 31, 12, 0, tzinfo=BERLIN):
                break
        assert seen == [
            "Fri 19:00+0100 close",
            "Sat 09:59+0100 warm",
            "Sat 10:00+0100 open",
            "Sat 14:00+0100 close",
            "Mon 07:59+0200 warm",
            "Mon 08:00+0200 open",
            "Mon 19:00+0200 close",
            "Tue 07:59+0200 warm",
            "Tue 08:00+0200 open",
        ]
        # Outside: held, says when it is back, and /readyz-style counting leaves it out.
        sim[0] = datetime(2025, 4, 1, 20, 0, tzinfo=BERLIN)
        keeper.calendar.fire()
        await eventually(lambda: not listed(fake), what="unloaded after Tuesday")
        await eventually(
            lambda: (
                keeper.hosts[fake.url].decisions[0].reason
                == "outside its window; next window Wed 08:00"
            ),
            what="held outside",
        )
        assert keeper.hosts[fake.url].all_warm
        assert "llama3.1:8b next window Wed 08:00" in notifier.statuses()[-1]


async def test_reload_in_a_window_keeps_the_model_and_a_pause_wins(fake: FakeOllama) -> None:
    sim = [datetime(2025, 3, 31, 12, 0, tzinfo=BERLIN)]  # Monday noon, inside
    config = make_config(fake.url, [BOT], timezone="Europe/Berlin")
    async with running_keeper(
        config, calendar_clock=lambda: sim[0], reload_config=lambda: config
    ) as (keeper, _):
        await eventually(lambda: "llama3.1:8b" in listed(fake), what="loaded inside")
        await keeper.reload()
        await eventually(lambda: keeper.hosts[fake.url].looks > 3, what="looks after reload")
        assert [ld.reason for ld in fake.loads] == ["cold"]  # the reload reloaded nothing
        # A pause wins: the next opening does not resume it.
        await keeper.pause("llama3.1:8b", None, unload=True)
        sim[0] = datetime(2025, 4, 1, 8, 0, tzinfo=BERLIN)
        keeper.calendar.fire()
        looks = keeper.hosts[fake.url].looks
        await eventually(lambda: keeper.hosts[fake.url].looks > looks + 2, what="looks")
        assert "llama3.1:8b" not in listed(fake)
        assert keeper.hosts[fake.url].decisions[0].reason == "paused"
        keeper.resume("llama3.1:8b")
        await eventually(lambda: "llama3.1:8b" in listed(fake), what="loaded after resume")


async def test_a_boundary_job_run_by_the_scheduler_looks_at_once(fake: FakeOllama) -> None:
    """The scheduler runs the calendar's jobs itself: a job's look must happen on the event
    loop (APScheduler runs a plain function in a worker thread, where no loop runs, and the
    look was lost with "coroutine was never awaited"). The poll is an hour here, so only the
    job can explain a new look."""
    config = make_config(
        fake.url, [BOT], timezone="Europe/Berlin", poll_interval="1h", refresh_before="2h"
    )
    async with running_keeper(config, reload_config=lambda: config) as (keeper, _):
        await asyncio.wait_for(keeper.ready.wait(), 10)
        [host] = keeper.hosts.values()
        looks = host.looks
        job = keeper.calendar._scheduler.get_jobs()[0]
        job.modify(next_run_time=datetime.now(BERLIN))
        keeper.calendar._scheduler.wakeup()
        await eventually(lambda: host.looks > looks, what="the job's look")
