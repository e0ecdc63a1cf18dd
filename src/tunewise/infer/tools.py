"""Tool calling, for any generation backend: the checks of ``tools``/``tool_choice``, the chat template that
writes them into the prompt, the grammar that constrains the calls, and the parser that reads them back.

A backend needs nothing of its own for tools: it renders the prompt with ``prompt_ids`` (which the trainer's
render uses too, so a fine-tuned model sees at inference exactly what it was trained on), compiles the
``structural_tag`` (an xgrammar structural tag, JSON) when there is one, and hands the text it generated to
``parse_tool_calls`` (or feeds it, piece by piece, to a ``ToolCallStream``).

The format is the common ChatML convention of Qwen2.5 and Hermes: the functions as JSON lines inside
``<tools></tools>`` in the system turn, each call as ``<tool_call>\\n{"name": ..., "arguments": {...}}\\n</tool_call>``
after the assistant header, tool results as ``<tool_response>...</tool_response>`` in a user turn. Models whose own
chat template has a tool format keep theirs; ChatML models whose template has none (SmolLM2, the tests' tiny
model) get tunewise's ``templates/chatml_tools.jinja``, byte for byte the same in training and serving, for the
conversations that use tools (the others keep the model's own template, so nothing changes for them).
"""

from __future__ import annotations

import json
import re
import secrets
import string
from functools import cache
from importlib import resources
from typing import Any

from tunewise.errors import UsageError

TEMPLATE_NAME = "chatml_tools.jinja"
MAX_TOOLS = 128
"""OpenAI's limit on ``tools`` per request."""
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""A function name as OpenAI allows it."""
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
CALL_BEGIN = '<tool_call>\n{"name": "'
ARGS_PREFIX = '", "arguments": '
CALL_END = "}\n</tool_call>"
"""How the template writes a call: ``CALL_BEGIN + name + ARGS_PREFIX + arguments + CALL_END``."""
MAX_JSON_WHITESPACE = 1
"""Consecutive whitespace characters a constrained JSON value may hold (the template writes one space)."""
TOOL_CHOICES = ("none", "auto", "required")


@cache
def chatml_tools_template() -> str:
    """The tool-capable ChatML template tunewise ships (``src/tunewise/infer/templates/chatml_tools.jinja``)."""
    return resources.files("tunewise.infer").joinpath("templates", TEMPLATE_NAME).read_text(encoding="utf-8")


def own_template_has_tools(tokenizer) -> bool:
    template = tokenizer.chat_template or ""
    return "tools" in template or "tool_calls" in template


def is_chatml(tokenizer) -> bool:
    template = tokenizer.chat_template or ""
    return "<|im_start|>" in template and "<|im_end|>" in tokenizer.get_vocab()


def supports_tools(tokenizer) -> bool:
    """Whether conversations with tools can be rendered for this tokenizer (its own template, or ours)."""
    return own_template_has_tools(tokenizer) or is_chatml(tokenizer)


def uses_tools(messages: list[dict[str, Any]], tools: Any = None) -> bool:
    return bool(tools) or any(isinstance(m, dict) and (m.get("role") == "tool" or m.get("tool_calls"))
                              for m in messages)


def template_for(tokenizer, messages: list[dict[str, Any]], tools: Any = None) -> str | None:
    """The chat template to render these messages with: None for the model's own, else tunewise's."""
    if uses_tools(messages, tools) and not own_template_has_tools(tokenizer) and is_chatml(tokenizer):
        return chatml_tools_template()
    return None


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as chat templates take them: a tool call's ``arguments`` as an object, not OpenAI's JSON string
    (templates write ``arguments | tojson``; a string that is not a JSON object stays a string)."""
    out = []
    for m in messages:
        calls = m.get("tool_calls")
        if isinstance(calls, list) and calls:
            fixed = []
            for call in calls:
                if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
                    fixed.append(call)  # the template refuses it, a 400
                    continue
                fn = dict(call["function"])
                args = fn.get("arguments")
                if isinstance(args, str):
                    try:
                        parsed = json.loads(args)
                    except ValueError:
                        parsed = None
                    if isinstance(parsed, dict):
                        fn["arguments"] = parsed
                fixed.append({**call, "function": fn})
            m = {**m, "tool_calls": fixed}
        out.append(m)
    return out


def apply_template(tokenizer, messages: list[dict[str, Any]], tools: Any = None, *,
                   generation_prompt: bool = True) -> list[int]:
    """Token ids of ``messages`` (already normalised, see ``train.render.normalize_messages``) by the chat template
    ``template_for`` picks: the one call training and every backend make."""
    kwargs: dict[str, Any] = {}
    if tools:
        kwargs["tools"] = tools
    if uses_tools(messages, tools) and not supports_tools(tokenizer):
        raise UsageError("This model's chat template has no tool format, and it is not a ChatML model (for which "
                         "tunewise has one): it cannot be given tools.", param="tools" if tools else "messages",
                         hint="Leave tools and tool messages out, or use a model whose chat template supports tools.")
    template = template_for(tokenizer, messages, tools)
    if template is not None:
        kwargs["chat_template"] = template
    ids = tokenizer.apply_chat_template(template_messages(messages), add_generation_prompt=generation_prompt,
                                        tokenize=True, return_dict=False, **kwargs)
    return [int(x) for x in ids]


# ---------------------------------------------------------------- checking a request's tools

def check_tools(tools: Any, tool_choice: Any = None, parallel_tool_calls: Any = None) -> None:
    """Raise a ``UsageError`` (a 400) naming the field at fault, as OpenAI names it (``tools[0].function.name``)."""
    if tools is None or tools == []:  # an empty list asks for nothing, as OpenAI's SDKs send it
        if tool_choice not in (None, "none", "auto"):
            raise UsageError("tool_choice is only allowed when tools are specified.", param="tool_choice",
                             hint="Pass the functions in tools, or leave tool_choice out.")
        if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
            raise UsageError(f"parallel_tool_calls must be true or false, not {parallel_tool_calls!r}.",
                             param="parallel_tool_calls")
        return
    if not isinstance(tools, list) or not tools:
        raise UsageError("tools must be a non-empty list of {\"type\": \"function\", \"function\": {...}} objects.",
                         param="tools", hint="Leave tools out for a plain answer.")
    if len(tools) > MAX_TOOLS:
        raise UsageError(f"tools holds {len(tools)} functions; the limit is {MAX_TOOLS}.", param="tools",
                         hint="Pass only the functions this request may need.")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        at = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type") != "function":
            raise UsageError(f"{at} must be an object with \"type\": \"function\".", param=f"{at}.type",
                             hint='Example: {"type": "function", "function": {"name": "get_order", "parameters": '
                             '{"type": "object", "properties": {...}}}}')
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise UsageError(f"{at}.function must be an object with a name.", param=f"{at}.function")
        unknown = set(tool) - {"type", "function"}
        if unknown:
            raise UsageError(f"{at} has unknown field(s) {', '.join(sorted(unknown))}.", param=f"{at}",
                             hint="A tool holds only type and function.")
        unknown = set(fn) - {"name", "description", "parameters", "strict"}
        if unknown:
            raise UsageError(f"{at}.function has unknown field(s) {', '.join(sorted(unknown))}.",
                             param=f"{at}.function", hint="A function holds name, description, parameters, strict.")
        name = fn.get("name")
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise UsageError(f"{at}.function.name must be 1 to 64 letters, digits, underscores or dashes, not "
                             f"{name!r:.80}.", param=f"{at}.function.name", hint="Rename the function.")
        if name in names:
            raise UsageError(f"{at}.function.name '{name}' is defined twice.", param=f"{at}.function.name",
                             hint="Give each function its own name.")
        names.add(name)
        if "description" in fn and not isinstance(fn["description"], str):
            raise UsageError(f"{at}.function.description must be a string.", param=f"{at}.function.description")
        if "strict" in fn and fn["strict"] is not None and not isinstance(fn["strict"], bool):
            raise UsageError(f"{at}.function.strict must be true or false.", param=f"{at}.function.strict")
        if fn.get("parameters") is not None:
            _check_parameters(fn["parameters"], f"{at}.function.parameters")
    if tool_choice is not None:
        chosen = named_choice(tool_choice)
        if chosen is None and tool_choice not in TOOL_CHOICES:
            raise UsageError(f"tool_choice must be \"none\", \"auto\", \"required\" or {{\"type\": \"function\", "
                             f"\"function\": {{\"name\": ...}}}}, not {tool_choice!r:.80}.", param="tool_choice")
        if chosen is not None and chosen not in names:
            raise UsageError(f"tool_choice names the function '{chosen}', which tools does not define.",
                             param="tool_choice", hint="Defined: " + ", ".join(sorted(names)) + ".")
    if parallel_tool_calls is not None and not isinstance(parallel_tool_calls, bool):
        raise UsageError(f"parallel_tool_calls must be true or false, not {parallel_tool_calls!r}.",
                         param="parallel_tool_calls")


def named_choice(tool_choice: Any) -> str | None:
    """The function a ``{"type": "function", "function": {"name": ...}}`` tool_choice names, else None."""
    if isinstance(tool_choice, dict):
        fn = tool_choice.get("function")
        if tool_choice.get("type") != "function" or not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise UsageError("tool_choice must be {\"type\": \"function\", \"function\": {\"name\": NAME}} to name a "
                             "function.", param="tool_choice")
        return fn["name"]
    return None


def _check_parameters(schema: Any, param: str) -> None:
    from tunewise.infer.grammar import check_schema_bounds

    if not isinstance(schema, dict):
        raise UsageError(f"{param} must be a JSON Schema object.", param=param,
                         hint='Example: {"type": "object", "properties": {"order_id": {"type": "string"}}, '
                         '"required": ["order_id"]}')
    check_schema_bounds(schema, param=param)
    import jsonschema

    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise UsageError(f"{param} is not a valid JSON Schema: {exc.message}", param=param,
                         hint="Check the schema against https://json-schema.org.") from None
    if schema.get("type", "object") != "object":
        raise UsageError(f"{param} must describe an object (\"type\": \"object\"): arguments are a JSON object.",
                         param=param)


# ---------------------------------------------------------------- constraining the calls

def _functions(tools: list[dict]) -> list[dict]:
    return [t["function"] for t in tools]


def _call_tag(fn: dict, constrain: bool) -> dict:
    schema = fn.get("parameters") if constrain and fn.get("parameters") is not None else (
        {"type": "object"} if constrain else True)
    return {"type": "tag", "begin": CALL_BEGIN + fn["name"] + ARGS_PREFIX,
            "content": {"type": "json_schema", "json_schema": schema, "max_whitespace_cnt": MAX_JSON_WHITESPACE},
            "end": CALL_END}


def structural_tag(tools: list[dict] | None, tool_choice: Any = None,
                   parallel_tool_calls: bool | None = None) -> dict | None:
    """The xgrammar structural tag (JSON) that constrains the answer, or None when decoding is free.

    - ``none``: any text without a ``<tool_call>``;
    - ``auto``: free when no function is ``strict``; otherwise any text, and every call once begun is a defined
      function with arguments that match its schema (strict functions) or are a JSON object (the others);
    - ``required``: the answer is one or more calls (one with ``parallel_tool_calls: false``), each a defined
      function with arguments matching its schema;
    - a named function: the answer is one call of it, arguments matching its schema.
    """
    if not tools:
        return None
    parallel = parallel_tool_calls is not False
    functions = _functions(tools)
    name = named_choice(tool_choice)
    if tool_choice == "none":
        fmt: dict = {"type": "any_text", "excludes": [CALL_OPEN]}
    elif name is not None:
        fn = next(f for f in functions if f["name"] == name)
        fmt = _call_tag(fn, True)
    elif tool_choice == "required":
        fmt = {"type": "tags_with_separator", "tags": [_call_tag(f, True) for f in functions], "separator": "\n",
               "at_least_one": True, "stop_after_first": not parallel}
    else:
        if not any(f.get("strict") for f in functions):
            return None
        fmt = {"type": "triggered_tags", "triggers": [CALL_OPEN],
               "tags": [_call_tag(f, bool(f.get("strict"))) for f in functions], "stop_after_first": not parallel}
    return {"type": "structural_tag", "format": fmt}


# ---------------------------------------------------------------- reading the calls back

_ID_ALPHABET = string.ascii_letters + string.digits


def new_call_id() -> str:
    """``call_`` and 24 random letters and digits, like OpenAI's."""
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


def _read_call(body: str) -> tuple[str, str] | None:
    """(name, arguments as a JSON string) of one ``<tool_call>`` body, or None when it is not a call."""
    try:
        value = json.loads(body.strip())
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        return None
    args = value.get("arguments", {})
    if isinstance(args, str):  # some models write the arguments as a JSON string already
        try:
            args = json.loads(args)
        except ValueError:
            return None
    if not isinstance(args, dict):
        return None
    return value["name"], json.dumps(args, ensure_ascii=False)


def parse_tool_calls(text: str) -> tuple[str | None, list[dict]]:
    """(content, tool_calls) of a generated answer: every well-formed ``<tool_call>`` block becomes an OpenAI
    tool call (``{"id": "call_...", "type": "function", "function": {"name", "arguments"}}``); the text outside
    them, stripped, is the content (None when empty and there are calls). A block that does not read as a call
    stays in the content, as written, but for a call cut short at the end of an answer that made others.
    Without calls the content is the text as generated."""
    calls: list[dict] = []
    outside: list[str] = []
    pos = 0
    while True:
        start = text.find(CALL_OPEN, pos)
        if start < 0:
            outside.append(text[pos:])
            break
        end = text.find(CALL_CLOSE, start + len(CALL_OPEN))
        body_end = len(text) if end < 0 else end
        call = _read_call(text[start + len(CALL_OPEN):body_end])
        stop = len(text) if end < 0 else end + len(CALL_CLOSE)
        if call is None:
            # A call cut short (max_tokens) is dropped when others were made; otherwise it stays as written.
            outside.append(text[pos:start] if end < 0 else text[pos:stop])
        else:
            outside.append(text[pos:start])
            calls.append({"id": new_call_id(), "type": "function",
                          "function": {"name": call[0], "arguments": call[1]}})
        pos = stop
        if end < 0:
            break
    if not calls:
        return text, calls
    content = "".join(outside).strip()
    return content or None, calls


class ToolCallStream:
    """Reads tool calls out of streamed text: ``feed`` a piece, get back events, ``finish`` at the end.

    Events are ``("content", text)`` and ``("tool_call", index, id, name, arguments)``. Text that might begin a
    ``<tool_call>`` is held back until it is known, a call is emitted once its ``</tool_call>`` arrives, and
    whitespace is held until more content follows it, so the streamed calls are those of the whole answer and the
    streamed content is its content (but for whitespace before the first call, which cannot be known to lead a
    call until the call comes).
    """

    def __init__(self) -> None:
        self.buffer = ""
        self.pending_space = ""  # whitespace held until more content follows it (trailing whitespace is dropped)
        self.calls = 0
        self.sent = False  # whether any content went out

    def _content(self, text: str, out: list) -> None:
        stripped = text.rstrip()
        if not stripped:
            self.pending_space += text
            return
        if not self.sent and self.calls:  # the content starts after the calls: no leading whitespace
            self.pending_space, stripped = "", stripped.lstrip()
        out.append(("content", self.pending_space + stripped))
        self.sent = True
        self.pending_space = text[len(text.rstrip()):]

    def feed(self, text: str) -> list:
        out: list = []
        self.buffer += text
        while self.buffer:
            start = self.buffer.find(CALL_OPEN)
            if start < 0:
                # Hold back a tail that could be the start of "<tool_call>".
                hold = next((k for k in range(min(len(CALL_OPEN) - 1, len(self.buffer)), 0, -1)
                             if self.buffer.endswith(CALL_OPEN[:k])), 0)
                self._content(self.buffer[:len(self.buffer) - hold], out)
                self.buffer = self.buffer[len(self.buffer) - hold:]
                break
            end = self.buffer.find(CALL_CLOSE, start)
            if end < 0:
                self._content(self.buffer[:start], out)
                self.buffer = self.buffer[start:]
                break
            block = self.buffer[start:end + len(CALL_CLOSE)]
            call = _read_call(block[len(CALL_OPEN):-len(CALL_CLOSE)])
            if call is None:
                self._content(self.buffer[:end + len(CALL_CLOSE)], out)
            else:
                self._content(self.buffer[:start], out)
                out.append(("tool_call", self.calls, new_call_id(), call[0], call[1]))
                self.calls += 1
            self.buffer = self.buffer[end + len(CALL_CLOSE):]
        return out

    def finish(self) -> list:
        """Whatever is left: an unclosed call that still reads as one, or text."""
        out: list = []
        rest, self.buffer = self.buffer, ""
        if rest.startswith(CALL_OPEN):
            call = _read_call(rest[len(CALL_OPEN):])
            if call is not None:
                out.append(("tool_call", self.calls, new_call_id(), call[0], call[1]))
                self.calls += 1
                return out
            if self.calls:
                return out  # a call cut short, after others: dropped, as parse_tool_calls drops it
        self._content(rest, out)
        if self.calls == 0 and self.pending_space:
            out.append(("content", self.pending_space))
        self.pending_space = ""
        return out
