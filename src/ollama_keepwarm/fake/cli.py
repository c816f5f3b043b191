"""`ollama-keepwarm fake-ollama` (placeholder)."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(commands: Any) -> None:
    """Register the ``fake-ollama`` subcommand."""
    parser: argparse.ArgumentParser = commands.add_parser("fake-ollama", help="run a fake Ollama")
    parser.set_defaults(run=lambda _args: 0)
