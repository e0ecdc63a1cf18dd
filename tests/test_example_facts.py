"""The facts example (the guide's negative claim): reproducible byte for byte, clean data, test facts that no
training example mentions, each test prompt carrying its product's entry, and a grader that agrees with it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tunewise.data import validate
from tunewise.eval.candidates import load_candidates
from tunewise.eval.graders import load_graders
from tunewise.eval.graders.run import grade_all
from tunewise.eval.runner import build_messages, load_examples

FACTS = Path(__file__).resolve().parents[1] / "examples" / "facts"
FILES = ["train.jsonl", "test.jsonl", "system_prompt_short.txt", "catalogue.json", "graders.yaml"]
SPLITS = {"train.jsonl": 120, "test.jsonl": 48}
SHORT = (FACTS / "system_prompt_short.txt").read_text().strip()


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (FACTS / name).read_text(encoding="utf-8").splitlines()]


def test_regenerating_gives_identical_bytes(tmp_path):
    subprocess.run([sys.executable, str(FACTS / "generate.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (FACTS / name).read_bytes(), name


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_splits_validate_clean(name):
    report = validate(FACTS / name, model="gpt-4o-mini")
    assert report.ok and report.stats.n_examples == SPLITS[name]
    assert [f.code for f in report.findings] == ([] if name == "train.jsonl" else ["small_dataset"])


def test_the_test_facts_are_never_trained_on():
    catalogue = json.loads((FACTS / "catalogue.json").read_text())
    trained = [p for p in catalogue if p["split"] == "train"]
    held = [p for p in catalogue if p["split"] == "test"]
    assert len(trained) == 30 and len(held) == 12
    train_text = (FACTS / "train.jsonl").read_text(encoding="utf-8")
    for product in held:  # neither the product nor its code appears anywhere in training
        assert product["name"] not in train_text and product["code"] not in train_text
    train, test = load("train.jsonl"), load("test.jsonl")
    assert all(ex["messages"][0]["content"] == SHORT for ex in train)  # no catalogue in the training prompt
    for ex in test:
        system, question, answer = (m["content"] for m in ex["messages"])
        product = next(p for p in held if p["name"] in question)
        # The test prompt carries exactly that product's entry, and the answer is one of its facts.
        assert system.startswith(SHORT) and f"Catalogue entry: {product['name']}:" in system
        assert answer in system and answer in {product[k] for k in ("price", "weight", "made_in", "code")}
    assert len({ex["messages"][1]["content"] for ex in train + test}) == len(train) + len(test)


def test_the_reference_answers_pass_the_grader():
    graders = load_graders(FACTS / "graders.yaml")
    assert [g.name for g in graders] == ["fact"]
    for name in SPLITS:
        rows = load(name)
        for row in rows[:: max(1, len(rows) // 3)]:
            answer = row["messages"][-1]["content"]
            assert grade_all(graders, answer, {**row, "reference": answer})["fact"].reward == 1.0, answer


@pytest.mark.parametrize("answer, reward", [
    ("It weighs 370 grams.", 1.0), ("370G", 1.0), ("380 g", 0.0), ("£380", 0.0),
    ("Kirkby map case: price £380; weight 370 g; made in Kirkwall", 0.0),  # the whole entry is not an answer
])
def test_the_grader_scores_the_fact_alone(answer, reward):
    row = load("test.jsonl")[0]
    assert row["messages"][-1]["content"] == "370 g" and "£380" in row["messages"][0]["content"]
    result = grade_all(load_graders(FACTS / "graders.yaml"), answer, {**row, "reference": "370 g"})
    assert result["fact"].reward == reward


def test_only_the_facts_in_prompt_candidate_sends_the_entry(monkeypatch):
    monkeypatch.setenv("TUNEWISE_FT_MODEL", "ft:smollm2-135m-instruct:facts")
    candidates = {c.name: c for c in load_candidates(FACTS / "candidates.yaml")}
    assert set(candidates) == {"base-facts-in-prompt", "base-no-facts", "fine-tuned"}
    example = load_examples(FACTS / "test.jsonl", limit=1)[0]
    sent = {name: build_messages(example.prompt, c)[0]["content"] for name, c in candidates.items()}
    assert "Catalogue entry:" in sent["base-facts-in-prompt"]
    assert sent["base-no-facts"].strip() == sent["fine-tuned"].strip() == SHORT
    assert candidates["fine-tuned"].role == "fine-tuned" and candidates["base-facts-in-prompt"].role == "prompting"
