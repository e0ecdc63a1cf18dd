"""``tunewise files``/``tunewise jobs`` against a real ``tunewise serve`` on 127.0.0.1, through the openai SDK."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_cli as run
from tunewise import cost, paths
from tunewise.client import Client, resolve_target
from tunewise.errors import NotFound, UsageError

serve_testing = pytest.importorskip("tunewise.serve.testing")

TRAIN = Path(__file__).resolve().parents[1] / "examples" / "receipts" / "train.jsonl"


@pytest.fixture(scope="module")
def server():
    with serve_testing.running_server() as s:
        yield s


@pytest.fixture(scope="module")
def receipts(server, tmp_path_factory) -> Path:
    return serve_testing.write_receipts(tmp_path_factory.mktemp("data") / "receipts.jsonl")


@pytest.fixture
def env(server, monkeypatch):
    """The CLI pointed at the test server the way a user does it: OPENAI_BASE_URL and OPENAI_API_KEY."""
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", server.api_key)
    return server




def one_line_error(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


# --- where to connect (no server needed) ---------------------------------------------------------------------

def test_target_from_environment_credentials_or_openai(monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    creds = paths.home() / "credentials.json"
    creds.unlink(missing_ok=True)
    with pytest.raises(UsageError, match="tunewise serve"):
        resolve_target()

    monkeypatch.setenv("OPENAI_API_KEY", "sk-openai")
    t = resolve_target()
    assert (t.base_url, t.api_key, t.is_openai) == ("https://api.openai.com/v1", "sk-openai", True)

    creds.write_text(json.dumps({"base_url": "http://127.0.0.1:9/v1", "api_key": "tw-local"}))
    try:
        t = resolve_target()  # the local server wins over a global OpenAI key, with its own key
        assert (t.base_url, t.api_key, t.is_openai) == ("http://127.0.0.1:9/v1", "tw-local", False)
        monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1/")
        monkeypatch.delenv("OPENAI_API_KEY")
        assert resolve_target().api_key == "tw-local"  # same server: its saved key
        monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:10/v1")
        with pytest.raises(UsageError, match="No API key"):
            resolve_target()
        assert resolve_target("https://api.openai.com/v1", "sk-x").source == "arguments"
        creds.write_text("{not json")
        monkeypatch.delenv("OPENAI_BASE_URL")
        with pytest.raises(UsageError, match="unreadable"):
            resolve_target()
    finally:
        creds.unlink(missing_ok=True)


def test_plan_prices_training_when_the_target_is_openai(monkeypatch):
    # Planning reads and prices the local file; nothing is sent anywhere.
    client = Client("https://api.openai.com/v1", "sk-test")
    plan = client.plan_job(str(TRAIN), "gpt-4o-mini", n_epochs=2)
    expected = cost.estimate_training(TRAIN, "gpt-4o-mini", epochs=2)
    assert expected.cost_usd > 0 and plan.estimate.cost_usd == pytest.approx(expected.cost_usd)
    assert plan.estimate.billed_tokens == expected.billed_tokens and plan.report.ok
    assert plan.to_dict()["estimate"]["n_epochs"] == 2


# --- against the real server -----------------------------------------------------------------------------------

def test_files_commands(env, capsys, receipts):
    code, out, err = run(capsys, "files", "upload", str(receipts), "--json")
    assert code == 0, err
    f = json.loads(out)
    assert f["id"].startswith("file-") and f["purpose"] == "fine-tune" and f["bytes"] == receipts.stat().st_size

    code, out, _ = run(capsys, "files", "list")
    assert code == 0 and f["id"] in out and "receipts.jsonl" in out
    code, out, _ = run(capsys, "files", "list", "--json", "--purpose", "fine-tune", "--limit", "1")
    assert code == 0 and [x["id"] for x in json.loads(out)] == [f["id"]]
    code, out, _ = run(capsys, "files", "show", f["id"])
    assert code == 0 and f"{f['bytes']:,}" in out and "fine-tune" in out
    code, out, _ = run(capsys, "files", "delete", f["id"])
    assert code == 0 and f"deleted {f['id']}" in out

    code, _, err = run(capsys, "files", "show", f["id"])
    assert code == 1 and "404" in one_line_error(err)


def test_upload_refuses_a_broken_file_before_sending_it(env, capsys, tmp_path, receipts):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n')
    before = len(Client().list_files())
    code, _, err = run(capsys, "files", "upload", str(bad))
    assert code == 1 and one_line_error(err)
    code, _, err = run(capsys, "jobs", "create", str(bad), "--model", "tunewise-tiny")
    assert code == 1 and one_line_error(err)
    code, _, err = run(capsys, "jobs", "create", str(receipts), "--validation-file", str(bad),
                       "--model", "tunewise-tiny")
    assert code == 1 and str(bad) in one_line_error(err)
    assert len(Client().list_files()) == before


def test_job_lifecycle_with_estimate_and_watch(env, capsys, receipts):
    code, out, err = run(capsys, "jobs", "create", str(receipts), "--model", "gpt-4o-mini-2024-07-18",
                         "--n-epochs", "1", "--batch-size", "4", "--suffix", "receipts", "--seed", "7")
    assert code == 0, err
    # The estimate comes first: billed tokens as OpenAI would count them, but free on a local server.
    expected = cost.estimate_training(receipts, "gpt-4o-mini", epochs=1)
    assert f"estimate: {expected.billed_tokens:,} billed tokens" in out and "$0 on gpt-4o-mini" in out
    assert "local service" in out and "12 examples, no errors" in out
    assert out.index("estimate:") < out.index("created ftjob-")
    job_id = out.split("created ")[1].split()[0]

    code, out, err = run(capsys, "jobs", "watch", job_id, "--interval", "0.3")
    assert code == 0, err
    assert f"{job_id} succeeded: ft:" in out and ":receipts:" in out
    assert "loss=" in err and "step" in err  # the tqdm bar
    assert "The job has successfully completed" in err

    code, out, _ = run(capsys, "jobs", "show", job_id, "--json")
    job = json.loads(out)
    assert job["status"] == "succeeded" and job["seed"] == 7 and job["hyperparameters"]["n_epochs"] == 1
    assert job["hyperparameters"]["batch_size"] == 4 and job["trained_tokens"] > 0
    code, out, _ = run(capsys, "jobs", "show", job_id)
    assert code == 0 and job["fine_tuned_model"] in out and "succeeded" in out

    code, out, _ = run(capsys, "jobs", "list", "--json")
    assert job_id in [j["id"] for j in json.loads(out)]
    code, out, _ = run(capsys, "jobs", "events", job_id, "--limit", "100", "--json")
    events = json.loads(out)
    metrics = [e for e in events if e.get("type") == "metrics"]
    assert metrics and metrics[0]["data"]["step"] == metrics[0]["data"]["total_steps"]  # newest first
    code, out, _ = run(capsys, "jobs", "events", job_id, "--limit", "3")
    assert code == 0 and out.splitlines()[-1].endswith("The job has successfully completed")
    code, out, _ = run(capsys, "jobs", "checkpoints", job_id)
    assert code == 0 and f"{job['fine_tuned_model']}:ckpt-step-" in out
    code, out, _ = run(capsys, "jobs", "checkpoints", job_id, "--json")
    assert all(c["fine_tuning_job_id"] == job_id for c in json.loads(out))

    code, _, err = run(capsys, "jobs", "cancel", job_id)  # a finished job cannot be cancelled
    assert code == 1 and "409" in one_line_error(err)


def test_pause_resume_cancel(env, capsys, receipts):
    client = Client()
    uploaded = client.upload_file(receipts)["id"]
    # A file id is used as it is (the service validates it); many epochs keep the job running long enough.
    code, out, err = run(capsys, "jobs", "create", uploaded, "--model", "tunewise-tiny", "--n-epochs", "25",
                         "--json")
    assert code == 0, err
    job_id = json.loads(out)["id"]
    assert "already uploaded" in err
    serve_testing.wait_for_step(client.sdk, job_id, 2)

    code, out, _ = run(capsys, "jobs", "pause", job_id)
    assert code == 0 and out.strip() == f"{job_id}: paused"
    code, out, _ = run(capsys, "jobs", "resume", job_id, "--json")
    assert code == 0 and json.loads(out)["status"] in ("queued", "running")
    code, out, _ = run(capsys, "jobs", "cancel", job_id)
    assert code == 0 and out.strip() == f"{job_id}: cancelled"

    snapshots = list(client.watch_job(job_id, interval=0.1))
    assert snapshots[-1].done and snapshots[-1].status == "cancelled"
    code, _, err = run(capsys, "jobs", "watch", job_id)
    assert code == 1 and f"{job_id} cancelled" in err


def test_service_errors_are_one_line(env, capsys, monkeypatch):
    code, _, err = run(capsys, "jobs", "show", "ftjob-doesnotexist")
    assert code == 1 and "404" in one_line_error(err)
    with pytest.raises(NotFound):
        Client().get_job("ftjob-doesnotexist")

    code, _, err = run(capsys, "jobs", "create", "file-doesnotexist", "--model", "tunewise-tiny")
    assert code == 1 and one_line_error(err)

    monkeypatch.setenv("OPENAI_API_KEY", "tw-wrong-key")
    code, _, err = run(capsys, "files", "list")
    assert code == 2 and "401" in one_line_error(err) and "OPENAI_API_KEY" in err

    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{serve_testing.free_port()}/v1")
    code, _, err = run(capsys, "jobs", "list")
    assert code == 1 and "Cannot reach" in one_line_error(err) and "tunewise serve" in err


def test_credentials_file_is_the_fallback(server, capsys, monkeypatch, receipts):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-meant-for-openai")
    creds = paths.home() / "credentials.json"
    creds.write_text(json.dumps({"base_url": server.base_url, "api_key": server.api_key}))
    try:
        code, out, err = run(capsys, "files", "upload", str(receipts))
        assert code == 0 and "uploaded file-" in out, err
        code, out, err = run(capsys, "files", "list", "--json")
        assert code == 0 and any(f["filename"] == "receipts.jsonl" for f in json.loads(out))
        # Explicit options win over both.
        code, _, err = run(capsys, "files", "--base-url", server.base_url, "--api-key", "nope", "list")
        assert code == 2 and "401" in err
    finally:
        creds.unlink(missing_ok=True)
