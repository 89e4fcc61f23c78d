"""Helpers of the reliability suite: the issue's command on a few-token game, run through the fault hook,
and checks of what a run leaves on disk."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

HERE = Path(__file__).resolve().parent
FAULTY_CLI = HERE / "faulty_cli.py"
# The command; a config file keeps the game to a few tokens so that CI stays fast.
TRAIN = ["llm", "train", "--model", "tiny", "--regime", "bipolicy", "--steps", "8", "--save-every", "1",
         "--seed", "3", "--no-progress"]
SMALL_GAME = """\
seeds_per_step = 2
attacks_per_seed = 1
responses_per_attack = 2
attack_tokens = 4
response_tokens = 4
lora_rank = 2
lora_alpha = 4
min_margin = 0.0
lr = 0.01
threads = 1
"""
CHECKPOINT_FILES = {"attacker", "defender", "weights.safetensors", "optimizer.safetensors", "optimizer.json",
                    "rng.safetensors", "state.json"}


class ComputeStarted(BaseException):
    """Raised by the ``no_compute`` fixture where a model load, a judge or training would start.

    A BaseException, like KeyboardInterrupt, so that the CLI's internal-error handler lets it through."""


def start_cli(args: list[str], *faults: str, offline_flags: bool = True) -> subprocess.Popen:
    """``redgame ARGS`` started in a fresh process through the fault hook (no fault when none is given).

    ``offline_flags=False`` drops HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE from the environment.
    """
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for flag in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        env.pop(flag, None)
        if offline_flags:
            env[flag] = "1"
    return subprocess.Popen([sys.executable, str(FAULTY_CLI), *faults, "--", *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_cli(args: list[str], *faults: str, timeout: float = 300, offline_flags: bool = True) -> subprocess.CompletedProcess:
    """:func:`start_cli`, waited for."""
    proc = start_cli(args, *faults, offline_flags=offline_flags)
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def max_abs_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    return max(float((a[k].double() - b[k].double()).abs().max()) for k in a)


def adapter(path: Path) -> dict:
    return load_file(str(path / "adapter_model.safetensors"))


def check_checkpoint(path: Path, reference: Path | None = None) -> int:
    """Assert a visible checkpoint is complete and loadable (and equal to ``reference``); its step."""
    assert {p.name for p in path.iterdir()} == CHECKPOINT_FILES, f"{path}: {sorted(p.name for p in path.iterdir())}"
    state = json.loads((path / "state.json").read_text())
    assert path.name == f"step_{state['step']:04d}"
    json.loads((path / "optimizer.json").read_text())
    tensors = {name: load_file(str(path / name)) for name in ("weights.safetensors", "optimizer.safetensors",
                                                              "rng.safetensors")}
    for role in ("attacker", "defender"):
        json.loads((path / role / "adapter_config.json").read_text())
        tensors[role] = adapter(path / role)
    if reference is not None:
        for name, values in tensors.items():
            expected = load_file(str(reference / name)) if name.endswith(".safetensors") else adapter(reference / name)
            assert max_abs_diff(values, expected) <= 1e-5, f"{path}/{name} differs from the uninterrupted run"
    return state["step"]
