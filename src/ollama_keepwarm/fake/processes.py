"""Real child processes for the fake's runners, so a test can kill one as the OOM killer would.

Opt-in (``FakeOllama(runner_processes=True)``): every other test runs without spawning. Each
loaded runner gets a ``sleep infinity`` child, started when its load ends and killed when it is
unloaded, or when the server stops or restarts (a clean stop kills every runner, §4.8). A child
that dies otherwise (SIGKILL from a test, ``/_fake/crash``) marks its runner crashed: it stays
listed, unchanged, and the next request for it reloads it, as in Ollama.

The children go into a cgroup the fake creates when it can (root, a writable cgroup v2 tree: a
child of the fake's own cgroup), so the keeper's cgroup watch can be pointed at it; else each
is its own process group, found by the keeper as a descendant of the process listening on the
fake's port. :attr:`RunnerProcesses.cgroup` says which (``None``: no cgroup).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
from collections.abc import Callable
from pathlib import Path

__all__ = ["RunnerProcesses", "own_cgroup_v2"]

_COMMAND = ("sleep", "infinity")
_serial = itertools.count()


def own_cgroup_v2(proc: Path = Path("/proc")) -> Path | None:
    """This process's cgroup v2 directory, if a cgroup2 hierarchy is mounted."""
    try:
        self_cgroup = (proc / "self" / "cgroup").read_text()
        mountinfo = (proc / "self" / "mountinfo").read_text()
    except OSError:
        return None
    path = next((line[3:] for line in self_cgroup.splitlines() if line.startswith("0::")), None)
    if path is None:
        return None
    for line in mountinfo.splitlines():
        if " - cgroup2 " in line:
            fields = line.split()
            root, mount_point = fields[3], fields[4]
            if root != "/" and path.startswith(root):
                path = path[len(root) :] or "/"
            return Path(mount_point + path.rstrip("/"))
    return None


def _make_cgroup() -> Path | None:
    parent = own_cgroup_v2()
    if parent is None:
        return None
    path = parent / f"okw-fake-{os.getpid()}-{next(_serial)}"
    try:
        path.mkdir()
    except OSError:
        return None
    return path


class RunnerProcesses:
    """The children standing for runners, keyed by the runner's weights blob."""

    def __init__(self, *, use_cgroup: bool = True) -> None:
        self.cgroup = _make_cgroup() if use_cgroup else None
        self._children: dict[str, asyncio.subprocess.Process] = {}
        self._stopping: set[int] = set()
        self._waiters: set[asyncio.Task[None]] = set()

    def pid(self, key: str) -> int | None:
        """The pid of the runner ``key``'s child, if it has one alive."""
        child = self._children.get(key)
        return child.pid if child is not None and child.returncode is None else None

    def dead(self, key: str) -> bool:
        """Tell whether ``key``'s child has exited, even if our wait has not run yet.

        Ollama's health ping of a dead runner fails at once (nothing listens any more), so the
        fake must not serve a request from a child that died a moment ago: it asks the kernel.
        """
        child = self._children.get(key)
        if child is None:
            return False  # no child was started for it (or it was stopped on purpose)
        if child.returncode is not None:
            return True
        try:
            stat = Path(f"/proc/{child.pid}/stat").read_text()
        except OSError:
            return True
        return stat.rsplit(")", 1)[1].split()[0] in {"Z", "X"}

    def pids(self) -> dict[str, int]:
        """Every live child's pid, by runner key."""
        return {k: c.pid for k, c in self._children.items() if c.returncode is None}

    async def start(self, key: str, on_death: Callable[[], None]) -> int:
        """Start ``key``'s child; ``on_death()`` runs if it dies without :meth:`stop`."""
        child = await asyncio.create_subprocess_exec(
            *_COMMAND,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
            start_new_session=True,  # its own process group, so a test can kill just it
        )
        if self.cgroup is not None:
            try:
                (self.cgroup / "cgroup.procs").write_text(str(child.pid))
            except OSError:
                self.cgroup = None  # e.g. a delegated tree we may create but not move into
        self._children[key] = child
        waiter = asyncio.get_running_loop().create_task(self._wait(key, child, on_death))
        self._waiters.add(waiter)
        waiter.add_done_callback(self._waiters.discard)
        return child.pid

    def kill(self, key: str) -> bool:
        """SIGKILL ``key``'s child, as the OOM killer would; return whether one was alive."""
        pid = self.pid(key)
        if pid is None:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        return True

    def stop(self, key: str) -> None:
        """Kill ``key``'s child because its runner is unloaded (not a crash)."""
        child = self._children.pop(key, None)
        if child is not None and child.returncode is None:
            self._stopping.add(child.pid)
            with contextlib.suppress(ProcessLookupError):
                child.kill()

    def stop_all(self) -> None:
        """Kill every child: the server stops, and a clean stop kills its runners (§4.8)."""
        for key in list(self._children):
            self.stop(key)

    async def close(self) -> None:
        """Kill every child, wait for them, and remove the cgroup."""
        self.stop_all()
        await asyncio.gather(*self._waiters, return_exceptions=True)
        if self.cgroup is not None:
            with contextlib.suppress(OSError):
                self.cgroup.rmdir()

    async def _wait(
        self, key: str, child: asyncio.subprocess.Process, on_death: Callable[[], None]
    ) -> None:
        await child.wait()
        if child.pid in self._stopping:
            self._stopping.discard(child.pid)
            return
        on_death()
