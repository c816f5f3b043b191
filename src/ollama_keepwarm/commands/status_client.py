"""Fetch the status document: from the running daemon, else straight from Ollama.

Without a daemon the view has no history (last warm, backoff), so it says what ``/api/ps`` says
about each configured model, and what the keeper *would* do.
"""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp

from ollama_keepwarm.core import plan
from ollama_keepwarm.core.config import Config, ConfigError, DaemonConfig, ModelConfig, parse_host
from ollama_keepwarm.core.ps import PsSnapshot
from ollama_keepwarm.daemon.control import ControlError, default_socket_path, send_command
from ollama_keepwarm.daemon.status import model_entry
from ollama_keepwarm.ollama import OllamaClient, OllamaError

__all__ = ["env_host", "fetch_daemon_status", "fetch_status"]

_SHORT = aiohttp.ClientTimeout(total=3)
_ACTS = frozenset({plan.Action.WARM, plan.Action.REFRESH, plan.Action.UNLOAD})
"""What a keeper would do now; without one, the fallback view says nobody does it."""


def env_host() -> str:
    """``$OLLAMA_HOST`` as a URL, for when no config names the hosts.

    Raises:
        ConfigError: naming OLLAMA_HOST, when no client could dial it.
    """
    try:
        return parse_host(os.environ.get("OLLAMA_HOST"))
    except ValueError as exc:
        raise ConfigError("OLLAMA_HOST", str(exc)) from None


async def _from_daemon(session: aiohttp.ClientSession, url: str) -> dict[str, Any] | None:
    try:
        async with session.get(url.rstrip("/") + "/status", timeout=_SHORT) as resp:
            if resp.status != 200:
                return None
            body = await resp.json()
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    body["reached"] = f"the daemon at {url}"
    return body


async def _from_ollama(
    session: aiohttp.ClientSession, config: Config | None
) -> dict[str, Any] | None:
    hosts = config.hosts if config else (env_host(),)
    entries: list[dict[str, Any]] = []
    reached = False
    now = datetime.now().astimezone()
    for host in hosts or (parse_host(None),):
        client = OllamaClient(session, host, request_timeout_s=5)
        try:
            version = await client.version()
            snapshot: PsSnapshot | None = await client.ps()
        except OllamaError:
            version, snapshot = None, None
        reached = reached or snapshot is not None
        if config is not None:
            models = tuple(m for m in config.models if m.host == host)
        else:  # no config: show what is loaded, as `ollama ps` would
            rows = snapshot.models if snapshot else ()
            models = tuple(ModelConfig(name=r.name, host=host) for r in rows)
        decisions = plan.decide(
            models, config.daemon if config else DaemonConfig(), snapshot, {}, now
        )
        entries_of_host = []
        for decision in decisions:  # no daemon: nothing will refresh anything
            entry = model_entry(decision, plan.ModelState(), now)
            entry["next_refresh_in_s"] = None
            if decision.action in _ACTS:
                entry["reason"] = (
                    f"nobody keeps it (a keeper would {decision.action.value}: {decision.reason})"
                )
            entries_of_host.append(entry)
        entries.append(
            {
                "host": host,
                "ollama_up": snapshot is not None,
                "version": version,
                "poll_errors": 0,
                "polled_at": now.isoformat() if snapshot else None,
                "models": entries_of_host,
            }
        )
    if not reached:
        return None
    return {
        "source": "ollama",
        "now": now.isoformat(),
        "ready": None,
        "all_warm": all(m["state"] == "warm" for h in entries for m in h["models"]),
        "summary": "no daemon answered: nobody is keeping these models; this is Ollama's own view",
        "resumes": None,
        "config": str(config.source) if config and config.source else "",
        "hosts": entries,
        "reached": "no daemon; Ollama at "
        + ", ".join(e["host"] for e in entries if e["ollama_up"]),
    }


async def _from_socket(config: Config | None) -> dict[str, Any] | None:
    path = (
        Path(config.daemon.control_socket)
        if config and config.daemon.control_socket
        else default_socket_path()
    )
    try:
        reply = await send_command(path, {"command": "status"}, timeout_s=5)
    except ControlError:
        return None
    status = reply.get("status")
    if not isinstance(status, dict):
        return None
    status["reached"] = f"the daemon at {path}"
    return status


def tried(config: Config | None, url: str | None) -> list[str]:
    """Where ``fetch_status`` looks, in order: said when nothing answered."""
    path = (
        Path(config.daemon.control_socket)
        if config and config.daemon.control_socket
        else default_socket_path()
    )
    places = [] if url else [f"the daemon's socket {path}"]
    if url is None and config is not None and config.http.enabled:
        url = f"http://{config.http.host}:{config.http.port}"
    if url or config is None:
        places.append(f"the daemon at {url or 'http://127.0.0.1:11435'}")
    hosts = config.hosts if config else (env_host(),)
    places.append("Ollama at " + ", ".join(hosts or (parse_host(None),)))
    return places


async def fetch_daemon_status(config: Config) -> dict[str, Any] | None:
    """The running daemon's own status document (its socket, then its HTTP endpoint), or None.

    ``check`` asks it first: while a daemon keeps the models, its view is the truth, not what
    a fresh keeper would plan.
    """
    document = await _from_socket(config)
    if document is None and config.http.enabled:
        async with aiohttp.ClientSession() as session:
            document = await _from_daemon(session, f"http://{config.http.host}:{config.http.port}")
    return document


async def fetch_status(config: Config | None, url: str | None) -> dict[str, Any] | None:
    """Return the daemon's status document (socket, then HTTP), else Ollama's view, else None.

    The document's ``reached`` says which of them answered: without ``-c`` the default socket
    and port may belong to another daemon than the one meant.
    """
    if url is None:
        document = await _from_socket(config)
        if document is not None:
            return document
    if url is None and config is not None and config.http.enabled:
        url = f"http://{config.http.host}:{config.http.port}"
    async with aiohttp.ClientSession() as session:
        if url or config is None:
            document = await _from_daemon(session, url or "http://127.0.0.1:11435")
            if document is not None:
                return document
        return await _from_ollama(session, config)
