"""``/v1/uploads``: OpenAI's Uploads, a large file sent in Parts and assembled into a File.

``POST /uploads`` opens an Upload (the file's name, purpose, size and MIME type); ``POST /uploads/{id}/parts``
adds a Part (multipart ``data``, streamed to disk and counted as it streams, at most ``max_part_bytes``; parts
may come in parallel); ``POST /uploads/{id}/complete`` names the parts in order (and optionally the md5 of the
whole): they are concatenated on disk, the total must be the declared ``bytes``, and the result becomes a File
validated as ``POST /files`` validates one. ``POST /uploads/{id}/cancel`` drops it. An Upload not completed within
``upload_expiry_s`` is ``expired`` and its parts are removed. Memory stays bounded: no part is held in memory.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict
from python_multipart.multipart import parse_options_header

from tunewise.errors import Conflict, NotFound, UsageError
from tunewise.serve.deps import PrincipalDep, State, StateDep
from tunewise.serve.errors import ApiError
from tunewise.serve.routes.files import (
    MAX_FILENAME,
    PURPOSES,
    _Upload,
    check_expires_after,
    file_object,
    quota_left,
    register_file,
)
from tunewise.serve.store import new_id, now

router = APIRouter(tags=["uploads"])

COPY_CHUNK = 1024 * 1024  # bytes read at a time while assembling parts
MAX_MIME = 255


class CreateUpload(BaseModel):
    """OpenAI's CreateUploadRequest."""

    model_config = ConfigDict(extra="ignore")
    filename: str
    purpose: str
    bytes: int
    mime_type: str
    expires_after: dict[str, Any] | None = None


class CompleteUpload(BaseModel):
    """OpenAI's CompleteUploadRequest."""

    model_config = ConfigDict(extra="ignore")
    part_ids: list[str]
    md5: str | None = None


def _parts_dir(state: State) -> Path:
    folder = state.store.files_dir / "uploads"
    folder.mkdir(mode=0o700, exist_ok=True)
    return folder


def _status(row: dict[str, Any]) -> str:
    if row["status"] == "pending" and now() >= row["expires_at"]:
        return "expired"
    return row["status"]


def upload_object(state: State, row: dict[str, Any]) -> dict[str, Any]:
    file = None
    if row["file_id"]:
        frow = state.store.one("SELECT * FROM files WHERE id = ?", row["file_id"])
        file = file_object(frow) if frow else None
    return {"id": row["id"], "object": "upload", "bytes": row["bytes"], "created_at": row["created_at"],
            "filename": row["filename"], "purpose": row["purpose"], "status": _status(row),
            "expires_at": row["expires_at"], "file": file}


def _drop_parts(state: State, upload_id: str) -> None:
    for part in state.store.all("SELECT path FROM upload_parts WHERE upload_id = ?", upload_id):
        Path(part["path"]).unlink(missing_ok=True)
    state.store.db.execute("DELETE FROM upload_parts WHERE upload_id = ?", (upload_id,))


def _sweep_expired(state: State) -> None:
    """Remove the parts of every Upload past its expiry (any project's): their disk space is freed."""
    for row in state.store.all("SELECT DISTINCT u.id FROM uploads u JOIN upload_parts p ON p.upload_id = u.id "
                               "WHERE u.status = 'pending' AND u.expires_at <= ?", now()):
        _drop_parts(state, row["id"])


def _get(state: State, project: str, upload_id: str) -> dict[str, Any]:
    row = state.store.one("SELECT * FROM uploads WHERE id = ? AND project = ?", upload_id, project)
    if row is None:
        raise NotFound(f"No such Upload object: {upload_id}", param="upload_id", code="upload_not_found")
    return row


def _pending(state: State, project: str, upload_id: str, action: str) -> dict[str, Any]:
    row = _get(state, project, upload_id)
    status = _status(row)
    if status == "expired":
        _drop_parts(state, upload_id)
        raise UsageError(f"Upload {upload_id} expired at {row['expires_at']} (uploads stay open "
                         f"{state.settings.upload_expiry_s} s; setting upload_expiry_s); cannot {action}.",
                         hint="Create a new Upload and send its parts within the expiry.",
                         code="upload_expired", param="upload_id")
    if status != "pending":
        raise Conflict(f"Upload {upload_id} is {status}; cannot {action}.", code="upload_not_pending",
                       param="upload_id", hint="Only a pending Upload takes parts, completes or cancels.")
    return row


@router.post("/uploads")
def create_upload(body: CreateUpload, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    settings = state.settings
    if not body.filename or len(body.filename) > MAX_FILENAME or any(ord(c) < 32 for c in body.filename) \
            or "/" in body.filename:
        raise UsageError(f"Invalid filename: 1 to {MAX_FILENAME} characters, no '/' and no control characters.",
                         param="filename")
    if body.purpose not in PURPOSES:
        raise UsageError(f"Invalid purpose {body.purpose!r}: expected one of {', '.join(PURPOSES)}.",
                         param="purpose", hint="Fine-tuning data uses purpose='fine-tune'.")
    if not body.mime_type or len(body.mime_type) > MAX_MIME:
        raise UsageError(f"Invalid mime_type: 1 to {MAX_MIME} characters (a JSONL training file: "
                         "'text/jsonl').", param="mime_type")
    if body.bytes < 1 or body.bytes > settings.max_upload_total_bytes:
        raise UsageError(f"Invalid bytes {body.bytes}: an Upload carries 1 to {settings.max_upload_total_bytes} "
                         "bytes (setting max_upload_total_bytes, env TUNEWISE_MAX_UPLOAD_TOTAL_BYTES).",
                         param="bytes", hint="Split the data into several files.")
    expires_after = check_expires_after(body.expires_after)
    left = quota_left(state, principal.project)
    if left is not None and body.bytes > left:
        raise ApiError(413, f"The upload would pass this project's storage quota of {settings.storage_quota_bytes} "
                       f"bytes ({left} bytes left; setting storage_quota_bytes, env TUNEWISE_STORAGE_QUOTA_BYTES).",
                       hint="Delete files the project no longer needs (client.files.delete) or raise the quota.",
                       code="storage_quota_exceeded", param="bytes")
    _sweep_expired(state)
    created = now()
    row = {"id": new_id("upload_"), "project": principal.project, "filename": body.filename,
           "purpose": body.purpose, "bytes": body.bytes, "mime_type": body.mime_type,
           "expires_after": expires_after, "status": "pending", "file_id": None, "created_at": created,
           "expires_at": created + settings.upload_expiry_s}
    state.store.db.execute(
        "INSERT INTO uploads (id, project, filename, purpose, bytes, mime_type, expires_after, status, file_id, "
        "created_at, expires_at) VALUES (:id, :project, :filename, :purpose, :bytes, :mime_type, :expires_after, "
        ":status, :file_id, :created_at, :expires_at)", row)
    return upload_object(state, row)


def _part_too_large(limit: int) -> ApiError:
    return ApiError(413, f"The part is larger than {limit} bytes: the part limit (setting max_part_bytes, env "
                    "TUNEWISE_MAX_PART_BYTES) or what is left of the Upload's declared bytes.",
                    hint="Send smaller parts; the parts named on complete must add up to the declared bytes.",
                    code="file_too_large", param="data")


@router.post("/uploads/{upload_id}/parts")
async def add_part(upload_id: str, request: Request, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    settings = state.settings
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise UsageError("A part must be multipart/form-data with a `data` part.", param="data")
    row = _pending(state, principal.project, upload_id, "add a part")
    received = state.store.one("SELECT COALESCE(SUM(bytes), 0) AS n FROM upload_parts WHERE upload_id = ?",
                               upload_id)["n"]
    limit = min(settings.max_part_bytes, max(0, row["bytes"] - received))
    part_id = new_id("part_")
    path = _parts_dir(state) / f"{upload_id}.{part_id}"
    sink = _Upload(path, limit, None, file_field="data", too_large=_part_too_large)
    try:
        await sink.receive(request, params[b"boundary"], "part",
                           "Send the bytes as a multipart form field named `data`.")
        if sink.filename is None:
            raise UsageError("The request has no `data` part.", param="data", hint="Send the bytes as `data`.")
        part = {"id": part_id, "upload_id": upload_id, "bytes": sink.size, "path": str(path), "created_at": now()}
        with state.store.transaction() as db:
            # Still pending (a cancel or complete may have come while the part streamed)?
            if db.execute("SELECT 1 FROM uploads WHERE id = ? AND status = 'pending'", (upload_id,)).fetchone() is None:
                raise Conflict(f"Upload {upload_id} was completed or cancelled while the part was sent.",
                               code="upload_not_pending", param="upload_id")
            db.execute("INSERT INTO upload_parts (id, upload_id, bytes, path, created_at) VALUES "
                       "(:id, :upload_id, :bytes, :path, :created_at)", part)
    except BaseException:
        sink.close()
        path.unlink(missing_ok=True)
        raise
    return {"id": part_id, "object": "upload.part", "created_at": part["created_at"], "upload_id": upload_id}


def _assemble(state: State, parts: list[dict[str, Any]], target: Path) -> tuple[int, str, str, ApiError | None]:
    """Concatenate the parts into ``target``; returns (bytes, sha256, md5, a line-length failure or None)."""
    lines = _Upload(target, 0, state.settings.max_line_bytes)
    sha, md5, size = hashlib.sha256(), hashlib.md5(usedforsecurity=False), 0
    with open(target, "wb") as out:
        for part in parts:
            with open(part["path"], "rb") as src:
                while chunk := src.read(COPY_CHUNK):
                    size += len(chunk)
                    sha.update(chunk)
                    md5.update(chunk)
                    if lines.failure is None:
                        lines._check_lines(chunk)
                    out.write(chunk)
    return size, sha.hexdigest(), md5.hexdigest(), lines.failure


@router.post("/uploads/{upload_id}/complete")
async def complete_upload(upload_id: str, body: CompleteUpload, state: StateDep,
                          principal: PrincipalDep) -> dict[str, Any]:
    row = _pending(state, principal.project, upload_id, "complete")
    if not body.part_ids:
        raise UsageError("part_ids is empty: name the Upload's parts in order.", param="part_ids")
    if len(set(body.part_ids)) != len(body.part_ids):
        raise UsageError("part_ids names a part more than once.", param="part_ids")
    known = {p["id"]: p for p in state.store.all("SELECT * FROM upload_parts WHERE upload_id = ?", upload_id)}
    missing = [p for p in body.part_ids if p not in known]
    if missing:
        raise UsageError(f"part_ids names {len(missing)} part(s) that are not parts of {upload_id}: "
                         f"{', '.join(missing[:5])}.", param="part_ids",
                         hint="Use the ids that POST /v1/uploads/{id}/parts answered.")
    parts = [known[p] for p in body.part_ids]
    total = sum(p["bytes"] for p in parts)
    if total != row["bytes"]:
        raise UsageError(f"The parts named add up to {total} bytes; the Upload was created for {row['bytes']}.",
                         param="part_ids", hint="Name every part, or create the Upload with the file's real size.")
    file_id = new_id("file-")
    tmp = state.store.files_dir / f".{file_id}.part"
    try:
        size, sha, md5, failure = await run_in_threadpool(_assemble, state, parts, tmp)
        if body.md5 is not None and body.md5.strip().lower() != md5:
            raise UsageError(f"The md5 given ({body.md5}) does not match the assembled file's ({md5}).",
                             param="md5", code="md5_mismatch",
                             hint="Check the part order in part_ids and that every part was sent whole.")
        if failure is not None:
            raise failure
        left = quota_left(state, principal.project)
        if left is not None and size > left:
            raise ApiError(413, f"The file would pass this project's storage quota of "
                           f"{state.settings.storage_quota_bytes} bytes ({left} bytes left).",
                           code="storage_quota_exceeded", param="bytes",
                           hint="Delete files the project no longer needs (client.files.delete) or raise the quota.")
        expires_at = now() + row["expires_after"] if row["expires_after"] else None
        frow = await register_file(state, principal.project, file_id, tmp, row["filename"], row["purpose"], size,
                                   sha, expires_at, claim=lambda db: db.execute(
                                       "UPDATE uploads SET status = 'completed', file_id = ? WHERE id = ? AND "
                                       "status = 'pending'", (file_id, upload_id)).rowcount == 1)
        if frow is None:
            raise Conflict(f"Upload {upload_id} was completed or cancelled meanwhile.", code="upload_not_pending",
                           param="upload_id")
    finally:
        tmp.unlink(missing_ok=True)
    _drop_parts(state, upload_id)
    return upload_object(state, _get(state, principal.project, upload_id))


@router.post("/uploads/{upload_id}/cancel")
def cancel_upload(upload_id: str, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    _pending(state, principal.project, upload_id, "cancel")
    state.store.db.execute("UPDATE uploads SET status = 'cancelled' WHERE id = ? AND status = 'pending'",
                           (upload_id,))
    _drop_parts(state, upload_id)
    return upload_object(state, _get(state, principal.project, upload_id))


__all__ = ["router", "upload_object"]
