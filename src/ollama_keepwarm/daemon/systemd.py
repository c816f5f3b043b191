"""systemd's notify protocol: READY, STATUS, WATCHDOG, RELOADING, STOPPING.

The daemon talks to a :class:`Notifier` and never asks whether systemd is there: outside systemd
(no ``NOTIFY_SOCKET``) it gets a :class:`NullNotifier` that does nothing, in the spirit of
uvicorn's ``LifespanOff``. The wire format is built by pure functions so tests can assert on exact
datagrams; sending is ``sdnotify``'s job.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Protocol

import sdnotify
import structlog

__all__ = [
    "Notifier",
    "NullNotifier",
    "SdNotifier",
    "make_notifier",
    "reloading_message",
    "status_message",
    "watchdog_interval_s",
]

_log = structlog.get_logger(__name__)


class Notifier(Protocol):
    """What the daemon tells its service manager."""

    def ready(self) -> None:
        """Say start-up (or a reload) is complete."""

    def reloading(self) -> None:
        """Say a configuration reload has begun."""

    def stopping(self) -> None:
        """Say shutdown has begun."""

    def status(self, text: str) -> None:
        """Replace the one-line human status shown by ``systemctl status``."""

    def watchdog(self) -> None:
        """Say the event loop is alive."""


class NullNotifier:
    """Notifier for life outside systemd: every message is dropped."""

    def ready(self) -> None:
        """Do nothing."""

    def reloading(self) -> None:
        """Do nothing."""

    def stopping(self) -> None:
        """Do nothing."""

    def status(self, text: str) -> None:
        """Do nothing."""

    def watchdog(self) -> None:
        """Do nothing."""


def status_message(text: str) -> str:
    """Build a ``STATUS=`` datagram; newlines would end the field, so they become spaces."""
    return "STATUS=" + " ".join(text.splitlines())


def reloading_message(monotonic_ns: int) -> str:
    """Build the ``RELOADING=1`` datagram that ``Type=notify-reload`` requires (systemd 253+)."""
    return f"RELOADING=1\nMONOTONIC_USEC={monotonic_ns // 1000}"


class SdNotifier:
    """Notifier that sends datagrams to ``$NOTIFY_SOCKET`` through ``sdnotify``."""

    def __init__(self) -> None:
        self._socket = sdnotify.SystemdNotifier()
        self._last_status = ""

    def _send(self, message: str) -> None:
        # sdnotify connects (abstract sockets included) but encodes as Latin-1, which would
        # garble a STATUS line for systemd (it expects UTF-8); so we send the bytes ourselves.
        # A lost datagram must never stop the daemon.
        sock = self._socket.socket
        if sock is None:
            return
        try:
            sock.sendall(message.encode())
        except OSError as exc:
            _log.debug("notify_failed", error=str(exc))

    def ready(self) -> None:
        """Send ``READY=1``."""
        self._send("READY=1")

    def reloading(self) -> None:
        """Send ``RELOADING=1`` with the monotonic timestamp systemd asks for."""
        self._send(reloading_message(time.monotonic_ns()))

    def stopping(self) -> None:
        """Send ``STOPPING=1``."""
        self._send("STOPPING=1")

    def status(self, text: str) -> None:
        """Send ``STATUS=...`` when the line changed (it is polled by humans, not a heartbeat)."""
        if text != self._last_status:
            self._last_status = text
            self._send(status_message(text))

    def watchdog(self) -> None:
        """Send ``WATCHDOG=1``."""
        self._send("WATCHDOG=1")


def make_notifier(environ: Mapping[str, str] | None = None) -> Notifier:
    """Return an :class:`SdNotifier` under systemd, else a :class:`NullNotifier`."""
    env = os.environ if environ is None else environ
    if env.get("NOTIFY_SOCKET"):
        return SdNotifier()
    return NullNotifier()


def watchdog_interval_s(
    environ: Mapping[str, str] | None = None, pid: int | None = None
) -> float | None:
    """Return how often to send ``WATCHDOG=1`` (half of ``WATCHDOG_USEC``), or None when off.

    ``WATCHDOG_PID``, when set, names the process the watchdog is meant for; a child that inherited
    the environment must stay quiet (sd_watchdog_enabled(3)).
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    owner = env.get("WATCHDOG_PID", "")
    if owner and owner != str(os.getpid() if pid is None else pid):
        return None
    return int(usec) / 2_000_000
