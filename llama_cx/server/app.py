"""The HTTP side: routes, request checks, OpenAI-shaped answers and server-sent events.

    GET  /v1/models             the one model served
    POST /v1/completions        text after a prompt (a string or token ids)
    POST /v1/chat/completions   the assistant's reply in the model's chat format
    GET  /health                200 {"status": "ok", slots...} while the scheduler runs, else 503
    GET  /metrics               Prometheus text (server/metrics.py)

Every request is checked here, before it reaches the scheduler: a bad one gets a 4xx with OpenAI's error object
{"error": {"message", "type", "param", "code"}} and costs the model nothing. With an API key, /v1/* need
`Authorization: Bearer KEY`; /health and /metrics stay open for orchestrators and Prometheus.

Sampling defaults are OpenAI's (temperature 1, top_p 1, no top-k / min-p / repeat penalty; max_tokens 16 for
completions, the rest of the context for chat), since clients of an OpenAI endpoint expect them; llama.cpp's extensions top_k, min_p, repeat_penalty, seed and ignore_eos (generate max_tokens whatever the model's
end-of-text / end-of-turn tokens say: benchmarks) are accepted too.
OpenAI options this engine does not implement (n > 1, logprobs, tools, penalties other than repeat_penalty, ...)
get a 400 naming the option when set to anything but their "off" value, never a silently different answer.
"""
from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import math
from typing import Optional

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from .. import _openai
from ..errors import LlamaCxError
from ..sampling import SamplingParams
from .metrics import Metrics
from .scheduler import Job, Scheduler

MAX_BODY = 1 << 20  # bytes; a request body beyond this gets 413 (checked while reading, never buffered whole)
log = logging.getLogger("llama_cx.server")


class ApiError(Exception):
    def __init__(self, status: int, message: str, param: Optional[str] = None,
                 kind: str = "invalid_request_error", code: Optional[str] = None):
        super().__init__(message)
        self.status, self.message, self.param, self.kind, self.code = status, message, param, kind, code

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"message": self.message, "type": self.kind, "param": self.param,
                                       "code": self.code}}, status_code=self.status)


# ---- request checks ------------------------------------------------------------------------------------------
_KINDS = {
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "boolean": lambda v: isinstance(v, bool),
    "string": lambda v: isinstance(v, str),
    "object": lambda v: isinstance(v, dict),
}


def _field(body: dict, name: str, kind: str, default=None, lo=None, hi=None):
    """body[name] checked: absent or null -> default; a wrong type or a value outside [lo, hi] -> 400."""
    v = body.get(name)
    if v is None:
        return default
    if not _KINDS[kind](v):
        raise ApiError(400, f"{name} must be {'an' if kind[0] in 'aeiou' else 'a'} {kind}, "
                            f"got {json.dumps(v)[:40]}", param=name)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        where = f">= {lo}" if hi is None else f"between {lo} and {hi}"
        raise ApiError(400, f"{name} must be {where}, got {v}", param=name)
    return v


# OpenAI options with no implementation here, and the values that mean "off".
_UNSUPPORTED = {"n": (1,), "logprobs": (False, 0), "top_logprobs": (0,), "presence_penalty": (0, 0.0),
                "frequency_penalty": (0, 0.0), "logit_bias": ({},), "suffix": ("",), "best_of": (1,),
                "tools": ([],), "functions": ([],), "tool_choice": ("none",), "function_call": ("none",)}


def _refuse_unsupported(body: dict) -> None:
    for name, off in _UNSUPPORTED.items():
        v = body.get(name)
        if v is not None and not any(v == o and type(v) is type(o) for o in off):
            raise ApiError(400, f"{name}={json.dumps(v)[:40]} is not supported by this server", param=name)
    fmt = body.get("response_format")
    if fmt is not None and fmt != {"type": "text"}:
        raise ApiError(400, "response_format other than {\"type\": \"text\"} is not supported", param="response_format")


def _sampling(body: dict) -> SamplingParams:
    try:
        return SamplingParams(
            temperature=_field(body, "temperature", "number", 1.0, 0, 2),
            # OpenAI allows top_p 0 (only the best token); ours needs > 0, and any tiny value keeps just the best
            top_p=max(_field(body, "top_p", "number", 1.0, 0, 1), 1e-9),
            top_k=_field(body, "top_k", "integer", 0, 0),
            min_p=_field(body, "min_p", "number", 0.0, 0, 1),
            repeat_penalty=_field(body, "repeat_penalty", "number", 1.0),
            seed=_field(body, "seed", "integer"))
    except LlamaCxError as e:
        raise ApiError(400, str(e)) from None


def _stop(body: dict):
    try:
        stop = _openai.stop_list(body.get("stop"))
    except LlamaCxError as e:
        raise ApiError(400, str(e), param="stop") from None
    if len(stop) > 16:
        raise ApiError(400, f"at most 16 stop strings, got {len(stop)}", param="stop")
    if any(len(s) > 256 for s in stop):  # each token checks every suffix of the held-back text: O(len^2)
        raise ApiError(400, "stop strings must be at most 256 characters", param="stop")
    return stop


def _stop_ids(body: dict, stop_ids):
    """The tokens that end a reply: none with llama.cpp's ignore_eos extension (max_tokens are generated)."""
    return () if _field(body, "ignore_eos", "boolean", False) else stop_ids


def _include_usage(body: dict) -> bool:
    opts = _field(body, "stream_options", "object", {})
    return bool(_field(opts, "include_usage", "boolean", False))


# ---- the app ----------------------------------------------------------------------------------------------------
class _Server:
    def __init__(self, model, model_name: str, n_slots: int, n_ctx: int, api_key: Optional[str], max_body: int):
        self.model = model
        self.model_name = model_name
        self.tokenizer = model.require_tokenizer()
        self.n_ctx = n_ctx
        self.api_key = api_key
        self.max_body = max_body
        self.metrics = Metrics()
        self.scheduler = Scheduler(model, n_slots, n_ctx, self.metrics)
        self.created = _openai.now()

    # -- plumbing --
    def route(self, path: str, handler, methods, auth: bool):
        async def endpoint(request: Request) -> Response:
            try:
                if auth and self.api_key is not None:
                    self._check_key(request)
                response = await handler(request)
            except ApiError as e:
                response = e.response()
            except ClientDisconnect:
                response = Response(status_code=499)  # nginx's "client closed request"; nobody reads it
            except Exception:  # a bug: log it, answer 500 in OpenAI's shape, keep serving
                log.exception("error in %s", path)
                response = ApiError(500, "internal server error", kind="server_error").response()
            self.metrics.request(path, response.status_code)
            return response

        return Route(path, endpoint, methods=methods)

    def _check_key(self, request: Request) -> None:
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), self.api_key.encode()):
            raise ApiError(401, "invalid or missing API key (send Authorization: Bearer KEY)",
                           kind="invalid_request_error", code="invalid_api_key")

    async def _json(self, request: Request) -> dict:
        length = request.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_body:
            raise ApiError(413, f"request body of {length} bytes is over the limit of {self.max_body}")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > self.max_body:
                raise ApiError(413, f"request body is over the limit of {self.max_body} bytes")
        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise ApiError(400, f"the request body is not valid JSON ({e})") from None
        if not isinstance(data, dict):
            raise ApiError(400, "the request body must be a JSON object")
        return data

    def _fits(self, n_prompt: int, body: dict, *names, default: Optional[int] = None) -> int:
        """max_tokens resolved against the context: default `default` (None: the rest of the context, capped
        by it); a prompt that leaves no room, or a max_tokens over the rest -> 400."""
        if n_prompt >= self.n_ctx:
            raise ApiError(400, f"the prompt has {n_prompt} tokens but the context holds {self.n_ctx} "
                                f"(one position is needed for the reply)", code="context_length_exceeded")
        max_tokens = None
        for name in names:
            max_tokens = _field(body, name, "integer", max_tokens, 1)
            if max_tokens is not None:
                if n_prompt + max_tokens > self.n_ctx:
                    raise ApiError(400, f"{name} {max_tokens} + the prompt's {n_prompt} tokens exceed the context of "
                                        f"{self.n_ctx} tokens", param=name, code="context_length_exceeded")
                return max_tokens
        room = self.n_ctx - n_prompt
        return room if default is None else min(default, room)

    def _submit(self, ids, params, max_tokens, stop, stop_ids, continues=False):
        loop = asyncio.get_running_loop()
        events: asyncio.Queue = asyncio.Queue()
        job = Job(ids, params, max_tokens, stop, stop_ids, lambda ev: loop.call_soon_threadsafe(events.put_nowait, ev),
                  continues)
        try:
            self.scheduler.submit(job)
        except RuntimeError as e:
            raise ApiError(503, str(e), kind="server_error") from None
        return job, events

    # -- endpoints --
    async def models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": [
            {"id": self.model_name, "object": "model", "created": self.created, "owned_by": "llama_cx"}]})

    async def health(self, request: Request) -> Response:
        s = self.scheduler
        ok = s.alive
        body = {"status": "ok" if ok else "unavailable", "slots_total": len(s.slots), "slots_busy": s.busy,
                "slots_idle": len(s.slots) - s.busy, "queue_depth": s.queue_depth}
        if s.error:
            body["error"] = s.error
        return JSONResponse(body, status_code=200 if ok else 503)

    async def metrics_text(self, request: Request) -> Response:
        return PlainTextResponse(self.metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    async def completions(self, request: Request) -> Response:
        body = await self._json(request)
        _refuse_unsupported(body)
        prompt = body.get("prompt")
        if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], (str, list)):
            prompt = prompt[0]  # a batch of one prompt
        tok = self.tokenizer
        vocab = self.model.config.vocab_size
        if isinstance(prompt, str):
            # special-token text in a raw completion prompt is the token (llama.cpp's and llama-cpp-python's servers)
            ids = tok.encode(prompt, bos=tok.add_bos, allowed_special="all")
        elif isinstance(prompt, list) and prompt and all(_KINDS["integer"](i) and 0 <= i < vocab for i in prompt):
            ids = list(prompt)
        elif isinstance(prompt, list) and prompt and all(isinstance(p, (str, list)) for p in prompt):
            raise ApiError(400, "only one prompt per request is supported", param="prompt")
        else:
            raise ApiError(400, f"prompt must be a string or a list of token ids in [0, {vocab})", param="prompt")
        if not ids:
            raise ApiError(400, "the prompt is empty", param="prompt")
        params, stop = _sampling(body), _stop(body)
        echo = _field(body, "echo", "boolean", False)
        stream = _field(body, "stream", "boolean", False)
        include_usage = _include_usage(body)
        max_tokens = self._fits(len(ids), body, "max_tokens", default=16)  # OpenAI's default for completions
        job, events = self._submit(ids, params, max_tokens, stop, _stop_ids(body, tok.stop_ids), continues=True)
        cid, created, name = _openai.completion_id(), _openai.now(), self.model_name
        echo_text = (prompt if isinstance(prompt, str) else tok.decode(ids)) if echo else ""

        if stream:
            async def chunks():
                if echo_text:
                    yield _openai.completion_chunk(cid, created, name, echo_text)
                async for kind, value in _events(job, events):
                    if kind == "text":
                        yield _openai.completion_chunk(cid, created, name, value)
                    else:
                        yield _openai.completion_chunk(cid, created, name, "", value)
                if include_usage:
                    yield _openai.usage_chunk(cid, created, name, "text_completion", job.usage())

            return _sse(chunks(), job)
        text, reason = await self._collect(request, job, events)
        return JSONResponse(_openai.completion(cid, created, name, echo_text + text, reason, job.usage()))

    async def chat_completions(self, request: Request) -> Response:
        body = await self._json(request)
        _refuse_unsupported(body)
        fmt = self.model.chat_format
        if fmt is None:
            raise ApiError(400, "this model has no chat format; use /v1/completions")
        try:
            ids = fmt.encode_dialog(_openai.chat_messages(body.get("messages")))
        except LlamaCxError as e:
            raise ApiError(400, str(e), param="messages") from None
        params, stop = _sampling(body), _stop(body)
        stream = _field(body, "stream", "boolean", False)
        include_usage = _include_usage(body)
        max_tokens = self._fits(len(ids), body, "max_completion_tokens", "max_tokens")
        job, events = self._submit(ids, params, max_tokens, stop, _stop_ids(body, fmt.stop_ids))
        cid, created, name = _openai.chat_id(), _openai.now(), self.model_name

        if stream:
            async def chunks():
                yield _openai.chat_chunk(cid, created, name, {"role": "assistant", "content": ""})
                async for kind, value in _events(job, events):
                    if kind == "text":
                        yield _openai.chat_chunk(cid, created, name, {"content": value})
                    else:
                        yield _openai.chat_chunk(cid, created, name, {}, value)
                if include_usage:
                    yield _openai.usage_chunk(cid, created, name, "chat.completion.chunk", job.usage())

            return _sse(chunks(), job)
        text, reason = await self._collect(request, job, events)
        return JSONResponse(_openai.chat_completion(cid, created, name, text, reason, job.usage()))

    async def _collect(self, request: Request, job: Job, events: asyncio.Queue):
        """Wait for a whole reply; a client that disconnects meanwhile cancels the job (its slot is freed)."""
        async def drain():
            parts = []
            async for kind, value in _events(job, events):
                if kind == "text":
                    parts.append(value)
                else:
                    return "".join(parts), value

        async def disconnected():
            while (await request.receive())["type"] != "http.disconnect":
                pass

        done, gone = asyncio.ensure_future(drain()), asyncio.ensure_future(disconnected())
        try:
            await asyncio.wait({done, gone}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            gone.cancel()
            if not done.done():
                job.cancel()
                done.cancel()
        if not done.done() or done.cancelled():
            raise ClientDisconnect()
        return done.result()


async def _events(job: Job, events: asyncio.Queue):
    """The job's ("text", str) events, then ("finish", finish_reason); an error event becomes a 500-kind ApiError.
    Text events already waiting are joined into one (one SSE chunk instead of several): when the event loop
    falls behind the scheduler (many streams on few cores), each chunk it writes carries what has come, so its
    work per round stays one chunk per stream."""
    held = None
    while True:
        ev, held = held or await events.get(), None
        if ev[0] == "text":
            parts = [ev[1]]
            while not events.empty():
                nxt = events.get_nowait()
                if nxt[0] != "text":
                    held = nxt
                    break
                parts.append(nxt[1])
            yield "text", "".join(parts)
        elif ev[0] == "done":
            yield "finish", ev[1]
            return
        else:
            raise ApiError(500, ev[1], kind="server_error")


def _sse(chunks, job: Job) -> StreamingResponse:
    """Server-sent events: `data: {json}` per chunk, then `data: [DONE]`. Leaving early (the client went away,
    Starlette cancels this generator) cancels the job, which frees its slot before the scheduler's next round."""
    async def lines():
        try:
            async for chunk in chunks:
                yield f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n"
            yield "data: [DONE]\n\n"
        except ApiError as e:  # headers are sent: report in-band, as OpenAI does
            yield f"data: {json.dumps({'error': {'message': e.message, 'type': e.kind}})}\n\n"
        finally:
            job.cancel()

    return StreamingResponse(lines(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def create_app(model, *, model_name: str, n_slots: int = 4, n_ctx: Optional[int] = None,
               api_key: Optional[str] = None, max_body: int = MAX_BODY) -> Starlette:
    """The ASGI app for a loaded model: n_slots concurrent requests, each with a context of n_ctx tokens
    (default min(model max, 4096)). The scheduler thread starts and stops with the app's lifespan."""
    if n_ctx is None:
        n_ctx = min(model.config.max_seq_len, 4096)
    srv = _Server(model, model_name, n_slots, n_ctx, api_key, max_body)

    @contextlib.asynccontextmanager
    async def lifespan(app):
        srv.scheduler.start()
        try:
            yield
        finally:
            srv.scheduler.stop()

    routes = [
        srv.route("/v1/models", srv.models, ["GET"], auth=True),
        srv.route("/v1/completions", srv.completions, ["POST"], auth=True),
        srv.route("/v1/chat/completions", srv.chat_completions, ["POST"], auth=True),
        srv.route("/health", srv.health, ["GET"], auth=False),
        srv.route("/metrics", srv.metrics_text, ["GET"], auth=False),
    ]

    async def http_error(request, exc):  # Starlette's 404 / 405 in OpenAI's error shape
        srv.metrics.request("other", exc.status_code)
        return ApiError(exc.status_code, f"{request.method} {request.url.path}: {exc.detail}").response()

    app = Starlette(routes=routes, lifespan=lifespan, exception_handlers={HTTPException: http_error})
    app.state.server = srv
    return app
