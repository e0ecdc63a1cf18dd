"""Training methods behind the one training loop: what a step's loss is, what data it reads, what it reports.

The loop (``tunewise.train.trainer``) owns everything a method shares: the resolved config, the seeded plan of
batches, the optimizer and learning-rate schedule, the resumable state, checkpoints, events, the metrics CSV and
evaluation during training. A method supplies the rest through this interface:

- ``render_file``: the file's examples rendered (and checked identical to inference renders) as the method's
  items; ``length`` of an item is what the plan groups batches by, ``tokens`` what it adds to trained tokens;
- ``prepare``: anything computed once from the starting model before the first step (DPO's reference
  log-probabilities), kept in the output directory so that a resumed run reads it instead of recomputing it;
- ``step``: one batch's forward and backward (the gradient of the batch's loss), and its metrics;
- ``evaluate``: the validation metrics, without gradients;
- ``columns``: the method's own metrics, beyond ``train_loss``/``train_accuracy``/``valid_loss``/
  ``valid_mean_token_accuracy``: extra columns of ``metrics.csv`` and extra keys of each ``metrics`` event.

Methods: ``sft`` (supervised: mean token cross-entropy on the assistant tokens; ``tunewise.train.methods.sft``),
``dpo`` (direct preference optimization against the starting model; ``tunewise.train.methods.dpo``) and ``grpo``
(reinforcement fine-tuning: completions sampled by the serving engine and graded; ``tunewise.train.methods.grpo``).
A method may also have ``close()``, called when the run ends (GRPO stops its sampling engine's thread).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

OBJECTIVES = ("sft", "dpo", "grpo")


@dataclass
class StepContext:
    """What a method's step and evaluation need from the loop."""

    device: str
    pad_id: int
    max_tokens: int
    autocast_dtype: Any = None
    packing: bool = False
    core: Any = None
    head: Any = None
    """The model's body and LM head where the loss can be computed from hidden states at labelled positions
    (see ``trainer.PLAIN_HEAD_MODEL_TYPES``), else None (the full-logits path)."""
    seed: int = 0
    """The run's resolved seed (GRPO seeds each step's sampling from it)."""

    def autocast(self):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        import torch

        return torch.autocast(device_type=self.device.split(":")[0], dtype=self.autocast_dtype)


class Method(Protocol):
    name: str
    columns: tuple[str, ...]
    lr_scale: float
    """The method's base learning rate as a share of the model's supervised one (registry ``learning_rate``)."""

    def render_file(self, path: str | Path, renderer: Any, context_length: int, param: str,
                    model: str | None) -> list[Any]: ...

    def length(self, item: Any) -> int: ...

    def tokens(self, item: Any) -> int: ...

    def prepare(self, model: Any, train_set: list[Any], valid_set: list[Any], out: Path, ctx: StepContext,
                main: bool, emit: Callable[..., None]) -> None:
        """What the method computes from the starting model; ``emit(text, level="info")`` records a message
        event (``level="warn"`` for a warning), here or at any step after."""

    def step(self, model: Any, batch: list[Any], ctx: StepContext, progress: dict[str, Any]) -> dict[str, float]: ...

    def evaluate(self, model: Any, items: list[Any], ctx: StepContext) -> dict[str, float]: ...


def labelled_logits(model: Any, core: Any, head: Any, mb: Any, device: str):
    """A micro-batch's next-token logits at its labelled positions only (float32, row-major order), their target
    ids, and the ``[rows, positions]`` mask of those positions: from hidden states through the LM head where the
    model has a plain one (``core``/``head``), else from the full logits."""
    from tunewise.train.render import IGNORE

    ids = mb.input_ids.to(device)
    targets = mb.labels[:, 1:].to(device)
    keep = targets != IGNORE
    if core is not None:
        hidden = core(input_ids=ids, use_cache=False).last_hidden_state
        logits = head(hidden[:, :-1][keep]).float()
    else:
        logits = model(input_ids=ids, use_cache=False).logits[:, :-1][keep].float()
    return logits, targets[keep], keep


def get(config: Any) -> Method:
    """The method a ``TrainConfig`` asks for (``objective``)."""
    if config.objective == "dpo":
        from tunewise.train.methods.dpo import DPO

        return DPO(config)
    if config.objective == "grpo":
        from tunewise.train.methods.grpo import GRPO

        return GRPO(config)
    from tunewise.train.methods.sft import SFT

    return SFT(config)
