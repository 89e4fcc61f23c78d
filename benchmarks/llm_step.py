"""One game iteration on the embedded model, now against the previous path, with peak memory.

    python benchmarks/llm_step.py                      # the demo's iteration, 1 warm-up + 2 timed, both paths
    python benchmarks/llm_step.py --iters 1 --set micro_batch_tokens=2048
    python benchmarks/llm_step.py --smoke              # the tiny model, seconds: checks the script
    python benchmarks/llm_step.py --flops              # also the iteration's FLOPs and the time they need here
    python benchmarks/llm_step.py --profile            # and, phase by phase, the ops that took the time

(``--flops`` and ``--profile`` run one iteration under torch's profiler, in a third subprocess: it
holds every op event, about 12 GiB resident on the embedded model, and slows small ops several-fold.)

The iteration is the demo's (``redgame.llm.demo.DEMO_RECIPE``): 8 seeds x (2 attacks + the
identity attack) x (2 answers + 1 refusal-prefix candidate + 1 greedy answer), judged by the
recipe's judge (the probe judge; ``--set judge=embedded --set greedy_candidates=false`` for the
iteration timed before 2026-12-07), both adapters updated (bipolicy, DPO). Each path runs in a fresh subprocess, so that its peak
resident memory (``ru_maxrss``: model, judge, rollouts and update together) is its own:

- ``previous``: the path the game ran before the kernels came into the loop: peft's LoRA
  layers (``kernels=off``), one forward pass per role (``batch_roles=false``), the whole
  batch in one pass (``micro_batch_tokens=0``), every sequence its own prompt pass
  (``share_prompts=false``), rollouts sampled 32 prompts at a time, glibc's allocator left to
  give freed activations back to the kernel (``keep_freed_memory=false``, a key of this script
  only: ``redgame.llm.cpu_allocator``);
- ``now``: the defaults (plus any ``--set``).

Printed: per path the median over the timed iterations of rollout, judge, update and the whole
iteration (their sum in each), the sampling throughput and the peak RSS; then the ratio previous / now. Goals: one iteration
<= 30 s on 2 cores, peak RSS <= 4 GiB.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time

PREVIOUS = {"kernels": "off", "batch_roles": False, "micro_batch_tokens": 0, "share_prompts": False, "rollout_batch": 32,
            "keep_freed_memory": False}
GOALS = {"iteration_s": 30.0, "peak_rss_gib": 4.0}
GEMM_SHAPE = (1024, 576, 1536)  # [M, K] x [K, N]: an update micro-batch through SmolLM2's MLP up-projection
TOP_OPS = 8  # ops per phase in --profile's table
SMOKE = {"model": "tiny", "attack_tokens": 8, "response_tokens": 8, "seeds_per_step": 4, "lora_rank": 4}


def run_path(overrides: dict, iters: int, threads: int) -> dict:
    """One path in this process: load, one warm-up iteration, ``iters`` timed ones; times and memory."""
    import torch

    from redgame.llm.demo import DEMO_RECIPE
    from redgame.llm.judges import make_judge
    from redgame.llm.models import load_base
    from redgame.llm import trainer

    torch.set_num_threads(threads)
    if not overrides.pop("keep_freed_memory", True):
        trainer.keep_freed_memory = lambda device: False
    cfg = dataclasses.replace(DEMO_RECIPE, steps=1 + iters, save_every=0, threads=threads, **overrides).validate()
    t = time.perf_counter()
    base, judge = load_base(cfg.model), make_judge(cfg.judge)
    load_s = time.perf_counter() - t
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (Linux: KiB)
    with tempfile.TemporaryDirectory() as out:
        trainer.train(cfg, out, progress=False, base=base, judge=judge)
        rows = [json.loads(line) for line in open(f"{out}/metrics.jsonl")][1:]
    phases = ("rollout", "judge", "update")
    parts = {k: statistics.median(r[f"time/{k}"] for r in rows) for k in phases}
    iteration = statistics.median(sum(r[f"time/{k}"] for k in phases) for r in rows)  # not the medians' sum (3+ iters)
    return {**parts, "iteration": iteration, "tokens_per_s": statistics.median(r["tokens_per_s"] for r in rows),
            "load_s": load_s, "rss_loaded_gib": rss_loaded,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "kernels": rows[-1].get("kernels/lora"), "pairs": [r.get("defender/pairs", 0) + r.get("attacker/pairs", 0)
                                                                for r in rows]}


def count_flops(overrides: dict, threads: int) -> dict:
    """The second iteration under torch's profiler, phase by phase: its matrix-product FLOPs, its wall time
    and the ops that took the most CPU time; and this machine's float32 product rate at an update's shape.
    Together they say how much of each phase is arithmetic, and what the rest is."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from redgame.llm import trainer

    wall, ops, steps = {}, {}, []
    play_step = trainer.play_step
    trainer.play_step = lambda game, step: steps.append(step) or play_step(game, step)

    def counting(name, phase):
        def counted_phase(*args, **kwargs):
            if len(steps) < 2:  # the first iteration warms up
                return phase(*args, **kwargs)
            start = time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU], with_flops=True) as prof:
                out = phase(*args, **kwargs)
            wall[name] = wall.get(name, 0.0) + time.perf_counter() - start
            events = prof.key_averages()
            by_op = ops.setdefault(name, {})
            for e in events:
                seconds, flops, calls = by_op.get(e.key, (0.0, 0, 0))
                by_op[e.key] = (seconds + e.self_cpu_time_total / 1e6, flops + e.flops, calls + e.count)
            return out
        return counted_phase

    for name, attr in (("rollout", "play"), ("judge", "judge_rounds"), ("update", "update_roles")):
        setattr(trainer, attr, counting(name, getattr(trainer, attr)))
    torch.set_num_threads(threads)
    rate = gemm_rate()  # before the run, in a fresh process
    run_path(overrides, 1, threads)
    top = {name: sorted(([op, *v] for op, v in by_op.items()), key=lambda row: -row[1])[:TOP_OPS]
           for name, by_op in ops.items()}
    flops = {name: sum(f for _, f, _ in by_op.values()) for name, by_op in ops.items()}  # every op's, not the top's
    return {"flops": flops, "gemm_flops_per_s": rate, "wall": wall, "ops": top}


def gemm_rate(batches: int = 5, reps: int = 10) -> float:
    """The best of ``batches`` float32 product rates (FLOP/s) at ``GEMM_SHAPE``: what this machine reaches."""
    import torch

    a, b = torch.randn(GEMM_SHAPE[:2]), torch.randn(GEMM_SHAPE[1:])
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(batches):
        start = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = min(best, (time.perf_counter() - start) / reps)
    return 2 * GEMM_SHAPE[0] * GEMM_SHAPE[1] * GEMM_SHAPE[2] / best


def in_subprocess(overrides: dict, iters: int, threads: int, flops: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps(overrides), "--iters", str(iters), "--threads", str(threads)]
    cmd += ["--flops"] if flops else []
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"the path {overrides} failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def override(text: str) -> tuple:
    """``key=value`` of ``--set``: a config key, or this script's ``keep_freed_memory``."""
    from redgame.errors import UserError
    from redgame.llm.config import parse_override

    key, _, value = text.partition("=")
    if key.strip() != "keep_freed_memory":
        return parse_override(text)
    if value.strip().lower() not in ("true", "false", "1", "0"):  # as the config reads a bool
        raise UserError(f"--set keep_freed_memory: cannot read {value!r} as bool (true, false, 1, 0)")
    return "keep_freed_memory", value.strip().lower() in ("true", "1")


def check_path(overrides: dict, iters: int, threads: int) -> None:
    """A path's config as its child would build it, checked here: one line before any path runs."""
    from redgame.errors import UserError
    from redgame.llm.config import from_mapping
    from redgame.llm.demo import DEMO_RECIPE

    keys = {k: v for k, v in overrides.items() if k != "keep_freed_memory"}
    mine = sorted(set(keys) & {"steps", "save_every", "threads"})
    if mine:
        raise UserError(f"--set {mine[0]}: llm_step sets steps, save_every and threads itself (--iters, --threads)")
    from_mapping({**keys, "steps": 1 + iters, "save_every": 0, "threads": threads}, " (--set)", DEMO_RECIPE).validate()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=2, help="timed iterations after one warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a key of 'now'")
    parser.add_argument("--smoke", action="store_true", help="the tiny model, one short iteration")
    parser.add_argument("--flops", action="store_true", help="also count one iteration's matrix-product FLOPs "
                        "(in a third subprocess) and the time they need at this machine's float32 product rate")
    parser.add_argument("--profile", action="store_true", help="--flops, and per phase the ops with the most "
                        "self time (torch's profiler), with their share of the phase and their product rate")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.iters < 1 or args.threads < 1:
        parser.error(f"--iters and --threads must be at least 1, got {args.iters} and {args.threads}")
    args.flops |= args.profile
    if args.child is not None:
        measure = count_flops if args.flops else lambda o, t: run_path(o, args.iters, t)
        print(json.dumps(measure(json.loads(args.child), args.threads)))
        return

    base = SMOKE if args.smoke else {}
    iters = 1 if args.smoke else args.iters
    from redgame.errors import UserError

    now = dict(override(o) for o in args.set)
    if len(now) < len(args.set):
        raise UserError("--set: a key is given twice; give each once")
    paths = {"previous": {**base, **PREVIOUS}, "now": {**base, **now}}
    for overrides in paths.values():
        check_path(overrides, iters, args.threads)
    results = {name: in_subprocess(overrides, iters, args.threads) for name, overrides in paths.items()}
    model = base.get("model", "embedded")
    print(f"one demo iteration on {model}, {args.threads} threads, median of {iters} after a warm-up;"
          f" overrides of 'now': {' '.join(args.set) or 'none'}")
    print(f"{'path':<10}{'rollout':>9}{'judge':>8}{'update':>9}{'iteration':>11}{'tok/s':>8}{'peak RSS':>10}"
          f"{'LoRA layers':>13}")
    for name, r in results.items():
        print(f"{name:<10}{r['rollout']:8.1f}s{r['judge']:7.1f}s{r['update']:8.1f}s{r['iteration']:10.1f}s"
              f"{r['tokens_per_s']:8.0f}{r['peak_rss_gib']:8.2f}GiB{r['kernels']:>13}")
    prev, now = results["previous"], results["now"]
    ratio = lambda k: prev[k] / max(now[k], 1e-9)  # noqa: E731
    print(f"{'previous/now':<10}{ratio('rollout'):8.2f}x{ratio('judge'):7.2f}x{ratio('update'):8.2f}x"
          f"{ratio('iteration'):10.2f}x{'':>8}{ratio('peak_rss_gib'):8.2f}x")
    print(f"goals: iteration <= {GOALS['iteration_s']:.0f} s ({'met' if now['iteration'] <= GOALS['iteration_s'] else 'NOT met'}), "
          f"peak RSS <= {GOALS['peak_rss_gib']:.0f} GiB ({'met' if now['peak_rss_gib'] <= GOALS['peak_rss_gib'] else 'NOT met'})"
          + (" [smoke run: tiny model, the goals are for the embedded one]" if args.smoke else ""))
    print(f"judge share of an iteration: previous {prev['judge'] / prev['iteration']:.1%}, "
          f"now {now['judge'] / now['iteration']:.1%} (goal <= 10%)")
    print(f"pairs per iteration: previous {prev['pairs']}, now {now['pairs']}")
    if args.flops:
        counted = in_subprocess(paths["now"], 1, args.threads, flops=True)
        print_arithmetic(counted, now, args.threads)
        if args.profile:
            print_ops(counted)


def print_arithmetic(counted: dict, now: dict, threads: int) -> None:
    """How long the matrix products of 'now' take at this machine's product rate, against the goal."""
    flops, rate = counted["flops"], counted["gemm_flops_per_s"]
    total = sum(flops.values())
    parts = ", ".join(f"{name} {f / 1e12:.2f}" for name, f in flops.items())
    m, k, n = GEMM_SHAPE
    print(f"arithmetic of 'now': {total / 1e12:.2f} TFLOP of matrix products per iteration ({parts}); this machine "
          f"multiplies float32 [{m}x{k}]x[{k}x{n}] at up to {rate / 1e9:.0f} GFLOP/s on {threads} threads, so the "
          f"products alone take about {total / rate:.1f} s at that rate (iteration measured: {now['iteration']:.1f} s; "
          f"goal {GOALS['iteration_s']:.0f} s)")


def print_ops(counted: dict) -> None:
    """Per phase of the profiled iteration: its wall time under the profiler, and the ops with the most self
    time (an op's own time, its child ops excluded), each with its share of that wall time, calls and rate."""
    for phase, rows in counted["ops"].items():
        wall = counted["wall"][phase]
        print(f"{phase}: {wall:.1f} s under the profiler; the ops with the most self time:")
        for op, seconds, flops, calls in rows:
            rate = f"{flops / seconds / 1e9:6.0f} GFLOP/s" if flops and seconds else ""
            print(f"  {op[:36]:<36}{seconds:7.2f} s{seconds / max(wall, 1e-9):7.1%}{calls:8d} calls  {rate}")


if __name__ == "__main__":
    from redgame.cli import script_main

    raise SystemExit(script_main("llm_step", main))
