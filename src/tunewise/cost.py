"""Cost: what training a data set costs, what each call costs before and after, and when fine-tuning pays.

Two questions, two functions:

- ``estimate_training(data, model, epochs)``: billed training tokens (every example capped at the model's
  context limit, times epochs) and their price; ``epochs="auto"`` follows OpenAI's default-epochs rule.
- ``breakeven(model, prompt_tokens, ft_prompt_tokens, output_tokens, calls_per_month, ...)``: the base model with
  its long prompt against the fine-tuned model with its short one, per call, per 1k calls and per month, and the
  point where the monthly saving has paid for training (or a plain "never" when it cannot).

Prices come from the catalog (``tunewise.catalog``), never from the guide's prose: the guide says fine-tuned
inference is "~6x" the base price while its own price table shows 2x, and the table is what OpenAI bills.
``prompt_tokens_from_files`` and ``usage_from_data`` turn a system prompt, a few-shot file and a data set into
the token counts ``breakeven`` takes.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tunewise.catalog import ModelInfo, get_model
from tunewise.errors import DataError, UsageError

# OpenAI's default-epochs rule (its fine-tuning cookbook): 3 epochs, raised or lowered so that the examples
# the model sees (examples x epochs) stay within MIN..MAX_TARGET_EXAMPLES, never outside MIN..MAX_EPOCHS.
TARGET_EPOCHS = 3
MIN_TARGET_EXAMPLES = 100
MAX_TARGET_EXAMPLES = 25_000
MIN_EPOCHS = 1
MAX_EPOCHS = 25

# Below this many examples OpenAI rejects a training file; below the second, the guide expects little gain.
MIN_EXAMPLES = 10
FEW_EXAMPLES = 50

# Break-even volume is quoted as the monthly call volume that pays training back within this many months.
DEFAULT_HORIZON_MONTHS = 12

PER_MILLION = 1_000_000

TOO_LONG = "too_long"  # tunewise.data's code for an example over the model's context limit


def auto_epochs(n_examples: int) -> int:
    """OpenAI's default epochs for a training set of ``n_examples``, exactly as its cookbook computes them.

    3 epochs, unless that shows the model fewer than 100 examples (then ``100 // n``, at most 25) or more than
    25,000 (then ``25000 // n``, at least 1). Both divisions round down, so a small set can be shown slightly
    fewer than 100 examples: 30 examples get 3 epochs (90 seen), not 4.
    """
    if n_examples <= 0:
        raise UsageError(f"Cannot choose epochs for {n_examples} examples.",
                         hint="The training file needs at least one example.")
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def _usd(tokens: float, price_per_1m: float) -> float:
    return tokens * price_per_1m / PER_MILLION


@dataclass
class TrainingEstimate:
    model: str
    """Catalog name of the model priced (aliases and ``ft:`` names resolved)."""
    n_examples: int
    billed_tokens_per_epoch: int
    """Chat-format tokens of every example, each capped at the model's context limit."""
    n_epochs: int
    epochs_auto: bool
    """True when ``n_epochs`` came from the default-epochs rule."""
    billed_tokens: int
    """``billed_tokens_per_epoch x n_epochs``: what the training price applies to."""
    cost_usd: float
    price_per_1m: float
    """Training price, USD per 1M tokens."""
    warnings: list[str] = field(default_factory=list)
    """Plain-words risks of this choice (too few examples, too many epochs, truncation, ...)."""
    provider: str = "openai"
    context_limit: int = 0
    n_truncated: int = 0
    """Examples longer than the context limit (billed only up to it; ``tunewise validate`` reports them as
    errors, since OpenAI's file check may refuse them)."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


RFT_BILLING = ("OpenAI bills reinforcement fine-tuning by training time, not by tokens: per hour of core training "
               "(o4-mini: $100 per hour on OpenAI's pricing page), plus the tokens of any model graders at their "
               "usual rates. The hours depend on OpenAI's compute, so no price is estimated from the file.")
"""What ``tunewise estimate --method reinforcement`` says instead of a token price."""


def _report_for(data: Any, model: str, prices: Any, method: str = "supervised"):
    """A ``tunewise.data.Report`` for a path (validated now) or a report already made."""
    if isinstance(data, str | os.PathLike):
        from tunewise.data import validate  # imported here: cost is usable without reading any file

        return validate(data, model=model, prices=prices, data_format="preference" if method == "dpo" else None)
    if hasattr(data, "stats") and hasattr(data, "errors"):
        return data
    raise UsageError(f"estimate_training takes a path or a validation Report, not {type(data).__name__}.")


def estimate_training(data: Any, model: str, epochs: int | str = "auto",
                      prices: str | os.PathLike | None = None, method: str = "supervised") -> TrainingEstimate:
    """What fine-tuning ``model`` on ``data`` (a JSONL path or a ``tunewise.data.Report``) costs.

    ``method``: ``supervised`` or ``dpo``. OpenAI bills both by the tokens of the training file times the epochs
    at the model's one training price; for DPO (preference data) that is the input's tokens and both outputs'.

    Raises ``DataError`` when the data has errors (run ``tunewise validate`` for the list).
    """
    info = get_model(model, prices)
    if method == "reinforcement":
        from tunewise.errors import Unsupported

        raise Unsupported(RFT_BILLING, hint="Price a reinforcement job by its expected training hours.",
                          param="method", code="billed_by_time")
    if method not in ("supervised", "dpo"):
        raise UsageError(f"method must be 'supervised' or 'dpo', not {method!r}.", param="method")
    report = _report_for(data, info.name, prices, method)
    # Over-long examples are an error for a training file, but they still have a price: the estimate bills
    # each one up to the context limit and says so in a warning. Any other error makes the file untrainable.
    errors = [f for f in report.errors if f.code != TOO_LONG]
    if errors:
        first = errors[0]
        where = f"line {first.line}: " if first.line else ""
        raise DataError(
            f"The training file has {len(errors)} error(s), e.g. {where}{first.message}",
            hint=f"Run `tunewise validate {getattr(report, 'path', None) or 'FILE'}` to see every finding "
                 "and how to fix it.",
            code="invalid_training_file",
        )
    stats = report.stats
    n_examples = stats.n_examples
    if n_examples == 0:
        raise DataError("The training file has no examples.", hint="Add at least 10 chat examples.")
    if epochs in ("auto", None):
        n_epochs, is_auto = auto_epochs(n_examples), True
    else:
        try:
            n_epochs = int(epochs)
        except (TypeError, ValueError):
            raise UsageError(f"Epochs must be a whole number or 'auto', not {epochs!r}.") from None
        if not MIN_EPOCHS <= n_epochs <= MAX_EPOCHS:
            raise UsageError(f"Epochs must be between {MIN_EPOCHS} and {MAX_EPOCHS}, not {n_epochs}.",
                             hint="OpenAI accepts n_epochs 1..25; use 'auto' for its default rule.",
                             param="n_epochs")
        is_auto = False
    per_epoch = int(stats.billed_tokens_per_epoch)
    billed = per_epoch * n_epochs
    truncated = sum(1 for n in stats.example_tokens if n > info.context_limit)
    estimate = TrainingEstimate(
        model=info.name, n_examples=n_examples, billed_tokens_per_epoch=per_epoch, n_epochs=n_epochs,
        epochs_auto=is_auto, billed_tokens=billed, cost_usd=_usd(billed, info.training),
        price_per_1m=info.training, provider=info.provider, context_limit=info.context_limit,
        n_truncated=truncated,
    )
    estimate.warnings = _training_warnings(estimate)
    return estimate


def _training_warnings(e: TrainingEstimate) -> list[str]:
    out: list[str] = []
    seen = e.n_examples * e.n_epochs
    if e.n_examples < MIN_EXAMPLES:
        out.append(f"{e.n_examples} examples: OpenAI requires at least {MIN_EXAMPLES}; the job will be refused.")
    elif e.n_examples < FEW_EXAMPLES:
        out.append(f"{e.n_examples} examples: the guide expects little improvement under {FEW_EXAMPLES}; "
                   "100-500 give solid results.")
    if not e.epochs_auto:
        if seen < MIN_TARGET_EXAMPLES:
            out.append(f"{e.n_epochs} epoch(s) x {e.n_examples} examples = {seen} examples seen, under "
                       f"{MIN_TARGET_EXAMPLES}: the model may barely change (auto would pick "
                       f"{auto_epochs(e.n_examples)}).")
        elif seen > MAX_TARGET_EXAMPLES:
            out.append(f"{e.n_epochs} epochs x {e.n_examples} examples = {seen:,} examples seen, over "
                       f"{MAX_TARGET_EXAMPLES:,}: costly, and likely to overfit (auto would pick "
                       f"{auto_epochs(e.n_examples)}).")
    if e.n_epochs >= 10 and e.n_examples >= MIN_EXAMPLES:
        out.append(f"{e.n_epochs} epochs over {e.n_examples} examples: the model may memorise them; "
                   "hold out a validation file and watch its loss.")
    if e.epochs_auto and e.n_epochs == MAX_EPOCHS and e.n_examples * e.n_epochs < MIN_TARGET_EXAMPLES:
        out.append(f"Even {MAX_EPOCHS} epochs show the model only {seen} examples: add data.")
    if e.n_truncated:
        out.append(f"{e.n_truncated} example(s) exceed the {e.context_limit:,}-token context limit: billed "
                   "here up to the limit, but shorten or drop them before training (`tunewise validate` "
                   "lists them).")
    return out


@dataclass
class Breakeven:
    model: str
    base_per_call: float
    """USD per call: the base model with the long prompt."""
    ft_per_call: float
    """USD per call: the fine-tuned model with the short prompt."""
    base_per_1k: float
    ft_per_1k: float
    base_monthly: float
    ft_monthly: float
    monthly_saving: float
    """``base_monthly - ft_monthly``; negative when fine-tuning costs more per call."""
    training_cost: float
    months_to_recover: float | None
    """Months of saving that pay for training; None if never (no saving per call, or no calls)."""
    breakeven_calls_per_month: int | None
    """Monthly volume that pays training back within ``horizon_months``; None if never."""
    never_pays: bool
    """True when fine-tuned calls cost at least as much as base calls, so no volume recovers training."""
    notes: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    ft_prompt_tokens: int = 0
    output_tokens: float = 0
    ft_output_tokens: float = 0
    calls_per_month: float = 0
    saving_per_call: float = 0.0
    breakeven_calls: int | None = None
    """Total calls whose savings add up to the training cost; None if never."""
    horizon_months: float = DEFAULT_HORIZON_MONTHS
    price_ratio_input: float | None = None
    """Fine-tuned over base input price in the catalog (the guide's "~6x")."""
    price_ratio_output: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def input_cost(info: ModelInfo, tokens: float, cached: float = 0.0, fine_tuned: bool = False) -> float:
    """USD for one call's ``tokens`` input tokens, ``cached`` of them at the cached-input price (where the
    model has one; at the full price otherwise)."""
    full = info.ft_input if fine_tuned else info.input
    cached_price = info.ft_cached_input if fine_tuned else info.cached_input
    if cached_price is None:
        cached_price = full
    return _usd(tokens - cached, full) + _usd(cached, cached_price)


def _ratio(ft: float, base: float) -> float | None:
    return ft / base if base else None


def breakeven(model: str, prompt_tokens: float, ft_prompt_tokens: float, output_tokens: float,
              calls_per_month: float, training_cost: float | None = None, prices: str | os.PathLike | None = None,
              *, training_tokens: int | None = None,
              horizon_months: float = DEFAULT_HORIZON_MONTHS, ft_output_tokens: float | None = None,
              cached_tokens: float = 0.0, ft_cached_tokens: float = 0.0) -> Breakeven:
    """Compare the base ``model`` with a long prompt against its fine-tuned version with a short one.

    ``prompt_tokens``/``ft_prompt_tokens`` are the input tokens of one call (system prompt, examples, the user's
    input), ``output_tokens`` the answer's (``ft_output_tokens`` the fine-tuned model's, when its answers are
    shorter or longer: each side is priced with its own tokens). ``cached_tokens``/``ft_cached_tokens``: the
    part of each prompt served from the prompt cache, billed at the catalog's cached-input price where the
    model has one. Training cost is ``training_cost`` (USD) or else priced from
    ``training_tokens`` (billed tokens, epochs included); with neither it is taken as zero and a note says so.
    """
    for name, value in (("prompt_tokens", prompt_tokens), ("ft_prompt_tokens", ft_prompt_tokens),
                        ("output_tokens", output_tokens), ("calls_per_month", calls_per_month)):
        if value is None or value < 0:
            raise UsageError(f"{name} must be a non-negative number, not {value!r}.", param=name)
    if training_cost is not None and training_cost < 0:
        raise UsageError(f"training_cost must be non-negative, not {training_cost!r}.", param="training_cost")
    if horizon_months <= 0:
        raise UsageError(f"horizon_months must be positive, not {horizon_months!r}.", param="horizon_months")
    info = get_model(model, prices)
    notes: list[str] = []

    ft_out = output_tokens if ft_output_tokens is None else ft_output_tokens
    if ft_out < 0 or not 0 <= cached_tokens <= prompt_tokens or not 0 <= ft_cached_tokens <= ft_prompt_tokens:
        raise UsageError("Output and cached tokens must be non-negative, and cached tokens at most the prompt.")
    base_call = input_cost(info, prompt_tokens, cached_tokens) + _usd(output_tokens, info.output)
    ft_call = input_cost(info, ft_prompt_tokens, ft_cached_tokens, fine_tuned=True) + _usd(ft_out, info.ft_output)
    saving_call = base_call - ft_call

    if training_cost is None and training_tokens is not None:
        training_cost = _usd(training_tokens, info.training)
    if training_cost is None:
        training_cost = 0.0
        if info.training:
            notes.append("No training cost given (--data or --training-cost): counted as $0, so the "
                         "break-even point below is too early.")

    ratio_in, ratio_out = _ratio(info.ft_input, info.input), _ratio(info.ft_output, info.output)
    if ratio_in is not None and ratio_out is not None:
        note = (f"Fine-tuned {info.name} costs {ratio_in:.3g}x the base input price and {ratio_out:.3g}x "
                "the base output price in the catalog")
        six_in, six_out = abs(ratio_in - 6) <= 0.5, abs(ratio_out - 6) <= 0.5
        if six_in and six_out:
            note += " (the guide's '~6x')"
        elif six_in or six_out:
            note += f" (the guide's '~6x' holds for {'input' if six_in else 'output'} only)"
        else:
            note += " (not the guide's '~6x')"
        notes.append(note + "; these figures use the catalog.")
    if info.is_local:
        notes.append(f"{info.name} is a local model with no token price: compare it on quality and latency.")

    monthly_saving = saving_call * calls_per_month
    never_pays = saving_call < 0 or (saving_call == 0 and training_cost > 0)
    if saving_call > 0:
        breakeven_calls = math.ceil(training_cost / saving_call)
        per_month = math.ceil(training_cost / (saving_call * horizon_months))
        months = training_cost / monthly_saving if monthly_saving > 0 else None
        if months is None and training_cost > 0:
            notes.append("At 0 calls a month training is never recovered.")
        elif months is None:
            months = 0.0
    elif saving_call == 0 and training_cost == 0:
        breakeven_calls, per_month, months = 0, 0, 0.0
    else:
        breakeven_calls = per_month = months = None
    if never_pays:
        extra = (f"the fine-tuned model's {ft_prompt_tokens:g}-token prompt at ${info.ft_input:g}/1M input "
                 f"and ${info.ft_output:g}/1M output costs at least as much per call as the base model's "
                 f"{prompt_tokens:g}-token prompt at ${info.input:g}/${info.output:g}")
        notes.append(f"Fine-tuning never pays at these prices: {extra}. Only a quality gain can justify it.")

    return Breakeven(
        model=info.name, base_per_call=base_call, ft_per_call=ft_call, base_per_1k=base_call * 1000,
        ft_per_1k=ft_call * 1000, base_monthly=base_call * calls_per_month, ft_monthly=ft_call * calls_per_month,
        monthly_saving=monthly_saving, training_cost=training_cost, months_to_recover=months,
        breakeven_calls_per_month=per_month, never_pays=never_pays, notes=notes,
        prompt_tokens=int(round(prompt_tokens)), ft_prompt_tokens=int(round(ft_prompt_tokens)),
        output_tokens=output_tokens, ft_output_tokens=ft_out, calls_per_month=calls_per_month, saving_per_call=saving_call,
        breakeven_calls=breakeven_calls, horizon_months=horizon_months, price_ratio_input=ratio_in,
        price_ratio_output=ratio_out,
    )


# --- token counts from files ------------------------------------------------------------------------------

def read_text(path: str | os.PathLike) -> str:
    """A prompt file's text (UTF-8, BOM accepted), with a clear error when it cannot be read."""
    try:
        return Path(path).read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UsageError(f"File {path} does not exist.") from None
    except UnicodeDecodeError as exc:
        raise DataError(f"File {path} is not UTF-8 text (byte {exc.start}).",
                        hint="Save it as UTF-8.") from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a file.") from None


def read_few_shot(path: str | os.PathLike) -> list[dict]:
    """The messages of a few-shot file (chat JSONL), in order: every example's messages, system ones left out."""
    from tunewise.data import iter_examples

    messages: list[dict] = []
    for _line, example in iter_examples(path):
        for msg in example.get("messages") or []:
            if isinstance(msg, dict) and msg.get("role") != "system":
                messages.append({k: v for k, v in msg.items() if k != "weight"})
    if not messages:
        raise DataError(f"{path} holds no user or assistant messages to use as few-shot examples.",
                        hint='Write one {"messages": [...]} object per line.')
    return messages


def prompt_tokens_from_files(model: str, system_prompt: str | os.PathLike | None = None,
                             few_shot: str | os.PathLike | None = None, input_tokens: float = 0) -> int:
    """Input tokens of one call: a system prompt file, few-shot messages prepended, and the user's input.

    Counted as OpenAI counts a chat request (3 per message and 3 for the reply primer); ``input_tokens`` is the
    user's message with its own overhead (see ``usage_from_data``).
    """
    from tunewise.tokens import count_messages

    messages: list[dict] = []
    if system_prompt is not None:
        messages.append({"role": "system", "content": read_text(system_prompt)})
    if few_shot is not None:
        messages.extend(read_few_shot(few_shot))
    return count_messages(messages, model=model) + int(round(input_tokens))


@dataclass
class DataUsage:
    """What a data set says about one call: the fine-tuned model's prompt, the user's input, the answer."""

    n_examples: int
    system_prompt: str | None
    """The most common system prompt (the fine-tuned model's prompt), None when the examples have none."""
    system_tokens: int
    """That prompt as one chat message (content + 3), 0 when none."""
    input_tokens: float
    """Mean tokens of everything but the system prompt and the final answer, each message with its overhead."""
    output_tokens: float
    """Mean tokens of the final assistant answer (the completion OpenAI bills as output)."""


def usage_from_data(path: str | os.PathLike, model: str) -> DataUsage:
    """Mean input and output tokens of one call, measured on a chat JSONL data set."""
    from tunewise.data import iter_examples
    from tunewise.tokens import count_messages, count_text

    prompts: Counter[str] = Counter()
    inputs: list[int] = []
    outputs: list[int] = []
    for _line, example in iter_examples(path):
        messages = [m for m in example.get("messages") or [] if isinstance(m, dict)]
        if not messages:
            continue
        for m in messages:
            if m.get("role") == "system" and isinstance(m.get("content"), str):
                prompts[m["content"]] += 1
                break
        last = max((i for i, m in enumerate(messages) if m.get("role") == "assistant"), default=None)
        rest = [m for i, m in enumerate(messages) if m.get("role") != "system" and i != last]
        # count_messages adds the 3-token reply primer; the primer is counted once, in the prompt.
        inputs.append(count_messages(rest, model=model) - 3 if rest else 0)
        answer = messages[last].get("content") if last is not None else None
        outputs.append(count_text(answer, model=model) if isinstance(answer, str) else 0)
    if not inputs:
        raise DataError(f"{path} holds no chat examples.", hint='Write one {"messages": [...]} object per line.')
    prompt = prompts.most_common(1)[0][0] if prompts else None
    system_tokens = count_messages([{"role": "system", "content": prompt}], model=model) - 3 if prompt else 0
    return DataUsage(n_examples=len(inputs), system_prompt=prompt, system_tokens=system_tokens,
                     input_tokens=sum(inputs) / len(inputs), output_tokens=sum(outputs) / len(outputs))


def model_info(model: str, prices: str | os.PathLike | None = None) -> ModelInfo:
    """The catalog entry (re-exported so callers of this module need only one import)."""
    return get_model(model, prices)
