"""The OpenAI-compatible HTTP server over `AsyncLLMEngine` (FastAPI).

Routes: /v1/models, /v1/completions, /v1/chat/completions (JSON, or SSE when `stream`),
/health, /version and /metrics (Prometheus). Bad requests get an OpenAI-style error body
with a 4xx status; with an API key set, /v1 routes need `Authorization: Bearer <key>`.
A client that disconnects aborts its request, which frees its KV blocks.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from stack.llm.async_engine import AsyncLLMEngine
from stack.llm.llm import chat_prompt
from stack.llm.outputs import RequestOutput
from stack.serve.protocol import ChatCompletionRequest, CompletionRequest

__all__ = ["build_app", "VERSION"]

log = logging.getLogger(__name__)

VERSION = "0.1.0"


class APIError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error",
                 param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.param = status, message, kind, param


def _error(status: int, message: str, kind: str, param: str | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {
        "message": message, "type": kind, "param": param, "code": status}})


class Metrics:
    def __init__(self, engine: AsyncLLMEngine):
        self.registry = r = CollectorRegistry()
        e = engine.engine
        self.requests = Counter("npu:request_success", "Finished requests", ["finished_reason"],
                                registry=r)
        self.prompt_tokens = Counter("npu:prompt_tokens", "Prompt tokens processed", registry=r)
        self.generation_tokens = Counter("npu:generation_tokens", "Tokens generated",
                                         registry=r)
        running = Gauge("npu:num_requests_running", "Sequences running", registry=r)
        running.set_function(lambda: e.num_running)
        waiting = Gauge("npu:num_requests_waiting", "Sequences waiting", registry=r)
        waiting.set_function(lambda: e.num_waiting)
        usage = Gauge("npu:kv_cache_usage_perc", "Fraction of KV-cache blocks in use",
                      registry=r)
        usage.set_function(lambda: e.kv_cache_usage)
        buckets = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
        self.ttft = Histogram("npu:time_to_first_token_seconds", "Time to first token",
                              buckets=buckets, registry=r)
        self.itl = Histogram("npu:inter_token_latency_seconds", "Time between tokens",
                             buckets=buckets, registry=r)


def build_app(engine: AsyncLLMEngine, model_name: str, *, api_key: str | None = None,
              max_model_len: int | None = None) -> FastAPI:
    app = FastAPI(title="npu-emu OpenAI-compatible server", version=VERSION)
    metrics = Metrics(engine)
    app.state.engine, app.state.metrics = engine, metrics
    created = int(time.time())

    @app.exception_handler(APIError)
    async def _api_error(_: Request, exc: APIError):
        return _error(exc.status, exc.message, exc.kind, exc.param)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        loc = ".".join(str(x) for x in first.get("loc", ())[1:]) or None
        return _error(400, f"{loc or 'body'}: {first.get('msg', 'invalid request')}",
                      "invalid_request_error", loc)

    @app.middleware("http")
    async def _auth(request: Request, call_next):
        if api_key and request.url.path.startswith("/v1"):
            if request.headers.get("authorization", "") != f"Bearer {api_key}":
                return _error(401, "missing or invalid API key", "authentication_error")
        return await call_next(request)

    def check_model(name: str | None) -> None:
        if name is not None and name != model_name:
            raise APIError(404, f"the model {name!r} does not exist; this server serves "
                                f"{model_name!r}", "not_found_error", "model")

    @app.get("/health")
    async def health():
        if engine.errored is not None:
            return PlainTextResponse("engine error", status_code=503)
        return PlainTextResponse("")

    @app.get("/version")
    async def version():
        return {"version": VERSION}

    @app.get("/metrics")
    async def prometheus():
        return PlainTextResponse(generate_latest(metrics.registry),
                                 media_type=CONTENT_TYPE_LATEST)

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{
            "id": model_name, "object": "model", "created": created, "owned_by": "npu-emu",
            "max_model_len": max_model_len}]}

    async def run(request: Request, prompt, params, rid) -> AsyncIterator[RequestOutput]:
        """The request's outputs; aborts it when the client goes away."""
        start = time.monotonic()
        last: dict[int, int] = {}
        prev: float | None = None  # when the previous token arrived
        gen = engine.generate(prompt, params, rid)
        try:
            while True:
                nxt = asyncio.ensure_future(gen.__anext__())
                while True:
                    done, _ = await asyncio.wait({nxt}, timeout=0.25)
                    if done:
                        break
                    if await request.is_disconnected():
                        nxt.cancel()
                        log.info("client went away; aborting %s", rid)
                        raise asyncio.CancelledError
                try:
                    out = nxt.result()
                except StopAsyncIteration:
                    return
                now = time.monotonic()
                new = sum(max(0, len(c.token_ids) - last.get(c.index, 0)) for c in out.outputs)
                if new:
                    if prev is None:
                        metrics.ttft.observe(now - start)
                    else:
                        metrics.itl.observe(now - prev)
                    prev = now
                    metrics.generation_tokens.inc(new)
                    last.update({c.index: len(c.token_ids) for c in out.outputs})
                if out.finished:
                    for c in out.outputs:
                        metrics.requests.labels(c.finish_reason or "abort").inc()
                yield out
        except ValueError as e:
            raise APIError(400, str(e)) from e
        finally:
            await gen.aclose()
            engine.abort(rid)

    def sampling(body, logprobs):
        try:
            return body.sampling_params(
                default_max_tokens=16 if isinstance(body, CompletionRequest) else 256,
                logprobs=logprobs)
        except ValueError as e:
            raise APIError(400, str(e)) from e

    # completions

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        check_model(body.model)
        params = sampling(body, body.logprobs)
        prompts = body.prompt
        if isinstance(prompts, str) or (prompts and isinstance(prompts[0], int)):
            prompts = [prompts]
        if not prompts:
            raise APIError(400, "prompt must not be empty", param="prompt")
        inputs = [{"prompt_token_ids": p} if isinstance(p, list) else p for p in prompts]
        cid = f"cmpl-{uuid.uuid4().hex}"
        tok = engine.tokenizer

        def lp_block(c, start: int) -> dict | None:
            if body.logprobs is None or c.logprobs is None:
                return None
            ids, entries = c.token_ids[start:], c.logprobs[start:]
            dec = (lambda t: tok.decode([t])) if tok is not None else str  # noqa: E731
            return {"tokens": [dec(t) for t in ids],
                    "token_logprobs": [e[t].logprob for t, e in zip(ids, entries, strict=True)],
                    "top_logprobs": [{dec(t): v.logprob for t, v in e.items()} for e in entries],
                    "text_offset": []}

        if body.stream:
            return StreamingResponse(_stream_completions(
                run, request, inputs, params, cid, model_name, body, lp_block),
                media_type="text/event-stream")
        results = await asyncio.gather(*[
            _last(run(request, p, params, f"{cid}-{i}")) for i, p in enumerate(inputs)])
        choices, ptoks, ctoks = [], 0, 0
        for i, out in enumerate(results):
            ptoks += len(out.prompt_token_ids)
            for c in out.outputs:
                ctoks += len(c.token_ids)
                text = (out.prompt or "") + c.text if body.echo else c.text
                choices.append({"index": i * params.n + c.index, "text": text,
                                "logprobs": lp_block(c, 0), "finish_reason": c.finish_reason,
                                "stop_reason": c.stop_reason})
        metrics.prompt_tokens.inc(ptoks)
        return {"id": cid, "object": "text_completion", "created": int(time.time()),
                "model": model_name, "choices": choices,
                "usage": {"prompt_tokens": ptoks, "completion_tokens": ctoks,
                          "total_tokens": ptoks + ctoks}}

    # chat

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request):
        check_model(body.model)
        if body.max_completion_tokens is not None:
            body.max_tokens = body.max_completion_tokens
        top = body.top_logprobs or 0 if body.logprobs else None
        params = sampling(body, top)
        try:
            conv = [{"role": m.role, "content": m.text()} for m in body.messages]
            text, ids = chat_prompt(engine.tokenizer, conv, body.add_generation_prompt)
        except ValueError as e:
            raise APIError(400, str(e), param="messages") from e
        prompt = {"prompt": text, "prompt_token_ids": ids}
        cid = f"chatcmpl-{uuid.uuid4().hex}"
        tok = engine.tokenizer

        def lp_block(c, start: int) -> dict | None:
            if not body.logprobs or c.logprobs is None:
                return None
            content = []
            for t, e in zip(c.token_ids[start:], c.logprobs[start:], strict=True):
                content.append({"token": tok.decode([t]), "logprob": e[t].logprob,
                                "bytes": list(tok.decode([t]).encode()),
                                "top_logprobs": [{"token": tok.decode([k]), "logprob": v.logprob,
                                                  "bytes": list(tok.decode([k]).encode())}
                                                 for k, v in e.items()
                                                 if v.rank <= (body.top_logprobs or 0)]})
            return {"content": content}

        if body.stream:
            return StreamingResponse(_stream_chat(
                run, request, prompt, params, cid, model_name, body, lp_block),
                media_type="text/event-stream")
        out = await _last(run(request, prompt, params, cid))
        metrics.prompt_tokens.inc(len(ids))
        ctoks = sum(len(c.token_ids) for c in out.outputs)
        return {"id": cid, "object": "chat.completion", "created": int(time.time()),
                "model": model_name,
                "choices": [{"index": c.index,
                             "message": {"role": "assistant", "content": c.text},
                             "logprobs": lp_block(c, 0), "finish_reason": c.finish_reason,
                             "stop_reason": c.stop_reason} for c in out.outputs],
                "usage": {"prompt_tokens": len(ids), "completion_tokens": ctoks,
                          "total_tokens": len(ids) + ctoks}}

    return app


async def _last(outputs: AsyncIterator[RequestOutput]) -> RequestOutput:
    last = None
    async for out in outputs:
        last = out
    if last is None:
        raise APIError(500, "the request produced no output", "server_error")
    return last


def _sse(obj) -> str:
    return f"data: {json.dumps(obj)}\n\n"


async def _stream_completions(run, request, inputs, params, cid, model, body, lp_block):
    created = int(time.time())
    sent: dict[tuple[int, int], tuple[int, int]] = {}  # (prompt, index) -> (chars, tokens)
    ptoks = ctoks = 0
    try:
        for i, p in enumerate(inputs):
            async for out in run(request, p, params, f"{cid}-{i}"):
                for c in out.outputs:
                    chars, ntok = sent.get((i, c.index), (0, 0))
                    delta = c.text[chars:]
                    if not delta and len(c.token_ids) == ntok and c.finish_reason is None:
                        continue
                    sent[(i, c.index)] = (len(c.text), len(c.token_ids))
                    yield _sse({"id": cid, "object": "text_completion", "created": created,
                                "model": model, "choices": [{
                                    "index": i * params.n + c.index, "text": delta,
                                    "logprobs": lp_block(c, ntok),
                                    "finish_reason": c.finish_reason}]})
                if out.finished:
                    ptoks += len(out.prompt_token_ids)
                    ctoks += sum(len(c.token_ids) for c in out.outputs)
        if body.stream_options and body.stream_options.include_usage:
            yield _sse({"id": cid, "object": "text_completion", "created": created,
                        "model": model, "choices": [],
                        "usage": {"prompt_tokens": ptoks, "completion_tokens": ctoks,
                                  "total_tokens": ptoks + ctoks}})
    except APIError as e:
        yield _sse({"error": {"message": e.message, "type": e.kind, "code": e.status}})
    yield "data: [DONE]\n\n"


async def _stream_chat(run, request, prompt, params, cid, model, body, lp_block):
    created = int(time.time())

    def chunk(choices, **extra):
        return _sse({"id": cid, "object": "chat.completion.chunk", "created": created,
                     "model": model, "choices": choices, **extra})

    yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""},
                  "logprobs": None, "finish_reason": None} for i in range(params.n)])
    sent: dict[int, tuple[int, int]] = {}
    last = None
    try:
        async for out in run(request, prompt, params, cid):
            last = out
            for c in out.outputs:
                chars, ntok = sent.get(c.index, (0, 0))
                delta = c.text[chars:]
                if not delta and len(c.token_ids) == ntok and c.finish_reason is None:
                    continue
                sent[c.index] = (len(c.text), len(c.token_ids))
                yield chunk([{"index": c.index, "delta": {"content": delta} if delta else {},
                              "logprobs": lp_block(c, ntok),
                              "finish_reason": c.finish_reason}])
        if body.stream_options and body.stream_options.include_usage and last is not None:
            p = len(last.prompt_token_ids)
            n = sum(len(c.token_ids) for c in last.outputs)
            yield chunk([], usage={"prompt_tokens": p, "completion_tokens": n,
                                   "total_tokens": p + n})
    except APIError as e:
        yield _sse({"error": {"message": e.message, "type": e.kind, "code": e.status}})
    yield "data: [DONE]\n\n"
