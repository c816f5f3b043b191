"""Go's duration syntax, exactly as Ollama parses and prints it.

Ollama reads ``keep_alive`` strings with Go's ``time.ParseDuration`` and reports the errors in
Go's words (reference §1.1). Both our config and the fake Ollama speak that syntax, so it lives
here once, in integer nanoseconds like Go's ``time.Duration``, to keep rounding identical.
"""

from __future__ import annotations

__all__ = [
    "INFINITE_NS",
    "NS_PER_SECOND",
    "DurationError",
    "format_go_duration",
    "go_quote",
    "parse_go_duration",
]

NS_PER_SECOND = 1_000_000_000
INFINITE_NS = (1 << 63) - 1
"""The largest Go duration: what Ollama stores for any negative keep_alive (~292.3 years)."""

_UNITS_NS: dict[str, int] = {
    "ns": 1,
    "us": 1_000,
    "\u00b5s": 1_000,  # micro sign
    "\u03bcs": 1_000,  # Greek small letter mu
    "ms": 1_000_000,
    "s": NS_PER_SECOND,
    "m": 60 * NS_PER_SECOND,
    "h": 3600 * NS_PER_SECOND,
}
_LIMIT = 1 << 63


class DurationError(ValueError):
    """A string Go's ``time.ParseDuration`` rejects; ``str()`` is Go's own message."""


def _bytes(char: str) -> bytes:
    """The bytes behind one character; a non-UTF-8 environment value gives lone surrogates."""
    try:
        return char.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return char.encode("utf-8", "backslashreplace")


def go_quote(text: str) -> str:
    """Quote ``text`` the way Go's ``time`` package does in its error messages."""
    out = ['"']
    for char in text:
        if char >= "\x80" or char < " ":
            out.extend(f"\\x{byte:02x}" for byte in _bytes(char))
        else:
            if char in '"\\':
                out.append("\\")
            out.append(char)
    out.append('"')
    return "".join(out)


def _leading_digits(text: str) -> tuple[str, str]:
    end = 0
    while end < len(text) and "0" <= text[end] <= "9":
        end += 1
    return text[:end], text[end:]


def parse_go_duration(text: str) -> int:  # noqa: C901 - one pass, as Go writes it
    """Parse ``text`` as ``time.ParseDuration`` does and return nanoseconds.

    Raises:
        DurationError: with Go's exact message (``time: missing unit in duration "-1"``).
    """
    original = text
    invalid = DurationError(f"time: invalid duration {go_quote(original)}")
    negative = False
    if text and text[0] in "+-":
        negative = text[0] == "-"
        text = text[1:]
    if text == "0":
        return 0
    if not text:
        raise invalid
    total = 0
    while text:
        if not (text[0] == "." or "0" <= text[0] <= "9"):
            raise invalid
        whole, text = _leading_digits(text)
        fraction = ""
        has_point = text.startswith(".")
        if has_point:
            fraction, text = _leading_digits(text[1:])
        if not whole and not fraction:
            raise invalid
        end = 0
        while end < len(text) and not (text[end] == "." or "0" <= text[end] <= "9"):
            end += 1
        if end == 0:
            raise DurationError(f"time: missing unit in duration {go_quote(original)}")
        unit_name, text = text[:end], text[end:]
        unit = _UNITS_NS.get(unit_name)
        if unit is None:
            raise DurationError(
                f"time: unknown unit {go_quote(unit_name)} in duration {go_quote(original)}"
            )
        value = int(whole or "0")
        if value > _LIMIT // unit:
            raise invalid
        value *= unit
        if fraction.strip("0"):
            # Go keeps at most ~19 significant fraction digits; float maths as Go does.
            digits = fraction[:18]
            value += int(int(digits) * (unit / 10 ** len(digits)))
            if value > _LIMIT:
                raise invalid
        total += value
        if total > _LIMIT:
            raise invalid
    if negative:
        return -total
    if total > _LIMIT - 1:
        raise invalid
    return total


def format_go_duration(ns: int) -> str:
    """Format nanoseconds like Go's ``Duration.String()``: ``5m0s``, ``1h30m0s``, ``1.5s``."""
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    ns = abs(ns)
    if ns < NS_PER_SECOND:
        for unit, size in (("ms", 1_000_000), ("\u00b5s", 1_000), ("ns", 1)):
            if ns >= size:
                return sign + _decimal(ns, size) + unit
    hours, rest = divmod(ns, 3600 * NS_PER_SECOND)
    minutes, rest = divmod(rest, 60 * NS_PER_SECOND)
    text = _decimal(rest, NS_PER_SECOND) + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    if hours:
        text = f"{hours}h{text}"
    return sign + text


def _decimal(value: int, unit: int) -> str:
    whole, frac = divmod(value, unit)
    if not frac:
        return str(whole)
    width = len(str(unit)) - 1
    return f"{whole}.{str(frac).rjust(width, '0').rstrip('0')}"
