"""The domain-vocabulary example: reproducible byte for byte, clean data, a fixed code list, and graders that
agree with its answers (the judge is exercised against a real server in test_demo_vocab_facts.py)."""

from __future__ import annotations

import json
import runpy
import subprocess
import sys
from pathlib import Path

import pytest

from tunewise.data import validate
from tunewise.eval.candidates import load_candidates
from tunewise.eval.graders import load_graders
from tunewise.eval.graders.run import grade_all

VOCAB = Path(__file__).resolve().parents[1] / "examples" / "vocab"
FILES = ["train.jsonl", "test.jsonl", "few_shot.jsonl", "system_prompt_short.txt", "system_prompt_long.txt",
         "graders.yaml"]
SPLITS = {"train.jsonl": 180, "test.jsonl": 40}
CODES = runpy.run_path(str(VOCAB / "generate.py"))["CODES"]
ENTRIES = {f"{code} {term}" for code, term, *_ in CODES}


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (VOCAB / name).read_text(encoding="utf-8").splitlines()]


def deterministic_graders():
    return [g for g in load_graders(VOCAB / "graders.yaml") if not g.uses_model]


def test_regenerating_gives_identical_bytes(tmp_path):
    subprocess.run([sys.executable, str(VOCAB / "generate.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (VOCAB / name).read_bytes(), name


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_splits_validate_clean(name):
    report = validate(VOCAB / name, model="gpt-4o-mini")
    assert report.ok and report.stats.n_examples == SPLITS[name]
    assert [f.code for f in report.findings] == ([] if name == "train.jsonl" else ["small_dataset"])


def test_every_answer_is_an_entry_of_the_code_list_and_no_description_repeats():
    users = {name: [ex["messages"][-2]["content"] for ex in load(name)] for name in [*SPLITS, "few_shot.jsonl"]}
    for i, a in enumerate(users):
        assert len(set(users[a])) == len(users[a]), a
        for b in list(users)[i + 1:]:
            assert not set(users[a]) & set(users[b]), (a, b)
    answers = {name: [ex["messages"][-1]["content"] for ex in load(name)] for name in users}
    assert set(answers["train.jsonl"]) == ENTRIES  # every code is trained on
    assert set(answers["test.jsonl"]) <= ENTRIES and len(set(answers["test.jsonl"])) >= 8
    long_prompt = (VOCAB / "system_prompt_long.txt").read_text()
    assert all(entry in long_prompt for entry in ENTRIES)  # the prompting candidates see the whole list
    assert not any(code in (VOCAB / "system_prompt_short.txt").read_text() for code, *_ in CODES)


def test_the_reference_answers_pass_the_deterministic_graders():
    graders = deterministic_graders()
    assert [g.name for g in graders] == ["term", "fault_code", "exact"]
    for name in [*SPLITS, "few_shot.jsonl"]:
        rows = load(name)
        for row in rows[:: max(1, len(rows) // 3)]:  # python graders run in a subprocess each
            answer = row["messages"][-1]["content"]
            results = grade_all(graders, answer, {**row, "reference": answer})
            assert {k: r.reward for k, r in results.items()} == dict.fromkeys(["term", "fault_code", "exact"], 1.0)


@pytest.mark.parametrize("answer, expected", [
    ("av-101 Thermocouple failure.", {"term": 1.0, "fault_code": 1.0, "exact": 1.0}),  # case and a full stop
    ("AV-101, the thermocouple has failed", {"term": 0.0, "fault_code": 1.0, "exact": 0.0}),
    ("AV-102 ignition electrode fault", {"term": 0.0, "fault_code": 0.0, "exact": 0.0}),
    ("AV-102 or AV-101", {"term": 0.0, "fault_code": 0.0, "exact": 0.0}),            # the first code counts
    ("AV-612 thermocouple failure", {"term": 1.0, "fault_code": 0.0, "exact": 0.0}),  # the term without its code
    ("AV-101 thermocouple failure or flue blockage", {"term": 0.0, "fault_code": 1.0, "exact": 0.0}),
])
def test_each_grader_scores_what_it_says(answer, expected):
    results = grade_all(deterministic_graders(), answer, {"reference": "AV-101 thermocouple failure"})
    assert {k: r.reward for k, r in results.items()} == expected


def test_the_judge_is_a_label_model_on_the_local_default_model():
    judge = next(g for g in load_graders(VOCAB / "graders.yaml") if g.uses_model)
    assert judge.type == "label_model" and judge.spec["model"] == "smollm2-135m-instruct"
    assert judge.spec["passing_labels"] == ["same"] and set(judge.spec["labels"]) == {"same", "different"}


def test_candidates_load_with_the_code_list_and_few_shot(monkeypatch):
    monkeypatch.setenv("TUNEWISE_FT_MODEL", "ft:smollm2-135m-instruct:vocab")
    candidates = {c.name: c for c in load_candidates(VOCAB / "candidates.yaml")}
    assert set(candidates) == {"base-long-prompt", "base-few-shot", "fine-tuned"}
    assert len(candidates["base-few-shot"].few_shot) == 8 and not candidates["base-long-prompt"].few_shot
    assert "AV-612 printed circuit board fault" in candidates["base-few-shot"].system_prompt
    assert candidates["fine-tuned"].role == "fine-tuned"
