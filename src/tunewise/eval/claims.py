"""The guide's claims, each checked against one evaluation: what was measured, whether it held, the interval.

The guide says fine-tuning helps with a consistent output format, shorter prompts, style and tone (where
"few-shot examples degrade under distribution shift; fine-tuned models don't") and domain-specific vocabulary,
and that it does NOT teach factual knowledge. Each claim the evaluation can speak to becomes one row of the
report's claims table:

- ``claim``: the guide's words; ``measured``: what was compared, on how many examples;
- ``outcome``: ``held``, ``did not hold``, ``inconclusive`` or ``cannot show`` (the model or the data is too
  small for the claim to show either way: the fine-tuned model did not learn the behaviour at all, say);
- ``diff``, ``low``, ``high``: the difference and its 95% interval (points as shares; None where the
  measurement is exact, as token counts are); ``detail``: one sentence in words.

The rows reuse the decision's paired, Holm-adjusted comparisons where there are some; the shift claim compares
two splits (different examples, so unpaired): each candidate's drop from the held-out split to the shifted one,
and the difference of the drops, few-shot minus fine-tuned, on the per-example paired differences, each with
Welch's interval (``statsmodels``).

Which claim a grader as the primary measure speaks to is named by ``claim`` (``CLAIM_CHOICES``): ``style``
(the default), ``vocabulary`` (the fine-tuned model against prompting with the vocabulary spelt out; where a
model judge graded the same answers, its pass rates and its agreement with the primary grader are added) or
``facts`` (the negative claim: the fine-tuned model on facts it was never trained on against the base model with
the facts in its prompt; it holds when the prompt is significantly better).
"""

from __future__ import annotations

from typing import Any

from tunewise.eval.runner import GRADER_PREFIX, EvalRun, is_failed

HELD, NOT_HELD, INCONCLUSIVE, CANNOT_SHOW = "held", "did not hold", "inconclusive", "cannot show"
OUTCOMES = (HELD, NOT_HELD, INCONCLUSIVE, CANNOT_SHOW)
LEARNED_AT_LEAST = 0.10
"""Below this score in-distribution the fine-tuned model has not learned the behaviour: a claim about how it
holds up cannot show."""

FORMAT = "Fine-tuning gives a consistent output format (prompting alone holds it 85-90% of the time)."
SHORTER = "A fine-tuned model needs shorter prompts (lower cost and latency per call)."
STYLE = "Fine-tuning teaches style and tone better than instructions and examples in the prompt."
SHIFT = "Few-shot examples degrade under distribution shift; fine-tuned models don't."
VOCABULARY = ("Domain-specific vocabulary the base model handles poorly is dramatically improved by even a small "
              "fine-tuned data set.")
FACTS = ("Fine-tuning does not teach factual knowledge (the model learns new behaviours, not new facts): keep the "
         "facts in the prompt or retrieve them.")
CLAIM_CHOICES = ("style", "vocabulary", "facts")
"""What a grader as the primary measure stands for: which of the guide's claims its comparison tests."""
JUDGE_TYPES = ("label_model", "score_model")
WEAK_JUDGE_KAPPA = 0.2
"""Below this Cohen's kappa with the deterministic grader (slight agreement at most), the judge is reported as
too weak to rely on."""


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


def _facts_claim(c: dict | None, label: str, ft_value: float | None, p_value: float | None) -> dict | None:
    """The negative claim: the fine-tuned model on facts it never saw against the base model with the facts in
    its prompt (``c`` is fine-tuned minus prompting)."""
    if c is None:
        return None
    diff, low, high = c["diff"], c["low"], c["high"]
    F, P = c["a"], c["b"]
    measured = (f"{label} on questions about facts never trained on, {F} (trained on other facts, none in its "
                f"prompt) - {P} (the facts in its prompt), paired over {c['n']} examples")
    if p_value is None or p_value < LEARNED_AT_LEAST:
        return _row(FACTS, measured, CANNOT_SHOW, f"{P} scores {100 * (p_value or 0):.0f}% even with the facts "
                    "in its prompt: the model is too small to read them there, so this evaluation cannot show "
                    "where facts are best kept.", diff, low, high)
    fv = 100 * (ft_value or 0)
    if c["significant"] and diff < 0:
        return _row(FACTS, measured, HELD, f"{F} answers {fv:.0f}% of questions about facts it was never "
                    f"trained on, {P} {100 * p_value:.0f}% with the facts in its prompt ({_pts(diff)} points, "
                    "Holm-adjusted): fine-tuning taught the answers' form, not the facts. Keep the facts in the "
                    "prompt or retrieve them.", diff, low, high)
    if c["significant"] and diff > 0:
        return _row(FACTS, measured, NOT_HELD, f"{F} is significantly better ({_pts(diff)} points) without the "
                    "facts than the base model with them.", diff, low, high)
    return _row(FACTS, measured, INCONCLUSIVE, f"{F} {fv:.0f}% against {P} {100 * p_value:.0f}%: "
                f"{_pts(diff)} points is not significant on {c['n']} examples: evaluate on more.", diff, low, high)


def _judge_results(run: EvalRun, names: list[str], grader: str) -> dict[tuple[str, str], Any]:
    """The rows' results of ``grader`` for the candidates ``names``, by (candidate, example), as GraderResults."""
    from tunewise.eval.graders.run import GraderResult, no_errors

    out = {}
    for r in run.results:
        s = (r.get("graders") or {}).get(grader)
        if r.get("candidate") not in names or is_failed(r) or not s:
            continue
        errors = no_errors()
        for flag in s.get("errors") or []:
            errors[flag] = True
        out[(r["candidate"], r.get("example_id") or f"line-{r.get('line')}")] = GraderResult(
            name=grader, type="", reward=float(s.get("reward") or 0.0), passed=s.get("passed"), errors=errors)
    return out


def judge_agreement(run: EvalRun, names: list[str], reference: str) -> list[dict[str, Any]]:
    """For each model judge among the run's graders: its agreement with the ``reference`` grader on the answers
    of ``names`` (``tunewise.eval.graders.agreement``), with the judge's name."""
    from tunewise.eval.graders import agreement

    judges = [g.get("name") for g in run.config.get("graders") or [] if g.get("type") in JUDGE_TYPES]
    ref = _judge_results(run, names, reference)
    out = []
    for judge in judges:
        if not judge or judge == reference:
            continue
        got = _judge_results(run, names, judge)
        keys = [k for k in ref if k in got]
        if keys:
            out.append(agreement([got[k] for k in keys], [ref[k] for k in keys]))
    return out


def _judge_text(run: EvalRun, F: str, P: str, reference: str, value) -> str:
    parts = []
    for a in judge_agreement(run, [F, P], reference):
        j = a["judge"]
        fv, pv = value(F, GRADER_PREFIX + j), value(P, GRADER_PREFIX + j)
        rates = (f"passes {100 * fv:.0f}% of {F}'s answers and {100 * pv:.0f}% of {P}'s"
                 if fv is not None and pv is not None else "graded the answers")
        kappa = "undefined" if a["kappa"] is None else f"{round(a['kappa'], 2) + 0.0:.2f}"
        ci = (f" (95% CI {round(a['kappa_ci'][0], 2) + 0.0:.2f} to {round(a['kappa_ci'][1], 2) + 0.0:.2f})"
              if a.get("kappa_ci") else "")
        agree = "n/a" if a["agreement"] is None else f"{100 * a['agreement']:.0f}%"
        text = (f" The judge '{j}' {rates}; it agrees with '{reference}' on {agree} of {a['rows']} answers, "
                f"Cohen's kappa {kappa}{ci}.")
        if a["kappa"] is None or a["kappa"] < WEAK_JUDGE_KAPPA:
            text += (f" A judge that agrees no better than chance (kappa under {WEAK_JUDGE_KAPPA:g}) is too weak "
                     f"to rely on here (the judge model is too small for this task): go by '{reference}'.")
        parts.append(text)
    return "".join(parts)


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
           shifted: EvalRun | None = None, claim: str | None = None) -> tuple[list[dict], dict | None]:
    """The claims table's rows, and the shift table (None without a shifted split). ``claim``: which claim a
    grader as the primary measure speaks to (``CLAIM_CHOICES``; None: style)."""
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
    is_grader = bool(primary_metric and primary_metric.startswith(GRADER_PREFIX))
    if primary_metric and P and (claim in ("vocabulary", "facts") or is_grader):
        grader = primary_metric[len(GRADER_PREFIX):] if is_grader else None
        label = f"grader {grader}" if grader else primary_metric.replace("_", " ")
        c = _find(comparisons, primary_metric, F, P)
        if claim == "facts":
            row = _facts_claim(c, label, value(F, primary_metric), value(P, primary_metric))
        else:
            row = _from_comparison(VOCABULARY if claim == "vocabulary" else STYLE, c, label,
                                   value(F, primary_metric))
            if row is not None and claim == "vocabulary" and grader:
                row["detail"] += _judge_text(run, F, P, grader, value)
        if row is not None:
            rows.append(row)
    table = None
    if shifted is not None and primary_metric:
        table = shift_table(run, shifted, primary_metric)
        rows.append(_shift_claim(run, shifted, primary_metric, chosen, table))
    return rows, table
