"""Torch references for the kernels: the CPU path of dispatch, and the baselines of tests and benchmarks.

All of them work in any float dtype, float64 included; half-precision inputs are computed
in fp32 (CPU half matmuls are slow and lose precision).

- `lora_linear_reference`: y = x·Wᵀ + s·(x·Aᵀ)·Bᵀ (+ b), LoRA of Hu et al. 2021
  (arXiv 2106.09685), as plain autograd ops.
- `multi_lora_linear_reference`: the same with an adapter per row (−1 = base only).
- `ChunkedTokenLogprobs`: log softmax(h·Wᵀ)[t] with V cut into chunks and an online
  log-sum-exp (Milakov & Gimelshein 2018, arXiv 1805.02867); the backward pass recomputes
  each chunk, so no more than [N, chunk] logits exist at once.
- `token_logprobs_naive`: logits + log_softmax + gather, which materialises [N, V].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# Elements of one [N, chunk] logits block in the chunked CPU path (16 MiB in fp32).
DEFAULT_CHUNK_ELEMENTS = 1 << 22


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half precision, else the dtype itself (fp32 stays fp32, fp64 stays fp64)."""
    return torch.promote_types(dtype, torch.float32)


def lora_linear_reference(x, weight, lora_a, lora_b, scale, bias=None):
    """y = x·Wᵀ + scale·(x·Aᵀ)·Bᵀ (+ bias); x [..., K], W [N, K], A [r, K], B [N, r]."""
    return F.linear(x, weight, bias) + scale * F.linear(F.linear(x, lora_a), lora_b)


def multi_lora_linear_reference(x, weight, lora_a, lora_b, scale, segment_ids, bias=None):
    """Rows of x pick adapters: A [n, r, K], B [n, N, r], scale [n], segment_ids [...] in [−1, n)."""
    out = F.linear(x, weight, bias)
    low_rank = torch.zeros_like(out)
    for adapter in range(lora_a.shape[0]):
        rows = (segment_ids == adapter).unsqueeze(-1)
        delta = F.linear(F.linear(x, lora_a[adapter]), lora_b[adapter]) * scale[adapter]
        low_rank = low_rank + torch.where(rows, delta, torch.zeros_like(delta))
    return out + low_rank


def token_logprobs_naive(hidden, head_weight, targets, ignore_index: int = -100):
    """log softmax(hidden·headᵀ)[target] per row via the full [N, V] logits; ignored rows give 0.

    The usual recipe: logits in the input dtype, log_softmax in fp32 (or fp64).
    """
    logits = (hidden @ head_weight.T).to(compute_dtype(hidden.dtype))
    valid = targets != ignore_index
    picked = torch.log_softmax(logits, dim=-1).gather(1, torch.where(valid, targets, 0)[:, None])[:, 0]
    return torch.where(valid, picked, torch.zeros_like(picked))


def chunk_size(n_rows: int, vocab: int, chunk_elements: int = DEFAULT_CHUNK_ELEMENTS) -> int:
    """Vocabulary chunk length so that one [n_rows, chunk] block holds about chunk_elements."""
    return max(1, min(vocab, chunk_elements // max(n_rows, 1)))


class ChunkedTokenLogprobs(torch.autograd.Function):
    """token log-probs with [N, chunk] logits at a time, in forward and in backward."""

    @staticmethod
    def forward(ctx, hidden, head, targets, ignore_index, chunk):
        dtype = compute_dtype(hidden.dtype)
        h = hidden.to(dtype)
        valid = targets != ignore_index
        safe_targets = torch.where(valid, targets, 0)
        lse = torch.full((h.shape[0],), float("-inf"), dtype=dtype, device=h.device)
        for v0 in range(0, head.shape[0], chunk):
            logits = h @ head[v0:v0 + chunk].to(dtype).T
            chunk_max = logits.amax(dim=1)
            # in place, so one [N, chunk] buffer is all this loop holds
            chunk_lse = chunk_max + logits.sub_(chunk_max[:, None]).exp_().sum(dim=1).log()
            lse = torch.logaddexp(lse, chunk_lse)
            del logits
        target_logit = (h * head[safe_targets].to(dtype)).sum(1)
        out = torch.where(valid, target_logit - lse, torch.zeros_like(lse))
        ctx.save_for_backward(hidden, head, safe_targets, valid, lse)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, head, safe_targets, valid, lse = ctx.saved_tensors
        dtype = lse.dtype
        h = hidden.to(dtype)
        g = torch.where(valid, grad_out.to(dtype), torch.zeros_like(lse))
        # d logp / d logits = onehot(t) − softmax: the onehot part is a gather ...
        grad_h = g[:, None] * head[safe_targets].to(dtype)
        head_grad = ctx.needs_input_grad[1]
        grad_w = torch.zeros(head.shape, dtype=dtype, device=head.device) if head_grad else None
        if head_grad:
            grad_w.index_add_(0, safe_targets, g[:, None] * h)
        # ... and the softmax part is recomputed chunk by chunk.
        for v0 in range(0, head.shape[0], ctx.chunk):
            w = head[v0:v0 + ctx.chunk].to(dtype)
            dlogits = (h @ w.T).sub_(lse[:, None]).exp_().mul_(-g[:, None])
            grad_h.addmm_(dlogits, w)
            if head_grad:
                grad_w[v0:v0 + ctx.chunk] += dlogits.T @ h
            del dlogits
        grad_hidden = grad_h.to(hidden.dtype) if ctx.needs_input_grad[0] else None
        return grad_hidden, (grad_w.to(head.dtype) if head_grad else None), None, None, None


def token_logprobs_chunked(hidden, head_weight, targets, ignore_index: int = -100,
                           chunk_elements: int = DEFAULT_CHUNK_ELEMENTS):
    """Chunked token log-probs; output dtype fp32 for half inputs, else the input dtype."""
    chunk = chunk_size(hidden.shape[0], head_weight.shape[0], chunk_elements)
    return ChunkedTokenLogprobs.apply(hidden, head_weight, targets, ignore_index, chunk)
