"""fused_preference_loss vs float64 logits + sequence sums + the closed-form DPO / IPO loss, and its contract."""

import importlib.util
import math

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

from _kernel_checks import check_close
from redgame.errors import UserError
from redgame.kernels import checks, fused_preference_loss, reference
from redgame.kernels.checks import assert_all_ok
from redgame.kernels.preference import preference_loss_naive
from redgame.kernels.reference import token_logprobs_naive


def _batch(gen, pairs=2, seq_len=9, d=16, vocab=301, prompt=3, dtype=torch.float32):
    hidden = torch.randn(2 * pairs, seq_len, d, generator=gen).to(dtype).requires_grad_()
    ref_hidden = torch.randn(2 * pairs, seq_len, d, generator=gen).to(dtype)
    head = (torch.randn(vocab, d, generator=gen) / d**0.5).to(dtype)
    targets = torch.randint(0, vocab, (2 * pairs, seq_len), generator=gen)
    targets[:, :prompt] = -100
    return hidden, ref_hidden, head, targets


@pytest.mark.parametrize("kind", ["dpo", "ipo"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_fused_preference_loss_matches_float64(path, triton_pass, rng, dtype, kind):
    mode, calls = path
    assert_all_ok(checks.preference_case(rng, "cpu", dtype, kind=kind))
    if mode == "interpret":  # policy and reference: one pass each, nothing in the backward pass
        assert calls == {triton_pass: 2}


def test_flops_are_four_nvd_for_the_policy_and_two_for_the_reference_on_counted_tokens_only(rng):
    hidden, ref_hidden, head, targets = _batch(rng)
    counted = int((targets != -100).sum())
    vocab, d = head.shape
    with FlopCounterMode(display=False) as forward:
        loss = fused_preference_loss(hidden, ref_hidden, head, targets)
    with FlopCounterMode(display=False) as backward:
        loss.backward()
    assert forward.get_total_flops() == 4 * counted * vocab * d + 2 * counted * vocab * d
    assert backward.get_total_flops() == 0


class _LargestTensor(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.numel())
        return out


def test_no_logits_larger_than_one_chunk(rng, monkeypatch):
    """With chunks of 1/8 of the [N, V] logits, no tensor of the call is larger than that."""
    hidden, ref_hidden, head, targets = _batch(rng, pairs=3, seq_len=12, vocab=2003)
    counted = int((targets != -100).sum())
    chunk_elements = counted * head.shape[0] // 8
    monkeypatch.setattr(reference, "DEFAULT_CHUNK_ELEMENTS", chunk_elements)
    with _LargestTensor() as mode:
        fused_preference_loss(hidden, ref_hidden, head, targets).backward()
    assert mode.largest <= max(chunk_elements, head.numel())  # the head itself is the largest input


def test_backward_scales_the_saved_gradient_and_reaches_hidden_only(path, rng):
    hidden, ref_hidden, head, targets = _batch(rng)
    ref_hidden.requires_grad_()
    (once,) = torch.autograd.grad(fused_preference_loss(hidden, ref_hidden, head, targets, kind="ipo"), hidden)
    (3 * fused_preference_loss(hidden, ref_hidden, head, targets, kind="ipo")).backward()
    check_close(hidden.grad, 3 * once.double(), torch.float32, "3 × d hidden")
    assert ref_hidden.grad is None
    assert torch.equal(once[targets == -100], torch.zeros_like(once[targets == -100]))


def test_details_give_the_sequence_sums_and_margins(path, rng):
    hidden, ref_hidden, head, targets = _batch(rng, pairs=3)
    loss, details = fused_preference_loss(hidden, ref_hidden, head, targets, beta=0.5, nll_weight=2.0,
                                          with_details=True)
    d = hidden.shape[-1]

    def sums(h):
        return token_logprobs_naive(h.detach().double().reshape(-1, d), head.double(), targets.reshape(-1)).view(6, -1).sum(1)

    policy, ref = sums(hidden), sums(ref_hidden)
    check_close(details.policy_logps, policy, torch.float32, "policy sums")
    check_close(details.ref_logps, ref, torch.float32, "reference sums")
    check_close(details.margin, (policy[:3] - ref[:3]) - (policy[3:] - ref[3:]), torch.float32, "margins")
    assert details.lengths.tolist() == (targets != -100).sum(1).tolist()
    check_close(loss, details.pref_loss + 2.0 * details.nll, torch.float32, "loss = pref + w·nll")
    want = preference_loss_naive(hidden.detach().double(), ref_hidden.double(), head.double(), targets, 0.5, "dpo",
                                 nll_weight=2.0)
    check_close(loss, want, torch.float32, "loss")


def test_one_nll_weight_per_pair_matches_float64(path, rng):
    """A [B] tensor of NLL weights: mean_b(w_b · NLL_b) against float64 logits; equal weights are the number."""
    hidden, ref_hidden, head, targets = _batch(rng, pairs=3, seq_len=7, vocab=257)
    weights = torch.tensor([0.0, 1.5, 4.0])
    loss, details = fused_preference_loss(hidden, ref_hidden, head, targets, beta=0.5, nll_weight=weights,
                                          with_details=True)
    (grad,) = torch.autograd.grad(loss, hidden)
    exact = hidden.detach().double().requires_grad_()
    d, kept = hidden.shape[-1], (targets != -100).sum(1).double()

    def sums(h):
        return token_logprobs_naive(h.reshape(-1, d), head.double(), targets.reshape(-1)).view(6, -1).sum(1)

    policy, ref = sums(exact), sums(ref_hidden.double())
    margin = (policy[:3] - ref[:3]) - (policy[3:] - ref[3:])
    want = -torch.nn.functional.logsigmoid(0.5 * margin).mean() + (weights.double() * -policy[:3] / kept[:3]).mean()
    (want_grad,) = torch.autograd.grad(want, exact)
    check_close(loss, want.detach(), torch.float32, "loss = DPO + mean_b(w_b·NLL_b)")
    check_close(grad, want_grad, torch.float32, "d hidden")
    assert details.nll.item() == pytest.approx(float((-policy[:3] / kept[:3]).mean().detach()), rel=1e-5)  # unweighted
    same = fused_preference_loss(hidden, ref_hidden, head, targets, beta=0.5, nll_weight=torch.full((3,), 2.0))
    check_close(same, fused_preference_loss(hidden, ref_hidden, head, targets, beta=0.5, nll_weight=2.0).double(),
                torch.float32, "equal weights = one weight")


def test_reference_log_probs_given_instead_of_reference_hidden_states(path, rng):
    """ref_logps (the game's precomputed reference sums): the same loss and d hidden, one pass over the vocabulary
    (4·N·V·d FLOPs on the torch path)."""
    hidden, ref_hidden, head, targets = _batch(rng, pairs=3)
    loss, details = fused_preference_loss(hidden, ref_hidden, head, targets, beta=0.3, kind="ipo", nll_weight=1.0,
                                          with_details=True)
    (want_grad,) = torch.autograd.grad(loss, hidden)
    ref_sums = token_logprobs_naive(ref_hidden.double().reshape(-1, hidden.shape[-1]), head.double(),
                                    targets.reshape(-1)).view(6, -1).sum(1)
    with FlopCounterMode(display=False) as flops:
        given = fused_preference_loss(hidden, None, head, targets, beta=0.3, kind="ipo", nll_weight=1.0,
                                      ref_logps=ref_sums.float())
    mode, calls = path
    if mode == "torch":  # FlopCounterMode sees torch ops only, not Triton launches
        counted = int((targets != -100).sum())
        assert flops.get_total_flops() == 4 * counted * head.shape[0] * head.shape[1]
    else:  # one pass each for policy and reference above, then the policy's alone
        assert calls == {"gemm_logprob_parts": 3}
    (grad,) = torch.autograd.grad(given, hidden)
    check_close(given, loss.detach().double(), torch.float32, "loss")
    check_close(grad, want_grad.double(), torch.float32, "d hidden")
    kept = targets != -100
    per_token = token_logprobs_naive(hidden.detach().double()[kept], head.double(), targets[kept])
    check_close(details.token_logps, per_token, torch.float32, "per-token policy log-probs, row by row")


@pytest.mark.parametrize("reference, message", [
    (dict(), "exactly one of them"),
    (dict(ref_hidden=torch.randn(4, 9, 16), ref_logps=torch.zeros(4)), "exactly one of them"),
    (dict(ref_logps=torch.zeros(3)), r"ref_logps must be \[2B=4\]"),
    (dict(ref_logps=torch.zeros(4, dtype=torch.long)), "float sequence log-probs"),
])
def test_the_reference_is_given_one_way(reference, message):
    args = dict(hidden=torch.randn(4, 9, 16), ref_hidden=None, head_weight=torch.randn(301, 16),
                targets=torch.zeros(4, 9, dtype=torch.long))
    with pytest.raises(UserError, match=message):
        fused_preference_loss(**{**args, **reference})


def test_no_counted_token_gives_zero_margins_and_no_gradient(path, rng):
    hidden, ref_hidden, head, targets = _batch(rng)
    targets[:] = -100
    loss = fused_preference_loss(hidden, ref_hidden, head, targets, kind="dpo")
    assert loss.item() == pytest.approx(math.log(2), rel=1e-6)  # −log σ(0)
    loss.backward()
    assert torch.equal(hidden.grad, torch.zeros_like(hidden))


def test_gradient_is_bitwise_reproducible(path, rng):
    hidden, ref_hidden, head, targets = _batch(rng)
    grads = [torch.autograd.grad(fused_preference_loss(hidden, ref_hidden, head, targets), hidden)[0]
             for _ in range(2)]
    assert torch.equal(grads[0], grads[1])


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(kind="kto"), "kind must be one of"),
        (dict(beta=0.0), "beta must be a finite number > 0"),
        (dict(beta="0.1"), "beta must be a finite number > 0"),
        (dict(nll_weight=-1.0), "nll_weight must be a finite number >= 0"),
        (dict(nll_weight=math.inf), "nll_weight must be a finite number >= 0"),
        (dict(nll_weight="1"), "nll_weight must be a finite number >= 0"),
        (dict(hidden=torch.randn(4, 9, 0), ref_hidden=torch.randn(4, 9, 0), head_weight=torch.randn(301, 0)),
         r"no features \(d = 0\)"),
        (dict(nll_weight=torch.tensor([1.0, -1.0])), "nll_weight must be finite and >= 0 for every pair"),
        (dict(nll_weight=torch.ones(3)), r"\[B=2\] float weights, one per pair"),
        (dict(hidden=torch.randn(3, 9, 16)), r"hidden must be \[2B, T, d\]"),
        (dict(ref_hidden=torch.randn(4, 8, 16)), "ref_hidden has shape"),
        (dict(targets=torch.zeros(4, 8, dtype=torch.long)), r"targets must be \[2B, T\]"),
        (dict(targets=torch.zeros(4, 9)), "integer tensor"),
        (dict(targets=torch.full((4, 9), 301)), r"targets must lie in \[0, 301\)"),
        (dict(head_weight=torch.randn(301, 15)), r"head_weight must be \[V, d=16\]"),
        (dict(head_weight=torch.randn(301, 16, requires_grad=True)), "head_weight requires grad"),
        (dict(head_weight=torch.randn(301, 16, dtype=torch.float64)), "share one float dtype"),
        (dict(ignore_index=0.5), "ignore_index must be an integer id, got 0.5"),
    ],
)
def test_bad_inputs_name_the_culprit(change, message):
    args = dict(hidden=torch.randn(4, 9, 16), ref_hidden=torch.randn(4, 9, 16), head_weight=torch.randn(301, 16),
                targets=torch.zeros(4, 9, dtype=torch.long))
    args.update(change)
    with pytest.raises(UserError, match=message):
        fused_preference_loss(**args)


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is None, reason="liger-kernel not installed")
def test_equals_liger_fused_linear_dpo(path, rng):
    from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss

    hidden, ref_hidden, head, targets = _batch(rng, pairs=3, seq_len=6, d=24, vocab=131, prompt=2)
    liger = LigerFusedLinearDPOLoss(beta=0.1, compiled=False, use_ref_model=True)
    liger_out = liger(head.clone().requires_grad_(), hidden, targets, ref_input=ref_hidden, ref_weight=head)
    liger_loss = liger_out[0] if isinstance(liger_out, tuple) else liger_out
    (liger_grad,) = torch.autograd.grad(liger_loss, hidden)
    ours = fused_preference_loss(hidden, ref_hidden, head, targets, beta=0.1)
    (our_grad,) = torch.autograd.grad(ours, hidden)
    check_close(ours, liger_loss.detach().double(), torch.float32, "DPO loss")
    check_close(our_grad, liger_grad.double(), torch.float32, "d hidden")
