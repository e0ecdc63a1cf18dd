"""LoRA's update added to the frozen layer's output in one product, through PEFT's own extension point.

PEFT's vanilla LoRA forward is ``result + lora_B(lora_A(dropout(x))) * scaling``: three passes over the layer's
output (the product, the scaling, the sum) forward and two more backward, on tensors as large as the layer's own
output (``[tokens, 1536]`` for SmolLM2's MLP), for an update whose product is a rank-``r`` sliver of the work. On a
CPU those passes are memory-bound and cost more than the update's arithmetic. ``AddmmLora`` computes the same sum
as one ``torch.addmm(result, lora_A(dropout(x)), lora_B.weight.T, alpha=scaling)``: the output is written once, and
autograd's backward of ``addmm`` folds the scaling into its two products.

It is installed as a PEFT LoRA *variant* (``LoraLayer.lora_variant``, the hook DoRA uses) on the vanilla adapters
of ``peft.tuners.lora.Linear`` layers only; merging, unmerging and the saved adapter are vanilla LoRA's (the
variant keeps no state), so a saved adapter is the one PEFT would have saved. ``install`` leaves alone a layer
that already has a variant (DoRA), an adapter with a bias (``lora_bias``) and a PEFT without the hook.
"""

from __future__ import annotations

from typing import Any


def _variant_base():
    try:
        from peft.tuners.lora.layer import LoraVariant
    except ImportError:  # a PEFT before LoRA variants
        return None
    return LoraVariant


_Base = _variant_base()


if _Base is not None:

    class AddmmLora(_Base):
        """Vanilla LoRA, its update summed into the base output by one ``addmm`` (see the module docstring)."""

        @staticmethod
        def init(module: Any, adapter_name: str, **kwargs: Any) -> None:
            return None

        @staticmethod
        def merge_safe(module: Any, active_adapter: str, orig_weight: Any) -> Any:
            return orig_weight + module.get_delta_weight(active_adapter).to(orig_weight.dtype)

        @staticmethod
        def merge_unsafe(module: Any, active_adapter: str, orig_weight: Any) -> None:
            orig_weight.data += module.get_delta_weight(active_adapter).to(orig_weight.dtype)

        @staticmethod
        def unmerge(module: Any, active_adapter: str, orig_weight: Any) -> Any:
            return orig_weight - module.get_delta_weight(active_adapter).to(orig_weight.dtype)

        @staticmethod
        def forward(module: Any, active_adapter: str, x: Any, result: Any, **kwargs: Any) -> Any:
            import torch

            h = module.lora_A[active_adapter](module.lora_dropout[active_adapter](x))
            weight = module.lora_B[active_adapter].weight
            out = torch.addmm(result.reshape(-1, result.shape[-1]), h.reshape(-1, h.shape[-1]), weight.t(),
                              alpha=module.scaling[active_adapter])
            return out.view(result.shape)

else:  # pragma: no cover - PEFT without variants: nothing to install
    AddmmLora = None  # type: ignore[assignment,misc]


def install(model: Any) -> int:
    """Give every vanilla LoRA adapter of ``model``'s linear layers the one-product forward; return how many."""
    if AddmmLora is None:
        return 0
    from peft.tuners.lora.layer import Linear

    variant = AddmmLora()
    n = 0
    for module in model.modules():
        if not isinstance(module, Linear) or not hasattr(module, "lora_variant"):
            continue
        for name, lora_b in module.lora_B.items():
            if name in module.lora_variant or getattr(lora_b, "bias", None) is not None:
                continue
            module.lora_variant[name] = variant
            n += 1
    return n


def uninstall(model: Any) -> int:
    """Take the one-product forward off again (vanilla PEFT from then on); return how many adapters had it."""
    if AddmmLora is None:
        return 0
    n = 0
    for module in model.modules():
        variants = getattr(module, "lora_variant", None)
        if not isinstance(variants, dict):
            continue
        for name in [k for k, v in variants.items() if isinstance(v, AddmmLora)]:
            del variants[name]
            n += 1
    return n
