"""Tool-call scoring: known values per answer, the runner's rows and means through the real server on the tiny
model, and the decision on tool-call exact match."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunewise.eval import metrics as M
from tunewise.eval.candidates import Candidate
from tunewise.eval.decide import decide
from tunewise.eval.runner import load_examples, run_eval
from tunewise.serve.testing import running_server

TOOLS_DIR = Path(__file__).resolve().parents[1] / "examples" / "tools"


def call(name, **args):
    return {"function": {"name": name, "arguments": json.dumps(args)}}


REF = M.canonical_calls([call("request_refund", order_id="HF-12345", amount=24.5, reason="damaged")])


@pytest.mark.parametrize("predicted, name, exact, f1", [
    ([call("request_refund", order_id="HF-12345", amount=24.5, reason="damaged")], 1, 1, 1.0),
    # Key order and 24.50 vs 24.5 do not matter (canonical compare).
    ([{"function": {"name": "request_refund",
                    "arguments": '{"reason": "damaged", "amount": 24.50, "order_id": "HF-12345"}'}}], 1, 1, 1.0),
    # Right function, one argument of three wrong: 2 of 3 leaves on each side.
    ([call("request_refund", order_id="HF-12345", amount=24.5, reason="late")], 1, 0, 2 / 3),
    # A fourth argument: precision 3/4, recall 3/3 -> F1 6/7.
    ([call("request_refund", order_id="HF-12345", amount=24.5, reason="damaged", note="x")], 1, 0, 6 / 7),
    # The wrong function matches nothing, even with the same arguments.
    ([call("cancel_order", order_id="HF-12345")], 0, 0, 0.0),
    # A second, unasked call: the names differ as a multiset; the right call's 3 leaves of 4 predicted.
    ([call("request_refund", order_id="HF-12345", amount=24.5, reason="damaged"),
      call("cancel_order", order_id="HF-12345")], 0, 0, 2 * (3 / 4) * 1 / (3 / 4 + 1)),
    # No call (a text answer), or arguments that are not JSON: zero.
    (None, 0, 0, 0.0),
    ([{"function": {"name": "request_refund", "arguments": "{not json"}}], 1, 0, 0.0),
])
def test_tool_call_scores_known_values(predicted, name, exact, f1):
    got = M.score_tool_calls(M.canonical_calls(predicted), REF)
    assert got["tool_name_match"] == name and got["tool_exact_match"] == exact
    assert got["tool_args_f1"] == pytest.approx(f1)


def test_parallel_calls_are_paired_in_any_order():
    ref = M.canonical_calls([call("cancel_order", order_id="HF-1"), call("get_order_status", order_id="HF-2")])
    pred = M.canonical_calls([call("get_order_status", order_id="HF-2"), call("cancel_order", order_id="HF-1")])
    assert M.score_tool_calls(pred, ref) == {"tool_name_match": 1, "tool_exact_match": 1, "tool_args_f1": 1.0}
    one = M.score_tool_calls(pred[:1], ref)  # half the calls: recall 1/2, precision 1
    assert (one["tool_name_match"], one["tool_exact_match"]) == (0, 0)
    assert one["tool_args_f1"] == pytest.approx(2 / 3)


def test_a_tool_call_reference_is_read_from_the_test_file():
    examples = load_examples(TOOLS_DIR / "test.jsonl")
    assert len(examples) == 40 and all(ex.tools and ex.reference_calls for ex in examples)
    first = examples[0]
    assert json.loads(first.reference) == first.reference_calls
    assert first.reference_calls[0]["name"] in {t["function"]["name"] for t in first.tools}


def test_eval_scores_tool_calls_through_the_server_and_decide_uses_them(tmp_path):
    with running_server(worker=False) as srv:
        common = {"model": "gpt-4o-mini", "base_url": srv.base_url, "api_key": srv.api_key, "max_tokens": 32,
                  "system_prompt": "Call the right function."}
        candidates = [Candidate(name="free", **common),
                      Candidate(name="required", kind="structured", tool_choice="required", **common)]
        run = run_eval(TOOLS_DIR / "test.jsonl", candidates, out_dir=tmp_path / "eval", limit=2, cache=False)
    assert run.metrics["task"] == "tools"
    rows = [json.loads(line) for line in (tmp_path / "eval" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and not any(r["failed"] for r in rows)
    for row in rows:
        # Each row is scored against its reference calls with the values score_tool_calls gives.
        want = M.score_tool_calls(M.canonical_calls(row["tool_calls"]), M.canonical_calls(json.loads(row["reference"])))
        assert {k: row[k] for k in M.TOOL_METRICS} == want
        assert row["exact_match"] is None and row["valid_json"] is None
    required = [r for r in rows if r["candidate"] == "required"]
    # tool_choice required: every answer is calls of defined functions (constrained), whatever the tiny model,
    # unless max_tokens cut the first call short.
    names = {t["function"]["name"] for t in json.loads((TOOLS_DIR / "tools.json").read_text())}
    for r in required:
        assert {c["name"] for c in r["tool_calls"]} <= names if r["tool_calls"] else r["finish_reason"] == "length"
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    for name in ("free", "required"):
        cand = metrics["candidates"][name]
        mine = [r for r in rows if r["candidate"] == name]
        assert cand["tool_exact_match"]["value"] == pytest.approx(sum(r["tool_exact_match"] for r in mine) / 2)
        assert cand["tool_args_f1"]["value"] == pytest.approx(sum(r["tool_args_f1"] for r in mine) / 2)
    decision = decide(tmp_path / "eval", primary="accuracy")
    assert decision.primary_metric == "tool_exact_match" and decision.task == "tools"
    assert decide(tmp_path / "eval").primary_metric == "tool_name_match"
