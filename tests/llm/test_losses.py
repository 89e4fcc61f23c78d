"""Losses and log-probs against independent float64 references and closed forms."""

import math

import pytest
import torch

from redgame.llm import losses
from redgame.llm.losses import (TokenLogprobs, completion_logprobs, dpo_pairs_loss, group_advantages,
                                policy_gradient_loss, reinforce_pp_advantages, torch_preference_loss, whiten,
                                torch_token_logprobs)


def test_torch_token_logprobs_matches_float64_log_softmax():
    g = torch.Generator().manual_seed(0)
    hidden, head = torch.randn(7, 5, generator=g), torch.randn(11, 5, generator=g)
    targets = torch.tensor([0, 3, 10, -100, 4, 4, 9])
    ref = torch.log_softmax(hidden.double() @ head.double().t(), -1)
    got = torch_token_logprobs(hidden, head, targets)
    for i, t in enumerate(targets.tolist()):
        expected = 0.0 if t == -100 else float(ref[i, t])
        assert got[i].item() == pytest.approx(expected, abs=1e-5)


def test_preference_losses_closed_forms():
    zero = torch.zeros(3)
    assert torch_preference_loss(zero, zero, zero, zero, beta=0.1).item() == pytest.approx(math.log(2))
    # IPO is 0 exactly at margin 1/(2 beta)
    m = torch.full((2,), 1 / (2 * 0.25))
    assert torch_preference_loss(m, torch.zeros(2), torch.zeros(2), torch.zeros(2), beta=0.25, kind="ipo").item() \
        == pytest.approx(0.0, abs=1e-9)
    pc, pr, rc, rr = (torch.tensor([1.0, -2.0]), torch.tensor([0.5, 0.0]), torch.tensor([0.2, -1.0]),
                      torch.tensor([0.1, 0.3]))
    h = (pc - rc) - (pr - rr)
    dpo = sum(math.log1p(math.exp(-0.5 * float(x))) for x in h) / 2
    assert torch_preference_loss(pc, pr, rc, rr, beta=0.5).item() == pytest.approx(dpo, rel=1e-6)
    with pytest.raises(ValueError, match="kind"):
        losses.preference_loss(pc, pr, rc, rr, kind="kto")


@pytest.mark.skipif(not losses.USE_KERNELS, reason="redgame.kernels not installed")
@pytest.mark.parametrize("kind", ["dpo", "ipo"])
def test_kernel_seam_gives_the_torch_numbers_and_gradients(kind):
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(9, 6, generator=g, requires_grad=True)
    head = torch.randn(13, 6, generator=g)
    targets = torch.tensor([1, 2, 3, -100, 12, 0, 5, 5, 7])
    a = losses.token_logprobs(hidden, head, targets, use_kernels=True)
    b = losses.token_logprobs(hidden, head, targets, use_kernels=False)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    (ga,) = torch.autograd.grad(a.sum(), hidden)
    (gb,) = torch.autograd.grad(b.sum(), hidden)
    torch.testing.assert_close(ga, gb, atol=1e-5, rtol=1e-5)
    pc, pr, rc, rr = torch.randn(4, 5, generator=g)
    torch.testing.assert_close(losses.preference_loss(pc, pr, rc, rr, beta=0.3, kind=kind, use_kernels=True),
                               losses.preference_loss(pc, pr, rc, rr, beta=0.3, kind=kind, use_kernels=False))


def test_completion_logprobs_match_the_models_full_logits(tiny):
    model, tok = tiny
    prompts = [[1, 5, 9, 22], [3, 4]]
    comps = [[7, 8], [10, 11, 12]]
    got = completion_logprobs(model, prompts, comps, pad_id=tok.pad_token_id)
    for i, (p, c) in enumerate(zip(prompts, comps)):
        logits = model(input_ids=torch.tensor([p + c])).logits[0].double()
        ref = torch.log_softmax(logits, -1)
        expected = [float(ref[len(p) - 1 + k, t]) for k, t in enumerate(c)]
        assert got.values[got.seq == i].tolist() == pytest.approx(expected, abs=1e-4)
    assert got.sums().shape == (2,) and got.lengths().tolist() == [2.0, 3.0]
    part = got.slice(1, 2)
    assert part.n_seqs == 1 and part.sums().item() == pytest.approx(got.sums()[1].item())


@pytest.mark.parametrize("share, chunk, kernels", [(False, 0, False), (True, 0, True), (False, 1, True)])
def test_completion_logprobs_at_a_temperature_are_those_of_the_sampling_distribution(tiny, share, chunk, kernels):
    """log softmax(logits / T): the update's ratio and gradient are of the policy the samples came from."""
    model, tok = tiny
    prompts, comps = [[1, 5, 9, 22], [1, 5, 9, 22], [3, 4]], [[7, 8], [30], [10, 11, 12]]
    got = completion_logprobs(model, prompts, comps, pad_id=tok.pad_token_id, temperature=0.7, share_prompts=share,
                              chunk=chunk, use_kernels=kernels)
    for i, (p, c) in enumerate(zip(prompts, comps)):
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([p + c])).logits[0].double()
        ref = torch.log_softmax(logits / 0.7, -1)
        expected = [float(ref[len(p) - 1 + k, t]) for k, t in enumerate(c)]
        assert got.values[got.seq == i].tolist() == pytest.approx(expected, abs=1e-4)


def test_rpo_nll_is_length_normalised():
    def lp(values, seq, n):
        return TokenLogprobs(torch.tensor(values, requires_grad=True), torch.tensor(seq), n)

    chosen = lp([-1.0, -3.0, -2.0], [0, 0, 1], 2)
    rejected = lp([-1.0, -1.0], [0, 1], 2)
    ref_c, ref_r = lp([-1.0, -3.0, -2.0], [0, 0, 1], 2), lp([-1.0, -1.0], [0, 1], 2)
    loss, info = dpo_pairs_loss(chosen, rejected, ref_c, ref_r, beta=0.1, nll_weight=2.0)
    # margins are 0: DPO term log 2; NLL = mean(4/2, 2/1) = 2
    assert info["nll"] == pytest.approx(2.0)
    assert loss.item() == pytest.approx(math.log(2) + 2 * 2.0)
    # one weight per pair, in pair order: NLLs (4 + 2)/2 = 3 and 5/1 = 5, so mean(1·3, 2·5) = 6.5 (not 5.5)
    chosen = lp([-4.0, -2.0, -5.0], [0, 0, 1], 2)
    ref_c = lp([-4.0, -2.0, -5.0], [0, 0, 1], 2)
    loss, info = dpo_pairs_loss(chosen, rejected, ref_c, ref_r, beta=0.1, nll_weight=torch.tensor([1.0, 2.0]))
    assert info["nll"] == pytest.approx(4.0)  # the reported NLL stays unweighted
    assert loss.item() == pytest.approx(math.log(2) + 6.5)


def test_group_advantages_baseline_and_grpo():
    rewards = torch.tensor([1.0, 0.0, 0.5, -1.0, 1.0])
    groups = torch.tensor([0, 0, 1, 1, 1])
    adv = group_advantages(rewards, groups, normalise=False)
    assert adv.tolist() == pytest.approx([0.5, -0.5, 0.5 - 1 / 6, -1 - 1 / 6, 1 - 1 / 6])
    grpo = group_advantages(rewards, groups, normalise=True)
    std1 = torch.tensor([0.5 - 1 / 6, -1 - 1 / 6, 1 - 1 / 6]).pow(2).mean().sqrt().item()
    assert grpo[2].item() == pytest.approx((0.5 - 1 / 6) / (std1 + 1e-4), rel=1e-5)


def test_policy_gradient_gradient_is_minus_advantage_over_length():
    values = torch.tensor([-1.0, -2.0, -0.5], requires_grad=True)
    seq = torch.tensor([0, 0, 1])
    pol = TokenLogprobs(values, seq, 2)
    ref = TokenLogprobs(values.detach().clone(), seq, 2)
    advantages = group_advantages(torch.tensor([1.0, 0.0]), torch.tensor([0, 0]), normalise=False)
    loss, info = policy_gradient_loss(pol, ref, advantages[seq], kl_coef=0.3)
    loss.backward()
    # advantages +0.5 / -0.5; d/d logp = -adv / len / n_seqs; the k3 KL has zero gradient at equality
    assert values.grad.tolist() == pytest.approx([-0.5 / 2 / 2, -0.5 / 2 / 2, 0.5 / 1 / 2])
    assert info["kl"] == pytest.approx(0.0)
    assert info["clip_frac"] == 0.0
    with pytest.raises(ValueError, match="one advantage per token"):
        policy_gradient_loss(pol, ref, advantages, kl_coef=0.3)


def test_the_kl_term_is_each_samples_token_mean_then_a_mean_over_samples():
    """GRPO's eq. 3 (Shao et al. 2024): −β·KL sits inside (1/G)·Σ_i (1/|o_i|)·Σ_t, as the surrogate does. It was a
    mean over all tokens, so a long sample's KL outweighed a short one's."""
    gen = torch.Generator().manual_seed(5)
    lengths = [1, 9, 4]
    seq = torch.repeat_interleave(torch.arange(3), torch.tensor(lengths))
    values = (-torch.rand(14, generator=gen, dtype=torch.float64) * 3).requires_grad_()
    ref = -torch.rand(14, generator=gen, dtype=torch.float64) * 3
    loss, info = policy_gradient_loss(TokenLogprobs(values, seq, 3), TokenLogprobs(ref, seq, 3),
                                      torch.zeros(14, dtype=torch.float64), kl_coef=0.7)
    k3 = [math.exp(q - v) - (q - v) - 1 for v, q in zip(values.tolist(), ref.tolist())]
    starts = [0, 1, 10, 14]
    per_sample = [sum(k3[a:b]) / (b - a) for a, b in zip(starts, starts[1:])]
    assert info["kl"] == pytest.approx(sum(per_sample) / 3, rel=1e-12)
    assert float(loss) == pytest.approx(0.7 * sum(per_sample) / 3, rel=1e-12)  # advantages 0: the KL alone
    loss.backward()
    length = torch.tensor(lengths, dtype=torch.float64)[seq]  # d k3 / d v = 1 − exp(q − v)
    assert values.grad.tolist() == pytest.approx((0.7 * (1 - torch.exp(ref - values.detach())) / length / 3).tolist(),
                                                 rel=1e-12)


def test_first_epoch_ratio_is_one_and_later_epochs_clip_like_ppo():
    """old=None: ratio exactly 1, the plain estimator; with π_old: −min(ρA, clip(ρ)A), by hand."""
    seq = torch.tensor([0, 0, 1, 1])
    adv = torch.tensor([2.0, 2.0, -1.0, -1.0])
    now = torch.tensor([-1.0, -2.0, -0.5, -3.0])
    values = now.clone().requires_grad_(True)
    ref = TokenLogprobs(now.clone(), seq, 2)
    loss, info = policy_gradient_loss(TokenLogprobs(values, seq, 2), ref, adv, kl_coef=0.0)
    loss.backward()
    assert loss.item() == pytest.approx(-(2.0 + 2.0) / 2 / 2 - (-1.0 - 1.0) / 2 / 2)  # ρ = 1: −mean A
    assert values.grad.tolist() == pytest.approx([-2 / 2 / 2, -2 / 2 / 2, 1 / 2 / 2, 1 / 2 / 2])
    # π_old such that ρ = 1.5, 0.5 (A = +2) and 1.5, 0.5 (A = −1), ε = 0.2
    rho = torch.tensor([1.5, 0.5, 1.5, 0.5])
    old = TokenLogprobs(now - torch.log(rho), seq, 2)
    values = now.clone().requires_grad_(True)
    loss, info = policy_gradient_loss(TokenLogprobs(values, seq, 2), ref, adv, kl_coef=0.0, old=old, clip_eps=0.2)
    loss.backward()
    # A > 0: min(1.5·2, 1.2·2) = 2.4 clipped (no gradient); min(0.5·2, 0.8·2) = 1.0 (gradient ρA)
    # A < 0: min(−1.5, −1.2) = −1.5 (gradient ρA); min(−0.5, −0.8) = −0.8 clipped (no gradient)
    expected = -((2.4 + 1.0) / 2 + (-1.5 - 0.8) / 2) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert values.grad.tolist() == pytest.approx([0.0, -0.5 * 2 / 2 / 2, 1.5 / 2 / 2, 0.0], abs=1e-6)
    assert info["clip_frac"] == pytest.approx(0.5)


@pytest.mark.parametrize("group_baseline, r", [
    (False, [1.0, 0.0, 0.5]),  # Self-RedTeam's (OpenRLHF's advantage_estimator=reinforce): the rewards as they are
    (True, [0.5, -0.5, 0.5])])  # REINFORCE++-baseline: the group of samples 0 and 1 less its mean; sample 2 alone kept
def test_reinforce_pp_advantages_by_hand(group_baseline, r):
    """k1 KL folded into the return, global whitening; the group baseline only where asked for."""
    rewards = torch.tensor([1.0, 0.0, 0.5])
    groups = torch.tensor([0, 0, 1])  # samples 0 and 1 answer one prompt; sample 2 is alone
    seq = torch.tensor([0, 0, 1, 2, 2, 2])
    old = torch.tensor([-1.0, -2.0, -0.5, -1.5, -0.2, -0.7])
    ref = torch.tensor([-1.2, -1.0, -0.5, -1.0, -0.4, -0.7])
    beta = 0.1
    penalty = [-beta * (o - q) for o, q in zip(old.tolist(), ref.tolist())]
    returns = [penalty[0] + penalty[1] + r[0], penalty[1] + r[0],
               penalty[2] + r[1],
               penalty[3] + penalty[4] + penalty[5] + r[2], penalty[4] + penalty[5] + r[2], penalty[5] + r[2]]
    mean = sum(returns) / len(returns)
    std = math.sqrt(sum((g - mean) ** 2 for g in returns) / len(returns))
    expected = [(g - mean) / std for g in returns]
    got = reinforce_pp_advantages(rewards, groups, TokenLogprobs(old, seq, 3), TokenLogprobs(ref, seq, 3), beta,
                                  group_baseline=group_baseline)
    assert got.tolist() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    assert float(got.mean()) == pytest.approx(0.0, abs=1e-6)
    # no KL penalty and one token per sample: plain whitened (baselined) rewards
    one = torch.tensor([0, 1, 2])
    flat = reinforce_pp_advantages(rewards, groups, TokenLogprobs(torch.zeros(3), one, 3),
                                   TokenLogprobs(torch.ones(3), one, 3), 0.0, group_baseline=group_baseline)
    z = torch.tensor(r)
    assert flat.tolist() == pytest.approx(((z - z.mean()) / z.std(unbiased=False)).tolist(), rel=1e-5)


def test_whitening_pooled_over_ranks_is_the_global_batchs(seed=5):
    """torchrun's ranks each hold part of a role's tokens (one none): pooled, every rank's whitened values are
    the global batch's, as in one process; each rank over its own tokens, they were not."""
    import threading

    gen = torch.Generator().manual_seed(seed)
    shards = [torch.randn(7, generator=gen) * 3 + 1, torch.zeros(0), torch.randn(2, generator=gen) - 4]
    slots, meet = [None] * len(shards), threading.Barrier(len(shards))

    def pool_of(rank):
        def pool(total):  # all_reduce(SUM) among the threads
            slots[rank] = total
            meet.wait()
            summed = sum(slots)
            meet.wait()
            return summed
        return pool

    got = [None] * len(shards)
    threads = [threading.Thread(target=lambda r=r: got.__setitem__(r, whiten(shards[r], pool_of(r))))
               for r in range(len(shards))]
    [t.start() for t in threads]
    [t.join() for t in threads]
    whole = torch.cat(shards).double()
    expected = (whole - whole.mean()) / whole.std(unbiased=False)
    assert torch.cat(got).tolist() == pytest.approx(expected.tolist(), rel=1e-6, abs=1e-6)
    assert got[1].numel() == 0
    assert whiten(shards[0]).tolist() != pytest.approx(got[0].tolist(), abs=1e-3)  # a rank alone: not the same
    assert whiten(torch.full((3,), 2.5)).tolist() == [0.0, 0.0, 0.0]  # no spread: centred, not divided by 0


def test_chunked_completion_logprobs_give_the_same_values_and_gradients(tiny):
    from redgame.llm.roles import LoraSettings, build_roles

    model, _ = tiny
    roles = build_roles(model, regime="bipolicy", lora=LoraSettings(rank=4, alpha=8))
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():  # non-zero B, so the adapter's gradients are not trivially structured
        for _, p in roles.named_parameters("defender"):
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    lengths = [(5, 3), (2, 7), (9, 1), (4, 4), (3, 6)]  # odd prompt and completion lengths
    prompts = [torch.randint(3, 200, (a,), generator=gen).tolist() for a, _ in lengths]
    comps = [torch.randint(3, 200, (b,), generator=gen).tolist() for _, b in lengths]
    weights = torch.randn(sum(b for _, b in lengths), generator=gen)
    results = []
    for chunk in (0, 2):
        with roles.policy("defender") as m:
            for p in roles.parameters("defender"):
                p.grad = None
            lp = completion_logprobs(m, prompts, comps, pad_id=0, chunk=chunk)
            (weights * lp.values).sum().backward()
            results.append((lp.values.detach(), lp.seq, {n: p.grad.clone() for n, p in roles.named_parameters("defender")}))
    (v0, s0, g0), (v1, s1, g1) = results
    torch.testing.assert_close(v1, v0, rtol=1e-5, atol=1e-6)
    assert torch.equal(s1, s0)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-4, atol=1e-6)
    assert any(float(g.abs().max()) > 0 for g in g0.values())
    with pytest.raises(ValueError, match="chunk"):
        completion_logprobs(model, prompts, comps, pad_id=0, chunk=-1)


@pytest.mark.parametrize("chunk", [0, 3])
def test_shared_prompts_give_the_same_values_and_gradients(tiny, chunk):
    """Pairs on one prompt: the prompt run once, its cache continued by each completion; same numbers."""
    from redgame.llm.roles import LoraSettings, build_roles

    model, _ = tiny
    roles = build_roles(model, regime="bipolicy", lora=LoraSettings(rank=4, alpha=8))
    gen = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for _, p in roles.named_parameters("defender"):
            p.add_(0.05 * torch.randn(p.shape, generator=gen))
    prompts, comps = [], []
    for a in (6, 1, 9, 3):  # odd prompt lengths, one of a single token; completions of 1 to 6 tokens
        prompt = torch.randint(3, 200, (a,), generator=gen).tolist()
        for b in (1, int(torch.randint(2, 7, (1,), generator=gen))):
            prompts.append(prompt)
            comps.append(torch.randint(3, 200, (b,), generator=gen).tolist())
    prompts.append([7, 8, 9])  # a prompt of its own
    comps.append([10, 11])
    weights = torch.randn(sum(len(c) for c in comps), generator=gen)
    results = []
    for share in (False, True):
        with roles.policy("defender") as m:
            for p in roles.parameters("defender"):
                p.grad = None
            lp = completion_logprobs(m, prompts, comps, pad_id=0, chunk=chunk, share_prompts=share)
            (weights * lp.values).sum().backward()
            results.append((lp.values.detach(), {n: p.grad.clone() for n, p in roles.named_parameters("defender")}))
    (v0, g0), (v1, g1) = results
    torch.testing.assert_close(v1, v0, rtol=1e-5, atol=1e-5)
    for name in g0:
        torch.testing.assert_close(g1[name], g0[name], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("share", [False, True])
def test_every_completion_empty_gives_no_log_probs(tiny, share):
    """An IndexError: the empty index lists were float tensors."""
    model, tok = tiny
    got = completion_logprobs(model, [[5, 6], [5, 6]], [[], []], pad_id=tok.pad_token_id, share_prompts=share)
    assert got.values.shape == (0,) and got.sums().tolist() == [0.0, 0.0]
