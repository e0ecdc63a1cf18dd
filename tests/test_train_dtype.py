"""The training dtype: ``auto`` is float32 on CPU (bfloat16 only where the 1% rule allows it and the CPU has bf16
instructions), bfloat16 on CUDA; explicit values are honoured; a bf16 run on CPU saves float32 adapters that the
engine serves; a run started in float32 resumes in float32 under ``auto``."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from test_train import cfg, write_jsonl
from tunewise import models
from tunewise.errors import Cancelled
from tunewise.train import TrainConfig, cpu_has_bf16, resolve_dtype, train
from tunewise.train import config as train_config

TINY = models.TINY_MODEL


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    return write_jsonl(d / "train.jsonl", 16, seed=1), write_jsonl(d / "valid.jsonl", 6, seed=2)


def config(**kw) -> TrainConfig:
    return TrainConfig(training_file="train.jsonl", **kw)


@pytest.mark.parametrize("has_bf16", [True, False])
def test_auto_follows_the_cpu_and_explicit_values_are_honoured(monkeypatch, has_bf16):
    monkeypatch.setattr(train_config, "cpu_has_bf16", lambda: has_bf16)
    assert resolve_dtype(config(), "cpu") == "float32"  # the 1% rule does not hold yet: float32 on every CPU
    monkeypatch.setattr(train_config, "CPU_AUTO_BF16", True)  # where it holds, auto follows the CPU
    native = "bfloat16" if has_bf16 else "float32"
    assert resolve_dtype(config(), "cpu") == native
    assert resolve_dtype(config(method="lora"), "cpu") == native
    # Measured for supervised LoRA only: full fine-tuning and DPO keep float32 on CPU.
    assert resolve_dtype(config(method="full"), "cpu") == "float32"
    assert resolve_dtype(config(objective="dpo"), "cpu") == "float32"
    assert resolve_dtype(config(), "cuda") == "bfloat16"
    assert resolve_dtype(config(), "cuda:0") == "bfloat16"
    for explicit in ("float32", "bfloat16"):
        for device in ("cpu", "cuda"):
            assert resolve_dtype(config(dtype=explicit), device) == explicit
            assert resolve_dtype(config(dtype=explicit), device, saved="float32" if explicit == "bfloat16"
                                 else "bfloat16") == explicit
    # A run being resumed keeps the dtype it started with.
    assert resolve_dtype(config(), "cpu", saved="float32") == "float32"
    assert resolve_dtype(config(), "cpu", saved="bfloat16") == "bfloat16"


def test_the_probe_reads_the_cpu():
    expected = torch.backends.mkldnn.is_available() and (
        torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    assert cpu_has_bf16() is bool(expected)
    with open("/proc/cpuinfo") as f:
        flags = f.read()
    if "avx512_bf16" in flags or "amx_bf16" in flags:
        assert cpu_has_bf16()


def test_bf16_run_on_cpu_trains_and_saves_float32_adapters_the_engine_serves(data, tmp_path):
    from tunewise.infer import Engine, GenerationRequest

    result = train(cfg(data, tmp_path / "bf16", dtype="bfloat16", n_epochs=3, learning_rate_multiplier=5.0))
    saved = json.loads((result.output_dir / "config.json").read_text())
    assert saved["dtype"] == "bfloat16" and saved["device"] == "cpu"
    with open(result.metrics_csv) as f:
        losses = [float(line.split(",")[1]) for line in f.read().splitlines()[1:]]
    assert losses[-1] < losses[0]
    weights = load_file(result.model_dir / "adapter_model.safetensors")
    assert weights and all(t.dtype == torch.float32 for t in weights.values())
    assert any(t.abs().sum() > 0 for name, t in weights.items() if "lora_B" in name)  # B starts at 0: it trained

    ask = dict(messages=[{"role": "user", "content": "Coffee - $4.50"}], max_tokens=8, temperature=0)
    torch_threads = torch.get_num_threads()
    try:
        with Engine(max_batch_size=2, backend="torch", num_threads=1) as engine:
            base = engine.generate(GenerationRequest(model=TINY, **ask)).choices[0].text
            tuned = engine.generate(GenerationRequest(model=str(result.model_dir), **ask)).choices[0]
    finally:
        torch.set_num_threads(torch_threads)
    assert tuned.text != base
    assert tuned.finish_reason in ("stop", "length")


def test_a_float32_run_resumes_in_float32_under_auto(data, tmp_path, monkeypatch):
    monkeypatch.setattr(train_config, "cpu_has_bf16", lambda: True)
    monkeypatch.setattr(train_config, "CPU_AUTO_BF16", True)
    out = tmp_path / "run"
    events = []
    with pytest.raises(Cancelled):
        train(cfg(data, out, dtype="float32"), on_event=events.append,
              stop=lambda: sum(e.type == "metrics" for e in events) >= 2)
    result = train(cfg(data, out, dtype="auto"))  # "auto" would be bfloat16 for a new run here
    assert json.loads((out / "config.json").read_text())["dtype"] == "float32"
    assert result.steps == 8
