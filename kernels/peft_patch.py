"""Switch a peft model's LoRA linears to the fused kernels, and back; route rows to adapters.

`patch_peft(model)` gives each `peft.tuners.lora.Linear` an instance-level `forward` that
calls `redgame.kernels.lora_linear` when the layer is in the plain case (one active
adapter, vanilla LoRA, a frozen `nn.Linear` base, no dropout in effect, unmerged). In
every other case it defers to peft's own forward, so outputs and gradients always equal
unpatched peft's, to the rounding of the layer's dtype (float32 adapters on a half-precision
base are cast to the base's dtype in the fused path; peft keeps their term in float32).
`unpatch(model)` removes the instance attribute again.

`routed(model, adapters, rows)` runs a batch whose rows belong to different adapters in one
pass: inside the block every patched layer calls `multi_lora_linear`, row b taking adapter
`adapters[rows[b]]` (−1: the base alone), whatever adapter is active. This is how one
forward scores attacker and defender sequences together (Punica's segmented LoRA, Chen et
al. 2023, arXiv 2310.18547). `routable(model, adapters)` says whether that is exact.

`FUSED_CALLS` counts the layer calls that took the fused path ("lora", "multi_lora"), those
that fell back to peft ("peft") and those with the adapters switched off ("base": peft runs
the base layer alone), so a caller can record which implementation ran.
"""

from __future__ import annotations

import collections
import contextlib

import torch

from redgame.errors import UserError

from .dispatch import lora_linear, multi_lora_linear

_MARK = "_redgame_fused_lora"
_ROUTE = "_redgame_route"
FUSED_CALLS: collections.Counter = collections.Counter()


def _vanilla(layer, name: str) -> bool:
    """Adapter ``name`` of ``layer`` is plain LoRA: no variant (DoRA...), no LoRA bias, no dropout in effect."""
    if name not in layer.lora_A or name in getattr(layer, "lora_variant", {}):
        return False
    if layer.lora_A[name].bias is not None or layer.lora_B[name].bias is not None:
        return False
    dropout = layer.lora_dropout[name]
    return isinstance(dropout, torch.nn.Identity) or not dropout.training or dropout.p == 0


def _frozen_linear_base(layer, dtype) -> bool:
    base = layer.get_base_layer()
    if type(base) is not torch.nn.Linear or base.weight.requires_grad or dtype != base.weight.dtype:
        return False
    return base.bias is None or not base.bias.requires_grad


def _plain_adapter(layer, x, args, kwargs):
    """The active adapter's name when the fused path computes exactly peft's result, else None."""
    if args or any(v is not None for v in kwargs.values()):
        return None
    if layer.disable_adapters or layer.merged or getattr(layer, "fan_in_fan_out", False):
        return None
    active = [name for name in layer.active_adapters if name in layer.lora_A]
    if len(active) != 1 or not _vanilla(layer, active[0]) or not _frozen_linear_base(layer, x.dtype):
        return None
    return active[0]


def _routed_forward(layer, x, adapters: tuple, rows: torch.Tensor, segments: dict):
    base = layer.get_base_layer()
    if not adapters:
        FUSED_CALLS["base"] += 1
        return base(x)
    lora_a = torch.stack([layer.lora_A[name].weight for name in adapters])   # [n, r, K]
    lora_b = torch.stack([layer.lora_B[name].weight for name in adapters])   # [n, N, r]
    scales = [layer.scaling[name] for name in adapters]
    shape = tuple(x.shape[:-1])
    if shape not in segments:  # one tensor per input shape: every layer reuses its row grouping
        segments[shape] = rows.view(-1, *([1] * (x.dim() - 2))).expand(shape).contiguous()
    FUSED_CALLS["multi_lora"] += 1
    return multi_lora_linear(x, base.weight, lora_a, lora_b, scales, segments[shape], base.bias)


def _fused_forward(self, x, *args, **kwargs):
    route = self.__dict__.get(_ROUTE)
    if route is not None:
        return _routed_forward(self, x, *route)
    name = _plain_adapter(self, x, args, kwargs)
    if name is None:
        FUSED_CALLS["base" if self.disable_adapters else "peft"] += 1
        return type(self).forward(self, x, *args, **kwargs)
    FUSED_CALLS["lora"] += 1
    base = self.get_base_layer()
    return lora_linear(x, base.weight, self.lora_A[name].weight, self.lora_B[name].weight,
                       self.scaling[name], base.bias)


class _FusedForward:
    """A patched layer's ``forward``: :func:`_fused_forward` on it. A class rather than a bound method so that
    a patched model pickles and deep-copies (pickle rebuilds a bound method by looking its name up)."""

    def __init__(self, layer):
        self.layer = layer

    def __call__(self, x, *args, **kwargs):
        return _fused_forward(self.layer, x, *args, **kwargs)


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
        layer.forward = _FusedForward(layer)
        setattr(layer, _MARK, True)
    return model


def unpatch(model):
    """Undo `patch_peft`: the LoRA layers use peft's own forward again; returns the model."""
    for layer in _lora_linears(model):
        if layer.__dict__.pop(_MARK, False):
            layer.__dict__.pop("forward", None)
            layer.__dict__.pop(_ROUTE, None)
    return model


def patched_layers(model) -> int:
    """How many LoRA layers of `model` are currently patched."""
    return sum(bool(layer.__dict__.get(_MARK)) for layer in _lora_linears(model))


def routable(model, adapters) -> bool:
    """Whether `routed(model, adapters, ...)` computes exactly what peft computes for each row.

    Every LoRA layer must be a patched `Linear`, frozen, unmerged, and hold each adapter as vanilla
    LoRA of one common rank with no dropout in effect. A LoRA embedding or convolution, or a module
    peft keeps a copy of per adapter (`modules_to_save`, trainable tokens), runs the active adapter
    for every row, so it rules a shared pass out.
    """
    layers = _lora_linears(model)
    if not layers or any(not layer.__dict__.get(_MARK) for layer in layers) or _unroutable_modules(model):
        return False
    for layer in layers:
        if layer.merged or getattr(layer, "fan_in_fan_out", False):
            return False
        if not _frozen_linear_base(layer, layer.get_base_layer().weight.dtype):
            return False
        if not all(_vanilla(layer, name) for name in adapters):
            return False
        if len({layer.lora_A[name].weight.shape for name in adapters}) != 1:
            return False
    return True


def _unroutable_modules(model) -> bool:
    from peft.tuners.lora.layer import Linear as LoraLinear, LoraLayer
    from peft.utils.other import AuxiliaryTrainingWrapper

    return any(isinstance(module, AuxiliaryTrainingWrapper) or (isinstance(module, LoraLayer)
                                                              and not isinstance(module, LoraLinear))
               for module in model.modules())


@contextlib.contextmanager
def routed(model, adapters, rows: torch.Tensor):
    """Inside the block, row b of every batch goes through adapter `adapters[rows[b]]` (−1: none).

    Args:
      model: a patched peft model (`patch_peft`) for which `routable(model, adapters)` holds.
      adapters: adapter names; their order gives the segment ids.
      rows: [B] integer tensor on the model's device, one entry per sequence of the batch.
    """
    adapters = tuple(adapters)
    if not routable(model, adapters):
        raise UserError(f"routed: adapters {list(adapters)} cannot share one pass here (patch_peft the model; "
                        "every adapter must be vanilla LoRA of one rank with no dropout in effect)")
    layers = _lora_linears(model)
    segments: dict = {}  # shared by the layers, so multi_lora_linear groups the rows once per shape
    for layer in layers:
        layer.__dict__[_ROUTE] = (adapters, rows, segments)
    try:
        yield model
    finally:
        for layer in layers:
            layer.__dict__.pop(_ROUTE, None)
