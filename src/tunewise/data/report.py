"""What validation found: findings with stable codes, and the statistics of the data set."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tunewise.errors import DataError

ERROR = "error"
WARNING = "warning"

# Every finding code, its severity and what it means. The codes are stable: scripts may match on them.
CODES: dict[str, tuple[str, str]] = {
    # reading the file
    "empty_file": (ERROR, "The file holds no examples."),
    "not_utf8": (ERROR, "The file is in another encoding (UTF-16, ...); JSONL must be UTF-8."),
    "invalid_utf8": (ERROR, "A line holds bytes that are not valid UTF-8."),
    "not_jsonl": (ERROR, "The file is one pretty-printed JSON array or object, not one JSON object per line."),
    "invalid_json": (ERROR, "A line is not valid JSON (the message gives the column and the reason)."),
    "unescaped_nested_json": (ERROR, "A string value holds JSON whose quotes are not escaped; "
                                     "`--fix OUT` writes a repaired copy."),
    "json_too_deep": (ERROR, "A line nests arrays or objects more than 200 levels deep; it is not read."),
    "number_too_long": (ERROR, "A line holds an integer of more than 4300 digits; it is not read."),
    "not_object": (ERROR, "A line is valid JSON but not an object (a list, a string, a number)."),
    "blank_line": (WARNING, "An empty line; it is skipped here, but some uploaders reject it."),
    # the example's shape
    "missing_messages": (ERROR, "The example has no `messages` key."),
    "messages_not_list": (ERROR, "`messages` is not a list."),
    "empty_messages": (ERROR, "`messages` is an empty list."),
    "unknown_key": (ERROR, "A key OpenAI does not accept, on the example or on a message."),
    "message_not_object": (ERROR, "An entry of `messages` is not an object."),
    "missing_role": (ERROR, "A message has no `role`."),
    "unknown_role": (ERROR, "A role other than system, user, assistant, tool or function."),
    "deprecated_function_role": (WARNING, "A `function` message: deprecated, use tool calls and `tool` messages."),
    "missing_content": (ERROR, "A message without `content` (assistant messages may omit it only with tool calls)."),
    "invalid_content": (ERROR, "`content` of the wrong type, or a malformed content part."),
    "empty_content": (WARNING, "A message whose content is empty."),
    "invalid_name": (ERROR, "`name` is not a non-empty string."),
    "invalid_weight": (ERROR, "`weight` is not 0 or 1."),
    "invalid_tool_calls": (ERROR, "`tool_calls` is not a list of {id, type: function, function: {name, arguments}}."),
    "tool_arguments_not_string": (ERROR, "A tool call's `arguments` is an object; it must be a JSON string."),
    "tool_arguments_invalid_json": (ERROR, "A tool call's `arguments` string is not valid JSON."),
    "deprecated_function_call": (WARNING, "`function_call` on an assistant message: deprecated, use `tool_calls`."),
    "missing_tool_call_id": (ERROR, "A `tool` message without `tool_call_id`."),
    "unknown_tool_call_id": (ERROR, "A `tool` message answers a tool call id no earlier assistant message made."),
    "invalid_tools": (ERROR, "Top-level `tools` is not a list of {type: function, function: {name, ...}}."),
    "unknown_tool_name": (WARNING, "A tool call names a function that the example's `tools` do not define."),
    "deprecated_functions": (WARNING, "Top-level `functions`: deprecated, use `tools`."),
    "invalid_parallel_tool_calls": (ERROR, "`parallel_tool_calls` is not true or false, or is false while a "
                                           "message makes several tool calls."),
    "no_assistant_message": (ERROR, "The example has no assistant message to learn from."),
    "no_trainable_assistant": (ERROR, "Every assistant message has weight 0, so nothing is trained."),
    "too_long": (ERROR, "The example is longer than the model's limit and its first trained answer starts "
                        "past it: cut at the limit, it teaches nothing."),
    # the legacy prompt/completion format (babbage-002, davinci-002)
    "chat_format_for_prompt_completion_model": (ERROR, "Chat examples for a model trained on prompt/completion "
                                                       "data (babbage-002, davinci-002); `--fix OUT` converts."),
    "prompt_completion_format_for_chat_model": (ERROR, "Prompt/completion examples for a chat model; `--fix OUT` "
                                                       "converts."),
    "missing_prompt": (ERROR, "A prompt/completion example has no `prompt`."),
    "missing_completion": (ERROR, "A prompt/completion example has no `completion`."),
    "invalid_prompt": (ERROR, "`prompt` is not a string."),
    "invalid_completion": (ERROR, "`completion` is not a string."),
    "empty_completion": (ERROR, "`completion` is empty: the example teaches nothing."),
    # the preference format (DPO: `tunewise validate --method dpo`)
    "missing_preference_input": (ERROR, "A preference example has no `input`."),
    "invalid_preference_input": (ERROR, "`input` is not an object, or its messages end with an assistant turn."),
    "missing_preferred_output": (ERROR, "A preference example has no `preferred_output`."),
    "missing_non_preferred_output": (ERROR, "A preference example has no `non_preferred_output`."),
    "invalid_preference_output": (ERROR, "`preferred_output` or `non_preferred_output` is not a list of exactly "
                                         "one assistant message."),
    "identical_preference_outputs": (WARNING, "The preferred and non-preferred outputs are the same: no "
                                              "preference to learn."),
    "chat_format_for_preference": (ERROR, "Chat or prompt/completion examples checked for DPO, which takes the "
                                          "preference format."),
    "preference_format_for_supervised": (ERROR, "Preference examples checked for supervised fine-tuning; "
                                                "validate or train them with --method dpo."),
    # the reinforcement format (RFT: `tunewise validate --method reinforcement --grader G.json`)
    "rft_final_assistant_message": (ERROR, "A reinforcement example ends with an assistant message: the model "
                                           "writes the answer, the grader scores it."),
    "rft_missing_item_field": (ERROR, "A reinforcement example lacks a field the grader's templates read "
                                      "(`{{ item.FIELD }}`)."),
    "format_for_reinforcement": (ERROR, "Preference or prompt/completion examples checked for reinforcement "
                                        "fine-tuning, which takes chat messages ending with the turn to answer."),
    # the data set as a whole
    "too_few_examples": (ERROR, "Fewer than 10 examples: OpenAI refuses the file."),
    "small_dataset": (WARNING, "Under 100 examples: the guide expects little (under 50) or modest gains."),
    "duplicate_example": (WARNING, "Identical examples (the lines are named)."),
    "missing_system_message": (WARNING, "Examples without a system message."),
    "missing_user_message": (WARNING, "Examples without a user message."),
    "inconsistent_system_prompt": (WARNING, "Most examples share one system prompt but some differ."),
    "answer_format_outlier": (WARNING, "Most assistant answers are JSON but some are not (or the reverse)."),
    "truncated": (WARNING, "Examples longer than the model's limit per example: fine-tuning cuts off their "
                           "end (OpenAI and the local trainer alike), and bills only up to the limit."),
}


@dataclass
class Finding:
    code: str
    """Stable identifier (see ``CODES``)."""
    severity: str
    """``error`` (OpenAI rejects the file or the example teaches nothing) or ``warning``."""
    line: int | None
    """The (first) line it concerns, 1-based; None for the file as a whole."""
    message: str
    """What is wrong, in plain words."""
    hint: str = ""
    """How to fix it."""
    lines: list[int] = field(default_factory=list)
    """Every line it concerns (one finding may cover many, e.g. duplicates)."""

    def to_dict(self) -> dict:
        return asdict(self)

    def format(self, path: str = "") -> str:
        where = f"{path}:{self.line}" if self.line is not None else path
        text = f"{where}: {self.severity} {self.code}: {self.message}"
        return f"{text} ({self.hint})" if self.hint else text


@dataclass
class Summary:
    min: float
    max: float
    mean: float
    median: float
    p10: float
    p90: float

    @classmethod
    def of(cls, values: list[int] | list[float]) -> Summary:
        """Percentiles by linear interpolation between the closest ranks (numpy's default), without
        importing numpy: ``tunewise validate`` starts faster."""
        if not values:
            return cls(0, 0, 0.0, 0.0, 0.0, 0.0)
        ordered = sorted(values)

        def percentile(q: float) -> float:
            h = (len(ordered) - 1) * q
            lo = int(h)
            hi = min(lo + 1, len(ordered) - 1)
            return float(ordered[lo] + (h - lo) * (ordered[hi] - ordered[lo]))

        return cls(min=ordered[0], max=ordered[-1], mean=sum(ordered) / len(ordered), median=percentile(0.5),
                   p10=percentile(0.1), p90=percentile(0.9))

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Stats:
    n_examples: int
    """Examples read (lines holding a JSON object)."""
    model: str
    """The catalog model the tokens were counted for."""
    encoding: str
    """Its encoding (``o200k_base``, ``cl100k_base``, ``hf:<model>``)."""
    messages_per_example: Summary
    total_tokens_per_example: Summary
    """Chat-format tokens of each example (OpenAI's count; a local model's own chat template)."""
    assistant_tokens_per_example: Summary
    """Tokens of the assistant messages' content in each example."""
    example_tokens: list[int]
    """Chat-format tokens of each example, in file order."""
    billed_tokens_per_epoch: int
    """Sum over examples of their tokens, each capped at the model's context limit."""
    context_limit: int = 0
    """The model's training context limit (tokens per example)."""
    size_band: str = ""
    """Where the example count sits among the guide's size bands."""
    data_format: str = "chat"
    """The format the file was checked in: ``chat`` or ``prompt_completion`` (then ``total_tokens`` are the
    prompt's plus the completion's, ``assistant_tokens`` the completion's, and ``messages`` 0)."""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Report:
    path: str
    findings: list[Finding]
    stats: Stats

    @property
    def errors(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == ERROR]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.severity == WARNING]

    @property
    def ok(self) -> bool:
        """True when nothing would make OpenAI (or the local trainer) reject the file."""
        return not self.errors

    def codes(self) -> list[str]:
        return [f.code for f in self.findings]

    def to_dict(self) -> dict:
        return {"path": self.path, "ok": self.ok, "n_errors": len(self.errors), "n_warnings": len(self.warnings),
                "findings": [f.to_dict() for f in self.findings], "stats": self.stats.to_dict()}

    def raise_for_errors(self) -> Report:
        """Raise ``DataError`` naming the first errors' lines; return the report when there are none."""
        errors = self.errors
        if not errors:
            return self
        shown = "; ".join(f"line {e.line}: {e.code}: {e.message.rstrip('.')}" if e.line is not None
                          else f"{e.code}: {e.message.rstrip('.')}" for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        raise DataError(f"{self.path} has {len(errors)} error(s): {shown}{more}.",
                        hint=f"Run `tunewise validate {self.path}` for every finding and its fix.",
                        code=errors[0].code, param="training_file")
