"""benchmarks/kernels.py --smoke runs every table at tiny shapes, with the Triton kernels interpreted."""

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "kernels.py"


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_benchmark_smoke_runs_all_tables_and_agrees_with_baselines(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="1")  # a fresh process: set before triton is imported
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke"], env=env, cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    out = run.stdout
    for title in ("token log-probs fwd+bwd on CPU", "LoRA linear, fused vs peft",
                  "two adapters in one launch", "DPO on token log-probs"):
        assert title in out, out
    # the CPU table measured both implementations
    assert len(re.findall(r"^(frozen|trained)\s+(naive|redgame)\s+\d", out, re.M)) == 4, out
    # fused LoRA vs peft: relative max error (last column), and DPO loss vs naive (last column)
    lora_row = re.search(r"^64->96\s+8\s+37\s.*\s(\S+)$", out, re.M)
    dpo_row = re.search(r"^\s+64\s.*\s(\S+)$", out, re.M)
    assert lora_row and float(lora_row.group(1)) < 1e-4, out
    assert dpo_row and float(dpo_row.group(1)) < 1e-4, out
