"""The service's operations: schema migrations, settings, keys, first start, limits, the separate worker and
restart-resume after a crash. Servers here are real ``tunewise serve`` subprocesses on 127.0.0.1."""

from __future__ import annotations

import ast
import json
import os
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import httpx
import openai
import pytest
from click.testing import CliRunner

from tunewise.cli import cli
from tunewise.errors import UsageError
from tunewise.serve import settings as settings_module
from tunewise.serve import store as store_module
from tunewise.serve.settings import Settings
from tunewise.serve.store import MIGRATIONS, Store
from tunewise.serve.testing import all_events, running_server, wait_for, wait_for_step, write_receipts


def test_migrations_from_blank_and_old_database(tmp_path, monkeypatch):
    store = Store(tmp_path / "blank")
    names = [name for name, _ in MIGRATIONS]
    assert store.applied_migrations() == names
    assert Store(tmp_path / "blank").migrate() == []  # idempotent
    tables = {r["name"] for r in store.all("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"keys", "files", "jobs", "events", "checkpoints", "models", "migrations"} <= tables
    assert store.one("PRAGMA journal_mode")["journal_mode"] == "wal"
    # An old database (only the first migration) upgrades in place and keeps its rows.
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS[:1])
    old = Store(tmp_path / "old")
    from tunewise.serve import auth

    key_id, secret = auth.create_key(old, "p1")
    old.close()
    monkeypatch.setattr(store_module, "MIGRATIONS", MIGRATIONS)
    upgraded = Store(tmp_path / "old")
    assert upgraded.applied_migrations() == names
    assert auth.authenticate(upgraded, f"Bearer {secret}").project == "p1"


def test_settings_env_overrides_and_documentation(tmp_path):
    s = Settings.from_env({"TUNEWISE_MAX_UPLOAD_BYTES": "123", "TUNEWISE_STRICT_MODELS": "yes",
                           "TUNEWISE_ALIASES": '{"my-model": "tunewise-tiny"}', "TUNEWISE_WORKER_POLL_S": "0.1",
                           "TUNEWISE_DATA_DIR": str(tmp_path)}, port=9999)
    assert (s.max_upload_bytes, s.strict_models, s.worker_poll_s, s.port) == (123, True, 0.1, 9999)
    assert s.data_dir == tmp_path and s.alias_table()["my-model"] == "tunewise-tiny"
    assert s.alias_table()["gpt-4o-mini-2024-07-18"] == s.default_local_model == "smollm2-135m-instruct"
    with pytest.raises(UsageError, match="TUNEWISE_MAX_CONCURRENT_JOBS"):
        Settings.from_env({"TUNEWISE_MAX_CONCURRENT_JOBS": "many"})
    # Every field is documented where it is declared (a string right after it).
    tree = ast.parse(Path(settings_module.__file__).read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Settings")
    body = cls.body
    for i, node in enumerate(body):
        if isinstance(node, ast.AnnAssign):
            doc = body[i + 1] if i + 1 < len(body) else None
            assert isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant), node.target.id


def test_keys_commands(tmp_path):
    runner = CliRunner()
    data = ["--data-dir", str(tmp_path)]
    created = runner.invoke(cli, ["keys", "create", "--project", "team-a", *data])
    assert created.exit_code == 0, created.output
    key_id, project, secret = created.output.strip().split("\t")
    assert project == "team-a" and secret.startswith("sk-tw-")
    listed = runner.invoke(cli, ["keys", "list", *data]).output
    assert key_id in listed and "active" in listed and secret not in listed
    store = Store(tmp_path)
    assert store.one("SELECT hash FROM keys WHERE id = ?", key_id)["hash"] != secret  # only the hash is kept
    assert runner.invoke(cli, ["keys", "revoke", key_id, *data]).exit_code == 0
    assert "revoked" in runner.invoke(cli, ["keys", "list", *data]).output
    # A user mistake is one line on stderr, no traceback.
    proc = subprocess.run([sys.executable, "-m", "tunewise", "keys", "revoke", "key-nope", *data],
                          capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stderr.count("\n") == 1 and "key-nope" in proc.stderr


LIMITS = {
    "TUNEWISE_MAX_UPLOAD_BYTES": "4000",
    "TUNEWISE_MAX_LINE_BYTES": "600",
    "TUNEWISE_MAX_REQUEST_BYTES": "3000",
    "TUNEWISE_MAX_ACTIVE_JOBS": "1",
    "TUNEWISE_STRICT_MODELS": "1",
    "TUNEWISE_ALIASES": json.dumps({"my-model": "tunewise-tiny"}),
}


def test_first_start_limits_and_separate_worker(tmp_path):
    data = write_receipts(tmp_path / "train.jsonl")
    with running_server(tmp_path / "server", env=LIMITS, worker=False, create_key=False) as server:
        # First start: a key for the default project, printed once with the export lines, saved 0600.
        out = server.output()
        assert f"export OPENAI_BASE_URL={server.base_url}" in out and "export OPENAI_API_KEY=sk-tw-" in out
        creds = server.home / "credentials.json"
        assert stat.S_IMODE(creds.stat().st_mode) == 0o600
        assert json.loads(creds.read_text()) == {"base_url": server.base_url, "api_key": server.api_key}
        with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health") as r:  # no key needed
            assert json.load(r)["status"] == "ok"
        client = server.client()
        bare = httpx.get(f"{server.base_url}/models")  # no Authorization header at all
        assert bare.status_code == 401 and bare.json()["error"]["code"] == "missing_api_key"

        with pytest.raises(openai.APIStatusError) as err:
            client.files.create(file=("big.jsonl", data.read_bytes() * 2), purpose="fine-tune")
        assert err.value.status_code == 413 and "4000 bytes" in err.value.message
        assert "TUNEWISE_MAX_UPLOAD_BYTES" in err.value.message
        long_line = data.read_text().splitlines()
        long_line[2] = long_line[2].replace("Green Tea", "Green Tea " + "x" * 700, 1)
        with pytest.raises(openai.BadRequestError) as err:
            client.files.create(file=("long.jsonl", "\n".join(long_line).encode()), purpose="fine-tune")
        assert "Line 3" in err.value.message and "600 bytes" in err.value.message
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="tunewise-tiny", messages=[{"role": "user", "content": "x" * 4000}])
        assert err.value.status_code == 413 and "TUNEWISE_MAX_REQUEST_BYTES" in err.value.message
        assert client.files.list().data == []  # nothing refused was stored

        file = client.files.create(file=data.open("rb"), purpose="fine-tune")
        with pytest.raises(openai.BadRequestError) as err:  # strict model names
            client.fine_tuning.jobs.create(training_file=file.id, model="gpt-unknown")
        assert err.value.param == "model" and "gpt-unknown" in err.value.message
        job = client.fine_tuning.jobs.create(training_file=file.id, model="my-model",
                                             hyperparameters={"n_epochs": 1, "batch_size": 12})
        with pytest.raises(openai.RateLimitError) as err:
            client.fine_tuning.jobs.create(training_file=file.id, model="my-model")
        assert "TUNEWISE_MAX_ACTIVE_JOBS" in err.value.message
        time.sleep(1)
        assert client.fine_tuning.jobs.retrieve(job.id).status == "validating_files"  # no worker yet

        # A worker started on its own (`--worker-only`) picks the job up.
        with server.worker():
            done = wait_for(client, job.id)
        assert done.status == "succeeded", done.error
        assert any("'tunewise-tiny'" in e.message and "'my-model'" in e.message for e in all_events(client, job.id))

        server.stop()
        server.start()  # a second start prints no new key
        assert server.output().count("export OPENAI_API_KEY=") == 1
        assert client.fine_tuning.jobs.retrieve(job.id).fine_tuned_model == done.fine_tuned_model


@pytest.mark.slow  # about 38 s: a worker killed mid-job, the server restarted, the job resumed to the end
def test_crash_mid_job_resumes_after_restart(tmp_path):
    data = write_receipts(tmp_path / "train.jsonl")
    with running_server(tmp_path / "server") as server:
        client = server.client()
        file = client.files.create(file=data.open("rb"), purpose="fine-tune")
        job = client.fine_tuning.jobs.create(training_file=file.id, model="gpt-4o-mini",
                                             hyperparameters={"n_epochs": 2, "batch_size": 2})
        reached = wait_for_step(client, job.id, 8)  # past the epoch-end save at step 6
        server.stop(kill=True)  # SIGKILL server and worker: nothing gets to save
        assert Store(server.data_dir).job(job.id)["status"] == "running"
        server.start()
        final = wait_for(client, job.id)
        assert final.status == "succeeded", final.error
        events = all_events(client, job.id)
        messages = [e.message for e in events]
        resumed_at = messages.index("Fine-tuning job resumed from its last saved state")
        resumed_from = next(int(m.split()[4].split("/")[0]) for m in messages[resumed_at:]
                            if m.startswith("Training resumed from step "))
        # Resumed from the last saved state (the epoch end at step 6 or later), not from scratch, to the end;
        # the steps trained again after that state are not reported twice.
        assert 6 <= resumed_from <= reached
        steps = [e.data["step"] for e in events if e.type == "metrics" and e.message.startswith("Step ")]
        assert steps == list(range(1, 13))
        assert [f.id for f in client.files.list(purpose="fine-tune")] == [file.id]  # nothing lost

        # The worker alone dies mid-job: the server starts a new one, which resumes the job.
        job = client.fine_tuning.jobs.create(training_file=file.id, model="gpt-4o-mini",
                                             hyperparameters={"n_epochs": 2, "batch_size": 4})
        wait_for_step(client, job.id, 4)  # past the epoch-end save at step 3
        os.kill(int((server.data_dir / "worker.pid").read_text()), signal.SIGKILL)
        final = wait_for(client, job.id)
        assert final.status == "succeeded", final.error
        assert "Fine-tuning job resumed from its last saved state" in [e.message for e in all_events(client, job.id)]


def test_serve_refuses_a_taken_port(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "tunewise", "serve", "--port", str(port), "--data-dir",
                               str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and f"127.0.0.1:{port}" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "tunewise.db").exists()  # no key made, no worker started
