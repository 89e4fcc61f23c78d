"""The LLM game on a GPU: a short game on the tiny model, kernels on vs off.

    python benchmarks/gpu_game.py --out runs/gpu_game             # on the CUDA device
    python benchmarks/gpu_game.py --out runs/gpu_game --smoke     # on this machine's device (a CPU: the kernels'
                                                                  # torch path), fewer tokens: checks the script

`section_game(ctx)` is a section of `benchmarks/gpu_check.py` (the GPU acceptance script):
it takes the script's context (`ctx.out`, `ctx.device`, `ctx.smoke`) and returns its
`dict(status, headline, notes, data)`. For float32 (TF32 off, for exactness) and bfloat16
(what `--dtype auto` picks on CUDA) it trains the tiny model's game for 3 steps with
`--device <device>` and `kernels=off`, then `kernels=on` (and on CUDA in bfloat16 `kernels=auto`:
our log-probs, peft's LoRA layers), through `redgame.llm.trainer.train`,
each run in a process of its own (a CUDA error ends its process's CUDA context; the other
runs still run, and the failure is reported with its last lines; a run that failed with a CUDA
error runs once more with CUDA_LAUNCH_BLOCKING=1, so that the error names the operation that
failed, where the time left allows), and checks:

The judge is the embedded one where its package is installed, else `lm:tiny` (any judge
serves: the check compares numbers with the kernels on and off). Without tensorboard the
runs write no `tb/` events.

- every run finishes with finite losses, and its metrics name what ran the LoRA layers:
  `triton` (CUDA) or `torch` (CPU) with the kernels on, `peft` with them off;
- the steps that sample the same round with the kernels on and off (same seed: step 1, and
  the later ones unless rounding flipped a sampled token) give the same DPO losses, margins
  and NLL: |on − off| / max(|off|, 1) ≤ 1e-4 in float32, ≤ 2e-2 in bfloat16; step 1 must be
  one of them.

It reports the update time with the kernels on and off (on CUDA the first steps with the
kernels on include Triton's compilation and autotuning of every layer shape). The runs go to a temporary folder
(the GPU machine returns few files); their metrics rows are in the section's data, which
`gpu_check.py` writes to `gpu_check.json` (this script alone: `<out>/gpu_game.json`). Each run's
outcome is also written to `<out>/gpu_game_runs.json` as soon as it ends, so a run stopped by
the time limit keeps the runs that finished; with `gpu_check.py --budget`, each run is given
at most the time left, and one that runs past it is stopped and recorded.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

STEPS = 3
CUDA_ERRORS = ("CUDA error", "device-side assert", "CUBLAS_STATUS", "cudaError", "an illegal memory access")
RESERVE_S = 15.0  # left for the section's own report after the last run
TOLERANCE = {"float32": 1e-4, "bfloat16": 2e-2}
COMPARED = ("defender/pref_loss", "attacker/pref_loss", "defender/margin", "attacker/margin", "defender/nll")


def _config(device: str, dtype: str, kernels: str, smoke: bool):
    from redgame.llm.config import TrainConfig

    tokens = 4 if smoke else 16
    return TrainConfig(model="tiny", regime="bipolicy", steps=2 if smoke else STEPS, seed=0, save_every=0,
                       seeds_per_step=2 if smoke else 4,
                       attacks_per_seed=2, responses_per_attack=2, explore_prefixes=("I'm sorry",),
                       attack_tokens=tokens, response_tokens=tokens, min_margin=0.0, lora_rank=8, lora_alpha=16,
                       lr=1e-2, device=device, dtype=dtype, kernels=kernels).validate()


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def play(device: str, dtype: str, kernels: str, out: Path, smoke: bool, seconds_left=lambda: math.inf,
         later: int = 0) -> dict:
    """One short game in a fresh process; its metrics rows and wall time, or the error that ended it.

    A process of its own: a CUDA error (a device-side assert) ends the CUDA context of the
    process it happens in, and the other runs must still be measured. ``seconds_left()``: the
    time the run may take (it is stopped, and recorded as stopped, past it). ``later``: how many
    runs come after this one; a diagnostic rerun leaves them this run's time each.
    """
    command = [sys.executable, __file__, "--play", dtype, kernels, "--device", device, "--out", str(out)]
    command += ["--smoke"] if smoke else []
    label = f"{dtype}, kernels={kernels}"
    start = time.perf_counter()
    run = _child(command, seconds_left() - RESERVE_S, os.environ)
    seconds = time.perf_counter() - start
    if run.returncode == 0:
        return {"rows": _rows(out), "seconds": seconds}
    failed = {"rows": [], "seconds": seconds, "error": _report_failure(run, label)}
    cuda_error = any(text in (run.stderr or "") + (run.stdout or "") for text in CUDA_ERRORS)
    spare = seconds_left() - RESERVE_S - later * seconds  # what the runs still to come do not need
    if device.startswith("cuda") and cuda_error and spare > 2 * seconds:
        # CUDA reports errors late: once more, each launch waited for, names the culprit
        rerun = _child(command, spare, {**os.environ, "CUDA_LAUNCH_BLOCKING": "1"})
        if rerun.returncode != 0:
            failed["error_launch_blocking"] = _report_failure(rerun, f"{label}, CUDA_LAUNCH_BLOCKING=1")
    return failed


def _child(command: list, limit: float, env) -> subprocess.CompletedProcess:
    """The child run, stopped after ``limit`` seconds (then exit status 124 and a line that says so)."""
    if limit <= 0:
        return subprocess.CompletedProcess(command, 124, "", "not started: no time left in the budget")
    try:
        return subprocess.run(command, capture_output=True, text=True, env=env,
                              timeout=None if math.isinf(limit) else limit)
    except subprocess.TimeoutExpired as exc:
        said = exc.stderr.decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        return subprocess.CompletedProcess(command, 124, "", f"{said}\nstopped after {limit:.0f} s: the budget ran out")


def _report_failure(run: subprocess.CompletedProcess, label: str) -> str:
    """Print the last lines of a failed child; return its last line."""
    tail = (run.stderr or run.stdout).strip().splitlines()[-12:]
    print("\n".join([f"{label}: the game failed (exit {run.returncode}):", *tail]))
    return tail[-1] if tail else f"exit {run.returncode}"


def record(path: Path, label: str, outcome: dict) -> None:
    """Add one run's outcome to ``path`` (JSON) at once: a limit that stops the section keeps what finished."""
    done = json.loads(path.read_text()) if path.is_file() else {}
    done[label] = outcome
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(done, indent=1, default=str) + "\n")
    print(f"{label}: " + (f"failed: {outcome['error']}" if "error" in outcome else
                          f"{len(outcome['rows'])} steps in {outcome['seconds']:.1f} s"), flush=True)


def play_here(device: str, dtype: str, kernels: str, out: Path, smoke: bool) -> None:
    """`play`'s child process: train the game into `out`."""
    import importlib.util

    import torch

    from redgame.llm.embedder import MINILM_PACKAGE
    from redgame.llm.judges import make_judge
    from redgame.llm.trainer import train

    torch.backends.cuda.matmul.allow_tf32 = False  # fp32 means fp32 here
    # The embedded judge needs its PyPI package; without it the tiny model judges (the check is of
    # equal numbers with the kernels on and off, not of judgements).
    judge = make_judge("embedded" if importlib.util.find_spec(MINILM_PACKAGE) else "lm:tiny")
    train(_config(device, dtype, kernels, smoke), out, overwrite=True, progress=False, judge=judge)
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _same_round(a: dict, b: dict) -> bool:
    return all(a.get(k) == b.get(k) for k in ("defender/pairs", "attacker/pairs", "parse_errors", "refusal_benign"))


def compare(on: dict, off: dict, dtype: str, expected: str, expected_lora: str | None = None,
            kernels: str = "on") -> dict:
    """The checks on one dtype's pair of runs, ``kernels`` (on or auto) against off.

    ``expected``: what computes the log-probs in the ``kernels`` run; ``expected_lora``: what
    runs its LoRA layers (default the same; ``peft`` for auto on CUDA).
    """
    finite = all(math.isfinite(v) for run in (on, off) for row in run["rows"] for k, v in row.items()
                 if k.endswith(("loss", "margin", "grad_norm")) and isinstance(v, float))
    lora = expected if expected_lora is None else expected_lora
    named = (bool(on["rows"]) and bool(off["rows"])  # a run that failed names nothing
             and all(r["kernels/lora"] == lora and r["kernels/logprobs"] == expected for r in on["rows"])
             and all(r["kernels/lora"] == "peft" for r in off["rows"]))
    # Steps whose rounds agree (all of them unless sampling diverged) must give the same losses:
    # error |on - off| / max(|off|, 1), relative above 1 and absolute below (margins start at 0).
    errors, compared = {}, 0
    for a, b in zip(on["rows"], off["rows"]):
        if not _same_round(a, b):
            break
        compared += 1
        for k in COMPARED:
            if k in a and k in b:
                errors[k] = max(errors.get(k, 0.0), abs(a[k] - b[k]) / max(abs(b[k]), 1.0))
    close = compared >= 1 and all(e <= TOLERANCE[dtype] for e in errors.values())
    failed = {name: run["error"] + (f"; with CUDA_LAUNCH_BLOCKING=1: {run['error_launch_blocking']}"
                                    if "error_launch_blocking" in run else "")
              for name, run in ((kernels, on), ("off", off)) if "error" in run}
    update = {name: sum(r["time/update"] for r in run["rows"][1:]) / max(1, len(run["rows"]) - 1)
              for name, run in (("on", on), ("off", off))}
    return {"dtype": dtype, "kernels": kernels, "finite": finite, "implementation_named": named, "expected": expected,
            "expected_lora": lora,
            "steps_compared": compared, "errors": errors, "close": close,
            "update_s": update, "seconds": {"on": on["seconds"], "off": off["seconds"]},
            "rows": {"on": on["rows"], "off": off["rows"]}, "failed": failed,
            "ok": finite and named and close and not failed}


DTYPES = ("float32", "bfloat16")


def plays_of(device: str, dtype: str) -> tuple[str, ...]:
    """The kernels settings played in one dtype. Off first: the reference is measured even if the kernels' run
    fails. On CUDA in bf16 (what --dtype auto picks there) also auto: our log-probs, peft's LoRA layers."""
    return ("off", "on", "auto") if (device, dtype) == ("cuda", "bfloat16") else ("off", "on")


def section_game(ctx, dtypes=DTYPES) -> dict:
    """gpu_check.py's game section: the tiny model's game with the kernels on vs off, fp32 and bf16."""
    import importlib.util

    import torch

    missing = [m for m in ("transformers", "peft", "safetensors") if importlib.util.find_spec(m) is None]
    if missing:
        return dict(status="skip", headline=f"the game needs {', '.join(missing)} (pip install 'redgame[llm]')",
                    notes=[], data={})
    from redgame.kernels import backend

    device = "cuda" if ctx.device == "cuda" else "cpu"
    expected = backend(torch.zeros(1, device=device))  # triton on CUDA; torch, or interpret under TRITON_INTERPRET=1
    results = []
    (Path(ctx.out) / "gpu_game_runs.json").unlink(missing_ok=True)  # an earlier invocation's runs are not these
    later = sum(len(plays_of(device, d)) for d in dtypes)  # runs not yet started
    with tempfile.TemporaryDirectory() as runs_dir:
        for dtype in dtypes:
            plays = plays_of(device, dtype)
            runs = {}
            for k in plays:
                later -= 1
                runs[k] = play(device, dtype, k, Path(runs_dir) / f"{dtype}-kernels-{k}", ctx.smoke,
                               getattr(ctx, "seconds_left", lambda: math.inf), later=later)
                record(Path(ctx.out) / "gpu_game_runs.json", f"{dtype}, kernels={k}", runs[k])
            results.append(compare(runs["on"], runs["off"], dtype, expected))
            if "auto" in runs:
                results.append(compare(runs["auto"], runs["off"], dtype, expected, "peft", kernels="auto"))
            for result in results[-len(plays) + 1:]:
                print(json.dumps({k: v for k, v in result.items() if k != "rows"}, indent=1))
    steps = 2 if ctx.smoke else STEPS
    notes = ["| dtype | kernels | implementation named | steps with equal rounds | max loss error | update s (kernels "
             "/ off) | ok |", "|---|---|---|---|---|---|---|"]
    for r in results:
        worst = max(r["errors"].values(), default=float("nan"))
        notes.append(f"| {r['dtype']} | {r['kernels']} | {r['implementation_named']} (LoRA {r['expected_lora']}, "
                     f"log-probs {r['expected']}; off: peft) | "
                     f"{r['steps_compared']} "
                     f"of {steps} | {worst:.1e} | {r['update_s']['on']:.2f} / {r['update_s']['off']:.2f} | {r['ok']} |")
    notes += [f"- {r['dtype']}, kernels {k}: failed: {error}" for r in results for k, error in r["failed"].items()]
    ok = all(r["ok"] for r in results)
    head = ", ".join(f"{r['dtype']} update {r['update_s']['on']:.2f} s {r['kernels']} / {r['update_s']['off']:.2f} s off"
                     for r in results)
    return dict(status="pass" if ok else "fail", headline=f"tiny game on {device}, kernels on vs off; {head}",
                notes=notes, data=results)


@dataclass
class _Context:
    out: Path
    smoke: bool
    device: str


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="output folder (default: a temporary one)")
    parser.add_argument("--smoke", action="store_true", help="fewer tokens; runs on a CPU")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated dtypes to play (default: all)")
    parser.add_argument("--play", nargs=2, metavar=("DTYPE", "KERNELS"), help=argparse.SUPPRESS)  # one run (a child)
    parser.add_argument("--device", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    unknown = sorted(set(args.dtypes.split(",")) - set(TOLERANCE))
    if unknown:  # before any game: each is compared at its dtype's tolerance, after all of them have run
        parser.error(f"--dtypes: {', '.join(unknown)} has no tolerance here; choose among {', '.join(TOLERANCE)}")
    import torch

    from gpu_check import import_checkout  # this folder is on sys.path when the script runs

    import_checkout()
    if args.play:
        play_here(args.device, *args.play, Path(args.out), args.smoke)
        return 0
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(args.out or tmp)
        result = section_game(_Context(out, args.smoke, device), dtypes=args.dtypes.split(","))
        out.mkdir(parents=True, exist_ok=True)
        (out / "gpu_game.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    print("\n".join([f"{result['status']}: {result['headline']}", *result["notes"]]))
    return 0 if result["status"] == "pass" else 1


if __name__ == "__main__":
    raise SystemExit(main())
