"""One role's loss in the game's update: the sequences it scores, their token advantages, and its loss.

The losses themselves (DPO, IPO, REINFORCE, GRPO, REINFORCE++, SFT), with their papers, are in
:mod:`redgame.llm.losses`; this module arranges a role's samples and its judged signal (pairs, or
rewards in groups) for the loss of ``config.loss``.
"""

from __future__ import annotations

import torch

from redgame.llm.config import RETURN_KL_LOSSES, TrainConfig
from redgame.llm.losses import (TokenLogprobs, completion_logprobs, dpo_pairs_loss, group_advantages, kl_to_reference,
                                policy_gradient_loss, reinforce_pp_advantages)


def scoring_temperature(cfg: TrainConfig) -> float:
    """The temperature the update scores samples at: the sampling temperature for the policy-gradient losses,
    whose ratio and gradient are of the policy that drew the samples (as TRL's GRPO; top_p's cut is not in
    it); 1 for DPO, IPO and SFT, whose objectives are on the policy itself. Until 2026-12-05 always 1."""
    return cfg.temperature if cfg.resolved_loss() in ("reinforce", "grpo", *RETURN_KL_LOSSES) else 1.0


def signal_size(cfg: TrainConfig, signal_) -> int:
    """How many items a role's loss averages over: pairs for DPO/IPO, samples otherwise."""
    return len(signal_.pairs) if cfg.resolved_loss() in ("dpo", "ipo") else len(signal_.items)


def role_sequences(cfg: TrainConfig, samples: list, signal_) -> tuple[list, list[list[int]]]:
    """The sequences a role's loss scores, in loss order, and its units (sequences scored together).

    DPO/IPO: the chosen answers of the n pairs, then the rejected ones; unit k = (k, n + k).
    REINFORCE/GRPO: the signal's items, one unit each.
    """
    if cfg.resolved_loss() in ("dpo", "ipo"):
        n = len(signal_.pairs)
        sequences = [samples[c] for c, _ in signal_.pairs] + [samples[r] for _, r in signal_.pairs]
        return sequences, [[k, n + k] for k in range(n)]
    return [samples[i] for i in signal_.items], [[k] for k in range(len(signal_.items))]


def token_advantages(cfg: TrainConfig, signal_, reference: TokenLogprobs,
                     old: TokenLogprobs | None = None, pool=None) -> torch.Tensor | None:
    """One advantage per token of the role's sequences (:func:`role_sequences` order); None for DPO/IPO.

    REINFORCE/GRPO: each item's reward minus its group's mean (GRPO: over its std), repeated
    over the item's tokens. SFT: 1. REINFORCE++: :func:`redgame.llm.losses.reinforce_pp_advantages`
    from ``old`` (the policy's log-probs before the update) and ``reference``, whitened over torchrun's
    ranks by ``pool`` (a group sits on one rank: the other losses need none).
    """
    kind = cfg.resolved_loss()
    if kind in ("dpo", "ipo") or not signal_.items:
        return None
    rewards, groups = torch.tensor(signal_.rewards), torch.tensor(signal_.groups)
    if kind == "sft":  # advantage 1 on every token: the policy-gradient loss is the mean NLL
        return torch.ones_like(reference.values)
    if kind in RETURN_KL_LOSSES:
        return reinforce_pp_advantages(rewards, groups, old, reference, cfg.kl_coef,
                                       group_baseline=kind == "reinforce_pp_baseline", pool=pool)
    per_item = group_advantages(rewards, groups, normalise=kind == "grpo")
    return per_item.to(reference.values.device)[reference.seq]


def loss_from_logprobs(cfg: TrainConfig, policy: TokenLogprobs, reference: TokenLogprobs,
                       advantages: torch.Tensor | None = None, of=None,
                       old: TokenLogprobs | None = None, nll_weight=None) -> tuple[torch.Tensor, dict]:
    """A role's loss from the log-probs of its sequences (:func:`role_sequences` order).

    ``of``: the whole batch's size (pairs, or (samples, tokens)) when these sequences are the
    units of one micro-batch; the loss is then that micro-batch's share of the batch's.
    ``old``: the policy's log-probs before the step's first update, for the importance ratio
    of the later ``update_epochs`` (None: the first epoch, ratio 1). ``nll_weight``: DPO/IPO's
    NLL weight, one number or one per pair (:func:`redgame.llm.trainer.pair_nll_weights`; None: ``cfg.nll_weight``).
    """
    kind = cfg.resolved_loss()
    if kind in ("dpo", "ipo"):
        n = policy.n_seqs // 2
        loss, info = dpo_pairs_loss(policy.slice(0, n), policy.slice(n, 2 * n), reference.slice(0, n),
                                    reference.slice(n, 2 * n), beta=cfg.beta, kind=kind,
                                    nll_weight=cfg.nll_weight if nll_weight is None else nll_weight, of=of)
        info["kl"] = float(kl_to_reference(policy, reference).detach())
        info["pairs"] = n
        return loss, info
    kl_coef = 0.0 if kind in RETURN_KL_LOSSES else cfg.kl_coef  # REINFORCE++ has its KL in the return
    if kind == "sft":  # NLL on given targets, not on samples of π_old: no importance ratio, no clipping
        old = None
    loss, info = policy_gradient_loss(policy, reference, advantages, kl_coef=kl_coef, old=old, clip_eps=cfg.clip_eps,
                                      of=of)
    info["samples"] = policy.n_seqs  # what the means are over: torchrun's ranks are pooled by it
    return loss, info


def role_loss(cfg: TrainConfig, roles, role: str, samples: list, signal_, pad_id: int,
              ref_cache: dict | None = None, policy: TokenLogprobs | None = None,
              advantages: torch.Tensor | None = None, old: TokenLogprobs | None = None,
              nll_weight=None) -> tuple[torch.Tensor | None, dict]:
    """One role's loss on its samples (completions) and signal (rewards / pairs), and its metrics.

    ``policy``: the policy's log-probs of the role's sequences when the caller scored them
    (the trainer does, micro-batch by micro-batch, taking the gradient as it goes); otherwise
    they are scored here with the role's adapter active, with the gradient. ``ref_cache``
    keeps the reference's log-probs by role, for later epochs on the same samples.
    ``advantages`` / ``old``: the step's token advantages and pre-update log-probs where the
    caller has them; otherwise the policy as it is now is the pre-update policy. ``nll_weight``:
    as in :func:`loss_from_logprobs`.
    """
    sequences, _ = role_sequences(cfg, samples, signal_)
    if not sequences:
        return None, {}
    prompts, comps = [s.prompt_ids for s in sequences], [s.completion_ids for s in sequences]
    reference = None if ref_cache is None else ref_cache.get(role)
    if reference is None:
        with torch.no_grad(), roles.reference(role) as ref:
            reference = completion_logprobs(ref, prompts, comps, pad_id, temperature=scoring_temperature(cfg))
        if ref_cache is not None:
            ref_cache[role] = reference
    if policy is None:
        with roles.policy(role) as model:
            policy = completion_logprobs(model, prompts, comps, pad_id, chunk=cfg.update_chunk,
                                         temperature=scoring_temperature(cfg))
    if advantages is None:
        before = TokenLogprobs(policy.values.detach(), policy.seq, policy.n_seqs)
        advantages = token_advantages(cfg, signal_, reference, old if old is not None else before)
    loss, info = loss_from_logprobs(cfg, policy, reference, advantages, old=old, nll_weight=nll_weight)
    if cfg.resolved_loss() not in ("dpo", "ipo"):
        info["mean_reward"] = sum(signal_.rewards) / len(signal_.rewards)
    return loss, info
