"""The claims experiment, version 2: game regimes and ablations, several seeds, intervals, the probe.

Each regime (the games shared, bipolicy, advgame and the ablations defender-sft and
defender-vs-frozen, all on the demo recipe ``redgame.llm.demo.DEMO_RECIPE`` with the same
budget: steps, seeds per step, attacks, answers and tokens) is trained once per seed. Each run's
defender is then evaluated greedily on a held-out split (default: test) by the evaluation judge
and by refusal strings side by side, with the judge's loop (degenerate) rate, and probed
(``redgame.llm.probe``: a fresh attacker trained against the frozen defender) for its mirror
gap. ``shared`` trains with REINFORCE++ (``loss=reinforce_pp``, Self-RedTeam's loss) where the
installed redgame has it, else with plain REINFORCE; the report names which.

Writes to ``--out``: the runs, ``claims.json``, ``claims.md`` (tables, and which comparisons
are decided: a 95% bootstrap interval over seeds that excludes zero) and ``claims.png``.

    python benchmarks/llm_claims.py [--regimes ...] [--seeds 0 1 2] [--steps 2] [--probe-steps 2]
        [--prompts N] [--split test] [--set KEY=VALUE] [--reuse] [--out runs/claims] [--json] [--smoke]

``--smoke``: the tiny random model, 1 step, 2 seeds, 2 regimes and 4 prompts, in seconds (CI).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

REGIMES = ("shared", "bipolicy", "advgame", "defender-sft", "defender-vs-frozen")


def parse(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="base model (default: embedded)")
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=REGIMES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    parser.add_argument("--steps", type=int, default=2, help="game steps per run (default: 2)")
    parser.add_argument("--probe-steps", type=int, default=2, help="best-response steps per probe (default: 2)")
    parser.add_argument("--split", default="test", choices=("validation", "test"),
                        help="held-out seeds (default: test; choose settings on validation)")
    parser.add_argument("--prompts", type=int, default=0,
                        help="the first N harmful and N benign prompts of the split (0: all)")
    parser.add_argument("--eval-tokens", type=int, default=0, help="held-out answer length (0: the recipe's)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key of the demo recipe for every regime")
    parser.add_argument("--reuse", action="store_true",
                        help="keep runs in --out that already hold this config (and their measurements, when alike)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16 (default: auto)")
    parser.add_argument("--out", default="runs/claims", help="output folder (default: runs/claims)")
    parser.add_argument("--json", action="store_true", help="print the JSON summary")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 1 step, 2 seeds, 2 regimes, 4 prompts")
    args = parser.parse_args(argv)
    if args.smoke:
        args.model, args.steps, args.probe_steps, args.seeds, args.prompts = "tiny", 1, 1, [0, 1], 2
        args.regimes = ["shared", "defender-sft"]
        args.set = args.set + ["seeds_per_step=2", "attack_tokens=6", "response_tokens=6", "lora_rank=4",
                               "lora_alpha=8"]
    return args


def regime_config(recipe, regime: str, seed: int, steps: int, model: str, device: str = "auto", dtype: str = "auto"):
    """The recipe for one regime: shared trains with REINFORCE++ where available."""
    from redgame.llm.config import LOSSES

    loss = ("reinforce_pp" if "reinforce_pp" in LOSSES else "reinforce") if regime == "shared" else (
        "auto" if regime == "defender-sft" else recipe.loss)
    return dataclasses.replace(recipe, model=model, regime=regime, seed=seed, steps=steps, save_every=0,
                               loss=loss, device=device, dtype=dtype).validate()


def evaluate_run(model_name: str, run: Path | None, judge, seeds: list, tokens: int, place) -> dict:
    """The run's defender (the base when ``run`` is None), greedy on ``seeds``."""
    from redgame.llm.adapters import adapter_dir, attach, playing
    from redgame.llm.evaluation import evaluate_defender
    from redgame.llm.models import load_base

    device, dtype = place
    base, tok = load_base(model_name, dtype=dtype, device=device)
    model = attach(base, {"defender": adapter_dir(run, "defender")} if run else {})
    with playing(model, "defender" if run else None) as m:
        r = evaluate_defender(m, tok, judge, seeds, max_new_tokens=tokens)
    keys = ("harmful_refusal", "harmful_refusal_strings", "benign_compliance", "benign_compliance_strings",
            "loop_rate", "attack_success")
    return {k: r[k] for k in keys}


def cached(path: Path, measured: dict, reuse: bool, compute) -> dict:
    """The row saved at ``path`` when reusing and it was measured alike; else computed and saved."""
    if reuse and path.is_file() and json.loads(path.read_text())["measured"] == measured:
        return json.loads(path.read_text())["row"]
    row = compute()
    path.write_text(json.dumps({"measured": measured, "row": row}) + "\n")
    return row


def main(argv=None) -> dict:
    args = parse(argv)
    import torch

    from redgame.llm import claims
    from redgame.llm.config import LOSSES, from_mapping, parse_override
    from redgame.llm.demo import DEMO_RECIPE
    from redgame.llm.judges import make_judge
    from redgame.llm.models import load_base, place_judge, placement
    from redgame.llm.probe import probe
    from redgame.llm.seeds import builtin_seeds
    from redgame.llm.trainer import train

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = from_mapping(dict(parse_override(t) for t in args.set), where=" (--set)", base=DEMO_RECIPE)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0, load_start = time.perf_counter(), os.getloadavg()[0]
    place = placement(args.device, args.dtype)  # cuda without CUDA: an error before any compute
    judge = make_judge("embedded")
    place_judge(judge, *place)
    split = builtin_seeds(args.split)
    n = args.prompts or len(split)
    seeds = [s for s in split if s.harmful][:n] + [s for s in split if not s.harmful][:n]
    tokens = args.eval_tokens or recipe.response_tokens
    measured = {"split": args.split, "prompts": n, "probe_steps": args.probe_steps, "tokens": tokens}
    results = {"base": [cached(out / "base_row.json", measured, args.reuse,
                               lambda: evaluate_run(args.model, None, judge, seeds, tokens, place))]}
    results.update({regime: [] for regime in args.regimes})
    for seed in args.seeds:  # seed-major: a run cut short still has every regime at its first seeds
        for regime in args.regimes:
            cfg = regime_config(recipe, regime, seed, args.steps, args.model, args.device, args.dtype)
            run = out / f"{regime}-s{seed}"
            reused = args.reuse and (run / "final" / "defender").is_dir() and json.loads(
                (run / "config.json").read_text()) == cfg.to_dict()
            if not reused:
                train(cfg, run, overwrite=True, progress=False, judge=judge, log=lambda *a: None,
                      base=load_base(args.model, dtype=place[1], device=place[0]))

            def measure(run=run, seed=seed):
                row = evaluate_run(args.model, run, judge, seeds, tokens, place)
                gap = probe(run, steps=args.probe_steps, split=args.split, seed=seed, prompts=n, progress=False,
                            device=args.device, dtype=args.dtype, log=lambda *a: None)
                return {**row, **{k: gap[k] for k in ("selfplay_asr", "best_response_asr", "mirror_gap")}}

            row = cached(run / "claims_row.json", measured, reused, measure)
            results[regime].append(row)
            print(f"{regime} seed {seed}: harmful refusal {row['harmful_refusal']:.2f} "
                  f"(strings {row['harmful_refusal_strings']:.2f}), benign compliance {row['benign_compliance']:.2f}, "
                  f"loops {row['loop_rate']:.2f}, mirror gap {row['mirror_gap']:+.2f} "
                  f"[{time.perf_counter() - t0:.0f} s]", flush=True)
    table = claims.regime_table(results)
    summary = {"model": args.model, "split": args.split, "steps": args.steps, "probe_steps": args.probe_steps,
               "seeds": args.seeds, "n_harmful": sum(s.harmful for s in seeds),
               "n_benign": sum(not s.harmful for s in seeds), "eval_judge": getattr(judge, "name", "embedded"),
               "shared_loss": "reinforce_pp" if "reinforce_pp" in LOSSES else "reinforce",
               "recipe": dataclasses.replace(recipe, steps=args.steps).to_dict(), "overrides": args.set,
               "runs": results, "table": table, "comparisons": claims.comparisons(table),
               "total_seconds": round(time.perf_counter() - t0, 1),
               "load_start": round(load_start, 2), "load_end": round(os.getloadavg()[0], 2)}
    (out / "claims.json").write_text(json.dumps(summary, indent=1) + "\n")
    report = claims.markdown(summary)
    (out / "claims.md").write_text(report)
    claims.plot(summary, out / "claims.png")
    print(json.dumps(summary, indent=1) if args.json else report)
    return summary


if __name__ == "__main__":
    main()
