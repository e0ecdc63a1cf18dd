"""Evaluation and the decision: held-out examples through every candidate, metrics with intervals, a verdict.

```python
from tunewise.eval import load_candidates, run_eval, decide, write_report
cands = load_candidates("examples/candidates.yaml", schema=schema)
run = run_eval("examples/receipts/test.jsonl", cands, schema=schema, out_dir="eval-out", progress=True)
decision = decide(run, calls_per_month=100_000, training_cost=1.25)   # or decide("eval-out", ...)
paths = write_report(decision, "eval-out/report")                        # report.html, report.md, plots
score_checkpoint("path/to/checkpoint", "test.jsonl", schema=schema, limit=20)  # during training
```

Modules: ``candidates`` (what is compared and where it is reached), ``cache`` (SQLite completion cache),
``runner`` (requests, retries, results on disk), ``metrics`` (scores, intervals, paired tests), ``decide``
(the verdict and its reasons), ``report`` (HTML and Markdown with plots), ``checkpoint`` (scoring in-process).
"""

from tunewise.eval.candidates import Candidate, candidate_from_dict, load_candidates, parse_candidate_flag
from tunewise.eval.checkpoint import score_checkpoint
from tunewise.eval.decide import VERDICTS, Decision, decide, read_metrics_csv
from tunewise.eval.report import write_report
from tunewise.eval.runner import EvalRun, build_messages, load_examples, load_run, run_eval

__all__ = ["VERDICTS", "Candidate", "Decision", "EvalRun", "build_messages", "candidate_from_dict", "decide",
           "load_candidates", "load_examples", "load_run", "parse_candidate_flag", "read_metrics_csv",
           "run_eval", "score_checkpoint", "write_report"]
