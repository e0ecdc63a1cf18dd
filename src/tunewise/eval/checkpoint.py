"""Scoring during training: how well a checkpoint answers held-out examples, generated in-process.

The service's worker calls ``score_checkpoint`` after each checkpoint, so a job's events and checkpoint metrics
show which checkpoint to keep. Generation goes straight to ``tunewise.infer.Engine`` (no HTTP), greedy, with the
requests submitted together so the engine batches them.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from tunewise.eval import metrics as M
from tunewise.eval.runner import load_examples

DEFAULT_LIMIT = 20
"""Examples scored per checkpoint: enough to rank checkpoints, few enough to keep training moving."""
DEFAULT_MAX_TOKENS = 256
"""Longest answer generated; a checkpoint that rambles past it scores as invalid."""


def score_checkpoint(model_dir_or_name: str | os.PathLike, eval_file: str | os.PathLike,
                     schema: dict | str | os.PathLike | None = None, limit: int | None = DEFAULT_LIMIT,
                     engine=None, max_tokens: int = DEFAULT_MAX_TOKENS) -> dict[str, Any]:
    """Valid-JSON rate, schema adherence, exact match (and field F1, text F1) of a checkpoint on ``eval_file``.

    ``model_dir_or_name``: anything ``tunewise.infer`` loads (a registry name, an HF directory, a fine-tuned
    output directory). ``schema``: a JSON Schema dict or a path to one. ``engine``: an ``Engine`` to reuse
    (the worker's); by default one is created for this call and closed after it. Each example is prompted with
    its own messages (system prompt included) and scored against its last assistant message.
    Returns ``{"n", "valid_json", "schema_adherence", "exact_match", "field_f1", "text_f1"}`` (rates in 0..1,
    None where a metric does not apply).
    """
    from tunewise.infer import Engine, GenerationRequest

    if isinstance(schema, str | os.PathLike):
        import json

        schema = json.loads(Path(schema).read_text(encoding="utf-8"))
    validator = M.make_validator(schema) if schema is not None else None
    examples = load_examples(eval_file, limit)
    own = engine is None
    engine = engine or Engine(max_batch_size=min(8, len(examples)))
    model = str(model_dir_or_name)

    def answer(prompt: list[dict]) -> str:
        req = GenerationRequest(model=model, messages=prompt, max_tokens=max_tokens, temperature=0)
        return engine.generate(req).choices[0].text

    try:
        with ThreadPoolExecutor(max_workers=max(1, min(8, len(examples)))) as pool:
            answers = list(pool.map(answer, [ex.prompt for ex in examples]))
    finally:
        if own:
            engine.close()
    rows = [M.score_answer(a, ex.reference, validator) for a, ex in zip(answers, examples, strict=True)]

    def mean(metric: str) -> float | None:
        values = [r[metric] for r in rows if r.get(metric) is not None]
        return sum(values) / len(values) if values else None

    return {"n": len(rows), "valid_json": mean("valid_json"), "schema_adherence": mean("schema_adherence"),
            "exact_match": mean("exact_match"), "field_f1": mean("field_f1"), "text_f1": mean("text_f1")}
