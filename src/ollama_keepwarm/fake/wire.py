"""Bytes on the wire, the way Ollama's Go server writes and reads them.

Clients parse what they see, so the fake must print times, JSON and error texts exactly as Go does
(reference §1.1, §3.3, §5.6). Everything here is pure: no clock reads, no I/O.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any

from ollama_keepwarm.core.durations import (
    INFINITE_NS,
    NS_PER_SECOND,
    DurationError,
    parse_go_duration,
)

__all__ = [
    "DEFAULT_KEEP_ALIVE_NS",
    "RequestError",
    "decode_body",
    "format_local_time",
    "format_utc_time",
    "go_json",
    "go_quote",
    "parse_env_keep_alive",
    "parse_keep_alive",
]

DEFAULT_KEEP_ALIVE_NS = 5 * 60 * NS_PER_SECOND
"""Ollama's built-in default when ``OLLAMA_KEEP_ALIVE`` is unset, empty or garbage (§1.2)."""

_INT64_LIMIT = 1 << 63
_MIN_INT64 = -(1 << 63)


class RequestError(Exception):
    """A request Ollama refuses; ``status`` and ``message`` become ``{"error": message}``."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def go_json(value: Any) -> bytes:
    """Encode like Go's ``json.Marshal``: compact UTF-8 with ``<``, ``>``, ``&`` escaped."""
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    # Those characters only occur inside strings, so replacing them globally is safe.
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    return text.encode()


def go_quote(text: str) -> str:
    """Quote like Go's ``%q`` (``strconv.Quote``), as in ``"nomic-embed-text" does not support``."""
    out = ['"']
    for char in text:
        if char in '"\\':
            out.append("\\" + char)
        elif char == "\n":
            out.append("\\n")
        elif char == "\t":
            out.append("\\t")
        elif char == "\r":
            out.append("\\r")
        elif char < " " or char == "\x7f":
            out.append(f"\\x{ord(char):02x}")
        else:
            out.append(char)
    out.append('"')
    return "".join(out)


def _fraction(ns: int) -> str:
    return f".{ns:09d}".rstrip("0") if ns else ""


def format_local_time(unix_ns: int) -> str:
    """Format like Go's ``time.Time`` JSON in the local zone: RFC 3339, 0-9 fraction digits.

    ``expires_at`` uses this (§3.3). A zero offset prints ``Z``, as Go does.
    """
    seconds, nanos = divmod(unix_ns, NS_PER_SECOND)
    moment = datetime.fromtimestamp(seconds, tz=UTC).astimezone()
    offset = moment.utcoffset()
    offset_s = int(offset.total_seconds()) if offset is not None else 0
    if offset_s == 0:
        zone = "Z"
    else:
        sign = "+" if offset_s > 0 else "-"
        hours, minutes = divmod(abs(offset_s) // 60, 60)
        zone = f"{sign}{hours:02d}:{minutes:02d}"
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + _fraction(nanos) + zone


def format_utc_time(unix_ns: int) -> str:
    """Format ``created_at``: always UTC with ``Z`` (§2.1), trailing fraction zeros trimmed."""
    seconds, nanos = divmod(unix_ns, NS_PER_SECOND)
    moment = datetime.fromtimestamp(seconds, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + _fraction(nanos) + "Z"


def parse_keep_alive(value: Any) -> int | None:
    """Decode a request's ``keep_alive`` as ``api.Duration.UnmarshalJSON`` does (§1.1).

    Returns nanoseconds, ``None`` for absent/null. Negative means infinite (``INFINITE_NS``).
    An overflowing number wraps to Go's minimum int64 as on amd64, which the scheduler treats
    like 0 (checklist item 4).

    Raises:
        RequestError: 400 with Go's exact message.
    """
    if value is None:
        return None
    if isinstance(value, bool):
        raise RequestError(400, "Unsupported type: 'bool'")
    if isinstance(value, int | float):
        seconds = float(value)
        if seconds < 0:
            return INFINITE_NS
        scaled = seconds * NS_PER_SECOND
        if scaled >= _INT64_LIMIT:
            return _MIN_INT64
        return int(scaled)
    if isinstance(value, str):
        try:
            ns = parse_go_duration(value)
        except DurationError as error:
            raise RequestError(400, str(error)) from None
        return INFINITE_NS if ns < 0 else ns
    if isinstance(value, dict):
        raise RequestError(400, "Unsupported type: 'map[string]interface {}'")
    raise RequestError(400, "Unsupported type: '[]interface {}'")


_GO_INT = re.compile(r"[+-]?[0-9]+")


def parse_env_keep_alive(raw: str | None) -> int:
    """Parse ``OLLAMA_KEEP_ALIVE`` like ``envconfig.KeepAlive`` (§1.2): garbage means 5 m."""
    text = (raw or "").strip().strip("\"'")
    ns = DEFAULT_KEEP_ALIVE_NS
    if text:
        try:
            ns = parse_go_duration(text)
        except DurationError:
            if _GO_INT.fullmatch(text) and abs(int(text)) < _INT64_LIMIT:
                ns = int(text) * NS_PER_SECOND
    return INFINITE_NS if ns < 0 else ns


# --- request bodies -------------------------------------------------------------------------


def _quote_char(char: str) -> str:
    """Quote one character as Go's JSON scanner does in its error messages."""
    if char == "'":
        return "'\\''"
    if char == '"':
        return "'\"'"
    return "'" + go_quote(char)[1:-1] + "'"


def _container_at(text: str, pos: int) -> str:
    """Tell whether ``pos`` is inside an object or an array, ignoring string contents."""
    stack: list[str] = []
    in_string = escaped = False
    for char in text[:pos]:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "{[":
            stack.append(char)
        elif char in "}]" and stack:
            stack.pop()
    return stack[-1] if stack else ""


def _go_syntax_error(text: str, error: json.JSONDecodeError) -> str:
    """Translate Python's JSON error into Go's ``encoding/json`` wording (a ``json.Decoder``)."""
    pos = error.pos
    if pos >= len(text) or error.msg.startswith("Unterminated string"):
        return "unexpected EOF"
    char = _quote_char(text[pos])
    if error.msg.startswith("Expecting property name"):
        return f"invalid character {char} looking for beginning of object key string"
    if error.msg.startswith("Expecting ':'"):
        return f"invalid character {char} after object key"
    if error.msg.startswith("Expecting ','"):
        if _container_at(text, pos) == "[":
            return f"invalid character {char} after array element"
        return f"invalid character {char} after object key:value pair"
    if error.msg.startswith("Invalid control character"):
        return f"invalid character {char} in string literal"
    if error.msg.startswith("Invalid \\escape"):
        return (
            f"invalid character {_quote_char(text[pos + 1 : pos + 2] or ' ')} in string escape code"
        )
    return f"invalid character {char} looking for beginning of value"


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


_GO_TYPE = {
    bool: "bool",
    str: "string",
    list: "array",
    dict: "object",
    int: "number",
    float: "number",
}


def _json_kind(value: Any) -> str:
    return _GO_TYPE.get(type(value), "number")


def decode_body(raw: bytes, go_type: str, fields: dict[str, tuple[type, ...]]) -> dict[str, Any]:
    """Decode a request body as Gin's ``ShouldBindJSON`` into ``go_type`` would.

    ``fields`` maps JSON keys to the Python types Go would accept there (``None`` is always
    accepted, like Go's zero value). ``keep_alive`` is decoded too, and its error wins over
    type errors because Go aborts on an ``UnmarshalJSON`` error but only records type errors.

    Raises:
        RequestError: 400 ``missing request body`` or Go's JSON error text.
    """
    text = raw.decode("utf-8", errors="replace").strip(" \t\r\n")
    if not text:
        raise RequestError(400, "missing request body")
    try:
        value, _end = json.JSONDecoder(parse_constant=_reject_constant).raw_decode(text)
    except json.JSONDecodeError as error:
        raise RequestError(400, _go_syntax_error(text, error)) from None
    except ValueError as error:
        raise RequestError(
            400, f"invalid character {_quote_char(str(error)[0])} looking for beginning of value"
        ) from None
    struct = go_type.rsplit(".", 1)[-1]
    if not isinstance(value, dict):
        if value is None:
            return {}
        kind = _json_kind(value)
        raise RequestError(400, f"json: cannot unmarshal {kind} into Go value of type {go_type}")
    if "keep_alive" in value:
        value["keep_alive"] = parse_keep_alive(value["keep_alive"])
    for key, item in value.items():
        allowed = fields.get(key)
        if allowed is None or item is None:
            continue
        if isinstance(item, bool) != (bool in allowed) or not isinstance(item, allowed):
            wanted = {str: "string", bool: "bool", list: "array", dict: "object"}.get(
                allowed[0], "int"
            )
            go_wanted = {
                "array": "[]api.Message",
                "object": "map[string]interface {}",
            }.get(wanted, wanted)
            raise RequestError(
                400,
                f"json: cannot unmarshal {_json_kind(item)} into Go struct field "
                f"{struct}.{key} of type {go_wanted}",
            )
    return value
