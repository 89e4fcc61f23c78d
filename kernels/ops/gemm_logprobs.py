"""Token log-probs split as Liger-Kernel splits them: cuBLAS for the products, one Triton pass per logits row.

For hidden h [N, d], head W [V, d] and targets t [N], rows are taken a block of R at a
time (R·V ≈ BLOCK_ELEMENTS, so no [N, V] tensor ever exists):

1. logits L = h_block·Wᵀ, [R, V] in fp32, by cuBLAS (half inputs, fp32 output);
2. `_softmax_rows_kernel`, one program per row, reads the row twice: first for the
   running maximum and sum (LSE) and the target logit, then to write
   G = softmax(L) − onehot(t) in the input dtype;
3. the gradient direction u = W_t − E_p[W] = −G·W, [R, d] in fp32, by cuBLAS.

That is 2·N·V·d FLOPs for the log-probs alone and 4·N·V·d with u, the count of Liger's
fused linear cross entropy (Hsu et al. 2024, arXiv 2410.10989), whose split of the work
(the GEMMs to the vendor library, the softmax to one Triton pass) this follows. Writing
G = p − onehot rather than p keeps u accurate when p_t is near 1: u = −G·W then never
subtracts two nearly equal vectors. `redgame.kernels.ops.token_logprobs` does the same
in one online Triton kernel instead, with no [R, V] block at all but its own GEMM tiles.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

from ..reference import LogprobParts
from ._common import check_mode, empty

# Rows per block: about this many logits ([R, V] fp32 plus G in the input dtype).
BLOCK_ELEMENTS = 1 << 26
MAX_BLOCK_V = 2048


@triton.jit
def _softmax_rows_kernel(LOGITS, T, LSE, TGT, G, GSUM, V, stride_l, stride_g,
                         WITH_G: tl.constexpr, BLOCK_V: tl.constexpr):
    row = tl.program_id(0).to(tl.int64)
    logits = LOGITS + row * stride_l
    target = tl.load(T + row)
    run_max = tl.max(tl.full((BLOCK_V,), float("-inf"), dtype=tl.float32), axis=0)
    run_sum = tl.sum(tl.zeros((BLOCK_V,), dtype=tl.float32), axis=0)
    for v0 in range(0, V, BLOCK_V):
        offs = v0 + tl.arange(0, BLOCK_V)
        x = tl.load(logits + offs, mask=offs < V, other=float("-inf"))
        new_max = tl.maximum(run_max, tl.max(x, axis=0))
        run_sum = run_sum * tl.exp(run_max - new_max) + tl.sum(tl.exp(x - new_max), axis=0)
        run_max = new_max
    lse = run_max + tl.log(run_sum)
    target_logit = tl.load(logits + tl.maximum(target, 0))
    tl.store(LSE + row, lse)
    tl.store(TGT + row, tl.where(target >= 0, target_logit, 0.0))
    if WITH_G:
        grads = G + row * stride_g
        g_sum = tl.sum(tl.zeros((BLOCK_V,), dtype=tl.float32), axis=0)
        for v0 in range(0, V, BLOCK_V):
            offs = v0 + tl.arange(0, BLOCK_V)
            mask = offs < V
            x = tl.load(logits + offs, mask=mask, other=float("-inf"))
            # p = exp(x − max) / sum, not exp(x − lse): lse rounded to one fp32 number makes Σp miss 1 by about
            # ulp(lse), and u = −G·W then gains (Σp − 1)·E_p[W]; at logits near 1e4 that outweighed u itself
            g = (tl.exp(x - run_max) / run_sum - tl.where(offs == target, 1.0, 0.0)).to(G.dtype.element_ty)
            tl.store(grads + offs, g, mask=mask)
            g_sum += tl.sum(tl.where(mask, g.to(tl.float32), 0.0), axis=0)
        tl.store(GSUM + row, g_sum)  # 0 but for the rounding of G as stored: the caller takes its share of u out


def rows_per_block(n_rows: int, vocab: int, block_elements: int | None = None) -> int:
    """R: rows whose [R, V] logits hold about `block_elements` (at least 16, at most n_rows)."""
    elements = BLOCK_ELEMENTS if block_elements is None else block_elements
    return max(1, min(n_rows, max(16, elements // max(vocab, 1))))


def matmul_fp32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a·b with an fp32 result: half inputs stay half on CUDA (fp32 accumulation); elsewhere upcast."""
    if a.dtype == torch.float32:
        return a @ b
    if a.is_cuda:
        return torch.mm(a, b, out_dtype=torch.float32)
    return a.float() @ b.float()


def gemm_logprob_parts(hidden, head, targets, ignore_index: int, with_direction: bool,
                       block_elements: int | None = None) -> LogprobParts:
    """`LogprobParts` (fp32, with `direction` u = W_t − E_p[W] when asked) for hidden [N, d], head [V, d]."""
    check_mode(_softmax_rows_kernel)
    n, d = hidden.shape
    vocab = head.shape[0]
    rows = rows_per_block(n, vocab, block_elements)
    safe_targets = torch.where(targets == ignore_index, -1, targets)
    lse = empty((n,), torch.float32, hidden.device)
    target_logit = empty((n,), torch.float32, hidden.device)
    direction = empty((n, d), torch.float32, hidden.device) if with_direction else None
    grads = empty((rows, vocab), hidden.dtype, hidden.device) if with_direction else lse
    g_sums = empty((n,), torch.float32, hidden.device) if with_direction else lse
    # ΣG is 0 but for G's rounding (bf16: about 2⁻⁹ of each entry), and u = −G·W then gains −(ΣG)·W̄, the mean row,
    # which a head with a large common component (logits far from 0) makes larger than u: that part is added back
    mean_row = torch.mean(head.detach(), dim=0, dtype=torch.float32) if with_direction else None
    block_v = min(MAX_BLOCK_V, triton.next_power_of_2(vocab))
    weight = head.detach()
    for r0 in range(0, n, rows):
        r1 = min(r0 + rows, n)
        logits = matmul_fp32(hidden[r0:r1], weight.T)
        _softmax_rows_kernel[(r1 - r0,)](
            logits, safe_targets[r0:r1], lse[r0:r1], target_logit[r0:r1], grads, g_sums[r0:r1], vocab,
            logits.stride(0), grads.stride(0) if with_direction else 0,
            WITH_G=with_direction, BLOCK_V=block_v, num_warps=8)
        if with_direction:
            direction[r0:r1] = matmul_fp32(grads[:r1 - r0], weight).neg_().addr_(g_sums[r0:r1], mean_row)
        del logits
    return LogprobParts(lse, target_logit, None, direction)
