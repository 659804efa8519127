"""The OpenAI chat completions API in front of an engine (tasks/serve/engine.py): `/v1/models`,
`/v1/chat/completions` (whole or streamed as server-sent events), `/health`; errors in OpenAI's shape, so the
OpenAI SDK works unchanged."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from tasks.serve.conversation import BadRequest, fit_prompt, turns_from_messages
from tasks.serve.engine import Answer, Engine, Sampling

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Served:
    model_name: str  # registered model
    alias: str
    version: str
    system: str | None  # the guardrail prompt it was evaluated with: the default system message
    max_tokens: int
    context_tokens: int

    @property
    def model_id(self) -> str:
        return f"{self.model_name}@{self.alias}"

    def accepts(self, model: str) -> bool:
        return model in {self.model_id, self.model_name, f"{self.model_name}/{self.version}", self.alias}


class ModelNotFound(BadRequest):
    code = "model_not_found"


def error(status: int, exc: BadRequest) -> JSONResponse:
    return JSONResponse({"error": {"message": str(exc), "type": "invalid_request_error", "param": None,
                                   "code": exc.code}}, status_code=status)


UNSUPPORTED = ("tools", "functions", "response_format", "logprobs", "top_logprobs")


def _number(body: dict[str, Any], key: str, default: float, low: float, high: float, low_open: bool = False) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            (low < value if low_open else low <= value) and value <= high):
        raise BadRequest(f"{key}: a number in {'(' if low_open else '['}{low}, {high}] is needed (got {value!r})")
    return float(value)


def sampling_of(body: dict[str, Any], served: Served) -> Sampling:
    """The request's generation settings, checked as OpenAI checks them (one line naming the field)."""
    if body.get("n", 1) != 1:
        raise BadRequest("n: only 1 answer per request")
    for key in UNSUPPORTED:
        if body.get(key):
            raise BadRequest(f"{key}: not supported by this server (a chat model without tools or logprobs)")
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else stop
    if not isinstance(stop, list | tuple) or len(stop) > 4 or not all(isinstance(x, str) and x for x in stop):
        raise BadRequest(f"stop: a string or up to 4 non-empty strings (got {stop!r})")
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or served.max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequest(f"max_tokens: a positive integer is needed (got {max_tokens!r})")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest(f"seed: an integer is needed (got {seed!r})")
    return Sampling(max_tokens, _number(body, "temperature", 0.0, 0.0, 2.0),
                    _number(body, "top_p", 1.0, 0.0, 1.0, low_open=True), tuple(stop), seed)


def build_app(engine: Engine, served: Served) -> FastAPI:
    app = FastAPI(title=f"selfchat: {served.model_id} (version {served.version})")
    # requests wait here, on the event loop, not in the thread pool: a queue of waiting requests can never
    # take every worker thread from those that are generating (or from /health)
    turn = anyio.Semaphore(engine.parallel)

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": served.model_id, "version": served.version}

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": served.model_id, "object": "model", "created": 0,
                                            "owned_by": "selfchat", "version": served.version}]}

    @app.post("/v1/chat/completions", response_model=None)
    async def chat_completions(request: Request) -> JSONResponse | StreamingResponse | dict[str, Any]:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return error(400, BadRequest("the body is not JSON"))
        try:
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                raise BadRequest("the body must be a JSON object with a list of messages")
            if not served.accepts(str(body.get("model", ""))):
                raise ModelNotFound(f"model {body.get('model')!r} is not served here; this server serves "
                                    f"{served.model_id} (version {served.version})")
            sampling = sampling_of(body, served)
            system, turns = turns_from_messages(body["messages"], served.system)
            prompt = await run_in_threadpool(fit_prompt, engine.tokenizer, system, turns, sampling.max_tokens,
                                             served.context_tokens)
            if prompt.dropped_turns:
                log.info("history cut to fit %d tokens: %d oldest turns left out", served.context_tokens,
                         prompt.dropped_turns)
        except ModelNotFound as exc:
            return error(404, exc)
        except BadRequest as exc:
            return error(400, exc)
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        head = {"id": completion_id, "created": created, "model": served.model_id,
                "system_fingerprint": f"{served.model_name}/{served.version}"}
        if body.get("stream"):
            events = stream_events(engine, prompt.text, sampling, head, body)
            return StreamingResponse(in_turn(turn, events), media_type="text/event-stream")
        async with turn:
            answer = await run_in_threadpool(engine.answer, prompt.text, sampling)
        return {**head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                             "finish_reason": answer.finish_reason, "logprobs": None}],
                "usage": usage(answer)}

    return app


async def in_turn(turn: anyio.Semaphore, events: Iterator[str]) -> AsyncIterator[str]:
    """The stream's events, produced in worker threads while holding one of the model's turns; a client that
    goes away ends the generation at once (the events are closed, not left to the garbage collector)."""
    async with turn:
        try:
            while (event := await run_in_threadpool(next, events, None)) is not None:
                yield event
        finally:
            with anyio.CancelScope(shield=True):
                await run_in_threadpool(events.close)


def usage(answer: Answer) -> dict[str, int]:
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens}


def stream_events(engine: Engine, prompt: str, sampling: Sampling, head: dict[str, Any],
                  body: dict[str, Any]) -> Iterator[str]:
    """OpenAI's chunks: the role first, then text deltas, then the finish reason (and usage when asked)."""
    def event(delta: dict[str, str], finish: str | None = None, **extra: Any) -> str:
        chunk = {**head, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(chunk)}\n\n"

    answer = Answer()
    yield event({"role": "assistant", "content": ""})
    try:
        for piece in engine.stream(prompt, sampling, answer):
            yield event({"content": piece})
    except Exception as exc:  # the status line is sent already: the error goes in the stream, as OpenAI's does
        yield f"data: {json.dumps({'error': {'message': f'generation failed: {exc}', 'type': 'server_error'}})}\n\n"
        return
    yield event({}, answer.finish_reason)
    if (body.get("stream_options") or {}).get("include_usage"):
        last = {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage(answer)}
        yield f"data: {json.dumps(last)}\n\n"
    yield "data: [DONE]\n\n"


@contextmanager
def serving_in_thread(app: FastAPI, port: int) -> Iterator[str]:
    """The app on 127.0.0.1:port in a background thread (benchmarks, tests); yields its /v1 URL."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, name="selfchat-serve", daemon=True)
    thread.start()
    while not server.started:
        if not thread.is_alive():
            raise RuntimeError(f"the server did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
