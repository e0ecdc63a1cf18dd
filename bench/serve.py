"""Chat completion throughput: batched engine vs plain one-at-a-time ``generate``.

    .venv/bin/python bench/serve.py [--model smollm2-135m-instruct] [--max-tokens 64] [--runs 3]

Eight different chat prompts, greedy, the same ``max_tokens`` everywhere. Output tokens per second (tokens
generated, end-of-turn included, over wall time) for:

1. baseline: Hugging Face ``model.generate`` on one prompt at a time;
2. ``tunewise.infer.Engine`` with one request at a time (concurrency 1);
3. the engine with the 8 requests sent at once from 8 threads (concurrency 8): they share forward passes;
4. when ``tunewise.serve`` is importable: the same 8 concurrent requests through the real HTTP server on 127.0.0.1
   with the official ``openai`` SDK.

Each figure is the median of ``--runs`` runs; the ratio to the baseline is printed (goal: >= 3x at concurrency 8).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time

PROMPTS = [
    "Write a short poem about the sea.",
    "Explain what a hash table is in two sentences.",
    "Give me three tips for learning to cook.",
    "What is the capital of France, and why is it famous?",
    "Describe a cat to someone who has never seen one.",
    "List some uses of a paperclip.",
    "Why is the sky blue?",
    "Tell me a story about a robot who learns to paint.",
]


def messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


def bench_hf(model_name: str, max_tokens: int) -> tuple[float, int]:
    """One prompt at a time through HF generate (greedy, KV cache): (seconds, tokens generated)."""
    import torch

    from tunewise import models

    tokenizer = models.load_tokenizer(model_name)
    model = models.load_model(model_name).eval()
    total, start = 0, time.perf_counter()
    for prompt in PROMPTS:
        ids = tokenizer.apply_chat_template(messages(prompt), add_generation_prompt=True, return_tensors="pt",
                                            return_dict=True)
        with torch.inference_mode():
            out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id)
        total += out.shape[1] - ids["input_ids"].shape[1]
    return time.perf_counter() - start, total


def bench_engine(engine, model_name: str, max_tokens: int, concurrency: int) -> tuple[float, int]:
    from tunewise.infer import GenerationRequest

    results: list[int] = [0] * len(PROMPTS)

    def one(i: int) -> None:
        res = engine.generate(GenerationRequest(model=model_name, messages=messages(PROMPTS[i]),
                                                max_tokens=max_tokens, temperature=0))
        results[i] = res.completion_tokens

    start = time.perf_counter()
    if concurrency == 1:
        for i in range(len(PROMPTS)):
            one(i)
    else:
        threads = [threading.Thread(target=one, args=(i,)) for i in range(len(PROMPTS))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return time.perf_counter() - start, sum(results)


def bench_http(model_name: str, max_tokens: int, runs: int, threads: int | None) -> list[float] | None:
    """The same 8 concurrent requests through the real server and the openai SDK, or None without a server."""
    try:
        import tunewise.serve.app as app_module  # noqa: F401
    except ImportError:
        return None
    return _run_http(model_name, max_tokens, runs, threads)


def _run_http(model_name: str, max_tokens: int, runs: int, threads: int | None) -> list[float] | None:
    import os
    import socket
    import subprocess
    import tempfile

    import openai

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    home = tempfile.mkdtemp(prefix="tunewise-bench-")
    env = dict(os.environ, TUNEWISE_HOME=home, PYTHONUNBUFFERED="1")
    if threads:  # the server process gets the same torch thread count as the in-process measurements
        env["OMP_NUM_THREADS"] = str(threads)
    proc = subprocess.Popen([sys.executable, "-m", "tunewise", "serve", "--host", "127.0.0.1", "--port", str(port),
                             "--data-dir", home], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    try:
        key = None
        deadline = time.time() + 120
        while time.time() < deadline and key is None:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                return None
            if "OPENAI_API_KEY=" in line:
                key = line.split("OPENAI_API_KEY=", 1)[1].split()[0].strip("'\"")
        if key is None:
            return None
        threading.Thread(target=proc.stdout.read, daemon=True).start()  # keep the pipe drained
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=key, timeout=600)
        rates = []
        for _ in range(runs + 1):  # the first run loads the model
            counts = [0] * len(PROMPTS)

            def one(i: int, counts=counts) -> None:
                r = client.chat.completions.create(model=model_name, messages=messages(PROMPTS[i]),
                                                   max_tokens=max_tokens, temperature=0)
                counts[i] = r.usage.completion_tokens

            start = time.perf_counter()
            threads = [threading.Thread(target=one, args=(i,)) for i in range(len(PROMPTS))]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            rates.append(sum(counts) / (time.perf_counter() - start))
        return rates[1:]
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:  # still finishing generations nobody waits for
            proc.kill()
            proc.wait()


def main() -> None:
    from tunewise import models
    from tunewise.infer import Engine

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=models.DEFAULT_MODEL)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP server measurement")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for every measurement (default: torch's own choice)")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    rates: dict[str, list[float]] = {"hf generate, one at a time": [], "engine, concurrency 1": [],
                                     "engine, concurrency 8": []}
    with Engine(max_batch_size=8) as engine:
        bench_engine(engine, args.model, 4, 1)  # load the model outside the timings
        bench_hf(args.model, 4)
        for run in range(args.runs):
            for label, fn in [
                ("hf generate, one at a time", lambda: bench_hf(args.model, args.max_tokens)),
                ("engine, concurrency 1", lambda: bench_engine(engine, args.model, args.max_tokens, 1)),
                ("engine, concurrency 8", lambda: bench_engine(engine, args.model, args.max_tokens, 8)),
            ]:
                seconds, tokens = fn()
                rates[label].append(tokens / seconds)
                print(f"run {run + 1} {label:<28} {tokens:5d} tokens {seconds:7.2f} s {tokens / seconds:7.1f} tok/s",
                      flush=True)
        stats = engine.stats()
    if not args.no_http:
        http = bench_http(args.model, args.max_tokens, args.runs, args.threads)
        if http is not None:
            rates["http server (openai SDK), concurrency 8"] = http
        else:
            print("(tunewise.serve not available: HTTP measurement skipped)")

    base = statistics.median(rates["hf generate, one at a time"])
    import torch

    print(f"\nmodel {args.model}, {len(PROMPTS)} prompts, max_tokens {args.max_tokens}, "
          f"{torch.get_num_threads()} torch threads, medians of {args.runs} runs")
    for label, values in rates.items():
        median = statistics.median(values)
        print(f"{label:<44} {median:8.1f} tok/s  {median / base:5.2f}x baseline")
    print(f"engine: {stats.forward_passes} forward passes, largest batch {stats.max_batch_size_seen}")


if __name__ == "__main__":
    main()
