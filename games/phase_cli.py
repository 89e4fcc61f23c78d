"""``redgame toy phase``: a phase diagram of the learning dynamics over a grid of knobs.

    redgame toy phase --regime shared --grid g=0.5,1,2 --grid init_scale=0.25,1,4 --seeds 20 --out DIR

Each ``--grid KEY=v1,v2,...`` is a config field (g, lr, init_scale, steps, shift, ...) or a game
parameter (k, lam, benign, ...); ``--param K=V`` fixes one for every cell. ``--out`` writes
phase.json and one heatmap per metric (``phase_<metric>.png``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from redgame.errors import check_not_replacing
from redgame.jsonio import strict_json, write_text_atomically


def register(toy_subparsers: argparse._SubParsersAction) -> None:
    from redgame.games.dynamics import MODELS, REGIMES

    phase = toy_subparsers.add_parser(
        "phase", help="phase diagram: mirror gap, ASRs and collapse rate over a grid of knobs, with 95%% CIs")
    phase.add_argument("--regime", required=True, choices=REGIMES, help="training regime")
    phase.add_argument("--model", default="tabular", choices=MODELS, help="tabular (default) or neural")
    phase.add_argument("--grid", action="append", metavar="KEY=V1,V2,...", help="a grid axis (one or two)")
    phase.add_argument("--seeds", type=int, default=20, help="runs per cell, >= 2 (default 20)")
    phase.add_argument("--game", default=None, help="preset game (default: the regime's reference game)")
    phase.add_argument("--param", action="append", metavar="K=V", help="a fixed dynamics or game parameter")
    phase.add_argument("--out", default=None, help="write phase.json and phase_<metric>.png heatmaps here")
    phase.add_argument("--overwrite", action="store_true", help="replace the phase diagram already in --out")
    phase.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    phase.set_defaults(func=run_phase_command)


def heatmap_names() -> dict[str, str]:
    """{metric: the file of its heatmap} that :func:`write_phase` writes beside phase.json."""
    from redgame.games.phase import METRICS

    return {metric: f"phase_{metric}.png" for metric in METRICS}


def phase_files(out_dir: Path) -> list[str]:
    """The files :func:`write_phase` writes into ``out_dir``: phase.json, then one heatmap per metric."""
    return [str(out_dir / "phase.json"), *(str(out_dir / name) for name in heatmap_names().values())]


def write_phase(diagram, out_dir: Path) -> list[Path]:
    """phase.json and one heatmap per metric (:func:`phase_files`)."""
    from redgame.games.plots import plot_phase

    out_dir.mkdir(parents=True, exist_ok=True)
    for metric, name in heatmap_names().items():
        plot_phase(diagram, metric, out_dir / name)
    diagram.files = phase_files(out_dir)
    write_text_atomically(out_dir / "phase.json", strict_json(diagram.to_json()) + "\n")
    return [Path(p) for p in diagram.files]


def run_phase_command(args: argparse.Namespace) -> int:
    from redgame.games.phase import parse_grid, phase_diagram
    from redgame.theory.presets import parse_params

    grid = parse_grid(args.grid)
    if args.out:
        check_not_replacing(args.out, [Path(f).name for f in phase_files(Path(args.out))], args.overwrite,
                            "a phase diagram")
    diagram = phase_diagram(args.regime, grid, args.seeds, args.model, args.game, parse_params(args.param),
                            progress=sys.stderr.isatty())
    diagram.files = phase_files(Path(args.out)) if args.out else []
    # printed before the files are written: a write that fails (a full disk) does not take the numbers with it
    print_phase(diagram, args.json)
    for path in write_phase(diagram, Path(args.out)) if args.out else []:
        if not args.json:
            print(f"wrote {path}")
    return 0


def print_phase(diagram, as_json: bool) -> None:
    """The diagram as one JSON object, or as a table with a row per cell."""
    if as_json:
        print(strict_json(diagram.to_json(), indent=None), flush=True)
        return
    print(f"phase diagram: {diagram.regime}, {diagram.model}, game {diagram.game}, {diagram.seeds} seeds per cell,"
          f" {diagram.seconds:.1f} s; means over seeds with 95% bootstrap CIs")
    header = "  ".join(f"{k:>10}" for k in diagram.keys)
    header += (f"  {'self-play ASR':>22}  {'best-response ASR':>22}  {'mirror gap':>22}  {'collapse':>8}"
               f"  {'step_d start->end':>17}")
    print(header)
    print("-" * len(header))
    for cell in diagram.cells:
        keys = "  ".join(f"{cell[k]:>10}" for k in diagram.keys)
        stats = "  ".join(f"{cell[m]:6.3f} [{cell[m + '_ci'][0]:6.3f}, {cell[m + '_ci'][1]:6.3f}]"
                          for m in ("selfplay_asr", "best_response_asr", "mirror_gap"))
        steps = "-" if cell["tangent"] is None else \
            f"{cell['tangent']['start']['step_d']:.3g} -> {cell['tangent']['end']['step_d']:.3g}"
        print(f"{keys}  {stats}  {cell['collapse_rate']:8.2f}  {steps:>17}", flush=True)
