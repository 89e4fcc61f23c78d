"""Cross-play of the toy regimes: every trained attacker against every trained defender.

Each regime is trained on the same spec with the same runs (frozen draws paired by run
index). Entry (i, j) is the attacker payoff of regime i's attacker against regime j's
defender, averaged over runs. One extra row, ``best_response``, is an exact best-responding
attacker (a fresh attacker trained to convergence against each defender it meets), so the
meta-Nash exposes defenders that only look safe in self-play (La Malfa et al., arXiv
2605.08427, cross-play).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from redgame.games.dynamics import REGIMES, DynamicsConfig, Trajectory, run_dynamics
from redgame.games.metagame import MetaNash, solve_metagame
from redgame.theory.spec import GameSpec
from redgame.theory.strategies import attacker_best_response, expected_payoffs

BEST_RESPONSE = "best_response"


def train_regimes(spec: GameSpec, base: DynamicsConfig, regimes=REGIMES,
                  progress: bool = False) -> dict[str, Trajectory]:
    """One Trajectory per regime, all with ``base``'s runs, seed, steps and step size."""
    return {r: run_dynamics(spec, replace(base, regime=r), progress=progress) for r in regimes}


def crossplay_matrices(spec: GameSpec,
                       trained: dict[str, Trajectory]) -> tuple[list[str], list[str], np.ndarray, np.ndarray]:
    """(attackers, defenders, A, B): run-averaged attacker / defender payoffs, rows = attackers
    (every regime, then ``best_response``), columns = defenders."""
    names = list(trained)
    rows, cols = len(names) + 1, len(names)
    a, b = np.zeros((rows, cols)), np.zeros((rows, cols))
    for j, dname in enumerate(names):
        rho = trained[dname].rho
        for i, aname in enumerate(names):
            u_a, u_d = expected_payoffs(spec, trained[aname].sigma, rho)
            a[i, j], b[i, j] = u_a.mean(), u_d.mean()
        # The fresh attacker: an exact best response to each run's defender.
        best = [attacker_best_response(spec, r)[0] for r in rho]
        u_a, u_d = expected_payoffs(spec, np.stack(best), rho)
        a[-1, j], b[-1, j] = u_a.mean(), u_d.mean()
    return names + [BEST_RESPONSE], names, a, b


def toy_crossplay(spec: GameSpec, base: DynamicsConfig, regimes=REGIMES, progress: bool = False) -> MetaNash:
    """Train every regime, build the cross-play matrix and solve its meta-Nash."""
    trained = train_regimes(spec, base, regimes, progress)
    attackers, defenders, a, b = crossplay_matrices(spec, trained)
    zero_sum = np.allclose(a + b, 0.0, atol=1e-12)
    return solve_metagame(a, None if zero_sum else b, attackers, defenders)

