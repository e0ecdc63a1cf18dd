"""Times each stage of `make demo` (examples/demo.py) on the default model, against the 10-minute goal.

    .venv/bin/python bench/demo.py [--runs 1] [--epochs N] [--limit N]

Each run starts from nothing (a fresh output directory, a fresh server, an empty evaluation cache) except the
converted-model cache. Prints each stage's median over the runs and the total as a ratio of the goal
(10 minutes on 2 CPU cores after install): under 1.0 meets it.
"""

from __future__ import annotations

import argparse
import runpy
import statistics
import tempfile
from pathlib import Path

GOAL_S = 600.0
DEMO = Path(__file__).resolve().parents[1] / "examples" / "demo.py"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1, help="how many full demo runs (default 1: each takes minutes)")
    parser.add_argument("--epochs", type=int, default=None, help="epochs to train (default: the demo's)")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N test examples (default: the demo's; 0: all)")
    args = parser.parse_args()
    demo = runpy.run_path(str(DEMO), run_name="tunewise_bench")
    epochs = args.epochs or demo["DEMO_EPOCHS"]
    limit = demo["DEMO_LIMIT"] if args.limit is None else (args.limit or None)  # 0: every test example
    runs = []
    for i in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="tunewise-demo-bench-") as tmp:
            print(f"--- run {i + 1}/{args.runs}", flush=True)
            runs.append(demo["run"](Path(tmp) / "demo", limit=limit, epochs=epochs))
    print(f"\nstage medians over {len(runs)} run(s), {epochs} epoch(s):")
    for name in runs[0]["stages"]:
        print(f"   {statistics.median(r['stages'][name] for r in runs):7.1f} s  {name}")
    total = statistics.median(r["total_s"] for r in runs)
    print(f"   {total:7.1f} s  total")
    print(f"ratio to the {GOAL_S / 60:.0f}-minute goal: {total / GOAL_S:.2f} (under 1.0 meets it)")


if __name__ == "__main__":
    main()
