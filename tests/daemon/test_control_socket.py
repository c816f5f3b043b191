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
