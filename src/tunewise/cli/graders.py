"""``tunewise graders check FILE`` and ``tunewise graders run FILE``: thin wrappers over ``tunewise.eval.graders``."""

from __future__ import annotations

import json
import os

import click

from tunewise.errors import UsageError


@click.group()
def graders() -> None:
    """Check and run graders in OpenAI's shapes (YAML or JSON: one grader, a list, or graders:)."""


@graders.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--json", "as_json", is_flag=True, help="Print the checked graders as JSON.")
def check(file: str, as_json: bool) -> None:
    """Check every grader in FILE against OpenAI's schema; exit 2 naming the first bad field."""
    from tunewise.eval.graders import load_graders

    loaded = load_graders(file)
    if as_json:
        click.echo(json.dumps([g.to_dict() for g in loaded], indent=2))
        return
    for g in loaded:
        extra = f" ({', '.join(g.children)})" if g.children else ""
        click.echo(f"ok  {g.name}: {g.type}{extra}")


@graders.command("run")
@click.argument("file", type=click.Path(dir_okay=False))
@click.option("--sample", "sample", default=None, help="The model's answer to grade (sample.output_text).")
@click.option("--sample-file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Read the model's answer from this file instead.")
@click.option("--item", "item_json", default="{}", help="The dataset row as a JSON object ({{ item.* }}).")
@click.option("--base-url", default=None,
              help="OpenAI-compatible endpoint for score_model/label_model graders (default $OPENAI_BASE_URL).")
@click.option("--api-key-env", default="OPENAI_API_KEY", show_default=True,
              help="Environment variable holding the judge endpoint's API key.")
@click.option("--no-python", is_flag=True, help="Refuse python graders instead of running them.")
@click.option("--python-timeout", type=float, default=120.0, show_default=True,
              help="Time limit of one python grader call, in seconds.")
@click.option("--no-cache", is_flag=True, help="Ask the judge again instead of reusing cached answers.")
@click.option("--json", "as_json", is_flag=True, help="Print OpenAI's RunGraderResponse for each grader.")
def run(file: str, sample: str | None, sample_file: str | None, item_json: str, base_url: str | None,
        api_key_env: str, no_python: bool, python_timeout: float, no_cache: bool, as_json: bool) -> None:
    """Grade one answer with every grader in FILE and print each reward."""
    from tunewise.eval.graders import GradingContext, ModelJudge, grade, load_graders

    if (sample is None) == (sample_file is None):
        raise UsageError("Give the answer to grade with exactly one of --sample TEXT or --sample-file FILE.")
    if sample_file is not None:
        with open(sample_file, encoding="utf-8") as f:
            sample = f.read()
    try:
        item = json.loads(item_json)
    except ValueError as exc:
        raise UsageError(f"--item is not JSON: {exc}.",
                         hint="Give a JSON object, e.g. --item '{\"label\": \"x\"}'.") from None
    if not isinstance(item, dict):
        raise UsageError("--item must be a JSON object.", hint="e.g. --item '{\"label\": \"x\"}'.")
    loaded = load_graders(file)
    context = GradingContext(allow_python=not no_python, python_timeout_s=python_timeout)
    judge = None
    if any(g.uses_model for g in loaded):
        judge = ModelJudge(base_url, os.environ.get(api_key_env), cache=not no_cache)
        context.judge = judge
    try:
        results = [grade(g, sample, item, context) for g in loaded]
    finally:
        if judge is not None:
            judge.close()
    if as_json:
        click.echo(json.dumps([r.to_openai() for r in results], indent=2))
        return
    for r in results:
        flags = [k for k, v in r.errors.items() if v is True]
        passed = "" if r.passed is None else ("  pass" if r.passed else "  fail")
        line = f"{r.name:<24} {r.type:<16} reward {r.reward:.4f}{passed}"
        if flags:
            line += f"  errors: {', '.join(flags)}" + (f" ({r.details['error']})" if r.details.get("error") else "")
        click.echo(line)
