"""A new user's first hour: the demo as `make demo` runs it, one exit-code rule, one-line errors, consistent options,
stops that are not errors, and nothing printed that the user did not ask for."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import click
import pytest

from helpers import run_cli
from tunewise import paths
from tunewise.cli import COMMANDS, cli
from tunewise.client import Client, Target, resolve_target

REPO = Path(__file__).resolve().parents[1]
RECEIPTS = REPO / "examples" / "receipts"
TRAIN = RECEIPTS / "train.jsonl"
TINY = "tunewise-tiny"
serve_testing = pytest.importorskip("tunewise.serve.testing")


def one_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in err and "Usage:" not in err, err
    return lines[0]


def _subprocess_env(**extra: str) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", **extra}


# --- make demo, exactly as the Makefile runs it ----------------------------------------------------------------

def _demo_recipe() -> str:
    makefile = (REPO / "Makefile").read_text()
    recipe = re.search(r"^demo:.*\n\t(.+)$", makefile, re.M)
    assert recipe, "the Makefile has a demo target"
    return recipe.group(1).strip()


def _run_demo(tmp_path: Path, *extra: str, timeout: float) -> tuple[subprocess.CompletedProcess, Path]:
    # The Makefile's command: the venv's python on examples/demo.py, from the repository root, with its defaults
    # (the task is receipts unless TASK= names another).
    assert _demo_recipe() == "$(BIN)/python examples/demo.py --task $(TASK)"
    assert re.search(r"^TASK \?= receipts$", (REPO / "Makefile").read_text(), re.M)
    out = Path(os.path.relpath(tmp_path / "demo", REPO))  # a relative --out, as the default out/demo is
    assert not out.is_absolute()
    proc = subprocess.run([sys.executable, "examples/demo.py", "--out", str(out), *extra], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout, env=_subprocess_env())
    return proc, REPO / out


def _check_demo(proc: subprocess.CompletedProcess, out: Path) -> None:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("1. example data", "2. validate", "3. estimate", "4. fine-tune", "5. evaluate", "6. decide"):
        assert f"== {stage}" in proc.stdout, stage
    assert "stage times:" in proc.stdout and "Verdict:" in proc.stdout
    summary = json.loads((out / "demo.json").read_text())
    assert set(summary["stages"]) and summary["verdict"]
    assert Path(summary["report"]).is_file() and (out / "report" / "report.md").is_file()
    assert "Traceback" not in proc.stderr


def test_demo_runs_from_the_repository_root_with_a_relative_out(tmp_path):
    proc, out = _run_demo(tmp_path, "--model", TINY, "--limit", "2", timeout=600)
    _check_demo(proc, out)
    # The candidates file the demo wrote points at this run's data by absolute paths.
    text = (out / "candidates.yaml").read_text()
    assert str((out / "receipts").resolve()) in text


@pytest.mark.slow
def test_demo_with_its_defaults_on_the_default_model(tmp_path):
    proc, out = _run_demo(tmp_path, timeout=1800)
    _check_demo(proc, out)


# --- one exit-code rule ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("args", [
    ("validate", "missing.jsonl"), ("estimate", "missing.jsonl"), ("train", "missing.jsonl", "--model", TINY),
    ("eval", "missing.jsonl", "--model", TINY), ("decide", "missing-dir"), ("files", "upload", "missing.jsonl"),
    ("breakeven", "--data", "missing.jsonl", "--calls-per-month", "10"),
])
def test_a_missing_file_is_exit_2_in_one_line(capsys, tmp_path, monkeypatch, args):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert "missing" in one_line(err)


@pytest.mark.parametrize("args", [
    ("validate", str(TRAIN), "-m", "gpt-9"), ("estimate", str(TRAIN), "-m", "gpt-9"),
    ("breakeven", "-m", "gpt-9", "--prompt-tokens", "9", "--ft-prompt-tokens", "1", "--output-tokens", "1",
     "--calls-per-month", "1"),
    ("train", str(TRAIN), "-m", "gpt-9"),
])
def test_an_unknown_model_is_exit_2_in_one_line(capsys, args):
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert "gpt-9" in one_line(err)


def test_bad_options_are_one_line_with_the_help_command(capsys):
    code, _, err = run_cli(capsys, "estimate", str(TRAIN), "--epochs-typo", "3")
    assert code == 2 and "tunewise estimate --help" in one_line(err)
    code, _, err = run_cli(capsys, "validate")
    assert code == 2 and "FILE" in one_line(err)


def test_an_internal_error_is_one_line_with_a_log_and_a_traceback_only_with_debug(capsys, monkeypatch):
    from tunewise import cost

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a fault inside tunewise")

    monkeypatch.setattr(cost, "estimate_training", broken)
    monkeypatch.delenv("TUNEWISE_DEBUG", raising=False)
    code, _, err = run_cli(capsys, "estimate", str(TRAIN))
    line = one_line(err)
    assert code == 3 and "internal error in `tunewise estimate`" in line and "--debug" in line
    log = Path(re.search(r"report is in (\S+\.log)", line).group(1))
    text = log.read_text()
    assert "Traceback" in text and "ZeroDivisionError: a fault inside tunewise" in text
    assert log.parent == paths.home() / "logs"
    with pytest.raises(ZeroDivisionError):
        run_cli(capsys, "--debug", "estimate", str(TRAIN))
    os.environ.pop("TUNEWISE_DEBUG", None)


def test_the_readme_states_the_exit_codes():
    readme = (REPO / "README.md").read_text()
    for code in ("`0`", "`1`", "`2`", "`3`", "`130`"):
        assert code in readme


# --- consistent options and help ---------------------------------------------------------------------------------

def _commands():
    ctx = click.Context(cli)

    def walk(group, prefix=()):
        for name in group.list_commands(ctx):
            command = group.get_command(ctx, name)
            yield prefix + (name,), command
            if isinstance(command, click.Group):
                yield from walk(command, prefix + (name,))

    return list(walk(cli))


def test_top_level_help_shows_every_description_whole(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for name, (_, description) in COMMANDS.items():
        assert re.search(rf"^\s+{name}\s+{re.escape(description.split()[0])}", out, re.M), name
        assert description.split()[-1] in out  # not cut
    assert "..." not in out.split("Commands:")[1]


def test_every_option_has_help_text():
    missing = [f"tunewise {' '.join(path)} {p.opts[0]}" for path, command in _commands() for p in command.params
               if isinstance(p, click.Option) and not p.hidden and not p.help and p.opts[0] not in ("--help",)]
    assert not missing, missing


def test_model_takes_m_and_epochs_takes_both_spellings_everywhere():
    for path, command in _commands():
        for p in command.params:
            opts = getattr(p, "opts", []) + getattr(p, "secondary_opts", [])
            if "--model" in opts:
                assert "-m" in opts, f"tunewise {' '.join(path)} --model has no -m"
            if "--epochs" in opts or "--n-epochs" in opts:
                assert {"--epochs", "--n-epochs"} <= set(opts), f"tunewise {' '.join(path)}: {opts}"


def test_connection_options_before_or_after_the_subcommand(capsys, monkeypatch):
    closed = f"http://127.0.0.1:{serve_testing.free_port()}/v1"
    for args in (("jobs", "--base-url", closed, "--api-key", "k", "list"),
                 ("jobs", "list", "--base-url", closed, "--api-key", "k"),
                 ("files", "list", "--base-url", closed, "--api-key", "k")):
        code, _, err = run_cli(capsys, *args)
        line = one_line(err)
        assert code == 1 and closed in line and "tunewise serve" in line  # local: start the server


def test_unreachable_remote_service_is_not_told_to_start_tunewise_serve():
    import httpx
    import openai

    from tunewise.client import sdk_errors

    for url, local in (("https://api.openai.com/v1", False), ("http://127.0.0.1:9/v1", True),
                       ("http://localhost:9/v1", True)):
        target = Target(base_url=url, api_key="k", source="arguments")
        assert target.is_local is local
        with pytest.raises(Exception) as info:
            with sdk_errors(target):
                raise openai.APIConnectionError(request=httpx.Request("GET", url))
        assert ("tunewise serve" in str(info.value)) is local


def test_an_environment_key_that_is_not_used_is_said(monkeypatch, capsys):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "wrong")
    creds = paths.credentials_file()
    creds.write_text(json.dumps({"base_url": f"http://127.0.0.1:{serve_testing.free_port()}/v1",
                                 "api_key": "sk-local"}))
    try:
        target = resolve_target()
        assert target.api_key == "sk-local" and "OPENAI_API_KEY" in target.note
        code, _, err = run_cli(capsys, "jobs", "list")
        assert code == 1 and err.startswith("note: using the local server") and "OPENAI_API_KEY" in err
        # The key is never in a repr (logs, tracebacks, debuggers).
        assert "sk-local" not in repr(Client()) + repr(target) + repr(Client().plan_job(str(TRAIN), TINY))
    finally:
        creds.unlink()


def test_tokens_says_which_encoding_a_name_outside_the_catalog_got(capsys):
    code, out, err = run_cli(capsys, "tokens", "-m", "gpt-4o-mni", "hello world")
    assert code == 0 and out.strip() == "2"
    assert "gpt-4o-mni" in err and "o200k_base" in err
    code, out, err = run_cli(capsys, "tokens", "-m", "gpt-4o-mini", "hello world")
    assert code == 0 and err == ""


def test_jobs_create_checks_settings_before_uploading(capsys, monkeypatch):
    # No service is reachable: a check that came after the upload would fail on the connection instead.
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{serve_testing.free_port()}/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    for args, param in ((("--n-epochs", "0"), "n_epochs"), (("--epochs", "26"), "n_epochs"),
                        (("--batch-size", "0"), "batch_size"), (("--learning-rate-multiplier", "-1"),
                                                                "learning_rate_multiplier"),
                        (("--suffix", "x" * 65), "suffix")):
        code, out, err = run_cli(capsys, "jobs", "create", str(TRAIN), "-m", "gpt-4o-mini", *args)
        assert code == 2 and param.split("_")[0] in one_line(err) and "estimate" not in out


# --- against a real server ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server():
    with serve_testing.running_server(worker=False, env={"TUNEWISE_STRICT_MODELS": "1"}) as s:
        yield s


def test_a_refused_job_leaves_no_upload_behind(server, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    before = Client().list_files()
    code, _, err = run_cli(capsys, "jobs", "create", str(TRAIN), "-m", "made-up-model")
    assert code == 1 and "made-up-model" in err.splitlines()[-1]
    assert Client().list_files() == before


def test_serve_prints_the_dashboard_address(server):
    base = server.base_url[: -len("/v1")]
    assert f"dashboard: {base}/" in server.output()


def _terminal_sigint() -> None:
    """Ctrl-C as a terminal delivers it: the child's SIGINT at its default, not blocked. Earlier tests in the same
    pytest process can leave SIGINT ignored, which a child inherits (and a Python child then never raises
    KeyboardInterrupt), so the child starts as a shell in a terminal would start it."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


def test_ctrl_c_on_jobs_watch_says_the_job_goes_on(server):
    client = Client(server.base_url, server.api_key)
    job = client.create_job(str(TRAIN), TINY)  # no worker: it waits
    env = _subprocess_env(OPENAI_BASE_URL=server.base_url, OPENAI_API_KEY=server.api_key)
    log = server.data_dir.parent / f"watch-{job['id']}.log"
    with open(log, "w") as stderr:
        proc = subprocess.Popen([sys.executable, "-m", "tunewise", "jobs", "watch", job["id"], "--interval", "0.2"],
                                stdout=subprocess.DEVNULL, stderr=stderr, text=True, env=env,
                                preexec_fn=_terminal_sigint)
    # Ctrl-C once the watching has begun (the bar shows the job's status after its first poll): on a loaded
    # machine a fixed wait can land in the interpreter's imports instead.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and "status=" not in log.read_text(errors="replace"):
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=30)
    err = log.read_text(errors="replace")
    assert proc.returncode == 130
    assert f"job {job['id']} goes on (" in err and f"tunewise jobs watch {job['id']}" in err, err
    assert "Traceback" not in err and "aborted" not in err
    assert client.get_job(job["id"])["status"] in ("validating_files", "queued")  # it went on
    client.cancel_job(job["id"])


def test_keys_list_has_a_header(server, capsys):
    code, out, _ = run_cli(capsys, "keys", "list", "--data-dir", str(server.data_dir))
    assert code == 0
    assert out.splitlines()[0].split() == ["id", "project", "secret", "status"]
    assert "active" in out


# --- a stop the user asked for is not an error ------------------------------------------------------------------

def test_ctrl_c_in_train_prints_the_command_that_resumes(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(TRAIN.read_text().splitlines(keepends=True)[:40]))
    cmd = ["train", str(data), "--model", TINY, "--epochs", "25", "--batch-size", "1", "--seed", "3"]
    proc = subprocess.Popen([sys.executable, "-m", "tunewise", *cmd], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_subprocess_env(), cwd=tmp_path)
    deadline = time.monotonic() + 120
    runs = paths.home() / "runs"
    while time.monotonic() < deadline and not list(runs.glob("*/metrics.csv")):
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "error:" not in err and "Traceback" not in err
    assert re.search(r"^stopped: Training stopped at step \d+ of \d+", err, re.M), err
    resume = re.search(r"^resume with: (.+)$", err, re.M).group(1)
    words = shlex.split(resume)
    assert words[:2] == ["tunewise", "train"] and "--output" in words
    out_dir = Path(words[words.index("--output") + 1])
    assert out_dir.is_absolute() and (out_dir / "config.json").is_file()
    # The printed command resumes (stopped again at once: only that it resumes is checked here).
    log = tmp_path / "resume.log"
    with open(log, "w") as stderr:
        again = subprocess.Popen([sys.executable, "-m", *words], stdout=subprocess.DEVNULL, stderr=stderr,
                                 text=True, env=_subprocess_env(), cwd=tmp_path)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and "Training resumed from step" not in log.read_text(errors="replace"):
        time.sleep(0.2)
    again.send_signal(signal.SIGINT)
    again.wait(timeout=120)
    assert "Training resumed from step" in log.read_text(errors="replace")
    assert again.returncode in (0, 130), log.read_text()


@pytest.mark.slow  # about 19 s: a training run, then export in a fresh process
def test_export_prints_no_library_warnings(tmp_path):
    data = tmp_path / "train.jsonl"
    data.write_text("".join(TRAIN.read_text().splitlines(keepends=True)[:12]))
    out = tmp_path / "run"
    env = _subprocess_env(PYTHONWARNINGS="default")
    proc = subprocess.run([sys.executable, "-m", "tunewise", "train", str(data), "-m", TINY, "--epochs", "1",
                           "--batch-size", "12", "--output", str(out)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert re.search(r"\d{1,3}(,\d{3})* trained tokens|\b\d{1,3} trained tokens", proc.stdout)
    proc = subprocess.run([sys.executable, "-m", "tunewise", "export", str(out / "final"), str(tmp_path / "merged")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stderr, proc.stderr
