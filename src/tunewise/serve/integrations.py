"""A job's ``integrations``: where its training metrics also go, besides its events.

``wandb`` (OpenAI's): ``{"type": "wandb", "wandb": {"project", "name", "entity", "tags"}}``. The metrics go to a
Weights & Biases run in the job's directory (``jobs/<id>/wandb``), offline unless the server's ``wandb_mode``
setting is ``online`` (a tunewise server sends nothing anywhere by default); ``wandb sync`` uploads an offline run.
``tensorboard`` (a tunewise extension): ``{"type": "tensorboard"}``; TensorBoard event files in
``jobs/<id>/tensorboard`` (``tensorboard --logdir``). Each needs its package (``pip install 'tunewise[integrations]'``):
a job that asks for one that is not installed is refused (400), never run without it. A failure while logging is
a warning event of the job, not a failed job.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from tunewise.errors import UsageError

log = logging.getLogger("tunewise.serve")

TYPES = {"wandb": "wandb", "tensorboard": "tensorboard"}
"""Integration type -> the package it needs."""
MAX_INTEGRATIONS = 4
MAX_TAGS = 32
MAX_TEXT = 256
NOT_METRICS = ("step", "total_steps", "epoch", "elapsed_s", "eta_s")


def _text(value: Any, param: str, required: bool = False) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > MAX_TEXT or any(ord(c) < 32 for c in value):
        raise UsageError(f"{param} must be a string of 1 to {MAX_TEXT} characters.", param=param)
    return value


def check(integrations: list[Any] | None) -> list[dict[str, Any]]:
    """The request's ``integrations``, checked and normalised (400 naming the field otherwise)."""
    if not integrations:
        return []
    if len(integrations) > MAX_INTEGRATIONS:
        raise UsageError(f"integrations has {len(integrations)} entries; at most {MAX_INTEGRATIONS}.",
                         param="integrations")
    out = []
    for i, item in enumerate(integrations):
        param = f"integrations[{i}]"
        if not isinstance(item, dict) or item.get("type") not in TYPES:
            raise UsageError(f"{param}.type must be one of {', '.join(TYPES)}.", param=f"{param}.type")
        kind = item["type"]
        if importlib.util.find_spec(TYPES[kind]) is None:
            raise UsageError(f"The {kind} integration needs the '{TYPES[kind]}' package, which this server does not "
                             "have.", hint="Install it on the server (pip install 'tunewise[integrations]') or leave "
                             "the integration out.", code="integration_unavailable", param=f"{param}.type")
        if kind == "wandb":
            spec = item.get("wandb")
            if not isinstance(spec, dict):
                raise UsageError(f"{param}.wandb must be an object with at least `project`.", param=f"{param}.wandb")
            tags = spec.get("tags") or []
            if not isinstance(tags, list) or len(tags) > MAX_TAGS:
                raise UsageError(f"{param}.wandb.tags must be a list of at most {MAX_TAGS} strings.",
                                 param=f"{param}.wandb.tags")
            out.append({"type": "wandb", "wandb": {
                "project": _text(spec.get("project"), f"{param}.wandb.project", required=True),
                "name": _text(spec.get("name"), f"{param}.wandb.name"),
                "entity": _text(spec.get("entity"), f"{param}.wandb.entity"),
                "tags": [_text(t, f"{param}.wandb.tags", required=True) for t in tags]}})
        else:
            out.append({"type": "tensorboard", "tensorboard": {"log_dir": "tensorboard"}})
    return out


class Sinks:
    """The open writers of one job's integrations; ``warn(message)`` reports a failure as a job event."""

    def __init__(self, integrations: list[dict[str, Any]], output_dir: Path, job_id: str, config: dict[str, Any],
                 warn: Any, wandb_mode: str = "offline") -> None:
        self.warn = warn
        self.writers: list[tuple[str, Any]] = []
        for item in integrations:
            try:
                if item["type"] == "tensorboard":
                    from torch.utils.tensorboard import SummaryWriter

                    self.writers.append(("tensorboard", SummaryWriter(log_dir=str(output_dir / "tensorboard"))))
                elif item["type"] == "wandb":
                    import wandb

                    spec = item["wandb"]
                    folder = output_dir / "wandb"
                    folder.mkdir(parents=True, exist_ok=True)
                    run = wandb.init(project=spec["project"], name=spec.get("name") or job_id,
                                     entity=spec.get("entity"), tags=spec.get("tags") or None, config=config,
                                     dir=str(output_dir), mode=wandb_mode, reinit="create_new",
                                     settings=wandb.Settings(console="off", x_disable_stats=True))
                    self.writers.append(("wandb", run))
            except Exception as exc:  # the integration's fault, not the training's
                log.exception("opening the %s integration of %s", item["type"], job_id)
                self.warn(f"The {item['type']} integration could not start ({type(exc).__name__}: {exc}); training "
                          "goes on without it")

    def log(self, data: dict[str, Any]) -> None:
        step = data.get("step")
        if not isinstance(step, int):
            return
        values = {k: float(v) for k, v in data.items()
                  if k not in NOT_METRICS and isinstance(v, int | float) and not isinstance(v, bool)}
        for kind, writer in list(self.writers):
            try:
                if kind == "tensorboard":
                    for key, value in values.items():
                        writer.add_scalar(key, value, step)
                else:
                    writer.log(values, step=step)
            except Exception as exc:
                self.writers.remove((kind, writer))
                self.warn(f"The {kind} integration failed ({type(exc).__name__}: {exc}); training goes on without it")

    def close(self) -> None:
        for kind, writer in self.writers:
            try:
                writer.close() if kind == "tensorboard" else writer.finish()
            except Exception:
                log.exception("closing the %s integration", kind)
        self.writers = []
