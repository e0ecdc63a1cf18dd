"""A real ``tunewise serve`` for tests: a subprocess on 127.0.0.1, a free port, its own data directory.

    from tunewise.serve.testing import running_server

    with running_server() as server:            # waits for /health
        client = OpenAI(base_url=server.base_url, api_key=server.api_key)
        ...
        server.stop(kill=True)                  # SIGKILL server and worker, as a crash would
        server.start()                          # same data dir, port and key

Stable API (other test files rely on it): ``running_server(data_dir=None, env=None, *, local_model="tunewise-tiny",
worker=True, create_key=True, project="default", startup_timeout=60)`` yields a ``Server`` with ``base_url``
(``http://127.0.0.1:PORT/v1``), ``api_key``, ``data_dir``, ``port``, ``home`` (the server's ``TUNEWISE_HOME``),
``stop(kill=False)``, ``start()``, ``create_key(project)``, ``output()`` (its stdout+stderr so far) and
``client(**kw)`` (an ``openai.OpenAI`` for it). The server is always stopped on exit, the worker with it.

Also: ``write_receipts(path)`` (12 valid chat examples, the guide's receipt task), ``wait_for(client, job_id)``
(poll a job until it ends), ``wait_for_step``, ``all_events`` and ``validate_schema(spec_path, name, obj)``
(check a response against ``#/components/schemas/<name>`` of OpenAI's OpenAPI spec, ``$ref``s resolved).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """Handle on a running ``tunewise serve`` subprocess."""

    def __init__(self, data_dir: Path, env: dict[str, str], port: int, home: Path) -> None:
        self.data_dir = data_dir
        self.port = port
        self.home = home
        self.base_url = f"http://127.0.0.1:{port}/v1"
        self.api_key: str | None = None
        self._env = env
        self._proc: subprocess.Popen | None = None
        self._log = data_dir.parent / f"{data_dir.name}-server.log"
        self.startup_timeout = 60.0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> None:
        """Start the server (again) and wait until ``/health`` answers."""
        if self._proc is not None and self._proc.poll() is None:
            return
        log = open(self._log, "ab")  # noqa: SIM115 - the child writes to it; closed in stop()
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "tunewise", "serve", "--host", "127.0.0.1", "--port", str(self.port),
             "--data-dir", str(self.data_dir)],
            env=self._env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"tunewise serve exited with {self._proc.returncode}:\n{self.output()}")
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop(kill=True)
        raise RuntimeError(f"tunewise serve did not answer /health within {self.startup_timeout}s:\n"
                           f"{self.output()}")

    def stop(self, kill: bool = False) -> None:
        """Stop the server: SIGTERM and wait (the worker saves job state), or with ``kill`` SIGKILL the server
        and its worker together (a crash: jobs resume from their last periodic save)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            self._reap_group(proc)
            return
        if kill:
            # A crash: the server and its worker die at once, nothing gets to save state.
            os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=150)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        self._reap_group(proc)

    def _reap_group(self, proc: subprocess.Popen | None) -> None:
        # The worker is in the server's process group; it exits with the server, but wait for it so a
        # restart does not race the old worker (and never leave it behind).
        if proc is None:
            return
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.1)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    @contextmanager
    def worker(self) -> Iterator[subprocess.Popen]:
        """A job worker on its own (``tunewise serve --worker-only``) over this server's data directory, for a
        server started with ``worker=False``; SIGTERMed and waited for at the end of the ``with`` block."""
        proc = subprocess.Popen([sys.executable, "-m", "tunewise", "serve", "--worker-only", "--data-dir",
                                 str(self.data_dir)], env=self._env)
        try:
            yield proc
        finally:
            proc.terminate()
            proc.wait(timeout=60)

    def create_key(self, project: str = "default") -> str:
        """A new API key for ``project`` (written straight into the server's database)."""
        from tunewise.serve import auth
        from tunewise.serve.store import Store

        store = Store(self.data_dir)
        try:
            return auth.create_key(store, project)[1]
        finally:
            store.close()

    def output(self) -> str:
        try:
            return self._log.read_text(errors="replace")
        except OSError:
            return ""

    def client(self, **kwargs: Any):
        from openai import OpenAI

        kwargs.setdefault("max_retries", 0)
        return OpenAI(base_url=self.base_url, api_key=kwargs.pop("api_key", self.api_key), **kwargs)


@contextmanager
def running_server(data_dir: str | Path | None = None, env: dict[str, str] | None = None, *,
                   local_model: str = "tunewise-tiny", worker: bool = True, create_key: bool = True,
                   project: str = "default", startup_timeout: float = 60.0) -> Iterator[Server]:
    """Run ``tunewise serve`` on 127.0.0.1 for the duration of the ``with`` block.

    ``data_dir``: the server's data directory (a fresh temporary one by default). ``env``: extra environment
    variables (``TUNEWISE_*`` settings). ``local_model``: the stand-in for every OpenAI model name (tests use the
    tiny model). ``create_key``: make a key for ``project`` before starting (else the server's first start
    makes one, read back from ``credentials.json`` in ``server.home``).
    """
    tmp = None
    if data_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="tunewise-serve-")
        data_dir = Path(tmp.name) / "server"
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    home = data_dir.parent / f"{data_dir.name}-home"
    home.mkdir(exist_ok=True)
    child_env = {**os.environ, "TUNEWISE_HOME": str(home), "TUNEWISE_DEFAULT_LOCAL_MODEL": local_model,
                 "TUNEWISE_WORKER": "1" if worker else "0", "TUNEWISE_PROJECT": project}
    # The converted-model cache is shared, never rebuilt per server.
    child_env.setdefault("TUNEWISE_MODEL_CACHE", os.environ.get("TUNEWISE_MODEL_CACHE")
                         or str(Path.home() / ".cache" / "tunewise" / "models"))
    child_env.update(env or {})
    server = Server(data_dir, child_env, free_port(), home)
    server.startup_timeout = startup_timeout
    try:
        if create_key:
            server.api_key = server.create_key(project)
        server.start()
        if not create_key:
            server.api_key = json.loads((home / "credentials.json").read_text())["api_key"]
        yield server
    finally:
        server.stop()
        if tmp is not None:
            tmp.cleanup()


SYSTEM = "You extract product names and prices from receipts. Return JSON only."
ITEMS = [("Coffee", 4.5), ("Bagel", 3.0), ("Green Tea", 2.75), ("Muffin", 2.25), ("Latte", 5.1),
         ("Croissant", 3.4), ("Juice", 4.0), ("Scone", 2.9), ("Water", 1.0), ("Cookie", 1.75), ("Soup", 6.5),
         ("Salad", 8.25)]
TERMINAL = ("succeeded", "failed", "cancelled")


def write_receipts(path: Path, items=ITEMS) -> Path:
    """The guide's receipt-extraction examples, one chat per line (12: the validator wants at least 10)."""
    with open(path, "w") as f:
        for name, price in items:
            answer = json.dumps({"items": [{"name": name, "price": price}]})
            f.write(json.dumps({"messages": [{"role": "system", "content": SYSTEM},
                                             {"role": "user", "content": f"{name} ${price:.2f}"},
                                             {"role": "assistant", "content": answer}]}) + "\n")
    return path


def wait_for(client, job_id: str, statuses=TERMINAL, timeout: float = 150.0):
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        if time.monotonic() > deadline:
            events = [e.message for e in client.fine_tuning.jobs.list_events(job_id, limit=50).data]
            raise AssertionError(f"job {job_id} still {job.status} after {timeout}s; events: {events}")
        time.sleep(0.2)


def wait_for_step(client, job_id: str, step: int, timeout: float = 150.0) -> int:
    """Wait until the job has reported metrics for ``step`` (or later); returns the latest step seen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = client.fine_tuning.jobs.list_events(job_id, limit=5).data
        steps = [e.data["step"] for e in events if e.type == "metrics"]
        if steps and max(steps) >= step:
            return max(steps)
        job = client.fine_tuning.jobs.retrieve(job_id)
        assert job.status not in TERMINAL, f"job ended ({job.status}) before step {step}: {job.error}"
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not reach step {step} in {timeout}s")


def all_events(client, job_id: str) -> list:
    """Every event of a job, oldest first."""
    return list(reversed(list(client.fine_tuning.jobs.list_events(job_id, limit=1000).data)))


# -- OpenAI's schemas -------------------------------------------------------------------------------------------
def _to_json_schema(node: Any) -> Any:
    """OpenAPI 3.0 quirks -> JSON Schema: ``nullable: true`` and boolean ``exclusiveMinimum``."""
    if isinstance(node, list):
        return [_to_json_schema(n) for n in node]
    if not isinstance(node, dict):
        return node
    node = {k: _to_json_schema(v) for k, v in node.items()}
    if node.get("exclusiveMinimum") is True and "minimum" in node:
        node["exclusiveMinimum"] = node.pop("minimum")
    elif isinstance(node.get("exclusiveMinimum"), bool):
        node.pop("exclusiveMinimum")
    if node.pop("nullable", False):
        node = {"anyOf": [node, {"type": "null"}]}
    return node


_SPEC_URI = "urn:openai-openapi"


@lru_cache(maxsize=1)
def _spec_registry(spec_path: str):
    import yaml
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    with open(spec_path) as f:
        spec = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    spec = {"components": {"schemas": _to_json_schema(spec["components"]["schemas"])}}
    resource = Resource.from_contents(spec, default_specification=DRAFT202012)
    return Registry().with_resource(_SPEC_URI, resource)


def validate_schema(spec_path: Path, name: str, instance: Any) -> None:
    """Validate ``instance`` against ``#/components/schemas/<name>`` of OpenAI's OpenAPI spec ($refs resolved)."""
    from jsonschema import Draft202012Validator

    registry = _spec_registry(str(spec_path))
    validator = Draft202012Validator({"$ref": f"{_SPEC_URI}#/components/schemas/{name}"}, registry=registry)
    errors = sorted(validator.iter_errors(instance), key=lambda e: list(e.path))
    assert not errors, f"{name}: " + "; ".join(f"{list(e.path)}: {e.message}" for e in errors[:5])
