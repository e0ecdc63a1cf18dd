"""The function-calling example: reproducible byte for byte, clean data, references that call defined functions
with arguments that match their schemas, and candidates that are all given the same tools."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from tunewise import models
from tunewise.data import validate
from tunewise.eval.candidates import load_candidates
from tunewise.train.render import IGNORE, Renderer

TOOLS_DIR = Path(__file__).resolve().parents[1] / "examples" / "tools"
FILES = ["train.jsonl", "test.jsonl", "system_prompt_short.txt", "system_prompt_long.txt", "tools.json",
         "candidates.yaml"]
SPLITS = {"train.jsonl": 100, "test.jsonl": 40}


def load(name: str) -> list[dict]:
    return [json.loads(line) for line in (TOOLS_DIR / name).read_text(encoding="utf-8").splitlines()]


def test_regenerating_gives_identical_bytes(tmp_path):
    subprocess.run([sys.executable, str(TOOLS_DIR / "generate.py"), "--out", str(tmp_path)], check=True,
                   capture_output=True)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (TOOLS_DIR / name).read_bytes(), name


@pytest.mark.parametrize("name", sorted(SPLITS))
def test_splits_validate_clean(name):
    report = validate(TOOLS_DIR / name, model="gpt-4o-mini")
    assert report.ok and report.stats.n_examples == SPLITS[name]
    assert [f.code for f in report.findings] == ([] if name == "train.jsonl" else ["small_dataset"])


def test_every_reference_calls_a_defined_function_with_valid_arguments():
    tools = json.loads((TOOLS_DIR / "tools.json").read_text())
    schemas = {t["function"]["name"]: t["function"]["parameters"] for t in tools}
    seen, used, pairs = set(), set(), 0
    for name in SPLITS:
        for row in load(name):
            assert row["tools"] == tools
            user = row["messages"][1]["content"]
            assert user not in seen  # no message is shared between or within splits
            seen.add(user)
            calls = row["messages"][-1]["tool_calls"]
            pairs += len(calls) > 1
            for call in calls:
                args = json.loads(call["function"]["arguments"])
                jsonschema.validate(args, schemas[call["function"]["name"]])
                used.add(call["function"]["name"])
                for value in args.values():  # every argument is read out of the message
                    assert (str(value) if not isinstance(value, float) else f"{value:.2f}") in user or \
                        value in ("damaged", "late", "wrong_item", "changed_mind", "Royal Mail", "DPD", "Evri")
    assert used == set(schemas) and pairs >= 8


def test_training_renders_each_call_with_the_shipped_template():
    renderer = Renderer(models.load_tokenizer(models.TINY_MODEL))
    for line, row in enumerate(load("train.jsonl")[:5], 1):
        r = renderer.render(line, row)
        labelled = renderer.tokenizer.decode([x for x in r.labels if x != IGNORE], skip_special_tokens=False)
        calls = row["messages"][-1]["tool_calls"]
        assert labelled == "\n".join(
            f'<tool_call>\n{{"name": "{c["function"]["name"]}", "arguments": {c["function"]["arguments"]}}}\n'
            "</tool_call>" for c in calls) + "<|im_end|>"


def test_candidates_load_and_the_base_model_gets_the_same_tools(monkeypatch):
    monkeypatch.setenv("TUNEWISE_FT_MODEL", "ft:smollm2-135m-instruct:tools")
    candidates = {c.name: c for c in load_candidates(TOOLS_DIR / "candidates.yaml")}
    assert set(candidates) == {"base-long-prompt", "base-required", "fine-tuned"}
    assert candidates["base-required"].tool_choice == "required" and candidates["base-required"].role == "structured"
    assert candidates["fine-tuned"].role == "fine-tuned" and candidates["base-long-prompt"].role == "prompting"
    tools = load("test.jsonl")[0]["tools"]
    for c in candidates.values():  # the tools come from each example, the same for every candidate
        assert c.params(tools)["tools"] == tools
    assert "get_shipping_status" in candidates["base-long-prompt"].system_prompt
