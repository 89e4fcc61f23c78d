"""Run the kernel tests' "interpret" cases in a fresh process with TRITON_INTERPRET=1.

The variable must be set before triton is imported, and this pytest process may already
have imported triton (torch, transformers and liger-kernel can), so the interpreter cases
run in a subprocess and never change this process's environment.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# Lower bound on the interpreter cases (LoRA, multi-LoRA, token log-probs, peft, Liger):
# if parametrisation shrinks by accident, this fails instead of passing vacuously.
MIN_INTERPRETER_CASES = 14


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_triton_kernels_pass_in_the_interpreter():
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("this is the interpreter subprocess itself")
    env = dict(os.environ, TRITON_INTERPRET="1")
    cmd = [sys.executable, "-m", "pytest", str(HERE), "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
           "-k", "interpret and not in_the_interpreter", "-rs"]
    run = subprocess.run(cmd, env=env, cwd=HERE, capture_output=True, text=True, timeout=600)
    tail = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, tail
    passed = re.search(r"(\d+) passed", run.stdout)
    assert passed and int(passed.group(1)) >= MIN_INTERPRETER_CASES, tail
