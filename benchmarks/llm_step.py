"""Time one full game iteration on the embedded model, with a breakdown.

One iteration: 8 seeds (4 harmful, 4 benign) x 2 attacks x 2 responses, judged by the
embedded judge, then one attacker and one defender update (bipolicy, DPO). Prints the
median over ``--iters`` iterations after one warm-up, split into rollout, judge and update,
and the peak resident memory above what the loaded model and judge hold.

    python benchmarks/llm_step.py [--iters 2] [--threads 2] [--explore] [--model embedded]
        [--set update_chunk=8]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, default=2, help="timed iterations after one warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--explore", action="store_true", help="add the demo's refusal-prefix candidates")
    parser.add_argument("--model", default="embedded", help="base model (default: embedded; 'tiny' checks the script)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")
    args = parser.parse_args()

    import torch

    from redgame.llm.config import TrainConfig, parse_override
    from redgame.llm.demo import REFUSAL_PREFIX
    from redgame.llm.judges import make_judge
    from redgame.llm.losses import USE_KERNELS
    from redgame.llm.models import load_base
    from redgame.llm.trainer import train

    torch.set_num_threads(args.threads)
    t = time.perf_counter()
    base = load_base(args.model)
    judge = make_judge("embedded")
    load_s = time.perf_counter() - t
    rss_loaded = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # GiB (Linux: KiB)
    cfg = TrainConfig(model=args.model, regime="bipolicy", steps=1 + args.iters, save_every=0, seeds_per_step=8,
                      attacks_per_seed=2, responses_per_attack=2,
                      explore_prefixes=(REFUSAL_PREFIX,) if args.explore else (), threads=args.threads)
    cfg = dataclasses.replace(cfg, **dict(parse_override(o) for o in args.set)).validate()
    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        train(cfg, out, progress=False, base=base, judge=judge)
        total = time.perf_counter() - t
        rss_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        rows = [json.loads(line) for line in open(f"{out}/metrics.jsonl")][1:]
    parts = {k: statistics.median(r[f"time/{k}"] for r in rows) for k in ("rollout", "judge", "update")}
    step = sum(parts.values())
    print(f"model {args.model}, {args.threads} threads, kernels seam: {'redgame.kernels' if USE_KERNELS else 'torch'}")
    print(f"load (model + judge): {load_s:.1f} s; {1 + args.iters} iterations in {total:.1f} s")
    print(f"one iteration (8 seeds x 2 attacks x 2 responses{' + 1 explore' if args.explore else ''}), median of {len(rows)}:")
    for k, v in parts.items():
        print(f"  {k:<8}{v:7.1f} s  {v / step:5.0%}")
    print(f"  {'total':<8}{step:7.1f} s  (goal <= 60 s)")
    print(f"  judge share of an iteration: {parts['judge'] / step:.1%} (goal <= 10%)")
    print(f"  sampling throughput {statistics.median(r['tokens_per_s'] for r in rows):.0f} tokens/s")
    print(f"peak resident memory {rss_peak:.1f} GiB, {rss_peak - rss_loaded:.1f} GiB above the loaded model and judge"
          + (f" (overrides: {' '.join(args.set)})" if args.set else ""))


if __name__ == "__main__":
    main()
