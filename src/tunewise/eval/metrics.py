"""Metrics: per-answer scores, per-candidate summaries with 95% intervals, and paired tests between candidates.

Per answer (``score_answer``): valid JSON, JSON-Schema adherence, exact match of the parsed answer (canonical
compare: key order ignored, numbers compared as numbers, ``true`` never equal to ``1``), field-level precision,
recall and F1 (the answer flattened to path=value leaves; list items paired with the reference's items
order-insensitively, best overlap first), and for free text a normalised exact match and token F1.

Per candidate (``summarize``): rates get Wilson intervals, means a percentile bootstrap, latencies p50/p95.
Between two candidates on the same examples (``compare``): McNemar's exact test for rates and a paired
bootstrap for means, so a verdict rests on a significant difference, not on two point estimates.
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
RATE_METRICS = ("valid_json", "schema_adherence", "exact_match", "text_exact_match")
MEAN_METRICS = ("field_precision", "field_recall", "field_f1", "text_f1")


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
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, x.size, size=(resamples, x.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return Estimate(float(x.mean()), float(low), float(high), int(x.size), "bootstrap")


def percentile(values: list[float], q: float) -> float | None:
    x = [v for v in values if v is not None]
    return float(np.percentile(x, q)) if x else None


# ---------------------------------------------------------------- paired tests

def mcnemar_p(a: list[int], b: list[int]) -> float:
    """Two-sided exact McNemar test (binomial on the discordant pairs) for paired 0/1 outcomes."""
    b_only = sum(1 for x, y in zip(a, b, strict=True) if x and not y)
    c_only = sum(1 for x, y in zip(a, b, strict=True) if y and not x)
    n = b_only + c_only
    if n == 0:
        return 1.0
    k = min(b_only, c_only)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2 ** n
    return min(1.0, 2 * tail)


def paired_bootstrap(a: list[float], b: list[float], resamples: int = BOOTSTRAP_RESAMPLES,
                     seed: int = 0) -> tuple[float, float, float, float]:
    """Mean of a - b over paired examples, its 95% interval, and a two-sided bootstrap p-value."""
    d = np.asarray(a, dtype=float) - np.asarray(b, dtype=float)
    if d.size == 0:
        return 0.0, 0.0, 0.0, 1.0
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, d.size, size=(resamples, d.size))].mean(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    # Share of resampled means on the other side of zero, doubled: 0 when every resample agrees in sign.
    if d.mean() == 0 and not d.any():
        p = 1.0
    else:
        p = min(1.0, 2 * min(float((means <= 0).mean()), float((means >= 0).mean())))
    return float(d.mean()), float(low), float(high), p


@dataclass(frozen=True)
class Comparison:
    """Candidate ``a`` against ``b`` on one metric, over the examples both answered."""

    metric: str
    a: str
    b: str
    n: int
    diff: float
    """Mean of a - b (a rate difference for 0/1 metrics)."""
    low: float
    high: float
    p_value: float
    test: str
    significant: bool

    @property
    def outcome(self) -> str:
        """``better`` / ``worse`` (a against b, significant at 5%) or ``same`` (not significant)."""
        if not self.significant:
            return "same"
        return "better" if self.diff > 0 else "worse"

    def to_dict(self) -> dict[str, Any]:
        d = self.__dict__.copy()
        d["outcome"] = self.outcome
        return d


def compare(metric: str, a_name: str, a_values: list, b_name: str, b_values: list,
            alpha: float = ALPHA) -> Comparison:
    """Paired comparison of two candidates' per-example values (same example order; None pairs dropped)."""
    pairs = [(x, y) for x, y in zip(a_values, b_values, strict=True) if x is not None and y is not None]
    a = [x for x, _ in pairs]
    b = [y for _, y in pairs]
    diff, low, high, p_boot = paired_bootstrap(a, b)
    if metric in RATE_METRICS:
        p, test = mcnemar_p(a, b), "mcnemar-exact"
    else:
        p, test = p_boot, "paired-bootstrap"
    return Comparison(metric, a_name, b_name, len(pairs), diff, low, high, p, test,
                      significant=bool(pairs) and p < alpha)


def pairs_needed(p_a: float, p_b: float, discordant: float) -> int | None:
    """Rough number of paired examples McNemar needs to find a difference ``p_a - p_b`` (80% power, 5% level).

    ``discordant`` is the observed share of examples where the two disagree. None when there is no
    difference to find.
    """
    d = abs(p_a - p_b)
    if d == 0 or discordant <= 0:
        return None
    z_a, z_b = Z95, 0.8416
    n = (z_a * math.sqrt(discordant) + z_b * math.sqrt(max(discordant - d * d, 1e-12))) ** 2 / (d * d)
    # The exact test cannot reach 5% with fewer than 6 discordant pairs (2 * 0.5**6 < 0.05), whatever the formula.
    return max(math.ceil(n), math.ceil(MIN_DISCORDANT / discordant))
