"""``ollama-keepwarm systemd install|uninstall``: render the units, write them, tell systemd.

Rendering is pure: :func:`render_units` maps an :class:`UnitOptions` (the command that runs this
program, and where the service must be allowed to read) to unit texts. Everything that touches the
machine, files and ``systemctl``, goes through :class:`Installer`, whose runner, user id and
"is systemd running" probe are injected so tests never call the real ``systemctl``.

Exit codes follow sysexits(3) like the rest of the CLI: 0 done, 1 a ``systemctl`` call failed,
69 systemd is not running here, 73 a file could not be written, 77 not root.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TextIO

__all__ = [
    "CONFIG_PATH",
    "DEFAULT_CONFIG",
    "DROPIN_PATH",
    "MARKER",
    "UNIT_NAME",
    "Installer",
    "SetupError",
    "UnitOptions",
    "add_parser",
    "current_options",
    "exec_command",
    "home_exposures",
    "render_dropin",
    "render_service",
    "render_units",
    "resolve_command",
    "run",
]

EX_OK = 0
EX_FAILED = 1
EX_UNAVAILABLE = 69
EX_CANTCREAT = 73
EX_NOPERM = 77

UNIT_NAME = "ollama-keepwarm.service"
OLLAMA_UNIT = "ollama.service"
UNIT_DIR = PurePosixPath("etc/systemd/system")
DROPIN_PATH = PurePosixPath(f"{OLLAMA_UNIT}.d/ollama-keepwarm.conf")
CONFIG_PATH = "/etc/ollama-keepwarm/config.toml"
MARKER = "# Written by `ollama-keepwarm systemd install`; `... systemd uninstall` removes it."
HOME_ROOTS = ("/home", "/root", "/run/user")
"""Hidden from the service by ProtectHome=."""
TMP_ROOTS = ("/tmp", "/var/tmp")
"""Replaced by an empty private directory for the service by PrivateTmp=."""

DEFAULT_CONFIG = """\
# ollama-keepwarm configuration, written once by `ollama-keepwarm systemd install`
# (never overwritten). After editing: systemctl reload ollama-keepwarm
# Check it first with: ollama-keepwarm check -c /etc/ollama-keepwarm/config.toml

[ollama]
host = "http://127.0.0.1:11434"
load_timeout = "10m"

[daemon]
poll_interval = "5s"
refresh_before = "2m"

# One [[models]] table per model to keep warm; `options` must mirror what your clients send.
# [[models]]
# name = "llama3.1:8b"
# keep_alive = "30m"
# options = { num_ctx = 8192 }
# priority = 10
"""


@dataclass(frozen=True)
class UnitOptions:
    """What the rendered units depend on."""

    command: tuple[str, ...]
    """How to run this program: ``(.../ollama-keepwarm,)`` or ``(python, -m, ollama_keepwarm)``."""
    config_path: str = CONFIG_PATH
    read_only_paths: tuple[str, ...] = ()
    """Directories the sandbox would hide (under a home or a tmp directory) that the service
    must read: a venv, a pyenv interpreter, an editable checkout."""
    watchdog_sec: int = 30
    warm_timeout_s: int = 45
    """``warm --timeout``: how long the ExecStartPost warm waits for Ollama."""
    warm_hard_limit_s: int = 60
    """timeout(1) bound on the whole ExecStartPost warm; SIGKILL follows 5 s later.

    65 s stays well under the 90 s default ``TimeoutStartSec`` of ``ollama.service``.
    """


def _quote(arg: str) -> str:
    """Quote one argument for a systemd command line (systemd.service(5), "Command lines")."""
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if escaped and not any(c in escaped for c in " \t\n\"'\\;"):
        return escaped
    return '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'


def exec_command(command: Iterable[str]) -> str:
    """Join a command into a systemd ``Exec*=`` value."""
    return " ".join(_quote(arg) for arg in command)


def render_service(opts: UnitOptions) -> str:
    """Render ``ollama-keepwarm.service``."""
    start = exec_command([*opts.command, "run", "-c", opts.config_path])
    home = (
        "ProtectHome=tmpfs\n" if _under(opts.read_only_paths, HOME_ROOTS) else "ProtectHome=yes\n"
    )
    if opts.read_only_paths:
        home = (
            "# The program lives where the sandbox hides: show only its paths, read-only.\n"
            f"{home}BindReadOnlyPaths={' '.join(_quote(p) for p in opts.read_only_paths)}\n"
        )
    return f"""\
{MARKER}
# Keeps the models of {opts.config_path} loaded in the Ollama of ollama.service.
# Local changes: `systemctl edit ollama-keepwarm` (a drop-in survives a re-install).

[Unit]
Description=Keep Ollama models warm
Documentation=man:systemd.service(5)
# Follow ollama.service: started after it (and by it: WantedBy below), stopped and restarted
# with it. Units that need warm models can order themselves After=ollama-keepwarm.service:
# READY=1 comes once the first warm pass is done (or its ready_timeout passed).
After=ollama.service
BindsTo=ollama.service
PartOf=ollama.service

[Service]
Type=notify
NotifyAccess=main
ExecStart={start}
# bookworm's systemd 252 has no Type=notify-reload (253+): SIGHUP by hand. The daemon still sends
# RELOADING=1 and READY=1 around the reload.
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure
RestartSec=5s
# 78 (EX_CONFIG): a bad config file; restarting cannot fix it.
RestartPreventExitStatus=78
# WATCHDOG=1 comes from inside the event loop every WatchdogSec/2: a wedged loop gets killed.
WatchdogSec={opts.watchdog_sec}s
# Must stay above the daemon's ready_timeout.
TimeoutStartSec=15min
TimeoutStopSec=30s
RuntimeDirectory=ollama-keepwarm
StateDirectory=ollama-keepwarm
ConfigurationDirectory=ollama-keepwarm

# Sandbox: `systemd-analyze security ollama-keepwarm` scores this 1.1 on systemd 252 (2.0 or
# less is asserted by the tests). The daemon reads its config and Ollama's process list and
# command lines, and talks HTTP to Ollama.
DynamicUser=yes
UMask=0077
NoNewPrivileges=yes
CapabilityBoundingSet=
AmbientCapabilities=
ProtectSystem=strict
{home}PrivateTmp=yes
PrivateDevices=yes
PrivateUsers=yes
PrivateIPC=yes
ProtectHostname=yes
ProtectClock=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
# The runner watch reads the command lines of ollama.service's processes (world-readable
# /proc/<pid>/cmdline) to know which runner serves which model; hidepid (ProtectProc=invisible,
# ptraceable or noaccess) would hide them. Reading is all it can do: another user, no
# capability, so no ptrace, and no environ, fds or memory of theirs. PrivateMounts= makes up
# the 0.2 this costs in the score (our mounts never reach the host; we make none anyway).
ProtectProc=default
ProcSubset=pid
PrivateMounts=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
MemoryDenyWriteExecute=yes
RemoveIPC=yes
DevicePolicy=closed
KeyringMode=private
SystemCallArchitectures=native
SystemCallFilter=@system-service
SystemCallFilter=~@privileged @resources
SystemCallErrorNumber=EPERM
# AF_UNIX: the notify socket and our control socket; AF_INET*: Ollama and the local endpoint.
RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
# Ollama is local by construction (this unit is bound to ollama.service). If [ollama] host names
# another address of this machine (say a LAN address Ollama listens on), allow it in a drop-in:
#   systemctl edit ollama-keepwarm  ->  [Service] IPAddressAllow=192.0.2.10
# or lift the fence with an empty IPAddressDeny= (the exposure rises by 0.1).
IPAddressDeny=any
IPAddressAllow=localhost

[Install]
WantedBy=ollama.service
"""


LOAD_TIMES_PATH = "/var/lib/ollama-keepwarm/load-times.json"
"""Where the daemon (StateDirectory=) keeps its measured load times."""


def render_dropin(opts: UnitOptions) -> str:
    """Render the ``ollama.service`` drop-in whose ExecStartPost warms the models once."""
    warm = exec_command(
        [
            "/usr/bin/timeout",
            "--kill-after=5s",
            f"{opts.warm_hard_limit_s}s",
            *opts.command,
            "warm",
            "-c",
            opts.config_path,
            "--timeout",
            f"{opts.warm_timeout_s}s",
            "--deadline",
            f"{opts.warm_hard_limit_s - 5}s",
            "--load-times",
            LOAD_TIMES_PATH,
        ]
    )
    return f"""\
{MARKER}
# Warm the kept models before ollama.service reports started, so units ordered
# After=ollama.service find them loaded. It must never fail or stall Ollama's own unit:
# "-" ignores its exit status, and timeout(1) bounds it to {opts.warm_hard_limit_s + 5} s,
# well under ollama.service's TimeoutStartSec (90 s by default). --deadline starts only the
# loads that finish in time (one cut short is aborted inside Ollama), judged from the load
# times the daemon measured, else from this run's pace; the daemon warms the rest.
# ollama-keepwarm.service then keeps them warm.

[Service]
ExecStartPost=-{warm}
"""


def render_units(opts: UnitOptions) -> dict[PurePosixPath, str]:
    """Render every unit file, keyed by its path relative to /etc/systemd/system."""
    return {
        PurePosixPath(UNIT_NAME): render_service(opts),
        DROPIN_PATH: render_dropin(opts),
    }


def resolve_command(argv0: str, python: str, which: Callable[[str], str | None]) -> tuple[str, ...]:
    """Find how a service should run this program: its console script, else ``python -m``.

    Symlinks are kept, not resolved: a venv's ``bin/python`` only works through its own path.
    """
    name = PurePosixPath(argv0).name
    if name.startswith("ollama-keepwarm"):
        found = argv0 if "/" in argv0 else which(argv0)
        if found:
            return (str(Path(found).absolute()),)
    sibling = Path(python).parent / "ollama-keepwarm"
    if sibling.is_file():
        return (str(sibling),)
    return (python, "-m", "ollama_keepwarm")


def _under(paths: Iterable[str], roots: Iterable[str]) -> bool:
    roots = tuple(roots)
    return any(p == root or p.startswith(root + "/") for p in paths for root in roots)


def home_exposures(paths: Iterable[str]) -> tuple[str, ...]:
    """Keep the paths the sandbox hides (homes, tmp), minus those inside another one."""
    homes = sorted({p.rstrip("/") for p in paths if _under([p], HOME_ROOTS + TMP_ROOTS)})
    kept: list[str] = []
    for p in homes:
        if not any(p == k or p.startswith(k + "/") for k in kept):
            kept.append(p)
    return tuple(kept)


def current_options() -> UnitOptions:
    """Build the options for the interpreter and program running right now."""
    command = resolve_command(sys.argv[0], sys.executable, shutil.which)
    package_root = Path(__file__).resolve().parent.parent
    paths = [
        sys.prefix,
        sys.base_prefix,
        os.path.realpath(sys.prefix),
        os.path.realpath(sys.base_prefix),
        str(package_root),
        *(str(Path(c).resolve().parent) for c in command[:1]),
        *(str(Path(c).parent) for c in command[:1]),
    ]
    return UnitOptions(command=command, read_only_paths=home_exposures(paths))


Runner = Callable[[Sequence[str]], int]


def _run_systemctl(args: Sequence[str]) -> int:
    return subprocess.run(list(args), check=False).returncode


def _euid() -> int:
    return os.geteuid()


def _systemd_booted() -> bool:
    # sd_booted(3): this directory exists only when systemd is PID 1.
    return Path("/run/systemd/system").is_dir() and shutil.which("systemctl") is not None


class SetupError(Exception):
    """A check failed before anything was changed, or a step failed; carries the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Installer:
    """Writes and removes the units under ``root``; every side effect goes through here."""

    root: Path
    dry_run: bool = False
    runner: Runner = _run_systemctl
    euid: Callable[[], int] = _euid
    booted: Callable[[], bool] = _systemd_booted
    out: TextIO = field(default_factory=lambda: sys.stdout)
    live: bool | None = None
    """Whether ``root`` is this machine's own root, where a running systemd is told
    (``systemctl daemon-reload`` etc.) rather than staged offline with ``systemctl --root``.
    None: decide from ``root``."""

    def __post_init__(self) -> None:
        if self.live is None:
            self.live = self.root.resolve() == Path("/")

    def _say(self, line: str) -> None:
        print(line, file=self.out)

    def _path(self, rel: PurePosixPath | str) -> Path:
        return self.root / str(rel).lstrip("/")

    def preflight(self) -> None:
        """Refuse early, before any change: not root, or no systemd to tell."""
        if self.dry_run:
            return
        if self.euid() != 0:
            raise SetupError(
                "must be run as root (try: sudo ollama-keepwarm systemd ...)", EX_NOPERM
            )
        if self.live and not self.booted():
            raise SetupError(
                "systemd is not running on this machine (/run/systemd/system is missing); "
                "to stage files into another tree use --root DIR",
                EX_UNAVAILABLE,
            )

    def _systemctl(self, *args: str, check: bool = True) -> int:
        command = ["systemctl"] if self.live else ["systemctl", f"--root={self.root}"]
        command.extend(args)
        if self.dry_run:
            self._say(f"would run: {' '.join(command)}")
            return 0
        self._say(f"running: {' '.join(command)}")
        code = self.runner(command)
        if check and code != 0:
            raise SetupError(f"`{' '.join(command)}` failed with exit status {code}", EX_FAILED)
        return code

    def _write(self, path: Path, text: str, mode: int = 0o644) -> None:
        if path.is_file() and path.read_text(encoding="utf-8") == text:
            self._say(f"unchanged: {path}")
            return
        if self.dry_run:
            self._say(f"would write: {path}")
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.write_text(text, encoding="utf-8")
            tmp.chmod(mode)
            tmp.replace(path)
        except OSError as exc:
            raise SetupError(f"cannot write {path}: {exc}", EX_CANTCREAT) from exc
        self._say(f"wrote: {path}")

    def install(self, units: Mapping[PurePosixPath, str], config: str, *, enable: bool) -> None:
        """Write the units and (if missing) the config, reload systemd, enable the companion."""
        self.preflight()
        for rel, text in units.items():
            self._write(self._path(UNIT_DIR / rel), text)
        config_path = self._path(CONFIG_PATH)
        if config_path.exists():
            self._say(f"kept existing config: {config_path}")
        else:
            self._write(config_path, config)
        if self.live:
            self._systemctl("daemon-reload")
        if not enable:
            self._say(f"not enabled (--no-enable): systemctl enable {UNIT_NAME}")
            return
        self._systemctl("enable", UNIT_NAME)
        if self.live and self._systemctl("is-active", "--quiet", OLLAMA_UNIT, check=False) == 0:
            # Restart rather than start, so a re-install runs the freshly written unit.
            self._systemctl("restart", "--no-block", UNIT_NAME)
            self._say(
                f"{OLLAMA_UNIT} is running: started {UNIT_NAME}; the warm-up drop-in applies "
                f"from Ollama's next start. Follow it with: journalctl -u {UNIT_NAME} -f"
            )

    def uninstall(self, units: Iterable[PurePosixPath]) -> None:
        """Stop, disable and remove what :meth:`install` wrote; the config stays."""
        self.preflight()
        paths = [self._path(UNIT_DIR / rel) for rel in units]
        if self._path(UNIT_DIR / UNIT_NAME).exists():
            self._systemctl("disable", *(["--now"] if self.live else []), UNIT_NAME)
        for path in paths:
            if not path.exists():
                self._say(f"absent: {path}")
                continue
            if MARKER not in path.read_text(encoding="utf-8"):
                self._say(f"left in place (not written by us): {path}")
                continue
            if self.dry_run:
                self._say(f"would remove: {path}")
                continue
            path.unlink()
            self._say(f"removed: {path}")
            if path.parent != self._path(UNIT_DIR) and not any(path.parent.iterdir()):
                path.parent.rmdir()
        if self.live:
            self._systemctl("daemon-reload")
        self._say(f"kept config: {self._path(CONFIG_PATH)}")


def run(args: argparse.Namespace) -> int:
    """Run ``systemd install`` or ``systemd uninstall`` from parsed arguments."""
    opts = current_options()
    installer = Installer(root=Path(args.root), dry_run=args.dry_run)
    try:
        if args.systemd_action == "install":
            if opts.read_only_paths:
                print(
                    "warning: the program lives where services are not meant to look "
                    f"({', '.join(opts.read_only_paths)}); the service gets read-only access to "
                    "just that, but ollama.service's warm-up runs as Ollama's user and may not "
                    "be allowed in. Prefer `pipx install --global` or a venv under /opt.",
                    file=sys.stderr,
                )
            units = render_units(opts)
            if args.dry_run:
                for rel, text in units.items():
                    print(f"--- {UNIT_DIR / rel}\n{text}")
            installer.install(units, DEFAULT_CONFIG, enable=not args.no_enable)
        else:
            installer.uninstall(render_units(opts))
    except SetupError as exc:
        print(f"ollama-keepwarm systemd {args.systemd_action}: error: {exc}", file=sys.stderr)
        return exc.code
    return EX_OK


def add_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``systemd install|uninstall`` on the CLI's subcommands."""
    parser = commands.add_parser(
        "systemd",
        help="install or remove the systemd units beside ollama.service",
        description="Write ollama-keepwarm.service and a warm-up drop-in for ollama.service.",
    )
    actions = parser.add_subparsers(dest="systemd_action", metavar="ACTION", required=True)
    for name, text in (
        ("install", "write the units and a default config, daemon-reload, enable"),
        ("uninstall", "disable and remove the units (the config stays)"),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument(
            "--dry-run", action="store_true", help="print what would be done, change nothing"
        )
        action.add_argument(
            "--root",
            default="/",
            metavar="DIR",
            help="file system root to write under (default: /); another root is staged "
            "offline with `systemctl --root` and no running systemd is told",
        )
        if name == "install":
            action.add_argument(
                "--no-enable", action="store_true", help="write the units but do not enable them"
            )
    parser.set_defaults(run=run)
