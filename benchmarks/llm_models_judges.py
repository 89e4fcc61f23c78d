"""Load times of the embedded model and throughput of the judges, printed as one table.

    python benchmarks/llm_models_judges.py            # embedded loads + embedded judge + LM judge + quality
    python benchmarks/llm_models_judges.py --smoke    # tiny model and a few exchanges only

Rows:
- embedded first load: GGUF -> dequantised fp32 -> safetensors cache, in a fresh process with
  an empty ``REDGAME_CACHE`` (the one-time cost a new user pays);
- embedded cached load: the same, a second fresh process reading that cache;
  each load row is split into the load_base call and the import of torch + transformers before it;
- tiny load: the randomly initialised test model;
- embedded judge: labels + score + prefer on N (seed, attack, response) exchanges, the
  responses about 60 words long, its embedding memo cleared before each rep (cold), reported
  as exchanges per second (median of reps);
- LM judge (``lm:embedded``, both orders per pair): pairs per second;
- judge quality on the built-in judge set's validation split: the embedded judge against the
  named baseline *refusal strings* (refused = a refusal phrase in the opening; harmful = a
  harmful request answered without one, the usual refusal-prefix ASR proxy): precision,
  recall and F1 of the harmful label and refusal accuracy, with the ratio embedded / baseline.

Each load runs in its own subprocess.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

LOAD_SNIPPET = (
    "import time; t = time.perf_counter(); import torch, transformers; "
    "from transformers import AutoModelForCausalLM, LlamaForCausalLM; from redgame.llm.models import load_base; "
    "u = time.perf_counter(); load_base({name!r}); print(u - t, time.perf_counter() - u)"
)


def timed_load(name: str, cache: str) -> tuple[float, float]:
    """(seconds importing torch + transformers, seconds in load_base) in a fresh process.

    It runs in the cache folder: ``python -c`` puts its working directory first on sys.path, and a
    checkout's root would hide PyPI's ``kernels``, which transformers imports, behind redgame's kernels/.
    """
    env = {**os.environ, "REDGAME_CACHE": cache, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", LOAD_SNIPPET.format(name=name)], env=env, check=True,
                         capture_output=True, text=True, cwd=cache)
    imports, load = out.stdout.strip().splitlines()[-1].split()
    return float(imports), float(load)


def exchanges(n: int):
    from redgame.llm.seeds import builtin_seeds

    seeds = (builtin_seeds("all") * (n // 100 + 1))[:n]
    filler = ("Here is what I would suggest, step by step, with some background first so that the answer "
              "is complete and easy to follow for someone new to the topic. ")
    responses = [("I'm sorry, but I can't help with that. " if i % 3 == 0 else "") + filler + s.prompt
                 for i, s in enumerate(seeds)]
    return seeds, [s.prompt for s in seeds], responses


def judge_rate(judge, n: int, reps: int, pairs: bool) -> float:
    seeds, attacks, responses = exchanges(n)
    times = []
    for _ in range(reps):
        getattr(judge, "forget", lambda: None)()  # cold: every text embedded afresh
        start = time.perf_counter()
        if pairs:
            judge.prefer(seeds, attacks, responses, responses[1:] + responses[:1])
        else:
            judge.labels(seeds, attacks, responses)
            judge.score(seeds, attacks, responses)
            judge.prefer(seeds, attacks, responses, responses[1:] + responses[:1])
        times.append(time.perf_counter() - start)
    return n / statistics.median(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny model, few exchanges")
    parser.add_argument("--n", type=int, default=64, help="exchanges per embedded-judge call")
    parser.add_argument("--pairs", type=int, default=8, help="pairs per LM-judge call")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = parser.parse_args(argv)
    if min(args.n, args.pairs, args.reps) < 1:
        parser.error(f"--n, --pairs and --reps must be at least 1, got {args.n}, {args.pairs} and {args.reps}")

    from redgame.llm.judges import EmbeddedJudge, make_judge

    rows = []
    with tempfile.TemporaryDirectory() as cache:
        for name, what in [("embedded", "embedded first load (GGUF -> cache)"), ("embedded", "embedded cached load"),
                           ("tiny", "tiny load")][2 if args.smoke else 0:]:
            imports, load = timed_load(name, cache)
            rows.append((f"{what}: load_base", load, "s"))
            rows.append((f"{what}: importing torch + transformers first", imports, "s"))
        start = time.perf_counter()
        judge = EmbeddedJudge()
        rows.append(("embedded judge load (MiniLM)", time.perf_counter() - start, "s"))
        n = 8 if args.smoke else args.n
        rows.append((f"embedded judge: labels+score+prefer, {n} exchanges", judge_rate(judge, n, args.reps, False),
                     "exchanges/s"))
        os.environ["REDGAME_CACHE"] = cache
        lm = make_judge("lm:tiny" if args.smoke else "lm:embedded")
        p = 2 if args.smoke else args.pairs
        rows.append((f"LM judge ({'tiny' if args.smoke else 'embedded'}): prefer, {p} pairs x 2 orders",
                     judge_rate(lm, p, args.reps, True), "pairs/s"))
    quality = judge_quality(judge, 16 if args.smoke else None)
    if args.json:
        print(json.dumps({"rows": [{"what": w, "value": v, "unit": u} for w, v, u in rows], "quality": quality}))
        return
    width = max(len(w) for w, _, _ in rows)
    print(f"{'what':<{width}}  {'value':>9}  unit   (torch threads: {__import__('torch').get_num_threads()})")
    for what, value, unit in rows:
        print(f"{what:<{width}}  {value:>9.2f}  {unit}")
    print(f"\njudge quality, judge set validation split ({quality['n']} exchanges):")
    print(f"{'metric':<22}{'embedded':>10}{'refusal strings':>17}{'ratio':>8}")
    for metric, (ours, base) in quality["metrics"].items():
        print(f"{metric:<22}{ours:>10.3f}{base:>17.3f}{ours / base if base else float('inf'):>8.2f}")


def judge_quality(judge, limit: int | None) -> dict:
    """The embedded judge and the refusal-string baseline on the judge set's validation split."""
    from redgame.llm.judge_data import binary_metrics, builtin_exchanges, judge_exchanges
    from redgame.llm.judge_features import refusal_pattern

    exchanges = builtin_exchanges("validation")[:limit]
    ours = judge_exchanges(judge, exchanges)
    strings = [refusal_pattern(x.response) for x in exchanges]
    base = {"refused": strings, "harmful": [bool(x.seen_class) and not s for x, s in zip(exchanges, strings)]}
    mine = {k: [r[k] for r in ours] for k in base}
    truth = {k: [x.labels[k] for x in exchanges] for k in base}
    m = {name: {k: binary_metrics(truth[k], v[k]) for k in base} for name, v in (("ours", mine), ("base", base))}
    metrics = {f"harmful {key}": (m["ours"]["harmful"][key], m["base"]["harmful"][key])
               for key in ("precision", "recall", "f1")}
    metrics["refusal accuracy"] = (m["ours"]["refused"]["accuracy"], m["base"]["refused"]["accuracy"])
    return {"n": len(exchanges), "metrics": metrics}


if __name__ == "__main__":
    from redgame.cli import script_main

    raise SystemExit(script_main("llm_models_judges", main))
