"""DPO jobs through the official ``openai`` SDK against a real ``tunewise serve`` on 127.0.0.1 (tiny model)."""

from __future__ import annotations

import json
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


def preference_file(path: Path) -> Path:
    with open(path, "w") as f:
        for i, (name, price) in enumerate([("Coffee", 4.5), ("Bagel", 3.0), ("Tea", 2.75), ("Muffin", 2.25),
                                           ("Latte", 5.1), ("Scone", 2.9), ("Water", 1.0), ("Cookie", 1.75),
                                           ("Soup", 6.5), ("Salad", 8.25)]):
            f.write(json.dumps({
                "input": {"messages": [{"role": "system", "content": SYSTEM},
                                       {"role": "user", "content": f"{name} ${price:.2f}"}],
                          "tools": [], "parallel_tool_calls": True},
                "preferred_output": [{"role": "assistant",
                                      "content": json.dumps({"items": [{"name": name, "price": price}]})}],
                "non_preferred_output": [{"role": "assistant", "content": json.dumps(
                    {"items": [{"name": name, "price": price * 10}] + ([{"name": "Total", "price": price}]
                                                                      if i % 2 else [])})}],
            }) + "\n")
    return path


@pytest.fixture(scope="module")
def server():
    with running_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return server.client()


@pytest.fixture(scope="module")
def files(client, tmp_path_factory):
    d = tmp_path_factory.mktemp("dpo-serve")
    with open(preference_file(d / "prefs.jsonl"), "rb") as f:
        prefs = client.files.create(file=f, purpose="fine-tune")
    with open(write_receipts(d / "chat.jsonl"), "rb") as f:
        chat = client.files.create(file=f, purpose="fine-tune")
    return prefs.id, chat.id


def test_a_dpo_job_trains_and_echoes_its_method(client, files):
    job = client.fine_tuning.jobs.create(
        training_file=files[0], model="gpt-4o-mini-2024-07-18", seed=7,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.2, "n_epochs": 1, "batch_size": 5}}})
    assert job.method.type == "dpo"
    assert job.method.dpo.hyperparameters.beta == 0.2 and job.method.dpo.hyperparameters.n_epochs == 1
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    assert done.method.type == "dpo" and done.method.dpo.hyperparameters.beta == 0.2
    assert done.method.dpo.hyperparameters.batch_size == 5
    assert done.method.dpo.hyperparameters.learning_rate_multiplier == 1.0
    if SPEC.is_file():
        validate_schema(SPEC, "FineTuningJob", done.model_dump(mode="json", exclude_unset=True))
    metrics = [e for e in all_events(client, job.id) if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == [1, 2]
    assert {"train_reward_accuracy", "train_reward_margin", "train_chosen_logps",
            "train_rejected_logps"} <= set(metrics[-1].data)
    (result,) = done.result_files
    header = client.files.content(result).text.splitlines()[0].split(",")
    assert header[:5] == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"]
    assert "train_reward_margin" in header


def test_chat_data_for_a_dpo_job_fails_it_saying_why(client, files):
    job = client.fine_tuning.jobs.create(training_file=files[1], model="gpt-4o-mini-2024-07-18",
                                         method={"type": "dpo"})
    done = wait_for(client, job.id)
    assert done.status == "failed"
    assert done.error.code == "chat_format_for_preference" and "preference format" in done.error.message


@pytest.mark.parametrize("method, param, words", [
    ({"type": "rlhf"}, "method.type", "Unknown fine-tuning method type"),
    ({"type": "dpo", "dpo": {"hyperparameters": {"beta": 0}}}, "hyperparameters.beta", "(0, 2]"),
    ({"type": "dpo", "dpo": {"hyperparameters": {"beta": 2.5}}}, "hyperparameters.beta", "(0, 2]"),
    ({"type": "dpo", "dpo": {"hyperparameters": {"gamma": 1}}}, "hyperparameters.gamma", "beta"),
    ({"type": "dpo", "dpo": []}, "method.dpo", "must be an object"),
])
def test_bad_methods_are_400s_in_openais_shape(client, files, method, param, words):
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(training_file=files[0], model="gpt-4o-mini-2024-07-18", method=method)
    assert err.value.status_code == 400
    body = err.value.body
    assert body["param"] == param and words in body["message"]


def test_jobs_create_method_dpo_validates_prices_and_creates(server, files, tmp_path, capsys, monkeypatch):
    from helpers import run_cli
    from tunewise import cost

    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    prefs = preference_file(tmp_path / "prefs.jsonl")
    code, out, err = run_cli(capsys, "files", "upload", str(prefs))
    assert code == 0, err  # checked locally as preference data
    code, out, err = run_cli(capsys, "jobs", "create", str(prefs), "--model", "gpt-4o-mini-2024-07-18",
                             "--method", "dpo", "--n-epochs", "1", "--batch-size", "10", "--json")
    assert code == 0, err
    expected = cost.estimate_training(prefs, "gpt-4o-mini", epochs=1, method="dpo")
    assert f"estimate: {expected.billed_tokens:,} billed tokens" in err and "10 examples, no errors" in err
    job = json.loads(out)
    assert job["method"]["type"] == "dpo" and job["method"]["dpo"] == {"hyperparameters": {
        "beta": "auto", "batch_size": 10, "learning_rate_multiplier": "auto", "n_epochs": 1}}
    code, _, err = run_cli(capsys, "jobs", "create", str(prefs), "--model", "gpt-4o-mini-2024-07-18",
                           "--beta", "0.3")
    assert code == 2 and "--method dpo" in err
    chat = write_receipts(tmp_path / "chat.jsonl")
    code, _, err = run_cli(capsys, "jobs", "create", str(chat), "--model", "gpt-4o-mini-2024-07-18",
                           "--method", "dpo")
    assert code == 1 and "chat_format_for_preference" in err
    done = wait_for(server.client(), job["id"])
    assert done.status == "succeeded", done.error
    assert done.method.dpo.hyperparameters.beta == 0.1  # auto, resolved in the echo as the job used it
