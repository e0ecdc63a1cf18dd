"""Distillation on the receipts task, with no labels used for training: a long prompt that works becomes a
fine-tuned short one.

    .venv/bin/python examples/distill_loop.py [--out out/distill] [--train-limit N] [--limit N] [--epochs N]

Stages, each timed: start the local service -> the teacher (the base model with the guide's long prompt, few-shot
turns and structured outputs) answers the training inputs (their reference answers are dropped) and
``tunewise.eval.distill`` keeps the answers that pass the schema, with the short prompt -> the default model is
fine-tuned on that file through the official SDK -> teacher and student are evaluated on the held-out split (its
reference answers are used only to score) -> decide. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
RECEIPTS = HERE / "receipts"
sys.path.insert(0, str(HERE))

from demo import CALLS_PER_MONTH, GUIDE_MODEL, Stages, _follow, _pct  # noqa: E402

MAX_TOKENS = 160


def run(out: Path, train_limit: int | None, limit: int | None, epochs: int) -> dict:
    from openai import OpenAI

    from tunewise.eval import candidate_from_dict
    from tunewise.eval.candidates import json_schema_format, load_few_shot
    from tunewise.eval.decide import decide
    from tunewise.eval.distill import distill
    from tunewise.eval.report import write_report
    from tunewise.eval.runner import run_eval
    from tunewise.models import DEFAULT_MODEL
    from tunewise.serve.testing import running_server

    out.mkdir(parents=True, exist_ok=True)
    stages = Stages()
    schema = json.loads((RECEIPTS / "schema.json").read_text())
    long_prompt = (RECEIPTS / "system_prompt_long.txt").read_text()
    short_prompt = (RECEIPTS / "system_prompt_short.txt").read_text().strip()

    with running_server(data_dir=out / "server", local_model=DEFAULT_MODEL, startup_timeout=180) as server:
        client = OpenAI(base_url=server.base_url, api_key=server.api_key)
        endpoint = {"base_url": server.base_url, "api_key": server.api_key, "max_tokens": MAX_TOKENS,
                    "price_model": "gpt-4o-mini"}
        teacher = candidate_from_dict({"name": "teacher-long-prompt", "model": DEFAULT_MODEL, **endpoint})
        teacher.system_prompt = long_prompt
        teacher.few_shot = load_few_shot(RECEIPTS / "few_shot.jsonl")
        teacher.response_format = json_schema_format(schema)

        with stages.stage(f"1. distill: the teacher labels the training inputs ({DEFAULT_MODEL}, long prompt)"):
            distilled = distill(RECEIPTS / "train.jsonl", teacher, out / "distilled.jsonl", limit=train_limit,
                                student_prompt=short_prompt, schema=schema, concurrency=8,
                                cache=out / "eval-cache.sqlite", progress=True, student_model=GUIDE_MODEL)
            print(f"   kept {distilled.n_kept} of {distilled.n_inputs}; left out {distilled.left_out or 'none'}")
            if distilled.estimate is not None:
                print(f"   training estimate on {distilled.estimate.model}: {distilled.estimate.billed_tokens:,} "
                      f"tokens, ${distilled.estimate.cost_usd:.4f}")

        with stages.stage(f"2. fine-tune {DEFAULT_MODEL} on the distilled file (short prompt)"):
            with open(out / "distilled.jsonl", "rb") as f:
                file = client.files.create(file=f, purpose="fine-tune")
            job = client.fine_tuning.jobs.create(training_file=file.id, model=GUIDE_MODEL, suffix="distilled",
                                                 hyperparameters={"n_epochs": epochs, "batch_size": 4,
                                                                  "learning_rate_multiplier": 2})
            job = _follow(client, job.id)
            if job.status != "succeeded":
                raise SystemExit(f"fine-tuning {job.status}: {job.error}")
            print(f"   fine-tuned model: {job.fine_tuned_model}")

        with stages.stage("3. evaluate teacher and student on the held-out split"):
            student = candidate_from_dict({"name": "student-short-prompt", "model": job.fine_tuned_model,
                                           **endpoint})
            student.system_prompt = short_prompt
            evaluation = run_eval(RECEIPTS / "test.jsonl", [teacher, student], schema=schema, out_dir=out / "eval",
                                  limit=limit, cache=out / "eval-cache.sqlite", progress=True, concurrency=8)
            for name, m in evaluation.metrics["candidates"].items():
                print(f"   {name:22s} valid JSON {_pct(m.get('valid_json'))}, schema "
                      f"{_pct(m.get('schema_adherence'))}, exact {_pct(m.get('exact_match'))}, field F1 "
                      f"{_pct(m.get('field_f1'))}, input tokens {m['priced_input_tokens']['value']:.0f}, "
                      f"p50 {m['latency_p50_s']:.2f} s")

    with stages.stage("4. decide"):
        decision = decide(out / "eval", calls_per_month=CALLS_PER_MONTH, training_file=out / "distilled.jsonl",
                          model=GUIDE_MODEL, epochs=epochs)
        paths = write_report(decision, out / "report")
        print(f"   {decision.headline}")
        for reason in decision.reasons:
            print(f"   - {reason}")
    summary = {"stages": stages.times, "total_s": sum(stages.times.values()), "distill": distilled.to_dict(),
               "job": job.id, "metrics": evaluation.metrics["candidates"], "verdict": decision.verdict,
               "report": str(paths["html"]), "finished_at": time.time()}
    (out / "distill-loop.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("out/distill"), help="output directory")
    parser.add_argument("--train-limit", type=int, default=0, help="label only the first N training inputs (0: all)")
    parser.add_argument("--limit", type=int, default=20, help="evaluate the first N test examples (0: all 50)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs to fine-tune (default 1)")
    args = parser.parse_args(argv)
    run(args.out, args.train_limit or None, args.limit or None, args.epochs)


if __name__ == "__main__":
    main()
