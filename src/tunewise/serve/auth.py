"""API keys: ``Authorization: Bearer <key>``, each key bound to one project.

Only the key's sha256 is stored; the secret is shown once, when it is created. A request's project scopes
everything it can see: another project's files, jobs and models answer 404, as if they did not exist.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewise import paths
from tunewise.errors import NotFound, UsageError
from tunewise.serve.errors import ApiError
from tunewise.serve.store import Store, new_id, now

KEY_PREFIX = "sk-tw-"


@dataclass(frozen=True)
class Principal:
    key_id: str
    project: str


def hash_key(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_key(store: Store, project: str = "default") -> tuple[str, str]:
    """Create a key for ``project``; returns (key id, secret). The secret is not recoverable later."""
    if not project or not all(c.isalnum() or c in "-_" for c in project):
        raise UsageError(f"Invalid project name {project!r}.", hint="Use letters, digits, '-' and '_'.")
    secret = KEY_PREFIX + secrets.token_urlsafe(32)
    key_id = new_id("key-", 16)
    store.db.execute("INSERT INTO keys (id, project, hash, prefix, created_at) VALUES (?,?,?,?,?)",
                     (key_id, project, hash_key(secret), secret[:10], now()))
    return key_id, secret


def list_keys(store: Store) -> list[dict[str, Any]]:
    return store.all("SELECT id, project, prefix, created_at, revoked_at FROM keys ORDER BY created_at, id")


def revoke_key(store: Store, key_id: str) -> None:
    if store.db.execute("UPDATE keys SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL",
                        (now(), key_id)).rowcount == 0:
        raise NotFound(f"No active key with id {key_id!r}.", hint="`tunewise keys list` shows the key ids.")


def has_active_key(store: Store) -> bool:
    return store.one("SELECT 1 AS x FROM keys WHERE revoked_at IS NULL LIMIT 1") is not None


def authenticate(store: Store, authorization: str | None) -> Principal:
    """The principal for an ``Authorization`` header; 401 in OpenAI's shape when missing or wrong."""
    if not authorization or not authorization.lower().startswith("bearer "):
        raise ApiError(401, "You didn't provide an API key. You need to provide your API key in an "
                       "Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).",
                       code="missing_api_key")
    secret = authorization[7:].strip()
    row = store.one("SELECT id, project FROM keys WHERE hash = ? AND revoked_at IS NULL", hash_key(secret))
    if row is None:
        shown = secret[:6] + "*" * 4 + secret[-4:] if len(secret) > 12 else "****"
        raise ApiError(401, f"Incorrect API key provided: {shown}. `tunewise keys list` on the server shows "
                       "the valid keys; `tunewise keys create` makes a new one.", code="invalid_api_key")
    return Principal(key_id=row["id"], project=row["project"])


def write_secret_json(path: Path, value: Any) -> Path:
    """Write ``value`` as JSON to ``path`` atomically, readable by the owner only (0600): a key on disk."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(value, f)
    os.chmod(tmp, 0o600)  # a leftover temporary file keeps the mode it was created with
    tmp.replace(path)
    return path


def save_credentials(base_url: str, api_key: str) -> Path:
    """Write ``{"base_url", "api_key"}`` for the local CLI, readable by the owner only (0600)."""
    return write_secret_json(paths.credentials_file(), {"base_url": base_url, "api_key": api_key})
