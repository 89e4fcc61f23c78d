"""Fused (multi-)LoRA linear vs a float64 per-row reference: forward and every gradient."""

import pytest
import torch

from _kernel_checks import check_close
from redgame.errors import UserError
from redgame.kernels import backend, lora_linear, multi_lora_linear

M, K, N, R = 37, 71, 53, 5
N_ADAPTERS = 3


def _leaf(gen, *shape, std, dtype):
    return (torch.randn(*shape, generator=gen, dtype=torch.float64) * std).to(dtype).requires_grad_()


def _per_row_reference(x, weight, lora_a, lora_b, scale, segment_ids, bias):
    """y_i = W·x_i + s_a·B_a·(A_a·x_i) (+ b) with a = segment_ids[i], row by row via einsum."""
    keep = (segment_ids >= 0).to(x.dtype)
    pick = segment_ids.clamp(min=0)
    proj = torch.einsum("mk,mrk->mr", x, lora_a[pick])
    delta = torch.einsum("mr,mnr->mn", proj, lora_b[pick]) * (scale[pick] * keep)[:, None]
    out = x @ weight.T + delta
    return out if bias is None else out + bias


def _check_against_reference(y, leaves, dtype, reference_fn, gen):
    grad_out = torch.randn(y.shape, generator=gen, dtype=torch.float64).to(dtype)
    y.backward(grad_out)
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    y_ref = reference_fn(*ref_leaves)
    y_ref.backward(grad_out.double())
    check_close(y.detach(), y_ref.detach(), dtype, "output")
    for i, (got, want) in enumerate(zip(leaves, ref_leaves)):
        check_close(got.grad, want.grad, dtype, f"gradient of input {i}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_lora_linear_matches_float64_reference(path, rng, dtype):
    mode, calls = path
    x = _leaf(rng, M, K, std=1.0, dtype=dtype)
    weight = (torch.randn(N, K, generator=rng, dtype=torch.float64) / K**0.5).to(dtype)
    lora_a = _leaf(rng, R, K, std=K**-0.5, dtype=dtype)
    lora_b = _leaf(rng, N, R, std=R**-0.5, dtype=dtype)
    bias = _leaf(rng, N, std=1.0, dtype=dtype)
    scale = 0.75
    assert backend(x, weight) == mode
    y = lora_linear(x, weight, lora_a, lora_b, scale, bias)
    assert y.dtype == dtype and y.shape == (M, N)

    def reference_fn(x64, a64, b64, bias64):
        seg = torch.zeros(M, dtype=torch.long)
        return _per_row_reference(x64, weight.double(), a64[None], b64[None],
                                  torch.tensor([scale], dtype=torch.float64), seg, bias64)

    _check_against_reference(y, [x, lora_a, lora_b, bias], dtype, reference_fn, rng)
    if mode == "interpret":
        assert calls == {"lora_linear_forward": 1, "lora_linear_backward": 1}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_multi_lora_linear_matches_float64_reference(path, rng, dtype):
    mode, calls = path
    x = _leaf(rng, M, K, std=1.0, dtype=dtype)
    weight = (torch.randn(N, K, generator=rng, dtype=torch.float64) / K**0.5).to(dtype)
    lora_a = _leaf(rng, N_ADAPTERS, R, K, std=K**-0.5, dtype=dtype)
    lora_b = _leaf(rng, N_ADAPTERS, N, R, std=R**-0.5, dtype=dtype)
    segment_ids = torch.randint(-1, N_ADAPTERS, (M,), generator=rng)
    segment_ids[:N_ADAPTERS + 1] = torch.arange(-1, N_ADAPTERS)  # every adapter and the base appear
    scales = [0.5, 1.0, 2.0]
    y = multi_lora_linear(x, weight, lora_a, lora_b, scales, segment_ids)
    assert y.dtype == dtype and y.shape == (M, N)

    def reference_fn(x64, a64, b64):
        return _per_row_reference(x64, weight.double(), a64, b64, torch.tensor(scales, dtype=torch.float64),
                                  segment_ids, None)

    _check_against_reference(y, [x, lora_a, lora_b], dtype, reference_fn, rng)
    if mode == "interpret":
        assert calls == {"lora_linear_forward": 1, "lora_linear_backward": 1}


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


def test_float64_runs_on_the_torch_path_exactly(rng):
    x = torch.randn(M, K, generator=rng, dtype=torch.float64)
    weight = torch.randn(N, K, generator=rng, dtype=torch.float64)
    lora_a = torch.randn(R, K, generator=rng, dtype=torch.float64)
    lora_b = torch.randn(N, R, generator=rng, dtype=torch.float64)
    assert backend(x, weight) == "torch"
    got = lora_linear(x, weight, lora_a, lora_b, 0.3)
    want = _per_row_reference(x, weight, lora_a[None], lora_b[None], torch.tensor([0.3], dtype=torch.float64),
                              torch.zeros(M, dtype=torch.long), None)
    check_close(got, want, torch.float64, "float64 output")


def test_weight_requiring_grad_is_a_clear_error(path):
    x = torch.randn(4, K)
    weight = torch.randn(N, K, requires_grad=True)
    with pytest.raises(UserError, match="weight requires grad.*frozen"):
        lora_linear(x, weight, torch.randn(R, K), torch.randn(N, R), 1.0)
    with pytest.raises(UserError, match="weight requires grad"):
        multi_lora_linear(x, weight, torch.randn(2, R, K), torch.randn(2, N, R), 1.0, torch.zeros(4, dtype=torch.long))


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(lora_a=torch.randn(R, K + 1)), "lora_a .* must be"),
        (dict(lora_b=torch.randn(N, R + 1)), "lora_a .* must be"),
        (dict(x=torch.randn(4, K - 1)), "last dim"),
        (dict(segment_ids=torch.tensor([0, 1, 2, 0])), r"segment_ids must lie in \[-1, 2\)"),
        (dict(segment_ids=torch.zeros(5, dtype=torch.long)), "segment_ids has shape"),
        (dict(segment_ids=torch.zeros(4)), "integer tensor"),
        (dict(scale=[1.0, 2.0, 3.0]), "scale has 3 entries"),
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
