"""Padding-free packing: examples concatenated in one row, each isolated by position ids that restart at 0. The
loss, its gradient and every example's hidden states are those of the unpacked (right-padded) batch."""

from __future__ import annotations

import csv
import random

import pytest
import torch

from test_train import write_jsonl
from tunewise import models
from tunewise.train import TrainConfig, train
from tunewise.train.batching import micro_batches, packed_micro_batches
from tunewise.train.render import IGNORE, Renderer
from tunewise.train.trainer import _core_and_head, _sums, render_file

TINY = models.TINY_MODEL


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    torch.set_num_threads(1)
    path = write_jsonl(tmp_path_factory.mktemp("pack") / "train.jsonl", 12, seed=4)
    tokenizer = models.load_tokenizer(TINY)
    spec = models.resolve(TINY)
    examples = render_file(path, Renderer(tokenizer, model_name=spec.name), spec.context_length, "training_file",
                           TINY)
    torch.manual_seed(0)
    model = models.load_model(TINY, dtype=torch.float32, device="cpu")
    model.config.use_cache = False
    return model, examples, tokenizer.pad_token_id, path


def _loss_and_grads(model, batches):
    core, head = _core_and_head(model)
    model.zero_grad(set_to_none=True)
    total, correct, count = 0.0, 0, 0
    for mb in batches:
        loss, c, n = _sums(model, core, head, mb, "cpu")
        loss.backward()
        total += loss.item()
        correct += c
        count += n
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return total, correct, count, grads


def test_packed_batch_has_the_loss_and_gradient_of_the_unpacked_one(setup):
    model, examples, pad_id, _ = setup
    lengths = sorted({len(e.input_ids) for e in examples})
    assert len(lengths) > 1  # examples of different lengths: the unpacked batch has padding
    unpacked = micro_batches(examples, 10_000, pad_id)
    packed = packed_micro_batches(examples, 10_000, pad_id)
    assert len(packed) == 1 and packed[0].input_ids.shape == (1, sum(len(e.input_ids) for e in examples))
    assert packed[0].padded_tokens == packed[0].real_tokens  # no padding at all
    assert sum(mb.padded_tokens for mb in unpacked) > sum(mb.real_tokens for mb in unpacked)
    loss_u, correct_u, n_u, grads_u = _loss_and_grads(model, unpacked)
    loss_p, correct_p, n_p, grads_p = _loss_and_grads(model, packed)
    assert n_p == n_u == sum(e.n_labels for e in examples) and correct_p == correct_u
    assert loss_p == pytest.approx(loss_u, rel=1e-5)
    assert grads_u.keys() == grads_p.keys() and grads_u
    for name in grads_u:  # float32 summation order: differences within 1e-5 of each tensor's largest entry
        scale = grads_u[name].abs().max().item()
        assert (grads_p[name] - grads_u[name]).abs().max().item() <= 1e-5 * scale + 1e-8, name


def test_no_example_attends_to_another(setup):
    """Changing the first example of a packed row changes nothing of the second; without the restarting position
    ids (plain concatenation) it would."""
    model, examples, pad_id, _ = setup
    a, b = examples[0], examples[1]
    row = packed_micro_batches([a, b], 10_000, pad_id)[0]
    first = len(max([a, b], key=lambda e: len(e.input_ids)).input_ids)  # packed longest first
    core, _ = _core_and_head(model)
    changed = row.input_ids.clone()
    rng = random.Random(0)
    changed[0, 1:first] = torch.tensor([rng.randrange(100, 1000) for _ in range(first - 1)])
    with torch.no_grad():
        hidden = core(input_ids=row.input_ids, position_ids=row.position_ids).last_hidden_state
        hidden_changed = core(input_ids=changed, position_ids=row.position_ids).last_hidden_state
        plain = core(input_ids=row.input_ids).last_hidden_state
        plain_changed = core(input_ids=changed).last_hidden_state
    torch.testing.assert_close(hidden_changed[0, first:], hidden[0, first:], rtol=0, atol=1e-6)
    assert not torch.allclose(hidden_changed[0, 1:first], hidden[0, 1:first])  # the change did reach example one
    assert not torch.allclose(plain_changed[0, first:], plain[0, first:], atol=1e-4)  # unisolated: it leaks
    assert row.labels[0, 0] == IGNORE and row.labels[0, first] == IGNORE  # no target across the boundary


def test_training_with_packing_matches_training_without(setup, tmp_path):
    _, _, _, path = setup
    results = {}
    for packing in (False, True):
        out = tmp_path / f"packing-{packing}"
        results[packing] = train(TrainConfig(training_file=path, model=TINY, n_epochs=1, batch_size=4, seed=2,
                                             output_dir=out, num_threads=1, max_tokens_per_microbatch=512,
                                             packing=packing))
    with open(results[False].metrics_csv) as f_u, open(results[True].metrics_csv) as f_p:
        rows_u, rows_p = list(csv.DictReader(f_u)), list(csv.DictReader(f_p))
    assert len(rows_u) == len(rows_p) == 3
    for ru, rp in zip(rows_u, rows_p, strict=True):
        assert float(rp["train_loss"]) == pytest.approx(float(ru["train_loss"]), rel=1e-4)
        assert rp["train_accuracy"] == ru["train_accuracy"]
    assert results[True].padding_waste == 0 and results[False].padding_waste > 0


def test_cpu_micro_batches_hold_rows_of_like_length_with_the_same_loss_and_gradient(setup):
    """On a CPU a row joins a micro-batch only if its padding is within the slack: less padded compute, and the
    summed loss and gradients are those of the batch padded into one micro-batch."""
    from tunewise.train.batching import CPU_PAD_SLACK, pad_slack

    model, examples, pad_id, _ = setup
    assert pad_slack("cpu") == CPU_PAD_SLACK and pad_slack("cuda:0") is None
    batch = examples[:8]
    one = micro_batches(batch, 10_000, pad_id)
    tight = micro_batches(batch, 10_000, pad_id, CPU_PAD_SLACK)
    assert len(one) == 1 and len(tight) > 1
    assert sum(mb.real_tokens for mb in tight) == sum(mb.real_tokens for mb in one)
    assert sum(mb.padded_tokens for mb in tight) < sum(mb.padded_tokens for mb in one)
    for mb in tight:
        longest = mb.input_ids.shape[1]
        rows = mb.padded_tokens // longest
        assert mb.real_tokens >= rows * longest * (1 - CPU_PAD_SLACK)
    a, b = _loss_and_grads(model, one), _loss_and_grads(model, tight)
    assert a[1:3] == b[1:3]
    assert a[0] == pytest.approx(b[0], rel=1e-5)
    for name, grad in a[3].items():
        torch.testing.assert_close(b[3][name], grad, rtol=1e-4, atol=1e-6)
