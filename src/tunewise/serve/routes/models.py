"""``/v1/models``: the local base models, the OpenAI names standing in for them, and this project's
fine-tuned models (and checkpoints); delete a fine-tuned model."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from fastapi import APIRouter

from tunewise import models
from tunewise.errors import ModelNotFound
from tunewise.serve.deps import PrincipalDep, State, StateDep
from tunewise.serve.errors import ApiError
from tunewise.serve.store import now

router = APIRouter(tags=["models"])

SERVER_STARTED = now()


def model_object(model_id: str, created: int, owned_by: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by}


def _base_models(state: State) -> list[dict[str, Any]]:
    out = [model_object(name, SERVER_STARTED, "tunewise") for name in models.REGISTRY]
    out += [model_object(name, SERVER_STARTED, "system") for name in state.settings.alias_table()
            if name not in models.REGISTRY]
    return out


def _fine_tuned(state: State, project: str) -> list[dict[str, Any]]:
    rows = state.store.all("SELECT id, created_at FROM models WHERE project = ? AND deleted_at IS NULL "
                           "ORDER BY seq", project)
    return [model_object(r["id"], r["created_at"], f"user-{project}") for r in rows]


def _not_found(model: str) -> ModelNotFound:
    return ModelNotFound(f"The model '{model}' does not exist or you do not have access to it.",
                         param="model", code="model_not_found")


@router.get("/models")
def list_models(state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    return {"object": "list", "data": _base_models(state) + _fine_tuned(state, principal.project)}


@router.get("/models/{model:path}")
def retrieve_model(model: str, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    for obj in _base_models(state) + _fine_tuned(state, principal.project):
        if obj["id"] == model:
            return obj
    ckpt = state.store.one("SELECT c.model, c.created_at FROM checkpoints c JOIN jobs j ON j.id = c.job_id "
                           "WHERE c.model = ? AND j.project = ?", model, principal.project)
    if ckpt:
        return model_object(ckpt["model"], ckpt["created_at"], f"user-{principal.project}")
    raise _not_found(model)


@router.delete("/models/{model:path}")
def delete_model(model: str, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    row = state.store.one("SELECT * FROM models WHERE id = ? AND project = ? AND deleted_at IS NULL",
                          model, principal.project)
    if row is None:
        if any(obj["id"] == model for obj in _base_models(state)):
            raise ApiError(403, f"You do not have permission to delete the base model '{model}': only "
                           "fine-tuned models of your project can be deleted.", param="model",
                           code="model_not_deletable")
        raise _not_found(model)
    state.store.db.execute("UPDATE models SET deleted_at = ? WHERE id = ?", (now(), model))
    path = Path(row["path"])
    # The job's run directory keeps its checkpoints and metrics; only the final artifact is removed.
    if path.is_dir() and path.name == "final":
        shutil.rmtree(path, ignore_errors=True)
    return {"id": model, "object": "model", "deleted": True}
