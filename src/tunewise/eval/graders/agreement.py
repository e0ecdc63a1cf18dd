"""How far a model judge agrees with a deterministic grader on the same rows.

``agreement(judge, reference)`` takes two lists of :class:`GraderResult` (same rows, same order), counts a row
as passing where the result says ``passed`` (else ``reward >= threshold``), and gives the raw agreement,
Cohen's kappa with its 95% interval (``statsmodels.stats.inter_rater.cohens_kappa``) and, when both rewards
vary, their Pearson correlation (``scipy.stats.pearsonr``). Rows where either grader failed are left out and
counted.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

from tunewise.eval.graders.run import GraderResult


def _passed(result: GraderResult, threshold: float) -> bool:
    return bool(result.passed) if result.passed is not None else result.reward >= threshold


def agreement(judge: list[GraderResult], reference: list[GraderResult], *, threshold: float = 0.5
              ) -> dict[str, Any]:
    """Agreement of ``judge`` with ``reference`` over the rows both graded without error."""
    import numpy as np

    if len(judge) != len(reference):
        raise ValueError(f"{len(judge)} judge results for {len(reference)} reference results")
    rows = [(j, r) for j, r in zip(judge, reference, strict=True) if j.ok and r.ok]
    out: dict[str, Any] = {"judge": judge[0].name if judge else None,
                           "reference": reference[0].name if reference else None,
                           "rows": len(rows), "left_out": len(judge) - len(rows), "agreement": None,
                           "kappa": None, "kappa_ci": None, "pearson": None,
                           "table": None}
    if not rows:
        return out
    table = np.zeros((2, 2), dtype=int)
    for j, r in rows:
        table[int(_passed(r, threshold)), int(_passed(j, threshold))] += 1
    out["table"] = {"both_fail": int(table[0, 0]), "judge_only_pass": int(table[0, 1]),
                    "reference_only_pass": int(table[1, 0]), "both_pass": int(table[1, 1])}
    out["agreement"] = float(np.trace(table) / table.sum())
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        from statsmodels.stats.inter_rater import cohens_kappa

        kappa = cohens_kappa(table)
        if math.isfinite(kappa.kappa):
            out["kappa"] = float(kappa.kappa)
            if math.isfinite(kappa.kappa_low):
                out["kappa_ci"] = [float(kappa.kappa_low), float(kappa.kappa_upp)]
        a = np.array([j.reward for j, _ in rows], dtype=float)
        b = np.array([r.reward for _, r in rows], dtype=float)
        if len(rows) >= 3 and a.std() > 0 and b.std() > 0:
            from scipy.stats import pearsonr

            out["pearson"] = float(pearsonr(a, b).statistic)
    return out
