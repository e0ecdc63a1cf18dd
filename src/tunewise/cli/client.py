"""``tunewise files ...`` and ``tunewise jobs ...``: thin over ``tunewise.client`` (the official openai SDK).

They talk to ``OPENAI_BASE_URL`` with ``OPENAI_API_KEY``, else to the local server in
``$TUNEWISE_HOME/credentials.json``; pointed at OpenAI, the same commands drive OpenAI's fine-tuning.
"""

from __future__ import annotations

import json
import sys
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import click

from tunewise.cli.cost import _epochs, _rows, table, usd
from tunewise.client import Client


def _when(ts: Any) -> str:
    if not ts:
        return "-"
    return datetime.fromtimestamp(int(ts), UTC).strftime("%Y-%m-%d %H:%M:%S")


def _dump(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2))


def _client(ctx: click.Context) -> Client:
    """One client per command, created on first use so `--help` never needs a server."""
    obj = ctx.ensure_object(dict)  # the group's dict: it holds --base-url/--api-key
    if "client" not in obj:
        obj["client"] = Client(obj.get("base_url"), obj.get("api_key"))
        if obj["client"].target.note:
            click.echo(f"note: {obj['client'].target.note}", err=True)
    return obj["client"]


def _remember(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    """--base-url/--api-key are taken before or after the subcommand (`jobs --api-key K list` = `jobs list --api-key K`)."""
    if value is not None:
        ctx.ensure_object(dict)[param.name] = value


def _connection_options(fn):
    fn = click.option("--api-key", default=None, expose_value=False, callback=_remember,
                      help="API key (default: OPENAI_API_KEY, else the local server's credentials).")(fn)
    fn = click.option("--base-url", default=None, expose_value=False, callback=_remember,
                      help="Service URL ending in /v1 (default: OPENAI_BASE_URL, else the local server).")(fn)
    return fn


json_option = click.option("--json", "as_json", is_flag=True, help="Print machine-readable JSON.")


# --- files -------------------------------------------------------------------------------------------------

class _ConnectedGroup(click.Group):
    """A group whose every subcommand takes --base-url/--api-key too."""

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        _connection_options(cmd)
        super().add_command(cmd, name)


@click.group(cls=_ConnectedGroup)
@_connection_options
@click.pass_context
def files(ctx: click.Context) -> None:
    """Upload, list, show and delete files on the fine-tuning service."""
    ctx.ensure_object(dict)


@files.command("upload")
@click.argument("file", type=click.Path(exists=True, dir_okay=False))
@click.option("--purpose", default="fine-tune", show_default=True, help="The file's purpose.")
@click.option("--no-validate", is_flag=True, help="Upload without checking the file locally first.")
@json_option
@click.pass_context
def files_upload(ctx: click.Context, file: str, purpose: str, no_validate: bool, as_json: bool) -> None:
    """Upload FILE (chat JSONL for fine-tuning, checked locally first)."""
    if purpose == "fine-tune" and not no_validate:
        from tunewise.data import validate
        from tunewise.data.validate import sniff_format

        # Preference data (DPO) is checked as such; any other file in the format the default model takes.
        validate(file, data_format="preference" if sniff_format(file) == "preference" else None).raise_for_errors()
    f = _client(ctx).upload_file(file, purpose=purpose)
    if as_json:
        _dump(f)
    else:
        click.echo(f"uploaded {f['id']} ({f.get('filename')}, {f.get('bytes', 0):,} bytes, {f.get('purpose')})")


@files.command("list")
@click.option("--purpose", default=None, help="Only files with this purpose.")
@click.option("--limit", type=int, default=None, help="At most this many (newest first).")
@json_option
@click.pass_context
def files_list(ctx: click.Context, purpose: str | None, limit: int | None, as_json: bool) -> None:
    """List uploaded files."""
    items = _client(ctx).list_files(purpose=purpose, limit=limit)
    if as_json:
        _dump(items)
        return
    if not items:
        click.echo("no files")
        return
    table(("id", "filename", "bytes", "purpose", "created"),
          [(f["id"], str(f.get("filename")), f"{f.get('bytes') or 0:,}", str(f.get("purpose")),
            _when(f.get("created_at"))) for f in items], left=(0, 1, 3, 4))


@files.command("show")
@click.argument("file_id")
@json_option
@click.pass_context
def files_show(ctx: click.Context, file_id: str, as_json: bool) -> None:
    """Show one file's details."""
    f = _client(ctx).get_file(file_id)
    if as_json:
        _dump(f)
        return
    _rows([("id", f["id"]), ("filename", str(f.get("filename"))), ("bytes", f"{f.get('bytes') or 0:,}"),
           ("purpose", str(f.get("purpose"))), ("created", _when(f.get("created_at"))),
           ("status", str(f.get("status") or "-"))])


@files.command("delete")
@click.argument("file_id")
@click.pass_context
def files_delete(ctx: click.Context, file_id: str) -> None:
    """Delete a file."""
    result = _client(ctx).delete_file(file_id)
    click.echo(f"deleted {result.get('id', file_id)}" if result.get("deleted", True) else f"not deleted: {file_id}")


# --- jobs --------------------------------------------------------------------------------------------------

@click.group(cls=_ConnectedGroup)
@_connection_options
@click.pass_context
def jobs(ctx: click.Context) -> None:
    """Create, follow and control fine-tuning jobs."""
    ctx.ensure_object(dict)


def _job_rows(job: dict) -> list[tuple[str, str]]:
    hyper = job.get("hyperparameters") or {}
    rows = [("id", job["id"]), ("status", str(job.get("status"))), ("model", str(job.get("model"))),
            ("fine-tuned model", str(job.get("fine_tuned_model") or "-")),
            ("training file", str(job.get("training_file"))),
            ("validation file", str(job.get("validation_file") or "-")),
            ("hyperparameters", ", ".join(f"{k}={v}" for k, v in hyper.items() if v is not None) or "-"),
            ("trained tokens", f"{job['trained_tokens']:,}" if job.get("trained_tokens") else "-"),
            ("created", _when(job.get("created_at"))), ("finished", _when(job.get("finished_at")))]
    if job.get("estimated_finish") and not job.get("finished_at"):
        rows.append(("estimated finish", _when(job["estimated_finish"])))
    if job.get("result_files"):
        rows.append(("result files", ", ".join(job["result_files"])))
    spec = job.get("eval") or {}  # tunewise serve's extension: checkpoints scored on a held-out set
    if spec.get("file"):
        rows.append(("eval set", f"{spec['file']} (up to {spec.get('limit')} examples"
                     + (", with a schema)" if spec.get("schema") else ")")))
    error = job.get("error") or {}
    if error.get("message"):
        rows.append(("error", f"{error.get('code') or ''}: {error['message']}".lstrip(": ")))
    return rows


@jobs.command("create")
@click.argument("file_or_id")
@click.option("--model", "-m", required=True, help="Base model (e.g. gpt-4o-mini-2024-07-18, tunewise-tiny).")
@click.option("--validation-file", default=None, help="A local JSONL file or a file id.")
@click.option("--epochs", "--n-epochs", "n_epochs", default=None, help="Epochs (1-25) or 'auto'.")
@click.option("--batch-size", default=None, help="Batch size or 'auto'.")
@click.option("--learning-rate-multiplier", default=None, help="Scales the base learning rate, or 'auto'.")
@click.option("--suffix", default=None, help="Up to 64 characters added to the fine-tuned model's name.")
@click.option("--seed", type=int, default=None, help="Seed for a reproducible job.")
@click.option("--prices", type=click.Path(dir_okay=False), default=None, help="Prices file for the estimate.")
@click.option("--eval-file", default=None,
              help="Held-out chat JSONL (local path or file id) to score each checkpoint on (tunewise serve only).")
@click.option("--eval-schema", type=click.Path(exists=True, dir_okay=False), default=None,
              help="JSON Schema file the answers should follow (adds schema adherence to the scores).")
@click.option("--eval-limit", type=click.IntRange(1, 200), default=None,
              help="Examples scored per checkpoint (default 20).")
@click.option("--eval-max-tokens", type=click.IntRange(1, 4096), default=None,
              help="Longest answer generated per example (default 256).")
@click.option("--method", "method", type=click.Choice(["supervised", "dpo", "reinforcement"]), default="supervised",
              show_default=True, help="dpo: FILE is preference data, trained with DPO; reinforcement: FILE is "
                                      "prompts, scored by --grader (reinforcement fine-tuning).")
@click.option("--beta", default=None, help="With --method dpo: DPO's beta, in (0, 2], or 'auto'.")
@click.option("--grader", "grader_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="With --method reinforcement: a JSON or YAML file holding one OpenAI grader (the reward).")
@click.option("--compute-multiplier", default=None,
              help="With --method reinforcement: X in (0, 10] or 'auto' (the compute spent per step).")
@click.option("--eval-interval", default=None,
              help="With --method reinforcement: steps between validation runs, or 'auto'.")
@click.option("--eval-samples", default=None,
              help="With --method reinforcement: completions graded per validation prompt (1-64), or 'auto'.")
@click.option("--reasoning-effort", type=click.Choice(["default", "low", "medium", "high"]), default=None,
              help="With --method reinforcement: the reasoning effort of the trained model (OpenAI's; recorded "
                   "by tunewise serve).")
@click.option("--watch", is_flag=True, help="Follow the job until it ends.")
@json_option
@click.pass_context
def jobs_create(ctx: click.Context, file_or_id: str, model: str, validation_file: str | None,
                n_epochs: str | None, batch_size: str | None, learning_rate_multiplier: str | None,
                suffix: str | None, seed: int | None, prices: str | None, eval_file: str | None,
                eval_schema: str | None, eval_limit: int | None, eval_max_tokens: int | None, method: str,
                beta: str | None, grader_file: str | None, compute_multiplier: str | None,
                eval_interval: str | None, eval_samples: str | None, reasoning_effort: str | None, watch: bool,
                as_json: bool) -> None:
    """Validate FILE_OR_ID, show the cost estimate, upload it and create a fine-tuning job (supervised, DPO
    with --method dpo, reinforcement fine-tuning with --method reinforcement --grader G.json)."""
    from tunewise.client import check_job_settings

    hyper = {"n_epochs": _hyper(n_epochs), "batch_size": _hyper(batch_size),
             "learning_rate_multiplier": _hyper(learning_rate_multiplier, float)}
    from tunewise.errors import UsageError

    beta_value = _hyper(beta, float)
    if beta_value is not None and method != "dpo":
        hint = ("Reinforcement fine-tuning has no beta (its hyperparameters: --compute-multiplier, "
                "--eval-interval, --eval-samples, --reasoning-effort); leave --beta out."
                if method == "reinforcement" else "Add --method dpo, or leave --beta out.")
        raise UsageError("--beta is DPO's hyperparameter.", hint=hint, param="beta")
    rft = {"compute_multiplier": _hyper(compute_multiplier, float), "eval_interval": _hyper(eval_interval),
           "eval_samples": _hyper(eval_samples), "reasoning_effort": reasoning_effort}
    given = [name for name, value in rft.items() if value is not None] + (["grader"] if grader_file else [])
    if method != "reinforcement" and given:
        option = "--" + given[-1].replace("_", "-")
        raise UsageError(f"{option} is for --method reinforcement.",
                         hint=f"Add --method reinforcement{'' if grader_file else ' --grader G.json'}, or leave "
                         f"{option} out.",
                         param=given[-1])
    if method == "reinforcement" and grader_file is None:
        raise UsageError("--method reinforcement needs --grader: the grader that scores each sampled answer.",
                         hint="Write one OpenAI grader to a JSON file (see docs/graders.md) and pass "
                         "--grader FILE.", param="grader")
    with _named_options():
        check_job_settings({k: v for k, v in {**hyper, "beta": beta_value, **rft}.items() if v is not None},
                           suffix, method)  # before any upload
    client = _client(ctx)
    epochs = _epochs(n_epochs) if n_epochs is not None else None
    with _named_options():
        plan = client.plan_job(file_or_id, model, n_epochs=epochs, prices=prices, validation_file=validation_file,
                               method=method, grader=grader_file)
    out = sys.stderr if as_json else sys.stdout  # --json keeps stdout for the job object alone
    if plan.report is not None:
        click.echo(f"{file_or_id}: {plan.report.stats.n_examples:,} examples, no errors, "
                   f"{len(plan.report.warnings)} warning(s)", file=out)
        for w in plan.report.warnings:
            click.echo(f"warning: {w.message}", file=out)
    e = plan.estimate
    if plan.billing is not None:  # reinforcement: no token price, said plainly
        click.echo("estimate: not estimated: billed by training time", file=out)
        click.echo(plan.billing, file=out)
    if e is not None:
        click.echo(f"estimate: {e.billed_tokens:,} billed tokens ({e.billed_tokens_per_epoch:,} x {e.n_epochs} "
                   f"epochs{', auto' if e.epochs_auto else ''}), {usd(e.cost_usd)} on {e.model}", file=out)
        for w in e.warnings:
            # The validator has already warned about the data set's size; say it once.
            if plan.report is None or not w.startswith(f"{e.n_examples} examples:"):
                click.echo(f"warning: {w}", file=out)
    for note in plan.notes:
        click.echo(f"note: {note}", file=out)
    job = client.create_job(file_or_id, model, validation_file=validation_file, n_epochs=hyper["n_epochs"],
                            batch_size=hyper["batch_size"],
                            learning_rate_multiplier=hyper["learning_rate_multiplier"],
                            suffix=suffix, seed=seed, eval_file=eval_file, eval_schema=eval_schema,
                            eval_limit=eval_limit, eval_max_tokens=eval_max_tokens, method=method,
                            beta=beta_value, grader=plan.grader, **rft)
    if as_json:
        _dump(job)
    else:
        click.echo(f"created {job['id']} ({job.get('status')}, model {job.get('model')})")
        if not watch:
            click.echo(f"follow it: tunewise jobs watch {job['id']}")
    if watch:
        _watch(client, job["id"], interval=2.0)


_OPTION_OF = {"n_epochs": "--epochs", "grader": "--grader"}
"""A setting's option where it is not the setting's name with dashes."""


@contextmanager
def _named_options():
    """A setting the library refuses (``param`` hyperparameters.NAME or grader...), said with the option typed."""
    from tunewise.errors import TunewiseError

    try:
        yield
    except TunewiseError as exc:
        name = (exc.param or "").removeprefix("hyperparameters.")
        if exc.param and (exc.param.startswith("hyperparameters.") or name.startswith("grader")):
            name = "grader" if name.startswith("grader") else name
            exc.message = f"{_OPTION_OF.get(name, '--' + name.replace('_', '-'))}: {exc.message}"
        raise


def _hyper(value: str | None, kind: type = int) -> Any:
    """A hyperparameter as the API takes it: 'auto' or a number."""
    if value is None or value == "auto":
        return value
    try:
        return kind(value)
    except ValueError:
        from tunewise.errors import UsageError

        raise UsageError(f"Expected a number or 'auto', not {value!r}.", hint="e.g. --epochs 3 or --epochs auto.") from None


@jobs.command("list")
@click.option("--limit", type=int, default=None, help="At most this many (newest first).")
@json_option
@click.pass_context
def jobs_list(ctx: click.Context, limit: int | None, as_json: bool) -> None:
    """List fine-tuning jobs."""
    items = _client(ctx).list_jobs(limit=limit)
    if as_json:
        _dump(items)
        return
    if not items:
        click.echo("no jobs")
        return
    table(("id", "status", "model", "fine-tuned model", "created"),
          [(j["id"], str(j.get("status")), str(j.get("model")), str(j.get("fine_tuned_model") or "-"),
            _when(j.get("created_at"))) for j in items], left=(0, 1, 2, 3, 4))


@jobs.command("show")
@click.argument("job_id")
@json_option
@click.pass_context
def jobs_show(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """Show one job."""
    job = _client(ctx).get_job(job_id)
    if as_json:
        _dump(job)
    else:
        _rows(_job_rows(job))


@jobs.command("events")
@click.argument("job_id")
@click.option("--limit", type=int, default=20, show_default=True, help="The newest this many events.")
@json_option
@click.pass_context
def jobs_events(ctx: click.Context, job_id: str, limit: int, as_json: bool) -> None:
    """A job's events, oldest first (the newest LIMIT)."""
    events = _client(ctx).list_events(job_id, limit=limit)
    if as_json:
        _dump(events)
        return
    for ev in reversed(events):
        click.echo(f"{_when(ev.get('created_at'))}  {ev.get('level', 'info'):<5}  {ev.get('message', '')}")


@jobs.command("checkpoints")
@click.argument("job_id")
@json_option
@click.pass_context
def jobs_checkpoints(ctx: click.Context, job_id: str, as_json: bool) -> None:
    """A job's checkpoints: step, model name and metrics."""
    items = _client(ctx).list_checkpoints(job_id)
    if as_json:
        _dump(items)
        return
    if not items:
        click.echo("no checkpoints")
        return

    def loss(c: dict, key: str) -> str:
        value = (c.get("metrics") or {}).get(key)
        return "-" if value is None else f"{value:.4f}"

    def rate(c: dict, key: str) -> str:
        value = (c.get("metrics") or {}).get(key)
        return "-" if value is None else f"{value:.0%}"

    headers = ["step", "model", "train loss", "valid loss"]
    rows = [[str(c.get("step_number")), str(c.get("fine_tuned_model_checkpoint")), loss(c, "train_loss"),
             loss(c, "valid_loss")] for c in items]
    # Scores on the job's eval set (tunewise serve's `eval` extension), when the checkpoints have them.
    if any("eval_n" in (c.get("metrics") or {}) for c in items):
        headers += ["eval n", "valid JSON", "schema", "exact match"]
        for row, c in zip(rows, items, strict=True):
            n = (c.get("metrics") or {}).get("eval_n")
            row += ["-" if n is None else str(int(n)), rate(c, "eval_valid_json"),
                    rate(c, "eval_schema_adherence"), rate(c, "eval_exact_match")]
    table(tuple(headers), [tuple(r) for r in rows], left=(1,))


def _state_command(name: str, doc: str):
    @jobs.command(name, help=doc)
    @click.argument("job_id")
    @json_option
    @click.pass_context
    def command(ctx: click.Context, job_id: str, as_json: bool) -> None:
        client = _client(ctx)
        job = getattr(client, f"{name}_job")(job_id)
        if as_json:
            _dump(job)
        else:
            click.echo(f"{job['id']}: {job.get('status')}")

    return command


jobs_cancel = _state_command("cancel", "Cancel a job.")
jobs_pause = _state_command("pause", "Pause a running job (resume it later).")
jobs_resume = _state_command("resume", "Resume a paused job.")


def _watch(client: Client, job_id: str, interval: float) -> None:
    from tqdm import tqdm

    bar = tqdm(total=None, unit="step", desc=job_id, dynamic_ncols=True, file=sys.stderr)
    progress = None
    try:
        for progress in client.watch_job(job_id, interval=interval):
            for message in progress.messages:
                bar.write(message, file=sys.stderr)
            if progress.total_steps and bar.total != progress.total_steps:
                bar.total = progress.total_steps
            if progress.step is not None and progress.step > bar.n:
                bar.update(progress.step - bar.n)
            postfix = {"status": progress.status}
            if progress.train_loss is not None:
                postfix["loss"] = f"{progress.train_loss:.4f}"
            if progress.valid_loss is not None:
                postfix["valid"] = f"{progress.valid_loss:.4f}"
            bar.set_postfix(postfix, refresh=True)
    except KeyboardInterrupt:  # Ctrl-C stops the watching, not the job, and says so
        bar.close()
        status = f" ({progress.status})" if progress is not None else ""
        click.echo(f"stopped watching; job {job_id} goes on{status} on the service. "
                   f"Watch it again: tunewise jobs watch {job_id}; stop it: tunewise jobs cancel {job_id}", err=True)
        sys.exit(130)
    finally:
        bar.close()
    job = progress.job if progress is not None else client.get_job(job_id)
    status = job.get("status")
    if status == "succeeded":
        click.echo(f"{job_id} succeeded: {job.get('fine_tuned_model')}")
        return
    error = job.get("error") or {}
    detail = f": {error['message']}" if error.get("message") else ""
    click.echo(f"{job_id} {status}{detail}", err=True)
    sys.exit(1)


@jobs.command("watch")
@click.argument("job_id")
@click.option("--interval", type=float, default=2.0, show_default=True, help="Seconds between polls.")
@click.pass_context
def jobs_watch(ctx: click.Context, job_id: str, interval: float) -> None:
    """Follow a job with a progress bar (step, loss, ETA) until it ends; exit 1 unless it succeeds."""
    _watch(_client(ctx), job_id, interval)
