"""One place that turns every failure into OpenAI's error body ``{"error": {message, type, param, code}}``.

Domain errors (``tunewise.errors``) keep their status; FastAPI's request validation becomes a 400 naming the
parameter (as OpenAI answers), an unknown route a 404, a wrong method a 405 with ``Allow``, all in the same shape,
so the official SDK raises its own exception classes (``BadRequestError``, ``NotFoundError``, ...). Anything
unexpected is answered by ``tunewise.serve.guard``: a 500 saying "internal error" with the request id under which
the server logged it.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from tunewise.errors import TunewiseError

log = logging.getLogger("tunewise.serve")

# HTTP status -> OpenAI's error ``type``.
TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_exceeded",
    500: "server_error",
}


class ApiError(TunewiseError):
    """An error with an explicit HTTP status (401, 403, 413, 429, ...)."""

    def __init__(self, status: int, message: str, *, code: str | None = None, param: str | None = None,
                 hint: str | None = None) -> None:
        super().__init__(message, hint=hint, code=code, param=param)
        self.status = status
        self.type = TYPES.get(status, "invalid_request_error")


def body(message: str, *, type: str, param: str | None = None, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def error_response(status: int, message: str, *, param: str | None = None, code: str | None = None,
                   type: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse(body(message, type=type or TYPES.get(status, "invalid_request_error"), param=param,
                             code=code), status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers on ``app``."""

    @app.exception_handler(TunewiseError)
    async def _domain(request: Request, exc: TunewiseError) -> JSONResponse:
        type_ = exc.type if exc.type != "invalid_request_error" else TYPES.get(exc.status, exc.type)
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, str(exc), param=exc.param, code=exc.code, type=type_, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        # OpenAI answers a malformed parameter with a 400 naming it (the SDK raises BadRequestError), not 422.
        errors = exc.errors()
        first = errors[0] if errors else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
        param = ".".join(loc) or None
        message = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()) if p not in ('body', 'query', 'path', 'header')) or 'body'}: "
            f"{_short(e.get('msg'))}" for e in errors[:5])
        return error_response(400, f"Invalid request: {message}", param=param, code="invalid_value")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        from tunewise.serve.guard import BodyTooLarge

        if isinstance(exc, BodyTooLarge):
            upload = exc.setting in ("max_upload_bytes", "max_part_bytes")
            return error_response(413, str(exc.detail), code="file_too_large" if upload else "request_too_large",
                                  param=("data" if exc.setting == "max_part_bytes" else "file") if upload else None)
        if exc.status_code == 404:
            message = f"Invalid URL ({request.method} {request.url.path})"
            return error_response(404, message, code="unknown_url")
        if exc.status_code == 405:
            # RFC 9110: a 405 names the methods the resource does allow.
            return error_response(405, f"Method {request.method} is not allowed on {request.url.path}",
                                  code="method_not_allowed", headers={"Allow": _allowed(request, exc)})
        if exc.status_code == 400:  # FastAPI's "There was an error parsing the body"
            return error_response(400, f"Invalid request body: {exc.detail}.", code="invalid_body")
        return error_response(exc.status_code, str(exc.detail))


def _allowed(request: Request, exc: StarletteHTTPException) -> str:
    """Every method some route of the app takes on this path (Starlette names only the first route's)."""
    from starlette.routing import Match

    methods: set[str] = set()
    for method in ("GET", "POST", "PUT", "PATCH", "DELETE"):
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] == Match.FULL for route in request.app.routes):
            methods.add(method)
    if not methods:
        return (exc.headers or {}).get("Allow", "")
    return ", ".join(sorted(methods))


def _short(message: object, limit: int = 200) -> str:
    text = str(message)
    return text if len(text) <= limit else text[:limit] + "..."
