"""Attention for half-precision training on the CPU: torch's SDPA, its backward pass in float32.

On a CPU, ``torch.nn.functional.scaled_dot_product_attention`` in bfloat16 runs its forward
pass fast but its backward pass slowly: on the embedded model's update shapes (6 rows of 34
queries over 78 keys, 9 heads of 64) forward and backward take 13.5 ms in bfloat16 against
3.9 ms for the same call on float32 copies of q, k and v (2-core Xeon, torch 2.13), and
attention's backward became the largest cost of a bfloat16 update after the matrix products.

``redgame_sdpa`` is transformers' own ``sdpa`` attention with two changes:

- when gradients flow through a half-precision call on the CPU, q, k and v are cast to
  float32 for the call and the output back;
- on CUDA, a query row that may attend to no key (a left-padding position of a batched
  prompt) attends to every key instead. What attention gives such a row differs between
  kernels (0 or NaN), and a NaN there reaches every row through the next layer's values
  (a masked key's weight is 0, and 0·NaN is NaN). On one H200 the tiny model's game in
  bfloat16 sampled from NaN logits with the LoRA kernels on and off alike, and ran with
  these rows opened (benchmarks/RESULTS.md); which kernel made the NaN is not established.
  Padding rows are never read, so no real token's output changes.

Anywhere else (float32 on the CPU; no gradient on the CPU) it is ``sdpa`` itself. Masks are
made as for ``sdpa``.

:func:`use_for` switches a loaded model whose attention is ``sdpa`` to it.
"""

from __future__ import annotations

import torch

from redgame.kernels.reference import HALF

NAME = "redgame_sdpa"


def attend_somewhere(mask: torch.Tensor | None) -> torch.Tensor | None:
    """``mask`` with every query row that sees no key opened to all keys (bool: True = attend; else additive)."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return mask | ~mask.any(dim=-1, keepdim=True)
    blocked = mask <= torch.finfo(mask.dtype).min / 2
    return mask.masked_fill(blocked.all(dim=-1, keepdim=True), 0.0)


def _attention(module, query, key, value, attention_mask, **kwargs):
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.device.type == "cuda":
        attention_mask = attend_somewhere(attention_mask)
    if query.device.type == "cpu" and query.dtype in HALF and torch.is_grad_enabled() and query.requires_grad:
        mask = attention_mask
        if mask is not None and mask.is_floating_point():  # an additive mask follows q to float32
            mask = mask.float()
        out, weights = sdpa_attention_forward(module, query.float(), key.float(), value.float(), mask, **kwargs)
        return out.to(query.dtype), weights
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def register() -> str:
    """Make ``redgame_sdpa`` known to transformers (attention and mask); returns its name."""
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register(NAME, _attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register(NAME, sdpa_mask)
    return NAME


def use_for(model) -> None:
    """Switch ``model`` from ``sdpa`` to ``redgame_sdpa``; other attentions are left as they are."""
    config = getattr(model, "config", None)
    if getattr(config, "_attn_implementation", None) != "sdpa" or not hasattr(model, "set_attn_implementation"):
        return
    model.set_attn_implementation(register())
