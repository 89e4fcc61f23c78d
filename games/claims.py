"""The equilibrium claims of La Malfa et al. (arXiv 2605.08427) as executable functions.

- ``prompt_map`` with lam = 0: value 0, and both ``always_refuse`` and ``oracle`` defenders are
  equilibrium strategies: the equilibrium set holds trivial and ideal defenders alike;
- ``prompt_map`` with lam > 0: ``always_refuse`` is no longer an equilibrium strategy;
- ``hidden_intent`` (q = 0): value min(lam, 1)/2; no defender is an oracle once intent is hidden.

Each function reads the full optimal sets from ``solve(spec, method="enumerate")``, so no
equilibrium is missed on these degenerate games.
"""

from __future__ import annotations

from redgame.errors import UserError
from redgame.games.solve import solve
from redgame.theory.classify import classify_defender
from redgame.theory.spec import GameSpec
from redgame.theory.strategies import defender_behaviour


def game_value(spec: GameSpec) -> float:
    """The attacker's equilibrium payoff of a zero-sum spec."""
    if not spec.is_zero_sum:
        raise UserError("payoff: the value is defined for zero-sum games only")
    return float(solve(spec, method="auto").value) + 0.0  # an LP where the optimal sets are too large to list


def equilibrium_classes(spec: GameSpec) -> set[str]:
    """The classes of the defender's optimal strategies (vertices of its optimal set).

    always_refuse, always_comply and oracle defenders are pure strategies, hence vertices, so
    a class is in this set exactly when some optimal defender strategy has it.
    """
    if not spec.is_zero_sum:
        raise UserError("payoff: equilibrium_classes needs a zero-sum spec")
    solution = solve(spec, method="enumerate")
    return {classify_defender(spec, defender_behaviour(spec, y)) for y in solution.defender_optimal}


def hidden_intent_value(lam: float, q: float = 0.0) -> float:
    """Closed form of the hidden-intent game's value: (1 - q) * min(lam, 1) / 2.

    The defender refuses the "disguised" observation with probability p; a disguised harmful
    seed then earns (1 - q)(1 - p), a disguised benign one (1 - q) lam p, each with prior 1/2,
    so the attacker earns their sum, (1 - q)/2 · [(1 - p) + lam p], which the defender minimises
    over p: p = 1 when lam < 1, p = 0 when lam > 1.
    """
    return (1.0 - q) * min(lam, 1.0) / 2.0
