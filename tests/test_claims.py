"""The claims table's shift claim on known rewards: few-shot that degrades under a shift and a fine-tuned model
that does not, one that degrades as much, and a fine-tuned model too small to have learned the style."""

from __future__ import annotations

import random

import pytest
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

from tunewise.eval.claims import CANNOT_SHOW, HELD, INCONCLUSIVE, SHIFT, claims, shift_table
from tunewise.eval.runner import EvalRun

METRIC = "grader:house_style"
CHOSEN = {"prompting": "few", "fine-tuned": "ft"}


def _run(rates: dict[str, float], n: int, seed: int) -> EvalRun:
    rng = random.Random(seed)
    rows = [{"candidate": name, "example_id": f"{seed}-{i}", "line": i + 1,
             METRIC: 1.0 if rng.random() < rate else 0.0} for i in range(n) for name, rate in rates.items()]
    cands = {"few": {"role": "prompting", "few_shot": 3}, "ft": {"role": "fine-tuned", "few_shot": 0}}
    for name in cands:
        values = [r[METRIC] for r in rows if r["candidate"] == name]
        cands[name]["graders"] = {"house_style": {"value": sum(values) / n}}
    return EvalRun(out_dir=None, config={}, candidates=[], results=rows, metrics={"candidates": cands})


def _shift(held: dict, shifted: dict, n: int = 60):
    run, other = _run(held, n, 1), _run(shifted, n, 2)
    rows, table = claims(run, comparisons=[], chosen=CHOSEN, candidates=run.metrics["candidates"], task="text",
                         format_metric=None, accuracy_metric="text_f1", primary_metric=METRIC, shifted=other)
    row = next(r for r in rows if r["claim"] == SHIFT)
    return row, table, run, other


def test_few_shot_degrades_and_fine_tuned_does_not():
    row, table, run, other = _shift({"few": 0.9, "ft": 0.95}, {"few": 0.2, "ft": 0.9})
    assert row["outcome"] == HELD and row["low"] > 0
    # The drop and its interval are Welch's, as statsmodels computes them.
    a = [r[METRIC] for r in run.results if r["candidate"] == "few"]
    b = [r[METRIC] for r in other.results if r["candidate"] == "few"]
    low, high = CompareMeans(DescrStatsW(a), DescrStatsW(b)).tconfint_diff(usevar="unequal")
    assert table["few"]["drop_low"] == pytest.approx(low) and table["few"]["drop_high"] == pytest.approx(high)
    assert table["few"]["drop"] == pytest.approx(sum(a) / len(a) - sum(b) / len(b))


def test_both_degrading_alike_is_not_the_claim():
    row, *_ = _shift({"few": 0.9, "ft": 0.9}, {"few": 0.3, "ft": 0.3})
    assert row["outcome"] != HELD


def test_no_difference_on_few_examples_is_inconclusive():
    row, *_ = _shift({"few": 0.8, "ft": 0.8}, {"few": 0.7, "ft": 0.8}, n=8)
    assert row["outcome"] == INCONCLUSIVE


def test_a_fine_tuned_model_that_learned_nothing_cannot_show_it():
    row, table, *_ = _shift({"few": 0.9, "ft": 0.0}, {"few": 0.2, "ft": 0.0})
    assert row["outcome"] == CANNOT_SHOW and "too small" in row["detail"]
    assert table["ft"]["drop"] == 0


def test_shift_table_covers_only_candidates_in_both():
    run, other = _run({"few": 0.5, "ft": 0.5}, 10, 1), _run({"few": 0.5}, 10, 2)
    assert set(shift_table(run, other, METRIC)) == {"few"}


# --- the vocabulary and the facts claims, on known rewards ----------------------------------------------------

def _paired(rates: dict[str, float], n: int, metric: str, seed: int = 3, judge: dict[str, float] | None = None):
    """A run of ``n`` examples with rewards drawn at ``rates`` per candidate, the Holm-adjusted comparison of
    ft against the prompting candidate, and (with ``judge``) a label_model judge's results on the same rows."""
    from tunewise.eval import metrics as M

    rng = random.Random(seed)
    rows = []
    for i in range(n):
        for name, rate in rates.items():
            row = {"candidate": name, "example_id": f"e{i}", "line": i + 1, "index": i,
                   metric: 1.0 if rng.random() < rate else 0.0}
            if judge:
                j = 1.0 if rng.random() < judge[name] else 0.0
                row["graders"] = {"judge": {"reward": j, "passed": bool(j), "errors": []},
                                  metric.split(":", 1)[1]: {"reward": row[metric], "passed": None, "errors": []}}
                row["grader:judge"] = j
            rows.append(row)
    cands = {name: {"role": "fine-tuned" if name == "ft" else "prompting", "graders": {}} for name in rates}
    for name in rates:
        mine = [r for r in rows if r["candidate"] == name]
        cands[name]["graders"][metric.split(":", 1)[1]] = {"value": sum(r[metric] for r in mine) / n}
        if judge:
            cands[name]["graders"]["judge"] = {"value": sum(r["grader:judge"] for r in mine) / n}
    P = next(name for name in rates if name != "ft")
    values = {name: [r[metric] for r in rows if r["candidate"] == name] for name in rates}
    comparisons = [c.to_dict() for c in M.holm([M.compare(metric, "ft", values["ft"], P, values[P])])]
    config = {"graders": [{"type": "label_model", "name": "judge"}] if judge else []}
    run = EvalRun(out_dir=None, config=config, candidates=[], results=rows, metrics={"candidates": cands})
    return run, comparisons, {"prompting": P, "fine-tuned": "ft"}


def _claim_rows(run, comparisons, chosen, metric, claim):
    rows, _ = claims(run, comparisons=comparisons, chosen=chosen, candidates=run.metrics["candidates"],
                     task="text", format_metric=None, accuracy_metric="text_f1", primary_metric=metric, claim=claim)
    return {r["claim"]: r for r in rows}


def test_the_vocabulary_claim_holds_with_the_judge_s_agreement_beside_it():
    from tunewise.eval.claims import STYLE, VOCABULARY

    metric = "grader:fault_code"
    run, comparisons, chosen = _paired({"few": 0.2, "ft": 0.9}, 40, metric, judge={"few": 0.5, "ft": 0.8})
    rows = _claim_rows(run, comparisons, chosen, metric, "vocabulary")
    assert STYLE not in rows  # the grader speaks to the vocabulary claim, not to style
    row = rows[VOCABULARY]
    assert row["outcome"] == HELD and row["low"] > 0 and row["diff"] == comparisons[0]["diff"]
    assert "The judge 'judge' passes" in row["detail"] and "Cohen's kappa" in row["detail"]


def test_a_vocabulary_the_fine_tuned_model_did_not_learn_cannot_show():
    from tunewise.eval.claims import VOCABULARY

    metric = "grader:fault_code"
    run, comparisons, chosen = _paired({"few": 0.3, "ft": 0.0}, 30, metric)
    row = _claim_rows(run, comparisons, chosen, metric, "vocabulary")[VOCABULARY]
    assert row["outcome"] == CANNOT_SHOW and "too small" in row["detail"]


@pytest.mark.parametrize("rates, n, outcome", [
    ({"facts": 0.8, "ft": 0.05}, 40, HELD),            # the facts in the prompt beat fine-tuning on new facts
    ({"facts": 0.05, "ft": 0.0}, 40, CANNOT_SHOW),     # the model cannot even read the facts from its prompt
    ({"facts": 0.5, "ft": 0.4}, 10, INCONCLUSIVE),
])
def test_the_facts_claim(rates, n, outcome):
    from tunewise.eval.claims import FACTS, NOT_HELD

    metric = "grader:fact"
    run, comparisons, chosen = _paired(rates, n, metric)
    row = _claim_rows(run, comparisons, chosen, metric, "facts")[FACTS]
    assert row["outcome"] == outcome and row["outcome"] != NOT_HELD
    assert "never trained on" in row["measured"] and "facts" in row["measured"]
    if outcome == HELD:
        assert row["high"] < 0 and "prompt or retrieve them" in row["detail"]
