"""Multi-process training (``tunewise train --nproc-per-node 2``, gloo on CPU) against one process: the same
per-step losses and final weights, a rank killed mid-run, the rerun that resumes, and the errors of bad launches."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from test_train import write_jsonl
from tunewise import models
from tunewise.errors import Cancelled
from tunewise.train import TrainConfig, train

TINY = models.TINY_MODEL
SRC = Path(__file__).resolve().parents[1] / "src"
TIMEOUT_S = 30  # the collective timeout these runs use; a dead rank must end the run well within it
RTOL = 1e-4


def env() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(SRC), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("data")
    return write_jsonl(d / "train.jsonl", 16, seed=1), write_jsonl(d / "valid.jsonl", 6, seed=2)


def args(data, out, *extra: str) -> list[str]:
    return [sys.executable, "-m", "tunewise", "train", str(data[0]), "--validation-file", str(data[1]),
            "-m", TINY, "--epochs", "2", "--batch-size", "4", "--seed", "3", "--num-threads", "1",
            "--output", str(out), "--collective-timeout", str(TIMEOUT_S), *extra]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def assert_same_metrics(a: list[dict[str, str]], b: list[dict[str, str]]) -> None:
    assert [r["step"] for r in a] == [r["step"] for r in b]
    for ra, rb in zip(a, b, strict=True):
        for key in ("train_loss", "train_accuracy", "valid_loss", "valid_mean_token_accuracy"):
            assert (ra[key] == "") == (rb[key] == ""), (ra, rb)
            if ra[key]:
                assert float(rb[key]) == pytest.approx(float(ra[key]), rel=RTOL, abs=1e-6), (key, ra, rb)


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "adapter_model.safetensors")), load_file(str(b / "adapter_model.safetensors"))
    assert wa.keys() == wb.keys() and wa
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=RTOL, atol=1e-6, msg=name)


@pytest.fixture(scope="module")
def one_process(data, tmp_path_factory):
    """The reference: one process, the same global batch and seed, in this process."""
    out = tmp_path_factory.mktemp("one")
    train(TrainConfig(training_file=data[0], validation_file=data[1], model=TINY, n_epochs=2, batch_size=4, seed=3,
                      output_dir=out, num_threads=1))
    return out


@pytest.fixture(scope="module")
def two_processes(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("two")
    done = subprocess.run(args(data, out, "--nproc-per-node", "2"), capture_output=True, text=True, timeout=300,
                          env=env())
    assert done.returncode == 0, done.stderr
    return out, done


def test_two_processes_train_as_one(one_process, two_processes):
    out, done = two_processes
    assert_same_metrics(rows(one_process / "metrics.csv"), rows(out / "metrics.csv"))
    assert len(rows(out / "metrics.csv")) == 8  # 16 examples, batch 4, 2 epochs: the steps of one process
    assert_same_weights(one_process / "final", out / "final")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-4", "step-8"]
    assert_same_weights(one_process / "checkpoints" / "step-4", out / "checkpoints" / "step-4")
    # Rank 0 alone reports: one start line, one result.
    assert done.stderr.count("Training started") == 1 and "2 processes" in done.stderr
    assert done.stdout.count("model: ") == 1 and str(out / "final") in done.stdout
    assert not (out / "state").exists()  # the run finished, so no resumable state is left


def _rank_pid(launcher: psutil.Process, rank: int) -> int | None:
    for child in launcher.children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank) and "tunewise.train" in " ".join(child.cmdline()):
                return child.pid
        except psutil.Error:
            continue
    return None


@pytest.mark.slow  # about 33 s: a 2-process launch killed mid-run, then the rerun
def test_killed_rank_fails_clearly_and_the_rerun_resumes(data, two_processes, tmp_path):
    out = tmp_path / "killed"
    proc = subprocess.Popen(args(data, out, "--nproc-per-node", "2"), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env())
    try:
        # Wait until the epoch-end state (step 4) is saved and step 5 is done, then kill rank 1.
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "metrics.csv").is_file() and len(rows(out / "metrics.csv")) >= 5:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        pid = _rank_pid(psutil.Process(proc.pid), 1)
        assert pid is not None
        killed_at = time.monotonic()
        os.kill(pid, 9)
        _, stderr = proc.communicate(timeout=TIMEOUT_S)
        took = time.monotonic() - killed_at
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1, stderr
    last = stderr.strip().splitlines()[-1]  # the launcher's one line names the rank that died, and how to resume
    assert last.startswith("error: rank 1 (pid ") and "killed by SIGKILL" in last and str(out) in last, stderr
    assert "rank 0" not in last  # the survivor the launcher stopped is not the cause
    assert "Traceback" not in stderr
    assert took < TIMEOUT_S
    assert len(rows(out / "metrics.csv")) < 8 and (out / "state").is_dir()

    done = subprocess.run(args(data, out, "--nproc-per-node", "2"), capture_output=True, text=True, timeout=300,
                          env=env())
    assert done.returncode == 0, done.stderr
    assert "Training resumed from step" in done.stderr
    reference, _ = two_processes
    assert_same_metrics(rows(reference / "metrics.csv"), rows(out / "metrics.csv"))
    assert_same_weights(reference / "final", out / "final")


def test_nproc_under_a_launcher_is_a_usage_error(data, tmp_path):
    done = subprocess.run(args(data, tmp_path / "o", "--nproc-per-node", "2"), capture_output=True, text=True,
                          timeout=120, env={**env(), "WORLD_SIZE": "2", "RANK": "0"})
    assert done.returncode == 2
    assert done.stderr.startswith("error: --nproc-per-node starts its own processes") and "Traceback" not in done.stderr


def test_bad_input_fails_before_any_process_starts(data, tmp_path):
    done = subprocess.run(args(data, tmp_path / "o", "--nproc-per-node", "2", "--batch-size", "0"),
                          capture_output=True, text=True, timeout=120, env=env())
    assert done.returncode == 2 and "batch_size" in done.stderr and "Traceback" not in done.stderr
    missing = [sys.executable, "-m", "tunewise", "train", str(tmp_path / "nope.jsonl"), "-m", TINY,
               "--nproc-per-node", "2"]
    done = subprocess.run(missing, capture_output=True, text=True, timeout=120, env=env())
    assert done.returncode == 2 and "nope.jsonl does not exist" in done.stderr
    assert not (tmp_path / "o").exists()


@pytest.mark.slow  # 35-75 s here: two launches and a single-process reference
def test_fsdp_full_fine_tuning_trains_as_one_process_and_resumes(data, tmp_path):
    """``--sharding fsdp`` (full fine-tuning): killed after step 5, the rerun resumes from the sharded run's saved
    state (gathered to full weights and optimizer state by name) and ends as one process does."""
    one = tmp_path / "one"
    train(TrainConfig(training_file=data[0], validation_file=data[1], model=TINY, method="full", n_epochs=2,
                      batch_size=4, seed=3, output_dir=one, num_threads=1))
    out = tmp_path / "fsdp"
    command = args(data, out, "--method", "full", "--nproc-per-node", "2", "--sharding", "fsdp")
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "metrics.csv").is_file() and len(rows(out / "metrics.csv")) >= 5:
                break
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()
        pid = _rank_pid(psutil.Process(proc.pid), 0)
        assert pid is not None
        os.kill(pid, 9)
        _, stderr = proc.communicate(timeout=TIMEOUT_S)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 1 and "rank 0 (pid " in stderr.splitlines()[-1], stderr
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env())
    assert done.returncode == 0, done.stderr
    assert "Training resumed from step 4/8" in done.stderr
    assert_same_metrics(rows(one / "metrics.csv"), rows(out / "metrics.csv"))
    wa, wb = load_file(str(one / "final" / "model.safetensors")), load_file(str(out / "final" / "model.safetensors"))
    assert wa.keys() == wb.keys()  # the tied LM head is saved once, as by one process
    for name in wa:
        torch.testing.assert_close(wb[name], wa[name], rtol=RTOL, atol=1e-6, msg=name)
    assert json.loads((out / "config.json").read_text())["sharding"] == "fsdp"


def test_fsdp_is_for_full_fine_tuning_over_several_processes(data, tmp_path):
    done = subprocess.run(args(data, tmp_path / "o", "--nproc-per-node", "2", "--sharding", "fsdp"),
                          capture_output=True, text=True, timeout=120, env=env())
    assert done.returncode == 2 and "sharding 'fsdp' is for method 'full'" in done.stderr
    done = subprocess.run(args(data, tmp_path / "o", "--method", "full", "--sharding", "fsdp"),
                          capture_output=True, text=True, timeout=120, env=env())
    assert done.returncode == 2 and "--nproc-per-node N" in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow  # 15-40 s here: the same run as two_processes, started by torchrun itself
def test_torchrun_launches_the_same_worker(data, one_process, tmp_path):
    out = tmp_path / "torchrun"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                "-m", "tunewise.train", *args(data, out)[4:]]
    done = subprocess.run(torchrun, capture_output=True, text=True, timeout=300,
                          env={**env(), "GLOO_SOCKET_IFNAME": "lo"})
    assert done.returncode == 0, done.stderr
    assert_same_metrics(rows(one_process / "metrics.csv"), rows(out / "metrics.csv"))
    assert_same_weights(one_process / "final", out / "final")
    assert json.loads((out / "config.json").read_text())["world_size"] == 2


@pytest.mark.slow  # about 40 s: the collective timeout, then the launcher's grace periods for a frozen process
def test_a_stalled_rank_is_caught_by_the_collective_timeout(data, tmp_path):
    """A rank that stops answering without dying (SIGSTOP) fails the others after --collective-timeout."""
    out = tmp_path / "stalled"
    proc = subprocess.Popen(args(data, out, "--nproc-per-node", "2", "--collective-timeout", "5"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env())
    pid = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "metrics.csv").is_file() and len(rows(out / "metrics.csv")) >= 2:
                break
            time.sleep(0.05)
        pid = _rank_pid(psutil.Process(proc.pid), 1)
        assert pid is not None
        os.kill(pid, 19)  # SIGSTOP
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if pid is not None and psutil.pid_exists(pid):
            os.kill(pid, 9)
    assert proc.returncode == 1, stderr
    errors = [line for line in stderr.splitlines() if "error: " in line]
    assert any("rank 0 of 2: a collective operation failed" in line and "stalled for more than 5 s" in line
               for line in errors), stderr
    assert "Traceback" not in stderr


@pytest.mark.slow  # about 40 s: a single-process start, then a 2-process launch
def test_a_single_process_run_resumes_on_two(data, one_process, tmp_path):
    """The state is the full one and the step plan does not depend on N: a run stopped in one process resumes on
    two and ends as the uninterrupted single-process run."""
    out = tmp_path / "grow"
    seen = []
    with pytest.raises(Cancelled):
        train(TrainConfig(training_file=data[0], validation_file=data[1], model=TINY, n_epochs=2, batch_size=4,
                          seed=3, output_dir=out, num_threads=1), on_event=seen.append,
              stop=lambda: sum(e.type == "metrics" for e in seen) >= 3)
    done = subprocess.run(args(data, out, "--nproc-per-node", "2"), capture_output=True, text=True, timeout=300,
                          env=env())
    assert done.returncode == 0, done.stderr
    assert "Training resumed from step 3/8 on 2 processes (saved by 1" in done.stderr
    assert_same_metrics(rows(one_process / "metrics.csv"), rows(out / "metrics.csv"))
    assert_same_weights(one_process / "final", out / "final")
