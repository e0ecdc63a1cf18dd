"""Metrics: per-answer scores, per-candidate summaries with 95% intervals, and paired tests between candidates.

Per answer (``score_answer``): valid JSON, JSON-Schema adherence, exact match of the parsed answer (canonical
compare: key order ignored, numbers compared as numbers, ``true`` never equal to ``1``), field-level precision,
recall and F1 (the answer flattened to path=value leaves; list items paired with the reference's items
order-insensitively, best overlap first), and for free text a normalised exact match and token F1.

Per candidate (``summarize``): rates get Wilson intervals, means a percentile bootstrap, latencies p50/p95.
Between two candidates on the same examples (``compare``): McNemar's exact test for rates (with the exact
interval that goes with it, and Newcombe's paired interval for equivalence) and a paired permutation test for
means (with the interval that inverts it), so a verdict rests on a significant difference, not on two point
estimates, and a printed interval never contradicts its p-value.
"""

from __future__ import annotations

import json
import math
import re
import string
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

Z95 = 1.959963984540054
BOOTSTRAP_RESAMPLES = 2000
ALPHA = 0.05
MIN_DISCORDANT = 6
_MISSING = object()

# Metrics that are 0/1 per example (rates: Wilson intervals, McNemar) versus means (bootstrap).
RATE_METRICS = ("valid_json", "schema_adherence", "exact_match", "text_exact_match", "tool_name_match",
                "tool_exact_match")
MEAN_METRICS = ("field_precision", "field_recall", "field_f1", "text_f1", "tool_args_f1")
TOOL_METRICS = ("tool_name_match", "tool_exact_match", "tool_args_f1")
"""Per answer whose reference is a tool call (an assistant message with ``tool_calls``): ``score_tool_calls``."""


# ---------------------------------------------------------------- parsing and comparing answers

def parse_json(text: str | None) -> Any:
    """The answer parsed as JSON, or ``_MISSING`` if it is not valid JSON.

    Strict on purpose: format adherence is what is being measured, so an answer wrapped in prose or a
    Markdown code fence is not valid JSON.
    """
    if text is None:
        return _MISSING
    try:
        return json.loads(text.strip())
    except (json.JSONDecodeError, ValueError):
        return _MISSING


def is_json_answer(reference: str) -> bool:
    """Whether a reference answer is structured (a JSON object or array), so JSON metrics apply."""
    value = parse_json(reference)
    return isinstance(value, dict | list)


def _is_number(x: Any) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def json_equal(a: Any, b: Any) -> bool:
    """Canonical JSON equality: objects by key, arrays in order, numbers by value (``4.5 == 4.50``, ``3 == 3.0``),
    booleans only equal to booleans."""
    if _is_number(a) and _is_number(b):
        return a == b or math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is not type(b):
        return False
    return a == b


def _is_leaf(x: Any) -> bool:
    # Empty containers count as one leaf so that {"items": []} against {"items": []} is a match, not 0/0.
    return not isinstance(x, dict | list) or len(x) == 0


def count_leaves(x: Any) -> int:
    if _is_leaf(x):
        return 1
    values = x.values() if isinstance(x, dict) else x
    return sum(count_leaves(v) for v in values)


def flatten(x: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``{"items": [{"name": "Tea"}]}`` -> ``[("items[].name", "Tea")]``: the path=value pairs field F1 counts."""
    if _is_leaf(x):
        return [(prefix or "$", x)]
    if isinstance(x, dict):
        return [pair for k, v in x.items() for pair in flatten(v, f"{prefix}.{k}" if prefix else str(k))]
    return [pair for v in x for pair in flatten(v, f"{prefix}[]")]


def matched_leaves(pred: Any, ref: Any) -> int:
    """How many path=value leaves of ``pred`` match ``ref``; list items are paired order-insensitively.

    Items of two lists are paired greedily by the most matching leaves first (exact for the usual case of
    distinct items, a close lower bound of the optimal assignment otherwise); unpaired items match nothing.
    """
    if _is_leaf(pred) or _is_leaf(ref):
        return 1 if _is_leaf(pred) and _is_leaf(ref) and json_equal(pred, ref) else 0
    if isinstance(pred, dict) and isinstance(ref, dict):
        return sum(matched_leaves(pred[k], ref[k]) for k in pred.keys() & ref.keys())
    if isinstance(pred, list) and isinstance(ref, list):
        scores = sorted(((matched_leaves(p, r), i, j) for i, p in enumerate(pred) for j, r in enumerate(ref)),
                        key=lambda t: (-t[0], t[1], t[2]))
        used_p: set[int] = set()
        used_r: set[int] = set()
        total = 0
        for score, i, j in scores:
            if score == 0:
                break
            if i in used_p or j in used_r:
                continue
            used_p.add(i)
            used_r.add(j)
            total += score
        return total
    return 0


def field_scores(pred: Any, ref: Any) -> tuple[float, float, float]:
    """Field-level (precision, recall, F1) of a parsed answer against the parsed reference.

    An answer that is not valid JSON scores 0 on all three.
    """
    if pred is _MISSING:
        return 0.0, 0.0, 0.0
    tp = matched_leaves(pred, ref)
    precision = tp / count_leaves(pred)
    recall = tp / count_leaves(ref)
    f1 = 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)
    return precision, recall, f1


_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_text(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the usual QA normalisation)."""
    text = _ARTICLES.sub(" ", text.lower().translate(_PUNCT))
    return " ".join(text.split())


def text_f1(pred: str, ref: str) -> float:
    """Token-level F1 between normalised texts (bag of words)."""
    p, r = normalize_text(pred).split(), normalize_text(ref).split()
    if not p and not r:
        return 1.0
    common = sum((Counter(p) & Counter(r)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(p), common / len(r)
    return 2 * precision * recall / (precision + recall)


def schema_errors(value: Any, validator) -> list[str]:
    """Messages of every JSON-Schema violation (empty when it adheres)."""
    return [f"{'/'.join(map(str, e.absolute_path)) or '$'}: {e.message}" for e in validator.iter_errors(value)]


def make_validator(schema: dict):
    """A jsonschema validator for ``schema`` (its own draft), checked once up front."""
    import jsonschema

    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        from tunewise.errors import UsageError

        raise UsageError(f"The schema is not a valid JSON Schema: {exc.message}.",
                         hint="Fix the schema file (see json-schema.org).") from None
    return cls(schema)


def score_answer(answer: str | None, reference: str, validator=None) -> dict[str, Any]:
    """Every per-example metric for one answer. ``None`` marks a metric that does not apply.

    JSON metrics apply when the reference is a JSON object or array; schema adherence when a validator is
    given; text metrics always (for JSON answers they are a rough secondary signal).
    """
    out: dict[str, Any] = {}
    text = answer or ""
    if is_json_answer(reference):
        ref = parse_json(reference)
        pred = parse_json(answer)
        valid = pred is not _MISSING
        out["valid_json"] = int(valid)
        if validator is not None:
            errors = schema_errors(pred, validator) if valid else ["not valid JSON"]
            out["schema_adherence"] = int(not errors)
            out["schema_errors"] = errors[:5]
        else:
            out["schema_adherence"] = None
        out["exact_match"] = int(valid and json_equal(pred, ref))
        p, r, f = field_scores(pred, ref)
        out["field_precision"], out["field_recall"], out["field_f1"] = p, r, f
    else:
        out["valid_json"] = None
        out["schema_adherence"] = None
        out["exact_match"] = int(text.strip() == reference.strip())
        out["field_precision"] = out["field_recall"] = out["field_f1"] = None
    out["text_exact_match"] = int(normalize_text(text) == normalize_text(reference))
    out["text_f1"] = text_f1(text, reference)
    return out


def canonical_calls(calls: list[dict] | None) -> list[dict]:
    """OpenAI tool calls (``{"function": {"name", "arguments": JSON string}}``, or already ``{"name",
    "arguments"}``) as ``[{"name", "arguments": parsed}]``; arguments that are not a JSON object stay a string
    (and then match nothing)."""
    out = []
    for call in calls or []:
        fn = call.get("function", call) if isinstance(call, dict) else {}
        args = fn.get("arguments")
        if isinstance(args, str):
            parsed = parse_json(args)
            args = parsed if isinstance(parsed, dict) else args
        out.append({"name": fn.get("name"), "arguments": args if args is not None else {}})
    return out


def score_tool_calls(predicted: list[dict] | None, reference: list[dict]) -> dict[str, Any]:
    """The tool-call metrics of one answer against the reference calls (both ``canonical_calls``):

    - ``tool_name_match``: the same functions called (as a multiset: order ignored);
    - ``tool_exact_match``: the same calls, arguments exactly right (canonical JSON compare), order ignored;
    - ``tool_args_f1``: field F1 of the arguments: calls paired by name (best overlap first), each argument
      flattened to path=value leaves as for JSON answers; a call of another function, or arguments that are not
      a JSON object, match nothing. An answer without calls scores 0 on all three.
    """
    pred = predicted or []
    names_match = sorted(str(c["name"]) for c in pred) == sorted(str(c["name"]) for c in reference)

    def args(c: dict) -> Any:
        return c["arguments"] if isinstance(c["arguments"], dict) else _MISSING

    # Pair calls by name, the pairs with the most matching leaves first.
    scores = sorted(((matched_leaves(args(p), args(r)) if p["name"] == r["name"] and args(p) is not _MISSING
                      and args(r) is not _MISSING else -1, i, j)
                     for i, p in enumerate(pred) for j, r in enumerate(reference)), key=lambda t: (-t[0], t[1], t[2]))
    used_p: set[int] = set()
    used_r: set[int] = set()
    tp = 0
    exact = 0
    for score, i, j in scores:
        if score < 0 or i in used_p or j in used_r:
            continue
        used_p.add(i)
        used_r.add(j)
        tp += score
        exact += int(json_equal(args(pred[i]), args(reference[j])))
    n_pred = sum(count_leaves(c["arguments"]) if isinstance(c["arguments"], dict) else 1 for c in pred)
    n_ref = sum(count_leaves(c["arguments"]) if isinstance(c["arguments"], dict) else 1 for c in reference)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_ref if n_ref else 0.0
    f1 = 0.0 if tp == 0 else 2 * precision * recall / (precision + recall)
    return {"tool_name_match": int(bool(pred) and names_match),
            "tool_exact_match": int(bool(pred) and len(pred) == len(reference) == exact),
            "tool_args_f1": f1}


# ---------------------------------------------------------------- intervals

@dataclass(frozen=True)
class Estimate:
    """A point estimate with its 95% interval, over ``n`` examples."""

    value: float | None
    low: float | None
    high: float | None
    n: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "low": self.low, "high": self.high, "n": self.n, "method": self.method}

    @classmethod
    def from_dict(cls, d: dict) -> Estimate:
        return cls(d["value"], d["low"], d["high"], d["n"], d["method"])


def wilson(successes: int, n: int, z: float = Z95) -> Estimate:
    """Wilson score interval for a rate: sound at 0% and 100% and for small n, unlike the normal interval."""
    if n == 0:
        return Estimate(None, None, None, 0, "wilson")
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    # At 0% and 100% the bound on that side is exact; rounding must not put it a hair inside the estimate.
    low = 0.0 if successes == 0 else max(0.0, centre - half)
    high = 1.0 if successes == n else min(1.0, centre + half)
    return Estimate(p, low, high, n, "wilson")


def bootstrap_mean(values: list[float], resamples: int = BOOTSTRAP_RESAMPLES, seed: int = 0) -> Estimate:
    """Mean with a percentile-bootstrap 95% interval (seeded, so a report is reproducible)."""
    x = np.asarray([v for v in values if v is not None], dtype=float)
    if x.size == 0:
        return Estimate(None, None, None, 0, "bootstrap")
    if (x == x[0]).all():  # every resample has the same mean
        return Estimate(float(x[0]), float(x[0]), float(x[0]), int(x.size), "bootstrap")
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Estimate(float(x.mean()), float(low), float(high), int(x.size), "bootstrap")


def percentile(values: list[float], q: float) -> float | None:
    x = [v for v in values if v is not None]
    return float(np.percentile(x, q)) if x else None


# ---------------------------------------------------------------- paired tests

def _discordant(a: list[int], b: list[int]) -> tuple[int, int]:
    """(examples only ``a`` got right, examples only ``b`` got right)."""
    b_only = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    c_only = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    return b_only, c_only


def mcnemar_p(a: list[int], b: list[int]) -> float:
    """Two-sided exact McNemar test (binomial on the discordant pairs, scipy's ``binomtest``) for paired 0/1
    outcomes."""
    from scipy.stats import binomtest

    b_only, c_only = _discordant(a, b)
    if b_only + c_only == 0:
        return 1.0
    return float(binomtest(b_only, b_only + c_only, 0.5).pvalue)


def exact_paired_interval(b_only: int, c_only: int, n: int, alpha: float = ALPHA) -> tuple[float, float]:
    """The interval of a paired rate difference that goes with the exact McNemar test.

    Conditional on the ``m = b + c`` discordant pairs, ``b ~ Binomial(m, pi)`` and the difference is
    ``(m / n)(2 pi - 1)``; the Clopper-Pearson interval of ``pi`` maps onto it. It excludes 0 exactly when the
    two-sided exact test rejects at ``alpha``, so the printed interval and the p-value never disagree. It says
    nothing about equivalence (with no discordant pair it is [0, 0]): that is ``newcombe_paired_interval``'s job.
    """
    from scipy.stats import binomtest

    m = b_only + c_only
    if m == 0 or n == 0:
        return 0.0, 0.0
    ci = binomtest(b_only, m, 0.5).proportion_ci(confidence_level=1 - alpha, method="exact")
    return m / n * (2 * ci.low - 1), m / n * (2 * ci.high - 1)


def newcombe_paired_interval(a: list[int], b: list[int], alpha: float = ALPHA) -> tuple[float, float]:
    """Newcombe's hybrid score interval (his method 10, 1998) for the difference of two paired rates.

    Built from the Wilson intervals of each rate (statsmodels' ``proportion_confint``) and the phi correlation
    of the pairs (continuity-corrected when positive). Unlike the conditional interval it accounts for the
    uncertainty of the rates themselves: both right on 5 of 5 gives about +-43 points, not [0, 0].
    """
    from statsmodels.stats.proportion import proportion_confint

    n = len(a)
    if n == 0:
        return -1.0, 1.0
    both = sum(1 for x, y in zip(a, b, strict=True) if x and y)
    b_only, c_only = _discordant(a, b)
    neither = n - both - b_only - c_only
    p1, p2 = (both + b_only) / n, (both + c_only) / n
    l1, u1 = proportion_confint(both + b_only, n, alpha=alpha, method="wilson")
    l2, u2 = proportion_confint(both + c_only, n, alpha=alpha, method="wilson")
    # Exact at 0% and 100%, whatever the rounding.
    l1, u1 = (0.0 if p1 == 0 else l1), (1.0 if p1 == 1 else u1)
    l2, u2 = (0.0 if p2 == 0 else l2), (1.0 if p2 == 1 else u2)
    denom = (both + b_only) * (c_only + neither) * (both + c_only) * (b_only + neither)
    num = both * neither - b_only * c_only
    if num > 0:
        num = max(num - n / 2, 0.0)
    phi = num / math.sqrt(denom) if denom else 0.0
    d = p1 - p2
    lower = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return max(-1.0, d - lower), min(1.0, d + upper)


PERMUTATION_RESAMPLES = 4999
"""Sign flips for the paired permutation test (p resolves to 1/5000, well under the smallest Holm threshold
of 6 tests at 5%); every one of the 2**n flips is enumerated when 2**n is fewer (n <= 12)."""


def permutation_p(d: list[float] | np.ndarray, shift: float = 0.0, resamples: int = PERMUTATION_RESAMPLES,
                  seed: int = 0) -> float:
    """Two-sided paired permutation (sign-flip) test of mean(d) = ``shift`` (scipy's ``permutation_test``).

    Exact (every flip enumerated) at small n; seeded Monte Carlo otherwise, so a report is reproducible.
    """
    from scipy.stats import permutation_test

    x = np.asarray(d, dtype=float) - shift
    if x.size == 0:
        return 1.0
    if not x.any():
        return 1.0
    res = permutation_test((x,), lambda v, axis: np.mean(v, axis=axis), permutation_type="samples",
                           vectorized=True, n_resamples=resamples, alternative="two-sided",
                           random_state=np.random.default_rng(seed))
    return float(min(1.0, res.pvalue))


def permutation_interval(d: list[float] | np.ndarray, alpha: float = ALPHA, tol: float = 5e-4) -> tuple[float, float]:
    """The shifts the permutation test does not reject at ``alpha``: the interval that goes with its p-value.

    Found by bisection from a bracket twice the width of the t interval (widened until the test rejects at
    its edge), to within ``tol``.
    """
    x = np.asarray(d, dtype=float)
    if x.size == 0:
        return -1.0, 1.0
    est = float(x.mean())
    se = float(x.std(ddof=1) / math.sqrt(x.size)) if x.size > 1 else 0.0
    step = max(4 * se, 4 * tol, 0.01)
    limit = float(np.abs(x).max()) + 1.0

    def bound(direction: int) -> float:
        inside, outside = est, est + direction * step
        while permutation_p(x, outside) >= alpha:  # not rejected yet: widen the bracket
            inside = outside
            if abs(outside - est) > limit:  # nothing rejected that far out (tiny n)
                return outside
            outside = est + 2 * (outside - est)
        while abs(outside - inside) > tol:
            mid = (inside + outside) / 2
            if permutation_p(x, mid) >= alpha:
                inside = mid
            else:
                outside = mid
        return inside

    return bound(-1), bound(+1)


@dataclass(frozen=True)
class Comparison:
    """Candidate ``a`` against ``b`` on one metric, over the examples both answered (paired by example id)."""

    metric: str
    a: str
    b: str
    n: int
    diff: float
    """Mean of a - b (a rate difference for 0/1 metrics)."""
    low: float
    high: float
    """The 95% interval of the difference that goes with ``p_value`` (it excludes 0 exactly when p < 5%)."""
    p_value: float
    test: str
    significant: bool
    """Significant after the multiple-comparison adjustment (``p_adjusted < alpha``)."""
    p_adjusted: float | None = None
    """Holm-adjusted p over the comparisons that decide the verdict (None: not part of that family)."""
    interval: str = ""
    """How ``low``/``high`` were computed."""
    eq_low: float = -1.0
    eq_high: float = 1.0
    """The 95% interval used for equivalence (the same as ``low``/``high``)."""
    margin: float = 0.05
    equivalent: bool = False
    """Two one-sided tests at 2.5% each: the whole equivalence interval lies within +-margin."""
    discordant: int | None = None
    """Rates: examples where exactly one of the two is right."""
    n_excluded: int = 0
    """Examples left out because a call failed (or the metric does not apply) on either side."""
    a_value: float | None = None
    b_value: float | None = None
    """Each side's mean over the paired examples."""

    @property
    def outcome(self) -> str:
        """``better`` / ``worse`` (a against b, significant after adjustment), ``equivalent`` (TOST) or
        ``inconclusive``."""
        if self.significant:
            return "better" if self.diff > 0 else "worse"
        return "equivalent" if self.equivalent else "inconclusive"

    def to_dict(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["outcome"] = self.outcome
        return d


def compare(metric: str, a_name: str, a_values: list, b_name: str, b_values: list,
            alpha: float = ALPHA, margin: float = 0.05) -> Comparison:
    """Paired comparison of two candidates' per-example values (same example order; None pairs dropped).

    Rates: the exact McNemar test, and Newcombe's paired interval joined with the test's exact interval (so the
    interval excludes 0 exactly when the test rejects). Means: the paired permutation test and the interval
    that inverts it. The same interval decides equivalence (two one-sided tests at alpha/2: it lies within
    +-margin).
    ``significant`` here is unadjusted (``p < alpha``); ``decide`` replaces it with the Holm-adjusted call.
    """
    pairs = [(x, y) for x, y in zip(a_values, b_values, strict=True) if x is not None and y is not None]
    excluded = len(a_values) - len(pairs)
    a = [x for x, _ in pairs]
    b = [y for _, y in pairs]
    n = len(pairs)
    if n == 0:
        return Comparison(metric, a_name, b_name, 0, 0.0, -1.0, 1.0, 1.0, "none", False, interval="none",
                          margin=margin, n_excluded=excluded)
    diff = (sum(a) - sum(b)) / n
    if metric in RATE_METRICS:
        b_only, c_only = _discordant(a, b)
        p = mcnemar_p(a, b)
        # One interval for everything: Newcombe's (the uncertainty of both rates) joined with the exact
        # interval of McNemar's test. It covers at least 95%, and it excludes 0 exactly when the exact test
        # rejects (Newcombe's alone is slightly more liberal than the exact test).
        e_low, e_high = exact_paired_interval(b_only, c_only, n, alpha)
        n_low, n_high = newcombe_paired_interval(a, b, alpha)
        low, high = min(e_low, n_low), max(e_high, n_high)
        eq_low, eq_high = low, high
        test, interval, disc = "mcnemar-exact", "Newcombe score interval joined with McNemar's exact interval", \
            b_only + c_only
    else:
        d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
        p = permutation_p(d)
        low, high = permutation_interval(d, alpha)
        eq_low, eq_high = low, high
        test, interval, disc = "paired-permutation", "permutation-test inversion", None
    equivalent = -margin <= eq_low and eq_high <= margin
    return Comparison(metric, a_name, b_name, n, float(diff), float(low), float(high), float(p), test,
                      significant=p < alpha, interval=interval, eq_low=float(eq_low), eq_high=float(eq_high),
                      margin=margin, equivalent=bool(equivalent), discordant=disc, n_excluded=excluded,
                      a_value=sum(a) / n, b_value=sum(b) / n)


def holm(comparisons: list[Comparison], alpha: float = ALPHA) -> list[Comparison]:
    """The comparisons with Holm-adjusted p-values (statsmodels' ``multipletests``) and significance by them."""
    from dataclasses import replace

    from statsmodels.stats.multitest import multipletests

    if not comparisons:
        return []
    reject, adjusted, _, _ = multipletests([c.p_value for c in comparisons], alpha=alpha, method="holm")
    return [replace(c, p_adjusted=float(q), significant=bool(r)) for c, r, q in
            zip(comparisons, reject, adjusted, strict=True)]


def pairs_needed(p_a: float, p_b: float, discordant: float) -> int | None:
    """Rough number of paired examples McNemar needs to find a difference ``p_a - p_b`` (80% power, 5% level).

    Connor's formula, *assuming* the observed difference and the observed share of discordant examples
    (where the two disagree) are the true ones; None when there is no difference to find. With few
    discordant pairs observed, both are rough, and so is the answer.
    """
    d = abs(p_a - p_b)
    if d == 0 or discordant <= 0:
        return None
    z_a, z_b = Z95, 0.8416
    n = (z_a * math.sqrt(discordant) + z_b * math.sqrt(max(discordant - d * d, 1e-12))) ** 2 / (d * d)
    # The exact test cannot reach 5% with fewer than 6 discordant pairs (2 * 0.5**6 < 0.05), whatever the formula.
    return max(math.ceil(n), math.ceil(MIN_DISCORDANT / discordant))
