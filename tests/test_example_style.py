"""The style-and-tone example: reproducible byte for byte, clean data, and graders that agree with its answers."""

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

STYLE = Path(__file__).resolve().parents[1] / "examples" / "style"
FILES = ["train.jsonl", "test.jsonl", "test_shifted.jsonl", "few_shot.jsonl", "system_prompt_short.txt",
         "system_prompt_long.txt", "graders.yaml"]
SPLITS = {"train.jsonl": 120, "test.jsonl": 40, "test_shifted.jsonl": 40}
RULES = ["greeting", "sign_off", "no_exclamation", "british_spelling", "brief", "house_style"]


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (STYLE / name).read_text(encoding="utf-8").splitlines()]


def test_regenerating_gives_identical_bytes(tmp_path):
    subprocess.run([sys.executable, str(STYLE / "generate.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (STYLE / name).read_bytes(), name


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_splits_validate_clean(name):
    report = validate(STYLE / name, model="gpt-4o-mini")
    assert report.ok and report.stats.n_examples == SPLITS[name]
    # Held-out splits under 50 examples get the guide's size warning; nothing else is found.
    assert [f.code for f in report.findings] == ([] if name == "train.jsonl" else ["small_dataset"])


def test_no_message_is_shared_between_splits_and_the_shift_is_real():
    users = {name: [ex["messages"][-2]["content"] for ex in load(name)] for name in [*SPLITS, "few_shot.jsonl"]}
    for i, a in enumerate(users):
        for b in list(users)[i + 1:]:
            assert not set(users[a]) & set(users[b]), (a, b)
    # The shifted messages shout or write formally, and use the American spellings the reply must not echo.
    shifted = users["test_shifted.jsonl"]
    assert sum("!" in m for m in shifted) >= 10 and sum(m.startswith("Dear") or "whom" in m for m in shifted) >= 10
    assert sum(any(w in m for w in ("color", "favorite", "authorize", "catalog", "recognized")) for m in shifted) >= 10
    assert not any("!" in m for m in users["train.jsonl"])


def test_every_reference_answer_gets_reward_1_from_every_grader():
    graders = load_graders(STYLE / "graders.yaml")
    assert [g.name for g in graders] == RULES
    for name in [*SPLITS, "few_shot.jsonl"]:
        rows = load(name)
        # python graders run in a subprocess each: a spread of rows per split keeps this test quick.
        for row in rows[:: max(1, len(rows) // 8)]:
            answer = row["messages"][-1]["content"]
            results = grade_all(graders, answer, {**row, "reference": answer})
            assert {k: r.reward for k, r in results.items()} == dict.fromkeys(RULES, 1.0), (name, answer)


@pytest.mark.parametrize("answer, failing", [
    ("Hello,\n\nSorry about that! It is fixed.\n\nKind regards,\nThe Harbour & Finch team", {"no_exclamation"}),
    ("Hi,\n\nWe apologize for the color.\n\nKind regards,\nThe Harbour & Finch team",
     {"greeting", "british_spelling"}),
    ("Hello,\n\nOne. Two. Three. Four.\n\nKind regards,\nThe Harbour & Finch team", {"brief"}),
    ("Hello,\n\nIt is on its way.\n\nThanks", {"sign_off"}),
])
def test_each_rule_catches_its_own_fault(answer, failing):
    results = grade_all(load_graders(STYLE / "graders.yaml"), answer, {})
    assert {k for k, r in results.items() if r.reward != 1.0} == failing | {"house_style"}


def test_candidates_load_with_the_prompts_and_few_shot(monkeypatch):
    monkeypatch.setenv("TUNEWISE_FT_MODEL", "ft:smollm2-135m-instruct:style")
    candidates = {c.name: c for c in load_candidates(STYLE / "candidates.yaml")}
    assert set(candidates) == {"base-long-prompt", "base-few-shot", "fine-tuned"}
    assert len(candidates["base-few-shot"].few_shot) == 6 and not candidates["base-long-prompt"].few_shot
    assert "British spelling" in candidates["base-long-prompt"].system_prompt
    assert candidates["fine-tuned"].system_prompt.strip() == (STYLE / "system_prompt_short.txt").read_text().strip()
