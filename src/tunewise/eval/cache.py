"""An on-disk cache of chat completions (SQLite), so rerunning an evaluation does not pay twice.

The key is a SHA-256 of the endpoint, model, messages and request parameters (canonical JSON), so any change
to the prompt, the few-shot turns, temperature, max_tokens or response_format is a new request. Only
successful answers are stored; errors are retried on the next run.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from tunewise import paths

SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    key        TEXT PRIMARY KEY,
    base_url   TEXT NOT NULL,
    model      TEXT NOT NULL,
    response   TEXT NOT NULL,   -- JSON: answer, usage, latency_s, finish_reason
    created_at REAL NOT NULL
)
"""


def default_path() -> Path:
    """``$TUNEWISE_HOME/eval-cache.sqlite``."""
    return paths.home() / "eval-cache.sqlite"


def cache_key(base_url: str, model: str, messages: list[dict], params: dict[str, Any]) -> str:
    payload = json.dumps({"base_url": base_url.rstrip("/"), "model": model, "messages": messages,
                          "params": params}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


class CompletionCache:
    """A thread-safe key -> response store in one SQLite file (WAL, one connection behind a lock)."""

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(SCHEMA)
            self._db.commit()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> dict | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM completions WHERE key = ?", (key,)).fetchone()
            if row is None:
                self.misses += 1
                return None
            self.hits += 1
        return json.loads(row[0])

    def put(self, key: str, base_url: str, model: str, response: dict) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?, ?)",
                             (key, base_url, model, json.dumps(response), time.time()))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> CompletionCache:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
