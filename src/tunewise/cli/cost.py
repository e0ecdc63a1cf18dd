"""``tunewise estimate``, ``tunewise breakeven`` and ``tunewise models``: thin over ``tunewise.cost``."""

from __future__ import annotations

import json
import math

import click

from tunewise import cost
from tunewise.catalog import load_catalog
from tunewise.errors import UsageError

DEFAULT_MODEL = "gpt-4o-mini-2024-07-18"  # the guide's recommended model

prices_option = click.option("--prices", type=click.Path(dir_okay=False), default=None,
                             help="TOML file overriding catalog prices (default: $TUNEWISE_PRICES).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


def usd(x: float) -> str:
    """Dollars readable at every scale: $1,234.56, $0.42, $0.000135."""
    if x == 0:
        return "$0"
    sign = "-" if x < 0 else ""
    x = abs(x)
    if x >= 1:
        return f"{sign}${x:,.2f}"
    if x >= 0.01:
        return f"{sign}${x:.4f}".rstrip("0").rstrip(".")
    # Three significant digits in plain decimals: $0.0000974, never 9.74e-05.
    digits = 2 - math.floor(math.log10(x))
    return f"{sign}${x:.{digits}f}"


def _epochs(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        return int(value)
    except ValueError:
        raise UsageError(f"--epochs takes a whole number or 'auto', not {value!r}.") from None


def table(header: tuple[str, ...], rows: list[tuple[str, ...]], left: tuple[int, ...] = (0,)) -> None:
    """Columns padded to their widest cell; columns in ``left`` are left-aligned, the rest (numbers) right."""
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        cells = [c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        click.echo("  ".join(cells).rstrip())


def _rows(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        click.echo(f"{key:<{width}}  {value}")


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True, help="Model to price (name or alias).")
@click.option("--epochs", "--n-epochs", "epochs", default="auto", show_default=True,
              help="Epochs (1-25), or 'auto' for OpenAI's default rule.")
@click.option("--method", type=click.Choice(["supervised", "dpo", "reinforcement"]), default="supervised",
              show_default=True,
              help="dpo: FILE is preference data, billed by its tokens (input and both outputs) like supervised; "
                   "reinforcement: billed by training time, which the file does not tell (says so).")
@prices_option
@json_option
def estimate(file: str, model: str, epochs: str, method: str, prices: str | None, as_json: bool) -> None:
    """Billed training tokens and the cost of fine-tuning MODEL on FILE (chat JSONL, or preference JSONL with
    --method dpo); for --method reinforcement, how OpenAI bills it instead."""
    if method == "reinforcement":
        _reinforcement(file, model, prices, as_json)
        return
    result = cost.estimate_training(file, model, epochs=_epochs(epochs), prices=prices, method=method)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    how = ("auto: 3, raised or lowered so examples seen stay within "
           f"{cost.MIN_TARGET_EXAMPLES}..{cost.MAX_TARGET_EXAMPLES:,}" if result.epochs_auto else "as given")
    _rows([
        ("model", f"{result.model} (training {usd(result.price_per_1m)} per 1M tokens)"),
        ("examples", f"{result.n_examples:,}"),
        ("tokens per epoch", f"{result.billed_tokens_per_epoch:,} (each example capped at "
                             f"{result.context_limit:,})"),
        ("epochs", f"{result.n_epochs} ({how})"),
        ("billed tokens", f"{result.billed_tokens:,}"),
        ("training cost", usd(result.cost_usd) + (" (local model: no token price)"
                                                   if result.provider == "local" else "")),
    ])
    for warning in result.warnings:
        click.echo(f"warning: {warning}")


def _reinforcement(file: str, model: str, prices: str | None, as_json: bool) -> None:
    """The file checked as reinforcement prompts, and the plain statement of how OpenAI bills RFT."""
    from tunewise.data import validate

    report = validate(file, model=model, prices=prices, data_format="reinforcement")
    stats = report.stats
    if as_json:
        click.echo(json.dumps({"model": stats.model, "method": "reinforcement", "n_examples": stats.n_examples,
                               "prompt_tokens_per_epoch": stats.billed_tokens_per_epoch, "cost_usd": None,
                               "billing": cost.RFT_BILLING, "errors": len(report.errors)}, indent=2))
        return
    _rows([("model", stats.model), ("examples", f"{stats.n_examples:,}"),
           ("prompt tokens per epoch", f"{stats.billed_tokens_per_epoch:,}"),
           ("training cost", "not estimated: billed by training time")])
    click.echo(cost.RFT_BILLING)
    if report.errors:
        click.echo(f"warning: the file has {len(report.errors)} error(s); run `tunewise validate {file} --method "
                   "reinforcement` to see them.")


@click.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True, help="Base model (name or alias).")
@click.option("--prompt-tokens", type=float, help="Input tokens per call, base model (long prompt).")
@click.option("--ft-prompt-tokens", type=float, help="Input tokens per call, fine-tuned model (short prompt).")
@click.option("--output-tokens", type=float, help="Output tokens per call (default: mean answer in --data).")
@click.option("--input-tokens", type=float,
              help="The user's input per call, added to prompts counted from files (default: mean in --data).")
@click.option("--calls-per-month", type=float, required=True, help="Calls per month.")
@click.option("--system-prompt", type=click.Path(exists=True, dir_okay=False),
              help="The base model's (long) system prompt, a text file.")
@click.option("--few-shot", type=click.Path(exists=True, dir_okay=False),
              help="Chat JSONL whose messages are prepended to the base model's prompt.")
@click.option("--ft-system-prompt", type=click.Path(exists=True, dir_okay=False),
              help="The fine-tuned model's (short) system prompt (default: the one in --data).")
@click.option("--data", type=click.Path(exists=True, dir_okay=False),
              help="The training set: its size gives the training cost, its answers the output tokens.")
@click.option("--epochs", "--n-epochs", "epochs", default="auto", show_default=True,
              help="Epochs for the training cost from --data.")
@click.option("--training-cost", type=float, help="Training cost in USD (overrides the one from --data).")
@click.option("--horizon-months", type=float, default=cost.DEFAULT_HORIZON_MONTHS, show_default=True,
              help="Break-even volume: calls per month that pay training back within this many months.")
@prices_option
@json_option
def breakeven(model: str, prompt_tokens: float | None, ft_prompt_tokens: float | None,
              output_tokens: float | None, input_tokens: float | None, calls_per_month: float,
              system_prompt: str | None, few_shot: str | None, ft_system_prompt: str | None, data: str | None,
              epochs: str, training_cost: float | None, horizon_months: float, prices: str | None,
              as_json: bool) -> None:
    """Base model with a long prompt vs fine-tuned model with a short one: cost per call, per month, break-even."""
    info = cost.model_info(model, prices)
    usage = cost.usage_from_data(data, info.name) if data else None
    if input_tokens is None:
        input_tokens = usage.input_tokens if usage else 0.0
    if prompt_tokens is not None and (system_prompt or few_shot):
        raise UsageError("Give --prompt-tokens or --system-prompt/--few-shot, not both.")
    if ft_prompt_tokens is not None and ft_system_prompt:
        raise UsageError("Give --ft-prompt-tokens or --ft-system-prompt, not both.")
    if prompt_tokens is None:
        if not (system_prompt or few_shot):
            raise UsageError("The base model's prompt size is missing.",
                             hint="Give --prompt-tokens N, or --system-prompt FILE (and --few-shot FILE).")
        prompt_tokens = cost.prompt_tokens_from_files(info.name, system_prompt, few_shot, input_tokens)
    if ft_prompt_tokens is None:
        if ft_system_prompt:
            ft_prompt_tokens = cost.prompt_tokens_from_files(info.name, ft_system_prompt, None, input_tokens)
        elif usage is not None:
            # The training set's system prompt is the one the fine-tuned model is called with; +3: reply primer.
            ft_prompt_tokens = usage.system_tokens + input_tokens + 3
        else:
            raise UsageError("The fine-tuned model's prompt size is missing.",
                             hint="Give --ft-prompt-tokens N, --ft-system-prompt FILE, or --data FILE.")
    if output_tokens is None:
        if usage is None:
            raise UsageError("The output size is missing.", hint="Give --output-tokens N or --data FILE.")
        output_tokens = usage.output_tokens
    training = None
    if training_cost is None and data:
        training = cost.estimate_training(data, info.name, epochs=_epochs(epochs), prices=prices)
        training_cost = training.cost_usd
    result = cost.breakeven(info.name, prompt_tokens, ft_prompt_tokens, output_tokens, calls_per_month,
                            training_cost=training_cost, prices=prices, horizon_months=horizon_months)
    if as_json:
        out = result.to_dict()
        if training is not None:
            out["training"] = training.to_dict()
        click.echo(json.dumps(out, indent=2))
        return

    def tokens(x: float) -> str:
        return f"{x:,.0f}" if float(x).is_integer() else f"{x:,.1f}"

    click.echo(f"model {result.model}, {tokens(calls_per_month)} calls per month, "
               f"{tokens(output_tokens)} output tokens per call")
    header = ("", "prompt tokens", "per call", "per 1k calls", "per month")
    table(header, [
        ("base, long prompt", tokens(prompt_tokens), usd(result.base_per_call), usd(result.base_per_1k),
         usd(result.base_monthly)),
        ("fine-tuned, short prompt", tokens(ft_prompt_tokens), usd(result.ft_per_call), usd(result.ft_per_1k),
         usd(result.ft_monthly)),
    ])
    lines = [("monthly saving", usd(result.monthly_saving)), ("training cost", usd(result.training_cost))]
    if training is not None:
        lines[-1] = ("training cost", f"{usd(result.training_cost)} ({training.billed_tokens:,} tokens, "
                                      f"{training.n_epochs} epochs)")
    if result.never_pays:
        lines.append(("verdict", "fine-tuning never pays at these prices"))
    else:
        months = _months(result.months_to_recover)
        lines += [("months to recover", months),
                  ("break-even volume", f"{result.breakeven_calls_per_month:,} calls/month pays training back "
                                        f"in {result.horizon_months:g} months ({result.breakeven_calls:,} "
                                        "calls in all)")]
    _rows(lines)
    for note in result.notes:
        click.echo(f"note: {note}")


def _months(months: float | None) -> str:
    if months is None:
        return "never at this volume"
    if months < 1:
        days = round(months * 30.44)  # a mean month
        return f"{months:.2f} ({'under a day' if days < 1 else f'about {days} day' + ('s' if days > 1 else '')})"
    return f"{months:.1f}"


@click.command()
@prices_option
@json_option
def models(prices: str | None, as_json: bool) -> None:
    """The model catalog: encodings, context limits and prices (USD per 1M tokens)."""
    catalog = load_catalog(prices)
    infos = [catalog.models[n] for n in catalog.names()]
    if as_json:
        click.echo(json.dumps({"sources": list(catalog.sources), "models": [
            {"name": m.name, "provider": m.provider, "aliases": list(m.aliases), "encoding": m.encoding,
             "context_limit": m.context_limit, "training": m.training, "input": m.input, "cached_input": m.cached_input, "output": m.output,
             "ft_input": m.ft_input, "ft_cached_input": m.ft_cached_input, "ft_output": m.ft_output,
             "checked": m.checked, "training_format": m.training_format} for m in infos]}, indent=2))
        return

    def price(x: float | None) -> str:
        if x is None:
            return "-"
        return f"{x:.2f}" if round(x, 2) == x else f"{x:g}"

    header = ("name", "provider", "encoding", "data", "context", "training", "input", "cached", "output",
              "ft input", "ft cached", "ft output", "checked")
    rows = [(m.name, m.provider, m.encoding, m.training_format.replace("_", "/"), f"{m.context_limit:,}",
             price(m.training), price(m.input), price(m.cached_input), price(m.output), price(m.ft_input),
             price(m.ft_cached_input), price(m.ft_output), m.checked) for m in infos]
    table(header, rows, left=(0, 1, 2, 3, 12))
    click.echo("Prices in USD per 1M tokens; override with --prices FILE or TUNEWISE_PRICES.")
