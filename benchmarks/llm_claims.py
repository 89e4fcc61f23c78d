"""The claims experiment: shared vs bipolicy vs advgame on the embedded model.

Trains each regime with several seeds on the demo recipe (``redgame.llm.demo.DEMO_RECIPE``,
its regime, seed and step count replaced), then measures on the held-out (test) split of
the built-in seeds:

- per regime, over seeds: held-out ASR and harmful refusal (direct prompts), benign
  compliance and the multiple-choice utility proxy, as mean ± standard deviation;
- the cross-play meta-game of the base, the template attacker and the runs of one seed
  (``--crossplay-seed``): each defender's exploitability (best attacker's ASR minus the
  meta-game value) and the shared run's mirror gap.

The papers (Self-RedTeam arXiv 2506.07468, ABS arXiv 2605.08427, AdvGame arXiv
2512.20806) predict held-out ASR base > shared >= bipolicy ~ advgame, with benign
compliance kept. This script reports whatever it measures.

    python benchmarks/llm_claims.py [--steps 4] [--seeds 0 1 2] [--set KEY=VALUE] [--reuse]
        [--crossplay-prompts N] [--out runs/claims] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import time
from pathlib import Path

REGIMES = ("shared", "bipolicy", "advgame")


def mean_sd(values: list[float]) -> str:
    if len(values) == 1:
        return f"{values[0]:.2f}"
    return f"{statistics.mean(values):.2f} ± {statistics.stdev(values):.2f}"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="embedded", help="base model (default: embedded)")
    parser.add_argument("--regimes", nargs="+", default=list(REGIMES), choices=REGIMES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="training seeds (default: 0 1 2)")
    parser.add_argument("--steps", type=int, default=4, help="game iterations per run (default: 4)")
    parser.add_argument("--crossplay-seed", type=int, default=0, help="whose runs enter cross-play (default: 0)")
    parser.add_argument("--crossplay-prompts", type=int, default=0,
                        help="cross-play on the first N harmful and N benign held-out seeds (0: all)")
    parser.add_argument("--reuse", action="store_true", help="keep runs in --out that already hold final adapters")
    parser.add_argument("--eval-tokens", type=int, default=40, help="held-out answer length (default: 40)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key of the demo recipe (a reduced run says so here)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--out", default="runs/claims", help="run folders and claims.json (default: runs/claims)")
    parser.add_argument("--json", action="store_true", help="print the JSON summary")
    args = parser.parse_args(argv)

    import torch

    from redgame.llm import crossplay, safety_eval
    from redgame.llm.adapters import attach, playing
    from redgame.llm.config import from_mapping, parse_override
    from redgame.llm.demo import DEMO_RECIPE
    from redgame.llm.judges import make_judge
    from redgame.llm.models import load_base
    from redgame.llm.templates import load_templates
    from redgame.llm.trainer import train
    from redgame.llm.utility import load_questions

    if args.threads:
        torch.set_num_threads(args.threads)
    recipe = from_mapping(dict(parse_override(t) for t in args.set), where=" (--set)", base=DEMO_RECIPE)
    out = Path(args.out)
    t0 = time.perf_counter()
    judge = make_judge("embedded")
    harmful, benign = safety_eval.default_sets()
    questions = load_questions()

    def evaluate(adapter: Path | None) -> dict:
        base, tok = load_base(args.model)  # fresh: peft wraps the base it is given
        model = attach(base, {"defender": adapter} if adapter else {})
        with playing(model, "defender" if adapter else None) as m:
            r = safety_eval.evaluate(m, tok, judge, harmful, benign, questions, max_new_tokens=args.eval_tokens)
        return {k: v for k, v in r.items() if k != "answers"}

    results = {"base": [evaluate(None)]}
    train_seconds = 0.0
    for regime in args.regimes:
        results[regime] = []
        for seed in args.seeds:
            cfg = dataclasses.replace(recipe, model=args.model, regime=regime, seed=seed, steps=args.steps,
                                      save_every=0).validate()
            run = out / f"{regime}-s{seed}"
            reused = args.reuse and (run / "final" / "defender").is_dir() and json.loads(
                (run / "config.json").read_text()) == cfg.to_dict()
            if not reused:
                t = time.perf_counter()
                train(cfg, run, overwrite=True, progress=False, base=load_base(args.model), judge=judge,
                      log=lambda *a: None)
                train_seconds += time.perf_counter() - t
            results[regime].append(evaluate(out / f"{regime}-s{seed}" / "final" / "defender"))
            print(f"{regime} seed {seed}: ASR {results[regime][-1]['asr']:.2f}, "
                  f"benign compliance {results[regime][-1]['benign_compliance']:.2f}", flush=True)

    runs = crossplay.find_runs([out / f"{r}-s{args.crossplay_seed}" for r in args.regimes])
    runs = [dataclasses.replace(r, name=r.regime) for r in runs]
    base, tok = load_base(args.model)
    n = args.crossplay_prompts or max(len(harmful), len(benign))
    played = crossplay.crossplay(base, tok, judge, runs, harmful[:n] + benign[:n], templates=load_templates(),
                                 attack_tokens=recipe.attack_tokens, response_tokens=args.eval_tokens,
                                 log=lambda *a: None)
    meta = crossplay.summarise(played, runs)
    crossplay.write(meta, out / "crossplay")

    rows = []
    for name, rs in results.items():
        gap = meta["mirror_gap"].get(name, {}).get("mirror_gap")
        rows.append({
            "regime": name, "n_seeds": len(rs),
            "asr": [r["asr"] for r in rs], "harmful_refusal": [r["harmful_refusal"] for r in rs],
            "benign_compliance": [r["benign_compliance"] for r in rs], "utility": [r["utility"] for r in rs],
            "mirror_gap": gap, "exploitability": meta["defender_exploitability_each"].get(name),
        })
    summary = {"model": args.model, "steps": args.steps, "seeds": args.seeds, "n_harmful": len(harmful),
               "n_benign": len(benign), "crossplay_prompts": n,
               "recipe": dataclasses.replace(recipe, steps=args.steps).to_dict(),
               "overrides": args.set,
               "rows": rows, "crossplay": meta, "train_seconds": round(train_seconds, 1),
               "total_seconds": round(time.perf_counter() - t0, 1)}
    (out / "claims.json").write_text(json.dumps(summary, indent=1) + "\n")
    heads = ("regime", "held-out ASR", "harmful refusal", "benign compliance", "utility (MC)", "mirror gap",
             "exploitability")
    print("\n| " + " | ".join(heads) + " |\n|" + "---|" * len(heads))
    for r in rows:
        cells = [r["regime"], mean_sd(r["asr"]), mean_sd(r["harmful_refusal"]), mean_sd(r["benign_compliance"]),
                 mean_sd(r["utility"]), "–" if r["mirror_gap"] is None else f"{r['mirror_gap']:+.2f}",
                 "–" if r["exploitability"] is None else f"{r['exploitability']:.2f}"]
        print("| " + " | ".join(cells) + " |")
    print(f"\nmeta-game value {meta['value']:.3f}; attacker mix "
          + ", ".join(f"{a} {w:.2f}" for a, w in zip(meta["attackers"], meta["attacker_mix"]))
          + "; defender mix " + ", ".join(f"{d} {w:.2f}" for d, w in zip(meta["defenders"], meta["defender_mix"])))
    print(f"{len(harmful)} harmful / {len(benign)} benign held-out prompts; {args.steps} steps per run; "
          f"training {summary['train_seconds']:.0f} s, total {summary['total_seconds']:.0f} s")
    if args.json:
        print(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":
    main()
