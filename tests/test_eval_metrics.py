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
    # The same as statsmodels' exact McNemar on the 2x2 table.
    from statsmodels.stats.contingency_tables import mcnemar

    a = [1] * 30 + [1] * 9 + [0] * 3 + [0] * 8
    b = [1] * 30 + [0] * 9 + [1] * 3 + [0] * 8
    assert M.mcnemar_p(a, b) == pytest.approx(mcnemar([[30, 9], [3, 8]], exact=True).pvalue)


def test_newcombe_paired_interval():
    # Both right on 5 of 5: the Wilson bound of 5/5 on each side, about +-43 points (not [0, 0]).
    low, high = M.newcombe_paired_interval([1] * 5, [1] * 5)
    wilson_low = 5 / (5 + M.Z95 ** 2)
    assert low == pytest.approx(-(1 - wilson_low)) and high == pytest.approx(1 - wilson_low)
    assert high == pytest.approx(0.4345, abs=1e-4)
    # Its coverage, simulated: at least about 95% for small and moderate n, correlated or not.
    import numpy as np

    rng = np.random.default_rng(7)
    for n, cells in ((20, (0.6, 0.15, 0.05, 0.2)), (50, (0.3, 0.2, 0.2, 0.3)), (100, (0.85, 0.08, 0.02, 0.05))):
        true = cells[1] - cells[2]
        covered = 0
        for _ in range(400):
            both, b_only, c_only, neither = rng.multinomial(n, cells)
            a = [1] * both + [1] * b_only + [0] * c_only + [0] * neither
            b = [1] * both + [0] * b_only + [1] * c_only + [0] * neither
            low, high = M.newcombe_paired_interval(a, b)
            covered += low <= true <= high
        assert covered / 400 >= 0.925, (n, covered)


def _every_table(largest: int):
    for n in range(1, largest + 1):
        for b_only in range(n + 1):
            for c_only in range(n + 1 - b_only):
                for both in {0, n - b_only - c_only}:
                    yield n, both, b_only, c_only, n - both - b_only - c_only


@pytest.mark.parametrize("largest", [12, pytest.param(60, marks=pytest.mark.slow)])
def test_paired_interval_never_contradicts_the_exact_test(largest):
    # Every 2x2 table with up to 12 pairs (60 in the slow run): the printed interval excludes 0 exactly
    # when McNemar's exact p < 5%.
    for n, both, b_only, c_only, neither in _every_table(largest):
        a = [1] * both + [1] * b_only + [0] * c_only + [0] * neither
        b = [1] * both + [0] * b_only + [1] * c_only + [0] * neither
        c = M.compare("exact_match", "a", a, "b", b)
        assert (c.low > 0 or c.high < 0) == (c.p_value < 0.05), (n, both, b_only, c_only)
        assert c.low <= c.diff <= c.high


def test_compare_clear_and_noise():
    clear = M.compare("exact_match", "ft", [1] * 18 + [0] * 2, "base", [0] * 10 + [1] * 8 + [0] * 2)
    assert clear.significant and clear.outcome == "better"
    assert clear.diff == pytest.approx(0.5) and clear.low > 0
    noise = M.compare("exact_match", "a", [1, 0] * 10, "b", [0, 1] * 10)
    assert not noise.significant and noise.outcome == "inconclusive" and not noise.equivalent
    worse = M.compare("field_f1", "a", [0.2] * 30, "b", [0.9] * 30)
    assert worse.test == "paired-permutation" and worse.outcome == "worse"
    # Pairs where either side does not apply are dropped, and counted.
    partial = M.compare("schema_adherence", "a", [1, None, 1], "b", [0, 0, None])
    assert partial.n == 1 and partial.n_excluded == 2
    # Equivalence: two one-sided tests, the whole 95% interval within the margin.
    same = [1] * 380 + [0] * 20
    eq = M.compare("exact_match", "a", same, "b", same)
    assert eq.equivalent and eq.outcome == "equivalent" and -0.05 < eq.eq_low < 0 < eq.eq_high < 0.05
    assert not M.compare("exact_match", "a", same, "b", same, margin=0.005).equivalent


def test_permutation_test_is_exact_at_small_n_and_its_interval_inverts_it():
    from scipy.stats import ttest_1samp

    d = [0.5, 0.25, 0.75, 0.5, 1.0, -0.25, 0.5, 0.25]
    p = M.permutation_p(d)
    # Exact: 2**8 = 256 sign flips, so p is a multiple of 1/256 (the observed flip included).
    assert p * 256 == pytest.approx(round(p * 256))
    assert p < 0.05 and ttest_1samp(d, 0).pvalue < 0.05
    low, high = M.permutation_interval(d)
    assert low < sum(d) / len(d) < high
    assert M.permutation_p(d, low - 0.01) < 0.05 <= M.permutation_p(d, low + 0.01)
    assert M.permutation_p(d, high + 0.01) < 0.05 <= M.permutation_p(d, high - 0.01)
    assert M.permutation_p([0.0] * 5) == 1.0


def test_permutation_test_keeps_its_level_at_small_n():
    # The paired bootstrap's p was anti-conservative (11% type I error at n=8); the exact test is not.
    import numpy as np

    rng = np.random.default_rng(1)
    rejections = sum(M.permutation_p(rng.normal(size=8) - rng.normal(size=8)) < 0.05 for _ in range(300))
    assert rejections / 300 <= 0.07  # 5% nominal; 300 draws


def test_holm_matches_statsmodels():
    from statsmodels.stats.multitest import multipletests

    cs = [M.compare("exact_match", "a", [1] * k + [0] * (30 - k), "b", [0] * 30) for k in (3, 6, 9)]
    adjusted = M.holm(cs)
    expected = multipletests([c.p_value for c in cs], method="holm")[1]
    assert [c.p_adjusted for c in adjusted] == pytest.approx(list(expected))
    assert [c.significant for c in adjusted] == [q < 0.05 for q in expected]


def test_pairs_needed():
    assert M.pairs_needed(0.5, 0.5, 0.2) is None
    n = M.pairs_needed(0.6, 0.5, 0.3)
    assert 150 < n < 300  # the usual McNemar sample size for a 10-point gain with 30% discordance
    assert M.pairs_needed(1.0, 0.0, 1.0) >= M.MIN_DISCORDANT
