"""``tunewise serve --executor ray``: jobs train on a real Ray cluster (started here on 127.0.0.1, stopped at the end)
through Ray Train, driven by the official ``openai`` SDK, with the tiny model and 2 Ray Train workers.

One cluster and one server for the module (the default run keeps the two tests that train nothing; the four that
train are in ``make test-all``): the guide's snippet succeeds with the checkpoints, result file and
events of the local executor (and the losses of a 1-process run); a reinforcement fine-tuning job trains (in one
Ray worker, GRPO being one process) to success with its reward in the events; a job asking for a GPU on this CPU-only cluster
waits ``queued`` with an event that says so and can be cancelled; a training worker killed with ``kill -9`` and the
job still succeeds from its last saved state; ``tunewise serve`` killed with ``kill -9`` mid-job and restarted, and
the job it left running on the cluster is followed to success.
"""

from __future__ import annotations

import csv
import io
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'tunewise[ray]')")

from tunewise.serve.testing import all_events, free_port, running_server, wait_for, write_receipts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RAY_BIN = Path(sys.executable).with_name("ray")
MARK = "TUNEWISE_TEST_RAY_NODE"  # in the environment of every process of the test's Ray node


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A Ray head node on 127.0.0.1 (4 logical CPUs, no GPU, 100 MB object store), as ``ray start`` runs one."""
    port = free_port()
    temp = tempfile.mkdtemp(prefix="tw-ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    home = tmp_path_factory.mktemp("ray-home")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "RAY_USAGE_STATS_ENABLED": "0", MARK: temp,
           "PYTHONPATH": os.pathsep.join([str(REPO / "src"), *filter(None, [os.environ.get("PYTHONPATH")])]),
           "TUNEWISE_MODEL_CACHE": os.environ.get("TUNEWISE_MODEL_CACHE")
           or str(Path.home() / ".cache" / "tunewise" / "models"), "TUNEWISE_HOME": str(home)}
    log = open(Path(temp) / "ray-start.log", "wb")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        [str(RAY_BIN), "start", "--head", "--block", "--node-ip-address", "127.0.0.1", "--port", str(port),
         "--num-cpus", "4", "--num-gpus", "0", "--include-dashboard", "false", "--disable-usage-stats",
         "--object-store-memory", str(100 * 1024 * 1024), "--temp-dir", temp,
         "--min-worker-port", "20000", "--max-worker-port", "20999"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        # `ray start` says so once the head's processes answer (cheaper than polling `ray status`).
        while "Ray runtime started" not in (Path(temp) / "ray-start.log").read_text(errors="replace"):
            if proc.poll() is not None:
                raise RuntimeError(f"ray start exited:\n{(Path(temp) / 'ray-start.log').read_text()}")
            assert time.monotonic() < deadline, (Path(temp) / "ray-start.log").read_text()
            time.sleep(0.2)
        yield address
    finally:
        _stop_cluster(proc, temp)
        log.close()
        shutil.rmtree(temp, ignore_errors=True)


def _stop_cluster(proc: subprocess.Popen, temp: str) -> None:
    """Kill the node's processes: its process group, then every process that left the group (Ray's workers take
    groups of their own and rename themselves; each still carries the node's mark in its environment)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if f"{MARK}={temp}".encode() in environ.split(b"\0"):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.fixture(scope="module")
def server(cluster):
    env = {"TUNEWISE_EXECUTOR": "ray", "TUNEWISE_RAY_ADDRESS": cluster, "TUNEWISE_RAY_NUM_WORKERS": "2",
           "TUNEWISE_WORKER_POLL_S": "0.1", "TUNEWISE_MAX_CONCURRENT_JOBS": "2", "OMP_NUM_THREADS": "1",
           "RAY_USAGE_STATS_ENABLED": "0", "TUNEWISE_RFT_MAX_COMPLETION_TOKENS": "8"}
    with running_server(env=env, startup_timeout=120) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    return server.client()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_receipts(tmp_path_factory.mktemp("data") / "training_data.jsonl")


def _csv(text: str) -> list[dict]:
    return list(csv.DictReader(io.StringIO(text)))


def _job_dir(server, job_id: str) -> Path:
    return server.data_dir / "jobs" / job_id


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
    # The same run in one local process, trained meanwhile (the test compares the two).
    local: dict = {}

    def train_locally():
        from tunewise.train import TrainConfig, train

        local["result"] = train(TrainConfig(training_file=data, model="tunewise-tiny", n_epochs=3, batch_size=4,
                                            learning_rate_multiplier=2, seed=job.seed,
                                            output_dir=workdir / "local", num_threads=1))

    thread = threading.Thread(target=train_locally)
    thread.start()
    try:
        finished = wait_for(server.client(), job.id, timeout=240)
    finally:
        thread.join()
    return finished, local["result"]


@pytest.mark.slow  # 2 Ray Train workers importing PyTorch: 1 to 4 minutes on the shared 2-core test machine
def test_guide_snippet_on_two_ray_workers(guide_job, client, server):
    job, local = guide_job
    assert job.status == "succeeded", job.error
    assert job.fine_tuned_model.startswith("ft:gpt-4o-mini-2024-07-18:default::")
    # Checkpoints: one per epoch, as the local executor keeps them.
    ckpts = client.fine_tuning.jobs.checkpoints.list(job.id).data
    assert [c.step_number for c in ckpts] == [9, 6, 3]
    for c in ckpts:
        assert c.fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-{c.step_number}"
        assert c.metrics.train_loss > 0
    # The same events as the local executor, in order; the trainer ran as 2 processes on the cluster.
    events = all_events(client, job.id)
    messages = [e.message for e in events]
    expected = ["Validating training file: ", "Files validated, moving job to queued state", "Fine-tuning job started",
                "Training the local model 'tunewise-tiny' (LoRA) on the Ray cluster (2 workers of 1 CPU)",
                "Training started: 12 examples, 3 epochs, batch size 4, 9 steps", "Step 1/9: training loss=",
                "Checkpoint created at step 3", "Checkpoint created at step 9", "New fine-tuned model created",
                "The job has successfully completed"]
    position = 0
    for prefix in expected:
        found = [i for i, m in enumerate(messages) if m.startswith(prefix) and i >= position]
        assert found, f"no event {prefix!r} after position {position}: {messages}"
        position = found[0]
    assert any(m.startswith("Training started") and m.endswith("2 processes") for m in messages), messages
    metrics = [e for e in events if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == list(range(1, 10))
    # The result file: OpenAI's step metrics, and the losses of the same run in one local process (data parallel
    # over 2 Ray workers changes nothing of the run's arithmetic but the order of sums).
    (result_id,) = job.result_files
    rows = _csv(client.files.content(result_id).text)
    expected_rows = _csv(local.metrics_csv.read_text())
    assert [r["step"] for r in rows] == [r["step"] for r in expected_rows] == [str(i) for i in range(1, 10)]
    for got, want in zip(rows, expected_rows, strict=True):
        assert math.isclose(float(got["train_loss"]), float(want["train_loss"]), rel_tol=1e-4), (got, want)
    assert [c["step"] for c in local.checkpoints] == [3, 6, 9]
    # The model trained on the cluster is served here.
    reply = client.chat.completions.create(model=job.fine_tuned_model, max_tokens=4, temperature=0,
                                           messages=[{"role": "user", "content": "Coffee $4.50"}])
    assert reply.model == job.fine_tuned_model and reply.usage.completion_tokens >= 1
    # The run's files are in the job's output directory, the events file that the server followed among them.
    out = _job_dir(server, job.id)
    assert (out / "result.json").is_file() and (out / "ray-events.jsonl").is_file()


STRING_CHECK = {"type": "string_check", "name": "exact", "operation": "eq", "input": "{{ sample.output_text }}",
                "reference": "{{ item.reference_answer }}"}


@pytest.mark.slow  # two jobs, each a Ray Train worker importing PyTorch, then GRPO: about a minute on 2 cores
def test_a_reinforcement_job_trains_on_the_ray_cluster(client, server, tmp_path):
    import json

    from tunewise.serve.testing import ITEMS, SYSTEM

    path = tmp_path / "rft.jsonl"
    path.write_text("".join(json.dumps({
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{name} ${price:.2f}"}],
        "reference_answer": json.dumps({"items": [{"name": name, "price": price}]})}) + "\n"
        for name, price in ITEMS[:10]))
    file = client.files.create(file=path.open("rb"), purpose="fine-tune")

    def run_rft(grader: dict, what: str):
        started = time.monotonic()
        job = client.fine_tuning.jobs.create(
            training_file=file.id, model="gpt-4o-mini-2024-07-18", seed=5,
            method={"type": "reinforcement", "reinforcement": {"grader": grader, "hyperparameters": {
                "n_epochs": 1, "batch_size": 10, "compute_multiplier": 0.5}}})
        job = wait_for(client, job.id, timeout=400)
        print(f"{what} job on the Ray cluster: {time.monotonic() - started:.1f} s")
        return job

    job = run_rft(STRING_CHECK, "reinforcement")
    assert job.status == "succeeded", job.error
    events = all_events(client, job.id)
    messages = [e.message for e in events]
    # The server asks for 2 workers per job; GRPO trains in one process, so the job ran on one.
    assert any(m.startswith("Training the local model 'tunewise-tiny' (LoRA) on the Ray cluster (1 worker of 1 CPU; "
                            "reinforcement trains in one process, not on the 2 workers asked for)") for m in messages), \
        messages
    assert any("GRPO: 2 completions per prompt" in m for m in messages), messages
    (metrics,) = [e for e in events if e.type == "metrics"]
    assert metrics.data["step"] == 1
    assert 0.0 <= metrics.data["train_reward_mean"] <= 1.0 and metrics.data["train_reward_std"] >= 0.0
    assert metrics.data["train_kl"] == pytest.approx(0, abs=1e-6)  # step 1 samples the reference's weights
    assert 1 <= metrics.data["train_completion_length"] <= 8
    assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data] == [1]
    header = client.files.content(job.result_files[0]).text.splitlines()[0].split(",")
    assert "train_reward_mean" in header and "valid_reward_mean" in header
    assert (_job_dir(server, job.id) / "ray-events.jsonl").is_file()
    assert job.method.reinforcement.hyperparameters.eval_interval == 1
    # A score_model grader: the Ray worker asks this server (grader_base_url empty) with the key made for the job.
    judge = {"type": "score_model", "name": "judge", "model": "gpt-4o-mini",
             "input": [{"role": "user", "content": "Score this receipt reading: {{ sample.output_text }}"}]}
    job = run_rft(judge, "score_model")
    assert job.status == "succeeded", job.error
    (metrics,) = [e for e in all_events(client, job.id) if e.type == "metrics"]
    assert 0 <= metrics.data["train_grader_errors"] < 20 and 0.0 <= metrics.data["train_reward_mean"] <= 1.0
    assert not (_job_dir(server, job.id) / "judge-key.json").exists()  # revoked once the job ended
    # The key reached the worker by a file beside the job (not in the actor's arguments), removed at the end.
    assert not (_job_dir(server, job.id) / "ray-grader-key.json").exists()


def test_gpu_job_waits_queued_then_cancels(client, data):
    file = client.files.create(file=data.open("rb"), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(training_file=file.id, model="gpt-4o-mini",
                                         extra_body={"ray": {"use_gpu": True, "num_workers": 1}})
    assert job.model_extra["ray"] == {"use_gpu": True, "num_workers": 1}
    deadline = time.monotonic() + 60
    waiting = []
    while not waiting:
        assert time.monotonic() < deadline, [e.message for e in all_events(client, job.id)]
        waiting = [e for e in all_events(client, job.id) if e.message.startswith("Waiting for resources")]
        time.sleep(0.2)
    assert "1 worker of 1 CPU, 1 GPU" in waiting[0].message and "short of 1 GPU" in waiting[0].message
    time.sleep(1.5)  # it goes on waiting, queued
    assert client.fine_tuning.jobs.retrieve(job.id).status == "queued"
    assert client.fine_tuning.jobs.cancel(job.id).status == "cancelled"
    time.sleep(1.0)
    assert client.fine_tuning.jobs.retrieve(job.id).status == "cancelled"
    assert not any(e.message == "Fine-tuning job started" for e in all_events(client, job.id))


def test_ray_field_is_checked(client, data):
    import openai

    file = client.files.create(file=data.open("rb"), purpose="fine-tune")
    for ray_field, param in (({"num_workers": 0}, "ray.num_workers"), ({"gpus": 1}, "ray.gpus"),
                             ({"resources_per_worker": {"CPU": "many"}}, "ray.resources_per_worker.CPU"),
                             ({"use_gpu": "yes"}, "ray.use_gpu"), ([2], "ray")):
        with pytest.raises(openai.BadRequestError) as err:
            client.fine_tuning.jobs.create(training_file=file.id, model="gpt-4o-mini", extra_body={"ray": ray_field})
        assert err.value.param == param, err.value.message


def _started_job(client, data, n_epochs: int):
    file = client.files.create(file=data.open("rb"), purpose="fine-tune")
    return client.fine_tuning.jobs.create(training_file=file.id, model="gpt-4o-mini", seed=11,
                                          hyperparameters={"n_epochs": n_epochs, "batch_size": 1})


def _wait_for_checkpoint(client, job_id: str, timeout: float = 480) -> None:
    deadline = time.monotonic() + timeout
    while not client.fine_tuning.jobs.checkpoints.list(job_id).data:
        job = client.fine_tuning.jobs.retrieve(job_id)
        assert job.status in ("validating_files", "queued", "running"), job.error
        assert time.monotonic() < deadline, "no checkpoint in time"
        time.sleep(0.2)


def _steps_once(client, job) -> None:
    """One metrics event per step, 1..N, however often the run was interrupted."""
    metrics = [e.data["step"] for e in all_events(client, job.id) if e.type == "metrics"]
    assert metrics == list(range(1, max(metrics) + 1)), metrics


@pytest.mark.slow
def test_a_killed_ray_worker_restarts_from_the_last_saved_state(client, server, data):
    job = _started_job(client, data, n_epochs=4)  # 48 steps, a checkpoint every 12
    _wait_for_checkpoint(client, job.id)
    pid = int((_job_dir(server, job.id) / "ray-workers" / "rank-1.pid").read_text())
    os.kill(pid, signal.SIGKILL)
    job = wait_for(client, job.id, timeout=300)
    assert job.status == "succeeded", job.error
    messages = [e.message for e in all_events(client, job.id)]
    assert any(m.startswith("Training resumed from step ") for m in messages), messages
    _steps_once(client, job)
    rows = _csv(client.files.content(job.result_files[0]).text)
    assert [int(r["step"]) for r in rows] == list(range(1, 49))


@pytest.mark.slow
def test_pause_resume_and_a_killed_server_on_the_cluster(client, server, data):
    job = _started_job(client, data, n_epochs=20)  # 240 steps, a checkpoint every 12
    _wait_for_checkpoint(client, job.id)
    # Pause reaches the run on the cluster: its ranks stop at the next step and save the state.
    client.fine_tuning.jobs.pause(job.id)
    paused_at = time.monotonic()
    deadline = paused_at + 30
    while not any(e.message.startswith("Training stopped at step") for e in all_events(client, job.id)):
        assert time.monotonic() < deadline, [e.message for e in all_events(client, job.id)]
        time.sleep(0.05)
    stop_latency = time.monotonic() - paused_at
    print(f"pause -> 'Training stopped' event: {stop_latency:.2f} s")
    assert client.fine_tuning.jobs.retrieve(job.id).status == "paused"
    stopped = max(e.data["step"] for e in all_events(client, job.id) if e.type == "metrics")
    client.fine_tuning.jobs.resume(job.id)
    # A checkpoint after the resume, then the server and its worker die at once; the job goes on on the cluster.
    deadline = time.monotonic() + 240
    while max([c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data]) <= stopped:
        assert time.monotonic() < deadline
        assert client.fine_tuning.jobs.retrieve(job.id).status in ("queued", "running")
        time.sleep(0.2)
    server.stop(kill=True)
    server.start()
    client = server.client()
    job = wait_for(client, job.id, timeout=400)
    assert job.status == "succeeded", job.error
    messages = [e.message for e in all_events(client, job.id)]
    # The restarted server followed the run that went on on the cluster: the trainer resumed once, after the pause.
    assert "Following the job on the Ray cluster, where it went on training" in messages, messages
    assert sum(m.startswith("Training resumed from step") for m in messages) == 1, messages
    _steps_once(client, job)
    assert [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data] == [240, 228, 216]
    rows = _csv(client.files.content(job.result_files[0]).text)
    assert [int(r["step"]) for r in rows] == list(range(1, 241))
