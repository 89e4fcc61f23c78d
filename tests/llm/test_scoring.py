"""Both roles in one pass, micro-batches with gradient accumulation: the numbers of one pass per role.

The reference is the previous path: each role's sequences scored in their own pass with
peft's own LoRA layers and the whole batch at once (``together=False, micro_tokens=0``).
"""

import pytest
import torch

from redgame.kernels import patch_peft, unpatch
from redgame.llm.config import TrainConfig
from redgame.llm.losses import TokenLogprobs, fused_pairs_loss, group_advantages
from redgame.llm.role_loss import loss_from_logprobs
from redgame.llm.rollout import Completion
from redgame.llm.scoring import Job, micro_batches, score


def _roles(tiny, regime="bipolicy", reference="base"):
    from redgame.llm.roles import LoraSettings, build_roles

    roles = build_roles(tiny[0], regime=regime, lora=LoraSettings(rank=4, alpha=8), reference=reference)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():  # non-zero B: the adapters differ from the base and from each other
        for model in roles.models():
            for name, p in model.named_parameters():
                if "lora_" in name:
                    p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return roles


def _sequences(n, seed):
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        prompt = torch.randint(3, 400, (int(torch.randint(2, 14, (1,), generator=gen)),), generator=gen).tolist()
        completion = torch.randint(3, 400, (int(torch.randint(1, 8, (1,), generator=gen)),), generator=gen).tolist()
        out.append(Completion(prompt, completion, ""))
    return out


def _pairs_on_prompts(pairs, seed, start):
    """2 * pairs sequences: pair k's two (k and pairs + k) on one prompt, every prompt after the same ``start``
    tokens (a role prompt's fixed text; the first ``start`` of one list for every role, as a chat template's
    system turn), then 1 to 5 tokens of its own."""
    gen = torch.Generator().manual_seed(seed)
    first = torch.randint(3, 400, (8,), generator=torch.Generator().manual_seed(0))[:start].tolist()
    prompts = [first + torch.randint(3, 400, (int(torch.randint(1, 6, (1,), generator=gen)),), generator=gen).tolist()
               for _ in range(pairs)]
    return [Completion(prompts[k % pairs], torch.randint(3, 400, (int(torch.randint(1, 8, (1,), generator=gen)),),
                                                         generator=gen).tolist(), "") for k in range(2 * pairs)]


def _jobs(roles, reference=False, fused=False, starts=False):
    """A DPO job for each role: 3 pairs for the attacker, 5 for the defender (chosen k, rejected n + k); with
    ``starts``, each pair on one prompt and each role's prompts after a start of their own (6 and 2 tokens)."""
    jobs = []
    for role, pairs, seed, start in (("attacker", 3, 1, 6), ("defender", 5, 2, 2)):
        enter = (lambda r=role: roles.reference(r)) if reference else (lambda r=role: roles.policy(r))
        units = [[k, pairs + k] for k in range(pairs)]
        sequences = _pairs_on_prompts(pairs, seed, start) if starts else _sequences(2 * pairs, seed)
        jobs.append(Job(*roles.seat(role, reference=reference), enter, sequences, units, fused=fused))
    return jobs


CFG = TrainConfig(beta=0.5, nll_weight=2.0, loss="dpo")


def _update(roles, *, together, micro_tokens, kernels, chunk=0, fused=False, share=False, starts=False):
    """Reference, then policy with the DPO loss back-propagated part by part: log-probs, losses, gradients."""
    models = [m for m in roles.models() if hasattr(m, "peft_config")]
    for m in models:
        (patch_peft if kernels else unpatch)(m)
    with torch.no_grad():
        refs = [lp.per_sequence() for lp in score(_jobs(roles, reference=True, starts=starts), 0, together=together,
                                                  micro_tokens=micro_tokens, use_kernels=kernels, share_prompts=share)]
    for role in ("attacker", "defender"):
        for p in roles.parameters(role):
            p.grad = None
            p.requires_grad_(True)
    jobs = _jobs(roles, fused=fused, starts=starts)
    kinds = set()  # which path each part took

    def on_part(parts):
        total = 0.0
        for j, part in parts.items():
            kinds.add("hidden" if part.hidden else "log-probs")
            order = [jobs[j].units[u][k] for k in range(2) for u in part.units]
            if part.hidden:  # the fused path: hidden states in, the loss and the log-probs out
                ref_sums = torch.stack([refs[j][i].sum() for i in order])
                loss, values = fused_pairs_loss([part.hidden[i] for i in order], [part.targets[i] for i in order],
                                                part.head, ref_sums, beta=CFG.beta, nll_weight=CFG.nll_weight,
                                                of=len(jobs[j].units))
                part.values.update(zip(order, values))
                total = total + loss
                continue
            pol = TokenLogprobs.of_sequences([part.values[i] for i in order])
            ref = TokenLogprobs.of_sequences([refs[j][i] for i in order])
            total = total + loss_from_logprobs(CFG, pol, ref, of=len(jobs[j].units))[0]
        return total

    policy = score(jobs, 0, together=together, micro_tokens=micro_tokens, chunk=chunk, use_kernels=kernels,
                   share_prompts=share, on_part=on_part)
    losses = [loss_from_logprobs(CFG, lp, TokenLogprobs.of_sequences(r))[0] for lp, r in zip(policy, refs)]
    grads = {f"{role}/{n}": p.grad.clone() for role in ("attacker", "defender")
             for n, p in roles.named_parameters(role)}
    for m in models:
        unpatch(m)
    return [lp.values for lp in policy], [torch.cat(r) for r in refs], losses, grads, kinds


def _assert_same(a, b, tol=1e-5):
    for x, y in zip(a[0] + a[1], b[0] + b[1]):
        torch.testing.assert_close(x, y, atol=tol, rtol=tol)
    for x, y in zip(a[2], b[2]):
        torch.testing.assert_close(x, y, atol=tol, rtol=tol)
    assert a[3].keys() == b[3].keys()
    for name in a[3]:
        torch.testing.assert_close(a[3][name], b[3][name], atol=tol, rtol=tol, msg=name)
    assert all(float(g.abs().max()) > 0 for g in a[3].values())  # every adapter learned something


@pytest.mark.parametrize("regime,reference", [("bipolicy", "base"), ("advgame", "ema"), ("shared", "base")])
def test_both_roles_in_one_pass_equal_one_pass_per_role(tiny, regime, reference):
    roles = _roles(tiny, regime, reference)
    previous = _update(roles, together=False, micro_tokens=0, kernels=False)
    one_pass = _update(roles, together=True, micro_tokens=0, kernels=True)
    _assert_same(one_pass, previous)


@pytest.mark.parametrize("micro_tokens,chunk", [(40, 0), (1, 0), (60, 1)])
def test_micro_batches_add_up_to_the_whole_batch(tiny, micro_tokens, chunk):
    roles = _roles(tiny)
    whole = _update(roles, together=True, micro_tokens=0, kernels=True)
    parts = _update(roles, together=True, micro_tokens=micro_tokens, kernels=True, chunk=chunk)
    _assert_same(parts, whole)


@pytest.mark.parametrize("micro_tokens", [0, 40])
def test_the_fused_preference_loss_on_hidden_states_equals_the_log_prob_path(tiny, micro_tokens):
    """Fused jobs (kernels.fused_preference_loss on the hidden states): the previous path's log-probs,
    losses and gradients, whole or in micro-batches."""
    roles = _roles(tiny)
    previous = _update(roles, together=False, micro_tokens=0, kernels=False)
    fused = _update(roles, together=True, micro_tokens=micro_tokens, kernels=True, fused=True)
    assert previous[4] == {"log-probs"} and fused[4] == {"hidden"}
    _assert_same(fused, previous)


@pytest.mark.parametrize("regime,micro_tokens,fused", [("bipolicy", 0, False), ("bipolicy", 120, True), ("shared", 0, True)])
def test_shared_prompts_and_their_shared_starts_equal_one_row_per_sequence(tiny, monkeypatch, regime, micro_tokens,
                                                                            fused):
    """A pair's prompt run once, and the start each role's prompts share run once for that role (its own adapter):
    the log-probs, losses and gradients of every sequence run whole in its own row."""
    from redgame.llm import prompt_sharing

    starts = []
    real = prompt_sharing.common_prefix
    monkeypatch.setattr(prompt_sharing, "common_prefix", lambda rows: starts.append(real(rows)) or starts[-1])
    roles = _roles(tiny, regime)
    previous = _update(roles, together=False, micro_tokens=0, kernels=False, starts=True)
    assert not starts
    shared = _update(roles, together=True, micro_tokens=micro_tokens, kernels=True, fused=fused, share=True,
                     starts=True)
    roles_starts = {6, 2} if regime == "bipolicy" else {2}  # under shared both roles' prompts have one adapter
    assert roles_starts <= set(starts)  # each adapter's start ran once in some pass
    _assert_same(shared, previous)


def test_separate_models_or_peft_layers_fall_back_to_one_pass_per_role(tiny, monkeypatch):
    from redgame.llm import scoring

    passes = []
    real = scoring._score_pass
    monkeypatch.setattr(scoring, "_score_pass", lambda jobs, *a, **k: passes.append(len(jobs)) or real(jobs, *a, **k))
    roles = _roles(tiny)
    _update(roles, together=True, micro_tokens=0, kernels=False)  # peft's layers: reference together (adapters off)
    assert passes == [2, 1, 1]
    passes.clear()
    _update(roles, together=True, micro_tokens=0, kernels=True)
    assert passes == [2, 2]


def test_micro_batches_keep_units_whole_sort_by_length_and_respect_the_budget():
    jobs = [Job(None, None, None, _sequences(8, 5), [[k, 4 + k] for k in range(4)]),
            Job(None, None, None, _sequences(3, 6))]
    batches = micro_batches(jobs, 30)
    seen = sorted((j, u) for b in batches for j, u in b)
    assert seen == [(0, u) for u in range(4)] + [(1, u) for u in range(3)]
    length = lambda j, u: max(len(jobs[j].sequences[i].prompt_ids) + len(jobs[j].sequences[i].completion_ids)  # noqa: E731
                              for i in jobs[j].units[u])
    widths = [max(length(j, u) for j, u in b) for b in batches]
    assert widths == sorted(widths, reverse=True)
    for b in batches:
        rows = sum(len(jobs[j].units[u]) for j, u in b)
        assert len(b) == 1 or rows * max(length(j, u) for j, u in b) <= 30
    assert micro_batches(jobs, 0) == [[(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2)]]


def test_reinforce_micro_batches_weight_the_kl_by_tokens(tiny):
    """REINFORCE/GRPO: samples in parts, KL a mean over all tokens; the same gradient as the whole batch."""
    roles = _roles(tiny)
    cfg = TrainConfig(loss="grpo", kl_coef=0.3)
    seqs = _sequences(6, 9)
    adv = group_advantages(torch.tensor([1.0, 0.0, 0.5, -1.0, 1.0, 0.2]), torch.tensor([0, 0, 0, 1, 1, 1]), True)
    tokens = sum(len(s.completion_ids) for s in seqs)
    job = lambda: [Job(*roles.seat("defender"), lambda: roles.policy("defender"), seqs)]  # noqa: E731
    with torch.no_grad():
        ref = score([Job(*roles.seat("defender", True), lambda: roles.reference("defender"), seqs)], 0)[0]
    grads = []
    for micro in (0, 25):
        for p in roles.parameters("defender"):
            p.grad = None
            p.requires_grad_(True)

        def on_part(parts):
            part = parts[0]
            items = [u for u in part.units]
            pol = TokenLogprobs.of_sequences([part.values[i] for i in items])
            r = TokenLogprobs.of_sequences([ref.per_sequence()[i] for i in items])
            return loss_from_logprobs(cfg, pol, r, adv[items][pol.seq], of=(len(seqs), tokens))[0]  # per token

        patch_peft(roles.models()[0])
        score(job(), 0, micro_tokens=micro, use_kernels=True, on_part=on_part)
        unpatch(roles.models()[0])
        grads.append({n: p.grad.clone() for n, p in roles.named_parameters("defender")})
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], atol=1e-6, rtol=1e-5)
