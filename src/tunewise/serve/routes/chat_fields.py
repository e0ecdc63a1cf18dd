"""Which of OpenAI's chat completion request fields the server honours, which it accepts because they ask for
nothing, and which it refuses because they ask for behaviour it does not have.

A field that asks for something the server cannot do (``logprobs: true``, ``audio``, ``functions``, ...) is refused with
a 400 naming it, rather than answered as if it had not been asked: a client that relies on log probabilities or a
tool call must learn at once that it gets neither. Fields that only carry information for OpenAI's own accounting
(``user``, ``service_tier``, ``prompt_cache_key``, ...) or that ask for the default (``logprobs: false``,
``modalities: ["text"]``, ``frequency_penalty: 0``) pass. A field that is not in OpenAI's request at all is refused
as OpenAI refuses it ("Unrecognized request argument supplied").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tunewise.errors import UsageError

HONOURED = frozenset({
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "stop", "seed", "n",
    "stream", "stream_options", "response_format", "store", "metadata", "tools", "tool_choice",
    "parallel_tool_calls",
})
"""Fields ``ChatRequest`` reads (``store`` and ``metadata``: stored completions; ``tools``, ``tool_choice`` and
``parallel_tool_calls``: tool calls, ``tunewise.infer.tools``)."""

ACCEPTED = frozenset({
    "user", "safety_identifier", "prompt_cache_key", "prompt_cache_retention", "prompt_cache_options",
    "service_tier",
})
"""Fields that ask for no behaviour of a local server: any value passes."""


def _none(v: Any) -> bool:
    return v is None


def _empty(v: Any) -> bool:
    return v is None or v == [] or v == {}


def _zero(v: Any) -> bool:
    return v is None or (isinstance(v, int | float) and not isinstance(v, bool) and v == 0)


# field -> (asks for nothing?, what the server lacks, how to do without it)
REFUSED: dict[str, tuple[Callable[[Any], bool], str, str]] = {
    "logprobs": (lambda v: v is None or v is False, "log probabilities of the output tokens",
                 "Leave logprobs out (or set it to false)."),
    "top_logprobs": (_zero, "log probabilities of the most likely tokens", "Leave top_logprobs out."),
    "audio": (_none, "audio output", "Leave audio out: the server answers with text only."),
    "modalities": (lambda v: v is None or v == ["text"], "output modalities other than text",
                   'Leave modalities out or use ["text"].'),
    "functions": (_empty, "the deprecated functions parameter", "Pass the functions as tools: "
                  '[{"type": "function", "function": {...}}].'),
    "function_call": (lambda v: v is None or v == "none", "the deprecated function_call parameter",
                      'Use tool_choice instead (e.g. {"type": "function", "function": {"name": ...}}).'),
    "prediction": (_none, "predicted outputs", "Leave prediction out."),
    "web_search_options": (_none, "web search", "Leave web_search_options out."),
    "logit_bias": (_empty, "logit bias", "Leave logit_bias out."),
    "frequency_penalty": (_zero, "frequency penalties", "Leave frequency_penalty out (or set it to 0)."),
    "presence_penalty": (_zero, "presence penalties", "Leave presence_penalty out (or set it to 0)."),
    "reasoning_effort": (lambda v: v is None or v == "none", "reasoning effort (its models do not reason)",
                         'Leave reasoning_effort out (or use "none").'),
    "verbosity": (lambda v: v is None or v == "medium", "verbosity control", 'Leave verbosity out (or use '
                  '"medium", the default).'),
    "moderation": (_none, "moderation", "Leave moderation out."),
}

KNOWN = HONOURED | ACCEPTED | frozenset(REFUSED)


def refuse_unsupported(fields: dict[str, Any]) -> None:
    """Raise a 400 ``UsageError`` naming the first field of ``fields`` (the request's fields beyond those the
    request model reads) that asks for behaviour the server lacks, or that OpenAI's request does not have."""
    for name, value in fields.items():
        if name in HONOURED or name in ACCEPTED:
            continue
        rule = REFUSED.get(name)
        if rule is None:
            raise UsageError(f"Unrecognized request argument supplied: {name}.", param=name,
                             code="unknown_parameter",
                             hint="Remove it; the fields OpenAI's chat completion request takes are listed in "
                             "its API reference.")
        asks_nothing, lacks, fix = rule
        if not asks_nothing(value):
            raise UsageError(f"{name}={value!r:.80} asks for {lacks}, which this server does not provide.",
                             param=name, code="unsupported_parameter", hint=fix)
