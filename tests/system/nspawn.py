"""A real systemd to test against: Debian's, booted as PID 1 of a systemd-nspawn container.

The rootfs is a ``debootstrap --variant=minbase`` bookworm with systemd and dbus, cached under
/var/cache/ollama-keepwarm-test/ and keyed by a hash of everything that goes into it; the
container boots it with ``--volatile=overlay`` so the cache stays pristine. The project's Python
(the venv, its base interpreter and the source tree) is bind-mounted read-only at the same paths,
so the console script's shebang works unchanged inside. The container has only loopback.

We enter it with ``nsenter`` into all of its namespaces (nspawn runs with ``--register=no
--keep-unit``: no machined is needed on the host, and PID 1 here need not be systemd).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import ollama_keepwarm

CACHE = Path(os.environ.get("OKW_SYSTEM_TEST_CACHE", "/var/cache/ollama-keepwarm-test"))
SUITE = "bookworm"
VARIANT = "minbase"
BASE_PACKAGES = ("systemd", "dbus", "procps", "libssl3", "libffi8")
RECIPE = "1"  # bump when the rootfs customisation below changes
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SYSTEM_PYTHON_ROOTS = ("/usr/",)

T = TypeVar("T")


class HarnessError(RuntimeError):
    """The container could not be built, booted or entered; the message says which and why."""


def wait_for(probe: Callable[[], T | None], timeout: float, what: str, interval: float = 0.1) -> T:
    """Poll ``probe`` until it returns something truthy; fail with ``what`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while True:
        last = probe()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


# --- what the host must offer --------------------------------------------------------------


def debian_mirror() -> str | None:
    """The Debian mirror apt already uses here (deb822 or one-line sources), not a guessed one."""
    override = os.environ.get("OKW_DEBIAN_MIRROR")
    if override:
        return override
    sources = Path("/etc/apt/sources.list.d")
    for path in sorted(sources.glob("*.sources")) if sources.is_dir() else []:
        for stanza in path.read_text(encoding="utf-8", errors="replace").split("\n\n"):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                key, sep, value = line.partition(":")
                if sep and not line.startswith((" ", "\t", "#")):
                    fields[key.strip().lower()] = value.strip()
            suites = fields.get("suites", "").split()
            if SUITE in suites and "deb" in fields.get("types", "deb").split():
                return fields.get("uris", "").split()[0] if fields.get("uris") else None
    for path in [Path("/etc/apt/sources.list"), *sorted(sources.glob("*.list"))]:
        if not path.is_file():
            continue
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            match = re.match(rf"\s*deb\s+(?:\[[^]]*\]\s+)?(\S+)\s+{SUITE}\s", line)
            if match:
                return match.group(1)
    return None


def missing_requirement() -> str | None:
    """Why the real-systemd test cannot run here, or None when it can."""
    if sys.platform != "linux":
        return "needs Linux"
    if os.geteuid() != 0:
        return "needs root (systemd-nspawn and debootstrap)"
    for tool, package in (
        ("systemd-nspawn", "systemd-container"),
        ("debootstrap", "debootstrap"),
        ("nsenter", "util-linux"),
    ):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install {package}; see .ci/system-setup)"
    if debian_mirror() is None and not _cached_rootfs_exists():
        return f"no Debian {SUITE} mirror in the apt sources to debootstrap from"
    return None


# --- the Python we bring into the container ------------------------------------------------


def _outermost(paths: list[str]) -> list[str]:
    kept: list[str] = []
    for path in sorted({p.rstrip("/") or "/" for p in paths}):
        if not any(path == k or path.startswith(k + "/") for k in kept):
            kept.append(path)
    return kept


def python_binds() -> tuple[list[str], tuple[str, ...]]:
    """Paths to bind read-only (venv, base interpreter, source), and packages to add instead.

    A base interpreter under /usr cannot be bound over the container's own /usr: the container
    then gets Debian's python3 (bookworm's is 3.11, as this project requires).
    """
    package_root = str(Path(ollama_keepwarm.__file__).resolve().parent.parent)
    wanted = [sys.prefix, os.path.realpath(sys.base_prefix), package_root]
    binds = [p for p in wanted if not p.startswith(SYSTEM_PYTHON_ROOTS) and p != "/usr"]
    extra = ("python3",) if len(binds) < len(wanted) else ()
    return _outermost(binds), extra


def program() -> list[str]:
    """How to run this project's CLI, at the same path inside the container as here."""
    script = Path(sys.executable).parent / "ollama-keepwarm"
    if script.is_file():
        return [str(script)]
    return [sys.executable, "-m", "ollama_keepwarm"]


# --- the cached rootfs ---------------------------------------------------------------------


def _packages() -> tuple[str, ...]:
    return tuple(sorted({*BASE_PACKAGES, *python_binds()[1]}))


def rootfs_key(packages: tuple[str, ...]) -> str:
    """A short hash of everything that decides what the rootfs holds."""
    text = "\n".join([SUITE, VARIANT, RECIPE, *packages])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _rootfs_path() -> Path:
    return CACHE / f"rootfs-{rootfs_key(_packages())}"


def _cached_rootfs_exists() -> bool:
    return (_rootfs_path() / "usr/lib/systemd/systemd").exists()


def _customise(root: Path) -> None:
    (root / "etc/hostname").write_text("okw-test\n", encoding="utf-8")
    # A fresh machine-id per boot, without the first-boot setup units.
    (root / "etc/machine-id").write_text("", encoding="utf-8")
    for archive in (root / "var/cache/apt/archives").glob("*.deb"):
        archive.unlink()


def ensure_rootfs(log: Callable[[str], None] = print) -> Path:
    """Return the cached rootfs for this package list, building it first if needed (~50 s)."""
    target = _rootfs_path()
    CACHE.mkdir(parents=True, exist_ok=True)
    with (CACHE / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _cached_rootfs_exists():
            return target
        mirror = debian_mirror()
        if mirror is None:
            raise HarnessError(f"no Debian {SUITE} mirror configured in the apt sources")
        building = CACHE / f".building-{target.name}-{os.getpid()}"
        shutil.rmtree(building, ignore_errors=True)
        command = [
            "debootstrap",
            f"--variant={VARIANT}",
            f"--include={','.join(_packages())}",
            SUITE,
            str(building),
            mirror,
        ]
        log(f"building the test rootfs: {' '.join(command)}")
        started = time.monotonic()
        result = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
        if result.returncode != 0:
            shutil.rmtree(building, ignore_errors=True)
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-30:])
            raise HarnessError(f"debootstrap failed ({result.returncode}):\n{tail}")
        _customise(building)
        building.rename(target)
        log(f"rootfs built in {time.monotonic() - started:.0f}s: {target}")
        for stale in CACHE.glob("rootfs-*"):
            if stale != target:
                shutil.rmtree(stale, ignore_errors=True)
    return target


# --- cgroups: nspawn wants a cgroup of its own to put the container under ------------------


def _cgroup_roots() -> list[Path]:
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():
        return [base]  # unified hierarchy only
    return [p for p in (base / "unified", base / "systemd") if (p / "cgroup.procs").exists()]


def _remove_cgroup(path: Path) -> None:
    if not path.is_dir():
        return
    for child in sorted(
        (p for p in path.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True
    ):
        with contextlib.suppress(OSError):
            child.rmdir()
    with contextlib.suppress(OSError):
        path.rmdir()


# --- the container ---------------------------------------------------------------------------


class Container:
    """One booted container; use :func:`booted` to get one that is always torn down."""

    def __init__(self, rootfs: Path, binds: list[str], workdir: Path) -> None:
        self.rootfs = rootfs
        self.binds = binds
        self.name = f"okw-test-{os.getpid()}"
        self.log_path = workdir / "nspawn.log"
        self.cgroups = [root / self.name for root in _cgroup_roots()]
        self.process: subprocess.Popen[bytes] | None = None
        self.init_pid = 0

    # lifecycle

    def start(self, boot_timeout: float = 60) -> None:
        """Boot the container and wait until its systemd says it is up."""
        nspawn = [
            "systemd-nspawn",
            f"--directory={self.rootfs}",
            "--volatile=overlay",
            "--boot",
            "--register=no",
            "--keep-unit",
            "--private-network",
            "--console=passive",
            f"--machine={self.name}",
            *(f"--bind-ro={path}" for path in self.binds),
            # For debugging only: extra read-only binds, "SRC:DEST" separated by spaces.
            *(f"--bind-ro={spec}" for spec in os.environ.get("OKW_SYSTEM_TEST_BINDS", "").split()),
        ]
        # The launcher moves itself into its own cgroup first, then becomes nspawn.
        move = "".join(
            f'mkdir -p "{cg}" && echo $$ > "{cg}/cgroup.procs" && ' for cg in self.cgroups
        )
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                ["sh", "-c", f'{move}exec "$@"', "sh", *nspawn],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.init_pid = wait_for(self._find_init, boot_timeout, "the container's PID 1")
        state = wait_for(self._boot_state, boot_timeout, "systemd to finish booting")
        if state not in ("running", "degraded"):
            raise HarnessError(f"container booted into state {state!r}\n{self.boot_log()}")

    def _boot_state(self) -> str | None:
        # "offline" (or nothing) until PID 1 listens on its private socket: under load that
        # takes a moment after PID 1 exists, so keep asking.
        state = self.run("systemctl", "is-system-running", "--wait", check=False).stdout.strip()
        return None if state in ("", "offline", "unknown") else state

    def _find_init(self) -> int | None:
        assert self.process is not None
        if self.process.poll() is not None:
            raise HarnessError(
                f"systemd-nspawn exited with {self.process.returncode}:\n{self.boot_log()}"
            )
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        with contextlib.suppress(OSError):
            for pid in children.read_text().split():
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0]
                if cmdline.endswith(b"systemd"):
                    return int(pid)
        return None

    def boot_log(self) -> str:
        """What nspawn printed, for error messages."""
        with contextlib.suppress(OSError):
            return self.log_path.read_text(errors="replace")[-4000:]
        return ""

    def stop(self, timeout: float = 20) -> None:
        """Shut the container down (orderly, then by force) and remove its cgroups."""
        process = self.process
        if process is not None and process.poll() is None:
            # nspawn turns SIGTERM into an orderly poweroff of the container.
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                if self.init_pid:
                    # SIGKILL to a PID namespace's init takes every process in it along.
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(self.init_pid, signal.SIGKILL)
                process.kill()
                process.wait(10)
        for cgroup in self.cgroups:
            _remove_cgroup(cgroup)

    # inside

    def run(
        self,
        *command: str,
        check: bool = True,
        timeout: float = 60,
        stdin: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """Run a command inside the container, with a clean environment."""
        argv = [
            "nsenter",
            f"--target={self.init_pid}",
            "--all",
            "--root",
            "--wdns=/",
            "--",
            "env",
            "-i",
            f"PATH={CONTAINER_PATH}",
            "LANG=C.UTF-8",
            "SYSTEMD_PAGER=",
            "SYSTEMD_COLORS=0",
            *command,
        ]
        result = subprocess.run(
            argv, input=stdin, capture_output=True, text=True, check=False, timeout=timeout
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"in the container, `{' '.join(command)}` exited {result.returncode}\n"
                f"stdout: {result.stdout}\nstderr: {result.stderr}"
            )
        return result

    def path(self, inside: str) -> Path:
        """The host path of a file inside the container (through /proc/PID/root)."""
        return Path(f"/proc/{self.init_pid}/root") / inside.lstrip("/")

    def write(self, inside: str, text: str) -> None:
        """Write a file inside the container."""
        target = self.path(inside)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")

    # systemd

    def show(self, unit: str, *props: str) -> dict[str, str]:
        """``systemctl show -p ...`` as a dict."""
        out = self.run("systemctl", "show", unit, *(f"--property={p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def prop(self, unit: str, name: str) -> str:
        """One property of a unit."""
        return self.show(unit, name).get(name, "")

    def journal(self, unit: str, since_cursor: str | None = None) -> str:
        """The unit's journal as bare message lines."""
        args = ["journalctl", "--no-pager", "-o", "cat", "-u", unit]
        if since_cursor:
            args.append(f"--after-cursor={since_cursor}")
        return self.run(*args).stdout

    def cursor(self) -> str:
        """The journal's current end, to read only what comes after."""
        out = self.run("journalctl", "--no-pager", "-n", "0", "--show-cursor").stdout
        match = re.search(r"-- cursor: (\S+)", out)
        return match.group(1) if match else ""


@contextlib.contextmanager
def booted(log: Callable[[str], None] = print) -> Iterator[Container]:
    """Build or reuse the rootfs, boot a container, and always tear it down."""
    rootfs = ensure_rootfs(log)
    binds, _ = python_binds()
    with tempfile.TemporaryDirectory(prefix="okw-nspawn-") as workdir:
        container = Container(rootfs, binds, Path(workdir))
        try:
            started = time.monotonic()
            container.start()
            log(f"container booted in {time.monotonic() - started:.1f}s")
            yield container
        finally:
            container.stop()
