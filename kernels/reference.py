"""Torch references for the kernels: the CPU path of dispatch, and the baselines of tests and benchmarks.

All of them work in any float dtype, float64 included; half-precision inputs are computed
in fp32 (CPU half matmuls are slow and lose precision).

- `lora_linear_reference`: y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ (+ b), LoRA of Hu et al. 2021
  (arXiv 2106.09685), as plain autograd ops.
- `multi_lora_linear_grouped`: the same with an adapter per row (−1 = base only), rows
  grouped by adapter as in SGMV (Punica, arXiv 2310.18547): each row meets only its own
  adapter, so the work does not grow with the number of adapters.
- `chunked_logprob_parts`: one pass over V in chunks with an online log-sum-exp
  (Milakov & Gimelshein 2018, arXiv 1805.02867) that also accumulates the softmax
  expectation of the head rows, E_p[W], with the same rescaling (the output accumulator
  of FlashAttention, Dao et al. 2022, arXiv 2205.14135, with W as keys and values). That
  expectation is the gradient direction, so no second pass over V is needed for d hidden.
- `chunked_head_grad`: d head, recomputing each chunk of logits from the saved LSE.
- `token_logprobs_naive`: logits + log_softmax + gather, which materialises [N, V].
- `in_compute_dtype`: a weight in its compute dtype; a frozen half-precision head is upcast
  once and the copy reused while the weight is unchanged, not chunk by chunk on every call.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch
import torch.nn.functional as F

# Elements of one [N, chunk] logits block in the chunked path (16 MiB in fp32).
DEFAULT_CHUNK_ELEMENTS = 1 << 22


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half precision, else the dtype itself (fp32 stays fp32, fp64 stays fp64)."""
    return torch.promote_types(dtype, torch.float32)


def lora_linear_reference(x, weight, lora_a, lora_b, scale, bias=None):
    """y = x·Wᵀ + scale·(x·Aᵀ)·Bᵀ (+ bias); x [..., K], W [N, K], A [r, K], B [N, r].

    The scale multiplies the rank-r product x·Aᵀ, not the [..., N] output, and the LoRA term
    is added in place: the same sum with less memory traffic.
    """
    return F.linear(x, weight, bias).add_(_lora_term(x, lora_a, lora_b, scale))


def _lora_term(x, lora_a, lora_b, scale):
    """scale·(x·Aᵀ)·Bᵀ, scaled at rank r."""
    return F.linear(F.linear(x, lora_a) * scale, lora_b)


def multi_lora_linear_grouped(x, weight, lora_a, lora_b, scale, plan, bias=None):
    """Rows of x pick adapters: A [n, r, K], B [n, N, r], scale [n]; `plan` groups the rows.

    `plan` is a `redgame.kernels.segments.SegmentPlan` of the flattened rows (CPU tensors).
    Each adapter multiplies only its own rows; rows of segment −1 get x·Wᵀ (+ bias) alone.
    Where the ids are sorted (``plan.sorted``: each adapter's rows one contiguous run, as the
    game's scorer lays them out) the rows are slices of x and the output is added to in place.
    """
    k = x.shape[-1]
    flat = x.reshape(-1, k)
    out = F.linear(flat, weight, bias)
    bounds = plan.bounds.tolist()
    for adapter in range(lora_a.shape[0]):
        start, stop = bounds[adapter + 1], bounds[adapter + 2]
        if start == stop:
            continue
        if plan.sorted:  # the adapter's rows are flat[start:stop]: slices, no gather or scatter
            rows = flat if stop - start == len(flat) else flat[start:stop]
            out[start:stop] += _lora_term(rows, lora_a[adapter], lora_b[adapter], scale[adapter])
        else:
            rows = plan.order[start:stop].long()
            out = out.index_add(0, rows, _lora_term(flat[rows], lora_a[adapter], lora_b[adapter], scale[adapter]))
    if bounds[1] == len(flat):  # no row meets an adapter: still a zero gradient for A and B, as the kernels give
        out = out + (lora_a[:0].sum() + lora_b[:0].sum()).to(out.dtype)
    return out.reshape(*x.shape[:-1], weight.shape[0])


def token_logprobs_naive(hidden, head_weight, targets, ignore_index: int = -100):
    """log softmax(hidden·headᵀ)[target] per row via the full [N, V] logits; ignored rows give 0.

    The usual recipe: logits in the input dtype, log_softmax in fp32 (or fp64).
    """
    logits = (hidden @ head_weight.T).to(compute_dtype(hidden.dtype))
    valid = targets != ignore_index
    picked = torch.log_softmax(logits, dim=-1).gather(1, torch.where(valid, targets, 0)[:, None])[:, 0]
    return torch.where(valid, picked, torch.zeros_like(picked))


# The last frozen weight upcast (a weak reference), its key, its copy, and the storage the copy was made from.
_upcast = {"weight": None, "key": None, "copy": None, "storage": None}
HALF = (torch.bfloat16, torch.float16)


def storage_key(tensor: torch.Tensor, *extra) -> tuple:
    """What identifies a tensor's contents for a cache: its version counter, address, shape and strides.

    A cache keyed on it must also hold ``tensor.untyped_storage()``: while that storage lives, no
    other tensor (one swapped in through ``.data``, whose version counter starts again) can be
    allocated at its address.
    """
    return (tensor._version, tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), *extra)


def _forget_upcast(dead: weakref.ref) -> None:
    """A cached weight died: its copy and storage go with it (a dropped model's head is not kept alive)."""
    if _upcast["weight"] is dead:
        _upcast.update(weight=None, key=None, copy=None, storage=None)


def in_compute_dtype(weight: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """``weight`` detached, in ``dtype`` (a compute dtype, at least float32): exact, an upcast loses nothing.

    A frozen half-precision weight (the LM head of LoRA roles in bfloat16) is upcast once and
    the copy reused while the same tensor is unchanged (``_version``, bumped by any in-place
    write such as an optimiser step, and its storage); one copy is kept, that of the last such
    weight. The storage the copy was made from is held with it, so that a new tensor swapped in
    through ``.data`` cannot be given its address and pass for it. Writes that bypass the version
    counter (through ``.data`` in place, or a numpy view) are not seen. Inference-mode tensors have
    no version counter: they are upcast every call. On a 2-core CPU, upcasting SmolLM2's head chunk by chunk on every call took 2.7 s of a 21 s
    bfloat16 update.
    """
    if weight.dtype not in HALF or weight.requires_grad or weight.is_inference():
        return weight.detach().to(dtype)
    last, key = _upcast["weight"], storage_key(weight, dtype)
    if last is None or last() is not weight or _upcast["key"] != key:
        _upcast.update(weight=weakref.ref(weight, _forget_upcast), key=key, copy=weight.detach().to(dtype),
                       storage=weight.untyped_storage())
    return _upcast["copy"]


def chunk_size(n_rows: int, vocab: int, chunk_elements: int | None = None) -> int:
    """Vocabulary chunk length so that one [n_rows, chunk] block holds about chunk_elements."""
    elements = DEFAULT_CHUNK_ELEMENTS if chunk_elements is None else chunk_elements
    return max(1, min(vocab, elements // max(n_rows, 1)))


@dataclass
class LogprobParts:
    """What one online pass over the vocabulary gives, per row (all in the compute dtype).

    lse: [N] log Σ_v exp(h·W_v); target_logit: [N] h·W_t (0 where ignored);
    expected_head: [N, d] E_p[W] = Σ_v softmax_v·W_v, or None when it was not asked for.
    direction: [N, d] W_t − E_p[W] where a pass computes it directly (then expected_head is None).
    """

    lse: torch.Tensor
    target_logit: torch.Tensor
    expected_head: torch.Tensor | None
    direction: torch.Tensor | None = None


def chunked_logprob_parts(hidden, head, targets, ignore_index: int, with_expectation: bool,
                          chunk_elements: int | None = None) -> LogprobParts:
    """`LogprobParts` in torch, [N, chunk] logits at a time: 2·N·V·d FLOPs, 4·N·V·d with the expectation."""
    dtype = compute_dtype(hidden.dtype)
    h = hidden.detach().to(dtype)
    n, vocab = h.shape[0], head.shape[0]
    chunk = chunk_size(n, vocab, chunk_elements)
    run_max = torch.full((n,), float("-inf"), dtype=dtype, device=h.device)
    run_sum = torch.zeros(n, dtype=dtype, device=h.device)
    expect = torch.zeros_like(h) if with_expectation else None
    head = in_compute_dtype(head, dtype)
    for v0 in range(0, vocab, chunk):
        w = head[v0:v0 + chunk]
        probs = h @ w.T  # the logits, turned into exp(logits − running max) in place below
        new_max = torch.maximum(run_max, probs.amax(dim=1))
        alpha = torch.exp(run_max - new_max)
        probs.sub_(new_max[:, None]).exp_()
        run_sum = run_sum * alpha + probs.sum(dim=1)
        if expect is not None:
            expect = torch.addmm(expect.mul_(alpha[:, None]), probs, w)
        run_max = new_max
        del probs
    safe = torch.where(targets != ignore_index, targets, 0)
    target_logit = (h * head[safe]).sum(1)
    if expect is not None:
        expect.div_(run_sum[:, None])
    return LogprobParts(run_max + run_sum.log(), target_logit, expect)


def chunked_head_grad(hidden, head, targets, lse, grad, ignore_index: int,
                      chunk_elements: int | None = None) -> torch.Tensor:
    """d head [V, d] of Σ_i grad_i·log p_i, chunk by chunk: 4·N·V·d FLOPs, [N, chunk] at a time.

    dW_v = Σ_i grad_i·(1[v = t_i] − p_iv)·h_i, with p recomputed from the saved LSE.
    """
    dtype = lse.dtype
    h = hidden.detach().to(dtype)
    valid = targets != ignore_index
    g = torch.where(valid, grad.to(dtype), torch.zeros_like(lse))
    grad_w = torch.zeros(head.shape, dtype=dtype, device=head.device)
    grad_w.index_add_(0, torch.where(valid, targets, 0), g[:, None] * h)
    chunk = chunk_size(h.shape[0], head.shape[0], chunk_elements)
    for v0 in range(0, head.shape[0], chunk):
        w = head[v0:v0 + chunk].detach().to(dtype)
        minus_dlogits = (h @ w.T).sub_(lse[:, None]).exp_().mul_(g[:, None])
        grad_w[v0:v0 + chunk] -= minus_dlogits.T @ h
        del minus_dlogits
    return grad_w.to(head.dtype)
