"""kernels/dispatch.py: which path a call takes, as `backend` reports it to the run's metrics."""

import pytest
import torch

from redgame.kernels import backend
from redgame.kernels.dispatch import triton_available


class _ClaimsCuda(torch.Tensor):
    """A CPU tensor that says it is on CUDA: the dispatch decision without a GPU."""

    @property
    def is_cuda(self):
        return True


@pytest.mark.skipif(not triton_available(), reason="triton is not installed")
@pytest.mark.parametrize("interpret, expected", [("1", "interpret"), ("0", "triton")])
def test_cuda_tensors_under_the_interpreter_are_reported_as_interpreted(monkeypatch, interpret, expected):
    monkeypatch.setenv("TRITON_INTERPRET", interpret)
    on_cuda = torch.zeros(4, 4).as_subclass(_ClaimsCuda)
    assert backend(on_cuda, on_cuda) == expected


def test_cpu_tensors_take_torch_unless_the_interpreter_is_asked_for(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert backend(torch.zeros(2, 2)) == "torch"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert backend(torch.zeros(2, 2)) == ("interpret" if triton_available() else "torch")
    assert backend(torch.zeros(2, 2, dtype=torch.float64)) == "torch"  # no Triton kernel for float64
