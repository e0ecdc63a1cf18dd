"""The vocabulary and facts tasks through a real ``tunewise serve`` (tiny model, 127.0.0.1, free port):
`tunewise decide --claim facts` gives the negative claim's row (default run); the vocabulary judge asks the
server and its answers are cached, and `make demo TASK=vocab|facts` end to end, on the tiny and on the default
model (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from helpers import run_cli
from test_first_run import TINY, _check_demo, _run_demo
from tunewise.eval.candidates import Candidate, load_candidates
from tunewise.eval.claims import FACTS, OUTCOMES, SHORTER, STYLE, VOCABULARY
from tunewise.eval.decide import decide
from tunewise.eval.graders import GradingContext, ModelJudge, parse_graders
from tunewise.eval.runner import run_eval
from tunewise.serve.testing import running_server

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.fixture(scope="module")
def server():
    with running_server(worker=False) as srv:
        yield srv


def _candidates(task: str, server, names: list[str]) -> list[Candidate]:
    """The task's candidates on the tiny model; the fine-tuned one is the tiny model itself, stated as such
    (no training here: what is tested is the grading and the claims table, not what they say)."""
    import os

    os.environ["TUNEWISE_FT_MODEL"] = TINY
    out = [c for c in load_candidates(EXAMPLES / task / "candidates.yaml") if c.name in names]
    for c in out:
        c.model, c.base_url, c.api_key, c.max_tokens = TINY, server.base_url, server.api_key, 8
    return out


def _graders(task: str):
    import yaml

    text = (EXAMPLES / task / "graders.yaml").read_text().replace("smollm2-135m-instruct", TINY)
    return parse_graders(yaml.safe_load(text), where=f"{task}/graders.yaml")


@pytest.mark.slow  # ~35 s on 2 shared cores: the judge's grammar-constrained answers on the tiny model
def test_vocab_judge_asks_the_server_once_and_the_claims_row_has_its_agreement(server, tmp_path):
    cands = _candidates("vocab", server, ["base-few-shot", "fine-tuned"])
    # The primary grader and the judge (the others are covered in test_example_vocab.py).
    graders = [g for g in _graders("vocab") if g.name in ("term", "judge")]
    cache = tmp_path / "cache.sqlite"

    def evaluate(out: Path):
        with ModelJudge(server.base_url, server.api_key, cache=cache) as judge:
            run = run_eval(EXAMPLES / "vocab" / "test.jsonl", cands, out_dir=out, limit=2, cache=cache,
                           graders=graders, grading=GradingContext(judge=judge))
            return run, judge.requests

    run, asked = evaluate(tmp_path / "eval")
    # One judge request per answer not asked before (two identical answers share one).
    assert 0 < asked <= 4 and sum(not r["graders"]["judge"]["cached"] for r in run.results) == asked
    assert {r["graders"]["judge"]["reward"] for r in run.results} <= {0.0, 1.0}
    again, asked_again = evaluate(tmp_path / "eval-again")
    assert asked_again == 0 and all(r["graders"]["judge"]["cached"] for r in again.results)
    assert [r["grader:judge"] for r in again.results] == [r["grader:judge"] for r in run.results]

    decision = decide(tmp_path / "eval", primary="term", claim="vocabulary")
    claims = {c["claim"]: c for c in decision.claims}
    assert decision.primary_metric == "grader:term" and decision.claim == "vocabulary"
    assert VOCABULARY in claims and STYLE not in claims and SHORTER in claims
    row = claims[VOCABULARY]
    assert row["outcome"] in OUTCOMES and "The judge 'judge'" in row["detail"] and "Cohen's kappa" in row["detail"]


def test_facts_decide_on_the_cli_gives_the_negative_claim_s_row(server, tmp_path, capsys):
    cands = _candidates("facts", server, ["base-facts-in-prompt", "fine-tuned"])
    run = run_eval(EXAMPLES / "facts" / "test.jsonl", cands, out_dir=tmp_path / "eval", limit=2,
                   cache=tmp_path / "cache.sqlite", graders=_graders("facts"))
    # Only the facts-in-prompt candidate sent the catalogue entry.
    sent = {r["candidate"]: r["prompt"][0]["content"] for r in run.results}
    assert "Catalogue entry:" in sent["base-facts-in-prompt"] and "Catalogue entry:" not in sent["fine-tuned"]
    code, out, err = run_cli(capsys, "decide", str(tmp_path / "eval"), "--primary", "fact", "--claim", "facts",
                             "--json")
    assert code == 0, err
    decision = json.loads(out)
    assert decision["claim"] == "facts" and FACTS in {c["claim"] for c in decision["claims"]}
    assert FACTS in (tmp_path / "eval" / "report" / "report.md").read_text()
    code, _, err = run_cli(capsys, "decide", str(tmp_path / "eval"), "--claim", "knowledge")
    assert code == 2 and "knowledge" in err and "Traceback" not in err


def _check_task(proc, out: Path, task: str, claim: str, candidates: set[str], graders: set[str]) -> None:
    _check_demo(proc, out)
    assert "the guide's claims on this data:" in proc.stdout
    summary = json.loads((out / "demo.json").read_text())
    assert summary["task"] == task
    metrics = json.loads((out / "eval" / "metrics.json").read_text())
    assert set(metrics["candidates"]) == candidates
    assert all(graders <= set(m["graders"]) for m in metrics["candidates"].values())
    decision = json.loads((out / "report" / "decision.json").read_text())
    claims = {c["claim"]: c for c in decision["claims"]}
    assert claim in claims and all(c["outcome"] in OUTCOMES and c["measured"] and c["detail"]
                                   for c in claims.values())
    report = (out / "report" / "report.md").read_text()
    assert report.index("## The guide's claims on this data") < report.index("## Why") and claim in report


@pytest.mark.slow
def test_demo_vocab_on_the_tiny_model(tmp_path):
    proc, out = _run_demo(tmp_path, "--task", "vocab", "--model", TINY, "--limit", "3", timeout=600)
    _check_task(proc, out, "vocab", VOCABULARY, {"base-few-shot", "fine-tuned"}, {"term", "fault_code", "exact", "judge"})
    assert TINY in (out / "graders.yaml").read_text()  # the judge is this run's local model


@pytest.mark.slow
def test_demo_facts_on_the_tiny_model(tmp_path):
    proc, out = _run_demo(tmp_path, "--task", "facts", "--model", TINY, "--limit", "3", timeout=600)
    _check_task(proc, out, "facts", FACTS, {"base-facts-in-prompt", "fine-tuned"}, {"fact"})


@pytest.mark.slow
def test_demo_vocab_on_the_default_model(tmp_path):
    proc, out = _run_demo(tmp_path, "--task", "vocab", timeout=1800)
    _check_task(proc, out, "vocab", VOCABULARY, {"base-few-shot", "fine-tuned"}, {"term", "fault_code", "exact", "judge"})


@pytest.mark.slow
def test_demo_facts_on_the_default_model(tmp_path):
    proc, out = _run_demo(tmp_path, "--task", "facts", timeout=1800)
    _check_task(proc, out, "facts", FACTS, {"base-facts-in-prompt", "fine-tuned"}, {"fact"})
