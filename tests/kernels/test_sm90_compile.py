"""Compile every Triton kernel for an H100 (sm_90) ahead of time, with the real GPU launch configs.

No GPU is needed: triton lowers to PTX and runs its bundled ptxas. This catches what the
interpreter cannot: type errors in compiled `tl.dot` (bf16 operands), constexpr misuse,
and tiles that do not fit in shared memory. It does not check speed.
"""

import importlib.util
import os

import pytest

pytestmark = [
    pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed"),
    pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") == "1", reason="kernels are built for the interpreter"),
]

H100_SHARED_BYTES = 227 * 1024


def _compile(kernel, types, config):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    options = {k: config.pop(k) for k in ("num_warps", "num_stages") if k in config}
    names = kernel.arg_names
    signature = {n: ("constexpr" if n in config else types.get(n, "i32")) for n in names}
    constexprs = {(names.index(n),): v for n, v in config.items()}
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                              target=GPUTarget("cuda", 90, 32), options=options)
    assert compiled.asm["cubin"], "no cubin produced"
    assert compiled.metadata.shared <= H100_SHARED_BYTES, f"{compiled.metadata.shared} bytes of shared memory"
    return compiled


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("n_cols, has_seg", [(16, False), (2 * 64, True)], ids=["r16", "2x_r64_segments"])
def test_fused_lora_kernels_compile_for_sm90(dtype, n_cols, has_seg):
    from redgame.kernels.ops import lora_linear as op

    types = {n: f"*{dtype}" for n in ("P", "Q", "L", "U", "BIAS", "OUT")}
    types.update(SEG="*i32", SCALE="*fp32", PROJ="*fp32")
    config = dict(op.fused_lora_config(n_cols, interpret=False), HAS_SEG=has_seg, HAS_BIAS=True)
    _compile(op._fused_lora_kernel, types, config)
    for axis in (0, 1):  # dA reads g (fp32) and x; dB reads dy and the fp32 projection
        types = dict(X="*fp32" if axis == 0 else f"*{dtype}", Y=f"*{dtype}" if axis == 0 else "*fp32",
                     SCALE="*fp32", C=f"*{dtype}")
        _compile(op._scaled_tn_kernel, types, op.scaled_tn_config(n_cols, axis, interpret=False))


@pytest.mark.parametrize("dtype", ["bf16", "fp32"])
@pytest.mark.parametrize("with_acc", [False, True], ids=["lse_only", "with_expectation"])
def test_token_logprobs_kernel_compiles_for_sm90_in_every_gpu_config(dtype, with_acc):
    from redgame.kernels.ops import token_logprobs as op

    types = dict(H=f"*{dtype}", W=f"*{dtype}", T="*i64", PART_MAX="*fp32", PART_SUM="*fp32", PART_TGT="*fp32",
                 PART_ACC="*fp32")
    for config in op.gpu_configs():
        precision = "tf32" if dtype == "fp32" else "ieee"
        _compile(op._online_logprob_kernel, types, dict(config, WITH_ACC=with_acc, UPCAST=False, PRECISION=precision))
