"""The public kernel functions: check the inputs, then route them to Triton or to torch.

Routing (`backend`), decided per call:

- CUDA tensors go to the Triton kernels in `redgame.kernels.ops`;
- CPU tensors with TRITON_INTERPRET=1 go to the same Triton kernels, run by Triton's
  interpreter (how CI tests the kernels without a GPU);
- anything else (CPU, float64, or no triton installed) goes to the torch path in
  `redgame.kernels.reference`; for `token_logprobs` and `fused_preference_loss` it is
  chunked over the vocabulary.

Triton is imported only when a Triton path is taken, so `import redgame.kernels` works
without it.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import operator
import os

import torch

from redgame.errors import UserError

from . import reference
from .logprobs import TokenLogprobs
from .preference import FusedPreferenceLoss, PreferenceDetails, check_fused_inputs

TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether triton can be imported (looked up once, without importing it)."""
    try:
        return importlib.util.find_spec("triton") is not None
    except (ImportError, ValueError):  # e.g. sys.modules["triton"] = None
        return False


def interpret_requested() -> bool:
    """True when TRITON_INTERPRET asks for Triton's CPU interpreter (read on every call)."""
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() in ("1", "true", "on", "yes")


def backend(*tensors: torch.Tensor) -> str:
    """"triton", "interpret" or "torch" for these (already validated) input tensors."""
    if not triton_available() or any(t.dtype not in TRITON_DTYPES for t in tensors if t.is_floating_point()):
        return "torch"
    if any(t.numel() == 0 for t in tensors):  # nothing to launch
        return "torch"
    if interpret_requested():  # the kernels are the interpreter's, on CUDA tensors too
        return "interpret"
    if all(t.is_cuda for t in tensors):
        return "triton"
    return "torch"


def _check_frozen(name: str, tensor: torch.Tensor, func: str) -> None:
    if tensor.requires_grad:
        raise UserError(
            f"{func}: {name} requires grad, but the fused LoRA keeps the base weight frozen "
            f"(no gradient is computed for it); call {name}.requires_grad_(False) or use peft's own layer")


def _check_same_device(func: str, **tensors: torch.Tensor) -> None:
    devices = {name: t.device for name, t in tensors.items() if t is not None}
    if len(set(devices.values())) > 1:
        raise UserError(f"{func}: tensors are on different devices: {devices}")


def _scale_values(scale, n_adapters: int, func: str) -> list[float] | torch.Tensor:
    """The per-adapter scales: a list of n floats, or a detached [n] tensor as given."""
    if isinstance(scale, torch.Tensor):
        vec = scale.detach().reshape(-1)
    else:
        vec = [_one_scale(s, func) for s in (scale if isinstance(scale, (list, tuple)) else [scale])]
    count = vec.numel() if isinstance(vec, torch.Tensor) else len(vec)
    if count not in (1, n_adapters):
        raise UserError(f"{func}: scale has {count} entries, expected 1 or n_adapters={n_adapters}")
    if count == 1 and n_adapters > 1:
        vec = vec.expand(n_adapters) if isinstance(vec, torch.Tensor) else vec * n_adapters
    return vec


def _scales_tensor(values, device, dtype=torch.float32) -> torch.Tensor:
    """The scales as a [n] tensor on `device`; a CUDA copy goes through pinned memory, without a host sync."""
    if isinstance(values, torch.Tensor):
        return values.to(device=device, dtype=dtype).contiguous()
    vec = torch.tensor(values, dtype=dtype)
    if device.type == "cuda":
        return vec.pin_memory().to(device, non_blocking=True)
    return vec


def _check_lora_shapes(func: str, x, weight, lora_a, lora_b, bias, adapter_dims: int) -> None:
    for name, value in (("x", x), ("weight", weight), ("lora_a", lora_a), ("lora_b", lora_b)):
        if not isinstance(value, torch.Tensor) or not value.is_floating_point():  # integer A or B were cast silently
            shown = value.dtype if isinstance(value, torch.Tensor) else type(value).__name__
            raise UserError(f"{func}: {name} must be a floating-point tensor, got {shown}")
    if x.dim() < 1:
        raise UserError(f"{func}: x must have at least one dimension, got a scalar")
    if weight.dim() != 2:
        raise UserError(f"{func}: weight must be [N, K], got shape {tuple(weight.shape)}")
    n, k = weight.shape
    if x.shape[-1] != k:
        raise UserError(f"{func}: x has last dim {x.shape[-1]} but weight is [N={n}, K={k}]")
    want = "[r, K] and [N, r]" if adapter_dims == 2 else "[n_adapters, r, K] and [n_adapters, N, r]"
    ok = lora_a.dim() == adapter_dims and lora_b.dim() == adapter_dims
    ok = ok and lora_a.shape[-1] == k and lora_b.shape[-2] == n and lora_b.shape[-1] == lora_a.shape[-2]
    ok = ok and lora_a.shape[:-2] == lora_b.shape[:-2]
    if not ok:
        raise UserError(f"{func}: lora_a {tuple(lora_a.shape)} and lora_b {tuple(lora_b.shape)} must be {want} "
                        f"for weight [N={n}, K={k}]")
    if bias is not None and tuple(bias.shape) != (n,):
        raise UserError(f"{func}: bias must be [N={n}], got {tuple(bias.shape)}")
    if weight.dtype != x.dtype:
        raise UserError(f"{func}: x is {x.dtype} but weight is {weight.dtype}; cast one of them")
    _check_frozen("weight", weight, func)


def _fused_lora(x, weight, lora_a, lora_b, scale, plan, bias):
    """The Triton path: x as [M, K] rows, A/B stacked [n, r, K] / [n, N, r]; scale a float or an fp32 [n] tensor."""
    from .ops.lora_linear import LoraLinearFunction

    k = x.shape[-1]
    y = LoraLinearFunction.apply(
        x.reshape(-1, k).contiguous(), weight, lora_a.to(x.dtype).contiguous(), lora_b.to(x.dtype).contiguous(),
        None if bias is None else bias.to(x.dtype).contiguous(), scale, plan)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def lora_linear(x, weight, lora_a, lora_b, scale: float, bias=None):
    """y = x·Wᵀ + scale·(x·Aᵀ)·Bᵀ (+ bias), differentiable in x, A, B (and bias); W is frozen.

    On CUDA: S = x·Aᵀ once per row block, then x·Wᵀ + (scale·S)·Bᵀ in one GEMM (LoRAFusion's
    split), without host syncs.

    Args:
      x: [..., K] input.
      weight: [N, K] frozen base weight (same dtype as x); one that requires grad is an error.
      lora_a: [r, K] and lora_b: [N, r], peft's layouts; cast to x's dtype.
      scale: the LoRA scaling (alpha / r in peft), a float.
      bias: optional [N].

    Returns:
      [..., N] in x's dtype.
    """
    func = "lora_linear"
    _check_lora_shapes(func, x, weight, lora_a, lora_b, bias, adapter_dims=2)
    _check_same_device(func, x=x, weight=weight, lora_a=lora_a, lora_b=lora_b, bias=bias)
    scale = _one_scale(scale, func)
    if backend(x, weight) == "torch" or lora_a.shape[0] == 0:  # rank 0: nothing for the kernels to add
        return reference.lora_linear_reference(x, weight, lora_a.to(x.dtype), lora_b.to(x.dtype), scale,
                                               None if bias is None else bias.to(x.dtype))
    return _fused_lora(x, weight, lora_a[None], lora_b[None], scale, None, bias)


def _one_scale(scale, func: str) -> float:
    """The LoRA scaling as a float; a sequence, a tensor of several entries, a string or a value that is not
    finite is an error."""
    try:
        value = None if isinstance(scale, str | bytes) else float(scale)
    except (TypeError, ValueError, RuntimeError):
        value = None
    if value is None or not math.isfinite(value):
        raise UserError(f"{func}: scale must be one finite number (alpha / r), got {scale!r}")
    return value


def multi_lora_linear(x, weight, lora_a, lora_b, scale, segment_ids, bias=None):
    """Per-row adapters in one pass (SGMV): row i uses adapter segment_ids[i], or none if it is −1.

    Rows are grouped by adapter, so each row meets only its own adapter and the work does
    not grow with n_adapters. The grouping is computed once per segment_ids tensor and
    reused by every call with the same (unmodified) tensor; on CUDA its range check is
    the only host sync, once per tensor.

    Args:
      x: [..., K] input.
      weight: [N, K] frozen base weight.
      lora_a: [n_adapters, r, K]; lora_b: [n_adapters, N, r].
      scale: one float for all adapters, or a sequence / tensor of n_adapters floats. Floats must be
        finite; a tensor is taken as it is (checking its values would cost a host sync).
      segment_ids: integer tensor of shape x.shape[:-1], values in [−1, n_adapters).
      bias: optional [N].

    Returns:
      [..., N] in x's dtype; gradients flow to x, every adapter's A and B (and bias).
    """
    func = "multi_lora_linear"
    if not isinstance(segment_ids, torch.Tensor):
        raise UserError(f"{func}: segment_ids must be an integer tensor, got {type(segment_ids).__name__}")
    _check_lora_shapes(func, x, weight, lora_a, lora_b, bias, adapter_dims=3)
    _check_same_device(func, x=x, weight=weight, lora_a=lora_a, lora_b=lora_b, bias=bias,
                       segment_ids=segment_ids)
    n_adapters = lora_a.shape[0]
    if segment_ids.is_floating_point() or segment_ids.is_complex() or segment_ids.dtype == torch.bool:
        raise UserError(f"{func}: segment_ids must be an integer tensor, got {segment_ids.dtype}")
    if tuple(segment_ids.shape) != tuple(x.shape[:-1]):
        raise UserError(f"{func}: segment_ids has shape {tuple(segment_ids.shape)}, expected x.shape[:-1]="
                        f"{tuple(x.shape[:-1])}")
    scales = _scale_values(scale, n_adapters, func)
    from .segments import segment_plan

    plan = segment_plan(segment_ids, n_adapters, func)
    if backend(x, weight) == "torch" or lora_a.shape[0] * lora_a.shape[1] == 0:  # no adapter, or rank 0
        return reference.multi_lora_linear_grouped(
            x, weight, lora_a.to(x.dtype), lora_b.to(x.dtype),
            _scales_tensor(scales, x.device, reference.compute_dtype(x.dtype)), plan,
            None if bias is None else bias.to(x.dtype))
    return _fused_lora(x, weight, lora_a, lora_b, _scales_tensor(scales, x.device), plan, bias)


def _check_targets(func: str, targets, ignore_index: int, vocab: int) -> int:
    """Target ids in [0, V) or ignore_index (one host sync on CUDA); returns ignore_index as an int."""
    if isinstance(ignore_index, bool):
        raise UserError(f"{func}: ignore_index must be an integer id, got a bool")
    try:
        ignore_index = operator.index(ignore_index)
    except TypeError:
        raise UserError(f"{func}: ignore_index must be an integer id, got {ignore_index!r}") from None
    targets = targets.long()  # as the kernels read them: a uint8 156 is not ignore_index -100
    kept = targets[targets != ignore_index]
    if kept.numel():
        low, high = torch.stack([kept.min(), kept.max()]).tolist()
        if low < 0 or high >= vocab:
            raise UserError(f"{func}: targets must lie in [0, {vocab}) or equal ignore_index={ignore_index}; "
                            f"got values in [{low}, {high}]")
    return ignore_index


def token_logprobs(hidden, head_weight, targets, ignore_index: int = -100):
    """log softmax(hidden·head_weightᵀ)[target] per row, without the [N, V] logits.

    When hidden requires grad, the forward pass also computes the gradient direction
    W_t − E_p[W] (saved, [N, d] fp32), so with a frozen head the whole forward + backward
    costs 4·N·V·d FLOPs and the backward pass O(N·d).

    Args:
      hidden: [N, d], differentiable.
      head_weight: [V, d]; it gets a gradient only if it requires grad.
      targets: [N] integer ids in [0, V), or ignore_index (those rows give 0).
      ignore_index: the id that marks a row to skip.

    Returns:
      [N] log-probs, fp32 (fp64 for fp64 inputs).
    """
    func = "token_logprobs"
    for name, value in dict(hidden=hidden, head_weight=head_weight, targets=targets).items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{func}: {name} must be a tensor, got {type(value).__name__}")
    if hidden.dim() != 2 or head_weight.dim() != 2 or hidden.shape[1] != head_weight.shape[1]:
        raise UserError(f"{func}: hidden must be [N, d] and head_weight [V, d], got "
                        f"{tuple(hidden.shape)} and {tuple(head_weight.shape)}")
    if targets.dim() != 1 or targets.shape[0] != hidden.shape[0]:
        raise UserError(f"{func}: targets must be [N={hidden.shape[0]}], got {tuple(targets.shape)}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise UserError(f"{func}: targets must be an integer tensor, got {targets.dtype}")
    if head_weight.shape[0] == 0:
        raise UserError(f"{func}: head_weight has no rows (V = 0): there is no token to score")
    _check_same_device(func, hidden=hidden, head_weight=head_weight, targets=targets)
    if hidden.dtype != head_weight.dtype or not hidden.is_floating_point():
        raise UserError(f"{func}: hidden and head_weight must share one float dtype, got {hidden.dtype} and "
                        f"{head_weight.dtype}")
    ignore_index = _check_targets(func, targets, ignore_index, head_weight.shape[0])
    path = backend(hidden, head_weight)
    hidden_grad = torch.is_grad_enabled() and hidden.requires_grad
    if path != "torch":
        hidden = hidden.contiguous()
    return TokenLogprobs.apply(hidden, head_weight, targets.long(), ignore_index, path, hidden_grad)


def _nll_weight(nll_weight, device):
    """A number as a float; per-pair weights as a detached tensor on the loss's device."""
    if isinstance(nll_weight, torch.Tensor):
        return nll_weight.detach().to(device)
    return float(nll_weight)


def fused_preference_loss(hidden, ref_hidden, head_weight, targets, beta: float = 0.1, kind: str = "dpo",
                          ignore_index: int = -100, nll_weight: float | torch.Tensor = 0.0, with_details: bool = False,
                          ref_logps=None):
    """DPO or IPO straight from the last hidden states: mean loss, with d hidden done in the forward pass.

    Batch convention (Liger-Kernel's): row b < B of `hidden` is the chosen answer of pair b
    and row B + b its rejected answer. The sequence log-prob of row b is the sum of
    log softmax(hidden[b, t]·head_weightᵀ)[targets[b, t]] over the positions whose target is
    not `ignore_index` (so targets[b, t] is the token that follows position t). With
    m_b = (π[b] − ref[b]) − (π[B+b] − ref[B+b]) the loss is

      DPO: mean_b −log σ(β·m_b);   IPO: mean_b (m_b − 1/(2β))²;
      plus nll_weight · mean_b(−π[b] / |y_b|), RPO's NLL on the chosen answers (off by default).

    Cost: 4·N·V·d FLOPs for the policy rows and 2·N·V·d for the reference rows (N counted
    tokens; none with `ref_logps`); no [T, V] logits: Triton on CUDA, a chunked torch path on CPU (TRITON_INTERPRET=1:
    the Triton kernels interpreted). The forward pass computes the gradient for `hidden`
    and saves it ([2B, T, d] in hidden's dtype); the backward pass only scales it. One host
    sync per call on CUDA (the target check and the row selection).

    Args:
      hidden: [2B, T, d] policy hidden states (the input of the LM head); gets the gradient.
      ref_hidden: [2B, T, d] reference-model hidden states; treated as a constant. None when
        `ref_logps` is given.
      head_weight: [V, d] LM head, frozen (one that requires grad is an error).
      targets: [2B, T] integer ids in [0, V), or ignore_index at prompt and padding positions.
      beta: β > 0. kind: "dpo" or "ipo". ignore_index: the id of positions that do not count.
      nll_weight: weight w ≥ 0 of the NLL term, or a [B] tensor of one weight per pair (the
        term is then mean_b(w_b · −π[b] / |y_b|)).
      with_details: also return a `PreferenceDetails` (margins, sequence sums, ...; detached).
      ref_logps: [2B] the reference's sequence log-probs, chosen first, where the caller has
        them already (Liger's ref_chosen_logps / ref_rejected_logps; the LLM game scores its
        reference once per step): then ref_hidden is None.

    Returns:
      The 0-dim loss (fp32; fp64 for fp64 inputs), or (loss, PreferenceDetails).
    """
    func = "fused_preference_loss"
    check_fused_inputs(func, hidden, ref_hidden, head_weight, targets, beta, kind, nll_weight, ref_logps)
    reference = dict(ref_hidden=ref_hidden) if ref_logps is None else dict(ref_logps=ref_logps)
    _check_same_device(func, hidden=hidden, head_weight=head_weight, targets=targets, **reference)
    ignore_index = _check_targets(func, targets, ignore_index, head_weight.shape[0])
    path = backend(hidden, head_weight, *([] if ref_hidden is None else [ref_hidden]))
    if path != "torch":
        hidden = hidden.contiguous()
        ref_hidden = None if ref_hidden is None else ref_hidden.contiguous()
    loss, *extras = FusedPreferenceLoss.apply(hidden, None if ref_hidden is None else ref_hidden.detach(),
                                              None if ref_logps is None else ref_logps.detach(), head_weight,
                                              targets.long(), float(beta), kind, ignore_index,
                                              _nll_weight(nll_weight, hidden.device), path)
    return (loss, PreferenceDetails(*extras)) if with_details else loss
