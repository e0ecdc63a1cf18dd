"""The one-product LoRA forward (``tunewise.train.fused_lora``) computes vanilla PEFT's sums: the same outputs and
gradients (to float rounding), the same merged weights and the same saved adapter; the trainer installs it on
LoRA runs and leaves DoRA's variant alone."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.layer import Linear

from tunewise import models
from tunewise.train import TrainConfig, fused_lora
from tunewise.train.trainer import _load

TINY = models.TINY_MODEL


def lora_model(**kw):
    torch.manual_seed(0)
    model = models.load_model(TINY, dtype=torch.float32, device="cpu")
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=12, lora_dropout=0.0, target_modules="all-linear",
                                             task_type="CAUSAL_LM", **kw))
    with torch.no_grad():  # LoRA's B starts at zero: give the update something to add
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    return model


def loss_and_grads(model, ids):
    model.zero_grad()
    loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_the_sums_are_vanilla_loras():
    vanilla = lora_model()
    fused = copy.deepcopy(vanilla)
    n = fused_lora.install(fused)
    assert n == sum(len(m.lora_A) for m in fused.modules() if isinstance(m, Linear)) > 0
    ids = torch.randint(0, vanilla.config.vocab_size, (3, 17), generator=torch.Generator().manual_seed(1))
    loss_v, grads_v = loss_and_grads(vanilla, ids)
    loss_f, grads_f = loss_and_grads(fused, ids)
    torch.testing.assert_close(loss_f, loss_v)
    assert grads_f.keys() == grads_v.keys() and any("lora_A" in k for k in grads_f)
    for name in grads_v:
        torch.testing.assert_close(grads_f[name], grads_v[name], rtol=1e-4, atol=1e-6, msg=name)
    # Without gradients and under bf16 autocast too (GRPO samples from the live model; bf16 training autocasts).
    with torch.no_grad():
        torch.testing.assert_close(fused(input_ids=ids).logits, vanilla(input_ids=ids).logits)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(fused(input_ids=ids).logits, vanilla(input_ids=ids).logits,
                                       rtol=0.05, atol=0.05)


def test_merging_and_saving_are_vanilla_loras(tmp_path):
    vanilla = lora_model()
    fused = copy.deepcopy(vanilla)
    fused_lora.install(fused)
    vanilla.save_pretrained(tmp_path / "v")
    fused.save_pretrained(tmp_path / "f")
    assert (tmp_path / "f" / "adapter_model.safetensors").read_bytes() == \
        (tmp_path / "v" / "adapter_model.safetensors").read_bytes()
    merged_v = copy.deepcopy(vanilla).merge_and_unload(safe_merge=True).state_dict()
    merged_f = copy.deepcopy(fused).merge_and_unload(safe_merge=True).state_dict()
    assert merged_f.keys() == merged_v.keys()
    for name in merged_v:
        assert torch.equal(merged_f[name], merged_v[name]), name
    merged_f = copy.deepcopy(fused).merge_and_unload().state_dict()  # unsafe: in place
    for name in merged_v:
        assert torch.equal(merged_f[name], merged_v[name]), name
    # Merge then unmerge gives the base weights back, and uninstall restores vanilla PEFT.
    layer = next(m for m in fused.modules() if isinstance(m, Linear))
    before = layer.base_layer.weight.detach().clone()
    layer.merge()
    layer.unmerge()
    torch.testing.assert_close(layer.base_layer.weight, before)
    assert fused_lora.uninstall(fused) > 0
    assert not any(m.lora_variant for m in fused.modules() if isinstance(m, Linear))


def test_dora_keeps_its_own_variant():
    model = lora_model(use_dora=True)
    assert fused_lora.install(model) == 0


@pytest.mark.parametrize("method", ["lora", "full"])
def test_the_trainer_installs_it_on_lora_runs(tmp_path, method):
    config = TrainConfig(training_file=tmp_path / "t.jsonl", model=TINY, method=method, output_dir=tmp_path / "o")
    model = _load(config, 0, "cpu", "float32")
    has = [isinstance(v, fused_lora.AddmmLora) for m in model.modules() if isinstance(m, Linear)
           for v in m.lora_variant.values()]
    assert (bool(has) and all(has)) if method == "lora" else not has
