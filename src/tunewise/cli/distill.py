"""``tunewise distill``: thin over ``tunewise.eval.distill``."""

from __future__ import annotations

import json
from pathlib import Path

import click

from tunewise.errors import UsageError


def _teacher(teacher: str | None, teacher_prompt: str | None, candidates_file: str | None, schema: dict | None,
             structured: bool, max_tokens: int | None):
    from tunewise.eval import candidate_from_dict, load_candidates, parse_candidate_flag
    from tunewise.eval.candidates import json_schema_format

    if candidates_file:
        cands = load_candidates(candidates_file, schema=schema)
        if teacher is None and len(cands) == 1:
            chosen = cands[0]
        else:
            named = [c for c in cands if c.name == teacher]
            if not named:
                raise UsageError(f"No candidate named {teacher!r} in {candidates_file}." if teacher else
                                 f"{candidates_file} has {len(cands)} candidates: name the teacher with --teacher.",
                                 hint="Candidates there: " + ", ".join(c.name for c in cands) + ".")
            chosen = named[0]
    elif teacher is None:
        raise UsageError("No teacher.", hint="Pass --teacher MODEL (with --teacher-prompt FILE), --teacher "
                         "NAME=MODEL[:PROMPT_FILE], or --candidates FILE --teacher NAME.")
    elif "=" in teacher:
        chosen = parse_candidate_flag(teacher, schema)
    else:
        chosen = candidate_from_dict({"model": teacher, "name": "teacher"}, Path.cwd(), schema)
    if teacher_prompt:
        chosen.system_prompt = Path(teacher_prompt).read_text(encoding="utf-8")
    if structured:
        if schema is None:
            raise UsageError("--structured needs --schema.", param="structured")
        chosen.response_format = json_schema_format(schema)
    if max_tokens:
        chosen.max_tokens = max_tokens
    return chosen


@click.command()
@click.argument("inputs", required=False, type=click.Path(exists=True, dir_okay=False))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False),
              help="The training file to write (chat JSONL); left-out answers go to OUT.rejected.jsonl.")
@click.option("--teacher", default=None, metavar="MODEL|NAME=MODEL[:PROMPT_FILE]|NAME",
              help="The teacher: a model, a named candidate, or a candidate's name in --candidates.")
@click.option("--teacher-prompt", type=click.Path(exists=True, dir_okay=False),
              help="The teacher's (long) system prompt file.")
@click.option("--candidates", "candidates_file", type=click.Path(exists=True, dir_okay=False),
              help="YAML or TOML candidates file to take the teacher from (endpoint, prompt, few-shot, ...).")
@click.option("--student-prompt", type=click.Path(exists=True, dir_okay=False),
              help="The student's (short) system prompt file, written into every training example.")
@click.option("--schema", type=click.Path(exists=True, dir_okay=False),
              help="JSON Schema every kept answer must follow.")
@click.option("--structured", is_flag=True, help="Ask the teacher for structured outputs from --schema.")
@click.option("--must-match", "patterns", multiple=True, metavar="REGEX",
              help="A grader: kept answers must match this regular expression (repeatable).")
@click.option("--grader", "grader_files", multiple=True, type=click.Path(exists=True, dir_okay=False),
              help="OpenAI-shaped graders (YAML or JSON, as `tunewise graders`) every kept answer must pass "
              "(repeatable).")
@click.option("--max-tokens", type=int, default=None, help="Longest teacher answer; a cut-off answer is left out.")
@click.option("--from-stored", is_flag=True,
              help="Build the file from the server's stored completions instead of asking a teacher.")
@click.option("--metadata", "metadata_pairs", multiple=True, metavar="KEY=VALUE",
              help="With --from-stored: only completions whose metadata has KEY=VALUE (repeatable).")
@click.option("--stored-model", default=None, help="With --from-stored: only completions of this model.")
@click.option("--student-model", default="gpt-4o-mini", show_default=True,
              help="Model the file is validated and priced for (the one to fine-tune).")
@click.option("--epochs", "--n-epochs", "epochs", default="auto", show_default=True,
              help="Epochs for the price estimate, or 'auto'.")
@click.option("--concurrency", type=int, default=4, show_default=True, help="Teacher requests in flight at once.")
@click.option("--limit", type=int, default=None, help="Only the first N inputs (or stored completions).")
@click.option("--no-cache", is_flag=True, help="Send every request, ignoring the eval cache.")
@click.option("--prices", type=click.Path(dir_okay=False), default=None,
              help="TOML file overriding catalog prices (default: $TUNEWISE_PRICES).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def distill(inputs, out_path, teacher, teacher_prompt, candidates_file, student_prompt, schema, structured,
            patterns, grader_files, max_tokens, from_stored, metadata_pairs, stored_model, student_model, epochs, concurrency,
            limit, no_cache, prices, as_json) -> None:
    """Write a training file whose answers are a teacher's (INPUTS: JSONL of user messages or chat examples
    without answers), each checked, for a student with a short prompt; or build it from stored completions."""
    from tunewise.cli.eval import _schema
    from tunewise.eval import distill as D

    schema_doc = _schema(schema)
    graders = [D.regex_grader(p) for p in patterns]
    judge = None
    if grader_files:
        from tunewise.client import resolve_target
        from tunewise.eval.graders import GradingContext, ModelJudge, load_graders

        loaded = [g for f in grader_files for g in load_graders(f)]
        context = GradingContext()
        if any(g.uses_model for g in loaded):
            target = resolve_target()  # model graders ask the same service as everything else
            judge = context.judge = ModelJudge(target.base_url, target.api_key)
        graders += [D.openai_grader(g, context) for g in loaded]
    try:
        _run(D, inputs, out_path, teacher, teacher_prompt, candidates_file, student_prompt, schema_doc, structured,
             graders, max_tokens, from_stored, metadata_pairs, stored_model, student_model, epochs, concurrency,
             limit, no_cache, prices, as_json)
    finally:
        if judge is not None:
            judge.close()


def _run(D, inputs, out_path, teacher, teacher_prompt, candidates_file, student_prompt, schema_doc, structured,
         graders, max_tokens, from_stored, metadata_pairs, stored_model, student_model, epochs, concurrency, limit,
         no_cache, prices, as_json) -> None:
    from tunewise.cli.cost import _epochs

    prompt = Path(student_prompt).read_text(encoding="utf-8") if student_prompt else None
    common = {"student_prompt": prompt, "schema": schema_doc, "graders": graders, "limit": limit,
              "student_model": student_model, "prices": prices, "epochs": _epochs(epochs)}
    if from_stored:
        if inputs or teacher or candidates_file:
            raise UsageError("--from-stored takes the answers already stored: give no INPUTS and no teacher.")
        import openai

        from tunewise.client import resolve_target, sdk_errors

        target = resolve_target()
        client = openai.OpenAI(base_url=target.base_url, api_key=target.api_key, max_retries=2)
        with sdk_errors(target):
            result = D.distill_stored(client, out_path, metadata=D.parse_metadata(metadata_pairs),
                                      model=stored_model, **common)
    else:
        if metadata_pairs or stored_model:
            raise UsageError("--metadata and --stored-model go with --from-stored.")
        if not inputs:
            raise UsageError("Missing INPUTS.", hint="Pass a JSONL file of inputs, or --from-stored.")
        cand = _teacher(teacher, teacher_prompt, candidates_file, schema_doc, structured, max_tokens)
        result = D.distill(inputs, cand, out_path, concurrency=concurrency, cache=not no_cache,
                           progress=not as_json, **common)
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2, default=str))
        return
    left = sum(result.left_out.values())
    detail = ", ".join(f"{n} {reason}" for reason, n in sorted(result.left_out.items()))
    click.echo(f"Kept {result.n_kept} of {result.n_inputs} answers; "
               + (f"left out {left} ({detail})." if left else "none left out."))
    if result.requests or result.cache_hits:
        click.echo(f"{result.requests} requests sent, {result.cache_hits} answered from the cache.")
    click.echo(f"Training file: {result.out_path}" + (f"; left out: {result.rejected_path}" if result.rejected_path
                                                     else ""))
    if result.report is not None:
        errors, warnings = len(result.report.errors), len(result.report.warnings)
        click.echo(f"Validation ({student_model}): {errors} error{'s' * (errors != 1)}, {warnings} "
                   f"warning{'s' * (warnings != 1)}" + ("" if result.report.ok else
                                                        f" (tunewise validate {result.out_path})"))
    if result.estimate is not None:
        e = result.estimate
        click.echo(f"Training estimate: {e.billed_tokens:,} billed tokens ({e.n_epochs} epochs) = "
                   f"${e.cost_usd:.4f} on {e.model}")
        for warning in e.warnings:
            click.echo(f"warning: {warning}")
    for note in result.notes:
        click.echo(f"note: {note}")
