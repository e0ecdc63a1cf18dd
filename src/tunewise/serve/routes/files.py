"""``/v1/files``: upload (streamed to disk, hashed, validated), list, retrieve, content, delete."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse
from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header

from tunewise.errors import NotFound, UsageError
from tunewise.serve.deps import PrincipalDep, State, StateDep
from tunewise.serve.errors import ApiError
from tunewise.serve.store import ACTIVE, new_id, now

router = APIRouter(tags=["files"])

PURPOSES = ("fine-tune", "assistants", "batch", "vision", "user_data", "evals")
MULTIPART_OVERHEAD = 64 * 1024  # headers and boundaries around the file in a multipart body
SHOWN_FINDINGS = 5  # how many validation errors a refused upload lists
MAX_FILENAME = 255  # characters of an uploaded file's name (a file system's usual limit)
MAX_HEADER = 4096  # bytes of one part header kept (a longer file name is refused, not stored)
MAX_FIELDS = 8  # form fields besides the file


MIN_EXPIRY_S, MAX_EXPIRY_S = 3600, 2592000  # OpenAI's bounds of expires_after.seconds (an hour, 30 days)
LIVE = "deleted_at IS NULL AND (expires_at IS NULL OR expires_at > CAST(strftime('%s','now') AS INTEGER))"
"""SQL: a file not deleted and not expired (an expired file is gone from lists and cannot be used)."""


def file_object(row: dict[str, Any]) -> dict[str, Any]:
    out = {"id": row["id"], "object": "file", "bytes": row["bytes"], "created_at": row["created_at"],
           "filename": row["filename"], "purpose": row["purpose"], "status": "processed"}
    if row.get("expires_at") is not None:
        out["expires_at"] = row["expires_at"]
    return out


def check_expires_after(value: Any, param: str = "expires_after") -> int | None:
    """OpenAI's FileExpirationAfter (``{"anchor": "created_at", "seconds": 3600..2592000}``) -> seconds or None."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise UsageError("expires_after must be an object {anchor, seconds}.", param=param)
    if value.get("anchor") != "created_at":
        raise UsageError(f"Invalid expires_after.anchor {value.get('anchor')!r}: the only anchor is 'created_at'.",
                         param=f"{param}.anchor")
    seconds = value.get("seconds")
    if isinstance(seconds, str) and seconds.strip().isdigit():
        seconds = int(seconds)
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not MIN_EXPIRY_S <= seconds <= MAX_EXPIRY_S:
        raise UsageError(f"Invalid expires_after.seconds {seconds!r}: an integer from {MIN_EXPIRY_S} (1 hour) to "
                         f"{MAX_EXPIRY_S} (30 days).", param=f"{param}.seconds")
    return seconds


def quota_left(state: State, project: str) -> int | None:
    """Bytes the project may still store (None: no quota)."""
    if state.settings.storage_quota_bytes <= 0:
        return None
    used = state.store.one(f"SELECT COALESCE(SUM(bytes), 0) AS n FROM files WHERE project = ? AND {LIVE}",
                           project)["n"]
    return max(0, state.settings.storage_quota_bytes - used)


async def register_file(state: State, project: str, file_id: str, tmp: Path, filename: str, purpose: str,
                        size: int, sha256: str, expires_at: int | None,
                        claim: Any = None) -> dict[str, Any] | None:
    """Validate the bytes in ``tmp`` as its purpose asks, move them into place and record the File.

    ``claim(db)``, run in the same transaction, may refuse (return False): then nothing is recorded and None is
    returned (the Upload it came from was completed or cancelled meanwhile)."""
    if purpose == "fine-tune":
        error = await run_in_threadpool(_validation_error, tmp)
        if error is not None:
            raise error
    path = state.store.files_dir / f"{file_id}.jsonl"
    row = {"id": file_id, "project": project, "filename": filename, "purpose": purpose, "bytes": size,
           "sha256": sha256, "path": str(path), "created_at": now(), "expires_at": expires_at}
    with state.store.transaction() as db:
        if claim is not None and not claim(db):
            return None
        tmp.replace(path)
        db.execute("INSERT INTO files (id, project, filename, purpose, bytes, sha256, path, created_at, expires_at) "
                   "VALUES (:id, :project, :filename, :purpose, :bytes, :sha256, :path, :created_at, :expires_at)",
                   row)
    return row


def get_file(state: State, project: str, file_id: str) -> dict[str, Any]:
    row = state.store.one(f"SELECT * FROM files WHERE id = ? AND project = ? AND {LIVE}", file_id, project)
    if row is None:
        raise NotFound(f"No such File object: {file_id}", param="id", code="file_not_found")
    return row


class _Upload:
    """Streams a multipart body: the ``file`` part goes straight to disk, hashed and checked line by line."""

    def __init__(self, target: Path, max_bytes: int, max_line: int | None, quota_left: int | None = None,
                 quota: int = 0, file_field: str = "file", too_large: Any = None) -> None:
        self.target = target
        self.file_field = file_field
        self.too_large = too_large or _too_large
        self.max_bytes = max_bytes
        self.quota_left, self.quota = quota_left, quota
        self.max_line = max_line
        self.fields: dict[str, bytes] = {}
        self.filename: str | None = None
        self.size = 0
        self.sha = hashlib.sha256()
        self.line_no = 1
        self.line_len = 0
        self.failure: ApiError | None = None
        self._out = None
        self._name: str | None = None
        self._headers: dict[bytes, bytes] = {}
        self._field = b""
        self._value = b""

    async def receive(self, request: Request, boundary: bytes, what: str, hint: str) -> None:
        """Parse the request's multipart body into this sink as it streams, stopping at the first failure (a
        limit, a bad line); ``what`` names the body in the error for a malformed one, ``hint`` says how to send it."""
        parser = MultipartParser(boundary, self.callbacks())
        try:
            async for chunk in request.stream():
                parser.write(chunk)
                if self.failure is not None:
                    raise self.failure
            parser.finalize()
        except MultipartParseError as exc:
            raise UsageError(f"The {what} is not a valid multipart/form-data body ({exc}).", param=self.file_field,
                             hint=hint) from None
        if self.failure is not None:
            raise self.failure
        self.close()

    def callbacks(self) -> dict[str, Any]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: setattr(self, "_field", (self._field + d[s:e])[:MAX_HEADER]),
            "on_header_value": lambda d, s, e: setattr(self, "_value", (self._value + d[s:e])[:MAX_HEADER + 1]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
        }

    def _part_begin(self) -> None:
        self._headers, self._name = {}, None

    def _header_end(self) -> None:
        if len(self._headers) < 16:
            self._headers[self._field.lower()] = self._value[:MAX_HEADER]
        self._field, self._value = b"", b""

    def _headers_finished(self) -> None:
        _, params = parse_options_header(self._headers.get(b"content-disposition", b""))
        self._name = params.get(b"name", b"").decode("utf-8", "replace")
        if self._name == self.file_field:
            if self._out is not None:
                self.failure = ApiError(400, f"The upload has more than one `{self.file_field}` part; send one "
                                        "per request.", code="invalid_request", param=self.file_field)
                return
            raw = params.get(b"filename", b"upload.jsonl").decode("utf-8", "replace")
            self.filename = os.path.basename(raw).replace("\x00", "") or "upload.jsonl"
            if len(self.filename) > MAX_FILENAME:
                self.failure = ApiError(400, f"The file name is {len(self.filename)} characters long; the limit "
                                        f"is {MAX_FILENAME}.", hint="Rename the file.", code="invalid_request",
                                        param=self.file_field)
                return
            # Owner-only (0600), whatever the umask.
            self._out = os.fdopen(os.open(self.target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "wb")
        elif len(self.fields) >= MAX_FIELDS:
            self.failure = ApiError(400, f"The upload has more than {MAX_FIELDS} form fields; it takes `file` "
                                    "and `purpose`.", code="invalid_request", param="purpose")
        else:
            self.fields[self._name] = b""

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.failure is not None or self._name is None:
            return
        chunk = data[start:end]
        if self._name == self.file_field and self._out is not None:
            self.size += len(chunk)
            if self.size > self.max_bytes:
                self.failure = self.too_large(self.max_bytes)
                return
            if self.quota_left is not None and self.size > self.quota_left:
                self.failure = ApiError(
                    413, f"The upload would pass this project's storage quota of {self.quota} bytes "
                    f"({self.quota_left} bytes left; setting storage_quota_bytes, env TUNEWISE_STORAGE_QUOTA_BYTES).",
                    hint="Delete files the project no longer needs (client.files.delete) or raise the quota.",
                    code="storage_quota_exceeded", param="file")
                return
            if self.max_line is not None:
                self._check_lines(chunk)
            self.sha.update(chunk)
            self._out.write(chunk)
        elif len(self.fields.get(self._name, b"")) < 4096:
            self.fields[self._name] = self.fields.get(self._name, b"") + chunk

    def _check_lines(self, chunk: bytes) -> None:
        pos = 0
        while True:
            nl = chunk.find(b"\n", pos)
            if nl < 0:
                self.line_len += len(chunk) - pos
                break
            self.line_len += nl - pos
            if self.line_len > self.max_line:
                break
            self.line_no += 1
            self.line_len = 0
            pos = nl + 1
        if self.line_len > self.max_line:
            self.failure = ApiError(
                400, f"Line {self.line_no} of the file is longer than the limit of {self.max_line} bytes "
                "(setting max_line_bytes, env TUNEWISE_MAX_LINE_BYTES).",
                hint="Each line must be one JSON example; shorten the example or raise the limit.",
                code="line_too_long", param="file")

    def _part_end(self) -> None:
        if self._name == self.file_field and self._out is not None:
            self._out.close()

    def close(self) -> None:
        if self._out is not None and not self._out.closed:
            self._out.close()


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"File is larger than the upload limit of {limit} bytes (setting max_upload_bytes, "
                    "env TUNEWISE_MAX_UPLOAD_BYTES).", hint="Split the file or raise the limit.",
                    code="file_too_large", param="file")


def _validation_error(path: Path) -> ApiError | None:
    """The validator's verdict on an uploaded training file: None when usable, else a 400 naming lines."""
    from tunewise.data import validate

    # Either of OpenAI's formats (chat, or prompt/completion for babbage-002 and davinci-002): the job,
    # which knows its model, checks that the file is in the one the model takes.
    report = validate(path, data_format="auto")
    problems = [f for f in report.findings if f.severity == "error"]
    if not problems:
        return None
    if report.stats.data_format == "chat" and validate(path, data_format="reinforcement").ok:
        return None  # reinforcement prompts: chat messages without answers (the job checks its grader's fields)
    shown = "; ".join(f"line {f.line}: {f.message.rstrip('.')}" if f.line else f.message.rstrip(".")
                      for f in problems[:SHOWN_FINDINGS])
    more = f" (and {len(problems) - SHOWN_FINDINGS} more)" if len(problems) > SHOWN_FINDINGS else ""
    first = problems[0]
    return ApiError(400, f"Invalid file format for fine-tuning: {len(problems)} error(s): {shown}{more}.",
                    hint=getattr(first, "hint", None) or "Run `tunewise validate FILE` for the full report.",
                    code="invalid_file_format", param="file")


@router.post("/files")
async def create_file(request: Request, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    settings = state.settings
    ctype, params = parse_options_header(request.headers.get("content-type", ""))
    if ctype != b"multipart/form-data" or b"boundary" not in params:
        raise UsageError("Uploads must be multipart/form-data with a `file` part and a `purpose` field.",
                         param="file")
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > settings.max_upload_bytes + MULTIPART_OVERHEAD:
        raise _too_large(settings.max_upload_bytes)
    file_id = new_id("file-")
    tmp = state.store.files_dir / f".{file_id}.part"
    upload = _Upload(tmp, settings.max_upload_bytes, settings.max_line_bytes, quota_left(state, principal.project),
                     settings.storage_quota_bytes)
    try:
        await upload.receive(request, params[b"boundary"], "upload",
                             "Send the file as a multipart form: a `file` part and a `purpose` field.")
        if upload.filename is None:
            raise UsageError("The upload has no `file` part.", param="file", hint="Send the file as `file`.")
        purpose = upload.fields.get("purpose", b"").decode("utf-8", "replace")
        if purpose not in PURPOSES:
            raise UsageError(f"Invalid purpose {purpose!r}: expected one of {', '.join(PURPOSES)}.",
                             param="purpose", hint="Fine-tuning data uses purpose='fine-tune'.")
        # The SDK sends expires_after as form fields expires_after[anchor] and expires_after[seconds].
        expiry = {k[len("expires_after["):-1]: v.decode("utf-8", "replace") for k, v in upload.fields.items()
                  if k.startswith("expires_after[") and k.endswith("]")}
        seconds = check_expires_after(expiry or None)
        row = await register_file(state, principal.project, file_id, tmp, upload.filename, purpose, upload.size,
                                  upload.sha.hexdigest(), now() + seconds if seconds else None)
    finally:
        upload.close()
        tmp.unlink(missing_ok=True)
    assert row is not None  # no claim: always recorded
    return file_object(row)


@router.get("/files")
def list_files(state: StateDep, principal: PrincipalDep, purpose: str | None = None,
               limit: Annotated[int, Query(ge=1, le=10000)] = 10000,
               order: Literal["asc", "desc"] = "desc", after: str | None = None) -> dict[str, Any]:
    where, args = f"project = ? AND {LIVE}", [principal.project]
    if purpose:
        where += " AND purpose = ?"
        args.append(purpose)
    rows, has_more = state.store.page("files", where, args, after=after, limit=limit,
                                      newest_first=order == "desc", after_scope="project = ?",
                                      after_args=(principal.project,))
    data = [file_object(r) for r in rows]
    return {"object": "list", "data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


@router.get("/files/{file_id}")
def retrieve_file(file_id: str, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    return file_object(get_file(state, principal.project, file_id))


@router.get("/files/{file_id}/content")
def file_content(file_id: str, state: StateDep, principal: PrincipalDep) -> FileResponse:
    row = get_file(state, principal.project, file_id)
    path = Path(row["path"])
    if not path.is_file():
        # The database says the file exists but its bytes are gone: a server-side fault, not the caller's.
        raise RuntimeError(f"stored content of {file_id} is missing from {path}")
    return FileResponse(path, media_type="application/octet-stream", filename=row["filename"])


@router.delete("/files/{file_id}")
def delete_file(file_id: str, state: StateDep, principal: PrincipalDep) -> dict[str, Any]:
    row = get_file(state, principal.project, file_id)
    state.store.db.execute("UPDATE files SET deleted_at = ? WHERE id = ?", (now(), file_id))
    # An unfinished job that uses the file keeps its bytes until it ends (the worker removes them then).
    if not in_use(state, file_id):
        Path(row["path"]).unlink(missing_ok=True)
    return {"id": file_id, "object": "file", "deleted": True}


def in_use(state: State, file_id: str) -> bool:
    """Whether a started, unfinished job trains on, validates with or scores against the file (a job not
    started yet fails when its file is gone, as OpenAI's does)."""
    return state.store.one(
        f"SELECT 1 AS x FROM jobs WHERE status IN ({','.join('?' * len(ACTIVE))}) AND started_at IS NOT NULL "
        "AND (training_file = ? OR "
        "validation_file = ? OR json_extract(eval, '$.file') = ?) LIMIT 1", *ACTIVE, file_id, file_id,
        file_id) is not None
