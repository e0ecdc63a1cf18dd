"""Reinforcement fine-tuning jobs through the official ``openai`` SDK against a real ``tunewise serve`` on 127.0.0.1
(tiny model): the request checked as OpenAI's spec says, the job trained by GRPO, its events and checkpoints."""

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
