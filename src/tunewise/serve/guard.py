"""The ASGI middleware in front of every route: request ids, the key before the body, bodies bounded as they stream.

For each HTTP request, in this order and before any route runs:

1. A request id (``req_...``) is assigned; every answer carries it in ``x-request-id``, and an unexpected error
   is logged under it (the client sees "internal error" and the id, never the exception's text).
2. Under ``/v1/`` the ``Authorization`` key is checked first: without a valid key the answer is a 401 and not
   one byte of the body is read (uvicorn discards what the client still sends; memory stays flat).
3. The body is counted as it streams, ``Content-Length`` or chunked alike: past the limit (``max_request_bytes``,
   ``max_upload_bytes`` for ``POST /v1/files``, ``max_part_bytes`` for ``POST /v1/uploads/{id}/parts``) the request ends with a 413 in OpenAI's shape. A declared
   ``Content-Length`` over the limit is refused before reading.

It is a plain ASGI middleware (not Starlette's ``BaseHTTPMiddleware``, which would buffer streaming bodies).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from typing import Any

from fastapi import HTTPException

from tunewise.serve.errors import TYPES, body

log = logging.getLogger("tunewise.serve")

UPLOAD_PATH = "/v1/files"
PART_PATH = re.compile(r"^/v1/uploads/[^/]+/parts/?$")
MULTIPART_OVERHEAD = 64 * 1024  # headers and boundaries around the file in a multipart body


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` when a body passes its limit; the error handlers answer 413."""

    def __init__(self, limit: int, setting: str) -> None:
        self.limit, self.setting = limit, setting
        super().__init__(413, message_too_large(limit, setting))


def message_too_large(limit: int, setting: str) -> str:
    return (f"Request body exceeds the limit of {limit} bytes (setting {setting}, env TUNEWISE_{setting.upper()}).")


def new_request_id() -> str:
    return "req_" + secrets.token_hex(12)


def _json_response(status: int, payload: dict[str, Any], request_id: str,
                   extra: list[tuple[bytes, bytes]] | None = None) -> tuple[dict, dict]:
    data = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode()),
               (b"x-request-id", request_id.encode()), *(extra or [])]
    return ({"type": "http.response.start", "status": status, "headers": headers},
            {"type": "http.response.body", "body": data})


class Guard:
    """See the module docstring. ``state`` is the app's ``State`` (settings and store)."""

    def __init__(self, app: Any, state: Any) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        started = False

        async def send_with_id(message: dict) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", request_id.encode())]}
            await send(message)

        async def answer(status: int, message: str, code: str, extra: list | None = None,
                         param: str | None = None) -> None:
            start, end = _json_response(status, body(message, type=TYPES.get(status, "invalid_request_error"),
                                                     param=param, code=code), request_id, extra)
            await send(start)
            await send(end)

        path: str = scope.get("path", "")
        settings = self.state.settings
        if path.startswith("/v1/") and scope.get("method") != "OPTIONS":
            from tunewise.serve.auth import authenticate
            from tunewise.serve.errors import ApiError

            authorization = None
            for name, value in scope.get("headers", ()):
                if name == b"authorization":
                    authorization = value.decode("latin-1")
                    break
            try:
                scope["state"]["principal"] = authenticate(self.state.store, authorization)
            except ApiError as exc:
                await answer(401, exc.message, exc.code or "invalid_api_key", [(b"www-authenticate", b"Bearer")])
                return

        is_post = scope.get("method") == "POST"
        is_file = is_post and path.rstrip("/") == UPLOAD_PATH
        is_part = is_post and PART_PATH.match(path) is not None
        is_upload = is_file or is_part
        if is_file:
            limit, setting = settings.max_upload_bytes + MULTIPART_OVERHEAD, "max_upload_bytes"
        elif is_part:
            limit, setting = settings.max_part_bytes + MULTIPART_OVERHEAD, "max_part_bytes"
        else:
            limit, setting = settings.max_request_bytes, "max_request_bytes"
        param = "data" if is_part else "file" if is_file else None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                if not value.isdigit():
                    await answer(400, "The Content-Length header is not a number.", "invalid_request")
                    return
                if int(value) > limit:
                    await answer(413, f"Request body of {int(value)} bytes exceeds the limit of {limit} bytes "
                                 f"(setting {setting}, env TUNEWISE_{setting.upper()}).",
                                 "file_too_large" if is_upload else "request_too_large", param=param)
                    return

        received = 0

        async def counted_receive() -> dict:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit, setting)
            return message

        try:
            await self.app(scope, counted_receive, send_with_id)
        except Exception:
            # Domain errors and HTTP errors were answered by the handlers; this is a bug. Log it under the
            # request id and answer without the exception's text (it can hold paths, SQL, data).
            log.exception("request %s: unhandled error on %s %s", request_id, scope.get("method"), path)
            if not started:
                await answer(500, f"The server had an internal error while processing the request (request id "
                             f"{request_id}); its log has the details under that id.", "internal_error")
