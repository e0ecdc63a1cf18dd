"""Bench: how fast each grader scores one answer, and what the judge cache saves.

    .venv/bin/python bench/graders.py [--rows 200] [--judge-rows 20] [--local-model tunewise-tiny]

Times, on receipt-like answers (a JSON object of items and a total, fixed seed):
- string_check and every text_similarity metric but cosine: rows per second, in this process;
- a python grader: milliseconds per call (one fresh interpreter per call, as the grader runs);
- a score_model judge (and its agreement with the python grader's exact-total check) through the official SDK against a real ``tunewise serve`` on 127.0.0.1 (the local
  model named by --local-model answers for gpt-4o-mini): milliseconds per call, first with an empty cache and
  then again from the cache; the ratio is the cache's speed-up;
- a pairwise judge on the right answer against one with a wrong total, asked in both orders: wins, ties and
  its position bias.
Prints medians; the machine is shared, so read the figures as orders of magnitude.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

from tunewise.eval.graders import (
    GradingContext,
    ModelJudge,
    agreement,
    compare,
    grade,
    pairwise_grader,
    parse_grader,
    position_bias,
)
from tunewise.eval.graders.similarity import METRICS

ITEMS = ["coffee", "bagel", "tea", "muffin", "juice", "salad", "soup", "cookie", "water", "sandwich"]


def rows(n: int, seed: int = 7) -> list[tuple[str, dict]]:
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        items = [{"name": rng.choice(ITEMS), "price": round(rng.uniform(1, 9), 2)} for _ in range(rng.randint(1, 4))]
        truth = {"items": items, "total": round(sum(i["price"] for i in items), 2)}
        answer = json.loads(json.dumps(truth))
        if rng.random() < 0.4:
            answer["total"] = round(answer["total"] + rng.choice([-1, 1]), 2)
        if rng.random() < 0.2:
            answer["items"] = answer["items"][:-1] or answer["items"]
        out.append((json.dumps(answer), {"label": json.dumps(truth), "total": truth["total"]}))
    return out


def per_second(grader: dict, data: list[tuple[str, dict]]) -> float:
    g = parse_grader(grader)
    grade(g, *data[0])  # imports and scorer set-up, outside the timing
    start = time.perf_counter()
    for sample, item in data:
        grade(g, sample, item)
    return len(data) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200, help="rows for the in-process graders")
    parser.add_argument("--judge-rows", type=int, default=20, help="rows for the python grader and the judge")
    parser.add_argument("--pairs", type=int, default=12, help="pairs for the pairwise judge (at most --judge-rows)")
    parser.add_argument("--local-model", default="tunewise-tiny", help="the server's model behind gpt-4o-mini")
    args = parser.parse_args()
    data = rows(args.rows)

    print(f"in-process graders, {args.rows} rows (rows/s):")
    check = {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
             "reference": "{{ item.label }}", "operation": "eq"}
    print(f"  {'string_check eq':<28} {per_second(check, data):>10,.0f}")
    for metric in METRICS:
        if metric == "cosine":
            continue
        grader = {"type": "text_similarity", "name": metric, "input": "{{ sample.output_text }}",
                  "reference": "{{ item.label }}", "evaluation_metric": metric}
        print(f"  {'text_similarity ' + metric:<28} {per_second(grader, data):>10,.0f}")

    few = data[: args.judge_rows]
    python = parse_grader({"type": "python", "name": "total", "source":
                           "def grade(sample, item):\n    return float(sample['output_json']['total'] == item['total'])\n"})
    times, exact = [], []
    for sample, item in few:
        start = time.perf_counter()
        result = grade(python, sample, item)
        times.append(time.perf_counter() - start)
        assert result.ok, result.errors
        exact.append(result)
    print(f"\npython grader: {statistics.median(times) * 1000:,.0f} ms per call (median of {len(few)})")

    from tunewise.serve.testing import running_server

    judge_grader = parse_grader({
        "type": "score_model", "name": "judge", "model": "gpt-4o-mini",
        "input": [{"role": "system", "content": "Score 1 if the answer's total equals the reference total, else 0."},
                  {"role": "user", "content": "Reference: {{ item.label }}\nAnswer: {{ sample.output_text }}"}]})
    with tempfile.TemporaryDirectory(prefix="tunewise-bench-graders-") as tmp, \
            running_server(Path(tmp) / "server", local_model=args.local_model, worker=False) as server, \
            ModelJudge(server.base_url, server.api_key, cache=Path(tmp) / "cache.sqlite") as judge:
        ctx = GradingContext(judge=judge)
        judged = [grade(judge_grader, *few[0], ctx)]  # load the model once, outside the timing
        cold, warm = [], []
        for sample, item in few[1:]:
            start = time.perf_counter()
            first = grade(judge_grader, sample, item, ctx)
            cold.append(time.perf_counter() - start)
            start = time.perf_counter()
            again = grade(judge_grader, sample, item, ctx)
            warm.append(time.perf_counter() - start)
            assert again.details["cached"] and again.reward == first.reward
            judged.append(first)
        # Pairwise: the right answer against the same answer with its total off by one, in both orders.
        pair_judge = pairwise_grader("gpt-4o-mini", "Which answer's total matches the reference total?")
        pairs = []
        for _, item in few[: args.pairs]:
            truth = json.loads(item["label"])
            wrong = {**truth, "total": round(truth["total"] + 1, 2)}
            pairs.append((json.dumps(truth), json.dumps(wrong), f"Reference total: {truth['total']}"))
        start = time.perf_counter()
        verdicts = [compare(pair_judge, a, b, context=ctx, request=q) for a, b, q in pairs]
        pair_s = (time.perf_counter() - start) / max(1, len(pairs))
    c, w = statistics.median(cold), statistics.median(warm)
    print(f"score_model judge ({args.local_model} behind gpt-4o-mini), median of {len(cold)}:")
    print(f"  asked:       {c * 1000:>9,.1f} ms per call")
    print(f"  from cache:  {w * 1000:>9,.2f} ms per call")
    print(f"  ratio asked/cached: {c / w:,.0f}x")
    agree = agreement(judged, exact)
    kappa = "undefined" if agree["kappa"] is None else f"{agree['kappa']:.2f}"
    print(f"  agreement with the python grader (exact total): {agree['agreement']:.2f} over {agree['rows']} rows "
          f"({agree['left_out']} left out for judge errors), Cohen's kappa {kappa}")
    bias = position_bias(verdicts)
    print(f"pairwise judge, {bias['pairs']} pairs (right answer as A), {pair_s:.1f} s per pair (two calls):")
    print(f"  A wins {bias['wins_a']}, B wins {bias['wins_b']}, ties {bias['ties']} "
          f"(ties favouring the first slot: {bias['ties_favouring_first']})")
    print(f"  first-slot rate {bias['first_slot_rate']:.2f} (0.50 unbiased), binomial p = {bias['first_slot_p_value']:.2g}")


if __name__ == "__main__":
    main()
