"""Guard against mixing Triton's interpreter and compiled mode in one process.

`@triton.jit` reads TRITON_INTERPRET when it decorates, and that includes the library
functions of `triton.language` (`tl.zeros`, `tl.sum`, ...), which are decorated when
triton is first imported. So the interpreter works only when TRITON_INTERPRET=1 was set
before triton was imported, and compiled kernels only when it was not. A mismatch would
fail deep inside a launch; this check fails first, with the fix in the message.
"""

from __future__ import annotations

import triton.language as tl

from ..dispatch import interpret_requested


def _interpreted(fn) -> bool:
    return type(fn).__name__ == "InterpretedFunction"


def check_mode(*kernels) -> None:
    """Raise RuntimeError unless triton.language and `kernels` match TRITON_INTERPRET now."""
    want = interpret_requested()
    for fn in (tl.zeros, *kernels):
        if _interpreted(fn) != want:
            raise RuntimeError(
                f"redgame.kernels: TRITON_INTERPRET={'1' if want else 'unset/0'} now, but "
                f"{getattr(fn, '__name__', fn)} was built {'interpreted' if _interpreted(fn) else 'compiled'}: "
                "set TRITON_INTERPRET=1 before triton is first imported (i.e. before starting Python), "
                "or leave it unset for CUDA runs")
