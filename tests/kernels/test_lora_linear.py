"""Fused (multi-)LoRA linear vs a float64 per-row reference: forward and every gradient; SGMV grouping."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from _kernel_checks import check_close
from redgame.errors import UserError
from redgame.kernels import backend, checks, lora_linear, multi_lora_linear
from redgame.kernels.checks import assert_all_ok
from redgame.kernels.segments import segment_plan

M, K, N, R = 37, 71, 53, 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_lora_linear_matches_float64_reference(path, rng, dtype):
    mode, calls = path
    assert_all_ok(checks.lora_case(rng, "cpu", dtype))
    if mode == "interpret":
        assert calls == {"lora_linear_forward": 1, "lora_linear_backward": 1}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_multi_lora_linear_matches_float64_reference(path, rng, dtype):
    mode, calls = path
    assert_all_ok(checks.multi_lora_case(rng, "cpu", dtype))
    if mode == "interpret":
        assert calls == {"lora_linear_forward": 1, "lora_linear_backward": 1}


def test_ranks_above_the_rank_tile_loop_over_it(path, rng):
    """r = 70 > BLOCK_R = 64: the rank is walked in tiles, single and multi-adapter."""
    assert_all_ok(checks.lora_case(rng, "cpu", torch.float32, r=70))
    assert_all_ok(checks.multi_lora_case(rng, "cpu", torch.float32, r=70, n_adapters=2))


def test_split_reductions_give_the_same_result(path, rng, monkeypatch):
    """Split-K in the projection and split-M in dA / dB (partials summed after) at tiny grains."""
    mode, _ = path
    if mode != "interpret":
        pytest.skip("splits are a Triton launch parameter")
    from redgame.kernels.ops import lora_linear as op

    monkeypatch.setattr(op, "K_SPLIT_GRAIN", 32)
    monkeypatch.setattr(op, "M_SPLIT_GRAIN", 8)
    assert op._splits(1, torch.device("cpu"), limit=3) == 3  # the interpreter pretends to have 4 SMs
    assert_all_ok(checks.lora_case(rng, "cpu", torch.float32, m=29, k=131, n=23))
    assert_all_ok(checks.multi_lora_case(rng, "cpu", torch.float16, m=40, k=131, n=23, n_adapters=2))


def test_multi_lora_batched_input_and_base_only_rows(path, rng):
    """x [2, 7, K]: rows with segment −1 get exactly the base output; the others match single LoRA."""
    x = torch.randn(2, 7, K, generator=rng)
    weight = torch.randn(N, K, generator=rng) / K**0.5
    lora_a = torch.randn(2, R, K, generator=rng)
    lora_b = torch.randn(2, N, R, generator=rng)
    segment_ids = torch.tensor([[-1, 0, 1, 1, 0, -1, 0], [1, 1, 1, -1, 0, 0, 0]])
    y = multi_lora_linear(x, weight, lora_a, lora_b, 0.5, segment_ids)
    assert y.shape == (2, 7, N)
    base = x @ weight.T
    check_close(y[segment_ids == -1], base[segment_ids == -1], torch.float32, "base-only rows")
    for adapter in range(2):
        rows = segment_ids == adapter
        single = lora_linear(x[rows], weight, lora_a[adapter], lora_b[adapter], 0.5)
        check_close(y[rows], single, torch.float32, f"rows of adapter {adapter}")


def test_base_only_rows_everywhere_give_zero_adapter_gradients(path, rng):
    """Every row −1: the base output, and zero (not missing) gradients for A and B on both paths.

    A missing gradient is skipped by Adam where a zero one still moves by momentum, and with an
    input that needs no gradient the output had no graph to call backward on."""
    x = torch.randn(4, K, generator=rng)
    weight = torch.randn(N, K, generator=rng) / K**0.5
    lora_a = torch.randn(2, R, K, generator=rng, requires_grad=True)
    lora_b = torch.randn(2, N, R, generator=rng, requires_grad=True)
    y = multi_lora_linear(x, weight, lora_a, lora_b, [1.0, 2.0], torch.full((4,), -1))
    check_close(y, x.double() @ weight.double().T, torch.float32, "base output")
    y.sum().backward()
    assert torch.equal(lora_a.grad, torch.zeros_like(lora_a))
    assert torch.equal(lora_b.grad, torch.zeros_like(lora_b))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sorted_segments_match_float64_reference(path, rng, dtype):
    """Ids in order (the game's layout: the CPU path slices instead of gathering), with −1 rows and without."""
    assert_all_ok(checks.multi_lora_case(rng, "cpu", dtype, in_order=True))
    assert_all_ok(checks.multi_lora_case(rng, "cpu", dtype, in_order=True, n_adapters=1))
    assert segment_plan(torch.tensor([-1, -1, 0, 1, 1]), 2).sorted
    assert not segment_plan(torch.tensor([0, -1, 1]), 2).sorted


def test_one_adapter_on_every_row_equals_lora_linear(path, rng):
    x = torch.randn(3, 5, K, generator=rng, requires_grad=True)
    weight = torch.randn(N, K, generator=rng) / K**0.5
    lora_a = torch.randn(1, R, K, generator=rng, requires_grad=True)
    lora_b = torch.randn(1, N, R, generator=rng, requires_grad=True)
    y = multi_lora_linear(x, weight, lora_a, lora_b, 0.5, torch.zeros(3, 5, dtype=torch.long))
    grads = torch.autograd.grad(y.square().sum(), [x, lora_a, lora_b])
    single = lora_linear(x, weight, lora_a[0], lora_b[0], 0.5)
    check_close(y, single, torch.float32, "y")
    for got, want, name in zip(grads, torch.autograd.grad(single.square().sum(), [x, lora_a, lora_b]), "xAB"):
        check_close(got, want, torch.float32, f"d{name}")


def test_bf16_cpu_scales_keep_full_precision(path, rng):
    """The CPU path scales in fp32 as lora_linear does: bit-equal in bf16, not rounded to bf16 first."""
    mode, _ = path
    if mode != "torch":
        pytest.skip("the torch path's rounding")
    scale = 0.3337  # 0.333984375 once rounded to bf16
    x = torch.randn(6, K, generator=rng).bfloat16()
    weight = (torch.randn(N, K, generator=rng) / K**0.5).bfloat16()
    lora_a = torch.randn(1, R, K, generator=rng).bfloat16()
    lora_b = torch.randn(1, N, R, generator=rng).bfloat16()
    y = multi_lora_linear(x, weight, lora_a, lora_b, scale, torch.zeros(6, dtype=torch.long))
    assert torch.equal(y, lora_linear(x, weight, lora_a[0], lora_b[0], scale))


def test_segment_plan_groups_rows_by_adapter_and_is_reused():
    segment_ids = torch.tensor([2, -1, 0, 2, 2, 0, -1, 1])
    plan = segment_plan(segment_ids, 4)
    assert plan.order.tolist() == [1, 6, 2, 5, 7, 0, 3, 4]  # stable within each segment
    assert plan.bounds.tolist() == [0, 2, 4, 5, 8, 8]  # base, adapters 0..3 (adapter 3 has no rows)
    assert segment_plan(segment_ids, 4) is plan  # the same tensor: no second sort, no second check
    segment_ids[1] = 3  # an in-place change is seen
    assert segment_plan(segment_ids, 4).bounds.tolist() == [0, 1, 3, 4, 7, 8]
    assert segment_plan(segment_ids, 4) is segment_plan(segment_ids, 4)  # and the new plan is cached again
    with torch.inference_mode():  # no version counter: planned every call, no error
        assert segment_plan(torch.tensor([0, -1, 1]), 2).bounds.tolist() == [0, 1, 2, 3]


def test_segment_ids_swapped_through_data_are_planned_again():
    """``ids.data = new`` keeps the version counter, and the new ids can be given the old address."""
    segment_ids = torch.randint(-1, 3, (20000,))
    for _ in range(5):
        plan = segment_plan(segment_ids, 3)
        assert torch.equal(segment_ids[plan.order.long()], segment_ids.sort(stable=True).values)
        segment_ids.data = torch.randint(-1, 3, (20000,))
        segment_ids.data = torch.randint(-1, 3, (20000,))


def test_multi_lora_work_does_not_grow_with_the_number_of_adapters(rng):
    """SGMV: each row meets only its own adapter, so 8 adapters cost the FLOPs of one."""
    x = torch.randn(64, K, generator=rng)
    weight = torch.randn(N, K, generator=rng)

    def flops(n_adapters):
        segment_ids = torch.arange(64) % n_adapters
        with FlopCounterMode(display=False) as counter:
            multi_lora_linear(x, weight, torch.randn(n_adapters, R, K), torch.randn(n_adapters, N, R), 1.0,
                              segment_ids)
        return counter.get_total_flops()

    assert flops(8) == flops(1) == 2 * 64 * N * K + 2 * 64 * R * (K + N)


def test_float64_runs_on_the_torch_path_exactly(rng):
    x = torch.randn(M, K, generator=rng, dtype=torch.float64)
    weight = torch.randn(N, K, generator=rng, dtype=torch.float64)
    lora_a = torch.randn(R, K, generator=rng, dtype=torch.float64)
    lora_b = torch.randn(N, R, generator=rng, dtype=torch.float64)
    assert backend(x, weight) == "torch"
    got = lora_linear(x, weight, lora_a, lora_b, 0.3)
    want = checks.per_row_lora(x, weight, lora_a[None], lora_b[None], torch.tensor([0.3], dtype=torch.float64),
                               torch.zeros(M, dtype=torch.long))
    check_close(got, want, torch.float64, "float64 output")


def test_weight_requiring_grad_is_a_clear_error(path):
    x = torch.randn(4, K)
    weight = torch.randn(N, K, requires_grad=True)
    with pytest.raises(UserError, match="weight requires grad.*frozen"):
        lora_linear(x, weight, torch.randn(R, K), torch.randn(N, R), 1.0)


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(lora_a=torch.randn(R, K + 1)), "lora_a .* must be"),
        (dict(lora_b=torch.randn(N, R + 1)), "lora_a .* must be"),
        (dict(x=torch.randn(4, K - 1)), "last dim"),
        (dict(segment_ids=torch.tensor([0, 1, 2, 0])), r"segment_ids must lie in \[-1, 2\)"),
        (dict(segment_ids=torch.tensor([0, -2, 1, 0])), r"segment_ids must lie in \[-1, 2\)"),
        (dict(segment_ids=torch.zeros(5, dtype=torch.long)), "segment_ids has shape"),
        (dict(segment_ids=torch.zeros(4)), "integer tensor"),
        (dict(scale=[1.0, 2.0, 3.0]), "scale has 3 entries"),
        (dict(scale=[1.0, "a"]), "scale must be one finite number .* got 'a'"),
        (dict(scale=[1.0, float("nan")]), "scale must be one finite number .* got nan"),  # NaN rows before
        (dict(segment_ids=[0, 0, 0, 0]), "segment_ids must be an integer tensor, got list"),
        (dict(x=torch.ones(4, K, dtype=torch.long)), "x must be a floating-point tensor"),
        (dict(x=[[0.0] * K] * 4), "x must be a floating-point tensor, got list"),  # an AttributeError before
        (dict(lora_a=torch.ones(R, K, dtype=torch.long)), "lora_a must be a floating-point tensor"),  # cast silently
        (dict(weight=torch.randn(N, K, dtype=torch.float64)), "x is torch.float32 but weight is torch.float64"),
    ],
)
def test_multi_lora_bad_inputs_name_the_culprit(change, message):
    args = dict(x=torch.randn(4, K), weight=torch.randn(N, K), lora_a=torch.randn(2, R, K),
                lora_b=torch.randn(2, N, R), scale=1.0, segment_ids=torch.zeros(4, dtype=torch.long))
    if "lora_a" in change:
        change = dict(lora_a=change["lora_a"].expand(2, -1, -1))
    if "lora_b" in change:
        change = dict(lora_b=change["lora_b"].expand(2, -1, -1))
    args.update(change)
    with pytest.raises(UserError, match=message):
        multi_lora_linear(**args)


def test_empty_batch_gives_empty_output_and_gradients():
    """No rows: nothing to launch, so every backend takes the torch path."""
    x = torch.randn(0, K, requires_grad=True)
    lora_a = torch.randn(R, K, requires_grad=True)
    y = lora_linear(x, torch.randn(N, K), lora_a, torch.randn(N, R), 1.0)
    assert y.shape == (0, N)
    y.sum().backward()
    assert x.grad.shape == (0, K) and torch.equal(lora_a.grad, torch.zeros(R, K))


def test_lora_linear_takes_one_scale():
    x, weight, lora_a, lora_b = torch.randn(4, K), torch.randn(N, K), torch.randn(R, K), torch.randn(N, R)
    with pytest.raises(UserError, match="scale must be one finite number"):  # it broadcast over the rank on CPU
        lora_linear(x, weight, lora_a, lora_b, torch.tensor([1.0, 3.0]))
    for bad in (float("nan"), float("inf"), "2"):  # NaN gave an all-NaN output; a string was read as a number
        with pytest.raises(UserError, match=f"scale must be one finite number .* got {bad!r}"):
            lora_linear(x, weight, lora_a, lora_b, bad)
    check_close(lora_linear(x, weight, lora_a, lora_b, torch.tensor(3.0)).double(),
                lora_linear(x, weight, lora_a, lora_b, 3.0).double(), torch.float64, "a 0-d tensor scale")


def test_a_bias_that_is_a_strided_view_is_read_by_its_stride(path, rng):
    """The Triton kernel read the bias as contiguous: a column of a [N, 2] tensor came out wrong by ~2."""
    x = torch.randn(M, K, generator=rng)
    weight, lora_a, lora_b = torch.randn(N, K, generator=rng), torch.randn(R, K, generator=rng), torch.randn(N, R,
                                                                                                          generator=rng)
    bias = torch.randn(N, 2, generator=rng)[:, 0]
    want = x.double() @ weight.double().T + 0.5 * (x.double() @ lora_a.double().T) @ lora_b.double().T + bias.double()
    check_close(lora_linear(x, weight, lora_a, lora_b, 0.5, bias).double(), want, torch.float32, "output")
    segments = torch.zeros(M, dtype=torch.long)
    check_close(multi_lora_linear(x, weight, lora_a[None], lora_b[None], 0.5, segments, bias).double(), want,
                torch.float32, "multi output")


def test_rank_zero_adds_nothing_and_trains_in_this_process_torch_or_interpret(rng):
    """No adapter columns: the base layer alone, on every backend (the Triton backward divided by the rank)."""
    x = torch.randn(M, K, generator=rng, requires_grad=True)
    weight, bias = torch.randn(N, K, generator=rng), torch.randn(N, generator=rng)
    lora_a, lora_b = torch.zeros(0, K, requires_grad=True), torch.zeros(N, 0, requires_grad=True)
    y = lora_linear(x, weight, lora_a, lora_b, 2.0, bias)
    check_close(y.double(), x.detach().double() @ weight.double().T + bias.double(), torch.float32, "output")
    y.sum().backward()
    check_close(x.grad.double(), weight.double().sum(0).expand(M, K), torch.float32, "dx")
    y = multi_lora_linear(x, weight, lora_a[None], lora_b[None], 2.0, torch.zeros(M, dtype=torch.long), bias)
    y.sum().backward()
