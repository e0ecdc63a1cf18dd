"""Model names: OpenAI names -> local stand-ins, and the ``ft:`` names of fine-tuned models.

A request may name a local registry model (``tunewise-tiny``), an OpenAI model (``gpt-4o-mini-2024-07-18``,
mapped through ``Settings.alias_table()``), a fine-tuned model of its project (``ft:BASE:PROJECT:SUFFIX:ID``)
or one of its checkpoints (``ft:...:ckpt-step-N``).
"""

from __future__ import annotations

from dataclasses import dataclass

from tunewise import models
from tunewise.errors import ModelNotFound, UsageError
from tunewise.serve.settings import Settings
from tunewise.serve.store import Store


@dataclass(frozen=True)
class Target:
    """What a request's ``model`` resolves to."""

    name: str
    """The name as requested."""
    local: str
    """What the engine or trainer loads: a registry name or a model/adapter directory."""
    base_local: str
    """The registry model underneath (its tokenizer counts the tokens)."""
    kind: str
    """``base``, ``fine-tuned`` or ``checkpoint``."""


def base_local_model(settings: Settings, name: str) -> str:
    """The local model that stands in for a base model name; in strict mode unknown names are refused."""
    if name in models.REGISTRY:
        return name
    table = settings.alias_table()
    if name in table:
        return table[name]
    if settings.strict_models:
        raise UsageError(
            f"The model '{name}' does not exist or is not served here (strict model names are on).",
            hint="Use one of: " + ", ".join([*models.REGISTRY, *table]) + "; or add it to TUNEWISE_ALIASES.",
            code="model_not_found", param="model")
    return settings.default_local_model


def fine_tuned_name(base: str, project: str, suffix: str | None, job_id: str) -> str:
    """OpenAI's naming: ``ft:gpt-4o-mini-2024-07-18:my-project:my-suffix:abcd1234``."""
    return f"ft:{base}:{project}:{suffix or ''}:{job_id[-8:].lower()}"


def root_base(name: str) -> str:
    """The base model a name descends from: ``gpt-4o-mini`` for ``ft:gpt-4o-mini:proj::abcd1234[:ckpt-step-N]``
    (a model continued from a fine-tuned one is named after the same base, as OpenAI names it)."""
    if name.startswith("ft:") and name.count(":") >= 4:
        return name.split(":")[1]
    return name


def checkpoint_name(fine_tuned: str, step: int) -> str:
    return f"{fine_tuned}:ckpt-step-{step}"


def owned(store: Store, project: str, name: str) -> Target | None:
    """A fine-tuned model or checkpoint that ``project`` owns (None if it owns no such name)."""
    row = store.one("SELECT * FROM models WHERE id = ? AND project = ? AND deleted_at IS NULL", name, project)
    if row:
        return Target(name, row["path"], row["local_model"], "fine-tuned")
    ckpt = store.one(
        "SELECT c.path, j.local_model FROM checkpoints c JOIN jobs j ON j.id = c.job_id "
        "WHERE c.model = ? AND j.project = ?", name, project)
    if ckpt:
        return Target(name, ckpt["path"], ckpt["local_model"], "checkpoint")
    return None


def resolve(store: Store, settings: Settings, project: str, name: str) -> Target:
    """The target of a request's ``model``: a fine-tuned name of the project, or of another project that shared it
    with this one (a checkpoint permission); any other is not found (404)."""
    if name.startswith("ft:"):
        target = owned(store, project, name)
        if target:
            return target
        grant = store.one("SELECT owner FROM checkpoint_permissions WHERE model = ? AND project_id = ?",
                          name, project)
        if grant:
            target = owned(store, grant["owner"], name)
            if target:
                return target
        raise ModelNotFound(f"The model '{name}' does not exist or you do not have access to it.",
                            code="model_not_found", param="model")
    local = base_local_model(settings, name)
    return Target(name, local, local if local in models.REGISTRY else local, "base")
