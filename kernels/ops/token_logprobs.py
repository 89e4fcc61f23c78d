"""One online pass over the vocabulary in Triton: LSE, the target logit and E_p[W] per row.

For hidden h [N, d], head W [V, d] and targets t [N], `_online_logprob_kernel` walks V in
chunks of BLOCK_V and keeps per row a running maximum m and sum s of exp(logits − m)
(Milakov & Gimelshein 2018, arXiv 1805.02867). With WITH_ACC it also keeps the running
Σ_v exp(logits_v − m)·W_v, rescaled by exp(m_old − m_new) whenever m grows, exactly as
FlashAttention's output accumulator (Dao et al. 2022, arXiv 2205.14135) with W as keys and
values; divided by s at the end it is E_p[W], which `redgame.kernels.logprobs` turns into
d hidden. The [N, V] logits never exist.

That accumulator is [BLOCK_M, d], too large for registers at d = 3584, so it lives in a
global fp32 buffer that only its own program reads and writes (no atomics): per chunk
the program rescales it and adds P·W_chunk, BLOCK_D columns at a time.

To fill the GPU when N is small the vocabulary is split into S ranges, one program per
(row block, range), each with its own partial (m, s, target logit, accumulator); the
partials are merged afterwards in torch (`_merge`), O(S·N·d). Offsets that can pass 2³¹
(row · stride, vocab id · stride, split · N · d) are computed in int64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..reference import LogprobParts
from ._common import autotuned, config_dict, dot_options, empty, launch, mixed_dot, sm_count, tile_matmul

# Autotuned on a GPU; every one of them runs at small shapes in the interpreter tests.
GPU_CONFIGS = [
    triton.Config(dict(BLOCK_M=64, BLOCK_V=128, BLOCK_D=64), num_warps=8, num_stages=3),
    triton.Config(dict(BLOCK_M=128, BLOCK_V=128, BLOCK_D=64), num_warps=8, num_stages=3),
    triton.Config(dict(BLOCK_M=64, BLOCK_V=256, BLOCK_D=64), num_warps=8, num_stages=2),
    triton.Config(dict(BLOCK_M=128, BLOCK_V=64, BLOCK_D=64), num_warps=4, num_stages=4),
    triton.Config(dict(BLOCK_M=64, BLOCK_V=128, BLOCK_D=128), num_warps=8, num_stages=2),
]
INTERPRET_CONFIG = dict(BLOCK_M=16, BLOCK_V=64, BLOCK_D=32)
# Splits are planned for this row block (autotuning may pick another) and at most this many,
# with the partial accumulators capped at PARTIAL_BYTES.
PLAN_BLOCK_M = 64
MAX_SPLITS = 32
PARTIAL_BYTES = 1 << 30


@triton.jit
def _online_logprob_kernel(
    H, W, T, PART_MAX, PART_SUM, PART_TGT, PART_ACC, PART_WSUM,
    N, V, D, V_PER_SPLIT,
    stride_hn, stride_hd, stride_wv, stride_wd,
    WITH_ACC: tl.constexpr, UPCAST: tl.constexpr, PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_V: tl.constexpr, BLOCK_D: tl.constexpr,
):
    pid_m = tl.program_id(0)
    split = tl.program_id(1)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    mask_m = offs_m < N
    rows = offs_m.to(tl.int64)
    part = split.to(tl.int64) * N + rows  # this program's slot in the [S, N] partials
    targets = tl.load(T + offs_m, mask=mask_m, other=-1)
    v_start = split * V_PER_SPLIT
    v_end = tl.minimum(v_start + V_PER_SPLIT, V)

    run_max = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    run_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)
    target_logit = tl.zeros((BLOCK_M,), dtype=tl.float32)
    weight_sum = tl.zeros((BLOCK_M,), dtype=tl.float32)  # Σ of the weights P·W really used, for E_p[W]'s denominator
    for v0 in range(v_start, v_end, BLOCK_V):
        offs_v = v0 + tl.arange(0, BLOCK_V)
        mask_v = offs_v < v_end
        vocab = offs_v.to(tl.int64)
        logits = tile_matmul(tl.zeros((BLOCK_M, BLOCK_V), dtype=tl.float32), H, rows, mask_m, stride_hn, stride_hd,
                             W, vocab, mask_v, stride_wv, stride_wd, 0, D, UPCAST, PRECISION, BLOCK_D)
        logits = tl.where(mask_v[None, :], logits, float("-inf"))
        new_max = tl.maximum(run_max, tl.max(logits, axis=1))
        alpha = tl.exp(run_max - new_max)
        probs = tl.exp(logits - new_max[:, None])
        run_sum = run_sum * alpha + tl.sum(probs, axis=1)
        # the last chunk of a range may run past v_end (BLOCK_V need not divide V_PER_SPLIT): its -inf is no target
        hit = (offs_v[None, :] == targets[:, None]) & mask_v[None, :]
        target_logit += tl.sum(tl.where(hit, logits, 0.0), axis=1)
        if WITH_ACC:
            # the dot rounds P to W's dtype (fp16: 2⁻¹¹ of each entry; bf16 on a GPU too), so ΣP·W / run_sum
            # gains (ΣP_rounded / run_sum − 1)·W̄, which a large common column of W makes larger than u:
            # P is rounded here, once, and E_p[W] divides by the sum of P as rounded
            probs_w = probs.to(W.dtype.element_ty)
            weight_sum = weight_sum * alpha + tl.sum(probs_w.to(tl.float32), axis=1)
            has_acc = (offs_m * 0 + v0) > v_start  # the first chunk starts from zero
            for d0 in range(0, D, BLOCK_D):
                offs_d = d0 + tl.arange(0, BLOCK_D)
                mask_d = offs_d < D
                acc_ptrs = PART_ACC + part[:, None] * D + offs_d[None, :]
                acc_mask = mask_m[:, None] & mask_d[None, :]
                acc = tl.load(acc_ptrs, mask=acc_mask & has_acc[:, None], other=0.0)
                w = tl.load(W + vocab[:, None] * stride_wv + offs_d[None, :] * stride_wd,
                            mask=mask_v[:, None] & mask_d[None, :], other=0.0)
                acc = mixed_dot(probs_w, w, acc * alpha[:, None], UPCAST, PRECISION)
                tl.store(acc_ptrs, acc, mask=acc_mask)
        run_max = new_max
    tl.store(PART_MAX + part, run_max, mask=mask_m)
    tl.store(PART_SUM + part, run_sum, mask=mask_m)
    tl.store(PART_TGT + part, target_logit, mask=mask_m)
    if WITH_ACC:
        tl.store(PART_WSUM + part, weight_sum, mask=mask_m)


def smem_estimate(cfg: dict, element_size: int) -> int:
    """Pipelined h and W tiles of `_online_logprob_kernel`."""
    return cfg["num_stages"] * (cfg["BLOCK_M"] + cfg["BLOCK_V"]) * cfg["BLOCK_D"] * element_size


_tuned = autotuned(_online_logprob_kernel, GPU_CONFIGS, ["D", "V_PER_SPLIT", "WITH_ACC"], smem_estimate, "H")


def vocab_splits(n_rows: int, vocab: int, d: int, n_sm: int, with_acc: bool) -> int:
    """How many vocabulary ranges to give each row block: enough programs for two waves."""
    row_blocks = triton.cdiv(n_rows, PLAN_BLOCK_M)
    splits = min(triton.cdiv(2 * n_sm, row_blocks), MAX_SPLITS, triton.cdiv(vocab, 256))
    if with_acc:
        splits = min(splits, PARTIAL_BYTES // max(4 * n_rows * d, 1))
    return max(1, splits)


def _merge(part_max, part_sum, part_tgt, part_acc, part_wsum=None) -> LogprobParts:
    """Combine the S partial online states [S, N] (and [S, N, d]) into one per row."""
    row_max = part_max.amax(dim=0)
    weight = torch.exp(part_max - row_max)
    total = (weight * part_sum).sum(dim=0)
    expect = None
    if part_acc is not None:
        weight = weight / (weight * (part_sum if part_wsum is None else part_wsum)).sum(dim=0)
        if part_acc.shape[0] == 1:
            expect = part_acc[0].mul_(weight[0][:, None])
        else:
            expect = torch.einsum("sn,snd->nd", weight, part_acc)
    return LogprobParts(row_max + total.log(), part_tgt.sum(dim=0), expect)


def online_logprob_parts(hidden, head, targets, ignore_index: int, with_expectation: bool,
                         splits: int | None = None, config: dict | None = None) -> LogprobParts:
    """`LogprobParts` (fp32) for hidden [N, d], head [V, d], targets [N] from the Triton pass.

    `splits` (vocabulary ranges) and `config` (tiles) are chosen automatically unless given.
    """
    n, d = hidden.shape
    vocab = head.shape[0]
    if splits is None:
        splits = vocab_splits(n, vocab, d, sm_count(hidden.device), with_expectation)
    v_per_split = triton.cdiv(triton.cdiv(vocab, splits), 64) * 64
    splits = triton.cdiv(vocab, v_per_split)  # no empty range
    stats = empty((4 if with_expectation else 3, splits, n), torch.float32, hidden.device)
    acc = empty((splits, n, d), torch.float32, hidden.device) if with_expectation else None
    safe_targets = torch.where(targets == ignore_index, -1, targets)
    args = dict(H=hidden, W=head, T=safe_targets, PART_MAX=stats[0], PART_SUM=stats[1], PART_TGT=stats[2],
                PART_ACC=acc if acc is not None else stats, PART_WSUM=stats[-1],
                N=n, V=vocab, D=d, V_PER_SPLIT=v_per_split,
                stride_hn=hidden.stride(0), stride_hd=hidden.stride(1),
                stride_wv=head.stride(0), stride_wd=head.stride(1),
                WITH_ACC=with_expectation, **dot_options(hidden.dtype))
    grid = lambda meta: (triton.cdiv(n, meta["BLOCK_M"]), splits)  # noqa: E731
    launch(_online_logprob_kernel, _tuned, grid, args, config, INTERPRET_CONFIG)
    return _merge(stats[0], stats[1], stats[2], acc, stats[3] if with_expectation else None)


def gpu_configs() -> list[dict]:
    """Every GPU config as a plain dict (for the tests and the sm_90 compile check)."""
    return [config_dict(c) for c in GPU_CONFIGS]
