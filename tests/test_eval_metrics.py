"""Metrics on hand-made cases: each score, each interval and each paired test checked against values
worked out by hand (or by the textbook formula)."""

from __future__ import annotations

import math

import pytest

from tunewise.errors import UsageError
from tunewise.eval import metrics as M

SCHEMA = {
    "type": "object",
    "properties": {"items": {"type": "array", "items": {
        "type": "object", "properties": {"name": {"type": "string"}, "price": {"type": "number"}},
        "required": ["name", "price"], "additionalProperties": False}}},
    "required": ["items"], "additionalProperties": False,
}
REF = '{"items": [{"name": "Coffee", "price": 4.50}, {"name": "Bagel", "price": 3.00}]}'


def test_valid_json_is_strict():
    assert M.score_answer('{"items": []}', REF)["valid_json"] == 1
    assert M.score_answer('  {"items": []}\n', REF)["valid_json"] == 1
    # Prose or a code fence around the JSON is a format failure: that is what is measured.
    assert M.score_answer('Sure! {"items": []}', REF)["valid_json"] == 0
    assert M.score_answer('```json\n{"items": []}\n```', REF)["valid_json"] == 0
    assert M.score_answer(None, REF)["valid_json"] == 0
    assert M.score_answer("", REF)["valid_json"] == 0


def test_schema_adherence_and_its_errors():
    v = M.make_validator(SCHEMA)
    good = M.score_answer('{"items": [{"name": "Tea", "price": 2}]}', REF, v)
    assert good["schema_adherence"] == 1 and good["schema_errors"] == []
    bad = M.score_answer('{"items": [{"name": "Tea", "price": "2.00"}]}', REF, v)
    assert bad["schema_adherence"] == 0
    assert bad["valid_json"] == 1
    assert any("items/0/price" in e for e in bad["schema_errors"])
    assert M.score_answer("nope", REF, v)["schema_adherence"] == 0
    # No schema given: adherence does not apply.
    assert M.score_answer('{"items": []}', REF)["schema_adherence"] is None


def test_invalid_schema_is_a_usage_error():
    with pytest.raises(UsageError, match="not a valid JSON Schema"):
        M.make_validator({"type": "nonsense"})


def test_exact_match_is_canonical():
    same = '{"items": [{"price": 4.5, "name": "Coffee"}, {"name": "Bagel", "price": 3}]}'
    assert M.score_answer(same, REF)["exact_match"] == 1  # key order and 4.50 vs 4.5 and 3 vs 3.00 ignored
    swapped = '{"items": [{"name": "Bagel", "price": 3}, {"name": "Coffee", "price": 4.5}]}'
    assert M.score_answer(swapped, REF)["exact_match"] == 0  # arrays keep their order for exact match
    assert M.json_equal(1, 1.0) and M.json_equal(0.1 + 0.2, 0.3)
    assert not M.json_equal(True, 1) and not M.json_equal(False, 0)  # booleans are not numbers
    assert not M.json_equal("4.5", 4.5)
    assert not M.json_equal({"a": 1}, {"a": 1, "b": None})
    assert M.json_equal(None, None) and not M.json_equal(None, 0)


def test_field_scores_by_hand():
    ref = M.parse_json(REF)  # 4 leaves: 2 names, 2 prices
    # Items in another order: every leaf matches (list items are paired order-insensitively).
    p, r, f = M.field_scores(M.parse_json(
        '{"items": [{"name": "Bagel", "price": 3}, {"name": "Coffee", "price": 4.5}]}'), ref)
    assert (p, r, f) == (1.0, 1.0, 1.0)
    # One price wrong, one item missing: 1 of 2 predicted leaves right, 1 of 4 reference leaves found.
    p, r, f = M.field_scores(M.parse_json('{"items": [{"name": "Coffee", "price": 5}]}'), ref)
    assert p == pytest.approx(0.5) and r == pytest.approx(0.25)
    assert f == pytest.approx(2 * 0.5 * 0.25 / 0.75)
    # An extra item: precision drops, recall stays.
    p, r, _ = M.field_scores(M.parse_json('{"items": [{"name": "Coffee", "price": 4.5}, {"name": "Bagel", '
                                          '"price": 3}, {"name": "Jam", "price": 1}]}'), ref)
    assert p == pytest.approx(4 / 6) and r == 1.0
    # Not JSON: zero on all three.
    assert M.field_scores(M.parse_json("no"), ref) == (0.0, 0.0, 0.0)
    # An item is paired with the reference item it shares most with, not the first one.
    p, r, _ = M.field_scores([{"a": 1, "b": 2}], [{"a": 1, "b": 9}, {"a": 1, "b": 2}])
    assert p == 1.0 and r == 0.5
    # Empty lists match each other.
    assert M.field_scores({"items": []}, {"items": []}) == (1.0, 1.0, 1.0)
    assert M.field_scores({"items": []}, {"items": [1]})[2] == 0.0


def test_flatten_paths():
    assert M.flatten(M.parse_json(REF)) == [("items[].name", "Coffee"), ("items[].price", 4.5),
                                            ("items[].name", "Bagel"), ("items[].price", 3.0)]
    assert M.flatten({"a": {"b": [1, 2]}, "c": {}}) == [("a.b[]", 1), ("a.b[]", 2), ("c", {})]


def test_text_metrics():
    ref = "The total is 12 dollars."
    s = M.score_answer("the total is 12 dollars", ref)
    assert s["text_exact_match"] == 1 and s["text_f1"] == 1.0
    assert s["valid_json"] is None and s["field_f1"] is None  # free text: JSON metrics do not apply
    # "total is 12" vs "total is 12 dollars": precision 3/3, recall 3/4.
    assert M.text_f1("total is 12", ref) == pytest.approx(2 * 1 * 0.75 / 1.75)
    assert M.text_f1("nothing alike", ref) == 0.0


def test_wilson_matches_the_formula():
    e = M.wilson(8, 10)
    z = M.Z95
    centre = (0.8 + z * z / 20) / (1 + z * z / 10)
    half = z * math.sqrt(0.8 * 0.2 / 10 + z * z / 400) / (1 + z * z / 10)
    assert e.value == 0.8
    assert e.low == pytest.approx(centre - half) and e.high == pytest.approx(centre + half)
    assert e.low == pytest.approx(0.4902, abs=1e-4) and e.high == pytest.approx(0.9433, abs=1e-4)
    # At 100% the interval is still open below, unlike the normal approximation.
    full = M.wilson(20, 20)
    assert full.high == 1.0 and 0.8 < full.low < 0.9
    assert M.wilson(0, 0).value is None


def test_bootstrap_mean_is_seeded_and_covers_the_mean():
    values = [0.0, 1.0] * 50
    a, b = M.bootstrap_mean(values), M.bootstrap_mean(values)
    assert a == b
    assert a.value == 0.5 and a.low < 0.5 < a.high
    assert 0.08 < a.high - a.low < 0.25  # about 2 * 1.96 * 0.05
    assert M.bootstrap_mean([3.0] * 5).to_dict() == {"value": 3.0, "low": 3.0, "high": 3.0, "n": 5,
                                                     "method": "bootstrap"}


def test_mcnemar_exact():
    # 6 discordant pairs all one way: p = 2 * 0.5**6 = 0.03125.
    assert M.mcnemar_p([1] * 6 + [1] * 4, [0] * 6 + [1] * 4) == pytest.approx(0.03125)
    # 5 one way is not enough at 5%.
    assert M.mcnemar_p([1] * 5, [0] * 5) == pytest.approx(0.0625)
    # 3 vs 3 discordant: no evidence.
    assert M.mcnemar_p([1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]) == 1.0
    assert M.mcnemar_p([1, 0], [1, 0]) == 1.0


def test_compare_clear_and_noise():
    clear = M.compare("exact_match", "ft", [1] * 18 + [0] * 2, "base", [0] * 10 + [1] * 8 + [0] * 2)
    assert clear.significant and clear.outcome == "better"
    assert clear.diff == pytest.approx(0.5) and clear.low > 0
    noise = M.compare("exact_match", "a", [1, 0] * 10, "b", [0, 1] * 10)
    assert not noise.significant and noise.outcome == "same"
    worse = M.compare("field_f1", "a", [0.2] * 30, "b", [0.9] * 30)
    assert worse.test == "paired-bootstrap" and worse.outcome == "worse"
    # Pairs where either side does not apply are dropped.
    partial = M.compare("schema_adherence", "a", [1, None, 1], "b", [0, 0, None])
    assert partial.n == 1


def test_pairs_needed():
    assert M.pairs_needed(0.5, 0.5, 0.2) is None
    n = M.pairs_needed(0.6, 0.5, 0.3)
    assert 150 < n < 300  # the usual McNemar sample size for a 10-point gain with 30% discordance
    assert M.pairs_needed(1.0, 0.0, 1.0) >= M.MIN_DISCORDANT
