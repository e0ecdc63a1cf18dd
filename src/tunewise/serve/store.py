"""The service's state: one SQLite database (WAL mode) shared by the API server and the job worker.

The schema grows through append-only named migrations, each applied once and recorded in the
``migrations`` table, so an old database upgrades in place and a blank one is built by the same steps.
Uploaded files live beside it under ``files/``; job outputs under ``jobs/<job id>/``.
"""

from __future__ import annotations

import json
import os
import secrets
import sqlite3
import string
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# (name, SQL). Append only: never edit or reorder an applied migration, add a new one.
MIGRATIONS: list[tuple[str, str]] = [
    ("0001_keys", """
        CREATE TABLE keys (
            id TEXT PRIMARY KEY,            -- key-... (public handle, shown by `tunewise keys list`)
            project TEXT NOT NULL,
            hash TEXT NOT NULL UNIQUE,      -- sha256 of the secret; the secret itself is never stored
            prefix TEXT NOT NULL,           -- first characters of the secret, to recognise it
            created_at INTEGER NOT NULL,
            revoked_at INTEGER
        );
    """),
    ("0002_files", """
        CREATE TABLE files (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- insertion order, for stable pagination
            id TEXT NOT NULL UNIQUE,
            project TEXT NOT NULL,
            filename TEXT NOT NULL,
            purpose TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            sha256 TEXT NOT NULL,
            path TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            deleted_at INTEGER
        );
        CREATE INDEX files_project ON files(project, seq);
    """),
    ("0003_jobs", """
        CREATE TABLE jobs (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            project TEXT NOT NULL,
            model TEXT NOT NULL,            -- as requested (an OpenAI name or a local one)
            local_model TEXT NOT NULL,      -- what is really trained
            training_file TEXT NOT NULL,
            validation_file TEXT,
            hyperparameters TEXT NOT NULL,  -- JSON; "auto" values resolved once known
            method TEXT NOT NULL,           -- JSON, OpenAI's method object
            suffix TEXT,
            seed INTEGER NOT NULL,
            metadata TEXT,                  -- JSON object or NULL
            status TEXT NOT NULL,
            error TEXT,                     -- JSON {code, message, param} or NULL
            fine_tuned_model TEXT,
            result_files TEXT NOT NULL DEFAULT '[]',
            trained_tokens INTEGER,
            estimated_finish INTEGER,
            output_dir TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            started_at INTEGER,
            finished_at INTEGER
        );
        CREATE INDEX jobs_project ON jobs(project, seq);
        CREATE INDEX jobs_status ON jobs(status, seq);
        CREATE TABLE events (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            job_id TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            level TEXT NOT NULL,
            type TEXT NOT NULL,
            message TEXT NOT NULL,
            data TEXT
        );
        CREATE INDEX events_job ON events(job_id, seq);
        CREATE TABLE checkpoints (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,
            job_id TEXT NOT NULL,
            step INTEGER NOT NULL,
            model TEXT NOT NULL,            -- ft:...:ckpt-step-N
            path TEXT NOT NULL,
            metrics TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            UNIQUE (job_id, step)
        );
    """),
    ("0004_models", """
        CREATE TABLE models (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,        -- ft:BASE:PROJECT:SUFFIX:JOBSHORTID
            project TEXT NOT NULL,
            job_id TEXT NOT NULL,
            base TEXT NOT NULL,
            local_model TEXT NOT NULL,
            path TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            deleted_at INTEGER
        );
    """),
    ("0005_job_eval", """
        -- The job's eval set, a tunewise extension: JSON {file, schema, limit, max_tokens} or NULL. Each checkpoint
        -- is scored on it and the scores join the checkpoint's metrics.
        ALTER TABLE jobs ADD COLUMN eval TEXT;
    """),
    ("0006_stored_completions", """
        -- Chat completions created with `store: true` (OpenAI's stored completions), the inputs of distillation.
        CREATE TABLE stored_completions (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- creation order, for stable pagination
            id TEXT NOT NULL UNIQUE,                -- chatcmpl-...
            project TEXT NOT NULL,
            model TEXT NOT NULL,                    -- as the request named it
            metadata TEXT NOT NULL DEFAULT '{}',    -- JSON object of strings; updated by POST /chat/completions/{id}
            request TEXT NOT NULL,                  -- JSON: the request's parameters, messages included
            response TEXT NOT NULL,                 -- JSON: the chat.completion object as answered
            created_at INTEGER NOT NULL
        );
        CREATE INDEX stored_completions_project ON stored_completions(project, seq);
    """),
    ("0007_uploads", """
        -- OpenAI's Uploads: a file sent in parts (each streamed to disk under files/uploads/), assembled on complete.
        CREATE TABLE uploads (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,                -- upload_...
            project TEXT NOT NULL,
            filename TEXT NOT NULL,
            purpose TEXT NOT NULL,
            bytes INTEGER NOT NULL,                 -- as declared; the parts named on complete must add up to it
            mime_type TEXT NOT NULL,
            expires_after INTEGER,                  -- seconds the assembled File lives (its expires_after) or NULL
            status TEXT NOT NULL,                   -- pending, completed, cancelled (expired is shown, not stored)
            file_id TEXT,                           -- the File made on complete
            created_at INTEGER NOT NULL,
            expires_at INTEGER NOT NULL
        );
        CREATE INDEX uploads_project ON uploads(project, seq);
        CREATE TABLE upload_parts (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,                -- part_...
            upload_id TEXT NOT NULL,
            bytes INTEGER NOT NULL,
            path TEXT NOT NULL,
            created_at INTEGER NOT NULL
        );
        CREATE INDEX upload_parts_upload ON upload_parts(upload_id, seq);
    """),
    ("0008_file_expiry", """
        -- A File's expires_after, resolved: past it the file is gone from lists and cannot be used.
        ALTER TABLE files ADD COLUMN expires_at INTEGER;
    """),
    ("0009_checkpoint_permissions", """
        -- A fine-tuned model or checkpoint shared with another project (OpenAI's checkpoint permissions): that
        -- project may use it as a model (chat, the base of a job) until the permission is deleted.
        CREATE TABLE checkpoint_permissions (
            seq INTEGER PRIMARY KEY AUTOINCREMENT,
            id TEXT NOT NULL UNIQUE,                -- cp_...
            model TEXT NOT NULL,                    -- the ft:... name shared (a fine-tuned model or a checkpoint)
            owner TEXT NOT NULL,                    -- the project that owns it
            project_id TEXT NOT NULL,               -- the project it is shared with
            created_at INTEGER NOT NULL,
            UNIQUE (model, project_id)
        );
        CREATE INDEX checkpoint_permissions_project ON checkpoint_permissions(project_id, model);
    """),
    ("0010_lineage", """
        -- Continued fine-tuning: a job whose model is a fine-tuned model or checkpoint starts from its weights.
        ALTER TABLE jobs ADD COLUMN parent_model TEXT;  -- the ft:... name it continues, or NULL
        ALTER TABLE jobs ADD COLUMN init_path TEXT;     -- that model's adapter directory when the job was created
        ALTER TABLE models ADD COLUMN parent TEXT;      -- the model it was continued from, or NULL
    """),
    ("0011_job_integrations", """
        -- The job's integrations (wandb, tensorboard) as the API echoes them: a JSON list, NULL for none.
        ALTER TABLE jobs ADD COLUMN integrations TEXT;
    """),
    ("0012_ray_job_ray", """
        -- What a job asks of a Ray cluster (the `ray` extension of job creation, executor=ray): JSON
        -- {num_workers, use_gpu, resources_per_worker}, NULL for the server's settings.
        ALTER TABLE jobs ADD COLUMN ray TEXT;
    """),
]

TERMINAL = ("succeeded", "failed", "cancelled")
ACTIVE = ("validating_files", "queued", "running", "paused")

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str, n: int = 24) -> str:
    """An OpenAI-style id: ``file-`` + 24 random letters and digits."""
    return prefix + "".join(secrets.choice(_ALPHABET) for _ in range(n))


def now() -> int:
    return int(time.time())


def _statements(sql: str) -> list[str]:
    """Split a migration into statements (``executescript`` would commit outside our transaction)."""
    out, buf = [], ""
    for line in sql.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        out.append(buf.strip())
    return out


def _owner_only(path: Path, mode: int) -> None:
    try:
        if path.stat().st_mode & 0o777 != mode:
            os.chmod(path, mode)
    except PermissionError:  # not ours (a shared, operator-made directory): leave it as it is
        pass


class Store:
    """Thin typed access to the database. Safe across threads (one connection per thread) and processes."""

    def __init__(self, data_dir: str | Path) -> None:
        self.data_dir = Path(data_dir).expanduser()
        self.files_dir = self.data_dir / "files"
        self.jobs_dir = self.data_dir / "jobs"
        # Owner only, whatever the umask: keys' hashes, uploaded data and trained models are nobody else's.
        for folder in (self.data_dir, self.files_dir, self.jobs_dir):
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            _owner_only(folder, 0o700)
        self.path = self.data_dir / "tunewise.db"
        # SQLite gives the -wal and -shm files the database file's mode: create it 0600 first.
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        _owner_only(self.path, 0o600)
        self._local = threading.local()
        self.migrate()

    # -- connection and schema ------------------------------------------------------------------------
    @property
    def db(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # Autocommit (isolation_level=None): each statement commits, `transaction()` groups several.
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        return conn

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: takes the write lock up front so read-then-write is atomic."""
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        db.execute("COMMIT")

    def migrate(self) -> list[str]:
        """Apply the migrations not yet recorded; returns the names applied now."""
        applied_now = []
        with self.transaction() as db:
            db.execute("CREATE TABLE IF NOT EXISTS migrations (name TEXT PRIMARY KEY, applied_at INTEGER NOT NULL)")
            done = {row["name"] for row in db.execute("SELECT name FROM migrations")}
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                for statement in _statements(sql):
                    db.execute(statement)
                db.execute("INSERT INTO migrations (name, applied_at) VALUES (?, ?)", (name, now()))
                applied_now.append(name)
        return applied_now

    def applied_migrations(self) -> list[str]:
        return [row["name"] for row in self.db.execute("SELECT name FROM migrations ORDER BY name")]

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    # -- generic helpers ---------------------------------------------------------------------------------
    def one(self, sql: str, *args: Any) -> dict[str, Any] | None:
        row = self.db.execute(sql, args).fetchone()
        return dict(row) if row else None

    def all(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        return [dict(row) for row in self.db.execute(sql, args)]

    def page(self, table: str, where: str, args: list[Any], *, after: str | None, limit: int,
             newest_first: bool = True, after_scope: str = "1=1",
             after_args: tuple = ()) -> tuple[list[dict[str, Any]], bool]:
        """One page of ``table`` rows matching ``where``, after the row whose id is ``after``.

        Returns (rows, has_more). An ``after`` that names no row of the scope gives an empty page, as
        OpenAI does for a cursor from elsewhere.
        """
        args = list(args)
        if after:
            anchor = self.one(f"SELECT seq FROM {table} WHERE id = ? AND {after_scope}", after, *after_args)
            if anchor is None:
                return [], False
            where += " AND seq < ?" if newest_first else " AND seq > ?"
            args.append(anchor["seq"])
        order = "DESC" if newest_first else "ASC"
        rows = self.all(f"SELECT * FROM {table} WHERE {where} ORDER BY seq {order} LIMIT ?", *args, limit + 1)
        return rows[:limit], len(rows) > limit

    # -- events ---------------------------------------------------------------------------------------
    def add_event(self, job_id: str, message: str, *, level: str = "info", type: str = "message",
                  data: dict[str, Any] | None = None) -> None:
        self.db.execute(
            "INSERT INTO events (id, job_id, created_at, level, type, message, data) VALUES (?,?,?,?,?,?,?)",
            (new_id("ftevent-"), job_id, now(), level, type, message, json.dumps(data) if data else None))

    # -- jobs -----------------------------------------------------------------------------------------
    def job(self, job_id: str, project: str | None = None) -> dict[str, Any] | None:
        if project is None:
            return self.one("SELECT * FROM jobs WHERE id = ?", job_id)
        return self.one("SELECT * FROM jobs WHERE id = ? AND project = ?", job_id, project)

    def set_job(self, job_id: str, *, only_if_status: tuple[str, ...] | None = None, **values: Any) -> bool:
        """Update columns of a job; with ``only_if_status``, only while its status is one of those.

        The conditional form is how the API and the worker avoid overwriting each other: a job the API
        has just cancelled is never marked succeeded by a worker that finished a moment later.
        """
        values = {k: (json.dumps(v) if k in ("hyperparameters", "error", "result_files", "metadata", "method", "eval")
                      and v is not None else v) for k, v in values.items()}
        sql = "UPDATE jobs SET " + ", ".join(f"{k} = ?" for k in values) + " WHERE id = ?"
        args: list[Any] = [*values.values(), job_id]
        if only_if_status:
            sql += f" AND status IN ({','.join('?' * len(only_if_status))})"
            args += list(only_if_status)
        return self.db.execute(sql, args).rowcount > 0

    def job_status(self, job_id: str) -> str | None:
        row = self.db.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return row["status"] if row else None
