"""`redgame toy ...` run the way a user runs it."""

import json
import os
import pathlib
import subprocess
import sys

import pytest


def redgame(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    # The console script, as a user runs it (``python -m`` would put the repo root on sys.path).
    script = pathlib.Path(sys.executable).parent / "redgame"
    return subprocess.run([str(script), *args], capture_output=True, text=True, env=env, timeout=120)


def test_toy_list_shows_presets():
    out = redgame("toy", "list")
    assert out.returncode == 0
    for name in ("prompt_map", "hidden_intent", "family"):
        assert name in out.stdout


@pytest.mark.parametrize("lam, value", [("0.25", 0.125), ("3", 0.5)])
def test_toy_solve_json_value(lam, value):
    out = redgame("toy", "solve", "--game", "hidden_intent", "--param", f"lam={lam}", "--json")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["value"] == pytest.approx(value, abs=1e-8)
    assert "oracle" not in data["defender_classes"]


def test_toy_solve_prompt_map_table():
    out = redgame("toy", "solve", "--game", "prompt_map", "--param", "lam=0")
    assert out.returncode == 0, out.stderr
    assert "always_refuse" in out.stdout and "oracle" in out.stdout
    data = json.loads(redgame("toy", "solve", "--game", "prompt_map", "--param", "lam=0", "--json").stdout)
    assert data["value"] == 0.0 and {"always_refuse", "oracle"} <= set(data["defender_classes"])


def test_toy_solve_default_family_preset():
    """Too large to enumerate: auto solves the sequence-form LP and says so."""
    out = redgame("toy", "solve", "--game", "family")
    assert out.returncode == 0, out.stderr
    assert "sequence-form-linprog" in out.stdout and "too large to enumerate" in out.stdout
    data = json.loads(redgame("toy", "solve", "--game", "family", "--json").stdout)
    assert data["value"] == pytest.approx(0.25, abs=1e-9) and data["max_gap"] < 1e-9 and data["note"]


def test_toy_solve_cfr_method():
    out = redgame("toy", "solve", "--game", "family", "--param", "n=3", "--method", "cfr+", "--json")
    data = json.loads(out.stdout)
    assert data["method"] == "cfr+" and data["max_gap"] <= 2e-4


@pytest.mark.parametrize(
    "args, word",
    [
        (["--game", "nope"], "nope"),
        (["--game", "hidden_intent", "--param", "lam=-1"], "lam"),
        (["--game", "hidden_intent", "--param", "colour=red"], "colour"),
        (["--game", "hidden_intent", "--param", "q"], "key=value"),
        (["--game", "hidden_intent", "--param", "payoff=nonzero_sum", "--param", "benign_attack=0", "--method", "linprog"], "zero-sum"),
        (["--game", "prompt_map", "--method", "enumerate", "--target", "1e-3"], "--target: applies to cfr"),
    ],
)
def test_bad_input_is_one_line_without_traceback(args, word):
    out = redgame("toy", "solve", *args)
    assert out.returncode != 0
    assert "Traceback" not in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
    assert word in out.stderr
