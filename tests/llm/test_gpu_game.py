"""benchmarks/gpu_game.py (the game section of the GPU check) runs on this machine's device in smoke mode."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_game.py"


@pytest.mark.slow
@pytest.mark.long
def test_game_section_smoke_passes_and_writes_its_runs(tmp_path):
    (tmp_path / "gpu_game_runs.json").write_text('{"int8, kernels=on": {"rows": []}}')  # an earlier invocation's
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)], capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_game.json").read_text())
    assert result["status"] == "pass" and [r["dtype"] for r in result["data"]] == ["float32", "bfloat16"]
    for r in result["data"]:
        assert r["implementation_named"] and r["steps_compared"] >= 1
    # the runs stay out of --out; each run's outcome was recorded as it ended
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gpu_game.json", "gpu_game_runs.json"]
    runs = json.loads((tmp_path / "gpu_game_runs.json").read_text())
    assert sorted(runs) == ["bfloat16, kernels=off", "bfloat16, kernels=on", "float32, kernels=off",
                            "float32, kernels=on"] and all(len(r["rows"]) == 2 for r in runs.values())
    assert len(result["data"][0]["rows"]["on"]) == 2


def test_a_failed_run_fails_its_dtype_and_names_the_error():
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_game

    row = {"kernels/lora": "peft", "kernels/logprobs": "torch", "time/update": 0.1, "defender/pref_loss": 0.69, "defender/pairs": 8,
           "attacker/pairs": 4, "parse_errors": 0, "refusal_benign": 0.0}
    off = {"rows": [row, row], "seconds": 2.0}
    on = {"rows": [], "seconds": 1.0, "error": "torch.AcceleratorError: CUDA error: device-side assert triggered"}
    result = gpu_game.compare(on, off, "bfloat16", "triton")
    assert not result["ok"] and result["failed"] == {"on": on["error"]}
    assert gpu_game.compare(dict(off, rows=[dict(row, **{"kernels/lora": "torch"})] * 2), off, "bfloat16", "torch")["ok"]
    auto = dict(off, rows=[dict(row, **{"kernels/logprobs": "triton"})] * 2)  # CUDA's auto: peft LoRA, our log-probs
    assert gpu_game.compare(auto, off, "bfloat16", "triton", "peft", kernels="auto")["ok"]
    assert not gpu_game.compare(auto, off, "bfloat16", "triton")["implementation_named"]


def test_a_run_that_fails_in_its_process_is_reported_not_raised(tmp_path, capsys):
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_game

    result = gpu_game.play("cpu", "float64", "on", tmp_path / "run", smoke=True)  # not a dtype the game takes
    assert result["rows"] == [] and "dtype" in result["error"]
    assert "float64, kernels=on: the game failed" in capsys.readouterr().out


def test_a_run_past_the_budget_is_stopped_and_recorded_and_none_starts_without_time(tmp_path, capsys):
    import os

    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_game

    slow = gpu_game._child([sys.executable, "-c", "import time; time.sleep(30)"], 0.5, os.environ)
    assert slow.returncode == 124 and "the budget ran out" in slow.stderr
    assert "not started" in gpu_game._child([sys.executable, "-c", "pass"], 0.0, os.environ).stderr
    result = gpu_game.play("cpu", "float32", "on", tmp_path / "run", smoke=True, seconds_left=lambda: 1.0)
    assert result["rows"] == [] and "not started" in result["error"]  # 1 s left is within the reserve
    gpu_game.record(tmp_path / "runs.json", "float32, kernels=on", result)
    gpu_game.record(tmp_path / "runs.json", "float32, kernels=off", {"rows": [{}], "seconds": 1.0})
    assert sorted(json.loads((tmp_path / "runs.json").read_text())) == ["float32, kernels=off", "float32, kernels=on"]


def test_a_run_that_failed_names_no_implementation():
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_game

    failed = {"rows": [], "seconds": 1.0, "error": "boom"}
    assert not gpu_game.compare(failed, failed, "float32", "torch")["implementation_named"]


def test_a_diagnostic_rerun_leaves_the_runs_still_to_come_their_time(monkeypatch):
    """A failed run's CUDA_LAUNCH_BLOCKING rerun was given all the time left: the bf16 runs after it never ran."""
    import time

    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_game

    limits = []

    def failing(command, limit, env):
        limits.append((limit, env.get("CUDA_LAUNCH_BLOCKING")))
        time.sleep(0.2)
        return subprocess.CompletedProcess(command, 1, "", "RuntimeError: CUDA error: device-side assert triggered")

    monkeypatch.setattr(gpu_game, "_child", failing)
    left = lambda: gpu_game.RESERVE_S + 2.0  # noqa: E731
    result = gpu_game.play("cuda", "float32", "on", Path("unused"), smoke=True, seconds_left=left, later=8)
    assert [blocking for _, blocking in limits] == [None]  # 8 runs to come need 8 x 0.2 s: no time to spare
    limits.clear()
    result = gpu_game.play("cuda", "float32", "on", Path("unused"), smoke=True, seconds_left=left, later=2)
    assert [blocking for _, blocking in limits] == [None, "1"]
    assert limits[1][0] < 2.0 - 2 * 0.2 + 0.05  # the rerun's limit leaves the two later runs theirs
    assert "CUDA error" in result["error_launch_blocking"]


@pytest.mark.parametrize("dtypes", ["auto", "float32,float16"])
def test_a_dtype_without_a_tolerance_is_refused_before_any_game(tmp_path, dtypes):
    """--dtypes auto played every game, then failed on its tolerance (KeyError) and wrote no gpu_game.json."""
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--dtypes", dtypes, "--out", str(tmp_path)],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "has no tolerance here; choose among float32, bfloat16" in run.stderr
    assert list(tmp_path.iterdir()) == []
