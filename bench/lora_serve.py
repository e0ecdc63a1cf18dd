"""Serving a LoRA adapter on the llama.cpp backend: as an adapter GGUF over the loaded base, against a merged copy.

    .venv/bin/python bench/lora_serve.py [--model smollm2-135m-instruct] [--r 16] [--runs 3] [--threads 1]

A random LoRA adapter (rank ``--r``, all seven linear projections) for ``--model``; the backend's two ways to serve
it, each ``--runs`` times: **merged** (the baseline: PEFT's ``merge_and_unload``, a whole GGUF, a second llama.cpp
model with its own context) and **adapter** (``convert_lora_to_gguf``, ``llama_adapter_lora_init`` over the base
model already loaded, a context of its own). For each: the time to make the GGUF (cold, not cached), the time to
load it and answer a first receipt, and the process's resident memory added, medians, with the ratio to merged.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--r", type=int, default=16)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch
    from peft import LoraConfig, get_peft_model

    torch.set_num_threads(args.threads)
    from tunewise import models
    from tunewise.infer import Engine, GenerationRequest
    from tunewise.infer.llamacpp import adapter_gguf, lora_gguf

    base_dir = models.local_dir(args.model)
    tmp = Path(tempfile.mkdtemp(prefix="lora-bench-"))
    torch.manual_seed(0)
    peft_model = get_peft_model(models.load_model(args.model), LoraConfig(
        r=args.r, lora_alpha=2 * args.r, task_type="CAUSAL_LM",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]))
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(torch.randn(param.shape) * 0.02)
    adapter = tmp / "final"
    peft_model.save_pretrained(adapter)
    models.load_tokenizer(args.model).save_pretrained(adapter)
    (adapter / "tunewise_model.json").write_text(json.dumps({"base_model": args.model, "method": "lora"}))
    del peft_model

    row = json.loads((ROOT / "examples/receipts/test.jsonl").read_text().splitlines()[0])
    messages = [m for m in row["messages"] if m["role"] != "assistant"]
    with Engine(backend="llamacpp", num_threads=args.threads) as engine:
        engine.generate(GenerationRequest(model=args.model, messages=messages, max_tokens=8, temperature=0))
        runner = next(iter(engine._runners.values()))
        results: dict[str, dict[str, list[float]]] = {}
        for way in ("merged", "adapter"):
            for i in range(args.runs):
                t0 = time.perf_counter()
                if way == "merged":
                    path = adapter_gguf(base_dir, adapter, runner.quant, threads=args.threads)
                else:
                    path = lora_gguf(base_dir, adapter, runner.quant)
                t1 = time.perf_counter()
                before = rss_mb()
                m = runner._open(path, base=runner._models[None] if way == "adapter" else None)
                m.decode([(t, p, 0, p == 7) for p, t in enumerate(range(100, 108))])
                t2 = time.perf_counter()
                added = rss_mb() - before
                m.free()
                path.unlink()
                res = results.setdefault(way, {"convert_s": [], "load_s": [], "rss_mb": []})
                res["convert_s"].append(t1 - t0)
                res["load_s"].append(t2 - t1)
                res["rss_mb"].append(added)
                print(f"{way} run {i + 1}: convert {t1 - t0:.2f} s, load+first decode {t2 - t1:.2f} s, "
                      f"+{added:.0f} MB resident", flush=True)
    load = os.getloadavg()[0]
    print(f"\n{args.model}, r={args.r}, {args.runs} runs, {args.threads} thread(s), load average {load:.2f}")
    base = {k: statistics.median(v) for k, v in results["merged"].items()}
    for way in ("merged", "adapter"):
        med = {k: statistics.median(v) for k, v in results[way].items()}
        print(f"{way:8s} convert {med['convert_s']:6.2f} s ({med['convert_s'] / base['convert_s']:.3f}x merged)  "
              f"load {med['load_s']:5.2f} s ({med['load_s'] / base['load_s']:.2f}x)  "
              f"+{med['rss_mb']:5.0f} MB resident ({med['rss_mb'] / max(base['rss_mb'], 1e-9):.2f}x)")


if __name__ == "__main__":
    main()
