"""The verdict's hard cases end to end, through `tunewise eval` and `tunewise decide`, against scripted
candidates: a real HTTP endpoint on 127.0.0.1 that answers each example as a script says (right, wrong
content, not JSON, or a server error), so the right verdict is known in advance."""

from __future__ import annotations

import http.server
import json
import re
import threading

import pytest

from helpers import run_cli
from tunewise.eval import runner

SCHEMA = {"type": "object", "properties": {"total": {"type": "number"}, "store": {"type": "string"}},
          "required": ["total", "store"], "additionalProperties": False}
FT_MODEL = "ft:gpt-4o-mini-2024-07-18:org::abc123"


def reference(i: int) -> dict:
    return {"total": round(3 + i * 1.25, 2), "store": f"Shop {i}"}


class Scripted:
    """Answers ``POST /v1/chat/completions`` for example i (read from the user message) as
    ``script[model]["kinds"][i]`` says, with that model's token counts; ``failed`` answers HTTP 500."""

    def __init__(self, script: dict[str, dict]):
        self.script, self.requests = script, 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))))
                outer.requests += 1
                entry = outer.script[body["model"]]
                i = int(re.search(r"receipt (\d+)", body["messages"][-1]["content"]).group(1))
                kind = entry["kinds"][i]
                if kind == "failed":
                    status, payload = 500, {"error": {"message": "scripted failure", "type": "server_error",
                                                      "param": None, "code": None}}
                else:
                    content = {"right": json.dumps(reference(i)),
                               "content": json.dumps({"total": 999.0, "store": f"Shop {i}"}),
                               "format": f"The total at Shop {i} is {reference(i)['total']}"}[kind]
                    status, payload = 200, {
                        "id": f"chatcmpl-{outer.requests}", "object": "chat.completion", "created": 0,
                        "model": body["model"],
                        "choices": [{"index": 0, "finish_reason": "stop",
                                     "message": {"role": "assistant", "content": content}}],
                        "usage": {"prompt_tokens": entry["input_tokens"], "completion_tokens": entry["output_tokens"],
                                  "total_tokens": entry["input_tokens"] + entry["output_tokens"]}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def evaluate(tmp_path, monkeypatch, capsys):
    """Run `tunewise eval` on n examples against scripted candidates, then `tunewise decide --json ARGS`."""
    monkeypatch.setattr(runner, "SDK_MAX_RETRIES", 0)  # failures are retried by our backoff alone, quickly
    monkeypatch.setattr(runner, "BACKOFF_BASE_S", 0.001)
    monkeypatch.setenv("TUNEWISE_HOME", str(tmp_path / "home"))
    servers = []

    def run(candidates: dict[str, dict], n: int, *decide_args: str) -> tuple[dict, str]:
        test = tmp_path / "test.jsonl"
        test.write_text("".join(json.dumps({"messages": [
            {"role": "system", "content": "Extract the receipt as JSON."},
            {"role": "user", "content": f"receipt {i}"},
            {"role": "assistant", "content": json.dumps(reference(i))}]}) + "\n" for i in range(n)))
        (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
        server = Scripted({c["model"]: c for c in candidates.values()})
        servers.append(server)
        lines = ["candidates:"]
        for name, c in candidates.items():
            lines += [f"  - name: {name}", f"    model: \"{c['model']}\"", f"    base_url: {server.base_url}",
                      "    api_key: sk-test"]
            if c.get("structured"):
                lines.append("    response_format: schema")
        (tmp_path / "candidates.yaml").write_text("\n".join(lines) + "\n")
        out = tmp_path / "ev"
        code, _, err = run_cli(capsys, "eval", str(test), "--candidates", str(tmp_path / "candidates.yaml"),
                               "--schema", str(tmp_path / "schema.json"), "--out", str(out), "--no-cache",
                               "--json")
        assert code == 0, err
        code, stdout, err = run_cli(capsys, "decide", str(out), "--json", *decide_args)
        assert code == 0, err
        return json.loads(stdout), str(out)

    yield run
    for server in servers:
        server.close()


def base(kinds, **kw):
    return {"model": "gpt-4o-mini", "kinds": kinds, "input_tokens": 900, "output_tokens": 20, **kw}


def tuned(kinds, **kw):
    return {"model": FT_MODEL, "kinds": kinds, "input_tokens": 60, "output_tokens": 20, **kw}


def structured(kinds, **kw):
    return {"model": "gpt-4o-mini-2024-07-18", "kinds": kinds, "input_tokens": 400, "output_tokens": 20,
            "structured": True, **kw}


@pytest.mark.parametrize("training", [(), ("--training-cost", "5")])
def test_equivalence_from_nothing(evaluate, training):
    d, _ = evaluate({"base": base(["right"] * 5), "ft": tuned(["right"] * 5)}, 5, *training)
    assert d["verdict"] == "not enough evidence"
    assert all(not c["equivalent"] and c["eq_high"] > 0.4 for c in d["comparisons"])


def test_failed_calls_are_not_answers(evaluate):
    same = ["right"] * 36 + ["content"] * 4
    cands = {"base": base(["failed"] * 8 + same[8:]), "ft": tuned(same)}
    d, out = evaluate(cands, 40)
    assert d["verdict"] == "not enough evidence" and "Too many failed calls" in d["reasons"][0]
    rows = [json.loads(line) for line in open(f"{out}/results.jsonl")]
    failed = [r for r in rows if r["failed"]]
    assert len(failed) == 8 and all(r["schema_adherence"] is None and r["exact_match"] is None for r in failed)
    assert all(r["error"].startswith("InternalServerError") for r in failed)
    d, _ = evaluate(cands, 40, "--max-failure-rate", "0.25")
    assert d["verdict"] != "fine-tune"
    assert all(c["n"] == 32 and c["n_excluded"] == 8 and not c["significant"] for c in d["comparisons"])


def test_failed_calls_do_not_hide_a_win(evaluate):
    cands = {"base": base(["right"] * 20 + ["format"] * 20), "ft": tuned(["failed"] * 8 + ["right"] * 32)}
    d, _ = evaluate(cands, 40, "--max-failure-rate", "0.25", "--training-cost", "1", "--calls-per-month", "1e5")
    assert d["verdict"] == "fine-tune"


def test_adverse_difference_on_the_primary_measure(evaluate):
    cands = {"base": base(["right"] * 20 + ["content"] * 20), "ft": tuned(["right"] * 20 + ["format"] * 20)}
    d, _ = evaluate(cands, 40, "--training-cost", "1", "--calls-per-month", "1000000")
    assert d["verdict"] == "keep prompting"
    assert "No difference" not in d["headline"] and "schema adherence" in d["headline"]
    fmt = next(c for c in d["comparisons"] if c["metric"] == "schema_adherence")
    assert fmt["outcome"] == "worse" and fmt["p_value"] < 1e-4
    assert any("-50.0 points" in s for s in d["significant"])


def test_gain_and_regression_both_listed(evaluate):
    cands = {"base": base(["content"] * 40 + ["right"] * 40),
             "ft": tuned(["right"] * 20 + ["format"] * 20 + ["right"] * 40)}
    d, _ = evaluate(cands, 80, "--training-cost", "1", "--calls-per-month", "1000000")
    assert d["verdict"] == "keep prompting"
    outcomes = {c["metric"]: c["outcome"] for c in d["comparisons"]}
    assert outcomes == {"schema_adherence": "worse", "exact_match": "better"}
    assert len(d["significant"]) == 2


def test_structured_outputs_where_cost_decides(evaluate):
    perfect = ["right"] * 100
    cands = {"base": base(perfect), "ft": tuned(perfect, input_tokens=400), "structured": structured(perfect)}
    d, _ = evaluate(cands, 100)
    assert d["verdict"] == "use structured outputs"
    assert d["chosen"] == {"prompting": "base", "structured": "structured", "fine-tuned": "ft"}
    assert all(c["outcome"] == "equivalent" for c in d["comparisons"])


def test_prompting_is_priced_with_its_own_output_tokens(evaluate):
    cands = {"base": base(["right"] * 10, output_tokens=200), "ft": tuned(["right"] * 10)}
    d, _ = evaluate(cands, 10, "--calls-per-month", "100000", "--training-cost", "1")
    assert d["breakeven"]["base_monthly"] == pytest.approx(25.50)
    assert d["candidates"]["base"]["monthly_cost_usd"] == pytest.approx(25.50)


def test_decide_options_are_checked(evaluate, capsys):
    _, out = evaluate({"base": base(["right"] * 5), "ft": tuned(["right"] * 5)}, 5)
    code, _, err = run_cli(capsys, "decide", out, "--cache-hit-rate", "2")
    assert code == 2 and "--cache-hit-rate must be between 0 and 1" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, "decide", out, "--primary", "speed")
    assert code == 2 and "Traceback" not in err
