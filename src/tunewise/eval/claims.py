"""The guide's claims, each checked against one evaluation: what was measured, whether it held, the interval.

The guide says fine-tuning helps with a consistent output format, shorter prompts, and style and tone, where
"few-shot examples degrade under distribution shift; fine-tuned models don't". Each claim the evaluation can speak to becomes one row of the report's claims table:

- ``claim``: the guide's words; ``measured``: what was compared, on how many examples;
- ``outcome``: ``held``, ``did not hold``, ``inconclusive`` or ``cannot show`` (the model or the data is too
  small for the claim to show either way: the fine-tuned model did not learn the behaviour at all, say);
- ``diff``, ``low``, ``high``: the difference and its 95% interval (points as shares; None where the
  measurement is exact, as token counts are); ``detail``: one sentence in words.

The rows reuse the decision's paired, Holm-adjusted comparisons where there are some; the shift claim compares
two splits (different examples, so unpaired): each candidate's drop from the held-out split to the shifted one,
and the difference of the drops, few-shot minus fine-tuned, on the per-example paired differences, each with
Welch's interval (``statsmodels``).
"""

from __future__ import annotations

from typing import Any

from tunewise.eval.runner import EvalRun, is_failed

HELD, NOT_HELD, INCONCLUSIVE, CANNOT_SHOW = "held", "did not hold", "inconclusive", "cannot show"
OUTCOMES = (HELD, NOT_HELD, INCONCLUSIVE, CANNOT_SHOW)
LEARNED_AT_LEAST = 0.10
"""Below this score in-distribution the fine-tuned model has not learned the behaviour: a claim about how it
holds up cannot show."""

FORMAT = "Fine-tuning gives a consistent output format (prompting alone holds it 85-90% of the time)."
SHORTER = "A fine-tuned model needs shorter prompts (lower cost and latency per call)."
STYLE = "Fine-tuning teaches style and tone better than instructions and examples in the prompt."
SHIFT = "Few-shot examples degrade under distribution shift; fine-tuned models don't."


def _row(claim: str, measured: str, outcome: str, detail: str, diff: float | None = None,
         low: float | None = None, high: float | None = None) -> dict[str, Any]:
    assert outcome in OUTCOMES
    return {"claim": claim, "measured": measured, "outcome": outcome, "diff": diff, "low": low, "high": high,
            "detail": detail}


def _pts(x: float) -> str:
    return f"{100 * x:+.1f}"


def _from_comparison(claim: str, c: dict | None, label: str, ft_value: float | None) -> dict[str, Any] | None:
    if c is None:
        return None
    diff, low, high = c["diff"], c["low"], c["high"]
    measured = f"{label}, {c['a']} - {c['b']}, paired over {c['n']} examples"
    if ft_value is not None and ft_value < LEARNED_AT_LEAST and diff <= 0:
        return _row(claim, measured, CANNOT_SHOW, f"{c['a']} scores {100 * ft_value:.0f}% on {label}: the "
                    "fine-tuned model did not learn the behaviour, so the model (or the training run) is too "
                    "small for this claim to show either way.", diff, low, high)
    if c["significant"] and diff > 0:
        outcome, text = HELD, f"{c['a']} is significantly better ({_pts(diff)} points, Holm-adjusted)."
    elif c["significant"] and diff < 0:
        outcome, text = NOT_HELD, f"{c['a']} is significantly worse ({_pts(diff)} points)."
    elif c.get("equivalent"):
        outcome, text = NOT_HELD, (f"Equivalent within +-{100 * c.get('margin', 0.05):g} points: no gain from "
                                   "fine-tuning here.")
    else:
        outcome, text = INCONCLUSIVE, (f"{_pts(diff)} points is not significant on {c['n']} examples: "
                                       "evaluate on more.")
    return _row(claim, measured, outcome, text, diff, low, high)


def _find(comparisons: list[dict], metric: str, a: str | None, b: str | None) -> dict | None:
    for c in comparisons:
        if c["metric"] == metric and c["a"] == a and c["b"] == b:
            return c
    return None


def _rewards(run: EvalRun, name: str, metric: str) -> dict[str, float]:
    out = {}
    for r in run.results:
        if r.get("candidate") == name and not is_failed(r) and r.get(metric) is not None:
            out[r.get("example_id") or f"line-{r.get('line')}"] = float(r[metric])
    return out


def _welch(x: list[float], y: list[float]) -> tuple[float, float, float]:
    """mean(x) - mean(y) with Welch's 95% interval (two independent samples)."""
    from statsmodels.stats.weightstats import CompareMeans, DescrStatsW

    diff = sum(x) / len(x) - sum(y) / len(y)
    if len(x) < 2 or len(y) < 2:
        return diff, float("-inf"), float("inf")
    cm = CompareMeans(DescrStatsW(x), DescrStatsW(y))
    if cm.d1.std == 0 and cm.d2.std == 0:
        return diff, diff, diff
    low, high = cm.tconfint_diff(alpha=0.05, usevar="unequal")
    return diff, float(low), float(high)


def shift_table(run: EvalRun, shifted: EvalRun, metric: str) -> dict[str, dict[str, Any]]:
    """Each candidate's mean ``metric`` on the held-out split and on the shifted one, and the drop with its
    interval (Welch: different examples)."""
    table = {}
    for name, s in run.metrics["candidates"].items():
        if name not in shifted.metrics["candidates"]:
            continue
        a, b = list(_rewards(run, name, metric).values()), list(_rewards(shifted, name, metric).values())
        if not a or not b:
            continue
        drop, low, high = _welch(a, b)
        table[name] = {"role": s.get("role"), "few_shot": s.get("few_shot", 0), "in_distribution": sum(a) / len(a),
                       "shifted": sum(b) / len(b), "n_in": len(a), "n_shifted": len(b), "drop": drop,
                       "drop_low": low, "drop_high": high}
    return table


def _shift_claim(run: EvalRun, shifted: EvalRun, metric: str, chosen: dict[str, str],
                 table: dict[str, dict]) -> dict[str, Any]:
    F = chosen.get("fine-tuned")
    few = [n for n, t in table.items() if t["role"] == "prompting" and t["few_shot"]]
    P = chosen.get("prompting") if chosen.get("prompting") in few else (few[0] if few else None)
    label = metric.split(":", 1)[-1]
    if not F or not P or F not in table:
        return _row(SHIFT, f"{label} on the held-out and the shifted split", CANNOT_SHOW,
                    "The evaluation needs a few-shot candidate and a fine-tuned one on both splits.")
    f, p = table[F], table[P]
    measured = (f"{label}: drop from held-out ({p['n_in']}) to shifted ({p['n_shifted']}) examples, {P} "
                f"{100 * p['in_distribution']:.0f}% -> {100 * p['shifted']:.0f}%, {F} "
                f"{100 * f['in_distribution']:.0f}% -> {100 * f['shifted']:.0f}%; interval of {P}'s drop "
                f"minus {F}'s")
    # The difference of the drops on per-example differences P - F (paired within each split).
    x_in, x_sh = _rewards(run, P, metric), _rewards(run, F, metric)
    y_in, y_sh = _rewards(shifted, P, metric), _rewards(shifted, F, metric)
    d_in = [x_in[k] - x_sh[k] for k in x_in if k in x_sh]
    d_sh = [y_in[k] - y_sh[k] for k in y_in if k in y_sh]
    if not d_in or not d_sh:
        return _row(SHIFT, measured, CANNOT_SHOW, "No example was answered by both candidates on each split.")
    diff, low, high = _welch(d_in, d_sh)
    if f["in_distribution"] < LEARNED_AT_LEAST:
        return _row(SHIFT, measured, CANNOT_SHOW, f"{F} scores {100 * f['in_distribution']:.0f}% even on the "
                    "held-out split: it did not learn the style, so the model (or the training run) is too small "
                    "for this claim to show.", diff, low, high)
    if p["in_distribution"] < LEARNED_AT_LEAST:
        return _row(SHIFT, measured, CANNOT_SHOW, f"{P} scores {100 * p['in_distribution']:.0f}% on the held-out "
                    "split: with nothing to lose, few-shot cannot be seen to degrade.", diff, low, high)
    few_drops = p["drop_low"] > 0
    if few_drops and low > 0:
        outcome, text = HELD, (f"{P} loses {_pts(p['drop'])} points under the shift (95% interval "
                               f"{_pts(p['drop_low'])} to {_pts(p['drop_high'])}), significantly more than "
                               f"{F} ({_pts(f['drop'])}).")
    elif high < 0 or (p["drop_high"] < 0):
        outcome, text = NOT_HELD, f"{F} degrades more under the shift than {P} does (or {P} does not degrade)."
    else:
        outcome, text = INCONCLUSIVE, (f"{P}'s drop {_pts(p['drop'])} and {F}'s {_pts(f['drop'])} points do not "
                                       f"differ significantly on {len(d_in)} + {len(d_sh)} examples.")
    return _row(SHIFT, measured, outcome, text, diff, low, high)


def claims(run: EvalRun, *, comparisons: list[dict], chosen: dict[str, str], candidates: dict[str, dict],
           task: str, format_metric: str | None, accuracy_metric: str, primary_metric: str | None,
           shifted: EvalRun | None = None) -> tuple[list[dict], dict | None]:
    """The claims table's rows, and the shift table (None without a shifted split)."""
    F, P, S = chosen.get("fine-tuned"), chosen.get("prompting"), chosen.get("structured")
    rows: list[dict] = []
    if not F or not (P or S):
        return rows, None
    base = P or S

    def value(name: str, metric: str) -> float | None:
        s = candidates.get(name) or {}
        if metric.startswith("grader:"):
            return ((s.get("graders") or {}).get(metric.split(":", 1)[1]) or {}).get("value")
        return (s.get(metric) or {}).get("value")

    if task == "json" and format_metric:
        c = _find(comparisons, format_metric, F, P) if P else None
        row = _from_comparison(FORMAT, c, format_metric.replace("_", " "), value(F, format_metric))
        if row is not None:
            pv = value(P, format_metric)
            if pv is not None:
                row["detail"] += f" Prompting ({P}) measured {100 * pv:.0f}% (the guide cites 85-90%)."
            rows.append(row)
    fi, pi = value(F, "priced_input_tokens"), value(base, "priced_input_tokens")
    if fi is not None and pi:
        rows.append(_row(SHORTER, f"input tokens per call, {F} against {base}",
                         HELD if fi < pi else NOT_HELD,
                         f"{fi:.0f} against {pi:.0f} tokens per call ({100 * (1 - fi / pi):.0f}% fewer)."
                         if fi < pi else f"{fi:.0f} against {pi:.0f} tokens per call: not shorter.",
                         diff=(fi - pi) / pi))
    if primary_metric and primary_metric.startswith("grader:") and P:
        row = _from_comparison(STYLE, _find(comparisons, primary_metric, F, P),
                               f"grader {primary_metric.split(':', 1)[1]}", value(F, primary_metric))
        if row is not None:
            rows.append(row)
    table = None
    if shifted is not None and primary_metric:
        table = shift_table(run, shifted, primary_metric)
        rows.append(_shift_claim(run, shifted, primary_metric, chosen, table))
    return rows, table
