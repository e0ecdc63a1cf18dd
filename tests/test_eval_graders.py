"""Graders in `tunewise eval` and `tunewise decide`: every grader's reward per example in results.jsonl, its mean
with an interval in metrics.json, and a grader as the decision's primary measure (`--primary NAME`)."""

from __future__ import annotations

import json

import pytest

from helpers import run_cli
from test_verdict_cases import SCHEMA, Scripted, base, reference, tuned
from tunewise.eval import runner

GRADERS = """
graders:
  - type: string_check
    name: total_right
    input: "{{ sample.output_json.total }}"
    reference: "{{ item.expected.total }}"
    operation: eq
  - type: text_similarity
    name: close_to_reference
    input: "{{ sample.output_text }}"
    reference: "{{ item.reference }}"
    evaluation_metric: fuzzy_match
"""


@pytest.fixture
def graded(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runner, "SDK_MAX_RETRIES", 0)
    monkeypatch.setattr(runner, "BACKOFF_BASE_S", 0.001)
    monkeypatch.setenv("TUNEWISE_HOME", str(tmp_path / "home"))
    n = 30
    test = tmp_path / "test.jsonl"
    test.write_text("".join(json.dumps({"messages": [
        {"role": "system", "content": "Extract the receipt as JSON."},
        {"role": "user", "content": f"receipt {i}"},
        {"role": "assistant", "content": json.dumps(reference(i))}], "expected": reference(i)}) + "\n"
        for i in range(n)))
    (tmp_path / "schema.json").write_text(json.dumps(SCHEMA))
    # Both answer valid JSON in the schema (format: equal); only the fine-tuned one gets the total right.
    candidates = {"base": base(["content"] * n), "ft": tuned(["right"] * n)}
    server = Scripted({c["model"]: c for c in candidates.values()})
    lines = ["candidates:"]
    for name, c in candidates.items():
        lines += [f"  - name: {name}", f"    model: \"{c['model']}\"", f"    base_url: {server.base_url}",
                  "    api_key: sk-test"]
    (tmp_path / "candidates.yaml").write_text("\n".join(lines) + "\n")
    (tmp_path / "graders.yaml").write_text(GRADERS)
    out = tmp_path / "ev"
    code, stdout, err = run_cli(capsys, "eval", str(test), "--candidates", str(tmp_path / "candidates.yaml"),
                                "--schema", str(tmp_path / "schema.json"), "--out", str(out), "--no-cache",
                                "--grader", str(tmp_path / "graders.yaml"))
    assert code == 0, err
    yield out, stdout
    server.close()


def test_every_graders_reward_is_in_the_results_and_metrics(graded):
    out, stdout = graded
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    for row in rows:
        expected = 1.0 if row["candidate"] == "ft" else 0.0
        assert row["grader:total_right"] == expected and row["graders"]["total_right"]["reward"] == expected
        assert 0.0 <= row["grader:close_to_reference"] <= 1.0
    metrics = json.loads((out / "metrics.json").read_text())
    ft, b = metrics["candidates"]["ft"]["graders"], metrics["candidates"]["base"]["graders"]
    assert ft["total_right"]["value"] == 1.0 and b["total_right"]["value"] == 0.0
    assert ft["close_to_reference"]["value"] == 1.0 > b["close_to_reference"]["value"]
    assert {"low", "high"} <= set(ft["close_to_reference"])
    assert "total_right" in stdout and "close_to_reference" in stdout  # the table shows them
    config = json.loads((out / "config.json").read_text()) if (out / "config.json").is_file() else None
    if config is not None:
        assert [g["name"] for g in config["graders"]] == ["total_right", "close_to_reference"]


def test_a_grader_as_the_primary_measure(graded, capsys):
    out, _ = graded
    code, stdout, err = run_cli(capsys, "decide", str(out), "--json", "--primary", "total_right",
                                "--training-cost", "1")
    assert code == 0, err
    d = json.loads(stdout)
    assert d["primary_metric"] == "grader:total_right"
    assert d["verdict"] == "fine-tune"
    primary = [c for c in d["comparisons"] if c["metric"] == "grader:total_right"]
    assert primary and primary[0]["outcome"] == "better"
    # Without it the format measure decides: both are always in the schema, and exact match is secondary.
    code, stdout, _ = run_cli(capsys, "decide", str(out), "--json", "--training-cost", "1")
    assert json.loads(stdout)["primary_metric"] == "schema_adherence"


def test_an_unknown_primary_names_the_graders_that_ran(graded, capsys):
    out, _ = graded
    code, _, err = run_cli(capsys, "decide", str(out), "--primary", "nope")
    assert code == 2 and "total_right" in err and "close_to_reference" in err
