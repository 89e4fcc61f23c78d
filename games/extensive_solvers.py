"""OpenSpiel's extensive-form solvers on the red-team games, read back as behaviour strategies.

- ``sequence-form-lp``: the sequence-form LP (Koller, Megiddo & von Stengel, 1994), exact for
  two-player zero-sum games;
- ``cfr``, ``cfr+``, ``dcfr``: counterfactual regret minimisation (Zinkevich et al., 2007),
  CFR+ (Tammelin, 2014) and discounted CFR (Brown & Sandholm, 2019). They run on OpenSpiel's
  cached tree until OpenSpiel's exploitability of the average policy is <= ``target``.

The OpenSpiel policies are turned into sigma [S, K] and rho [O, A] and checked again with the
numpy NashConv of ``games.exploitability``. OpenSpiel's sequence-form LP needs cvxpy (the
``lp`` extra), so it is imported only when asked for; without it the import fails naming
cvxpy, and the CLI says to ``pip install 'redgame[lp]'``.
"""

from __future__ import annotations

import time

import numpy as np
import pyspiel
from open_spiel.python.algorithms import cfr, discounted_cfr, exploitability

from redgame.errors import UserError
from redgame.games.openspiel_game import RedTeamGame
from redgame.theory.spec import GameSpec

CFR_SOLVERS = {"cfr": cfr.CFRSolver, "cfr+": cfr.CFRPlusSolver, "dcfr": discounted_cfr.DCFRSolver}


def behaviour_from_policy(spec: GameSpec, policy, defender_policy=None) -> tuple[np.ndarray, np.ndarray]:
    """Read sigma [S, K] and rho [O, A] off OpenSpiel tabular policies (keys from the observer).

    ``defender_policy`` defaults to ``policy``. Unreached information states get the uniform
    distribution.
    """
    def row(key: str, size: int, source) -> np.ndarray:
        if key in source.state_lookup:
            probs = np.asarray(source.policy_for_key(key), dtype=float)[:size]
            return probs / probs.sum()
        return np.full(size, 1.0 / size)

    if spec.seed_choice == "attacker":
        sigma = row("attacker", spec.n_seeds * spec.n_styles, policy).reshape(spec.n_seeds, spec.n_styles)
    else:
        sigma = np.stack([row(f"seed={s.name}", spec.n_styles, policy) for s in spec.seeds])
    defender_policy = policy if defender_policy is None else defender_policy
    rho = np.stack([row(f"obs={o}", spec.n_actions, defender_policy) for o in spec.observations])
    return sigma, rho


def solve_extensive(spec: GameSpec, method: str, target: float = 1e-4, iterations: int = 20_000,
                    check_every: int = 10):
    """Solve a spec with an OpenSpiel extensive-form method; returns a ``Solution``."""
    from redgame.games.solve import behaviour_solution

    game = RedTeamGame(spec=spec)
    start = time.perf_counter()
    done_iterations = None
    if method == "sequence-form-lp":
        if not spec.sums_to_zero:
            raise UserError("method: sequence-form-lp needs a zero-sum game; try cfr+")
        from open_spiel.python.algorithms import sequence_form_lp  # needs cvxpy (the lp extra)

        _, _, attacker_policy, defender_policy = sequence_form_lp.solve_zero_sum_game(game)
    elif method in CFR_SOLVERS:
        if not 0 < target < float("inf") or iterations < 1:
            raise UserError(f"target: must be a finite number > 0 (got {target}), and iterations >= 1 (got "
                            f"{iterations})")
        tree = pyspiel.convert_to_cached_tree(game)
        solver = CFR_SOLVERS[method](tree)
        done_iterations = 0
        while done_iterations < iterations:
            step = min(check_every, iterations - done_iterations)  # the cap is exact
            for _ in range(step):
                solver.evaluate_and_update_policy()
            done_iterations += step
            attacker_policy = defender_policy = solver.average_policy()
            reached = exploitability.nash_conv(tree, attacker_policy) / 2
            if reached <= target:
                break
    else:
        raise UserError(f"method: {method!r} is not an extensive-form method")
    sigma, rho = behaviour_from_policy(spec, attacker_policy, defender_policy)
    solution = behaviour_solution(spec, method, sigma, rho, time.perf_counter() - start, done_iterations)
    if method in CFR_SOLVERS and reached > target:
        solution.note = (f"{method} stopped at its cap of {iterations} iterations with exploitability {reached:.2e}, "
                         f"above the target {target:.0e}: not converged")
    return solution
