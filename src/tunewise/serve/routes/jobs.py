"""``/v1/fine_tuning/jobs``: create, list, retrieve, cancel, pause, resume, events, checkpoints.

The API only writes the job's row and flags; the worker process (``tunewise.serve.worker``) validates,
trains and reports back through the same database. Cancel and pause take effect in the row at once and
the worker's ``stop`` callable sees them within ``worker_poll_s``.
"""

from __future__ import annotations

import json
import random
from contextvars import ContextVar
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from tunewise.errors import Conflict, ModelNotFound, NotFound, UsageError
from tunewise.serve import integrations, naming
from tunewise.serve.deps import PrincipalDep, State, StateDep
from tunewise.serve.errors import ApiError
from tunewise.serve.limits import check_metadata, check_model_name, check_schema_bounds, metadata_filter_key
from tunewise.serve.store import ACTIVE, new_id, now

STRICT_STATUS_HEADER = "X-Tunewise-Strict-Status"
"""A request with this header set to 1 (or true) gets only the statuses of OpenAI's spec: a paused job shows as
``queued`` (it waits, as a queued job does) with ``tunewise_status: "paused"`` beside it. Without it a paused job
shows ``paused``, as OpenAI's own pause endpoint answers, which the SDK accepts unless its strict response
validation is on."""
STATUSES = ("validating_files", "queued", "running", "succeeded", "failed", "cancelled")
"""The job statuses of OpenAI's spec (``FineTuningJob.status``); ``paused`` is the one tunewise adds."""
_strict_status: ContextVar[bool] = ContextVar("strict_status", default=False)


async def strict_status(x_tunewise_strict_status: Annotated[str | None, Header()] = None) -> None:
    # Async so that it runs in the request's own context and the (threadpool) route sees the value.
    _strict_status.set((x_tunewise_strict_status or "").strip().lower() in ("1", "true", "yes"))


router = APIRouter(tags=["fine-tuning"], dependencies=[Depends(strict_status)])

PAST = {"cancel": "cancelled", "pause": "paused", "resume": "resumed"}
# The local trainer's ranges (tunewise.train.config): OpenAI allows up to 50 epochs, the trainer 25.
HYPERPARAMETER_RANGES = {"n_epochs": (1, 25, int), "batch_size": (1, 256, int),
                         "learning_rate_multiplier": (0, 100, float)}
BETA_RANGE = (0, 2, float)  # DPO's beta: OpenAI's range, above 0 and at most 2
# Reinforcement fine-tuning's own (FineTuneReinforcementHyperparameters): compute_multiplier in (0, 10],
# eval_interval and eval_samples positive integers (the local trainer caps eval_samples at 64), reasoning_effort.
RFT_RANGES = {"compute_multiplier": (0, 10, float), "eval_interval": (1, 10**9, int), "eval_samples": (1, 64, int)}
REASONING_EFFORTS = ("default", "low", "medium", "high")


class CreateJob(BaseModel):
    """OpenAI's CreateFineTuningJobRequest (unknown fields are ignored, as OpenAI does)."""

    model_config = ConfigDict(extra="ignore")
    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    suffix: Annotated[str | None, Field(max_length=64)] = None
    seed: Annotated[int | None, Field(ge=0, le=2147483647)] = None
    metadata: dict[str, str] | None = None
    integrations: list[dict[str, Any]] | None = None
    eval: Any = None
    """tunewise extension (the SDK sends it with ``extra_body``): score each checkpoint on a held-out set,
    ``{"file": "file-...", "schema": {...}, "limit": 20, "max_tokens": 256}``; checked by ``_eval_config``."""
    ray: Any = None
    """tunewise extension (``extra_body``, with ``executor=ray``): what the job asks of the Ray cluster, over the
    server's ``ray_*`` settings: ``{"num_workers": 2, "use_gpu": false, "resources_per_worker": {"CPU": 1}}``."""


EVAL_LIMIT_RANGE = (1, 200)
"""Examples scored per checkpoint: each costs a generation, and training waits while a checkpoint is scored."""
EVAL_MAX_TOKENS_RANGE = (1, 4096)
"""Longest answer generated per example (a rambling checkpoint is cut there and scores as invalid)."""
EVAL_FILE_PURPOSES = ("evals", "fine-tune")
"""An eval set is uploaded as ``evals`` (a small one is fine) or is a ``fine-tune`` file held out of training."""


def _type_name(value: Any) -> str:
    from tunewise.data.reading import type_name

    return type_name(value)


def _shown(value: Any, limit: int = 40) -> str:
    """``repr`` of a value for an error message, cut short (a 400-digit number or a long string)."""
    text = repr(value) if not (isinstance(value, int) and abs(value) > 10**limit) else f"<an integer of " \
        f"{len(str(abs(value)))} digits>"
    return text if len(text) <= limit + 3 else text[:limit] + "..."


def job_object(row: dict[str, Any]) -> dict[str, Any]:
    hyper = json.loads(row["hyperparameters"])
    method = json.loads(row["method"])
    obj = {
        "object": "fine_tuning.job",
        "id": row["id"],
        "model": row["model"],
        "created_at": row["created_at"],
        "finished_at": row["finished_at"],
        "fine_tuned_model": row["fine_tuned_model"],
        "organization_id": f"org-{row['project']}",
        "result_files": json.loads(row["result_files"]),
        "status": row["status"],
        "validation_file": row["validation_file"],
        "training_file": row["training_file"],
        "hyperparameters": hyper,
        "trained_tokens": row["trained_tokens"],
        "error": json.loads(row["error"]) if row["error"] else None,
        "user_provided_suffix": row["suffix"],
        "seed": row["seed"],
        "estimated_finish": row["estimated_finish"],
        "integrations": json.loads(row["integrations"]) if row.get("integrations") else [],
        "method": method,
        "metadata": json.loads(row["metadata"]) if row["metadata"] else None,
    }
    # The eval set is a tunewise extension: an extra field, only on jobs that have one, so a job without it is
    # exactly OpenAI's object.
    if row.get("eval"):
        obj["eval"] = json.loads(row["eval"])
    if row.get("ray"):  # the ray extension likewise (executor=ray)
        obj["ray"] = json.loads(row["ray"])
    if _strict_status.get() and obj["status"] not in STATUSES:
        obj["status"], obj["tunewise_status"] = "queued", obj["status"]
    return obj


def get_job(state: State, project: str, job_id: str) -> dict[str, Any]:
    row = state.store.job(job_id, project)
    if row is None:
        raise NotFound(f"Could not find fine-tuning job {job_id}.", param="fine_tuning_job_id",
                       code="fine_tuning_job_not_found")
    return row


def _method(body: CreateJob, state: State | None = None) -> tuple[str, dict[str, Any]]:
    """The method's type and its hyperparameters from ``method`` (or the deprecated top-level field), checked:
    ``supervised`` (n_epochs, batch_size, learning_rate_multiplier), ``dpo`` (the same and beta) or
    ``reinforcement`` (the same, compute_multiplier, eval_interval, eval_samples, reasoning_effort; and its
    grader, checked by ``_grader``)."""
    method = body.method or {"type": "supervised"}
    kind = method.get("type")
    if not isinstance(kind, str):
        raise UsageError(f"method.type must be a string, not {_type_name(kind)}.", param="method.type",
                         hint="Use method={'type': 'supervised', 'supervised': {'hyperparameters': {...}}}.")
    if kind not in ("supervised", "dpo", "reinforcement"):
        raise UsageError(f"Unknown fine-tuning method type {kind!r}.",
                         hint="Use 'supervised', 'dpo' or 'reinforcement'.", param="method.type")
    ranges = (dict(HYPERPARAMETER_RANGES, beta=BETA_RANGE) if kind == "dpo"
              else dict(HYPERPARAMETER_RANGES, **RFT_RANGES) if kind == "reinforcement" else HYPERPARAMETER_RANGES)
    section = method.get(kind)
    if section is not None and not isinstance(section, dict):
        raise UsageError(f"method.{kind} must be an object, not {_type_name(section)}.",
                         param=f"method.{kind}", hint="Use {'hyperparameters': {'n_epochs': 3, ...}}.")
    hyper = (section or {}).get("hyperparameters")
    if hyper is not None and not isinstance(hyper, dict):
        raise UsageError(f"method.{kind}.hyperparameters must be an object, not {_type_name(hyper)}.",
                         param=f"method.{kind}.hyperparameters",
                         hint="Use {'n_epochs': 3, 'batch_size': 'auto', 'learning_rate_multiplier': 'auto'}.")
    hyper = dict(hyper or {})
    effort = None
    if kind == "reinforcement":
        effort = hyper.pop("reasoning_effort", "default")
        if effort is None:
            effort = "default"
        if effort not in REASONING_EFFORTS:
            raise UsageError(f"Invalid reasoning_effort {_shown(effort)}: expected one of "
                             f"{', '.join(REASONING_EFFORTS)}.", param="hyperparameters.reasoning_effort")
    if body.hyperparameters:
        if hyper:
            raise UsageError("Give hyperparameters either in `method` or in the deprecated `hyperparameters` "
                             "field, not both.", param="hyperparameters")
        hyper = dict(body.hyperparameters)
    out: dict[str, Any] = {}
    for name, value in hyper.items():
        if name not in ranges:
            raise UsageError(f"Unknown hyperparameter {name!r}.", param=f"hyperparameters.{name}",
                             hint={"dpo": "DPO", "reinforcement": "Reinforcement fine-tuning"}.get(
                                 kind, "Supervised fine-tuning") + " takes " + ", ".join(ranges)
                             + (", reasoning_effort" if kind == "reinforcement" else "") + ".")
        low, high, kind_ = ranges[name]
        if value == "auto" or value is None:
            out[name] = "auto"
            continue
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        # Compare before converting: a 400-digit integer is out of range, not a float overflow.
        if ok and kind_ is int:
            ok = low <= value <= high and float(value).is_integer()
        elif ok:
            ok = low < value <= high
        if not ok:
            limits = f"an integer from {low} to {high}" if kind_ is int else f"a number in ({low}, {high}]"
            raise UsageError(f"Invalid {name} {_shown(value)}: expected 'auto' or {limits}.",
                             param=f"hyperparameters.{name}")
        out[name] = int(value) if kind_ is int else float(value)
    for name in ranges:
        out.setdefault(name, "auto")
    result = {"batch_size": out["batch_size"], "learning_rate_multiplier": out["learning_rate_multiplier"],
              "n_epochs": out["n_epochs"]}
    if kind == "dpo":
        result = {"beta": out["beta"], **result}
    if kind == "reinforcement":
        result.update({name: out[name] for name in RFT_RANGES}, reasoning_effort=effort)
    return kind, result


def _grader(state: State, body: CreateJob) -> dict[str, Any]:
    """A reinforcement job's grader, checked by the code of ``/v1/fine_tuning/alpha/graders/validate`` (a bad
    one is a 400 naming its field, under ``method.reinforcement.grader``) and runnable in training here."""
    from tunewise.errors import TunewiseError
    from tunewise.serve.routes.graders import _check
    from tunewise.train.methods.grpo import load_grader

    section = (body.method or {}).get("reinforcement")
    grader = section.get("grader") if isinstance(section, dict) else None
    if not isinstance(grader, dict):
        raise UsageError("method.reinforcement.grader is required: the grader that scores each sampled answer.",
                         hint="Pass an OpenAI grader object, e.g. {'type': 'string_check', 'name': 'exact', "
                         "'operation': 'eq', 'input': '{{sample.output_text}}', 'reference': "
                         "'{{item.reference_answer}}'} (see docs/graders.md).", param="method.reinforcement.grader")
    try:
        _check(state, grader)
        load_grader(grader)
    except TunewiseError as exc:
        param = exc.param or "grader"
        exc.param = "method.reinforcement." + (param if param.startswith("grader") else f"grader.{param}")
        raise
    return grader


def method_object(kind: str, hyper: dict[str, Any], grader: dict[str, Any] | None = None) -> dict[str, Any]:
    """The job's ``method`` as OpenAI echoes it: ``{"type": kind, kind: {"hyperparameters": {...}}}``, with the
    grader beside the hyperparameters for reinforcement."""
    section: dict[str, Any] = {"hyperparameters": hyper}
    if grader is not None:
        section = {"grader": grader, **section}
    return {"type": kind, kind: section}


def _check_file(state: State, project: str, file_id: str, param: str,
                purposes: tuple[str, ...] = ("fine-tune",)) -> None:
    from tunewise.serve.routes.files import LIVE

    row = state.store.one(f"SELECT purpose FROM files WHERE id = ? AND project = ? AND {LIVE}", file_id, project)
    if row is None:
        raise UsageError(f"File '{file_id}' not found.", param=param, code="invalid_file",
                         hint=f"Upload it first with purpose '{purposes[0]}' (POST /v1/files; `tunewise files upload FILE`).")
    if row["purpose"] not in purposes:
        raise UsageError(f"File '{file_id}' has purpose '{row['purpose']}', not "
                         f"{' or '.join(repr(p) for p in purposes)}.", param=param, code="invalid_file")


def _eval_int(spec: dict[str, Any], name: str, default: int, limits: tuple[int, int]) -> int:
    value = spec.get(name, default)
    if value is None:
        return default
    low, high = limits
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high \
            or not float(value).is_integer():
        raise UsageError(f"Invalid eval.{name} {_shown(value)}: expected an integer from {low} to {high}.",
                         param=f"eval.{name}")
    return int(value)


def _eval_config(state: State, project: str, spec: Any) -> dict[str, Any] | None:
    """The job's ``eval`` extension checked and completed with its defaults (None when not asked for)."""
    from tunewise.eval.checkpoint import DEFAULT_LIMIT, DEFAULT_MAX_TOKENS

    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise UsageError("eval must be an object: {\"file\": \"file-...\", \"schema\": {...}, \"limit\": 20}.",
                         param="eval")
    unknown = sorted(set(spec) - {"file", "schema", "limit", "max_tokens"})
    if unknown:
        raise UsageError(f"Unknown eval field {unknown[0]!r}.", param=f"eval.{unknown[0]}",
                         hint="eval takes file, schema, limit and max_tokens.")
    file_id = spec.get("file")
    if not isinstance(file_id, str) or not file_id:
        raise UsageError("eval.file is required: the id of an uploaded chat JSONL file whose last assistant "
                         "message in each line is the expected answer.", param="eval.file")
    _check_file(state, project, file_id, "eval.file", EVAL_FILE_PURPOSES)
    schema = spec.get("schema")
    if schema is not None:
        import jsonschema

        if not isinstance(schema, dict):
            raise UsageError("eval.schema must be a JSON Schema object.", param="eval.schema")
        check_schema_bounds(schema, "eval.schema")
        try:
            jsonschema.validators.validator_for(schema).check_schema(schema)
        except jsonschema.SchemaError as exc:
            where = "/".join(str(p) for p in exc.path)
            raise UsageError(f"eval.schema is not a valid JSON Schema: {exc.message}"
                             + (f" (at {where})" if where else "") + ".", param="eval.schema",
                             hint="Fix the schema (see json-schema.org) or leave it out.") from None
    return {"file": file_id, "schema": schema,
            "limit": _eval_int(spec, "limit", DEFAULT_LIMIT, EVAL_LIMIT_RANGE),
            "max_tokens": _eval_int(spec, "max_tokens", DEFAULT_MAX_TOKENS, EVAL_MAX_TOKENS_RANGE)}


def _output_dir(state: State, job_id: str):
    """Where the job writes: under ``ray_storage`` (reached by every node) with the Ray executor, when set."""
    from pathlib import Path

    settings = state.settings
    if settings.executor == "ray" and settings.ray_storage:
        return Path(settings.ray_storage).expanduser() / "jobs" / job_id
    return state.store.jobs_dir / job_id


@router.post("/fine_tuning/jobs")
def create_job(body: CreateJob, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    store, settings, project = state.store, state.settings, principal.project
    check_model_name(body.model)
    kind, method_hyper = _method(body)
    grader = _grader(state, body) if kind == "reinforcement" else None
    hyper = {k: v for k, v in method_hyper.items() if k in HYPERPARAMETER_RANGES}
    if body.suffix is not None and not all(c.isalnum() or c in "-_." for c in body.suffix):
        raise UsageError(f"Invalid suffix {body.suffix!r}: use letters, digits, '-', '_' and '.' (it becomes part "
                         "of the model name, whose parts ':' separates).", param="suffix")
    parent = None
    if body.model.startswith("ft:"):
        # Continued fine-tuning: a fine-tuned model or checkpoint of this project, or one shared with it.
        try:
            parent = naming.resolve(store, settings, project, body.model)
        except ModelNotFound:
            raise UsageError(f"The model '{body.model}' does not exist or you do not have access to it.",
                             hint="Continue a fine-tuned model or checkpoint of this project, or one another project "
                             "shared with it (POST /v1/fine_tuning/checkpoints/{model}/permissions).",
                             code="model_not_found", param="model") from None
        local = parent.base_local
    else:
        local = naming.base_local_model(settings, body.model)
    _check_file(state, project, body.training_file, "training_file")
    if body.validation_file:
        _check_file(state, project, body.validation_file, "validation_file")
    eval_spec = _eval_config(state, project, body.eval)
    from tunewise.serve.executors.resources import for_job

    ray_spec = for_job(settings, body.ray)
    check_metadata(body.metadata)
    chosen = integrations.check(body.integrations)
    job_id = new_id("ftjob-")
    seed = body.seed if body.seed is not None else random.randrange(2**31)
    method = method_object(kind, method_hyper, grader)
    with store.transaction() as db:
        active = db.execute(f"SELECT COUNT(*) FROM jobs WHERE project = ? AND status IN ({','.join('?' * len(ACTIVE))})",
                            (project, *ACTIVE)).fetchone()[0]
        if active >= settings.max_active_jobs:
            raise ApiError(429, f"This project already has {active} unfinished fine-tuning jobs, the limit "
                           f"(setting max_active_jobs, env TUNEWISE_MAX_ACTIVE_JOBS) is {settings.max_active_jobs}.",
                           hint="Wait for a job to finish or cancel one.", code="rate_limit_exceeded")
        db.execute(
            "INSERT INTO jobs (id, project, model, local_model, training_file, validation_file, hyperparameters, "
            "method, suffix, seed, metadata, status, output_dir, created_at, eval, parent_model, init_path, "
            "integrations, ray) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (job_id, project, body.model, local, body.training_file, body.validation_file, json.dumps(hyper),
             json.dumps(method), body.suffix, seed, json.dumps(body.metadata) if body.metadata else None,
             "validating_files", str(_output_dir(state, job_id)), now(),
             json.dumps(eval_spec) if eval_spec else None, parent.name if parent else None,
             parent.local if parent else None, json.dumps(chosen) if chosen else None,
             json.dumps(ray_spec) if ray_spec else None))
    store.add_event(job_id, f"Created fine-tuning job: {job_id}")
    if parent is not None:
        store.add_event(job_id, f"Continuing the {parent.kind} model '{parent.name}': training starts from its "
                        f"weights (its LoRA adapter on '{local}').")
    elif local != body.model:
        store.add_event(job_id, f"Model '{body.model}' is served locally by '{local}': the fine-tuning trains "
                        f"'{local}' on this machine, not an OpenAI model.")
    store.add_event(job_id, f"Validating training file: {body.training_file}")
    if body.validation_file:
        store.add_event(job_id, f"Validating validation file: {body.validation_file}")
    if eval_spec:
        store.add_event(job_id, f"Each checkpoint will be scored on {eval_spec['file']} (up to "
                        f"{eval_spec['limit']} examples" + (", with a schema" if eval_spec["schema"] else "") + ")")
    return job_object(store.job(job_id))


@router.get("/fine_tuning/jobs")
def list_jobs(request: Request, state: StateDep, principal: PrincipalDep, after: str | None = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> dict[str, Any]:
    where, args = "project = ?", [principal.project]
    # metadata[key]=value filters, as the SDK sends them.
    for key, value in request.query_params.multi_items():
        if key.startswith("metadata[") and key.endswith("]"):
            # json_each compares the key exactly (no JSON-path quoting to get wrong).
            where += " AND EXISTS (SELECT 1 FROM json_each(jobs.metadata) WHERE key = ? AND value = ?)"
            args += [metadata_filter_key(key[9:-1]), value]
    rows, has_more = state.store.page("jobs", where, args, after=after, limit=limit,
                                      after_scope="project = ?", after_args=(principal.project,))
    return {"object": "list", "data": [job_object(r) for r in rows], "has_more": has_more}


@router.get("/fine_tuning/jobs/{fine_tuning_job_id}")
def retrieve_job(fine_tuning_job_id: str, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    return job_object(get_job(state, principal.project, fine_tuning_job_id))


def _transition(state: State, project: str, job_id: str, allowed: tuple[str, ...], verb: str,
                **values: Any) -> dict[str, Any]:
    row = get_job(state, project, job_id)
    if not state.store.set_job(job_id, only_if_status=allowed, **values):
        current = state.store.job_status(job_id)
        raise Conflict(f"Cannot {verb} job {job_id}: its status is '{current}'; only a job that is "
                       f"{' or '.join(allowed)} can be {PAST[verb]}.",
                       param="fine_tuning_job_id", code="invalid_job_status")
    return row


@router.post("/fine_tuning/jobs/{fine_tuning_job_id}/cancel")
def cancel_job(fine_tuning_job_id: str, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    _transition(state, principal.project, fine_tuning_job_id, ACTIVE, "cancel", status="cancelled",
                finished_at=now(), estimated_finish=None)
    state.store.add_event(fine_tuning_job_id, "Fine-tuning job cancelled")
    return job_object(state.store.job(fine_tuning_job_id))


@router.post("/fine_tuning/jobs/{fine_tuning_job_id}/pause")
def pause_job(fine_tuning_job_id: str, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    _transition(state, principal.project, fine_tuning_job_id, ("queued", "running"), "pause", status="paused",
                estimated_finish=None)
    state.store.add_event(fine_tuning_job_id, "Fine-tuning job paused; resume it to continue from its last "
                          "saved state")
    return job_object(state.store.job(fine_tuning_job_id))


@router.post("/fine_tuning/jobs/{fine_tuning_job_id}/resume")
def resume_job(fine_tuning_job_id: str, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    _transition(state, principal.project, fine_tuning_job_id, ("paused",), "resume", status="queued")
    state.store.add_event(fine_tuning_job_id, "Fine-tuning job resumed, moving job to queued state")
    return job_object(state.store.job(fine_tuning_job_id))


def event_object(row: dict[str, Any]) -> dict[str, Any]:
    return {"object": "fine_tuning.job.event", "id": row["id"], "created_at": row["created_at"],
            "level": row["level"], "message": row["message"], "type": row["type"],
            "data": json.loads(row["data"]) if row["data"] else {}}


@router.get("/fine_tuning/jobs/{fine_tuning_job_id}/events")
def list_events(fine_tuning_job_id: str, state: StateDep, principal: PrincipalDep, after: str | None = None,
                limit: Annotated[int, Query(ge=1, le=10000)] = 20) -> dict[str, Any]:
    get_job(state, principal.project, fine_tuning_job_id)
    rows, has_more = state.store.page("events", "job_id = ?", [fine_tuning_job_id], after=after, limit=limit,
                                      after_scope="job_id = ?", after_args=(fine_tuning_job_id,))
    return {"object": "list", "data": [event_object(r) for r in rows], "has_more": has_more}


def checkpoint_object(row: dict[str, Any]) -> dict[str, Any]:
    return {"object": "fine_tuning.job.checkpoint", "id": row["id"], "created_at": row["created_at"],
            "fine_tuned_model_checkpoint": row["model"], "fine_tuning_job_id": row["job_id"],
            "metrics": json.loads(row["metrics"]), "step_number": row["step"]}


@router.get("/fine_tuning/jobs/{fine_tuning_job_id}/checkpoints")
def list_checkpoints(fine_tuning_job_id: str, state: StateDep, principal: PrincipalDep,
                     after: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 10) -> dict[str, Any]:
    get_job(state, principal.project, fine_tuning_job_id)
    rows, has_more = state.store.page("checkpoints", "job_id = ?", [fine_tuning_job_id], after=after,
                                      limit=limit, after_scope="job_id = ?", after_args=(fine_tuning_job_id,))
    data = [checkpoint_object(r) for r in rows]
    return {"object": "list", "data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}
