"""The meta-game over trained agents: a cross-play payoff matrix, solved for its meta-Nash.

As in PSRO (Lanctot et al. 2017, "A Unified Game-Theoretic Approach to Multiagent RL"), the
agents (trained attackers, trained defenders, checkpoints) are the pure strategies of a
matrix game whose entries are cross-play payoffs. Its Nash equilibrium says which mixture of
agents is robust, and each side's exploitability says how much the other side gains by
deviating. Solved through the front door ``games.solve.solve_matrix``: an LP for zero-sum
matrices; for general-sum ones ``solve``'s "auto" (Lemke-Howson, then nashpy's enumerations where
its paths end at none). The LLM game reuses ``solve_metagame``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from redgame.errors import UserError
from redgame.games.solve import payoff_array, solve, solve_matrix


@dataclass
class MetaNash:
    """A meta-Nash of an attackers x defenders matrix.

    value: the attacker's payoff x^T A y. defender_value: x^T B y.
    attacker_exploitability: what a best-responding defender gains against the attacker mix x,
      max_j (x^T B)_j - x^T B y. defender_exploitability: what a best-responding attacker gains
      against the defender mix y, max_i (A y)_i - x^T A y. nash_conv is their sum (~0 at a Nash).
    """

    attackers: tuple[str, ...]
    defenders: tuple[str, ...]
    payoff_matrix: np.ndarray
    defender_matrix: np.ndarray
    attacker_mix: np.ndarray
    defender_mix: np.ndarray
    value: float
    defender_value: float
    attacker_exploitability: float
    defender_exploitability: float
    method: str

    @property
    def nash_conv(self) -> float:
        return self.attacker_exploitability + self.defender_exploitability

    def to_json(self) -> dict:
        return {
            "attackers": list(self.attackers),
            "defenders": list(self.defenders),
            "payoff_matrix": self.payoff_matrix.tolist(),
            "defender_payoff_matrix": self.defender_matrix.tolist(),
            "attacker_mix": self.attacker_mix.tolist(),
            "defender_mix": self.defender_mix.tolist(),
            "value": self.value,
            "defender_value": self.defender_value,
            "attacker_exploitability": self.attacker_exploitability,
            "defender_exploitability": self.defender_exploitability,
            "nash_conv": self.nash_conv,
            "method": self.method,
        }


def solve_metagame(payoffs, defender_payoffs=None, attackers=None, defenders=None,
                   method: str | None = None) -> MetaNash:
    """Solve a cross-play matrix for its meta-Nash.

    Args:
      payoffs: [m, n] attacker payoffs, rows = attackers, columns = defenders.
      defender_payoffs: [m, n] defender payoffs for a general-sum meta-game; None means -payoffs.
      attackers, defenders: names of the rows and columns (default a0.., d0..).
      method: a ``solve_matrix`` method; default "linprog" (zero-sum), or ``solve``'s "auto" for a
        general-sum meta-game (Lemke-Howson, then nashpy's support and vertex enumerations).

    Returns:
      The MetaNash with the smallest best-response gap among those the solver found.

    Raises:
      ValueError: naming the bad matrix or label list.
    """
    a = payoff_array(payoffs, "payoffs")
    attackers = tuple(attackers) if attackers is not None else tuple(f"a{i}" for i in range(a.shape[0]))
    defenders = tuple(defenders) if defenders is not None else tuple(f"d{j}" for j in range(a.shape[1]))
    if len(attackers) != a.shape[0]:
        raise UserError(f"attackers: {len(attackers)} names for {a.shape[0]} rows")
    if len(defenders) != a.shape[1]:
        raise UserError(f"defenders: {len(defenders)} names for {a.shape[1]} columns")
    b = -a if defender_payoffs is None else payoff_array(defender_payoffs, "defender_payoffs")
    if b.shape != a.shape:  # before the zero-sum test, which would broadcast
        raise UserError(f"defender_payoffs: expected the payoffs' shape {a.shape} (attackers x defenders), "
                        f"got {b.shape}")
    zero_sum = bool(np.allclose(a + b, 0.0, atol=1e-12))
    if method is None and not zero_sum:  # Lemke-Howson, then nashpy's enumerations where it finds none
        solution = solve((a, b), method="auto")
    else:
        solution = solve_matrix(a, None if zero_sum else b, method=method or "linprog")
    method = solution.method
    if not solution.equilibria:
        raise UserError(f"method: {method} found no equilibrium of the meta-game")
    eq = min(solution.equilibria, key=lambda e: e.gap)
    x, y = eq.attacker, eq.defender
    value, defender_value = float(x @ a @ y), float(x @ b @ y)
    return MetaNash(
        attackers=attackers,
        defenders=defenders,
        payoff_matrix=a,
        defender_matrix=b,
        attacker_mix=x,
        defender_mix=y,
        value=value,
        defender_value=defender_value,
        attacker_exploitability=max(float((x @ b).max() - defender_value), 0.0),
        defender_exploitability=max(float((a @ y).max() - value), 0.0),
        method=method,
    )
