"""The sequence-form LP of a zero-sum red-team game, solved with scipy's HiGHS (no cvxpy).

Koller, Megiddo & von Stengel (1994, "Fast algorithms for finding randomized strategies in
game trees") solve a two-player zero-sum extensive game as one LP over realization plans.
In the red-team game each player moves once: the attacker at one information set per seed
(or one in all when it picks the seed), the defender at one per observation. A realization
plan is then a behaviour strategy, x[s, k] >= 0 summing to 1 over each attacker information
set and y[o, a] >= 0 summing to 1 over each observation, and the payoff is bilinear,
U(x, y) = sum T_A[s, k, o, a] x[s, k] y[o, a] with T_A from ``theory.strategies.payoff_tensors``.
The inner best response splits over the opponent's information sets, which gives the LPs

    attacker:  max_x  sum_o t_o         s.t.  t_o <= sum_{s,k} x[s,k] T_A[s,k,o,a]   for all o, a
    defender:  min_y  sum_I u_I         s.t.  u_I >= sum_{o,a} y[o,a] T_A[s,k,o,a]   for all (s,k) in I

with S*K + O variables: they scale with the game tree, not with the normal form, whose
pure strategies grow as K^S and A^O. Their optima agree (LP duality); the solution reports
the attacker's LP value and both strategies, re-checked by their NashConv.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import linprog
from scipy.sparse import csr_matrix, hstack, kron, identity

from redgame.errors import UserError
from redgame.theory.spec import GameSpec
from redgame.theory.strategies import payoff_tensors


def _simplex_rows(groups: np.ndarray, n_groups: int) -> csr_matrix:
    """[n_groups, n] rows of ones: each group's variables sum to 1."""
    return csr_matrix((np.ones(len(groups)), (groups, np.arange(len(groups)))), shape=(n_groups, len(groups)))


def attacker_groups(spec: GameSpec) -> tuple[np.ndarray, int]:
    """The attacker information set of each flat (seed, style) cell, and how many there are."""
    if spec.seed_choice == "attacker":
        return np.zeros(spec.n_seeds * spec.n_styles, dtype=int), 1
    return np.repeat(np.arange(spec.n_seeds), spec.n_styles), spec.n_seeds


def _solve(c: np.ndarray, a_ub, b_ub: np.ndarray, a_eq, n_eq: int, n_prob: int) -> tuple[float, np.ndarray]:
    bounds = [(0, None)] * n_prob + [(None, None)] * (len(c) - n_prob)
    res = linprog(c, A_ub=a_ub, b_ub=b_ub, A_eq=a_eq, b_eq=np.ones(n_eq), bounds=bounds, method="highs")
    if res.status != 0:
        raise UserError(f"the sequence-form LP failed in scipy's HiGHS ({res.message}); the payoffs may be badly "
                        "scaled")
    return float(res.fun), res.x[:n_prob]


def attacker_lp(spec: GameSpec) -> tuple[float, np.ndarray]:
    """(value, sigma [S, K]): the attacker's maximin strategy."""
    t_a = payoff_tensors(spec)[0]
    n_cells, n_obs, n_act = spec.n_seeds * spec.n_styles, spec.n_observations, spec.n_actions
    coef = t_a.reshape(n_cells, n_obs * n_act).T  # [(o, a), cell]
    # t_o - coef x <= 0 for every (o, a); variables [x (cells), t (observations)].
    picks_t = kron(identity(n_obs), np.ones((n_act, 1)), format="csr")  # [(o, a), o]
    a_ub = hstack([csr_matrix(-coef), picks_t], format="csr")
    groups, n_groups = attacker_groups(spec)
    a_eq = hstack([_simplex_rows(groups, n_groups), csr_matrix((n_groups, n_obs))], format="csr")
    c = np.concatenate([np.zeros(n_cells), -np.ones(n_obs)])
    value, x = _solve(c, a_ub, np.zeros(n_obs * n_act), a_eq, n_groups, n_cells)
    return -value, _normalise(x, groups, n_groups).reshape(spec.n_seeds, spec.n_styles)


def defender_lp(spec: GameSpec) -> tuple[float, np.ndarray]:
    """(value, rho [O, A]): the defender's minimax strategy."""
    t_a = payoff_tensors(spec)[0]
    n_cells, n_obs, n_act = spec.n_seeds * spec.n_styles, spec.n_observations, spec.n_actions
    coef = t_a.reshape(n_cells, n_obs * n_act)  # [cell, (o, a)]
    groups, n_groups = attacker_groups(spec)
    # coef y - u_I <= 0 for every cell; variables [y (o, a), u (attacker information sets)].
    a_ub = hstack([csr_matrix(coef), -_simplex_rows(groups, n_groups).T], format="csr")
    obs_groups = np.repeat(np.arange(n_obs), n_act)
    a_eq = hstack([_simplex_rows(obs_groups, n_obs), csr_matrix((n_obs, n_groups))], format="csr")
    c = np.concatenate([np.zeros(n_obs * n_act), np.ones(n_groups)])
    value, y = _solve(c, a_ub, np.zeros(n_cells), a_eq, n_obs, n_obs * n_act)
    return value, _normalise(y, obs_groups, n_obs).reshape(n_obs, n_act)


def _normalise(x: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """Clip solver noise below 0 and rescale each group to sum to 1."""
    x = np.clip(x, 0.0, None)
    return x / np.bincount(groups, weights=x, minlength=n_groups)[groups]


def solve_sequence_form(spec: GameSpec) -> tuple[float, np.ndarray, np.ndarray]:
    """(value, sigma [S, K], rho [O, A]) of a zero-sum spec: an equilibrium in behaviour strategies."""
    if not spec.sums_to_zero:
        raise UserError("method: sequence-form-linprog needs a zero-sum game; try cfr+ or lemke-howson")
    value, sigma = attacker_lp(spec)
    _, rho = defender_lp(spec)
    return value, sigma, rho
