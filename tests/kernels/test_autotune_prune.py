"""The autotuner's shared-memory pruning (kernels/ops/_common.py), as each Triton version calls it."""

import torch
import triton

from redgame.kernels.ops._common import H100_SHARED_BYTES, shared_memory_pruner


def _estimate(config: dict, element_size: int) -> int:
    return config["BLOCK"] * config["BLOCK"] * element_size * config["num_stages"]


CONFIGS = [triton.Config({"BLOCK": block}, num_stages=stages) for block in (64, 128, 256) for stages in (2, 4)]


def _fitting(element_size):
    return [c for c in CONFIGS
            if _estimate({**c.kwargs, "num_stages": c.num_stages}, element_size) <= 0.9 * H100_SHARED_BYTES]


def test_prune_finds_the_tensor_among_positional_or_keyword_arguments():
    prune = shared_memory_pruner("P", _estimate)
    tensor = torch.zeros(3, dtype=torch.bfloat16)
    positional = prune(CONFIGS, {"P": tensor, "n": 3})
    keyword = prune(CONFIGS, {}, P=tensor, n=3)  # Triton 3.6 passes keyword launches here
    assert positional == keyword == _fitting(2)
    assert 0 < len(positional) < len(CONFIGS)


def test_prune_keeps_the_last_config_when_none_fits():
    prune = shared_memory_pruner("P", lambda config, size: 10 * H100_SHARED_BYTES)
    assert prune(CONFIGS, {}, P=torch.zeros(1)) == CONFIGS[-1:]
