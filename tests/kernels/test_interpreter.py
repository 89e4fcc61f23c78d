"""Run the kernel tests' "interpret" cases in fresh processes with TRITON_INTERPRET=1.

The variable must be set before triton is imported, and this pytest process may already
have imported triton (torch, transformers and liger-kernel can), so the interpreter cases
run in subprocesses, one per test file (so that pytest -n spreads them), and never
change this process's environment.
"""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
# Lower bounds on each file's interpreter cases: if parametrisation shrinks by accident,
# this fails instead of passing vacuously.
FILES = [
    ("test_lora_linear.py", 10),
    pytest.param("test_token_logprobs.py", 10, marks=[pytest.mark.slow, pytest.mark.long]),
    ("test_fused_preference_loss.py", 10),
    ("test_preference.py", 1),
    ("test_peft_patch.py", 1),
    pytest.param("test_gpu_configs.py", 5, marks=[pytest.mark.slow, pytest.mark.long]),
]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
@pytest.mark.parametrize("filename, minimum", FILES)
def test_triton_kernels_pass_in_the_interpreter(filename, minimum):
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.skip("this is the interpreter subprocess itself")
    env = dict(os.environ, TRITON_INTERPRET="1")
    cmd = [sys.executable, "-m", "pytest", str(HERE / filename), "-q", "-p", "no:xdist", "-p", "no:cacheprovider",
           "-k", "interpret", "-rs"]
    run = subprocess.run(cmd, env=env, cwd=HERE, capture_output=True, text=True, timeout=900)
    tail = run.stdout[-6000:] + run.stderr[-2000:]
    assert run.returncode == 0, tail
    passed = re.search(r"(\d+) passed", run.stdout)
    assert passed and int(passed.group(1)) >= minimum, tail
