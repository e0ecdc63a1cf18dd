"""``/v1/fine_tuning/checkpoints/{model}/permissions``: share a fine-tuned model or checkpoint with other projects.

OpenAI's checkpoint permissions. Here the owning project's key (not an admin key: a tunewise server has projects,
not organisations) lists, grants and deletes them; another project's key gets 404 for a model it does not own.
A project a model is shared with can use it by name as a model: in chat completions and as the base of a job
(``tunewise.serve.naming.resolve``). Deleting the permission ends that at once.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict

from tunewise.errors import ModelNotFound, NotFound, UsageError
from tunewise.serve import naming
from tunewise.serve.deps import PrincipalDep, State, StateDep
from tunewise.serve.store import new_id, now

router = APIRouter(tags=["fine-tuning"])

MAX_PROJECTS = 100  # project ids one request may grant
MAX_PROJECT_ID = 256


class CreatePermission(BaseModel):
    """OpenAI's CreateFineTuningCheckpointPermissionRequest."""

    model_config = ConfigDict(extra="ignore")
    project_ids: list[str]


def permission_object(row: dict[str, Any]) -> dict[str, Any]:
    return {"id": row["id"], "object": "checkpoint.permission", "created_at": row["created_at"],
            "project_id": row["project_id"]}


def _owned(state: State, project: str, model: str) -> None:
    if naming.owned(state.store, project, model) is None:
        raise ModelNotFound(f"The model '{model}' does not exist or you do not own it (only the project that "
                            "trained a model can share it).", code="model_not_found",
                            param="fine_tuned_model_checkpoint")


def _page(rows: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    data = [permission_object(r) for r in rows]
    return {"object": "list", "data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


@router.post("/fine_tuning/checkpoints/{fine_tuned_model_checkpoint}/permissions")
def create_permissions(fine_tuned_model_checkpoint: str, body: CreatePermission, state: StateDep,
                       principal: PrincipalDep) -> dict[str, Any]:
    model = fine_tuned_model_checkpoint
    _owned(state, principal.project, model)
    if not body.project_ids or len(body.project_ids) > MAX_PROJECTS:
        raise UsageError(f"project_ids must name 1 to {MAX_PROJECTS} projects.", param="project_ids")
    for pid in body.project_ids:
        if not pid or len(pid) > MAX_PROJECT_ID or any(ord(c) < 32 for c in pid):
            raise UsageError(f"Invalid project id {pid[:40]!r}: 1 to {MAX_PROJECT_ID} characters, no control "
                             "characters.", param="project_ids")
        if pid == principal.project:
            raise UsageError(f"'{pid}' is the project that owns {model}; share it with other projects.",
                             param="project_ids")
    rows = []
    with state.store.transaction() as db:
        for pid in dict.fromkeys(body.project_ids):
            row = db.execute("SELECT * FROM checkpoint_permissions WHERE model = ? AND project_id = ?",
                             (model, pid)).fetchone()
            if row is None:
                row = {"id": new_id("cp_"), "model": model, "owner": principal.project, "project_id": pid,
                       "created_at": now()}
                db.execute("INSERT INTO checkpoint_permissions (id, model, owner, project_id, created_at) VALUES "
                           "(:id, :model, :owner, :project_id, :created_at)", row)
            rows.append(dict(row))
    return _page(rows, False)


@router.get("/fine_tuning/checkpoints/{fine_tuned_model_checkpoint}/permissions")
def list_permissions(fine_tuned_model_checkpoint: str, state: StateDep, principal: PrincipalDep,
                     project_id: str | None = None, after: str | None = None,
                     limit: Annotated[int, Query(ge=1, le=10000)] = 10,
                     order: Literal["ascending", "descending"] = "descending") -> dict[str, Any]:
    model = fine_tuned_model_checkpoint
    _owned(state, principal.project, model)
    where, args = "model = ? AND owner = ?", [model, principal.project]
    if project_id:
        where += " AND project_id = ?"
        args.append(project_id)
    rows, has_more = state.store.page("checkpoint_permissions", where, args, after=after, limit=limit,
                                      newest_first=order == "descending", after_scope="model = ? AND owner = ?",
                                      after_args=(model, principal.project))
    return _page(rows, has_more)


@router.delete("/fine_tuning/checkpoints/{fine_tuned_model_checkpoint}/permissions/{permission_id}")
def delete_permission(fine_tuned_model_checkpoint: str, permission_id: str, state: StateDep,
                      principal: PrincipalDep) -> dict[str, Any]:
    model = fine_tuned_model_checkpoint
    _owned(state, principal.project, model)
    deleted = state.store.db.execute("DELETE FROM checkpoint_permissions WHERE id = ? AND model = ? AND owner = ?",
                                     (permission_id, model, principal.project)).rowcount
    if not deleted:
        raise NotFound(f"No such permission {permission_id} on {model}.", param="permission_id",
                       code="permission_not_found")
    return {"id": permission_id, "object": "checkpoint.permission", "deleted": True}
