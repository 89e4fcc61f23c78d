"""Every GPU launch configuration (the autotuner's candidates) at small odd shapes, in the interpreter.

On a GPU the autotuner may pick any config of each kernel, so each must be correct.
Config i of every kernel runs together (the shorter lists wrap around), in fp16, which
runs the GPU code unchanged in the interpreter, and in bf16 (upcast there).
"""

import pytest
import torch

from redgame.kernels import checks
from redgame.kernels.checks import assert_all_ok

N_CONFIGS = 5  # max over the kernels' config lists (checked below)


@pytest.mark.parametrize("index", range(N_CONFIGS))
def test_gpu_config_matches_float64(path, rng, index):
    mode, calls = path
    if mode != "interpret":
        pytest.skip("launch configurations exist only on the Triton path")
    assert checks.gpu_config_count() == N_CONFIGS
    with checks.gpu_configs_at(index):
        for name, case in checks.CASES.items():
            for dtype in (torch.float16, torch.bfloat16):
                assert_all_ok(case(rng, "cpu", dtype))
