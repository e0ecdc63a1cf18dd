"""Seeded simulations of the verdict: evaluations drawn from known truths, each decided by ``decide``.

``simulate`` draws ``sims`` evaluations of ``n`` examples: every candidate holds the format with probability
``fmt`` and, when it does, gets the content right with probability ``acc`` (so exact match is ``fmt x acc``).
Candidates' outcomes are correlated (with probability ``rho`` an example's outcome is shared by all, as hard
examples are hard for every model). Fine-tuned candidates cost more per call than prompting (same prompt
length, fine-tuned prices), so a "fine-tune" verdict can only come from a claimed quality gain.

Run ``python tests/verdict_sim.py`` for the figures in docs/verdict.md (a few minutes).
"""

from __future__ import annotations

import gc
import random
import sys
import time
from collections import Counter

from tunewise.eval import decide
from tunewise.eval.candidates import Candidate
from tunewise.eval.runner import EvalRun, pricing_for, summarize

PROMPT = Candidate(name="prompt", model="gpt-4o-mini")
TUNED = "ft:gpt-4o-mini-2024-07-18:org::sim"


def _rows(name: str, n: int, fmt: float, acc: float, shared: list[tuple[float, float]], rho: float,
          rng: random.Random, tokens: int) -> list[dict]:
    rows = []
    for i in range(n):
        u_fmt, u_acc = shared[i] if rng.random() < rho else (rng.random(), rng.random())
        ok = u_fmt < fmt
        right = ok and u_acc < acc
        rows.append({"candidate": name, "index": i, "line": i + 1, "example_id": f"ex{i}", "prompt": [],
                     "failed": False, "error": None, "valid_json": int(ok), "schema_adherence": int(ok),
                     "exact_match": int(right), "text_exact_match": 0, "text_f1": None, "field_precision": None,
                     "field_recall": None, "field_f1": None, "latency_s": 0.1, "input_tokens": tokens,
                     "output_tokens": 20, "priced_input_tokens": tokens, "priced_output_tokens": 20})
    return rows


def draw(n: int, prompting: list[tuple[float, float]], tuned: list[tuple[float, float]], rho: float,
         rng: random.Random) -> EvalRun:
    """One evaluation: a (fmt, acc) truth per prompting and per fine-tuned candidate."""
    shared = [(rng.random(), rng.random()) for _ in range(n)]
    cands = [(f"prompt{k}", "gpt-4o-mini", truth) for k, truth in enumerate(prompting)]
    cands += [(f"ft{k}", TUNED, truth) for k, truth in enumerate(tuned)]
    results, summaries = [], {}
    for name, model, (fmt, acc) in cands:
        cand = Candidate(name=name, model=model)
        pricing = pricing_for(cand)
        rows = _rows(name, n, fmt, acc, shared, rho, rng, tokens=900)
        for r in rows:
            r["cost_usd"] = pricing.per_call(900, 20)
        results += rows
        summaries[name] = {"model": model, "role": cand.role, **summarize(rows, pricing)}
    metrics = {"task": "json", "n_examples": n, "schema": True, "candidates": summaries, "notes": []}
    return EvalRun(None, {}, [], results, metrics)


def simulate(n: int, prompting: list[tuple[float, float]], tuned: list[tuple[float, float]], sims: int,
             seed: int = 0, rho: float = 0.5) -> dict:
    """Verdict counts over ``sims`` seeded evaluations, and how often the format comparison was 'equivalent'."""
    # statsmodels' Holm runs a full garbage collection on every call; frozen objects make that cheap.
    gc.freeze()
    rng = random.Random(seed)
    verdicts: Counter[str] = Counter()
    equivalent = 0
    for _ in range(sims):
        d = decide(draw(n, prompting, tuned, rho, rng), calls_per_month=10_000, training_cost=1.0)
        verdicts[d.verdict] += 1
        fmt = [c for c in d.comparisons if c["metric"] == "schema_adherence" and c["b"] == d.chosen.get("prompting")]
        equivalent += bool(fmt and fmt[0]["equivalent"])
    return {"sims": sims, "verdicts": dict(verdicts), "fine_tune": verdicts["fine-tune"] / sims,
            "equivalent_format": equivalent / sims}


NULL = (0.85, 0.8)
CASES = [
    ("null, 1 fine-tuned vs 1 prompting", 100, [NULL], [NULL]),
    ("null, best of 3 fine-tuned", 100, [NULL], [NULL] * 3),
    ("null, best of 5 fine-tuned", 100, [NULL], [NULL] * 5),
    ("null, best of 3 prompts, best of 3 fine-tuned", 100, [NULL] * 3, [NULL] * 3),
    ("power: format 85% -> 97%, n=100", 100, [NULL], [(0.97, 0.8)]),
    ("power: format 85% -> 97%, n=200", 200, [NULL], [(0.97, 0.8)]),
    ("power: best of 3 fine-tuned (one 97%), n=200", 200, [NULL], [(0.97, 0.8), NULL, NULL]),
    ("8-point format gap (90% vs 82%), n=20", 20, [(0.82, 0.8)], [(0.90, 0.8)]),
    ("8-point format gap (90% vs 82%), n=100", 100, [(0.82, 0.8)], [(0.90, 0.8)]),
    ("8-point format gap (90% vs 82%), n=400", 400, [(0.82, 0.8)], [(0.90, 0.8)]),
    ("5-point format gap (the margin itself), n=1000", 1000, [(0.85, 0.8)], [(0.90, 0.8)]),
]


def main(sims: int = 1000) -> None:
    print("| case | n | simulations | 'fine-tune' | format called equivalent | seconds |")
    print("|---|---|---|---|---|---|")
    for label, n, prompting, tuned in CASES:
        start = time.perf_counter()
        r = simulate(n, prompting, tuned, sims, seed=1)
        print(f"| {label} | {n} | {sims} | {100 * r['fine_tune']:.1f}% | {100 * r['equivalent_format']:.1f}% "
              f"| {time.perf_counter() - start:.0f} |", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1000)
