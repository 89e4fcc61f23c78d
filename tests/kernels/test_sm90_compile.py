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
    pytest.mark.slow,  # every config of every kernel: minutes of ptxas on 2 cores
]


def _compile(kernel, types, config):
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from redgame.kernels.ops._common import H100_SHARED_BYTES

    options = {k: config.pop(k) for k in ("num_warps", "num_stages") if k in config}
    names = kernel.arg_names
    signature = {n: ("constexpr" if n in config else types.get(n, "i32")) for n in names}
    constexprs = {(names.index(n),): v for n, v in config.items()}
    compiled = triton.compile(ASTSource(fn=kernel, signature=signature, constexprs=constexprs),
                              target=GPUTarget("cuda", 90, 32), options=options)
    assert compiled.asm["cubin"], "no cubin produced"
    assert compiled.metadata.shared <= H100_SHARED_BYTES, f"{compiled.metadata.shared} bytes of shared memory"
    return compiled


def _precision(dtype):
    return "tf32" if dtype == "fp32" else "ieee"


def _fitting(configs, estimate, dtype):
    """The configs the autotuner keeps on an H100 for this dtype (at least one must be left)."""
    from redgame.kernels.ops._common import H100_SHARED_BYTES, fits

    kept = [c for c in configs if fits(c, 4 if dtype == "fp32" else 2, estimate, H100_SHARED_BYTES)]
    assert kept, "no config fits"
    return kept


# fp32 with segments is a superset of fp32 without (minutes of ptxas saved); ranks 16 and 64
@pytest.mark.parametrize("dtype, has_seg, rank", [("bf16", False, 16), ("bf16", True, 64), ("fp32", True, 64)],
                         ids=["bf16-one_adapter-r16", "bf16-segments-r64", "fp32-segments-r64"])
def test_lora_kernels_compile_for_sm90_in_every_gpu_config(dtype, has_seg, rank):
    from redgame.kernels.ops import lora_linear as op

    common = dict(HAS_SEG=has_seg, UPCAST=False, PRECISION=_precision(dtype))
    configs = op.gpu_configs()
    block_r = op.rank_block(rank)
    expand = {n: f"*{dtype}" for n in ("P", "Q", "U", "BIAS", "OUT")}
    expand.update(PROJ="*fp32", SCALES="*fp32", ORDER="*i32", BOUNDS="*i32", scale="fp32")
    for config in _fitting(configs["_lora_expand_kernel"], op.expand_smem, dtype):
        _compile(op._lora_expand_kernel, expand, dict(config, **common, HAS_BIAS=True, PER_ADAPTER_SCALE=has_seg,
                                                      BLOCK_R=block_r))
    shrink = dict(P=f"*{dtype}", L=f"*{dtype}", PROJ="*fp32", ORDER="*i32", BOUNDS="*i32")
    for config in _fitting(configs["_lora_shrink_kernel"], op.shrink_smem, dtype):
        _compile(op._lora_shrink_kernel, shrink, dict(config, **common, BLOCK_R=block_r))
    grad = dict(X=f"*{dtype}", Y="*fp32", SCALES="*fp32", C=f"*{dtype}", ORDER="*i32", BOUNDS="*i32", scale="fp32")
    for config in _fitting(configs["_lora_grad_kernel"], op.grad_smem, dtype):
        _compile(op._lora_grad_kernel, grad, dict(config, **common, PER_ADAPTER_SCALE=has_seg, BLOCK_R=block_r))


@pytest.mark.parametrize("dtype, with_acc", [("bf16", False), ("bf16", True), ("fp32", True)],
                         ids=["bf16-lse_only", "bf16-with_expectation", "fp32-with_expectation"])
def test_token_logprobs_kernel_compiles_for_sm90_in_every_gpu_config(dtype, with_acc):
    from redgame.kernels.ops import token_logprobs as op

    types = dict(H=f"*{dtype}", W=f"*{dtype}", T="*i64", PART_MAX="*fp32", PART_SUM="*fp32", PART_TGT="*fp32",
                 PART_ACC="*fp32", PART_WSUM="*fp32")
    for config in _fitting(op.gpu_configs(), op.smem_estimate, dtype):
        _compile(op._online_logprob_kernel, types,
                 dict(config, WITH_ACC=with_acc, UPCAST=False, PRECISION=_precision(dtype)))


@pytest.mark.parametrize("dtype, with_g", [("bf16", True), ("fp32", True), ("fp32", False)],
                         ids=["bf16-with_g", "fp32-with_g", "lse_only"])
def test_softmax_rows_kernel_compiles_for_sm90(dtype, with_g):
    from redgame.kernels.ops import gemm_logprobs as op

    types = dict(LOGITS="*fp32", T="*i64", LSE="*fp32", TGT="*fp32", G=f"*{dtype}", GSUM="*fp32", stride_l="i64",
                 stride_g="i64")
    _compile(op._softmax_rows_kernel, types, dict(WITH_G=with_g, BLOCK_V=op.MAX_BLOCK_V, num_warps=8))
