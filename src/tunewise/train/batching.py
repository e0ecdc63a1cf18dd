"""Length-grouped batches without cross-contamination, split into micro-batches under a token budget.

A batch (``batch_size`` examples, one optimizer step, OpenAI's meaning) is drawn by a seeded shuffle; examples of
similar length are grouped into the same batch (shuffle, cut into mega-batches, sort each by length) so that little
compute goes to padding; on a CPU a row joins a micro-batch only if it adds little padding (``pad_slack``). Each
row of a micro-batch holds one example, right-padded: with a causal mask a real token never attends to a later
position, so padding never leaks into real tokens and no attention mask is needed (which also keeps PyTorch's fast
causal attention kernel).

With packing (``packed_micro_batches``) there is no padding at all: the examples of a micro-batch are concatenated
into one row, each with its own position ids from 0, so no example attends to another (transformers turns position
ids that restart into a block-diagonal causal mask for SDPA and eager attention, and the flash-attention kernels
into variable-length attention) and the loss is that of the unpacked batch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch

from tunewise.train.render import IGNORE, Rendered

MEGABATCH_FACTOR = 16  # batches per mega-batch when grouping by length: enough to group, still well shuffled
# On a CPU the work of a micro-batch grows with its padded tokens, and a product four rows wide is only about 8%
# faster per row than one row's (SmolLM2's shapes, one thread), so a row joins a micro-batch there only if it adds
# little padding: at most this fraction of the micro-batch's padded length. (On the bench's 16 receipts, batch 4:
# 16% padding removed, 1-4% more tokens/s.)
CPU_PAD_SLACK = 0.03


def pad_slack(device: str) -> float | None:
    """How much padding a row may add to a micro-batch on ``device``: ``CPU_PAD_SLACK`` on a CPU, any (within the
    token budget) on an accelerator, where rows side by side cost little more than one."""
    return CPU_PAD_SLACK if str(device).split(":")[0] == "cpu" else None


def plan_epoch(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Example indices of each step of one epoch: a deterministic function of (seed, epoch)."""
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    mega = batch_size * MEGABATCH_FACTOR
    batches: list[list[int]] = []
    for start in range(0, len(order), mega):
        chunk = sorted(order[start:start + mega], key=lambda i: lengths[i], reverse=True)
        batches.extend(chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size))
    rng.shuffle(batches)
    return batches


def plan(lengths: list[int], batch_size: int, n_epochs: int, seed: int) -> list[tuple[int, list[int]]]:
    """Every step of the run as ``(epoch, example indices)``; resuming replays the same plan."""
    return [(epoch, batch) for epoch in range(n_epochs) for batch in plan_epoch(lengths, batch_size, seed, epoch)]


@dataclass
class MicroBatch:
    input_ids: torch.Tensor  # [rows, length], right-padded
    labels: torch.Tensor  # [rows, length], -100 on prompt and padding
    real_tokens: int
    padded_tokens: int
    position_ids: torch.Tensor | None = None  # [rows, length] when packed: restarting at 0 with each example


def micro_batches(examples: list[Rendered], max_tokens: int, pad_id: int,
                  slack: float | None = None) -> list[MicroBatch]:
    """Split one batch into micro-batches of at most ``max_tokens`` (rows x padded length) each; an example longer
    than the budget gets a micro-batch of its own. With ``slack`` (``pad_slack(device)``), an example joins a
    micro-batch only if its padding is at most that fraction of the micro-batch's length."""
    ordered = sorted(examples, key=lambda e: len(e.input_ids), reverse=True)
    groups: list[list[Rendered]] = []
    for example in ordered:
        # Sorted longest first, so the group's padded length is that of its first row.
        longest = len(groups[-1][0].input_ids) if groups else 0
        if (groups and longest * (len(groups[-1]) + 1) <= max_tokens
                and (slack is None or longest - len(example.input_ids) <= slack * longest)):
            groups[-1].append(example)
        else:
            groups.append([example])
    return [_collate(group, pad_id) for group in groups]


def _collate(group: list[Rendered], pad_id: int) -> MicroBatch:
    length = max(len(e.input_ids) for e in group)
    ids = torch.full((len(group), length), pad_id, dtype=torch.long)
    labels = torch.full((len(group), length), IGNORE, dtype=torch.long)
    for row, e in enumerate(group):
        ids[row, : len(e.input_ids)] = torch.tensor(e.input_ids)
        labels[row, : len(e.labels)] = torch.tensor(e.labels)
    real = sum(len(e.input_ids) for e in group)
    return MicroBatch(ids, labels, real, length * len(group))


def split_batch(examples: list[Rendered], max_tokens: int, pad_id: int, *, packing: bool,
                device: str) -> list[MicroBatch]:
    """A training batch's micro-batches as the trainer makes them: packed rows with ``packing``, else padded rows
    grouped within ``device``'s padding slack."""
    if packing:
        return packed_micro_batches(examples, max_tokens, pad_id)
    return micro_batches(examples, max_tokens, pad_id, pad_slack(device))


def packed_micro_batches(examples: list[Rendered], max_tokens: int, pad_id: int) -> list[MicroBatch]:
    """Padding-free micro-batches: each is one row of concatenated examples, at most ``max_tokens`` tokens
    (first-fit, longest first); an example longer than the budget is a row of its own. ``pad_id`` is unused (there
    is no padding) and kept so both batchers are called alike."""
    rows: list[list[Rendered]] = []
    sizes: list[int] = []
    for example in sorted(examples, key=lambda e: len(e.input_ids), reverse=True):
        n = len(example.input_ids)
        for k, size in enumerate(sizes):
            if size + n <= max_tokens:
                rows[k].append(example)
                sizes[k] += n
                break
        else:
            rows.append([example])
            sizes.append(n)
    return [_pack(row) for row in rows]


def _pack(row: list[Rendered]) -> MicroBatch:
    ids, labels, positions = [], [], []
    for e in row:
        ids.extend(e.input_ids)
        # An example's first token is never a target: the previous example's last position must not predict it.
        labels.extend([IGNORE, *e.labels[1:]])
        positions.extend(range(len(e.input_ids)))
    n = len(ids)
    return MicroBatch(torch.tensor([ids]), torch.tensor([labels]), n, n, position_ids=torch.tensor([positions]))
