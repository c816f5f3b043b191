"""The control socket: ``pause``, ``resume``, ``refresh`` from the CLI to the running daemon.

A Unix socket only, never TCP: who may steer the keeper is decided by file permissions (mode
0660, so the daemon's user and group), not by a network policy. The protocol is one JSON object
per line each way: ``{"command": "pause", "model": "x", "for_s": 600, "unload": true}`` →
``{"ok": true, "message": "..."}``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import structlog

__all__ = ["ControlError", "ControlServer", "default_socket_path", "send_command"]

_log = structlog.get_logger("ollama_keepwarm")
SOCKET_MODE = 0o660
Handler = Callable[[Mapping[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(Exception):
    """The daemon could not be reached, or refused the command."""


def default_socket_path(environ: Mapping[str, str] | None = None) -> Path:
    """``$RUNTIME_DIRECTORY/control.sock`` under systemd, else a per-user runtime path."""
    env = os.environ if environ is None else environ
    if env.get("RUNTIME_DIRECTORY"):
        return Path(env["RUNTIME_DIRECTORY"].split(":")[0]) / "control.sock"
    if os.geteuid() == 0:
        return Path("/run/ollama-keepwarm/control.sock")
    runtime = env.get("XDG_RUNTIME_DIR") or f"/tmp/ollama-keepwarm-{os.geteuid()}"
    return Path(runtime) / "ollama-keepwarm" / "control.sock"


class ControlServer:
    """Serves commands on a Unix socket, one JSON line per request."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path = path
        self._handler = handler
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> bool:
        """Listen; a path we cannot use is logged and the daemon runs on without control."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            if await _is_listening(self.path):
                _log.warning(
                    "control_socket_busy",
                    path=str(self.path),
                    hint="another ollama-keepwarm is running; set daemon.control_socket",
                )
                return False
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()  # a stale socket from a daemon that died
            listener = _bind_private(self.path)
            self._server = await asyncio.start_unix_server(self._serve, sock=listener)
            self.path.chmod(SOCKET_MODE)
        except OSError as exc:
            _log.warning("control_socket_failed", path=str(self.path), error=str(exc))
            return False
        _log.info("control_socket_listening", path=str(self.path))
        return True

    async def stop(self) -> None:
        """Close the socket and remove its file."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            with contextlib.suppress(OSError):
                self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=10)
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("expected a JSON object")
                reply = await self._handler(request)
            except ValueError as exc:
                reply = {"ok": False, "message": f"bad request: {exc}"}
            writer.write(json.dumps(reply).encode() + b"\n")
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        except asyncio.CancelledError:
            # The daemon is stopping mid-command. This task is the connection's own top level:
            # ending it quietly is right, and on Python 3.11 a cancelled handler task makes
            # asyncio's stream callback log "Exception in callback" with a traceback.
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def _is_listening(path: Path) -> bool:
    try:
        _reader, writer = await asyncio.open_unix_connection(str(path))
    except OSError:
        return False
    writer.close()
    return True


async def send_command(
    path: Path, request: Mapping[str, Any], *, timeout_s: float = 30
) -> dict[str, Any]:
    """Send one command to the daemon and return its reply.

    Raises:
        ControlError: no daemon listens at ``path``, permission denied, or a garbled reply.
    """
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(path)), timeout=timeout_s
        )
    except FileNotFoundError:
        raise ControlError(f"no daemon listening at {path} (is ollama-keepwarm running?)") from None
    except PermissionError:
        raise ControlError(
            f"permission denied on {path}: run as the daemon's user or group (or root)"
        ) from None
    except (OSError, TimeoutError) as exc:
        raise ControlError(f"cannot connect to {path}: {exc}") from None
    try:
        writer.write(json.dumps(dict(request)).encode() + b"\n")
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout=timeout_s)
    finally:
        writer.close()
    try:
        reply = json.loads(line)
    except ValueError:
        raise ControlError(f"garbled reply from the daemon: {line[:200]!r}") from None
    if not isinstance(reply, dict):
        raise ControlError("garbled reply from the daemon")
    return reply


def _bind_private(path: Path) -> socket.socket:
    """Bind a listening Unix socket that is never world-usable, not even for an instant.

    The umask is process-wide, so it is changed only around the synchronous ``bind``: with an
    ``await`` inside that window, whatever else the loop ran meanwhile (a state file, a test's
    files, another server) would be created with it, and a task cancelled there would leave it
    changed for good.
    """
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        old_umask = os.umask(0o117)
        try:
            listener.bind(str(path))
        finally:
            os.umask(old_umask)
        listener.listen(16)
        listener.setblocking(False)
    except OSError:
        listener.close()
        raise
    return listener
