"""The runner watch: which of Ollama's processes serves which model, and when one ends.

A runner that dies stays listed in ``/api/ps`` until a request reaches it (§4.8), so polling
``/api/ps`` cannot see it; nor can it see a load in flight, or who restarted a runner. The
processes can (§4.9): under systemd Ollama and its runners share ``ollama.service``'s cgroup,
elsewhere (same host, a pod sharing its process namespace) they are the Ollama server's
descendants in ``/proc``, and each runner's command line names its model's blob (and from
v0.30 its load options). This module only observes: it keeps the runner table
(``core/runners.py`` parses and steps it) and calls ``on_change(events, table)`` from the
event loop; what an event means is the plan's.

Where it cannot see (another machine, a pod without ``shareProcessNamespace``, a ``/proc``
mounted with ``hidepid``/systemd's ``ProtectProc=``), the table says so: ``visible`` is false
and ``source`` says why; :func:`unseen` makes that table for a host with no watch at all.

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
import time
import urllib.parse
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol

import structlog

from ollama_keepwarm.core.crash import cgroup_candidates
from ollama_keepwarm.core.runners import (
    FLAVOUR_UNKNOWN,
    HIDDEN,
    ParsedRunner,
    RunnerEvent,
    RunnerTable,
    parse_runner_cmdline,
    proc_limits,
    proc_start_ticks,
    step,
)

__all__ = [
    "CGROUP_RESCAN_S",
    "REREADS",
    "TABLE_RESCAN_S",
    "CgroupPids",
    "CrashWatch",
    "PidSource",
    "ProcessTablePids",
    "RunnerWatch",
    "choose_source",
    "unseen",
]

_log = structlog.get_logger("ollama_keepwarm")

_BOOTTIME = hasattr(time, "CLOCK_BOOTTIME")  # Linux: what /proc/<pid>/stat's start counts
_CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100

CGROUP_RESCAN_S = 0.2
TABLE_RESCAN_S = 1.0
REREADS = 3
"""How many more rescans read a non-runner's command line again (a fork not yet exec'd)."""
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
        """The process listening on the port, else an ``ollama serve``; never ourselves.

        Our own children are not Ollama's runners: an in-process fake Ollama is not watched.
        The name alone is not enough: v0.29's runners are called ``ollama`` too.
        """
        inodes = self._listening_inodes()
        named: int | None = None
        for entry in os.scandir(self._proc):
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            pid = int(entry.name)
            if inodes and self._owns_socket(pid, inodes):
                return pid
            if named is None and self._is_ollama_serve(pid):
                named = pid
        return named

    def _is_ollama_serve(self, pid: int) -> bool:
        try:
            if (self._proc / str(pid) / "comm").read_text().strip() != "ollama":
                return False
            args = (self._proc / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return len(args) > 1 and args[1] == b"serve"

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
        return None, (
            f"no readable cgroup, and no other visible process listens on port {port}: Ollama "
            "may run in another PID namespace (a pod without shareProcessNamespace, a "
            "container) or /proc may hide it (hidepid=, ProtectProc=)"
        )
    return table, "no readable cgroup; Ollama's processes are visible"


class RunnerWatch:
    """Keeps the runner table of a source and calls ``on_change(events, table)``; one task.

    Each rescan reads ``/proc/<pid>/cmdline`` of the pids it has not seen before (a few small
    reads), so a runner is known within a rescan of its start, and its exit is reported at the
    same speed as before (pidfd event, or the cgroup's 0.2 s rescan). A pid that is not a
    runner (``ollama serve``, ``llama-server --list-devices``) is read again at the next
    :data:`REREADS` rescans: a fork shows its parent's command line until it execs. A live pid
    whose command line cannot be read (``/proc`` hides it) is kept as a runner of flavour
    ``unknown``, so its exit is still reported, and the table says it is not visible.
    """

    def __init__(
        self,
        source: PidSource,
        on_change: Callable[[Sequence[RunnerEvent], RunnerTable], None],
        *,
        proc: Path = _PROC,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.source = source
        self._on_change = on_change
        self._proc = proc
        self._clock = clock
        self._known: frozenset[int] = frozenset()
        self._dead: set[int] = set()  # reported through a pidfd, still listed (not yet reaped)
        self._others: dict[int, int] = {}  # not runners (yet): rereads left
        self._first_seen: dict[int, float] = {}  # pid -> when the source first listed it
        self._pidfds: dict[int, int] = {}
        self._task: asyncio.Task[None] | None = None
        self._use_pidfd = isinstance(source, ProcessTablePids) and hasattr(os, "pidfd_open")
        self._table = RunnerTable(True, source.description, (), clock(), _limits(source, proc))
        self.exits = 0
        """Processes seen ending: tests wait on it."""

    @property
    def known(self) -> frozenset[int]:
        """The processes being watched now (runners or not)."""
        return self._known

    @property
    def table(self) -> RunnerTable:
        """The runners alive at the last rescan or exit."""
        return self._table

    def start(self) -> None:
        """Read the runners alive now (no events for them), then watch."""
        self._known = self.source.read() or frozenset()
        self._seen(self._known)
        self._watch(self._known)
        self._advance(self._classify(self._known), report=False)
        self._task = asyncio.get_running_loop().create_task(self._run(), name="runner watch")

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
            self.rescan()

    def rescan(self) -> None:
        """Read the source once: report exits and new runners (the task calls it)."""
        now = self.source.read()
        if now is None:
            return
        self._dead &= now
        gone = self._known - now
        for pid in gone:
            self._unwatch(pid)
            self._first_seen.pop(pid, None)
        self.exits += len(gone)
        new = now - self._known - self._dead
        self._seen(new)
        self._watch(new)
        self._known = now - self._dead
        self._advance(self._classify(new))

    def _seen(self, pids: frozenset[int]) -> None:
        """Note when each new pid was first listed: by then it had started."""
        at = self._clock()
        for pid in pids:
            self._first_seen.setdefault(pid, at)

    def _started_by(self, pids: Sequence[int]) -> dict[int, float]:
        """When each pid had surely started, on our clock: the earlier of its first listing
        and its start time in ``/proc/<pid>/stat`` rounded up to the next clock tick (a
        runner forked the moment before a call of ours was sent is listed only later, once
        it execs and names its model: chaos 0.32.15 seed 238, 0.24.0 seed 413)."""
        boot = time.clock_gettime(time.CLOCK_BOOTTIME) if _BOOTTIME else None
        offset = self._clock() - boot if boot is not None else None
        found: dict[int, float] = {}
        for pid in pids:
            bounds = [self._first_seen[pid]] if pid in self._first_seen else []
            if offset is not None:
                try:
                    ticks = proc_start_ticks((self._proc / str(pid) / "stat").read_bytes())
                except OSError:
                    ticks = None
                if ticks is not None:
                    bounds.append((ticks + 1) / _CLK_TCK + offset)
            if bounds:
                found[pid] = min(bounds)
        return found

    def _classify(self, new: frozenset[int]) -> dict[int, ParsedRunner]:
        """Read the command lines of ``new`` pids, and again those not runners yet."""
        again = [pid for pid in self._others if pid in self._known]
        self._others = {pid: self._others[pid] - 1 for pid in again if self._others[pid] > 1}
        found: dict[int, ParsedRunner] = {}
        for pid in sorted(new | frozenset(again)):
            parsed = self._read(pid)
            if parsed is not None:
                self._others.pop(pid, None)
                found[pid] = parsed
            elif pid in new:
                self._others[pid] = REREADS
        return found

    def _read(self, pid: int) -> ParsedRunner | None:
        try:
            raw = (self._proc / str(pid) / "cmdline").read_bytes()
        except OSError:
            return HIDDEN if _alive(pid) else None
        return parse_runner_cmdline(raw)

    def _advance(self, new: dict[int, ParsedRunner], *, report: bool = True) -> None:
        events, table = step(
            self._table, self._known, new, self._clock(), self._started_by(sorted(new))
        )
        hidden = any(r.flavour == FLAVOUR_UNKNOWN for r in table.runners)
        if hidden and table.visible:
            table = replace(
                table,
                visible=False,
                source=f"{table.source}: pids only, /proc hides their command lines",
            )
        self._table = table
        if events and report:
            try:
                self._on_change(events, table)
            except Exception:
                _log.exception("runner_watch_callback_failed")

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
        self._unwatch(pid)
        self._known = self._known - {pid}
        self._dead.add(pid)
        self.exits += 1
        self._advance({})


CrashWatch = RunnerWatch
"""The name this watch had before it kept the runner table (issue 13)."""


def _alive(pid: int) -> bool:
    """Tell whether ``pid`` exists, even when ``/proc`` hides it (signal 0 answers EPERM)."""
    try:
        os.kill(pid, 0)
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _limits(source: PidSource, proc: Path) -> tuple[str, ...]:
    """What ``source`` cannot see, in words, for the status document."""
    try:
        mountinfo = (proc / "self" / "mountinfo").read_text()
    except OSError:
        mountinfo = ""
    limits = list(proc_limits(mountinfo))
    if isinstance(source, CgroupPids):
        limits.append("an Ollama started outside that cgroup (e.g. by hand)")
    else:
        limits.append("runners orphaned by a killed server (no longer its descendants)")
        if not hasattr(os, "pidfd_open"):
            limits.append("exits at once: no pidfd here, exits show within a 1 s rescan")
    return tuple(limits)


def unseen(why: str) -> RunnerTable:
    """The table of a host whose processes cannot be watched, saying why."""
    return RunnerTable(False, why, (), time.monotonic(), (why,))
