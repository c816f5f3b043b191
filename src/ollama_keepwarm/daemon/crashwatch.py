"""The crash watch: see a process of Ollama's end the moment it does, from the process side.

A runner that dies stays listed in ``/api/ps`` until a request reaches it (§4.8), so polling
``/api/ps`` cannot see it. The processes can: under systemd Ollama and its runners share
``ollama.service``'s cgroup, elsewhere (same host, a pod sharing its process namespace) they
are the Ollama server's descendants in ``/proc``. This module only observes and calls
``on_exit``; what an exit means is ``core/crash.py``'s.

How, and why so:

* inotify does not work on ``cgroup.procs``, and ``cgroup.events`` only says "empty or not".
  So a :class:`CgroupPids` source is read every :data:`CGROUP_RESCAN_S` (0.2 s): one small
  kernel file (plus any child cgroups'), well inside the 0.5 s detection goal.
* The process table costs a scan of ``/proc`` to find descendants, too much to do five times
  a second on a busy host. So :class:`ProcessTablePids` is rescanned every
  :data:`TABLE_RESCAN_S` (1 s) to learn new runners, and each known process is watched with a
  pidfd (Linux 5.3+) that the event loop reads: its exit is an event, not a poll. Without
  pidfds the rescan's set difference reports exits, within that second.
* Everything runs on the event loop (no thread); a rescan is a few file reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import structlog

from ollama_keepwarm.core.crash import cgroup_candidates

__all__ = [
    "CGROUP_RESCAN_S",
    "TABLE_RESCAN_S",
    "CgroupPids",
    "CrashWatch",
    "PidSource",
    "ProcessTablePids",
    "choose_source",
]

_log = structlog.get_logger("ollama_keepwarm")

CGROUP_RESCAN_S = 0.2
TABLE_RESCAN_S = 1.0
DEFAULT_UNIT = "ollama.service"
_PROC = Path("/proc")


class PidSource(Protocol):
    """Where Ollama's processes are listed."""

    @property
    def description(self) -> str: ...
    @property
    def rescan_s(self) -> float: ...
    def read(self) -> frozenset[int] | None:
        """Return the pids now (``None``: cannot tell right now, e.g. the server is away)."""
        ...


class CgroupPids:
    """The processes of one cgroup directory and its children (any controller, v1 or v2)."""

    rescan_s = CGROUP_RESCAN_S

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"cgroup {path}"

    def read(self) -> frozenset[int] | None:
        pids: set[int] = set()
        try:
            for directory, _subdirs, files in os.walk(self.path):
                if "cgroup.procs" in files:
                    text = (Path(directory) / "cgroup.procs").read_text()
                    pids.update(int(word) for word in text.split())
        except (OSError, ValueError):
            return None
        if not (self.path / "cgroup.procs").exists():
            return None
        return frozenset(pids)


class ProcessTablePids:
    """The Ollama server's descendants, the server found by its listening port or its name."""

    rescan_s = TABLE_RESCAN_S

    def __init__(self, port: int, proc: Path = _PROC) -> None:
        self.port = port
        self._proc = proc
        self.server: int | None = None
        self.description = f"process table (the server listening on port {port})"

    def read(self) -> frozenset[int] | None:
        if self.server is None or not (self._proc / str(self.server)).exists():
            self.server = self._find_server()
            if self.server is None:
                return None
        parents = self._parents()
        found: set[int] = set()
        frontier = [self.server]
        while frontier:
            parent = frontier.pop()
            children = [pid for pid, ppid in parents.items() if ppid == parent]
            found.update(children)
            frontier.extend(children)
        return frozenset(found)

    def _parents(self) -> dict[int, int]:
        parents: dict[int, int] = {}
        for entry in os.scandir(self._proc):
            if not entry.name.isdigit():
                continue
            try:
                stat = (self._proc / entry.name / "stat").read_bytes()
                # pid (comm) state ppid ...: comm may hold spaces and parentheses.
                parents[int(entry.name)] = int(stat[stat.rindex(b")") + 2 :].split()[1])
            except (OSError, ValueError, IndexError):
                continue
        return parents

    def _find_server(self) -> int | None:
        """The process listening on the port, else one called ``ollama``; never ourselves.

        Our own children are not Ollama's runners: an in-process fake Ollama is not watched.
        """
        inodes = self._listening_inodes()
        named: int | None = None
        for entry in os.scandir(self._proc):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            pid = int(entry.name)
            if inodes and self._owns_socket(pid, inodes):
                return pid
            with contextlib.suppress(OSError):
                if named is None and (self._proc / entry.name / "comm").read_text().strip() in {
                    "ollama"
                }:
                    named = pid
        return named

    def _listening_inodes(self) -> set[str]:
        inodes: set[str] = set()
        for table in ("tcp", "tcp6"):
            with contextlib.suppress(OSError):
                for line in (self._proc / "net" / table).read_text().splitlines()[1:]:
                    fields = line.split()
                    listening = len(fields) > 9 and fields[3] == "0A"
                    if listening and int(fields[1].rsplit(":", 1)[1], 16) == self.port:
                        inodes.add(f"socket:[{fields[9]}]")
        return inodes

    def _owns_socket(self, pid: int, inodes: set[str]) -> bool:
        try:
            with os.scandir(self._proc / str(pid) / "fd") as fds:
                for fd in fds:
                    with contextlib.suppress(OSError):
                        if str(Path(fd.path).readlink()) in inodes:
                            return True
        except OSError:
            return False
        return False


def _is_local(host_url: str) -> tuple[bool, int]:
    parsed = urllib.parse.urlsplit(host_url)
    name = parsed.hostname or ""
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    if name == "localhost":
        return True, port
    try:
        return ipaddress.ip_address(name).is_loopback, port
    except ValueError:
        return False, port


def _unit_cgroup(unit: str) -> Path | None:
    try:
        self_cgroup = (_PROC / "self" / "cgroup").read_text()
        mountinfo = (_PROC / "self" / "mountinfo").read_text()
    except OSError:
        return None
    for candidate in cgroup_candidates(self_cgroup, mountinfo, unit):
        path = Path(candidate)
        if os.access(path / "cgroup.procs", os.R_OK):
            return path
    return None


def choose_source(
    setting: str, host_url: str, *, default_host: bool
) -> tuple[PidSource | None, str]:
    """Pick where to watch ``host_url``'s processes; return it (or ``None``) and why.

    ``setting`` is ``[ollama] cgroup``. It names the cgroup of ``[ollama] host`` only
    (``default_host``); another host is watched through the process table if it is local.
    """
    if setting == "":
        return None, 'turned off ([ollama] cgroup = "")'
    if setting.startswith("/") and default_host:
        path = Path(setting)
        if not os.access(path / "cgroup.procs", os.R_OK):
            return None, f"cannot read {path / 'cgroup.procs'}"
        return CgroupPids(path), "configured"
    local, port = _is_local(host_url)
    if default_host:
        unit = setting if setting.endswith(".service") else DEFAULT_UNIT
        found = _unit_cgroup(unit)
        if found is not None:
            return CgroupPids(found), f"the cgroup of {unit}"
    if not local:
        return None, "Ollama is on another machine: no process of it is visible"
    table = ProcessTablePids(port)
    if table.read() is None:
        return None, f"no readable cgroup, and no visible process listens on port {port}"
    return table, "no readable cgroup; Ollama's processes are visible"


class CrashWatch:
    """Calls ``on_exit(pids)`` when processes of the source end; runs as one asyncio task."""

    def __init__(self, source: PidSource, on_exit: Callable[[frozenset[int]], None]) -> None:
        self.source = source
        self._on_exit = on_exit
        self._known: frozenset[int] = frozenset()
        self._dead: set[int] = set()  # reported through a pidfd, still listed (not yet reaped)
        self._pidfds: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._use_pidfd = isinstance(source, ProcessTablePids) and hasattr(os, "pidfd_open")
        self.exits = 0
        """Processes seen ending: tests wait on it."""

    @property
    def known(self) -> frozenset[int]:
        """The processes being watched now."""
        return self._known

    def start(self) -> None:
        """Start watching."""
        self._known = self.source.read() or frozenset()
        self._watch(self._known)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="crash watch")

    async def stop(self) -> None:
        """Stop watching and close every pidfd."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for pid in list(self._pidfds):
            self._unwatch(pid)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.source.rescan_s)
            now = self.source.read()
            if now is None:
                continue
            self._dead &= now
            self._gone(self._known - now)
            self._watch(now - self._known - self._dead)
            self._known = now - self._dead

    def _gone(self, pids: frozenset[int]) -> None:
        for pid in pids:
            self._unwatch(pid)
        if pids:
            self.exits += len(pids)
            try:
                self._on_exit(pids)
            except Exception:
                _log.exception("crash_watch_callback_failed")

    def _watch(self, pids: frozenset[int]) -> None:
        if not self._use_pidfd:
            return
        loop = asyncio.get_running_loop()
        for pid in pids:
            try:
                fd = os.pidfd_open(pid)
            except OSError:
                continue  # already gone (the next rescan reports it) or not allowed
            self._pidfds[pid] = fd
            loop.add_reader(fd, self._pidfd_ready, pid)

    def _unwatch(self, pid: int) -> None:
        fd = self._pidfds.pop(pid, None)
        if fd is not None:
            asyncio.get_running_loop().remove_reader(fd)
            os.close(fd)

    def _pidfd_ready(self, pid: int) -> None:
        self._known = self._known - {pid}
        self._dead.add(pid)
        self._gone(frozenset({pid}))
