"""Domain errors. The library never prints or exits: it raises these, and each message carries the fix.

The CLI turns a ``TunewiseError`` into one line on stderr; the server maps it to OpenAI's error body
(``{"error": {"message", "type", "param", "code"}}``) with ``status``.
"""

from __future__ import annotations


class TunewiseError(Exception):
    """A user-facing error: ``message`` says what is wrong, ``hint`` how to fix it."""

    status = 400  # HTTP status the server answers with
    type = "invalid_request_error"  # OpenAI's error ``type``

    def __init__(self, message: str, *, hint: str | None = None, code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.code = code
        self.param = param

    def __str__(self) -> str:
        return f"{self.message} {self.hint}" if self.hint else self.message


class UsageError(TunewiseError):
    """Bad arguments or configuration (CLI exit code 2)."""


class DataError(TunewiseError):
    """The input data is unusable (a file that is not JSONL, an example too long, ...)."""


class NotFound(TunewiseError):
    """A file, model, job or checkpoint that does not exist."""

    status = 404


class LocalFileNotFound(NotFound):
    """A local file the user named (a path on this machine) that does not exist: a usage error in the CLI."""


class ModelNotFound(NotFound):
    """A model name or path that neither the registry, the disk nor a reachable hub knows."""


class Conflict(TunewiseError):
    """The request is valid but the object is in the wrong state (cancel a finished job, ...)."""

    status = 409


class Unsupported(TunewiseError):
    """A feature that is recognised but not supported here (a GPU-only option on CPU, DPO, ...)."""


class Cancelled(TunewiseError):
    """Raised inside long work (training, evaluation) when a stop was requested."""

    status = 409
