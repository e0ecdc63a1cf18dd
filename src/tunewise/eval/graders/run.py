"""Running a grader on one sample: ``grade(grader, sample, item, context) -> GraderResult``.

The result carries OpenAI's ``RunGraderResponse`` fields (``reward``, ``metadata.errors`` with every flag,
``sub_rewards``, token usage per judge model); a grader that fails on a row scores 0.0 with the flag that says
why, it does not raise. Only a grader that is not allowed here (``python`` where the context forbids it) or a
judge that is needed but not configured raise :class:`GraderError`.
"""

from __future__ import annotations

import json
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any

from tunewise.eval.graders import formula as F
from tunewise.eval.graders import similarity, templates
from tunewise.eval.graders.judge import Embedder, JudgeCallError, ModelJudge
from tunewise.eval.graders.python_runner import DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, run_python
from tunewise.eval.graders.spec import Grader, GraderError, _variables, parse_grader

ERROR_FLAGS = ("formula_parse_error", "sample_parse_error", "truncated_observation_error",
               "unresponsive_reward_error", "invalid_variable_error", "other_error", "python_grader_server_error",
               "python_grader_server_error_type", "python_grader_runtime_error",
               "python_grader_runtime_error_details", "model_grader_server_error", "model_grader_refusal_error",
               "model_grader_parse_error", "model_grader_server_error_details")
_DETAIL_FLAGS = ("python_grader_server_error_type", "python_grader_runtime_error_details",
                 "model_grader_server_error_details")

DEFAULT_JUDGE_MAX_TOKENS = 64


def no_errors() -> dict[str, Any]:
    return {k: (None if k in _DETAIL_FLAGS else False) for k in ERROR_FLAGS}


@dataclass
class GradingContext:
    """What graders may use: the judge endpoint for model graders, an embeddings endpoint for ``cosine``,
    and whether (and how long) ``python`` graders may run."""

    judge: ModelJudge | None = None
    embeddings: Embedder | None = None
    allow_python: bool = True
    python_timeout_s: float = DEFAULT_TIMEOUT_S
    python_memory_mb: int = DEFAULT_MEMORY_MB
    judge_max_tokens: int = DEFAULT_JUDGE_MAX_TOKENS


@dataclass
class GraderResult:
    name: str
    type: str
    reward: float
    passed: bool | None = None
    """string_check: reward == 1; label_model: the label is a passing one; others: reward >= pass_threshold
    where the grader has one, else None."""
    errors: dict[str, Any] = field(default_factory=no_errors)
    execution_time: float = 0.0
    scores: dict[str, Any] = field(default_factory=dict)
    sub_rewards: dict[str, float] = field(default_factory=dict)
    token_usage: dict[str, int] | None = None
    token_usage_per_model: dict[str, dict[str, int]] = field(default_factory=dict)
    sampled_model_name: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    """What else was seen: the judge's raw answer and label, whether it came from the cache, the python
    grader's stderr, the sub-graders' results of a multi grader."""

    @property
    def ok(self) -> bool:
        return not any(self.errors[k] for k in ERROR_FLAGS if k not in _DETAIL_FLAGS)

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's ``RunGraderResponse``."""
        return {
            "reward": self.reward,
            "metadata": {
                "name": self.name,
                "type": self.type,
                "errors": dict(self.errors),
                "execution_time": self.execution_time,
                "scores": dict(self.scores),
                "token_usage": self.token_usage["total_tokens"] if self.token_usage else None,
                "sampled_model_name": self.sampled_model_name,
            },
            "sub_rewards": dict(self.sub_rewards),
            "model_grader_token_usage_per_model": {k: dict(v) for k, v in self.token_usage_per_model.items()},
        }

    def to_dict(self) -> dict[str, Any]:
        """Everything: OpenAI's fields plus ``passed`` and ``details``."""
        return {**self.to_openai(), "passed": self.passed, "details": self.details}

    def summary(self) -> dict[str, Any]:
        """The short form for one row of a results file: reward, passed, the error flags that are set and
        what went wrong, the sub-rewards, and whether a judge's answer came from the cache."""
        out: dict[str, Any] = {"reward": self.reward, "passed": self.passed,
                               "errors": [k for k in ERROR_FLAGS if self.errors[k] is True]}
        message = (self.details.get("error") or self.errors["python_grader_runtime_error_details"]
                   or self.errors["model_grader_server_error_details"])
        if message:
            out["error"] = str(message)[:500]
        if self.sub_rewards:
            out["sub_rewards"] = dict(self.sub_rewards)
        if "cached" in self.details:
            out["cached"] = self.details["cached"]
        if "label" in self.details:
            out["label"] = self.details["label"]
        return out


def _fill(template: str, item: dict, sample: templates.Sample, result: GraderResult) -> str | None:
    try:
        return templates.render(template, item, sample)
    except templates.TemplateError as exc:
        result.errors["sample_parse_error" if exc.kind == "sample_parse" else "invalid_variable_error"] = True
        result.details["error"] = str(exc)
        return None


def _string_check(grader: Grader, item: dict, sample: templates.Sample, result: GraderResult) -> None:
    spec = grader.spec
    left, right = _fill(spec["input"], item, sample, result), _fill(spec["reference"], item, sample, result)
    if left is None or right is None:
        return
    op = spec["operation"]
    hit = {"eq": left == right, "ne": left != right, "like": right in left,
           "ilike": right.casefold() in left.casefold()}[op]
    result.reward = 1.0 if hit else 0.0
    result.passed = hit


def _text_similarity(grader: Grader, item: dict, sample: templates.Sample, result: GraderResult,
                     context: GradingContext) -> None:
    spec = grader.spec
    left, right = _fill(spec["input"], item, sample, result), _fill(spec["reference"], item, sample, result)
    if left is None or right is None:
        return
    metric = spec["evaluation_metric"]
    if metric == "cosine" and context.embeddings is None:
        raise GraderError(f"grader '{grader.name}': evaluation_metric cosine needs an embeddings endpoint.",
                          hint="Give one (Embedder(model, base_url) in the library), or use another metric such "
                          "as rouge_l or fuzzy_match.", param="evaluation_metric", code="invalid_grader")
    try:
        result.reward = similarity.score(metric, left, right, context.embeddings)
    except JudgeCallError as exc:
        result.errors["other_error"] = True
        result.details["error"] = exc.details


def _messages(grader: Grader, item: dict, sample: templates.Sample, result: GraderResult,
              extra: dict[str, templates.Sample] | None = None) -> list[dict] | None:
    messages = []
    for message in grader.spec["input"]:
        content = message["content"]
        parts = content if isinstance(content, list) else [content]
        texts = []
        for part in parts:
            text = part if isinstance(part, str) else part["text"]
            try:
                texts.append(templates.render(text, item, sample, extra))
            except templates.TemplateError as exc:
                flag = "sample_parse_error" if exc.kind == "sample_parse" else "invalid_variable_error"
                result.errors[flag] = True
                result.details["error"] = str(exc)
                return None
        role = "system" if message["role"] == "developer" else message["role"]
        messages.append({"role": role, "content": "\n".join(texts)})
    return messages


def _score_schema(lo: float, hi: float) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "score", "strict": True, "schema": {
        "type": "object", "properties": {"result": {"type": "number", "minimum": lo, "maximum": hi}},
        "required": ["result"], "additionalProperties": False}}}


def _label_schema(labels: list[str]) -> dict:
    return {"type": "json_schema", "json_schema": {"name": "label", "strict": True, "schema": {
        "type": "object", "properties": {"result": {"type": "string", "enum": list(labels)}},
        "required": ["result"], "additionalProperties": False}}}


def score_rubric(lo: float, hi: float) -> str:
    return (f"Grade as the instructions above say. Reply with only a JSON object {{\"result\": SCORE}} where "
            f"SCORE is a number from {lo:g} to {hi:g}.")


def label_rubric(labels: list[str]) -> str:
    return ("Grade as the instructions above say. Reply with only a JSON object {\"result\": LABEL} where LABEL "
            "is exactly one of: " + ", ".join(json.dumps(x) for x in labels) + ".")


def judge_params(grader: Grader, context: GradingContext) -> dict[str, Any]:
    """The request parameters of a judge call: temperature 0 unless the grader sets one."""
    sp = grader.spec.get("sampling_params") or {}
    params: dict[str, Any] = {"temperature": sp["temperature"] if sp.get("temperature") is not None else 0.0,
                              "max_tokens": sp.get("max_completions_tokens") or context.judge_max_tokens}
    if sp.get("top_p") is not None:
        params["top_p"] = sp["top_p"]
    if sp.get("seed") is not None:
        params["seed"] = sp["seed"]
    if grader.type == "score_model":
        lo, hi = grader.spec.get("range") or [0, 1]
        params["response_format"] = _score_schema(float(lo), float(hi))
    else:
        params["response_format"] = _label_schema(grader.spec["labels"])
    return params


def _parse_answer(answer: str | None) -> Any:
    if answer is None:
        return None
    text = answer.strip()
    try:
        value = json.loads(text)
    except ValueError:
        m = re.search(r"\{.*\}", text, re.S)
        try:
            value = json.loads(m.group(0)) if m else text
        except ValueError:
            value = text
    if isinstance(value, dict) and "result" in value:
        return value["result"]
    return value


def read_score(answer: str | None, lo: float, hi: float) -> tuple[float | None, float | None]:
    """A score_model answer as OpenAI reads it: ``{"result": x}`` (or a bare number) clipped to ``[lo, hi]``;
    anything else is None (it scores 0). Returns (score, the value before clipping where it was clipped)."""
    value = _parse_answer(answer)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*", value)
        value = float(m.group(1)) if m else None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None, None
    if not lo <= value <= hi:
        return min(max(float(value), lo), hi), float(value)
    return float(value), None


def read_label(answer: str | None, labels: list[str]) -> str | None:
    """A label_model answer: ``{"result": label}`` (or the bare label, case aside) if it is one of ``labels``."""
    value = _parse_answer(answer)
    if not isinstance(value, str):
        return None
    if value in labels:
        return value
    return {x.casefold(): x for x in labels}.get(value.strip().casefold())


def _model(grader: Grader, item: dict, sample: templates.Sample, result: GraderResult,
           context: GradingContext, extra: dict[str, templates.Sample] | None = None) -> None:
    if context.judge is None:
        raise GraderError(f"grader '{grader.name}' is a {grader.type} grader and needs a judge endpoint.",
                          hint="Give one (ModelJudge(base_url, api_key) in the library; the server uses itself).",
                          param="model", code="invalid_grader")
    messages = _messages(grader, item, sample, result, extra)
    if messages is None:
        return
    spec = grader.spec
    if grader.type == "score_model":
        lo, hi = (float(v) for v in (spec.get("range") or [0, 1]))
        messages.append({"role": "system", "content": score_rubric(lo, hi)})
    else:
        messages.append({"role": "system", "content": label_rubric(spec["labels"])})
    params = judge_params(grader, context)
    try:
        completion = context.judge.complete(spec["model"], messages, params)
    except JudgeCallError as exc:
        result.errors["model_grader_server_error"] = True
        result.errors["model_grader_server_error_details"] = exc.details
        return
    result.sampled_model_name = completion.model
    result.token_usage = dict(completion.usage)
    result.token_usage_per_model = {completion.model: dict(completion.usage)}
    result.details.update({"answer": completion.answer, "cached": completion.cached,
                           "finish_reason": completion.finish_reason})
    if completion.refusal:
        result.errors["model_grader_refusal_error"] = True
        result.details["refusal"] = completion.refusal
        return
    # An unreadable answer cut at max_tokens is a truncation, otherwise a parse error.
    unreadable = "truncated_observation_error" if completion.finish_reason == "length" else "model_grader_parse_error"
    if grader.type == "score_model":
        score, clipped_from = read_score(completion.answer, lo, hi)
        if score is None:
            result.errors[unreadable] = True
            result.details["error"] = "the judge's answer is not a number"
            return
        if clipped_from is not None:
            result.details["clipped_from"] = clipped_from
        result.reward = score
        result.scores = {"result": score}
        if "pass_threshold" in spec:
            result.passed = result.reward >= float(spec["pass_threshold"])
    else:
        labels = spec["labels"]
        label = read_label(completion.answer, labels)
        if label is None:
            result.errors[unreadable] = True
            result.details["error"] = f"the judge's answer is not one of the labels ({', '.join(labels)})"
            return
        result.details["label"] = label
        result.passed = label in spec["passing_labels"]
        result.reward = 1.0 if result.passed else 0.0


def _python(grader: Grader, item: dict, sample: templates.Sample, result: GraderResult,
            context: GradingContext) -> None:
    if not context.allow_python:
        raise GraderError(f"grader '{grader.name}': python graders are not allowed here.",
                          hint="Run it with the CLI or library, or ask the server's operator to enable "
                          "python graders (setting python_graders, env TUNEWISE_PYTHON_GRADERS=1).",
                          param="type", code="python_grader_disabled")
    outcome = run_python(grader.spec["source"], sample.namespace(), item, timeout_s=context.python_timeout_s,
                         memory_mb=context.python_memory_mb)
    if outcome.stderr:
        result.details["stderr"] = outcome.stderr
    if outcome.server_error:
        result.errors["python_grader_server_error"] = True
        result.errors["python_grader_server_error_type"] = outcome.server_error.split(":")[0]
        result.details["error"] = outcome.server_error
        if outcome.server_error.startswith("timeout"):
            result.errors["unresponsive_reward_error"] = True
        return
    if outcome.runtime_error:
        result.errors["python_grader_runtime_error"] = True
        result.errors["python_grader_runtime_error_details"] = outcome.runtime_error
        return
    result.reward = float(outcome.score)
    if "pass_threshold" in grader.spec:
        result.passed = result.reward >= float(grader.spec["pass_threshold"])


def _multi(grader: Grader, item: dict, sample: templates.Sample, result: GraderResult,
           context: GradingContext) -> None:
    children = {key: grade(child, sample, item, context) for key, child in grader.children.items()}
    for key, child in children.items():
        result.sub_rewards[key] = child.reward
        for flag in ERROR_FLAGS:
            if child.errors[flag] and not result.errors[flag]:
                result.errors[flag] = child.errors[flag]
        for model, usage in child.token_usage_per_model.items():
            total = result.token_usage_per_model.setdefault(model, dict.fromkeys(usage, 0))
            for k, v in usage.items():
                total[k] = total.get(k, 0) + v
        result.sampled_model_name = result.sampled_model_name or child.sampled_model_name
    if result.token_usage_per_model:
        result.token_usage = {}
        for usage in result.token_usage_per_model.values():
            for k, v in usage.items():
                result.token_usage[k] = result.token_usage.get(k, 0) + v
    result.scores = dict(result.sub_rewards)
    result.details["graders"] = {k: c.to_dict() for k, c in children.items()}
    values = {var: children[key].reward for var, key in _variables(grader.children).items()}
    try:
        result.reward = F.evaluate(grader.formula, values)
    except F.FormulaError as exc:
        result.errors["formula_parse_error"] = True
        result.details["error"] = f"calculate_output: {exc}"
        result.reward = 0.0


def grade_all(graders: list[Grader], sample: Any, item: dict | None = None,
              context: GradingContext | None = None) -> dict[str, GraderResult]:
    """Every grader on one answer: name -> result (the per-example call of an evaluation)."""
    return {g.name: grade(g, sample, item, context) for g in graders}


def grade(grader: Grader | dict, sample: Any, item: dict | None = None,
          context: GradingContext | None = None) -> GraderResult:
    """Grade one model answer. ``sample`` is the answer text (or ``{"output_text": ..., "output_json": ...}``),
    ``item`` the dataset row the templates' ``{{ item.* }}`` read. Per-row failures are flags on the result
    (reward 0.0), never exceptions."""
    if isinstance(grader, dict):
        grader = parse_grader(grader)
    context = context or GradingContext()
    item = item if item is not None else {}
    sample = templates.Sample.coerce(sample)
    result = GraderResult(name=grader.name, type=grader.type, reward=0.0)
    start = time.perf_counter()
    kind = grader.type
    if kind == "string_check":
        _string_check(grader, item, sample, result)
    elif kind == "text_similarity":
        _text_similarity(grader, item, sample, result, context)
    elif kind in ("score_model", "label_model"):
        _model(grader, item, sample, result, context)
    elif kind == "python":
        _python(grader, item, sample, result, context)
    elif kind == "multi":
        _multi(grader, item, sample, result, context)
    if kind in ("text_similarity",) and result.ok and "pass_threshold" in grader.spec:
        result.passed = result.reward >= float(grader.spec["pass_threshold"])
    result.execution_time = time.perf_counter() - start
    return result
