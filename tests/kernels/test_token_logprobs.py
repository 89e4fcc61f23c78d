"""Fused token log-probs vs float64 logits + log_softmax + gather: values, d hidden, d head."""

import os
import subprocess
import sys

import pytest
import torch

from torch.utils.flop_counter import FlopCounterMode

from _kernel_checks import check_close
from redgame.errors import UserError
from redgame.kernels import checks, reference, token_logprobs
from redgame.kernels.checks import assert_all_ok

N, D, V = 37, 71, 1009
IGNORE = -100


@pytest.mark.parametrize("head_grad", [False, True], ids=["frozen_head", "trained_head"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_token_logprobs_matches_float64_naive(path, triton_pass, rng, dtype, head_grad):
    mode, calls = path
    assert_all_ok(checks.token_logprobs_case(rng, "cpu", dtype, head_grad=head_grad))
    if mode == "interpret":  # one pass over the vocabulary; the backward pass launches nothing
        assert calls == {triton_pass: 1}


def test_frozen_head_costs_four_nvd_flops_and_no_backward_pass_over_the_vocabulary(rng):
    """Forward + backward with a frozen head: 4·N·V·d matmul FLOPs (Liger's count; naive needs a [N, V] gradient)."""
    n, d, vocab = 48, 32, 3001
    hidden = torch.randn(n, d, generator=rng, requires_grad=True)
    head = torch.randn(vocab, d, generator=rng)
    targets = torch.randint(0, vocab, (n,), generator=rng)
    with FlopCounterMode(display=False) as forward_flops:
        out = token_logprobs(hidden, head, targets)
    with FlopCounterMode(display=False) as backward_flops:
        out.sum().backward()
    assert forward_flops.get_total_flops() == 4 * n * vocab * d
    assert backward_flops.get_total_flops() == 0


def test_vocabulary_splits_merge_to_the_same_result(path, rng):
    """1, 2, 3 and 7 vocabulary ranges per row block (partials merged after): the same log p and direction."""
    mode, _ = path
    if mode != "interpret":
        pytest.skip("splits are a Triton launch parameter")
    from redgame.kernels.ops.token_logprobs import online_logprob_parts

    hidden = torch.randn(21, 24, generator=rng)
    head = torch.randn(517, 24, generator=rng)
    targets = torch.randint(0, 517, (21,), generator=rng)
    want = reference_parts(hidden.double(), head.double(), targets)
    for splits in (1, 2, 3, 7):
        got = online_logprob_parts(hidden, head, targets, -100, True, splits=splits)
        for name in ("lse", "target_logit", "expected_head"):
            check_close(getattr(got, name), getattr(want, name), torch.float32, f"{name}, {splits} splits")


def test_every_gpu_config_reads_targets_just_past_a_range_end(path, rng):
    """A range's last chunk may run past its end when BLOCK_V (128, 256) does not divide the range (192 here): a
    target in that overhang took the chunk's -inf, so its log p was -inf (the tests' ranges were all multiples of 64)."""
    mode, _ = path
    if mode != "interpret":
        pytest.skip("the GPU configs are forced in Triton's interpreter")
    from redgame.kernels.ops._common import forced_configs
    from redgame.kernels.ops.token_logprobs import gpu_configs, online_logprob_parts

    hidden = torch.randn(21, 24, generator=rng)
    head = torch.randn(517, 24, generator=rng)  # 3 ranges of 192 (a multiple of 64, not of 128)
    targets = torch.randint(0, 517, (21,), generator=rng)
    targets[:6] = torch.tensor([192, 200, 255, 384, 400, 191])  # just past the first and second ranges' ends
    want = reference_parts(hidden.double(), head.double(), targets)
    for config in gpu_configs():
        with forced_configs({"_online_logprob_kernel": config}):
            got = online_logprob_parts(hidden, head, targets, -100, True, splits=3)
        for name in ("lse", "target_logit", "expected_head"):
            check_close(getattr(got, name), getattr(want, name), torch.float32, f"{name}, {config}")


def reference_parts(hidden, head, targets):
    logits = hidden @ head.T
    probs = torch.softmax(logits, dim=-1)
    return reference.LogprobParts(torch.logsumexp(logits, -1), logits.gather(1, targets[:, None])[:, 0], probs @ head)


def test_d_hidden_is_bitwise_reproducible(path, rng):
    """No atomics: two runs give the same bits."""
    hidden = torch.randn(19, 33, generator=rng, requires_grad=True)
    head = torch.randn(301, 33, generator=rng)
    targets = torch.randint(0, 301, (19,), generator=rng)
    grads = [torch.autograd.grad(token_logprobs(hidden, head, targets).sum(), hidden)[0] for _ in range(2)]
    assert torch.equal(grads[0], grads[1])


def test_chunked_torch_pass_over_many_chunks_equals_naive_in_float64(rng):
    hidden = torch.randn(N, D, generator=rng, dtype=torch.float64)
    head = torch.randn(V, D, generator=rng, dtype=torch.float64)
    targets = torch.randint(0, V, (N,), generator=rng)
    chunk = reference.chunk_size(N, V, chunk_elements=N * 100)
    assert chunk == 100  # 11 chunks, the last one partial
    got = reference.chunked_logprob_parts(hidden, head, targets, IGNORE, True, chunk_elements=N * 100)
    want = reference_parts(hidden, head, targets)
    for name in ("lse", "target_logit", "expected_head"):
        check_close(getattr(got, name), getattr(want, name), torch.float64, name)
    grad = torch.randn(N, generator=rng, dtype=torch.float64)
    got_dw = reference.chunked_head_grad(hidden, head, targets, got.lse, grad, IGNORE, chunk_elements=N * 100)
    head.requires_grad_()
    (want_dw,) = torch.autograd.grad(reference.token_logprobs_naive(hidden, head, targets), head, grad)
    check_close(got_dw, want_dw, torch.float64, "d head")


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
        (dict(targets=torch.tensor([0, 1, 1j])), "integer tensor"),
        (dict(targets=torch.tensor([1, 156, 2], dtype=torch.uint8)), r"got values in \[1, 156\]"),  # 156 is no -100
        (dict(head_weight=torch.randn(0, 8)), "no rows"),
        (dict(targets=torch.tensor([0, 1])), r"targets must be \[N=3\]"),
        (dict(head_weight=torch.randn(19, 9)), "hidden must be"),
        (dict(head_weight=torch.randn(19, 8, dtype=torch.float64)), "got torch.float32 and torch.float64"),
        (dict(hidden=torch.ones(3, 8, dtype=torch.long), head_weight=torch.ones(19, 8, dtype=torch.long)),
         "share one float dtype"),
        (dict(hidden=[[0.0] * 8] * 3), "hidden must be a tensor, got list"),
        (dict(ignore_index=0.5), "ignore_index must be an integer id, got 0.5"),  # was cast to 0: id 0 dropped
        (dict(ignore_index=None), "ignore_index must be an integer id, got None"),
        (dict(ignore_index=True), "ignore_index must be an integer id, got a bool"),
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


def test_a_frozen_half_head_is_upcast_once_and_never_stale():
    """The fp32 copy is reused while the head is unchanged, remade after an in-place write, never for a trained head."""
    from redgame.kernels.reference import in_compute_dtype

    head = torch.nn.Parameter(torch.randn(37, 5).bfloat16(), requires_grad=False)
    first = in_compute_dtype(head, torch.float32)
    assert torch.equal(first, head.float()) and in_compute_dtype(head, torch.float32) is first
    assert in_compute_dtype(head, torch.float64).dtype == torch.float64
    with torch.no_grad():
        head.add_(1.0)  # as an optimiser step would
    assert torch.equal(in_compute_dtype(head, torch.float32), head.float())
    other = torch.randn(37, 5).bfloat16()
    assert torch.equal(in_compute_dtype(other, torch.float32), other.float())
    trained = torch.nn.Parameter(torch.randn(37, 5).bfloat16())
    assert in_compute_dtype(trained, torch.float32) is not in_compute_dtype(trained, torch.float32)
    head.data = torch.randn(37, 5).bfloat16()  # new storage under the same tensor: seen
    assert torch.equal(in_compute_dtype(head, torch.float32), head.float())
    with torch.inference_mode():  # no version counter: upcast every call, no error
        frozen = torch.randn(37, 5).bfloat16()
        assert torch.equal(in_compute_dtype(frozen, torch.float32), frozen.float())


def test_a_head_swapped_through_data_is_never_read_from_a_stale_copy():
    """``head.data = new`` keeps the version counter at 0, and the allocator can hand the new tensor the
    old one's address: the cached copy must not pass for the new head (it holds the old storage)."""
    head = torch.nn.Parameter(torch.randn(4096, 64).bfloat16(), requires_grad=False)
    hidden, targets = torch.randn(3, 64).bfloat16(), torch.randint(0, 4096, (3,))
    for _ in range(6):
        want = reference.token_logprobs_naive(hidden.double(), head.double(), targets)
        torch.testing.assert_close(token_logprobs(hidden, head, targets).double(), want, atol=1e-4, rtol=0)
        head.data = torch.randn(4096, 64).bfloat16()
        head.data = torch.randn(4096, 64).bfloat16()
    del head  # the cache holds no dead weight's copy or storage (on a GPU: a dropped model's head)
    assert reference._upcast["copy"] is None and reference._upcast["storage"] is None


def _confident(head, target, miss):
    """A hidden state α·W_t whose target has 1 − p_t = miss (float64; α by bisection)."""
    w = head.double()
    low, high = 0.0, 64.0
    for _ in range(60):
        alpha = (low + high) / 2
        p_target = torch.softmax(alpha * w[target] @ w.T, -1)[target]
        low, high = (alpha, high) if 1 - p_target > miss else (low, alpha)
    return alpha * w[target]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_gemm_pass_over_many_row_blocks(path, rng, dtype):
    """The GEMM pass, 16 rows at a time (two whole blocks and a partial one), with an ignored row and rows whose
    target is nearly certain."""
    mode, _ = path
    if mode != "interpret":
        pytest.skip("the GEMM pass is a Triton path")
    from redgame.kernels.ops.gemm_logprobs import gemm_logprob_parts, rows_per_block

    n, d, vocab = 40, 24, 517
    head = torch.randn(vocab, d, generator=rng).to(dtype)
    targets = torch.randint(0, vocab, (n,), generator=rng)
    targets[3] = targets[21] = -100
    hidden = torch.randn(n, d, generator=rng, dtype=torch.float64)
    for row, miss in zip((0, 1, 17, 33, 39), (1e-3, 2e-3, 5e-3, 1e-2, 3e-3)):
        hidden[row] = _confident(head, targets[row], miss)
    hidden = hidden.to(dtype)
    assert rows_per_block(n, vocab, 16 * vocab) == 16
    got = gemm_logprob_parts(hidden, head, targets, -100, True, block_elements=16 * vocab)
    want = reference_parts(hidden.double(), head.double(), targets.clamp(min=0))
    keep = targets != -100
    want_direction = head.double()[targets.clamp(min=0)] - want.expected_head
    check_close(got.lse, want.lse, dtype, "LSE")
    check_close(got.target_logit[keep], want.target_logit[keep], dtype, "target logit")
    assert got.target_logit[3] == got.target_logit[21] == 0, "an ignored row has no target logit"
    check_close(got.direction[keep], want_direction[keep], dtype, "direction u")


def test_gemm_pass_keeps_the_direction_of_a_nearly_certain_row_in_bfloat16(path, rng):
    """1 − p_t ≈ 1e-3: u = −(p − onehot)·W from G in bf16 is accurate; p in bf16 would round p_t and lose u.

    The row is h = W_t of a head scaled (then rounded to bf16) until 1 − p_t ≈ 1e-3, so h is
    exact in bf16. (In fp32 the logits' own rounding, ~1e-6 of a logit, already limits u on
    such a row to about 1e-2, whichever pass computes it, so this is a bf16 check.)
    """
    mode, _ = path
    if mode != "interpret":
        pytest.skip("the GEMM pass is a Triton path")
    from redgame.kernels.ops.gemm_logprobs import gemm_logprob_parts

    vocab, d = 517, 24
    base = torch.randn(vocab, d, generator=rng, dtype=torch.float64) / d**0.5
    # The row that h = W_t prefers most clearly over every other: for a random row another row's logit
    # W_j · W_t can pass its own |W_t|², and then no scale makes it nearly certain (a draw that failed).
    logits = base @ base.T
    gap = logits.diagonal().clone() - logits.fill_diagonal_(-torch.inf).max(dim=1).values
    target = gap.argmax().reshape(1)

    def miss(head):
        return 1 - torch.softmax(head.double()[target] @ head.double().T, -1)[0, target].item()

    low, high = 0.0, 16.0
    for _ in range(40):
        scale = (low + high) / 2
        low, high = (scale, high) if miss((scale * base).bfloat16()) > 1e-3 else (low, scale)
    head = (scale * base).bfloat16()
    hidden = head[target]
    assert 2e-4 < miss(head) < 5e-3, "the row is nearly certain"
    got = gemm_logprob_parts(hidden, head, target, -100, True)
    want = reference_parts(hidden.double(), head.double(), target)
    want_direction = head.double()[target] - want.expected_head
    check_close(got.direction, want_direction, torch.bfloat16, "direction u, 1 − p_t ≈ 1e-3")
    p_in_bf16 = torch.softmax(hidden.double() @ head.double().T, -1).bfloat16().double()
    lost = head.double()[target] - p_in_bf16 @ head.double()
    assert not checks.compare(lost, want_direction, torch.bfloat16, "u from p in bf16").ok


@pytest.mark.parametrize("dtype, offset", [(torch.float32, 30.0), (torch.float32, 1e3), (torch.float32, 1e4),
                                           (torch.bfloat16, 30.0), (torch.bfloat16, 1e3), (torch.float16, 1e3),
                                           (torch.bfloat16, 1e4), (torch.float16, 1e4)])
def test_logits_far_from_zero_keep_the_gradient_of_hidden(path, triton_pass, rng, dtype, offset, request):
    """Every logit near ``offset``, through a head with a large common column. The gemm pass formed p = exp(x − lse)
    with lse rounded to one fp32 number, so Σp missed 1 by about ulp(lse): in fp32 d hidden was off by 1.6e-2 at 1e3
    and by 2.6 (relative) at 1e4, where a naive fp32 log_softmax is off by 4.5e-4. In bf16 and fp16 G's own rounding
    did the same (1.2 at 1e3 in bf16) until the pass took ΣG's share back out. Against float64 on the same rounded
    inputs; fp32's bound is the naive fp32 error's order at 1e4, the half types' the project's."""
    n, vocab, d = 8, 37, 6
    hidden = torch.randn(n, d, generator=rng, dtype=torch.float64)
    head = torch.randn(vocab, d, generator=rng, dtype=torch.float64)
    hidden[:, 0], head[:, 0] = 1.0, offset  # logit = offset + N(0, about 2)
    hidden, head = hidden.to(dtype), head.to(dtype)
    targets = torch.randint(0, vocab, (n,), generator=rng)
    exact = hidden.double().requires_grad_()
    logps = torch.log_softmax(exact @ head.double().T, -1).gather(1, targets[:, None]).sum()
    (want,) = torch.autograd.grad(logps, exact)
    got_hidden = hidden.clone().requires_grad_()
    (got,) = torch.autograd.grad(token_logprobs(got_hidden, head, targets).float().sum(), got_hidden)
    if dtype == torch.float32:
        error = ((got.double() - want).abs().max() / want.abs().max()).item()
        assert error < 5e-3, f"d hidden relative error {error:.2e} at logits near {offset:g}"
    else:
        check_close(got, want, dtype, f"d hidden at logits near {offset:g}")
