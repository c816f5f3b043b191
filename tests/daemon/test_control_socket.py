"""The control socket is private from its first instant, and starting it leaves the umask alone."""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path
from typing import Any

from ollama_keepwarm.daemon.control import SOCKET_MODE, ControlServer


async def _reply(_request: Any) -> dict[str, Any]:
    return {"ok": True}


async def test_starting_the_socket_never_changes_the_umask_under_other_tasks(
    tmp_path: Path,
) -> None:
    """The umask is process-wide: other tasks running while the socket starts (a state file,
    a test's files) must see the usual one, or they create files nobody else can read."""
    usual = os.umask(0o022)
    os.umask(usual)
    seen: list[int] = []
    server = ControlServer(tmp_path / "c.sock", _reply)

    async def watch() -> None:
        while not done.is_set():
            current = os.umask(0o022)
            os.umask(current)
            seen.append(current)
            await asyncio.sleep(0)

    done = asyncio.Event()
    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0)
    try:
        assert await server.start()
    finally:
        done.set()
        await watcher
    try:
        assert seen, "the watcher never ran"
        assert set(seen) == {usual}
        mode = stat.S_IMODE((tmp_path / "c.sock").stat().st_mode)
        assert mode == SOCKET_MODE
    finally:
        await server.stop()


async def test_a_command_cut_short_by_shutdown_leaves_no_unretrieved_exception(
    tmp_path: Path,
) -> None:
    """A daemon told to stop while a command runs (``pause --unload`` waiting for ps) cancels
    that command's task; on Python 3.11 asyncio's stream callback then called
    ``task.exception()`` on it and logged "Exception in callback" with a traceback."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    entered, never = asyncio.Event(), asyncio.Event()

    async def slow(_request: Any) -> dict[str, Any]:
        entered.set()
        await never.wait()
        return {"ok": True}

    server = ControlServer(tmp_path / "c.sock", slow)
    assert await server.start()
    try:
        _reader, writer = await asyncio.open_unix_connection(str(tmp_path / "c.sock"))
        writer.write(b'{"command": "pause"}\n')
        await writer.drain()
        await asyncio.wait_for(entered.wait(), timeout=10)
        serving = [t for t in asyncio.all_tasks() if "_serve" in repr(t.get_coro())]
        assert len(serving) == 1
        serving[0].cancel()
        await asyncio.wait({serving[0]}, timeout=10)
        for _ in range(3):  # the done-callbacks run on the next iterations of the loop
            await asyncio.sleep(0)
        writer.close()
    finally:
        await server.stop()
        loop.set_exception_handler(previous)
    assert errors == []
