"""DPO / IPO closed forms, and token_logprobs + DPO against Liger's fused linear DPO loss."""

import importlib.util
import math

import pytest
import torch

from _kernel_checks import check_close
from redgame.errors import UserError
from redgame.kernels import preference_loss, token_logprobs


def _pairs(*rows):
    return [torch.tensor(col, dtype=torch.float64, requires_grad=True) for col in zip(*rows)]


def test_dpo_closed_form_value_and_gradient():
    # rows: (policy chosen, policy rejected, ref chosen, ref rejected); margins 1.0 and -3.0
    pc, pr, rc, rr = _pairs((-1.0, -2.0, -1.5, -1.5), (-4.0, -1.0, -2.0, -2.0))
    beta = 0.1
    loss = preference_loss(pc, pr, rc, rr, beta=beta, kind="dpo")
    # −log σ(z) = log(1 + e^{−z})
    want = (math.log1p(math.exp(-0.1)) + math.log1p(math.exp(0.3))) / 2
    assert loss.item() == pytest.approx(want, rel=1e-12)
    loss.backward()
    # d/dπc of −log σ(β m) = −β σ(−β m), averaged over 2 pairs
    sig = lambda z: 1 / (1 + math.exp(-z))  # noqa: E731
    assert pc.grad.tolist() == pytest.approx([-beta * sig(-0.1) / 2, -beta * sig(0.3) / 2], rel=1e-12)
    assert pr.grad.tolist() == pytest.approx([beta * sig(-0.1) / 2, beta * sig(0.3) / 2], rel=1e-12)
    assert rc.grad.tolist() == pytest.approx((-pc.grad).tolist(), rel=1e-12)


def test_ipo_closed_form_value_and_gradient():
    pc, pr, rc, rr = _pairs((-1.0, -2.0, -1.5, -1.5), (-4.0, -1.0, -2.0, -2.0))
    beta = 0.25  # 1/(2β) = 2
    loss = preference_loss(pc, pr, rc, rr, beta=beta, kind="ipo")
    assert loss.item() == pytest.approx(((1.0 - 2.0) ** 2 + (-3.0 - 2.0) ** 2) / 2, rel=1e-12)
    loss.backward()
    assert pc.grad.tolist() == pytest.approx([2 * (1.0 - 2.0) / 2, 2 * (-3.0 - 2.0) / 2], rel=1e-12)


def test_dpo_at_zero_margin_is_log_two():
    z = torch.zeros(4)
    assert preference_loss(z, z, z, z).item() == pytest.approx(math.log(2), rel=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(kind="kto"), "kind must be one of"),
        (dict(beta=0.0), "beta must be a finite number > 0"),
        (dict(beta=math.inf), "beta must be a finite number > 0"),  # it gave NaN
        (dict(ref_rejected_logps=torch.zeros(3)), "ref_rejected_logps has shape"),
        (dict(policy_rejected_logps=[0.0, 0.0]), "must be a tensor"),
        (dict(policy_chosen_logps=[0.0, 0.0]), "policy_chosen_logps must be a tensor"),  # it read .shape first
        (dict(ref_chosen_logps=torch.zeros(2, dtype=torch.bool)), "ref_chosen_logps must hold floating-point"),
        (dict(policy_rejected_logps=torch.zeros(2, dtype=torch.long)), "must hold floating-point"),  # was taken
        (dict(ref_rejected_logps=torch.zeros(2, device="meta")), "ref_rejected_logps is on meta, policy_chosen"),
    ],
)
def test_bad_arguments_name_the_culprit(kwargs, message):
    args = dict(policy_chosen_logps=torch.zeros(2), policy_rejected_logps=torch.zeros(2),
                ref_chosen_logps=torch.zeros(2), ref_rejected_logps=torch.zeros(2))
    args.update(kwargs)
    with pytest.raises(UserError, match=message):
        preference_loss(**args)


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is None, reason="liger-kernel not installed")
def test_token_logprobs_plus_dpo_equals_liger_fused_linear_dpo(path, rng):
    from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss

    pairs, seq, d, vocab = 3, 6, 24, 131
    hidden = torch.randn(2 * pairs, seq, d, generator=rng, requires_grad=True)
    ref_hidden = torch.randn(2 * pairs, seq, d, generator=rng)
    head = torch.randn(vocab, d, generator=rng) / d**0.5
    ref_head = torch.randn(vocab, d, generator=rng) / d**0.5
    targets = torch.randint(0, vocab, (2 * pairs, seq), generator=rng)
    targets[:, :2] = -100  # prompt tokens
    beta = 0.1

    liger = LigerFusedLinearDPOLoss(beta=beta, compiled=False, use_ref_model=True)
    liger_out = liger(head.clone().requires_grad_(), hidden, targets, ref_input=ref_hidden, ref_weight=ref_head)
    liger_loss = liger_out[0] if isinstance(liger_out, tuple) else liger_out
    (liger_grad,) = torch.autograd.grad(liger_loss, hidden)

    def seq_logps(h, w):
        return token_logprobs(h.reshape(-1, d), w, targets.reshape(-1)).view(2 * pairs, seq).sum(1)

    policy = seq_logps(hidden, head)
    ref = seq_logps(ref_hidden, ref_head).detach()
    ours = preference_loss(policy[:pairs], policy[pairs:], ref[:pairs], ref[pairs:], beta=beta, kind="dpo")
    (our_grad,) = torch.autograd.grad(ours, hidden)
    check_close(ours.detach(), liger_loss.detach().double(), torch.float32, "DPO loss")
    check_close(our_grad, liger_grad.double(), torch.float32, "d hidden")
