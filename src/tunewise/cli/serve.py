"""``tunewise serve`` (the OpenAI-compatible fine-tuning service) and ``tunewise keys`` (its API keys)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import click

from tunewise.errors import UsageError
from tunewise.serve.settings import Settings

GRACEFUL_SHUTDOWN_S = 10


def _settings(**overrides) -> Settings:
    return Settings.from_env(**overrides)


def _check_port(host: str, port: int) -> None:
    """Fail with one clear line, before a key or a worker is made, when the port is taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise UsageError(f"Cannot listen on {host}:{port}: {exc.strerror}.",
                             hint="Stop what uses it or pick another port with --port.") from exc


@click.command()
@click.option("--host", default=None, help="Interface to listen on (default 127.0.0.1; env TUNEWISE_HOST).")
@click.option("--port", type=int, default=None, help="Port to listen on (default 8000; env TUNEWISE_PORT).")
@click.option("--data-dir", type=click.Path(path_type=Path), default=None,
              help="Database, files and job outputs (default $TUNEWISE_HOME/server; env TUNEWISE_DATA_DIR).")
@click.option("--worker-only", is_flag=True, help="Run only the job worker (no HTTP server).")
@click.option("--no-worker", is_flag=True, help="Run only the HTTP server; a `--worker-only` process trains.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default=None,
              help="Where jobs train: local (this machine, the default) or ray (a Ray cluster; see docs/ray.md; "
                   "env TUNEWISE_EXECUTOR).")
@click.option("--parent-pid", type=int, default=None, hidden=True)
def serve(host, port, data_dir, worker_only, no_worker, executor, parent_pid) -> None:
    """Run the OpenAI-compatible fine-tuning API (Files, Fine-tuning, Models, Chat) and its job worker.

    Point the official SDK at it: OPENAI_BASE_URL=http://HOST:PORT/v1 and OPENAI_API_KEY=<key>. On the first
    start a key is created, printed once and saved to $TUNEWISE_HOME/credentials.json (mode 0600).
    """
    settings = _settings(host=host, port=port, data_dir=data_dir, worker=False if no_worker else None,
                         executor=executor)
    from tunewise.serve.executors import check

    check(settings)
    if executor:
        os.environ["TUNEWISE_EXECUTOR"] = executor  # the worker process reads its settings from the environment
    if worker_only:
        from tunewise.serve.worker import run_worker

        run_worker(settings, parent_pid=parent_pid)
        return

    import uvicorn

    from tunewise.serve import auth
    from tunewise.serve.app import create_app
    from tunewise.serve.store import Store

    _check_port(settings.host, settings.port)
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

    # The worker knows where this server listens: a job whose grader asks a model asks this server (grader_base_url
    # empty).
    worker = _WorkerProcess(settings.data_dir, settings.host, settings.port) if settings.worker else None
    if worker is not None:
        worker.start()
    click.echo(f"tunewise serve: {base_url} (data in {settings.data_dir}"
               f"{', with a worker process' if worker else ', no worker'})", err=True)
    click.echo(f"dashboard: {base_url[:-len('/v1')]}/ (sign in with the API key)", err=True)
    try:
        # A stop waits at most GRACEFUL_SHUTDOWN_S for requests in flight (a client streaming forever must not
        # keep the server, and so its worker, alive).
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level,
                    timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)
    finally:
        if worker is not None:
            worker.stop()


class _WorkerProcess:
    """The worker child of ``tunewise serve``: started with the server, restarted if it dies, stopped with it.

    A restarted worker resumes the job it was training from the job's last saved state. One long-lived thread
    starts and waits on every worker: Linux's parent-death signal follows the thread that forked the child, so
    the forking thread must live as long as the server.
    """

    def __init__(self, data_dir: Path, host: str = "127.0.0.1", port: int = 8000) -> None:
        self.data_dir = data_dir
        self.host, self.port = host, port
        self.proc: subprocess.Popen | None = None
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._supervise, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _supervise(self) -> None:
        from tunewise.serve.worker import set_parent_death_signal

        while True:
            with self._lock:
                if self.stopping.is_set():
                    return
                self.proc = subprocess.Popen(
                    [sys.executable, "-m", "tunewise", "serve", "--worker-only", "--data-dir", str(self.data_dir),
                     "--host", self.host, "--port", str(self.port), "--parent-pid", str(os.getpid())],
                    preexec_fn=set_parent_death_signal)  # SIGTERM to the worker if this server dies
            code = self.proc.wait()
            if self.stopping.wait(1.0):  # also: no tight loop if it cannot start at all
                return
            click.echo(f"tunewise serve: the worker exited ({code}); restarting it", err=True)

    def stop(self) -> None:
        with self._lock:
            self.stopping.set()
            proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # the worker saves each running job's state, then exits
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                proc.kill()


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
    from tunewise.cli.cost import table
    from tunewise.serve import auth
    from tunewise.serve.store import Store

    rows = [(row["id"], row["project"], f"{row['prefix']}...", "revoked" if row["revoked_at"] else "active")
            for row in auth.list_keys(Store(_settings(data_dir=data_dir).data_dir))]
    if not rows:
        click.echo("no keys (one is created when `tunewise serve` first starts; or `tunewise keys create`)")
        return
    table(("id", "project", "secret", "status"), rows, left=(0, 1, 2, 3))


@keys.command("revoke")
@click.argument("key_id")
@_data_dir_option
def keys_revoke(key_id: str, data_dir: Path | None) -> None:
    """Revoke a key: requests with it answer 401 from now on."""
    from tunewise.serve import auth
    from tunewise.serve.store import Store

    auth.revoke_key(Store(_settings(data_dir=data_dir).data_dir), key_id)
    click.echo(f"revoked {key_id}")
