"""logind's PrepareForSleep signal, on a private dbus-daemon with a stand-in for logind."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from helpers import FAST_FAKE, eventually, make_config, running_keeper
from ollama_keepwarm.daemon import keeper as keeper_module
from ollama_keepwarm.daemon.clocks import ManualClocks
from ollama_keepwarm.daemon.sleep_signal import LOGIN1_MANAGER, LOGIN1_PATH, SleepSignal
from ollama_keepwarm.fake import FakeOllama

dbus_fast = pytest.importorskip("dbus_fast")
if shutil.which("dbus-daemon") is None:
    pytest.skip("dbus-daemon is not installed", allow_module_level=True)

from dbus_fast import Message  # noqa: E402
from dbus_fast.aio import MessageBus  # noqa: E402


@pytest.fixture(name="bus_address")
async def _bus_address() -> AsyncIterator[str]:
    """A private message bus (session policy: anyone may listen and signal)."""
    daemon = await asyncio.create_subprocess_exec(
        "dbus-daemon", "--session", "--nofork", "--print-address", stdout=asyncio.subprocess.PIPE
    )
    assert daemon.stdout is not None
    address = (await asyncio.wait_for(daemon.stdout.readline(), 10)).decode().strip()
    yield address
    daemon.terminate()
    await daemon.wait()


async def prepare_for_sleep(address: str, going_to_sleep: bool) -> None:
    """Emit what logind emits around a suspend."""
    bus = await MessageBus(bus_address=address).connect()
    await bus.send(
        Message.new_signal(LOGIN1_PATH, LOGIN1_MANAGER, "PrepareForSleep", "b", [going_to_sleep])
    )
    bus.disconnect()


async def test_resume_signal_calls_back_only_on_wake(bus_address: str) -> None:
    """PrepareForSleep(true) is ignored; PrepareForSleep(false) means we are back."""
    woken: list[bool] = []
    signal = SleepSignal(lambda: woken.append(True), bus_address=bus_address)
    assert await signal.start()
    try:
        await prepare_for_sleep(bus_address, True)
        await prepare_for_sleep(bus_address, False)
        await eventually(lambda: woken, what="the resume callback")
        assert woken == [True]
    finally:
        signal.stop()


async def test_no_bus_is_not_an_error() -> None:
    """Without a reachable bus the signal is simply not used."""
    signal = SleepSignal(lambda: None, bus_address="unix:path=/nonexistent/bus")
    assert await signal.start() is False


async def test_keeper_refreshes_on_logind_resume(
    bus_address: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A logind resume alone refreshes every model at once; one wake-up seen by both the
    signal and the clock gap is counted exactly once: not twice, and not never."""
    monkeypatch.setattr(keeper_module, "RESUME_DEDUP_S", 1.0)  # the window, shortened
    clocks = ManualClocks()

    def generates(fake: FakeOllama) -> int:
        return len([r for r in fake.requests if r.path == "/api/generate"])

    async def window_passed() -> None:
        start = clocks.monotonic()
        await eventually(lambda: clocks.monotonic() - start > 1.5, what="the dedup window")

    async with FakeOllama(**FAST_FAKE) as fake:
        config = make_config(
            fake.url, [{"name": "llama3.1:8b", "keep_alive": "1h"}], resume_threshold="1s"
        )
        with capture_logs() as logs:
            async with running_keeper(config, clocks=clocks, dbus_address=bus_address) as (
                keeper,
                _,
            ):
                await asyncio.wait_for(keeper.ready.wait(), 10)
                before = generates(fake)
                await prepare_for_sleep(bus_address, False)  # the clocks saw nothing
                await eventually(
                    lambda: generates(fake) > before, within=3, what="a refresh after the signal"
                )
                assert keeper.resumes == 1
                await window_passed()

                # One wake-up reported by the clock gap first, then by the signal.
                clocks.suspend(600)
                await eventually(lambda: keeper.resumes >= 2, within=3, what="the clock's report")
                await prepare_for_sleep(bus_address, False)  # within the window: the same one
                await window_passed()
                # One wake-up reported by the signal first (it consumes the clock gap).
                clocks.suspend(600)
                await prepare_for_sleep(bus_address, False)
                await eventually(lambda: keeper.resumes >= 3, within=3, what="the third wake")
                await window_passed()  # a late second report would be counted by now

                # A last wake-up, signal only: once it is counted, every earlier report has
                # been handled (one bus, in order), so the count below is final.
                await prepare_for_sleep(bus_address, False)
                await eventually(lambda: keeper.resumes >= 4, within=3, what="the last wake")
                assert keeper.resumes == 4
    resumed = [e["source"] for e in logs if e["event"] == "resumed_from_suspend"]
    assert resumed[:2] == ["logind", "clocks"]
    assert len(resumed) == 4
