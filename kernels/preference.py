"""Pairwise preference losses on per-sequence log-prob sums: DPO and IPO.

With the margin m = (log πθ(y_c|x) − log π_ref(y_c|x)) − (log πθ(y_r|x) − log π_ref(y_r|x)):

- DPO (Rafailov et al. 2023, arXiv 2305.18290): mean −log σ(β·m);
- IPO (Azar et al. 2023, arXiv 2310.12036): mean (m − 1/(2β))², the form used in
  AdvGame's code (arXiv 2512.20806).

The inputs are O(batch); the O(N·V) work is in `token_logprobs`, which gives the
per-token terms that the caller sums per sequence.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from redgame.errors import UserError

KINDS = ("dpo", "ipo")


def preference_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps):
    """m = (πc − rc) − (πr − rr), elementwise over the batch."""
    return (policy_chosen_logps - ref_chosen_logps) - (policy_rejected_logps - ref_rejected_logps)


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
    if kind not in KINDS:
        raise UserError(f"preference_loss: kind must be one of {KINDS}, got {kind!r}")
    if not beta > 0:
        raise UserError(f"preference_loss: beta must be > 0, got {beta!r}")
    named = dict(policy_chosen_logps=policy_chosen_logps, policy_rejected_logps=policy_rejected_logps,
                 ref_chosen_logps=ref_chosen_logps, ref_rejected_logps=ref_rejected_logps)
    shape = policy_chosen_logps.shape
    for name, value in named.items():
        if not isinstance(value, torch.Tensor):
            raise UserError(f"preference_loss: {name} must be a tensor, got {type(value).__name__}")
        if value.shape != shape or value.dim() != 1 or value.numel() == 0:
            raise UserError(f"preference_loss: {name} has shape {tuple(value.shape)}; "
                            f"all four must be the same non-empty 1-d shape (got {tuple(shape)} first)")
    margin = preference_margin(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    if kind == "dpo":
        return -F.logsigmoid(beta * margin).mean()
    return ((margin - 1.0 / (2.0 * beta)) ** 2).mean()
