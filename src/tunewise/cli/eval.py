"""``tunewise eval`` and ``tunewise decide``: thin over ``tunewise.eval``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import click

from tunewise.errors import UsageError

DEFAULT_OUT = "eval-results"


def _schema(path: str | None) -> dict | None:
    if path is None:
        return None
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise UsageError(f"Schema file {path} is not JSON: {exc}.", hint="Pass a JSON Schema file.") from None


def _cell(entry: dict | None, pct: bool = True) -> str:
    if not entry or entry.get("value") is None:
        return "-"
    return f"{100 * entry['value']:.1f}%" if pct else f"{entry['value']:.0f}"


def _candidates(candidates_file, models, prompts, specs, schema, max_tokens, structured):
    from tunewise.eval import candidate_from_dict, load_candidates, parse_candidate_flag
    from tunewise.eval.candidates import check_unique

    out = []
    if candidates_file:
        out += load_candidates(candidates_file, schema=schema)
    if prompts and not models:
        raise UsageError("--system-prompt needs --model.", hint="e.g. --model gpt-4o-mini --system-prompt p.txt")
    if prompts and len(prompts) not in (1, len(models)):
        raise UsageError(f"{len(models)} --model but {len(prompts)} --system-prompt.",
                         hint="Give one --system-prompt for all models, or one per --model, in order.")
    for i, model in enumerate(models):
        raw: dict = {"model": model}
        if prompts:
            prompt = prompts[0] if len(prompts) == 1 else prompts[i]
            raw["system_prompt_file"] = str(Path(prompt).resolve())
            # The same model with two prompts needs two names: model+prompt-file-stem.
            stem = re.sub(r"[^A-Za-z0-9_.\-+]", "-", Path(prompt).stem)
            raw["name"] = f"{model.replace(':', '-')}+{stem}"
        if max_tokens:
            raw["max_tokens"] = max_tokens
        if structured:
            raw["response_format"] = "schema"
        out.append(candidate_from_dict(raw, Path.cwd(), schema, i))
    for spec in specs:
        cand = parse_candidate_flag(spec, schema)
        if max_tokens:
            cand.max_tokens = max_tokens
        out.append(cand)
    if not out:
        raise UsageError("No candidates.", hint="Pass --candidates FILE, --model MODEL or --candidate NAME=MODEL.")
    check_unique(out)
    return out


def _graders(files, candidates_file, judge_base_url, no_python, no_cache):
    """The graders of --grader files and of the candidates file's `graders:` list, and their context."""
    from tunewise.eval.graders import GradingContext, ModelJudge, load_graders, parse_graders

    graders = []
    if candidates_file:
        import yaml

        raw = yaml.safe_load(Path(candidates_file).read_text(encoding="utf-8"))
        if isinstance(raw, dict) and raw.get("graders"):
            graders += parse_graders({"graders": raw["graders"]}, where=f"{candidates_file}: graders")
    for path in files:
        graders += load_graders(path)
    names = [g.name for g in graders]
    duplicate = next((n for n in names if names.count(n) > 1), None)
    if duplicate:
        raise UsageError(f"Two graders are named '{duplicate}'.", hint="Give each grader its own name.")
    if not graders:
        return [], None
    judge = None
    if any(g.uses_model for g in graders):
        from tunewise.client import resolve_target

        target = resolve_target(judge_base_url)
        judge = ModelJudge(target.base_url, target.api_key, cache=not no_cache)
    if no_python and any(g.uses_python for g in graders):
        raise UsageError("A python grader was given with --no-python-graders.",
                         hint="Leave the python grader out, or drop --no-python-graders.")
    return graders, GradingContext(judge=judge, allow_python=not no_python)


@click.command(name="eval")
@click.argument("test_file", type=click.Path(exists=True, dir_okay=False))
@click.option("--candidates", "candidates_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML or TOML file listing the candidates (model, prompt, endpoint, response_format, ...).")
@click.option("--schema", type=click.Path(exists=True, dir_okay=False),
              help="JSON Schema the answers must follow (adherence metric; 'response_format: schema').")
@click.option("--model", "-m", "models", multiple=True, help="A candidate model (repeatable); the simple case.")
@click.option("--system-prompt", "prompts", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="System prompt file for --model (one for all, or one per --model in order).")
@click.option("--candidate", "specs", multiple=True, metavar="NAME=MODEL[:PROMPT_FILE]",
              help="A named candidate (repeatable).")
@click.option("--structured", is_flag=True, help="Give the --model candidates structured outputs from --schema.")
@click.option("--max-tokens", type=int, default=None, help="Longest answer for flag-made candidates.")
@click.option("--out", "out_dir", default=DEFAULT_OUT, show_default=True, type=click.Path(file_okay=False),
              help="Directory for results.jsonl, metrics.json and the resolved candidates.")
@click.option("--concurrency", type=int, default=4, show_default=True, help="Requests in flight at once.")
@click.option("--limit", type=int, default=None, help="Evaluate only the first N examples.")
@click.option("--no-cache", is_flag=True, help="Send every request, ignoring the on-disk cache.")
@click.option("--prices", type=click.Path(dir_okay=False), default=None,
              help="TOML file overriding catalog prices (default: $TUNEWISE_PRICES).")
@click.option("--grader", "grader_files", multiple=True, type=click.Path(dir_okay=False),
              help="YAML/JSON file of graders in OpenAI's shapes, run on every answer (repeatable; a candidates "
                   "file's `graders:` list is read too).")
@click.option("--judge-base-url", default=None,
              help="Endpoint that model graders (score_model, label_model) ask (default: OPENAI_BASE_URL, "
                   "else the local server).")
@click.option("--no-python-graders", is_flag=True, help="Refuse python graders instead of running them.")
@click.option("--json", "as_json", is_flag=True, help="Print metrics.json instead of the table.")
def eval_command(test_file, candidates_file, schema, models, prompts, specs, structured, max_tokens, out_dir,
                 concurrency, limit, no_cache, prices, grader_files, judge_base_url, no_python_graders,
                 as_json) -> None:
    """Run every example of TEST_FILE (chat JSONL) through every candidate and score the answers."""
    from tunewise.eval import run_eval

    schema_doc = _schema(schema)
    cands = _candidates(candidates_file, models, prompts, specs, schema_doc, max_tokens, structured)
    graders, grading = _graders(grader_files, candidates_file, judge_base_url, no_python_graders, no_cache)
    try:
        run = run_eval(test_file, cands, schema=schema_doc, out_dir=out_dir, concurrency=concurrency, limit=limit,
                       cache=not no_cache, prices=prices, progress=not as_json, graders=graders, grading=grading)
    finally:
        if grading is not None and grading.judge is not None:
            grading.judge.close()
    if as_json:
        click.echo(json.dumps(run.metrics, indent=2))
        return
    quality = (("right fn", "tool_name_match"), ("tool exact", "tool_exact_match"), ("args F1", "tool_args_f1")) \
        if run.metrics.get("task") == "tools" else (("valid JSON", "valid_json"), ("schema", "schema_adherence"),
                                                    ("exact", "exact_match"), ("field F1", "field_f1"),
                                                    ("text F1", "text_f1"))
    header = ("candidate", "role", *(label for label, _ in quality), "in tok", "out tok", "p50 s", "p95 s",
              "$/1k calls", "failed")
    rows = []
    for name, s in run.metrics["candidates"].items():
        cost = s.get("cost_per_1k_usd")
        rows.append((name, s["role"], *(_cell(s.get(metric)) for _, metric in quality),
                     _cell(s.get("priced_input_tokens"), False), _cell(s.get("priced_output_tokens"), False),
                     "-" if s.get("latency_p50_s") is None else f"{s['latency_p50_s']:.2f}",
                     "-" if s.get("latency_p95_s") is None else f"{s['latency_p95_s']:.2f}",
                     "-" if not cost else f"{cost['value']:.4f}", str(s["n_errors"])))
    from tunewise.cli.cost import table

    table(header, rows, left=(0, 1))
    graded = sorted({g for s in run.metrics["candidates"].values() for g in (s.get("graders") or {})})
    if graded:
        click.echo("")
        table(("candidate", *graded), [(name, *(_cell((s.get("graders") or {}).get(g)) for g in graded))
                                       for name, s in run.metrics["candidates"].items()], left=(0,))
    click.echo(f"\n{run.metrics['n_examples']} examples; {run.requests} requests sent, {run.cache_hits} answered "
               f"from the cache. 95% intervals in {Path(out_dir) / 'metrics.json'}.")
    for note in run.notes:
        click.echo(f"note: {note}")
    click.echo(f"Per-example results: {Path(out_dir) / 'results.jsonl'}\nNext: tunewise decide {out_dir}")


@click.command()
@click.argument("eval_dir", type=click.Path(exists=True, file_okay=False))
@click.option("--calls-per-month", type=float, default=None,
              help="Your volume (default 10,000, marked as assumed in the report).")
@click.option("--training-cost", type=float, default=None, help="Training cost in USD, if known.")
@click.option("--training-file", type=click.Path(exists=True, dir_okay=False),
              help="Training data to estimate the training cost from (with --model and --epochs).")
@click.option("--model", "-m", default=None, help="Model to price training on (with --training-file).")
@click.option("--epochs", "--n-epochs", "epochs", default="auto", show_default=True,
              help="Epochs for --training-file, or 'auto'.")
@click.option("--job", default=None, help="Fine-tuning job id: fetches its metrics CSV for the loss plot.")
@click.option("--metrics-csv", type=click.Path(exists=True, dir_okay=False),
              help="OpenAI-format step metrics CSV for the loss plot.")
@click.option("--primary", default=None,
              help="The primary measure, named up front: format, accuracy, or the name of a grader the "
                   "evaluation ran (default: format for JSON answers, token F1 for text, the right function for "
                   "tool calls; accuracy: exact match, or tool-call exact match).")
@click.option("--margin", type=float, default=0.05, show_default=True,
              help="Equivalence margin: a difference within +-MARGIN (0.05 = 5 points) counts as no difference.")
@click.option("--cache-hit-rate", type=float, default=0.0, show_default=True,
              help="Share of calls whose static prompt prefix (1,024+ tokens) the prompt cache serves.")
@click.option("--max-failure-rate", type=float, default=0.05, show_default=True,
              help="No verdict when more than this share of a deciding candidate's calls failed.")
@click.option("--horizon-months", type=float, default=12, show_default=True,
              help="Months over which training is amortised when cost decides.")
@click.option("--shifted", type=click.Path(exists=True, file_okay=False), default=None,
              help="The same candidates evaluated on a split from a shifted distribution: reported side by side, "
                   "and the guide's claim that few-shot degrades under shift and fine-tuning does not, tested.")
@click.option("--claim", type=click.Choice(["style", "vocabulary", "facts"]), default=None,
              help="Which of the guide's claims the primary grader speaks to, for the claims table (default: "
                   "style): vocabulary, or facts (the negative claim: facts belong in the prompt).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False),
              help="Report directory (default: EVAL_DIR/report).")
@click.option("--prices", type=click.Path(dir_okay=False), default=None,
              help="TOML file overriding catalog prices (default: $TUNEWISE_PRICES).")
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
def decide(eval_dir, calls_per_month, training_cost, training_file, model, epochs, job, metrics_csv, primary,
           margin, cache_hit_rate, max_failure_rate, horizon_months, shifted, claim, out_dir, prices, as_json
           ) -> None:
    """The verdict from an evaluation (fine-tune / keep prompting / use structured outputs / not enough
    evidence), with reasons, monthly cost, break-even and an HTML + Markdown report."""
    from tunewise.cli.cost import _epochs
    from tunewise.eval import decide as decide_fn
    from tunewise.eval import write_report
    from tunewise.eval.report import _jsonable

    decision = decide_fn(eval_dir, calls_per_month=calls_per_month, training_cost=training_cost,
                         training_file=training_file, model=model, epochs=_epochs(epochs), job=job,
                         metrics_csv=metrics_csv, prices=prices, primary=primary, margin=margin,
                         cache_hit_rate=cache_hit_rate, max_failure_rate=max_failure_rate,
                         horizon_months=horizon_months, shifted=shifted, claim=claim)
    paths = write_report(decision, out_dir or Path(eval_dir) / "report")
    if as_json:
        click.echo(json.dumps(_jsonable({**decision.to_dict(), "report": {k: str(v) for k, v in paths.items()}}),
                              indent=2))
        return
    click.echo(f"Verdict: {decision.verdict}")
    for claim in decision.claims:
        click.echo(f"claim: {claim['outcome']}: {claim['claim']} {claim['detail']}")
    for reason in decision.reasons:
        click.echo(f"- {reason}")
    for note in decision.notes:
        click.echo(f"note: {note}")
    click.echo(f"Report: {paths['html']} (summary: {paths['markdown']})")
