"""Converting a fine-tuning file between OpenAI's two formats: chat ``{"messages": [...]}`` and the legacy
``{"prompt": ..., "completion": ...}`` that babbage-002 and davinci-002 take.

chat -> prompt/completion: the completion is the last assistant message's text; the prompt is every message
before it as ``Role: text`` lines, then ``Assistant:`` (so the model sees whose turn it is, and inference
sends a prompt in the same shape). prompt/completion -> chat: a user message with the prompt, an assistant
message with the completion. Lines already in the target format, and lines that are not examples, are
copied byte for byte (``tunewise validate`` reports them); the input is never modified.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from tunewise.catalog import CHAT, PROMPT_COMPLETION
from tunewise.data.reading import fast_loads, open_checked, raw_lines
from tunewise.data.rules import example_format
from tunewise.errors import UsageError

ASSISTANT_CUE = "Assistant:"


def _text(content) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str)]
        return "".join(parts) if parts else None
    return None


def chat_to_prompt_completion(example: dict) -> dict | None:
    """The prompt/completion example for a chat one; None when it has no assistant text to complete."""
    messages = example.get("messages")
    if not isinstance(messages, list):
        return None
    last = max((i for i, m in enumerate(messages) if isinstance(m, dict) and m.get("role") == "assistant"
                and _text(m.get("content")) is not None), default=None)
    if last is None:
        return None
    lines = []
    for m in messages[:last]:
        text = _text(m.get("content")) if isinstance(m, dict) else None
        if text is not None and isinstance(m.get("role"), str):
            lines.append(f"{m['role'].capitalize()}: {text}")
    lines.append(ASSISTANT_CUE)
    return {"prompt": "\n".join(lines), "completion": " " + _text(messages[last]["content"])}


def prompt_completion_to_chat(example: dict) -> dict | None:
    """The chat example for a prompt/completion one; None when either part is not a string."""
    prompt, completion = example.get("prompt"), example.get("completion")
    if not isinstance(prompt, str) or not isinstance(completion, str):
        return None
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": completion}]}


def convert(path: str | os.PathLike, out: str | os.PathLike, to_format: str) -> list[int]:
    """Write ``path`` to ``out`` with every example in the other format converted to ``to_format``
    (``chat`` or ``prompt_completion``); return the converted lines. ``out`` may be ``path`` itself only
    when it is a copy made for the purpose (the CLI converts its own ``--fix`` output)."""
    if to_format not in (CHAT, PROMPT_COMPLETION):
        raise UsageError(f"Unknown data format {to_format!r}.", hint="Use chat or prompt_completion.")
    convert_one = chat_to_prompt_completion if to_format == PROMPT_COMPLETION else prompt_completion_to_chat
    dst = Path(out)
    tmp = dst.with_name(dst.name + ".tmp")
    changed: list[int] = []
    try:
        with open_checked(path) as fh, open(tmp, "wb") as w:
            for number, raw in raw_lines(fh):
                try:
                    example = fast_loads(raw) if raw.strip() else None
                except ValueError:
                    example = None
                new = None
                if isinstance(example, dict) and example_format(example) not in (None, to_format):
                    new = convert_one(example)
                if new is None:
                    w.write(raw + b"\n")
                else:
                    w.write(json.dumps(new, ensure_ascii=False).encode("utf-8") + b"\n")
                    changed.append(number)
        os.replace(tmp, dst)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise UsageError(f"Cannot write {dst}: {exc.strerror}.", param="fix") from None
    return changed
