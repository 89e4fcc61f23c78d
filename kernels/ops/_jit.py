"""A `triton.jit` that decides compiled vs interpreted per launch, not per import.

`triton.jit` reads TRITON_INTERPRET when it decorates, so a module imported without the
variable could never run in the interpreter. `dual_jit` keeps the plain Python function and
decorates it lazily, once per mode, so setting TRITON_INTERPRET=1 for one call (e.g. with
pytest's monkeypatch) runs the same kernel source in Triton's interpreter on CPU tensors.
"""

from __future__ import annotations

import triton

from ..dispatch import interpret_requested


class DualKernel:
    """A kernel usable as `kernel[grid](...)`, compiled or interpreted as TRITON_INTERPRET says now."""

    def __init__(self, fn):
        self.fn = fn
        self._by_mode = {}

    def __getitem__(self, grid):
        mode = interpret_requested()
        kernel = self._by_mode.get(mode)
        if kernel is None:
            # triton.jit returns an InterpretedFunction exactly when TRITON_INTERPRET is set.
            kernel = self._by_mode[mode] = triton.jit(self.fn)
        return kernel[grid]


def dual_jit(fn) -> DualKernel:
    """Decorator: like `@triton.jit`, with the interpreter choice made at launch time."""
    return DualKernel(fn)
