"""tunewise's trainer against TRL's SFTTrainer: same model, data, LoRA config, batch size, epochs, learning rate.

    .venv/bin/python bench/train.py                    # 3 runs of each row, medians; then the receipts timing
    .venv/bin/python bench/train.py --runs 1 --examples 10 --batch-size 5 --receipts-steps 2   # a quick look
    # Loss equivalence without data-order effects: every step sees the whole set.
    .venv/bin/python bench/train.py --runs 1 --examples 10 --batch-size 10 --epochs 4 --skip-receipts \
        --kinds "tunewise float32,trl float32"

Each run trains in a fresh subprocess (so peak RSS is that trainer's own), alternating the rows so that load from
other processes on the machine hits them alike. Rows: tunewise float32 (its CPU default), tunewise bf16
(``dtype="bfloat16"``: bf16 autocast over float32 weights), TRL float32 (its default) and TRL ``bf16=True`` (its
precision option, autocast too). All use the default model (SmolLM2-135M-Instruct) on CPU, LoRA r=16, alpha=32,
dropout 0 on every linear layer, initialised from the same seed right before the same ``get_peft_model``, AdamW,
linear schedule with 3% warm-up, gradient clipping at 1.0, and the same number of threads. TRL is given tunewise's
own tokens and labels (``--trl-data tokens``: the same labelled tokens, the assistant content and ``<|im_end|>``;
``conversational`` lets TRL render the chat, which also labels the newline after ``<|im_end|>``) with
``completion_only_loss=True`` and gradient checkpointing off (TRL's default is on; off is the faster setting and
matches tunewise). Throughput is the examples' tokens (prompt and answer, no padding) divided by the training
loop's wall time, the same count for both. Eval loss is the mean token loss on the held-out answers of
``examples/receipts/test.jsonl``, computed in float32 for every final model by the same function. The ratios are
printed same-dtype (float32/float32, bf16/bf16), bf16 tunewise against float32 TRL (said so), and default
against default, with the 1% rule's check (tunewise bf16 against float32 on the same run).

Then it times fine-tuning the default model on the receipts example (200 examples, 3 epochs, auto batch size) in
each of ``--receipts-dtypes``: it trains a few steps and extrapolates by tokens, and says so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RECEIPTS = REPO / "examples" / "receipts"
LORA = {"r": 16, "alpha": 32, "dropout": 0.0}


def receipts_files() -> tuple[Path, Path]:
    """The receipts example's train and test files, generated into a temporary directory if not committed."""
    train, test = RECEIPTS / "train.jsonl", RECEIPTS / "test.jsonl"
    if not train.is_file() or not test.is_file():
        out = Path(tempfile.mkdtemp(prefix="receipts-"))
        subprocess.run([sys.executable, str(RECEIPTS / "generate.py"), "--out", str(out)], check=True)
        train, test = out / "train.jsonl", out / "test.jsonl"
    return train, test


def subset(path: Path, n: int, out: Path) -> Path:
    lines = [x for x in path.read_text().splitlines() if x.strip()][:n]
    out.write_text("\n".join(lines) + "\n")
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def rendered(path: Path, param: str = "training_file"):
    from tunewise import models
    from tunewise.train import Renderer, render_file

    tokenizer = models.load_tokenizer(models.DEFAULT_MODEL)
    renderer = Renderer(tokenizer)
    return tokenizer, render_file(path, renderer, 8192, param, models.DEFAULT_MODEL)


def eval_loss(model, test: Path) -> float:
    from tunewise.train import evaluate

    tokenizer, examples = rendered(test, "validation_file")
    loss, _ = evaluate(model, examples, max_tokens=1024, pad_id=tokenizer.pad_token_id, device="cpu")
    return loss


# ------------------------------------------------------------------------------------------------- workers


def worker_tunewise(args) -> dict:
    import torch
    from peft import PeftModel

    from tunewise import models
    from tunewise.train import TrainConfig, train

    out = Path(tempfile.mkdtemp(prefix="bench-tunewise-"))
    events = []
    result = train(TrainConfig(
        training_file=args.train, model=models.DEFAULT_MODEL, method="lora", n_epochs=args.epochs,
        batch_size=args.batch_size, seed=args.seed, output_dir=out, lora_r=LORA["r"], lora_alpha=LORA["alpha"],
        lora_dropout=LORA["dropout"], num_threads=args.threads, dtype=args.dtype, packing=args.packing,
        save_state_every_steps=10**6, keep_checkpoints=1), on_event=events.append)
    loop_s = [e for e in events if e.type == "metrics"][-1].data["elapsed_s"]  # the step loop, before saving
    rss = peak_rss_mb()
    model = PeftModel.from_pretrained(models.load_model(models.DEFAULT_MODEL, dtype=torch.float32),
                                      result.model_dir)
    dtype = json.loads((out / "config.json").read_text())["dtype"]
    return {"tokens": result.trained_tokens, "seconds": loop_s, "peak_rss_mb": rss,
            "eval_loss": eval_loss(model, args.test), "padding_waste": result.padding_waste, "dtype": dtype}


def worker_trl(args) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig, get_peft_model
    from trl import SFTConfig, SFTTrainer

    from tunewise import models

    torch.set_num_threads(args.threads)
    tokenizer, examples = rendered(args.train)
    if args.trl_data == "tokens":
        # tunewise's own tokens and labels (the assistant content and <|im_end|>): both train on the same tokens.
        rows = [{"input_ids": e.input_ids, "completion_mask": [int(x != -100) for x in e.labels]} for e in examples]
    else:  # TRL's own rendering of the conversation: it also labels the newline after <|im_end|>
        rows = []
        for line in args.train.read_text().splitlines():
            if line.strip():
                messages = [{"role": m["role"], "content": m["content"]} for m in json.loads(line)["messages"]]
                rows.append({"prompt": messages[:-1], "completion": messages[-1:]})
    # The LoRA weights start as tunewise's do: the same seed right before the same load and get_peft_model.
    torch.manual_seed(args.seed)
    model = models.load_model(models.DEFAULT_MODEL, dtype=torch.float32, device="cpu")
    model = get_peft_model(model, LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=LORA["dropout"],
                                             target_modules="all-linear", bias="none", task_type="CAUSAL_LM"))
    out = tempfile.mkdtemp(prefix="bench-trl-")
    learning_rate = models.REGISTRY[models.DEFAULT_MODEL].learning_rate
    # A large batch goes through TRL as micro-batches with gradient accumulation (transformers normalises the loss
    # by the tokens of the whole accumulated batch, as tunewise does), so memory stays comparable.
    micro = args.micro_batch if args.micro_batch and args.batch_size % args.micro_batch == 0 else args.batch_size
    config = SFTConfig(
        output_dir=out, per_device_train_batch_size=micro, gradient_accumulation_steps=args.batch_size // micro,
        num_train_epochs=args.epochs, learning_rate=learning_rate, lr_scheduler_type="linear", warmup_steps=0.03,
        weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch", seed=args.seed, completion_only_loss=True,
        packing=False, gradient_checkpointing=False, use_cpu=True, bf16=args.dtype == "bfloat16",
        report_to="none", save_strategy="no", logging_steps=1, disable_tqdm=True, max_length=None,
        dataset_num_proc=None)
    trainer = SFTTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer)
    start = time.monotonic()
    trainer.train()
    seconds = time.monotonic() - start
    rss = peak_rss_mb()
    tokens = sum(len(e.input_ids) for e in examples) * args.epochs
    return {"tokens": tokens, "seconds": seconds, "peak_rss_mb": rss, "eval_loss": eval_loss(trainer.model, args.test),
            "dtype": args.dtype}


def worker_receipts(args) -> dict:
    """Train the receipts example with auto hyperparameters for a few steps; extrapolate the whole run by tokens."""
    from tunewise import models
    from tunewise.errors import Cancelled
    from tunewise.train import TrainConfig, train

    _, examples = rendered(args.train)
    events = []
    config = TrainConfig(training_file=args.train, model=models.DEFAULT_MODEL, n_epochs=3, seed=args.seed,
                         output_dir=tempfile.mkdtemp(prefix="bench-receipts-"), num_threads=args.threads,
                         dtype=args.dtype, packing=args.packing, save_state_every_steps=10**6)
    try:
        train(config, on_event=events.append,
              stop=lambda: sum(e.type == "metrics" for e in events) >= args.receipts_steps)
    except Cancelled:
        pass
    last = [e for e in events if e.type == "metrics"][-1].data
    total_tokens = sum(len(e.input_ids) for e in examples) * 3
    dtype = json.loads((Path(config.output_dir) / "config.json").read_text())["dtype"]
    return {"steps_measured": last["step"], "total_steps": last["total_steps"], "tokens": last["trained_tokens"],
            "dtype": dtype,
            "seconds": last["elapsed_s"], "total_tokens": total_tokens,
            "extrapolated_s": last["elapsed_s"] / last["trained_tokens"] * total_tokens}


# ------------------------------------------------------------------------------------------------- driver


def run_worker(kind: str, args, train: Path, dtype: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", kind, "--train", str(train), "--test", str(args.test),
           "--epochs", str(args.epochs), "--batch-size", str(args.batch_size), "--threads", str(args.threads),
           "--seed", str(args.seed), "--dtype", dtype, "--receipts-steps", str(args.receipts_steps),
           "--micro-batch", str(args.micro_batch), "--trl-data", args.trl_data]
    if args.packing:
        cmd.append("--packing")
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "TOKENIZERS_PARALLELISM": "false"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        sys.exit(f"{kind} worker failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# What each row trains: (worker, dtype asked for). tunewise's default (``auto``) is float32 on CPU; "tunewise bf16"
# asks for bfloat16 (bf16 autocast over float32 weights). TRL's default on CPU is float32, and bf16=True is its
# precision option (autocast over float32 weights as well).
KINDS = {"tunewise float32": ("tunewise", "float32"), "tunewise bf16": ("tunewise", "bfloat16"),
         "trl float32": ("trl", "float32"), "trl bf16": ("trl", "bfloat16")}


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=16, help="training examples for the comparison")
    parser.add_argument("--eval-examples", type=int, default=16, help="held-out examples for the eval loss")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads for both trainers (1: the fastest on a shared, busy 2-core machine)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"comma-separated rows to run, of: {', '.join(KINDS)}")
    parser.add_argument("--packing", action="store_true", help="tunewise with packing=True")
    parser.add_argument("--trl-data", choices=["tokens", "conversational"], default="tokens",
                        help="tokens: TRL trains on tunewise's tokens and labels (the same labelled tokens); "
                        "conversational: TRL renders the chat itself (it also labels the newline after <|im_end|>)")
    parser.add_argument("--receipts-steps", type=int, default=6, help="steps measured for the receipts timing")
    parser.add_argument("--receipts-dtypes", default="float32,bfloat16",
                        help="dtypes the receipts timing is run with (comma-separated)")
    parser.add_argument("--skip-receipts", action="store_true")
    parser.add_argument("--micro-batch", type=int, default=0,
                        help="TRL's per-device batch, the rest by gradient accumulation (0: the whole batch)")
    parser.add_argument("--worker", choices=["tunewise", "trl", "receipts"], help=argparse.SUPPRESS)
    parser.add_argument("--train", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--test", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        result = {"tunewise": worker_tunewise, "trl": worker_trl, "receipts": worker_receipts}[args.worker](args)
        print(json.dumps(result))
        return

    full_train, full_test = receipts_files()
    tmp = Path(tempfile.mkdtemp(prefix="bench-train-"))
    train = subset(full_train, args.examples, tmp / "train.jsonl")
    args.test = subset(full_test, args.eval_examples, tmp / "test.jsonl")
    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    whole = args.batch_size >= args.examples
    print(f"SmolLM2-135M-Instruct, LoRA r={LORA['r']}, {args.examples} receipts examples x {args.epochs} epoch(s), "
          f"batch {args.batch_size}{' (the whole set: data order cannot matter)' if whole else ''}, "
          f"{args.threads} thread(s), TRL on {args.trl_data}{', tunewise packing' if args.packing else ''}; "
          f"{args.runs} run(s) each, alternated, medians; load average {load_average()}", flush=True)
    results: dict[str, list[dict]] = {k: [] for k in kinds}
    for run in range(args.runs):
        order = kinds if run % 2 == 0 else kinds[::-1]
        for kind in order:
            worker, dtype = KINDS[kind]
            r = run_worker(worker, args, train, dtype)
            r["tokens_per_s"] = r["tokens"] / r["seconds"]
            results[kind].append(r)
            print(f"  run {run + 1} {kind:16s} ({r['dtype']:8s}) {r['tokens_per_s']:7.1f} tokens/s  "
                  f"peak RSS {r['peak_rss_mb']:6.0f} MB  eval loss {r['eval_loss']:.4f}  load {load_average()}",
                  flush=True)

    def med(kind, key):
        return statistics.median(r[key] for r in results[kind])

    print(f"\n{'trainer':18s} {'dtype':9s} {'tokens/s':>9s} {'peak RSS MB':>12s} {'eval loss':>10s}")
    for kind in kinds:
        print(f"{kind:18s} {results[kind][0]['dtype']:9s} {med(kind, 'tokens_per_s'):9.1f} "
              f"{med(kind, 'peak_rss_mb'):12.0f} {med(kind, 'eval_loss'):10.4f}")

    def ratio(a, b, label):
        if a not in results or b not in results:
            return
        speed = med(a, "tokens_per_s") / med(b, "tokens_per_s")
        memory = med(a, "peak_rss_mb") / med(b, "peak_rss_mb")
        loss = med(a, "eval_loss") / med(b, "eval_loss") - 1
        print(f"{label:44s} throughput {speed:5.2f}x  peak RSS {memory:.2f}x  eval loss {loss:+.1%}")

    print("\nratios (goal: throughput >= 3x TRL, peak RSS <= 1.0x, eval loss within 2% where data order cannot "
          "decide it)")
    ratio("tunewise float32", "trl float32", "same dtype, float32: tunewise / TRL")
    ratio("tunewise bf16", "trl bf16", "same dtype, bf16: tunewise / TRL bf16=True")
    ratio("tunewise bf16", "trl float32", "tunewise bf16 / TRL float32 (NOT same dtype)")
    ratio("tunewise float32", "trl float32", "default vs default (both float32 on CPU)")
    if "tunewise float32" in results and "tunewise bf16" in results:
        loss = med("tunewise bf16", "eval_loss") / med("tunewise float32", "eval_loss") - 1
        speed = med("tunewise bf16", "tokens_per_s") / med("tunewise float32", "tokens_per_s")
        print(f"tunewise bf16 / float32: throughput {speed:.2f}x, eval loss {loss:+.2%}; the 1% rule (bfloat16 may be "
              f"the CPU default only within 1%): {'holds' if abs(loss) <= 0.01 else 'does not hold'}")
    if "tunewise float32" in results:
        print(f"padding waste (tunewise): {med('tunewise float32', 'padding_waste'):.1%}")

    if not args.skip_receipts:
        for dtype in [d.strip() for d in args.receipts_dtypes.split(",") if d.strip()]:
            r = run_worker("receipts", args, full_train, dtype)
            print(f"\nreceipts example ({r['dtype']}), 200 examples x 3 epochs (batch size auto = 1, "
                  f"{r['total_steps']} steps): EXTRAPOLATED from {r['steps_measured']} measured steps "
                  f"({r['tokens']} tokens in {r['seconds']:.0f} s, {r['tokens'] / r['seconds']:.1f} tokens/s): "
                  f"about {r['extrapolated_s'] / 3:.0f} s an epoch, {r['extrapolated_s'] / 60:.0f} min for "
                  f"{r['total_tokens']} tokens; load average {load_average()}", flush=True)


if __name__ == "__main__":
    main()
