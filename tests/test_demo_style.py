"""`make demo TASK=style`: the style-and-tone task end to end, with the grader as the primary measure, the shifted
split side by side with the held-out one, and the claims table at the top of the report."""

from __future__ import annotations

import json

import pytest

from test_first_run import TINY, _check_demo, _run_demo
from tunewise.eval.claims import OUTCOMES, SHIFT, SHORTER, STYLE

CANDIDATES = {"base-few-shot", "fine-tuned"}  # the demo leaves out the long prompt without examples


def _check_style(proc, out) -> None:
    _check_demo(proc, out)
    assert "test_shifted.jsonl" in proc.stdout and "the guide's claims on this data:" in proc.stdout
    summary = json.loads((out / "demo.json").read_text())
    assert summary["task"] == "style"
    for split in ("eval", "eval-shifted"):
        metrics = json.loads((out / split / "metrics.json").read_text())
        assert set(metrics["candidates"]) == CANDIDATES
        for m in metrics["candidates"].values():
            assert {"greeting", "sign_off", "no_exclamation", "british_spelling", "brief", "house_style"} <= set(
                m["graders"])
    decision = json.loads((out / "report" / "decision.json").read_text())
    assert decision["primary_metric"] == "grader:house_style"
    assert set(decision["shift"]) == CANDIDATES
    for t in decision["shift"].values():
        assert 0 <= t["in_distribution"] <= 1 and 0 <= t["shifted"] <= 1
        assert t["drop"] == pytest.approx(t["in_distribution"] - t["shifted"])
    claims = {c["claim"]: c for c in decision["claims"]}
    assert {SHORTER, STYLE, SHIFT} <= set(claims)
    assert all(c["outcome"] in OUTCOMES and c["measured"] and c["detail"] for c in claims.values())
    report = (out / "report" / "report.md").read_text()
    # The claims table opens the report, before the reasons.
    assert report.index("## The guide's claims on this data") < report.index("## Why")
    assert "## Held-out and shifted split, side by side" in report and SHIFT in report
    assert "house_style" in (out / "candidates.yaml").read_text() or (out / "style" / "graders.yaml").is_file()


@pytest.mark.slow  # 30-35 s here: the whole style demo on the tiny model (its stages are tested one by one)
def test_demo_style_on_the_tiny_model(tmp_path):
    proc, out = _run_demo(tmp_path, "--task", "style", "--model", TINY, "--limit", "3", timeout=600)
    _check_style(proc, out)
    text = (out / "candidates.yaml").read_text()
    assert str((out / "style" / "few_shot.jsonl").resolve()) in text


@pytest.mark.slow
def test_demo_style_on_the_default_model(tmp_path):
    proc, out = _run_demo(tmp_path, "--task", "style", timeout=1800)
    _check_style(proc, out)
