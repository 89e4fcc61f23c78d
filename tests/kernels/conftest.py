"""Fixtures for the kernel tests: run a test on the torch path or in Triton's interpreter.

Triton's interpreter works only if TRITON_INTERPRET=1 was set before triton was first
imported, so the "interpret" cases run only in a process started that way:
test_interpreter.py starts one (`pytest -k interpret` with the variable set); an ordinary
run does not generate them. The torch cases pin TRITON_INTERPRET=0 with monkeypatch, which
restores it after each test.

In "interpret" mode the torch fallbacks are replaced by functions that fail, and the Triton
entry points are counted, so a test on that path proves the Triton kernels ran. The
kernels' output buffers are allocated uninitialised; there they are filled with NaN, so a
test whose outputs must be finite also proves that every element was written.
"""

import collections
import importlib.util
import os

import pytest
import torch

from redgame.kernels import reference

HAS_TRITON = importlib.util.find_spec("triton") is not None
# Read once, at collection: the state triton will be (or was) imported in.
INTERPRETER_PROCESS = os.environ.get("TRITON_INTERPRET", "0") == "1"


def _forbidden(name):
    def fail(*args, **kwargs):
        raise AssertionError(f"{name} ran although TRITON_INTERPRET=1 should route to Triton")

    return fail


def _nan_filled(shape, dtype, device):
    return torch.full(shape, float("nan"), dtype=dtype, device=device)


@pytest.fixture(params=["torch", "interpret"] if INTERPRETER_PROCESS else ["torch"])
def path(request, monkeypatch):
    """The dispatch path under test; yields a Counter of Triton op calls ("interpret" only)."""
    calls = collections.Counter()
    if request.param == "torch":
        monkeypatch.setenv("TRITON_INTERPRET", "0")  # this test's calls take the torch path
        yield request.param, calls
        return
    if not HAS_TRITON:
        pytest.skip("triton is not installed")
    for name in ("lora_linear_reference", "multi_lora_linear_grouped", "chunked_logprob_parts"):
        monkeypatch.setattr(reference, name, _forbidden(name))
    from redgame.kernels.ops import gemm_logprobs as gemm_op
    from redgame.kernels.ops import lora_linear as lora_op
    from redgame.kernels.ops import token_logprobs as logprob_op

    for module, name in ((lora_op, "lora_linear_forward"), (lora_op, "lora_linear_backward"),
                         (logprob_op, "online_logprob_parts"), (gemm_op, "gemm_logprob_parts")):
        original = getattr(module, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    for module in (lora_op, logprob_op, gemm_op):
        monkeypatch.setattr(module, "empty", _nan_filled)
    yield request.param, calls


@pytest.fixture(params=["gemm", "online"])
def triton_pass(request):
    """Each Triton log-prob pass in turn; yields the name of the op it launches (a key of `path`'s counter)."""
    from redgame.kernels.logprobs import use_triton_pass

    with use_triton_pass(request.param):
        yield f"{request.param}_logprob_parts"


@pytest.fixture
def rng():
    """A fresh, unseeded generator: every run draws new inputs (the seed is printed on failure)."""
    gen = torch.Generator()
    seed = gen.seed()
    print(f"torch generator seed: {seed}")
    return gen

