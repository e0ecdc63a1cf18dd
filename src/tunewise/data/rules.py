"""OpenAI's rules for one chat fine-tuning example, as of its current API.

An example is ``{"messages": [...], "tools"?: [...], "parallel_tool_calls"?: bool, "functions"?: [...]}``.
Each rule calls ``emit(code, message, hint)``; the codes are listed in ``report.CODES``.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Callable
from dataclasses import dataclass, field

from tunewise.data.reading import JSONLimitError, strict_loads, type_name

Emit = Callable[[str, str, str], None]

TOP_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})
ROLE_KEYS: dict[str, frozenset[str]] = {
    "system": frozenset({"role", "content", "name"}),
    "user": frozenset({"role", "content", "name"}),
    "assistant": frozenset({"role", "content", "name", "weight", "tool_calls", "function_call", "refusal"}),
    "tool": frozenset({"role", "content", "tool_call_id"}),
    "function": frozenset({"role", "content", "name"}),  # deprecated, still accepted
}
ROLES = tuple(ROLE_KEYS)
ALL_MESSAGE_KEYS = frozenset().union(*ROLE_KEYS.values())
# Content-part types each role may use (user messages may carry images for vision fine-tuning).
PART_TYPES = {"system": {"text"}, "user": {"text", "image_url"}, "assistant": {"text"}, "tool": {"text"},
              "function": {"text"}}
_PLAIN_ROLES = frozenset({"system", "user", "assistant"})
_ROLE_MISTAKES = {"developer": "system", "human": "user", "bot": "assistant", "model": "assistant",
                  "ai": "assistant", "gpt": "assistant"}


@dataclass(slots=True)
class ExampleInfo:
    """What the file-level checks and the token statistics need from one example."""

    n_messages: int = 0
    texts: list[str] = field(default_factory=list)
    """Every string OpenAI's count encodes, in order (roles, contents, names, tool calls)."""
    assistant_texts: list[str] = field(default_factory=list)
    """The assistant messages' content."""
    n_names: int = 0
    system_prompt: str | None = None
    has_system: bool = False
    has_user: bool = False
    answers: list[str] = field(default_factory=list)
    """Trainable assistant answers (string content), for the answer-format check."""
    messages: list[dict] = field(default_factory=list)
    """The well-formed messages (for local models' chat templates)."""
    tools: list | None = None
    rejected: dict | None = None
    """A preference example's non-preferred message (``messages`` ends with the preferred one)."""


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


def _check_parts(parts: list, role: str, where: str, emit: Emit) -> list[str]:
    """Content parts; returns their texts."""
    texts = []
    allowed = PART_TYPES[role]
    if not parts:
        emit("invalid_content", f"{where}: content is an empty list.", "Give at least one text part, or a string.")
    for j, part in enumerate(parts):
        if not isinstance(part, dict):
            emit("invalid_content", f"{where}: content part {j} is {type_name(part)}, not an object.",
                 'Use {"type": "text", "text": "..."}.')
            continue
        ptype = part.get("type")
        if not isinstance(ptype, str) or ptype not in allowed:
            emit("invalid_content", f"{where}: content part {j} has type {ptype!r}; a {role} message accepts "
                 + " or ".join(sorted(allowed)) + ".", 'Use {"type": "text", "text": "..."}.')
        elif ptype == "text":
            if not isinstance(part.get("text"), str):
                emit("invalid_content", f"{where}: content part {j} has no string `text`.",
                     'Use {"type": "text", "text": "..."}.')
            else:
                texts.append(part["text"])
        elif ptype == "image_url":
            img = part.get("image_url")
            if not isinstance(img, dict) or not isinstance(img.get("url"), str):
                emit("invalid_content", f"{where}: content part {j} needs image_url: {{\"url\": \"...\"}}.",
                     "Give an https URL or a data: URL of the image.")
    return texts


def _check_tool_calls(calls, where: str, emit: Emit, tool_names: set[str] | None, info: ExampleInfo,
                      call_ids: set[str]) -> int:
    """Checks ``tool_calls``; returns how many calls the message makes."""
    hint = 'Use [{"id": "call_1", "type": "function", "function": {"name": "...", "arguments": "{...}"}}].'
    if not isinstance(calls, list) or not calls:
        emit("invalid_tool_calls", f"{where}: tool_calls must be a non-empty list, not {type_name(calls)}.", hint)
        return 0
    for j, call in enumerate(calls):
        at = f"{where}: tool_calls[{j}]"
        if not isinstance(call, dict):
            emit("invalid_tool_calls", f"{at} is {type_name(call)}, not an object.", hint)
            continue
        unknown = set(call) - {"id", "type", "function"}
        if unknown:
            emit("invalid_tool_calls", f"{at} has unknown key(s) {', '.join(sorted(unknown))}.", hint)
        if not isinstance(call.get("id"), str) or not call.get("id"):
            emit("invalid_tool_calls", f"{at} has no string `id`.", "Give each call an id; the tool message "
                 "that answers it repeats it as tool_call_id.")
        else:
            call_ids.add(call["id"])
        if call.get("type") != "function":
            emit("invalid_tool_calls", f"{at} has type {call.get('type')!r}; it must be \"function\".", hint)
        fn = call.get("function")
        if not isinstance(fn, dict):
            emit("invalid_tool_calls", f"{at} has no `function` object.", hint)
            continue
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            emit("invalid_tool_calls", f"{at}.function has no string `name`.", hint)
        else:
            info.texts.append(name)
            if tool_names is not None and name not in tool_names:
                emit("unknown_tool_name", f"{at} calls '{name}', which the example's tools do not define.",
                     did_you_mean(name, tool_names) or "Add the function to `tools` or fix the name; defined: "
                     + (", ".join(sorted(tool_names)) or "none") + ".")
        args = fn.get("arguments")
        if isinstance(args, dict | list):
            emit("tool_arguments_not_string", f"{at}.function.arguments is {type_name(args)}; OpenAI wants a "
                 "JSON string.", "Encode it: json.dumps(arguments).")
        elif not isinstance(args, str):
            emit("invalid_tool_calls", f"{at}.function has no string `arguments`.", 'Use "{}" for no arguments.')
        else:
            info.texts.append(args)
            try:
                strict_loads(args)
            except JSONLimitError as exc:
                emit("tool_arguments_invalid_json", f"{at}.function.arguments cannot be read: {exc.reason}.",
                     "The arguments must be a JSON object encoded as a string, a few levels deep.")
            except json.JSONDecodeError as exc:
                emit("tool_arguments_invalid_json", f"{at}.function.arguments is not valid JSON ({exc.msg} at "
                     f"column {exc.colno}).", "The arguments must be a JSON object encoded as a string.")
    return len(calls)


def _tool_names(tools, emit: Emit) -> set[str] | None:
    hint = 'Use [{"type": "function", "function": {"name": "...", "description": "...", "parameters": {...}}}].'
    if not isinstance(tools, list):
        emit("invalid_tools", f"`tools` must be a list, not {type_name(tools)}.", hint)
        return None
    names = set()
    for j, tool in enumerate(tools):
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(tool.get("function"), dict):
            emit("invalid_tools", f"tools[{j}] is not {{\"type\": \"function\", \"function\": {{...}}}}.", hint)
            continue
        fn = tool["function"]
        if not isinstance(fn.get("name"), str) or not fn["name"]:
            emit("invalid_tools", f"tools[{j}].function has no string `name`.", hint)
            continue
        if "parameters" in fn and not isinstance(fn["parameters"], dict):
            emit("invalid_tools", f"tools[{j}].function.parameters must be a JSON Schema object.", hint)
        names.add(fn["name"])
    return names


def check_example(example: dict, emit: Emit) -> ExampleInfo:
    """Every rule for one example; returns what the file-level checks and the counts need."""
    info = ExampleInfo()
    for key in example:
        if key not in TOP_KEYS:
            suggestion = did_you_mean(key, TOP_KEYS)
            emit("unknown_key", f"unknown key '{key}' on the example.",
                 suggestion or "An example holds messages, and optionally tools and parallel_tool_calls.")
    tool_names = None
    if "tools" in example:
        tool_names = _tool_names(example["tools"], emit)
        if isinstance(example["tools"], list):
            info.tools = example["tools"]
    if "functions" in example:
        emit("deprecated_functions", "top-level `functions` is deprecated.",
             'Use "tools": [{"type": "function", "function": {...}}] instead.')
        if tool_names is None and isinstance(example["functions"], list):
            tool_names = {f["name"] for f in example["functions"] if isinstance(f, dict)
                          and isinstance(f.get("name"), str)}
    parallel = example.get("parallel_tool_calls", True)
    if not isinstance(parallel, bool):
        emit("invalid_parallel_tool_calls", f"parallel_tool_calls must be true or false, not {parallel!r}.",
             "Write true or false (JSON booleans, no quotes).")
        parallel = True

    messages = example.get("messages")
    if messages is None:
        emit("missing_messages", "the example has no `messages`.", 'Each line must be {"messages": [...]}.')
        return info
    if not isinstance(messages, list):
        emit("messages_not_list", f"`messages` is {type_name(messages)}, not a list.",
             'Write "messages": [{"role": "user", "content": "..."}, ...].')
        return info
    if not messages:
        emit("empty_messages", "`messages` is empty.", "Give at least a user and an assistant message.")
        return info

    call_ids: set[str] = set()
    n_assistant = n_trainable = 0
    texts = info.texts
    assistant_texts, answers = info.assistant_texts, info.answers
    for i, msg in enumerate(messages):
        # Fast path for the common message, {"role": system|user|assistant, "content": "non-empty text"}:
        # the same outcome as the full checks below, without them.
        if type(msg) is dict and len(msg) == 2:
            role = msg.get("role")
            content = msg.get("content")
            if type(role) is str and role in _PLAIN_ROLES and type(content) is str and content \
                    and not content.isspace():
                info.n_messages += 1
                info.messages.append(msg)
                texts.append(role)
                texts.append(content)
                if role == "assistant":
                    n_assistant += 1
                    n_trainable += 1
                    assistant_texts.append(content)
                    answers.append(content)
                elif role == "user":
                    info.has_user = True
                else:
                    info.has_system = True
                    if info.system_prompt is None:
                        info.system_prompt = content
                continue
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            emit("message_not_object", f"{where} is {type_name(msg)}, not an object.",
                 'Write {"role": "...", "content": "..."}.')
            continue
        role = msg.get("role")
        if role is None:
            emit("missing_role", f"{where} has no `role`.", "Add \"role\": one of " + ", ".join(ROLES) + ".")
            continue
        if not isinstance(role, str) or role not in ROLE_KEYS:
            suggestion = _ROLE_MISTAKES.get(role) if isinstance(role, str) else None
            hint = (f"did you mean '{suggestion}'?" if suggestion
                    else did_you_mean(role, ROLES) if isinstance(role, str) else "") or ""
            emit("unknown_role", f"{where} has role {role!r}.",
                 (hint + " " if hint else "") + "Roles are " + ", ".join(ROLES) + ".")
            continue
        info.n_messages += 1
        info.messages.append(msg)
        texts.append(role)
        allowed = ROLE_KEYS[role]
        for key in msg:
            if key not in allowed:
                if key in ALL_MESSAGE_KEYS:
                    owners = [r for r, keys in ROLE_KEYS.items() if key in keys and r != "function"]
                    hint = f"'{key}' belongs on {' or '.join(owners)} messages only."
                else:
                    hint = did_you_mean(key, allowed) or f"A {role} message may carry " + ", ".join(sorted(allowed)) + "."
                emit("unknown_key", f"{where} ({role}) has unknown key '{key}'.", hint)
        if "name" in msg:
            info.n_names += 1  # OpenAI's count adds a token for any name key
            if not isinstance(msg["name"], str) or not msg["name"]:
                emit("invalid_name", f"{where}.name must be a non-empty string.", "Remove it or give a string.")
            else:
                texts.append(msg["name"])

        content = msg.get("content")
        content_texts: list[str] = []
        if content is None:
            needs = not (role == "assistant" and ("tool_calls" in msg or "function_call" in msg))
            if needs:
                emit("missing_content", f"{where} ({role}) has no content.",
                     "Give a string content" + (", or tool_calls" if role == "assistant" else "") + ".")
        elif isinstance(content, str):
            content_texts.append(content)
            if not content.strip():
                emit("empty_content", f"{where} ({role}) has empty content.", "Remove the message or fill it in.")
        elif isinstance(content, list) and role != "function":
            content_texts = _check_parts(content, role, where, emit)
        else:
            emit("invalid_content", f"{where} ({role}) content is {type_name(content)}; it must be a string"
                 + (" or a list of content parts." if role != "function" else "."),
                 "Write the message text as a JSON string.")
        texts.extend(content_texts)

        if role == "system":
            info.has_system = True
            if info.system_prompt is None and isinstance(content, str):
                info.system_prompt = content
        elif role == "user":
            info.has_user = True
        elif role == "assistant":
            n_assistant += 1
            if isinstance(msg.get("refusal"), str):
                texts.append(msg["refusal"])
            info.assistant_texts.extend(content_texts)
            weight = msg.get("weight", 1)
            if "weight" in msg and (type(weight) is not int or weight not in (0, 1)):
                emit("invalid_weight", f"{where}.weight is {weight!r}; it must be 0 or 1.",
                     "1 trains on this message, 0 keeps it as context only.")
                weight = 1  # read as meant to be trained, so the checks below do not pile on
            if weight == 1:
                n_trainable += 1
                if isinstance(content, str):
                    info.answers.append(content)
            if "tool_calls" in msg:
                n_calls = _check_tool_calls(msg["tool_calls"], where, emit, tool_names, info, call_ids)
                if n_calls > 1 and parallel is False:
                    emit("invalid_parallel_tool_calls", f"{where} makes {n_calls} tool calls but the example sets "
                         "parallel_tool_calls to false.", "Split the calls over several assistant turns, or set "
                         "parallel_tool_calls to true.")
            if "function_call" in msg:
                fc = msg["function_call"]
                emit("deprecated_function_call", f"{where}.function_call is deprecated.",
                     "Use tool_calls with a tool message answering each call id.")
                if not isinstance(fc, dict) or not isinstance(fc.get("name"), str) \
                        or not isinstance(fc.get("arguments"), str):
                    emit("invalid_tool_calls", f"{where}.function_call must be {{\"name\": str, \"arguments\": "
                         "JSON string}.", "Encode the arguments with json.dumps.")
                else:
                    texts.extend((fc["name"], fc["arguments"]))
        elif role == "tool":
            call_id = msg.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                emit("missing_tool_call_id", f"{where} (tool) has no string tool_call_id.",
                     "Repeat the id of the assistant tool call it answers.")
            else:
                texts.append(call_id)
                if call_id not in call_ids:
                    hint = did_you_mean(call_id, call_ids) if call_ids else "no earlier assistant message made a tool call"
                    emit("unknown_tool_call_id", f"{where} answers tool_call_id '{call_id}', which no earlier "
                         "assistant tool call has.", hint or "Known ids: " + ", ".join(sorted(call_ids)) + ".")
        elif role == "function":
            emit("deprecated_function_role", f"{where} uses the deprecated function role.",
                 "Use an assistant message with tool_calls, answered by a tool message.")

    if n_assistant == 0:
        emit("no_assistant_message", "the example has no assistant message, so there is nothing to learn.",
             "Add the assistant answer you want the model to give.")
    elif n_trainable == 0:
        emit("no_trainable_assistant", "every assistant message has weight 0, so nothing is trained.",
             "Set weight 1 (or drop weight) on the answers to learn.")
    return info


PC_KEYS = frozenset({"prompt", "completion"})


PREFERENCE_KEYS = frozenset({"input", "preferred_output", "non_preferred_output"})
PREFERENCE_INPUT_KEYS = frozenset({"messages", "tools", "parallel_tool_calls"})


def example_format(example: dict) -> str | None:
    """``chat``, ``prompt_completion`` or ``preference`` by the example's keys; None when it shows none."""
    if "messages" in example:
        return "chat"
    if "input" in example or "preferred_output" in example or "non_preferred_output" in example:
        return "preference"
    if "prompt" in example or "completion" in example:
        return "prompt_completion"
    return None


def check_prompt_completion(example: dict, emit: Emit) -> ExampleInfo:
    """OpenAI's rules for one legacy example, ``{"prompt": str, "completion": str}`` (babbage-002, davinci-002).

    OpenAI trains on the completion and bills the tokens of both strings; ``texts`` holds them in that order.
    """
    info = ExampleInfo(has_system=True, has_user=True)  # no system or user message to miss in this format
    for key in example:
        if key not in PC_KEYS:
            emit("unknown_key", f"unknown key '{key}' on the example.",
                 did_you_mean(key, PC_KEYS) or 'A prompt/completion example holds only "prompt" and "completion".')
    for key in ("prompt", "completion"):
        value = example.get(key)
        if key not in example:
            emit(f"missing_{key}", f"the example has no `{key}`.",
                 'Each line must be {"prompt": "...", "completion": "..."}.')
        elif not isinstance(value, str):
            emit(f"invalid_{key}", f"`{key}` is {type_name(value)}, not a string.",
                 f"Write the {key} as a JSON string.")
        else:
            info.texts.append(value)
    completion = example.get("completion")
    if isinstance(completion, str):
        info.assistant_texts.append(completion)
        if completion.strip():
            info.answers.append(completion)
        else:
            emit("empty_completion", "`completion` is empty, so the example teaches nothing.",
                 "Give the text the model should write after the prompt, or remove the example.")
    return info


def _check_output(example: dict, key: str, tools, emit: Emit) -> dict | None:
    """``preferred_output`` or ``non_preferred_output``: a list of exactly one assistant message, checked by the
    chat rules (its findings name the key). Returns the message when it is usable."""
    hint = f'Write "{key}": [{{"role": "assistant", "content": "..."}}].'
    if key not in example:
        emit(f"missing_{key}", f"the example has no `{key}`.", hint)
        return None
    output = example[key]
    if not isinstance(output, list) or len(output) != 1:
        what = type_name(output) if not isinstance(output, list) else f"a list of {len(output)} messages"
        emit("invalid_preference_output", f"`{key}` is {what}; it must be a list of exactly one assistant "
             "message (OpenAI trains on one final assistant turn).", hint)
        return None
    message = output[0]
    if not isinstance(message, dict) or message.get("role") != "assistant":
        role = message.get("role") if isinstance(message, dict) else type_name(message)
        emit("invalid_preference_output", f"`{key}`[0] is {role!r}, not an assistant message.", hint)
        return None
    if "weight" in message:
        emit("unknown_key", f"`{key}`[0] has `weight`; a preference output is always trained.",
             "Remove `weight`.")
        message = {k: v for k, v in message.items() if k != "weight"}

    def relay(code: str, text: str, fix: str) -> None:
        if code in ("invalid_tools", "deprecated_functions", "invalid_parallel_tool_calls"):
            return  # the input's own findings
        emit(code, text.replace("messages[0]", f"{key}[0]"), fix)

    shell: dict = {"messages": [message]}
    if isinstance(tools, list):
        shell["tools"] = tools
    info = check_example(shell, relay)
    return message if info.n_messages == 1 else None


def check_preference(example: dict, emit: Emit) -> ExampleInfo:
    """OpenAI's rules for one DPO example: ``{"input": {"messages", "tools"?, "parallel_tool_calls"?},
    "preferred_output": [assistant], "non_preferred_output": [assistant]}``.

    The input's messages follow the chat rules (they need no assistant message: the outputs are the answers) and
    must not end with an assistant turn; each output is one assistant message. ``texts`` holds the input's strings
    then both outputs' (what the file's tokens are); ``messages`` is the input plus the preferred output, and
    ``rejected`` the non-preferred message.
    """
    for key in example:
        if key not in PREFERENCE_KEYS:
            emit("unknown_key", f"unknown key '{key}' on the example.",
                 did_you_mean(key, PREFERENCE_KEYS) or "A preference example holds input, preferred_output and "
                 "non_preferred_output.")
    info = ExampleInfo()
    raw_input = example.get("input")
    tools = None
    if "input" not in example:
        emit("missing_preference_input", "the example has no `input`.",
             'Write "input": {"messages": [{"role": "user", "content": "..."}]}.')
    elif not isinstance(raw_input, dict):
        emit("invalid_preference_input", f"`input` is {type_name(raw_input)}, not an object.",
             'Write "input": {"messages": [...], "tools": [...], "parallel_tool_calls": true}.')
    else:
        def relay(code: str, text: str, fix: str) -> None:
            if code in ("no_assistant_message", "no_trainable_assistant"):
                return  # the outputs are the answers
            if code == "unknown_key" and text.startswith("unknown key '"):
                fix = did_you_mean(text.split("'")[1], PREFERENCE_INPUT_KEYS) or \
                    "`input` holds messages, and optionally tools and parallel_tool_calls."
            text = text.replace("on the example", "on `input`").replace("the example has no `messages`",
                                                                         "`input` has no `messages`")
            emit(code, text.replace("`messages`", "`input.messages`").replace("messages[", "input.messages["), fix)

        info = check_example(raw_input, relay)
        tools = info.tools
        if info.messages and info.messages[-1].get("role") == "assistant":
            emit("invalid_preference_input", f"input.messages ends with an assistant message "
                 f"(messages[{len(info.messages) - 1}]); the outputs are the answer to the input.",
                 "End the input with the user (or tool) message the outputs answer.")
        if any(m.get("role") == "assistant" and m.get("weight") is not None for m in info.messages):
            emit("unknown_key", "an input message has `weight`; only the outputs are trained.", "Remove `weight`.")
    info.answers = []
    info.assistant_texts = []
    preferred = _check_output(example, "preferred_output", tools, emit)
    rejected = _check_output(example, "non_preferred_output", tools, emit)
    for message in (preferred, rejected):
        if message is None:
            continue
        part = check_example({"messages": [message]}, lambda *a: None)
        info.n_messages += 1
        info.texts.extend(part.texts)
        info.assistant_texts.extend(part.assistant_texts)
    if preferred is not None:
        info.messages.append(preferred)
        if isinstance(preferred.get("content"), str):
            info.answers.append(preferred["content"])
    info.rejected = rejected
    if preferred is not None and rejected is not None and preferred == rejected:
        emit("identical_preference_outputs", "preferred_output and non_preferred_output are the same message, so "
             "the example teaches no preference.", "Give a worse answer as non_preferred_output, or remove it.")
    return info


RFT_CHAT_KEYS = ("messages", "tools", "parallel_tool_calls")


def check_reinforcement(example: dict, emit: Emit, fields: tuple[str, ...] | list[str] = ()) -> ExampleInfo:
    """OpenAI's rules for one reinforcement fine-tuning example: chat ``messages`` (and optionally ``tools``,
    ``parallel_tool_calls``) that end with the turn the model answers, no answer of its own, and any other
    top-level fields as the grader's ``item`` (``fields``: those the grader's templates read, required on
    every line). ``texts`` holds the messages' strings (the prompt's tokens)."""
    def relay(code: str, text: str, fix: str) -> None:
        if code in ("no_assistant_message", "no_trainable_assistant"):
            return  # the model writes the answer; the grader scores it
        emit(code, text, fix)

    if "messages" not in example:
        emit("missing_messages", "the example has no `messages`.",
             'Write "messages": [{"role": "user", "content": "..."}] and the fields the grader reads.')
        return ExampleInfo()
    info = check_example({k: example[k] for k in RFT_CHAT_KEYS if k in example}, relay)
    if info.messages and info.messages[-1].get("role") == "assistant":
        emit("rft_final_assistant_message", f"messages ends with an assistant message "
             f"(messages[{len(info.messages) - 1}]); in reinforcement fine-tuning the model writes the answer.",
             "End with the user (or tool) message to answer; put the expected answer in a field the grader reads, "
             "e.g. \"reference_answer\" and {{ item.reference_answer }}.")
    for name in fields:
        if name not in example:
            emit("rft_missing_item_field", f"the example has no `{name}`, which the grader reads "
                 f"({{{{ item.{name} }}}}).", f"Add \"{name}\" to every line, or change the grader.")
    info.answers = []
    info.assistant_texts = []
    return info
