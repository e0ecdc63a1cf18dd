"""The trainer on the tiny real-architecture model: learning, outputs, resume, cancel, seeds, errors, CLI."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tunewise import models
from tunewise.errors import Cancelled, Conflict, DataError, ModelNotFound, NotFound, Unsupported, UsageError
from tunewise.train import METRICS_HEADER, TrainConfig, auto_batch_size, auto_n_epochs, export_merged, train

TINY = models.TINY_MODEL


def write_jsonl(path: Path, n: int, seed: int = 0) -> Path:
    """Receipts-like examples of varied length: a fixed system prompt, items in, JSON out."""
    rng = random.Random(seed)
    names = ["Coffee", "Bagel", "Green Tea", "Muffin", "Water", "Soup", "Salad", "Cookie"]
    lines = []
    for _ in range(n):
        items = [(rng.choice(names), round(rng.uniform(1, 9), 2)) for _ in range(rng.randint(1, 4))]
        lines.append(json.dumps({"messages": [
            {"role": "system", "content": "Extract items and prices. Return JSON only."},
            {"role": "user", "content": ", ".join(f"{a} - ${b:.2f}" for a, b in items)},
            {"role": "assistant", "content": json.dumps({"items": [{"name": a, "price": b} for a, b in items]})},
        ]}))
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    return write_jsonl(d / "train.jsonl", 16, seed=1), write_jsonl(d / "valid.jsonl", 6, seed=2)


def cfg(data, out, **kw) -> TrainConfig:
    base = dict(training_file=data[0], validation_file=data[1], model=TINY, n_epochs=2, batch_size=4, seed=3,
                output_dir=out, save_state_every_steps=2, num_threads=1)  # one thread: the test machine is shared
    base.update(kw)
    return TrainConfig(**base)


def rows(path: Path) -> list[list[str]]:
    with open(path, newline="") as f:
        return list(csv.reader(f))


def first_steps(data, out, n, **kw) -> list[list[str]]:
    """Train until ``n`` steps are done, then stop: the metrics rows so far."""
    done = []
    with pytest.raises(Cancelled):
        train(cfg(data, out, **kw), on_event=done.append, stop=lambda: sum(e.type == "metrics" for e in done) >= n)
    return rows(out / "metrics.csv")


def adapter(dir_: Path) -> dict[str, torch.Tensor]:
    return load_file(str(dir_ / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def baseline(data, tmp_path_factory):
    """One uninterrupted LoRA run that other tests compare against."""
    out = tmp_path_factory.mktemp("baseline")
    events = []
    result = train(cfg(data, out), on_event=events.append)
    return result, events


def test_auto_rules():
    assert auto_n_epochs(10) == 10 and auto_n_epochs(2) == 25 and auto_n_epochs(200) == 3
    assert auto_n_epochs(20_000) == 1 and auto_n_epochs(10_000) == 2 and auto_n_epochs(5_000) == 3
    assert auto_batch_size(200) == 1 and auto_batch_size(5_000) == 10 and auto_batch_size(10**6) == 256


def test_full_fine_tuning_loss_goes_down_and_keeps_three_checkpoints(data, tmp_path):
    result = train(cfg(data, tmp_path / "full", method="full", n_epochs=4, validation_file=None,
                       learning_rate_multiplier=3, save_state_every_steps=100))
    losses = [float(r[1]) for r in rows(result.metrics_csv)[1:]]
    assert len(losses) == 16  # 16 examples / batch 4 x 4 epochs
    assert sum(losses[-4:]) / 4 < 0.85 * sum(losses[:4]) / 4
    meta = json.loads((result.model_dir / "tunewise_model.json").read_text())
    assert meta["method"] == "full" and meta["base_model"] == TINY
    assert (result.model_dir / "config.json").is_file() and (result.model_dir / "model.safetensors").is_file()
    assert models.load_model(result.model_dir).config.num_hidden_layers == 2  # a plain HF model directory
    assert [c["step"] for c in result.checkpoints] == [8, 12, 16]  # epoch ends, the last 3 kept
    assert sorted(p.name for p in (tmp_path / "full" / "checkpoints").iterdir()) == ["step-12", "step-16", "step-8"]


def test_lora_run_outputs_and_events(baseline, data):
    result, events = baseline
    out = result.output_dir
    table = rows(out / "metrics.csv")
    assert table[0] == METRICS_HEADER == ["step", "train_loss", "train_accuracy", "valid_loss",
                                          "valid_mean_token_accuracy"]
    assert [int(r[0]) for r in table[1:]] == list(range(1, 9))
    assert [bool(r[3]) for r in table[1:]] == [i in (4, 8) for i in range(1, 9)]  # validation at epoch ends
    losses = [float(r[1]) for r in table[1:]]
    assert losses[-1] < losses[0]
    config = json.loads((out / "config.json").read_text())
    assert config["hyperparameters"] == {"n_epochs": 2, "batch_size": 4, "learning_rate_multiplier": 1.0,
                                         "learning_rate": models.REGISTRY[TINY].learning_rate, "seed": 3}
    assert result.hyperparameters == config["hyperparameters"] and result.steps == 8
    for d in [result.model_dir] + [Path(c["path"]) for c in result.checkpoints]:
        assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "tunewise_model.json"} <= {
            p.name for p in d.iterdir()}
        meta = json.loads((d / "tunewise_model.json").read_text())
        assert meta["base_model"] == TINY and meta["method"] == "lora"
        assert meta["train_config"]["hyperparameters"] == config["hyperparameters"]  # each output describes itself
    assert [c["step"] for c in result.checkpoints] == [4, 8]
    metrics = result.checkpoints[-1]["metrics"]  # under OpenAI's checkpoint names
    assert metrics["train_mean_token_accuracy"] == pytest.approx(float(table[-1][2]), abs=1e-6)
    assert metrics["full_valid_loss"] == metrics["valid_loss"] == pytest.approx(float(table[-1][3]), abs=1e-6)
    assert result.metrics == metrics
    assert not (out / "state").exists()  # the resumable state goes once the run is complete
    assert result.trained_tokens > 0 and 0 <= result.padding_waste < 0.5
    kinds = [e.type for e in events]
    assert kinds.count("metrics") == 8 and kinds.count("checkpoint") == 2
    messages = [e.message for e in events if e.type == "message"]
    assert messages[0].startswith("Training started") and "Epoch 1/2 done" in messages
    last = [e for e in events if e.type == "metrics"][-1].data
    assert set(last) >= {"step", "total_steps", "epoch", "train_loss", "train_mean_token_accuracy", "valid_loss",
                         "valid_mean_token_accuracy", "trained_tokens", "elapsed_s", "eta_s"}
    assert last["step"] == last["total_steps"] == 8 and last["eta_s"] == 0
    assert last["trained_tokens"] == result.trained_tokens
    # Training again into a finished directory returns its result without training.
    seen = []
    again = train(cfg(data, out), on_event=seen.append)
    assert again.metrics == result.metrics and [e.type for e in seen] == ["message"]


def test_same_seed_same_steps_other_seed_differs(baseline, data, tmp_path):
    first = rows(baseline[0].metrics_csv)[:4]
    assert first_steps(data, tmp_path / "again", 3) == first
    assert first_steps(data, tmp_path / "other", 3, seed=4)[1:] != first[1:]


def test_micro_batches_accumulate_to_the_same_step(baseline, data, tmp_path):
    small = first_steps(data, tmp_path / "small", 3, max_tokens_per_microbatch=64)
    a = [float(x) for r in small[1:] for x in r[1:3]]
    b = [float(x) for r in rows(baseline[0].metrics_csv)[1:4] for x in r[1:3]]
    assert a == pytest.approx(b, rel=1e-4, abs=1e-4)


def test_stop_then_resume_equals_uninterrupted(baseline, data, tmp_path):
    out = tmp_path / "resumed"
    seen = []
    with pytest.raises(Cancelled, match="step 3"):
        train(cfg(data, out), on_event=seen.append, stop=lambda: sum(e.type == "metrics" for e in seen) >= 3)
    assert len(rows(out / "metrics.csv")) == 1 + 3
    assert json.loads((out / "state" / "progress.json").read_text())["step"] == 3
    assert seen[-1].level == "warn" and "state saved" in seen[-1].message
    events = []
    result = train(cfg(data, out), on_event=events.append)
    assert events[0].message == "Training resumed from step 3/8"
    assert rows(result.metrics_csv) == rows(baseline[0].metrics_csv)
    for name, tensor in adapter(baseline[0].model_dir).items():
        torch.testing.assert_close(adapter(result.model_dir)[name], tensor)


def test_cancel_from_another_thread_is_prompt(data, tmp_path):
    stop = threading.Event()
    steps = []

    def on_event(e):
        if e.type == "metrics":
            steps.append(e.data["step"])
            if e.data["step"] == 2:
                threading.Thread(target=stop.set).start()
                time.sleep(0.2)  # the setter has run before the next step begins

    with pytest.raises(Cancelled):
        train(cfg(data, tmp_path / "c"), on_event=on_event, stop=stop)
    assert steps == [1, 2]
    assert json.loads((tmp_path / "c" / "state" / "progress.json").read_text())["step"] == 2


def test_resume_after_kill_9_equals_uninterrupted(baseline, data, tmp_path):
    out = tmp_path / "killed"
    script = (
        "import sys; from tunewise.train import TrainConfig, train\n"
        f"train(TrainConfig(training_file={str(data[0])!r}, validation_file={str(data[1])!r}, model={TINY!r}, "
        f"n_epochs=2, batch_size=4, seed=3, output_dir={str(out)!r}, save_state_every_steps=2, num_threads=1), "
        "on_event=lambda e: __import__('time').sleep(0.15) if e.type == 'metrics' else None)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "metrics.csv").is_file() and len(rows(out / "metrics.csv")) >= 1 + 5:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed"
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    # Killed between state saves: the metrics written after the last state are redone identically.
    result = train(cfg(data, out))
    assert rows(result.metrics_csv) == rows(baseline[0].metrics_csv)
    for name, tensor in adapter(baseline[0].model_dir).items():
        torch.testing.assert_close(adapter(result.model_dir)[name], tensor)


def test_output_dir_of_another_run_is_a_conflict(baseline, data):
    with pytest.raises(Conflict, match="differs in: hyperparameters"):
        train(cfg(data, baseline[0].output_dir, n_epochs=3))


def test_export_merged_matches_adapter(baseline, tmp_path):
    from peft import PeftModel

    merged_dir = export_merged(baseline[0].model_dir, tmp_path / "merged")
    merged = models.load_model(merged_dir)
    peft = PeftModel.from_pretrained(models.load_model(TINY), baseline[0].model_dir)
    ids = torch.tensor([[1, 9690, 198, 2683, 359, 2, 198, 1, 520, 9531, 198]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, peft(ids).logits, rtol=1e-4, atol=1e-4)
    assert json.loads((merged_dir / "tunewise_model.json").read_text())["method"] == "full"
    with pytest.raises(UsageError, match="not a LoRA adapter"):
        export_merged(tmp_path, tmp_path / "x")


def bad_line(tmp_path, obj) -> Path:
    good = [json.dumps({"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": "a"}]})
            for i in range(10)]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(good) + "\n" + (obj if isinstance(obj, str) else json.dumps(obj)) + "\n")
    return path


@pytest.mark.parametrize("case, error, match", [
    ("missing", NotFound, "does not exist"),
    ("not json", DataError, "line 11"),
    ("too long", DataError, "longer than the model's context of 2048"),
    ("model", ModelNotFound, "Unknown model"),
    ("cuda", Unsupported, "no CUDA"),
    ("epochs", UsageError, "n_epochs"),
    ("lr", UsageError, "learning_rate_multiplier"),
])
def test_bad_input_fails_before_training(tmp_path, case, error, match):
    train_file = bad_line(tmp_path, {"messages": [{"role": "user", "content": "q"},
                                                  {"role": "assistant", "content": "b"}]})
    kw = {}
    if case == "missing":
        train_file = tmp_path / "nope.jsonl"
    elif case == "not json":
        train_file = bad_line(tmp_path, "{not json")
    elif case == "too long":
        # A long answer: the data checks only warn (OpenAI would truncate it); the trainer refuses it.
        train_file = bad_line(tmp_path, {"messages": [{"role": "user", "content": "q"},
                                                      {"role": "assistant", "content": "word " * 3000}]})
    elif case == "model":
        kw["model"] = "no-such-model"
    elif case == "cuda":
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        kw["device"] = "cuda"
    elif case == "epochs":
        kw["n_epochs"] = 0
    elif case == "lr":
        kw["learning_rate_multiplier"] = -1
    out = tmp_path / "out"
    with pytest.raises(error, match=match):
        train(TrainConfig(training_file=train_file, model=kw.pop("model", TINY), output_dir=out, **kw))
    assert not out.exists()  # nothing was started


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "tunewise", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


def test_cli_trains_and_reports(data, tmp_path):
    out = tmp_path / "cli"
    proc = run_cli("train", str(data[0]), "--validation-file", str(data[1]), "--model", TINY, "--n-epochs", "1",
                   "--batch-size", "8", "--seed", "1", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert f"model: {out / 'final'}" in proc.stdout and "valid_loss" in proc.stdout
    assert "loss=" in proc.stderr and "Epoch 1/1 done" in proc.stderr  # the progress bar shows the live loss
    assert len(rows(out / "metrics.csv")) == 1 + 2


def test_cli_bad_input_is_one_line(tmp_path):
    proc = run_cli("train", str(tmp_path / "missing.jsonl"), "--model", TINY)
    assert proc.returncode == 2  # a missing file is a usage error, as in every command
    assert proc.stderr.strip().count("\n") == 0 and "does not exist" in proc.stderr
    proc = run_cli("train", str(tmp_path / "missing.jsonl"), "--n-epochs", "lots")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
