"""The executor seam (``tunewise.serve.executors``): the local executor is the default and never imports Ray; the
``ray_*`` settings and a job's ``ray`` field are checked with errors that name them."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest

from tunewise.errors import UsageError
from tunewise.serve.executors import check, pick, resources
from tunewise.serve.settings import Settings


def test_the_local_executor_is_the_default_and_imports_no_ray(tmp_path):
    code = ("import sys; from tunewise.serve.settings import Settings; from tunewise.serve.worker import Worker; "
            f"w = Worker(Settings(data_dir={str(tmp_path)!r})); assert w.executor.name == 'local', w.executor; "
            "assert 'ray' not in sys.modules, 'ray imported'; print('ok')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ},
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_settings_are_checked_naming_the_setting(tmp_path):
    shutdown = threading.Event()
    with pytest.raises(UsageError) as err:
        pick(Settings(data_dir=tmp_path, executor="slurm"), shutdown)
    assert err.value.param == "executor" and "--executor ray" in err.value.hint
    for bad, param in ((dict(ray_storage="s3://bucket/x"), "ray_storage"), (dict(ray_storage="rel/dir"), "ray_storage"),
                       (dict(ray_num_workers=0), "ray_num_workers"),
                       (dict(ray_resources_per_worker={"CPU": "two"}), "ray_resources_per_worker.CPU"),
                       (dict(ray_address=" "), "ray_address")):
        with pytest.raises(UsageError) as err:
            check(Settings(data_dir=tmp_path, executor="ray", **bad))
        assert err.value.param == param, (bad, err.value)
    check(Settings(data_dir=tmp_path, executor="ray", ray_storage=str(tmp_path), ray_resources_per_worker={"CPU": "2"}))


def test_what_a_job_asks_for():
    settings = Settings(ray_num_workers=2, ray_resources_per_worker={"CPU": "2"})
    req = resources.request(settings, resources.check_override({"use_gpu": True}))
    assert req == {"num_workers": 2, "use_gpu": True, "resources_per_worker": {"CPU": 2.0}}
    assert resources.bundle(req) == {"CPU": 2.0, "GPU": 1.0}
    assert resources.total(req) == {"CPU": 4.0, "GPU": 2.0}
    assert resources.missing(req, {"CPU": 8.0}) == {"GPU": 2.0}
    assert resources.missing(req, {"CPU": 4.0, "GPU": 2.0}) == {}
    # Enough in all, but one worker's 2 CPU and 1 GPU must sit on one node.
    assert not resources.fits_a_node(req, [{"CPU": 1.0, "GPU": 1.0}, {"CPU": 4.0}])
    assert resources.fits_a_node(req, [{"CPU": 1.0}, {"CPU": 2.0, "GPU": 1.0}])
    with pytest.raises(UsageError) as err:
        resources.check_override({"num_workers": 2.5})
    assert err.value.param == "ray.num_workers"
    # DPO and reinforcement fine-tuning train in one process: one worker, whatever the settings or the job ask.
    rft = {"method": '{"type": "reinforcement", "reinforcement": {}}'}
    assert resources.request(settings, None, rft) == {"num_workers": 1, "asked_workers": 2, "use_gpu": False,
                                                      "resources_per_worker": {"CPU": 2.0}}
    assert resources.request(settings, {"num_workers": 3}, {"method": '{"type": "dpo"}'})["num_workers"] == 1
    assert resources.request(settings, None, {"method": '{"type": "supervised"}'})["num_workers"] == 2


def test_the_ray_field_needs_the_ray_executor():
    with pytest.raises(UsageError) as err:
        resources.for_job(Settings(), {"num_workers": 2})
    assert err.value.param == "ray" and "--executor ray" in err.value.hint
    assert resources.for_job(Settings(), None) is None
    assert resources.for_job(Settings(executor="ray"), {"num_workers": 2}) == {"num_workers": 2}


def test_serve_refuses_an_unknown_executor(capsys):
    from helpers import run_cli

    code, out, err = run_cli(capsys, "serve", "--executor", "slurm", "--port", "1")
    assert code != 0 and "slurm" in out + err


def test_a_judge_key_reaches_the_ray_workers_by_file_not_in_the_actors_arguments(tmp_path):
    """The runner actor's arguments (kept and shown by Ray) hold no secret: the judge's key is written beside the
    job (0600) and read back by each worker as it starts; a job without one leaves no such file."""
    pytest.importorskip("ray", reason="the ray extra is not installed (pip install 'tunewise[ray]')")
    import json

    from tunewise.serve.executors import ray as ray_executor
    from tunewise.train import TrainConfig

    secret = "sk-tw-" + "x" * 40
    config = TrainConfig(training_file=tmp_path / "t.jsonl", output_dir=tmp_path / "job", grader_api_key=secret,
                         grader_base_url="http://127.0.0.1:1/v1")
    (tmp_path / "job").mkdir()
    spec = ray_executor.job_spec({"id": "ftjob-1"}, config, request={}, threads=1, storage="s", max_failures=0)
    assert secret not in json.dumps(spec) and "grader_api_key" not in spec["config"]
    key_file = tmp_path / "job" / ray_executor.GRADER_KEY_FILE
    assert oct(key_file.stat().st_mode & 0o777) == "0o600"
    assert ray_executor.grader_key(tmp_path / "job") == {"grader_api_key": secret}
    rebuilt = TrainConfig(**{**spec["config"], **ray_executor.grader_key(tmp_path / "job")})
    assert rebuilt.grader_api_key == secret and rebuilt.grader_base_url == config.grader_base_url

    config.grader_api_key = None
    ray_executor.job_spec({"id": "ftjob-1"}, config, request={}, threads=1, storage="s", max_failures=0)
    assert not key_file.exists() and ray_executor.grader_key(tmp_path / "job") == {}
