"""What a job asks of a Ray cluster: the settings' defaults, the job's ``ray`` extension field, checked.

No Ray here: the API checks a job's ``ray`` field with these functions whatever the executor, and the local
executor never imports Ray.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from tunewise.errors import UsageError
from tunewise.serve.settings import Settings

FIELDS = ("num_workers", "use_gpu", "resources_per_worker")
MAX_WORKERS = 1024
EXAMPLE = '{"num_workers": 2, "use_gpu": false, "resources_per_worker": {"CPU": 1}}'


def _resources(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, dict):
        raise UsageError(f"{where} must be an object of resource name -> amount, like {{\"CPU\": 1}}.", param=where)
    out: dict[str, float] = {}
    for name, amount in value.items():
        try:
            number = float(amount) if not isinstance(amount, bool) else math.nan
        except (TypeError, ValueError):
            number = math.nan
        if not isinstance(name, str) or not name or not math.isfinite(number) or number < 0:
            raise UsageError(f"{where}.{name}: the amount must be a number >= 0, not {amount!r}.",
                             param=f"{where}.{name}")
        out[name] = number
    return out


def check_override(spec: Any) -> dict[str, Any] | None:
    """A job's ``ray`` field (tunewise extension) checked: ``{"num_workers", "use_gpu", "resources_per_worker"}``,
    each optional; None when not given."""
    if spec is None:
        return None
    if not isinstance(spec, dict):
        raise UsageError(f"ray must be an object, like {EXAMPLE}.", param="ray")
    unknown = sorted(set(spec) - set(FIELDS))
    if unknown:
        raise UsageError(f"Unknown ray field {unknown[0]!r}.", param=f"ray.{unknown[0]}",
                         hint="ray takes " + ", ".join(FIELDS) + ".")
    out: dict[str, Any] = {}
    if spec.get("num_workers") is not None:
        n = spec["num_workers"]
        if isinstance(n, bool) or not isinstance(n, int | float) or not float(n).is_integer() \
                or not 1 <= n <= MAX_WORKERS:
            raise UsageError(f"Invalid ray.num_workers {n!r}: expected an integer from 1 to {MAX_WORKERS}.",
                             param="ray.num_workers")
        out["num_workers"] = int(n)
    if spec.get("use_gpu") is not None:
        if not isinstance(spec["use_gpu"], bool):
            raise UsageError(f"Invalid ray.use_gpu {spec['use_gpu']!r}: expected true or false.",
                             param="ray.use_gpu")
        out["use_gpu"] = spec["use_gpu"]
    if spec.get("resources_per_worker") is not None:
        out["resources_per_worker"] = _resources(spec["resources_per_worker"], "ray.resources_per_worker")
    return out


def for_job(settings: Settings, spec: Any) -> dict[str, Any] | None:
    """A job's ``ray`` field as the API takes it: checked, None when not given (or empty); refused unless the server
    runs ``executor=ray``."""
    if spec is None:
        return None
    if settings.executor != "ray":
        raise UsageError("ray asks for resources on a Ray cluster, and this server trains on this machine "
                         f"(executor {settings.executor!r}).", param="ray",
                         hint="Leave ray out, or start the server with --executor ray (env TUNEWISE_EXECUTOR=ray).")
    return check_override(spec) or None


def check_settings(settings: Settings) -> None:
    """The ``ray_*`` settings checked (``UsageError`` naming the setting)."""
    if not 1 <= settings.ray_num_workers <= MAX_WORKERS:
        raise UsageError(f"ray_num_workers must be from 1 to {MAX_WORKERS}, not {settings.ray_num_workers}.",
                         param="ray_num_workers", hint="Set TUNEWISE_RAY_NUM_WORKERS.")
    if settings.ray_max_failures < 0:
        raise UsageError("ray_max_failures must be 0 or more.", param="ray_max_failures",
                         hint="Set TUNEWISE_RAY_MAX_FAILURES.")
    _resources(settings.ray_resources_per_worker, "ray_resources_per_worker")
    if not settings.ray_address.strip():
        raise UsageError("ray_address is empty.", param="ray_address",
                         hint="Use auto, HOST:PORT of the head node, ray://HOST:10001 or local.")
    storage = settings.ray_storage
    if storage and ("://" in storage or not Path(storage).expanduser().is_absolute()):
        raise UsageError(f"ray_storage must be an absolute directory path that every node mounts, not {storage!r}.",
                         param="ray_storage",
                         hint="Mount shared storage (NFS, a cluster file system) at the same path on the server and "
                              "every node, and name that path (TUNEWISE_RAY_STORAGE=/mnt/shared/tunewise).")


def one_process(job: dict[str, Any]) -> bool:
    """Whether the job trains in one process whatever it asks for: DPO and reinforcement fine-tuning are not data
    parallel (``tunewise.train`` runs them in one process only)."""
    try:
        kind = json.loads(job.get("method") or "{}").get("type") or "supervised"
    except (TypeError, ValueError):
        kind = "supervised"
    return kind != "supervised"


def request(settings: Settings, override: dict[str, Any] | None, job: dict[str, Any] | None = None) -> dict[str, Any]:
    """What the job asks for: the settings, then the job's ``ray`` field; one worker for a ``job`` that trains in
    one process (``one_process``), with ``asked_workers`` the number asked for."""
    out = {"num_workers": settings.ray_num_workers, "use_gpu": settings.ray_use_gpu,
           "resources_per_worker": _resources(settings.ray_resources_per_worker, "ray_resources_per_worker")}
    out.update(override or {})
    if job is not None and one_process(job) and out["num_workers"] != 1:
        out["asked_workers"], out["num_workers"] = out["num_workers"], 1
    return out


def bundle(req: dict[str, Any]) -> dict[str, float]:
    """One worker's resources as Ray Train reserves them: 1 CPU unless named, 1 GPU with use_gpu unless named."""
    per = dict(req["resources_per_worker"])
    per.setdefault("CPU", 1.0)
    if req["use_gpu"]:
        per.setdefault("GPU", 1.0)
    return {k: v for k, v in per.items() if v > 0}


def total(req: dict[str, Any]) -> dict[str, float]:
    return {k: v * req["num_workers"] for k, v in bundle(req).items()}


def fmt(resources: dict[str, float]) -> str:
    return ", ".join(f"{v:g} {k}" for k, v in sorted(resources.items())) or "nothing"


def missing(req: dict[str, Any], available: dict[str, float]) -> dict[str, float]:
    """What the cluster lacks right now for the whole job (resource -> amount short)."""
    return {k: v - available.get(k, 0.0) for k, v in total(req).items() if available.get(k, 0.0) + 1e-9 < v}


def fits_a_node(req: dict[str, Any], nodes: list[dict[str, float]]) -> bool:
    """Whether one worker's bundle fits on at least one node (by the nodes' total resources)."""
    per = bundle(req)
    return any(all(node.get(k, 0.0) + 1e-9 >= v for k, v in per.items()) for node in nodes)
