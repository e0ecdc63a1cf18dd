"""Every setting of ``tunewise serve`` in one place.

Each field has a default, a docstring, and an environment override named ``TUNEWISE_<FIELD>`` in upper case
(``TUNEWISE_MAX_UPLOAD_BYTES=1000000``). Command-line options (``--host``, ``--port``, ``--data-dir``) win over
the environment. Limits are named here so that the errors that enforce them can quote the setting.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tunewise import models, paths
from tunewise.errors import UsageError

# OpenAI model names a request may use; each maps to a local stand-in (the default local model unless the
# alias table says otherwise), so code written for OpenAI runs unchanged.
OPENAI_MODEL_NAMES = (
    "gpt-4o-mini-2024-07-18",
    "gpt-4o-mini",
    "gpt-4o-2024-08-06",
    "gpt-4o",
    "gpt-4.1-mini-2025-04-14",
    "gpt-4.1-mini",
    "gpt-4.1-nano-2025-04-14",
    "gpt-4.1-nano",
    "gpt-4.1-2025-04-14",
    "gpt-4.1",
    "gpt-3.5-turbo",
    "gpt-3.5-turbo-0125",
    "gpt-3.5-turbo-1106",
    "babbage-002",
    "davinci-002",
)


@dataclass
class Settings:
    host: str = "127.0.0.1"
    """Interface to listen on. Keep 127.0.0.1 unless the machine's network is trusted."""
    port: int = 8000
    """TCP port to listen on."""
    data_dir: Path = field(default_factory=lambda: paths.home() / "server")
    """Where the database (``tunewise.db``), uploaded files (``files/``), job outputs (``jobs/``) and the worker's
    lock and pid live."""
    project: str = "default"
    """Project that the key created on first start belongs to."""
    default_local_model: str = models.DEFAULT_MODEL
    """Local model that every OpenAI model name stands in for unless ``aliases`` says otherwise
    (tests use ``tunewise-tiny``)."""
    aliases: dict[str, str] = field(default_factory=dict)
    """Extra alias table, OpenAI name -> local model (registry name or model directory); JSON in the
    environment: ``TUNEWISE_ALIASES='{"gpt-4o-mini": "smollm2-135m-instruct"}'``."""
    strict_models: bool = False
    """Refuse model names that are neither local models nor in the alias table (400, param ``model``) instead
    of mapping every unknown name to ``default_local_model``."""
    max_upload_bytes: int = 512 * 1024 * 1024
    """Largest file an upload may carry (OpenAI's limit for fine-tuning files is 512 MB); over it: 413."""
    max_line_bytes: int = 4 * 1024 * 1024
    """Longest line (one training example) an uploaded JSONL file may have; over it: 400 naming the line."""
    max_upload_total_bytes: int = 8 * 1024 ** 3
    """Largest file an Upload (``POST /v1/uploads``, sent in parts) may declare (OpenAI's limit: 8 GB); over it: 400
    naming ``bytes``."""
    max_part_bytes: int = 64 * 1024 * 1024
    """Largest Part of an Upload (OpenAI's limit: 64 MB); a part body over it ends with 413."""
    upload_expiry_s: int = 3600
    """Seconds an Upload stays open for parts after it is created (OpenAI's: an hour); then it is ``expired``."""
    max_request_bytes: int = 8 * 1024 * 1024
    """Largest JSON request body (job creation, chat completions); over it: 413."""
    max_concurrent_jobs: int = 1
    """How many fine-tuning jobs the worker trains at the same time; more wait in ``queued``."""
    max_active_jobs: int = 50
    """How many unfinished jobs (validating, queued, running, paused) a project may have; over it: 429."""
    max_chat_tokens: int = 4096
    """Largest ``max_tokens`` a chat completion may ask for; also the length of an answer that gives none."""
    engine_max_batch_size: int = 8
    """How many chat completions the generation engine decodes together."""
    engine_num_threads: int = 0
    """Torch threads for generation in the server process; 0 means half the CPU cores, at least 1. On a small
    CPU every thread torch spins on is taken from the event loop and the training worker: with 2 threads on a
    2-core machine, 8 concurrent completions ran about 10x slower than with 1 (``bench/serve.py``)."""
    engine_backend: str = "auto"
    """Which generation backend runs chat completions: ``auto`` (llama.cpp for models it can run on the CPU when
    llama-cpp-python is installed, else torch), ``torch`` or ``llamacpp``. llama.cpp uses ``engine_num_threads``
    threads too."""
    engine_gguf_quant: str = "f16"
    """The GGUF the llama.cpp backend converts a model to and serves: ``f16``, ``f32``, ``q8_0`` or ``q4_k_m``
    (converted once, cached by content in the model cache)."""
    train_num_threads: int = 0
    """Torch threads for training in the worker process; 0 means half the CPU cores, at least 1. Training with
    every core's thread starves the server on a small machine (and the server's threads starve training)."""
    storage_quota_bytes: int = 0
    """Bytes of uploaded files a project may keep (its files not deleted); 0 means no quota. An upload that would
    pass it answers 413 with code ``storage_quota_exceeded``."""
    worker: bool = True
    """Whether ``tunewise serve`` starts the job worker process (off when a ``--worker-only`` process runs)."""
    worker_poll_s: float = 0.5
    """How often the worker looks for new jobs and the training loop for cancel/pause flags (seconds)."""
    python_graders: bool = False
    """Whether ``/v1/fine_tuning/alpha/graders/run`` and ``/validate`` accept ``python`` graders (alone or inside
    a ``multi``). Off: 400 with code ``python_grader_disabled``. A python grader runs the caller's code on this
    machine (in a subprocess with a time limit, not a sandbox): enable it only for callers you trust."""
    python_grader_timeout_s: float = 120.0
    """Time limit of one ``python`` grader call (seconds; OpenAI's is 2 minutes); past it the grader scores 0
    with ``python_grader_server_error``."""
    rft_max_completion_tokens: int = 256
    """The longest completion a reinforcement fine-tuning job samples in training (tokens; a longer one is cut):
    with the group size and the data it bounds a job's time."""
    grader_base_url: str = ""
    """OpenAI-compatible endpoint that ``score_model``/``label_model`` graders ask, on the grader routes and while a
    reinforcement job trains; empty: this server itself (127.0.0.1 on its port; the routes with the caller's API
    key, a job with a key of its project made for it and revoked when it ends)."""
    grader_api_key_env: str = "OPENAI_API_KEY"
    """Environment variable holding the API key for ``grader_base_url`` (unused when that is empty)."""
    wandb_mode: str = "offline"
    """How a job's ``wandb`` integration runs W&B: ``offline`` (the run is written into the job's directory;
    ``wandb sync`` uploads it) or ``online`` (needs the network and ``WANDB_API_KEY`` on the server)."""
    executor: str = "local"
    """Where jobs train: ``local`` (a thread of the worker process on this machine) or ``ray`` (each job on a Ray
    cluster through Ray Train; needs ``pip install 'tunewise[ray]'``, see docs/ray.md)."""
    ray_address: str = "auto"
    """With ``executor=ray``: the cluster to use: ``auto`` (the one ``ray start`` runs on this machine, or
    ``RAY_ADDRESS``), ``HOST:PORT`` of its head, ``ray://HOST:10001`` (Ray Client), or ``local`` (start a
    one-machine cluster inside the worker process)."""
    ray_num_workers: int = 1
    """With ``executor=ray``: training processes (Ray Train workers) per job; each trains its share of every
    batch (data parallel). A job's ``ray.num_workers`` overrides it."""
    ray_use_gpu: bool = False
    """With ``executor=ray``: whether each training worker asks for a GPU (and trains on it, NCCL between
    workers). A job's ``ray.use_gpu`` overrides it."""
    ray_resources_per_worker: dict[str, str] = field(default_factory=dict)
    """With ``executor=ray``: what each training worker asks the cluster for, JSON, e.g. ``{"CPU": 2}`` or
    ``{"CPU": 1, "accelerator_type:H100": 0.01}``; empty: 1 CPU (and 1 GPU with ``ray_use_gpu``). A job's
    ``ray.resources_per_worker`` overrides it."""
    ray_storage: str = ""
    """With ``executor=ray``: a directory that the server and every node of the cluster reach at the same path (NFS,
    a shared disk): job outputs (checkpoints, state, events) go to ``RAY_STORAGE/jobs/<job id>`` and Ray Train's
    run state to ``RAY_STORAGE/ray``. Empty: ``DATA_DIR/jobs`` and ``DATA_DIR/ray`` (enough for a cluster on this
    machine)."""
    ray_max_failures: int = 3
    """With ``executor=ray``: how often a job's training workers are restarted after one fails (a killed process,
    a lost node) before the job fails; each restart resumes from the job's last saved state."""
    log_level: str = "warning"
    """uvicorn's log level (``info`` logs every request)."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, then ``TUNEWISE_*`` variables, then ``overrides`` (those that are not None)."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = environ.get(f"TUNEWISE_{f.name.upper()}")
            if raw is not None and raw != "":
                values[f.name] = _parse(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        settings = cls(**values)
        settings.data_dir = Path(settings.data_dir).expanduser()
        for name, allowed in (("engine_backend", ("auto", "torch", "llamacpp")),
                              ("engine_gguf_quant", ("f16", "f32", "q8_0", "q4_k_m"))):
            if getattr(settings, name) not in allowed:
                raise UsageError(f"{name} must be one of {', '.join(allowed)}, not {getattr(settings, name)!r}.",
                                 hint=f"Fix or unset the environment variable TUNEWISE_{name.upper()}.")
        return settings

    def engine_threads(self) -> int:
        """``engine_num_threads`` resolved (0: half the cores, at least 1)."""
        if self.engine_num_threads > 0:
            return self.engine_num_threads
        return max(1, (os.cpu_count() or 2) // 2)

    def train_threads(self) -> int:
        """``train_num_threads`` resolved (0: half the cores, at least 1)."""
        if self.train_num_threads > 0:
            return self.train_num_threads
        return max(1, (os.cpu_count() or 2) // 2)

    def alias_table(self) -> dict[str, str]:
        """OpenAI name -> local model, the defaults first, then ``aliases``."""
        table = dict.fromkeys(OPENAI_MODEL_NAMES, self.default_local_model)
        table.update(self.aliases)
        return table

    def describe(self) -> list[dict[str, Any]]:
        """Every setting with its value and environment variable (for ``--help`` and the README)."""
        return [{"name": f.name, "env": f"TUNEWISE_{f.name.upper()}", "value": getattr(self, f.name)}
                for f in fields(self)]


def _parse(f: dataclasses.Field, raw: str) -> Any:
    kind = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    try:
        if kind == "bool":
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind == "int":
            return int(raw)
        if kind == "float":
            return float(raw)
        if kind.startswith("dict"):
            value = json.loads(raw)
            if not isinstance(value, dict):
                raise ValueError(raw)
            return {str(k): str(v) for k, v in value.items()}
        if kind == "Path":
            return Path(raw)
        return raw
    except ValueError as exc:
        raise UsageError(f"TUNEWISE_{f.name.upper()}={raw!r} is not a valid {kind}.",
                         hint=f"Fix or unset the environment variable TUNEWISE_{f.name.upper()}.") from exc
