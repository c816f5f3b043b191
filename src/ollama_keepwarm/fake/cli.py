"""``ollama-keepwarm fake-ollama``: run the fake Ollama on its own, to test any client against it.

Flags win over the environment; absent flags fall back to ``OLLAMA_KEEP_ALIVE`` and
``OLLAMA_MAX_LOADED_MODELS`` exactly as ``ollama serve`` reads them (reference §1.2, §4.1).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from typing import TYPE_CHECKING, Any

from ollama_keepwarm.fake.catalog import CatalogError, default_catalog, load_catalog, parse_size
from ollama_keepwarm.fake.versions import CURRENT_STABLE, VersionError, parse_version

if TYPE_CHECKING:
    from ollama_keepwarm.fake.server import FakeOllama

__all__ = ["add_parser", "max_loaded_from_env", "run"]

log = logging.getLogger("ollama_keepwarm.fake")


def add_parser(commands: Any) -> None:
    """Register the ``fake-ollama`` subcommand."""
    parser: argparse.ArgumentParser = commands.add_parser(
        "fake-ollama",
        help="run a fake Ollama server (scheduler, keep-alive, eviction, faults)",
        description="Serve a fake Ollama API that behaves like the real scheduler.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=_port, default=11434, help="port to bind (11434)")
    parser.add_argument("--catalog", metavar="FILE", help="TOML catalogue of [[models]]")
    parser.add_argument(
        "--max-loaded",
        type=int,
        metavar="N",
        help="cap on loaded models (default: OLLAMA_MAX_LOADED_MODELS, else 3)",
    )
    parser.add_argument(
        "--memory", metavar="SIZE", default="16GiB", help="VRAM budget, e.g. 24GiB; 0 = CPU only"
    )
    parser.add_argument(
        "--default-keep-alive",
        metavar="DUR",
        help="server default keep-alive, parsed like OLLAMA_KEEP_ALIVE (default: that, else 5m)",
    )
    parser.add_argument(
        "--load-seconds-per-gb",
        type=float,
        default=1.0,
        metavar="X",
        help="load time per GB (10^9 bytes) of weights, before --time-scale (default 1.0)",
    )
    parser.add_argument(
        "--time-scale", type=float, default=1.0, metavar="X", help="divide every wait by X"
    )
    parser.add_argument(
        "--ollama-version",
        default=CURRENT_STABLE,
        metavar="X.Y.Z",
        help=f"the Ollama to imitate: its /api/version and its rules ({CURRENT_STABLE}; "
        "before 0.30.0 the old reload, memory and OOM rules)",
    )
    parser.add_argument(
        "--unload-delay",
        type=float,
        default=0.0,
        metavar="S",
        help="seconds between a timer firing and the unload (widens the stale-expiry race)",
    )
    parser.add_argument(
        "--seconds-per-token",
        type=float,
        default=0.01,
        metavar="S",
        help="generation time per output token, before --time-scale (default 0.01)",
    )
    parser.add_argument(
        "--runner-processes",
        action="store_true",
        help="give each runner a real child process from the start of its load (in a cgroup "
        "when possible) whose command line is the imitated version's runner argv, and that "
        "/_fake/crash kills, so a runner watch can see it",
    )
    parser.add_argument(
        "--seconds-per-prompt-token",
        type=float,
        default=0.0002,
        metavar="S",
        help="prompt processing per token not in the slot's cache (0.0002)",
    )
    parser.add_argument(
        "--num-parallel", type=int, default=1, metavar="N", help="OLLAMA_NUM_PARALLEL (1)"
    )
    parser.set_defaults(run=run)


def _port(text: str) -> int:
    """A TCP port, 0 (any free one) to 65535: a bad one is a usage error, not a bind traceback."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a port number, not {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"must be from 0 to 65535, not {port}")
    return port


def max_loaded_from_env(raw: str | None) -> int:
    """Read ``OLLAMA_MAX_LOADED_MODELS``: a positive integer, else the automatic 3 (no GPU)."""
    text = (raw or "").strip().strip("\"'")
    try:
        value = int(text)
    except ValueError:
        return 3
    return value if value > 0 else 3


def run(args: argparse.Namespace) -> int:
    """Serve until SIGINT or SIGTERM; return the exit status."""
    logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="%(message)s")
    try:
        catalog = load_catalog(args.catalog) if args.catalog else default_catalog()
        memory_bytes = parse_size(args.memory)
        parse_version(args.ollama_version)
    except (OSError, CatalogError, VersionError, ValueError) as error:
        print(f"fake-ollama: {error}", file=sys.stderr)
        return 2
    keep_alive = args.default_keep_alive
    if keep_alive is None:
        keep_alive = os.environ.get("OLLAMA_KEEP_ALIVE", "")
    max_loaded = args.max_loaded
    if max_loaded is None:
        max_loaded = max_loaded_from_env(os.environ.get("OLLAMA_MAX_LOADED_MODELS"))
    try:
        fake = _make_fake(args, catalog, memory_bytes, keep_alive, max_loaded)
    except ValueError as error:  # a knob out of range: said in one line, as the flags above
        print(f"fake-ollama: {error}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(_serve(fake, args.host, args.port))
    except OSError as error:
        print(f"fake-ollama: cannot listen on {args.host}:{args.port}: {error}", file=sys.stderr)
        return 1


def _make_fake(
    args: argparse.Namespace, catalog: Any, memory_bytes: int, keep_alive: str, max_loaded: int
) -> FakeOllama:
    from ollama_keepwarm.fake.server import FakeOllama  # the server only when it is asked for

    return FakeOllama(
        catalog=catalog,
        max_loaded=max_loaded,
        memory_bytes=memory_bytes,
        default_keep_alive=keep_alive,
        load_seconds_per_gb=args.load_seconds_per_gb,
        time_scale=args.time_scale,
        ollama_version=args.ollama_version,
        unload_delay_s=args.unload_delay,
        seconds_per_token=args.seconds_per_token,
        runner_processes=args.runner_processes,
        seconds_per_prompt_token=args.seconds_per_prompt_token,
        num_parallel=args.num_parallel,
    )


async def _serve(fake: FakeOllama, host: str, port: int) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await fake.start(host=host, port=port)
    log.info("fake ollama %s listening on %s", fake.ollama_version, fake.url)
    try:
        await stop.wait()
    finally:
        log.info("fake ollama stopping")
        await fake.stop()
    return 0
