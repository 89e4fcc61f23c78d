"""Fused LoRA linear in Triton: y = x·Wᵀ + s_a·(x·A_aᵀ)·B_aᵀ (+ bias), forward and backward.

LoRA is Hu et al. 2021, "LoRA: Low-Rank Adaptation of Large Language Models"
(arXiv 2106.09685); per-row adapter choice in one launch follows the segmented-gather idea
of Punica (Chen et al. 2023, arXiv 2310.18547), here made trainable.

One kernel covers one adapter and many: the n adapters are stacked along the rank axis
(column c of the stacked rank belongs to adapter c // r), so a tile computes x·A_catᵀ for
every adapter with one `tl.dot` and zeroes the columns that do not belong to the row's
adapter (`segment_ids[i]`, −1 = base only). With a single adapter there is no mask.

- `_fused_lora_kernel` computes out = P·Qᵀ + ((P·Lᵀ) ⊙ mask ⊙ scale)·Uᵀ for one [BM, BN]
  tile in one pass over P. It also stores the masked projection P·Lᵀ (unscaled). The
  forward pass uses it with (P, Q, L, U) = (x, W, A, B). The input gradient uses it with
  (dy, Wᵀ, Bᵀ, Aᵀ): dx = dy·W + s·(dy·B)·A, and its stored projection g = dy·B is what dA
  needs.
- `_scaled_tn_kernel` computes C = Xᵀ·Y with a per-adapter scale on one axis:
  dA_cat = s·gᵀ·x and dB_cat = s·dyᵀ·(x·Aᵀ). Masked rows are already zero, so each
  adapter's gradient comes out of the same launch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..dispatch import interpret_requested
from ._common import check_mode


@triton.jit
def _fused_lora_kernel(
    P, Q, L, U, SEG, SCALE, BIAS, OUT, PROJ,
    M, N, K, RANK, N_COLS,
    stride_pm, stride_pk,
    stride_qn, stride_qk,
    stride_la, stride_lr, stride_lk,
    stride_ua, stride_un, stride_ur,
    stride_om, stride_on,
    stride_jm, stride_jc,
    HAS_SEG: tl.constexpr, HAS_BIAS: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
):
    pid_m = tl.program_id(0)
    pid_n = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_c = tl.arange(0, BLOCK_R)
    mask_m = offs_m < M
    mask_n = offs_n < N
    mask_c = offs_c < N_COLS
    adapter_c = offs_c // RANK
    rank_c = offs_c % RANK

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    proj = tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < K
        p = tl.load(P + offs_m[:, None] * stride_pm + offs_k[None, :] * stride_pk,
                    mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        q = tl.load(Q + offs_k[:, None] * stride_qk + offs_n[None, :] * stride_qn,
                    mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        low = tl.load(L + adapter_c[None, :] * stride_la + rank_c[None, :] * stride_lr
                      + offs_k[:, None] * stride_lk,
                      mask=mask_k[:, None] & mask_c[None, :], other=0.0)
        if UPCAST:
            p = p.to(tl.float32)
            q = q.to(tl.float32)
            low = low.to(tl.float32)
        acc = tl.dot(p, q, acc)
        proj = tl.dot(p, low, proj)

    if HAS_SEG:
        seg = tl.load(SEG + offs_m, mask=mask_m, other=-1)
        proj = tl.where(adapter_c[None, :] == seg[:, None], proj, 0.0)
    # Every N-tile computes the same projection; the first one writes it.
    if pid_n == 0:
        tl.store(PROJ + offs_m[:, None] * stride_jm + offs_c[None, :] * stride_jc,
                 proj.to(PROJ.dtype.element_ty), mask=mask_m[:, None] & mask_c[None, :])

    scale = tl.load(SCALE + adapter_c, mask=mask_c, other=0.0)
    up = tl.load(U + adapter_c[:, None] * stride_ua + rank_c[:, None] * stride_ur
                 + offs_n[None, :] * stride_un,
                 mask=mask_c[:, None] & mask_n[None, :], other=0.0)
    scaled = proj * scale[None, :]
    if UPCAST:
        acc = tl.dot(scaled, up.to(tl.float32), acc)
    else:
        acc = tl.dot(scaled.to(up.dtype), up, acc)
    if HAS_BIAS:
        bias = tl.load(BIAS + offs_n, mask=mask_n, other=0.0)
        acc += bias.to(tl.float32)[None, :]
    tl.store(OUT + offs_m[:, None] * stride_om + offs_n[None, :] * stride_on,
             acc.to(OUT.dtype.element_ty), mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _scaled_tn_kernel(
    X, Y, SCALE, C,
    M, NP, NQ, RANK,
    stride_xm, stride_xp, stride_ym, stride_yq, stride_cp, stride_cq,
    SCALE_AXIS: tl.constexpr, UPCAST: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_Q: tl.constexpr,
):
    pid_p = tl.program_id(0)
    pid_q = tl.program_id(1)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_q = pid_q * BLOCK_Q + tl.arange(0, BLOCK_Q)
    mask_p = offs_p < NP
    mask_q = offs_q < NQ
    acc = tl.zeros((BLOCK_P, BLOCK_Q), dtype=tl.float32)
    for m0 in range(0, M, BLOCK_M):
        offs_m = m0 + tl.arange(0, BLOCK_M)
        mask_m = offs_m < M
        xt = tl.load(X + offs_p[:, None] * stride_xp + offs_m[None, :] * stride_xm,
                     mask=mask_p[:, None] & mask_m[None, :], other=0.0)
        y = tl.load(Y + offs_m[:, None] * stride_ym + offs_q[None, :] * stride_yq,
                    mask=mask_m[:, None] & mask_q[None, :], other=0.0)
        if UPCAST:
            acc = tl.dot(xt.to(tl.float32), y.to(tl.float32), acc)
        else:
            acc = tl.dot(xt, y.to(xt.dtype), acc)
    if SCALE_AXIS == 0:
        acc = acc * tl.load(SCALE + offs_p // RANK, mask=mask_p, other=0.0)[:, None]
    else:
        acc = acc * tl.load(SCALE + offs_q // RANK, mask=mask_q, other=0.0)[None, :]
    tl.store(C + offs_p[:, None] * stride_cp + offs_q[None, :] * stride_cq,
             acc.to(C.dtype.element_ty), mask=mask_p[:, None] & mask_q[None, :])


def _rank_block(n_cols: int) -> int:
    return max(16, triton.next_power_of_2(n_cols))


def fused_lora_config(n_cols: int, interpret: bool) -> dict:
    """Fixed tiles and launch options of `_fused_lora_kernel` (no autotune: it needs a GPU driver).

    The interpreter upcasts tiles to fp32 after loading (its bf16 `tl.dot` is wrong) and
    uses small tiles; on a GPU the dots run in the input dtype with fp32 accumulation.
    """
    block_r = _rank_block(n_cols)
    if interpret:
        return dict(BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, BLOCK_R=block_r, UPCAST=True)
    return dict(BLOCK_M=64, BLOCK_N=128 if block_r <= 32 else 64, BLOCK_K=32, BLOCK_R=block_r, UPCAST=False,
                num_warps=4, num_stages=3)


def scaled_tn_config(rank_cols: int, scale_axis: int, interpret: bool) -> dict:
    """Fixed tiles of `_scaled_tn_kernel`; the rank-sized axis gets the narrow tile."""
    wide = 32 if interpret else 64
    rank_side = _rank_block(min(rank_cols, 128))
    block_p, block_q = (rank_side, wide) if scale_axis == 0 else (wide, rank_side)
    cfg = dict(SCALE_AXIS=scale_axis, BLOCK_M=32, BLOCK_P=block_p, BLOCK_Q=block_q, UPCAST=interpret)
    return cfg if interpret else dict(cfg, num_warps=4, num_stages=3)


def _fused_lora(p, q, q_strides, n, low, low_strides, up, up_strides, rank, n_cols,
                seg, scale, bias, out_dtype):
    """Launch `_fused_lora_kernel` for P [M, K]; Q, L, U are given with the strides of their roles."""
    m, k = p.shape
    out = torch.full((m, n), float("nan"), device=p.device, dtype=out_dtype)
    proj = torch.full((m, n_cols), float("nan"), device=p.device, dtype=torch.float32)
    cfg = fused_lora_config(n_cols, interpret_requested())
    grid = (triton.cdiv(m, cfg["BLOCK_M"]), triton.cdiv(n, cfg["BLOCK_N"]))
    check_mode(_fused_lora_kernel)
    _fused_lora_kernel[grid](
        p, q, low, up, seg if seg is not None else p, scale, bias if bias is not None else p,
        out, proj,
        m, n, k, rank, n_cols,
        p.stride(0), p.stride(1), *q_strides, *low_strides, *up_strides,
        out.stride(0), out.stride(1), proj.stride(0), proj.stride(1),
        HAS_SEG=seg is not None, HAS_BIAS=bias is not None, **cfg,
    )
    return out, proj


def _scaled_tn(x, y, scale, rank, scale_axis, out_dtype):
    """C = Xᵀ·Y, its rows (axis 0) or columns (axis 1) scaled by scale[index // rank]."""
    m, np_ = x.shape
    nq = y.shape[1]
    c = torch.full((np_, nq), float("nan"), device=x.device, dtype=out_dtype)
    cfg = scaled_tn_config(np_ if scale_axis == 0 else nq, scale_axis, interpret_requested())
    grid = (triton.cdiv(np_, cfg["BLOCK_P"]), triton.cdiv(nq, cfg["BLOCK_Q"]))
    check_mode(_scaled_tn_kernel)
    _scaled_tn_kernel[grid](
        x, y, scale, c, m, np_, nq, rank,
        x.stride(0), x.stride(1), y.stride(0), y.stride(1), c.stride(0), c.stride(1), **cfg,
    )
    return c


def lora_linear_forward(x, weight, lora_a, lora_b, scale, segment_ids, bias):
    """y [M, N] and the masked projection x·A_catᵀ [M, n·r] (fp32) for the backward pass.

    x [M, K], weight [N, K], lora_a [n, r, K], lora_b [n, N, r], scale fp32 [n],
    segment_ids int32 [M] or None (single adapter), bias [N] or None.
    """
    n_adapters, rank, _ = lora_a.shape
    return _fused_lora(
        x, weight, weight.stride(), weight.shape[0],
        lora_a, lora_a.stride(), lora_b, lora_b.stride(), rank, n_adapters * rank,
        segment_ids, scale, bias, x.dtype,
    )


def lora_linear_backward(grad_out, x, weight, lora_a, lora_b, scale, segment_ids, proj,
                         need_a: bool, need_b: bool):
    """(dx, dA [n, r, K] or None, dB [n, N, r] or None) for y = lora_linear_forward(...)."""
    n_adapters, rank, k = lora_a.shape
    sa, sb = lora_a.stride(), lora_b.stride()
    # dx = dy·W + s·(dy·B)·A: the forward kernel with (Wᵀ, Bᵀ, Aᵀ) in the roles of (W, A, B).
    dx, g = _fused_lora(
        grad_out, weight, (weight.stride(1), weight.stride(0)), k,
        lora_b, (sb[0], sb[2], sb[1]), lora_a, (sa[0], sa[2], sa[1]), rank, n_adapters * rank,
        segment_ids, scale, None, x.dtype,
    )
    grad_a = grad_b = None
    if need_a:
        grad_a = _scaled_tn(g, x, scale, rank, 0, lora_a.dtype).view(n_adapters, rank, k)
    if need_b:
        grad_b = _scaled_tn(grad_out, proj, scale, rank, 1, lora_b.dtype)
        grad_b = grad_b.view(-1, n_adapters, rank).permute(1, 0, 2)
    return dx, grad_a, grad_b


class LoraLinearFunction(torch.autograd.Function):
    """Autograd for the fused (multi-)LoRA linear; W and the scale are constants."""

    @staticmethod
    def forward(ctx, x, weight, lora_a, lora_b, scale, segment_ids, bias):
        out, proj = lora_linear_forward(x, weight, lora_a, lora_b, scale, segment_ids, bias)
        ctx.save_for_backward(x, weight, lora_a, lora_b, scale, segment_ids, proj)
        ctx.has_bias = bias is not None
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, lora_a, lora_b, scale, segment_ids, proj = ctx.saved_tensors
        need_x, _, need_a, need_b = ctx.needs_input_grad[:4]
        need_bias = ctx.needs_input_grad[6]
        grad_out = grad_out.contiguous()
        dx, da, db = lora_linear_backward(grad_out, x, weight, lora_a, lora_b, scale,
                                          segment_ids, proj, need_a, need_b)
        dbias = grad_out.sum(0) if need_bias else None
        return (dx if need_x else None), None, da, db, None, None, dbias
