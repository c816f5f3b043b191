"""The one place logging is configured: structlog for us, stdlib for the libraries.

Three renderings: a human console on a TTY; ``key=value`` lines without a timestamp under journald
(``JOURNAL_STREAM`` is set; journald stamps every line itself); JSON lines otherwise, for
collectors, on **stdout** (what a container's log driver and ``kubectl logs`` read as the
program's output; the other two go to stderr, beside the CLI's messages). Event names are stable
snake_case facts; data goes in fields, never in the text.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Any, Literal

import structlog

__all__ = ["LogFormat", "choose_format", "configure_logging"]

LogFormat = Literal["console", "logfmt", "json"]


def choose_format(environ: Mapping[str, str], is_tty: bool) -> LogFormat:
    """Pick a rendering: journald gets logfmt, a terminal gets colours, anything else JSON."""
    if environ.get("JOURNAL_STREAM"):
        return "logfmt"
    return "console" if is_tty else "json"


def configure_logging(
    level: str = "info", fmt: LogFormat | None = None, environ: Mapping[str, str] | None = None
) -> None:
    """Configure structlog and the stdlib root logger once, from the CLI."""
    env = os.environ if environ is None else environ
    fmt = fmt or choose_format(env, sys.stderr.isatty())
    numeric = logging.getLevelName(level.upper())
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
    ]
    renderer: Any
    if fmt == "console":
        shared.append(structlog.processors.TimeStamper(fmt="%H:%M:%S", utc=False))
        renderer = structlog.dev.ConsoleRenderer(colors="NO_COLOR" not in env)
    elif fmt == "logfmt":
        renderer = structlog.processors.LogfmtRenderer(
            key_order=["level", "event"], bool_as_flag=False
        )
    else:
        shared.append(structlog.processors.TimeStamper(fmt="iso", utc=True))
        renderer = structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout if fmt == "json" else sys.stderr),
        cache_logger_on_first_use=True,
    )
    # Libraries log through the stdlib; APScheduler says "Running job ..." at INFO every tick.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)
