"""Fused token log-probs vs float64 logits + log_softmax + gather: values, d hidden, d head."""

import os
import subprocess
import sys

import pytest
import torch

from _kernel_checks import check_close
from redgame.errors import UserError
from redgame.kernels import backend, reference, token_logprobs

N, D, V = 37, 71, 1009
IGNORE = -100


def _inputs(gen, dtype, head_grad):
    hidden = torch.randn(N, D, generator=gen, dtype=torch.float64).to(dtype).requires_grad_()
    head = (torch.randn(V, D, generator=gen, dtype=torch.float64) * 2 / D**0.5).to(dtype)
    head.requires_grad_(head_grad)
    targets = torch.randint(0, V, (N,), generator=gen)
    ignored = torch.randperm(N, generator=gen)[:5]
    targets[ignored] = IGNORE
    kept = [i for i in range(N) if i not in set(ignored.tolist())]
    targets[kept[0]] = V - 1  # in the last, partly masked vocab chunk
    return hidden, head, targets, ignored


@pytest.mark.parametrize("head_grad", [False, True], ids=["frozen_head", "trained_head"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_token_logprobs_matches_float64_naive(path, rng, dtype, head_grad):
    mode, calls = path
    hidden, head, targets, ignored = _inputs(rng, dtype, head_grad)
    assert backend(hidden, head) == mode
    out = token_logprobs(hidden, head, targets, ignore_index=IGNORE)
    assert out.dtype == torch.float32 and out.shape == (N,)
    grad_out = torch.randn(N, generator=rng, dtype=torch.float64)
    out.backward(grad_out.float())

    hidden64 = hidden.detach().double().requires_grad_()
    head64 = head.detach().double().requires_grad_()
    want = reference.token_logprobs_naive(hidden64, head64, targets, IGNORE)
    want.backward(grad_out)
    check_close(out.detach(), want.detach(), dtype, "log-probs")
    check_close(hidden.grad, hidden64.grad, dtype, "d hidden")
    assert (out.detach()[ignored] == 0).all() and (hidden.grad[ignored] == 0).all()
    if head_grad:
        check_close(head.grad, head64.grad, dtype, "d head")
    else:
        assert head.grad is None
    if mode == "interpret":
        assert calls == {"token_logprobs_forward": 1, "token_logprobs_backward": 1}


def test_chunked_reference_over_many_chunks_equals_naive_in_float64(rng):
    hidden = torch.randn(N, D, generator=rng, dtype=torch.float64, requires_grad=True)
    head = torch.randn(V, D, generator=rng, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, V, (N,), generator=rng)
    targets[::7] = IGNORE
    chunk = reference.chunk_size(N, V, chunk_elements=N * 100)
    assert chunk == 100  # 11 chunks, the last one partial
    got = reference.token_logprobs_chunked(hidden, head, targets, IGNORE, chunk_elements=N * 100)
    want = reference.token_logprobs_naive(hidden, head, targets, IGNORE)
    check_close(got, want, torch.float64, "log-probs")
    grad_out = torch.randn(N, generator=rng, dtype=torch.float64)
    got_grads = torch.autograd.grad(got, (hidden, head), grad_out)
    want_grads = torch.autograd.grad(want, (hidden, head), grad_out)
    for name, g, w in zip(("d hidden", "d head"), got_grads, want_grads):
        check_close(g, w, torch.float64, name)


def test_all_ignored_gives_zeros_and_zero_gradient(path):
    hidden = torch.randn(5, 8, requires_grad=True)
    head = torch.randn(19, 8)
    out = token_logprobs(hidden, head, torch.full((5,), 3, dtype=torch.long), ignore_index=3)
    assert torch.equal(out.detach(), torch.zeros(5))
    out.sum().backward()
    assert torch.equal(hidden.grad, torch.zeros(5, 8))


def test_logprobs_of_all_targets_sum_to_one(path, rng):
    """Σ_v exp(log p(v)) = 1 for each row: a check that needs no reference implementation."""
    vocab = 67
    hidden = torch.randn(3, 16, generator=rng).repeat_interleave(vocab, 0)
    head = torch.randn(vocab, 16, generator=rng)
    targets = torch.arange(vocab).repeat(3)
    probs = token_logprobs(hidden, head, targets).exp().view(3, vocab).sum(1)
    check_close(probs, torch.ones(3, dtype=torch.float64), torch.float32, "probability mass")


@pytest.mark.parametrize(
    "args, message",
    [
        (dict(targets=torch.tensor([0, 19, 1])), r"targets must lie in \[0, 19\)"),
        (dict(targets=torch.tensor([0, -1, 1])), r"targets must lie in \[0, 19\)"),
        (dict(targets=torch.tensor([0.0, 1.0, 1.0])), "integer tensor"),
        (dict(targets=torch.tensor([0, 1])), r"targets must be \[N=3\]"),
        (dict(head_weight=torch.randn(19, 9)), "hidden must be"),
        (dict(head_weight=torch.randn(19, 8, dtype=torch.float64)), "head_weight is torch.float64"),
    ],
)
def test_bad_inputs_name_the_culprit(args, message):
    call = dict(hidden=torch.randn(3, 8), head_weight=torch.randn(19, 8), targets=torch.tensor([0, 1, 2]))
    call.update(args)
    with pytest.raises(UserError, match=message):
        token_logprobs(**call)


def test_package_imports_and_runs_without_triton_or_peft_loaded():
    """`import redgame.kernels` must not need triton (blocked here) nor import peft/triton eagerly."""
    code = (
        "import sys; sys.modules['triton'] = None\n"
        "import torch, redgame.kernels as k\n"
        "assert 'peft' not in sys.modules and 'transformers' not in sys.modules\n"
        "h = torch.randn(4, 8, requires_grad=True)\n"
        "out = k.token_logprobs(h, torch.randn(11, 8), torch.tensor([1, 2, -100, 10]))\n"
        "out.sum().backward(); assert k.backend(h) == 'torch' and out[2] == 0\n"
        "print('ok')\n"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, TRITON_INTERPRET="1"))
    assert run.stdout.strip() == "ok", run.stderr[-3000:]
