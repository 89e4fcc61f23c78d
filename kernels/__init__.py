"""Fused Triton kernels (LoRA, token log-probs), their torch references, and dispatch."""
