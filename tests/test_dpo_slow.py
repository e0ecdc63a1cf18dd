"""The proof of DPO on the receipts task (slow: minutes on CPU): supervised first, then DPO on top of it with the
receipts preference files, held-out exact match measured before and after DPO on the same 50 test receipts.

    TUNEWISE_SLOW=1 pytest -q -s tests/test_dpo_slow.py     # prints the figures
"""

from __future__ import annotations

import csv
import json
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tunewise import models
from tunewise.eval.metrics import score_answer
from tunewise.infer.engine import Engine
from tunewise.infer.types import GenerationRequest
from tunewise.train import TrainConfig, train

RECEIPTS = Path(__file__).resolve().parents[1] / "examples" / "receipts"


def exact_match(model_dirs: list[Path], examples: list[dict]) -> list[list[int]]:
    """Per model, greedy answers from the tunewise engine (as the server generates them), scored as tunewise eval
    scores them (the answer's JSON equal to the reference's)."""
    engine = Engine(max_batch_size=16, num_threads=1)
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


def proof(out: Path, n_train: int = 96, n_dpo: int = 48, n_valid: int = 20, sft_epochs: int = 1,
          dpo_epochs: int = 1, batch_size: int = 8) -> dict:
    """Sized for minutes on 2 shared cores: supervised on the first ``n_train`` receipts, DPO on the first ``n_dpo``
    of the same receipts as preference pairs (validated on ``n_valid`` held-out pairs), exact match on all 50 test
    receipts for both models."""
    test = [json.loads(line) for line in (RECEIPTS / "test.jsonl").read_text().splitlines()]
    figures: dict = {"model": models.DEFAULT_MODEL, "n_test": len(test), "n_train": n_train, "n_dpo": n_dpo}
    out.mkdir(parents=True, exist_ok=True)
    for name, source, n in (("train.jsonl", "train.jsonl", n_train), ("train_dpo.jsonl", "train_dpo.jsonl", n_dpo),
                            ("valid_dpo.jsonl", "test_dpo.jsonl", n_valid)):
        lines = (RECEIPTS / source).read_text().splitlines()[:n]
        (out / name).write_text("\n".join(lines) + "\n")
    t0 = time.monotonic()
    sft = train(TrainConfig(training_file=out / "train.jsonl", model=models.DEFAULT_MODEL, n_epochs=sft_epochs,
                            batch_size=batch_size, seed=0, output_dir=out / "sft", num_threads=1))
    figures["sft_train_s"] = round(time.monotonic() - t0, 1)
    t0 = time.monotonic()
    dpo = train(TrainConfig(training_file=out / "train_dpo.jsonl", validation_file=out / "valid_dpo.jsonl",
                            model=models.DEFAULT_MODEL, objective="dpo", init_adapter=sft.model_dir,
                            n_epochs=dpo_epochs, batch_size=batch_size, seed=0, output_dir=out / "dpo",
                            num_threads=1))
    figures["dpo_train_s"] = round(time.monotonic() - t0, 1)
    t0 = time.monotonic()
    sft_em, dpo_em = exact_match([sft.model_dir, dpo.model_dir], test)
    figures["eval_s"] = round(time.monotonic() - t0, 1)
    with open(dpo.metrics_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    last = rows[-1]
    figures.update({
        "sft_exact_match": sum(sft_em) / len(test), "dpo_exact_match": sum(dpo_em) / len(test),
        "sft_right": sum(sft_em), "dpo_right": sum(dpo_em),
        "per_example": {"sft": sft_em, "dpo": dpo_em},
        "fixed_by_dpo": sum(1 for a, b in zip(sft_em, dpo_em, strict=True) if b and not a),
        "broken_by_dpo": sum(1 for a, b in zip(sft_em, dpo_em, strict=True) if a and not b),
        "dpo_steps": dpo.steps, "beta": dpo.hyperparameters["beta"],
        "dpo_first_loss": float(rows[0]["train_loss"]), "dpo_last_loss": float(last["train_loss"]),
        "train_reward_accuracy_last": float(last["train_reward_accuracy"]),
        "valid_reward_accuracy": float(last["valid_reward_accuracy"]),
        "valid_reward_margin": float(last["valid_reward_margin"]),
    })
    return figures


@pytest.mark.slow
def test_dpo_on_top_of_sft_is_measured_on_held_out_receipts(tmp_path):
    from tunewise.eval.metrics import mcnemar_p

    figures = proof(tmp_path)
    print(json.dumps({k: v for k, v in figures.items() if k != "per_example"}, indent=2))
    # DPO learned the preference: on the 50 held-out pairs the preferred answer now out-scores the wrong one
    # relative to the supervised reference, and the training loss fell from log 2.
    assert figures["valid_reward_accuracy"] >= 0.6 and figures["valid_reward_margin"] > 0
    assert figures["dpo_last_loss"] < figures["dpo_first_loss"]
    # Held-out exact match is measured before and after; DPO must not break what supervised training taught
    # beyond chance (an exact McNemar test on the paired answers).
    sft, dpo = figures["per_example"]["sft"], figures["per_example"]["dpo"]
    if sum(dpo) < sum(sft):
        assert mcnemar_p(sft, dpo) > 0.05, figures
