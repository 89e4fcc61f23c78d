"""Triton kernels: each module holds its kernels, their GPU configs and the launchers.

Importing this package needs triton; `redgame.kernels.dispatch` imports it only when a
Triton path is taken.
"""
