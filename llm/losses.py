"""Log-probabilities of completions and the game's policy losses.

- DPO: Rafailov et al. 2023, "Direct Preference Optimization" (arXiv 2305.18290).
- IPO: Azar et al. 2023, "A General Theoretical Paradigm to Understand Learning from
  Human Preferences" (arXiv 2310.12036).
- DPO with an EMA reference (DPO-MD, "mirror descent") and the GRPO variant follow
  AdvGame (arXiv 2512.20806); GRPO's group-normalised advantages are from Shao et al.
  2024, DeepSeekMath (arXiv 2402.03300).
- The length-normalised NLL on the chosen answer is RPO: Pang et al. 2024, "Iterative
  Reasoning Preference Optimization" (arXiv 2404.19733).
- REINFORCE with a baseline (Williams 1992) and a per-token KL to the reference; the KL
  uses the non-negative "k3" estimator exp(r) - r - 1 with r = log p_ref - log p
  (Schulman, "Approximating KL divergence").
- REINFORCE++ (Hu 2025, arXiv 2501.03262), the estimator Self-RedTeam (arXiv 2506.07468)
  trains with: the k1 KL penalty folded into each token's return, the returns whitened over
  the whole batch (:func:`reinforce_pp_advantages`).
- The PPO clipped surrogate (Schulman et al. 2017, arXiv 1707.06347), as GRPO uses it:
  with ``update_epochs`` > 1 the later epochs weight each token by the importance ratio
  pi / pi_old, clipped to [1 - eps, 1 + eps] (:func:`policy_gradient_loss`).

Token log-probs go through ``redgame.kernels.token_logprobs`` with the kernels on (Triton on
CUDA, a vocabulary-chunked torch path on CPU: no [T, V] logits either way) and through plain
torch (log_softmax over the [T, V] logits of the completion tokens) with them off; the
pairwise loss through ``redgame.kernels.preference_loss``. With the kernels on, the game's
DPO / IPO update goes from the policy's hidden states to the loss in one call,
``redgame.kernels.fused_preference_loss`` (:func:`fused_pairs_loss`), its reference given as
the sequence log-probs scored once per step. The plain torch functions below are the
references.

Every loss here is a mean over the batch's pairs (DPO/IPO) or over its samples of each sample's
token mean (REINFORCE/GRPO/REINFORCE++). Given ``of=`` (the whole batch's counts), a function returns the share of
that mean which a part of the batch contributes, so that the parts of a batch, scored in
micro-batches and back-propagated one at a time, add up to the whole batch's loss and its
gradient (gradient accumulation).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from redgame.errors import UserError
from redgame.llm.prompt_sharing import SharedPrompts, cache_argument, cache_of, padded

try:  # the kernels layer is optional: a clean seam, plain torch otherwise
    from redgame.kernels import fused_preference_loss as _kernel_fused_preference_loss
    from redgame.kernels import preference_loss as _kernel_preference_loss
    from redgame.kernels import token_logprobs as _kernel_token_logprobs
except ImportError:  # pragma: no cover - depends on which layers are installed
    _kernel_token_logprobs = _kernel_preference_loss = _kernel_fused_preference_loss = None

USE_KERNELS = _kernel_token_logprobs is not None and _kernel_preference_loss is not None


def torch_token_logprobs(hidden: torch.Tensor, head_weight: torch.Tensor, targets: torch.Tensor,
                         ignore_index: int = -100) -> torch.Tensor:
    """log p(target) for each row of ``hidden`` [N, d] under the LM head [V, d]; 0 where ignored."""
    logits = hidden @ head_weight.t()
    logp = torch.log_softmax(logits.float(), dim=-1)
    safe = targets.clamp_min(0)
    out = logp.gather(-1, safe[:, None]).squeeze(-1)
    return torch.where(targets == ignore_index, torch.zeros_like(out), out)


def torch_preference_loss(pc: torch.Tensor, pr: torch.Tensor, rc: torch.Tensor, rr: torch.Tensor,
                          beta: float = 0.1, kind: str = "dpo") -> torch.Tensor:
    """Mean DPO or IPO loss from sequence log-probs of policy/reference on chosen/rejected."""
    h = (pc - rc) - (pr - rr)
    if kind == "dpo":
        return -F.logsigmoid(beta * h).mean()
    if kind == "ipo":
        return ((h - 1.0 / (2.0 * beta)) ** 2).mean()
    raise UserError(f"unknown preference loss kind {kind!r}; expected 'dpo' or 'ipo'")


def token_logprobs(hidden, head_weight, targets, ignore_index: int = -100, use_kernels: bool | None = None):
    """The seam: the kernels layer's fused op with the kernels on, the torch reference off.

    ``use_kernels=None`` means on where the kernels layer is installed.
    """
    if USE_KERNELS if use_kernels is None else use_kernels:
        return _kernel_token_logprobs(hidden, head_weight, targets, ignore_index=ignore_index)
    return torch_token_logprobs(hidden, head_weight, targets, ignore_index=ignore_index)


def preference_loss(pc, pr, rc, rr, beta: float = 0.1, kind: str = "dpo", use_kernels: bool | None = None):
    """The seam for DPO / IPO, like :func:`token_logprobs`."""
    if kind not in ("dpo", "ipo"):
        raise UserError(f"unknown preference loss kind {kind!r}; expected 'dpo' or 'ipo'")
    if USE_KERNELS if use_kernels is None else use_kernels:
        return _kernel_preference_loss(pc, pr, rc, rr, beta=beta, kind=kind)
    return torch_preference_loss(pc, pr, rc, rr, beta=beta, kind=kind)


@dataclass
class TokenLogprobs:
    """Per-token log-probs of a batch of completions, flattened, with their sequence index."""

    values: torch.Tensor   # [N] log p of each completion token
    seq: torch.Tensor      # [N] which sequence each token belongs to
    n_seqs: int

    def sums(self) -> torch.Tensor:
        return torch.zeros(self.n_seqs, dtype=self.values.dtype, device=self.values.device).index_add(
            0, self.seq, self.values)

    def slice(self, start: int, stop: int) -> "TokenLogprobs":
        """The tokens of sequences ``start .. stop-1``, renumbered from 0."""
        keep = (self.seq >= start) & (self.seq < stop)
        return TokenLogprobs(self.values[keep], self.seq[keep] - start, stop - start)

    def lengths(self) -> torch.Tensor:
        return torch.bincount(self.seq, minlength=self.n_seqs).to(self.values.dtype).clamp_min(1)

    def per_sequence(self) -> list[torch.Tensor]:
        """The values of each sequence, in order."""
        counts = torch.bincount(self.seq, minlength=self.n_seqs).tolist()
        return list(torch.split(self.values, counts))

    @staticmethod
    def of_sequences(parts: list[torch.Tensor]) -> "TokenLogprobs":
        """The inverse of :meth:`per_sequence`: sequences given one tensor each, in order."""
        values = torch.cat(parts)
        seq = torch.repeat_interleave(torch.arange(len(parts)), torch.tensor([len(p) for p in parts]))
        return TokenLogprobs(values, seq.to(values.device), len(parts))


def decoder_and_head(model):
    """The transformer body and the LM-head weight of a (peft-wrapped) causal LM."""
    causal = model.get_base_model() if hasattr(model, "get_base_model") else model
    body = getattr(causal, causal.base_model_prefix)
    return body, causal.get_output_embeddings().weight


def completion_logprobs(model, prompt_ids: list[list[int]], completion_ids: list[list[int]],
                        pad_id: int, use_kernels: bool | None = None, chunk: int = 0,
                        route: tuple | None = None, share_prompts: bool = False,
                        temperature: float = 1.0) -> TokenLogprobs:
    """Log-probs of each completion token given its prompt, under ``model`` as it is now, at ``temperature``
    (log-softmax of logits / temperature: the distribution samples were drawn from at that temperature).

    Sequences are right-padded; only the hidden states that predict completion tokens go
    through the LM head, so the [B, T, V] logits are never built.

    ``chunk`` > 0 (with gradients on): run ``chunk`` sequences at a time and keep none of
    their activations; the backward pass recomputes them chunk by chunk (activation
    checkpointing over sequences, ``torch.utils.checkpoint``). Same values and gradients;
    peak memory of one chunk instead of the batch, for one more forward pass.

    ``route`` = (adapter names, [one index per sequence, −1 for none]): each sequence runs
    through its own adapter of a patched peft model, all in one pass
    (``redgame.kernels.peft_patch.routed``); None runs the model as it is.

    ``share_prompts``: sequences with the same prompt (and adapter) run it once; their
    completions continue from its key-value cache (:func:`_hidden_sharing_prompts`), and the
    first tokens that one adapter's prompts all begin with run once.
    """
    if len(prompt_ids) != len(completion_ids) or not prompt_ids:
        raise UserError("completion_logprobs needs as many prompts as completions, at least one")
    if chunk < 0:
        raise UserError(f"chunk must be >= 0, got {chunk}")
    lengths = torch.tensor([len(c) for c in completion_ids])
    if chunk and torch.is_grad_enabled() and len(prompt_ids) > chunk:
        from torch.utils.checkpoint import checkpoint

        parts = []
        for start in range(0, len(prompt_ids), chunk):
            stop = min(start + chunk, len(prompt_ids))
            part = None if route is None else (route[0], route[1][start:stop])
            run = lambda start=start, stop=stop, part=part: completion_logprobs(  # noqa: E731
                model, prompt_ids[start:stop], completion_ids[start:stop], pad_id, use_kernels, route=part,
                share_prompts=share_prompts, temperature=temperature).values
            parts.append(checkpoint(run, use_reentrant=False))
        values = torch.cat(parts)
        return TokenLogprobs(values, torch.repeat_interleave(torch.arange(len(prompt_ids)), lengths).to(values.device),
                             len(prompt_ids))
    hidden, head, targets = completion_hidden(model, prompt_ids, completion_ids, pad_id, route, share_prompts)
    values = token_logprobs(at_temperature(hidden, temperature), head, targets, use_kernels=use_kernels)
    return TokenLogprobs(values, torch.repeat_interleave(torch.arange(len(prompt_ids)), lengths).to(head.device),
                         len(prompt_ids))


def at_temperature(hidden: torch.Tensor, temperature: float) -> torch.Tensor:
    """``hidden`` scaled so that its logits are divided by ``temperature`` (logits are linear in it); as is at 1."""
    return hidden if temperature == 1.0 else hidden / temperature


def completion_hidden(model, prompt_ids: list[list[int]], completion_ids: list[list[int]], pad_id: int,
                      route: tuple | None = None, share_prompts: bool = False):
    """(hidden [N, d], head [V, d], targets [N]): the hidden states that predict each completion
    token, sequence after sequence, the LM head and those tokens (see :func:`completion_logprobs`)."""
    body, head = decoder_and_head(model)
    device = head.device
    rows = route[1] if route is not None else [-1] * len(prompt_ids)
    keys = [(r, tuple(p)) for r, p in zip(rows, prompt_ids)]
    if share_prompts and len(set(keys)) < len(keys):
        hidden = _hidden_sharing_prompts(model, body, keys, completion_ids, pad_id, route, device)
    else:
        hidden = _hidden_right_padded(model, body, prompt_ids, completion_ids, pad_id, route, device)
    return hidden, head, torch.tensor([t for c in completion_ids for t in c], dtype=torch.long, device=device)


def _hidden_right_padded(model, body, prompts, completions, pad_id, route, device) -> torch.Tensor:
    """The hidden states that predict each completion token [N, d]: prompt + completion in one row each."""
    ids, mask = padded([p + c for p, c in zip(prompts, completions)], pad_id, device=device)
    rows = [i for i, c in enumerate(completions) for _ in c]
    cols = [t for p, c in zip(prompts, completions) for t in range(len(p) - 1, len(p) + len(c) - 1)]
    with _routing(model, route, device):  # the hidden state at t predicts token t+1
        hidden = body(input_ids=ids, attention_mask=mask).last_hidden_state
    index = dict(dtype=torch.long, device=device)  # long even when empty: every completion may be
    return hidden[torch.tensor(rows, **index), torch.tensor(cols, **index)]


def _hidden_sharing_prompts(model, body, keys, completions, pad_id, route, device) -> torch.Tensor:
    """Like :func:`_hidden_right_padded`, each distinct (adapter row, prompt) run once.

    The distinct prompts run once and keep their key-value cache, the start that one adapter's
    prompts share run once for it (:meth:`redgame.llm.prompt_sharing.SharedPrompts.run`); each
    completion runs after its prompt's copy of that cache. The last prompt position predicts
    the first completion token; the gradient reaches the prompt's activations through the
    cache, once per prompt.
    """
    shared = SharedPrompts(keys, pad_id, device, tokens=lambda key: key[1], row=lambda key: key[0])
    out = shared.run(body, lambda rows: _routing(model, None if route is None else (route[0], rows), device))
    first = out.last_hidden_state[:, -1][shared.group]  # [n, d]: predicts each completion's first token
    rest = [c[:-1] for c in completions]  # the completion tokens that predict the next one
    width = max(len(r) for r in rest)
    index = [[j] + [len(rest) + j * width + t for t in range(len(r))] for j, r in enumerate(rest) if completions[j]]
    flat = first
    if width:
        ids, mask = padded(rest, pad_id, device=device)
        mask, positions = shared.continuation(mask)
        with _routing(model, route, device):
            hidden = body(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                          **{cache_argument(body): shared.share(cache_of(out))}).last_hidden_state
        flat = torch.cat([first, hidden.reshape(-1, hidden.shape[-1])])
    return flat[torch.tensor([i for row in index for i in row], dtype=torch.long, device=device)]


def _routing(model, route, device):
    if route is None:
        return contextlib.nullcontext()
    from redgame.kernels.peft_patch import routed

    return routed(model, route[0], torch.tensor(route[1], device=device))


def kl_to_reference(policy: TokenLogprobs, reference: TokenLogprobs) -> torch.Tensor:
    """Mean per-token k3 estimate of KL(policy || reference) on the sampled tokens."""
    r = reference.values.detach() - policy.values
    return (torch.exp(r) - r - 1.0).mean()


def dpo_pairs_loss(policy_chosen: TokenLogprobs, policy_rejected: TokenLogprobs,
                   ref_chosen: TokenLogprobs, ref_rejected: TokenLogprobs, *, beta: float,
                   kind: str = "dpo", nll_weight: float | torch.Tensor = 0.0,
                   of: int | None = None) -> tuple[torch.Tensor, dict]:
    """DPO / IPO on (chosen, rejected) pairs, plus RPO's length-normalised NLL on chosen.

    ``nll_weight``: one weight, or a [n] tensor of one weight per pair (the term is then the
    mean of weight × NLL over pairs). ``of``: the number of pairs in the whole batch when these
    are a part of it; the loss is then this part's share of the batch mean (both terms are
    means over pairs).
    """
    pc, pr = policy_chosen.sums(), policy_rejected.sums()
    rc, rr = ref_chosen.sums().detach(), ref_rejected.sums().detach()
    pref = preference_loss(pc, pr, rc, rr, beta=beta, kind=kind)
    per_pair = -(pc / policy_chosen.lengths())
    nll = per_pair.mean()
    if isinstance(nll_weight, torch.Tensor):
        loss = pref + (nll_weight.to(per_pair) * per_pair).mean()
    else:
        loss = pref + nll_weight * nll if nll_weight else pref
    if of is not None:
        loss = loss * (len(pc) / of)
    margin = ((pc - rc) - (pr - rr)).detach()
    return loss, {"pref_loss": float(pref.detach()), "nll": float(nll.detach()), "margin": float(margin.mean()),
                  "pair_acc": float((margin > 0).float().mean())}


def fused_pairs_loss(hidden: list[torch.Tensor], targets: list[torch.Tensor], head: torch.Tensor,
                     ref_sums: torch.Tensor, *, beta: float, kind: str = "dpo",
                     nll_weight: float | torch.Tensor = 0.0,
                     of: int | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """:func:`dpo_pairs_loss` from hidden states, through ``redgame.kernels.fused_preference_loss``.

    ``hidden`` / ``targets``: per sequence, the hidden states that predict its completion
    tokens [L, d] and those tokens [L]; the n chosen answers, then the n rejected ones (the
    kernel's batch convention). ``ref_sums`` [2n]: the reference's sequence log-probs, in the
    same order. ``head`` is the frozen LM head. Returns the loss (this part's share of the
    batch mean when ``of`` is given) and each sequence's per-token log-probs, detached.
    """
    padded_hidden = torch.nn.utils.rnn.pad_sequence(hidden, batch_first=True)
    padded_targets = torch.nn.utils.rnn.pad_sequence(targets, batch_first=True, padding_value=-100)
    loss, details = _kernel_fused_preference_loss(padded_hidden, None, head.detach(), padded_targets, beta=beta,
                                                  kind=kind, nll_weight=nll_weight, with_details=True,
                                                  ref_logps=ref_sums.to(padded_hidden.device))
    if of is not None:
        loss = loss * (len(hidden) // 2 / of)
    return loss, list(details.token_logps.split([len(t) for t in targets]))


def group_advantages(rewards: torch.Tensor, groups: torch.Tensor, normalise: bool) -> torch.Tensor:
    """Reward minus its group mean (the REINFORCE baseline); divided by the group std for GRPO."""
    n_groups = int(groups.max()) + 1
    count = torch.bincount(groups, minlength=n_groups).to(rewards.dtype)
    mean = torch.zeros(n_groups, dtype=rewards.dtype).index_add(0, groups, rewards) / count
    adv = rewards - mean[groups]
    if normalise:
        var = torch.zeros(n_groups, dtype=rewards.dtype).index_add(0, groups, adv**2) / count
        adv = adv / (var.sqrt()[groups] + 1e-4)
    return adv


def reinforce_pp_advantages(rewards: torch.Tensor, groups: torch.Tensor, old: TokenLogprobs,
                            reference: TokenLogprobs, kl_coef: float, *, group_baseline: bool = False,
                            pool=None) -> torch.Tensor:
    """REINFORCE++ advantages, one per token of ``old`` (Hu 2025, arXiv 2501.03262).

    As OpenRLHF computes them for Self-RedTeam (``advantage_estimator=reinforce``, γ = 1):

    1. with ``group_baseline`` only (OpenRLHF's ``reinforce_baseline``, REINFORCE++-baseline;
       Self-RedTeam does not), where a group (the answers to one attack, the attacks on one
       seed) holds several samples, its mean reward is subtracted first; a sample alone in its
       group keeps its reward;
    2. token t of a sample earns −kl_coef·(log π_old(t) − log π_ref(t)) (the k1 estimate of
       the KL, no gradient), its last token also the sample's reward; a token's return is
       the sum of the rewards from it to the end of its sample;
    3. the returns of all the role's tokens in the batch are whitened together
       (:func:`whiten`; Self-RedTeam whitens each role's separately). ``pool`` sums over
       torchrun's ranks, so that the batch is the global one (None: one process).

    ``old``: the policy's log-probs of the samples before this step's update; ``reference``:
    the reference's, token for token.
    """
    return whiten(reinforce_pp_returns(rewards, groups, old, reference, kl_coef, group_baseline=group_baseline),
                  pool)


def reinforce_pp_returns(rewards: torch.Tensor, groups: torch.Tensor, old: TokenLogprobs,
                         reference: TokenLogprobs, kl_coef: float, *, group_baseline: bool = False) -> torch.Tensor:
    """Steps 1 and 2 of :func:`reinforce_pp_advantages`: each token's return, before whitening."""
    if old.values.shape != reference.values.shape:
        raise UserError("reinforce_pp_advantages needs the policy's and the reference's log-probs of the same tokens")
    rewards = rewards.to(old.values.device, torch.float32)
    groups = groups.to(rewards.device)
    size = torch.bincount(groups)
    mean = torch.zeros(len(size), device=rewards.device).index_add(0, groups, rewards) / size.clamp_min(1)
    if group_baseline:
        rewards = torch.where(size[groups] > 1, rewards - mean[groups], rewards)
    penalty = -kl_coef * (old.values.detach().float() - reference.values.detach().float())
    counts = torch.bincount(old.seq, minlength=old.n_seqs).tolist()
    returns = []
    for k, token_rewards in enumerate(torch.split(penalty, counts)):
        token_rewards = token_rewards.clone()
        if len(token_rewards):
            token_rewards[-1] += rewards[k]
        returns.append(token_rewards.flip(0).cumsum(0).flip(0))
    return torch.cat(returns) if returns else penalty.new_zeros(0)


def whiten(values: torch.Tensor, pool=None) -> torch.Tensor:
    """(x − mean) / sqrt(max(var, 1e-8)) over ``values`` (the population variance; statistics in float64).

    ``pool``: sums a float64 tensor over torchrun's ranks, so that mean and variance are the global batch's
    whatever each rank holds (None: one process). Every rank must call it, with its own values (maybe none).
    Until 2026-12-06 each rank whitened over its own tokens alone.
    """
    pool = pool or (lambda total: total)
    wide = values.double()
    count_and_sum = pool(torch.stack([wide.new_tensor(float(len(wide))), wide.sum()]))
    mean = count_and_sum[1] / count_and_sum[0].clamp_min(1)
    variance = pool((wide - mean).pow(2).sum().reshape(1))[0] / count_and_sum[0].clamp_min(1)
    return ((wide - mean) * variance.clamp_min(1e-8).rsqrt()).to(values.dtype)


def policy_gradient_loss(policy: TokenLogprobs, reference: TokenLogprobs, advantages: torch.Tensor, *,
                         kl_coef: float, old: TokenLogprobs | None = None, clip_eps: float = 0.2,
                         of: tuple[int, int] | None = None) -> tuple[torch.Tensor, dict]:
    """The PPO/GRPO clipped surrogate on samples with one advantage per token, + KL.

    Token t of a sample costs −min(ρ_t·A_t, clip(ρ_t, 1 − ε, 1 + ε)·A_t) with the importance
    ratio ρ_t = π(t) / π_old(t); the cost is a mean over a sample's tokens, then over samples
    (Shao et al. 2024, GRPO; Schulman et al. 2017, PPO). ``old=None`` is a batch's first
    update: π_old is the policy as it is, so ρ = 1 exactly and the gradient is the plain
    REINFORCE estimator −A·∇log π / length; later epochs on the same samples pass the first
    epoch's log-probs as ``old``. ``advantages``: one per token (a sample's advantage
    repeated over its tokens for REINFORCE/GRPO; :func:`reinforce_pp_advantages`).
    ``kl_coef``: weight of the k3 KL to the reference in the loss (0 for REINFORCE++, whose
    KL is in the return). Its metrics: ``pg_loss`` (the surrogate's value, whose gradient is the policy
    gradient; at ρ = 1 it is −mean A, so −1 for SFT's advantage 1), ``nll`` (the samples' mean per-token
    NLL: SFT's loss without its KL), ``kl`` and ``clip_frac``. ``of`` = (samples, tokens) of the whole
    batch when these samples
    are a part of it: the policy term and the KL are each a mean over a sample's tokens, then over the
    samples (GRPO's eq. 3: a long sample weighs no more than a short one), scaled to this part's share.
    """
    values = policy.values
    adv = advantages.to(values.device, values.dtype)
    if adv.shape != values.shape:
        raise UserError(f"policy_gradient_loss needs one advantage per token: {tuple(adv.shape)} for "
                        f"{tuple(values.shape)} tokens")
    n = of[0] if of is not None else policy.n_seqs
    length = policy.lengths()[policy.seq]
    ratio = torch.exp(values - (values.detach() if old is None else old.values.to(values.device, values.dtype)))
    clipped = ratio.clamp(1.0 - clip_eps, 1.0 + clip_eps)
    surrogate = torch.minimum(ratio * adv, clipped * adv)
    pg = -(surrogate / length).sum() / n
    r = reference.values.detach() - values
    kl = ((torch.exp(r) - r - 1.0) / length).sum() / n  # as the surrogate: each sample's token mean (GRPO's eq. 3)
    clip_frac = ((clipped * adv < ratio * adv).float().mean() if len(adv) else torch.zeros(()))
    loss = pg + kl_coef * kl if kl_coef else pg
    # The surrogate's value is not a loss to read (−mean A at ρ = 1: −1 for SFT); the samples' mean NLL is.
    nll = -(values.detach() / length).sum() / n
    return loss, {"pg_loss": float(pg.detach()), "nll": float(nll), "kl": float(kl.detach()),
                  "clip_frac": float(clip_frac)}
