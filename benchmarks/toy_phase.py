"""Phase-diagram timings: 5 x 5 grids x 20 seeds x 4000 steps, printed as one table.

    python benchmarks/toy_phase.py            # the grids below (a few minutes with the baseline)
    python benchmarks/toy_phase.py --smoke    # 2 x 2 grids, 2 seeds, 50 steps (seconds; for CI)

Goal (issue #10): a 5 x 5 grid x 20 seeds in <= 60 s on 2 cores. Each grid runs through
``games.phase.phase_diagram``; the baseline is the plain loop, one ``run_dynamics`` per cell
(vectorised over seeds only, without the bootstrap intervals), which the first grid also runs
to give the ratio.

- g x init_scale (tabular shared): knobs that batch, so the 25 cells advance as one batch;
- k x g (tabular shared): k changes the game's shape, so one batch per k;
- g x init_scale (neural shared): the same grid with the network.
"""

from __future__ import annotations

import argparse
import itertools
import time

from redgame.games.dynamics import DynamicsConfig, run_dynamics
from redgame.games.phase import phase_diagram
from redgame.theory.presets import make_spec

GOAL_S = 60.0
FULL = {
    "seeds": 20, "steps": 4000,
    "grids": [
        ("tabular", {"g": [0.25, 0.5, 1.0, 2.0, 4.0], "init_scale": [0.25, 0.5, 1.0, 2.0, 4.0]}),
        ("tabular", {"k": [2, 4, 8, 16, 32], "g": [0.25, 0.5, 1.0, 2.0, 4.0]}),
        ("neural", {"g": [0.25, 0.5, 1.0, 2.0, 4.0], "init_scale": [0.25, 0.5, 1.0, 2.0, 4.0]}),
    ],
}
SMOKE = {"seeds": 2, "steps": 50, "grids": [("tabular", {"g": [0.5, 1.0], "init_scale": [0.5, 1.0]}),
                                             ("tabular", {"k": [2, 4], "g": [0.5, 1.0]}),
                                             ("neural", {"g": [0.5, 1.0], "init_scale": [0.5, 1.0]})]}


def loop_baseline(grid: dict, seeds: int, steps: int) -> float:
    """One run_dynamics per cell of a g x init_scale grid (the reference game), timed."""
    spec = make_spec("mirror")
    start = time.perf_counter()
    for g, scale in itertools.product(*grid.values()):
        run_dynamics(spec, DynamicsConfig(runs=seeds, steps=steps, log_every=steps, g=g, init_scale=scale))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny grids, for CI")
    setting = SMOKE if parser.parse_args().smoke else FULL
    seeds, steps = setting["seeds"], setting["steps"]
    phase_diagram("shared", {"g": [1.0]}, seeds=2, params={"steps": "1"})  # imports (scipy.stats) off the clock
    print(f"{'model':<8} {'grid':<34} {'cells':>5} {'seeds':>5} {'steps':>5} {'seconds':>8} {'goal s':>6}"
          f" {'ratio':>6}  largest mirror gap")
    for i, (model, grid) in enumerate(setting["grids"]):
        diagram = phase_diagram("shared", grid, seeds=seeds, model=model, params={"steps": str(steps)})
        label = " x ".join(f"{k}={','.join(f'{v:g}' for v in vs)}" for k, vs in grid.items())
        best = max(diagram.cells, key=lambda c: c["mirror_gap"])
        where = ", ".join(f"{k}={best[k]:g}" for k in diagram.keys)
        print(f"{model:<8} {label:<34} {len(diagram.cells):>5} {seeds:>5} {steps:>5} {diagram.seconds:8.2f}"
              f" {GOAL_S:6.0f} {GOAL_S / diagram.seconds:5.1f}x  {best['mirror_gap']:.3f} at {where}")
        if i == 0:
            baseline = loop_baseline(grid, seeds, steps)
            print(f"{'baseline':<8} {'the same grid, one run per cell':<34} {len(diagram.cells):>5} {seeds:>5}"
                  f" {steps:>5} {baseline:8.2f}      -      -  ({baseline / diagram.seconds:.1f}x slower than batched)")


if __name__ == "__main__":
    main()
