"""Stopping and crashing at random moments: every process exits within a bound, ``worker.lock`` is free, a restart
runs the jobs, and a job killed (SIGKILL) at random steps ends byte-identical to an uninterrupted run."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tunewise.serve.testing import running_server, wait_for, wait_for_step, write_receipts

STOP_BOUND_S = 30.0  # SIGTERM to every process gone (the worker saves the job's state first)


def lock_is_free(data_dir: Path) -> bool:
    with open(data_dir / "worker.lock", "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(lock, fcntl.LOCK_UN)
        return True


def wait_gone(pids: list[int], bound: float) -> float:
    start = time.monotonic()
    while time.monotonic() - start < bound:
        alive = [p for p in pids if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE]
        if not alive:
            return time.monotonic() - start
        time.sleep(0.05)
    raise AssertionError(f"processes {alive} still alive {bound}s after SIGTERM")


def test_worker_stops_on_sigterm_at_random_moments(tmp_path):
    """The worker alone (``serve --worker-only``), SIGTERMed at random moments of its start and idle loop: it
    used to hang for ever in a signal handler that took the lock of the Event it interrupted."""
    data_dir = tmp_path / "server"
    rng = random.Random(16)
    env = {**os.environ, "TUNEWISE_WORKER_POLL_S": "0.01", "TUNEWISE_HOME": str(tmp_path / "home")}
    for _ in range(4):
        proc = subprocess.Popen([sys.executable, "-m", "tunewise", "serve", "--worker-only", "--data-dir",
                                 str(data_dir)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while not (data_dir / "worker.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(rng.uniform(0, 0.5))  # then a random moment of the 10 ms idle loop
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_BOUND_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("the worker did not stop on SIGTERM") from None
        assert lock_is_free(data_dir)
        (data_dir / "worker.pid").unlink()


@pytest.mark.slow
def test_sigterm_at_random_moments_idle_and_training(tmp_path):
    data = write_receipts(tmp_path / "train.jsonl")
    rng = random.Random(7)
    with running_server(tmp_path / "server", env={"TUNEWISE_WORKER_POLL_S": "0.05"}) as server:
        client = server.client()
        file = client.files.create(file=data.open("rb"), purpose="fine-tune")
        job = None
        for round_ in range(8):
            if round_ == 2:  # the first rounds idle, then training
                job = client.fine_tuning.jobs.create(training_file=file.id, model="gpt-4o-mini",
                                                     hyperparameters={"n_epochs": 25, "batch_size": 1}, seed=3)
                wait_for_step(client, job.id, 1)
            time.sleep(rng.uniform(0, 2.0))
            pids = [server.pid]
            if (server.data_dir / "worker.pid").exists():
                pids.append(int((server.data_dir / "worker.pid").read_text()))
            pids += [c.pid for c in psutil.Process(server.pid).children(recursive=True)]
            started = time.monotonic()
            server.stop()  # SIGTERM
            assert time.monotonic() - started < STOP_BOUND_S
            wait_gone(pids, 5)
            assert lock_is_free(server.data_dir)
            server.start()
        done = wait_for(client, job.id, timeout=300)
        assert done.status == "succeeded", done.error
        steps = [e.data["step"] for e in client.fine_tuning.jobs.list_events(job.id, limit=10000).data
                 if e.type == "metrics" and e.message.startswith("Step ")]
        assert sorted(steps) == list(range(1, 301))


def _outputs(server, client, job) -> tuple[dict[str, str], bytes]:
    """sha256 of the final adapter's weights and of its config (this run's paths and ids replaced), and the
    metrics CSV's bytes."""
    model_dir = Path(sqlite3.connect(server.data_dir / "tunewise.db").execute(
        "SELECT path FROM models WHERE job_id = ?", (job.id,)).fetchone()[0])
    adapter = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(model_dir.glob("*.safetensors"))}
    config = (model_dir / "adapter_config.json").read_text()
    adapter["adapter_config.json"] = config.replace(str(server.data_dir), "DATA").replace(job.id, "JOB")
    csv = client.files.content(job.result_files[0]).read()
    return adapter, csv


@pytest.mark.slow
def test_kill_9_at_random_steps_ends_identical_to_an_uninterrupted_run(tmp_path):
    data = write_receipts(tmp_path / "train.jsonl")
    hyper = {"n_epochs": 10, "batch_size": 1}
    with running_server(tmp_path / "clean") as server:
        client = server.client()
        file = client.files.create(file=data.open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(training_file=file.id, model="gpt-4o-mini", hyperparameters=hyper,
                                             seed=11)
        job = wait_for(client, job.id, timeout=300)
        assert job.status == "succeeded", job.error
        want_adapter, want_csv = _outputs(server, client, job)
    rng = random.Random(9)
    with running_server(tmp_path / "crashy") as server:
        client = server.client()
        file = client.files.create(file=data.open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(training_file=file.id, model="gpt-4o-mini", hyperparameters=hyper,
                                             seed=11)
        step = 0
        for i in range(4):
            step = wait_for_step(client, job.id, step + rng.randint(5, 25))
            if i % 2 == 0:
                server.stop(kill=True)  # server and worker at once
                server.start()
            else:  # the worker alone; the server starts a new one
                os.kill(int((server.data_dir / "worker.pid").read_text()), signal.SIGKILL)
        job = wait_for(client, job.id, timeout=300)
        assert job.status == "succeeded", job.error
        got_adapter, got_csv = _outputs(server, client, job)
        got_config, want_config = (json.loads(a.pop("adapter_config.json")) for a in (got_adapter, want_adapter))
        for config in (got_config, want_config):  # PEFT writes a set: its order follows the string hash seed
            config["target_modules"] = sorted(config.get("target_modules") or [])
        assert got_adapter == want_adapter and got_adapter  # the weights, byte for byte
        assert {k: v for k, v in got_config.items() if want_config.get(k) != v} == {}
        assert got_csv == want_csv
        with sqlite3.connect(server.data_dir / "tunewise.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
