"""``python`` graders: the user's ``grade(sample, item) -> float`` in a subprocess with a time limit.

The source runs in a fresh interpreter (``python -I``: no user site-packages, no ``PYTHONPATH``, no current
directory on the path) in its own session, with an address-space limit; the sample and item go in on stdin as
JSON and the score comes back on a pipe of its own, so the grader's prints cannot corrupt it. Past the time
limit the whole process group is killed. This isolates a grader's crashes and loops from tunewise; it is not a
security sandbox: run only graders you trust (the server refuses them unless its operator enables them).
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass

DEFAULT_TIMEOUT_S = 120.0  # OpenAI's limit on one grading call
DEFAULT_MEMORY_MB = 2048

_HARNESS = r"""
import json, os, sys, traceback
try:
    import resource
    limit = int(sys.argv[3]) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
except (ImportError, ValueError, OSError):
    pass
out = os.fdopen(int(sys.argv[2]), "w")
stdout, sys.stdout = sys.stdout, sys.stderr   # the grader's prints go to stderr
try:
    payload = json.loads(sys.stdin.read())
    namespace = {"__name__": "grader"}
    with open(sys.argv[1], encoding="utf-8") as f:
        code = compile(f.read(), "<grader source>", "exec")
    exec(code, namespace)
    value = namespace["grade"](payload["sample"], payload["item"])
    if isinstance(value, bool):
        value = float(value)
    if not isinstance(value, (int, float)):
        raise TypeError("grade() returned %s, not a number" % type(value).__name__)
    out.write(json.dumps({"ok": True, "score": float(value)}))
except BaseException as exc:
    tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
    out.write(json.dumps({"ok": False, "error": "%s: %s" % (type(exc).__name__, exc),
                          "traceback": "".join(tb)[-4000:]}))
out.close()
"""


@dataclass
class PythonOutcome:
    score: float | None
    runtime_error: str | None = None   # the grader raised, or returned something that is not a number
    server_error: str | None = None    # the grader could not be run to the end (timeout, killed, no answer)
    stderr: str = ""


def run_python(source: str, sample: dict, item: dict, *, timeout_s: float = DEFAULT_TIMEOUT_S,
               memory_mb: int = DEFAULT_MEMORY_MB) -> PythonOutcome:
    """Run ``grade(sample, item)`` from ``source`` in a subprocess; never raises for the grader's faults."""
    try:
        payload = json.dumps({"sample": sample, "item": item}, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        return PythonOutcome(None, runtime_error=f"the sample or item is not JSON: {exc}")
    with tempfile.TemporaryDirectory(prefix="tunewise-grader-") as tmp:
        path = os.path.join(tmp, "grader.py")
        with open(path, "w", encoding="utf-8") as f:
            f.write(source)
        read_fd, write_fd = os.pipe()
        env = {"PATH": os.environ.get("PATH", ""), "PYTHONHASHSEED": "0", "HOME": tmp,
               "OMP_NUM_THREADS": "1", "LANG": "C.UTF-8"}
        try:
            # The harness sets its own memory limit before it reads the grader (no preexec_fn: it is not
            # safe in a threaded process such as the server).
            proc = subprocess.Popen([sys.executable, "-I", "-c", _HARNESS, path, str(write_fd), str(memory_mb)],
                                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    cwd=tmp, env=env, pass_fds=(write_fd,), start_new_session=True)
        except OSError as exc:
            os.close(read_fd)
            os.close(write_fd)
            return PythonOutcome(None, server_error=f"could not start Python: {exc}")
        os.close(write_fd)
        try:
            _, err = proc.communicate(payload.encode("utf-8"), timeout=timeout_s)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            proc.communicate()
            os.close(read_fd)
            return PythonOutcome(None, server_error=f"timeout: grade() ran past the {timeout_s:g} s limit")
        with os.fdopen(read_fd, "r", encoding="utf-8") as f:
            raw = f.read()
        stderr = err.decode("utf-8", "replace")[-4000:]
    if not raw:
        why = f"exit status {proc.returncode}"
        if proc.returncode and proc.returncode < 0:
            why = f"killed by signal {-proc.returncode}"
        return PythonOutcome(None, server_error=f"the grader process ended without a score ({why}; "
                             f"memory limit {memory_mb} MB)", stderr=stderr)
    result = json.loads(raw)
    if not result["ok"]:
        return PythonOutcome(None, runtime_error=result["error"] + "\n" + result["traceback"], stderr=stderr)
    score = result["score"]
    if not math.isfinite(score):
        return PythonOutcome(None, runtime_error=f"grade() returned {score}", stderr=stderr)
    return PythonOutcome(score, stderr=stderr)
