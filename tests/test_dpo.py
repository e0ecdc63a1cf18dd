"""DPO: preference data checked and priced, the loss against TRL's, training on the tiny model (metrics, resume,
renders identical to inference), the CLI, and the receipts preference files."""

from __future__ import annotations

import copy
import csv
import json
import math
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import run_cli
from tunewise import models
from tunewise.data import validate
from tunewise.errors import Cancelled, DataError, UsageError
from tunewise.tokens import REPLY_PRIMER, TOKENS_PER_MESSAGE, get_encoding
from tunewise.train import TrainConfig, train
from tunewise.train.batching import _collate
from tunewise.train.methods.dpo import dpo_loss, render_pair, sequence_logps
from tunewise.train.render import IGNORE, Renderer
from tunewise.train.trainer import _core_and_head

REPO = Path(__file__).resolve().parents[1]
RECEIPTS = REPO / "examples" / "receipts"
TINY = models.TINY_MODEL
SYSTEM = {"role": "system", "content": "You extract product names and prices from receipts. Return JSON only."}


def pref(user="Coffee - $4.50", good='{"items": [{"name": "Coffee", "price": 4.5}]}',
         bad='{"items": [{"name": "Coffee", "price": 45.0}]}', **extra) -> dict:
    return {"input": {"messages": [SYSTEM, {"role": "user", "content": user}]},
            "preferred_output": [{"role": "assistant", "content": good}],
            "non_preferred_output": [{"role": "assistant", "content": bad}], **extra}


def write(path: Path, rows: list) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def codes(path: Path, **kw) -> dict[int | None, set[str]]:
    out: dict[int | None, set[str]] = {}
    for f in validate(path, data_format="preference", **kw).findings:
        out.setdefault(f.line, set()).add(f.code)
    return out


# ---------------------------------------------------------------------------------------------------- data


def test_each_preference_rule_names_its_line(tmp_path):
    good = [pref(user=f"Item{i} - ${i}.00") for i in range(10)]
    bad = [
        {"preferred_output": good[0]["preferred_output"], "non_preferred_output": good[0]["non_preferred_output"]},
        {**pref(), "input": "Coffee"},
        {"input": good[0]["input"], "non_preferred_output": good[0]["non_preferred_output"]},
        {"input": good[0]["input"], "preferred_output": good[0]["preferred_output"]},
        pref(user="Two answers", good=None) | {"preferred_output": [{"role": "assistant", "content": "a"},
                                                                   {"role": "assistant", "content": "b"}]},
        pref(user="A user answer") | {"non_preferred_output": [{"role": "user", "content": "no"}]},
        pref(user="Same", good="x", bad="x"),
        {**pref(), "input": {"messages": [SYSTEM, {"role": "user", "content": "Tea"},
                                          {"role": "assistant", "content": "{}"}]}},
        {**pref(), "chosen": "x"},
        pref(user="Empty answer", good=""),
        {**pref(), "input": {"messages": [{"role": "human", "content": "Tea"}]}},
    ]
    found = codes(write(tmp_path / "p.jsonl", good + bad))
    n = len(good)
    assert not any(line is not None and line <= n for line in found)
    assert "missing_preference_input" in found[n + 1]
    assert "invalid_preference_input" in found[n + 2]
    assert "missing_preferred_output" in found[n + 3]
    assert "missing_non_preferred_output" in found[n + 4]
    assert "invalid_preference_output" in found[n + 5]
    assert "invalid_preference_output" in found[n + 6]
    assert "identical_preference_outputs" in found[n + 7]
    assert "invalid_preference_input" in found[n + 8]
    assert "unknown_key" in found[n + 9]
    assert "empty_content" in found[n + 10]
    assert "unknown_role" in found[n + 11]
    report = validate(tmp_path / "p.jsonl", data_format="preference")
    where = next(f for f in report.findings if f.code == "empty_content")
    assert "preferred_output[0]" in where.message
    where = next(f for f in report.findings if f.code == "unknown_role")
    assert "input.messages[0]" in where.message and "did you mean 'user'" in where.hint


def test_the_wrong_format_is_one_error_saying_which_method(tmp_path):
    prefs = write(tmp_path / "p.jsonl", [pref(user=f"Tea {i}") for i in range(10)])
    chat = write(tmp_path / "c.jsonl", [{"messages": [SYSTEM, {"role": "user", "content": f"Tea {i}"},
                                                      {"role": "assistant", "content": "{}"}]} for i in range(10)])
    as_chat = validate(prefs)
    assert [f.code for f in as_chat.errors] == ["preference_format_for_supervised"]
    assert "--method dpo" in as_chat.errors[0].hint
    as_dpo = validate(chat, data_format="preference")
    assert [f.code for f in as_dpo.errors] == ["chat_format_for_preference"]
    assert as_dpo.errors[0].lines == list(range(1, 11))


def test_preference_tokens_are_the_input_and_both_outputs(tmp_path):
    """What OpenAI bills for DPO: the tokens of the training file (input, preferred and non-preferred output),
    counted as chat messages, times the epochs, at the model's one training price."""
    rows = [pref(user=f"Bagel {i} - $3.00") for i in range(10)]
    report = validate(write(tmp_path / "p.jsonl", rows), model="gpt-4o-mini", data_format="preference")
    assert report.ok
    enc = get_encoding("o200k_base")
    ex = rows[0]
    messages = [*ex["input"]["messages"], ex["preferred_output"][0], ex["non_preferred_output"][0]]
    expected = REPLY_PRIMER + sum(TOKENS_PER_MESSAGE + enc.count(m["role"]) + enc.count(m["content"])
                                  for m in messages)
    assert report.stats.example_tokens[0] == expected
    from tunewise.cost import estimate_training

    estimate = estimate_training(tmp_path / "p.jsonl", "gpt-4o-mini", epochs=2, method="dpo")
    assert estimate.billed_tokens == 2 * sum(report.stats.example_tokens)
    assert estimate.cost_usd == pytest.approx(estimate.billed_tokens * estimate.price_per_1m / 1e6)


def test_receipts_preference_files_are_what_the_generator_writes_and_clean(tmp_path, capsys):
    sys.path.insert(0, str(RECEIPTS))
    try:
        import preferences
    finally:
        sys.path.remove(str(RECEIPTS))
    files, kinds = preferences.build()
    for name, text in files.items():
        assert (RECEIPTS / name).read_text(encoding="utf-8") == text, f"{name} is stale: run preferences.py"
    assert set(kinds) == {"total_as_item", "misread_price", "quantity_in_name", "missed_item"}
    assert sum(kinds.values()) == 250
    for name, source in preferences.SOURCES.items():
        chat = [json.loads(line) for line in (RECEIPTS / source).read_text().splitlines()]
        prefs = [json.loads(line) for line in (RECEIPTS / name).read_text().splitlines()]
        for c, p in zip(chat, prefs, strict=True):
            assert p["input"]["messages"] == c["messages"][:-1]
            assert p["preferred_output"] == [c["messages"][-1]]
            assert p["non_preferred_output"][0]["content"] != c["messages"][-1]["content"]
            json.loads(p["non_preferred_output"][0]["content"])  # a wrong answer, still valid JSON
    code, out, _ = run_cli(capsys, "validate", str(RECEIPTS / "train_dpo.jsonl"), "--method", "dpo")
    assert code == 0 and out.strip().endswith("ok: 0 error(s), 0 warning(s)"), out
    code, out, _ = run_cli(capsys, "validate", str(RECEIPTS / "train_dpo.jsonl"))
    assert code == 1 and "preference_format_for_supervised" in out


# ---------------------------------------------------------------------------------------------------- the loss


@pytest.mark.slow  # importing TRL and building its trainer takes ~30 s on the shared 2-core machine
def test_loss_and_metrics_equal_trl_on_a_fixed_batch():
    """TRL's DPOTrainer (sigmoid loss, a separate reference model) on the same batch: the same loss, rewards,
    reward accuracy and margin, log-probabilities and token accuracy as ours."""
    Dataset = pytest.importorskip("datasets", reason="the bench extra (trl, datasets) is not installed").Dataset
    trl = pytest.importorskip("trl", reason="the bench extra (trl, datasets) is not installed")
    DPOConfig, DPOTrainer = trl.DPOConfig, trl.DPOTrainer

    tokenizer = models.load_tokenizer(TINY)
    policy = models.load_model(TINY, dtype=torch.float32, device="cpu")
    reference = copy.deepcopy(policy)
    rows = [json.loads(line) for line in (RECEIPTS / "train_dpo.jsonl").read_text().splitlines()[:4]]
    pairs = [render_pair(Renderer(tokenizer), i + 1, ex, i, "training_file") for i, ex in enumerate(rows)]
    data = Dataset.from_list([{"prompt": ex["input"]["messages"], "chosen": ex["preferred_output"],
                               "rejected": ex["non_preferred_output"]} for ex in rows])
    args = DPOConfig(output_dir="/nonexistent-unused", report_to=[], beta=0.1, use_cpu=True, bf16=False,
                     per_device_train_batch_size=4)
    trainer = DPOTrainer(model=policy, ref_model=reference, args=args, train_dataset=data,
                         processing_class=tokenizer)
    with torch.no_grad():  # move the policy away from the reference, or every reward is 0
        g = torch.Generator().manual_seed(0)
        for p in trainer.model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    sequences = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    mb = _collate(sequences, tokenizer.pad_token_id)
    attention = torch.zeros_like(mb.input_ids)
    for row, e in enumerate(sequences):
        attention[row, :len(e.input_ids)] = 1
    trainer.model.train()
    theirs = trainer._compute_loss(trainer.model, {"input_ids": mb.input_ids, "attention_mask": attention,
                                                   "completion_mask": (mb.labels != IGNORE).long()}, False)
    m = {k: v[-1] for k, v in trainer._metrics["train"].items()}

    logps, correct, counts = sequence_logps(trainer.model, *_core_and_head(trainer.model), mb, "cpu")
    with torch.no_grad():
        ref_logps, _, _ = sequence_logps(reference, *_core_and_head(reference), mb, "cpu")
    losses, chosen, rejected = dpo_loss(logps[:4], logps[4:], ref_logps[:4], ref_logps[4:], 0.1)
    assert losses.mean().item() == pytest.approx(theirs.item(), rel=1e-4)
    assert (chosen > rejected).float().mean().item() == m["rewards/accuracies"]
    assert (chosen - rejected).mean().item() == pytest.approx(m["rewards/margins"], rel=1e-3, abs=1e-5)
    assert chosen.mean().item() == pytest.approx(m["rewards/chosen"], rel=1e-3, abs=1e-5)
    assert rejected.mean().item() == pytest.approx(m["rewards/rejected"], rel=1e-3, abs=1e-5)
    assert logps[:4].mean().item() == pytest.approx(m["logps/chosen"], rel=1e-5)
    assert logps[4:].mean().item() == pytest.approx(m["logps/rejected"], rel=1e-5)
    assert (correct[:4].sum() / counts[:4].sum()).item() == pytest.approx(m["mean_token_accuracy"], rel=1e-5)
    # The gradient flows to the policy's weights through our loss too.
    losses.mean().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.parameters())


# ---------------------------------------------------------------------------------------------------- training


def short_pairs(n: int, seed: int) -> list[dict]:
    """Short receipts-like pairs (the tiny model trains them fast): the right price against a misread one."""
    import random

    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        name, price = rng.choice(["Coffee", "Bagel", "Tea", "Soup"]), rng.randint(2, 9)
        rows.append(pref(user=f"{name} - ${price}.50", good=json.dumps({"items": [{"name": name, "price": price + 0.5}]}),
                         bad=json.dumps({"items": [{"name": name, "price": price * 10 + 5.0}]})))
    return rows


@pytest.fixture(scope="module")
def dpo_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("dpo")
    return write(d / "train.jsonl", short_pairs(10, 1)), write(d / "valid.jsonl", short_pairs(3, 2))


def cfg(data, out, **kw) -> TrainConfig:
    base = dict(training_file=data[0], validation_file=data[1], model=TINY, objective="dpo", n_epochs=2,
                batch_size=5, seed=5, output_dir=out, save_state_every_steps=1, num_threads=1)
    base.update(kw)
    return TrainConfig(**base)


def table(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture(scope="module")
def baseline(dpo_data, tmp_path_factory):
    events = []
    result = train(cfg(dpo_data, tmp_path_factory.mktemp("base") / "out"), on_event=events.append)
    return result, events


def test_dpo_trains_with_its_metrics_in_the_csv_and_events(baseline):
    result, events = baseline
    rows = table(result.metrics_csv)
    assert len(rows) == result.steps == 4
    assert list(rows[0]) == ["step", "train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy",
                             "train_reward_accuracy", "train_reward_margin", "train_chosen_reward",
                             "train_rejected_reward", "train_chosen_logps", "train_rejected_logps",
                             "valid_reward_accuracy", "valid_reward_margin"]
    # Step 1 runs the reference model's weights: every reward is 0 and the loss is log 2.
    assert float(rows[0]["train_loss"]) == pytest.approx(math.log(2), abs=1e-5)
    assert float(rows[0]["train_reward_margin"]) == pytest.approx(0, abs=1e-5)
    for row in rows:
        assert float(row["train_chosen_logps"]) < 0 and float(row["train_rejected_logps"]) < 0
        assert 0 <= float(row["train_reward_accuracy"]) <= 1
        margin = float(row["train_chosen_reward"]) - float(row["train_rejected_reward"])
        assert float(row["train_reward_margin"]) == pytest.approx(margin, abs=2e-6)
    # Evaluated at each epoch end (steps 2 and 4), on the validation pairs.
    assert [bool(r["valid_loss"]) for r in rows] == [False, True, False, True]
    assert all(r["valid_reward_accuracy"] != "" for r in rows[1::2])
    metrics = [e for e in events if e.type == "metrics"]
    assert metrics[-1].data["train_reward_margin"] == pytest.approx(float(rows[-1]["train_reward_margin"]),
                                                                    abs=1e-6)
    assert metrics[-1].data["valid_reward_accuracy"] is not None
    assert any("Reference log-probabilities computed from the base model (adapter disabled)" in e.message
               for e in events)
    assert [c["step"] for c in result.checkpoints] == [2, 4]
    assert result.hyperparameters["beta"] == 0.1
    assert result.hyperparameters["learning_rate"] == pytest.approx(models.resolve(TINY).learning_rate * 0.1)
    meta = json.loads((result.model_dir / "tunewise_model.json").read_text())
    assert meta["objective"] == "dpo" and meta["method"] == "lora"
    assert (result.output_dir / "reference.pt").is_file()


def test_both_renders_are_the_inference_prompt_then_the_answer(dpo_data):
    tokenizer = models.load_tokenizer(TINY)
    renderer = Renderer(tokenizer)
    example = json.loads(dpo_data[0].read_text().splitlines()[0])
    pair = render_pair(renderer, 1, example, 0, "training_file")
    prompt = renderer.prompt_ids(example["input"]["messages"])
    for rendered, key in ((pair.chosen, "preferred_output"), (pair.rejected, "non_preferred_output")):
        answer = tokenizer.encode(example[key][0]["content"], add_special_tokens=False) + [tokenizer.eos_token_id]
        assert rendered.input_ids == prompt + answer
        assert rendered.labels == [IGNORE] * len(prompt) + answer


def test_stop_then_resume_equals_uninterrupted(baseline, dpo_data, tmp_path):
    out = tmp_path / "resumed"
    seen = []
    with pytest.raises(Cancelled, match="step 3"):
        train(cfg(dpo_data, out), on_event=seen.append, stop=lambda: sum(e.type == "metrics" for e in seen) >= 3)
    events = []
    result = train(cfg(dpo_data, out), on_event=events.append)
    assert any("Reference log-probabilities read from" in e.message for e in events)
    assert any(e.message == "Training resumed from step 3/4" for e in events)
    assert table(result.metrics_csv) == table(baseline[0].metrics_csv)
    ours, theirs = load_file(result.model_dir / "adapter_model.safetensors"), \
        load_file(baseline[0].model_dir / "adapter_model.safetensors")
    for name, tensor in theirs.items():
        torch.testing.assert_close(ours[name], tensor)


def test_dpo_on_top_of_a_supervised_adapter_uses_it_as_the_reference(baseline, dpo_data, tmp_path):
    events = []
    result = train(cfg(dpo_data, tmp_path / "on-top", n_epochs=1, validation_file=None,
                       init_adapter=baseline[0].model_dir), on_event=events.append)
    assert any("computed from the starting model" in e.message for e in events)
    first = table(result.metrics_csv)[0]
    assert float(first["train_loss"]) == pytest.approx(math.log(2), abs=1e-5)  # the reference is where it starts
    meta = json.loads((result.model_dir / "tunewise_model.json").read_text())
    assert meta["lineage"] == [str(baseline[0].model_dir)]


def test_wrong_data_or_options_are_clear_errors(dpo_data, tmp_path):
    chat = write(tmp_path / "chat.jsonl", [{"messages": [SYSTEM, {"role": "user", "content": f"Tea {i}"},
                                                         {"role": "assistant", "content": "{}"}]} for i in range(10)])
    with pytest.raises(DataError, match="not in the preference format") as err:
        train(cfg((chat, None), tmp_path / "a"))
    assert err.value.param == "training_file"
    with pytest.raises(DataError, match="--method dpo") as err:
        train(cfg(dpo_data, tmp_path / "b", objective="sft"))
    assert err.value.code == "preference_format_for_supervised"
    with pytest.raises(UsageError, match="beta"):
        train(cfg(dpo_data, tmp_path / "c", beta=3))
    with pytest.raises(UsageError, match="beta is DPO's"):
        train(cfg(dpo_data, tmp_path / "d", objective="sft", beta=0.5))
    with pytest.raises(UsageError, match="packing"):
        train(cfg(dpo_data, tmp_path / "e", packing=True))


def test_cli_trains_dpo_and_refuses_contradictions(dpo_data, tmp_path, capsys):
    out = tmp_path / "cli"
    code, stdout, stderr = run_cli(capsys, "train", str(dpo_data[0]), "--model", TINY, "--method", "dpo",
                                   "--beta", "0.2", "--epochs", "1", "--batch-size", "10", "--seed", "1",
                                   "--num-threads", "1", "--output", str(out))
    assert code == 0, stderr
    assert "model: " in stdout and "DPO (beta 0.2)" in stderr
    assert json.loads((out / "config.json").read_text())["hyperparameters"]["beta"] == 0.2
    code, _, stderr = run_cli(capsys, "train", str(dpo_data[0]), "--model", TINY, "--method", "lora",
                              "--weights", "full")
    assert code == 2 and "--weights full contradicts --method lora" in stderr
    code, _, stderr = run_cli(capsys, "train", str(dpo_data[0]), "--model", TINY, "--method", "dpo",
                              "--nproc-per-node", "2")
    assert code == 2 and "one process" in stderr
