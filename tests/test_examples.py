"""The receipts example: reproducible byte for byte, clean data, answers that match the schema and the receipt."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tunewise.data import validate

RECEIPTS = Path(__file__).resolve().parents[1] / "examples" / "receipts"
FILES = ["train.jsonl", "test.jsonl", "schema.json", "system_prompt_long.txt", "system_prompt_short.txt",
         "few_shot.jsonl"]
SHORT = "You extract product names and prices from receipts. Return JSON only."
NOT_ITEMS = re.compile(r"total|tax|vat|tip|gratuity|change|cash|balance|amount due|visa|card", re.I)


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (RECEIPTS / name).read_text(encoding="utf-8").splitlines()]


@pytest.fixture(scope="module")
def examples() -> dict[str, list[dict]]:
    return {name: load(name) for name in ("train.jsonl", "test.jsonl", "few_shot.jsonl")}


def test_regenerating_gives_identical_bytes(tmp_path):
    subprocess.run([sys.executable, str(RECEIPTS / "generate.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (RECEIPTS / name).read_bytes(), name


def test_train_and_test_validate_clean():
    train = validate(RECEIPTS / "train.jsonl", model="gpt-4o-mini")
    assert train.ok and train.findings == [] and train.stats.n_examples == 200
    test = validate(RECEIPTS / "test.jsonl", model="gpt-4o-mini")
    # 50 held-out examples are below the guide's "solid results" band: that size warning is the only finding.
    assert test.ok and test.stats.n_examples == 50
    assert [f.code for f in test.findings] == ["small_dataset"]


def test_sizes_prompts_and_no_leak(examples):
    train, test = examples["train.jsonl"], examples["test.jsonl"]
    assert (len(train), len(test)) == (200, 50)
    for ex in train + test:
        assert [m["role"] for m in ex["messages"]] == ["system", "user", "assistant"]
        assert ex["messages"][0]["content"] == SHORT
    assert (RECEIPTS / "system_prompt_short.txt").read_text(encoding="utf-8").strip() == SHORT
    texts = [ex["messages"][1]["content"] for ex in train]
    assert len(set(texts)) == len(texts)
    assert not set(texts) & {ex["messages"][1]["content"] for ex in test}
    # The guide's own two examples open the training set.
    assert texts[:2] == ["Coffee - $4.50, Bagel - $3.00", "Green Tea $2.75"]


def test_every_answer_matches_the_schema_and_its_receipt(examples):
    schema = json.loads((RECEIPTS / "schema.json").read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for name, rows in examples.items():
        for ex in rows:
            user = next(m["content"] for m in ex["messages"] if m["role"] == "user")
            answer = json.loads(next(m["content"] for m in ex["messages"] if m["role"] == "assistant"))
            validator.validate(answer)
            assert answer["items"], name
            for item in answer["items"]:
                assert item["name"] in user, (name, item)
                assert not NOT_ITEMS.fullmatch(item["name"]), (name, item)
                # The line's amount is printed on the receipt (decimal point or comma).
                amount = f"{item['price']:.2f}"
                assert amount in user or amount.replace(".", ",") in user, (name, item, user)


def test_receipts_are_varied(examples):
    texts = [ex["messages"][1]["content"] for ex in examples["train.jsonl"] + examples["test.jsonl"]]

    def count(pattern: str) -> int:
        return sum(1 for t in texts if re.search(pattern, t))

    assert count(r"^[^\n]+ - \$\d+\.\d\d, ") >= 5  # the guide's inline "Coffee - $4.50, Bagel - $3.00"
    assert count(r"\n") >= 100  # one item per line
    assert count(r"\t") >= 5 and count(r" \| ") >= 5 and count(r";") >= 5 and count(r"\.{4,}") >= 5
    assert count(r"\$\d") >= 20 and count(r"\d £|£\d") >= 10 and count(r"\d €") >= 10  # symbol before/after
    assert count(r"\bUSD\b|\bEUR\b") >= 10 and count(r"\d,\d\d €") >= 5  # codes, decimal commas
    assert count(r"(?i)subtotal|sub-total") >= 20 and count(r"(?i)\btax\b|\bvat\b") >= 30
    assert count(r"(?i)\btotal\b|amount due|balance") >= 50
    assert count(r"\b\d+x |x\d+\b|\(x\d+\)| @ |qty \d") >= 30  # quantities
    assert count(r"(?i)receipt #|cashier|\d{4}-\d\d-\d\d|\d\d/\d\d/\d{4}") >= 30  # headers
    upper = lower = 0
    for ex in examples["train.jsonl"]:
        names = [i["name"] for i in json.loads(ex["messages"][2]["content"])["items"]]
        upper += all(n == n.upper() and n != n.lower() for n in names)
        lower += all(n == n.lower() and n != n.upper() for n in names)
    assert upper >= 10 and lower >= 5


def test_few_shot_turns_and_long_prompt(examples):
    shots = examples["few_shot.jsonl"]
    assert 3 <= len(shots) <= 6
    for ex in shots:
        assert [m["role"] for m in ex["messages"]] == ["user", "assistant"]
    long_prompt = (RECEIPTS / "system_prompt_long.txt").read_text(encoding="utf-8")
    assert len(long_prompt) > 10 * len(SHORT)
    for phrase in ('"items"', '"name"', '"price"', "subtotal", "tax", "total", "quantity"):
        assert phrase in long_prompt.lower() or phrase in long_prompt
