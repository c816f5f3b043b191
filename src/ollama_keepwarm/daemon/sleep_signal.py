"""logind's ``PrepareForSleep`` signal: an instant resume trigger, where D-Bus is there.

The clock comparison in ``clocks.py`` always works but notices a resume only at the next tick;
logind says ``PrepareForSleep(false)`` the moment the machine is back. dbus-fast is an optional
dependency (the ``logind`` extra): without it, or without a reachable system bus (containers,
minimal servers), this quietly does nothing and the clocks carry on alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

__all__ = ["MATCH_RULE", "SleepSignal"]

_log = structlog.get_logger("ollama_keepwarm")
SYSTEM_BUS_SOCKET = "/run/dbus/system_bus_socket"
LOGIN1_PATH = "/org/freedesktop/login1"
LOGIN1_MANAGER = "org.freedesktop.login1.Manager"
MATCH_RULE = (
    f"type='signal',interface='{LOGIN1_MANAGER}',member='PrepareForSleep',path='{LOGIN1_PATH}'"
)


class SleepSignal:
    """Calls ``on_resume`` when logind announces the end of a sleep."""

    def __init__(self, on_resume: Callable[[], None], *, bus_address: str | None = None) -> None:
        self._on_resume = on_resume
        self._bus_address = bus_address
        self._bus: Any = None

    async def start(self) -> bool:
        """Subscribe; False (and a debug line) when dbus-fast or the bus is not available."""
        bus_exists = await asyncio.to_thread(Path(SYSTEM_BUS_SOCKET).exists)
        if self._bus_address is None and not (
            bus_exists or os.environ.get("DBUS_SYSTEM_BUS_ADDRESS")
        ):
            # No system bus here (a container, a minimal server): don't even load dbus-fast.
            _log.debug("logind_signal_unavailable", reason="no system bus")
            return False
        try:
            from dbus_fast import BusType, Message, MessageType
            from dbus_fast.aio import MessageBus
        except ImportError:
            _log.debug("logind_signal_unavailable", reason="dbus-fast is not installed")
            return False
        try:
            bus = await asyncio.wait_for(
                MessageBus(bus_address=self._bus_address, bus_type=BusType.SYSTEM).connect(), 5
            )
            reply = await bus.call(
                Message(
                    destination="org.freedesktop.DBus",
                    path="/org/freedesktop/DBus",
                    interface="org.freedesktop.DBus",
                    member="AddMatch",
                    signature="s",
                    body=[MATCH_RULE],
                )
            )
        except Exception as exc:  # no bus, no permission, bus died: the clocks still work
            _log.debug("logind_signal_unavailable", reason=str(exc) or type(exc).__name__)
            return False
        if reply is None or reply.message_type == MessageType.ERROR:
            _log.debug("logind_signal_unavailable", reason="AddMatch refused")
            bus.disconnect()
            return False

        def handle(message: Any) -> None:
            if (
                message.message_type == MessageType.SIGNAL
                and message.interface == LOGIN1_MANAGER
                and message.member == "PrepareForSleep"
                and message.body
                and message.body[0] is False
            ):
                self._on_resume()

        bus.add_message_handler(handle)
        self._bus = bus
        _log.info("logind_signal_subscribed")
        return True

    def stop(self) -> None:
        """Disconnect from the bus."""
        if self._bus is not None:
            with contextlib.suppress(Exception):
                self._bus.disconnect()
            self._bus = None
