"""Bench: ``tunewise.data.validate`` against the OpenAI cookbook's data-preparation recipe.

    .venv/bin/python bench/validate.py [--examples 50000] [--runs 3]

Generates a chat fine-tuning file (receipts to JSON, fixed seed) in a temporary directory, then times:
- baseline: what the cookbook's "data preparation and analysis for chat model fine-tuning" notebook does:
  ``json.loads`` every line into a list, its format checks, then ``encoding.encode(value)`` for every value
  of every message (3 per message + 1 per name + 3) and for the assistant contents, with tiktoken's
  encoding (built offline from the shipped rank files);
- tunewise: ``validate(path)`` (every rule, duplicate and consistency checks, and the same token counts),
  as it chooses to run (worker processes for big files), and in one process.
The per-example token counts must be identical. Prints the median wall-clock and CPU time of each and the
ratios (CPU time is the steadier figure on a shared machine).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

from tunewise.catalog import get_model
from tunewise.data import validate
from tunewise.data.validate import default_workers
from tunewise.tokens import reference_encoding

SYSTEM = "You extract product names and prices from receipts. Return JSON only, shaped as {\"items\": [...], " \
         "\"total\": number}."
WORDS = ("Coffee Bagel Green Tea Latte Muffin Croissant Sandwich Soup Salad Water Juice Espresso Cookie Donut "
         "Brownie Oat Milk Chai Mocha Scone Toast Eggs Bacon Pancakes Waffle Smoothie Wrap Burrito Taco Pizza "
         "Käsekuchen Café Crème Brûlée Mochi 抹茶 ラテ 牛角包 Bánh mì Pão de queijo Tarte Tatin").split()
SEPARATORS = (" - $", " $", ": ", " ... ", " @ ", "\t€", " x1 ")


def make_example(rng: random.Random) -> dict:
    items = [(" ".join(rng.sample(WORDS, rng.randint(1, 3))), round(rng.uniform(0.5, 40), 2))
             for _ in range(rng.randint(3, 25))]
    sep = rng.choice(SEPARATORS)
    lines = [f"{name}{sep}{price:.2f}" for name, price in items]
    total = round(sum(p for _, p in items), 2)
    if rng.random() < 0.5:
        lines.append(rng.choice(("TOTAL", "Total", "Sum", "Amount due")) + f"{sep}{total:.2f}")
    receipt = rng.choice(("\n", ", ", " | ", "\r\n")).join(lines)
    if rng.random() < 0.3:
        receipt = f"Store #{rng.randint(1, 999)} — {rng.choice(('Main St', 'Bahnhofstraße', '駅前'))}\n" + receipt
    answer = json.dumps({"items": [{"name": n, "price": p} for n, p in items], "total": total},
                        ensure_ascii=rng.random() < 0.5)
    return {"messages": [{"role": "system", "content": SYSTEM},
                         {"role": "user", "content": receipt},
                         {"role": "assistant", "content": answer}]}


def write_dataset(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for _ in range(n):
            fh.write(json.dumps(make_example(rng), ensure_ascii=False) + "\n")


def cookbook(path: Path, encoding) -> tuple[list[int], list[int]]:
    """The cookbook notebook's checks and counts, as it writes them."""
    with open(path, encoding="utf-8") as f:
        dataset = [json.loads(line) for line in f]

    format_errors: dict[str, int] = defaultdict(int)
    for ex in dataset:
        if not isinstance(ex, dict):
            format_errors["data_type"] += 1
            continue
        messages = ex.get("messages", None)
        if not messages:
            format_errors["missing_messages_list"] += 1
            continue
        for message in messages:
            if "role" not in message or "content" not in message:
                format_errors["message_missing_key"] += 1
            if any(k not in ("role", "content", "name", "function_call", "weight") for k in message):
                format_errors["message_unrecognized_key"] += 1
            if message.get("role", None) not in ("system", "user", "assistant", "function"):
                format_errors["unrecognized_role"] += 1
            content = message.get("content", None)
            function_call = message.get("function_call", None)
            if (not content and not function_call) or not isinstance(content, str):
                format_errors["missing_content"] += 1
        if not any(message.get("role", None) == "assistant" for message in messages):
            format_errors["example_missing_assistant_message"] += 1

    def num_tokens_from_messages(messages, tokens_per_message=3, tokens_per_name=1):
        num_tokens = 0
        for message in messages:
            num_tokens += tokens_per_message
            for key, value in message.items():
                num_tokens += len(encoding.encode(value))
                if key == "name":
                    num_tokens += tokens_per_name
        num_tokens += 3
        return num_tokens

    def num_assistant_tokens_from_messages(messages):
        num_tokens = 0
        for message in messages:
            if message["role"] == "assistant":
                num_tokens += len(encoding.encode(message["content"]))
        return num_tokens

    n_missing_system = n_missing_user = 0
    n_messages, convo_lens, assistant_message_lens = [], [], []
    for ex in dataset:
        messages = ex["messages"]
        if not any(message["role"] == "system" for message in messages):
            n_missing_system += 1
        if not any(message["role"] == "user" for message in messages):
            n_missing_user += 1
        n_messages.append(len(messages))
        convo_lens.append(num_tokens_from_messages(messages))
        assistant_message_lens.append(num_assistant_tokens_from_messages(messages))
    assert not format_errors, format_errors
    return convo_lens, assistant_message_lens


def timed(fn, runs: int) -> tuple[float, float, object]:
    """Median wall-clock and CPU seconds of ``runs`` calls (CPU time is steadier on a shared machine)."""
    walls, cpus, result = [], [], None
    for _ in range(runs):
        wall, cpu = time.perf_counter(), time.process_time()
        result = fn()
        cpus.append(time.process_time() - cpu)
        walls.append(time.perf_counter() - wall)
    return statistics.median(walls), statistics.median(cpus), result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=None,
                        help="validate's worker processes (default: its own choice, by file size)")
    args = parser.parse_args(argv)

    encoding = reference_encoding("o200k_base")  # gpt-4o-mini's encoding, as tiktoken
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.jsonl"
        write_dataset(path, args.examples)
        size_mb = path.stat().st_size / 1e6
        validate(path)  # warm-up: loads the encoding, as the baseline's was loaded above
        t_base, c_base, (base_totals, base_assistant) = timed(lambda: cookbook(path, encoding), args.runs)
        t_ours, c_ours, report = timed(lambda: validate(path, workers=args.workers), args.runs)
        workers = args.workers or default_workers(path, get_model("gpt-4o-mini"))
        if workers > 1:  # the single-process figure too, and its CPU time (a parent's CPU time omits workers)
            t_one, c_one, report_one = timed(lambda: validate(path, workers=1), args.runs)
            assert report_one.to_dict() == report.to_dict()

    stats = report.stats
    assert stats.example_tokens == base_totals, "total token counts differ from the cookbook's"
    assert stats.n_examples == len(base_totals)
    assert stats.assistant_tokens_per_example.max == max(base_assistant)
    assert abs(stats.assistant_tokens_per_example.mean - statistics.fmean(base_assistant)) < 1e-6
    assert report.ok, [f.code for f in report.errors]

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"{args.examples:,} examples, {size_mb:.1f} MB, {sum(base_totals):,} tokens (o200k_base); "
          f"median of {args.runs} runs; {cores} cores, load average {os.getloadavg()[0]:.1f}")
    print(f"  {'':52} {'wall s':>8} {'CPU s':>8}")
    print(f"  {'cookbook (json.loads + tiktoken encode per value)':52} {t_base:8.2f} {c_base:8.2f}")
    if workers > 1:
        print(f"  {f'tunewise.data.validate, {workers} worker processes':52} {t_ours:8.2f}")
        print(f"  {'tunewise.data.validate, 1 process':52} {t_one:8.2f} {c_one:8.2f}")
        print(f"  ratio: {t_base / t_ours:.1f}x wall ({workers} workers); 1 process: {t_base / t_one:.1f}x wall, "
              f"{c_base / c_one:.1f}x CPU (goal >= 10x); token counts identical")
    else:
        print(f"  {'tunewise.data.validate (all rules + exact counts)':52} {t_ours:8.2f} {c_ours:8.2f}")
        print(f"  ratio: {t_base / t_ours:.1f}x wall, {c_base / c_ours:.1f}x CPU (goal >= 10x); "
              "token counts identical")
    return 0


if __name__ == "__main__":
    sys.exit(main())
