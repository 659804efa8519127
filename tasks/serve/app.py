"""The OpenAI chat completions API in front of a ChatEngine: `/v1/models`, `/v1/chat/completions` (whole or
streamed as server-sent events), `/health`; errors in OpenAI's shape, so the OpenAI SDK works unchanged."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from tasks.serve.conversation import BadRequest, fit_prompt, turns_from_messages
from tasks.serve.engine import Answer, ChatEngine, Sampling


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


def sampling_of(body: dict[str, Any], served: Served) -> Sampling:
    if body.get("n", 1) != 1:
        raise BadRequest("n: only 1 answer per request")
    stop = body.get("stop") or ()
    stop = (stop,) if isinstance(stop, str) else tuple(stop)
    max_tokens = body.get("max_completion_tokens") or body.get("max_tokens") or served.max_tokens
    if not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequest(f"max_tokens: a positive integer is needed (got {max_tokens!r})")
    temperature = float(body.get("temperature") or 0.0)
    return Sampling(max_tokens, temperature, float(body.get("top_p") or 1.0), stop, body.get("seed"))


def build_app(engine: ChatEngine, served: Served) -> FastAPI:
    app = FastAPI(title=f"selfchat: {served.model_id} (version {served.version})")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": served.model_id, "version": served.version}

    @app.get("/v1/models")
    def models() -> dict:
        return {"object": "list", "data": [{"id": served.model_id, "object": "model", "created": 0,
                                            "owned_by": "selfchat", "version": served.version}]}

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Any:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            return error(400, BadRequest("the body is not JSON"))
        try:
            if not served.accepts(str(body.get("model", ""))):
                raise ModelNotFound(f"model {body.get('model')!r} is not served here; this server serves "
                                    f"{served.model_id} (version {served.version})")
            sampling = sampling_of(body, served)
            system, turns = turns_from_messages(body.get("messages") or [], served.system)
            prompt = fit_prompt(engine.tokenizer, system, turns, sampling.max_tokens, served.context_tokens)
        except ModelNotFound as exc:
            return error(404, exc)
        except BadRequest as exc:
            return error(400, exc)
        completion_id, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        head = {"id": completion_id, "created": created, "model": served.model_id,
                "system_fingerprint": f"{served.model_name}/{served.version}"}
        if body.get("stream"):
            return StreamingResponse(stream_events(engine, prompt.text, sampling, head, body),
                                     media_type="text/event-stream")
        answer = await run_in_threadpool(engine.answer, prompt.text, sampling)
        return {**head, "object": "chat.completion",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": answer.text},
                             "finish_reason": answer.finish_reason, "logprobs": None}],
                "usage": usage(answer)}

    return app


def usage(answer: Answer) -> dict[str, int]:
    return {"prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
            "total_tokens": answer.prompt_tokens + answer.completion_tokens}


def stream_events(engine: ChatEngine, prompt: str, sampling: Sampling, head: dict, body: dict) -> Iterator[str]:
    """OpenAI's chunks: the role first, then text deltas, then the finish reason (and usage when asked)."""
    def event(delta: dict, finish: str | None = None, **extra: Any) -> str:
        chunk = {**head, "object": "chat.completion.chunk",
                 "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}], **extra}
        return f"data: {json.dumps(chunk)}\n\n"

    answer = Answer()
    yield event({"role": "assistant", "content": ""})
    for piece in engine.stream(prompt, sampling, answer):
        yield event({"content": piece})
    yield event({}, answer.finish_reason)
    if (body.get("stream_options") or {}).get("include_usage"):
        last = {**head, "object": "chat.completion.chunk", "choices": [], "usage": usage(answer)}
        yield f"data: {json.dumps(last)}\n\n"
    yield "data: [DONE]\n\n"
