"""The GPU path's pieces that a CPU can prove: gradient checkpointing leaves the run's arithmetic unchanged, the
attention kernel is picked per device, and ``bench/gpu.py`` still runs (its CPU smoke mode) and refuses clearly
without a CUDA device."""

from __future__ import annotations

import importlib.util
import json
import math
from pathlib import Path

import pytest

from tunewise.serve.testing import write_receipts
from tunewise.train import TrainConfig, train
from tunewise.train.trainer import attention_implementation

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_gpu", REPO / "bench" / "gpu.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _losses(out: Path) -> list[float]:
    return [float(line.split(",")[1]) for line in (out / "metrics.csv").read_text().splitlines()[1:]]


def test_gradient_checkpointing_trains_the_same_run(tmp_path):
    data = write_receipts(tmp_path / "train.jsonl")
    runs = {}
    for on in (False, True):
        out = tmp_path / f"ckpt-{on}"
        train(TrainConfig(training_file=data, model="tunewise-tiny", n_epochs=1, batch_size=6, seed=3,
                          output_dir=out, num_threads=1, gradient_checkpointing=on))
        runs[on] = _losses(out)
    assert len(runs[True]) == 2
    for plain, recomputed in zip(runs[False], runs[True], strict=True):
        assert math.isclose(plain, recomputed, rel_tol=1e-5), runs
    saved = json.loads((tmp_path / "ckpt-True" / "config.json").read_text())
    assert "gradient_checkpointing" not in saved  # not a resume key: a run may resume with it on or off


def test_attention_kernel_per_device():
    assert attention_implementation("cpu", packing=False) is None  # transformers' default on CPU
    assert attention_implementation("cuda:0", packing=False) == "sdpa"
    expected = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"
    assert attention_implementation("cuda:1", packing=True) == expected


def test_bench_gpu_smoke_runs_every_case(tmp_path, capsys):
    bench = _bench()
    assert bench.main(["--smoke", "--json", str(tmp_path / "rows.json")]) == 0
    rows = json.loads((tmp_path / "rows.json").read_text())["rows"]
    assert {(r["method"], r["packing"]) for r in rows} == {("lora", False), ("lora", True), ("full", False),
                                                           ("full", True)}
    for r in rows:
        assert r["tokens_per_s"] > 0 and r["model_tflops_per_s"] > 0 and math.isfinite(r["loss"])
    assert "tokens/s" in capsys.readouterr().out
    # The peak table knows the usual devices (MFU needs one).
    assert bench.peak_tflops("NVIDIA H100 80GB HBM3") == 989.0 and bench.peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert bench.peak_tflops("Some GPU") is None


def test_bench_gpu_says_clearly_there_is_no_cuda_device(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert _bench().main([]) == 2
    err = capsys.readouterr().err
    assert "no CUDA device" in err and "--smoke" in err
