"""Comparison helper shared by the kernel tests (the tolerances live in redgame.kernels.checks)."""

from redgame.kernels.checks import assert_all_ok, compare


def check_close(actual, expected, dtype, what):
    """Every entry finite (so every element was written) and within tolerance of the reference."""
    assert_all_ok([compare(actual, expected, dtype, what)])
