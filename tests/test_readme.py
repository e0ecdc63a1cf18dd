"""The manual's command blocks, run as a user would paste them: a command that the README shows and that fails
is a failing test here, not a new user's first impression.

Each `sh` block of README.md (and of the docs pages a new user follows first) runs in bash, from a copy of the
repository's examples, with the service on a free port of 127.0.0.1. Where the default model would be too slow for
the default test run, the tiny model stands in (the same code path, random weights), training runs one epoch and
evaluations use a small `--limit`: those substitutions are listed in ``SUBSTITUTIONS`` and nothing else is
changed. Commands that cannot run here say why in ``NOT_RUN``.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

serve_testing = pytest.importorskip("tunewise.serve.testing")

REPO = Path(__file__).resolve().parents[1]
TINY = "tunewise-tiny"
PAGES = ("README.md", "docs/data.md", "docs/train.md", "docs/serve.md")

SUBSTITUTIONS = [
    # (pattern, replacement, why)
    (r"--model smollm2-135m-instruct", f"--model {TINY}", "the tiny model stands in for the default one"),
    (r"^(tunewise train (?!.*--model).*)$", rf"\1 --model {TINY}", "the tiny model stands in for the default one"),
    (r"^(tunewise eval .*)$", r"\1 --limit 2", "two held-out examples instead of fifty"),
    (r"^((?:tunewise train|tunewise jobs create) .*)--epochs (?:3|auto)\b", r"\1--epochs 1",
     "one epoch instead of three: the same code path, a third of the default test run's time in these blocks"),
]
NOT_RUN = {
    "make demo": "run by tests/test_first_run.py exactly as the Makefile does (tiny model; the default one in "
                 "make test-all)",
    "make test": "this is the test suite",
    "make install": "the suite runs inside the environment `make test` installed",
    ". .venv/bin/activate": "the suite's PATH already starts with the environment's bin/",
    "OPENAI_BASE_URL=https://api.openai.com/v1": "OpenAI itself is not reachable from tests",
    "tunewise validate FILE": "a synopsis, not a command",
}
ALLOWED_EXIT = {
    "tunewise validate tests/fixtures/guide_example.jsonl": (0, 1),  # the guide's own two examples: too few
}


def _blocks(page: str) -> list[tuple[int, str]]:
    text = (REPO / page).read_text(encoding="utf-8")
    return [(text[: m.start()].count("\n") + 1, m.group(1))
            for m in re.finditer(r"^```sh\n(.*?)^```", text, re.S | re.M)]


def _commands(block: str) -> list[str]:
    """Logical commands: backslash continuations joined, trailing comments dropped."""
    out, current = [], ""
    for line in block.splitlines():
        current += line.rstrip()
        if current.endswith("\\"):
            current = current[:-1] + " "
            continue
        command = re.sub(r"\s+#\s.*$", "", current).strip()
        current = ""
        if command and not command.startswith("#"):
            out.append(re.sub(r"\s+", " ", command))
    return out


def _skipped(command: str) -> str | None:
    return next((why for prefix, why in NOT_RUN.items() if command.startswith(prefix)), None)


def _script(commands: list[str]) -> str:
    lines = ["set -u", "trap 'kill $(jobs -p) 2>/dev/null; wait' EXIT"]
    for command in commands:
        if _skipped(command):
            continue
        for pattern, replacement, _ in SUBSTITUTIONS:
            command = re.sub(pattern, replacement, command)
        allowed = next((codes for prefix, codes in ALLOWED_EXIT.items() if command.startswith(prefix)), (0,))
        lines.append(f"echo '+ {command}' >&2")
        if command.endswith("&"):
            lines.append(command)
            continue
        lines.append(command)
        lines.append(f'rc=$?; case " {" ".join(map(str, allowed))} " in *" $rc "*) ;; '
                     f'*) echo "FAILED (exit $rc): {command}" >&2; exit 1;; esac')
    return "\n".join(lines) + "\n"


CASES = [pytest.param(page, line, block, id=f"{page}:{line}") for page in PAGES for line, block in _blocks(page)]


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """What a user has after a clone, from the repository root: the examples and the test fixtures."""
    shutil.copytree(REPO / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "tests" / "fixtures", tmp_path / "tests" / "fixtures")
    candidates = tmp_path / "examples" / "candidates.yaml"
    candidates.write_text(candidates.read_text().replace("smollm2-135m-instruct", TINY))
    (tmp_path / "prompt.txt").write_text("How many tokens is this prompt?\n")
    return tmp_path


def test_every_block_is_run_or_says_why_not():
    for page in PAGES:
        for _, block in _blocks(page):
            for command in _commands(block):
                assert command.split()[0] in ("tunewise", "make", ".", "export", "kill", "OPENAI_BASE_URL=https://api.openai.com/v1") \
                    or _skipped(command), f"{page}: no rule runs `{command}`"


@pytest.mark.parametrize(("page", "line", "block"), CASES)
def test_command_block_runs(page, line, block, workdir, tmp_path):
    commands = _commands(block)
    script = _script(commands)
    if script.count("echo '+ ") == 0:
        pytest.skip("; ".join(sorted({_skipped(c) for c in commands})))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "TUNEWISE_HOME": str(tmp_path / "home"), "TUNEWISE_PORT": str(serve_testing.free_port()),
           "TUNEWISE_DEFAULT_LOCAL_MODEL": TINY, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1",
           "TUNEWISE_MODEL_CACHE": os.environ.get("TUNEWISE_MODEL_CACHE")
           or str(Path.home() / ".cache" / "tunewise" / "models")}
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "TUNEWISE_FT_MODEL"):
        env.pop(name, None)
    proc = subprocess.run(["bash", "-c", script], cwd=workdir, env=env, capture_output=True, text=True,
                          timeout=900)
    assert proc.returncode == 0, f"{page}:{line}\n{proc.stderr[-4000:]}\n{proc.stdout[-2000:]}"
    assert "Traceback" not in proc.stderr + proc.stdout


def test_the_services_snippet_runs_as_written(tmp_path):
    """docs/serve.md's Python block is the guide's snippet: it runs unchanged against a real server."""
    text = (REPO / "docs" / "serve.md").read_text(encoding="utf-8")
    snippet = next(m.group(1) for m in re.finditer(r"^```python\n(.*?)^```", text, re.S | re.M)
                   if "client.fine_tuning.jobs.create" in m.group(1) and "Upload training data" in m.group(1))
    guide = (REPO.parent / "shared" / "reference" / "fine-tuning-guide.txt")
    if guide.is_file():
        for line in snippet.strip().splitlines():
            assert line.strip() in guide.read_text(encoding="utf-8"), f"not the guide's: {line}"
    serve_testing.write_receipts(tmp_path / "training_data.jsonl")
    with serve_testing.running_server() as server:
        env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": server.api_key}
        proc = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        job_id = re.search(r"Job ID: (\S+)", proc.stdout).group(1)
        assert server.client().fine_tuning.jobs.retrieve(job_id).model == "gpt-4o-mini-2024-07-18"
