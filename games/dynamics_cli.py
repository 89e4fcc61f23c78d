"""``redgame toy dynamics`` and ``redgame toy crossplay``.

    redgame toy dynamics --regime shared [--model neural] [--seeds 20] [--steps 4000] [--param g=0.5]
                         [--out DIR] [--json]
    redgame toy crossplay [--seeds 20] [--steps 4000] [--json]

``--param k=v`` sets a ``DynamicsConfig`` field (lr, g, init_scale, estimator, rank, hidden, ...)
or a parameter of the game (``--game`` preset; default: the regime's reference game: k, lam,
benign, ...). The summary holds means over seeds with 95% bootstrap intervals
(``games.stats``), the share of seeds that collapse, and each seed's numbers.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from redgame.errors import UserError, check_not_replacing
from redgame.jsonio import strict_json, write_text_atomically

SUMMARY_FIELDS = ("selfplay_asr", "best_response_asr", "mirror_gap", "nash_conv", "over_refusal", "harmful_refusal")


def register(toy_subparsers: argparse._SubParsersAction) -> None:
    from redgame.games.dynamics import MODELS, REGIMES

    dyn = toy_subparsers.add_parser("dynamics", help="learning dynamics of a regime: ASR, mirror gap, NashConv")
    dyn.add_argument("--regime", required=True, choices=REGIMES, help="training regime")
    dyn.add_argument("--model", default=None, choices=MODELS, help="tabular (default) or neural")
    dyn.add_argument("--game", default=None, help="preset game (default: the regime's reference game)")
    dyn.add_argument("--seeds", type=int, default=None, help="independent runs, >= 2 (default 20)")
    dyn.add_argument("--steps", type=int, default=None, help="learning steps T (default 4000)")
    dyn.add_argument("--param", action="append", metavar="K=V", help="dynamics or game parameter, repeatable")
    dyn.add_argument("--out", default=None, help="write metrics.jsonl, config.json and PNG plots here")
    dyn.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    dyn.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    dyn.set_defaults(func=run_dynamics_command)

    cross = toy_subparsers.add_parser("crossplay", help="cross-play of every regime's agents and the meta-Nash")
    cross.add_argument("--game", default=None, help="preset game (default: the mirror reference game)")
    cross.add_argument("--seeds", type=int, default=None, help="independent runs per regime, >= 2 (default 20)")
    cross.add_argument("--steps", type=int, default=None, help="learning steps T (default 4000)")
    cross.add_argument("--param", action="append", metavar="K=V", help="dynamics or game parameter, repeatable")
    cross.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    cross.set_defaults(func=run_crossplay_command)


def build_setting(regime: str, game: str | None, seeds: int | None, steps: int | None, items: list[str] | None,
                  model: str | None = None):
    """(spec, config) from the command line: --param keys go to DynamicsConfig when they name
    one of its fields, to the game otherwise."""
    from redgame.games.dynamics import make_setting
    from redgame.theory.presets import parse_params

    fixed: dict[str, Any] = {} if model is None else {"model": model}
    for flag, key, value, least in (("--seeds", "runs", seeds, 2), ("--steps", "steps", steps, 1)):
        if value is not None:
            if value < least:
                raise UserError(f"{flag}: must be >= {least}, got {value}"
                                + (" (confidence intervals over seeds need two)" if least == 2 else ""))
            fixed[key] = value
    params = parse_params(items)
    clash = sorted(set(fixed) & set(params))
    if clash:
        raise UserError(f"--param: {clash[0]} is set by its own option; use --seeds / --steps / --model")
    return make_setting(regime, game, params, **fixed)


def _fmt(x: Any) -> str:
    if isinstance(x, dict):
        return ",".join(f"{k}:{v}" for k, v in x.items())
    if x is None or (isinstance(x, float) and x != x):
        return "-"
    return f"{x + 0.0:.4f}".replace("-0.0000", "0.0000") if isinstance(x, float) else str(x)


def _number(x) -> float | None:
    return float(x) + 0.0 if x is not None and math.isfinite(x) else None


def summary(traj) -> dict[str, Any]:
    """The run as one JSON-ready dict: means over seeds at the final step with 95% bootstrap
    intervals (``*_ci``), the collapse rate with its Wilson interval, the class counts,
    ``per_seed``, each seed's numbers, and ``tangent``, the mean coupling and effective step
    sizes (``games.tangent``) at the start and the end."""
    from redgame.games.stats import collapsed, seed_summary

    final = traj.final()
    selfplay, best = traj.metrics["selfplay_asr"][-1], traj.metrics["best_response_asr"][-1]
    stats = seed_summary(selfplay, best)
    c = traj.config
    out: dict[str, Any] = {"regime": c.regime, "model": c.model, "game": traj.spec.name, "seeds": c.runs,
                           "steps": c.steps}
    out.update({k: (_number(v) if isinstance(v, float) else v) for k, v in final.items()})
    out["exploitability"] = out["nash_conv"] / 2.0 if out["nash_conv"] is not None else None
    out.update({name: [float(x) for x in stats[name]] for name in stats if name.endswith("_ci")})
    out["collapse_rate"] = float(stats["collapse_rate"])
    hits = collapsed(selfplay, best)
    out["per_seed"] = [
        {"seed": i, **{name: _number(traj.metrics[name][-1, i]) for name in SUMMARY_FIELDS},
         "collapsed": bool(hits[i]), **{name: labels[-1][i] for name, labels in traj.classes.items()}}
        for i in range(c.runs)
    ]
    out["tangent"] = None if traj.tangent is None else {
        when: {name: float(v.mean()) for name, v in report.items()} for when, report in traj.tangent.items()}
    out["seconds"] = traj.seconds
    return out


def write_outputs(traj, out_dir: Path) -> list[Path]:
    """metrics.jsonl (one line per logged step and run), config.json and the plots."""
    from dataclasses import asdict

    from redgame.games.plots import plot_trajectory

    out_dir.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out_dir / "metrics.jsonl", "".join(json.dumps(row) + "\n" for row in traj.records()))
    payoff = {"kind": type(traj.spec.payoff).__name__, **asdict(traj.spec.payoff)}  # λ and the weights
    write_text_atomically(out_dir / "config.json", json.dumps({"game": traj.spec.name, "payoff": payoff,
                                                               **asdict(traj.config)}, indent=2) + "\n")
    return [out_dir / "metrics.jsonl", out_dir / "config.json", *plot_trajectory(traj, out_dir)]


def run_dynamics_command(args: argparse.Namespace) -> int:
    from redgame.games.dynamics import run_dynamics

    spec, config = build_setting(args.regime, args.game, args.seeds, args.steps, args.param, args.model)
    if args.out:
        from redgame.games.plots import TRAJECTORY_PLOTS

        outputs = ("metrics.jsonl", "config.json", *TRAJECTORY_PLOTS)  # what write_outputs writes
        check_not_replacing(args.out, outputs, args.overwrite, "a toy dynamics run")
    traj = run_dynamics(spec, config, progress=sys.stderr.isatty())
    result = summary(traj)
    result["files"] = [str(Path(args.out) / name) for name in outputs] if args.out else []
    # printed before the files are written: a write that fails (a full disk) does not take the numbers with it
    print_dynamics(result, traj, config, spec.name, args.json)
    for path in write_outputs(traj, Path(args.out)) if args.out else []:
        if not args.json:
            print(f"wrote {path}")
    return 0


def print_dynamics(result: dict[str, Any], traj, config, game: str, as_json: bool) -> None:
    """The summary as one JSON object, or as the per-seed table with the means and their intervals."""
    if as_json:
        print(strict_json(result, indent=None), flush=True)
        return
    print(f"regime: {config.regime}   model: {config.model}   game: {game}   seeds: {config.runs}"
          f"   steps: {config.steps}   eta: {config.lr:g}   g: {config.g:g}   estimator: {config.estimator}"
          f"   time: {traj.seconds:.2f} s")
    header = f"{'seed':>4}  " + "  ".join(f"{n:>17}" for n in SUMMARY_FIELDS) + "  defender_class"
    print(header)
    print("-" * len(header))
    for row in result["per_seed"]:
        cells = "  ".join(f"{_fmt(row[n]):>17}" for n in SUMMARY_FIELDS)
        print(f"{row['seed']:>4}  {cells}  {row['defender_class']}")
    cells = "  ".join(f"{_fmt(result[n]):>17}" for n in SUMMARY_FIELDS)
    print(f"{'mean':>4}  {cells}  {_fmt(result['defender_class'])}")
    ci = "  ".join(f"{name} [{result[name + '_ci'][0]:.4f}, {result[name + '_ci'][1]:.4f}]"
                   for name in ("selfplay_asr", "best_response_asr", "mirror_gap"))
    low, high = result["collapse_rate_ci"]
    print(f"95% bootstrap CI over seeds: {ci}")
    print(f"collapse (self-play ASR <= 0.05 and best-response ASR >= 0.5): {result['collapse_rate']:.2f}"
          f" of seeds, 95% Wilson CI [{low:.2f}, {high:.2f}]", flush=True)


def run_crossplay_command(args: argparse.Namespace) -> int:
    from redgame.games.crossplay import toy_crossplay

    spec, config = build_setting("shared", args.game, args.seeds, args.steps, args.param)
    if not any(item.startswith("log_every=") for item in args.param or []):
        config = replace(config, log_every=config.steps)  # only the final agents matter here
    meta = toy_crossplay(spec, config, progress=sys.stderr.isatty())
    if args.json:
        sys.stdout.write(strict_json({"game": spec.name, "runs": config.runs, "steps": config.steps,
                                      **meta.to_json()}, indent=None))
        print()
        return 0
    print(f"cross-play on {spec.name}: attacker payoff (rows = attackers, columns = defenders),"
          f" mean over {config.runs} runs of {config.steps} steps")
    width = max(len(n) for n in meta.attackers) + 2
    print(" " * width + "".join(f"{d:>12}" for d in meta.defenders) + f"{'mix':>8}")
    for i, name in enumerate(meta.attackers):
        row = "".join(f"{v:12.4f}" for v in meta.payoff_matrix[i])
        print(f"{name:<{width}}{row}{meta.attacker_mix[i]:8.3f}")
    print(f"{'mix':<{width}}" + "".join(f"{p:12.3f}" for p in meta.defender_mix))
    print(f"meta-Nash value (attacker payoff): {meta.value:.4f}   NashConv: {meta.nash_conv:.2e}"
          f"   ({meta.method})")
    return 0
