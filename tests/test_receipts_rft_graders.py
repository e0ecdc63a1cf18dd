"""The receipts RFT example's graders (``examples/receipts/rft.py``) score as its docstring says: exact answers 1,
and for inexact ones, ``partial`` pays for listing a total line more than for missing an item (the finding
recorded in docs/methods.md), while ``count`` ranks an answer with the right number of lines above both."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tunewise.eval.graders import GradingContext, grade, parse_grader

RFT = Path(__file__).resolve().parents[1] / "examples" / "receipts" / "rft.py"
REF = '{"items": [{"name": "A", "price": 1.0}, {"name": "B", "price": 2.0}]}'
EXTRA = '{"items": [{"name": "A", "price": 1.0}, {"name": "B", "price": 2.0}, {"name": "TAX", "price": 0.2}]}'
MISSING = '{"items": [{"name": "A", "price": 1.0}]}'
MISREAD = '{"items": [{"name": "A", "price": 1.0}, {"name": "C", "price": 2.0}]}'


@pytest.fixture(scope="module")
def rft():
    spec = importlib.util.spec_from_file_location("receipts_rft_graders", RFT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def reward(rft, kind: str, answer: str) -> float:
    result = grade(parse_grader(rft.grader("json", kind), "grader"), answer, {"reference_answer": REF},
                   GradingContext(allow_python=True))
    return result.reward


@pytest.mark.parametrize("kind", ["exact", "partial", "count"])
def test_exact_is_one_and_not_json_is_zero(rft, kind):
    assert reward(rft, kind, REF) == pytest.approx(1.0)
    assert reward(rft, kind, "not json") == 0.0
    assert reward(rft, kind, "[1]") == 0.0


def test_count_stops_paying_for_a_total_line(rft):
    assert reward(rft, "partial", EXTRA) > reward(rft, "partial", MISSING)  # F1: 0.8 against 0.67
    assert reward(rft, "count", EXTRA) == pytest.approx(0.5 * 0 + 0.2 * 0.8 + 0.2 * 0 + 0.1 * 1)
    assert reward(rft, "count", MISSING) == pytest.approx(0.2 * 2 / 3 + 0.1)
    assert reward(rft, "count", MISREAD) > max(reward(rft, "count", EXTRA), reward(rft, "count", MISSING))
    assert reward(rft, "partial", MISREAD) < reward(rft, "partial", EXTRA)
    assert reward(rft, "exact", EXTRA) == reward(rft, "exact", MISSING) == pytest.approx(0.25)
