"""Switch a peft model's LoRA linears to the fused `lora_linear`, and back.

`patch_peft(model)` gives each `peft.tuners.lora.Linear` an instance-level `forward` that
calls `redgame.kernels.lora_linear` when the layer is in the plain case (one active
adapter, vanilla LoRA, a frozen `nn.Linear` base, no dropout in effect, unmerged). In
every other case it defers to peft's own forward, so outputs and gradients always equal
unpatched peft's. `unpatch(model)` removes the instance attribute again.
"""

from __future__ import annotations

import types

import torch

from redgame.errors import UserError

from .dispatch import lora_linear

_MARK = "_redgame_fused_lora"


def _plain_adapter(layer, x, args, kwargs):
    """The active adapter's name when the fused path computes exactly peft's result, else None."""
    if args or any(v is not None for v in kwargs.values()):
        return None
    if layer.disable_adapters or layer.merged or getattr(layer, "fan_in_fan_out", False):
        return None
    active = [name for name in layer.active_adapters if name in layer.lora_A]
    if len(active) != 1 or active[0] in getattr(layer, "lora_variant", {}):
        return None
    name = active[0]
    base = layer.get_base_layer()
    if type(base) is not torch.nn.Linear or base.weight.requires_grad or x.dtype != base.weight.dtype:
        return None
    if base.bias is not None and base.bias.requires_grad:
        return None
    if layer.lora_A[name].bias is not None or layer.lora_B[name].bias is not None:
        return None
    dropout = layer.lora_dropout[name]
    if not isinstance(dropout, torch.nn.Identity) and dropout.training and dropout.p > 0:
        return None
    return name


def _fused_forward(self, x, *args, **kwargs):
    name = _plain_adapter(self, x, args, kwargs)
    if name is None:
        return type(self).forward(self, x, *args, **kwargs)
    base = self.get_base_layer()
    return lora_linear(x, base.weight, self.lora_A[name].weight, self.lora_B[name].weight,
                       self.scaling[name], base.bias)


def _lora_linears(model):
    from peft.tuners.lora.layer import Linear as LoraLinear

    return [module for module in model.modules() if isinstance(module, LoraLinear)]


def patch_peft(model):
    """Route every peft LoRA `Linear` of `model` through the fused kernel; returns the model.

    Raises UserError if the model has no peft LoRA linear layer.
    """
    layers = _lora_linears(model)
    if not layers:
        raise UserError(f"patch_peft: {type(model).__name__} has no peft LoRA Linear layer to patch")
    for layer in layers:
        layer.forward = types.MethodType(_fused_forward, layer)
        setattr(layer, _MARK, True)
    return model


def unpatch(model):
    """Undo `patch_peft`: the LoRA layers use peft's own forward again; returns the model."""
    for layer in _lora_linears(model):
        if layer.__dict__.pop(_MARK, False):
            layer.__dict__.pop("forward", None)
    return model


def patched_layers(model) -> int:
    """How many LoRA layers of `model` are currently patched."""
    return sum(bool(layer.__dict__.get(_MARK)) for layer in _lora_linears(model))
