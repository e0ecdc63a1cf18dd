"""``/v1/chat/completions`` through the process's one generation engine (``tunewise.infer.Engine``).

The engine batches concurrent requests; its calls are blocking, so they run in worker threads and the event
loop stays free. Streaming answers are Server-Sent Events of ``chat.completion.chunk`` objects ending with
``data: [DONE]``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Iterator
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
from tunewise.serve.limits import check_model_name, check_schema_bounds
from tunewise.serve.routes import stored
from tunewise.serve.routes.chat_fields import refuse_unsupported
from tunewise.serve.store import new_id

router = APIRouter(tags=["chat"])
DISCONNECT_POLL_S = 0.5  # how often a non-streaming completion checks that its client is still there
log = logging.getLogger("tunewise.serve")


class ChatRequest(BaseModel):
    """The parameters of OpenAI's CreateChatCompletionRequest that the engine honours; the others are kept in
    ``model_extra`` and checked by ``chat_fields.refuse_unsupported``."""

    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[dict[str, Any]]
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    stream: bool | None = None
    stream_options: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    store: bool | None = None
    metadata: dict[str, Any] | None = None
    tools: Any = None
    tool_choice: Any = None
    parallel_tool_calls: Any = None


def _generation_request(body: ChatRequest, local: str, max_chat_tokens: int):
    from tunewise.infer.types import GenerationRequest

    max_tokens = body.max_completion_tokens if body.max_completion_tokens is not None else body.max_tokens
    if max_tokens is not None and max_tokens > max_chat_tokens:
        raise UsageError(f"max_tokens={max_tokens} is more than this server's limit of {max_chat_tokens} "
                         "(setting max_chat_tokens, env TUNEWISE_MAX_CHAT_TOKENS).", param="max_tokens")
    response_format = body.response_format
    if isinstance(response_format, dict) and isinstance(response_format.get("json_schema"), dict):
        check_schema_bounds(response_format["json_schema"].get("schema"))  # before the body reaches a model
    if response_format and response_format.get("type") == "text":
        response_format = None
    return GenerationRequest(
        # Without max_tokens the answer may run to the context's end (at most max_chat_tokens): never refused.
        model=local, messages=body.messages, max_tokens=max_tokens, default_max_tokens=max_chat_tokens,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p, stop=body.stop, seed=body.seed,
        n=1 if body.n is None else body.n, response_format=response_format,
        tools=body.tools or None, tool_choice=body.tool_choice, parallel_tool_calls=body.parallel_tool_calls)


def _reads_calls(req: Any) -> bool:
    """Whether the answer's tool calls are read back (tools given, and tool_choice not "none")."""
    return bool(req.tools) and req.tool_choice != "none"


def _message(req: Any, text: str, finish_reason: str) -> tuple[dict[str, Any], str]:
    """The assistant message of one choice and its finish reason: with tools, the calls read out of the text
    (``finish_reason: "tool_calls"`` when there are any), as OpenAI answers."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None, "annotations": []}
    if _reads_calls(req):
        from tunewise.infer.tools import parse_tool_calls

        content, calls = parse_tool_calls(text)
        if calls:
            message["content"] = content
            message["tool_calls"] = calls
            if finish_reason == "stop":
                finish_reason = "tool_calls"
    return message, finish_reason


async def _generate_while_connected(request: Request, engine: Any, req: Any) -> Any:
    """``engine.generate``, but the rows stop decoding as soon as the client goes away (a client that timed
    out must not keep the engine busy for minutes)."""
    stream = await run_in_threadpool(engine.stream, req, coalesce=True)
    done = asyncio.ensure_future(run_in_threadpool(_collect, stream, req.n))
    try:
        while not done.done():
            await asyncio.wait({done}, timeout=DISCONNECT_POLL_S)
            if not done.done() and await request.is_disconnected():
                stream.close()  # its rows leave the batch at the next step; the collector then ends
                break
        return await done
    finally:
        stream.close()


def _collect(stream: Any, n: int) -> Any:
    from tunewise.infer.types import Choice, GenerationResult

    texts: dict[int, list[str]] = {i: [] for i in range(n)}
    reasons: dict[int, str] = {}
    for delta in stream:
        texts[delta.index].append(delta.text)
        if delta.finish_reason is not None:
            reasons[delta.index] = delta.finish_reason
    return GenerationResult([Choice(i, "".join(texts[i]), reasons.get(i, "stop")) for i in range(n)],
                            stream.prompt_tokens, stream.completion_tokens, model=stream.model)


def _stored_message(req: Any, text: str, calls: list[dict] | None) -> dict[str, Any]:
    """The message of a streamed choice as the non-streamed answer would hold it (the streamed call ids)."""
    message, _ = _message(req, text, "stop")
    if calls:
        message["tool_calls"] = calls
    return message


def _usage(prompt: int, completion: int) -> dict[str, int]:
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


@router.post("/chat/completions", response_model=None)
async def create_chat_completion(body: ChatRequest, request: Request, state: StateDep,
                                 principal: PrincipalDep) -> dict[str, Any] | StreamingResponse:
    check_model_name(body.model)
    refuse_unsupported(body.model_extra or {})
    metadata = stored.check_metadata(body.metadata)
    target = naming.resolve(state.store, state.settings, principal.project, body.model)
    req = _generation_request(body, target.local, state.settings.max_chat_tokens)
    req.check(state.settings.engine_max_batch_size)
    engine = await run_in_threadpool(state.engine)
    completion_id, created = new_id("chatcmpl-"), int(time.time())
    fingerprint = f"fp_tunewise_{__version__}"
    if not body.stream:
        result = await _generate_while_connected(request, engine, req)
        choices = []
        for c in result.choices:
            message, reason = _message(req, c.text, c.finish_reason)
            choices.append({"index": c.index, "finish_reason": reason, "logprobs": None, "message": message})
        answer = {
            "id": completion_id, "object": "chat.completion", "created": created, "model": body.model,
            "system_fingerprint": fingerprint,
            "choices": choices,
            "usage": _usage(result.prompt_tokens, result.completion_tokens),
        }
        if body.store:
            stored.save(state.store, principal.project, body.model_dump(exclude_none=True), answer, metadata)
        return answer

    include_usage = bool((body.stream_options or {}).get("include_usage"))
    deltas = await run_in_threadpool(engine.stream, req)  # loads the model on first use
    # Take the first delta before answering, so that an error in loading the model or in the request is a
    # proper HTTP error rather than a broken stream.
    first = await run_in_threadpool(next, deltas, None)

    def chunk(choices: list[dict[str, Any]], usage: dict[str, int] | None = None) -> str:
        obj: dict[str, Any] = {"id": completion_id, "object": "chat.completion.chunk", "created": created,
                               "model": body.model, "system_fingerprint": fingerprint, "choices": choices}
        if include_usage:
            obj["usage"] = usage
        return f"data: {json.dumps(obj)}\n\n"

    def rest() -> Iterator[Any]:
        if first is not None:
            yield first
        yield from deltas

    texts: dict[int, list[str]] = {}
    finished: dict[int, str] = {}
    readers: dict[int, Any] = {}
    calls: dict[int, list[dict]] = {}

    def pieces(index: int, text: str, last: bool) -> list[dict[str, Any]]:
        """The deltas of a piece of text: content as it comes, or with tools the calls in OpenAI's shape (the
        first delta of a call carries its index, id, type and name, the next its arguments)."""
        if not _reads_calls(req):
            return [{"content": text}] if text else []
        from tunewise.infer.tools import ToolCallStream

        reader = readers.setdefault(index, ToolCallStream())
        events = reader.feed(text) + (reader.finish() if last else [])
        out: list[dict[str, Any]] = []
        for event in events:
            if event[0] == "content":
                out.append({"content": event[1]})
                continue
            _, k, call_id, name, arguments = event
            calls.setdefault(index, []).append({"id": call_id, "type": "function",
                                                "function": {"name": name, "arguments": arguments}})
            out.append({"tool_calls": [{"index": k, "id": call_id, "type": "function",
                                        "function": {"name": name, "arguments": ""}}]})
            out.append({"tool_calls": [{"index": k, "function": {"arguments": arguments}}]})
        return out

    async def events() -> AsyncIterator[str]:
        started: set[int] = set()
        try:
            async for delta in iterate_in_threadpool(rest()):
                texts.setdefault(delta.index, []).append(delta.text)
                reason = delta.finish_reason
                if delta.index not in started:
                    started.add(delta.index)
                    yield chunk([{"index": delta.index, "delta": {"role": "assistant", "content": ""},
                                  "logprobs": None, "finish_reason": None}])
                for piece in pieces(delta.index, delta.text, reason is not None):
                    yield chunk([{"index": delta.index, "delta": piece, "logprobs": None, "finish_reason": None}])
                if reason is not None:
                    if reason == "stop" and calls.get(delta.index):
                        reason = "tool_calls"
                    finished[delta.index] = reason
                    yield chunk([{"index": delta.index, "delta": {}, "logprobs": None, "finish_reason": reason}])
        except Exception as exc:
            # The status line is already sent: report the failure in the stream, as OpenAI does (the SDK raises).
            log.exception("chat completion stream failed")
            status = exc.status if isinstance(exc, TunewiseError) else 500
            yield "data: " + json.dumps(error_body(str(exc), type=TYPES.get(status, "server_error"),
                                                   param=getattr(exc, "param", None),
                                                   code=getattr(exc, "code", None))) + "\n\n"
            return
        finally:
            deltas.close()  # a client that went away stops the decoding of its rows
        if body.store and len(finished) == req.n:  # a complete answer, as the non-streamed one is stored
            usage = deltas.usage or {}
            stored.save(state.store, principal.project, body.model_dump(exclude_none=True), {
                "id": completion_id, "object": "chat.completion", "created": created, "model": body.model,
                "system_fingerprint": fingerprint,
                "choices": [{"index": i, "finish_reason": finished[i], "logprobs": None,
                             "message": _stored_message(req, "".join(texts.get(i, [])), calls.get(i))}
                            for i in sorted(finished)],
                "usage": _usage(usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)),
            }, metadata)
        if include_usage:
            yield chunk([], deltas.usage)
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

