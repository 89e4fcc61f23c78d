"""All learning regimes at the reference setting, timed, printed as one table.

    python benchmarks/toy_dynamics.py

Goal (issue #3): the five regimes x 5 runs x 4000 steps, with every metric recorded at every
step, in < 30 s. The reference setting is ``DynamicsConfig()``'s defaults (K=8 styles of one
harmful seed, T=4000, eta=0.5, exact gradients, 5 runs, frozen draws from seed 0) on each
regime's reference game; shared g=-1 is one extra row. The claim column is the issue's
target for that row.
"""

from __future__ import annotations

import time

from redgame.games.dynamics import REFERENCE_GAMES, REGIMES, DynamicsConfig, run_dynamics
from redgame.theory.presets import make_spec

GOAL_S = 30.0
CLAIMS = {
    "shared g=+1": "self-play <= 0.05, BR >= 0.5",
    "bipolicy": "both <= 0.05",
    "shared g=-1": "high self-play (collusion)",
    "advgame": "defender class oracle",
}


def main() -> None:
    rows = []
    start = time.perf_counter()
    settings = [(r, {}) for r in REGIMES] + [("shared", {"g": -1.0})]
    for regime, extra in settings:
        name, params = REFERENCE_GAMES[regime]
        traj = run_dynamics(make_spec(name, **params), DynamicsConfig(regime=regime, **extra))
        label = f"{regime} g={traj.config.g:+g}" if regime == "shared" else regime
        rows.append((label, traj.spec.name, traj.seconds, traj.final()))
    total = time.perf_counter() - start
    print(f"{'regime':<13} {'game':<34} {'s':>5} {'self-play':>9} {'BR ASR':>7} {'gap':>6} {'NashConv':>8}"
          f"  {'defender classes':<18} claim")
    for label, game, seconds, f in rows:
        classes = ",".join(f"{k}:{v}" for k, v in f["defender_class"].items())
        print(f"{label:<13} {game:<34} {seconds:5.2f} {f['selfplay_asr']:9.4f} {f['best_response_asr']:7.4f}"
              f" {max(f['mirror_gap'], 0.0):6.3f} {f['nash_conv']:8.4f}  {classes:<18} {CLAIMS.get(label, '')}")
    five = sum(s for label, _, s, _ in rows[: len(REGIMES)])
    print(f"\nfive regimes x 5 runs x 4000 steps, metrics every step: {five:.2f} s (goal < {GOAL_S:.0f} s,"
          f" {GOAL_S / five:.1f}x margin); with the extra row: {total:.2f} s")


if __name__ == "__main__":
    main()
