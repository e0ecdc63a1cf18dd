"""Evaluation during training: a job's ``eval`` set scores each checkpoint, through the official SDK against a
real ``tunewise serve`` (tiny model, real training, real generation)."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest

from helpers import run_cli as _cli
from tunewise.serve import store as store_module
from tunewise.serve.routes.jobs import job_object
from tunewise.serve.settings import Settings
from tunewise.serve.store import MIGRATIONS, Store
from tunewise.serve.testing import (
    ITEMS,
    all_events,
    running_server,
    validate_schema,
    wait_for,
    write_receipts,
)
from tunewise.serve.worker import Worker

SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "openai-openapi.yaml"
RECEIPT_SCHEMA = {
    "type": "object", "required": ["items"],
    "properties": {"items": {"type": "array", "items": {
        "type": "object", "required": ["name", "price"],
        "properties": {"name": {"type": "string"}, "price": {"type": "number"}}}}},
}
EVAL_LIMIT = 3
# The tiny model's answers are noise: a few tokens are enough to score them, and keep the test fast.
EVAL_MAX_TOKENS = 12


@pytest.fixture(scope="module")
def server():
    with running_server() as s:
        yield s


@pytest.fixture(scope="module")
def files(server, tmp_path_factory):
    """Uploaded training and eval files: ids and local paths."""
    tmp = tmp_path_factory.mktemp("evaldata")
    client = server.client()
    train = write_receipts(tmp / "train.jsonl")
    held_out = write_receipts(tmp / "eval.jsonl", items=[(n + " Large", p + 1) for n, p in ITEMS[:5]])
    ids = {name: client.files.create(file=path.open("rb"), purpose=purpose).id
           for name, path, purpose in (("train", train, "fine-tune"), ("eval", held_out, "evals"))}
    return {"ids": ids, "train": train, "eval": held_out}


@pytest.fixture(scope="module")
def scored_job(server, files):
    """A job with an eval set, run to the end."""
    client = server.client()
    job = client.fine_tuning.jobs.create(
        model="tunewise-tiny", training_file=files["ids"]["train"], seed=7,
        method={"type": "supervised", "supervised": {"hyperparameters": {"n_epochs": 2, "batch_size": 4}}},
        extra_body={"eval": {"file": files["ids"]["eval"], "schema": RECEIPT_SCHEMA, "limit": EVAL_LIMIT,
                             "max_tokens": EVAL_MAX_TOKENS}})
    return wait_for(client, job.id, timeout=120)


def test_each_checkpoint_is_scored_on_the_eval_set(server, files, scored_job):
    client = server.client()
    job = scored_job
    assert job.status == "succeeded", job.error
    spec = job.to_dict()["eval"]
    assert spec == {"file": files["ids"]["eval"], "schema": RECEIPT_SCHEMA, "limit": EVAL_LIMIT,
                    "max_tokens": EVAL_MAX_TOKENS}

    checkpoints = sorted(client.fine_tuning.jobs.checkpoints.list(job.id).data, key=lambda c: c.step_number)
    assert [c.step_number for c in checkpoints] == [3, 6]  # 12 examples / batch 4 = 3 steps an epoch
    events = all_events(client, job.id)
    scored = {e.data["step"]: e for e in events if e.type == "metrics" and "eval_n" in (e.data or {})}
    assert sorted(scored) == [3, 6]
    for c in checkpoints:
        metrics = c.to_dict()["metrics"]
        assert metrics["eval_n"] == EVAL_LIMIT
        for key in ("eval_valid_json", "eval_schema_adherence", "eval_exact_match"):
            assert 0.0 <= metrics[key] <= 1.0, (key, metrics)
        # The training metrics are still there beside the scores (finish re-inserts checkpoints).
        assert metrics["step"] == c.step_number and metrics["train_loss"] > 0
        event = scored[c.step_number]
        assert event.level == "info"
        assert event.message.startswith(f"Checkpoint at step {c.step_number} scored on the eval set "
                                        f"({EVAL_LIMIT} examples): valid JSON ")
        assert "schema adherence" in event.message and "exact match" in event.message
        # The event carries the same numbers as the checkpoint, and the step's training metrics.
        assert {k: v for k, v in event.data.items() if k.startswith("eval_")} == \
            {k: v for k, v in metrics.items() if k.startswith("eval_")}
        assert event.data["train_loss"] == pytest.approx(metrics["train_loss"])
        if SPEC.is_file():  # extra metrics and the extra job field keep OpenAI's schemas valid
            validate_schema(SPEC, "FineTuningJobCheckpoint", c.to_dict())
    if SPEC.is_file():
        validate_schema(SPEC, "FineTuningJob", job.to_dict())
    messages = [e.message for e in events]
    assert any(m.startswith("Each checkpoint will be scored on") for m in messages)
    assert f"Eval file validated: {EVAL_LIMIT} examples will be scored at each checkpoint" in messages
    # Scoring comes right after its checkpoint.
    order = [m for m in messages if m.startswith("Checkpoint ")]
    assert order == ["Checkpoint created at step 3", scored[3].message, "Checkpoint created at step 6",
                     scored[6].message]


def test_a_job_without_eval_is_openais_object(server, files):
    client = server.client()
    job = client.fine_tuning.jobs.create(model="tunewise-tiny", training_file=files["ids"]["train"])
    try:
        assert "eval" not in job.to_dict()
    finally:
        client.fine_tuning.jobs.cancel(job.id)


@pytest.mark.parametrize(("spec", "param", "words"), [
    ({"file": "EVAL", "schema": {"type": "nope"}}, "eval.schema", "not a valid JSON Schema"),
    ({"file": "EVAL", "schema": ["not", "a", "schema"]}, "eval.schema", "JSON Schema object"),
    ({"file": "file-doesnotexist"}, "eval.file", "not found"),
    ({"schema": RECEIPT_SCHEMA}, "eval.file", "required"),
    ({"file": "EVAL", "limit": 0}, "eval.limit", "from 1 to 200"),
    ({"file": "EVAL", "limit": 201}, "eval.limit", "from 1 to 200"),
    ({"file": "EVAL", "max_tokens": 2.5}, "eval.max_tokens", "integer"),
    ({"file": "EVAL", "limt": 5}, "eval.limt", "Unknown eval field"),
    ("file-x", "eval", "must be an object"),
])
def test_a_bad_eval_is_a_400_naming_its_param(server, files, spec, param, words):
    client = server.client()
    if isinstance(spec, dict) and spec.get("file") == "EVAL":
        spec = {**spec, "file": files["ids"]["eval"]}
    before = len(client.fine_tuning.jobs.list(limit=100).data)
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model="tunewise-tiny", training_file=files["ids"]["train"],
                                       extra_body={"eval": spec})
    error = info.value.body
    assert info.value.status_code == 400 and error["param"] == param, error
    assert words in error["message"], error
    assert len(client.fine_tuning.jobs.list(limit=100).data) == before  # no job was created


def test_an_eval_file_of_another_project_is_unknown(server, files):
    other = server.client(api_key=server.create_key("other-project"))
    train = other.files.create(file=files["train"].open("rb"), purpose="fine-tune").id
    with pytest.raises(openai.BadRequestError) as info:
        other.fine_tuning.jobs.create(model="tunewise-tiny", training_file=train,
                                      extra_body={"eval": {"file": files["ids"]["eval"]}})
    assert info.value.body["param"] == "eval.file"


def test_an_unusable_eval_set_warns_the_job_succeeds_and_scoring_obeys_the_stop_flag(server, files):
    client = server.client()
    held_out = client.files.create(file=files["eval"].open("rb"), purpose="evals").id
    job = client.fine_tuning.jobs.create(
        model="tunewise-tiny", training_file=files["ids"]["train"],
        hyperparameters={"n_epochs": 1, "batch_size": 12}, extra_body={"eval": {"file": held_out}})
    client.files.delete(held_out)  # gone before the job can read it
    job = wait_for(client, job.id, timeout=120)
    assert job.status == "succeeded", job.error
    warnings = [e.message for e in all_events(client, job.id) if e.level == "warn"]
    assert any("was deleted" in m for m in warnings), warnings
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert checkpoints
    for c in checkpoints:
        assert "eval_n" not in c.to_dict()["metrics"]

    # The worker's scoring step on its own (as for a checkpoint left unscored by a pause): it checks the job's
    # stop flag first, then writes the scores into the checkpoint's metrics and adds the event.
    worker = Worker(Settings.from_env({}, data_dir=server.data_dir))
    try:
        row = worker.store.one("SELECT step, path FROM checkpoints WHERE job_id = ?", job.id)
        spec = {"file": files["ids"]["eval"], "schema": RECEIPT_SCHEMA, "limit": 2, "max_tokens": 4}
        n_events = len(all_events(client, job.id))
        worker._score(job.id, row["step"], row["path"], spec, stopped=lambda: True)
        assert len(all_events(client, job.id)) == n_events
        worker._score(job.id, row["step"], row["path"], spec, stopped=lambda: False)
        metrics = {c.step_number: c.to_dict()["metrics"] for c in client.fine_tuning.jobs.checkpoints.list(job.id)}
        assert metrics[row["step"]]["eval_n"] == 2 and 0 <= metrics[row["step"]]["eval_exact_match"] <= 1
        assert all_events(client, job.id)[-1].message.startswith(f"Checkpoint at step {row['step']} scored")
    finally:
        if worker._engine is not None:
            worker._engine.close()
        worker.store.close()




def test_cli_creates_a_job_with_an_eval_set_and_shows_the_scores(server, files, scored_job, tmp_path,
                                                                 monkeypatch, capsys):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps(RECEIPT_SCHEMA))
    code, out, err = _cli(capsys, "jobs", "create", str(files["train"]), "--model", "tunewise-tiny",
                          "--eval-file", str(files["eval"]), "--eval-schema", str(schema), "--eval-limit", "4",
                          "--json")
    assert code == 0, err
    job = json.loads(out)
    client = server.client()
    try:
        spec = job["eval"]
        # The local eval file was uploaded: a new file id whose content is the file's.
        assert spec["file"].startswith("file-") and spec["file"] != files["ids"]["eval"]
        assert client.files.content(spec["file"]).read() == files["eval"].read_bytes()
        assert (spec["schema"], spec["limit"], spec["max_tokens"]) == (RECEIPT_SCHEMA, 4, 256)
        code, out, err = _cli(capsys, "jobs", "show", job["id"])
        assert code == 0 and f"{spec['file']} (up to 4 examples, with a schema)" in out, out + err
    finally:
        client.fine_tuning.jobs.cancel(job["id"])

    code, out, err = _cli(capsys, "jobs", "checkpoints", scored_job.id)
    assert code == 0, err
    header, *rows = out.splitlines()
    assert "eval n" in header and "valid JSON" in header and "exact match" in header
    metrics = {c.step_number: c.to_dict()["metrics"]
               for c in client.fine_tuning.jobs.checkpoints.list(scored_job.id).data}
    for row in rows:
        cells = row.split()
        step = int(cells[0])
        assert cells[-4:] == [str(EVAL_LIMIT)] + [f"{metrics[step][k]:.0%}" for k in (
            "eval_valid_json", "eval_schema_adherence", "eval_exact_match")]

    # A schema without an eval file is a usage error, one line, before anything is uploaded.
    code, out, err = _cli(capsys, "jobs", "create", str(files["train"]), "--model", "tunewise-tiny",
                          "--eval-schema", str(schema))
    assert code == 2 and "needs an eval file" in err and "Traceback" not in err, err


def test_migration_adds_the_eval_column_to_an_old_database(tmp_path, monkeypatch):
    names = [name for name, _ in MIGRATIONS]
    assert "0005_job_eval" in names
    old_names = names[:names.index("0005_job_eval")]
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS[:len(old_names)])
    old = Store(tmp_path / "db")
    assert old.applied_migrations() == old_names
    old.db.execute(
        "INSERT INTO jobs (id, project, model, local_model, training_file, hyperparameters, method, seed, status, "
        "output_dir, created_at) VALUES ('ftjob-old', 'p', 'tunewise-tiny', 'tunewise-tiny', 'file-a', '{}', "
        "'{\"type\": \"supervised\"}', 1, 'succeeded', '/tmp/x', 1)")
    old.close()
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)
    upgraded = Store(tmp_path / "db")
    assert upgraded.applied_migrations() == names
    row = upgraded.job("ftjob-old")
    assert row["eval"] is None
    assert "eval" not in job_object(row) and job_object(row)["id"] == "ftjob-old"
    upgraded.set_job("ftjob-old", eval={"file": "file-e", "schema": None, "limit": 5, "max_tokens": 256})
    assert job_object(upgraded.job("ftjob-old"))["eval"]["limit"] == 5
