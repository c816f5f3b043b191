"""The Ollama HTTP routes: request checks in Ollama's order, then the scheduler, then the reply.

Each handler follows ``server/routes.go`` step by step (reference §1.4, §2.1-2.5, §5.6) because
the order decides which error a client sees: an unknown model is a 404 even for the unload
command, an embedding model is refused by generate before any load, and so on.
"""

from __future__ import annotations

import hashlib
import math
import re
from typing import Any, Protocol

from aiohttp import web

from ollama_keepwarm.core.names import canonical_name
from ollama_keepwarm.fake.catalog import Catalog, CatalogModel, Manifest
from ollama_keepwarm.fake.clock import Clock
from ollama_keepwarm.fake.prompt_cache import chat_tokens, generate_tokens
from ollama_keepwarm.fake.scheduler import Runner, Scheduler, SchedulerError
from ollama_keepwarm.fake.versions import Behaviour
from ollama_keepwarm.fake.wire import (
    RequestError,
    decode_body,
    format_local_time,
    format_utc_time,
    go_json,
    go_quote,
)

__all__ = ["PROMPT_UNCACHED", "OllamaRoutes", "ServerState", "json_response"]

PROMPT_UNCACHED = web.RequestKey("prompt_uncached", int)
"""Where a completion leaves how many prompt tokens missed the slot's cache (records.py)."""

_NUMBER = (int, float)
_GENERATE_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "prompt": (str,),
    "suffix": (str,),
    "system": (str,),
    "template": (str,),
    "stream": (bool,),
    "raw": (bool,),
    "options": (dict,),
    "images": (list,),
    "context": (list,),
    "shift": (bool,),
}
_CHAT_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "messages": (list,),
    "stream": (bool,),
    "options": (dict,),
    "tools": (list,),
    "shift": (bool,),
}
_EMBED_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "truncate": (bool,),
    "options": (dict,),
    "dimensions": (int,),
}
_EMBEDDINGS_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "prompt": (str,),
    "options": (dict,),
}
_SHOW_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,),
    "name": (str,),
    "verbose": (bool,),
    "options": (dict,),
}
_VALID_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._:/+-]*")
_WORDS = (
    " The", " quick", " brown", " fox", " jumps", " over", " the", " lazy", " dog", ".",
    " Models", " stay", " warm", " when", " kept", " busy",
)  # fmt: skip
_RUNNER_DIED = (
    "model runner has unexpectedly stopped, this may be due to resource limitations or an "
    "internal error, check ollama server logs for details"
)  # what a request in flight gets when its runner dies, in v0.24 and v0.32 alike
_EMBEDDING_DIMENSIONS = 8


def json_response(status: int, value: Any) -> web.Response:
    """Reply like Gin's ``c.JSON``: compact Go JSON, ``application/json; charset=utf-8``."""
    return web.Response(
        status=status, body=go_json(value), content_type="application/json", charset="utf-8"
    )


def _caller(request: web.Request) -> str:
    """Who sent it, for the records of who caused what (``records.who`` reads it)."""
    return request.headers.get("User-Agent", "")


def _token_ids(text: str) -> list[int]:
    return [int(hashlib.sha256(word.encode()).hexdigest()[:3], 16) for word in text.split()] or [1]


def _embedding(text: str) -> list[float]:
    digest = hashlib.sha256(text.encode()).digest()
    raw = [(byte + 1) / 256 for byte in digest[:_EMBEDDING_DIMENSIONS]]
    norm = math.sqrt(sum(x * x for x in raw))
    return [round(x / norm, 7) for x in raw]


def _details(model: CatalogModel) -> dict[str, Any]:
    """The ``details`` object of ps, tags and show, in Go's field order."""
    return {
        "parent_model": "",
        "format": "gguf",
        "family": model.family,
        "families": [model.family],
        "parameter_size": model.parameter_size,
        "quantization_level": model.quantization_level,
    }


class ServerState(Protocol):
    """What the routes read of the server (a :class:`FakeOllama` provides it), at each request.

    Read live, not copied: a restart replaces the scheduler, and tests turn the knobs mid-run.
    """

    @property
    def catalog(self) -> Catalog: ...
    @property
    def clock(self) -> Clock: ...
    @property
    def scheduler(self) -> Scheduler: ...
    @property
    def seconds_per_token(self) -> float: ...
    @property
    def seconds_per_prompt_token(self) -> float: ...
    @property
    def behaviour(self) -> Behaviour: ...
    async def hold_reply(self, path: str) -> None: ...


class OllamaRoutes:
    """Handlers for the Ollama API, reading the server's current scheduler and knobs."""

    def __init__(self, fake: ServerState) -> None:
        self.fake = fake

    def register(self, app: web.Application) -> None:
        """Add every Ollama route; HEAD only where Ollama registers it (§3.1, §5.1-5.3)."""
        router = app.router
        router.add_get("/", self.root)
        router.add_get("/api/version", self.version)
        router.add_get("/api/tags", self.tags)
        router.add_get("/api/ps", self.ps, allow_head=False)
        router.add_post("/api/show", self.show)
        router.add_post("/api/generate", self.generate)
        router.add_post("/api/chat", self.chat)
        router.add_post("/api/embed", self.embed)
        router.add_post("/api/embeddings", self.embeddings)
        router.add_delete("/api/delete", self.delete)

    # --- helpers ----------------------------------------------------------------------------

    def _now_utc(self) -> str:
        return format_utc_time(self.fake.clock.wall_ns())

    def _resolve(self, name: str, empty: RequestError, not_found: str) -> Manifest:
        """Validate and resolve a model name; errors are per endpoint (§5.6)."""
        stripped = name.strip()
        if not stripped:
            raise empty
        if not _VALID_NAME.fullmatch(stripped):
            raise RequestError(400, "invalid model name")
        manifest = self.fake.catalog.resolve(stripped)
        if manifest is None:
            raise RequestError(404, not_found)
        return manifest

    async def _send(self, request: web.Request, body: bytes) -> web.StreamResponse:
        """Write a complete JSON reply now, so the runner is released only after the last byte
        (and after a reply delay a test set: the runner stays in use meanwhile)."""
        await self.fake.hold_reply(request.path)
        response = web.StreamResponse(status=200)
        response.content_type = "application/json"
        response.charset = "utf-8"
        response.content_length = len(body)
        await response.prepare(request)
        await response.write(body)
        await response.write_eof()
        return response

    def _elapsed_ns(self, started_ns: int) -> int:
        return max(1, self.fake.clock.monotonic_ns() - started_ns)

    # --- simple routes ----------------------------------------------------------------------

    async def root(self, _request: web.Request) -> web.Response:
        """``GET /``: the liveness text (§5.1)."""
        return web.Response(text="Ollama is running", content_type="text/plain", charset="utf-8")

    async def version(self, _request: web.Request) -> web.Response:
        """``GET /api/version``."""
        return json_response(200, {"version": self.fake.behaviour.version})

    async def tags(self, _request: web.Request) -> web.Response:
        """``GET /api/tags``: every manifest, newest first; capabilities from v0.30 (§5.3)."""
        modern = self.fake.behaviour.tags_capabilities
        models = []
        for manifest in self.fake.catalog.manifests():
            model = manifest.model
            details = _details(model)
            item: dict[str, Any] = {
                "name": manifest.name,
                "model": manifest.name,
                "modified_at": format_local_time(manifest.modified_at_ns),
                "size": model.size,
                "digest": manifest.digest,
                "details": details,
            }
            if modern:
                details["context_length"] = model.context_length
                details["embedding_length"] = model.embedding_length
                item["capabilities"] = list(model.capabilities)
            models.append(item)
        return json_response(200, {"models": models})

    async def ps(self, _request: web.Request) -> web.Response:
        """``GET /api/ps``: loaded runners in Ollama's field order and sort order (§3)."""
        models = []
        for runner, expires_ns in self.fake.scheduler.listed():
            model = runner.manifest.model
            models.append(
                {
                    "name": runner.name,
                    "model": runner.name,
                    "size": model.size,
                    "digest": runner.manifest.digest,
                    "details": _details(model),
                    "expires_at": format_local_time(expires_ns),
                    "size_vram": runner.size_vram,
                    "context_length": runner.context_length,
                }
            )
        return json_response(200, {"models": models})

    async def show(self, request: web.Request) -> web.Response:
        """``POST /api/show``: capabilities, model_info, modelfile with the blob path (§2.5)."""
        body = decode_body(await request.read(), "api.ShowRequest", _SHOW_FIELDS)
        name = body.get("model") or body.get("name") or ""
        shown = canonical_name(name) if self.fake.behaviour.show_404_normalised else name
        manifest = self._resolve(
            name, RequestError(400, "model is required"), f"model '{shown}' not found"
        )
        model = manifest.model
        parameter_lines = []
        modelfile_parameters = []
        for key, value in model.parameters.items():
            for item in value if isinstance(value, list) else [value]:
                shown_value = go_quote(item) if isinstance(item, str) else str(item)
                parameter_lines.append(f"{key:<30} {shown_value}")
                modelfile_parameters.append(f"PARAMETER {key} {shown_value}")
        modelfile = "\n".join(
            [
                '# Modelfile generated by "ollama show"',
                "# To build a new Modelfile based on this, replace FROM with:",
                f"# FROM {manifest.name}",
                "",
                f"FROM {model.blob_path}",
                f'TEMPLATE """{model.template}"""',
                *modelfile_parameters,
                "",
            ]
        )
        reply: dict[str, Any] = {"modelfile": modelfile}
        if parameter_lines:
            reply["parameters"] = "\n".join(parameter_lines)
        if model.template:
            reply["template"] = model.template
        reply["details"] = _details(model)
        reply["model_info"] = model.model_info
        reply["capabilities"] = list(model.capabilities)
        reply["modified_at"] = format_local_time(manifest.modified_at_ns)
        return json_response(200, reply)

    async def delete(self, request: web.Request) -> web.Response:
        """``DELETE /api/delete``: forget the manifest, leave any runner loaded (§7.5)."""
        body = decode_body(await request.read(), "api.DeleteRequest", _SHOW_FIELDS)
        name = body.get("model") or body.get("name") or ""
        if not name.strip():
            raise RequestError(400, "model is required")
        if not self.fake.catalog.delete(name):
            raise RequestError(404, f"model '{name}' not found")
        return web.Response(status=200)

    # --- generate and chat --------------------------------------------------------------------

    async def generate(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/generate``: unload command, load-only call, or a canned completion."""
        return await self._complete(request, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/chat``: like generate, with ``messages`` instead of ``prompt``."""
        return await self._complete(request, chat=True)

    async def _complete(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        started_ns = self.fake.clock.monotonic_ns()
        if chat:
            body = decode_body(await request.read(), "api.ChatRequest", _CHAT_FIELDS)
        else:
            body = decode_body(await request.read(), "api.GenerateRequest", _GENERATE_FIELDS)
        name: str = body.get("model") or ""
        empty = (
            RequestError(400, "model is required")
            if chat
            else RequestError(404, "model '' not found")
        )
        manifest = self._resolve(name, empty, f"model '{name}' not found")
        if chat:
            messages = body.get("messages") or []
            text = " ".join(str(m.get("content", "")) for m in messages if isinstance(m, dict))
            has_input = bool(messages)
            prompt = chat_tokens(m for m in messages if isinstance(m, dict))
        else:
            text = body.get("prompt") or ""
            has_input = bool(text)
            prompt = generate_tokens(text, body.get("system") or "", raw=body.get("raw") is True)
        keep_alive = body.get("keep_alive")
        scheduler = self.fake.scheduler
        if not has_input and keep_alive == 0:
            scheduler.expire_now(manifest, _caller(request))
            return json_response(200, self._final(name, chat, "", "unload"))
        if manifest.model.is_embedding_only:
            raise RequestError(
                400, f"{go_quote(name)} does not support {'chat' if chat else 'generate'}"
            )
        if body.get("think") is True and "thinking" not in manifest.model.capabilities:
            raise RequestError(400, f"{go_quote(name)} does not support thinking")
        runner = await scheduler.acquire(
            manifest,
            body.get("options"),
            keep_alive,
            request.path,
            shift=body.get("shift"),
            caller=_caller(request),
        )
        load_ns = self._elapsed_ns(started_ns)
        try:
            if not has_input:
                return await self._send(request, go_json(self._final(name, chat, "", "load")))
            return await self._produce(
                request, runner, body, (text, prompt), chat, started_ns, load_ns
            )
        finally:
            scheduler.release(runner)

    def _final(self, name: str, chat: bool, content: str, reason: str) -> dict[str, Any]:
        reply: dict[str, Any] = {"model": name, "created_at": self._now_utc()}
        if chat:
            reply["message"] = {"role": "assistant", "content": content}
        else:
            reply["response"] = content
        reply["done"] = True
        reply["done_reason"] = reason
        return reply

    def _chunk(self, name: str, chat: bool, token: str) -> dict[str, Any]:
        reply: dict[str, Any] = {"model": name, "created_at": self._now_utc()}
        if chat:
            reply["message"] = {"role": "assistant", "content": token}
        else:
            reply["response"] = token
        reply["done"] = False
        return reply

    async def _produce(
        self,
        request: web.Request,
        runner: Runner,
        body: dict[str, Any],
        prompt: tuple[str, list[str]],
        chat: bool,
        started_ns: int,
        load_ns: int,
    ) -> web.StreamResponse:
        """Process the prompt past the slot's cached prefix, then generate ``num_predict``
        canned tokens at ``seconds_per_token`` each, in one slot."""
        text, prompt_tokens = prompt
        name: str = body["model"]
        options = body.get("options") or {}
        num_predict = options.get("num_predict")
        if not isinstance(num_predict, _NUMBER) or isinstance(num_predict, bool) or num_predict < 0:
            num_predict = 16
        tokens = [_WORDS[i % len(_WORDS)] for i in range(int(num_predict))]
        stream = body.get("stream") is not False
        clock = self.fake.clock
        async with runner.slots:
            with runner.cache.slot(prompt_tokens) as uncached:
                request[PROMPT_UNCACHED] = uncached  # for RecordedRequest (tests, no timing)
                prompt_started = clock.monotonic_ns()
                prompt_ids = _token_ids(text)
                await clock.sleep(uncached * self.fake.seconds_per_prompt_token)
                prompt_ns = self._elapsed_ns(prompt_started)
                if runner.crashed:
                    raise SchedulerError(500, _RUNNER_DIED)
                eval_started = clock.monotonic_ns()
                response: web.StreamResponse | None = None
                if stream:
                    response = web.StreamResponse(status=200)
                    response.content_type = "application/x-ndjson"
                    await response.prepare(request)
                for token in tokens:
                    await clock.sleep(self.fake.seconds_per_token)
                    if runner.crashed:
                        if response is None:
                            raise SchedulerError(500, _RUNNER_DIED)
                        await response.write(go_json({"error": _RUNNER_DIED}) + b"\n")
                        await response.write_eof()
                        return response
                    if response is not None:
                        await response.write(go_json(self._chunk(name, chat, token)) + b"\n")
                eval_ns = self._elapsed_ns(eval_started)
        final = self._final(name, chat, "" if stream else "".join(tokens), "length")
        if not chat:
            final["context"] = prompt_ids + [_WORDS.index(t) + 100 for t in tokens]
        final["total_duration"] = self._elapsed_ns(started_ns)
        final["load_duration"] = load_ns
        final["prompt_eval_count"] = len(prompt_tokens)
        final["prompt_eval_duration"] = prompt_ns
        if tokens:
            final["eval_count"] = len(tokens)
            final["eval_duration"] = eval_ns
        if response is None:
            return await self._send(request, go_json(final))
        await response.write(go_json(final) + b"\n")
        await response.write_eof()
        return response

    # --- embeddings ---------------------------------------------------------------------------

    async def embed(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/embed``: empty input loads any model and answers ``embeddings: []``."""
        started_ns = self.fake.clock.monotonic_ns()
        body = decode_body(await request.read(), "api.EmbedRequest", _EMBED_FIELDS)
        raw_input = body.get("input")
        inputs: list[str] = []
        if isinstance(raw_input, str):
            inputs = [raw_input] if raw_input else []
        elif isinstance(raw_input, list):
            if not all(isinstance(item, str) for item in raw_input):
                raise RequestError(400, "invalid input type")
            inputs = list(raw_input)
        elif raw_input is not None:
            raise RequestError(400, "invalid input type")
        name: str = body.get("model") or ""
        manifest = self._resolve(
            name,
            RequestError(404, "model '' not found"),
            f"model {go_quote(name)} not found, try pulling it first",
        )
        scheduler = self.fake.scheduler
        runner = await scheduler.acquire(
            manifest,
            body.get("options"),
            body.get("keep_alive"),
            request.path,
            caller=_caller(request),
        )
        load_ns = self._elapsed_ns(started_ns)
        try:
            if not inputs:
                return await self._send(request, go_json({"model": name, "embeddings": []}))
            await self._compute(runner, len(inputs))
            reply = {
                "model": name,
                "embeddings": [_embedding(text) for text in inputs],
                "total_duration": self._elapsed_ns(started_ns),
                "load_duration": load_ns,
                "prompt_eval_count": sum(len(_token_ids(text)) for text in inputs),
            }
            return await self._send(request, go_json(reply))
        finally:
            scheduler.release(runner)

    async def embeddings(self, request: web.Request) -> web.StreamResponse:
        """``POST /api/embeddings`` (legacy): empty prompt loads and answers ``embedding: []``."""
        body = decode_body(await request.read(), "api.EmbeddingRequest", _EMBEDDINGS_FIELDS)
        name: str = body.get("model") or ""
        manifest = self._resolve(
            name,
            RequestError(400, "model is required"),
            f"model {go_quote(name)} not found, try pulling it first",
        )
        prompt: str = body.get("prompt") or ""
        scheduler = self.fake.scheduler
        runner = await scheduler.acquire(
            manifest,
            body.get("options"),
            body.get("keep_alive"),
            request.path,
            caller=_caller(request),
        )
        try:
            if not prompt:
                return await self._send(request, go_json({"embedding": []}))
            await self._compute(runner, 1)
            return await self._send(request, go_json({"embedding": _embedding(prompt)}))
        finally:
            scheduler.release(runner)

    async def _compute(self, runner: Runner, count: int) -> None:
        async with runner.slots:
            await self.fake.clock.sleep(self.fake.seconds_per_token * count)
            if runner.crashed:
                raise SchedulerError(500, _RUNNER_DIED)
