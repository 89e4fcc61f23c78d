"""Strategies of the red-team game: pure strategies, the normal form, behaviour strategies.

Behaviour strategies are the parameterisation the dynamics use:

- attacker ``sigma[s, k]``: P(style k | seed s) for chance seeds (rows sum to 1), or the joint
  P(seed s, style k) when the attacker picks the seed (all entries sum to 1);
- defender ``rho[o, a]``: P(action a | observation o), rows sum to 1.

Expected payoff (Kuhn's theorem makes mixed and behaviour strategies equivalent here):
u = sum_s w_s sum_k sigma[s, k] sum_o P(o | s, k) sum_a rho[o, a] u[s, k, a],
with w_s the prior for chance seeds and 1 when the attacker picks the seed.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from redgame.errors import UserError
from redgame.theory.spec import GameSpec

MAX_PURE_STRATEGIES = 200_000
MAX_NORMAL_FORM_ENTRIES = 5_000_000  # two float64 matrices of 40 MB each


@dataclass(frozen=True)
class NormalForm:
    """The game as a bimatrix: rows are attacker pure strategies, columns defender ones.

    attacker_pure[i] is a [S] array of styles (chance seeds) or a (seed, style) pair;
    defender_pure[j] is a [O] array of actions.
    """

    attacker_payoffs: np.ndarray
    defender_payoffs: np.ndarray
    attacker_pure: np.ndarray
    defender_pure: np.ndarray
    attacker_labels: tuple[str, ...]
    defender_labels: tuple[str, ...]


class TooLargeToEnumerate(UserError):
    """A game whose normal form or optimal sets are too large to list; an LP on the game tree
    (``games.sequence_form``) still solves it."""


class EnumerationFailed(UserError):
    """Optimal sets that cannot be listed at the enumeration's precision (a payoff gap below its
    tolerance, as at a tiny lambda); an LP still gives the value and one equilibrium."""


def _count_check(count: int, who: str) -> None:
    if count > MAX_PURE_STRATEGIES:
        raise TooLargeToEnumerate(
            f"{who}: {count} pure strategies is too many for the normal form (limit {MAX_PURE_STRATEGIES});"
            " use a method on the game tree (sequence-form-linprog, cfr+)"
        )


def count(n: int) -> str:
    """A strategy count for a message: exact up to a million, then its order of magnitude."""
    return str(n) if n < 10**6 else f"~1e{len(str(n)) - 1}"


def normal_form_size(spec: GameSpec) -> tuple[int, int]:
    """(attacker, defender) pure strategy counts, without building them."""
    attacker = spec.n_seeds * spec.n_styles if spec.seed_choice == "attacker" else spec.n_styles**spec.n_seeds
    return attacker, spec.n_actions**spec.n_observations


def attacker_pure_strategies(spec: GameSpec) -> np.ndarray:
    """Chance seeds: [n, S] style per seed. Attacker-picked seeds: [n, 2] (seed, style)."""
    # Unfaithful styles stay available: the unfaithful penalty makes them dominated.
    if spec.seed_choice == "attacker":
        return np.array([(s, k) for s in range(spec.n_seeds) for k in range(spec.n_styles)], dtype=int)
    _count_check(spec.n_styles**spec.n_seeds, "attacker")
    return np.array(list(itertools.product(range(spec.n_styles), repeat=spec.n_seeds)), dtype=int)


def defender_pure_strategies(spec: GameSpec) -> np.ndarray:
    """[n, O]: an action per observation."""
    _count_check(spec.n_actions**spec.n_observations, "defender")
    return np.array(list(itertools.product(range(spec.n_actions), repeat=spec.n_observations)), dtype=int)


def attacker_behaviour_of_pure(spec: GameSpec, pure: np.ndarray) -> np.ndarray:
    """[n, S, K] behaviour strategy of each attacker pure strategy."""
    out = np.zeros((len(pure), spec.n_seeds, spec.n_styles))
    if spec.seed_choice == "attacker":
        out[np.arange(len(pure)), pure[:, 0], pure[:, 1]] = 1.0
    else:
        rows = np.arange(len(pure))[:, None]
        out[rows, np.arange(spec.n_seeds)[None, :], pure] = 1.0
    return out


def defender_behaviour_of_pure(spec: GameSpec, pure: np.ndarray) -> np.ndarray:
    """[n, O, A] behaviour strategy of each defender pure strategy."""
    return np.eye(spec.n_actions)[pure]


def expected_payoffs(spec: GameSpec, sigma: np.ndarray, rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(u_A, u_D) for behaviour strategies; leading batch dimensions broadcast.

    Args:
      sigma: [..., S, K] attacker behaviour strategy.
      rho: [..., O, A] defender behaviour strategy.
    """
    u_a, u_d = spec.utilities()
    # q[..., s, k, a] = sum_o P(o|s,k) rho[o, a]: the defender's action distribution per outcome.
    q = np.einsum("sko,...oa->...ska", spec.obs_probs, rho)
    w = spec.seed_weights
    reach = w[:, None] * sigma
    return (
        np.einsum("...sk,...ska,ska->...", reach, q, u_a),
        np.einsum("...sk,...ska,ska->...", reach, q, u_d),
    )


def check_normal_form_size(spec: GameSpec) -> None:
    """Raise TooLargeToEnumerate, naming the methods that need no normal form, where it would be too large."""
    rows, cols = normal_form_size(spec)
    if rows * cols > MAX_NORMAL_FORM_ENTRIES:
        tree = ("sequence-form-linprog, cfr+" if spec.sums_to_zero else
                "cfr+; in a general-sum game CFR need not reach an equilibrium, so read its NashConv")
        raise TooLargeToEnumerate(f"normal form: {count(rows)} x {count(cols)} pure strategies is too large (limit "
                                  f"{MAX_NORMAL_FORM_ENTRIES} entries); use a method on the game tree ({tree})")


def normal_form(spec: GameSpec) -> NormalForm:
    """The bimatrix of expected payoffs over all pure strategies."""
    check_normal_form_size(spec)
    att = attacker_pure_strategies(spec)
    dfn = defender_pure_strategies(spec)
    sig = attacker_behaviour_of_pure(spec, att)
    rho = defender_behaviour_of_pure(spec, dfn)
    u_a, u_d = spec.utilities()
    q = np.einsum("sko,joa->jska", spec.obs_probs, rho)  # [J, S, K, A]
    reach = spec.seed_weights[None, :, None] * sig  # [I, S, K]
    a_mat = np.einsum("isk,jska,ska->ij", reach, q, u_a)
    d_mat = np.einsum("isk,jska,ska->ij", reach, q, u_d)
    return NormalForm(
        attacker_payoffs=a_mat,
        defender_payoffs=d_mat,
        attacker_pure=att,
        defender_pure=dfn,
        attacker_labels=tuple(_attacker_label(spec, p) for p in att),
        defender_labels=tuple(_defender_label(spec, p) for p in dfn),
    )


def _attacker_label(spec: GameSpec, pure: np.ndarray) -> str:
    if spec.seed_choice == "attacker":
        s, k = pure
        return spec.seeds[s].name if spec.n_styles == 1 else f"{spec.seeds[s].name}:{spec.styles[k]}"
    return ",".join(f"{seed.name}:{spec.styles[k]}" for seed, k in zip(spec.seeds, pure))


def _defender_label(spec: GameSpec, pure: np.ndarray) -> str:
    return ",".join(f"{o}:{spec.actions[a]}" for o, a in zip(spec.observations, pure))


def attacker_behaviour(spec: GameSpec, mix: np.ndarray, pure: np.ndarray | None = None) -> np.ndarray:
    """[S, K] behaviour strategy of a mixture over attacker pure strategies."""
    pure = attacker_pure_strategies(spec) if pure is None else pure
    return np.einsum("i,isk->sk", mix, attacker_behaviour_of_pure(spec, pure))


def defender_behaviour(spec: GameSpec, mix: np.ndarray, pure: np.ndarray | None = None) -> np.ndarray:
    """[O, A] behaviour strategy of a mixture over defender pure strategies."""
    pure = defender_pure_strategies(spec) if pure is None else pure
    return np.einsum("j,joa->oa", mix, defender_behaviour_of_pure(spec, pure))


def payoff_tensors(spec: GameSpec) -> tuple[np.ndarray, np.ndarray]:
    """(T_A, T_D), each [S, K, O, A]: w_s P(o | s, k) u(s, k, a), the payoff of every (seed, style,
    observation, action) weighted by how likely it is given the seed and style. Both players'
    values are contractions of these with the other player's strategy; learning loops compute
    them once."""
    u_a, u_d = spec.utilities()
    reach = spec.seed_weights[:, None, None] * spec.obs_probs  # [S, K, O]
    return reach[..., None] * u_a[:, :, None, :], reach[..., None] * u_d[:, :, None, :]


def action_values(t_a: np.ndarray, rho: np.ndarray) -> np.ndarray:
    """[..., S, K]: the attacker's payoff of each (seed, style) against rho [..., O, A], from T_A."""
    return np.einsum("skoa,...oa->...sk", t_a, rho)


def observation_values(t_d: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """[..., O, A]: the defender's payoff of each action at each observation vs sigma [..., S, K], from T_D."""
    return np.einsum("...sk,skoa->...oa", sigma, t_d)


def attacker_action_values(spec: GameSpec, rho: np.ndarray) -> np.ndarray:
    """[..., S, K]: the attacker's payoff for each (seed, style) against defender rho, weighted by w_s."""
    return action_values(payoff_tensors(spec)[0], rho)


def attacker_best_response(spec: GameSpec, rho: np.ndarray) -> tuple[np.ndarray, float]:
    """An exact pure best response to defender rho [O, A]: (sigma [S, K], value)."""
    values = attacker_action_values(spec, rho)
    sigma = np.zeros_like(values)
    if spec.seed_choice == "attacker":
        s, k = np.unravel_index(np.argmax(values), values.shape)
        sigma[s, k] = 1.0
        return sigma, float(values[s, k])
    best = values.argmax(axis=1)
    sigma[np.arange(spec.n_seeds), best] = 1.0
    return sigma, float(values.max(axis=1).sum())


def defender_observation_values(spec: GameSpec, sigma: np.ndarray) -> np.ndarray:
    """[..., O, A]: the defender's payoff contribution of each action at each observation vs
    sigma [..., S, K]; leading batch dimensions broadcast."""
    return observation_values(payoff_tensors(spec)[1], sigma)


def defender_best_response(spec: GameSpec, sigma: np.ndarray) -> tuple[np.ndarray, float]:
    """An exact pure best response to attacker sigma [S, K]: (rho [O, A], defender value)."""
    values = defender_observation_values(spec, sigma)
    rho = np.eye(spec.n_actions)[values.argmax(axis=1)]
    return rho, float(values.max(axis=1).sum())
