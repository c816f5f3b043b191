"""Command line: argv to a command, and the only place with ``asyncio.run`` and exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ollama_keepwarm import __version__
from ollama_keepwarm.fake import cli as fake_cli

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="ollama-keepwarm",
        description="Keep Ollama models warm across expiries, evictions, restarts and suspends.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    fake_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command named in ``argv`` and return its exit status."""
    args = build_parser().parse_args(argv)
    run: object = args.run
    assert callable(run)
    status = run(args)
    assert isinstance(status, int)
    return status


if __name__ == "__main__":
    sys.exit(main())
