"""The runner end to end against the real ``tunewise serve`` (tiny model) through the official SDK: prompts
built right, answers scored, results written, the cache making a rerun free; plus candidates files, endpoint
resolution, the CLI, and checkpoint scoring in-process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tunewise.errors import DataError, UsageError
from tunewise.eval import (
    Candidate,
    build_messages,
    candidate_from_dict,
    load_candidates,
    load_examples,
    parse_candidate_flag,
    run_eval,
    score_checkpoint,
)
from tunewise.eval.cache import CompletionCache, cache_key
from tunewise.eval.candidates import resolve_endpoint
from tunewise.eval.runner import pricing_for

SCHEMA = {"type": "object", "properties": {"store": {"type": "string"}, "total": {"type": "number"}},
          "required": ["store", "total"], "additionalProperties": False}
# The tiny model's random weights would ramble inside a free string or number until max_tokens; enums make
# every constrained answer short, so it is complete (and schema-valid) within a few tokens.
ENUM_SCHEMA = {"type": "object", "properties": {"store": {"enum": ["Shop 0", "Shop 1", "Shop 2"]},
                                                 "total": {"enum": [1.5, 2.5, 3.5]}},
               "required": ["store", "total"], "additionalProperties": False}


def write_test_file(path, n=3):
    with open(path, "w") as fh:
        for i in range(n):
            fh.write(json.dumps({"messages": [
                {"role": "system", "content": "Original system prompt."},
                {"role": "user", "content": f"Shop {i}: total ${i + 1}.50"},
                {"role": "assistant", "content": json.dumps({"store": f"Shop {i}", "total": i + 1.5})}]}) + "\n")
    return path


@pytest.fixture(scope="module")
def server():
    from tunewise.serve.testing import running_server

    with running_server() as s:
        yield s


# ---------------------------------------------------------------- pure parts

def test_build_messages_replaces_system_and_inserts_few_shot():
    prompt = [{"role": "system", "content": "old"}, {"role": "user", "content": "q"}]
    few = [{"role": "user", "content": "ex q"}, {"role": "assistant", "content": "ex a"}]
    c = Candidate(name="c", model="m", system_prompt="new", few_shot=few)
    assert build_messages(prompt, c) == [{"role": "system", "content": "new"}, *few,
                                         {"role": "user", "content": "q"}]
    keep = Candidate(name="k", model="m")  # no system prompt of its own: the example's stays
    assert build_messages(prompt, keep) == prompt
    assert build_messages([{"role": "user", "content": "q"}], c)[0] == {"role": "system", "content": "new"}


def test_load_examples(tmp_path):
    path = write_test_file(tmp_path / "t.jsonl", 3)
    ex = load_examples(path)
    assert [e.line for e in ex] == [1, 2, 3]
    assert ex[0].reference == '{"store": "Shop 0", "total": 1.5}'
    assert [m["role"] for m in ex[0].prompt] == ["system", "user"]
    assert len(load_examples(path, limit=2)) == 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "no answer"}]}\n')
    with pytest.raises(DataError, match="line 1: no assistant message"):
        load_examples(bad)
    bad.write_text("not json\n")
    with pytest.raises(DataError, match="line 1"):
        load_examples(bad)


def test_candidates_file_yaml_and_toml(tmp_path):
    (tmp_path / "long.txt").write_text("You extract receipts.\n")
    (tmp_path / "few.jsonl").write_text(json.dumps({"messages": [
        {"role": "system", "content": "s"}, {"role": "user", "content": "u"},
        {"role": "assistant", "content": "a"}]}) + "\n")
    (tmp_path / "c.yaml").write_text(
        "candidates:\n"
        "  - name: base\n    model: gpt-4o-mini\n    system_prompt_file: long.txt\n    few_shot: few.jsonl\n"
        "  - name: structured\n    model: gpt-4o-mini\n    response_format: schema\n    max_tokens: 50\n"
        "  - name: tuned\n    model: ft:gpt-4o-mini-2024-07-18:org::abc\n    price_model: gpt-4o-mini\n")
    cands = load_candidates(tmp_path / "c.yaml", schema=SCHEMA)
    assert [c.role for c in cands] == ["prompting", "structured", "fine-tuned"]
    assert cands[0].system_prompt == "You extract receipts."
    assert cands[0].few_shot == [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]
    assert cands[1].response_format["json_schema"]["schema"] == SCHEMA
    assert cands[1].params() == {"temperature": 0.0, "max_tokens": 50, "response_format": cands[1].response_format}
    (tmp_path / "c.toml").write_text('[[candidates]]\nname = "a"\nmodel = "gpt-4o"\ntemperature = 0.5\n')
    assert load_candidates(tmp_path / "c.toml")[0].temperature == 0.5
    (tmp_path / "bad.yaml").write_text("candidates:\n  - model: m\n    colour: red\n")
    with pytest.raises(UsageError, match="unknown field"):
        load_candidates(tmp_path / "bad.yaml")
    (tmp_path / "dup.yaml").write_text("candidates:\n  - {name: a, model: m}\n  - {name: a, model: n}\n")
    with pytest.raises(UsageError, match="Two candidates"):
        load_candidates(tmp_path / "dup.yaml")
    with pytest.raises(UsageError, match="needs a schema"):
        load_candidates(tmp_path / "c.yaml")


def test_example_candidates_file(monkeypatch):
    # The receipts example's candidates: the fine-tuned id comes from the environment once a job has run.
    from pathlib import Path

    examples = Path(__file__).resolve().parents[1] / "examples"
    schema = json.loads((examples / "receipts" / "schema.json").read_text())
    monkeypatch.delenv("TUNEWISE_FT_MODEL", raising=False)
    with pytest.raises(UsageError, match="TUNEWISE_FT_MODEL, which is not set"):
        load_candidates(examples / "candidates.yaml", schema=schema)
    monkeypatch.setenv("TUNEWISE_FT_MODEL", "ft:smollm2-135m-instruct:default::abcd1234")
    cands = {c.name: c for c in load_candidates(examples / "candidates.yaml", schema=schema)}
    assert {c.role for c in cands.values()} == {"prompting", "structured", "fine-tuned"}
    assert cands["fine-tuned"].model == "ft:smollm2-135m-instruct:default::abcd1234"
    assert len(cands["base-long-prompt"].system_prompt) > 4 * len(cands["fine-tuned"].system_prompt)
    assert cands["base-few-shot"].few_shot and cands["base-structured"].response_format["type"] == "json_schema"


def test_candidate_flag_keeps_ft_names(tmp_path):
    prompt = tmp_path / "p.txt"
    prompt.write_text("short")
    c = parse_candidate_flag(f"tuned=ft:gpt-4o-mini-2024-07-18:org::abc:{prompt}")
    assert c.model == "ft:gpt-4o-mini-2024-07-18:org::abc" and c.system_prompt == "short"
    assert parse_candidate_flag("b=ft:x:y::z").model == "ft:x:y::z"


def test_flag_candidates(tmp_path):
    from tunewise.cli.eval import _candidates

    (tmp_path / "long.txt").write_text("long prompt")
    (tmp_path / "short.txt").write_text("short")
    cands = _candidates(None, ("m", "ft:m:p::x"), (str(tmp_path / "long.txt"), str(tmp_path / "short.txt")),
                        ("third=gpt-4o",), SCHEMA, 64, True)
    assert [c.name for c in cands] == ["m+long", "ft-m-p--x+short", "third"]
    assert [c.system_prompt for c in cands] == ["long prompt", "short", None]
    assert cands[0].role == "structured" and cands[1].role == "fine-tuned" and cands[2].max_tokens == 64
    same_model = _candidates(None, ("m", "m"), (str(tmp_path / "long.txt"), str(tmp_path / "short.txt")),
                             (), None, None, False)
    assert [c.name for c in same_model] == ["m+long", "m+short"]
    with pytest.raises(UsageError, match="2 --model but 3 --system-prompt"):
        _candidates(None, ("a", "b"), (str(tmp_path / "long.txt"),) * 3, (), None, None, False)
    with pytest.raises(UsageError, match="No candidates"):
        _candidates(None, (), (), (), None, None, False)


def test_pricing():
    base = pricing_for(Candidate(name="b", model="gpt-4o-mini"))
    assert (base.input, base.output, base.recount_model) == (0.15, 0.60, None)
    ft = pricing_for(Candidate(name="f", model="ft:gpt-4o-mini-2024-07-18:o::x"))
    assert (ft.input, ft.output) == (0.30, 1.20)
    local = pricing_for(Candidate(name="l", model="smollm2-135m-instruct"))
    assert local.input == 0 and "local" in local.note
    # A local fine-tuned model priced as what it would cost on OpenAI, its tokens recounted in o200k_base.
    what_if = pricing_for(Candidate(name="w", model="ft:smollm2-135m-instruct:p::x", price_model="gpt-4o-mini"))
    assert (what_if.input, what_if.recount_model) == (0.30, "gpt-4o-mini-2024-07-18")
    assert pricing_for(Candidate(name="u", model="mystery")).price_model is None


def test_endpoint_resolution(tmp_path, monkeypatch):
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("TUNEWISE_HOME", str(tmp_path))
    with pytest.raises(UsageError, match="no endpoint"):
        resolve_endpoint(Candidate(name="c", model="m"))
    (tmp_path / "credentials.json").write_text('{"base_url": "http://127.0.0.1:9/v1", "api_key": "k1"}')
    ep = resolve_endpoint(Candidate(name="c", model="m"))
    assert (ep.base_url, ep.api_key, ep.source) == ("http://127.0.0.1:9/v1", "k1", "credentials.json")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:8/v1")
    monkeypatch.setenv("OPENAI_API_KEY", "k2")
    assert resolve_endpoint(Candidate(name="c", model="m")).api_key == "k2"
    monkeypatch.setenv("MY_KEY", "k3")
    ep = resolve_endpoint(Candidate(name="c", model="m", base_url="http://127.0.0.1:7/v1", api_key_env="MY_KEY"))
    assert (ep.base_url, ep.api_key) == ("http://127.0.0.1:7/v1", "k3")
    with pytest.raises(UsageError, match="NOPE is not set"):
        resolve_endpoint(Candidate(name="c", model="m", api_key_env="NOPE"))


def test_cache_roundtrip(tmp_path):
    key = cache_key("http://h/v1", "m", [{"role": "user", "content": "hi"}], {"temperature": 0})
    assert key != cache_key("http://h/v1", "m", [{"role": "user", "content": "hi"}], {"temperature": 0.5})
    assert key == cache_key("http://h/v1/", "m", [{"content": "hi", "role": "user"}], {"temperature": 0})
    with CompletionCache(tmp_path / "c.sqlite") as cache:
        assert cache.get(key) is None
        cache.put(key, "http://h/v1", "m", {"answer": "yo"})
    with CompletionCache(tmp_path / "c.sqlite") as cache:  # it persists
        assert cache.get(key) == {"answer": "yo"} and len(cache) == 1


# ---------------------------------------------------------------- against the real server

def test_wrong_key_stops_the_run(server, tmp_path):
    test_file = write_test_file(tmp_path / "t.jsonl", 2)
    bad = Candidate(name="bad", model="tunewise-tiny", base_url=server.base_url, api_key="sk-wrong", max_tokens=2)
    with pytest.raises(UsageError, match="refused the API key"):
        run_eval(test_file, [bad], cache=False)


def test_cli_eval_and_decide(server, tmp_path):
    test_file = write_test_file(tmp_path / "t.jsonl", 2)
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    env = {**os.environ, "OPENAI_BASE_URL": server.base_url, "OPENAI_API_KEY": server.api_key,
           "TUNEWISE_HOME": str(tmp_path / "home")}
    out = tmp_path / "ev"
    cmd = [sys.executable, "-m", "tunewise", "eval", str(test_file), "--schema", str(tmp_path / "schema.json"),
           "--candidate", "a=tunewise-tiny", "--candidate", "b=ft:tunewise-tiny:x::y", "--max-tokens", "4",
           "--out", str(out)]
    # "ft:tunewise-tiny:x::y" is no model the server has: the run stops with one line, no traceback.
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: Candidate 'b'")
    cmd[cmd.index("b=ft:tunewise-tiny:x::y")] = "b=tunewise-tiny"
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "tunewise decide" in proc.stdout and (out / "metrics.json").is_file()
    proc = subprocess.run([sys.executable, "-m", "tunewise", "decide", str(out), "--calls-per-month", "1000"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("Verdict: not enough evidence") and (out / "report" / "report.html").is_file()
    proc = subprocess.run([sys.executable, "-m", "tunewise", "decide", str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "not an evaluation directory" in proc.stderr and "Traceback" not in proc.stderr


def test_run_eval_against_server_then_rerun_from_cache(server, tmp_path):
    test_file = write_test_file(tmp_path / "t.jsonl", 3)
    common = {"model": "tunewise-tiny", "base_url": server.base_url, "api_key": server.api_key}
    cands = [candidate_from_dict({**common, "name": "plain", "system_prompt": "Answer in JSON.", "max_tokens": 6,
                                  "price_model": "gpt-4o-mini"}),
             candidate_from_dict({**common, "name": "structured", "response_format": "schema", "max_tokens": 40},
                                 schema=ENUM_SCHEMA)]
    cache = tmp_path / "cache.sqlite"
    out = tmp_path / "out"
    run = run_eval(test_file, cands, schema=ENUM_SCHEMA, out_dir=out, cache=cache, concurrency=4)
    assert run.requests == 6 and run.cache_hits == 0
    assert len(run.results) == 6 and not any(r["error"] for r in run.results)
    plain = run.rows("plain")
    assert plain[0]["prompt"] == [{"role": "system", "content": "Answer in JSON."},
                                  {"role": "user", "content": "Shop 0: total $1.50"}]
    assert all(r["input_tokens"] > 0 and 0 < r["output_tokens"] <= 6 and r["latency_s"] > 0 for r in plain)
    # Priced as gpt-4o-mini: tokens recounted in its encoding (o200k_base), at its catalog prices.
    from tunewise.tokens import count_messages, count_text

    r = plain[1]
    assert r["priced_input_tokens"] == count_messages(r["prompt"], model="gpt-4o-mini")
    assert r["priced_output_tokens"] == count_text(r["answer"], model="gpt-4o-mini")
    assert r["cost_usd"] == pytest.approx((r["priced_input_tokens"] * 0.15 + r["priced_output_tokens"] * 0.60) / 1e6)
    assert run.metrics["candidates"]["structured"]["cost_per_1k_usd"]["value"] == 0  # local model, no price
    # Constrained decoding: the structured candidate's answers are schema-valid JSON whatever the weights.
    structured = run.rows("structured")
    assert all(r["valid_json"] == 1 and r["schema_adherence"] == 1 for r in structured), structured
    m = run.metrics["candidates"]["structured"]
    assert m["schema_adherence"]["value"] == 1.0 and m["schema_adherence"]["n"] == 3
    assert m["latency_p95_s"] >= m["latency_p50_s"] > 0
    # Everything is on disk, the key redacted.
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and {"candidate", "line", "example_id", "prompt", "answer", "reference", "exact_match",
                               "latency_s", "input_tokens", "output_tokens", "error", "failed"} <= set(rows[0])
    # Candidates are paired by example id: the same example has the same id for every candidate.
    assert [r["example_id"] for r in run.rows("plain")] == [r["example_id"] for r in run.rows("structured")]
    saved = json.loads((out / "candidates.json").read_text())
    assert saved[0]["api_key"] == "***" and server.api_key not in (out / "candidates.json").read_text()
    assert json.loads((out / "config.json").read_text())["n_examples"] == 3

    # A rerun sends no request: stop the server and every answer still comes back, from the cache.
    # (The last test of this module to use the server, so it is not restarted.)
    server.stop()
    again = run_eval(test_file, cands, schema=ENUM_SCHEMA, out_dir=tmp_path / "out2", cache=cache)
    assert again.requests == 0 and again.cache_hits == 6
    assert [r["answer"] for r in again.results] == [r["answer"] for r in run.results]
    assert all(r["cached"] for r in again.results)


# ---------------------------------------------------------------- in-process checkpoint scoring

def test_score_checkpoint_on_tiny_model(tmp_path):
    from tunewise.infer import Engine, GenerationRequest

    prompts = [[{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Item {i}?"}]
               for i in range(3)]
    with Engine(max_batch_size=4) as engine:
        # References are the model's own greedy answers, so a correct scorer must report a perfect match.
        refs = [engine.generate(GenerationRequest(model="tunewise-tiny", messages=p, max_tokens=8,
                                                  temperature=0)).choices[0].text for p in prompts]
        path = tmp_path / "eval.jsonl"
        path.write_text("".join(json.dumps({"messages": [*p, {"role": "assistant", "content": r}]}) + "\n"
                                for p, r in zip(prompts, refs, strict=True)))
        scores = score_checkpoint("tunewise-tiny", path, limit=2, engine=engine, max_tokens=8)
    assert scores["n"] == 2
    assert scores["exact_match"] == 1.0 and scores["text_f1"] == 1.0
    assert set(scores) == {"n", "valid_json", "schema_adherence", "exact_match", "field_f1", "text_f1"}


@pytest.mark.slow
def test_job_to_decision_end_to_end(tmp_path, monkeypatch):
    """Fine-tune the tiny model through the SDK, evaluate base vs fine-tuned, decide with the job's loss curve."""
    import time

    from tunewise.eval import decide, write_report
    from tunewise.serve.testing import running_server

    train = tmp_path / "train.jsonl"
    write_test_file(train, 12)
    test_file = write_test_file(tmp_path / "test.jsonl", 4)
    with running_server() as srv:
        client = srv.client()
        with open(train, "rb") as fh:
            file = client.files.create(file=fh, purpose="fine-tune")
        job = client.fine_tuning.jobs.create(training_file=file.id, model="tunewise-tiny",
                                             hyperparameters={"n_epochs": 1})
        deadline = time.monotonic() + 300
        while job.status not in ("succeeded", "failed", "cancelled") and time.monotonic() < deadline:
            time.sleep(0.5)
            job = client.fine_tuning.jobs.retrieve(job.id)
        assert job.status == "succeeded", job.error
        monkeypatch.setenv("OPENAI_BASE_URL", srv.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", srv.api_key)
        cands = [Candidate(name="base", model="tunewise-tiny", system_prompt="Extract the total.", max_tokens=8),
                 Candidate(name="tuned", model=job.fine_tuned_model, max_tokens=8)]
        run = run_eval(test_file, cands, schema=SCHEMA, out_dir=tmp_path / "ev", cache=False)
        assert run.metrics["candidates"]["tuned"]["role"] == "fine-tuned"
        decision = decide(tmp_path / "ev", job=job.id, calls_per_month=1000)
    assert decision.loss_curve and decision.loss_curve[0]["step"] == 1
    assert all(r["train_loss"] is not None for r in decision.loss_curve)
    paths = write_report(decision, tmp_path / "report")
    assert {"loss", "quality", "html", "markdown"} <= set(paths)


class _Flaky:
    """A real HTTP endpoint on 127.0.0.1 that answers 503 a set number of times, then a chat completion:
    the only way to see the retry path, since a healthy server never fails."""

    def __init__(self, failures: int):
        import http.server
        import threading

        self.failures, self.requests = failures, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                self.rfile.read(int(self.headers.get("content-length", 0)))
                outer.requests += 1
                if outer.requests <= outer.failures:
                    body, status = b'{"error": {"message": "busy", "type": "server_error"}}', 503
                else:
                    status = 200
                    body = json.dumps({"id": "c", "object": "chat.completion", "created": 0, "model": "m",
                                       "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                           "role": "assistant", "content": '{"store": "Shop 0", "total": 1.5}'}}],
                                       "usage": {"prompt_tokens": 5, "completion_tokens": 7,
                                                 "total_tokens": 12}}).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.mark.parametrize(("failures", "ok"), [(2, True), (50, False)])
def test_transient_errors_are_retried_with_backoff(tmp_path, monkeypatch, failures, ok):
    from tunewise.eval import runner

    monkeypatch.setattr(runner, "SDK_MAX_RETRIES", 0)  # count our own backoff alone
    monkeypatch.setattr(runner, "BACKOFF_BASE_S", 0.01)
    flaky = _Flaky(failures)
    try:
        test_file = write_test_file(tmp_path / "t.jsonl", 1)
        cand = Candidate(name="c", model="m", base_url=flaky.base_url, api_key="k")
        run = run_eval(test_file, [cand], cache=tmp_path / "c.sqlite")
    finally:
        flaky.close()
    row = run.results[0]
    if ok:
        assert flaky.requests == 3 and row["error"] is None and row["exact_match"] == 1
        assert row["input_tokens"] == 5 and row["output_tokens"] == 7
    else:
        # Gave up after our retries: recorded as a failed call, not as a wrong answer (no score at all), not
        # cached, and the run goes on.
        assert flaky.requests == runner.BACKOFF_RETRIES + 1
        assert row["error"].startswith("InternalServerError") and row["failed"] is True
        assert row["exact_match"] is None and row["valid_json"] is None
        assert len(CompletionCache(tmp_path / "c.sqlite")) == 0
        summary = run.metrics["candidates"]["c"]
        assert summary["n_failed"] == 1 and summary["failure_rate"] == 1.0 and summary["exact_match"] is None


@pytest.mark.slow
def test_score_checkpoint_on_a_trained_adapter(tmp_path):
    """A LoRA checkpoint directory written by the trainer is scored in-process, the way the worker calls it."""
    from tunewise.infer import Engine, GenerationRequest
    from tunewise.train import TrainConfig, train

    data = write_test_file(tmp_path / "train.jsonl", 12)
    train(TrainConfig(training_file=data, model="tunewise-tiny", n_epochs=1, output_dir=tmp_path / "run"))
    checkpoint = next((tmp_path / "run" / "checkpoints").iterdir())
    examples = load_examples(data, limit=3)
    with Engine(max_batch_size=4) as engine:
        refs = [engine.generate(GenerationRequest(model=str(checkpoint), messages=ex.prompt, max_tokens=8,
                                                  temperature=0)).choices[0].text for ex in examples]
        path = tmp_path / "eval.jsonl"
        path.write_text("".join(json.dumps({"messages": [*ex.prompt, {"role": "assistant", "content": r}]}) + "\n"
                                for ex, r in zip(examples, refs, strict=True)))
        scores = score_checkpoint(checkpoint, path, engine=engine, max_tokens=8)
    assert scores["n"] == 3 and scores["exact_match"] == 1.0
