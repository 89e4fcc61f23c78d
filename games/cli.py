"""``redgame toy ...``: solve and list the toy red-team games (dynamics and phase diagrams
register their own subcommands from ``dynamics_cli`` and ``phase_cli``).

    redgame toy list
    redgame toy solve --game hidden_intent --param lam=0.25 [--method enumerate] [--json]
"""

from __future__ import annotations

import argparse
import importlib.util
from typing import Any

import numpy as np

from redgame.errors import UserError
from redgame.jsonio import strict_json

MAX_ROWS = 12


def register(subparsers: argparse._SubParsersAction) -> None:
    toy = subparsers.add_parser("toy", help="exact toy red-team games (OpenSpiel, nashpy, LPs)")
    toy_sub = toy.add_subparsers(dest="toy_command", metavar="TOY_COMMAND")
    toy.set_defaults(func=lambda args: toy.error("the following arguments are required: TOY_COMMAND"))  # as llm

    listing = toy_sub.add_parser("list", help="show the preset games and their parameters")
    listing.set_defaults(func=run_list)

    from redgame.games.solve import METHODS

    solve = toy_sub.add_parser("solve", help="solve a preset game: equilibria, value, defender classes")
    solve.add_argument("--game", required=True, help="preset name (see `redgame toy list`)")
    solve.add_argument("--param", action="append", metavar="K=V", help="preset parameter, repeatable")
    solve.add_argument("--method", default="auto", choices=("auto", *METHODS), help="solver (default: auto)")
    solve.add_argument("--target", type=float, default=None, help="exploitability target for cfr/cfr+/dcfr "
                       "(default 1e-4)")
    solve.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    solve.set_defaults(func=run_solve)

    if importlib.util.find_spec("redgame.games.dynamics_cli") is not None:
        from redgame.games import dynamics_cli, phase_cli

        dynamics_cli.register(toy_sub)
        phase_cli.register(toy_sub)


def run_list(args: argparse.Namespace) -> int:
    from redgame.theory.presets import PRESETS, preset_params

    for name, preset in PRESETS.items():
        params = ", ".join(f"{k}={'lam' if v is None else v}" for k, v in preset_params(name).items())
        print(f"{name}\n  {preset.doc}\n  params: {params}")
    return 0


def _fmt_mix(mix: np.ndarray, labels: tuple[str, ...]) -> str:
    parts = [f"{p:.3g}*[{labels[i]}]" for i, p in enumerate(mix) if p > 1e-9]
    return " + ".join(parts)


def _fmt_behaviour(probs: np.ndarray, rows: tuple[str, ...], cols: tuple[str, ...]) -> str:
    out = []
    for row, p in zip(rows, probs):
        best = int(np.argmax(p))
        out.append(f"{row}:{cols[best]}" if p[best] > 1 - 1e-9 else
                   f"{row}:(" + ",".join(f"{c}={q:.2f}" for c, q in zip(cols, p)) + ")")
    return " ".join(out)


def solution_summary(solution) -> dict[str, Any]:
    """A JSON-ready summary of a Solution of a spec."""
    spec = solution.spec
    value = None if solution.value is None else float(solution.value) + 0.0  # no "-0.0"
    return {
        "game": spec.name if spec else None,
        "method": solution.method,
        "zero_sum": solution.zero_sum,
        "value": value,
        "defender_classes": solution.defender_classes,
        "attacker_classes": solution.attacker_classes,
        "n_equilibria": len(solution.equilibria),
        "max_gap": float(solution.max_gap),
        "seconds": solution.seconds,
        "iterations": solution.iterations,
        "note": solution.note,
        "equilibria": [
            {
                "attacker_payoff": e.attacker_payoff + 0.0,
                "defender_payoff": e.defender_payoff + 0.0,
                "gap": e.gap,
                "attacker_class": e.attacker_class,
                "defender_class": e.defender_class,
                "attacker_behaviour": None if e.attacker_behaviour is None else np.round(e.attacker_behaviour, 9).tolist(),
                "defender_behaviour": None if e.defender_behaviour is None else np.round(e.defender_behaviour, 9).tolist(),
            }
            for e in solution.equilibria
        ],
    }


def _print_vertices(spec, solution, role: str) -> None:
    from redgame.theory.classify import classify_attacker, classify_defender
    from redgame.theory.strategies import attacker_behaviour, defender_behaviour

    print(f"\n{role} optimal strategies (vertices of the optimal set):")
    vertices = solution.defender_optimal if role == "defender" else solution.attacker_optimal
    shown: set[str] = set()
    for mix in vertices:
        if role == "defender":
            rho = defender_behaviour(spec, mix)
            label, text = classify_defender(spec, rho), _fmt_behaviour(rho, spec.observations, spec.actions)
        else:
            sigma = attacker_behaviour(spec, mix)
            rows = tuple(s.name for s in spec.seeds)
            label = classify_attacker(spec, sigma)
            text = _fmt_behaviour(sigma, rows, spec.styles) if spec.seed_choice == "chance" else \
                " ".join(f"{r}={p:.2f}" for r, p in zip(rows, sigma.sum(axis=1)))
        if text in shown:  # realisation-equivalent mixtures behave the same: show one
            continue
        shown.add(text)
        if len(shown) > MAX_ROWS:
            print("  ... more (use --json for all)")
            break
        print(f"  {len(shown) - 1:>2}  {label:<16} {text}")


def run_solve(args: argparse.Namespace) -> int:
    from redgame.games.solve import EXTENSIVE_METHODS, solve
    from redgame.theory.presets import make_spec, parse_params

    spec = make_spec(args.game, **parse_params(args.param))
    if args.target is not None and args.method not in EXTENSIVE_METHODS[1:]:
        raise UserError(f"--target: applies to {', '.join(EXTENSIVE_METHODS[1:])}, not to --method {args.method}")
    options = {"target": args.target} if args.target is not None else {}
    solution = solve(spec, method=args.method, **options)
    summary = solution_summary(solution)
    if args.json:
        print(strict_json(summary, indent=None))  # NaN (no equilibrium found) is null
        return 0
    print(f"game: {spec.name}   method: {solution.method}   {'zero-sum' if solution.zero_sum else 'general-sum'}")
    if solution.note:
        print(solution.note)
    if summary["value"] is not None:
        print(f"value (attacker payoff): {summary['value']:.6g}")
    print(f"equilibria: {len(solution.equilibria)}   max best-response gap: {solution.max_gap:.2e}"
          f"   time: {solution.seconds:.3f} s")
    print(f"defender classes: {', '.join(solution.defender_classes)}")
    print(f"attacker classes: {', '.join(solution.attacker_classes)}")
    if solution.attacker_optimal:
        # The equilibria are all pairs of vertices of the two optimal sets: list each set once.
        print(f"\nthe equilibria are X* x Y*: {len(solution.attacker_optimal)} attacker vertices"
              f" x {len(solution.defender_optimal)} defender vertices")
        _print_vertices(spec, solution, "defender")
        _print_vertices(spec, solution, "attacker")
        return 0
    print()
    header = f"{'#':>3}  {'u_A':>8}  {'u_D':>8}  {'gap':>8}  {'defender':<14} {'attacker':<16} defender policy"
    print(header)
    print("-" * len(header))
    for i, e in enumerate(solution.equilibria[:MAX_ROWS]):
        policy = _fmt_behaviour(e.defender_behaviour, spec.observations, spec.actions)
        print(f"{i:>3}  {e.attacker_payoff + 0.0:8.4f}  {e.defender_payoff + 0.0:8.4f}  {e.gap:8.1e}  "
              f"{e.defender_class:<14} {e.attacker_class:<16} {policy}")
    if len(solution.equilibria) > MAX_ROWS:
        print(f"... {len(solution.equilibria) - MAX_ROWS} more (use --json for all)")
    return 0
