"""benchmarks/gpu_game.py (the game section of the GPU check) runs on this machine's device in smoke mode."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_game.py"


@pytest.mark.slow
def test_game_section_smoke_passes_and_writes_its_runs(tmp_path):
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path)], capture_output=True,
                         text=True, timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_game.json").read_text())
    assert result["status"] == "pass" and [r["dtype"] for r in result["data"]] == ["float32", "bfloat16"]
    for r in result["data"]:
        assert r["implementation_named"] and r["steps_compared"] >= 1
    assert [p.name for p in tmp_path.iterdir()] == ["gpu_game.json"]  # the runs stay out of --out
    assert len(result["data"][0]["rows"]["on"]) == 2
