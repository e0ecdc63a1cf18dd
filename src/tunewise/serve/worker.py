"""The job worker: validates, queues and trains fine-tuning jobs from the SQLite store.

``tunewise serve`` starts it as a child process (or run it alone with ``tunewise serve --worker-only``).
One worker per data directory holds ``worker.lock``; a second one waits for it. Each running job has a thread
of this process, which hands the training to the executor the settings name (``tunewise.serve.executors``: by
default ``local``, ``tunewise.train.train`` in that thread; or ``ray``, the same trainer on a Ray cluster) with a
``stop`` callable that reads the job's status:
the API's cancel and pause change that status, and a shutdown (SIGTERM, or the parent server dying) stops
the trainer, which saves a resumable state. On start, every job still marked ``running`` is an orphan of a
worker that died, and is resumed from that saved state (the trainer resumes when given the same output dir).

A job with an eval set (the ``eval`` extension of job creation) has each checkpoint scored as it is saved, in
the job's thread (training waits: both would share the same few cores anyway, and the checkpoint cannot be
pruned while it is read). One generation engine serves every job of the process; it is created on first use.

A reinforcement job whose grader asks a model (``score_model``) asks ``grader_base_url``, or, when that is empty,
this server (the parent process, which answers chat completions while this one trains) with an API key of the
job's project made for the job and revoked once the job has ended (``JUDGE_KEY_FILE``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import select
import shutil
import signal
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from tunewise.errors import Cancelled, TunewiseError
from tunewise.serve import naming
from tunewise.serve.settings import Settings
from tunewise.serve.store import ACTIVE, Store, new_id, now

log = logging.getLogger("tunewise.serve.worker")


class Worker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = Store(settings.data_dir)
        self.shutdown = threading.Event()
        """Set by the main loop once it sees a stop request; the job threads' ``stop`` reads it."""
        # A stop request from a signal handler: a plain flag and a byte down a pipe, never a lock (a handler
        # that calls Event.set() can deadlock on the lock of the very Event.wait() it interrupted).
        self._stop_requested = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_w, False)
        self.active: dict[str, threading.Thread] = {}
        from tunewise.serve.executors import pick

        self.executor = pick(settings, self.shutdown)
        """Where jobs train (setting ``executor``): this process's threads, or a Ray cluster."""
        self._engine: Any = None
        self._engine_lock = threading.Lock()
        # The latest step's metrics event data per job: the scoring event of that step repeats it (see _score).
        self._last_metrics: dict[str, dict[str, Any]] = {}
        self._reported_step: dict[str, int] = {}  # per job: the last step whose metrics event is recorded

    def engine(self):
        """The process's generation engine for scoring checkpoints, created on first use (loading torch and a
        model costs seconds, and most jobs have no eval set). Two models stay loaded: the base model and the
        newest checkpoint's adapter; older checkpoints are not scored again."""
        with self._engine_lock:
            if self._engine is None:
                from tunewise.infer import Engine

                self._engine = Engine(max_batch_size=8, num_threads=self.settings.engine_threads(),
                                      max_loaded_models=2, backend=self.settings.engine_backend,
                                      gguf_quant=self.settings.engine_gguf_quant)
            return self._engine

    # -- stopping -----------------------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Ask the worker to stop; safe from a signal handler and from any thread (takes no lock)."""
        self._stop_requested = True
        try:
            os.write(self._wake_w, b"x")
        except (BlockingIOError, OSError):  # the pipe is full (already woken) or closed: the flag suffices
            pass

    def _sleep(self, seconds: float) -> bool:
        """Sleep up to ``seconds`` or until a stop is requested; returns whether one was."""
        if self._stop_requested or self.shutdown.is_set():
            return True
        try:
            ready, _, _ = select.select([self._wake_r], [], [], seconds)
        except InterruptedError:  # pragma: no cover - Python retries select after a signal (PEP 475)
            ready = []
        if ready:
            try:
                os.read(self._wake_r, 4096)
            except (BlockingIOError, OSError):
                pass
        return self._stop_requested or self.shutdown.is_set()

    # -- main loop ----------------------------------------------------------------------------------------
    def run(self, parent_pid: int | None = None) -> None:
        """Work until a stop is requested (``request_stop``, SIGTERM) or the parent process is gone; then stop
        the jobs (each saves its state) and return."""
        lock = open(self.store.data_dir / "worker.lock", "w")  # noqa: SIM115 - held for the process's life
        while True:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if self._sleep(0.2):
                    lock.close()
                    return
        # Record who holds the lock, for operators (and tests) that need the worker's pid.
        (self.store.data_dir / "worker.pid").write_text(str(os.getpid()))
        release_judge_keys(self.store)  # of jobs that ended while no worker ran them (a paused job cancelled)
        log.info("worker %s started on %s", os.getpid(), self.store.data_dir)
        try:
            while not self._stop_requested and not self.shutdown.is_set():
                if parent_pid is not None and os.getppid() != parent_pid:
                    log.warning("parent server %s is gone; stopping", parent_pid)
                    break
                self.tick()
                self._sleep(self.settings.worker_poll_s)
        finally:
            self.shutdown.set()  # in the main thread, never in a signal handler
            for thread in list(self.active.values()):
                thread.join(timeout=120)
            if self._engine is not None:
                self._engine.close()
            self.executor.close()
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()

    def tick(self) -> None:
        """One pass: reap finished threads, validate new jobs, start runnable ones up to the limit."""
        for job_id, thread in list(self.active.items()):
            if not thread.is_alive():
                del self.active[job_id]
                purge_deleted_files(self.store)
                release_judge_keys(self.store)
        for job in self.store.all("SELECT * FROM jobs WHERE status = 'validating_files' ORDER BY seq"):
            self.validate(job)
        # Jobs marked running but not ours were interrupted by a crash or a restart: they go first.
        candidates = self.store.all(
            "SELECT * FROM jobs WHERE status IN ('running', 'queued') "
            "ORDER BY CASE status WHEN 'running' THEN 0 ELSE 1 END, seq")
        for job in candidates:
            if job["id"] in self.active:
                continue
            if len(self.active) >= self.settings.max_concurrent_jobs:
                break
            thread = threading.Thread(target=self.run_job, args=(job,), name=f"job-{job['id']}", daemon=True)
            self.active[job["id"]] = thread
            thread.start()

    # -- validation ---------------------------------------------------------------------------------------
    def _file_path(self, file_id: str | None, param: str = "training_file", *, started: bool = False) -> Path | None:
        """The file's path. A job that has ``started`` keeps using a file deleted through the API since: its bytes
        stay while the job is unfinished (``files.delete_file`` leaves them, ``purge_deleted_files`` removes them
        once no started job needs them). A job not started yet fails instead, as OpenAI's does."""
        if not file_id:
            return None
        from tunewise.serve.routes.files import LIVE

        row = self.store.one("SELECT path FROM files WHERE id = ?" + ("" if started else f" AND {LIVE}"), file_id)
        if row is None or not Path(row["path"]).is_file():
            raise _JobError("invalid_file", f"File {file_id} was deleted (or expired) before the job could use it.",
                            param)
        return Path(row["path"])

    def validate(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        try:
            for param in ("training_file", "validation_file"):
                path = self._file_path(job[param], param)
                if path is None:
                    continue
                report = _validate_file(path, job["model"], _method_kind(job), _grader_of(job))
                problems = [f for f in report.findings if f.severity == "error"]
                if problems:
                    detail = "; ".join(f"line {f.line}: {f.message}" if f.line else f.message
                                       for f in problems[:5])
                    raise _JobError(problems[0].code or f"invalid_{param}",
                                    f"The job failed due to an invalid {param.replace('_', ' ')}: {detail}", param)
                for f in report.findings:
                    if f.severity == "warning":
                        where = f"line {f.line}: " if f.line else ""
                        self.store.add_event(job_id, f"{param.replace('_', ' ').capitalize()} warning: "
                                             f"{where}{f.message}", level="warn")
            if job.get("eval"):
                self._check_eval(job_id, json.loads(job["eval"]))
            hyper = json.loads(job["hyperparameters"])
            n = _count_examples(self._file_path(job["training_file"]))
            hyper = _resolve_auto(hyper, n)
            method = _method_echo(dict(job, _training_path=str(self._file_path(job["training_file"]))), hyper)
        except _JobError as exc:
            self.fail(job_id, exc.code, exc.message, exc.param, only_if=("validating_files",))
            return
        except Exception as exc:  # the validator itself broke: fail the job, keep the worker alive
            log.exception("validating %s", job_id)
            self.fail(job_id, "internal_error", f"Validation failed: {type(exc).__name__}: {exc}", None,
                      only_if=("validating_files",))
            return
        if self.store.set_job(job_id, only_if_status=("validating_files",), status="queued",
                              hyperparameters=hyper, method=method):
            self.store.add_event(job_id, "Files validated, moving job to queued state")

    def _check_eval(self, job_id: str, spec: dict[str, Any]) -> None:
        """Read the eval set once up front, so a bad one is reported before training rather than at each
        checkpoint. It never fails the job: the eval set informs, training is what was asked for."""
        from tunewise.eval.runner import load_examples

        try:
            n = len(load_examples(self._file_path(spec["file"], "eval.file"), spec.get("limit")))
        except (_JobError, TunewiseError) as exc:
            self.store.add_event(job_id, f"Eval file warning: {str(exc).rstrip('.')}; the checkpoints will not "
                                 "be scored", level="warn")
            return
        self.store.add_event(job_id, f"Eval file validated: {n} examples will be scored at each checkpoint")

    def fail(self, job_id: str, code: str, message: str, param: str | None,
             only_if: tuple[str, ...] = ("validating_files", "queued", "running")) -> None:
        if self.store.set_job(job_id, only_if_status=only_if, status="failed", finished_at=now(),
                              estimated_finish=None, error={"code": code, "message": message, "param": param}):
            self.store.add_event(job_id, message, level="error")

    # -- training -----------------------------------------------------------------------------------------
    def run_job(self, job: dict[str, Any]) -> None:
        job_id = job["id"]
        store = self.store
        resuming = job["status"] == "running" or job["started_at"] is not None
        if job["status"] == "queued" and not self.executor.wait_until_runnable(
                job, lambda: not self.shutdown.is_set() and store.job_status(job_id) == "queued",
                lambda message, level="info": store.add_event(job_id, message, level=level)):
            return
        if not store.set_job(job_id, only_if_status=("queued", "running"), status="running",
                             started_at=job["started_at"] or now()):
            return
        ft_name = naming.fine_tuned_name(naming.root_base(job["model"]), job["project"], job["suffix"], job_id)
        if resuming:
            store.add_event(job_id, "Fine-tuning job resumed from its last saved state")
        else:
            store.add_event(job_id, "Fine-tuning job started")
            store.add_event(job_id, f"Training the local model '{job['local_model']}' (LoRA) {self._where(job)}"
                            + (f", continuing '{job['parent_model']}' from its adapter" if job.get("parent_model")
                               else f" as a stand-in for '{job['model']}'" if job["model"] != job["local_model"]
                               else ""))
        last_check = [0.0, False]
        # A resumed job trains again the steps after its last saved state: their metrics events are already
        # there, once each (the dashboard and `jobs watch` read one per step).
        row = store.one("SELECT MAX(CAST(json_extract(data, '$.step') AS INTEGER)) AS step FROM events "
                        "WHERE job_id = ? AND type = 'metrics' AND message LIKE 'Step %'", job_id)
        self._reported_step[job_id] = int(row["step"]) if row and row["step"] is not None else 0

        def stop() -> bool:
            if self.shutdown.is_set():
                return True
            # The trainer asks every step; the database is read at most every worker_poll_s.
            if time.monotonic() - last_check[0] >= self.settings.worker_poll_s:
                last_check[0] = time.monotonic()
                last_check[1] = store.job_status(job_id) != "running"
            return last_check[1]

        eval_spec = json.loads(job["eval"]) if job.get("eval") else None

        def stopped() -> bool:
            """Fresh from the database: scoring takes long enough that a cancel or pause must not wait."""
            return self.shutdown.is_set() or store.job_status(job_id) != "running"

        from tunewise.serve.integrations import Sinks

        sinks = Sinks(json.loads(job["integrations"]) if job.get("integrations") else [], Path(job["output_dir"]),
                      job_id, {"model": job["model"], **json.loads(job["hyperparameters"])},
                      lambda message: store.add_event(job_id, message, level="warn"),
                      wandb_mode=self.settings.wandb_mode)

        def on_event(event: Any) -> None:
            try:
                self._record(job_id, ft_name, event)
            except Exception:  # a bad event must not kill the training
                log.exception("recording an event of %s", job_id)
            if event.type == "metrics" and event.data:
                sinks.log(event.data)
            if event.type == "checkpoint" and eval_spec:
                data = event.data or {}
                self._score(job_id, int(data["step"]), str(data.get("path", "")), eval_spec, stopped)

        if eval_spec and resuming:
            # A checkpoint saved just before a pause, cancel or crash was not scored: score it now.
            for row in store.all("SELECT step, path, metrics FROM checkpoints WHERE job_id = ? ORDER BY step",
                                 job_id):
                if "eval_n" not in json.loads(row["metrics"]) and Path(row["path"]).is_dir():
                    self._score(job_id, row["step"], row["path"], eval_spec, stopped)

        try:
            try:
                result = self.executor.run(job, self._train_config(job), on_event, stop)
            finally:
                sinks.close()
        except Cancelled:
            if self.shutdown.is_set() and store.job_status(job_id) == "running":
                store.add_event(job_id, "The worker is stopping; " + (
                    "the job goes on on the Ray cluster and is followed again when the worker restarts"
                    if self.executor.name == "ray" else "the job will resume from its last saved state"))
            return
        except _JobError as exc:
            self.fail(job_id, exc.code, exc.message, exc.param)
            return
        except TunewiseError as exc:
            self.fail(job_id, exc.code or "training_failed", f"Fine-tuning failed: {exc}", exc.param)
            return
        except Exception as exc:
            log.error("job %s failed:\n%s", job_id, traceback.format_exc())
            self.fail(job_id, "internal_error", f"Fine-tuning failed: {type(exc).__name__}: {exc}", None)
            return
        finally:
            self._last_metrics.pop(job_id, None)
            self._reported_step.pop(job_id, None)
            release_judge_key(store, job)  # once the job has ended (a paused or stopping one keeps its key)
        self.finish(job, ft_name, result)
        release_judge_key(store, job)

    def _where(self, job: dict[str, Any]) -> str:
        if self.executor.name != "ray":
            return "on this machine"
        from tunewise.serve.executors import resources

        req = resources.request(self.settings, json.loads(job["ray"]) if job.get("ray") else None, job)
        n = req["num_workers"]
        return (f"on the Ray cluster ({n} worker{'s' if n != 1 else ''} of "
                f"{resources.fmt(resources.bundle(req))}"
                + (f"; {_method_kind(job)} trains in one process, not on the {req['asked_workers']} workers asked for"
                   if req.get("asked_workers") else "") + ")")

    def _train_config(self, job: dict[str, Any]):
        from tunewise.train import TrainConfig

        hyper = json.loads(job["hyperparameters"])
        kind = _method_kind(job)
        beta = (json.loads(job["method"]).get("dpo") or {}).get("hyperparameters", {}).get("beta", "auto") \
            if kind == "dpo" else "auto"
        rft: dict[str, Any] = {}
        if kind == "reinforcement":
            section = json.loads(job["method"]).get("reinforcement") or {}
            asked = section.get("hyperparameters") or {}
            rft = {"grader": section.get("grader"), **{k: asked.get(k, "auto") for k in
                                                        ("compute_multiplier", "eval_interval", "eval_samples")},
                   "reasoning_effort": asked.get("reasoning_effort") or "default",
                   "max_completion_tokens": self.settings.rft_max_completion_tokens}
            from tunewise.train.methods.grpo import uses_model

            if rft["grader"] is not None and uses_model(rft["grader"]):
                rft.update(zip(("grader_base_url", "grader_api_key"), self._judge(job), strict=True))
        return TrainConfig(
            objective={"dpo": "dpo", "reinforcement": "grpo"}.get(kind, "sft"), beta=beta, **rft,
            training_file=self._file_path(job["training_file"], started=True),
            validation_file=self._file_path(job["validation_file"], "validation_file", started=True),
            model=job["local_model"], method="lora",
            n_epochs=hyper.get("n_epochs", "auto"), batch_size=hyper.get("batch_size", "auto"),
            learning_rate_multiplier=hyper.get("learning_rate_multiplier", "auto"),
            seed=job["seed"], suffix=job["suffix"], output_dir=job["output_dir"],
            init_adapter=job.get("init_path"), parent_model=job.get("parent_model"))

    def _judge(self, job: dict[str, Any]) -> tuple[str, str | None]:
        """The judge endpoint and key for a job whose grader asks a model: ``grader_base_url`` with the key in
        ``grader_api_key_env``, or (setting empty) this server itself, as the grader routes ask it, with a key of
        the job's project made for the job (``JUDGE_KEY_FILE`` in its output directory, revoked when it ends)."""
        settings = self.settings
        if settings.grader_base_url:
            return settings.grader_base_url, os.environ.get(settings.grader_api_key_env) or None
        host = settings.host if settings.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        return f"http://{host}:{settings.port}/v1", self._judge_key(job)

    def _judge_key(self, job: dict[str, Any]) -> str:
        """The job's own API key for asking this server: the one made for it before while it is still active (a
        resumed job, or one followed again on the Ray cluster, keeps it), else a new one."""
        from tunewise.serve import auth

        path = Path(job["output_dir"]) / JUDGE_KEY_FILE
        try:
            saved = json.loads(path.read_text())
            if self.store.one("SELECT 1 AS x FROM keys WHERE id = ? AND hash = ? AND revoked_at IS NULL",
                              saved["id"], auth.hash_key(saved["secret"])):
                return saved["secret"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
        key_id, secret = auth.create_key(self.store, job["project"])
        path.parent.mkdir(parents=True, exist_ok=True)
        auth.write_secret_json(path, {"id": key_id, "secret": secret})
        return secret

    def _record(self, job_id: str, ft_name: str, event: Any) -> None:
        store, data = self.store, dict(event.data or {})
        if event.type == "metrics":
            step, total = data.get("step"), data.get("total_steps")
            if isinstance(step, int) and step <= self._reported_step.get(job_id, 0):
                self._last_metrics[job_id] = {k: v for k, v in data.items() if v is not None}
                return
            if isinstance(step, int):
                self._reported_step[job_id] = step
            message = f"Step {step}/{total}: training loss={_fmt(data.get('train_loss'))}"
            if data.get("valid_loss") is not None:
                message += f", validation loss={_fmt(data.get('valid_loss'))}"
            data = {k: v for k, v in data.items() if v is not None}
            store.add_event(job_id, message, type="metrics", data=data)
            self._last_metrics[job_id] = data
            values: dict[str, Any] = {}
            if data.get("trained_tokens") is not None:
                values["trained_tokens"] = int(data["trained_tokens"])
            if data.get("eta_s") is not None:
                values["estimated_finish"] = now() + int(data["eta_s"])
            if values:
                store.set_job(job_id, only_if_status=("running",), **values)
        elif event.type == "checkpoint":
            step = int(data["step"])
            metrics = _checkpoint_metrics(step, data.get("metrics") or {})
            # A resumed job may save a step again: its new training metrics win, its eval scores stay.
            store.db.execute(
                "INSERT INTO checkpoints (id, job_id, step, model, path, metrics, created_at) VALUES (?,?,?,?,?,?,?) "
                "ON CONFLICT (job_id, step) DO UPDATE SET path = excluded.path, "
                "metrics = json_patch(checkpoints.metrics, excluded.metrics)",
                (new_id("ftckpt-"), job_id, step, naming.checkpoint_name(ft_name, step), str(data.get("path", "")),
                 json.dumps(metrics), now()))
            store.add_event(job_id, f"Checkpoint created at step {step}")
        else:
            level = {"warning": "warn"}.get(event.level, event.level)
            store.add_event(job_id, event.message, level=level if level in ("info", "warn", "error") else "info")

    def _score(self, job_id: str, step: int, path: str, spec: dict[str, Any], stopped: Any) -> None:
        """Score one checkpoint on the job's eval set: its metrics gain ``eval_*``, the job a ``metrics`` event.

        Never raises: a scoring failure is a warning event, the training goes on.
        """
        from tunewise.eval.checkpoint import DEFAULT_MAX_TOKENS, score_checkpoint

        store = self.store
        if stopped():  # cancelled, paused or shutting down: stop now, not after a minute of generation
            return
        try:
            scores = score_checkpoint(path, self._file_path(spec["file"], "eval.file", started=True),
                                      schema=spec.get("schema"),
                                      limit=spec.get("limit"), engine=self.engine(),
                                      max_tokens=spec.get("max_tokens") or DEFAULT_MAX_TOKENS)
        except _JobError as exc:
            store.add_event(job_id, f"Checkpoint at step {step} was not scored: {exc.message}", level="warn")
            return
        except Exception as exc:
            log.warning("scoring step %s of %s:\n%s", step, job_id, traceback.format_exc())
            store.add_event(job_id, f"Checkpoint at step {step} was not scored: {type(exc).__name__}: {exc}",
                            level="warn")
            return
        values = {f"eval_{k}": float(scores[k]) for k in ("valid_json", "schema_adherence", "exact_match")
                  if isinstance(scores.get(k), int | float)}
        values["eval_n"] = int(scores["n"])
        store.db.execute("UPDATE checkpoints SET metrics = json_patch(metrics, ?) WHERE job_id = ? AND step = ?",
                         (json.dumps(values), job_id, step))
        parts = [f"{label} {values[key]:.0%}" for key, label in (
            ("eval_valid_json", "valid JSON"), ("eval_schema_adherence", "schema adherence"),
            ("eval_exact_match", "exact match")) if key in values]
        # Clients keep one metrics event per step, the newest (the dashboard's charts, `jobs watch`): this one
        # repeats the step's training metrics so that keeping it loses nothing.
        last = self._last_metrics.get(job_id) or {}
        data = {**(last if last.get("step") == step else {}), "step": step, **values}
        store.add_event(job_id, f"Checkpoint at step {step} scored on the eval set ({values['eval_n']} examples): "
                        + ", ".join(parts), type="metrics", data=data)

    def finish(self, job: dict[str, Any], ft_name: str, result: Any) -> None:
        job_id, store = job["id"], self.store
        # The metrics CSV becomes a result file of the project, like OpenAI's step_metrics.csv.
        file_id = new_id("file-")
        target = store.files_dir / f"{file_id}.csv"
        shutil.copyfile(result.metrics_csv, target)
        os.chmod(target, 0o600)
        data = target.read_bytes()
        kept = {int(c["step"]) for c in result.checkpoints}
        hyper = {k: result.hyperparameters[k] for k in ("batch_size", "learning_rate_multiplier", "n_epochs")
                 if k in result.hyperparameters}
        with store.transaction() as db:
            status = db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()["status"]
            if status != "running":  # cancelled or paused at the very end: the API's word stands
                target.unlink(missing_ok=True)
                return
            db.execute("INSERT INTO files (id, project, filename, purpose, bytes, sha256, path, created_at) "
                       "VALUES (?,?,?,?,?,?,?,?)", (file_id, job["project"], "step_metrics.csv",
                                                    "fine-tune-results", len(data), hashlib.sha256(data).hexdigest(),
                                                    str(target), now()))
            # A checkpoint already recorded keeps its metrics (its eval scores among them): only its path updates.
            for c in result.checkpoints:
                step = int(c["step"])
                db.execute(
                    "INSERT INTO checkpoints (id, job_id, step, model, path, metrics, created_at) "
                    "VALUES (?,?,?,?,?,?,?) ON CONFLICT (job_id, step) DO UPDATE SET path = excluded.path",
                    (new_id("ftckpt-"), job_id, step, naming.checkpoint_name(ft_name, step), str(c["path"]),
                     json.dumps(_checkpoint_metrics(step, c.get("metrics") or {})), now()))
            # Checkpoints the trainer pruned (it keeps the last few) are gone from disk: forget them too.
            for row in db.execute("SELECT step FROM checkpoints WHERE job_id = ?", (job_id,)).fetchall():
                if row["step"] not in kept:
                    db.execute("DELETE FROM checkpoints WHERE job_id = ? AND step = ?", (job_id, row["step"]))
            db.execute("INSERT INTO models (id, project, job_id, base, local_model, path, created_at, parent) "
                       "VALUES (?,?,?,?,?,?,?,?)", (ft_name, job["project"], job_id, naming.root_base(job["model"]),
                                                    job["local_model"], str(result.model_dir), now(),
                                                    job.get("parent_model")))
            db.execute("UPDATE jobs SET status = 'succeeded', fine_tuned_model = ?, result_files = ?, "
                       "trained_tokens = ?, hyperparameters = ?, method = ?, finished_at = ?, estimated_finish = NULL "
                       "WHERE id = ?",
                       (ft_name, json.dumps([file_id]), int(result.trained_tokens), json.dumps(hyper),
                        json.dumps(_method_echo(job, hyper, result.hyperparameters.get("beta"))), now(), job_id))
        store.add_event(job_id, f"New fine-tuned model created: {ft_name}")
        store.add_event(job_id, "The job has successfully completed")


JUDGE_KEY_FILE = "judge-key.json"
"""In a job's output directory (0600): the API key made for the job's judge calls to this server, while it runs."""


def release_judge_key(store: Store, job: dict[str, Any]) -> bool:
    """Revoke the key made for the job's judge calls once the job has ended (succeeded, failed, cancelled);
    returns whether one was."""
    from tunewise.serve.store import TERMINAL

    path = Path(job["output_dir"]) / JUDGE_KEY_FILE if job.get("output_dir") else None
    if path is None or not path.is_file() or store.job_status(job["id"]) not in TERMINAL:
        return False
    try:
        key_id = json.loads(path.read_text())["id"]
    except (OSError, ValueError, KeyError, TypeError):
        key_id = None
    if key_id:
        store.db.execute("UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL", (now(), key_id))
    path.unlink(missing_ok=True)
    return True


def release_judge_keys(store: Store) -> int:
    """``release_judge_key`` for every ended job that still holds a key file; returns how many were released."""
    from tunewise.serve.store import TERMINAL

    marks = ",".join("?" * len(TERMINAL))
    rows = store.all(f"SELECT id, output_dir FROM jobs WHERE status IN ({marks}) AND output_dir IS NOT NULL",
                     *TERMINAL)
    return sum(release_judge_key(store, row) for row in rows if (Path(row["output_dir"]) / JUDGE_KEY_FILE).is_file())


def purge_deleted_files(store: Store) -> int:
    """Remove the bytes of files deleted through the API (or past their ``expires_at``) that no started, unfinished
    job uses any more; returns how many were removed."""
    active = ",".join("?" * len(ACTIVE))
    rows = store.all(
        "SELECT id, path FROM files WHERE (deleted_at IS NOT NULL OR expires_at <= CAST(strftime('%s','now') AS "
        "INTEGER)) AND id NOT IN "
        f"(SELECT training_file FROM jobs WHERE status IN ({active}) AND started_at IS NOT NULL UNION "
        f"SELECT validation_file FROM jobs WHERE status IN ({active}) AND started_at IS NOT NULL AND "
        f"validation_file IS NOT NULL UNION SELECT json_extract(eval, '$.file') FROM jobs WHERE status IN "
        f"({active}) AND started_at IS NOT NULL AND eval IS NOT NULL)", *ACTIVE, *ACTIVE, *ACTIVE)
    removed = 0
    for row in rows:
        path = Path(row["path"])
        if path.is_file():
            path.unlink(missing_ok=True)
            removed += 1
    return removed


class _JobError(Exception):
    def __init__(self, code: str, message: str, param: str | None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else str(value)


def _checkpoint_metrics(step: int, metrics: dict[str, Any]) -> dict[str, Any]:
    """The metrics OpenAI's checkpoint object names, numbers only."""
    names = ("train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy",
             "full_valid_loss", "full_valid_mean_token_accuracy")
    out: dict[str, Any] = {"step": step}
    out.update({k: float(metrics[k]) for k in names if isinstance(metrics.get(k), int | float)})
    return out


def _count_examples(path: Path | None) -> int:
    if path is None:
        return 0
    with open(path, "rb") as f:
        return sum(1 for line in f if line.strip())


def _method_kind(job: dict[str, Any]) -> str:
    """``supervised``, ``dpo`` or ``reinforcement``: the job's ``method.type``."""
    try:
        return json.loads(job.get("method") or "{}").get("type") or "supervised"
    except ValueError:
        return "supervised"


def _method_echo(job: dict[str, Any], hyper: dict[str, Any], beta: float | None = None) -> dict[str, Any]:
    """The job's ``method`` with ``hyper`` (numbers for ``auto``): DPO's keeps its beta, resolved when known."""
    kind = _method_kind(job)
    if kind == "reinforcement":
        return _rft_echo(job, hyper)
    if kind != "dpo":
        return {"type": "supervised", "supervised": {"hyperparameters": hyper}}
    from tunewise.train.methods.dpo import resolve_beta

    asked = (json.loads(job["method"]).get("dpo") or {}).get("hyperparameters", {}).get("beta", "auto")
    return {"type": "dpo", "dpo": {"hyperparameters": {"beta": beta if beta is not None else resolve_beta(asked),
                                                       **hyper}}}


def _grader_of(job: dict[str, Any]) -> dict[str, Any] | None:
    """A reinforcement job's grader (None for the other methods)."""
    if _method_kind(job) != "reinforcement":
        return None
    return (json.loads(job["method"]).get("reinforcement") or {}).get("grader")


def _rft_echo(job: dict[str, Any], hyper: dict[str, Any]) -> dict[str, Any]:
    """A reinforcement job's ``method``: its grader and every hyperparameter, ``auto`` resolved by the trainer's
    rules (``tunewise.train.methods.grpo.resolve``) once the batch size is known."""
    from tunewise.train.methods.grpo import AUTO_EVAL_SAMPLES

    section = json.loads(job["method"]).get("reinforcement") or {}
    asked = dict(section.get("hyperparameters") or {})
    out = dict(asked, **hyper)
    if out.get("compute_multiplier", "auto") == "auto":
        out["compute_multiplier"] = 1.0
    if out.get("eval_samples", "auto") == "auto":
        out["eval_samples"] = AUTO_EVAL_SAMPLES
    if out.get("eval_interval", "auto") == "auto" and isinstance(hyper.get("batch_size"), int):
        n = _count_examples(Path(job["_training_path"])) if job.get("_training_path") else None
        if n:
            out["eval_interval"] = max(1, -(-n // hyper["batch_size"]))  # the steps of one epoch
    out.setdefault("reasoning_effort", "default")
    return {"type": "reinforcement", "reinforcement": {"grader": section.get("grader"), "hyperparameters": out}}


def _resolve_auto(hyper: dict[str, Any], n_examples: int) -> dict[str, Any]:
    """Numbers for ``auto`` hyperparameters by the trainer's own rules (OpenAI's), as the job object shows."""
    from tunewise.train.config import auto_batch_size, auto_n_epochs

    hyper = dict(hyper)
    if n_examples > 0:
        if hyper.get("n_epochs") == "auto":
            hyper["n_epochs"] = auto_n_epochs(n_examples)
        if hyper.get("batch_size") == "auto":
            hyper["batch_size"] = min(auto_batch_size(n_examples), n_examples)
    if hyper.get("learning_rate_multiplier") == "auto":
        hyper["learning_rate_multiplier"] = 1.0
    return hyper


def _validate_file(path: Path, model: str, kind: str = "supervised", grader: dict[str, Any] | None = None):
    """The validator's report, with OpenAI's limits for ``model`` when the catalog knows it (else its default);
    a DPO job's files are checked as preference data, a reinforcement job's as prompts for its grader."""
    from tunewise.data import validate
    from tunewise.errors import NotFound

    data_format = {"dpo": "preference", "reinforcement": "reinforcement"}.get(kind)
    try:
        return validate(path, model=model, data_format=data_format, grader=grader)
    except NotFound:
        return validate(path, data_format=data_format, grader=grader)


def set_parent_death_signal(sig: int = signal.SIGTERM) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (used as a ``preexec_fn``)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, sig)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: the worker's parent-pid check still stops it within worker_poll_s
        pass


def run_worker(settings: Settings, parent_pid: int | None = None) -> None:
    """Run a worker in this process until SIGTERM/SIGINT (or the parent dies)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s worker %(levelname)s %(message)s")
    _limit_train_threads(settings)
    worker = Worker(settings)
    signals = [0]

    def on_signal(signum: int, frame: Any) -> None:
        # No locks here (see Worker.request_stop). A second signal while stopping ends the process at once:
        # the kernel frees worker.lock, and the jobs resume from their last periodic save.
        signals[0] += 1
        if signals[0] > 1:
            os._exit(128 + signum)
        worker.request_stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    worker.run(parent_pid=parent_pid)


def _limit_train_threads(settings: Settings) -> None:
    """Torch threads for training in this process (``train_num_threads``): with every core's thread on a
    machine the server shares, training and serving slow each other down."""
    n = settings.train_threads()
    os.environ.setdefault("OMP_NUM_THREADS", str(n))
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return
    torch.set_num_threads(n)
