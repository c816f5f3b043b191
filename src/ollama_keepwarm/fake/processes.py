"""Real child processes for the fake's runners, with Ollama's argv, to kill as the OOM killer would.

Opt-in (``FakeOllama(runner_processes=True)``): every other test runs without spawning. Each
runner gets a child started when its load *starts* (a load in flight is a process that
``/api/ps`` does not list yet, §4.9) and killed when the load fails or the runner is unloaded,
or when the server stops or restarts (a clean stop kills every runner, §4.8). A child that dies
otherwise (SIGKILL from a test, ``/_fake/crash``) marks its runner crashed: it stays listed,
unchanged, and the next request for it reloads it, as in Ollama.

Each child's ``/proc/<pid>/cmdline`` is the argv the imitated version gives its runner
(:func:`runner_argv`), byte for byte, argv[0] included, and its ``comm`` is the real one
(``ollama`` or ``llama-server``), so the keeper's runner table reads the fake as it reads
Ollama. How, with no compiler and no dependency: the child is ``python -S -c <launcher>
<padding>``, the padding sized so that its argument area is exactly as long as the wanted
argv. It overwrites that area in place (``ctypes.memmove`` to ``arg_start`` from
``/proc/self/stat``: the kernel shows ``[arg_start, arg_end)`` as it is when its last byte is
a NUL, see ``proc_pid_cmdline(5)``), sets its name with ``prctl(PR_SET_NAME)``, says so on
stdout and blocks on stdin (so it also ends if the fake dies). :meth:`RunnerProcesses.start`
returns only after that, and only then moves it into the cgroup: the keeper's cgroup watch
never sees the python command line. A process-table watcher may, for a few milliseconds; it
reads a not-yet-runner again at its next rescan, as it must for a real fork before its exec.

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
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from ollama_keepwarm.fake.options import LoadOptions
from ollama_keepwarm.fake.versions import Behaviour, parse_version

__all__ = ["LLAMA_SERVER_BIN", "OLLAMA_BIN", "RunnerProcesses", "own_cgroup_v2", "runner_argv"]

OLLAMA_BIN = "/usr/local/bin/ollama"
"""Where Ollama's install script puts the program (v0.29 and earlier run ``ollama runner``)."""
LLAMA_SERVER_BIN = "/usr/local/lib/ollama/llama-server"
"""Where it puts llama-server (v0.30+ runs it for each model)."""

_READY_TIMEOUT_S = 30.0
_CHILD = """
import ctypes, sys
target = bytes.fromhex(sys.stdin.buffer.readline().decode())
name = bytes.fromhex(sys.stdin.buffer.readline().decode())
stat = open("/proc/self/stat", "rb").read()
fields = stat[stat.rindex(b")") + 2 :].split()
start, end = int(fields[45]), int(fields[46])  # arg_start, arg_end: fields 48 and 49
ctypes.memmove(start, target.ljust(end - start, b"\\0")[: end - start], end - start)
ctypes.CDLL(None).prctl(15, name, 0, 0, 0)  # PR_SET_NAME: comm, as the real program's
sys.stdout.write("ready\\n")
sys.stdout.flush()
sys.stdin.buffer.read()
"""
_LAUNCHER = "import os;exec(os.environ['OKW_FAKE_RUNNER'])"
_serial = itertools.count()


def _free_port() -> int:
    """A free local port, chosen as Ollama chooses its runners' (listen on :0, close)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def runner_argv(
    behaviour: Behaviour,
    *,
    blob_path: str,
    port: int,
    options: LoadOptions,
    parallel: int,
    embedding: bool,
    on_cpu: bool,
) -> tuple[str, ...]:
    """The argv Ollama of ``behaviour``'s version starts a runner with (reference §4.9).

    Up to v0.29: ``ollama runner --model <blob> --port N``. From v0.30, v0.32.15's
    ``startLlamaServer`` (``llm/llama_server.go``), with what the fake models: the context
    for all slots, the log flags, ``use_mmap`` off (``--no-mmap`` before v0.32.6, then
    ``--load-mode none``), flash attention (off on a CPU), the batch, an explicit ``num_gpu``,
    ``num_thread`` and ``main_gpu``, and ``--context-shift`` when the runner shifts.
    """
    if not behaviour.checks_context_shift:  # every v0.30 flag changed together: the old runner
        return (OLLAMA_BIN, "runner", "--model", blob_path, "--port", str(port))
    args = [
        LLAMA_SERVER_BIN, "--model", blob_path, "--port", str(port), "--host", "127.0.0.1",
        "--no-webui", "--offline", "-c", str(options.num_ctx * parallel), "-np", str(parallel),
        "--log-verbosity", "4", "--no-log-prefix", "--no-log-timestamps",
    ]  # fmt: skip
    if options.use_mmap is False:
        version = parse_version(behaviour.version)
        load_mode = version >= (0, 32, 6) or version == (0, 0, 0)
        args += ["--load-mode", "none"] if load_mode else ["--no-mmap"]
    args += ["--flash-attn", "off" if on_cpu else "auto"]
    if embedding:
        args.append("--embedding")
        batch = min(options.num_batch, options.num_ctx * parallel)
    else:
        batch = options.num_batch
    if batch > 0:
        args += ["-b", str(batch), "-ub", str(batch)]
    if options.num_gpu >= 0:
        args += ["-ngl", str(options.num_gpu)]
    if options.num_thread > 0:
        args += ["-t", str(options.num_thread)]
    if options.main_gpu is not None:
        args += ["--split-mode", "none", "--main-gpu", str(options.main_gpu)]
    if options.context_shift:
        args.append("--context-shift")
    return tuple(args)


def _cmdline(argv: Sequence[str]) -> bytes:
    return b"".join(arg.encode() + b"\0" for arg in argv)


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
        self._detached: set[asyncio.subprocess.Process] = set()

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

    @staticmethod
    def free_port() -> int:
        """A port for a runner's ``--port`` (nothing listens on it: the fake has no runner HTTP)."""
        return _free_port()

    async def start(self, key: str, on_death: Callable[[], None], argv: Sequence[str]) -> int:
        """Start ``key``'s child with ``argv`` as its command line; return its pid.

        ``on_death()`` runs if it dies without :meth:`stop`. Returns once ``/proc/<pid>/cmdline``
        says ``argv`` (see the module docstring).
        """
        target = _cmdline(argv)
        head = [sys.executable, "-S", "-c", _LAUNCHER]
        room = len(target) - len(_cmdline(head)) - 1  # the padding argument, without its NUL
        child = await asyncio.create_subprocess_exec(
            *head,
            "x" * max(room, 1),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "OKW_FAKE_RUNNER": _CHILD},
            start_new_session=True,  # its own process group, so a test can kill just it
        )
        assert child.stdin is not None
        assert child.stdout is not None
        name = Path(argv[0]).name[:15].encode()
        child.stdin.write(target.hex().encode() + b"\n" + name.hex().encode() + b"\n")
        try:
            await child.stdin.drain()
            # Not asyncio.wait_for: before Python 3.12 it returns a read that completes as
            # the task is cancelled (the server stopping kills this child), losing the
            # cancellation; the scheduler's loop then never ended (chaos 0.24.0 seed 383).
            async with asyncio.timeout(_READY_TIMEOUT_S):
                ready = await child.stdout.readline()
        except (OSError, TimeoutError):
            ready = b""
        if ready != b"ready\n":
            with contextlib.suppress(ProcessLookupError):
                child.kill()
            await child.wait()
            raise RuntimeError(f"the fake runner for {argv[0]} did not start")
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
        child = self.detach(key)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()

    def detach(self, key: str) -> asyncio.subprocess.Process | None:
        """Take ``key``'s child out of the table, still running, to :meth:`end` it soon.

        Its runner is being unloaded, so its death is no crash, and a new load of the same
        model gets a child of its own meanwhile. :meth:`stop_all` still kills it.
        """
        child = self._children.pop(key, None)
        if child is None or child.returncode is not None:
            return None
        self._stopping.add(child.pid)
        self._detached.add(child)
        return child

    async def end(self, child: asyncio.subprocess.Process) -> None:
        """Kill a detached child and return once it has exited (Ollama waits for it too)."""
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()

    def stop_all(self) -> None:
        """Kill every child: the server stops, and a clean stop kills its runners (§4.8)."""
        for key in list(self._children):
            self.stop(key)
        for child in self._detached:
            with contextlib.suppress(ProcessLookupError):
                child.kill()

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
        self._detached.discard(child)
        if child.stdin is not None:
            child.stdin.close()
        if child.pid in self._stopping:
            self._stopping.discard(child.pid)
            return
        on_death()
