"""Stored chat completions: ``store: true`` on ``POST /v1/chat/completions`` keeps the request and its answer, and
``/v1/chat/completions`` lists them (filtered by ``model`` and ``metadata``, paginated as OpenAI does), retrieves,
updates (the metadata), deletes them and lists a stored completion's input messages, scoped by project.

They are what ``tunewise distill --from-stored`` turns into a training file: the answers of a big model (or a long
prompt) to real traffic, kept where the fine-tuning API can use them.
"""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict

from tunewise.errors import NotFound, UsageError
from tunewise.serve.deps import PrincipalDep, State, StateDep
from tunewise.serve.store import Store, now

router = APIRouter(tags=["chat"])

METADATA_KEYS = 16
METADATA_KEY_CHARS = 64
METADATA_VALUE_CHARS = 512
"""OpenAI's limits on a metadata object: 16 pairs, keys up to 64 characters, values up to 512."""


def check_metadata(metadata: Any, param: str = "metadata") -> dict[str, str]:
    """``metadata`` as OpenAI's ``Metadata`` allows it (a map of up to 16 short strings), else a 400 naming it."""
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise UsageError(f"{param} must be an object of string values, not {type(metadata).__name__}.", param=param)
    if len(metadata) > METADATA_KEYS:
        raise UsageError(f"{param} has {len(metadata)} keys; at most {METADATA_KEYS} are allowed.", param=param)
    for key, value in metadata.items():
        if len(key) > METADATA_KEY_CHARS:
            raise UsageError(f"{param} key {key[:20]!r}... is {len(key)} characters long; at most "
                             f"{METADATA_KEY_CHARS} are allowed.", param=f"{param}.{key[:20]}")
        if not isinstance(value, str):
            raise UsageError(f"{param}[{key!r}] must be a string, not {type(value).__name__}.",
                             param=f"{param}.{key}")
        if len(value) > METADATA_VALUE_CHARS:
            raise UsageError(f"{param}[{key!r}] is {len(value)} characters long; at most {METADATA_VALUE_CHARS} "
                             "are allowed.", param=f"{param}.{key}")
    return dict(metadata)


def save(store: Store, project: str, request: dict[str, Any], response: dict[str, Any],
         metadata: dict[str, str]) -> None:
    """Keep a chat completion created with ``store: true``."""
    store.db.execute(
        "INSERT INTO stored_completions (id, project, model, metadata, request, response, created_at) "
        "VALUES (?,?,?,?,?,?,?)",
        (response["id"], project, response["model"], json.dumps(metadata), json.dumps(request), json.dumps(response),
         response.get("created") or now()))


def completion_object(row: dict[str, Any]) -> dict[str, Any]:
    """The stored answer as OpenAI returns it (a ``chat.completion`` with its ``metadata`` and sampling settings)."""
    obj = json.loads(row["response"])
    request = json.loads(row["request"])
    obj["metadata"] = json.loads(row["metadata"])
    for name in ("seed", "temperature", "top_p", "response_format"):
        obj.setdefault(name, request.get(name))
    return obj


def _row(state: State, project: str, completion_id: str) -> dict[str, Any]:
    row = state.store.one("SELECT * FROM stored_completions WHERE id = ? AND project = ?", completion_id, project)
    if row is None:
        raise NotFound(f"No stored chat completion with id '{completion_id}'.", param="completion_id",
                       hint="Only completions created with store: true are kept; "
                       "client.chat.completions.list() shows them.", code="not_found")
    return row


def _list(data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
            "last_id": data[-1]["id"] if data else None, "has_more": has_more}


def stored_rows(store: Store, project: str, *, model: str | None = None, metadata: dict[str, str] | None = None,
                after: str | None = None, limit: int = 20,
                order: str = "asc") -> tuple[list[dict[str, Any]], bool]:
    """One page of a project's stored completions, oldest first (``order="asc"``), and whether more follow."""
    where, args = "project = ?", [project]
    if model:
        where += " AND model = ?"
        args.append(model)
    for key, value in (metadata or {}).items():
        where += " AND json_extract(metadata, ?) = ?"
        args += ['$."' + key.replace('"', '') + '"', value]
    return store.page("stored_completions", where, args, after=after, limit=limit, newest_first=order == "desc",
                      after_scope="project = ?", after_args=(project,))


@router.get("/chat/completions")
def list_completions(request: Request, state: StateDep, principal: PrincipalDep, model: str | None = None,
                     after: str | None = None, limit: Annotated[int, Query(ge=1, le=1000)] = 20,
                     order: Literal["asc", "desc"] = "asc") -> dict[str, Any]:
    # metadata[key]=value filters, as the SDK sends a metadata dict.
    metadata = {key[9:-1]: value for key, value in request.query_params.multi_items()
                if key.startswith("metadata[") and key.endswith("]")}
    rows, has_more = stored_rows(state.store, principal.project, model=model, metadata=metadata, after=after,
                                 limit=limit, order=order)
    return _list([completion_object(r) for r in rows], has_more)


@router.get("/chat/completions/{completion_id}")
def retrieve_completion(completion_id: str, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    return completion_object(_row(state, principal.project, completion_id))


class UpdateCompletion(BaseModel):
    model_config = ConfigDict(extra="forbid")
    metadata: Any


@router.post("/chat/completions/{completion_id}")
def update_completion(completion_id: str, body: UpdateCompletion, state: StateDep,
                      principal: PrincipalDep) -> dict[str, Any]:
    _row(state, principal.project, completion_id)
    metadata = check_metadata(body.metadata)
    state.store.db.execute("UPDATE stored_completions SET metadata = ? WHERE id = ? AND project = ?",
                           (json.dumps(metadata), completion_id, principal.project))
    return completion_object(_row(state, principal.project, completion_id))


@router.delete("/chat/completions/{completion_id}")
def delete_completion(completion_id: str, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    _row(state, principal.project, completion_id)
    state.store.db.execute("DELETE FROM stored_completions WHERE id = ? AND project = ?",
                           (completion_id, principal.project))
    return {"object": "chat.completion.deleted", "id": completion_id, "deleted": True}


def message_object(completion_id: str, index: int, message: dict[str, Any]) -> dict[str, Any]:
    """One input message as OpenAI lists it: text ``content``, and the parts when the content was a list."""
    content = message.get("content")
    parts = None
    if isinstance(content, list):
        parts = [p for p in content if isinstance(p, dict)]
        content = "".join(p.get("text", "") for p in parts if p.get("type") == "text")
    return {"id": f"{completion_id}-{index}", "role": message.get("role"),
            "content": content if isinstance(content, str) else None, "refusal": None,
            "name": message.get("name"), "content_parts": parts}


@router.get("/chat/completions/{completion_id}/messages")
def list_messages(completion_id: str, state: StateDep, principal: PrincipalDep, after: str | None = None,
                  limit: Annotated[int, Query(ge=1, le=1000)] = 20,
                  order: Literal["asc", "desc"] = "asc") -> dict[str, Any]:
    row = _row(state, principal.project, completion_id)
    messages = [message_object(completion_id, i, m)
                for i, m in enumerate(json.loads(row["request"]).get("messages") or [])]
    if order == "desc":
        messages.reverse()
    if after is not None:
        ids = [m["id"] for m in messages]
        messages = messages[ids.index(after) + 1:] if after in ids else []
    return _list(messages[:limit], len(messages) > limit)
