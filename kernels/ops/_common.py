"""What the Triton kernels share: the interpreter/compiled mode guard, the dot, launch helpers.

Mode guard: `@triton.jit` reads TRITON_INTERPRET when it decorates, and that includes the
library functions of `triton.language` (`tl.zeros`, `tl.sum`, ...), which are decorated
when triton is first imported. So the interpreter works only when TRITON_INTERPRET=1 was
set before triton was imported, and compiled kernels only when it was not. A mismatch
would fail deep inside a launch; `check_mode` fails first, with the fix in the message.

Dots: on a GPU `tl.dot` runs in the input dtype with fp32 accumulation; fp32 inputs use
TF32 when torch allows it (`torch.backends.cuda.matmul.allow_tf32`, i.e.
`torch.set_float32_matmul_precision("high")`), else full fp32 ("ieee"). Triton's
interpreter computes bf16 dots wrongly, so there (and only there) bf16 tiles are upcast
to fp32 first (`UPCAST`); fp16 and fp32 run the GPU code unchanged.

Launches: on a GPU each kernel is autotuned over its `GPU_CONFIGS`; in the interpreter it
runs one small config. A caller (the tests) may force any config, GPU ones included.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import triton
import triton.language as tl

from ..dispatch import interpret_requested

# The device the interpreter pretends to be, for grid-filling decisions (splits).
INTERPRETER_SM_COUNT = 4


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


@triton.jit
def mixed_dot(a, b, acc, UPCAST: tl.constexpr, PRECISION: tl.constexpr):
    """acc + a·b in fp32; an fp32 operand meets a half one in the half dtype (tensor cores). UPCAST (the
    interpreter's bf16, which numpy cannot multiply) rounds it so too before the fp32 dot, so that the interpreter
    sees the rounding a GPU does."""
    if a.dtype == tl.float32 and b.dtype != tl.float32:
        a = a.to(b.dtype)
    if b.dtype == tl.float32 and a.dtype != tl.float32:
        b = b.to(a.dtype)
    if UPCAST:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc)
    if a.dtype == tl.float32:
        return tl.dot(a, b, acc, input_precision=PRECISION)
    return tl.dot(a, b, acc)


@triton.jit
def tile_matmul(acc, A, rows, mask_rows, stride_ar, stride_ak, B, cols, mask_cols, stride_bc, stride_bk,
                k_start, k_end, UPCAST: tl.constexpr, PRECISION: tl.constexpr, BLOCK_K: tl.constexpr):
    """acc + A[rows, k]·B[cols, k]ᵀ summed over k in [k_start, k_end), BLOCK_K at a time (int64 row/col ids)."""
    for k0 in range(k_start, k_end, BLOCK_K):
        offs_k = k0 + tl.arange(0, BLOCK_K)
        mask_k = offs_k < k_end
        a = tl.load(A + rows[:, None] * stride_ar + offs_k[None, :] * stride_ak,
                    mask=mask_rows[:, None] & mask_k[None, :], other=0.0)
        b = tl.load(B + cols[None, :] * stride_bc + offs_k[:, None] * stride_bk,
                    mask=mask_k[:, None] & mask_cols[None, :], other=0.0)
        acc = mixed_dot(a, b, acc, UPCAST, PRECISION)
    return acc


def dot_options(dtype: torch.dtype) -> dict:
    """UPCAST and PRECISION for tiles of this dtype, on the current path."""
    upcast = interpret_requested() and dtype == torch.bfloat16
    return dict(UPCAST=upcast, PRECISION="tf32" if torch.backends.cuda.matmul.allow_tf32 else "ieee")


@functools.lru_cache(maxsize=None)
def _sm_count(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def sm_count(device: torch.device) -> int:
    """Streaming multiprocessors of this CUDA device; INTERPRETER_SM_COUNT off CUDA."""
    if device.type != "cuda":
        return INTERPRETER_SM_COUNT
    return _sm_count(device.index if device.index is not None else torch.cuda.current_device())


def _quick_bench(fn, quantiles):
    """The autotuner's timing: shorter than triton's default (25 ms warm-up, 100 ms), enough to rank tiles."""
    return triton.testing.do_bench(fn, warmup=5, rep=25, quantiles=quantiles)


# What an sm_90 block may use (H100 / H200), for the compile check and the interpreter.
H100_SHARED_BYTES = 227 * 1024


@functools.lru_cache(maxsize=None)
def _shared_limit(index: int) -> int:
    props = torch.cuda.get_device_properties(index)
    return getattr(props, "shared_memory_per_block_optin", 0) or 99 * 1024


def shared_limit(device: torch.device) -> int:
    """Shared memory one block may use on this device (bytes); the H100's off CUDA."""
    if device.type != "cuda":
        return H100_SHARED_BYTES
    return _shared_limit(device.index if device.index is not None else torch.cuda.current_device())


def fits(config: dict, element_size: int, smem_estimate, limit: int) -> bool:
    """Whether a config's pipelined tiles (estimated) fit in `limit` bytes, with 10% to spare."""
    return smem_estimate(config, element_size) <= 0.9 * limit


def shared_memory_pruner(tensor_arg: str, smem_estimate):
    """Triton's early_config_prune: keep the configs whose tiles fit the shared memory of `tensor_arg`'s device.

    Triton passes the launch's positional arguments by name in `named_args` and, in some
    versions (3.6), the keyword arguments only in `kwargs`; the kernels launch by keyword.
    """
    def prune(configs, named_args, **kwargs):
        tensor = named_args[tensor_arg] if tensor_arg in named_args else kwargs[tensor_arg]
        limit = shared_limit(tensor.device)
        kept = [c for c in configs if fits(config_dict(c), tensor.element_size(), smem_estimate, limit)]
        return kept or configs[-1:]

    return prune


def autotuned(kernel, configs, key, smem_estimate, tensor_arg: str):
    """`kernel` autotuned over those `configs` whose tiles fit in the device's shared memory.

    smem_estimate(config dict with num_stages, element size of `tensor_arg`) -> bytes.
    Building it needs no GPU driver; it runs only on a GPU.
    """
    options = dict(configs=configs, key=key,
                   prune_configs_by={"early_config_prune": shared_memory_pruner(tensor_arg, smem_estimate)})
    try:
        return triton.autotune(**options, do_bench=_quick_bench)(kernel)
    except TypeError:  # a triton without autotune(do_bench=...): its default timing
        return triton.autotune(**options)(kernel)


def launch(kernel, tuned, grid, args: dict, config: dict | None, interpret_config: dict):
    """Run `kernel` with `config`, or the autotuned `tuned` on a GPU / `interpret_config` in the interpreter."""
    check_mode(kernel)
    config = config if config is not None else FORCED_CONFIGS.get(kernel.__name__)
    if config is None and not interpret_requested():
        tuned[grid](**args)
        return
    cfg = dict(config if config is not None else interpret_config)
    options = {k: cfg.pop(k) for k in ("num_warps", "num_stages") if k in cfg}
    if interpret_requested():
        options = {}
    kernel[grid](**args, **cfg, **options)


# kernel name -> config to launch instead of autotuning (set by `forced_configs`)
FORCED_CONFIGS: dict[str, dict] = {}


@contextlib.contextmanager
def forced_configs(configs: dict):
    """Within the block, launch each named kernel with the given config (tests: GPU configs in the interpreter)."""
    saved = dict(FORCED_CONFIGS)
    FORCED_CONFIGS.update(configs)
    try:
        yield
    finally:
        FORCED_CONFIGS.clear()
        FORCED_CONFIGS.update(saved)


def config_dict(config: "triton.Config") -> dict:
    """A triton.Config as one dict of its constexprs and launch options."""
    return dict(config.kwargs, num_warps=config.num_warps, num_stages=config.num_stages)


def empty(shape, dtype, device) -> torch.Tensor:
    """Output buffers: uninitialised (every element is written by a kernel; tests refill this with NaN)."""
    return torch.empty(shape, dtype=dtype, device=device)
