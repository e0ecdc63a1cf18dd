"""Supervised fine-tuning: the mean token cross-entropy on the labelled (assistant) tokens of each batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tunewise.train.batching import split_batch
from tunewise.train.methods import StepContext
from tunewise.train.render import IGNORE, Rendered


def token_sums(model, core, head, mb, device, forward=None):
    """Summed token loss, correct argmax count and labelled-token count of one micro-batch. ``forward`` (a
    data-parallel wrapper of the same computation, ``distributed.labelled_module``) replaces the direct calls."""
    import torch.nn.functional as F

    ids = mb.input_ids.to(device)
    targets = mb.labels[:, 1:].to(device)  # position t predicts token t + 1
    keep = targets != IGNORE
    # Packed rows carry position ids that restart with each example: attention stays within an example.
    extra = {} if mb.position_ids is None else {"position_ids": mb.position_ids.to(device)}
    if forward is not None:
        logits = forward(ids, keep, **extra).float()
    elif core is not None:
        # No attention mask: rows are right-padded, so causal attention already hides padding from real tokens.
        hidden = core(input_ids=ids, use_cache=False, **extra).last_hidden_state
        logits = head_float32(head, hidden[:, :-1][keep])
    else:
        logits = model(input_ids=ids, use_cache=False, **extra).logits[:, :-1][keep].float()
    wanted = targets[keep]
    loss = F.cross_entropy(logits, wanted, reduction="sum")
    correct = (logits.detach().argmax(-1) == wanted).sum().item()
    return loss, correct, int(wanted.numel())


def head_float32(head, hidden):
    """The LM head's logits in float32 even under bf16 autocast: bf16 logits (about 3 significant digits) round by
    several hundredths around the values a trained model reaches, which is noise the size of the gradient of a
    well-predicted token; the head runs over the labelled positions only, so float32 costs little."""
    import torch
    import torch.nn.functional as F

    device_type = hidden.device.type
    if not torch.is_autocast_enabled(device_type):
        return head(hidden).float()
    with torch.autocast(device_type=device_type, enabled=False):
        if head.weight.dtype == torch.float32:
            return head(hidden.float())  # through the module, so wrappers' hooks (FSDP) still see it
        # a bf16 head (LoRA on CUDA keeps the base in bf16) is upcast for the product
        return F.linear(hidden.float(), head.weight.float(), None if head.bias is None else head.bias.float())


class SFT:
    """Chat or prompt/completion examples; the loss is the batch's mean token loss (OpenAI's supervised method)."""

    name = "sft"
    columns: tuple[str, ...] = ()
    lr_scale = 1.0

    def __init__(self, config: Any) -> None:
        self.config = config

    def render_file(self, path: str | Path, renderer: Any, context_length: int, param: str,
                    model: str | None) -> list[Rendered]:
        from tunewise.train.trainer import render_file

        return render_file(path, renderer, context_length, param, model)

    def length(self, item: Rendered) -> int:
        return len(item.input_ids)

    def tokens(self, item: Rendered) -> int:
        return len(item.input_ids)

    def prepare(self, model, train_set, valid_set, out, ctx, main, emit) -> None:
        return None

    def step(self, model: Any, batch: list[Rendered], ctx: StepContext, progress: dict[str, Any]) -> dict[str, float]:
        n_labels = sum(e.n_labels for e in batch)
        loss_sum, correct = 0.0, 0
        for mb in split_batch(batch, ctx.max_tokens, ctx.pad_id, packing=ctx.packing, device=ctx.device):
            with ctx.autocast():
                loss, c, _ = token_sums(model, ctx.core, ctx.head, mb, ctx.device)
            # Each micro-batch's share of the batch's mean token loss: the gradients sum to the batch's.
            (loss / n_labels).backward()
            loss_sum += loss.item()
            correct += c
            progress["real_tokens"] += mb.real_tokens
            progress["padded_tokens"] += mb.padded_tokens
        return {"train_loss": loss_sum / n_labels, "train_accuracy": correct / n_labels}

    def evaluate(self, model: Any, items: list[Rendered], ctx: StepContext) -> dict[str, float]:
        from tunewise.train.trainer import _eval_sums

        loss_sum, correct, count = _eval_sums(model, items, max_tokens=ctx.max_tokens, pad_id=ctx.pad_id,
                                              device=ctx.device, autocast_dtype=ctx.autocast_dtype)
        return {"valid_loss": loss_sum / count, "valid_mean_token_accuracy": correct / count}
