"""Chat completion throughput: batched engine vs plain one-at-a-time ``generate``.

    .venv/bin/python bench/serve.py [--model smollm2-135m-instruct] [--max-tokens 64] [--runs 3]
                                    [--upload-mb 200] [--no-upload] [--no-chat] [--no-http]

Eight different chat prompts, greedy, the same ``max_tokens`` everywhere. Output tokens per second (tokens
generated, end-of-turn included, over wall time) for:

1. baseline: Hugging Face ``model.generate`` on one prompt at a time;
2. ``tunewise.infer.Engine`` with one request at a time (concurrency 1);
3. the engine with the 8 requests sent at once from 8 threads (concurrency 8): they share forward passes;
4. when ``tunewise.serve`` is importable: the same 8 concurrent requests through the real HTTP server on 127.0.0.1
   with the official ``openai`` SDK.

Each figure is the median of ``--runs`` runs; the ratio to the baseline is printed (goal: >= 3x at concurrency 8).

Then (unless ``--no-upload``) the upload of a large training file: a valid chat fine-tuning JSONL file of about
``--upload-mb`` MB (receipt-extraction examples, every line distinct) sent to a real ``tunewise serve`` with the SDK's
``client.files.create(..., purpose="fine-tune")``, which streams it to disk and runs the validator on it. Wall time
and MB/s (median of ``--runs`` uploads, the file deleted after each), and the peak RSS of the server process, of its
worker child and of any other children (the validator's process pool), sampled every 50 ms during the upload. One
upload with ``purpose="batch"`` (stored without validation), done first on the fresh server, separates the streaming
cost from the validator's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

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


# -- upload of a large training file --------------------------------------------------------------------------
UPLOAD_SYSTEM = "You extract product names and prices from receipts. Return JSON only."
UPLOAD_ITEMS = ["Coffee", "Bagel", "Green Tea", "Muffin", "Latte", "Croissant", "Orange Juice", "Scone", "Water",
                "Cookie", "Tomato Soup", "Caesar Salad", "Espresso", "Cappuccino", "Brownie", "Sandwich", "Chai",
                "Pancakes", "Omelette", "Smoothie", "Granola", "Toast", "Hot Chocolate", "Lemonade"]
UPLOAD_STORES = ["Corner Cafe", "Bean There", "Daily Grind", "Sunrise Bakery", "Main St Deli", "The Tea House"]
BLOCK_LINES = 4000  # distinct examples in the block that is repeated (each copy with new receipt numbers)
COUNTER = "@@N@@"  # where each line's receipt number goes


def _upload_block() -> list[tuple[str, str]]:
    """``BLOCK_LINES`` varied receipt examples, each split around its receipt number: (before, after)."""
    import random

    rng = random.Random(4)
    block = []
    for _ in range(BLOCK_LINES):
        bought = [(rng.choice(UPLOAD_ITEMS), round(rng.uniform(0.5, 15.0), 2)) for _ in range(rng.randint(1, 5))]
        store = rng.choice(UPLOAD_STORES)
        lines = "\n".join(f"{qty}x {name} ${price:.2f}" for (name, price), qty in
                          zip(bought, (rng.randint(1, 3) for _ in bought), strict=True))
        total = sum(price for _, price in bought)
        receipt = f"{store}\nReceipt #{COUNTER}\n{lines}\nTOTAL ${total:.2f}"
        answer = json.dumps({"store": store, "items": [{"name": n, "price": p} for n, p in bought]})
        line = json.dumps({"messages": [{"role": "system", "content": UPLOAD_SYSTEM},
                                        {"role": "user", "content": receipt},
                                        {"role": "assistant", "content": answer}]})
        before, after = line.split(COUNTER)
        block.append((before, after + "\n"))
    return block


def write_training_file(path: Path, megabytes: float) -> tuple[int, int]:
    """A valid chat fine-tuning JSONL file of about ``megabytes`` MB (10^6 bytes): (bytes, examples)."""
    target = int(megabytes * 1_000_000)
    block = _upload_block()
    size = n = 0
    with open(path, "w", encoding="utf-8", buffering=1 << 22) as f:
        while size < target or n < 10:
            part = []
            for before, after in block:
                line = f"{before}{n:09d}{after}"
                part.append(line)
                size += len(line.encode())
                n += 1
                if size >= target and n >= 10:
                    break
            f.write("".join(part))
    return path.stat().st_size, n


class RssSampler:
    """Peak RSS of a process and of its children (recursively), sampled every ``interval`` seconds in a thread.

    Children are told apart by their command line: the job worker (``--worker-only``) and the rest (the
    validator's process pool, multiprocessing helpers)."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        import psutil

        self.proc = psutil.Process(pid)
        self.interval = interval
        self.peak = {"server": 0, "worker": 0, "other children": 0, "all": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._kinds: dict[int, str] = {}

    def _kind(self, child) -> str:
        if child.pid not in self._kinds:
            try:
                cmd = " ".join(child.cmdline())
            except Exception:  # gone, or a zombie
                return "other children"
            self._kinds[child.pid] = "worker" if "--worker-only" in cmd else "other children"
        return self._kinds[child.pid]

    def sample(self) -> None:
        import psutil

        try:
            server = self.proc.memory_info().rss
            children = self.proc.children(recursive=True)
        except psutil.Error:
            return
        sums = {"worker": 0, "other children": 0}
        for child in children:
            try:
                rss = child.memory_info().rss
            except psutil.Error:
                continue
            kind = self._kind(child)
            sums[kind] += rss
        self.peak["server"] = max(self.peak["server"], server)
        for kind, rss in sums.items():
            self.peak[kind] = max(self.peak[kind], rss)
        self.peak["all"] = max(self.peak["all"], server + sum(sums.values()))

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


def bench_upload(megabytes: float, runs: int) -> list[dict]:
    """Upload a ~``megabytes`` MB training file to a real server ``runs`` times (fine-tune) and once as batch."""
    from tunewise.serve.testing import running_server

    with tempfile.TemporaryDirectory(prefix="tunewise-bench-upload-") as tmp:
        path = Path(tmp) / "train.jsonl"
        start = time.perf_counter()
        size, examples = write_training_file(path, megabytes)
        print(f"wrote {path.name}: {size / 1e6:.1f} MB, {examples} examples in {time.perf_counter() - start:.1f} s",
              flush=True)
        env = {}
        if size > 500 * 2**20:  # over the default upload limit (512 MiB)
            env["TUNEWISE_MAX_UPLOAD_BYTES"] = str(size + 2**20)
        with running_server(data_dir=Path(tmp) / "server", env=env) as server:
            client = server.client(timeout=1800)
            idle = RssSampler(server.pid)
            idle.sample()
            print(f"idle server: RSS {idle.peak['server'] / 2**20:.0f} MB, worker {idle.peak['worker'] / 2**20:.0f} MB",
                  flush=True)
            rows = [{"label": "idle (before any upload)", "bytes": 0, "seconds": [], **idle.peak}]
            # batch first: the validator's imports and the memory it leaves behind would count against it
            for label, purpose, n in [("batch (stream only)", "batch", 1),
                                      ("fine-tune (stream + validate)", "fine-tune", runs)]:
                seconds: list[float] = []
                peak = {"server": 0, "worker": 0, "other children": 0, "all": 0}
                for run in range(n):
                    with RssSampler(server.pid) as sampler, open(path, "rb") as fh:
                        start = time.perf_counter()
                        uploaded = client.files.create(file=fh, purpose=purpose)
                        seconds.append(time.perf_counter() - start)
                    assert uploaded.bytes == size, (uploaded.bytes, size)
                    client.files.delete(uploaded.id)
                    peak = {k: max(v, sampler.peak[k]) for k, v in peak.items()}
                    print(f"upload {label} run {run + 1}: {seconds[-1]:7.2f} s {size / 1e6 / seconds[-1]:7.1f} MB/s, "
                          f"peak RSS server {sampler.peak['server'] / 2**20:.0f} MB, "
                          f"worker {sampler.peak['worker'] / 2**20:.0f} MB, "
                          f"other children {sampler.peak['other children'] / 2**20:.0f} MB", flush=True)
                rows.append({"label": label, "bytes": size, "seconds": seconds, **peak})
    return rows


def print_upload_table(rows: list[dict], runs: int) -> None:
    print(f"\nupload of a chat fine-tuning JSONL file through the openai SDK (median of {runs} fine-tune uploads, "
          "1 batch upload; peak RSS over all of them)")
    print(f"{'':<32} {'MB':>7} {'seconds':>8} {'MB/s':>7} {'peak RSS MB: server':>20} {'worker':>7} "
          f"{'other children':>15} {'all':>6}")
    for row in rows:
        mib = {k: row[k] / 2**20 for k in ("server", "worker", "other children", "all")}
        if row["seconds"]:
            seconds = statistics.median(row["seconds"])
            timing = f"{row['bytes'] / 1e6:7.1f} {seconds:8.2f} {row['bytes'] / 1e6 / seconds:7.1f}"
        else:
            timing = f"{'':>7} {'':>8} {'':>7}"
        print(f"{row['label']:<32} {timing} {mib['server']:20.0f} {mib['worker']:7.0f} "
              f"{mib['other children']:15.0f} {mib['all']:6.0f}")


def main() -> None:
    from tunewise import models

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=models.DEFAULT_MODEL)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP server measurement")
    parser.add_argument("--no-chat", action="store_true", help="skip the chat throughput measurements")
    parser.add_argument("--upload-mb", type=float, default=200,
                        help="size of the training file for the upload measurement, in MB (default 200)")
    parser.add_argument("--no-upload", action="store_true", help="skip the upload measurement")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch intra-op threads for every measurement (default: torch's own choice)")
    args = parser.parse_args()
    if not args.no_chat:
        bench_chat(args)
    if not args.no_upload:
        print_upload_table(bench_upload(args.upload_mb, args.runs), args.runs)


def bench_chat(args: argparse.Namespace) -> None:
    from tunewise.infer import Engine

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
