"""The legacy models' prompt/completion format (babbage-002, davinci-002): validated, counted and priced for
the models that take it, refused in one clear error for the others, converted by ``--fix``, and trained by
the local trainer and the service as plain causal LM on the completion tokens."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import run_cli
from tunewise import cost, models
from tunewise.catalog import PROMPT_COMPLETION, load_catalog
from tunewise.client import Client
from tunewise.data import DataError, validate
from tunewise.data.convert import chat_to_prompt_completion, convert
from tunewise.errors import Cancelled, UsageError
from tunewise.serve.testing import running_server, wait_for, write_receipts
from tunewise.tokens import reference_encoding
from tunewise.train import TrainConfig, train
from tunewise.train.render import IGNORE, Renderer

TINY = models.TINY_MODEL
NAMES = ["Coffee", "Bagel", "Green Tea", "Muffin", "Water", "Soup", "Salad", "Cookie"]


def write_pc(path: Path, n: int, seed: int = 0) -> Path:
    """Receipts as legacy prompt/completion examples: the receipt text in, JSON out."""
    rng = random.Random(seed)
    with open(path, "w") as f:
        for _ in range(n):
            items = [(rng.choice(NAMES), round(rng.uniform(1, 9), 2)) for _ in range(rng.randint(1, 3))]
            prompt = "Receipt: " + ", ".join(f"{a} - ${b:.2f}" for a, b in items) + "\nJSON:"
            completion = " " + json.dumps({"items": [{"name": a, "price": b} for a, b in items]})
            f.write(json.dumps({"prompt": prompt, "completion": completion}) + "\n")
    return path


def lines_of(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


@pytest.fixture(scope="module")
def pc(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("pc")
    return write_pc(d / "train.jsonl", 16, seed=1), write_pc(d / "valid.jsonl", 6, seed=2)


# -- the catalog ------------------------------------------------------------------------------------------
def test_catalog_names_the_format_each_model_takes(tmp_path):
    catalog = load_catalog()
    formats = {name: info.training_format for name, info in catalog.models.items()}
    assert formats.pop("babbage-002") == formats.pop("davinci-002") == PROMPT_COMPLETION
    assert set(formats.values()) == {"chat"}
    bad = tmp_path / "p.toml"
    bad.write_text('[models."davinci-002"]\ntraining_format = "completions"\n')
    with pytest.raises(UsageError, match="training_format must be one of chat, prompt_completion"):
        load_catalog(bad)


# -- validation and counting ------------------------------------------------------------------------------
def test_prompt_completion_file_is_counted_as_openai_bills_it(pc):
    report = validate(pc[0], model="davinci-002")
    assert report.ok and [f.code for f in report.findings] == ["small_dataset"]
    enc = reference_encoding("cl100k_base")  # an independent count: tiktoken itself, built offline
    rows = lines_of(pc[0])
    expected = [len(enc.encode_ordinary(r["prompt"])) + len(enc.encode_ordinary(r["completion"])) for r in rows]
    s = report.stats
    assert s.data_format == PROMPT_COMPLETION and s.n_examples == 16
    assert s.example_tokens == expected and s.billed_tokens_per_epoch == sum(expected)
    assert s.assistant_tokens_per_example.mean == pytest.approx(
        sum(len(enc.encode_ordinary(r["completion"])) for r in rows) / 16)
    # Read by two worker processes, the file gives the same report.
    assert validate(pc[0], model="davinci-002", workers=2).to_dict() == report.to_dict()


def test_chat_file_for_a_legacy_model_is_one_error_with_the_conversion(tmp_path):
    chat = write_receipts(tmp_path / "chat.jsonl")
    report = validate(chat, model="davinci-002")
    assert [f.code for f in report.findings] == ["chat_format_for_prompt_completion_model"]
    finding = report.findings[0]
    assert finding.severity == "error" and finding.lines == list(range(1, 13))
    assert "davinci-002 is trained on the prompt/completion format" in finding.message
    assert f"tunewise validate {chat} --model davinci-002 --fix OUT" in finding.hint
    with pytest.raises(DataError, match="prompt/completion"):
        cost.estimate_training(chat, "davinci-002")  # no price for a file OpenAI refuses


def test_prompt_completion_file_for_a_chat_model_is_one_error(pc):
    report = validate(pc[0], model="gpt-4o-mini")
    assert [f.code for f in report.findings] == ["prompt_completion_format_for_chat_model"]
    assert report.findings[0].lines == list(range(1, 17))
    assert "babbage-002 or davinci-002" in report.findings[0].hint
    # Either format is accepted where the caller says so (the local trainer, a file upload).
    assert validate(pc[0], data_format="auto").ok


def test_prompt_completion_line_rules(tmp_path):
    path = tmp_path / "bad.jsonl"
    good = {"prompt": "2+2=", "completion": " 4"}
    bad = [{"prompt": "a"}, {"completion": "b"}, {"prompt": 3, "completion": "c"}, {"prompt": "d", "completion": ["e"]},
           {"prompt": "f", "completion": "  "}, {"prompt": "g", "completion": "h", "weight": 1},
           {"messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]}]
    path.write_text("\n".join(json.dumps(x) for x in [good] * 10 + bad) + "\n")
    report = validate(path, model="babbage-002")
    at = {line: sorted(f.code for f in report.findings if f.line == line and f.code != "duplicate_example")
          for line in range(11, 18)}
    assert at == {11: ["missing_completion"], 12: ["missing_prompt"], 13: ["invalid_prompt"],
                  14: ["invalid_completion"], 15: ["empty_completion"], 16: ["unknown_key"],
                  17: ["chat_format_for_prompt_completion_model"]}


# -- pricing ----------------------------------------------------------------------------------------------
def test_estimate_prices_prompt_plus_completion_tokens(pc):
    enc = reference_encoding("cl100k_base")
    tokens = sum(len(enc.encode_ordinary(r["prompt"])) + len(enc.encode_ordinary(r["completion"])) for r in lines_of(pc[0]))
    for model, price in (("davinci-002", 6.00), ("babbage-002", 0.40)):
        e = cost.estimate_training(pc[0], model, epochs=3)
        assert e.billed_tokens_per_epoch == tokens and e.billed_tokens == 3 * tokens
        assert e.cost_usd == pytest.approx(3 * tokens * price / 1e6)


def test_plan_job_follows_the_model_format(pc, tmp_path):
    client = Client(base_url="https://api.openai.com/v1", api_key="sk-test")  # plan_job sends nothing
    plan = client.plan_job(str(pc[0]), "davinci-002", n_epochs=2)
    assert plan.estimate.cost_usd == pytest.approx(2 * plan.report.stats.billed_tokens_per_epoch * 6.0 / 1e6)
    with pytest.raises(DataError, match="prompt/completion"):
        client.plan_job(str(write_receipts(tmp_path / "chat.jsonl")), "babbage-002")
    with pytest.raises(DataError, match="chat format"):
        client.plan_job(str(pc[0]), "gpt-4o-mini")


# -- conversion -------------------------------------------------------------------------------------------
def test_fix_converts_to_the_format_the_model_takes(tmp_path, capsys):
    chat = write_receipts(tmp_path / "chat.jsonl")
    out = tmp_path / "pc.jsonl"
    code, text, _ = run_cli(capsys, "validate", str(chat), "--model", "davinci-002", "--fix", str(out))
    assert code == 0 and "converted 12 example(s) to the prompt/completion format davinci-002 takes" in text
    first = lines_of(out)[0]
    source = lines_of(chat)[0]["messages"]
    assert first == {"prompt": f"System: {source[0]['content']}\nUser: {source[1]['content']}\nAssistant:",
                     "completion": " " + source[2]["content"]}
    back = tmp_path / "chat-again.jsonl"
    code, text, _ = run_cli(capsys, "validate", str(out), "--fix", str(back), "--json")
    assert code == 0 and json.loads(text)["fixed"]["converted_lines"] == list(range(1, 13))
    assert lines_of(back)[0]["messages"][1] == {"role": "assistant", "content": first["completion"]}
    assert validate(back).ok
    assert chat_to_prompt_completion({"messages": [{"role": "user", "content": "q"}]}) is None
    assert convert(out, tmp_path / "same.jsonl", PROMPT_COMPLETION) == []  # already in that format


def test_cli_validate_prompt_completion(pc, capsys):
    code, text, _ = run_cli(capsys, "validate", str(pc[0]), "--model", "babbage-002")
    assert code == 0 and "16 prompt/completion examples for babbage-002" in text
    assert "completion tokens" in text and "messages" not in text.split("per example")[1]
    code, text, _ = run_cli(capsys, "validate", str(pc[0]), "--model", "gpt-4o-mini")
    assert code == 1 and "prompt_completion_format_for_chat_model" in text


# -- training ---------------------------------------------------------------------------------------------
def test_render_labels_the_completion_only():
    tokenizer = models.load_tokenizer(TINY)
    renderer = Renderer(tokenizer, model_name=TINY)
    r = renderer.render(1, {"prompt": "Receipt: Tea - $2.00\nJSON:", "completion": ' {"total": 2.0}'})
    context = list(tokenizer("Receipt: Tea - $2.00\nJSON:", add_special_tokens=True)["input_ids"])
    target = list(tokenizer.encode(' {"total": 2.0}', add_special_tokens=False)) + [tokenizer.eos_token_id]
    assert r.input_ids == context + target
    assert r.labels == [IGNORE] * len(context) + target
    with pytest.raises(DataError, match="non-empty"):
        renderer.render(2, {"prompt": "x", "completion": ""})


def cfg(pc, out, **kw) -> TrainConfig:
    base = dict(training_file=pc[0], validation_file=pc[1], model=TINY, n_epochs=2, batch_size=4, seed=3,
                output_dir=out, save_state_every_steps=2, num_threads=1)
    base.update(kw)
    return TrainConfig(**base)


def rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_trainer_trains_prompt_completion_with_checkpoints_csv_and_resume(pc, tmp_path):
    whole = train(cfg(pc, tmp_path / "whole"))
    table = rows(whole.metrics_csv)
    assert [int(r[0]) for r in table[1:]] == list(range(1, 9)) and float(table[-1][1]) < float(table[1][1])
    assert [c["step"] for c in whole.checkpoints] == [4, 8] and whole.metrics["valid_loss"] is not None
    # Each example is its prompt, its completion and the end-of-text token, no chat template: 2 epochs of them.
    tokenizer = models.load_tokenizer(TINY)
    ids = [len(tokenizer(r["prompt"])["input_ids"]) + len(tokenizer.encode(r["completion"])) + 1
           for r in lines_of(pc[0])]
    assert whole.trained_tokens == 2 * sum(ids)
    # Stopped at step 3 and resumed: the same run, to the last bit of the adapter.
    out = tmp_path / "resumed"
    seen = []
    with pytest.raises(Cancelled):
        train(cfg(pc, out), on_event=seen.append, stop=lambda: sum(e.type == "metrics" for e in seen) >= 3)
    events = []
    resumed = train(cfg(pc, out), on_event=events.append)
    assert events[0].message == "Training resumed from step 3/8"
    assert rows(resumed.metrics_csv) == table
    a, b = load_file(str(whole.model_dir / "adapter_model.safetensors")), load_file(
        str(resumed.model_dir / "adapter_model.safetensors"))
    for name, tensor in a.items():
        torch.testing.assert_close(b[name], tensor)


def test_trainer_refuses_a_file_mixing_the_formats(pc, tmp_path):
    mixed = tmp_path / "mixed.jsonl"
    mixed.write_text(pc[0].read_text() + write_receipts(tmp_path / "chat.jsonl").read_text())
    with pytest.raises(DataError, match="chat"):
        train(cfg((mixed, None), tmp_path / "m", validation_file=None))


# -- the service ------------------------------------------------------------------------------------------
def test_service_trains_a_legacy_job_and_refuses_the_other_format(pc, tmp_path):
    with running_server(env={"TUNEWISE_WORKER_POLL_S": "0.05"}) as srv:
        client = srv.client()
        small = write_pc(tmp_path / "small.jsonl", 10, seed=4)  # the fewest OpenAI accepts: one step of 10
        uploaded = client.files.create(file=small.open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(model="davinci-002", training_file=uploaded.id,
                                             hyperparameters={"n_epochs": 1, "batch_size": 10})
        done = wait_for(client, job.id)
        assert done.status == "succeeded", done.error
        assert done.fine_tuned_model.startswith("ft:davinci-002:")
        assert done.trained_tokens > 0
        chat = client.files.create(file=write_receipts(tmp_path / "chat.jsonl").open("rb"), purpose="fine-tune")
        refused = wait_for(client, client.fine_tuning.jobs.create(model="babbage-002", training_file=chat.id).id)
        assert refused.status == "failed" and refused.error.code == "chat_format_for_prompt_completion_model"
        assert "babbage-002 is trained on the prompt/completion format" in refused.error.message
        assert refused.error.param == "training_file"
        wrong = wait_for(client, client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=uploaded.id).id)
        assert wrong.status == "failed" and wrong.error.code == "prompt_completion_format_for_chat_model"
        assert "gpt-4o-mini-2024-07-18 is trained on the chat format" in wrong.error.message
