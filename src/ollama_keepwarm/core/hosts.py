"""Ollama host URLs, parsed as Ollama's own clients parse ``OLLAMA_HOST`` (reference §6).

Pure: a string in, a base URL out, or a ValueError that says what no client could dial.
"""

from __future__ import annotations

import ipaddress
import re

__all__ = ["DEFAULT_HOST", "HOSTNAME", "parse_host"]

DEFAULT_HOST = "http://127.0.0.1:11434"

HOSTNAME = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_.-]*[A-Za-z0-9_])?")
"""A host name as a resolver takes it: letters, digits, '_', '-' and '.' (not at the ends)."""


def parse_host(raw: str | None) -> str:
    """Turn an ``OLLAMA_HOST``-style value into a base URL, as ollama-python's ``_parse_host``.

    ``0.0.0.0`` and ``::`` are bind-all addresses; we dial loopback for them (Ollama's own
    ``ConnectableHost``). What no Ollama client could dial is refused, never passed on to fail
    inside the HTTP client: a scheme other than http/https (reference §6), ``http://`` with no
    host, credentials, a query, a port outside 1-65535, characters no host name has.

    Raises:
        ValueError: saying what is wrong with the value.
    """
    text = (raw or "").strip().strip("\"'").strip()
    if not text:
        return DEFAULT_HOST
    port = 11434
    scheme, sep, hostport = text.partition("://")
    if not sep:
        if re.match(r"[A-Za-z][A-Za-z0-9+.-]*:/", text):
            raise ValueError(f"{raw!r} is not a URL: write http://host:port")
        scheme, hostport = "http", text
    elif scheme.lower() not in {"http", "https"}:
        raise ValueError(f"{scheme}:// is not a scheme Ollama speaks: use http:// or https://")
    elif scheme == "http":
        port = 80
    elif scheme == "https":
        port = 443
    scheme = scheme.lower()
    hostport, _, path = hostport.partition("/")
    if "?" in hostport + path or "#" in hostport + path:
        raise ValueError(f"{raw!r}: a host URL takes no query or fragment")
    if "@" in hostport:
        raise ValueError(f"{raw!r}: credentials in the URL are not supported")
    host, port = _split_hostport(raw, hostport, port, bare=not sep)
    path = path.strip("/")
    if any(char.isspace() for char in path):
        raise ValueError(f"{raw!r}: the path contains a space")
    return f"{scheme}://{host}:{port}" + (f"/{path}" if path else "")


def _split_hostport(raw: str | None, hostport: str, port: int, *, bare: bool) -> tuple[str, int]:
    """Split ``host[:port]`` (IPv6 bracketed, or bare without a port) and check both parts."""
    host, port_text = hostport, ""
    if hostport.startswith("["):
        host, close, after = hostport[1:].partition("]")
        if not close or (after and not after.startswith(":")):
            raise ValueError(f"{raw!r}: an IPv6 address in brackets, e.g. [::1]:11434")
        port_text = after[1:]
        if after and not port_text:
            raise ValueError(f"{raw!r}: the port after ':' is missing")
    elif hostport.count(":") > 1:
        host = hostport  # a bare IPv6 address, as Ollama's own parser allows
    elif ":" in hostport:
        host, _, port_text = hostport.partition(":")
        if not port_text:
            raise ValueError(f"{raw!r}: the port after ':' is missing")
    if port_text:
        if not port_text.isascii() or not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
            raise ValueError(f"{raw!r}: the port must be a number from 1 to 65535")
        port = int(port_text)
    if not host:
        if not bare and not port_text:
            raise ValueError(f"{raw!r} names no host: write e.g. http://127.0.0.1:11434")
        host = "127.0.0.1"  # ":8080", as ollama-python reads it
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        if ":" in host or not HOSTNAME.fullmatch(host):
            raise ValueError(f"{raw!r}: {host!r} is not a host name or IP address") from None
        return host.lower(), port
    if address.is_unspecified:  # a bind-all address: dial loopback
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    return (f"[{address}]" if address.version == 6 else str(address)), port
