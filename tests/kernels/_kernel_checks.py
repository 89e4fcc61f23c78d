"""Comparison helper shared by the kernel tests."""

import torch

# Max abs error allowed, relative to the largest entry of the float64 reference.
RELATIVE_TOL = {torch.float32: 1e-4, torch.float16: 5e-3, torch.float64: 1e-10}


def check_close(actual, expected, dtype, what):
    """Every entry finite (so every element was written) and within tolerance of the reference."""
    assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
    assert torch.isfinite(actual).all(), f"{what}: non-finite entries (an element was not written?)"
    scale = max(expected.abs().max().item(), 1e-6)
    err = (actual.double() - expected.double()).abs().max().item()
    bound = RELATIVE_TOL[dtype] * scale
    assert err <= bound, f"{what}: max abs error {err:.3e} > {bound:.3e} ({dtype})"
