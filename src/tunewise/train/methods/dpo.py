"""Direct preference optimization (DPO): learn to prefer one answer over another, against a reference model.

For each example (an input, a preferred and a non-preferred assistant answer) the policy's summed log-probability
of each answer's tokens, ``logp_c`` and ``logp_r``, is compared with the reference model's, ``ref_c`` and ``ref_r``:

    loss = -log sigmoid(beta * ((logp_c - ref_c) - (logp_r - ref_r)))

averaged over the batch's examples: TRL's ``DPOTrainer`` with ``loss_type="sigmoid"`` (the DPO paper's loss),
and tested against it on a fixed batch. ``beta`` (OpenAI's hyperparameter, ``auto`` = 0.1) sets how far the
policy may move from the reference. The metrics are TRL's: the implicit rewards ``beta * (logp - ref)`` of the
preferred and non-preferred answers, the reward accuracy (share of examples whose preferred reward is higher)
and margin (mean difference), the mean log-probabilities, and the token accuracy on the preferred answers.

The reference is the model training starts from: the base model for a new LoRA adapter (computed with the adapter
disabled), the supervised model for a continued one (``init_adapter``: DPO on top of SFT), the base weights for
full fine-tuning. Its log-probabilities depend only on the data, so they are computed once before the first step
(TRL's ``precompute_ref_log_probs``) and saved in ``OUTPUT/reference.pt``: no second copy of the model is ever
held, and a resumed run reads them back rather than computing them from weights that have since moved.

Both answers are rendered as SFT renders a chat example whose last message is the answer (the input's own
assistant turns are context, weight 0), so the same checks prove each render identical, token for token, to what
inference feeds and must generate. A preferred and a non-preferred answer always share a micro-batch, so the loss
of each example is exact whatever the token budget.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunewise.errors import DataError
from tunewise.train.batching import _collate
from tunewise.train.methods import StepContext, labelled_logits
from tunewise.train.render import Rendered, checked_examples

AUTO_BETA = 0.1  # TRL's default and the DPO paper's usual value; OpenAI does not publish what its "auto" picks
# DPO moves the model from a reference by small steps: its base learning rate is this share of the supervised one
# (for SmolLM2-135M LoRA, 1e-3 x 0.1 = 1e-4), and learning_rate_multiplier scales it as for SFT.
LEARNING_RATE_SCALE = 0.1
REFERENCE_FILE = "reference.pt"


@dataclass
class Pair:
    """One preference example, rendered: the input with its preferred answer, and with its non-preferred one."""

    line: int
    chosen: Rendered
    rejected: Rendered
    index: int
    """Position in its file's list (the row of the reference log-probabilities)."""
    param: str = "training_file"


def resolve_beta(beta: Any) -> float:
    return AUTO_BETA if beta in ("auto", None) else float(beta)


def read_pairs(path: str | Path, model: str | None, param: str):
    """Validate the file as preference data (errors name the lines), then yield ``(line, example)``."""
    from tunewise import data

    report = data.validate(path, model=model, data_format="preference")
    yield from checked_examples(report, path, param)


def render_pair(renderer: Any, line: int, example: dict[str, Any], index: int, param: str) -> Pair:
    source = example["input"]
    context = [dict(m, weight=0) if m.get("role") == "assistant" else m for m in source["messages"]]
    tools = source.get("tools") or None
    rendered = []
    for key in ("preferred_output", "non_preferred_output"):
        chat: dict[str, Any] = {"messages": [*context, example[key][0]]}
        if tools:
            chat["tools"] = tools
        try:
            rendered.append(renderer.render(line, chat))
        except DataError as exc:
            exc.param = param
            raise
    return Pair(line=line, chosen=rendered[0], rejected=rendered[1], index=index, param=param)


def sequence_logps(model, core, head, mb, device):
    """Per row of a micro-batch: the summed log-probability of its labelled tokens, its correct-argmax count and
    its labelled-token count (tensors of one value per row)."""
    import torch
    import torch.nn.functional as F

    logits, wanted, keep = labelled_logits(model, core, head, mb, device)
    token_logps = -F.cross_entropy(logits, wanted, reduction="none")
    rows = keep.nonzero()[:, 0]
    n = keep.shape[0]
    logps = torch.zeros(n, device=logits.device, dtype=logits.dtype).index_add(0, rows, token_logps)
    hits = (logits.detach().argmax(-1) == wanted).to(logits.dtype)
    correct = torch.zeros(n, device=logits.device, dtype=logits.dtype).index_add(0, rows, hits)
    counts = keep.sum(-1)
    return logps, correct, counts


def dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta: float):
    """Per example: the sigmoid DPO loss and the implicit rewards of the preferred and non-preferred answers."""
    import torch.nn.functional as F

    chosen_logratios = policy_chosen - ref_chosen
    rejected_logratios = policy_rejected - ref_rejected
    losses = -F.logsigmoid(beta * (chosen_logratios - rejected_logratios))
    return losses, beta * chosen_logratios.detach(), beta * rejected_logratios.detach()


def pair_groups(pairs: list[Pair], max_tokens: int) -> list[list[Pair]]:
    """Pairs grouped into micro-batches of at most ``max_tokens`` (rows x padded length; two rows per pair),
    longest first; a pair longer than the budget is a micro-batch of its own."""
    ordered = sorted(pairs, key=lambda p: max(len(p.chosen.input_ids), len(p.rejected.input_ids)), reverse=True)
    groups: list[list[Pair]] = []
    for pair in ordered:
        if groups:
            first = groups[-1][0]
            length = max(len(first.chosen.input_ids), len(first.rejected.input_ids))
            if length * 2 * (len(groups[-1]) + 1) <= max_tokens:
                groups[-1].append(pair)
                continue
        groups.append([pair])
    return groups


class DPO:
    name = "dpo"
    lr_scale = LEARNING_RATE_SCALE
    columns = ("train_reward_accuracy", "train_reward_margin", "train_chosen_reward", "train_rejected_reward",
               "train_chosen_logps", "train_rejected_logps", "valid_reward_accuracy", "valid_reward_margin")

    def __init__(self, config: Any) -> None:
        self.config = config
        self.beta = resolve_beta(config.beta)
        self.reference: dict[str, Any] = {}

    # -- data ----------------------------------------------------------------------------------------------
    def render_file(self, path, renderer, context_length, param, model) -> list[Pair]:
        pairs = []
        for line, example in read_pairs(path, model, param):
            pair = render_pair(renderer, line, example, len(pairs), param)
            longest = max(len(pair.chosen.input_ids), len(pair.rejected.input_ids))
            if longest > context_length:
                raise DataError(f"{path}:{line}: the example is {longest} tokens with an answer, longer than the "
                                f"model's context of {context_length}.", hint="Shorten or split the example, or "
                                "remove it.", code="example_too_long", param=param)
            pairs.append(pair)
        if not pairs:
            raise DataError(f"{path} has no examples.", hint="Add preference examples, one JSON object per line.",
                            param=param)
        return pairs

    def length(self, pair: Pair) -> int:
        return len(pair.chosen.input_ids) + len(pair.rejected.input_ids)

    def tokens(self, pair: Pair) -> int:
        return len(pair.chosen.input_ids) + len(pair.rejected.input_ids)

    # -- the reference -------------------------------------------------------------------------------------
    def prepare(self, model, train_set, valid_set, out: Path, ctx: StepContext, main: bool,
                emit: Callable[[str], None]) -> None:
        import torch

        path = out / REFERENCE_FILE
        if path.is_file():
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved["train"].shape[0] == len(train_set) and saved["valid"].shape[0] == len(valid_set):
                self.reference = saved
                emit(f"Reference log-probabilities read from {path}")
                return
        # A new LoRA adapter starts equal to its base (its B matrices are zero); the reference is computed with
        # it disabled all the same, so it is the base model's by construction.
        fresh_lora = self.config.method == "lora" and self.config.init_adapter is None \
            and hasattr(model, "disable_adapter")
        import contextlib

        with (model.disable_adapter() if fresh_lora else contextlib.nullcontext()):
            self.reference = {"train": self._logps(model, train_set, ctx), "valid": self._logps(model, valid_set, ctx)}
        what = "the base model (adapter disabled)" if fresh_lora else "the starting model"
        emit(f"Reference log-probabilities computed from {what} for {len(train_set) + len(valid_set)} examples")
        if main:
            tmp = path.with_name(f".{path.name}.tmp")
            torch.save(self.reference, tmp)
            os.replace(tmp, path)

    def _logps(self, model, pairs: list[Pair], ctx: StepContext):
        """``[n, 2]``: the summed log-probability of each pair's preferred and non-preferred answer."""
        import torch

        out = torch.zeros(len(pairs), 2, dtype=torch.float64)
        was_training = model.training
        model.eval()
        with torch.no_grad(), ctx.autocast():
            for group in pair_groups(pairs, ctx.max_tokens):
                logps = self._forward(model, group, ctx)[0]
                k = len(group)
                for j, pair in enumerate(group):
                    out[pair.index, 0] = logps[j].item()
                    out[pair.index, 1] = logps[k + j].item()
        model.train(was_training)
        return out

    def _forward(self, model, group: list[Pair], ctx: StepContext):
        mb = _collate([p.chosen for p in group] + [p.rejected for p in group], ctx.pad_id)
        return (*sequence_logps(model, ctx.core, ctx.head, mb, ctx.device), mb)

    # -- training and evaluation ---------------------------------------------------------------------------
    def _pass(self, model, pairs: list[Pair], ctx: StepContext, which: str, progress: dict[str, Any] | None,
              backward: bool) -> dict[str, float]:
        import torch

        ref = self.reference[which]
        n = len(pairs)
        sums = {"loss": 0.0, "acc": 0.0, "margin": 0.0, "chosen_reward": 0.0, "rejected_reward": 0.0,
                "chosen_logps": 0.0, "rejected_logps": 0.0, "correct": 0.0, "labels": 0.0}
        for group in pair_groups(pairs, ctx.max_tokens):
            k = len(group)
            with ctx.autocast():
                logps, correct, counts, mb = self._forward(model, group, ctx)
            idx = torch.tensor([p.index for p in group])
            ref_c = ref[idx, 0].to(logps.device, logps.dtype)
            ref_r = ref[idx, 1].to(logps.device, logps.dtype)
            losses, chosen_rewards, rejected_rewards = dpo_loss(logps[:k], logps[k:], ref_c, ref_r, self.beta)
            if backward:
                (losses.sum() / n).backward()  # each group's share of the batch's mean loss
            if progress is not None:
                progress["real_tokens"] += mb.real_tokens
                progress["padded_tokens"] += mb.padded_tokens
            sums["loss"] += losses.detach().sum().item()
            sums["acc"] += (chosen_rewards > rejected_rewards).float().sum().item()
            sums["margin"] += (chosen_rewards - rejected_rewards).sum().item()
            sums["chosen_reward"] += chosen_rewards.sum().item()
            sums["rejected_reward"] += rejected_rewards.sum().item()
            sums["chosen_logps"] += logps[:k].detach().sum().item()
            sums["rejected_logps"] += logps[k:].detach().sum().item()
            sums["correct"] += correct[:k].sum().item()
            sums["labels"] += counts[:k].sum().item()
        return {key: value / (sums["labels"] if key == "correct" else n) for key, value in sums.items()
                if key != "labels"}

    def step(self, model, batch: list[Pair], ctx: StepContext, progress: dict[str, Any]) -> dict[str, float]:
        s = self._pass(model, batch, ctx, "train", progress, backward=True)
        return {"train_loss": s["loss"], "train_accuracy": s["correct"], "train_reward_accuracy": s["acc"],
                "train_reward_margin": s["margin"], "train_chosen_reward": s["chosen_reward"],
                "train_rejected_reward": s["rejected_reward"], "train_chosen_logps": s["chosen_logps"],
                "train_rejected_logps": s["rejected_logps"]}

    def evaluate(self, model, pairs: list[Pair], ctx: StepContext) -> dict[str, float]:
        import torch

        was_training = model.training
        model.eval()
        with torch.no_grad():
            s = self._pass(model, pairs, ctx, "valid", None, backward=False)
        model.train(was_training)
        return {"valid_loss": s["loss"], "valid_mean_token_accuracy": s["correct"],
                "valid_reward_accuracy": s["acc"], "valid_reward_margin": s["margin"]}
