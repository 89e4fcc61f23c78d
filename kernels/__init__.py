"""Fused Triton kernels (LoRA, token log-probs, preference loss), their torch references, and dispatch.

Public API:

- `lora_linear(x, weight, lora_a, lora_b, scale, bias=None)`
- `multi_lora_linear(x, weight, lora_a, lora_b, scale, segment_ids, bias=None)`
- `token_logprobs(hidden, head_weight, targets, ignore_index=-100)`
- `fused_preference_loss(hidden, ref_hidden, head_weight, targets, beta=0.1, kind="dpo" | "ipo",
  ignore_index=-100)`
- `preference_loss(pc, pr, rc, rr, beta=0.1, kind="dpo" | "ipo")`
- `patch_peft(model)` / `unpatch(model)`

CUDA tensors run the Triton kernels, CPU tensors a chunked torch path, and CPU tensors
with TRITON_INTERPRET=1 the Triton kernels in Triton's interpreter (see docs/kernels.md).
Importing this package does not import triton or peft.
"""

if __name__ == "kernels":  # the checkout's root on sys.path, and `import kernels` meant PyPI's package
    from ._shadowing import install_the_real_package

    install_the_real_package(__file__)
else:
    from .dispatch import backend, fused_preference_loss, lora_linear, multi_lora_linear, token_logprobs
    from .peft_patch import patch_peft, unpatch
    from .preference import PreferenceDetails, preference_loss

    __all__ = ["backend", "lora_linear", "multi_lora_linear", "token_logprobs", "fused_preference_loss",
               "preference_loss", "PreferenceDetails", "patch_peft", "unpatch"]
