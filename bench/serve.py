"""Chat completion speed: tunewise's engine against llama.cpp and against Hugging Face ``generate``.

    .venv/bin/python bench/serve.py [--model smollm2-135m-instruct] [--max-tokens 64] [--runs 3] [--threads N]
                                    [--requests 8] [--no-hf] [--hf-runs 1] [--no-http] [--upload-mb 200]
                                    [--no-upload]

The receipts task's held-out receipts (``examples/receipts/test.jsonl``), asked two ways: the *long* prompt (the
long system prompt and the few-shot turns before the receipt, what the eval's few-shot candidate sends, ~600
tokens) and the *short* one (the short system prompt and the receipt, ~80 tokens). Greedy, the same
``max_tokens``, the same number of threads everywhere. Three ways to answer them:

1. **llama.cpp**: llama-cpp-python's own ``Llama`` on the same GGUF file tunewise's llama.cpp backend serves
   (``TUNEWISE_ENGINE_GGUF_QUANT``, default f16), one call at a time, as a user would run it (its ``generate``
   reuses the previous call's prompt prefix from its KV cache), in a thread that ends before tunewise runs (see
   ``bench_chat``), run by run in turn with tunewise, so drift in the machine's speed moves both alike;
2. **HF generate**: ``model.generate`` on the float32 HF model, one call at a time;
3. **tunewise**: ``tunewise.infer.Engine`` with the automatic backend and its defaults (prompt lookup included), at
   concurrency 1 (one call at a time) and 8 (all requests sent at once from 8 threads), a fresh engine for each
   run.

A one-at-a-time server at concurrency 8 answers the requests in turn: request k's latency is the time until the
k-th answer. For each: output tokens/s (tokens generated, end-of-turn included, over wall time) and p50/p95
latency per call, the medians of ``--runs`` runs (``--hf-runs`` for HF; one untimed warm-up call first), with the
ratio to llama.cpp
(goals: latency at concurrency 1 no higher; throughput at concurrency 8 at least 1.5x) and to HF generate.
Then the greedy identity: how many of tunewise's answers are exactly HF generate's (the float32 torch reference)
and llama.cpp's.

Then (unless ``--no-http``) the same concurrency-8 requests through the real HTTP server on 127.0.0.1 with the
official ``openai`` SDK; and (unless ``--no-upload``) the upload of a large training file: a valid chat
fine-tuning JSONL file of about ``--upload-mb`` MB (receipt-extraction examples, every line distinct) sent to a
real ``tunewise serve`` with the SDK's ``client.files.create(..., purpose="fine-tune")``, which streams it to disk
and runs the validator on it. Wall time and MB/s (median of ``--runs`` uploads, the file deleted after each), and
the peak RSS of the server process, of its worker child and of any other children (the validator's process
pool), sampled every 50 ms during the upload. One upload with ``purpose="batch"`` (stored without validation),
done first on the fresh server, separates the streaming cost from the validator's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

RECEIPTS = Path(__file__).resolve().parent.parent / "examples" / "receipts"


def receipts(k: int) -> dict[str, list[list[dict[str, str]]]]:
    """The first ``k`` held-out receipts as chat prompts, long (system + few-shot) and short."""
    rows = [json.loads(line) for line in (RECEIPTS / "test.jsonl").read_text().splitlines() if line.strip()]
    users = [next(m for m in r["messages"] if m["role"] == "user") for r in rows[:k]]
    few_shot = [m for line in (RECEIPTS / "few_shot.jsonl").read_text().splitlines() if line.strip()
                for m in json.loads(line)["messages"]]
    long_sys = {"role": "system", "content": (RECEIPTS / "system_prompt_long.txt").read_text().strip()}
    short_sys = {"role": "system", "content": (RECEIPTS / "system_prompt_short.txt").read_text().strip()}
    return {"long": [[long_sys, *few_shot, u] for u in users], "short": [[short_sys, u] for u in users]}


def percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q))


class Run:
    """One pass over the prompts: per-call latencies, tokens generated, answers (texts) and wall time."""

    def __init__(self, wall: float, latencies: list[float], tokens: int, answers: list[str]) -> None:
        self.wall, self.latencies, self.tokens, self.answers = wall, latencies, tokens, answers

    @property
    def rate(self) -> float:
        return self.tokens / self.wall

    def queued(self) -> Run:
        """The same calls, all sent at once to a server that answers one at a time."""
        done, ends = 0.0, []
        for lat in self.latencies:
            done += lat
            ends.append(done)
        return Run(self.wall, ends, self.tokens, self.answers)


def one_at_a_time(call, prompts) -> Run:
    latencies, answers, tokens = [], [], 0
    start = time.perf_counter()
    for p in prompts:
        t = time.perf_counter()
        ids, n = call(p)
        latencies.append(time.perf_counter() - t)
        answers.append(ids)
        tokens += n
    return Run(time.perf_counter() - start, latencies, tokens, answers)


def llama_caller(gguf: Path, tokenizer, stop_ids: set[int], max_tokens: int, threads: int):
    from tunewise.infer.llamacpp import open_llama

    llm = open_llama(gguf, n_ctx=4096, n_threads=threads, n_threads_batch=threads)

    def call(messages):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        out = []
        for token in llm.generate(ids, temp=0.0, top_k=1, reset=True):
            if token in stop_ids:
                return tokenizer.decode(out, skip_special_tokens=True), len(out) + 1
            out.append(int(token))
            if len(out) >= max_tokens:
                break
        return tokenizer.decode(out, skip_special_tokens=True), len(out)

    return call, llm


def hf_caller(model_name: str, tokenizer, stop_ids: set[int], max_tokens: int):
    import torch

    from tunewise import models

    model = models.load_model(model_name).eval()

    def call(messages):
        ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        with torch.inference_mode():
            out = model.generate(torch.tensor([ids]), max_new_tokens=max_tokens, do_sample=False,
                                 pad_token_id=tokenizer.pad_token_id, eos_token_id=sorted(stop_ids))
        gen = out[0, len(ids):].tolist()
        answer = [t for t in gen if t not in stop_ids]
        return tokenizer.decode(answer, skip_special_tokens=True), len(gen)

    return call


def engine_run(engine, model_name: str, tokenizer, prompts, max_tokens: int, concurrency: int) -> Run:
    from tunewise.infer import GenerationRequest

    def call(messages):
        res = engine.generate(GenerationRequest(model=model_name, messages=messages, max_tokens=max_tokens,
                                                temperature=0))
        return res.choices[0].text, res.completion_tokens

    if concurrency == 1:
        return one_at_a_time(call, prompts)
    latencies = [0.0] * len(prompts)
    answers: list[str] = [""] * len(prompts)
    counts = [0] * len(prompts)
    barrier = threading.Barrier(len(prompts) + 1)

    def worker(i: int) -> None:
        barrier.wait()
        t = time.perf_counter()
        answers[i], counts[i] = call(prompts[i])
        latencies[i] = time.perf_counter() - t

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    return Run(time.perf_counter() - start, latencies, sum(counts), answers)


def summary(runs: list[Run]) -> dict[str, float]:
    return {"rate": statistics.median(r.rate for r in runs),
            "p50": statistics.median(percentile(r.latencies, 50) for r in runs),
            "p95": statistics.median(percentile(r.latencies, 95) for r in runs)}


def bench_chat(args: argparse.Namespace) -> None:
    import torch

    from tunewise import models
    from tunewise.infer import Engine
    from tunewise.infer.llamacpp import DEFAULT_GGUF_QUANT, available, gguf_for
    from tunewise.infer.scheduler import stop_ids_for

    threads = args.threads or max(1, (os.cpu_count() or 2) // 2)
    torch.set_num_threads(threads)
    tokenizer = models.load_tokenizer(args.model)
    model_dir = models.local_dir(args.model)
    config = json.loads((model_dir / "config.json").read_text())
    stop_ids = set(stop_ids_for((config,), tokenizer, int(config["vocab_size"])))
    quant = os.environ.get("TUNEWISE_ENGINE_GGUF_QUANT") or DEFAULT_GGUF_QUANT
    prompts = receipts(args.requests)
    results: dict[tuple[str, str, int], list[Run]] = {}

    def record(label: str, kind: str, conc: int, run: int, r: Run) -> None:
        results.setdefault((label, kind, conc), []).append(r)
        print(f"run {run + 1} {label:<10} {kind:<5} c={conc}  {r.tokens:4d} tokens {r.wall:7.2f} s "
              f"{r.rate:6.1f} tok/s  p50 {percentile(r.latencies, 50):5.2f} s", flush=True)

    def measure(label: str, kind: str, conc: int, fn, runs: int | None = None) -> None:
        fn(prompts[kind][:1])  # warm-up, one call: loading, and the prompt prefix in each one's KV cache
        for run in range(runs or args.runs):
            record(label, kind, conc, run, fn(prompts[kind]))

    # The baseline and tunewise take turns, run by run, so a machine whose speed drifts over minutes (a shared one
    # does) moves both sides of each ratio alike. Each side decodes on a thread that ends before the other side
    # runs: llama.cpp's CPU backend runs on OpenMP (libgomp), which keeps a team of worker threads for each thread
    # that decoded, while that thread lives. Measured here: with the baseline's idle team still alive (it decoded
    # on the main thread), tunewise's decode steps, on its scheduler thread, took twice as long (20.5 against 9.9
    # ms a token). So the baseline's calls run in a fresh thread each run, and tunewise gets a fresh engine (its
    # scheduler thread ends when the engine closes), warmed up by one call. One engine per prompt kind, too: an
    # engine that keeps the long prompts' KV for reuse makes every other row's attention span those cells (the
    # cost of a mixed workload: docs/engine.md), while the baseline's cache holds only the prompt it answers.
    gguf = None
    llama: dict = {}
    if available():
        gguf = gguf_for(model_dir, quant, threads=threads)
    else:
        print("(llama-cpp-python is not installed: the llama.cpp baseline is skipped)")

    def in_thread(fn) -> None:
        worker = threading.Thread(target=fn, name="bench-decoder")
        worker.start()
        worker.join()

    def baseline(kind: str, run: int) -> None:
        if "call" not in llama:
            llama["call"], llama["llm"] = llama_caller(gguf, tokenizer, stop_ids, args.max_tokens, threads)
        call = llama["call"]
        call(prompts[kind][0])  # warm-up: the prompt prefix in its KV cache, as a user's second call has it
        r = one_at_a_time(call, prompts[kind])
        record("llama.cpp", kind, 1, run, r)
        results.setdefault(("llama.cpp", kind, 8), []).append(r.queued())

    def ours(kind: str, run: int) -> None:
        with Engine(max_batch_size=8, num_threads=threads) as engine:
            backends.add(engine.backend_for(args.model))
            engine_run(engine, args.model, tokenizer, prompts[kind][:1], args.max_tokens, 1)  # warm-up
            for conc in (1, 8):
                record("tunewise", kind, conc, run, engine_run(engine, args.model, tokenizer, prompts[kind],
                                                               args.max_tokens, conc))
            stats.append(engine.stats())

    stats = []
    backends: set[str] = set()
    for kind in ("long", "short"):
        for run in range(args.runs):
            if gguf is not None:
                in_thread(lambda kind=kind, run=run: baseline(kind, run))
            ours(kind, run)
    if "llm" in llama:
        in_thread(llama["llm"].close)
    backend = ", ".join(sorted(backends))
    # HF generate last: once PyTorch's own OpenMP threads have run big matrix products in a process, llama.cpp's
    # threads in that process ran at half speed here (two OpenMP runtimes on the same cores).
    if not args.no_hf:
        call = hf_caller(args.model, tokenizer, stop_ids, args.max_tokens)
        for kind in ("long", "short"):
            measure("HF", kind, 1, lambda ps: one_at_a_time(call, ps), args.hf_runs)
            results[("HF", kind, 8)] = [r.queued() for r in results[("HF", kind, 1)]]
        del call

    print(f"\nmodel {args.model}, {args.requests} held-out receipts, greedy, max_tokens {args.max_tokens}, "
          f"{threads} threads, medians of {args.runs} runs; tunewise backend: {backend}"
          + (f", GGUF {gguf.name}" if gguf else ""))
    print(f"{'':<22}{'tok/s':>8}{'p50 s':>8}{'p95 s':>8}   vs llama.cpp (tok/s, p50)   vs HF (tok/s)")
    for kind in ("long", "short"):
        for conc in (1, 8):
            base = summary(results[("llama.cpp", kind, conc)]) if ("llama.cpp", kind, conc) in results else None
            hf = summary(results[("HF", kind, conc)]) if ("HF", kind, conc) in results else None
            for label in ("llama.cpp", "HF", "tunewise"):
                if (label, kind, conc) not in results:
                    continue
                m = summary(results[(label, kind, conc)])
                vs = (f"{m['rate'] / base['rate']:5.2f}x  {m['p50'] / base['p50']:5.2f}x" if base else "")
                vs_hf = f"{m['rate'] / hf['rate']:5.2f}x" if hf else ""
                print(f"{kind:<5} c={conc} {label:<11}{m['rate']:8.1f}{m['p50']:8.2f}{m['p95']:8.2f}   "
                      f"{vs:<26}  {vs_hf}")
    for kind in ("long", "short"):
        ours = results[("tunewise", kind, 1)][-1].answers
        for label in ("HF", "llama.cpp"):
            if (label, kind, 1) in results:
                ref = results[(label, kind, 1)][-1].answers
                same = sum(a == b for a, b in zip(ours, ref, strict=True))
                print(f"greedy identity, {kind} prompt: tunewise = {label} on {same}/{len(ref)} receipts")
    print(f"engine: {sum(s.forward_passes for s in stats)} forward passes, largest batch "
          f"{max(s.max_batch_size_seen for s in stats)}, {sum(s.cached_prompt_tokens for s in stats)} prompt tokens "
          f"from the prefix cache, prompt lookup: {sum(s.accepted_draft_tokens for s in stats)} of "
          f"{sum(s.draft_tokens for s in stats)} draft tokens kept")
    if not args.no_http:
        http = bench_http(args.model, args.max_tokens, args.runs, threads, prompts["long"])
        if http is None:
            print("(tunewise.serve not available: HTTP measurement skipped)")
        else:
            print(f"http server (openai SDK), long prompt, c=8: {statistics.median(http):.1f} tok/s")


def bench_http(model_name: str, max_tokens: int, runs: int, threads: int | None,
               prompts) -> list[float] | None:
    """The same 8 concurrent requests through the real server and the openai SDK, or None without a server."""
    try:
        import tunewise.serve.app as app_module  # noqa: F401
    except ImportError:
        return None
    return _run_http(model_name, max_tokens, runs, threads, prompts)


def _run_http(model_name: str, max_tokens: int, runs: int, threads: int | None,
              prompts) -> list[float] | None:
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
        while True:  # the key is printed before the server listens
            try:
                client.models.list()
                break
            except openai.APIConnectionError:
                if time.time() > deadline or proc.poll() is not None:
                    return None
                time.sleep(0.2)
        rates = []
        for _ in range(runs + 1):  # the first run loads the model
            counts = [0] * len(prompts)

            def one(i: int, counts=counts) -> None:
                r = client.chat.completions.create(model=model_name, messages=prompts[i],
                                                   max_tokens=max_tokens, temperature=0)
                counts[i] = r.usage.completion_tokens

            start = time.perf_counter()
            threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
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
    parser.add_argument("--requests", type=int, default=8, help="held-out receipts asked (default 8)")
    parser.add_argument("--no-hf", action="store_true", help="skip the HF generate baseline")
    parser.add_argument("--hf-runs", type=int, default=1,
                        help="timed runs of the (slow) HF generate baseline (default 1, after its warm-up)")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP server measurement")
    parser.add_argument("--no-chat", action="store_true", help="skip the chat measurements")
    parser.add_argument("--upload-mb", type=float, default=200,
                        help="size of the training file for the upload measurement, in MB (default 200)")
    parser.add_argument("--no-upload", action="store_true", help="skip the upload measurement")
    parser.add_argument("--threads", type=int, default=None,
                        help="threads for every measurement, torch and llama.cpp (default: half the cores)")
    args = parser.parse_args()
    if not args.no_chat:
        bench_chat(args)
    if not args.no_upload:
        print_upload_table(bench_upload(args.upload_mb, args.runs), args.runs)


if __name__ == "__main__":
    main()
