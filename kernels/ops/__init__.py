"""Triton kernels: each module holds the kernels, `<op>_forward` / `<op>_backward` and the autograd.Function.

Importing this package needs triton; `redgame.kernels.dispatch` imports it only when a
Triton path is taken.
"""
