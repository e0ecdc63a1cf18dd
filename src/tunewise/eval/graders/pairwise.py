"""Pairwise model judgements done right: each pair asked in both orders, disagreement reported as a tie.

A pairwise judge is a ``label_model`` grader whose labels are ``first`` and ``second`` and whose templates
read the two answers as ``{{ first.output_text }}`` and ``{{ second.output_text }}`` (and the row as
``{{ item.* }}``). ``compare`` asks it with A first, then with B first: the same answer chosen both times wins;
otherwise the verdict is a tie, because the judge followed the position rather than the answers.
``position_bias`` measures how often that happens and which slot it favours.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tunewise.eval.graders import run as R
from tunewise.eval.graders import templates
from tunewise.eval.graders.spec import Grader, GraderError, _fail, _messages

LABELS = ("first", "second")
NAMESPACES = ("item", "sample", "first", "second")

DEFAULT_SYSTEM = ("You compare two answers to the same request. Judge them only by these criteria: {criteria} "
                  "The order in which the answers are shown means nothing.")
DEFAULT_USER = ("Request:\n{{ item.request }}\n\nFirst answer:\n{{ first.output_text }}\n\n"
                "Second answer:\n{{ second.output_text }}\n\nWhich answer is better, first or second?")


def pairwise_grader(model: str, criteria: str, *, name: str = "pairwise", system: str | None = None,
                    user: str | None = None) -> Grader:
    """The fixed pairwise rubric for ``criteria``; ``{{ item.request }}`` is the request both answers answer."""
    spec = {"type": "label_model", "name": name, "model": model,
            "input": [{"role": "system", "content": (system or DEFAULT_SYSTEM).format(criteria=criteria.strip())},
                      {"role": "user", "content": user or DEFAULT_USER}],
            "labels": list(LABELS), "passing_labels": ["first"]}
    return parse_pairwise(spec)


def parse_pairwise(spec: dict[str, Any], where: str = "grader") -> Grader:
    """Check a pairwise judge: a label_model grader with labels first and second."""
    if not isinstance(spec, dict) or spec.get("type") != "label_model":
        raise _fail(f"{where}.type", "a pairwise judge is a label_model grader")
    for key in ("name", "model", "input", "labels", "passing_labels"):
        if key not in spec:
            raise _fail(f"{where}.{key}", "is missing")
    if sorted(spec["labels"]) != sorted(LABELS):
        raise _fail(f"{where}.labels", "a pairwise judge's labels are exactly first and second")
    _messages(spec, where, NAMESPACES)
    return Grader(spec=spec)


@dataclass
class PairwiseResult:
    winner: str | None
    """``a``, ``b``, ``tie`` (the two orders disagreed), or None when a judgement failed."""
    labels: tuple[str | None, str | None]
    """The judge's label with A shown first, then with B shown first."""
    consistent: bool | None
    results: tuple[R.GraderResult, R.GraderResult]
    errors: list[str] = field(default_factory=list)


def _ask(grader: Grader, item: dict, first: Any, second: Any, context: R.GradingContext) -> R.GraderResult:
    one, two = templates.Sample.coerce(first), templates.Sample.coerce(second)
    result = R.GraderResult(name=grader.name, type=grader.type, reward=0.0)
    R._model(grader, item, one, result, context, extra={"first": one, "second": two})
    return result


def compare(grader: Grader, a: Any, b: Any, item: dict | None = None, context: R.GradingContext | None = None,
            *, request: str | None = None) -> PairwiseResult:
    """Judge answer ``a`` against ``b`` in both orders (``request`` fills ``{{ item.request }}``)."""
    if grader.type != "label_model" or sorted(grader.spec["labels"]) != sorted(LABELS):
        raise GraderError("compare() needs a pairwise judge (pairwise_grader(...)).", code="invalid_grader")
    context = context or R.GradingContext()
    row = dict(item or {})
    if request is not None:
        row["request"] = request
    forward = _ask(grader, row, a, b, context)
    backward = _ask(grader, row, b, a, context)
    labels = (forward.details.get("label"), backward.details.get("label"))
    errors = [r.details.get("error") or r.errors.get("model_grader_server_error_details") or "judge failed"
              for r in (forward, backward) if not r.ok]
    if errors or None in labels:
        return PairwiseResult(None, labels, None, (forward, backward), errors)
    pick_forward = "a" if labels[0] == "first" else "b"
    pick_backward = "b" if labels[1] == "first" else "a"
    consistent = pick_forward == pick_backward
    return PairwiseResult(pick_forward if consistent else "tie", labels, consistent, (forward, backward))


def position_bias(results: list[PairwiseResult]) -> dict[str, Any]:
    """How far the judge follows the slot: over the pairs judged in both orders, the share of judgements that
    chose the first slot (0.5 is unbiased) with a two-sided binomial test of 0.5 (``scipy.stats.binomtest``),
    the ties, and which slot the inconsistent pairs favoured."""
    judged = [r for r in results if r.consistent is not None]
    n = len(judged)
    firsts = sum(label == "first" for r in judged for label in r.labels)
    inconsistent = [r for r in judged if not r.consistent]
    p_value = None
    if n:
        from scipy.stats import binomtest

        p_value = float(binomtest(firsts, 2 * n, 0.5).pvalue)
    return {
        "pairs": len(results),
        "judged": n,
        "failed": len(results) - n,
        "wins_a": sum(r.winner == "a" for r in judged),
        "wins_b": sum(r.winner == "b" for r in judged),
        "ties": len(inconsistent),
        "consistency": (n - len(inconsistent)) / n if n else None,
        "first_slot_rate": firsts / (2 * n) if n else None,
        "first_slot_p_value": p_value,
        "ties_favouring_first": sum(r.labels == ("first", "first") for r in inconsistent),
        "ties_favouring_second": sum(r.labels == ("second", "second") for r in inconsistent),
    }
