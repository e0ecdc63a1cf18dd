"""``tunewise validate`` and ``tunewise tokens``: thin wrappers over ``tunewise.data`` and ``tunewise.tokens``."""

from __future__ import annotations

import json
import sys

import click

from tunewise.errors import UsageError


def _summary_row(name: str, s) -> str:
    return f"  {name:<22} {s.min:>8,.0f} {s.max:>8,.0f} {s.mean:>9,.1f} {s.median:>8,.1f} {s.p10:>8,.1f} {s.p90:>8,.1f}"


def stats_table(stats) -> str:
    pc = getattr(stats, "data_format", "chat") == "prompt_completion"
    lines = [
        f"{stats.n_examples:,} " + ("prompt/completion " if pc else "") + f"examples for {stats.model} "
        f"({stats.encoding}, context limit {stats.context_limit:,} tokens per example)",
        f"  {'per example':<22} {'min':>8} {'max':>8} {'mean':>9} {'median':>8} {'p10':>8} {'p90':>8}",
    ]
    if not pc:
        lines.append(_summary_row("messages", stats.messages_per_example))
    lines += [
        _summary_row("prompt+completion" if pc else "total tokens", stats.total_tokens_per_example),
        _summary_row("completion tokens" if pc else "assistant tokens", stats.assistant_tokens_per_example),
        f"billed training tokens per epoch: {stats.billed_tokens_per_epoch:,}",
    ]
    if stats.size_band:
        lines.append(f"size band: {stats.size_band}")
    return "\n".join(lines)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--model", "-m", default=None, help="Model whose rules and tokenizer apply (default gpt-4o-mini).")
@click.option("--method", "method", type=click.Choice(["supervised", "dpo", "reinforcement"]), default="supervised",
              show_default=True, help="The fine-tuning method the file is for: dpo checks OpenAI's preference format "
                                      "(input, preferred_output, non_preferred_output); reinforcement checks "
                                      "prompts (messages ending with the turn to answer).")
@click.option("--grader", "grader_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="With --method reinforcement: the grader (JSON or YAML); every line must have the fields its "
                   "templates read.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@click.option("--fix", "fix_out", type=click.Path(dir_okay=False), default=None,
              help="Write a repaired copy to this file (nested JSON escaped, examples in the other data format "
                   "converted to the one the model takes); the input is never modified.")
@click.option("--prices", type=click.Path(dir_okay=False), default=None,
              help="A TOML file overriding the model catalog (also $TUNEWISE_PRICES).")
def validate(file: str, model: str | None, method: str, grader_file: str | None, as_json: bool,
             fix_out: str | None, prices: str | None) -> None:
    """Check a fine-tuning JSONL FILE against OpenAI's rules and count its tokens.

    Chat models take {"messages": [...]}; babbage-002 and davinci-002 take {"prompt": ..., "completion": ...};
    DPO (--method dpo) takes {"input": {"messages": [...]}, "preferred_output": [...], "non_preferred_output": [...]};
    reinforcement fine-tuning (--method reinforcement) {"messages": [...ending with the user turn], ...fields the
    grader reads}.

    Exit 0 when clean (warnings allowed), 1 when there are errors, 2 on a usage error, 3 if tunewise crashed.
    """
    from tunewise.data import repair
    from tunewise.data import validate as run_validate
    from tunewise.data.convert import convert
    from tunewise.data.validate import model_info
    from tunewise.errors import NotFound

    try:
        info = model_info(model, prices)
    except NotFound as exc:  # a model name the user mistyped is a usage error (exit 2)
        raise UsageError(exc.message, hint=exc.hint, param="model") from None
    grader = None
    if grader_file is not None:
        if method != "reinforcement":
            raise UsageError("--grader is for --method reinforcement.", param="grader",
                             hint="Add --method reinforcement, or leave --grader out.")
        from tunewise.train.methods.grpo import grader_from_file

        grader = grader_from_file(grader_file)
    fixed: list[int] | None = None
    converted: list[int] = []
    if fix_out:
        fixed = repair(file, fix_out)
        converted = [] if method != "supervised" else convert(fix_out, fix_out, info.training_format)
    report = run_validate(fix_out if fix_out else file, model=model, prices=prices,
                          data_format={"dpo": "preference", "reinforcement": "reinforcement"}.get(method),
                          grader=grader)
    if as_json:
        out = report.to_dict()
        if fixed is not None:
            out["fixed"] = {"input": file, "output": fix_out, "changed_lines": fixed,
                            "converted_lines": converted, "data_format": info.training_format}
        click.echo(json.dumps(out, indent=2))
    else:
        if fixed is not None:
            if converted:
                click.echo(f"wrote {fix_out}: converted {len(converted)} example(s) to the "
                           f"{info.training_format.replace('_', '/')} format {info.name} takes"
                           + (f", repaired line(s) {', '.join(map(str, fixed))}" if fixed else "")
                           + "; findings below are for the copy.")
            elif fixed:
                click.echo(f"wrote {fix_out}: repaired line(s) {', '.join(map(str, fixed))} of {file}; "
                           "findings below are for the repaired copy.")
            else:
                click.echo(f"wrote {fix_out}: nothing to repair in {file}; findings below are for the copy.")
        for finding in report.findings:
            click.echo(finding.format(report.path))
        if report.findings:
            click.echo("")
        click.echo(stats_table(report.stats))
        n_err, n_warn = len(report.errors), len(report.warnings)
        click.echo(("ok" if report.ok else "FAILED") + f": {n_err} error(s), {n_warn} warning(s)")
    sys.exit(0 if report.ok else 1)


@click.command()
@click.argument("text", required=False)
@click.option("-f", "--file", "path", type=click.Path(dir_okay=False, allow_dash=True), default=None,
              help="Count the tokens of this file ('-' for stdin) instead of TEXT.")
@click.option("--model", "-m", default=None, help="Count for this model (default gpt-4o-mini).")
@click.option("--encoding", "-e", default=None, help="Count in this encoding: o200k_base, cl100k_base, hf:MODEL.")
def tokens(text: str | None, path: str | None, model: str | None, encoding: str | None) -> None:
    """Print the exact token count of TEXT (or of a file with -f), offline."""
    from tunewise.tokens import DEFAULT_COUNT_MODEL, count_text

    if (text is None) == (path is None):
        raise UsageError("Give either TEXT or -f FILE.", hint="e.g. tunewise tokens 'hello world'")
    if model and encoding:
        raise UsageError("Give --model or --encoding, not both.")
    if path is not None:
        if path == "-":
            text = sys.stdin.read()
        else:
            try:
                with open(path, encoding="utf-8") as fh:
                    text = fh.read()
            except FileNotFoundError:
                raise UsageError(f"File {path} does not exist.") from None
            except UnicodeDecodeError as exc:
                raise UsageError(f"File {path} is not UTF-8 text (byte {exc.start + 1}).") from None
    if model and not encoding:
        import os

        from tunewise.catalog import load_catalog
        from tunewise.tokens import encoding_name_for_model

        if load_catalog().find(model) is None and not os.path.isdir(os.path.expanduser(model)):
            # Not a catalog name: counted by its name's prefix, which a typo can match too. Say so.
            click.echo(f"note: '{model}' is not in the catalog; counted with {encoding_name_for_model(model)}, "
                       "the encoding of models whose names begin like it (see `tunewise models`).", err=True)
    click.echo(count_text(text, model or DEFAULT_COUNT_MODEL, encoding=encoding))
