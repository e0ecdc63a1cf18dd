"""``tunewise serve`` (the OpenAI-compatible fine-tuning service) and ``tunewise keys`` (its API keys)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import click

from tunewise.serve.settings import Settings


def _settings(**overrides) -> Settings:
    return Settings.from_env(**overrides)


@click.command()
@click.option("--host", default=None, help="Interface to listen on (default 127.0.0.1; env TUNEWISE_HOST).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 8000; env TUNEWISE_PORT).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Database, files and job outputs (default $TUNEWISE_HOME/server; env TUNEWISE_DATA_DIR).")
@click.option("--worker-only", is_flag=True, help="Run only the job worker (no HTTP server).")
@click.option("--no-worker", is_flag=True, help="Run only the HTTP server; a `--worker-only` process trains.")
@click.option("--parent-pid", type=int, default=None, hidden=True)
def serve(host, port, data_dir, worker_only, no_worker, parent_pid) -> None:
    """Run the OpenAI-compatible fine-tuning API (Files, Fine-tuning, Models, Chat) and its job worker.

    Point the official SDK at it: OPENAI_BASE_URL=http://HOST:PORT/v1 and OPENAI_API_KEY=<key>. On the first
    start a key is created, printed once and saved to $TUNEWISE_HOME/credentials.json (mode 0600).
    """
    settings = _settings(host=host, port=port, data_dir=data_dir, worker=False if no_worker else None)
    if worker_only:
        from tunewise.serve.worker import run_worker

        run_worker(settings, parent_pid=parent_pid)
        return

    import uvicorn

    from tunewise.serve import auth
    from tunewise.serve.app import create_app
    from tunewise.serve.store import Store

    store = Store(settings.data_dir)
    shown_host = "127.0.0.1" if settings.host in ("0.0.0.0", "::", "") else settings.host
    base_url = f"http://{shown_host}:{settings.port}/v1"
    if not auth.has_active_key(store):
        _, secret = auth.create_key(store, settings.project)
        path = auth.save_credentials(base_url, secret)
        click.echo(f"Created an API key for project '{settings.project}' (shown once; saved to {path}):")
        click.echo(f"export OPENAI_BASE_URL={base_url}")
        click.echo(f"export OPENAI_API_KEY={secret}")
    store.close()

    worker = None
    if settings.worker:
        from tunewise.serve.worker import set_parent_death_signal

        worker = subprocess.Popen(
            [sys.executable, "-m", "tunewise", "serve", "--worker-only", "--data-dir", str(settings.data_dir),
             "--parent-pid", str(os.getpid())],
            preexec_fn=set_parent_death_signal)
    click.echo(f"tunewise serve: {base_url} (data in {settings.data_dir}"
               f"{', worker pid ' + str(worker.pid) if worker else ', no worker'})", err=True)
    try:
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)
    finally:
        if worker is not None and worker.poll() is None:
            worker.send_signal(signal.SIGTERM)  # the worker saves each running job's state, then exits
            try:
                worker.wait(timeout=120)
            except subprocess.TimeoutExpired:
                worker.kill()


@click.group()
def keys() -> None:
    """API keys of the local service: each key belongs to one project."""


_data_dir_option = click.option("--data-dir", type=click.Path(path_type=Path), default=None,
                                help="The service's data directory (default $TUNEWISE_HOME/server).")


@keys.command("create")
@click.option("--project", default="default", show_default=True, help="Project the key gives access to.")
@_data_dir_option
def keys_create(project: str, data_dir: Path | None) -> None:
    """Create a key; its secret is printed once."""
    from tunewise.serve import auth
    from tunewise.serve.store import Store

    key_id, secret = auth.create_key(Store(_settings(data_dir=data_dir).data_dir), project)
    click.echo(f"{key_id}\t{project}\t{secret}")


@keys.command("list")
@_data_dir_option
def keys_list(data_dir: Path | None) -> None:
    """List keys (id, project, secret prefix, status); secrets are not stored, so not shown."""
    from tunewise.serve import auth
    from tunewise.serve.store import Store

    for row in auth.list_keys(Store(_settings(data_dir=data_dir).data_dir)):
        status = "revoked" if row["revoked_at"] else "active"
        click.echo(f"{row['id']}\t{row['project']}\t{row['prefix']}...\t{status}")


@keys.command("revoke")
@click.argument("key_id")
@_data_dir_option
def keys_revoke(key_id: str, data_dir: Path | None) -> None:
    """Revoke a key: requests with it answer 401 from now on."""
    from tunewise.serve import auth
    from tunewise.serve.store import Store

    auth.revoke_key(Store(_settings(data_dir=data_dir).data_dir), key_id)
    click.echo(f"revoked {key_id}")
