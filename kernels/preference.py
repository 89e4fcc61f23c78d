"""Pairwise preference losses: on sequence log-prob sums, and fused with the LM head.

With the margin m = (log πθ(y_c|x) − log π_ref(y_c|x)) − (log πθ(y_r|x) − log π_ref(y_r|x)):

- DPO (Rafailov et al. 2023, arXiv 2305.18290): mean −log σ(β·m);
- IPO (Azar et al. 2023, arXiv 2310.12036): mean (m − 1/(2β))², the form used in
  AdvGame's code (arXiv 2512.20806);
- optionally plus w times RPO's length-normalised NLL on the chosen answers,
  −mean_b(log πθ(y_c)/|y_c|) (Pang et al. 2024, arXiv 2404.19733).

`preference_loss` takes the four [B] sums. `fused_preference_loss` takes the last hidden
states and the head, with the batch convention of Liger-Kernel's fused linear preference
losses (arXiv 2410.10989): the loss depends on the policy's hidden states only through the
sequence sums s_b = Σ_{i∈b} log p_i, so

    ∂L/∂h_i = (∂L/∂s_b)·(W_{t_i} − E_{p_i}[W])

and the direction W_t − E_p[W] comes out of the same pass over the vocabulary as the
log-probs (`redgame.kernels.logprobs`: its gemm pass, or the online one). The forward pass therefore finishes the
gradient; the backward pass only scales it by the incoming gradient.
"""

from __future__ import annotations

import math
import numbers

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from redgame.errors import UserError

from . import reference
from .logprobs import logprob_parts, logprobs_and_direction

KINDS = ("dpo", "ipo")


def preference_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    """m = (πc − rc) − (πr − rr), elementwise over the batch."""
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


def is_real(value) -> bool:
    """A Python or numpy real number (not a bool, a string or a tensor)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_kind_and_beta(func: str, kind: str, beta: float) -> None:
    if kind not in KINDS:
        raise UserError(f"{func}: kind must be one of {KINDS}, got {kind!r}")
    if not is_real(beta) or not 0 < beta < math.inf:
        raise UserError(f"{func}: beta must be a finite number > 0, got {beta!r}")


def preference_loss(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps,
                    beta: float = 0.1, kind: str = "dpo"):
    """Scalar DPO or IPO loss, averaged over the batch of pairs.

    Args:
      policy_chosen_logps, policy_rejected_logps: [B] per-sequence log-prob sums of the policy.
      ref_chosen_logps, ref_rejected_logps: [B] the same under the reference model.
      beta: the KL strength β > 0.
      kind: "dpo" or "ipo".

    Returns:
      A 0-dim tensor.
    """
    check_kind_and_beta("preference_loss", kind, beta)
    named = dict(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                 ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps)
    for name, value in named.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"preference_loss: {name} must be a tensor, got {type(value).__name__}")
    shape, device = policy_chosen_logps.shape, policy_chosen_logps.device
    for name, value in named.items():
        if value.shape != shape or value.dim() != 1 or value.numel() == 0:
            raise UserError(f"preference_loss: {name} has shape {tuple(value.shape)}; "
                            f"all four must be the same non-empty 1-d shape (got {tuple(shape)} first)")
        if not value.is_floating_point():  # bool failed inside torch; integers were taken as log-probs
            raise UserError(f"preference_loss: {name} must hold floating-point log-probs, got {value.dtype}")
        if value.device != device:
            raise UserError(f"preference_loss: {name} is on {value.device}, policy_chosen_logps on {device}")
    margin = preference_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    if kind == "dpo":
        return -F.logsigmoid(beta * margin).mean()
    return ((margin - 1.0 / (2.0 * beta)) ** 2).mean()


@dataclass
class PreferenceDetails:
    """Detached by-products of `fused_preference_loss(..., with_details=True)`.

    pref_loss: the DPO / IPO term; nll: the mean length-normalised NLL of the chosen answers
    (computed whatever nll_weight is); margin: [B]; policy_logps, ref_logps: [2B] sequence
    sums, chosen first; lengths: [2B] counted target tokens per sequence; token_logps: [N]
    the policy's log-prob of each counted target, row by row, position by position.
    """

    pref_loss: torch.Tensor
    nll: torch.Tensor
    margin: torch.Tensor
    policy_logps: torch.Tensor
    ref_logps: torch.Tensor
    lengths: torch.Tensor
    token_logps: torch.Tensor


def _pair_loss(policy_seq, ref_seq, lengths, beta, kind, nll_weight):
    """(total, preference term, NLL term) from [2B] sequence sums, chosen first."""
    pairs = policy_seq.shape[0] // 2
    pc, pr, rc, rr = policy_seq[:pairs], policy_seq[pairs:], ref_seq[:pairs], ref_seq[pairs:]
    pref = preference_loss(pc, pr, rc, rr, beta=beta, kind=kind)
    per_pair = -(pc / lengths[:pairs].clamp_min(1))
    nll = per_pair.mean()
    if isinstance(nll_weight, torch.Tensor):  # one weight per pair
        return pref + (nll_weight.to(per_pair) * per_pair).mean(), pref, nll
    return (pref + nll_weight * nll if nll_weight else pref), pref, nll


class FusedPreferenceLoss(torch.autograd.Function):
    """The whole loss and d hidden in the forward pass; the backward pass scales the saved gradient."""

    @staticmethod
    def forward(ctx, hidden, ref_hidden, ref_logps, head, targets, beta, kind, ignore_index, nll_weight, path):
        two_b, seq_len, d = hidden.shape
        flat_targets = targets.reshape(-1)
        rows = (flat_targets != ignore_index).nonzero().squeeze(1)  # counted tokens only
        seq = rows // seq_len
        kept = flat_targets[rows]
        policy = logprob_parts(hidden.reshape(-1, d)[rows], head, kept, ignore_index, True, path)
        policy_logp, direction = logprobs_and_direction(policy, head, kept, ignore_index)
        sums = torch.zeros((3, two_b), dtype=policy_logp.dtype, device=hidden.device)
        sums[0].index_add_(0, seq, policy_logp)
        if ref_hidden is not None:
            ref = logprob_parts(ref_hidden.reshape(-1, d)[rows], head, kept, ignore_index, False, path)
            sums[1].index_add_(0, seq, logprobs_and_direction(ref, head, kept, ignore_index)[0])
        else:
            sums[1].copy_(ref_logps)
        sums[2].index_add_(0, seq, torch.ones_like(policy_logp))
        policy_seq, ref_seq, lengths = sums
        with torch.enable_grad():
            leaf = policy_seq.detach().requires_grad_()
            loss, pref, nll = _pair_loss(leaf, ref_seq, lengths, beta, kind, nll_weight)
            (d_seq,) = torch.autograd.grad(loss, leaf)
        grad_rows = (d_seq[seq][:, None] * direction).to(hidden.dtype)
        grad = torch.zeros((two_b * seq_len, d), dtype=hidden.dtype, device=hidden.device)
        ctx.save_for_backward(grad.index_copy_(0, rows, grad_rows).view(hidden.shape))
        margin = preference_margin(policy_seq[:two_b // 2], policy_seq[two_b // 2:],
                                   ref_seq[:two_b // 2], ref_seq[two_b // 2:])
        extras = (pref.detach(), nll.detach(), margin, policy_seq, ref_seq, lengths, policy_logp)
        ctx.mark_non_differentiable(*extras)
        return (loss.detach(), *extras)

    @staticmethod
    def backward(ctx, grad_loss, *unused):
        (grad,) = ctx.saved_tensors
        return grad * grad_loss.to(grad.dtype), None, None, None, None, None, None, None, None, None


def preference_loss_naive(hidden, ref_hidden, head_weight, targets, beta: float = 0.1, kind: str = "dpo",
                          ignore_index: int = -100, nll_weight: float | torch.Tensor = 0.0):
    """The baseline of `fused_preference_loss`: full [N, V] logits (`reference.token_logprobs_naive`), sums, loss.

    The reference pass runs without autograd; in float64 this is the tests' reference.
    """
    two_b, seq_len, d = hidden.shape
    flat = targets.reshape(-1)

    def sums(h):
        return reference.token_logprobs_naive(h.reshape(-1, d), head_weight, flat, ignore_index).view(two_b, -1).sum(1)

    policy = sums(hidden)
    with torch.no_grad():
        ref = sums(ref_hidden)
    lengths = (targets != ignore_index).sum(1).to(policy.dtype)
    return _pair_loss(policy, ref, lengths, beta, kind, nll_weight)[0]


def check_fused_inputs(func, hidden, ref_hidden, head_weight, targets, beta, kind, nll_weight, ref_logps=None):
    check_kind_and_beta(func, kind, beta)
    if (ref_hidden is None) == (ref_logps is None):
        raise UserError(f"{func}: give the reference as ref_hidden or as ref_logps, exactly one of them")
    reference = dict(ref_hidden=ref_hidden) if ref_logps is None else dict(ref_logps=ref_logps)
    for name, value in dict(hidden=hidden, head_weight=head_weight, targets=targets, **reference).items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"{func}: {name} must be a tensor, got {type(value).__name__}")
    if hidden.dim() != 3 or hidden.shape[0] < 2 or hidden.shape[0] % 2:
        raise UserError(f"{func}: hidden must be [2B, T, d] (B chosen rows, then B rejected), "
                        f"got {tuple(hidden.shape)}")
    if ref_logps is not None:
        if tuple(ref_logps.shape) != (hidden.shape[0],) or not ref_logps.is_floating_point():
            raise UserError(f"{func}: ref_logps must be [2B={hidden.shape[0]}] float sequence log-probs, got "
                            f"{tuple(ref_logps.shape)} {ref_logps.dtype}")
        ref_hidden = hidden  # nothing more to check against hidden
    if hidden.shape[2] == 0:
        raise UserError(f"{func}: hidden has no features (d = 0), got {tuple(hidden.shape)}")
    if ref_hidden.shape != hidden.shape:
        raise UserError(f"{func}: ref_hidden has shape {tuple(ref_hidden.shape)}, hidden {tuple(hidden.shape)}")
    if tuple(targets.shape) != tuple(hidden.shape[:2]):
        raise UserError(f"{func}: targets must be [2B, T]={tuple(hidden.shape[:2])}, got {tuple(targets.shape)}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise UserError(f"{func}: targets must be an integer tensor, got {targets.dtype}")
    if head_weight.dim() != 2 or head_weight.shape[1] != hidden.shape[2]:
        raise UserError(f"{func}: head_weight must be [V, d={hidden.shape[2]}], got {tuple(head_weight.shape)}")
    if head_weight.requires_grad:
        raise UserError(f"{func}: head_weight requires grad, but the fused loss keeps the head frozen; "
                        "call head_weight.requires_grad_(False) (or detach it)")
    if not hidden.dtype == ref_hidden.dtype == head_weight.dtype or not hidden.is_floating_point():
        raise UserError(f"{func}: hidden, ref_hidden and head_weight must share one float dtype, got "
                        f"{hidden.dtype}, {ref_hidden.dtype}, {head_weight.dtype}")
    check_nll_weight(func, nll_weight, hidden.shape[0] // 2)


def check_nll_weight(func, nll_weight, pairs: int) -> None:
    """A number >= 0, or one finite weight >= 0 per pair ([B] float tensor)."""
    if isinstance(nll_weight, torch.Tensor):
        if tuple(nll_weight.shape) != (pairs,) or not nll_weight.is_floating_point():
            raise UserError(f"{func}: nll_weight as a tensor must be [B={pairs}] float weights, one per pair, got "
                            f"{tuple(nll_weight.shape)} {nll_weight.dtype}")
        if not bool(((nll_weight >= 0) & torch.isfinite(nll_weight)).all()):
            raise UserError(f"{func}: nll_weight must be finite and >= 0 for every pair, got {nll_weight.tolist()}")
    elif not is_real(nll_weight) or not 0 <= nll_weight < math.inf:
        raise UserError(f"{func}: nll_weight must be a finite number >= 0 (or a [B] tensor), got {nll_weight!r}")
