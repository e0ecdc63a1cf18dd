"""`make demo TASK=tools`: the function-calling task end to end, every candidate given the same tools, the decision
on tool-call exact match."""

from __future__ import annotations

import json

import pytest

from test_first_run import TINY, _check_demo, _run_demo

CANDIDATES = {"base-long-prompt", "base-required", "fine-tuned"}


def _check_tools(proc, out, n: int) -> dict:
    _check_demo(proc, out)
    summary = json.loads((out / "demo.json").read_text())
    assert summary["task"] == "tools"
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert metrics["task"] == "tools" and metrics["n_examples"] == n and set(metrics["candidates"]) == CANDIDATES
    rows = [json.loads(line) for line in (out / "eval" / "results.jsonl").read_text().splitlines()]
    for row in rows:
        assert row["prompt"][0]["role"] == "system"
        assert 0 <= row["tool_args_f1"] <= 1 and row["tool_exact_match"] in (0, 1)
    for name, m in metrics["candidates"].items():
        mine = [r for r in rows if r["candidate"] == name]
        assert m["tool_exact_match"]["value"] == pytest.approx(sum(r["tool_exact_match"] for r in mine) / n)
    # tool_choice required: every answer of the constrained candidate is calls of the defined functions.
    names = {t["function"]["name"] for t in json.loads((out / "tools" / "tools.json").read_text())}
    for r in rows:
        if r["candidate"] == "base-required" and r["finish_reason"] != "length":
            assert r["tool_calls"] and {c["name"] for c in r["tool_calls"]} <= names
    decision = json.loads((out / "report" / "decision.json").read_text())
    assert decision["primary_metric"] == "tool_exact_match" and decision["task"] == "tools"
    assert "tool-call exact match" in proc.stdout
    return metrics


@pytest.mark.slow
def test_demo_tools_on_the_tiny_model(tmp_path):
    proc, out = _run_demo(tmp_path, "--task", "tools", "--model", TINY, "--limit", "3", timeout=900)
    _check_tools(proc, out, 3)


@pytest.mark.slow
def test_demo_tools_on_the_default_model(tmp_path):
    proc, out = _run_demo(tmp_path, "--task", "tools", timeout=3600)
    metrics = _check_tools(proc, out, 40)
    # Fine-tuning teaches the call format and the argument reading: the fine-tuned model calls the right
    # function with exactly the right arguments more often than the base model answering freely.
    exact = {name: m["tool_exact_match"]["value"] for name, m in metrics["candidates"].items()}
    assert exact["fine-tuned"] > exact["base-long-prompt"], exact
