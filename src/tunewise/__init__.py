"""tunewise: should I fine-tune? Evidence first, then the fine-tune.

Stages, one module (or package) each: ``data`` (validate chat JSONL), ``tokens`` (exact counts),
``catalog`` (models and prices), ``cost`` (training cost, break-even), ``models`` (local model registry),
``train`` (local fine-tuning), ``infer`` (batched generation), ``serve`` (OpenAI-compatible service),
``eval`` (held-out evaluation and the decision).
"""

__version__ = "0.1.0"
