"""The tolerances of redgame.kernels.checks against emulated rounding: tight enough to fail, loose enough to pass.

A GPU runs fp32 dots as TF32 when torch allows it: the operands keep 10 mantissa bits,
truncated. Emulating that on the CPU shows the TF32 bound holds for such a dot and that the
fp32 bound (which the first-generation tests used everywhere) would not.
"""

import torch

from redgame.kernels.checks import compare, tolerance


def _tf32(t: torch.Tensor) -> torch.Tensor:
    """fp32 with the 13 low mantissa bits cleared: what a TF32 tensor core reads."""
    return (t.float().view(torch.int32) & ~0x1FFF).view(torch.float32)


def test_tf32_bound_holds_for_truncated_dots_where_the_fp32_bound_fails(rng):
    x = torch.randn(37, 71, generator=rng)
    w = torch.randn(53, 71, generator=rng) / 71**0.5
    exact = x.double() @ w.double().T
    tf32 = _tf32(x).double() @ _tf32(w).double().T
    assert compare(tf32, exact, torch.float32, "TF32 dot", tf32=True).ok
    assert not compare(tf32, exact, torch.float32, "TF32 dot").ok


def test_bf16_bound_holds_for_rounded_inputs_and_output(rng):
    x = torch.randn(37, 71, generator=rng).bfloat16()
    w = (torch.randn(53, 71, generator=rng) / 71**0.5).bfloat16()
    exact = x.double() @ w.double().T
    assert compare((x.float() @ w.float().T).bfloat16(), exact, torch.bfloat16, "bf16 dot").ok
    assert tolerance(torch.bfloat16) > tolerance(torch.float16) > tolerance(torch.float32)
