"""``POST /v1/completions``: OpenAI's legacy completions, for prompt/completion models (``babbage-002``,
``davinci-002`` and the models fine-tuned from them on ``{"prompt", "completion"}`` data).

The prompt is encoded as the trainer encodes a prompt/completion example's prompt (the tokenizer's own special
tokens, no chat template), and the model continues it until its end-of-text token, a stop string or
``max_tokens`` (default 16, as OpenAI's). Answers are ``text_completion`` objects; streamed, Server-Sent Events of
the same shape ending with ``data: [DONE]``. Fields that ask for what the server lacks (``logprobs``, ``suffix``,
``echo``, penalties, ``logit_bias``, ``best_of`` other than ``n``, token-id prompts) are 400s naming the field.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import iterate_in_threadpool, run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict

from tunewise import __version__
from tunewise.errors import TunewiseError, UsageError
from tunewise.serve import naming
from tunewise.serve.deps import PrincipalDep, StateDep
from tunewise.serve.errors import TYPES
from tunewise.serve.errors import body as error_body
from tunewise.serve.limits import check_model_name
from tunewise.serve.routes.chat import _collect
from tunewise.serve.store import new_id

router = APIRouter(tags=["completions"])
log = logging.getLogger("tunewise.serve")
DEFAULT_MAX_TOKENS = 16
"""OpenAI's default ``max_tokens`` for completions."""
MAX_PROMPTS = 16
"""Prompts one request may hold (a list of strings): each is its own batch of ``n`` rows."""


def _nothing(v: Any) -> bool:
    return v is None or v is False or v == 0 or v == {} or v == ""


REFUSED = {
    "logprobs": ("log probabilities", "Leave logprobs out."),
    "echo": ("echoing the prompt", "Leave echo out (or false), and prepend the prompt yourself."),
    "suffix": ("insertion after a suffix", "Leave suffix out."),
    "frequency_penalty": ("frequency penalties", "Leave frequency_penalty out (or 0)."),
    "presence_penalty": ("presence penalties", "Leave presence_penalty out (or 0)."),
    "logit_bias": ("logit bias", "Leave logit_bias out."),
}


class CompletionRequest(BaseModel):
    """OpenAI's CreateCompletionRequest; a field it does not have is refused as OpenAI refuses it."""

    model_config = ConfigDict(extra="allow")
    model: str
    prompt: Any
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    best_of: int | None = None
    user: str | None = None
    logprobs: Any = None
    echo: Any = None
    suffix: Any = None
    frequency_penalty: Any = None
    presence_penalty: Any = None
    logit_bias: Any = None


def _prompts(prompt: Any) -> list[str]:
    if isinstance(prompt, str):
        return [prompt]
    if isinstance(prompt, list) and prompt and all(isinstance(p, str) for p in prompt):
        if len(prompt) > MAX_PROMPTS:
            raise UsageError(f"prompt holds {len(prompt)} prompts; this server takes at most {MAX_PROMPTS} per "
                             "request.", param="prompt", hint="Send the rest in further requests.")
        return prompt
    if isinstance(prompt, list) and prompt and all(isinstance(p, int | list) for p in prompt):
        raise UsageError("prompt as token ids is not supported: each model here has its own tokenizer.",
                         param="prompt", hint="Send the prompt as text.")
    raise UsageError("prompt must be a string or a non-empty list of strings.", param="prompt",
                     hint='Example: "prompt": "Coffee - $4.50 ->"')


def _requests(body: CompletionRequest, local: str, max_chat_tokens: int) -> list[Any]:
    from tunewise.infer.types import GenerationRequest

    for name, (lacks, fix) in REFUSED.items():
        value = getattr(body, name)
        if not _nothing(value):
            raise UsageError(f"{name}={value!r:.80} asks for {lacks}, which this server does not provide.",
                             param=name, code="unsupported_parameter", hint=fix)
    n = 1 if body.n is None else body.n
    if body.best_of is not None and body.best_of != n:
        raise UsageError(f"best_of={body.best_of} asks for server-side sampling of several candidates, which this "
                         "server does not provide.", param="best_of", code="unsupported_parameter",
                         hint="Leave best_of out (or equal to n).")
    max_tokens = DEFAULT_MAX_TOKENS if body.max_tokens is None else body.max_tokens
    if isinstance(max_tokens, int) and max_tokens > max_chat_tokens:
        raise UsageError(f"max_tokens={max_tokens} is more than this server's limit of {max_chat_tokens} "
                         "(setting max_chat_tokens, env TUNEWISE_MAX_CHAT_TOKENS).", param="max_tokens")
    return [GenerationRequest(model=local, messages=[], prompt=p, max_tokens=max_tokens,
                              temperature=1.0 if body.temperature is None else body.temperature,
                              top_p=1.0 if body.top_p is None else body.top_p, stop=body.stop, seed=body.seed, n=n)
            for p in _prompts(body.prompt)]


@router.post("/completions", response_model=None)
async def create_completion(body: CompletionRequest, request: Request, state: StateDep,
                            principal: PrincipalDep) -> dict[str, Any] | StreamingResponse:
    check_model_name(body.model)
    for name in body.model_extra or {}:
        raise UsageError(f"Unrecognized request argument supplied: {name}.", param=name, code="unknown_parameter",
                         hint="Remove it; the fields OpenAI's completion request takes are listed in its API "
                         "reference.")
    target = naming.resolve(state.store, state.settings, principal.project, body.model)
    reqs = _requests(body, target.local, state.settings.max_chat_tokens)
    for req in reqs:
        req.check(state.settings.engine_max_batch_size)
    engine = await run_in_threadpool(state.engine)
    completion_id, created = new_id("cmpl-"), int(time.time())
    fingerprint = f"fp_tunewise_{__version__}"
    n = reqs[0].n

    def obj(choices: list[dict], usage: dict[str, int] | None) -> dict[str, Any]:
        out: dict[str, Any] = {"id": completion_id, "object": "text_completion", "created": created,
                               "model": body.model, "system_fingerprint": fingerprint, "choices": choices}
        if usage is not None:
            out["usage"] = usage
        return out

    # Every prompt queued at once: the engine batches them.
    streams = [await run_in_threadpool(engine.stream, req) for req in reqs]
    if not body.stream:
        try:
            results = await asyncio.gather(*(run_in_threadpool(_collect, s, n) for s in streams))
        finally:
            for s in streams:
                s.close()
        choices = [{"text": c.text, "index": k * n + c.index, "logprobs": None, "finish_reason": c.finish_reason}
                   for k, result in enumerate(results) for c in result.choices]
        prompt_tokens = sum(r.prompt_tokens for r in results)
        completion_tokens = sum(r.completion_tokens for r in results)
        return obj(choices, {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                             "total_tokens": prompt_tokens + completion_tokens})

    include_usage = bool((body.stream_options or {}).get("include_usage"))

    async def events() -> AsyncIterator[str]:
        try:
            for k, stream in enumerate(streams):  # prompt after prompt (all decode together in the engine)
                async for delta in iterate_in_threadpool(stream):
                    if delta.text or delta.finish_reason is not None:
                        yield "data: " + json.dumps(obj([{"text": delta.text, "index": k * n + delta.index,
                                                          "logprobs": None,
                                                          "finish_reason": delta.finish_reason}], None)) + "\n\n"
        except Exception as exc:  # the status line is sent: report the failure in the stream, as OpenAI does
            log.exception("completion stream failed")
            status = exc.status if isinstance(exc, TunewiseError) else 500
            yield "data: " + json.dumps(error_body(str(exc), type=TYPES.get(status, "server_error"),
                                                   param=getattr(exc, "param", None),
                                                   code=getattr(exc, "code", None))) + "\n\n"
            return
        finally:
            for s in streams:
                s.close()
        if include_usage:
            prompt_tokens = sum(s.prompt_tokens for s in streams)
            completion_tokens = sum(s.completion_tokens for s in streams)
            yield "data: " + json.dumps(obj([], {"prompt_tokens": prompt_tokens, "completion_tokens":
                                                 completion_tokens, "total_tokens": prompt_tokens +
                                                 completion_tokens})) + "\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
