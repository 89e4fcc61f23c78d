"""benchmarks/gpu_check.py --smoke: every section at tiny shapes on the CPU, Triton kernels interpreted.

It also runs benchmarks/kernel_tables.py --smoke (every table), so this checks both scripts: the
files they write, the kernels' agreement with their baselines, and the counted FLOPs.
"""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu_check.py"
# The script and its children run as on a GPU machine where redgame is not installed: they must
# import this checkout themselves (kernel_tables.py's per-case children did not).
HIDE_INSTALLED_REDGAME = '''import sys


class HideInstalledRedgame:
    def find_spec(self, name, path=None, target=None):
        if name == "redgame":
            raise ModuleNotFoundError("No module named 'redgame' (hidden by the test)", name=name)
        return None


sys.meta_path.insert(0, HideInstalledRedgame())
'''


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
@pytest.mark.long
def test_gpu_check_smoke_writes_its_folder_and_every_table_agrees(tmp_path):
    hide = tmp_path / "hide_installed_redgame"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_INSTALLED_REDGAME)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(hide), os.environ.get("PYTHONPATH")])))
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path / "out")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=900, env=env)
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md"]
    sections = {s["name"]: s for s in json.loads((out / "gpu_check.json").read_text())["sections"]}
    statuses = {name: s["status"] for name, s in sections.items()}
    # The game section is skipped in a CPU smoke run (tests/llm/test_gpu_game.py runs it on its own).
    assert statuses == dict(environment="pass", kernel_checks="pass", large_offsets="skip", kernel_benchmarks="pass",
                            game="skip")
    assert len(sections["kernel_checks"]["data"]) >= 30 and all(r["ok"] for r in sections["kernel_checks"]["data"])

    tables = sections["kernel_benchmarks"]["data"]
    assert len(tables["cpu"]) == 6 and all(r["peak_growth_mib"] >= 0 for r in tables["cpu"])
    assert all(r["counted_flops"] == r["formula_flops"] for r in tables["flops"]), tables["flops"]
    assert all(r["max_rel_err"] < 1e-4 for r in tables["lora"])
    assert len(tables["multi_lora"]) == 1
    losses = {r["impl"]: r["loss"] for r in tables["preference"]}
    naive = losses.pop("naive (full logits)")
    assert len(losses) >= 2 and all(abs(loss - naive) <= 1e-4 * abs(naive) for loss in losses.values()), losses
    markdown = (out / "gpu_check.md").read_text()
    assert "| kernel_checks | pass |" in markdown and "fused_preference_loss (ipo)" in markdown


def test_a_carried_liger_wheel_is_installed_offline_or_its_absence_said(tmp_path, monkeypatch):
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    gpu_check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, gpu_check)  # its dataclasses look their module up
    spec.loader.exec_module(gpu_check)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(gpu_check.importlib.util, "find_spec",
                        lambda name, *a: None if name == "liger_kernel" else real_find_spec(name, *a))
    monkeypatch.setattr(gpu_check, "REPO", tmp_path)
    assert gpu_check.install_carried_wheels() == "no liger-kernel, and no wheel of it in .whl/"
    (tmp_path / ".whl").mkdir()
    (tmp_path / ".whl" / "liger_kernel-0.0.1-py3-none-any.whl").write_bytes(b"not a zip")
    said = gpu_check.install_carried_wheels()  # pip, offline, says why it cannot
    assert said.startswith("installing liger_kernel-0.0.1-py3-none-any.whl failed")


def test_no_section_starts_past_the_budget(tmp_path):
    """--budget limited only the game section; a section started late was killed by the timeout and lost."""
    import time

    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_check

    ran = []

    def section_quick(ctx):
        """A section that would run."""
        ran.append("quick")
        return dict(status="pass", headline="ran", notes=[], data={})

    ctx = gpu_check.Context(out=tmp_path, smoke=True, device="cpu", deadline=time.monotonic() - 1.0)
    (result,) = gpu_check.run_sections(ctx, [section_quick])
    assert ran == [] and result["status"] == "skip" and "--budget ran out" in result["headline"]
    ctx.deadline = time.monotonic() + 60
    assert gpu_check.run_sections(ctx, [section_quick])[0]["status"] == "pass" and ran == ["quick"]


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="triton is not installed")
def test_a_section_whose_process_dies_fails_alone(tmp_path):
    """A kernel that faults on a GPU leaves its process's CUDA context unusable: in one process every later
    section failed with it. Here the kernel checks' process dies at start (as a fault can end it)."""
    hide = tmp_path / "die"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(  # and each child writes its side files into the run's folder
        "import os, sys, pathlib\nif '--result' in sys.argv and 'kernel_checks' in sys.argv:\n"
        "    print('printed before it died')\n    os._exit(3)\n"
        "if '--result' in sys.argv and 'large_offsets' in sys.argv:\n"
        "    (pathlib.Path(sys.argv[sys.argv.index('--out') + 1]) / 'side_file').write_text('x')\n")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(hide), os.environ.get("PYTHONPATH")])))
    env.pop("PYTHONUNBUFFERED", None)  # as on the GPU machine: a child's prints were held in its buffer, and lost
    run = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--out", str(tmp_path / "out"), "--sections",
                          "environment,kernel_checks,large_offsets"], capture_output=True, text=True, timeout=300,
                         env=env)
    assert run.returncode == 1, run.stdout[-3000:] + run.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    sections = {s["name"]: s for s in report["sections"]}
    assert sections["kernel_checks"]["status"] == "fail"
    assert sections["kernel_checks"]["headline"] == "its process ended with exit status 3 and no result"
    assert "printed before it died" in (tmp_path / "out" / "gpu_check.log").read_text()
    assert sections["large_offsets"]["status"] == "skip" and "needs a GPU" in sections["large_offsets"]["headline"]
    assert report["command"][-1] == "environment,kernel_checks,large_offsets"
    # (the game's gpu_game_runs.json went to a temporary folder, removed after)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu_check.json", "gpu_check.log", "gpu_check.md",
                                                                    "side_file"]
    assert {"torch", "cuda", "liger", "commit"} <= set(sections["environment"]["data"])


def test_a_failing_baseline_or_table_leaves_an_error_row_and_keeps_the_rest(monkeypatch):
    """Liger importing but failing at run time (or a baseline out of memory) turned the whole benchmark section
    into a failure with no data: the tables already measured were lost."""
    import types

    import torch

    spec = importlib.util.spec_from_file_location("kernel_tables_under_test", SCRIPT.with_name("kernel_tables.py"))
    tables = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tables)

    class FailingLiger:
        def __init__(self, **kwargs):
            pass

        def __call__(self, *args, **kwargs):
            raise RuntimeError("simulated Liger failure")

    fake = types.ModuleType("liger_kernel.chunked_loss")
    fake.LigerFusedLinearDPOLoss = FailingLiger
    monkeypatch.setitem(sys.modules, "liger_kernel", types.ModuleType("liger_kernel"))
    monkeypatch.setitem(sys.modules, "liger_kernel.chunked_loss", fake)
    rows = tables.preference_table(1009, 32, [64], 16, "cpu", torch.float32)
    failed = [r for r in rows if "error" in r]
    assert [r["impl"] for r in failed] == ["liger LigerFusedLinearDPOLoss"]
    assert failed[0]["error"] == "RuntimeError: simulated Liger failure"
    assert {r["impl"] for r in rows if "ms" in r} >= {"redgame fused_preference_loss", "naive (full logits)"}
    results = {}
    tables._kept(results, "lora", lambda: 1 / 0)
    assert results == {"lora": [{"error": "ZeroDivisionError: division by zero"}]}
    spec = importlib.util.spec_from_file_location("gpu_check_under_test", SCRIPT)
    check = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, check)  # its dataclasses look their module up
    spec.loader.exec_module(check)
    notes, headline = check._benchmark_headlines({**results, "preference": rows})
    assert headline == "lora: the whole table failed: ZeroDivisionError: division by zero"
    assert "- preference: liger LigerFusedLinearDPOLoss at N=64 failed: RuntimeError: simulated Liger failure" in notes
    assert any(note.startswith("- preference loss, N=64: fused") for note in notes)
