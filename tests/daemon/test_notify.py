"""Exact notify datagrams on a real AF_UNIX datagram socket, as systemd would receive them."""

from __future__ import annotations

import os
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ollama_keepwarm.daemon.systemd import (
    NullNotifier,
    SdNotifier,
    make_notifier,
    reloading_message,
    status_message,
    watchdog_interval_s,
)


class Listener:
    """The service manager's end: a bound datagram socket we read messages from."""

    def __init__(self, sock: socket.socket, address: str) -> None:
        self.sock = sock
        self.address = address

    def receive(self) -> bytes:
        return self.sock.recv(4096)

    def pending(self) -> list[bytes]:
        self.sock.setblocking(False)
        try:
            found: list[bytes] = []
            while True:
                try:
                    found.append(self.sock.recv(4096))
                except BlockingIOError:
                    return found
        finally:
            self.sock.setblocking(True)


@pytest.fixture
def listener(monkeypatch: pytest.MonkeyPatch) -> Iterator[Listener]:
    """A socket at a short path (sun_path holds 108 bytes; pytest's tmp_path can be longer)."""
    directory = Path(tempfile.mkdtemp(prefix="okw-", dir="/tmp"))
    path = directory / "n"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    try:
        yield Listener(sock, str(path))
    finally:
        sock.close()
        path.unlink(missing_ok=True)
        directory.rmdir()


def test_make_notifier_picks_sdnotifier_only_under_systemd(listener: Listener) -> None:
    """NOTIFY_SOCKET set gives an SdNotifier; unset or empty gives the NullNotifier."""
    assert isinstance(make_notifier(), SdNotifier)
    assert isinstance(make_notifier({}), NullNotifier)
    assert isinstance(make_notifier({"NOTIFY_SOCKET": ""}), NullNotifier)


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda n: n.ready(), b"READY=1"),
        (lambda n: n.stopping(), b"STOPPING=1"),
        (lambda n: n.watchdog(), b"WATCHDOG=1"),
        (
            lambda n: n.status("3/3 warm; next refresh llama3.1:8b in 4m"),
            b"STATUS=3/3 warm; next refresh llama3.1:8b in 4m",
        ),
    ],
    ids=["ready", "stopping", "watchdog", "status"],
)
def test_each_message_is_one_exact_datagram(
    listener: Listener, call: object, expected: bytes
) -> None:
    """Every notifier call sends exactly one datagram with exactly systemd's wire text."""
    notifier = make_notifier()
    assert callable(call)
    call(notifier)
    assert listener.receive() == expected
    assert listener.pending() == []


def test_reloading_carries_the_monotonic_clock(listener: Listener) -> None:
    """RELOADING=1 comes with MONOTONIC_USEC= read from CLOCK_MONOTONIC at send time."""
    notifier = make_notifier()
    before = time.monotonic_ns() // 1000
    notifier.reloading()
    after = time.monotonic_ns() // 1000
    first, second = listener.receive().split(b"\n")
    assert first == b"RELOADING=1"
    key, _, value = second.partition(b"=")
    assert key == b"MONOTONIC_USEC"
    assert before <= int(value) <= after


def test_reload_sequence_is_reloading_then_ready(listener: Listener) -> None:
    """A reload sends RELOADING=1 then READY=1, in that order, as two datagrams."""
    notifier = make_notifier()
    notifier.reloading()
    notifier.ready()
    assert listener.receive().startswith(b"RELOADING=1\nMONOTONIC_USEC=")
    assert listener.receive() == b"READY=1"


def test_unchanged_status_is_not_resent(listener: Listener) -> None:
    """STATUS goes out when the text changes, not on every call."""
    notifier = make_notifier()
    notifier.status("waiting for Ollama at http://127.0.0.1:11434")
    notifier.status("waiting for Ollama at http://127.0.0.1:11434")
    notifier.status("1/1 warm")
    assert listener.pending() == [
        b"STATUS=waiting for Ollama at http://127.0.0.1:11434",
        b"STATUS=1/1 warm",
    ]


def test_multiline_status_becomes_one_line(listener: Listener) -> None:
    """A newline would end the STATUS field and start a bogus one, so lines are joined."""
    make_notifier().status("2/3 warm\nREADY=1")
    assert listener.receive() == b"STATUS=2/3 warm READY=1"


def test_status_is_utf8_on_the_wire(listener: Listener) -> None:
    """systemd reads the datagram as UTF-8: '3/3 warm · next …' must arrive UTF-8 encoded."""
    make_notifier().status("3/3 warm · next refresh in 4m → ok")
    assert listener.receive() == "STATUS=3/3 warm · next refresh in 4m → ok".encode()


def test_abstract_socket_address(monkeypatch: pytest.MonkeyPatch) -> None:
    """A NOTIFY_SOCKET starting with '@' names Linux's abstract namespace."""
    name = f"okw-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        make_notifier().ready()
        assert sock.recv(4096) == b"READY=1"


def test_a_vanished_socket_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    """A lost datagram (no listener at NOTIFY_SOCKET) must not stop the daemon."""
    monkeypatch.setenv("NOTIFY_SOCKET", "/tmp/okw-no-such-socket")
    notifier = make_notifier()
    notifier.ready()
    notifier.status("x")
    notifier.watchdog()


def test_null_notifier_sends_nothing(listener: Listener) -> None:
    """The NullNotifier stays silent even when a socket is listening."""
    notifier = NullNotifier()
    notifier.ready()
    notifier.reloading()
    notifier.status("x")
    notifier.watchdog()
    notifier.stopping()
    assert listener.pending() == []


def test_message_builders() -> None:
    """The pure builders produce the documented texts."""
    assert status_message("a\nb") == "STATUS=a b"
    assert reloading_message(1_234_567_890) == "RELOADING=1\nMONOTONIC_USEC=1234567"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WATCHDOG_USEC": "30000000"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4242"}, 15.0),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "4243"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
        ({}, None),
    ],
    ids=["half", "our-pid", "other-pid", "zero", "garbage", "unset"],
)
def test_watchdog_interval(environ: dict[str, str], expected: float | None) -> None:
    """WATCHDOG=1 cadence is half of WATCHDOG_USEC, and only for the process it names."""
    assert watchdog_interval_s(environ, pid=4242) == expected
