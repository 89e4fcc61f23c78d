"""All learning regimes at the reference setting, timed, printed as one table.

    python benchmarks/toy_dynamics.py            # 20 seeds x 4000 steps
    python benchmarks/toy_dynamics.py --smoke    # 2 seeds x 50 steps (seconds; for CI)

Goal (issue #3): the five regimes x 20 seeds x 4000 steps, with every metric recorded at
every step, in < 30 s. The reference setting is ``DynamicsConfig()``'s defaults (K=8 styles of
one harmful seed, T=4000, eta=0.5, exact gradients, 20 seeds, frozen draws from seed 0) on each
regime's reference game; shared g=-1 and the neural shared model are extra rows. Each row
gives the means over seeds and the 95% bootstrap interval of the mirror gap.
"""

from __future__ import annotations

import argparse
import time

from redgame.games.dynamics import REFERENCE_GAMES, REGIMES, DynamicsConfig, run_dynamics
from redgame.games.stats import mean_ci
from redgame.theory.presets import make_spec

GOAL_S = 30.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="2 seeds x 50 steps, for CI")
    size = {"runs": 2, "steps": 50} if parser.parse_args().smoke else {}
    mean_ci([0.0, 1.0])  # imports (scipy.stats) off the clock
    rows = []
    start = time.perf_counter()
    settings = [(r, {}) for r in REGIMES] + [("shared", {"g": -1.0}), ("shared", {"model": "neural"})]
    for regime, extra in settings:
        name, params = REFERENCE_GAMES[regime]
        traj = run_dynamics(make_spec(name, **params), DynamicsConfig(regime=regime, log_every=1, **size, **extra))
        label = regime + "".join(f" {k}={v}" for k, v in extra.items())
        low, high = mean_ci(traj.metrics["mirror_gap"][-1])
        rows.append((label, traj.spec.name, traj.seconds, traj.final(), low, high))
    total = time.perf_counter() - start
    runs, steps = traj.config.runs, traj.config.steps
    print(f"{'regime':<20} {'game':<32} {'s':>5} {'self-play':>9} {'BR ASR':>7} {'gap':>6} {'gap 95% CI':>15}"
          f" {'NashConv':>8}  defender classes")
    for label, game, seconds, f, low, high in rows:
        classes = ",".join(f"{k}:{v}" for k, v in f["defender_class"].items())
        print(f"{label:<20} {game:<32} {seconds:5.2f} {f['selfplay_asr']:9.4f} {f['best_response_asr']:7.4f}"
              f" {f['mirror_gap']:6.3f} [{low:6.3f},{high:6.3f}] {f['nash_conv']:8.4f}  {classes}")
    five = sum(row[2] for row in rows[: len(REGIMES)])
    print(f"\nfive regimes x {runs} seeds x {steps} steps, metrics every step: {five:.2f} s (goal < {GOAL_S:.0f} s,"
          f" {GOAL_S / five:.1f}x margin); with the extra rows: {total:.2f} s")


if __name__ == "__main__":
    main()
