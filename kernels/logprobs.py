"""Token log-probs from one online pass over the vocabulary, as an autograd Function.

For hidden h [N, d], head W [V, d] and targets t [N]:

    log p_i = h_i·W_{t_i} − LSE_i,          LSE_i = log Σ_v exp(h_i·W_v)
    ∂ log p_i / ∂ h_i = W_{t_i} − E_{p_i}[W],  E_{p_i}[W] = Σ_v p_iv·W_v

The pass that computes LSE can accumulate E_p[W] with the same online rescaling (the
FlashAttention output accumulator, Dao et al. 2022, arXiv 2205.14135), so the forward pass
leaves the gradient direction u_i = W_{t_i} − E_{p_i}[W] behind and the backward pass is
d h_i = g_i·u_i, O(N·d). With a frozen head that is 4·N·V·d FLOPs in all, the count of
Liger's chunked loss (arXiv 2410.10989), without its [chunk, V] logits. A trained head
adds a backward pass that recomputes the logits for dW (`reference.chunked_head_grad`).

The pass runs in torch (`reference.chunked_logprob_parts`; `path` "torch") or with Triton
("triton", "interpret"), in one of two ways (`TRITON_PASSES`, chosen by `use_triton_pass`):

- "gemm" (the default): cuBLAS GEMMs and one Triton softmax pass per block of rows
  (`ops.gemm_logprobs`), Liger's split;
- "online": one Triton kernel for the whole pass (`ops.token_logprobs`), no [rows, V]
  block at all.
"""

from __future__ import annotations

import contextlib

import torch

from . import reference

TRITON_PASSES = ("gemm", "online")
_triton_pass = {"name": "gemm"}


@contextlib.contextmanager
def use_triton_pass(name: str):
    """Within the block, the Triton paths compute log-probs with pass `name` ("gemm" or "online")."""
    if name not in TRITON_PASSES:
        raise ValueError(f"use_triton_pass: {name!r} is not one of {', '.join(TRITON_PASSES)}")
    saved = _triton_pass["name"]
    _triton_pass["name"] = name
    try:
        yield
    finally:
        _triton_pass["name"] = saved


def logprob_parts(hidden, head, targets, ignore_index: int, with_expectation: bool, path: str):
    """`reference.LogprobParts` of one pass over the vocabulary, from Triton ("triton", "interpret") or torch."""
    if hidden.shape[0] == 0:  # no rows (every target ignored): nothing to compute
        none = hidden.new_zeros(0, dtype=reference.compute_dtype(hidden.dtype))
        return reference.LogprobParts(none, none, none.new_zeros(hidden.shape) if with_expectation else None)
    if path == "torch":
        return reference.chunked_logprob_parts(hidden, head, targets, ignore_index, with_expectation)
    if _triton_pass["name"] == "gemm":
        from .ops.gemm_logprobs import gemm_logprob_parts

        return gemm_logprob_parts(hidden, head, targets, ignore_index, with_expectation)
    from .ops.token_logprobs import online_logprob_parts

    return online_logprob_parts(hidden, head, targets, ignore_index, with_expectation)


def logprobs_and_direction(parts, head, targets, ignore_index: int):
    """(log p [N], u = W_t − E_p[W] [N, d] or None); both 0 on ignored rows."""
    valid = targets != ignore_index
    logp = torch.where(valid, parts.target_logit - parts.lse, torch.zeros_like(parts.lse))
    if parts.direction is not None:
        return logp, parts.direction.mul_(valid[:, None])
    if parts.expected_head is None:
        return logp, None
    safe = torch.where(valid, targets, 0)
    direction = head[safe].detach().to(parts.expected_head.dtype).sub_(parts.expected_head)
    return logp, direction.mul_(valid[:, None])


class TokenLogprobs(torch.autograd.Function):
    """log p(target) per row; d hidden comes from the forward pass, d head (if needed) from a recompute."""

    @staticmethod
    def forward(ctx, hidden, head, targets, ignore_index, path, hidden_grad):
        parts = logprob_parts(hidden, head, targets, ignore_index, hidden_grad, path)
        logp, direction = logprobs_and_direction(parts, head, targets, ignore_index)
        head_grad = ctx.needs_input_grad[1]
        ctx.save_for_backward(hidden if head_grad else None, head if head_grad else None, targets,
                              parts.lse if head_grad else None, direction)
        ctx.ignore_index = ignore_index
        ctx.hidden_dtype = hidden.dtype
        return logp

    @staticmethod
    def backward(ctx, grad):
        hidden, head, targets, lse, direction = ctx.saved_tensors
        grad_hidden = grad_head = None
        if ctx.needs_input_grad[0]:
            if direction is None:
                raise RuntimeError("token_logprobs: hidden did not require grad in the forward pass")
            grad_hidden = (grad.to(direction.dtype)[:, None] * direction).to(ctx.hidden_dtype)
        if ctx.needs_input_grad[1]:
            grad_head = reference.chunked_head_grad(hidden, head, targets, lse, grad, ctx.ignore_index)
        return grad_hidden, grad_head, None, None, None, None
