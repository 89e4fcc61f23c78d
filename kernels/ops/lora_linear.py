"""Fused LoRA linear in Triton, LoRAFusion's split, with SGMV grouping for several adapters.

y = x·Wᵀ + s_a·(x·A_aᵀ)·B_aᵀ (+ bias), where a is the row's adapter (−1: the base alone).
LoRA is Hu et al. 2021 (arXiv 2106.09685).

Forward, as in LoRAFusion (Zhu et al. 2025, arXiv 2510.00206): `_lora_shrink_kernel`
computes the projection S = x·A_aᵀ [M, r] once per row block (split over K when there are
few row blocks); `_lora_expand_kernel` then computes x·Wᵀ + (s_a·S)·B_aᵀ (+ bias) in one
tiled GEMM, the LoRA term as one more rank-r dot per output tile. S (fp32) is kept for
the backward pass. Nothing is recomputed per output tile.

Backward, with upstream gradient dy: G = dy·B_a (shrink), dx = dy·W + s_a·G·A_a (expand,
with (Wᵀ, A) in the roles of (W, B)), dA_a = s_a·Gᵀ·x and dB_a = s_a·dyᵀ·S over the rows of
adapter a (`_lora_grad_kernel`, split over the rows, partials summed after: no atomics).

Several adapters (SGMV: Punica, Chen et al. 2023, arXiv 2310.18547; S-LoRA, arXiv
2311.03285): rows are grouped by adapter (`redgame.kernels.segments.SegmentPlan`); a row
tile holds rows of one segment, finds which from the segment bounds, and meets only that
adapter's A and B. Tiles of segment −1 skip the LoRA term. The grid is sized without
knowing the segment sizes (ceil(M/BLOCK_M) + segments tiles at most), so no host sync.

The rank is tiled by BLOCK_R ≤ 64 (a loop for larger ranks); row and column offsets are
int64, so M·N ≥ 2³¹ is safe.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ._common import autotuned, config_dict, dot_options, empty, launch, mixed_dot, sm_count, tile_matmul

MAX_BLOCK_R = 64

EXPAND_CONFIGS = [
    triton.Config(dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, GROUP_M=8), num_warps=8, num_stages=3),
    triton.Config(dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8), num_warps=8, num_stages=3),
    triton.Config(dict(BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, GROUP_M=8), num_warps=4, num_stages=4),
    triton.Config(dict(BLOCK_M=128, BLOCK_N=64, BLOCK_K=32, GROUP_M=8), num_warps=4, num_stages=4),
]
SHRINK_CONFIGS = [
    triton.Config(dict(BLOCK_M=64, BLOCK_K=128), num_warps=4, num_stages=3),
    triton.Config(dict(BLOCK_M=128, BLOCK_K=64), num_warps=4, num_stages=4),
    triton.Config(dict(BLOCK_M=32, BLOCK_K=256), num_warps=4, num_stages=3),
]
GRAD_CONFIGS = [
    triton.Config(dict(BLOCK_M=64, BLOCK_P=128), num_warps=4, num_stages=3),
    triton.Config(dict(BLOCK_M=128, BLOCK_P=64), num_warps=4, num_stages=3),
    triton.Config(dict(BLOCK_M=32, BLOCK_P=256), num_warps=8, num_stages=3),
]
INTERPRET = dict(
    expand=dict(BLOCK_M=16, BLOCK_N=32, BLOCK_K=32, GROUP_M=2),
    shrink=dict(BLOCK_M=16, BLOCK_K=32),
    grad=dict(BLOCK_M=16, BLOCK_P=32),
)
# Splits are planned for these nominal tiles (the autotuner may pick others); a split of a
# reduction gets at least this many columns of K (shrink) or rows of M (gradients).
PLAN_BLOCK_M = 64
K_SPLIT_GRAIN = 512
M_SPLIT_GRAIN = 256
MAX_PARTIAL_BYTES = 1 << 28


@triton.jit
def _segment_tile(pid, BOUNDS, M, N_SEG, HAS_SEG: tl.constexpr, BLOCK_M: tl.constexpr):
    """(adapter, first grouped row, end of its segment) of row tile `pid`; adapter −1: base only, −2: no rows."""
    if HAS_SEG:
        adapter = pid * 0 - 2
        row0 = pid * 0
        row_end = pid * 0
        first_tile = pid * 0
        for j in range(0, N_SEG):
            lo = tl.load(BOUNDS + j)
            hi = tl.load(BOUNDS + j + 1)
            tiles = tl.cdiv(hi - lo, BLOCK_M)
            hit = (pid >= first_tile) & (pid < first_tile + tiles)
            adapter = tl.where(hit, j - 1, adapter)
            row0 = tl.where(hit, lo + (pid - first_tile) * BLOCK_M, row0)
            row_end = tl.where(hit, hi, row_end)
            first_tile += tiles
    else:
        adapter = pid * 0
        row0 = pid * BLOCK_M
        row_end = pid * 0 + M
    return adapter, row0, row_end


@triton.jit
def _tile_rows(ORDER, row0, row_end, HAS_SEG: tl.constexpr, BLOCK_M: tl.constexpr):
    """(int64 row ids, mask) of a row tile: gathered through ORDER when rows are grouped."""
    idx = row0 + tl.arange(0, BLOCK_M)
    mask = idx < row_end
    if HAS_SEG:
        rows = tl.load(ORDER + idx, mask=mask, other=0)
    else:
        rows = idx
    return rows.to(tl.int64), mask


@triton.jit
def _lora_shrink_kernel(
    P, L, PROJ, ORDER, BOUNDS,
    M, K, RANK, N_SEG, K_PER_SPLIT,
    stride_pm, stride_pk, stride_la, stride_lr, stride_lk,
    HAS_SEG: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """PROJ[split, row, r-tile] = P[row, k-range]·L_aᵀ for each row of a tile's adapter a."""
    pid = tl.program_id(0)
    pid_r = tl.program_id(1)
    split = tl.program_id(2)
    adapter, row0, row_end = _segment_tile(pid, BOUNDS, M, N_SEG, HAS_SEG, BLOCK_M)
    if adapter >= 0:  # base-only rows need no projection
        rows, mask_m = _tile_rows(ORDER, row0, row_end, HAS_SEG, BLOCK_M)
        offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
        mask_r = offs_r < RANK
        k_start = split * K_PER_SPLIT
        k_end = tl.minimum(k_start + K_PER_SPLIT, K)
        acc = tile_matmul(tl.zeros((BLOCK_M, BLOCK_R), dtype=tl.float32), P, rows, mask_m, stride_pm, stride_pk,
                          L + adapter * stride_la, offs_r, mask_r, stride_lr, stride_lk, k_start, k_end,
                          UPCAST, PRECISION, BLOCK_K)
        out = PROJ + split.to(tl.int64) * M * RANK + rows[:, None] * RANK + offs_r[None, :]
        tl.store(out, acc, mask=mask_m[:, None] & mask_r[None, :])


@triton.jit
def _lora_expand_kernel(
    P, Q, PROJ, U, SCALES, BIAS, OUT, ORDER, BOUNDS,
    M, N, K, RANK, N_SEG, M_BUCKET, scale,
    stride_pm, stride_pk, stride_qn, stride_qk, stride_ua, stride_ur, stride_un, stride_om, stride_on,
    HAS_SEG: tl.constexpr, HAS_BIAS: tl.constexpr, PER_ADAPTER_SCALE: tl.constexpr,
    UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_R: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """OUT[row, n-tile] = P[row]·Qᵀ + s_a·PROJ[row]·U_aᵀ (+ bias) for a tile of adapter a's rows."""
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M) + N_SEG  # N_SEG = 0 without segments
    tiles_n = tl.cdiv(N, BLOCK_N)
    # GROUP_M row tiles walk the column tiles together, so the W tiles they share stay in L2.
    group = pid // (GROUP_M * tiles_n)
    first_m = group * GROUP_M
    group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * tiles_n)) % group_rows
    pid_n = (pid % (GROUP_M * tiles_n)) // group_rows

    adapter, row0, row_end = _segment_tile(pid_m, BOUNDS, M, N_SEG, HAS_SEG, BLOCK_M)
    rows, mask_m = _tile_rows(ORDER, row0, row_end, HAS_SEG, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask_n = offs_n < N
    cols = offs_n.to(tl.int64)
    acc = tile_matmul(tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32), P, rows, mask_m, stride_pm, stride_pk,
                      Q, cols, mask_n, stride_qn, stride_qk, 0, K, UPCAST, PRECISION, BLOCK_K)
    if adapter >= 0:
        if PER_ADAPTER_SCALE:
            s = tl.load(SCALES + adapter)
        else:
            s = scale
        for r0 in range(0, RANK, BLOCK_R):
            offs_r = r0 + tl.arange(0, BLOCK_R)
            mask_r = offs_r < RANK
            proj = tl.load(PROJ + rows[:, None] * RANK + offs_r[None, :],
                           mask=mask_m[:, None] & mask_r[None, :], other=0.0)
            up = tl.load(U + adapter * stride_ua + offs_r[:, None] * stride_ur + cols[None, :] * stride_un,
                         mask=mask_r[:, None] & mask_n[None, :], other=0.0)
            acc = mixed_dot(proj * s, up, acc, UPCAST, PRECISION)
    if HAS_BIAS:
        acc += tl.load(BIAS + offs_n, mask=mask_n, other=0.0).to(tl.float32)[None, :]
    tl.store(OUT + rows[:, None] * stride_om + cols[None, :] * stride_on, acc.to(OUT.dtype.element_ty),
             mask=mask_m[:, None] & mask_n[None, :])


@triton.jit
def _lora_grad_kernel(
    X, Y, SCALES, C, ORDER, BOUNDS,
    M, P, RANK, scale,
    stride_xm, stride_xp, stride_ym, stride_yr, stride_cs, stride_ca, stride_cp, stride_cr,
    HAS_SEG: tl.constexpr, PER_ADAPTER_SCALE: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_R: tl.constexpr,
):
    """C[split, a] = s_a·Σ X[row, p-tile]ᵀ·Y[row, r-tile] over adapter a's rows in this split."""
    pid = tl.program_id(0)
    split = tl.program_id(1)
    n_splits = tl.num_programs(1)
    tiles_p = tl.cdiv(P, BLOCK_P)
    tiles_r = tl.cdiv(RANK, BLOCK_R)
    adapter = pid // (tiles_p * tiles_r)
    pid_p = (pid % (tiles_p * tiles_r)) // tiles_r
    pid_r = pid % tiles_r
    if HAS_SEG:
        lo = tl.load(BOUNDS + adapter + 1)
        hi = tl.load(BOUNDS + adapter + 2)
    else:
        lo = pid * 0
        hi = pid * 0 + M
    per_split = tl.cdiv(tl.cdiv(hi - lo, n_splits), BLOCK_M) * BLOCK_M
    start = lo + split * per_split
    end = tl.minimum(hi, start + per_split)
    offs_p = pid_p * BLOCK_P + tl.arange(0, BLOCK_P)
    offs_r = pid_r * BLOCK_R + tl.arange(0, BLOCK_R)
    mask_p = offs_p < P
    mask_r = offs_r < RANK
    cols = offs_p.to(tl.int64)
    acc = tl.zeros((BLOCK_P, BLOCK_R), dtype=tl.float32)
    for m0 in range(start, end, BLOCK_M):
        rows, mask_m = _tile_rows(ORDER, m0, end, HAS_SEG, BLOCK_M)
        xt = tl.load(X + rows[None, :] * stride_xm + cols[:, None] * stride_xp,
                     mask=mask_p[:, None] & mask_m[None, :], other=0.0)
        y = tl.load(Y + rows[:, None] * stride_ym + offs_r[None, :] * stride_yr,
                    mask=mask_m[:, None] & mask_r[None, :], other=0.0)
        acc = mixed_dot(xt, y, acc, UPCAST, PRECISION)
    if PER_ADAPTER_SCALE:
        acc = acc * tl.load(SCALES + adapter)
    else:
        acc = acc * scale
    out = C + split.to(tl.int64) * stride_cs + adapter * stride_ca + cols[:, None] * stride_cp + offs_r[None, :] * stride_cr
    tl.store(out, acc.to(C.dtype.element_ty), mask=mask_p[:, None] & mask_r[None, :])


def expand_smem(cfg: dict, element_size: int) -> int:
    """Pipelined P and Q tiles of `_lora_expand_kernel`."""
    return cfg["num_stages"] * (cfg["BLOCK_M"] + cfg["BLOCK_N"]) * cfg["BLOCK_K"] * element_size


def shrink_smem(cfg: dict, element_size: int) -> int:
    return cfg["num_stages"] * (cfg["BLOCK_M"] + MAX_BLOCK_R) * cfg["BLOCK_K"] * element_size


def grad_smem(cfg: dict, element_size: int) -> int:
    return cfg["num_stages"] * cfg["BLOCK_M"] * (cfg["BLOCK_P"] * element_size + MAX_BLOCK_R * 4)


SMEM_ESTIMATES = {"_lora_expand_kernel": expand_smem, "_lora_shrink_kernel": shrink_smem,
                  "_lora_grad_kernel": grad_smem}
_expand = autotuned(_lora_expand_kernel, EXPAND_CONFIGS, ["N", "K", "RANK", "M_BUCKET", "HAS_SEG"], expand_smem, "P")
_shrink = autotuned(_lora_shrink_kernel, SHRINK_CONFIGS, ["K", "RANK", "K_PER_SPLIT", "HAS_SEG"], shrink_smem, "P")
_grad = autotuned(_lora_grad_kernel, GRAD_CONFIGS, ["P", "RANK", "HAS_SEG"], grad_smem, "X")


def rank_block(rank: int) -> int:
    """BLOCK_R: the rank rounded up to a power of two, at least 16 (tl.dot), at most MAX_BLOCK_R."""
    return min(MAX_BLOCK_R, max(16, triton.next_power_of_2(rank)))


def _splits(programs: int, device, limit: int) -> int:
    """How many ways to split a reduction so that about two waves of programs run."""
    return max(1, min(triton.cdiv(2 * sm_count(device), max(programs, 1)), limit))


def _plan_args(plan, p):
    """ORDER, BOUNDS, N_SEG and HAS_SEG for a launch (single adapter: no plan)."""
    if plan is None:
        return dict(ORDER=p, BOUNDS=p, HAS_SEG=False), 0
    return dict(ORDER=plan.order, BOUNDS=plan.bounds, HAS_SEG=True), plan.n_segments


def shrink(p, low, low_strides, rank, plan):
    """PROJ [M, r] fp32: row i of P [M, K] times its adapter's L [r, K] (given by strides (a, r, k))."""
    m, k = p.shape
    seg_args, n_seg = _plan_args(plan, p)
    row_tiles = triton.cdiv(m, PLAN_BLOCK_M) + n_seg
    block_r = rank_block(rank)
    splits = _splits(row_tiles * triton.cdiv(rank, block_r), p.device, triton.cdiv(k, K_SPLIT_GRAIN))
    k_per_split = triton.cdiv(triton.cdiv(k, splits), 64) * 64
    splits = triton.cdiv(k, k_per_split)
    part = empty((splits, m, rank), torch.float32, p.device)
    args = dict(P=p, L=low, PROJ=part, **seg_args, M=m, K=k, RANK=rank, N_SEG=n_seg, K_PER_SPLIT=k_per_split,
                stride_pm=p.stride(0), stride_pk=p.stride(1), stride_la=low_strides[0], stride_lr=low_strides[1],
                stride_lk=low_strides[2], BLOCK_R=block_r, **dot_options(p.dtype))
    grid = lambda meta: (triton.cdiv(m, meta["BLOCK_M"]) + n_seg, triton.cdiv(rank, block_r), splits)  # noqa: E731
    launch(_lora_shrink_kernel, _shrink, grid, args, None, INTERPRET["shrink"])
    return part[0] if splits == 1 else part.sum(dim=0)


def expand(p, q, q_strides, n, proj, up, up_strides, rank, plan, scale, bias, out_dtype):
    """OUT [M, n] = P·Qᵀ + s_a·PROJ·U_aᵀ (+ bias); Q given by strides (n, k), U by (a, r, n)."""
    m, k = p.shape
    seg_args, n_seg = _plan_args(plan, p)
    out = empty((m, n), out_dtype, p.device)
    per_adapter = isinstance(scale, torch.Tensor)
    args = dict(P=p, Q=q, PROJ=proj, U=up, SCALES=scale if per_adapter else p, BIAS=bias if bias is not None else p,
                OUT=out, **seg_args, M=m, N=n, K=k, RANK=rank, N_SEG=n_seg,
                M_BUCKET=min(triton.next_power_of_2(m), 1 << 14), scale=1.0 if per_adapter else float(scale),
                stride_pm=p.stride(0), stride_pk=p.stride(1), stride_qn=q_strides[0], stride_qk=q_strides[1],
                stride_ua=up_strides[0], stride_ur=up_strides[1], stride_un=up_strides[2],
                stride_om=out.stride(0), stride_on=out.stride(1),
                HAS_BIAS=bias is not None, PER_ADAPTER_SCALE=per_adapter, BLOCK_R=rank_block(rank),
                **dot_options(p.dtype))
    grid = lambda meta: ((triton.cdiv(m, meta["BLOCK_M"]) + n_seg) * triton.cdiv(n, meta["BLOCK_N"]),)  # noqa: E731
    launch(_lora_expand_kernel, _expand, grid, args, None, INTERPRET["expand"])
    return out


def adapter_grad(x, y, plan, n_adapters, scale, out_dtype, transpose: bool):
    """Per adapter a: s_a·X_aᵀ·Y_a over its rows, X [M, P], Y [M, r] fp32.

    Returns [n, P, r], or [n, r, P] with transpose=True (the layout of dA).
    """
    m, p_dim = x.shape
    rank = y.shape[1]
    seg_args, _ = _plan_args(plan, x)
    block_r = rank_block(rank)
    programs = n_adapters * triton.cdiv(p_dim, 128) * triton.cdiv(rank, block_r)
    limit = max(1, min(triton.cdiv(m, M_SPLIT_GRAIN), MAX_PARTIAL_BYTES // (4 * n_adapters * p_dim * rank)))
    splits = _splits(programs, x.device, limit)
    shape = (n_adapters, rank, p_dim) if transpose else (n_adapters, p_dim, rank)
    out = empty((splits, *shape) if splits > 1 else shape, torch.float32 if splits > 1 else out_dtype, x.device)
    strides = out.stride()[1:] if splits > 1 else out.stride()
    stride_cp, stride_cr = (strides[2], strides[1]) if transpose else (strides[1], strides[2])
    per_adapter = isinstance(scale, torch.Tensor)
    args = dict(X=x, Y=y, SCALES=scale if per_adapter else y, C=out, **seg_args, M=m, P=p_dim, RANK=rank,
                scale=1.0 if per_adapter else float(scale),
                stride_xm=x.stride(0), stride_xp=x.stride(1), stride_ym=y.stride(0), stride_yr=y.stride(1),
                stride_cs=out.stride(0) if splits > 1 else 0, stride_ca=strides[0], stride_cp=stride_cp,
                stride_cr=stride_cr, PER_ADAPTER_SCALE=per_adapter, BLOCK_R=block_r, **dot_options(x.dtype))
    grid = lambda meta: (n_adapters * triton.cdiv(p_dim, meta["BLOCK_P"]) * triton.cdiv(rank, block_r), splits)  # noqa: E731
    launch(_lora_grad_kernel, _grad, grid, args, None, INTERPRET["grad"])
    return out if splits == 1 else out.sum(dim=0).to(out_dtype)


def lora_linear_forward(x, weight, lora_a, lora_b, scale, plan, bias):
    """(y [M, N], S = x·A_aᵀ [M, r] fp32 for the backward pass).

    x [M, K], weight [N, K], lora_a [n, r, K], lora_b [n, N, r]; scale a float (one adapter
    or one for all) or an fp32 [n] tensor; plan a SegmentPlan, or None for one adapter.
    """
    rank = lora_a.shape[1]
    proj = shrink(x, lora_a, lora_a.stride(), rank, plan)
    sb = lora_b.stride()
    y = expand(x, weight, weight.stride(), weight.shape[0], proj, lora_b, (sb[0], sb[2], sb[1]), rank, plan,
               scale, bias, x.dtype)
    return y, proj


def lora_linear_backward(grad_out, x, weight, lora_a, lora_b, scale, plan, proj, need_x, need_a, need_b):
    """(dx or None, dA [n, r, K] or None, dB [n, N, r] or None) of y = lora_linear_forward(...)."""
    n_adapters, rank, k = lora_a.shape
    sa, sb = lora_a.stride(), lora_b.stride()
    dx = grad_a = grad_b = None
    if need_x or need_a:
        g = shrink(grad_out, lora_b, (sb[0], sb[2], sb[1]), rank, plan)  # G = dy·B_a
    if need_x:  # dx = dy·W + s_a·G·A_a: W as Q with strides (k, n), A as U with strides (a, r, k)
        ws = weight.stride()
        dx = expand(grad_out, weight, (ws[1], ws[0]), k, g, lora_a, sa, rank, plan, scale, None, x.dtype)
    if need_a:
        grad_a = adapter_grad(x, g, plan, n_adapters, scale, lora_a.dtype, transpose=True)
    if need_b:
        grad_b = adapter_grad(grad_out, proj, plan, n_adapters, scale, lora_b.dtype, transpose=False)
    return dx, grad_a, grad_b


class LoraLinearFunction(torch.autograd.Function):
    """Autograd for the fused (multi-)LoRA linear; W, the scale and the plan are constants."""

    @staticmethod
    def forward(ctx, x, weight, lora_a, lora_b, bias, scale, plan):
        out, proj = lora_linear_forward(x, weight, lora_a, lora_b, scale, plan, bias)
        ctx.save_for_backward(x, weight, lora_a, lora_b, proj)
        ctx.scale, ctx.plan = scale, plan
        return out

    @staticmethod
    def backward(ctx, grad_out):
        x, weight, lora_a, lora_b, proj = ctx.saved_tensors
        need_x, _, need_a, need_b, need_bias = ctx.needs_input_grad[:5]
        grad_out = grad_out.contiguous()
        dx, da, db = lora_linear_backward(grad_out, x, weight, lora_a, lora_b, ctx.scale, ctx.plan, proj,
                                          need_x, need_a, need_b)
        dbias = grad_out.sum(0) if need_bias else None
        return dx, None, da, db, dbias, None, None


def gpu_configs() -> dict[str, list[dict]]:
    """Every GPU config of each kernel as plain dicts (tests, sm_90 compile check)."""
    return {"_lora_expand_kernel": [config_dict(c) for c in EXPAND_CONFIGS],
            "_lora_shrink_kernel": [config_dict(c) for c in SHRINK_CONFIGS],
            "_lora_grad_kernel": [config_dict(c) for c in GRAD_CONFIGS]}
