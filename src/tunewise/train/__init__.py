"""Local fine-tuning: chat JSONL in, a LoRA adapter or a full model out (``train``), with OpenAI's hyperparameters.

Modules, in the order a run uses them: ``config`` (what to train, ``auto`` rules), ``render`` (chat template,
labels, the training/inference agreement check), ``batching`` (length-grouped batches, micro-batches),
``trainer`` (the loop, checkpoints, resume, export).
"""

from tunewise.train.config import (
    TrainConfig,
    TrainEvent,
    TrainResult,
    auto_batch_size,
    auto_n_epochs,
    cpu_has_bf16,
    resolve_dtype,
)
from tunewise.train.render import Rendered, Renderer, normalize_messages
from tunewise.train.trainer import METRICS_HEADER, evaluate, export_merged, render_file, train

__all__ = ["METRICS_HEADER", "Rendered", "Renderer", "TrainConfig", "TrainEvent", "TrainResult", "auto_batch_size",
           "auto_n_epochs", "cpu_has_bf16", "evaluate", "export_merged", "normalize_messages", "render_file",
           "resolve_dtype", "train"]
