"""Reinforcement fine-tuning jobs through the official ``openai`` SDK against a real ``tunewise serve`` on 127.0.0.1
(tiny model): the request checked as OpenAI's spec says, the job trained by GRPO, its events and checkpoints."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import openai
import pytest

from tunewise.serve.testing import (
    SYSTEM,
    all_events,
    running_server,
    validate_schema,
    wait_for,
    write_receipts,
)

SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "openai-openapi.yaml"
GRADER = {"type": "string_check", "name": "exact", "operation": "eq", "input": "{{ sample.output_text }}",
          "reference": "{{ item.reference_answer }}"}


@pytest.fixture(scope="module")
def server():
    with running_server(env={"TUNEWISE_RFT_MAX_COMPLETION_TOKENS": "8"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return server.client()


@pytest.fixture(scope="module")
def files(client, tmp_path_factory):
    d = tmp_path_factory.mktemp("rft-serve")
    path = d / "rft.jsonl"
    items = [("Coffee", 4.5), ("Bagel", 3.0), ("Tea", 2.75), ("Muffin", 2.25), ("Latte", 5.1), ("Scone", 2.9),
             ("Water", 1.0), ("Cookie", 1.75), ("Soup", 6.5), ("Salad", 8.25)]
    path.write_text("".join(json.dumps({
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{name} ${price:.2f}"}],
        "reference_answer": json.dumps({"items": [{"name": name, "price": price}]})}) + "\n" for name, price in items))
    with open(path, "rb") as f:
        rft = client.files.create(file=f, purpose="fine-tune")
    with open(write_receipts(d / "chat.jsonl"), "rb") as f:
        chat = client.files.create(file=f, purpose="fine-tune")
    return rft.id, chat.id


def test_a_reinforcement_job_trains_with_its_reward_in_events_and_checkpoints(client, files):
    job = client.fine_tuning.jobs.create(
        training_file=files[0], model="gpt-4o-mini-2024-07-18", seed=3,
        method={"type": "reinforcement", "reinforcement": {"grader": GRADER, "hyperparameters": {
            "n_epochs": 1, "batch_size": 10, "compute_multiplier": 0.5, "reasoning_effort": "low"}}})
    assert job.method.type == "reinforcement"
    hyper = job.method.reinforcement.hyperparameters
    assert hyper.compute_multiplier == 0.5 and hyper.reasoning_effort == "low" and hyper.eval_interval == "auto"
    assert job.method.reinforcement.grader.type == "string_check"
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    hyper = done.method.reinforcement.hyperparameters
    # auto resolved in the echo as the job used it: eval_interval one epoch (10 prompts / 10), 1 eval sample.
    assert (hyper.n_epochs, hyper.batch_size, hyper.learning_rate_multiplier) == (1, 10, 1.0)
    assert (hyper.compute_multiplier, hyper.eval_interval, hyper.eval_samples) == (0.5, 1, 1)
    assert done.method.reinforcement.grader.reference == "{{ item.reference_answer }}"
    if SPEC.is_file():
        validate_schema(SPEC, "FineTuningJob", done.model_dump(mode="json", exclude_unset=True))
    events = all_events(client, job.id)
    metrics = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == [1]
    assert {"train_reward_mean", "train_reward_std", "train_kl", "train_completion_length"} <= set(metrics[-1].data)
    assert any("GRPO (2 completions per prompt" in e.message for e in events)
    assert 1 <= metrics[-1].data["train_completion_length"] <= 8  # the server's rft_max_completion_tokens
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in checkpoints] == [1]
    (result,) = done.result_files
    header = client.files.content(result).text.splitlines()[0].split(",")
    assert "train_reward_mean" in header and "valid_reward_mean" in header


def test_chat_answers_for_a_reinforcement_job_fail_it_saying_why(client, files):
    job = client.fine_tuning.jobs.create(training_file=files[1], model="gpt-4o-mini-2024-07-18",
                                         method={"type": "reinforcement", "reinforcement": {"grader": GRADER}})
    done = wait_for(client, job.id)
    assert done.status == "failed"
    assert done.error.code in ("rft_final_assistant_message", "rft_missing_item_field"), done.error


PYTHON = {"type": "python", "name": "p", "source": "def grade(sample, item):\n    return 1.0\n"}
JUDGE = {"type": "score_model", "name": "judge", "model": "gpt-4o-mini",
         "input": [{"role": "user", "content": "Score how well this reads a receipt: {{ sample.output_text }}"}]}


def _keys(server) -> list[dict]:
    db = sqlite3.connect(server.data_dir / "tunewise.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT id, project, revoked_at FROM keys")]
    finally:
        db.close()


def test_a_score_model_grader_trains_with_this_server_as_its_judge(server, client, files):
    before = _keys(server)
    job = client.fine_tuning.jobs.create(
        training_file=files[0], model="gpt-4o-mini-2024-07-18", seed=3,
        method={"type": "reinforcement", "reinforcement": {"grader": JUDGE, "hyperparameters": {
            "n_epochs": 1, "batch_size": 10, "compute_multiplier": 0.5}}})
    assert job.method.reinforcement.grader.type == "score_model"
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    events = all_events(client, job.id)
    (metrics,) = [e for e in events if e.type == "metrics"]
    # The reward is the judge's (the tiny model's scores are noise; only the plumbing is asserted): of the step's
    # 20 completions, those the judge's answer could not be read for are counted, not scored 0.
    errors = metrics.data["train_grader_errors"]
    assert 0 <= errors < 20 and 0.0 <= metrics.data["train_reward_mean"] <= 1.0
    assert (errors > 0) == any("no judgement" in e.message for e in events)
    # The judge is this server, asked through its /v1/chat/completions: its answers are in the eval cache.
    from tunewise.eval.graders.run import read_score

    cache = sqlite3.connect(server.home / "eval-cache.sqlite")
    try:
        answers = [json.loads(r[0])["answer"] for r in cache.execute(
            "SELECT response FROM completions WHERE base_url = ?", (server.base_url,))]
    finally:
        cache.close()
    scores = [x for x in (read_score(a, 0.0, 1.0)[0] for a in answers) if x is not None]
    assert scores and min(scores) <= metrics.data["train_reward_mean"] <= max(scores), (scores, metrics.data)
    # A key of the job's project was made for those calls and is revoked now that the job has ended.
    made = [k for k in _keys(server) if k["id"] not in {b["id"] for b in before}]
    assert len(made) == 1 and made[0]["project"] == "default" and made[0]["revoked_at"] is not None
    assert not (server.data_dir / "jobs" / job.id / "judge-key.json").exists()


def test_tunewise_train_asks_the_judge_at_grader_base_url(server, tmp_path, capsys, monkeypatch):
    from helpers import run_cli

    grader = tmp_path / "judge.json"
    grader.write_text(json.dumps(JUDGE))
    monkeypatch.setenv("TW_TEST_JUDGE_KEY", server.api_key)
    code, out, err = run_cli(capsys, "train", str(_rft_file(tmp_path / "rft.jsonl")), "--model", "tunewise-tiny",
                             "--method", "reinforcement", "--grader", str(grader), "--grader-base-url",
                             server.base_url, "--grader-api-key-env", "TW_TEST_JUDGE_KEY", "--grader-concurrency", "4",
                             "--epochs", "1", "--batch-size", "10", "--compute-multiplier", "0.5",
                             "--max-completion-tokens", "4", "--seed", "1", "--output", str(tmp_path / "out"),
                             "--num-threads", "1")
    assert code == 0, err
    assert "final train_reward_mean" in out
    with open(tmp_path / "out" / "metrics.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert float(row["train_grader_errors"]) < 20 and 0.0 <= float(row["train_reward_mean"]) <= 1.0
    assert server.api_key not in (tmp_path / "out" / "config.json").read_text()  # the key is not written down


def test_a_judge_that_refuses_fails_the_job_saying_why(server, files, tmp_path):
    # A server whose judge is the module's server, asked with a key that server does not accept.
    env = {"TUNEWISE_RFT_MAX_COMPLETION_TOKENS": "4", "TUNEWISE_GRADER_BASE_URL": server.base_url,
           "TUNEWISE_GRADER_API_KEY_ENV": "TW_JUDGE_KEY", "TW_JUDGE_KEY": "sk-not-a-key"}
    with running_server(env=env) as other:
        client = other.client()
        with open(_rft_file(tmp_path / "rft.jsonl"), "rb") as f:
            file = client.files.create(file=f, purpose="fine-tune")
        job = client.fine_tuning.jobs.create(
            training_file=file.id, model="gpt-4o-mini-2024-07-18", seed=3,
            method={"type": "reinforcement", "reinforcement": {"grader": JUDGE, "hyperparameters": {
                "n_epochs": 1, "batch_size": 10, "compute_multiplier": 0.5}}})
        done = wait_for(client, job.id)
        assert done.status == "failed"
        assert done.error.code == "grader_failed", done.error
        assert "model_grader_server_error" in done.error.message and "AuthenticationError" in done.error.message
        assert not [e for e in all_events(client, job.id) if e.type == "metrics"]  # no step trained on a made-up 0


@pytest.mark.parametrize("reinforcement, param, words", [
    ({}, "method.reinforcement.grader", "grader is required"),
    ({"grader": {"type": "string_check", "name": "x", "operation": "equals", "input": "a", "reference": "b"}},
     "method.reinforcement.grader.operation", "operation"),
    ({"grader": {"type": "label_model", "name": "x"}}, "method.reinforcement.grader.type", "label_model"),
    ({"grader": PYTHON}, "method.reinforcement.grader.type", "python graders are disabled"),
    ({"grader": GRADER, "hyperparameters": {"compute_multiplier": 11}}, "hyperparameters.compute_multiplier",
     "(0, 10]"),
    ({"grader": GRADER, "hyperparameters": {"eval_samples": 0}}, "hyperparameters.eval_samples", "1 to 64"),
    ({"grader": GRADER, "hyperparameters": {"reasoning_effort": "max"}}, "hyperparameters.reasoning_effort",
     "default, low, medium, high"),
    ({"grader": GRADER, "hyperparameters": {"beta": 0.1}}, "hyperparameters.beta", "compute_multiplier"),
])
def test_bad_reinforcement_requests_are_400s_in_openais_shape(client, files, reinforcement, param, words):
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(training_file=files[0], model="gpt-4o-mini-2024-07-18",
                                       method={"type": "reinforcement", "reinforcement": reinforcement})
    assert err.value.status_code == 400
    body = err.value.body
    assert body["param"] == param and words in body["message"], body


# --- `tunewise jobs create --method reinforcement` and the library client -----------------------------------


def _rft_file(path: Path, field: str = "reference_answer") -> Path:
    items = [("Coffee", 4.5), ("Bagel", 3.0), ("Tea", 2.75), ("Muffin", 2.25), ("Latte", 5.1), ("Scone", 2.9),
             ("Water", 1.0), ("Cookie", 1.75), ("Soup", 6.5), ("Salad", 8.25)]
    path.write_text("".join(json.dumps({
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{name} ${price:.2f}"}],
        field: json.dumps({"items": [{"name": name, "price": price}]})}) + "\n" for name, price in items))
    return path


@pytest.fixture
def cli_env(server, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)


def _file_ids(client) -> set[str]:
    return {f.id for f in client.files.list()}


def test_jobs_create_method_reinforcement_validates_says_the_billing_and_creates(server, client, cli_env, tmp_path,
                                                                                capsys):
    from helpers import run_cli
    from tunewise import cost

    grader = tmp_path / "grader.json"
    grader.write_text(json.dumps(GRADER))
    code, out, err = run_cli(capsys, "jobs", "create", str(_rft_file(tmp_path / "rft.jsonl")), "--model",
                             "gpt-4o-mini-2024-07-18", "--method", "reinforcement", "--grader", str(grader),
                             "--n-epochs", "1", "--batch-size", "10", "--compute-multiplier", "0.5",
                             "--eval-interval", "3", "--eval-samples", "2", "--reasoning-effort", "low", "--json")
    assert code == 0, err
    assert "10 examples, no errors" in err  # validated locally as reinforcement prompts against the grader
    assert "estimate: not estimated: billed by training time" in err and cost.RFT_BILLING in err
    assert f"{server.base_url} is a local service: training costs nothing" in err
    job = json.loads(out)  # --json: stdout holds the job alone
    assert job["method"]["type"] == "reinforcement"  # (the SDK's dump adds "dpo": None, "supervised": None)
    assert job["method"]["reinforcement"] == {"grader": GRADER, "hyperparameters": {"n_epochs": 1, "batch_size": 10, "learning_rate_multiplier": "auto", "compute_multiplier": 0.5,
        "eval_interval": 3, "eval_samples": 2, "reasoning_effort": "low"}}
    assert job["training_file"] in _file_ids(client)
    done = wait_for(client, job["id"])  # one step of 10 prompts x 2 completions of up to 8 tokens
    assert done.status == "succeeded", done.error
    hyper = done.method.reinforcement.hyperparameters
    assert (hyper.learning_rate_multiplier, hyper.eval_interval, hyper.eval_samples) == (1.0, 3, 2)


@pytest.mark.parametrize("args, code, words", [
    (["--grader", "GRADER"], 2, "--grader is for --method reinforcement"),
    (["--eval-samples", "2"], 2, "--eval-samples is for --method reinforcement"),
    (["--method", "dpo", "--compute-multiplier", "1"], 2, "--compute-multiplier is for --method reinforcement"),
    (["--method", "reinforcement"], 2, "--method reinforcement needs --grader"),
    (["--method", "reinforcement", "--grader", "GRADER", "--beta", "0.1"], 2, "Reinforcement fine-tuning has no beta"),
    (["--method", "reinforcement", "--grader", "GRADER", "--compute-multiplier", "11"], 2,
     "--compute-multiplier: Invalid compute_multiplier 11.0: expected 'auto' or a number in (0, 10]"),
    (["--method", "reinforcement", "--grader", "GRADER", "--eval-samples", "65"], 2, "--eval-samples: Invalid"),
    (["--method", "reinforcement", "--grader", "GRADER", "--eval-interval", "x"], 2, "Expected a number or 'auto'"),
    (["--method", "reinforcement", "--grader", "BAD"], 2, "--grader: "),
    (["--method", "reinforcement", "--grader", "OTHER_FIELD"], 1, "rft_missing_item_field"),
    (["--method", "reinforcement", "--grader", "GRADER", "CHAT"], 1, "rft_final_assistant_message"),
])
def test_jobs_create_refuses_bad_reinforcement_settings_before_any_upload(client, cli_env, tmp_path, capsys, args,
                                                                          code, words):
    from helpers import run_cli

    files = {"GRADER": GRADER, "BAD": dict(GRADER, operation="equals"),
             "JUDGE": {"type": "score_model", "name": "judge", "model": "gpt-4o-mini",
                       "input": [{"role": "user", "content": "Score {{ sample.output_text }}"}]},
             "OTHER_FIELD": dict(GRADER, reference="{{ item.expected }}")}
    for name, grader in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(grader))
    data = _rft_file(tmp_path / "rft.jsonl")
    if "CHAT" in args:
        args, data = [a for a in args if a != "CHAT"], write_receipts(tmp_path / "chat.jsonl")
    args = [str(tmp_path / f"{a}.json") if a in files else a for a in args]
    before = _file_ids(client)
    got, _, err = run_cli(capsys, "jobs", "create", str(data), "--model", "gpt-4o-mini-2024-07-18", *args)
    assert (got, err.count("\n")) == (code, 1), err  # one line, no traceback
    assert words in err and "grader.operation" in err if "BAD" in str(args) else words in err, err
    assert _file_ids(client) == before  # refused before anything was uploaded


def test_the_library_client_plans_and_creates_a_reinforcement_job(server, client, tmp_path):
    from tunewise import cost
    from tunewise.client import Client
    from tunewise.errors import UsageError

    lib = Client(server.base_url, server.api_key)
    data = _rft_file(tmp_path / "rft.jsonl")
    plan = lib.plan_job(str(data), "gpt-4o-mini-2024-07-18", method="reinforcement", grader=GRADER)
    assert plan.report.stats.n_examples == 10 and plan.estimate is None and plan.billing == cost.RFT_BILLING
    assert plan.to_dict()["grader"] == GRADER and plan.to_dict()["method"] == "reinforcement"
    with pytest.raises(UsageError, match="compute_multiplier is a reinforcement"):
        lib.create_job(str(data), "gpt-4o-mini-2024-07-18", compute_multiplier=1)
    with pytest.raises(UsageError, match="a reinforcement job has none"):
        lib.create_job(str(data), "gpt-4o-mini-2024-07-18", method="reinforcement", grader=GRADER, beta=0.1)
    with pytest.raises(UsageError, match="needs a grader"):
        lib.create_job(str(data), "gpt-4o-mini-2024-07-18", method="reinforcement")
    # A grader the server refuses (python graders are off here): its 400, and the upload deleted again.
    from tunewise.client import DataError

    before = _file_ids(client)
    with pytest.raises(DataError, match="python graders are disabled") as err:
        lib.create_job(str(data), "gpt-4o-mini-2024-07-18", method="reinforcement", grader=PYTHON)
    assert err.value.param == "method.reinforcement.grader.type"
    assert _file_ids(client) == before
    job = lib.create_job(str(data), "gpt-4o-mini-2024-07-18", method="reinforcement", grader=GRADER,
                         n_epochs=1, compute_multiplier=0.5, eval_samples="auto", reasoning_effort="high")
    hyper = job["method"]["reinforcement"]["hyperparameters"]
    assert job["method"]["reinforcement"]["grader"] == GRADER
    assert (hyper["compute_multiplier"], hyper["eval_samples"], hyper["reasoning_effort"]) == (0.5, "auto", "high")
    client.fine_tuning.jobs.cancel(job["id"])  # only the request is under test here


def test_the_clients_ranges_are_the_servers():
    from tunewise.hyperparameters import REASONING_EFFORTS, REINFORCEMENT_RANGES
    from tunewise.serve.routes import jobs

    assert REINFORCEMENT_RANGES == {**jobs.HYPERPARAMETER_RANGES, **jobs.RFT_RANGES}
    assert REASONING_EFFORTS == jobs.REASONING_EFFORTS


def test_read_grader_takes_a_yaml_file_and_a_score_model_grader(tmp_path):
    from tunewise.client import read_grader
    from tunewise.errors import UsageError

    path = tmp_path / "grader.yaml"
    path.write_text("type: string_check\nname: exact\noperation: eq\ninput: '{{ sample.output_text }}'\n"
                    "reference: '{{ item.reference_answer }}'\n")
    assert read_grader(path) == GRADER
    assert read_grader(JUDGE) == JUDGE  # OpenAI and tunewise serve both run model graders
    with pytest.raises(UsageError, match="label_model"):
        read_grader({"type": "label_model", "name": "l", "model": "gpt-4o-mini", "input": JUDGE["input"],
                     "labels": ["a", "b"], "passing_labels": ["a"]})
    two = tmp_path / "two.json"
    two.write_text(json.dumps([GRADER, dict(GRADER, name="other")]))
    with pytest.raises(UsageError, match="holds 2 graders"):
        read_grader(two)
