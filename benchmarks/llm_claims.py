"""The claims experiment, version 2: game regimes and ablations, several seeds, intervals, the probe.

Each regime (the games shared, bipolicy, advgame and the ablations defender-sft and
defender-vs-frozen, all on the demo recipe ``redgame.llm.demo.DEMO_RECIPE`` with the same
budget: steps, seeds per step, attacks, answers and tokens, less what only some regimes can train
with: :data:`NOT_SHARED_BY_EVERY_REGIME`) is trained once per seed. Each run's
defender is then evaluated greedily on a held-out split (default: test) by the evaluation judge
(``--eval-judge``, default the embedded judge; training always uses the embedded judge) and by
refusal strings side by side, with the judge's loop (degenerate) rate, and probed
(``redgame.llm.probe``: a fresh attacker trained against the frozen defender, its ASR read by the
same evaluation judge) for its mirror gap. ``shared`` trains with REINFORCE++
(``loss=reinforce_pp``, Self-RedTeam's loss) where the installed redgame has it, else with plain
REINFORCE; the report names which.

Writes to ``--out``: the runs, ``claims.json``, ``claims.md`` (tables, and which comparisons
are decided: a t-test over seeds whose p-value, Holm-adjusted over the report's comparisons, is
below 0.05) and ``claims.png``.

    python benchmarks/llm_claims.py [--regimes ...] [--seeds 0 1 2] [--steps 2] [--probe-steps 2]
        [--prompts N] [--split test] [--eval-judge NAME] [--set KEY=VALUE] [--reuse] [--jobs N]
        [--out runs/claims] [--json] [--smoke]

``--jobs N`` trains and measures N runs at a time, each in its own process (its own model copy
and judge; ``--threads`` each): on a GPU several small runs share the device, on a CPU give each
job a share of the cores (``--jobs 2 --threads 1`` on two). Each run is trained and measured as
it would be alone with the same threads; its numbers differ from a ``--jobs 1`` run's only by
rounding (about 1e-8 in the rewards: the judge embeds texts in other batches, as it does for a
run that follows other runs in one process).

``--smoke``: the tiny random model, 1 step, 2 seeds, 2 regimes and 4 prompts, in seconds (CI).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path

REGIMES = ("shared", "bipolicy", "advgame", "defender-sft", "defender-vs-frozen")
EVALUATED = ("harmful_refusal", "harmful_refusal_strings", "benign_compliance", "benign_compliance_strings",
             "loop_rate", "attack_success")  # a defender's held-out row (the base's too)
PROBED = ("selfplay_asr", "best_response_asr", "mirror_gap")  # a run's row adds its probe's


def parse(argv=None):
    from redgame.errors import UserError
    from redgame.llm.judge_formats import judge_kind

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
    parser.add_argument("--eval-judge", default="embedded", metavar="NAME",
                        help="the judge of the held-out rates and of the probe's ASRs: embedded, probe, lm:<model>, "
                             "http:<url> (default: embedded); training always uses the embedded judge")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override one key of the demo recipe for every regime")
    parser.add_argument("--reuse", action="store_true",
                        help="keep runs in --out that already hold this config (and their measurements, when alike)")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads, per job (0: torch's default; with --jobs N, the cores / N)")
    parser.add_argument("--jobs", type=int, default=1, help="runs trained and measured at a time, one process each")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--dtype", default="auto", help="auto | float32 | bfloat16 | float16 (default: auto)")
    parser.add_argument("--out", default="runs/claims", help="output folder (default: runs/claims)")
    parser.add_argument("--json", action="store_true", help="print the JSON summary")
    parser.add_argument("--smoke", action="store_true", help="tiny model, 1 step, 2 seeds, 2 regimes, 4 prompts")
    args = parser.parse_args(argv)
    try:
        judge_kind(args.eval_judge, where="--eval-judge: ")
    except UserError as exc:
        parser.error(str(exc))
    for flag, value, least in (("--jobs", args.jobs, 1), ("--steps", args.steps, 1), ("--probe-steps", args.probe_steps, 1),
                               ("--eval-tokens", args.eval_tokens, 0), ("--threads", args.threads, 0)):
        if value < least:  # checked before anything trains: the probe would refuse it only after the first run
            parser.error(f"{flag} must be at least {least}, got {value}")
    if args.prompts < 0 or args.prompts == 1:
        parser.error(f"--prompts must be 0 (all) or at least 2 (the probe's intervals are over prompts), got {args.prompts}")
    for flag, given in (("--seeds", args.seeds), ("--regimes", args.regimes)):
        repeated = sorted({x for x in given if given.count(x) > 1})
        if repeated:  # one run counted twice would narrow every interval
            parser.error(f"{flag} repeats {', '.join(map(str, repeated))}: each run once")
    if args.jobs > 1 and not args.threads:  # N processes with every core each would fight over them
        args.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    if args.smoke:
        args.model, args.steps, args.probe_steps, args.seeds, args.prompts = "tiny", 1, 1, [0, 1], 2
        args.regimes = ["shared", "defender-sft"]
        args.set = args.set + ["seeds_per_step=2", "attack_tokens=6", "response_tokens=6", "lora_rank=4",
                               "lora_alpha=8"]
    return args


# What only some regimes can train with, or what the claims set themselves, reset to the config's defaults so that
# every regime plays one recipe: the defender's greedy answer as a pair candidate needs a loss that learns from
# chosen answers (shared trains with REINFORCE++); payoff weights shape pointwise rewards, and advgame's are
# pairwise; the training judge is the embedded one, the judge every claims run has trained with.
NOT_SHARED_BY_EVERY_REGIME = {"greedy_candidates": False, "payoff_weights": (), "judge": "embedded"}


def claims_recipe(demo_recipe):
    """The demo's recipe less :data:`NOT_SHARED_BY_EVERY_REGIME`: the base every regime's config starts from."""
    return dataclasses.replace(demo_recipe, **NOT_SHARED_BY_EVERY_REGIME)


def regime_config(recipe, regime: str, seed: int, steps: int, model: str, device: str = "auto", dtype: str = "auto"):
    """The recipe for one regime: shared trains with REINFORCE++ where available."""
    from redgame.llm.config import LOSSES

    loss = ("reinforce_pp" if "reinforce_pp" in LOSSES else "reinforce") if regime == "shared" else (
        "auto" if regime == "defender-sft" else recipe.loss)
    return dataclasses.replace(recipe, model=model, regime=regime, seed=seed, steps=steps, loss=loss, device=device,
                               dtype=dtype).validate()  # checkpointed as the recipe says (the demo's: every 4 steps)


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
    return {k: r[k] for k in EVALUATED}


def cached(path: Path, measured: dict, reuse: bool, compute, keys: tuple) -> dict:
    """The row saved at ``path`` when reusing, measured alike and holding a number (or null, read as NaN: no
    value) for each of ``keys``; else computed and saved (atomically: a file a kill cut short, or edited, is
    measured again)."""
    from redgame.jsonio import write_text_atomically

    if reuse and path.is_file():
        try:
            saved = json.loads(path.read_text())
        except ValueError:
            saved = None
        row = saved.get("row") if isinstance(saved, dict) and saved.get("measured") == measured else None
        if isinstance(row, dict) and all(_number_or_null(row.get(k, "missing")) for k in keys):
            return {k: math.nan if k in keys and v is None else v for k, v in row.items()}  # null: NaN, as written
    row = compute()
    write_text_atomically(path, json.dumps({"measured": measured, "row": row}) + "\n")
    return row


def _number_or_null(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


@dataclasses.dataclass(frozen=True)
class Setting:
    """What every run of one experiment shares: passed to each job."""

    model: str
    steps: int
    probe_steps: int
    split: str
    prompts: int
    tokens: int
    device: str
    dtype: str
    threads: int
    reuse: bool
    recipe: object  # the demo recipe with the --set overrides (a TrainConfig)
    eval_judge: str = "embedded"


_JUDGE = {}  # per process: the training and evaluation judges, loaded once


def judges_and_place(setting: Setting):
    """The training judge (embedded), the evaluation judge (the same one unless ``eval_judge`` names
    another), both on the setting's device, and (device, dtype); loaded once per process."""
    import torch

    from redgame.llm.judges import make_judge
    from redgame.llm.models import place_judge, placement

    if "judge" not in _JUDGE:
        if setting.threads:
            torch.set_num_threads(setting.threads)
        place = placement(setting.device, setting.dtype)  # cuda without CUDA: an error before any compute
        judge = make_judge("embedded")
        place_judge(judge, *place)
        evaluator = judge
        if setting.eval_judge != "embedded":
            evaluator = make_judge(setting.eval_judge)
            place_judge(evaluator, *place)
        _JUDGE.update(judge=judge, evaluator=evaluator, place=place)
    return _JUDGE["judge"], _JUDGE["evaluator"], _JUDGE["place"]


def held_out(setting: Setting) -> list:
    from redgame.llm.seeds import builtin_seeds

    split = builtin_seeds(setting.split)
    return [s for s in split if s.harmful][:setting.prompts] + [s for s in split if not s.harmful][:setting.prompts]


def measured_as(setting: Setting) -> dict:
    """What a saved row was measured with; the embedded judge is left unnamed, as rows saved before
    ``--eval-judge`` existed were measured by it."""
    judge = {} if setting.eval_judge == "embedded" else {"eval_judge": setting.eval_judge}
    return {"model": setting.model, "device": setting.device, "dtype": setting.dtype, "split": setting.split,
            "prompts": setting.prompts, "probe_steps": setting.probe_steps, "tokens": setting.tokens, **judge}


def _saved_config(run: Path) -> dict | None:
    """The run's config.json, less where it checkpoints (a run trained with other checkpoints is the same run), or
    None where there is none to read (a damaged one is not reused)."""
    try:
        saved = json.loads((run / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return None
    return _trained_as(saved) if isinstance(saved, dict) else None


def _trained_as(config: dict) -> dict:
    """A config less the keys that say where and how often a run checkpoints, which do not change its weights."""
    from redgame.llm.config import CHECKPOINT_KEYS

    return {k: v for k, v in config.items() if k not in CHECKPOINT_KEYS}


def train_and_measure(setting: Setting, out: Path, regime: str, seed: int) -> dict:
    """Train one regime at one seed (unless reusable) and measure it: its row of the report."""
    from redgame.llm.models import load_base
    from redgame.llm.probe import probe
    from redgame.llm.checkpoint import latest_checkpoint
    from redgame.llm.trainer import train

    judge, evaluator, place = judges_and_place(setting)
    cfg = regime_config(setting.recipe, regime, seed, setting.steps, setting.model, setting.device, setting.dtype)
    run = out / f"{regime}-s{seed}"
    same = setting.reuse and _saved_config(run) == _trained_as(cfg.to_dict())
    reused = same and (run / "final" / "defender").is_dir()
    if not reused:
        # a row of the run's earlier weights is measured again (--reuse took it for the retrained run's)
        (run / "claims_row.json").unlink(missing_ok=True)
        resume = same and latest_checkpoint(run) is not None  # a run stopped midway (Ctrl-C) goes on
        trained = train(cfg, run, resume=resume, overwrite=not resume, progress=False, judge=judge,
                        log=lambda *a: None, base=load_base(setting.model, dtype=place[1], device=place[0]))
        if trained["stopped"] or trained["interrupted"]:  # Ctrl-C: exit 130, as anywhere else in the script
            said = (f"stopped at step {trained['steps']}; run the same command with --reuse to continue it from its "
                    "checkpoint" if trained["stopped"] else
                    "finished its training (Ctrl-C in its last step); run the same command with --reuse to measure "
                    "it and go on")
            print(f"{run.name} {said}", file=sys.stderr, flush=True)
            raise KeyboardInterrupt

    def measure():
        row = evaluate_run(setting.model, run, evaluator, held_out(setting), setting.tokens, place)
        gap = probe(run, steps=setting.probe_steps, split=setting.split, seed=seed, prompts=setting.prompts,
                    eval_judge=setting.eval_judge, progress=False, device=setting.device, dtype=setting.dtype,
                    log=lambda *a: None, overwrite=True,  # a row measured again: its probe with it
                    overrides={"judge": cfg.judge})  # the recipe's judge, given on this command's own line
        return {**row, **{k: gap[k] for k in PROBED}}

    return cached(run / "claims_row.json", measured_as(setting), reused, measure, EVALUATED + PROBED)


def every_run(setting: Setting, out: Path, tasks: list[tuple[str, int]], jobs: int, report):
    """{(regime, seed): row} for every task, ``jobs`` at a time in worker processes (1: in this one)."""
    if jobs == 1:
        rows = {}
        for regime, seed in tasks:
            rows[regime, seed] = train_and_measure(setting, out, regime, seed)
            report(regime, seed, rows[regime, seed])
        return rows
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: CUDA cannot be used in a forked child; each worker loads its own judge and models.
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = {pool.submit(train_and_measure, setting, out, regime, seed): (regime, seed) for regime, seed in tasks}
        rows = {}
        try:
            for future in as_completed(futures):
                rows[futures[future]] = future.result()
                report(*futures[future], rows[futures[future]])
        except BaseException:  # a failed run (or Ctrl-C) stops the queue, not only this loop
            pool.shutdown(wait=False, cancel_futures=True)
            raise
    return rows


def main(argv=None) -> dict:
    args = parse(argv)
    from redgame.errors import UserError, check_output_path
    from redgame.jsonio import strict_json, write_json, write_text_atomically
    from redgame.llm import claims
    from redgame.llm.config import LOSSES, from_mapping, parse_overrides
    from redgame.llm.demo import DEMO_RECIPE
    from redgame.llm.seeds import builtin_seeds

    check_output_path("--out", args.out, "folder")
    recipe = from_mapping(parse_overrides(args.set), where=" (--set)", base=claims_recipe(DEMO_RECIPE))
    if recipe.judge != "embedded":  # every run trains against the embedded judge (judges_and_place)
        raise UserError(f"--set judge={recipe.judge}: the claims train every regime against the embedded judge; "
                        "--eval-judge chooses the judge of the held-out rates and of the probe's ASRs")
    for regime in args.regimes:  # a --set that one regime refuses (advgame: lam) stops here, before any run trains
        regime_config(recipe, regime, args.seeds[0], args.steps, args.model, args.device, args.dtype)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t0, load_start = time.perf_counter(), os.getloadavg()[0]
    split = builtin_seeds(args.split)
    setting = Setting(model=args.model, steps=args.steps, probe_steps=args.probe_steps, split=args.split,
                      prompts=args.prompts or len(split), tokens=args.eval_tokens or recipe.response_tokens,
                      device=args.device, dtype=args.dtype, threads=args.threads, reuse=args.reuse, recipe=recipe,
                      eval_judge=args.eval_judge)
    judge, evaluator, place = judges_and_place(setting)
    seeds = held_out(setting)
    results = {"base": [cached(out / "base_row.json", measured_as(setting), args.reuse,
                               lambda: evaluate_run(args.model, None, evaluator, seeds, setting.tokens, place),
                               EVALUATED)]}

    def report(regime, seed, row):
        print(f"{regime} seed {seed}: harmful refusal {row['harmful_refusal']:.2f} "
              f"(strings {row['harmful_refusal_strings']:.2f}), benign compliance {row['benign_compliance']:.2f}, "
              f"loops {row['loop_rate']:.2f}, mirror gap {row['mirror_gap']:+.2f} "
              f"[{time.perf_counter() - t0:.0f} s]", flush=True)

    # seed-major: a run cut short still has every regime at its first seeds
    tasks = [(regime, seed) for seed in args.seeds for regime in args.regimes]
    rows = every_run(setting, out, tasks, args.jobs, report)
    # each row with its seed: regimes on the same seeds are compared seed by seed (paired)
    results.update({regime: [{**rows[regime, seed], "seed": seed} for seed in args.seeds] for regime in args.regimes})
    table = claims.regime_table(results)
    summary = {"model": args.model, "split": args.split, "steps": args.steps, "probe_steps": args.probe_steps,
               "seeds": args.seeds, "n_harmful": sum(s.harmful for s in seeds),
               "n_benign": sum(not s.harmful for s in seeds), "eval_judge": evaluator.name,
               "shared_loss": "reinforce_pp" if "reinforce_pp" in LOSSES else "reinforce",
               "recipe": dataclasses.replace(recipe, steps=args.steps).to_dict(), "overrides": args.set,
               "jobs": args.jobs, "runs": results, "table": table, "comparisons": claims.comparisons(table),
               "total_seconds": round(time.perf_counter() - t0, 1),
               "load_start": round(load_start, 2), "load_end": round(os.getloadavg()[0], 2)}
    write_json(out / "claims.json", summary)
    report_text = claims.markdown(summary)
    write_text_atomically(out / "claims.md", report_text)
    claims.plot(summary, out / "claims.png")
    print(strict_json(summary, indent=1) if args.json else report_text)
    return summary


if __name__ == "__main__":
    from redgame.cli import script_main

    raise SystemExit(script_main("llm_claims", main))
