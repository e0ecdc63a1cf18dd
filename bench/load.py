"""A bounded load run against a real ``tunewise serve`` on 127.0.0.1 while a fine-tuning job trains.

    .venv/bin/python bench/load.py [--model smollm2-135m-instruct] [--duration 60] [--concurrency 16]
                                   [--listers 4] [--max-tokens 16] [--json OUT]

For ``--duration`` seconds, all at once, against one server (its worker training one job the whole time):

* ``--concurrency`` threads (16) each sending chat completions back to back (the official ``openai`` SDK,
  ``max_tokens`` ``--max-tokens``) to ``--model``, the server's stand-in for ``gpt-4o-mini``;
* ``--listers`` threads (4) listing files and fine-tuning jobs back to back;
* one thread calling ``GET /health`` every second;
* training all along: when the job ends before the run does, the next one is created.

Printed per kind of request: requests, errors, p50 and p95 latency; and the peak RSS of the server, its worker and
their children (sampled every 100 ms). Goals: 0 errors, ``/health`` p95 under 100 ms while training. The job is
cancelled and the server stopped at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latency: dict[str, list[float]] = {}
        self.errors: dict[str, list[str]] = {}

    def timed(self, kind: str, call) -> None:
        start = time.perf_counter()
        try:
            call()
        except Exception as exc:  # every failure counts, whatever its kind
            with self.lock:
                self.errors.setdefault(kind, []).append(f"{type(exc).__name__}: {exc}"[:200])
            return
        finally:
            elapsed = time.perf_counter() - start
            with self.lock:
                self.latency.setdefault(kind, []).append(elapsed)


def sample_rss(pid: int, stop: threading.Event, peak: dict[str, int]) -> None:
    import psutil

    root = psutil.Process(pid)
    while not stop.is_set():
        try:
            procs = [root, *root.children(recursive=True)]
            total = 0
            for p in procs:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
            peak["server"] = max(peak.get("server", 0), root.memory_info().rss)
            peak["all"] = max(peak.get("all", 0), total)
        except psutil.Error:
            return
        stop.wait(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--listers", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--json", type=Path, default=None, help="Also write the figures to this JSON file.")
    args = parser.parse_args()

    from tunewise.serve.testing import running_server, write_receipts

    tmp = Path(tempfile.mkdtemp(prefix="tunewise-load-"))
    data = write_receipts(tmp / "train.jsonl")
    rec = Recorder()
    peak: dict[str, int] = {}
    with running_server(tmp / "server", local_model=args.model, startup_timeout=120) as server:
        client = server.client(timeout=300)
        file = client.files.create(file=data.open("rb"), purpose="fine-tune")
        # Warm the engine (the model loads on the first completion) before the clock starts.
        client.chat.completions.create(model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}],
                                       max_tokens=1)
        jobs: list[str] = []

        def new_job() -> str:
            job = client.fine_tuning.jobs.create(training_file=file.id, model="gpt-4o-mini",
                                                 hyperparameters={"n_epochs": 25, "batch_size": 1})
            jobs.append(job.id)
            return job.id

        job_id = new_job()
        deadline = time.monotonic() + 120
        while client.fine_tuning.jobs.retrieve(job_id).status != "running" and time.monotonic() < deadline:
            time.sleep(0.2)
        stop = threading.Event()
        end = time.monotonic() + args.duration

        def trainer() -> None:
            # Training the whole time: a job that ends before the run does is followed by the next one.
            c = server.client(timeout=60)
            while time.monotonic() < end:
                if c.fine_tuning.jobs.retrieve(jobs[-1]).status in ("succeeded", "failed", "cancelled"):
                    new_job()
                time.sleep(0.5)

        def chatter(i: int) -> None:
            c = server.client(timeout=300)
            while time.monotonic() < end:
                rec.timed("chat", lambda: c.chat.completions.create(
                    model="gpt-4o-mini", max_tokens=args.max_tokens, temperature=0,
                    messages=[{"role": "user", "content": f"Say something about the number {i}."}]))

        def lister(i: int) -> None:
            c = server.client(timeout=60)
            while time.monotonic() < end:
                rec.timed("list files", lambda: c.files.list())
                rec.timed("list jobs", lambda: c.fine_tuning.jobs.list(limit=20))

        def health() -> None:
            url = f"http://127.0.0.1:{server.port}/health"
            while time.monotonic() < end:
                tick = time.monotonic()
                rec.timed("health", lambda: urllib.request.urlopen(url, timeout=30).read())
                time.sleep(max(0.0, 1.0 - (time.monotonic() - tick)))

        threads = [threading.Thread(target=chatter, args=(i,)) for i in range(args.concurrency)]
        threads += [threading.Thread(target=lister, args=(i,)) for i in range(args.listers)]
        threads += [threading.Thread(target=health), threading.Thread(target=trainer)]
        sampler = threading.Thread(target=sample_rss, args=(server.pid, stop, peak), daemon=True)
        sampler.start()
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wall = time.monotonic() - started
        stop.set()
        steps_trained, statuses = 0, []
        for job_id in jobs:
            job = client.fine_tuning.jobs.retrieve(job_id)
            statuses.append(job.status)
            steps = [e.data.get("step") for e in client.fine_tuning.jobs.list_events(job_id, limit=10000).data
                     if e.type == "metrics" and e.message.startswith("Step ")]
            steps_trained += len(steps)
            if job.status not in ("succeeded", "failed", "cancelled"):
                client.fine_tuning.jobs.cancel(job_id)

    rows = []
    for kind in ("chat", "list files", "list jobs", "health"):
        lat = rec.latency.get(kind, [])
        rows.append({"kind": kind, "requests": len(lat), "errors": len(rec.errors.get(kind, [])),
                     "p50_ms": round(percentile(lat, 50) * 1000, 1), "p95_ms": round(percentile(lat, 95) * 1000, 1)})
    result = {"model": args.model, "duration_s": round(wall, 1), "concurrency": args.concurrency,
              "max_tokens": args.max_tokens, "rows": rows, "jobs": len(jobs), "job_statuses": statuses,
              "steps_trained": steps_trained,
              "peak_rss_server_mb": round(peak.get("server", 0) / 2**20), "peak_rss_all_mb": round(peak.get("all", 0) / 2**20),
              "errors": {k: v[:3] for k, v in rec.errors.items()}}
    print(f"load on {args.model}: {wall:.0f} s, {args.concurrency} concurrent chats (max_tokens {args.max_tokens}), "
          f"{args.listers} listers, /health every second, training all along ({steps_trained} steps in "
          f"{len(jobs)} job(s))")
    print(f"{'request':<12} {'requests':>9} {'errors':>7} {'p50 ms':>9} {'p95 ms':>9}")
    for r in rows:
        print(f"{r['kind']:<12} {r['requests']:>9} {r['errors']:>7} {r['p50_ms']:>9} {r['p95_ms']:>9}")
    print(f"peak RSS: server {result['peak_rss_server_mb']} MB, server + worker + children {result['peak_rss_all_mb']} MB")
    for kind, errs in result["errors"].items():
        print(f"errors ({kind}): {errs}", file=sys.stderr)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    ok = all(r["errors"] == 0 for r in rows)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
