"""The decision on constructed evaluations whose right answer is known: a clearly better candidate, noise,
equivalence (only when shown), failed calls, adverse differences, structured outputs where cost decides, the
selection split, pairing, and cost from each candidate's own tokens; and the report written and well-formed."""

from __future__ import annotations

import base64
import json
import random
from html.parser import HTMLParser

import pytest

from tunewise.cost import breakeven
from tunewise.errors import DataError, UsageError
from tunewise.eval import Candidate, decide, read_metrics_csv, write_report
from tunewise.eval import metrics as M
from tunewise.eval.decide import FINE_TUNE, KEEP_PROMPTING, NOT_ENOUGH, STRUCTURED, months_text, usd
from tunewise.eval.runner import EvalRun, example_id, load_run, pricing_for, save_run, summarize

SCHEMA = {"type": "object", "properties": {"total": {"type": "number"}, "store": {"type": "string"}},
          "required": ["total", "store"], "additionalProperties": False}


def reference(i: int) -> str:
    return json.dumps({"total": round(3 + i * 1.25, 2), "store": f"Shop {i}"})


def answer(i: int, kind: str) -> str | None:
    """``right``: the reference; ``content``: valid and schema-conform, wrong total; ``format``: prose;
    ``failed``: no answer (the call failed after its retries)."""
    if kind == "right":
        return json.dumps({"store": f"Shop {i}", "total": round(3 + i * 1.25, 2)})
    if kind == "content":
        return json.dumps({"total": 999.0, "store": f"Shop {i}"})
    if kind == "failed":
        return None
    return f"The total at Shop {i} is {3 + i * 1.25}"


def build_run(tmp_path, spec: dict[str, dict], n: int, schema=SCHEMA, save: bool = True) -> EvalRun:
    """An evaluation from per-example outcomes, scored by the real metrics and saved like run_eval."""
    validator = M.make_validator(schema) if schema else None
    results, summaries, candidates = [], {}, []
    for name, s in spec.items():
        cand = Candidate(name=name, model=s["model"], price_model=s.get("price_model"),
                         response_format=s.get("response_format"))
        pricing = pricing_for(cand)
        out_tokens = s.get("output_tokens", 20)
        system = s.get("system")
        rows = []
        for i in range(n):
            kind = s["kinds"][i]
            ans = answer(i, kind)
            failed = kind == "failed"
            user = {"role": "user", "content": f"receipt {i}"}
            scores = M.score_answer(ans, reference(i), validator)
            if failed:
                scores = {k: None for k in scores}
            row = {"candidate": name, "index": i, "line": i + 1, "example_id": example_id([user], reference(i)),
                   "prompt": ([{"role": "system", "content": system}] if system else []) + [user],
                   "answer": ans, "reference": reference(i), "failed": failed, **scores,
                   "latency_s": None if failed else s.get("latency", 0.2),
                   "input_tokens": None if failed else s["input_tokens"],
                   "output_tokens": None if failed else out_tokens,
                   "priced_input_tokens": None if failed else s["input_tokens"],
                   "priced_output_tokens": None if failed else out_tokens,
                   "cached": False, "error": "InternalServerError: busy" if failed else None,
                   "finish_reason": None if failed else "stop"}
            row["cost_usd"] = (pricing.per_call(s["input_tokens"], out_tokens)
                               if pricing.price_model and not failed else None)
            rows.append(row)
        results += rows
        summaries[name] = {"model": cand.model, "role": cand.role, **summarize(rows, pricing)}
        candidates.append(cand.resolved())
    metrics = {"task": "json", "n_examples": n, "schema": schema is not None, "candidates": summaries, "notes": []}
    run = EvalRun(None, {"n_examples": n}, candidates, results, metrics)
    if not save:
        return run
    save_run(run, tmp_path / "eval")
    return load_run(tmp_path / "eval")


def kinds(n: int, right: float, fmt_fail: float = 0.0, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        r = rng.random()
        out.append("right" if r < right else ("format" if r < right + fmt_fail else "content"))
    return out


BASE = {"model": "gpt-4o-mini", "input_tokens": 900}
FT = {"model": "ft:gpt-4o-mini-2024-07-18:org::abc123", "input_tokens": 60}
STRUCT = {"model": "gpt-4o-mini", "input_tokens": 400, "response_format": {"type": "json_schema"}}


def outcomes(d) -> dict[tuple[str, str, str], str]:
    return {(c["a"], c["b"], c["metric"]): c["outcome"] for c in d.comparisons}


# ---------------------------------------------------------------- clear results

def test_clearly_better_fine_tuned_model(tmp_path):
    n = 40
    run = build_run(tmp_path, {"base": {**BASE, "kinds": kinds(n, 0.45, 0.35, seed=1)},
                               "ft": {**FT, "kinds": ["right"] * 38 + ["content"] * 2}}, n)
    d = decide(run, calls_per_month=200_000, training_cost=2.0)
    assert d.verdict == FINE_TUNE
    assert d.chosen == {"prompting": "base", "fine-tuned": "ft"}
    assert d.primary_metric == "schema_adherence" and d.secondary_metrics == ["exact_match"]
    text = " ".join(d.reasons)
    assert "significantly better than base on schema adherence, exact match" in text
    # The guide's 85-90% is quoted against what was measured, not as if it had been.
    assert "here base measured 72.5%" in text
    assert "Shorter prompts" in text
    o = outcomes(d)
    assert o[("ft", "base", "exact_match")] == "better" and o[("ft", "base", "schema_adherence")] == "better"
    assert all(c["p_adjusted"] >= c["p_value"] for c in d.comparisons)  # Holm never lowers a p-value
    # Same model and output tokens on both sides: the payback matches tunewise.cost.breakeven.
    expected = breakeven("gpt-4o-mini-2024-07-18", 900, 60, 20, 200_000, training_cost=2.0)
    assert d.breakeven["ft_monthly"] == pytest.approx(expected.ft_monthly)
    assert d.breakeven["base_monthly"] == pytest.approx(expected.base_monthly)
    assert d.breakeven["breakeven_calls_per_month"] == expected.breakeven_calls_per_month
    assert d.candidates["base"]["monthly_cost_usd"] == pytest.approx(expected.base_monthly)
    assert not d.calls_per_month_assumed and not d.depends_on_volume


def test_noise_is_not_enough_evidence(tmp_path):
    n = 20
    a = kinds(n, 0.6, 0.1, seed=3)
    b = a[5:] + a[:5]  # same rates, shuffled: any difference is noise
    run = build_run(tmp_path, {"base": {**BASE, "kinds": a}, "ft": {**FT, "kinds": b}}, n)
    d = decide(run)
    assert d.verdict == NOT_ENOUGH
    assert "inconclusive" in d.reasons[0]
    assert d.calls_per_month_assumed
    assert all(c["outcome"] == "inconclusive" for c in d.comparisons)


def test_small_gain_on_few_examples_is_not_enough(tmp_path):
    # 70% vs 55% on 20 examples looks like a gain, but its interval spans zero.
    n = 20
    base = ["right"] * 11 + ["content"] * 9
    ft = ["right"] * 11 + ["right"] * 3 + ["content"] * 6
    run = build_run(tmp_path, {"base": {**BASE, "kinds": base}, "ft": {**FT, "kinds": ft}}, n)
    d = decide(run)
    assert d.verdict == NOT_ENOUGH
    need = [r for r in d.reasons if "paired examples would detect" in r]
    # The sample-size figure says what it assumes, and that 3 disagreements make it rough.
    assert need and "assuming the observed difference" in need[0] and "only 3 disagreements" in need[0]


# ---------------------------------------------------------------- equivalence only when shown

@pytest.mark.parametrize("training_cost", [None, 5.0])
def test_equivalence_is_not_shown_by_five_examples(tmp_path, training_cost):
    # Both right on 5 of 5: nothing is known about a difference (Newcombe: about +-43 points).
    run = build_run(tmp_path, {"base": {**BASE, "kinds": ["right"] * 5}, "ft": {**FT, "kinds": ["right"] * 5}}, 5)
    d = decide(run, training_cost=training_cost)
    assert d.verdict == NOT_ENOUGH
    for c in d.comparisons:
        assert not c["equivalent"] and c["eq_low"] == pytest.approx(-0.4345, abs=1e-3)
        assert c["eq_high"] == pytest.approx(0.4345, abs=1e-3)
    assert any("equivalence is not shown" in r for r in d.reasons)


@pytest.mark.parametrize(("ft_tokens", "verdict"), [(60, FINE_TUNE), (2000, KEEP_PROMPTING)])
def test_equivalent_quality_decided_by_cost(tmp_path, ft_tokens, verdict):
    # 400 examples, identical answers: the difference's interval is within +-5 points, so cost decides.
    n = 400
    same = ["right"] * 360 + ["content"] * 40
    run = build_run(tmp_path, {"base": {**BASE, "kinds": same},
                               "ft": {**FT, "input_tokens": ft_tokens, "kinds": same}}, n)
    d = decide(run, calls_per_month=1_000_000, training_cost=5.0)
    assert d.verdict == verdict
    assert "equivalent" in d.reasons[0]
    assert all(c["outcome"] == "equivalent" for c in d.comparisons)


def test_equivalent_quality_with_unknown_training_cost_is_not_counted_as_free(tmp_path):
    n = 400
    same = ["right"] * 360 + ["content"] * 40
    run = build_run(tmp_path, {"base": {**BASE, "kinds": same}, "ft": {**FT, "kinds": same}}, n)
    d = decide(run, calls_per_month=100_000)
    assert d.verdict == NOT_ENOUGH and d.training_cost is None and not d.training_cost_known
    text = " ".join(d.reasons)
    # Saving 900*0.15+20*0.6 - (60*0.30+20*1.2) = $105e-6 a call: $10.50 a month, $126 over 12 months.
    assert "if training costs under $126" in text and "--training-cost" in text
    assert d.breakeven["training_cost"] is None and d.breakeven["months_to_recover"] is None


def test_verdict_from_cost_says_it_depends_on_the_assumed_volume(tmp_path):
    n = 400
    same = ["right"] * 360 + ["content"] * 40
    run = build_run(tmp_path, {"base": {**BASE, "kinds": same}, "ft": {**FT, "kinds": same}}, n)
    d = decide(run, training_cost=50.0)  # 10,000 calls assumed: saves $1.05/month, never pays $50 in 12 months
    assert d.verdict == KEEP_PROMPTING and d.depends_on_volume and d.calls_per_month_assumed
    # $50 / ($105e-6 x 12) = 39,683 calls a month.
    assert any("above 39,683 calls a month it would be 'fine-tune'" in r and "assumed" in r for r in d.reasons)
    assert any("the verdict depends on it" in n for n in d.notes)


# ---------------------------------------------------------------- failed calls

def test_failed_calls_are_not_wrong_answers(tmp_path):
    # Prompting's calls fail on 8 of 40 examples; its answers are otherwise the fine-tuned model's.
    n = 40
    same = ["right"] * 36 + ["content"] * 4
    base = ["failed"] * 8 + same[8:]
    run = build_run(tmp_path, {"base": {**BASE, "kinds": base}, "ft": {**FT, "kinds": same}}, n)
    assert run.metrics["candidates"]["base"]["n_failed"] == 8
    assert run.metrics["candidates"]["base"]["schema_adherence"]["n"] == 32  # failures are not scored
    d = decide(run)
    assert d.verdict == NOT_ENOUGH and "Too many failed calls" in d.reasons[0] and "base 8 of 40" in d.reasons[0]
    # Allowing that many failures, the paired comparison leaves them out: no difference is found.
    d = decide(run, max_failure_rate=0.25)
    assert d.verdict != FINE_TUNE
    for c in d.comparisons:
        assert c["n"] == 32 and c["n_excluded"] == 8 and c["diff"] == 0 and not c["significant"]
    assert any("8 of 40 calls failed" in note for note in d.notes)


def test_failed_calls_do_not_hide_a_real_win(tmp_path):
    # The fine-tuned model's calls fail on 8 examples; where it answered it is right and prompting is not.
    n = 40
    base = ["right"] * 20 + ["format"] * 20
    ft = ["failed"] * 8 + ["right"] * 32
    run = build_run(tmp_path, {"base": {**BASE, "kinds": base}, "ft": {**FT, "kinds": ft}}, n)
    d = decide(run, max_failure_rate=0.25, calls_per_month=100_000, training_cost=1.0)
    assert d.verdict == FINE_TUNE
    assert {c["n"] for c in d.comparisons} == {32}


# ---------------------------------------------------------------- adverse differences

def test_significant_regression_on_the_primary_measure_blocks_fine_tuning(tmp_path):
    # Fine-tuned: 50 points worse on schema adherence, equal on exact match.
    n = 40
    base = ["right"] * 20 + ["content"] * 20
    ft = ["right"] * 20 + ["format"] * 20
    run = build_run(tmp_path, {"base": {**BASE, "kinds": base}, "ft": {**FT, "kinds": ft}}, n)
    d = decide(run, calls_per_month=1_000_000, training_cost=1.0)
    assert d.verdict == KEEP_PROMPTING
    assert "significantly worse than base on schema adherence (the primary measure)" in d.reasons[0]
    o = outcomes(d)
    assert o[("ft", "base", "schema_adherence")] == "worse"
    listed = [r for r in d.reasons if r.startswith("Significant differences")]
    assert listed and "schema adherence: ft 50.0% against base 100.0%, -50.0 points" in listed[0]


def test_a_gain_does_not_hide_a_regression(tmp_path):
    # +25 points exact match, -25 points schema adherence, both significant.
    n = 80
    base = ["content"] * 20 + ["content"] * 20 + ["right"] * 40
    ft = ["right"] * 20 + ["format"] * 20 + ["right"] * 40
    run = build_run(tmp_path, {"base": {**BASE, "kinds": base}, "ft": {**FT, "kinds": ft}}, n)
    d = decide(run, calls_per_month=1_000_000, training_cost=1.0)
    o = outcomes(d)
    assert o[("ft", "base", "exact_match")] == "better" and o[("ft", "base", "schema_adherence")] == "worse"
    assert d.verdict == KEEP_PROMPTING
    assert "better on exact match, but a regression is not offset" in d.reasons[0]
    assert len(d.significant) == 2


def test_fine_tuned_model_that_gets_content_wrong(tmp_path):
    # Fine-tuned: perfect format, wrong facts. Prompting: knows the facts. Fine-tuning does not add facts.
    n = 40
    run = build_run(tmp_path, {"base": {**BASE, "kinds": ["right"] * 34 + ["format"] * 6},
                               "ft": {**FT, "kinds": ["right"] * 15 + ["content"] * 25}}, n)
    d = decide(run)
    assert d.verdict == KEEP_PROMPTING
    assert "not new facts or reasoning" in " ".join(d.reasons)


def test_not_significant_is_not_a_match(tmp_path):
    # 5 discordant pairs all one way: McNemar p = 0.0625; the interval printed with it must include 0.
    n = 30
    base = ["right"] * 20 + ["format"] * 10
    ft = ["right"] * 25 + ["format"] * 5
    run = build_run(tmp_path, {"base": {**BASE, "kinds": base}, "ft": {**FT, "kinds": ft}}, n)
    d = decide(run)
    c = next(c for c in d.comparisons if c["metric"] == "schema_adherence")
    assert c["p_value"] == pytest.approx(0.0625)
    assert c["low"] < 0 < c["high"] and c["outcome"] == "inconclusive"
    assert d.verdict == NOT_ENOUGH


# ---------------------------------------------------------------- structured outputs

def test_structured_outputs_win_when_all_are_perfect_and_they_cost_least(tmp_path):
    n = 100
    spec = {"base": {**BASE, "kinds": ["right"] * n},
            "ft": {**FT, "input_tokens": 400, "kinds": ["right"] * n},
            "structured": {**STRUCT, "kinds": ["right"] * n}}
    run = build_run(tmp_path, spec, n)
    for training in (None, 3.0):
        d = decide(run, training_cost=training)
        assert d.verdict == STRUCTURED, d.reasons
        assert all(c["outcome"] == "equivalent" for c in d.comparisons)
        assert "Cheapest: structured" in " ".join(d.reasons)
        if training is None:
            assert "ft $1.44/month before training (training cost unknown)" in " ".join(d.reasons)


def test_structured_outputs_match_fine_tuning(tmp_path):
    # Both beat prompting; structured outputs equivalent to the fine-tuned model and untrained: cost decides.
    n = 400
    right = ["right"] * 380 + ["content"] * 20
    run = build_run(tmp_path, {"base": {**BASE, "kinds": kinds(n, 0.5, 0.45, seed=2)},
                               "ft": {**FT, "input_tokens": 400, "kinds": right},
                               "structured": {**STRUCT, "kinds": right}}, n)
    d = decide(run, training_cost=2.0)
    assert d.verdict == STRUCTURED
    assert any("equivalent to ft" in r and "without any training" in r for r in d.reasons)


def test_fine_tuned_against_structured_undecided_is_not_enough(tmp_path):
    n = 40
    run = build_run(tmp_path, {"base": {**BASE, "kinds": kinds(n, 0.5, 0.45, seed=2)},
                               "ft": {**FT, "kinds": ["right"] * 36 + ["content"] * 4},
                               "structured": {**STRUCT, "kinds": ["right"] * 35 + ["content"] * 5}}, n)
    d = decide(run, training_cost=2.0)
    assert d.verdict == NOT_ENOUGH
    assert any("inconclusive: neither better nor shown equivalent" in r for r in d.reasons)


def test_structured_gives_format_not_content(tmp_path):
    n = 40
    run = build_run(tmp_path, {"base": {**BASE, "kinds": kinds(n, 0.3, 0.5, seed=4)},
                               "ft": {**FT, "kinds": ["right"] * 37 + ["content"] * 3},
                               "structured": {**STRUCT, "kinds": ["right"] * 14 + ["content"] * 26}}, n)
    d = decide(run)
    assert d.verdict == FINE_TUNE
    assert any("constrained decoding gives the format, not the right content" in r for r in d.reasons)


def test_structured_outputs_worse_than_prompting_are_out_of_the_running(tmp_path):
    # Fine-tuned beats prompting; structured outputs lose to prompting: fine-tune, whatever ft vs structured says.
    n = 60
    run = build_run(tmp_path, {"base": {**BASE, "kinds": ["right"] * 40 + ["format"] * 20},
                               "ft": {**FT, "kinds": ["right"] * 60},
                               "structured": {**STRUCT, "kinds": ["right"] * 28 + ["content"] * 32}}, n)
    d = decide(run, training_cost=1.0)
    assert outcomes(d)[("structured", "base", "exact_match")] == "worse"
    assert d.verdict == FINE_TUNE


def test_structured_beats_prompting_without_fine_tuned_candidate(tmp_path):
    n = 30
    run = build_run(tmp_path, {"base": {**BASE, "kinds": ["right"] * 15 + ["format"] * 15},
                               "structured": {**STRUCT, "kinds": ["right"] * 15 + ["content"] * 15}}, n)
    assert decide(run).verdict == STRUCTURED


def test_structured_outputs_that_cost_accuracy(tmp_path):
    n = 30
    run = build_run(tmp_path, {"base": {**BASE, "kinds": ["right"] * 27 + ["format"] * 3},
                               "structured": {**STRUCT, "kinds": ["right"] * 12 + ["content"] * 18}}, n)
    d = decide(run)
    assert d.verdict == KEEP_PROMPTING
    assert "cost accuracy" in d.reasons[0]


# ---------------------------------------------------------------- several candidates of a role

def test_representative_is_chosen_on_a_selection_split(tmp_path):
    n = 40
    run = build_run(tmp_path, {"short": {**BASE, "input_tokens": 100, "kinds": ["format"] * n},
                               "long": {**BASE, "kinds": ["right"] * 30 + ["format"] * 10},
                               "ft": {**FT, "kinds": ["right"] * 31 + ["format"] * 9}}, n)
    d = decide(run)
    assert d.chosen["prompting"] == "long"
    assert d.selection == {"seed": 0, "n_select": 20, "n_compare": 20, "roles": {"prompting": ["short", "long"]}}
    assert all(c["n"] == 20 for c in d.comparisons)  # compared on the other half only
    assert any("chosen on 20 of the 40 examples" in note for note in d.notes)
    assert d.verdict == NOT_ENOUGH


def test_candidates_with_different_examples_are_refused(tmp_path):
    run = build_run(tmp_path, {"base": {**BASE, "kinds": ["right"] * 10}, "ft": {**FT, "kinds": ["right"] * 10}},
                    10, save=False)
    run.results = [r for r in run.results if not (r["candidate"] == "ft" and r["index"] == 3)]
    with pytest.raises(DataError, match=r"'base' and 'ft' were evaluated on different examples \(10 and 9, "
                                        r"1 only in base's \(e\.g\. line 4\)\)"):
        decide(run)
    other = build_run(tmp_path, {"base": {**BASE, "kinds": ["right"] * 10},
                                 "ft": {**FT, "kinds": ["right"] * 10}}, 10, save=False)
    for r in other.results:
        if r["candidate"] == "ft" and r["index"] == 0:
            r["example_id"] = "something-else"
    with pytest.raises(DataError, match="only in ft's"):
        decide(other)


def test_older_results_without_example_ids_are_paired_by_line(tmp_path):
    run = build_run(tmp_path, {"base": {**BASE, "kinds": ["right"] * 20 + ["format"] * 20},
                               "ft": {**FT, "kinds": ["right"] * 40}}, 40, save=False)
    for r in run.results:
        del r["example_id"], r["failed"]
    d = decide(run, training_cost=1.0)
    assert d.verdict == FINE_TUNE and {c["n"] for c in d.comparisons} == {40}


def test_one_kind_of_candidate_is_not_enough(tmp_path):
    run = build_run(tmp_path, {"a": {**BASE, "kinds": ["right"] * 10}, "b": {**BASE, "kinds": ["format"] * 10}}, 10)
    d = decide(run)
    assert d.verdict == NOT_ENOUGH and "Only one kind" in d.reasons[0]


def test_arguments_are_checked(tmp_path):
    run = build_run(tmp_path, {"base": {**BASE, "kinds": ["right"] * 10}, "ft": {**FT, "kinds": ["right"] * 10}}, 10)
    with pytest.raises(UsageError, match="not both"):
        decide(run, training_cost=1.0, training_file="x.jsonl")
    with pytest.raises(UsageError, match="needs --model"):
        decide(run, training_file="x.jsonl")
    with pytest.raises(UsageError, match="non-negative"):
        decide(run, calls_per_month=-1)
    with pytest.raises(UsageError, match="--primary must be one of"):
        decide(run, primary="speed")
    with pytest.raises(UsageError, match="--cache-hit-rate"):
        decide(run, cache_hit_rate=1.5)
    with pytest.raises(UsageError, match="--margin"):
        decide(run, margin=5)
    with pytest.raises(UsageError, match="not an evaluation directory"):
        decide(tmp_path / "nowhere")


def test_primary_accuracy_is_named_up_front(tmp_path):
    run = build_run(tmp_path, {"base": {**BASE, "kinds": ["right"] * 10}, "ft": {**FT, "kinds": ["right"] * 10}}, 10)
    d = decide(run, primary="accuracy")
    assert d.primary_metric == "exact_match" and d.secondary_metrics == ["schema_adherence"]


# ---------------------------------------------------------------- cost

def test_each_candidate_is_priced_with_its_own_tokens(tmp_path):
    # Prompting answers with 200 tokens, the fine-tuned model with 20.
    n = 40
    run = build_run(tmp_path, {"base": {**BASE, "output_tokens": 200, "kinds": ["right"] * n},
                               "ft": {**FT, "kinds": ["right"] * n}}, n)
    d = decide(run, calls_per_month=100_000, training_cost=1.0)
    # (900 x $0.15 + 200 x $0.60) / 1M x 100,000 = $25.50, not $14.70 from the fine-tuned model's 20 tokens.
    assert d.breakeven["base_monthly"] == pytest.approx(25.50)
    assert d.breakeven["ft_monthly"] == pytest.approx((60 * 0.30 + 20 * 1.20) / 1e6 * 100_000)
    assert "base $25.50/month (900 input + 200 output tokens per call)" in " ".join(d.reasons)


def test_cached_input_prices_can_turn_a_saving_into_none(tmp_path):
    # A 1,500-token prompt, almost all of it a static system prompt, against a 300-token fine-tuned prompt.
    n = 400
    same = ["right"] * 380 + ["content"] * 20
    system = "You read receipts and answer in JSON. " * 160
    run = build_run(tmp_path, {"base": {**BASE, "input_tokens": 1500, "output_tokens": 200, "system": system,
                                        "kinds": same},
                               "ft": {**FT, "input_tokens": 300, "output_tokens": 200, "kinds": same}}, n)
    static = run.metrics["candidates"]["base"]["static_prefix_tokens"]
    assert 1024 < static < 1500
    uncached = decide(run, calls_per_month=1_000_000, training_cost=5.0)
    assert uncached.verdict == FINE_TUNE  # 345 vs 330 micro-dollars a call
    assert any("static prefix" in note and "--cache-hit-rate" in note for note in uncached.notes)
    cached = decide(run, calls_per_month=1_000_000, training_cost=5.0, cache_hit_rate=1.0)
    assert cached.verdict == KEEP_PROMPTING
    assert cached.candidates["base"]["cached_input_tokens"] == pytest.approx(static)
    expected = ((1500 - static) * 0.15 + static * 0.075 + 200 * 0.60) / 1e6
    assert cached.candidates["base"]["cost_per_call_usd"] == pytest.approx(expected)
    assert cached.breakeven["never_pays"]


def test_figures_keep_the_precision_they_need():
    assert months_text(0.04) == "0.04 months (about 1.2 days)"
    assert months_text(0.001) == "0.001 months (under a day)"
    assert months_text(3.25) == "3.2 months" and months_text(None) == "never"
    assert usd(0.000123) == "$0.000123" and usd(0.42) == "$0.420" and usd(12.345) == "$12.35"
    assert usd(1234.5) == "$1,234" and usd(None) == "unknown" and usd(0) == "$0"


# ---------------------------------------------------------------- inputs and the report

METRICS_CSV = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n" + "".join(
    f"{s},{2.5 / s:.4f},{0.5 + s / 40:.3f},{(f'{2.7 / s:.4f}') if s % 5 == 0 else ''},"
    f"{(f'{0.5 + s / 45:.3f}') if s % 5 == 0 else ''}\n" for s in range(1, 21))


def test_read_metrics_csv_plain_and_base64(tmp_path):
    path = tmp_path / "metrics.csv"
    path.write_text(METRICS_CSV)
    rows = read_metrics_csv(path)
    assert len(rows) == 20 and rows[0]["step"] == 1 and rows[0]["train_loss"] == 2.5
    assert rows[0]["valid_loss"] is None and rows[4]["valid_loss"] == pytest.approx(0.54)
    # OpenAI serves the result file base64-encoded.
    assert read_metrics_csv(base64.b64encode(METRICS_CSV.encode())) == rows
    bad = tmp_path / "bad.csv"
    bad.write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="not a step metrics CSV"):
        read_metrics_csv(bad)


class _Page(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.images, self.external, self.text = [], [], [], []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag not in ("img", "meta", "br"):
            self.stack.append(tag)
        if tag == "img":
            self.images.append(a["src"])
        for key in ("href", "src"):
            if a.get(key) and not a[key].startswith("data:"):
                self.external.append(a[key])

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"unbalanced </{tag}>"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def test_report_is_self_contained_and_well_formed(tmp_path):
    n = 40
    run = build_run(tmp_path, {"base": {**BASE, "kinds": kinds(n, 0.45, 0.35, seed=1)},
                               "ft": {**FT, "kinds": ["right"] * 38 + ["content"] * 2}}, n)
    (tmp_path / "m.csv").write_text(METRICS_CSV)
    d = decide(run, calls_per_month=50_000, training_cost=3.0, metrics_csv=tmp_path / "m.csv")
    paths = write_report(d, tmp_path / "report")

    page = _Page()
    page.feed(paths["html"].read_text())
    page.close()
    assert page.stack == []  # every element closed
    assert page.external == []  # no external assets
    assert len(page.images) == 3  # loss, quality, cost
    for src in page.images:
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1], validate=True)
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    text = " ".join(page.text)
    assert "fine-tune" in text and "significantly better than base on schema adherence" in text
    # The report states the procedure and shows the new evidence: Holm p, equivalence interval, failed calls.
    assert "How this was decided" in text and "Primary measure: schema adherence" in text
    for column in ("Holm p", "equivalence 95% CI", "left out (failed)", "failed calls"):
        assert column in text

    md = paths["markdown"].read_text()
    assert md.startswith("# Should I fine-tune? fine-tune")
    for name in ("loss", "quality", "cost"):
        assert f"(plots/{name}.png)" in md
        assert (tmp_path / "report" / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG"
    assert "| base | prompting |" in md and "## How this was decided" in md
    assert "| schema_adherence (primary) | ft | base | 40 | 0 |" in md
    saved = json.loads(paths["json"].read_text())
    assert saved["verdict"] == FINE_TUNE and len(saved["loss_curve"]) == 20


def test_report_without_prices_or_loss(tmp_path):
    # Local models with no price and no metrics CSV: the report is still written, with the plots that apply.
    n = 10
    run = build_run(tmp_path, {"base": {"model": "smollm2-135m-instruct", "input_tokens": 300,
                                        "kinds": ["format"] * n},
                               "ft": {"model": "ft:smollm2-135m-instruct:p::x", "input_tokens": 50,
                                      "kinds": ["right"] * n}}, n, schema=None)
    d = decide(run)
    assert d.format_metric == "valid_json"
    assert d.verdict == FINE_TUNE
    paths = write_report(d, tmp_path / "r")
    assert "loss" not in paths and "quality" in paths
    assert any("local model" in note for note in d.notes)


def test_free_text_is_decided_on_token_f1_with_a_permutation_test(tmp_path):
    from tunewise.eval.candidates import Candidate as C

    rng = random.Random(5)
    refs = [f"Thank you for order {i}: it ships tomorrow." for i in range(30)]
    results, summaries = [], {}
    for name, model, p in (("base", "gpt-4o-mini", 0.4), ("ft", FT["model"], 0.95)):
        cand = C(name=name, model=model)
        pricing = pricing_for(cand)
        rows = []
        for i in range(30):
            text = refs[i] if rng.random() < p else f"order {i} ok"
            rows.append({"candidate": name, "index": i, "line": i + 1, "example_id": f"e{i}", "prompt": [],
                         "failed": False, "error": None, **M.score_answer(text, refs[i]), "latency_s": 0.1,
                         "input_tokens": 100, "output_tokens": 12, "priced_input_tokens": 100,
                         "priced_output_tokens": 12, "cost_usd": pricing.per_call(100, 12)})
        results += rows
        summaries[name] = {"model": model, "role": cand.role, **summarize(rows, pricing)}
    run = EvalRun(None, {}, [], results, {"task": "text", "n_examples": 30, "schema": False,
                                          "candidates": summaries, "notes": []})
    d = decide(run, training_cost=1.0, calls_per_month=1e6)
    assert d.primary_metric == "text_f1" and d.format_metric is None
    (c,) = d.comparisons
    assert c["test"] == "paired-permutation" and c["outcome"] == "better" and c["low"] > 0
    assert d.verdict == FINE_TUNE and "Style and tone" in d.reasons[0]
    with pytest.raises(UsageError, match="applies to JSON answers"):
        decide(run, primary="format")
