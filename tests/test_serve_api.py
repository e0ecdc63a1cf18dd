"""The service through the official ``openai`` SDK against a real ``tunewise serve`` on 127.0.0.1.

One server (tiny model, real worker, real training) serves this module; the tests run in file order and share
the finished job of the guide's snippet.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import openai
import pytest
from openai import OpenAI

from tunewise.serve.testing import (
    all_events,
    running_server,
    validate_schema,
    wait_for,
    wait_for_step,
    write_receipts,
)
from tunewise.train import METRICS_HEADER

SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "openai-openapi.yaml"


@pytest.fixture(scope="module")
def server():
    # The worker looks at cancel/pause flags every 50 ms, so pause and cancel land mid-job even when the
    # tiny model trains hundreds of steps a second on an idle machine.
    with running_server(env={"TUNEWISE_WORKER_POLL_S": "0.05"}) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server) -> OpenAI:
    return server.client()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_receipts(tmp_path_factory.mktemp("data") / "training_data.jsonl")


@pytest.fixture(scope="module")
def guide_job(server, data, tmp_path_factory):
    """The guide's snippet, verbatim but for base_url/api_key, which come from the environment."""
    workdir = tmp_path_factory.mktemp("guide")
    (workdir / "training_data.jsonl").write_bytes(data.read_bytes())
    saved = {k: os.environ.get(k) for k in ("OPENAI_BASE_URL", "OPENAI_API_KEY")}
    cwd = os.getcwd()
    os.environ["OPENAI_BASE_URL"], os.environ["OPENAI_API_KEY"] = server.base_url, server.api_key
    os.chdir(workdir)
    try:
        # --- the guide, "Starting a Fine-Tuning Job" ---
        from openai import OpenAI
        client = OpenAI()
        # Upload training data
        with open("training_data.jsonl", "rb") as f:
            file = client.files.create(file=f, purpose="fine-tune")
        # Create fine-tuning job
        job = client.fine_tuning.jobs.create(
            training_file=file.id,
            model="gpt-4o-mini-2024-07-18",
            hyperparameters={
                "n_epochs": 3,
                "batch_size": 4,
                "learning_rate_multiplier": 2,
            },
        )
        print(f"Job ID: {job.id}")
        # --- end of the guide's code ---
    finally:
        os.chdir(cwd)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    assert job.status == "validating_files" and job.model == "gpt-4o-mini-2024-07-18"
    return wait_for(server.client(), job.id)


def test_guide_snippet_trains_a_model(guide_job, client):
    job = guide_job
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model.startswith("ft:gpt-4o-mini-2024-07-18:default::")
    assert job.hyperparameters.n_epochs == 3 and job.hyperparameters.batch_size == 4
    assert job.hyperparameters.learning_rate_multiplier == 2
    assert job.trained_tokens > 0 and job.finished_at >= job.created_at and job.error is None
    assert job.method.type == "supervised"
    # The result file is the metrics CSV with OpenAI's header, one row per step (12 examples / 4 x 3 epochs).
    (result_id,) = job.result_files
    assert client.files.retrieve(result_id).purpose == "fine-tune-results"
    rows = client.files.content(result_id).text.strip().splitlines()
    assert rows[0].split(",") == METRICS_HEADER
    assert len(rows) == 1 + 9
    # The fine-tuned model is listed and answers.
    assert job.fine_tuned_model in [m.id for m in client.models.list()]
    assert client.models.retrieve(job.fine_tuned_model).owned_by == "user-default"
    reply = client.chat.completions.create(model=job.fine_tuned_model, max_tokens=8, temperature=0,
                                           messages=[{"role": "user", "content": "Coffee $4.50"}])
    assert reply.model == job.fine_tuned_model and reply.choices[0].finish_reason in ("stop", "length")
    assert reply.usage.prompt_tokens > 5 and 1 <= reply.usage.completion_tokens <= 8


def test_events_follow_openai_sequence(guide_job, client):
    events = all_events(client, guide_job.id)
    messages = [e.message for e in events]
    expected = ["Validating training file: ", "Files validated, moving job to queued state", "Fine-tuning job started",
                "Step 1/9: training loss=", "Checkpoint created at step 3", "New fine-tuned model created",
                "The job has successfully completed"]
    position = 0
    for prefix in expected:
        found = [i for i, m in enumerate(messages) if m.startswith(prefix) and i >= position]
        assert found, f"no event {prefix!r} after position {position}: {messages}"
        position = found[0]
    # Which local model really trained is said plainly.
    assert any("tunewise-tiny" in m and "gpt-4o-mini-2024-07-18" in m for m in messages)
    metrics = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == list(range(1, 10))
    for e in metrics:
        assert {"step", "train_loss", "train_mean_token_accuracy", "total_steps"} <= set(e.data)
        assert e.data["train_loss"] > 0
    # Newest first, and `after`/`limit` page through all of them without gaps or repeats.
    newest = client.fine_tuning.jobs.list_events(guide_job.id, limit=1).data[0]
    assert newest.message == "The job has successfully completed"
    seen, after = [], None
    while True:
        page = client.fine_tuning.jobs.list_events(guide_job.id, limit=4, **({"after": after} if after else {}))
        seen += [e.id for e in page.data]
        if not page.has_more:
            break
        after = page.data[-1].id
    assert seen == [e.id for e in reversed(events)]


def test_checkpoints(guide_job, client):
    ckpts = client.fine_tuning.jobs.checkpoints.list(guide_job.id).data
    assert [c.step_number for c in ckpts] == [9, 6, 3]  # one per epoch, newest first
    for c in ckpts:
        assert c.fine_tuned_model_checkpoint == f"{guide_job.fine_tuned_model}:ckpt-step-{c.step_number}"
        assert c.fine_tuning_job_id == guide_job.id and c.metrics.step == c.step_number
        assert c.metrics.train_loss > 0
    page = client.fine_tuning.jobs.checkpoints.list(guide_job.id, limit=1, after=ckpts[0].id)
    assert [c.id for c in page.data] == [ckpts[1].id] and page.has_more
    # A checkpoint is a model too.
    oldest = ckpts[-1].fine_tuned_model_checkpoint
    assert client.models.retrieve(oldest).id == oldest
    reply = client.chat.completions.create(model=oldest, max_tokens=4, messages=[{"role": "user", "content": "Tea"}])
    assert reply.choices[0].message.role == "assistant"


def test_file_upload_list_pagination_and_delete(client, data):
    created = [client.files.create(file=(f"part{i}.jsonl", data.read_bytes()), purpose="fine-tune")
               for i in range(3)]
    for f in created:
        assert f.bytes == data.stat().st_size and f.status == "processed" and f.filename.startswith("part")
    newest_first = [f.id for f in client.files.list(purpose="fine-tune", limit=2)]  # auto-pages
    assert newest_first[:3] == [f.id for f in reversed(created)]
    page = client.files.list(purpose="fine-tune", limit=2, order="asc")
    assert page.has_more and len(page.data) == 2
    assert client.files.content(created[0].id).content == data.read_bytes()
    assert client.files.delete(created[1].id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created[1].id)
    assert created[1].id not in [f.id for f in client.files.list()]


def test_invalid_upload_names_the_lines(client, tmp_path):
    bad = write_receipts(tmp_path / "bad.jsonl")
    lines = bad.read_text().splitlines()
    lines[2] = '{"messages": [{"role": "user", "content": "no answer"'
    bad.write_text("\n".join(lines) + "\n")
    before = len(client.files.list().data)
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=bad.open("rb"), purpose="fine-tune")
    assert "line 3" in err.value.message and err.value.param == "file"
    assert len(client.files.list().data) == before  # nothing stored


def test_job_list_pagination_and_metadata(client, data):
    file = client.files.create(file=data.open("rb"), purpose="fine-tune")
    jobs = []
    for color in ("red", "blue"):
        job = client.fine_tuning.jobs.create(training_file=file.id, model="gpt-4o-mini", metadata={"color": color},
                                             suffix=color, seed=7)
        jobs.append(job)
        client.fine_tuning.jobs.cancel(job.id)  # keep the worker free for the other tests
    assert jobs[0].metadata == {"color": "red"} and jobs[0].seed == 7 and jobs[0].user_provided_suffix == "red"
    red = client.fine_tuning.jobs.list(metadata={"color": "red"}).data
    assert [j.id for j in red] == [jobs[0].id]
    first = client.fine_tuning.jobs.list(limit=1)
    assert first.data[0].id == jobs[1].id and first.has_more
    second = client.fine_tuning.jobs.list(limit=1, after=first.data[0].id)
    assert second.data[0].id == jobs[0].id


def test_cancel_running_job(client, data):
    file = client.files.create(file=data.open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=file.id, model="gpt-4o-mini",
                                         hyperparameters={"n_epochs": 25, "batch_size": 1})
    wait_for_step(client, job.id, 2)
    running = client.fine_tuning.jobs.retrieve(job.id)
    assert running.status == "running" and running.trained_tokens > 0
    assert running.estimated_finish >= running.created_at
    assert running.hyperparameters.n_epochs == 25 and running.hyperparameters.learning_rate_multiplier == 1.0
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(job.id)
    final = wait_for(client, job.id)
    assert final.status == "cancelled" and final.fine_tuned_model is None
    assert "Fine-tuning job cancelled" in [e.message for e in all_events(client, job.id)]


def test_failed_job_reports_error(data, tmp_path):
    # No worker runs until the file is deleted, so it is gone before any worker could read it (a job whose
    # worker had read it would keep it).
    with running_server(tmp_path / "server", env={"TUNEWISE_WORKER_POLL_S": "0.05"}, worker=False) as server:
        client = server.client()
        file = client.files.create(file=data.open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(training_file=file.id, model="gpt-4o-mini")
        client.files.delete(file.id)
        with server.worker():
            failed = wait_for(client, job.id)
            last = client.fine_tuning.jobs.list_events(job.id, limit=1).data[0]
    assert failed.status == "failed" and failed.fine_tuned_model is None and failed.finished_at
    assert failed.error.code == "invalid_file" and failed.error.param == "training_file"
    assert file.id in failed.error.message
    assert last.level == "error" and last.message == failed.error.message


def test_pause_and_resume(client, data, tmp_path):
    valid = write_receipts(tmp_path / "valid.jsonl")
    train_file = client.files.create(file=data.open("rb"), purpose="fine-tune")
    valid_file = client.files.create(file=valid.open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=train_file.id, validation_file=valid_file.id,
                                         model="gpt-4o-mini", hyperparameters={"n_epochs": 25, "batch_size": 1})
    reached = wait_for_step(client, job.id, 2)
    paused = client.fine_tuning.jobs.pause(job.id)
    assert paused.status == "paused"
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.pause(job.id)
    resumed = client.fine_tuning.jobs.resume(job.id)
    assert resumed.status == "queued"
    final = wait_for(client, job.id)
    assert final.status == "succeeded", final.error
    events = all_events(client, job.id)
    messages = [e.message for e in events]
    resume_at = messages.index("Fine-tuning job resumed from its last saved state")
    steps_before = [e.data["step"] for e in events[:resume_at] if e.type == "metrics"]
    steps_after = [e.data["step"] for e in events[resume_at:] if e.type == "metrics"]
    # Training went on from the step after the last one done before the pause, not from step 1.
    assert max(steps_before) >= reached and steps_after[0] == max(steps_before) + 1 and steps_after[-1] == 300
    assert any("valid_loss" in e.data for e in events if e.type == "metrics")


def test_error_classes(server, client, guide_job):
    with pytest.raises(openai.NotFoundError) as err:
        client.fine_tuning.jobs.retrieve("ftjob-doesnotexist")
    assert err.value.body["param"] == "fine_tuning_job_id"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("ft:gpt-4o-mini:default::nothere")
    with pytest.raises(openai.NotFoundError) as err:
        client.get("/no/such/route", cast_to=httpx.Response)
    assert err.value.code == "unknown_url"
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="sk-tw-wrong").models.list()
    with pytest.raises(openai.PermissionDeniedError):
        client.models.delete("tunewise-tiny")
    with pytest.raises(openai.ConflictError):
        client.fine_tuning.jobs.cancel(guide_job.id)
    with pytest.raises(openai.BadRequestError) as err:
        client.files.list(limit=0)
    assert err.value.param == "limit"
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(training_file=guide_job.training_file, model="gpt-4o-mini",
                                       method={"type": "reinforcement", "reinforcement": {}})
    assert "grader is required" in err.value.message and err.value.param == "method.reinforcement.grader"
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(training_file=guide_job.training_file, model="gpt-4o-mini",
                                       hyperparameters={"n_epochs": 26})
    assert err.value.param == "hyperparameters.n_epochs"
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(training_file=guide_job.training_file, model="gpt-4o-mini", suffix="a:b")
    assert err.value.param == "suffix"
    with pytest.raises(openai.BadRequestError) as err:
        client.fine_tuning.jobs.create(training_file="file-missing", model="gpt-4o-mini")
    assert err.value.param == "training_file"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "x"}],
                                       temperature=5)
    assert err.value.param == "temperature"
    # Content whose bytes vanished from disk is the server's fault: a 500 in the same shape.
    victim = client.files.create(file=("victim.jsonl", guide_job.training_file.encode() + b"\n"), purpose="user_data")
    next(server.data_dir.glob(f"files/{victim.id}.*")).unlink()
    with pytest.raises(openai.InternalServerError) as err:
        client.files.content(victim.id)
    assert err.value.body["type"] == "server_error"


def test_projects_are_isolated(server, client, guide_job):
    other = server.client(api_key=server.create_key("other"))
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.retrieve(guide_job.id)
    with pytest.raises(openai.NotFoundError):
        other.files.retrieve(guide_job.training_file)
    with pytest.raises(openai.NotFoundError):
        other.files.content(guide_job.training_file)
    with pytest.raises(openai.NotFoundError):
        other.models.retrieve(guide_job.fine_tuned_model)
    with pytest.raises(openai.NotFoundError):
        other.models.delete(guide_job.fine_tuned_model)
    with pytest.raises(openai.NotFoundError):
        other.chat.completions.create(model=guide_job.fine_tuned_model, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.NotFoundError):
        other.fine_tuning.jobs.list_events(guide_job.id)
    with pytest.raises(openai.BadRequestError):
        other.fine_tuning.jobs.create(training_file=guide_job.training_file, model="gpt-4o-mini")
    assert other.files.list().data == [] and other.fine_tuning.jobs.list().data == []
    assert guide_job.fine_tuned_model not in [m.id for m in other.models.list()]


def test_chat_streaming(client):
    stream = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}],
                                            max_tokens=6, n=2, seed=1, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" and c.model == "gpt-4o-mini" for c in chunks)
    texts, finish = {0: "", 1: ""}, {}
    for c in chunks:
        for choice in c.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finish[choice.index] = choice.finish_reason
    assert set(finish) == {0, 1} and all(texts.values())
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens <= 12 and usage.prompt_tokens > 0
    # Non-streaming with the same seed gives the same text (decoding is reproducible per request).
    again = client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "Hello"}],
                                           max_tokens=6, n=2, seed=1)
    assert [c.message.content for c in again.choices] == [texts[0], texts[1]]


def test_chat_json_schema(client):
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}, "color": {"enum": ["red", "blue"]}},
              "required": ["ok", "color"], "additionalProperties": False}
    reply = client.chat.completions.create(
        model="gpt-4o-mini-2024-07-18", messages=[{"role": "user", "content": "Answer in JSON."}], max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}})
    answer = json.loads(reply.choices[0].message.content)
    assert set(answer) == {"ok", "color"} and isinstance(answer["ok"], bool) and answer["color"] in ("red", "blue")


def test_delete_fine_tuned_model(client, data):
    # A fresh short job, so that deleting its model does not disturb the other tests' model.
    file = client.files.create(file=data.open("rb"), purpose="fine-tune")
    job = wait_for(client, client.fine_tuning.jobs.create(
        training_file=file.id, model="gpt-4o-mini", suffix="gone",
        hyperparameters={"n_epochs": 1, "batch_size": 12}).id)
    assert job.status == "succeeded" and ":gone:" in job.fine_tuned_model
    assert client.models.delete(job.fine_tuned_model).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(job.fine_tuned_model)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=job.fine_tuned_model, messages=[{"role": "user", "content": "x"}])


def test_responses_match_openai_schemas(server, client, guide_job, data):
    if not SPEC.is_file():
        pytest.skip(f"OpenAI's OpenAPI spec not found at {SPEC} (../shared is absent)")
    raw = server.client().with_raw_response
    job_id = guide_job.id

    def body(response) -> dict:
        return json.loads(response.http_response.text)

    checks = {
        "OpenAIFile": raw.files.retrieve(guide_job.training_file),
        "ListFilesResponse": raw.files.list(),
        "FineTuningJob": raw.fine_tuning.jobs.retrieve(job_id),
        "ListPaginatedFineTuningJobsResponse": raw.fine_tuning.jobs.list(),
        "ListFineTuningJobEventsResponse": raw.fine_tuning.jobs.list_events(job_id, limit=100),
        "ListFineTuningJobCheckpointsResponse": raw.fine_tuning.jobs.checkpoints.list(job_id),
        "Model": raw.models.retrieve(guide_job.fine_tuned_model),
        "ListModelsResponse": raw.models.list(),
        "CreateChatCompletionResponse": raw.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Hi"}], max_tokens=3),
    }
    for name, response in checks.items():
        validate_schema(SPEC, name, body(response))
    deleted = client.files.create(file=data.open("rb"), purpose="fine-tune")
    validate_schema(SPEC, "DeleteFileResponse", body(raw.files.delete(deleted.id)))
    with httpx.Client(base_url=server.base_url, headers={"Authorization": f"Bearer {server.api_key}"}) as http:
        for response in (http.get("/files/file-nope"), http.get("/files", params={"limit": -1}),
                         http.get("/nowhere")):
            validate_schema(SPEC, "ErrorResponse", response.json())
        with http.stream("POST", "/chat/completions", json={
                "model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3,
                "stream": True, "stream_options": {"include_usage": True}}) as stream:
            lines = [line for line in stream.iter_lines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    for line in lines[:-1]:
        validate_schema(SPEC, "CreateChatCompletionStreamResponse", json.loads(line[6:]))
