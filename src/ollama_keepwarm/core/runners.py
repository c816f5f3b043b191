"""Ollama's runner processes as plain data: which process serves which model, with what options.

Each loaded model is one child process of ``ollama serve`` whose command line names the weights
blob it serves (reference §4.9), so the keeper need not guess from timing:

* up to v0.29, ``<bin>/ollama runner [--ollama-engine] --model <models>/blobs/sha256-<hex>
  --port N``; the load options travel over the runner's HTTP port, not argv;
* from v0.30, ``<lib>/ollama/llama-server --model ... --port N --host 127.0.0.1 --no-webui
  --offline -c <num_ctx x parallel> -np <parallel> ...``, the load options as flags
  (``startLlamaServer`` in Ollama's ``llm/llama_server.go``, see :data:`_LLAMA_SERVER_OPTIONS`).

A runner process exists from the start of a load, before ``/api/ps`` lists the model, and ends
with the unload (or a crash). This module parses command lines (:func:`parse_runner_cmdline`)
and keeps the table of live runners from one rescan to the next (:func:`step`), pure: the
daemon's runner watch (``daemon/crashwatch.py``) reads ``/proc`` and hands the bytes in.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "FLAVOUR_LLAMA_SERVER",
    "FLAVOUR_RUNNER",
    "FLAVOUR_UNKNOWN",
    "HIDDEN",
    "ParsedRunner",
    "RunnerEvent",
    "RunnerProcess",
    "RunnerTable",
    "parse_runner_cmdline",
    "proc_limits",
    "proc_start_ticks",
    "step",
]

FLAVOUR_RUNNER = "runner"
"""``ollama runner`` (Ollama up to v0.29): argv names the blob and port only."""
FLAVOUR_LLAMA_SERVER = "llama-server"
"""``llama-server`` (Ollama v0.30+): argv also carries the load options."""
FLAVOUR_UNKNOWN = "unknown"
"""A process of Ollama's whose command line cannot be read (``/proc`` hides it): its exit is
still reported, so the keeper can keep the rules it uses where runners are not visible."""


Option = int | bool | str

_VALUE_FLAGS = frozenset(
    {
        "--model", "-m", "--port", "--host", "-c", "--ctx-size", "-np", "--parallel",
        "-b", "--batch-size", "-ub", "--ubatch-size", "-ngl", "--n-gpu-layers", "--gpu-layers",
        "-t", "--threads", "-mg", "--main-gpu", "-sm", "--split-mode", "--keep",
        "--load-mode", "--cache-type-k", "-ctk", "--cache-type-v", "-ctv", "--flash-attn",
        "-fa", "--lora", "--mmproj", "--chat-template", "--log-verbosity", "-lv",
        "--image-min-tokens", "--spec-type", "--spec-draft-n-max", "--spec-draft-model",
    }
)  # fmt: skip
"""Flags that take a value, as Ollama v0.30-v0.33 passes them (and llama-server's long forms)."""

_SWITCHES = frozenset(
    {
        "--no-webui", "--offline", "--no-log-prefix", "--no-log-timestamps", "--no-jinja",
        "--no-mmproj-offload", "--spec-draft-backend-sampling", "--embedding", "--no-mmap",
        "--mmap", "--context-shift", "--no-context-shift", "--list-devices", "--ollama-engine",
    }
)  # fmt: skip
"""Flags that never take a value."""

_ALIASES = {
    "-m": "--model",
    "--ctx-size": "-c",
    "--parallel": "-np",
    "--batch-size": "-b",
    "--n-gpu-layers": "-ngl",
    "--gpu-layers": "-ngl",
    "--threads": "-t",
    "-mg": "--main-gpu",
    "-ctk": "--cache-type-k",
    "-fa": "--flash-attn",
}

_LLAMA_SERVER_OPTIONS = {
    "-b": "num_batch",
    "-ngl": "num_gpu",
    "-t": "num_thread",
    "--main-gpu": "main_gpu",
    "--keep": "num_keep",
    "--spec-draft-n-max": "draft_num_predict",
}
"""Flags whose value is one of Ollama's load options, by Ollama's name (v0.32.15's
``startLlamaServer``): ``-b`` only when ``num_batch`` > 0; ``-ngl`` only for an explicit
``num_gpu`` >= 0 (absent: automatic); ``-t`` only for ``num_thread`` > 0; ``--main-gpu`` (with
``--split-mode none``) only when ``main_gpu`` is set; ``--keep`` with ``--context-shift`` when
``num_keep`` > 0; ``--spec-draft-n-max`` only for a model with a draft and a positive value."""


@dataclass(frozen=True, slots=True)
class ParsedRunner:
    """What one runner's command line says."""

    blob: str
    """``sha256-<hex>``: the basename of the ``--model`` path (the key ``/api/show`` gives)."""
    flavour: str
    """:data:`FLAVOUR_RUNNER`, :data:`FLAVOUR_LLAMA_SERVER`, or :data:`FLAVOUR_UNKNOWN` (a
    process whose command line ``/proc`` hides: ``blob`` is empty)."""
    port: int | None
    options: Mapping[str, Option]
    """Load options by Ollama's names, as far as argv tells (``{}`` for ``ollama runner``):
    ``num_ctx`` (``-c`` / ``-np``), ``num_parallel``, ``num_batch``, ``num_gpu``, ``main_gpu``,
    ``num_thread``, ``use_mmap`` (only when argv turns it off), ``shift`` (``--context-shift``
    present or not), ``num_keep``, ``draft_num_predict``. An option absent here was left to
    Ollama's or llama-server's automatic choice. A value present may be automatic too: Ollama
    passes what it resolved, e.g. ``num_batch`` grown with the context, ``use_mmap`` off on a
    CPU-only load, the context clamped to the model's training context; compare only what a
    config or a client names, with Ollama's rules (reference §4.6)."""
    model_path: str = ""
    settings: Mapping[str, Option] = field(default_factory=dict)
    """Server settings that are not per-request options (``embedding``, ``flash_attn``,
    ``kv_cache_type``, ``load_mode``, ``lora``, ``mmproj``, ``spec_type``,
    ``ollama_engine``): for logs and status, never compared with a request."""


@dataclass(frozen=True, slots=True)
class RunnerProcess:
    """A live runner process, as the runner table saw it."""

    pid: int
    blob: str
    flavour: str
    port: int | None
    options: Mapping[str, Option]
    started_at: float
    """Monotonic seconds by which it had surely started: the earlier of when its pid was first
    listed (before its command line may name a model: a fork shows its parent's until it
    execs) and its start time in ``/proc/<pid>/stat`` (clock ticks, rounded up), where known.
    Never before its true start, so a runner with ``started_at`` before a call was sent is
    not that call's (``core/plan/processes.py``, ``attribute_starts``)."""
    settings: Mapping[str, Option] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.pid, self.blob, self.started_at))


@dataclass(frozen=True, slots=True)
class RunnerEvent:
    """A runner process appeared or ended."""

    kind: Literal["started", "exited"]
    runner: RunnerProcess
    at: float
    """Monotonic seconds when it was seen."""


@dataclass(frozen=True, slots=True)
class RunnerTable:
    """The runners alive at ``at``, or why they cannot be seen."""

    visible: bool
    """``False``: Ollama's processes cannot be seen (remote host, hidden ``/proc``, ...)."""
    source: str
    """Where they are read (``cgroup /sys/fs/cgroup/...``, ``process table ...``), or why not."""
    runners: tuple[RunnerProcess, ...] = ()
    at: float = 0.0
    cannot_see: tuple[str, ...] = ()
    """What this source cannot see, in words (for ``status --json``); empty when nothing known."""

    def by_blob(self, blob: str) -> tuple[RunnerProcess, ...]:
        """The live runners serving ``blob`` (two while one replaces the other), oldest first."""
        return tuple(sorted((r for r in self.runners if r.blob == blob), key=_age))

    def by_pid(self, pid: int) -> RunnerProcess | None:
        """The runner with this pid, if it is one and alive."""
        return next((r for r in self.runners if r.pid == pid), None)


def _age(runner: RunnerProcess) -> tuple[float, int]:
    return runner.started_at, runner.pid


def step(
    table: RunnerTable,
    alive: frozenset[int],
    new: Mapping[int, ParsedRunner],
    at: float,
    since: Mapping[int, float] | None = None,
) -> tuple[tuple[RunnerEvent, ...], RunnerTable]:
    """Advance ``table`` to a rescan at ``at``: ``alive`` are the pids listed now, ``new`` the
    runners among pids not in the table (non-runners left out). Return the events and the table.
    ``since`` bounds when a new pid started, where known earlier than ``at`` (see
    :attr:`RunnerProcess.started_at`).

    Exits come first (an eviction's victim ends before the load that evicted it starts, or
    about then), each list in pid order so the result does not depend on dict order.
    """
    known = {r.pid for r in table.runners}
    gone = tuple(r for r in table.runners if r.pid not in alive)
    started = tuple(
        RunnerProcess(
            pid,
            p.blob,
            p.flavour,
            p.port,
            p.options,
            min(at, (since or {}).get(pid, at)),
            p.settings,
        )
        for pid, p in sorted(new.items())
        if pid in alive and pid not in known
    )
    events = tuple(RunnerEvent("exited", r, at) for r in sorted(gone, key=lambda r: r.pid)) + tuple(
        RunnerEvent("started", r, at) for r in started
    )
    runners = tuple(r for r in table.runners if r.pid in alive) + started
    return events, RunnerTable(table.visible, table.source, runners, at, table.cannot_see)


def _split(raw: bytes) -> list[str]:
    """argv from ``/proc/<pid>/cmdline``: NUL-separated, or one space-joined title."""
    parts = raw.split(b"\0")
    while parts and not parts[-1]:
        parts.pop()
    if len(parts) == 1 and b" " in parts[0]:
        parts = parts[0].split()  # a process that rewrote its title as one string
    return [part.decode("utf-8", "surrogateescape") for part in parts]


def _basename(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _flags(args: Sequence[str]) -> tuple[dict[str, str], set[str]]:
    """Split flags into ``{flag: value}`` (the last wins) and the set of switches."""
    values: dict[str, str] = {}
    switches: set[str] = set()
    lora: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        i += 1
        if not arg.startswith("-") or arg == "-":
            continue  # a stray positional word: nothing Ollama passes
        name, eq, inline = arg.partition("=")
        name = _ALIASES.get(name, name)
        if eq:
            values[name] = inline
        elif name in _VALUE_FLAGS and i < len(args):
            values[name] = args[i]
            i += 1
        elif name not in _SWITCHES and i < len(args) and not args[i].startswith("-"):
            values[name] = args[i]  # an unknown flag followed by a word: take it as its value
            i += 1
        else:
            switches.add(name)
        if name == "--lora" and name in values:
            lora.append(values[name])
    if lora:
        values["--lora"] = ",".join(lora)
    return values, switches


def _number(text: str | None) -> int | str | None:
    if text is None:
        return None
    try:
        return int(text)
    except ValueError:
        return text  # e.g. llama-server's ``-ngl auto``: said as it is


def _llama_server_options(values: Mapping[str, str], switches: set[str]) -> dict[str, Option]:
    options: dict[str, Option] = {}
    parallel = _number(values.get("-np"))
    context = _number(values.get("-c"))
    if isinstance(parallel, int) and parallel > 0:
        options["num_parallel"] = parallel
    if isinstance(context, int):
        options["num_ctx"] = (
            context // parallel if isinstance(parallel, int) and parallel > 0 else context
        )
    for flag, name in _LLAMA_SERVER_OPTIONS.items():
        value = _number(values.get(flag))
        if value is not None:
            options[name] = value
    load_mode = values.get("--load-mode")
    if "--no-mmap" in switches or load_mode == "none":
        options["use_mmap"] = False  # v0.30-v0.32.5 say --no-mmap, later --load-mode none
    elif "--mmap" in switches or load_mode == "mmap":
        options["use_mmap"] = True
    # Ollama passes --context-shift exactly when the runner shifts; llama-server's default is off.
    options["shift"] = "--context-shift" in switches and "--no-context-shift" not in switches
    return options


def _settings(values: Mapping[str, str], switches: set[str]) -> dict[str, Option]:
    settings: dict[str, Option] = {}
    named = {
        "--flash-attn": "flash_attn",
        "--cache-type-k": "kv_cache_type",
        "--load-mode": "load_mode",
        "--lora": "lora",
        "--mmproj": "mmproj",
        "--spec-type": "spec_type",
    }
    for flag, name in named.items():
        if flag in values:
            settings[name] = values[flag]
    for switch, name in (("--embedding", "embedding"), ("--ollama-engine", "ollama_engine")):
        if switch in switches:
            settings[name] = True
    return settings


def parse_runner_cmdline(raw: bytes) -> ParsedRunner | None:
    """Parse ``/proc/<pid>/cmdline``; ``None`` for anything that is not a model's runner.

    Not runners: ``ollama serve``, the short-lived ``llama-server --list-devices`` at start,
    v0.24's device discovery (``ollama runner`` without ``--model``), any other program.
    """
    args = _split(raw)
    if not args:
        return None
    program = _basename(args[0]).removesuffix(".exe")
    if program == "llama-server":
        flavour, rest = FLAVOUR_LLAMA_SERVER, args[1:]
    elif len(args) > 1 and args[1] == "runner":
        flavour, rest = FLAVOUR_RUNNER, args[2:]
    else:
        return None
    values, switches = _flags(rest)
    model = values.get("--model")
    if not model or "--list-devices" in switches or "--list-devices" in values:
        return None
    port = _number(values.get("--port"))
    options = _llama_server_options(values, switches) if flavour == FLAVOUR_LLAMA_SERVER else {}
    return ParsedRunner(
        blob=_basename(model),
        flavour=flavour,
        port=port if isinstance(port, int) else None,
        options=options,
        model_path=model,
        settings=_settings(values, switches),
    )


HIDDEN = ParsedRunner(blob="", flavour=FLAVOUR_UNKNOWN, port=None, options={})
"""What the watch records for a live process whose command line it may not read."""


def proc_limits(mountinfo: str) -> tuple[str, ...]:
    """What the ``/proc`` mount hides from us, in words, from ``/proc/self/mountinfo``.

    ``hidepid=`` (systemd's ``ProtectProc=``) hides other users' processes, command lines
    included; ``subset=pid`` (``ProcSubset=pid``) hides ``/proc/net``, where the process table
    finds the server by its listening port.
    """
    limits: list[str] = []
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) < 5 or fields[4] != "/proc" or " - proc " not in line:
            continue
        options = set(line.split(" - ", 1)[1].split()[-1].split(","))
        options |= set(fields[5].split(","))
        hidepid = next((o.split("=", 1)[1] for o in options if o.startswith("hidepid=")), "")
        if hidepid in {"1", "noaccess"}:
            limits.append(
                f"hidepid={hidepid}: other users' command lines are unreadable "
                "(ProtectProc=noaccess)"
            )
        elif hidepid in {"2", "invisible", "4", "ptraceable"}:
            limits.append(
                f"hidepid={hidepid}: other users' processes are invisible "
                "(ProtectProc=invisible or ptraceable)"
            )
        if "subset=pid" in options:
            limits.append(
                "subset=pid: no /proc/net, so no server found by its port (ProcSubset=pid)"
            )
    return tuple(limits)


def proc_start_ticks(stat: bytes) -> int | None:
    """A process's start time from ``/proc/<pid>/stat``: field 22, clock ticks after boot
    (``CLOCK_BOOTTIME``, ``sysconf(_SC_CLK_TCK)`` per second), or None if unreadable. The
    name (field 2) is in parentheses and may hold spaces or parentheses: fields are counted
    from the last ``)``."""
    _name, paren, rest = stat.rpartition(b")")
    fields = rest.split()
    if not paren or len(fields) < 20:
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None
