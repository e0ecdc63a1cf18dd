"""Reinforcement fine-tuning (GRPO) on the receipts task, measured: a weak supervised start, then GRPO with a grader
that rewards exactly right, schema-valid answers; held-out exact match before and after.

    python examples/receipts/rft.py                 # the measured run (minutes on 2 CPU cores), figures as JSON
    python examples/receipts/rft.py --out DIR ...   # keep the runs somewhere else; --help for the sizes

The supervised start is deliberately weak (a LoRA adapter on ``SFT_EXAMPLES`` receipts for a few steps): it knows
the answer's format but gets many receipts wrong, which leaves GRPO something to raise. The RFT data is the next
receipts of ``train.jsonl`` as prompts (system and user turn) with the right answer in ``reference_answer``; the
grader is a ``multi`` of two ``python`` graders, the answer's JSON equal to the reference's (``exact``: what
held-out exact match counts) and the answer's shape (``valid``: ``{"items": [{"name": str, "price": number}]}``):

    reward = 0.75 * exact + 0.25 * valid

``--exact string`` makes ``exact`` a ``string_check`` of the answer's text against the reference's instead
(stricter: the same JSON spaced differently fails it).

Held-out exact match is scored on ``test.jsonl`` as ``tunewise eval`` scores it (the answer's JSON equal to the
reference's), greedy, by the serving engine.
"""

from __future__ import annotations

import argparse
import csv
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
SFT_EXAMPLES = 16

VALID_SOURCE = '''
import json

def grade(sample, item):
    try:
        answer = json.loads(sample["output_text"])
    except ValueError:
        return 0.0
    items = answer.get("items") if isinstance(answer, dict) else None
    if set(answer) != {"items"} or not isinstance(items, list):
        return 0.0
    ok = all(isinstance(i, dict) and set(i) == {"name", "price"} and isinstance(i["name"], str)
             and isinstance(i["price"], (int, float)) and not isinstance(i["price"], bool) for i in items)
    return 1.0 if ok else 0.0
'''

EXACT_SOURCE = '''
import json

def grade(sample, item):
    try:
        return 1.0 if json.loads(sample["output_text"]) == json.loads(item["reference_answer"]) else 0.0
    except ValueError:
        return 0.0
'''

LOAD_SOURCE = '''
import json

def load(sample, item):
    """The answer's and the reference's JSON, or None where the answer is not JSON."""
    try:
        return json.loads(sample["output_text"]), json.loads(item["reference_answer"])
    except ValueError:
        return None
'''

ITEMS_SOURCE = LOAD_SOURCE + '''
from collections import Counter

def grade(sample, item):
    """Partial credit: F1 of the answer's (name, price) items against the reference's, as multisets."""
    docs = load(sample, item)
    if docs is None:
        return 0.0
    def pairs(doc):
        rows = doc.get("items") if isinstance(doc, dict) else None
        if not isinstance(rows, list):
            return Counter()
        return Counter((str(r.get("name")), repr(r.get("price"))) for r in rows if isinstance(r, dict))
    got, want = pairs(docs[0]), pairs(docs[1])
    hit = sum((got & want).values())
    if not hit:
        return 0.0
    precision, recall = hit / sum(got.values()), hit / sum(want.values())
    return 2 * precision * recall / (precision + recall)
'''

COUNT_SOURCE = LOAD_SOURCE + '''

def grade(sample, item):
    """1 when the answer lists as many items as the reference: no line missed, no total or tax line added."""
    docs = load(sample, item)
    rows = docs[0].get("items") if docs is not None and isinstance(docs[0], dict) else None
    return 1.0 if isinstance(rows, list) and len(rows) == len(docs[1]["items"]) else 0.0
'''

EXACT = {
    "json": {"type": "python", "name": "exact", "source": EXACT_SOURCE},
    "string": {"type": "string_check", "name": "exact", "operation": "eq", "input": "{{ sample.output_text }}",
               "reference": "{{ item.reference_answer }}"},
}


# Each reward: its formula over the graders' scores, and the graders it needs beside ``exact`` and ``valid``.
REWARDS = {
    "exact": ("0.75 * exact + 0.25 * valid", {}),
    "partial": ("0.5 * exact + 0.3 * items + 0.2 * valid", {"items": ITEMS_SOURCE}),
    "count": ("0.5 * exact + 0.2 * items + 0.2 * count + 0.1 * valid", {"items": ITEMS_SOURCE, "count": COUNT_SOURCE}),
}


def grader(exact: str = "json", reward: str = "exact") -> dict:
    """The run's grader. ``reward="partial"`` adds per-item credit (``items``: F1 of the answer's name/price
    pairs), so that a group whose answers are all inexact still ranks them: 0.5 exact + 0.3 items + 0.2 valid.
    ``reward="count"`` also credits listing as many items as the reference (``count``: neither a line missed nor
    a total or tax line added), as per-item F1 alone pays for listing more: 0.5 exact + 0.2 items + 0.2 count +
    0.1 valid."""
    formula, extra = REWARDS[reward]
    graders = {"exact": EXACT[exact], "valid": {"type": "python", "name": "valid", "source": VALID_SOURCE}}
    graders.update({name: {"type": "python", "name": name, "source": source} for name, source in extra.items()})
    return {"type": "multi", "name": "receipt", "calculate_output": formula, "graders": graders}


def rft_rows(lines: list[str]) -> list[dict]:
    """Chat examples as reinforcement prompts: the conversation without its answer, the answer for the grader."""
    rows = []
    for line in lines:
        messages = json.loads(line)["messages"]
        rows.append({"messages": messages[:-1], "reference_answer": messages[-1]["content"]})
    return rows


def exact_match(model_dirs: list[Path], examples: list[dict], threads: int = 1) -> list[list[int]]:
    """Per model, greedy answers from the tunewise engine, scored as ``tunewise eval`` scores them."""
    from tunewise.eval.metrics import score_answer
    from tunewise.infer.engine import Engine
    from tunewise.infer.types import GenerationRequest

    engine = Engine(max_batch_size=16, num_threads=threads, backend="torch")
    try:
        def one(job: tuple[Path, dict]) -> int:
            model_dir, ex = job
            reference = ex["messages"][-1]["content"]
            result = engine.generate(GenerationRequest(model=str(model_dir), messages=ex["messages"][:-1],
                                                       max_tokens=len(reference) // 2 + 40, temperature=0))
            return score_answer(result.choices[0].text, reference)["exact_match"]

        with ThreadPoolExecutor(32) as pool:
            scores = list(pool.map(one, [(d, ex) for d in model_dirs for ex in examples]))
        return [scores[k * len(examples):(k + 1) * len(examples)] for k in range(len(model_dirs))]
    finally:
        engine.close()


def proof(out: Path, n_rft: int = 48, n_valid: int = 8, n_test: int = 50, sft_steps: int = 8, batch_size: int = 4,
          compute_multiplier: float = 1.0, learning_rate_multiplier: float = 1.0, max_completion_tokens: int = 96,
          seed: int = 0, exact: str = "json", epochs: int = 1, reward: str = "exact",
          temperature: float = 1.0, threads: int = 1) -> dict:
    from tunewise import models
    from tunewise.train import TrainConfig, train

    out.mkdir(parents=True, exist_ok=True)
    lines = (HERE / "train.jsonl").read_text().splitlines()
    test = [json.loads(line) for line in (HERE / "test.jsonl").read_text().splitlines()][:n_test]
    (out / "sft.jsonl").write_text("\n".join(lines[:SFT_EXAMPLES]) + "\n")
    rft = rft_rows(lines[SFT_EXAMPLES:SFT_EXAMPLES + n_rft])
    valid = rft_rows(lines[-n_valid:])  # the last receipts of train.jsonl: neither in SFT nor in RFT
    (out / "rft.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rft))
    (out / "valid.jsonl").write_text("".join(json.dumps(r) + "\n" for r in valid))
    rubric = grader(exact, reward)
    (out / "grader.json").write_text(json.dumps(rubric, indent=2))
    figures: dict = {"model": models.DEFAULT_MODEL, "n_sft": SFT_EXAMPLES, "n_rft": n_rft, "n_valid": n_valid,
                     "n_test": len(test), "exact": exact, "reward": reward}
    t0 = time.monotonic()
    sft = train(TrainConfig(training_file=out / "sft.jsonl", model=models.DEFAULT_MODEL, n_epochs=sft_steps * 4 //
                            SFT_EXAMPLES or 1, batch_size=4, seed=seed, output_dir=out / "sft", num_threads=threads))
    figures["sft_s"] = round(time.monotonic() - t0, 1)
    t0 = time.monotonic()
    result = train(TrainConfig(training_file=out / "rft.jsonl", validation_file=out / "valid.jsonl",
                               model=models.DEFAULT_MODEL, init_adapter=sft.model_dir, objective="grpo",
                               grader=rubric, n_epochs=epochs, batch_size=batch_size,
                               compute_multiplier=compute_multiplier,
                               eval_interval=max(1, n_rft * epochs // batch_size // 2),
                               learning_rate_multiplier=learning_rate_multiplier,
                               max_completion_tokens=max_completion_tokens, temperature=temperature, seed=seed,
                               output_dir=out / "rft",
                               num_threads=threads))
    figures["rft_s"] = round(time.monotonic() - t0, 1)
    figures["rft_steps"] = result.steps
    figures["hyperparameters"] = result.hyperparameters
    with open(result.metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    figures["reward_per_step"] = [round(float(r["train_reward_mean"]), 3) for r in rows]
    figures["exact_per_step"] = [round(float(r["train_score_exact"]), 3) for r in rows]
    if rows and "train_score_items" in rows[0]:
        figures["items_per_step"] = [round(float(r["train_score_items"]), 3) for r in rows]
    if rows and "train_score_count" in rows[0]:
        figures["count_per_step"] = [round(float(r["train_score_count"]), 3) for r in rows]
    figures["kl_per_step"] = [round(float(r["train_kl"]), 4) for r in rows]
    figures["valid_reward"] = {r["step"]: round(float(r["valid_reward_mean"]), 3) for r in rows
                               if r["valid_reward_mean"]}
    t0 = time.monotonic()
    before, after = exact_match([sft.model_dir, result.model_dir], test, threads)
    figures["eval_s"] = round(time.monotonic() - t0, 1)
    figures["exact_match_before"] = f"{sum(before)}/{len(test)}"
    figures["exact_match_after"] = f"{sum(after)}/{len(test)}"
    figures["fixed"] = sum(1 for b, a in zip(before, after, strict=True) if a and not b)
    figures["broken"] = sum(1 for b, a in zip(before, after, strict=True) if b and not a)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/receipts-rft"))
    parser.add_argument("--n-rft", type=int, default=48)
    parser.add_argument("--n-test", type=int, default=50)
    parser.add_argument("--sft-steps", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--compute-multiplier", type=float, default=1.0)
    parser.add_argument("--learning-rate-multiplier", type=float, default=1.0)
    parser.add_argument("--max-completion-tokens", type=int, default=96)
    parser.add_argument("--exact", choices=sorted(EXACT), default="json")
    parser.add_argument("--reward", choices=tuple(REWARDS), default="exact",
                        help="partial: per-item credit beside exact and valid (0.5 exact + 0.3 items + 0.2 valid); "
                        "count: also the item count's (0.5 exact + 0.2 items + 0.2 count + 0.1 valid)")
    parser.add_argument("--temperature", type=float, default=1.0,
                        help="sampling temperature of the training completions (TRL's default, 1.0)")
    parser.add_argument("--epochs", type=int, default=1,
                        help="GRPO epochs over the prompts (2 or more: each epoch's mean reward is over the same prompts)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for training, sampling and scoring (1: leaves a core to the rest)")
    args = parser.parse_args()
    t0 = time.monotonic()
    figures = proof(args.out, n_rft=args.n_rft, n_test=args.n_test, sft_steps=args.sft_steps,
                    batch_size=args.batch_size, compute_multiplier=args.compute_multiplier,
                    learning_rate_multiplier=args.learning_rate_multiplier,
                    max_completion_tokens=args.max_completion_tokens, exact=args.exact, epochs=args.epochs, reward=args.reward,
                    temperature=args.temperature, threads=args.threads)
    figures["wall_s"] = round(time.monotonic() - t0, 1)
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
