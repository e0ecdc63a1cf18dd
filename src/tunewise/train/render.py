"""Rendering chat examples into token ids and labels, exactly as inference renders them.

Inference renders a conversation with ``tokenizer.apply_chat_template(messages[:k], add_generation_prompt=True)``
and generates until the end-of-turn token. Training builds each example turn by turn from those very calls: the
context of every trained assistant turn is token for token the inference prompt for it, and its labels are the
tokens inference must generate: the content, then the end-of-turn token (so the model learns to stop). Two checks
prove the agreement on every example of every job:

1. the inference prompt for each trained turn continues, token for token, what was built for the earlier turns;
2. the template's own render of the turn reads, after that prompt, as exactly the content and the end-of-turn token.

Only assistant tokens are labelled (turns with ``weight`` 0 stay unlabelled context). A failed check is a
``DataError`` naming the line: a template mismatch between training and serving never trains silently.

Legacy prompt/completion examples (``{"prompt": ..., "completion": ...}``, the format of babbage-002 and
davinci-002) are plain causal LM, no chat template: the prompt's tokens as a completion request encodes
them (the tokenizer's own special tokens, a BOS where it adds one), then the completion's tokens and the
end-of-text token, labelled; the prompt stays unlabelled context.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewise.errors import DataError, Unsupported

IGNORE = -100  # label of a token the loss skips (PyTorch's cross_entropy default ignore_index)


@dataclass
class Rendered:
    """One example as the model sees it."""

    line: int
    """1-based line of the example in its JSONL file."""
    input_ids: list[int]
    labels: list[int]
    """``input_ids[t]`` where the token is trained (assistant content and its end-of-turn token), else -100."""

    @property
    def n_labels(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def read_examples(path: str | Path, model: str | None = None,
                  param: str = "training_file") -> Iterator[tuple[int, dict[str, Any]]]:
    """Validate the file with ``tunewise.data`` (which names the lines at fault), then yield ``(line, example)``.

    ``model`` is a registry name or None (the data checks then use OpenAI's rules). A validation file may hold
    fewer than the 10 examples OpenAI asks of a training file.
    """
    try:
        from tunewise import data
    except ImportError:  # the data module is optional for the trainer; fall back to a strict minimal reader
        data = None
    if data is None or not hasattr(data, "validate") or not hasattr(data, "iter_examples"):
        yield from _read_jsonl(path)
        return
    # The local trainer trains both formats: the file's first example says which one it is in.
    report = data.validate(path, model=model, data_format="auto")
    if getattr(report.stats, "data_format", None) == "preference":
        raise DataError(f"{path} is preference data (input, preferred_output, non_preferred_output): it trains "
                        "with DPO, not supervised fine-tuning.",
                        hint="Train it with --method dpo (the API: method type \"dpo\").",
                        code="preference_format_for_supervised", param=param)
    yield from checked_examples(report, path, param)


def checked_examples(report: Any, path: str | Path, param: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line, example)`` of a file whose validation ``report`` has no errors; else its ``DataError``, naming
    ``param``. A validation file may hold fewer than the 10 examples OpenAI asks of a training file."""
    from tunewise import data

    if param != "training_file":
        report.findings = [f for f in report.findings if f.code != "too_few_examples"]
    try:
        report.raise_for_errors()
    except DataError as exc:
        exc.param = param
        raise
    yield from data.iter_examples(path)


def _read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """The minimum the trainer needs: JSON objects with a non-empty ``messages`` list of role/content dicts."""
    path = Path(path)
    try:
        handle = path.open(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc.strerror or exc}.", hint="Check the path.",
                        param="training_file") from exc
    with handle:
        for n, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                example = json.loads(raw)
            except ValueError as exc:
                raise DataError(f"{path}:{n}: not valid JSON ({exc}).", hint="Each line must be one JSON object.",
                                param="training_file") from exc
            messages = example.get("messages") if isinstance(example, dict) else None
            if not isinstance(messages, list) or not messages or not all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
                raise DataError(f"{path}:{n}: expected {{\"messages\": [{{\"role\": ..., \"content\": ...}}, ...]}}.",
                                hint="Validate the file with `tunewise validate`.", param="training_file")
            yield n, example


def _text(content: Any) -> str:
    """OpenAI allows content as a string or a list of parts; the chat templates here want a string."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content)


def normalize_messages(messages: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as the chat template receives them, at training and at inference alike: role, text content, and
    the tool fields when present (``weight`` is the trainer's business, not the template's)."""
    out = []
    for m in messages:
        msg: dict[str, Any] = {"role": m["role"], "content": _text(m.get("content"))}
        for key in ("name", "tool_calls", "tool_call_id"):
            if m.get(key) is not None:
                msg[key] = m[key]
        out.append(msg)
    return out


def uses_tools(example: dict[str, Any]) -> bool:
    return bool(example.get("tools") or example.get("functions")) or any(
        m.get("role") in ("tool", "function") or m.get("tool_calls") or m.get("function_call")
        for m in example.get("messages", [])
    )


def template_supports_tools(tokenizer) -> bool:
    """Its own chat template has a tool format, or it is a ChatML model, for which tunewise ships one
    (``tunewise.infer.tools``)."""
    from tunewise.infer.tools import supports_tools

    return supports_tools(tokenizer)


class Renderer:
    """Renders examples for one tokenizer; ``render`` returns ids and labels or raises a ``DataError``."""

    def __init__(self, tokenizer, *, model_name: str = "the model") -> None:
        self.tokenizer = tokenizer
        self.model_name = model_name
        self.eot_id = tokenizer.eos_token_id  # the end-of-turn token inference stops at (<|im_end|> for SmolLM2)
        self.tools_ok = template_supports_tools(tokenizer)

    def _ids(self, messages: list[dict[str, Any]], tools: Any, generation_prompt: bool) -> list[int]:
        # The very call inference makes (token ids, not text re-tokenized differently), with the template it
        # picks (tunewise's tool-capable ChatML template for a tool conversation on a model without one).
        from tunewise.infer.tools import apply_template

        return apply_template(self.tokenizer, messages, tools, generation_prompt=generation_prompt)

    def prompt_ids(self, messages: list[dict[str, Any]], tools: Any = None) -> list[int]:
        """What inference feeds the model before it answers after ``messages``."""
        return self._ids(normalize_messages(messages), tools, True)

    def render(self, line: int, example: dict[str, Any]) -> Rendered:
        if "messages" not in example and "prompt" in example:
            return self.render_prompt_completion(line, example)
        if uses_tools(example) and not self.tools_ok:
            raise Unsupported(
                f"Line {line}: a tool-calling example, but {self.model_name}'s chat template has no tool format.",
                hint="Remove tool examples (tools, tool_calls, role 'tool') or use a model whose chat template "
                "supports tools.",
                code="tools_unsupported", param="training_file",
            )
        raw = example["messages"]
        messages = normalize_messages(raw)
        tools = example.get("tools")

        # Built turn by turn: each trained turn's context is exactly the inference prompt for it, and its labels
        # exactly the tokens inference must generate (the content, then the end-of-turn token).
        ids: list[int] = []
        labels: list[int] = []
        for k, message in enumerate(raw):
            if message.get("role") != "assistant" or message.get("weight", 1) == 0:
                continue
            prompt = self._ids(messages[:k], tools, True)
            if prompt[: len(ids)] != ids:
                raise DataError(
                    f"Line {line}: render mismatch: the inference prompt for assistant message {k} does not "
                    f"continue the conversation as rendered for training with {self.model_name}'s chat template.",
                    hint="An earlier assistant message tokenizes differently inside the history (often leading "
                    "or trailing whitespace in its content); strip it, or give the earlier turns weight 0.",
                    code="render_mismatch", param="training_file",
                )
            completion = self._completion(line, k, messages, tools, prompt)
            labels += [IGNORE] * (len(prompt) - len(ids)) + completion
            ids = prompt + completion
        last_labelled = len(ids)
        if last_labelled == 0:
            raise DataError(
                f"Line {line}: no assistant message to train on (none, or all with weight 0).",
                hint="Give the example an assistant message with weight 1, or remove it.",
                code="no_trainable_tokens", param="training_file",
            )
        # Tokens after the last trained one teach nothing and only cost compute.
        return Rendered(line=line, input_ids=ids, labels=labels)

    def prompt_completion_ids(self, prompt: str) -> list[int]:
        """What a completion request feeds the model for ``prompt`` (the tokenizer's own special tokens)."""
        return list(self.tokenizer(prompt, add_special_tokens=True)["input_ids"])

    def render_prompt_completion(self, line: int, example: dict[str, Any]) -> Rendered:
        """Plain causal LM on a legacy example: labels on the completion's tokens and the end-of-text token."""
        prompt, completion = example.get("prompt"), example.get("completion")
        if not isinstance(prompt, str) or not isinstance(completion, str) or not completion.strip():
            raise DataError(f"Line {line}: a prompt/completion example needs a string prompt and a non-empty "
                            "string completion.", hint="Run `tunewise validate FILE --model davinci-002`.",
                            code="no_trainable_tokens", param="training_file")
        context = self.prompt_completion_ids(prompt)
        target = list(self.tokenizer.encode(completion, add_special_tokens=False)) + [self.eot_id]
        if self.eot_id in target[:-1]:
            raise DataError(f"Line {line}: the completion holds the end-of-text token "
                            f"{self.tokenizer.eos_token!r}, so the model would learn to stop inside it.",
                            hint="Remove the special token from the completion.", code="render_mismatch",
                            param="training_file")
        return Rendered(line=line, input_ids=context + target, labels=[IGNORE] * len(context) + target)

    def _completion(self, line: int, k: int, messages: list[dict[str, Any]], tools: Any,
                    prompt: list[int]) -> list[int]:
        """The tokens inference must generate for assistant message ``k``, checked against the template."""
        message = messages[k]
        if message.get("tool_calls"):
            # Only the template knows how it writes tool calls: take its render of this turn.
            full = self._ids(messages[: k + 1], tools, False)
            if full[: len(prompt)] != prompt or self.eot_id not in full[len(prompt):]:
                raise DataError(f"Line {line}: render mismatch in the tool call of assistant message {k}.",
                                hint="The chat template renders this turn differently from its prompt.",
                                code="render_mismatch", param="training_file")
            return full[len(prompt): full.index(self.eot_id, len(prompt)) + 1]
        completion = list(self.tokenizer.encode(message["content"], add_special_tokens=False)) + [self.eot_id]
        # The check that proves agreement: the template's own render of this turn, after the inference prompt,
        # must read as exactly this content followed by the end-of-turn token.
        full = self._ids(messages[: k + 1], tools, False)
        text = self.tokenizer.decode(full, skip_special_tokens=False)
        expected = self.tokenizer.decode(prompt + completion, skip_special_tokens=False)
        if self.eot_id in completion[:-1] or not text.startswith(expected):
            raise DataError(
                f"Line {line}: render mismatch: {self.model_name}'s chat template does not render assistant "
                f"message {k} as its content followed by the end-of-turn token after the inference prompt.",
                hint="Check the chat template, and that the content holds no special tokens such as "
                + repr(self.tokenizer.eos_token) + ".",
                code="render_mismatch", param="training_file",
            )
        return completion
