"""``redgame toy dynamics`` and ``redgame toy crossplay``.

    redgame toy dynamics --regime shared [--seeds 5] [--steps 4000] [--param g=-1] [--out DIR] [--json]
    redgame toy crossplay [--seeds 5] [--steps 4000] [--json]

``--param k=v`` sets a ``DynamicsConfig`` field (lr, g, estimator, batch, rank, ...) or a
parameter of the game (``--game`` preset; default: the regime's reference game).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

from redgame.errors import UserError

SUMMARY_FIELDS = ("selfplay_asr", "best_response_asr", "mirror_gap", "nash_conv", "over_refusal", "harmful_refusal")


def register(toy_subparsers: argparse._SubParsersAction) -> None:
    from redgame.games.dynamics import REGIMES

    dyn = toy_subparsers.add_parser("dynamics", help="learning dynamics of a regime: ASR, mirror gap, NashConv")
    dyn.add_argument("--regime", required=True, choices=REGIMES, help="training regime")
    dyn.add_argument("--game", default=None, help="preset game (default: the regime's reference game)")
    dyn.add_argument("--seeds", type=int, default=None, help="independent runs (default 5)")
    dyn.add_argument("--steps", type=int, default=None, help="learning steps T (default 4000)")
    dyn.add_argument("--param", action="append", metavar="K=V", help="dynamics or game parameter, repeatable")
    dyn.add_argument("--out", default=None, help="write metrics.jsonl, config.json and PNG plots here")
    dyn.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    dyn.set_defaults(func=run_dynamics_command)

    cross = toy_subparsers.add_parser("crossplay", help="cross-play of every regime's agents and the meta-Nash")
    cross.add_argument("--game", default=None, help="preset game (default: the mirror reference game)")
    cross.add_argument("--seeds", type=int, default=None, help="independent runs per regime (default 5)")
    cross.add_argument("--steps", type=int, default=None, help="learning steps T (default 4000)")
    cross.add_argument("--param", action="append", metavar="K=V", help="dynamics or game parameter, repeatable")
    cross.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    cross.set_defaults(func=run_crossplay_command)


def build_setting(regime: str, game: str | None, seeds: int | None, steps: int | None, items: list[str] | None):
    """(spec, config) from the command line: --param keys go to DynamicsConfig when they name
    one of its fields, to the game otherwise."""
    from redgame.games.dynamics import REFERENCE_GAMES, DynamicsConfig
    from redgame.theory.presets import PRESETS, make_spec, parse_params, preset_params

    params = parse_params(items)
    config_keys = {f.name for f in fields(DynamicsConfig)} - {"regime"}
    config_params = {k: v for k, v in params.items() if k in config_keys}
    game_params = {k: v for k, v in params.items() if k not in config_keys}
    fixed: dict[str, Any] = {"regime": regime}
    for flag, key, value in (("--seeds", "runs", seeds), ("--steps", "steps", steps)):
        if value is not None:
            if value < 1:
                raise UserError(f"{flag}: must be >= 1, got {value}")
            fixed[key] = value
    clash = sorted(set(fixed) & set(config_params))
    if clash:
        raise UserError(f"--param: {clash[0]} is set by its own option; use --seeds / --steps")
    config = DynamicsConfig.from_params(config_params, **fixed)
    if game is None:
        game, defaults = REFERENCE_GAMES[regime]
        game_params = {**defaults, **game_params}
    if game in PRESETS:
        unknown = sorted(set(game_params) - set(preset_params(game)))
        if unknown:
            raise UserError(f"{unknown[0]}: unknown parameter; dynamics parameters: {', '.join(sorted(config_keys))};"
                             f" {game} parameters: {', '.join(preset_params(game))}")
    return make_spec(game, **game_params), config


def _fmt(x: Any) -> str:
    if isinstance(x, dict):
        return ",".join(f"{k}:{v}" for k, v in x.items())
    if x is None or (isinstance(x, float) and x != x):
        return "-"
    return f"{x + 0.0:.4f}".replace("-0.0000", "0.0000") if isinstance(x, float) else str(x)


def _summary(traj) -> dict[str, Any]:
    import numpy as np

    final = traj.final()
    per_run = {name: [float(v) if np.isfinite(v) else None for v in traj.metrics[name][-1]]
               for name in SUMMARY_FIELDS}
    per_run.update({name: labels[-1] for name, labels in traj.classes.items()})
    out = {"regime": traj.config.regime, "game": traj.spec.name, "runs": traj.config.runs, "steps": traj.config.steps}
    out.update({k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in final.items()})
    out["exploitability"] = out["nash_conv"] / 2.0
    out.update({"per_run": per_run, "seconds": traj.seconds})
    return out


def write_outputs(traj, out_dir: Path) -> list[Path]:
    """metrics.jsonl (one line per logged step and run), config.json and the plots."""
    from dataclasses import asdict

    from redgame.games.plots import plot_trajectory

    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / "metrics.jsonl", "w") as fh:
        for row in traj.records():
            fh.write(json.dumps(row) + "\n")
    (out_dir / "config.json").write_text(json.dumps({"game": traj.spec.name, **asdict(traj.config)}, indent=2) + "\n")
    return [out_dir / "metrics.jsonl", out_dir / "config.json", *plot_trajectory(traj, out_dir)]


def run_dynamics_command(args: argparse.Namespace) -> int:
    from redgame.games.dynamics import run_dynamics

    spec, config = build_setting(args.regime, args.game, args.seeds, args.steps, args.param)
    traj = run_dynamics(spec, config, progress=sys.stderr.isatty())
    summary = _summary(traj)
    written = write_outputs(traj, Path(args.out)) if args.out else []
    summary["files"] = [str(p) for p in written]
    if args.json:
        json.dump(summary, sys.stdout)
        print()
        return 0
    print(f"regime: {config.regime}   game: {spec.name}   runs: {config.runs}   steps: {config.steps}"
          f"   eta: {config.lr:g}   estimator: {config.estimator}   time: {traj.seconds:.2f} s")
    header = f"{'run':>4}  " + "  ".join(f"{n:>17}" for n in SUMMARY_FIELDS) + "  defender_class"
    print(header)
    print("-" * len(header))
    for r in range(config.runs):
        cells = "  ".join(f"{_fmt(summary['per_run'][n][r]):>17}" for n in SUMMARY_FIELDS)
        print(f"{r:>4}  {cells}  {summary['per_run']['defender_class'][r]}")
    cells = "  ".join(f"{_fmt(summary[n]):>17}" for n in SUMMARY_FIELDS)
    print(f"{'mean':>4}  {cells}  {_fmt(summary['defender_class'])}")
    for path in written:
        print(f"wrote {path}")
    return 0


def run_crossplay_command(args: argparse.Namespace) -> int:
    from redgame.games.crossplay import toy_crossplay

    spec, config = build_setting("shared", args.game, args.seeds, args.steps, args.param)
    if not any(item.startswith("log_every=") for item in args.param or []):
        config = replace(config, log_every=config.steps)  # only the final agents matter here
    meta = toy_crossplay(spec, config, progress=sys.stderr.isatty())
    if args.json:
        json.dump({"game": spec.name, "runs": config.runs, "steps": config.steps, **meta.to_json()}, sys.stdout)
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
