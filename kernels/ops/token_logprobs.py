"""Fused linear + log-softmax + gather in Triton: log p(target) per row, logits never stored.

For hidden h [N, d], head W [V, d] and targets t [N]:

    logp_i = h_i·W_{t_i} − logsumexp_v(h_i·W_v)

The forward kernel tiles V in chunks of BLOCK_V and keeps a running (max, sum) per row:
the online softmax normaliser of Milakov & Gimelshein 2018 ("Online normalizer calculation
for softmax", arXiv 1805.02867). Only the per-row log-sum-exp [N] is saved.

The backward kernel recomputes each [BLOCK_M, BLOCK_V] logits tile and forms
dlogits = g·(onehot(t) − softmax) in registers, then adds dlogits·W_chunk into dh
(and, only when the head requires grad, dlogitsᵀ·h into dW) with fp32 atomics: the
recompute-instead-of-store scheme of Cut Cross-Entropy (Wijmans et al. 2024,
arXiv 2411.09009). Rows whose target is `ignore_index` give 0 and no gradient.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..dispatch import interpret_requested
from ._mode import check_mode


@triton.jit
def _logits_tile(H, W, offs_m, offs_v, mask_m, mask_v, D, stride_hn, stride_hd, stride_wv, stride_wd,
                 UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr):
    """The [BLOCK_M, BLOCK_V] tile h·Wᵀ in fp32, looping over d in BLOCK_D steps."""
    logits = tl.zeros((BLOCK_M, BLOCK_V), dtype=tl.float32)
    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        h = tl.load(H + offs_m[:, None] * stride_hn + offs_d[None, :] * stride_hd,
                    mask=mask_m[:, None] & mask_d[None, :], other=0.0)
        w = tl.load(W + offs_v[None, :] * stride_wv + offs_d[:, None] * stride_wd,
                    mask=mask_v[None, :] & mask_d[:, None], other=0.0)
        if UPCAST:
            h = h.to(tl.float32)
            w = w.to(tl.float32)
        logits = tl.dot(h, w, logits)
    return logits


@triton.jit
def _token_logprobs_fwd_kernel(
    H, W, T, OUT, LSE,
    N, V, D, IGNORE,
    stride_hn, stride_hd, stride_wv, stride_wd,
    UPCAST: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < N
    targets = tl.load(T + offs_m, mask=mask_m, other=IGNORE)
    row_max = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    row_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    target_logit = tl.zeros((BLOCK_M,), dtype=tl.float32)
    for v0 in range(0, V, BLOCK_V):
        offs_v = v0 + tl.arange(0, BLOCK_V)
        mask_v = offs_v < V
        logits = _logits_tile(H, W, offs_m, offs_v, mask_m, mask_v, D, stride_hn, stride_hd, stride_wv, stride_wd,
                              UPCAST, BLOCK_M, BLOCK_V, BLOCK_D)
        logits = tl.where(mask_v[None, :], logits, float("-inf"))
        new_max = tl.maximum(row_max, tl.max(logits, axis=1))
        row_sum = row_sum * tl.exp(row_max - new_max) + tl.sum(tl.exp(logits - new_max[:, None]), axis=1)
        row_max = new_max
        target_logit += tl.sum(tl.where(offs_v[None, :] == targets[:, None], logits, 0.0), axis=1)
    lse = row_max + tl.log(row_sum)
    valid = targets != IGNORE
    tl.store(OUT + offs_m, tl.where(valid, target_logit - lse, 0.0), mask=mask_m)
    tl.store(LSE + offs_m, lse, mask=mask_m)


@triton.jit
def _token_logprobs_bwd_kernel(
    H, W, T, LSE, GRAD, DH, DW,
    N, V, D, IGNORE,
    stride_hn, stride_hd, stride_wv, stride_wd,
    HEAD_GRAD: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_v = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_v = pid_v * BLOCK_V + tl.arange(0, BLOCK_V)
    mask_m = offs_m < N
    mask_v = offs_v < V
    targets = tl.load(T + offs_m, mask=mask_m, other=IGNORE)
    grad = tl.load(GRAD + offs_m, mask=mask_m, other=0.0).to(tl.float32)
    grad = tl.where(targets != IGNORE, grad, 0.0)
    lse = tl.load(LSE + offs_m, mask=mask_m, other=0.0)

    logits = _logits_tile(H, W, offs_m, offs_v, mask_m, mask_v, D, stride_hn, stride_hd, stride_wv, stride_wd,
                          UPCAST, BLOCK_M, BLOCK_V, BLOCK_D)
    prob = tl.where(mask_v[None, :], tl.exp(logits - lse[:, None]), 0.0)
    onehot = (offs_v[None, :] == targets[:, None]).to(tl.float32)
    dlogits = grad[:, None] * (onehot - prob)

    for d0 in range(0, D, BLOCK_D):
        offs_d = d0 + tl.arange(0, BLOCK_D)
        mask_d = offs_d < D
        w = tl.load(W + offs_v[:, None] * stride_wv + offs_d[None, :] * stride_wd,
                    mask=mask_v[:, None] & mask_d[None, :], other=0.0)
        if UPCAST:
            dh = tl.dot(dlogits, w.to(tl.float32))
        else:
            dh = tl.dot(dlogits.to(w.dtype), w)
        tl.atomic_add(DH + offs_m[:, None] * D + offs_d[None, :], dh,
                      mask=mask_m[:, None] & mask_d[None, :])
        if HEAD_GRAD:
            h = tl.load(H + offs_m[:, None] * stride_hn + offs_d[None, :] * stride_hd,
                        mask=mask_m[:, None] & mask_d[None, :], other=0.0)
            if UPCAST:
                dw = tl.dot(tl.trans(dlogits), h.to(tl.float32))
            else:
                dw = tl.dot(tl.trans(dlogits.to(h.dtype)), h)
            tl.atomic_add(DW + offs_v[:, None] * D + offs_d[None, :], dw,
                          mask=mask_v[:, None] & mask_d[None, :])


def launch_config(interpret: bool) -> dict:
    """Fixed tiles and options of both kernels (no autotune: it needs a GPU driver).

    The interpreter upcasts to fp32 after loading (its bf16 `tl.dot` is wrong).
    """
    if interpret:
        return dict(BLOCK_M=16, BLOCK_V=64, BLOCK_D=32, UPCAST=True)
    return dict(BLOCK_M=64, BLOCK_V=128, BLOCK_D=64, UPCAST=False, num_warps=8, num_stages=2)


def token_logprobs_forward(hidden, head, targets, ignore_index: int):
    """(log p(target) [N] fp32, log-sum-exp [N] fp32); hidden [N, d], head [V, d], targets [N]."""
    n, d = hidden.shape
    v = head.shape[0]
    out = torch.full((n,), float("nan"), device=hidden.device, dtype=torch.float32)
    lse = torch.full((n,), float("nan"), device=hidden.device, dtype=torch.float32)
    cfg = launch_config(interpret_requested())
    check_mode(_token_logprobs_fwd_kernel)
    _token_logprobs_fwd_kernel[(triton.cdiv(n, cfg["BLOCK_M"]),)](
        hidden, head, targets, out, lse, n, v, d, ignore_index,
        hidden.stride(0), hidden.stride(1), head.stride(0), head.stride(1), **cfg,
    )
    return out, lse


def token_logprobs_backward(grad_out, hidden, head, targets, lse, ignore_index: int, head_grad: bool):
    """(d hidden, d head or None) for out = token_logprobs_forward(hidden, head, targets)."""
    n, d = hidden.shape
    v = head.shape[0]
    dh = torch.zeros((n, d), device=hidden.device, dtype=torch.float32)
    dw = torch.zeros((v, d), device=hidden.device, dtype=torch.float32) if head_grad else dh
    cfg = launch_config(interpret_requested())
    grid = (triton.cdiv(n, cfg["BLOCK_M"]), triton.cdiv(v, cfg["BLOCK_V"]))
    check_mode(_token_logprobs_bwd_kernel)
    _token_logprobs_bwd_kernel[grid](
        hidden, head, targets, lse, grad_out, dh, dw, n, v, d, ignore_index,
        hidden.stride(0), hidden.stride(1), head.stride(0), head.stride(1),
        HEAD_GRAD=head_grad, **cfg,
    )
    return dh.to(hidden.dtype), (dw.to(head.dtype) if head_grad else None)


class TokenLogprobsFunction(torch.autograd.Function):
    """Autograd for the fused token log-probs; the head gets a gradient only if it needs one."""

    @staticmethod
    def forward(ctx, hidden, head, targets, ignore_index):
        out, lse = token_logprobs_forward(hidden, head, targets, ignore_index)
        ctx.save_for_backward(hidden, head, targets, lse)
        ctx.ignore_index = ignore_index
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, head, targets, lse = ctx.saved_tensors
        dh, dw = token_logprobs_backward(grad_out.contiguous(), hidden, head, targets, lse,
                                         ctx.ignore_index, ctx.needs_input_grad[1])
        return (dh if ctx.needs_input_grad[0] else None), dw, None, None
