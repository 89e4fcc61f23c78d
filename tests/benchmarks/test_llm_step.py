"""benchmarks/llm_step.py: a path's settings are checked before either path runs (each takes minutes); the printed
arithmetic and profile."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import llm_step  # noqa: E402

from redgame.errors import UserError  # noqa: E402


@pytest.mark.parametrize("argv, message", [
    (["--set", "bogus=1"], "unknown config key 'bogus'"),
    (["--set", "lr=abc"], "cannot read 'abc' as float"),
    (["--set", "full_finetune=true"], "full_finetune"),  # valid alone, not with the demo's regime
    (["--set", "keep_freed_memory=maybe"], "keep_freed_memory: cannot read 'maybe'"),
    (["--set", "threads=1"], "llm_step sets steps, save_every and threads itself"),
    (["--set", "lr=1e-3", "--set", "lr=2e-3"], "a key is given twice"),
])
def test_bad_settings_are_refused_before_any_path_runs(monkeypatch, argv, message):
    monkeypatch.setattr(llm_step, "in_subprocess", lambda *a: pytest.fail("a path ran"))
    with pytest.raises(UserError, match=message):
        llm_step.main(argv)


@pytest.mark.parametrize("argv", [["--iters", "0"], ["--threads", "0"]])
def test_no_iteration_or_no_thread_is_a_usage_error(monkeypatch, argv):
    monkeypatch.setattr(llm_step, "in_subprocess", lambda *a: pytest.fail("a path ran"))
    with pytest.raises(SystemExit) as exit_:
        llm_step.main(argv)
    assert exit_.value.code == 2


def test_the_arithmetic_line_divides_the_counted_flops_by_the_machines_rate(capsys):
    counted = {"flops": {"rollout": 1.0e12, "judge": 0.5e12, "update": 2.5e12}, "gemm_flops_per_s": 50e9}
    llm_step.print_arithmetic(counted, {"iteration": 90.0}, threads=2)
    line = capsys.readouterr().out
    assert "4.00 TFLOP" in line and "rollout 1.00, judge 0.50, update 2.50" in line
    assert "up to 50 GFLOP/s on 2 threads" in line and "about 80.0 s" in line


def test_the_machines_rate_is_a_product_rate_it_reaches():
    rate = llm_step.gemm_rate(batches=2, reps=2)
    assert 1e8 < rate < 1e14  # FLOP/s: from a slow core to a fast many-core CPU


def test_the_profile_of_a_tiny_iteration_names_each_phases_ops_and_their_flops(capsys):
    """--profile's child on the tiny model: each phase's costliest ops, whose FLOPs are the phase's count."""
    child = subprocess.run([sys.executable, llm_step.__file__, "--child", json.dumps(llm_step.SMOKE), "--iters", "1",
                            "--threads", "1", "--profile"], capture_output=True, text=True, timeout=300,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert child.returncode == 0, child.stderr[-2000:]
    counted = json.loads(child.stdout.strip().splitlines()[-1])
    assert set(counted["ops"]) == set(counted["wall"]) == {"rollout", "judge", "update"}
    for phase, rows in counted["ops"].items():
        assert 0 < len(rows) <= llm_step.TOP_OPS
        seconds = [row[1] for row in rows]
        assert seconds == sorted(seconds, reverse=True) and sum(seconds) <= counted["wall"][phase] * 1.05
        assert sum(row[2] for row in rows) <= counted["flops"][phase]  # the top ops' share of the phase's count
    assert any(op in ("aten::mm", "aten::addmm") and flops > 0 for op, _, flops, _ in counted["ops"]["update"])
    llm_step.print_ops(counted)
    out = capsys.readouterr().out
    assert out.count("under the profiler") == 3 and "GFLOP/s" in out
