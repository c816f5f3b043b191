"""Command line: argv to a command, and the only place with ``asyncio.run`` and exit codes.

Exit codes: 0 success; 1 some models could not be warmed; 69 (EX_UNAVAILABLE) Ollama never
answered; 78 (EX_CONFIG) the configuration is invalid (the unit will not restart on it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, cast

from ollama_keepwarm import __version__
from ollama_keepwarm.core.config import (
    EX_CONFIG,
    WEEK_S,
    Config,
    ConfigError,
    find_config,
    load_config,
    parse_duration_s,
    parse_host,
)
from ollama_keepwarm.fake import cli as fake_cli

__all__ = ["EX_OK", "EX_UNAVAILABLE", "EX_WARM_FAILED", "build_parser", "main"]

EX_OK = 0
EX_WARM_FAILED = 1
EX_UNAVAILABLE = 69


def _say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _config_or_exit(args: argparse.Namespace) -> Config:
    """Load the config named by -c / $OLLAMA_KEEPWARM_CONFIG / the search path, or exit 78."""
    try:
        return load_config(find_config(args.config))
    except ConfigError as exc:
        _say(f"ollama-keepwarm: config error: {exc}")
        raise SystemExit(EX_CONFIG) from None


EX_USAGE = 2
"""argparse's status for a bad command line."""


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad command line in ONE line, naming the argument and the rule.

    The default prints the whole usage first; a unit's journal or a script's log then shows a
    screenful where one line says it all. ``--help`` still shows the usage.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EX_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _duration(text: str) -> float:
    try:
        return parse_duration_s(text, "", maximum=WEEK_S)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(exc.reason) from None


def _seconds(text: str) -> float:
    """A positive, finite number of seconds (``demo --duration``)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number of seconds, not {text!r}") from None
    if not math.isfinite(value) or value <= 0 or value > WEEK_S:
        raise argparse.ArgumentTypeError(f"must be a number of seconds from 0 to {WEEK_S:g}")
    return value


def _file_name(text: str) -> str:
    """``-c FILE``: an empty name would silently fall back to the search path."""
    if not text.strip():
        raise argparse.ArgumentTypeError("names no file")
    return text


def _url(text: str) -> str:
    """The daemon's HTTP endpoint (``status --url``): http(s)://host:port, nothing else."""
    try:
        return parse_host(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _setup_logging(args: argparse.Namespace) -> None:
    from ollama_keepwarm.logs import configure_logging

    configure_logging(args.log_level, args.log_format)


def cmd_run(args: argparse.Namespace) -> int:
    """Run the daemon until SIGTERM."""
    config = _config_or_exit(args)
    _setup_logging(args)
    from ollama_keepwarm.daemon.keeper import Keeper
    from ollama_keepwarm.daemon.systemd import make_notifier

    path = find_config(args.config)
    keeper = Keeper(config, notifier=make_notifier(), reload_config=lambda: load_config(path))
    return asyncio.run(keeper.run())


def cmd_warm(args: argparse.Namespace) -> int:
    """Warm every model once and exit: the ExecStartPost companion."""
    config = _config_or_exit(args)
    from ollama_keepwarm.commands.oneshot import warm_all
    from ollama_keepwarm.daemon.state import LoadTimeStore, default_state_dir

    state_dir = Path(config.daemon.state_dir) if config.daemon.state_dir else default_state_dir()
    times = LoadTimeStore(args.load_times.parent if args.load_times else state_dir)
    if args.load_times:
        times.path = args.load_times
    outcomes, reached = asyncio.run(
        warm_all(config, args.timeout, _say, deadline_s=args.deadline, load_times=times.load())
    )
    failed = [o for o in outcomes if not o.ok]
    skipped = [o for o in outcomes if o.skipped]
    if not reached:
        unreached = sorted({o.detail for o in failed if o.detail.endswith("never answered")})
        _say(f"ollama-keepwarm: {'; '.join(unreached)} within {args.timeout:g}s")
        return EX_UNAVAILABLE
    warm = len(outcomes) - len(failed) - len(skipped)
    left = f", {len(skipped)} left to the daemon ({', '.join(o.name for o in skipped)})"
    _say(f"{warm}/{len(outcomes)} warm" + (left if skipped else ""))
    return EX_WARM_FAILED if failed else EX_OK


def cmd_check(args: argparse.Namespace) -> int:
    """Validate the config, reach Ollama, and print what the keeper would do now."""
    config = _config_or_exit(args)
    if not config.models:
        _say(
            f"ollama-keepwarm: {config.source or 'the environment'} keeps no models: add a "
            "[[models]] table (or set OLLAMA_KEEPWARM_MODELS); there is nothing to warm"
        )
        return EX_WARM_FAILED
    print(f"config {config.source or 'from the environment'}: ok, {len(config.models)} models")
    from ollama_keepwarm.commands.oneshot import check
    from ollama_keepwarm.commands.status_client import fetch_daemon_status

    daemon = asyncio.run(fetch_daemon_status(config))  # its view first: it keeps them
    reached, problems, lines = asyncio.run(check(config, args.timeout, _say, daemon))
    if any(m.learned for m in config.models):
        from ollama_keepwarm.commands import learned

        found = learned.report(config, learned.state_dir_of(config), datetime.now(UTC))
        lines += ["learned hours:", *learned.lines(found)]
    print("\n".join(lines))
    if not reached:
        return EX_UNAVAILABLE
    return EX_WARM_FAILED if problems else EX_OK


def cmd_learned(args: argparse.Namespace) -> int:
    """Print each learned model's hours and profile (from the daemon's state file)."""
    config = _config_or_exit(args)
    from ollama_keepwarm.commands import learned

    directory = args.state_dir or learned.state_dir_of(config)
    found = learned.report(config, directory, datetime.now(UTC))
    if args.json:
        print(json.dumps({"state_dir": str(directory), "models": found}, indent=2))
    elif not found:
        print('no model has when = "learned"')
    else:
        print(f"learned hours (from {directory}):")
        print("\n".join(learned.lines(found)))
    return EX_OK


def cmd_status(args: argparse.Namespace) -> int:
    """Show the running daemon's view, or Ollama's own when no daemon answers."""
    from ollama_keepwarm.commands.status_client import fetch_status, tried
    from ollama_keepwarm.daemon.status import render_table

    config: Config | None
    try:
        config = load_config(find_config(args.config))
    except ConfigError as exc:
        if args.config:
            _say(f"ollama-keepwarm: config error: {exc}")
            return EX_CONFIG
        if exc.key or "no config file found" not in exc.reason:
            # A file on the search path (or a variable) is broken: status still shows what it
            # can, but must not pretend the config was read.
            _say(f"ollama-keepwarm: not using the config: {exc}")
        config = None
    try:
        document: dict[str, Any] | None = asyncio.run(fetch_status(config, args.url))
    except ConfigError as exc:  # no config, and $OLLAMA_HOST is no host
        _say(f"ollama-keepwarm: config error: {exc}")
        return EX_CONFIG
    if document is None:
        _say("ollama-keepwarm: nothing answered; tried " + "; ".join(tried(config, args.url)))
        return EX_UNAVAILABLE
    _say(f"status from {document.pop('reached', 'an unknown source')}")
    if args.json:
        print(json.dumps(document, indent=2))
    else:
        colour = sys.stdout.isatty() and "NO_COLOR" not in os.environ
        sys.stdout.write(render_table(document, colour=colour))
    return EX_OK


def _socket_path(args: argparse.Namespace) -> Path:
    """The control socket: from the config when one is found, else the default location."""
    from ollama_keepwarm.daemon.control import default_socket_path

    try:
        config = load_config(find_config(args.config))
    except ConfigError:
        if args.config:
            raise
        return default_socket_path()
    if config.daemon.control_socket:
        return Path(config.daemon.control_socket)
    return default_socket_path()


def cmd_control(args: argparse.Namespace) -> int:
    """Send pause/resume/refresh to the running daemon over its Unix socket."""
    from ollama_keepwarm.daemon.control import ControlError, send_command

    request: dict[str, Any] = {"command": args.command, "model": getattr(args, "model", None)}
    if args.command == "pause":
        request["for_s"] = getattr(args, "for_s", None)
        request["unload"] = args.unload
    try:
        path = _socket_path(args)
        reply = asyncio.run(send_command(path, request))
    except ConfigError as exc:
        _say(f"ollama-keepwarm: config error: {exc}")
        return EX_CONFIG
    except ControlError as exc:
        _say(f"ollama-keepwarm: {exc}")
        return EX_UNAVAILABLE
    _say(f"daemon at {path}")  # without -c, the default socket may be another daemon's
    print(reply.get("message", ""))
    return EX_OK if reply.get("ok") else EX_WARM_FAILED


def cmd_demo(args: argparse.Namespace) -> int:
    """Run the fake Ollama and the daemon together, narrated."""
    from ollama_keepwarm.commands.demo import run_demo

    status: int = asyncio.run(run_demo(duration_s=args.duration))
    return status


def _add_common(parser: argparse.ArgumentParser, *, timeout: str | None = None) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=_file_name,
        metavar="FILE",
        help="config file (default: $OLLAMA_KEEPWARM_CONFIG, ./config.toml, "
        "/etc/ollama-keepwarm/config.toml)",
    )
    if timeout is not None:
        parser.add_argument(
            "--timeout",
            type=_duration,
            default=_duration(timeout),
            metavar="DUR",
            help=f"how long to wait for Ollama (default {timeout})",
        )


def _add_learned(commands: Any) -> None:
    learned = commands.add_parser("learned", help='show the hours learned for when = "learned"')
    _add_common(learned)
    learned.add_argument("--json", action="store_true", help="print the profiles as JSON")
    learned.add_argument(
        "--state-dir", type=Path, help="the daemon's state directory (default: from the config)"
    )
    learned.set_defaults(run=cmd_learned)


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand registered."""
    parser = _Parser(
        prog="ollama-keepwarm",
        description="Keep Ollama models warm across expiries, evictions, restarts and suspends.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # Subcommands are _Parser too (argparse uses the parent's class); typed as the base class
    # the modules that add subcommands expect.
    commands = cast(
        "argparse._SubParsersAction[argparse.ArgumentParser]",
        parser.add_subparsers(dest="command", metavar="COMMAND", required=True),
    )

    run = commands.add_parser("run", help="run the daemon (what systemd runs)")
    _add_common(run)
    run.add_argument(
        "--log-level",
        default="info",
        choices=["debug", "info", "warning", "error"],
        help="the least severe events logged (default info; debug adds every poll's plan)",
    )
    run.add_argument(
        "--log-format",
        choices=["console", "logfmt", "json"],
        help="default: logfmt under journald, console on a TTY, else json",
    )
    run.set_defaults(run=cmd_run)

    warm = commands.add_parser("warm", help="wait for Ollama, warm every model once, exit")
    _add_common(warm, timeout="2m")
    warm.add_argument(
        "--deadline",
        type=_duration,
        help="finish within this long: start only the loads that fit (a load cut short is "
        "aborted inside Ollama), in priority order, and leave the rest to the daemon",
    )
    warm.add_argument(
        "--load-times",
        type=Path,
        metavar="FILE",
        help="the daemon's measured load times (default: load-times.json in the state dir)",
    )
    warm.set_defaults(run=cmd_warm)

    check = commands.add_parser("check", help="validate the config, reach Ollama, show the plan")
    _add_common(check, timeout="10s")
    check.set_defaults(run=cmd_check)

    status = commands.add_parser("status", help="show each kept model's state")
    _add_common(status)
    status.add_argument("--json", action="store_true", help="print the JSON document")
    status.add_argument(
        "--url", type=_url, help="the daemon's HTTP endpoint (default: from the config)"
    )
    status.set_defaults(run=cmd_status)

    _add_learned(commands)
    demo = commands.add_parser("demo", help="the daemon against a built-in fake Ollama, narrated")
    demo.add_argument(
        "--duration",
        type=_seconds,
        default=45.0,
        metavar="SECONDS",
        help="how long the demo runs (default 45)",
    )
    demo.set_defaults(run=cmd_demo)

    pause = commands.add_parser("pause", help="stop keeping a model warm (give its VRAM back)")
    _add_common(pause)
    pause.add_argument("model", help="a configured model name")
    pause.add_argument(
        "--for",
        dest="for_s",
        type=_duration,
        metavar="DUR",
        help="end the pause by itself after DUR (default: until `resume`)",
    )
    pause.add_argument("--unload", action="store_true", help="also unload it from Ollama now")
    pause.set_defaults(run=cmd_control)

    resume = commands.add_parser("resume", help="keep a paused model warm again")
    _add_common(resume)
    resume.add_argument("model", help="a configured model name")
    resume.set_defaults(run=cmd_control)

    refresh = commands.add_parser("refresh", help="refresh one model (or all) now")
    _add_common(refresh)
    refresh.add_argument("model", nargs="?", help="a configured model name (default: all)")
    refresh.set_defaults(run=cmd_control)

    fake_cli.add_parser(commands)
    try:
        from ollama_keepwarm.commands import install
    except ImportError:  # pragma: no cover - the systemd installer is optional in a slim build
        pass
    else:
        install.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command named in ``argv`` and return its exit status."""
    args = build_parser().parse_args(argv)
    try:
        status: int = args.run(args)
    except KeyboardInterrupt:
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
