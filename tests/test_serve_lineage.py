"""Checkpoint permissions and continued fine-tuning through the official SDK against a real server on 127.0.0.1.

A model (or checkpoint) shared with another project is usable there by name (chat, the base of a job) and only
while shared; a job whose model is ``ft:...`` starts from that model's LoRA adapter, and the new model records its
lineage."""

from __future__ import annotations

import json
from pathlib import Path

import openai
import pytest
from safetensors.torch import load_file

from helpers import wandb_history
from tunewise.serve.store import Store
from tunewise.serve.testing import running_server, validate_schema, wait_for, write_receipts

SPEC = Path(__file__).resolve().parents[1].parent / "shared" / "reference" / "openai-openapi.yaml"
ONE_STEP = {"n_epochs": 1, "batch_size": 12}
THREE_STEPS = {"n_epochs": 1, "batch_size": 4}  # the first step's learning rate is 0 (warm-up): two that learn
HELLO = [{"role": "user", "content": "Coffee $4.50"}]


@pytest.fixture(scope="module")
def server():
    with running_server() as srv:
        yield srv


@pytest.fixture(scope="module")
def owner(server):
    return server.client()


@pytest.fixture(scope="module")
def guest(server):
    return server.client(api_key=server.create_key("team-b"))


@pytest.fixture(scope="module")
def stranger(server):
    return server.client(api_key=server.create_key("team-c"))


def _upload(client, tmp: Path) -> str:
    return client.files.create(file=write_receipts(tmp / "r.jsonl").open("rb"), purpose="fine-tune").id


@pytest.fixture(scope="module")
def trained(owner, tmp_path_factory):
    job = owner.fine_tuning.jobs.create(model="gpt-4o-mini", hyperparameters=THREE_STEPS,
                                        training_file=_upload(owner, tmp_path_factory.mktemp("a")))
    job = wait_for(owner, job.id)
    assert job.status == "succeeded", job.error
    ckpt = owner.fine_tuning.jobs.checkpoints.list(job.id).data[0].fine_tuned_model_checkpoint
    return job.fine_tuned_model, ckpt


def _adapter(server, name: str) -> dict:
    store = Store(server.data_dir)
    row = store.one("SELECT path FROM models WHERE id = ?", name) or store.one(
        "SELECT path FROM checkpoints WHERE model = ?", name)
    return load_file(str(Path(row["path"]) / "adapter_model.safetensors"))


def test_sharing_a_model_and_revoking_it(server, owner, guest, stranger, trained, tmp_path):
    model, ckpt = trained
    perms = owner.fine_tuning.checkpoints.permissions
    # Not shared: the other projects cannot see it, use it, or read or grant its permissions.
    for client in (guest, stranger):
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model=model, messages=HELLO, max_tokens=2)
        with pytest.raises(openai.NotFoundError):
            client.fine_tuning.checkpoints.permissions.retrieve(model)
        with pytest.raises(openai.NotFoundError):
            client.fine_tuning.checkpoints.permissions.create(model, project_ids=["team-c"])
    created = perms.create(model, project_ids=["team-b"])
    assert [(p.object, p.project_id) for p in created.data] == [("checkpoint.permission", "team-b")]
    if SPEC.is_file():
        validate_schema(SPEC, "FineTuningCheckpointPermission", created.data[0].model_dump())
    again = perms.create(model, project_ids=["team-b"])  # idempotent: the same permission
    assert again.data[0].id == created.data[0].id
    listed = perms.retrieve(model)
    assert [p.id for p in listed.data] == [created.data[0].id] and listed.has_more is False
    assert perms.retrieve(model, project_id="team-c").data == []
    if SPEC.is_file():
        validate_schema(SPEC, "ListFineTuningCheckpointPermissionResponse", listed.model_dump())
    # Shared: team-b chats with it; team-c still cannot; the model's checkpoints are not shared with it.
    answer = guest.chat.completions.create(model=model, messages=HELLO, max_tokens=2)
    assert answer.model == model and answer.choices[0].message.content is not None
    with pytest.raises(openai.NotFoundError):
        stranger.chat.completions.create(model=model, messages=HELLO, max_tokens=2)
    with pytest.raises(openai.NotFoundError):
        guest.chat.completions.create(model=ckpt, messages=HELLO, max_tokens=2)
    # team-b may use it as the base of a job; its own model is team-b's, named after the same base.
    job = guest.fine_tuning.jobs.create(model=model, hyperparameters=ONE_STEP, training_file=_upload(guest, tmp_path))
    with pytest.raises(openai.BadRequestError) as err:
        stranger.fine_tuning.jobs.create(model=model, training_file=_upload(stranger, tmp_path))
    assert err.value.body["param"] == "model" and err.value.code == "model_not_found"
    job = wait_for(guest, job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model.startswith("ft:gpt-4o-mini:team-b::")
    meta = json.loads((Path(Store(server.data_dir).one("SELECT path FROM models WHERE id = ?",
                                                       job.fine_tuned_model)["path"]) / "tunewise_model.json").read_text())
    assert meta["parent_model"] == model and meta["lineage"] == [model]
    # Revoked: team-b can no longer chat with it nor train from it (its own continued model stays its own).
    deleted = perms.delete(created.data[0].id, fine_tuned_model_checkpoint=model)
    assert (deleted.id, deleted.object, deleted.deleted) == (created.data[0].id, "checkpoint.permission", True)
    with pytest.raises(openai.NotFoundError):
        guest.chat.completions.create(model=model, messages=HELLO, max_tokens=2)
    with pytest.raises(openai.BadRequestError):
        guest.fine_tuning.jobs.create(model=model, training_file=_upload(guest, tmp_path))
    assert guest.chat.completions.create(model=job.fine_tuned_model, messages=HELLO, max_tokens=2).model
    with pytest.raises(openai.NotFoundError):
        perms.delete(created.data[0].id, fine_tuned_model_checkpoint=model)
    assert perms.retrieve(model).data == []


def test_a_shared_checkpoint_is_usable_alone(owner, guest, trained):
    model, ckpt = trained
    grant = owner.fine_tuning.checkpoints.permissions.create(ckpt, project_ids=["team-b"]).data[0]
    assert guest.chat.completions.create(model=ckpt, messages=HELLO, max_tokens=2).model == ckpt
    with pytest.raises(openai.NotFoundError):  # the checkpoint, not the model
        guest.chat.completions.create(model=model, messages=HELLO, max_tokens=2)
    owner.fine_tuning.checkpoints.permissions.delete(grant.id, fine_tuned_model_checkpoint=ckpt)
    with pytest.raises(openai.NotFoundError):
        guest.chat.completions.create(model=ckpt, messages=HELLO, max_tokens=2)


def test_permission_requests_are_checked(owner, trained):
    model, _ = trained
    perms = owner.fine_tuning.checkpoints.permissions
    for ids in ([], ["default"], ["bad\nname"]):
        with pytest.raises(openai.BadRequestError) as err:
            perms.create(model, project_ids=ids)
        assert err.value.body["param"] == "project_ids"
    with pytest.raises(openai.NotFoundError):
        perms.create("ft:gpt-4o-mini:default::nosuchid", project_ids=["team-b"])


def test_continued_fine_tuning_starts_from_the_adapter(server, owner, trained, tmp_path):
    model, _ = trained
    parent = _adapter(server, model)
    # A learning rate so small that training barely moves the weights: what the job ends with is where it began.
    job = owner.fine_tuning.jobs.create(model=model, training_file=_upload(owner, tmp_path), suffix="more",
                                        hyperparameters={**THREE_STEPS, "learning_rate_multiplier": 1e-6})
    assert job.model == model
    job = wait_for(owner, job.id)
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model.startswith("ft:gpt-4o-mini:default:more:")
    child = _adapter(server, job.fine_tuned_model)
    assert child.keys() == parent.keys()
    lora_b = [k for k in parent if "lora_B" in k]
    # Trained: a fresh adapter's B is zero, so starting from one would fail the comparison below by this much.
    assert lora_b and max(float(parent[k].abs().max()) for k in lora_b) > 1e-3
    for k in parent:
        assert (child[k] - parent[k]).abs().max() < 1e-4, k
    events = [e.message for e in owner.fine_tuning.jobs.list_events(job.id, limit=100).data]
    assert any(f"Continuing the fine-tuned model '{model}'" in m for m in events)
    store = Store(server.data_dir)
    row = store.one("SELECT parent, base FROM models WHERE id = ?", job.fine_tuned_model)
    assert row == {"parent": model, "base": "gpt-4o-mini"}
    assert owner.chat.completions.create(model=job.fine_tuned_model, messages=HELLO, max_tokens=2).model


def test_integrations_are_checked_echoed_and_written(server, owner, tmp_path):
    pytest.importorskip("tensorboard", reason="the tensorboard integration needs tunewise[integrations]")
    pytest.importorskip("wandb", reason="the wandb integration needs tunewise[integrations]")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    training_file = _upload(owner, tmp_path)
    with pytest.raises(openai.BadRequestError) as err:
        owner.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file,
                                      integrations=[{"type": "comet"}])
    assert err.value.body["param"] == "integrations[0].type"
    with pytest.raises(openai.BadRequestError) as err:
        owner.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=training_file,
                                      integrations=[{"type": "wandb", "wandb": {}}])
    assert err.value.body["param"] == "integrations[0].wandb.project"
    job = owner.fine_tuning.jobs.create(
        model="gpt-4o-mini", training_file=training_file, hyperparameters=THREE_STEPS,
        integrations=[{"type": "wandb", "wandb": {"project": "receipts", "tags": ["smoke"]}},
                      {"type": "tensorboard"}])
    assert job.integrations[0].type == "wandb" and job.integrations[0].wandb.project == "receipts"
    assert job.integrations[0].wandb.tags == ["smoke"]
    assert job.model_dump()["integrations"][1]["type"] == "tensorboard"
    job = wait_for(owner, job.id)
    assert job.status == "succeeded", job.error
    assert [i.type for i in owner.fine_tuning.jobs.retrieve(job.id).integrations] == ["wandb", "tensorboard"]
    out = Path(Store(server.data_dir).job(job.id)["output_dir"])
    events = [e for e in owner.fine_tuning.jobs.list_events(job.id, limit=100).data if e.type == "metrics"]
    losses = {e.data["step"]: e.data["train_loss"] for e in events}
    # TensorBoard's own reader: one train_loss scalar per step, the values the job's events report.
    acc = EventAccumulator(str(out / "tensorboard"))
    acc.Reload()
    scalars = acc.Scalars("train_loss")
    assert [s.step for s in scalars] == sorted(losses)
    assert all(abs(s.value - losses[s.step]) < 1e-5 for s in scalars)
    # The offline W&B run is in the job's directory: its run record names the project, its history the metrics.
    runs = list((out / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1, list((out / "wandb").iterdir())
    history, records = wandb_history(runs[0])
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.project == "receipts" and list(run.tags) == ["smoke"]
    assert {h["_step"]: h["train_loss"] for h in history} == pytest.approx(losses, abs=1e-5)
