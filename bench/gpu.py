"""The GPU path, measured: tokens/s, peak GPU memory and MFU of the trainer's own step on Llama models of
SmolLM2-360M's and SmolLM2-1.7B's shapes, LoRA and full fine-tuning, sequence lengths 512 and 2048, packing on and
off.

    python bench/gpu.py                      # every case on the CUDA device (random weights: no model hub needed)
    python bench/gpu.py --shape 1.7b --method full --seq 2048 --packing on
    python bench/gpu.py --smoke              # tiny shapes on the CPU in seconds: proves the script still runs

The models are built in-process from their shapes (``LlamaConfig``) with random weights, so a GPU machine without
network access runs it. Each case trains ``--steps`` optimizer steps (after ``--warmup`` steps not timed) of
``--batch-tokens`` real tokens each, made of examples of random lengths between a quarter of the sequence length and
all of it, whose second half is labelled (as an assistant answer is). The step is the trainer's: the same
micro-batching (``tunewise.train.batching``), the same loss at labelled positions only (``trainer._sums``), bf16
autocast on CUDA, PyTorch SDPA attention, AdamW; ``--gradient-checkpointing`` as ``tunewise train`` has it.

MFU = achieved model FLOPs per second / the device's dense bf16 peak (a table of known devices, or ``--peak-tflops``).
Model FLOPs per token: 6 x the parameters in matrix multiplies for full fine-tuning, 4 x for LoRA (the frozen weights
get no weight gradient), the LM head counted for labelled positions only (the trainer computes no other logits), plus
the causal attention scores, 6 x layers x hidden x attended length (half the row's length on average; for packed
rows each example attends only to itself). Recomputation by gradient checkpointing is not counted (it is not model
FLOPs).

Without a CUDA device (and without ``--smoke``) it exits with status 2 and says so.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

SHAPES = {
    # SmolLM2-360M and SmolLM2-1.7B (their config.json): Llama, tied embeddings, 49,152 tokens of vocabulary.
    "360m": dict(hidden_size=960, intermediate_size=2560, num_hidden_layers=32, num_attention_heads=15,
                 num_key_value_heads=5, vocab_size=49152),
    "1.7b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                 num_key_value_heads=32, vocab_size=49152),
    "smoke": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, vocab_size=512),
}
# Dense bf16 peak (TFLOPS, no sparsity) by a word of the device's name.
PEAK_TFLOPS = {"H200": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "GH200": 989.0, "B200": 2250.0, "A100": 312.0,
               "L40S": 362.0, "L4": 121.0, "A10": 125.0, "RTX 4090": 165.0, "RTX 6000 Ada": 364.0}


def peak_tflops(name: str) -> float | None:
    for key in sorted(PEAK_TFLOPS, key=len, reverse=True):
        if key in name:
            return PEAK_TFLOPS[key]
    return None


def build(shape: str, method: str, device: str, attention: str, checkpointing: bool):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(**SHAPES[shape], tie_word_embeddings=True, max_position_embeddings=8192,
                         rms_norm_eps=1e-5, rope_theta=100000.0, attn_implementation=attention)
    torch.manual_seed(0)
    cuda = device == "cuda"
    # As the trainer loads them: full fine-tuning keeps fp32 master weights under bf16 autocast, LoRA a bf16 base.
    dtype = torch.float32 if (method == "full" or not cuda) else torch.bfloat16
    with torch.device(device):
        model = LlamaForCausalLM(config).to(dtype)
    model.config.use_cache = False
    if method == "lora":
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                 bias="none", task_type="CAUSAL_LM"))
    if checkpointing:
        from tunewise.train.trainer import enable_checkpointing

        enable_checkpointing(model)
    model.train()
    return model, config


def examples(seq: int, batch_tokens: int, vocab: int, seed: int):
    from tunewise.train.render import IGNORE, Rendered

    rng = random.Random(seed)
    out, total = [], 0
    while total < batch_tokens:
        n = rng.randint(max(2, seq // 4), seq)
        ids = [rng.randrange(vocab) for _ in range(n)]
        labels = [IGNORE] * (n // 2) + ids[n // 2:]
        out.append(Rendered(line=len(out) + 1, input_ids=ids, labels=labels))
        total += n
    return out


def model_flops(config, method: str, lengths: list[int], labelled: int) -> float:
    """Model FLOPs of one optimizer step over examples of ``lengths`` (the same whether packed or padded: padding
    is not model work)."""
    d, L = config.hidden_size, config.num_hidden_layers
    kv = d * config.num_key_value_heads // config.num_attention_heads
    per_layer = d * d * 2 + d * kv * 2 + 3 * d * config.intermediate_size  # q, o; k, v; gate, up, down
    factor = 6 if method == "full" else 4
    flops = factor * (L * per_layer * sum(lengths) + d * config.vocab_size * labelled)
    # Causal attention (QK^T and AV, half the square), forward and backward: 6 x L x d x n^2 per example.
    return float(flops + sum(6 * L * d * n * n for n in lengths))


def run_case(shape: str, method: str, seq: int, packing: bool, args, device: str) -> dict:
    import torch

    from tunewise.train.batching import micro_batches, packed_micro_batches
    from tunewise.train.trainer import _autocast, _core_and_head, _sums

    model, config = build(shape, method, device, args.attention, args.gradient_checkpointing)
    core, head = _core_and_head(model)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    autocast = torch.bfloat16 if device == "cuda" else None
    batcher = packed_micro_batches if packing else micro_batches
    budget = max(seq, args.microbatch_tokens)
    sets = [examples(seq, args.batch_tokens, config.vocab_size, seed) for seed in range(args.warmup + args.steps)]
    batches = [(batcher(ex, budget, 0), [len(e.input_ids) for e in ex]) for ex in sets]
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
    tokens = flops = 0.0
    t0 = time.perf_counter()
    for k, (mbs, lengths) in enumerate(batches):
        if k == args.warmup:
            if device == "cuda":
                torch.cuda.synchronize()
            t0, tokens, flops = time.perf_counter(), 0.0, 0.0
        optimizer.zero_grad(set_to_none=True)
        labelled = sum(int((mb.labels[:, 1:] != -100).sum()) for mb in mbs)
        for mb in mbs:
            with _autocast(device, autocast):
                loss, _, _ = _sums(model, core, head, mb, device)
            (loss / labelled).backward()
        optimizer.step()
        tokens += sum(mb.real_tokens for mb in mbs)
        flops += model_flops(config, method, lengths, labelled)
    if device == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    row = {"shape": shape, "method": method, "seq": seq, "packing": packing, "steps": args.steps,
           "tokens_per_s": tokens / seconds, "seconds": seconds, "model_tflops_per_s": flops / seconds / 1e12,
           "loss": float(loss.item()) / max(1, labelled), "peak_memory_gib": None, "mfu": None}
    if device == "cuda":
        row["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
        if args.peak:
            row["mfu"] = flops / seconds / (args.peak * 1e12)
    del model, optimizer
    if device == "cuda":
        torch.cuda.empty_cache()
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, 2 steps per case (seconds)")
    ap.add_argument("--shape", choices=["360m", "1.7b", "all"], default="all")
    ap.add_argument("--method", choices=["lora", "full", "all"], default="all")
    ap.add_argument("--seq", type=int, nargs="*", default=[512, 2048], help="sequence lengths (default 512 2048)")
    ap.add_argument("--packing", choices=["on", "off", "both"], default="both")
    ap.add_argument("--steps", type=int, default=10, help="timed optimizer steps per case (default 10)")
    ap.add_argument("--warmup", type=int, default=2, help="untimed steps first (default 2)")
    ap.add_argument("--batch-tokens", type=int, default=16384, help="real tokens per optimizer step (default 16384)")
    ap.add_argument("--microbatch-tokens", type=int, default=16384,
                    help="unpacked: rows x padded length per forward pass (default 16384)")
    ap.add_argument("--attention", default="sdpa", help="attn_implementation (default sdpa; flash_attention_2 "
                                                         "where the flash-attn package is installed)")
    ap.add_argument("--gradient-checkpointing", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None, help="the device's dense bf16 peak, for MFU "
                                                                     "(default: from a table of known devices)")
    ap.add_argument("--json", type=Path, default=None, help="also write the rows to this JSON file")
    args = ap.parse_args(argv)

    import torch

    if args.smoke:
        device, shapes, methods = "cpu", ["smoke"], ["lora", "full"]
        args.seq, args.steps, args.warmup = [64], 2, 1
        args.batch_tokens = args.microbatch_tokens = 256
        torch.set_num_threads(1)
        args.peak = None
        name = "CPU (smoke)"
    else:
        if not torch.cuda.is_available():
            print("bench/gpu.py: no CUDA device is visible to PyTorch (torch.cuda.is_available() is False), so "
                  "there is nothing to measure here. Run it on a machine with an NVIDIA GPU and a CUDA build of "
                  "PyTorch, or run `python bench/gpu.py --smoke` to check the script on the CPU.", file=sys.stderr)
            return 2
        device = "cuda"
        name = torch.cuda.get_device_name()
        args.peak = args.peak_tflops or peak_tflops(name)
        shapes = ["360m", "1.7b"] if args.shape == "all" else [args.shape]
        methods = ["lora", "full"] if args.method == "all" else [args.method]
    packings = {"on": [True], "off": [False], "both": [False, True]}[args.packing]
    print(f"device: {name}; bf16 peak: {f'{args.peak:g} TFLOPS' if args.peak else 'unknown (no MFU)'}; "
          f"attention {args.attention}; gradient checkpointing {'on' if args.gradient_checkpointing else 'off'}")
    print(f"{'shape':>6} {'method':>6} {'seq':>5} {'packing':>7} {'tokens/s':>10} {'TFLOPS':>7} {'MFU':>6} "
          f"{'peak GiB':>8}")
    rows = []
    for shape in shapes:
        for method in methods:
            for seq in args.seq:
                for packing in packings:
                    try:
                        row = run_case(shape, method, seq, packing, args, device)
                    except torch.OutOfMemoryError:
                        row = {"shape": shape, "method": method, "seq": seq, "packing": packing, "error": "OOM"}
                        torch.cuda.empty_cache()
                        print(f"{shape:>6} {method:>6} {seq:>5} {'on' if packing else 'off':>7} out of memory")
                        rows.append(row)
                        continue
                    rows.append(row)
                    mfu = f"{row['mfu']:.1%}" if row["mfu"] is not None else "-"
                    mem = f"{row['peak_memory_gib']:.1f}" if row["peak_memory_gib"] is not None else "-"
                    print(f"{shape:>6} {method:>6} {seq:>5} {'on' if packing else 'off':>7} "
                          f"{row['tokens_per_s']:>10,.0f} {row['model_tflops_per_s']:>7.2f} {mfu:>6} {mem:>8}")
    if args.json:
        args.json.write_text(json.dumps({"device": name, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
