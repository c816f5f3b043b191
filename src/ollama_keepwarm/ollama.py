"""A typed Ollama client over one aiohttp session: version, ps, show, load. No decisions.

Loads are never abandoned early: a client disconnect aborts the load inside Ollama (reference
§2.6, §7.9), so load calls get the long ``load_timeout`` while ps/version/show get a short one
(ps can legitimately stall ~10 s, §3.5).
"""

from __future__ import annotations

import functools
import json
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, ParamSpec, TypeVar

import aiohttp

from ollama_keepwarm import __version__
from ollama_keepwarm.core.names import match_key
from ollama_keepwarm.core.ps import PsSnapshot, RunningModel

__all__ = [
    "LoadResult",
    "ModelInfo",
    "OllamaBadAnswerError",
    "OllamaClient",
    "OllamaError",
    "OllamaTimeoutError",
    "OllamaUnreachableError",
    "PrimeResult",
    "keeper_session",
    "parse_ps",
]

USER_AGENT = f"ollama-keepwarm/{__version__}"
"""What the keeper's requests say they are: an operator reading a proxy's log (and the fake's
records) can tell its calls from clients'; aiohttp's default says only "Python, aiohttp"."""

_P = ParamSpec("_P")
_T = TypeVar("_T")
_URL_ERRORS: tuple[type[Exception], ...] = tuple(
    getattr(aiohttp, name)
    for name in ("InvalidURL", "NonHttpUrlClientError")  # the second is aiohttp 3.10+
    if hasattr(aiohttp, name)
)
_BLOB_RE = re.compile(r"^FROM\s+\S*?(sha256[-:][0-9a-fA-F]{64})\s*$", re.MULTILINE)


def keeper_session() -> aiohttp.ClientSession:
    """The session every call of ours to Ollama goes through, named :data:`USER_AGENT`."""
    return aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})


class OllamaError(Exception):
    """Ollama answered, but not with success; carries the HTTP status and Ollama's error text."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


class OllamaUnreachableError(OllamaError):
    """Ollama could not be reached at all (status 0): refused, reset, no route."""

    def __init__(self, message: str) -> None:
        super().__init__(0, message)


class OllamaBadAnswerError(OllamaError):
    """Something answered, but not with valid HTTP or JSON: a garbled, cut or malformed answer.

    Status 502 (a bad gateway: often a proxy in the way) unless the answer had a status of
    its own; never 0, so it is not taken for an outage. Retried with back-off like a 5xx.
    """

    def __init__(self, message: str, status: int = 502) -> None:
        super().__init__(status, message)


class OllamaTimeoutError(OllamaError):
    """Ollama took the connection but did not answer within ``limit_s`` (status 0).

    Not an outage: for a load it means the load was slower than the limit, and giving up has
    aborted it inside Ollama (reference §2.6), so the caller must wait longer next time, not
    retry at once.
    """

    def __init__(self, message: str, *, limit_s: float, waited_s: float) -> None:
        super().__init__(0, message)
        self.limit_s = limit_s
        self.waited_s = waited_s


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """What ``/api/show`` tells us that matters: how to warm it, and which weights it uses."""

    capabilities: tuple[str, ...]
    blob: str | None
    template: str = ""  # the chat template a priming request's prefix is rendered through

    @property
    def embedding_only(self) -> bool:
        """True when generate would refuse it (no ``completion``): warm through embed."""
        return "embedding" in self.capabilities and "completion" not in self.capabilities


@dataclass(frozen=True, slots=True)
class LoadResult:
    """A finished load call: which endpoint served it and its wall time (Ollama reports none)."""

    endpoint: str
    duration_s: float


@dataclass(frozen=True, slots=True)
class PrimeResult:
    """A finished priming request: wall time, and what Ollama says it processed.

    ``prompt_tokens`` is the whole rendered prefix (Ollama counts cached tokens too);
    ``prompt_eval_s`` is the time it really spent on the prompt: long after a load, short when
    the slot already held the prefix.
    """

    duration_s: float
    prompt_tokens: int | None
    prompt_eval_s: float | None


def _field(row: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = row.get(name)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ValueError(f"field {name!r} is missing or not {kind}")
    return value


def parse_ps(body: object, taken_at: datetime) -> PsSnapshot:
    """Parse a ``/api/ps`` body; extra fields are ignored, missing essential ones are errors.

    Raises:
        ValueError: the body is not the shape Ollama sends.
    """
    if not isinstance(body, Mapping) or not isinstance(body.get("models"), list):
        raise ValueError("expected an object with a 'models' array")
    rows = []
    for row in body["models"]:
        if not isinstance(row, Mapping):
            raise ValueError("a 'models' entry is not an object")
        context = row.get("context_length")
        rows.append(
            RunningModel(
                name=_field(row, "name", str),
                size_bytes=int(row.get("size") or 0),
                size_vram_bytes=int(row.get("size_vram") or 0),
                digest=str(row.get("digest") or ""),
                expires_at=_parse_time(_field(row, "expires_at", str)),
                context_length=context if isinstance(context, int) else None,
            )
        )
    return PsSnapshot(taken_at=taken_at, models=tuple(rows))


def _parse_time(text: str) -> datetime:
    # Python 3.11's fromisoformat reads Go's RFC 3339 with nanoseconds (reference §3.3), but a
    # year-2318 "forever" is fine too; naive times would break comparisons, so reject them.
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        raise ValueError(f"expires_at without a time zone: {text!r}")
    return parsed


def _mapped(
    call: Callable[_P, Awaitable[_T]],
) -> Callable[_P, Awaitable[_T]]:
    """Make every exception of a client call one of ours, saying in words what went wrong.

    ``_request`` maps what aiohttp raises; this catches the rest (an answer of the wrong shape
    that a parse trips on, a closed session, a bug): no caller ever sees a foreign exception.
    Cancellation is not an exception here and passes through.
    """

    @functools.wraps(call)
    async def mapped(*args: _P.args, **kwargs: _P.kwargs) -> _T:
        try:
            return await call(*args, **kwargs)
        except OllamaError:
            raise
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
            raise OllamaBadAnswerError(
                f"{call.__name__}: Ollama's answer has an unexpected shape "
                f"({type(exc).__name__}: {exc})",
                status=200,
            ) from exc
        except Exception as exc:
            raise OllamaError(
                0, f"{call.__name__}: the call failed ({type(exc).__name__}: {exc})"
            ) from exc

    return mapped


class OllamaClient:
    """Talk to one Ollama server."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        *,
        request_timeout_s: float = 30.0,
        load_timeout_s: float = 600.0,
    ) -> None:
        self._session = session
        self.base_url = base_url.rstrip("/")
        self._short = aiohttp.ClientTimeout(total=request_timeout_s)
        self._long = aiohttp.ClientTimeout(total=load_timeout_s)

    async def _request(
        self,
        method: str,
        path: str,
        payload: object = None,
        *,
        limit: aiohttp.ClientTimeout,
    ) -> object:
        url = self.base_url + path
        started = time.monotonic()
        try:
            async with self._session.request(method, url, json=payload, timeout=limit) as resp:
                raw = await resp.read()
                status = resp.status
                charset = resp.charset
        except aiohttp.ClientConnectorError as exc:
            # Checked first: a connect timeout is also a TimeoutError, but it means "not there".
            raise OllamaUnreachableError(
                f"cannot connect to {self.base_url}: {_reason(exc)}"
            ) from exc
        except TimeoutError as exc:
            # TimeoutError is an OSError: it must be told apart before the OSError branch, or a
            # slow load reads as an outage with an empty message and is retried at once.
            waited = time.monotonic() - started
            raise OllamaTimeoutError(
                f"{method} {path}: no answer within {limit.total:g}s",
                limit_s=float(limit.total or 0.0),
                waited_s=waited,
            ) from exc
        except aiohttp.ServerDisconnectedError as exc:
            raise OllamaUnreachableError(
                f"{method} {url}: the server closed the connection without answering"
            ) from exc
        except aiohttp.ClientPayloadError as exc:
            raise OllamaBadAnswerError(
                f"{method} {path}: the answer broke off or was garbled in transit ({_reason(exc)})"
            ) from exc
        except _URL_ERRORS as exc:
            raise OllamaUnreachableError(
                f"cannot connect to {self.base_url}: not an http(s) URL that can be reached ({exc})"
            ) from exc
        except aiohttp.ClientResponseError as exc:
            # aiohttp's parser refused the answer (status 400 is its own, not the server's),
            # or too many redirects: something that is not Ollama answered, or a proxy broke it.
            why = _one_line(exc.message or str(exc))
            raise OllamaBadAnswerError(
                f"{method} {path}: the answer was not valid HTTP ({why}): "
                "is something else listening there, or a proxy in the way?"
            ) from exc
        except (aiohttp.ClientConnectionError, OSError) as exc:
            raise OllamaUnreachableError(f"{method} {url}: {_reason(exc)}") from exc
        except aiohttp.ClientError as exc:
            raise OllamaBadAnswerError(
                f"{method} {path}: the call failed ({type(exc).__name__}: {exc})"
            ) from exc
        text = _decode(raw, charset)
        body = _json_or_none(text)
        if status >= 400:
            message = body.get("error") if isinstance(body, Mapping) else None
            raise OllamaError(status, str(message) if message else text.strip()[:200])
        if body is None:
            raise OllamaBadAnswerError(
                f"malformed answer from {path}: not JSON: {text[:200]!r}", status=status
            )
        return body

    @_mapped
    async def version(self) -> str:
        """Return the server version; the cheapest "is Ollama answering" probe."""
        body = await self._request("GET", "/api/version", limit=self._short)
        if not isinstance(body, Mapping) or not isinstance(body.get("version"), str):
            raise OllamaBadAnswerError(f"malformed /api/version answer: {body!r}"[:200], status=200)
        return str(body["version"])

    @_mapped
    async def ps(self) -> PsSnapshot:
        """Return the loaded models."""
        body = await self._request("GET", "/api/ps", limit=self._short)
        try:
            return parse_ps(body, datetime.now().astimezone())
        except (ValueError, TypeError, OverflowError) as exc:
            raise OllamaBadAnswerError(f"malformed /api/ps answer: {exc}", status=200) from exc

    @_mapped
    async def sizes(self) -> dict[str, int]:
        """Return each pulled model's size in bytes, by match key, from ``/api/tags`` (§5.3)."""
        body = await self._request("GET", "/api/tags", limit=self._short)
        models = body.get("models") if isinstance(body, Mapping) else None
        if not isinstance(models, list):
            raise OllamaBadAnswerError("malformed /api/tags answer", status=200)
        return {
            match_key(str(m.get("name"))): int(m.get("size") or 0)
            for m in models
            if isinstance(m, Mapping) and m.get("name")
        }

    @_mapped
    async def show(self, name: str) -> ModelInfo:
        """Return capabilities and weights blob of ``name`` (404 when it is not pulled)."""
        body = await self._request("POST", "/api/show", {"model": name}, limit=self._short)
        if not isinstance(body, Mapping):
            raise OllamaBadAnswerError("malformed /api/show answer", status=200)
        raw_caps = body.get("capabilities")
        caps = tuple(str(c) for c in raw_caps) if isinstance(raw_caps, list) else ("completion",)
        info = body.get("model_info")
        # Before v0.6.4 there is no capabilities field: a pooling type means embedding (§2.5).
        if (
            raw_caps is None
            and isinstance(info, Mapping)
            and any(str(k).endswith(".pooling_type") for k in info)
        ):
            caps = ("embedding",)
        match = _BLOB_RE.search(str(body.get("modelfile") or ""))
        blob = match.group(1).replace(":", "-").lower() if match else None
        template = body.get("template")
        return ModelInfo(
            capabilities=caps, blob=blob, template=template if isinstance(template, str) else ""
        )

    @_mapped
    async def load(
        self,
        name: str,
        *,
        keep_alive: int | str | None,
        options: Mapping[str, Any],
        embedding_only: bool,
        timeout_s: float | None = None,
    ) -> LoadResult:
        """Load (or renew, or just ping) ``name``: empty generate, or empty embed.

        ``options`` go out exactly as configured. ``keep_alive`` is explicit on every load and
        lease renewal (a server with OLLAMA_KEEP_ALIVE=0 would otherwise drop the model at once,
        §1.2); ``None`` leaves it out, which leaves a loaded runner's duration as it is (§0 fact
        2): a health ping that must not revive a runner Ollama is draining (§4.5).
        ``timeout_s`` overrides ``load_timeout`` for this call.
        """
        payload: dict[str, Any] = {"model": name}
        if keep_alive is not None:
            payload["keep_alive"] = keep_alive
        if options:
            payload["options"] = dict(options)
        path = "/api/embed" if embedding_only else "/api/generate"
        limit = self._long if timeout_s is None else aiohttp.ClientTimeout(total=timeout_s)
        started = time.monotonic()
        body = await self._request("POST", path, payload, limit=limit)
        if not isinstance(body, Mapping):
            raise OllamaBadAnswerError(f"malformed {path} answer", status=200)
        if "error" in body:
            raise OllamaError(500, str(body["error"]))
        return LoadResult(endpoint=path, duration_s=time.monotonic() - started)

    async def prime(
        self, endpoint: str, payload: Mapping[str, Any], *, timeout_s: float | None = None
    ) -> PrimeResult:
        """Send one priming request (``core/prime.py`` builds it) and read its counters.

        ``timeout_s`` bounds it (default ``load_timeout``): processing a long prompt on a CPU
        takes about as long as a load. A non-completion ``endpoint`` is our bug: ValueError.
        """
        if endpoint not in {"/api/chat", "/api/generate"}:
            raise ValueError(f"not a completion endpoint: {endpoint}")
        return await self._prime(endpoint, payload, timeout_s)

    @_mapped
    async def _prime(
        self, endpoint: str, payload: Mapping[str, Any], timeout_s: float | None
    ) -> PrimeResult:
        limit = self._long if timeout_s is None else aiohttp.ClientTimeout(total=timeout_s)
        started = time.monotonic()
        body = await self._request("POST", endpoint, dict(payload), limit=limit)
        if not isinstance(body, Mapping):
            raise OllamaBadAnswerError(f"malformed {endpoint} answer", status=200)
        if "error" in body:
            raise OllamaError(500, str(body["error"]))
        count, spent = body.get("prompt_eval_count"), body.get("prompt_eval_duration")
        return PrimeResult(
            duration_s=time.monotonic() - started,
            prompt_tokens=count if isinstance(count, int) and not isinstance(count, bool) else None,
            prompt_eval_s=spent / 1e9 if isinstance(spent, int | float) else None,
        )

    @_mapped
    async def unload(self, name: str) -> None:
        """Ask Ollama to unload ``name`` now: empty generate with ``keep_alive`` 0 (§1.4)."""
        payload = {"model": name, "keep_alive": 0}
        await self._request("POST", "/api/generate", payload, limit=self._short)

    @_mapped
    async def generate_one_token(
        self,
        name: str,
        *,
        keep_alive: int | str,
        options: Mapping[str, Any],
        embedding_only: bool = False,
    ) -> None:
        """Make the model compute once: ps can list a runner that no longer works (§4.8).

        A completion model generates one token; an embedding-only one embeds a word through
        ``/api/embed`` (generate refuses it with 400, §2.1).
        """
        payload: dict[str, Any] = {"model": name, "keep_alive": keep_alive}
        if embedding_only:
            payload["input"] = "ping"
            if options:
                payload["options"] = dict(options)
            await self._request("POST", "/api/embed", payload, limit=self._long)
            return
        payload.update(prompt="ping", stream=False, options={**options, "num_predict": 1})
        await self._request("POST", "/api/generate", payload, limit=self._long)


def _reason(exc: BaseException) -> str:
    """Say why a connection failed in words, not aiohttp's ``ssl:default [...]`` text."""
    os_error = getattr(exc, "os_error", None)
    cause = os_error if isinstance(os_error, OSError) else exc
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, TimeoutError):
        return "connect timed out"
    if isinstance(cause, OSError) and cause.strerror:
        return cause.strerror.lower()
    return str(exc) or type(exc).__name__


def _one_line(text: str, limit: int = 160) -> str:
    """aiohttp's parser messages span lines (they draw a caret): one short line for a log."""
    line = " ".join(text.split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _decode(raw: bytes, charset: str | None) -> str:
    """The body as text: its declared charset, else UTF-8; bad bytes become U+FFFD, not errors.

    A body that does not decode is garbled anyway; the JSON parse that follows says so.
    """
    try:
        return raw.decode(charset or "utf-8", errors="replace")
    except LookupError:  # a charset Python does not know
        return raw.decode("utf-8", errors="replace")


def _json_or_none(text: str) -> object:
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: a pathologically nested answer
        return None
