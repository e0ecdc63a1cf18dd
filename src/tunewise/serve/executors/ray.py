"""The Ray executor (``executor=ray``): each job trains on a Ray cluster through Ray Train.

One job is one detached Ray actor, ``JobRunner`` (named ``tunewise-<job id>`` in the ``tunewise`` namespace, 0 CPUs),
that runs a Ray Train ``TorchTrainer``: ``ScalingConfig`` (the job's workers, GPU and resources per worker), a
``RunConfig`` whose ``storage_path`` is ``ray_storage`` and whose ``FailureConfig`` restarts failed workers
(``ray_max_failures``), and, in every worker, the same ``tunewise.train.train`` as everywhere else: Ray Train starts
the process group (gloo on CPU, NCCL on GPUs), so the trainer runs data parallel as under ``torchrun``
(``tunewise.train.distributed``), and a restarted worker group resumes from the job's last saved state.

The job's output directory is on storage that the server and every node reach (``ray_storage``): rank 0 appends
each ``TrainEvent`` to ``ray-events.jsonl`` there, which the worker of ``tunewise serve`` follows (and so records
the same events, checkpoints and result file as the local executor); a cancel or pause writes ``ray-stop`` there,
which every rank reads between steps (at most every ``STOP_POLL_S``). Because the actor is detached, a job outlives
the server that started it: a restarted server finds the actor by name and follows it from where it had read (the
offset is kept in ``ray-followed.json``), or, when the actor is gone, starts a new one that resumes from storage.

Before a job starts it stays ``queued`` while the cluster lacks what it asks for (an event says what).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray

from tunewise.errors import Cancelled, TunewiseError
from tunewise.serve.executors import resources
from tunewise.serve.settings import Settings

log = logging.getLogger("tunewise.serve.executors.ray")

NAMESPACE = "tunewise"
EVENTS_FILE = "ray-events.jsonl"
STOP_FILE = "ray-stop"
ERROR_FILE = "ray-error.json"
FOLLOWED_FILE = "ray-followed.json"
PIDS_DIR = "ray-workers"
# The judge's key of a job whose grader asks a model: on storage beside the job (0600), read by each worker as it
# starts, never in the actor's arguments or Ray Train's ``train_loop_config`` (which Ray keeps and shows).
GRADER_KEY_FILE = "ray-grader-key.json"
STOP_POLL_S = 0.2
STATUS_POLL_S = 1.0
STOP_GRACE_S = 120.0  # a stopped job's workers save their state; past this the actor is killed anyway
START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
WORKER_START_TIMEOUT_S = 600
# Variables the training workers need to find models and data as the server does (when set on the server).
FORWARDED_ENV = ("TUNEWISE_HOME", "TUNEWISE_MODEL_CACHE", "HF_HOME", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")


def actor_name(job_id: str) -> str:
    return f"tunewise-{job_id}"


# ---------------------------------------------------------------------------------------------------- on the cluster


def train_loop(spec: dict[str, Any]) -> None:
    """One Ray Train worker: ``tunewise.train.train`` with events to the job's events file (rank 0) and the stop
    file as its ``stop``. A user-facing error is written for the runner (no retry would change it); a failure of
    another rank or of this process raises, and Ray Train restarts the worker group."""
    import torch

    from tunewise.errors import DistributedError
    from tunewise.train import TrainConfig, train

    threads = int(spec["threads"])
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)
    rank = ray.train.get_context().get_world_rank()
    out = Path(spec["config"]["output_dir"])
    (out / PIDS_DIR).mkdir(parents=True, exist_ok=True)
    (out / PIDS_DIR / f"rank-{rank}.pid").write_text(str(os.getpid()))
    config = TrainConfig(**{**spec["config"], **grader_key(out), "num_threads": threads})
    events = out / EVENTS_FILE
    last = [0.0, False]

    def on_event(event: Any) -> None:
        line = json.dumps({"type": event.type, "message": event.message, "level": event.level,
                           "data": event.data or {}}, default=str)
        with events.open("a") as f:
            f.write(line + "\n")

    def stop() -> bool:
        if time.monotonic() - last[0] >= STOP_POLL_S:
            last[0] = time.monotonic()
            last[1] = (out / STOP_FILE).exists()
        return last[1]

    try:
        train(config, on_event=on_event if rank == 0 else None, stop=stop)
    except Cancelled:
        return
    except DistributedError:
        raise
    except TunewiseError as exc:
        if rank == 0:
            (out / ERROR_FILE).write_text(json.dumps({"code": exc.code, "message": str(exc), "param": exc.param}))
        return


def grader_key(out: Path) -> dict[str, Any]:
    """``{"grader_api_key": secret}`` from the job's ``GRADER_KEY_FILE``, or nothing where it has none."""
    try:
        return {"grader_api_key": json.loads((out / GRADER_KEY_FILE).read_text())["secret"]}
    except FileNotFoundError:
        return {}


def job_spec(job: dict[str, Any], config: Any, *, request: dict[str, Any], threads: int, storage: str,
             max_failures: int) -> dict[str, Any]:
    """The runner actor's arguments for ``job``: ``config`` as plain values, its judge's key (a secret) left out
    and written to ``GRADER_KEY_FILE`` instead (or that file removed where the job has no key)."""
    from dataclasses import asdict

    from tunewise.serve import auth

    out = Path(config.output_dir)
    values = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(config).items()}
    secret = values.pop("grader_api_key", None)
    if secret:
        auth.write_secret_json(out / GRADER_KEY_FILE, {"secret": secret})
    else:
        (out / GRADER_KEY_FILE).unlink(missing_ok=True)
    return {"job_id": job["id"], "request": request, "threads": threads, "storage": storage,
            "max_failures": max_failures, "collective_timeout_s": config.collective_timeout_s, "config": values}


class JobRunner:
    """The detached actor of one job: runs its ``TorchTrainer`` in a thread and answers ``status()``."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.state: dict[str, Any] = {"state": "starting"}
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="tunewise-job", daemon=True)
            self.thread.start()

    def status(self) -> dict[str, Any]:
        return dict(self.state)

    def _run(self) -> None:
        from ray.train import FailureConfig, RunConfig, ScalingConfig
        from ray.train.torch import TorchConfig, TorchTrainer

        spec = self.spec
        out = Path(spec["config"]["output_dir"])
        req = spec["request"]
        per_worker = resources.bundle(req)
        try:
            self.state = {"state": "running"}
            trainer = TorchTrainer(
                train_loop, train_loop_config=spec,
                torch_config=TorchConfig(backend="nccl" if req["use_gpu"] else "gloo",
                                         timeout_s=int(spec["collective_timeout_s"])),
                scaling_config=ScalingConfig(num_workers=req["num_workers"], use_gpu=req["use_gpu"],
                                             resources_per_worker=per_worker),
                run_config=RunConfig(name=spec["job_id"], storage_path=spec["storage"],
                                     failure_config=FailureConfig(max_failures=spec["max_failures"])))
            trainer.fit()
        except Exception as exc:  # Ray Train gave up: the workers failed more than max_failures times
            self.state = {"state": "failed", "error": {"code": "training_failed", "param": None,
                                                        "message": f"Training on the Ray cluster failed: {exc}"}}
            return
        if (out / ERROR_FILE).is_file():
            self.state = {"state": "failed", "error": json.loads((out / ERROR_FILE).read_text())}
        elif (out / "result.json").is_file():
            self.state = {"state": "succeeded"}
        else:
            self.state = {"state": "stopped"}


# ---------------------------------------------------------------------------------------------------- in the server


class RayExecutor:
    name = "ray"

    def __init__(self, settings: Settings, shutdown: threading.Event) -> None:
        self.settings = settings
        self.shutdown = shutdown
        self._lock = threading.Lock()
        self._connected = False

    # -- the cluster ----------------------------------------------------------------------------------------------
    def connect(self) -> None:
        """Join the cluster named by ``ray_address`` (once per process)."""
        with self._lock:
            if self._connected and ray.is_initialized():
                return
            address = self.settings.ray_address
            env = {name: os.environ[name] for name in FORWARDED_ENV if os.environ.get(name)}
            # Ray Train gives a worker group 60 s to start, and then starts it again: workers that import PyTorch
            # and load a model on a busy machine can need longer, and would be started again for ever.
            env[START_TIMEOUT_ENV] = os.environ.get(START_TIMEOUT_ENV) or str(WORKER_START_TIMEOUT_S)
            if address == "local":
                # A one-machine cluster in this process: its workers import tunewise from where this one does.
                import tunewise

                env["PYTHONPATH"] = os.pathsep.join(
                    [str(Path(tunewise.__file__).resolve().parents[1]), *filter(None, [os.environ.get("PYTHONPATH")])])
                ray.init(namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
                         runtime_env={"env_vars": env}, object_store_memory=100 * 1024 * 1024)
            else:
                ray.init(address=address, namespace=NAMESPACE, log_to_driver=False,
                         runtime_env={"env_vars": env} if env else None)
            self._connected = True

    def close(self) -> None:
        with self._lock:
            if self._connected and ray.is_initialized():
                ray.shutdown()
            self._connected = False

    def _request(self, job: dict[str, Any]) -> dict[str, Any]:
        return resources.request(self.settings, json.loads(job["ray"]) if job.get("ray") else None, job)

    def _storage(self) -> str:
        return self.settings.ray_storage or str(Path(self.settings.data_dir).resolve() / "ray")

    # -- waiting ----------------------------------------------------------------------------------------------
    def wait_until_runnable(self, job: dict[str, Any], still_queued: Callable[[], bool],
                            add_event: Callable[..., None]) -> bool:
        req = self._request(job)
        said = ""
        while still_queued():
            try:
                self.connect()
                if _find(job["id"]) is not None:
                    return True
                short = resources.missing(req, ray.available_resources())
                nodes = [n.get("Resources") or {} for n in ray.nodes() if n.get("Alive")]
            except Exception as exc:  # the cluster is not reachable (yet): keep the job queued, say why
                message = (f"Waiting for the Ray cluster at {self.settings.ray_address}: "
                           f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")
                level = "warn"
            else:
                fits = resources.fits_a_node(req, nodes)
                if not short and fits:
                    return True
                have = ray.cluster_resources()
                message = (f"Waiting for resources on the Ray cluster: the job asks for {req['num_workers']} "
                           f"worker{'s' if req['num_workers'] != 1 else ''} of {resources.fmt(resources.bundle(req))} "
                           f"({resources.fmt(resources.total(req))} in all); "
                           + (f"short of {resources.fmt(short)}" if short else "no node of the cluster has what one "
                              "worker asks for") +
                           f" (the cluster has {resources.fmt({k: have.get(k, 0.0) for k in resources.total(req)})} "
                           "in all)")
                level = "info"
            if message != said:
                add_event(message, level=level)
                said = message
            if self.shutdown.wait(STATUS_POLL_S):
                return False
        return False

    # -- running ----------------------------------------------------------------------------------------------
    def run(self, job: dict[str, Any], config: Any, on_event: Callable[[Any], None],
            stop: Callable[[], bool]) -> Any:
        try:
            return self._follow(job, config, on_event, stop)
        finally:
            if not self.shutdown.is_set():  # the job is over (a stopping server leaves it training on the cluster)
                (Path(config.output_dir) / GRADER_KEY_FILE).unlink(missing_ok=True)

    def _follow(self, job: dict[str, Any], config: Any, on_event: Callable[[Any], None],
                stop: Callable[[], bool]) -> Any:
        from tunewise.train import TrainResult

        self.connect()
        job_id = job["id"]
        out = Path(config.output_dir)
        out.mkdir(parents=True, exist_ok=True)
        follow = _Follower(out, on_event)
        actor = _find(job_id)
        if actor is None:
            if (out / "result.json").is_file():  # finished while nobody followed, its actor already gone
                follow.drain()
                return TrainResult.from_dict(json.loads((out / "result.json").read_text()))
            actor = self._launch(job, config)
        else:
            on_event(_message("Following the job on the Ray cluster, where it went on training"))
        stop_sent = 0.0
        last_status = 0.0
        lost = 0
        while True:
            follow.drain()
            if self.shutdown.is_set():  # the server stops: the job goes on on the cluster, a restart follows it
                raise Cancelled("The worker is stopping; the job goes on on the Ray cluster.")
            if not stop_sent and stop():
                (out / STOP_FILE).write_text("stop")
                stop_sent = time.monotonic()
            if time.monotonic() - last_status >= STATUS_POLL_S or stop_sent:
                last_status = time.monotonic()
                try:
                    status = ray.get(actor.status.remote(), timeout=30)
                except ray.exceptions.GetTimeoutError:
                    status = {"state": "running"}
                except ray.exceptions.RayActorError as exc:
                    # The runner itself is gone (its node was lost, or it was killed): start it again, the run
                    # resumes from the job's last saved state.
                    follow.drain()
                    lost += 1
                    if stop_sent or lost > self.settings.ray_max_failures:
                        if stop_sent:
                            raise Cancelled(f"Training stopped; the state is saved in {out}.") from None
                        raise TunewiseError(f"The job's runner on the Ray cluster was lost {lost} times "
                                            f"({type(exc).__name__}); the state saved so far is kept.",
                                            code="training_failed",
                                            hint="Create the job again to continue from its last saved state, "
                                                 "or raise ray_max_failures.") from None
                    on_event(_message("The job's runner on the Ray cluster was lost; starting it again from the "
                                      "last saved state", level="warn"))
                    _forget(job_id)
                    actor = self._launch(job, config)
                    continue
                if status["state"] in ("succeeded", "failed", "stopped"):
                    follow.drain()
                    _kill(actor, job_id)
                    if status["state"] == "succeeded":
                        return TrainResult.from_dict(json.loads((out / "result.json").read_text()))
                    if status["state"] == "failed":
                        error = status["error"]
                        raise TunewiseError(error["message"], code=error.get("code") or "training_failed",
                                            param=error.get("param"))
                    raise Cancelled(f"Training stopped; the state is saved in {out}.")
                if stop_sent and time.monotonic() - stop_sent > STOP_GRACE_S:
                    _kill(actor, job_id)
                    raise Cancelled(f"Training did not stop within {STOP_GRACE_S:g} s; its runner was ended.")
            time.sleep(STOP_POLL_S)

    def _launch(self, job: dict[str, Any], config: Any):
        """A new runner actor for the job: its run starts from the job's saved state, if any."""
        out = Path(config.output_dir)
        (out / STOP_FILE).unlink(missing_ok=True)
        (out / ERROR_FILE).unlink(missing_ok=True)
        req = self._request(job)
        spec = job_spec(job, config, request=req, threads=max(1, int(resources.bundle(req).get("CPU", 1))),
                        storage=self._storage(), max_failures=self.settings.ray_max_failures)
        actor = ray.remote(JobRunner).options(
            name=actor_name(job["id"]), namespace=NAMESPACE, lifetime="detached", num_cpus=0,
            max_concurrency=4, max_restarts=0).remote(spec)
        actor.start.remote()
        return actor


class _Follower:
    """Reads the job's events file from where the last reader stopped and hands each event on."""

    def __init__(self, out: Path, on_event: Callable[[Any], None]) -> None:
        self.path = out / EVENTS_FILE
        self.mark = out / FOLLOWED_FILE
        self.on_event = on_event
        try:
            self.offset = int(json.loads(self.mark.read_text())["offset"])
        except (OSError, ValueError, KeyError):
            self.offset = 0

    def drain(self) -> None:
        from tunewise.train import TrainEvent

        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return
        end = data.rfind(b"\n")
        if end < 0:
            return  # nothing complete yet (a line being written)
        for line in data[:end].splitlines():
            if line.strip():
                d = json.loads(line)
                self.on_event(TrainEvent(d["type"], d["message"], d.get("level", "info"), d.get("data") or {}))
        self.offset += end + 1
        tmp = self.mark.with_name(f".{self.mark.name}.tmp")
        tmp.write_text(json.dumps({"offset": self.offset}))
        os.replace(tmp, self.mark)


def _message(text: str, level: str = "info"):
    from tunewise.train import TrainEvent

    return TrainEvent("message", text, level)


def _find(job_id: str):
    try:
        return ray.get_actor(actor_name(job_id), namespace=NAMESPACE)
    except ValueError:
        return None


def _kill(actor, job_id: str) -> None:
    """End the job's runner and wait (a few seconds at most) until its name is free for the job's next run."""
    try:
        ray.kill(actor, no_restart=True)
    except Exception:  # already gone
        pass
    _forget(job_id)


def _forget(job_id: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while _find(job_id) is not None and time.monotonic() < deadline:
        time.sleep(0.1)
