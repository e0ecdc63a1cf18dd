"""Distillation: a training file whose answers are a teacher's, for a student that gets only a short prompt.

The teacher is any candidate (a model and its long prompt, on any OpenAI-compatible endpoint, OpenAI included);
it answers each input, each answer is checked (a JSON Schema, graders where given; a cut-off answer never passes),
and the answers that pass become chat examples with the student's short system prompt. Failing answers are left
out and counted by reason (and written beside the output with the reason, to read). The file is then validated and
priced like any training file.

```python
from tunewise.eval import candidate_from_dict
from tunewise.eval.distill import distill, distill_stored

teacher = candidate_from_dict({"model": "gpt-4o", "system_prompt_file": "long_prompt.txt"})
result = distill("inputs.jsonl", teacher, "train.jsonl", student_prompt="Extract items as JSON.", schema=schema)
result.n_kept, result.left_out          # 180, {"schema": 3, "truncated": 1}
result.report.ok, result.estimate.cost_usd
distill_stored(client, "train.jsonl", metadata={"task": "receipts"}, student_prompt="...")  # from stored traffic
```

Requests run as in ``tunewise eval``: concurrently, each retried on transient errors, answers cached in the eval
cache, with an optional progress bar.
"""

from __future__ import annotations

import json
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tunewise.errors import DataError, TunewiseError, UsageError
from tunewise.eval import metrics as M
from tunewise.eval.cache import CompletionCache, cache_key
from tunewise.eval.candidates import Candidate, resolve_endpoint
from tunewise.eval.runner import (
    DEFAULT_CONCURRENCY,
    REQUEST_TIMEOUT_S,
    SDK_MAX_RETRIES,
    _error_text,
    _fatal,
    build_messages,
    call_candidate,
    in_daemon_threads,
)

DEFAULT_STUDENT_MODEL = "gpt-4o-mini"
"""The model the training file is validated (token counts) and priced for, unless another is named."""

Grader = Callable[[str, list[dict]], bool | str]
"""A check of one answer: ``grader(answer, input_messages)`` returns True to keep it, False (or a reason string)
to leave it out."""

REASONS = ("error", "truncated", "empty", "invalid_json", "schema", "grader")
"""Why an answer is left out: the request failed; cut off at max_tokens (finish_reason ``length``); no text; not
JSON while a schema is given; against the schema; refused by a grader."""


@dataclass(frozen=True)
class Input:
    line: int
    """Line of the inputs file (1-based), or the index of a stored completion."""
    messages: list[dict]
    """The conversation up to the answer to be written (system message included when it had one)."""
    source: str | None = None
    """The stored completion's id (``--from-stored``)."""


@dataclass
class DistillResult:
    out_path: Path
    n_inputs: int
    n_kept: int
    left_out: dict[str, int]
    """Reason -> how many answers were left out for it (only reasons that occurred)."""
    rejected_path: Path | None
    """``OUT.rejected.jsonl``: each left-out answer with its line, reason and detail (None when none was)."""
    requests: int = 0
    cache_hits: int = 0
    report: Any = None
    """The ``tunewise.data.Report`` of the written file (None when nothing was kept)."""
    estimate: Any = None
    """Its ``tunewise.cost.TrainingEstimate`` (None when the file cannot be priced: see ``notes``)."""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {"out": str(self.out_path), "n_inputs": self.n_inputs, "n_kept": self.n_kept,
               "left_out": self.left_out, "rejected": str(self.rejected_path) if self.rejected_path else None,
               "requests": self.requests, "cache_hits": self.cache_hits, "notes": self.notes}
        if self.report is not None:
            out["validation"] = {"ok": self.report.ok, "errors": len(self.report.errors),
                                 "warnings": len(self.report.warnings)}
        if self.estimate is not None:
            out["estimate"] = self.estimate.to_dict()
        return out


# ---------------------------------------------------------------- inputs

def _input_messages(value: Any) -> list[dict] | None:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    if isinstance(value, dict) and isinstance(value.get("messages"), list):
        messages = value["messages"]
        if not messages or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages):
            return None
        while messages and messages[-1].get("role") == "assistant":
            messages = messages[:-1]  # an answer already there is replaced by the teacher's
        return [{k: v for k, v in m.items() if k != "weight"} for m in messages] or None
    if isinstance(value, dict) and isinstance(value.get("role"), str) and "content" in value:
        return [value]
    return None


def load_inputs(path: str | os.PathLike, limit: int | None = None) -> list[Input]:
    """Inputs from JSONL: per line a user message as a JSON string, a message object (``{"role": "user",
    "content": ...}``) or a chat example (``{"messages": [...]}``; trailing assistant messages are dropped)."""
    from tunewise.data.reading import text_lines

    path = Path(path)
    out: list[Input] = []
    for n, line in text_lines(path, "Inputs file", "Pass a JSONL file of inputs."):
        try:
            messages = _input_messages(json.loads(line))
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}, line {n}: not JSON ({exc.msg}).",
                            hint="Each line is a JSON string, a message object or {\"messages\": [...]}.") from None
        if messages is None or not any(m.get("role") == "user" for m in messages):
            raise DataError(f"{path}, line {n}: not an input (a user message as a JSON string, "
                            "{\"role\": \"user\", \"content\": ...} or {\"messages\": [...]} with a user message).",
                            hint="Fix the line or remove it.")
        out.append(Input(n, messages))
        if limit is not None and len(out) >= limit:
            break
    if not out:
        raise DataError(f"Inputs file {path} holds no inputs.", hint="Add one input per line.")
    return out


def student_messages(messages: list[dict], student_prompt: str | None) -> list[dict]:
    """The conversation the student is trained on: its short system prompt in place of any system message."""
    if student_prompt is None:
        return [dict(m) for m in messages]
    return [{"role": "system", "content": student_prompt}] + [dict(m) for m in messages if m.get("role") != "system"]


# ---------------------------------------------------------------- checks

def regex_grader(pattern: str) -> Grader:
    """A grader that keeps answers matching ``pattern`` (``re.search``)."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise UsageError(f"Grader pattern {pattern!r} is not a regular expression: {exc}.") from None

    def grade(answer: str, messages: list[dict]) -> bool | str:
        return True if compiled.search(answer) else f"does not match {pattern!r}"

    return grade


def openai_grader(grader, context=None) -> Grader:
    """A grader in OpenAI's shape (``tunewise.eval.graders``: ``string_check``, ``text_similarity``, ``score_model``,
    ``python``, ``multi``) as a distillation check. Its templates see ``{{ sample.output_text }}`` (the answer) and
    ``{{ item.input }}`` (the last user message) and ``{{ item.messages }}``. The answer is kept when the grader
    passes it (its ``pass_threshold``; ``string_check``: a match) or, for a grader without a pass rule, when its
    reward is 1; a grader that fails on the answer (a judge error) leaves it out."""
    from tunewise.eval.graders import grade

    def check(answer: str, messages: list[dict]) -> bool | str:
        users = [m.get("content") for m in messages if m.get("role") == "user"]
        item = {"input": users[-1] if users else "", "messages": messages}
        result = grade(grader, answer, item, context)
        passed = result.passed if result.passed is not None else result.reward >= 1.0
        flags = [k for k, v in result.errors.items() if v] if isinstance(result.errors, dict) else []
        if passed and not flags:
            return True
        return f"{grader.name}: reward {result.reward:g}" + (f" ({', '.join(flags)})" if flags else "")

    check.__name__ = grader.name
    return check


def check_answer(answer: str | None, finish_reason: str | None, validator=None,
                 graders: Iterable[Grader] = (), messages: list[dict] | None = None) -> tuple[str, str] | None:
    """(reason, detail) when the answer must be left out, None when it is kept."""
    if finish_reason == "length":
        return "truncated", "cut off at max_tokens (finish_reason 'length')"
    if answer is None or not answer.strip():
        return "empty", "no answer text"
    if validator is not None:
        value = M.parse_json(answer)
        if value is M._MISSING:
            return "invalid_json", "not valid JSON"
        errors = M.schema_errors(value, validator)
        if errors:
            return "schema", "; ".join(errors[:3])
    for grader in graders:
        verdict = grader(answer, messages or [])
        if verdict is not True:
            return "grader", verdict if isinstance(verdict, str) else getattr(grader, "__name__", "grader")
    return None


# ---------------------------------------------------------------- writing

def _write(out_path: Path, kept: list[tuple[Input, list[dict], str]],
           rejected: list[dict]) -> Path | None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w", encoding="utf-8") as fh:
        for _, messages, answer in kept:
            fh.write(json.dumps({"messages": messages + [{"role": "assistant", "content": answer}]},
                                ensure_ascii=False) + "\n")
    rejected_path = out_path.with_name(out_path.name.removesuffix(".jsonl") + ".rejected.jsonl")
    if not rejected:
        rejected_path.unlink(missing_ok=True)
        return None
    with open(rejected_path, "w", encoding="utf-8") as fh:
        for row in rejected:
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")
    return rejected_path


def _finish(out_path: Path, n_inputs: int, kept: list, rejected: list[dict], student_model: str, prices,
            epochs: int | str, requests: int = 0, hits: int = 0) -> DistillResult:
    from tunewise.cost import estimate_training
    from tunewise.data import validate

    kept.sort(key=lambda k: k[0].line)
    rejected.sort(key=lambda r: r["line"])
    rejected_path = _write(out_path, kept, rejected)
    result = DistillResult(out_path, n_inputs, len(kept), dict(Counter(r["reason"] for r in rejected)),
                           rejected_path, requests=requests, cache_hits=hits)
    if not kept:
        result.notes.append("No answer passed the checks: the training file is empty.")
        return result
    result.report = validate(out_path, model=student_model, prices=prices)
    try:
        result.estimate = estimate_training(result.report, student_model, epochs=epochs, prices=prices)
    except TunewiseError as exc:
        result.notes.append(f"Not priced: {exc}")
    return result


# ---------------------------------------------------------------- the teacher

def distill(inputs: str | os.PathLike | list[Input], teacher: Candidate, out: str | os.PathLike, *,
            student_prompt: str | None = None, schema: dict | None = None, graders: Iterable[Grader] = (),
            concurrency: int = DEFAULT_CONCURRENCY, limit: int | None = None,
            cache: bool | str | os.PathLike = True, student_model: str = DEFAULT_STUDENT_MODEL,
            prices: str | os.PathLike | None = None, epochs: int | str = "auto", progress: bool = False,
            timeout: float = REQUEST_TIMEOUT_S) -> DistillResult:
    """The teacher answers every input; the answers that pass the checks become the training file ``out``.

    ``cache``: True for the eval cache (``$TUNEWISE_HOME/eval-cache.sqlite``), a path for another, False to send
    every request. A bad key or an unknown model stops the run (every request would fail); other failures leave
    that answer out (reason ``error``).
    """
    import openai
    from tqdm import tqdm

    if concurrency < 1:
        raise UsageError(f"concurrency must be at least 1, not {concurrency}.", param="concurrency")
    items = inputs if isinstance(inputs, list) else load_inputs(inputs, limit)
    graders = list(graders)
    validator = M.make_validator(schema) if schema is not None else None
    ep = resolve_endpoint(teacher)
    client = openai.OpenAI(base_url=ep.base_url, api_key=ep.api_key, max_retries=SDK_MAX_RETRIES, timeout=timeout)
    store = CompletionCache(None if cache is True else cache) if cache else None
    requests, lock, stopping = [0], threading.Lock(), threading.Event()

    def job(item: Input) -> tuple[Input, dict | None, str | None]:
        messages = build_messages(item.messages, teacher)
        key = cache_key(ep.base_url, teacher.model, messages, teacher.params())
        response = store.get(key) if store is not None else None
        if response is not None:
            return item, response, None
        with lock:
            requests[0] += 1
        try:
            response = call_candidate(client, teacher, messages, stopping)
        except openai.OpenAIError as exc:
            fatal = _fatal(exc, teacher, ep.base_url)
            if fatal is not None:
                raise fatal from None
            return item, None, _error_text(exc)
        if store is not None:
            store.put(key, ep.base_url, teacher.model, response)
        return item, response, None

    kept: list[tuple[Input, list[dict], str]] = []
    rejected: list[dict] = []
    bar = tqdm(total=len(items), desc="distill", unit="call", disable=not progress, dynamic_ncols=True)
    try:
        for item, response, error in in_daemon_threads(job, items, concurrency, stopping, "tunewise-distill"):
            if error is not None:
                rejected.append({"line": item.line, "reason": "error", "detail": error, "answer": None})
            else:
                answer = response["answer"]
                failed = check_answer(answer, response.get("finish_reason"), validator, graders, item.messages)
                if failed:
                    rejected.append({"line": item.line, "reason": failed[0], "detail": failed[1], "answer": answer})
                else:
                    kept.append((item, student_messages(item.messages, student_prompt), answer))
            bar.update(1)
    except BaseException:
        stopping.set()  # also for an interrupt of this loop itself
        raise
    finally:
        bar.close()
        client.close()
        hits = store.hits if store is not None else 0
        if store is not None:
            store.close()
    return _finish(Path(out), len(items), kept, rejected, student_model, prices, epochs, requests[0], hits)


# ---------------------------------------------------------------- stored completions

def distill_stored(client, out: str | os.PathLike, *, metadata: dict[str, str] | None = None,
                   model: str | None = None, student_prompt: str | None = None, schema: dict | None = None,
                   graders: Iterable[Grader] = (), limit: int | None = None,
                   student_model: str = DEFAULT_STUDENT_MODEL, prices: str | os.PathLike | None = None,
                   epochs: int | str = "auto") -> DistillResult:
    """The same training file from stored completions (``store: true``) on a server, through ``client`` (an
    ``openai.OpenAI``): each stored answer is checked and kept as the teacher's, with the stored input messages.
    ``metadata`` and ``model`` filter which completions are taken, as ``client.chat.completions.list`` does."""
    graders = list(graders)
    validator = M.make_validator(schema) if schema is not None else None
    kwargs: dict[str, Any] = {}
    if metadata:
        kwargs["metadata"] = metadata
    if model:
        kwargs["model"] = model
    kept: list[tuple[Input, list[dict], str]] = []
    rejected: list[dict] = []
    n = 0
    for completion in client.chat.completions.list(limit=100, **kwargs):
        if limit is not None and n >= limit:
            break
        n += 1
        messages = []
        for m in client.chat.completions.messages.list(completion.id, limit=100):
            message = {"role": m.role, "content": m.content}
            if m.content_parts:
                message["content"] = [p.model_dump(exclude_none=True) for p in m.content_parts]
            messages.append(message)
        item = Input(n, messages, completion.id)
        choice = completion.choices[0] if completion.choices else None
        answer = choice.message.content if choice else None
        failed = check_answer(answer, choice.finish_reason if choice else None, validator, graders, messages)
        if failed:
            rejected.append({"line": n, "id": completion.id, "reason": failed[0], "detail": failed[1],
                             "answer": answer})
        else:
            kept.append((item, student_messages(messages, student_prompt), answer))
    if n == 0:
        where = " matching " + ", ".join(f"{k}={v}" for k, v in (metadata or {}).items()) if metadata else ""
        raise DataError(f"No stored chat completions{where}{' for model ' + model if model else ''}.",
                        hint="Create completions with store=True (and metadata to find them), or change the filter.")
    return _finish(Path(out), n, kept, rejected, student_model, prices, epochs)


def parse_metadata(pairs: Iterable[str]) -> dict[str, str]:
    """``k=v`` strings (``--metadata``) as a dict."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--metadata {pair!r} must look like KEY=VALUE.", param="metadata")
        out[key] = value
    return out
