"""One solver front door: ``solve(game, method=...)`` returns equilibria with their payoffs.

Matrix methods work on the normal form (bimatrix) of a spec, or on a matrix you pass:

- ``enumerate``: zero-sum only; the LP value plus every vertex of both optimal sets
  (``games.optimal_sets``); the equilibria are all vertex pairs;
- ``linprog``: zero-sum LP with scipy's HiGHS;
- ``openspiel-lp``: OpenSpiel's ``lp_solver.solve_zero_sum_matrix_game`` (cvxpy + ECOS);
- ``nashpy-support``, ``nashpy-vertex``, ``lemke-howson`` (every initial label): nashpy;
- ``replicator``: nashpy's asymmetric replicator dynamics, the final point;
- ``pure``: every pure equilibrium, each cell checked as a best response of both players.

nashpy's pairs (and OpenSpiel's LP's) are kept only where their NashConv is within
:data:`GAP_TOLERANCE` of the payoffs' scale: on the floating-point normal forms of degenerate games
its Lemke-Howson paths can end off equilibrium (``games.lemke_howson`` caps and checks each path), and
OpenSpiel's LP solver has an absolute tolerance that tiny payoffs fall below.

Extensive-form methods work on the game tree of a spec:

- ``sequence-form-linprog``: the sequence-form LP (Koller, Megiddo & von Stengel 1994) with
  scipy's HiGHS (``games.sequence_form``; zero-sum; one equilibrium, no cvxpy needed);
- ``sequence-form-lp``: OpenSpiel's ``sequence_form_lp`` on the registered OpenSpiel game
  (``games.openspiel_game``; zero-sum; needs cvxpy, the ``lp`` extra);
- ``cfr``, ``cfr+``, ``dcfr``: OpenSpiel's CFR solvers (Zinkevich et al. 2007; Tammelin 2014;
  Brown & Sandholm 2019), run until exploitability <= ``target`` or ``iterations``.

``auto`` enumerates every equilibrium of a zero-sum spec when its optimal sets are small
enough, and otherwise (the default ``family`` preset) solves the sequence-form LP, which
gives the value and one equilibrium. For a general-sum game it runs Lemke-Howson, then where
no path ends at an equilibrium nashpy's enumerations (small games) and then ``pure``, and
says so in the solution's note. Every equilibrium is checked with a numpy best-response
gap (NashConv), which is reported.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from redgame.errors import UserError
from redgame.games.exploitability import matrix_nash_conv, nash_conv
from redgame.games.lemke_howson import lemke_howson_pairs
from redgame.games.optimal_sets import optimal_sets, zero_sum_value
from redgame.theory.classify import classify_attacker, classify_defender
from redgame.theory.spec import GameSpec
from redgame.theory.strategies import (
    EnumerationFailed,
    TooLargeToEnumerate,
    attacker_behaviour,
    check_normal_form_size,
    defender_behaviour,
    expected_payoffs,
    normal_form,
    normal_form_size,
)

MATRIX_METHODS = (
    "enumerate", "linprog", "openspiel-lp", "nashpy-support", "nashpy-vertex", "lemke-howson", "replicator", "pure",
)
EXTENSIVE_METHODS = ("sequence-form-lp", "cfr", "cfr+", "dcfr")
TREE_METHODS = ("sequence-form-linprog",)
METHODS = MATRIX_METHODS + TREE_METHODS + EXTENSIVE_METHODS
ZERO_SUM_ONLY = ("enumerate", "linprog", "openspiel-lp", "sequence-form-lp", "sequence-form-linprog")
GAP_TOLERANCE = 1e-6  # NashConv, relative to the payoffs' scale, below which nashpy's pairs count as equilibria
NO_EQUILIBRIUM = {  # why a method can end with none, where it is not the game's degeneracy
    "pure": "pure: this game has no pure equilibrium",
    "nashpy-support": "nashpy-support: found no equilibrium (its float == tests can miss them, in a "
                      "non-degenerate game too; try lemke-howson or nashpy-vertex)",
}
AUTO_ENUMERATE_MAX = 1024  # normal-form entries up to which "auto" tries to list every equilibrium
# nashpy's enumerations grow exponentially; past these sizes they run for minutes to hours (2 cores):
# support enumeration tries (2^m − 1)(2^n − 1) support pairs (about 4,000 a second); vertex enumeration
# took 0.7 s on a 4×16 game, 10 s on a random 4×32 one, and over 20 s on 8×16.
NASHPY_SUPPORT_MAX_PAIRS = 100_000
NASHPY_VERTEX_MAX_ENTRIES = 100


@dataclass
class Equilibrium:
    """One equilibrium (or the final point of a learning method).

    attacker / defender: mixtures over pure strategies (matrix methods; None otherwise).
    attacker_behaviour [S, K] / defender_behaviour [O, A]: when the game came from a spec.
    gap: NashConv, the numpy best-response gap; ~0 for an exact equilibrium.
    """

    attacker_payoff: float
    defender_payoff: float
    gap: float
    attacker: np.ndarray | None = None
    defender: np.ndarray | None = None
    attacker_behaviour: np.ndarray | None = None
    defender_behaviour: np.ndarray | None = None
    attacker_class: str | None = None
    defender_class: str | None = None


@dataclass
class Solution:
    """What a solver found. ``value`` is the attacker's payoff (zero-sum games only)."""

    method: str
    equilibria: list[Equilibrium]
    value: float | None = None
    zero_sum: bool = True
    attacker_optimal: list[np.ndarray] = field(default_factory=list)
    defender_optimal: list[np.ndarray] = field(default_factory=list)
    seconds: float = 0.0
    iterations: int | None = None
    spec: GameSpec | None = None
    note: str | None = None
    """Why ``method="auto"`` chose this method, when it was not the first choice."""

    @property
    def defender_classes(self) -> list[str]:
        """Distinct defender classes among the equilibria, in a stable order."""
        return sorted({e.defender_class for e in self.equilibria if e.defender_class})

    @property
    def attacker_classes(self) -> list[str]:
        return sorted({e.attacker_class for e in self.equilibria if e.attacker_class})

    @property
    def max_gap(self) -> float:
        return max((e.gap for e in self.equilibria), default=float("nan"))


def _is_zero_sum(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a + b, 0.0, atol=1e-12))


def _dedupe(pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[np.ndarray, np.ndarray]]:
    seen: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
    for x, y in pairs:
        key = (tuple(np.round(x, 7)), tuple(np.round(y, 7)))
        seen.setdefault(key, (x, y))
    return list(seen.values())


def _check_nashpy_size(shape: tuple[int, int], method: str) -> None:
    """A game too large for nashpy's enumerations: one line, at once, instead of hours of silence."""
    m, n = shape
    instead = "use lemke-howson, or enumerate / linprog for a zero-sum game"
    if method == "nashpy-support" and (2 ** m - 1) * (2 ** n - 1) > NASHPY_SUPPORT_MAX_PAIRS:
        raise UserError(f"method: nashpy-support would try {(2 ** m - 1) * (2 ** n - 1):.3g} support pairs on this "
                        f"{m}×{n} game (limit {NASHPY_SUPPORT_MAX_PAIRS:,}); {instead}")
    if method == "nashpy-vertex" and m * n > NASHPY_VERTEX_MAX_ENTRIES:
        raise UserError(f"method: nashpy-vertex on a {m}×{n} game could run for hours (limit {NASHPY_VERTEX_MAX_ENTRIES} "
                        f"entries); {instead}")


def _lone_strategy_pairs(a: np.ndarray, b: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """A game where one player has a single strategy: its equilibria pair that strategy with each of
    the other player's pure best responses (nashpy's Lemke-Howson hangs or fails on such a game)."""
    m, n = a.shape
    if m == 1:
        return [(np.ones(1), np.eye(n)[j]) for j in np.flatnonzero(b[0] >= b[0].max() - 1e-12)]
    return [(np.eye(m)[i], np.ones(1)) for i in np.flatnonzero(a[:, 0] >= a[:, 0].max() - 1e-12)]


def _nashpy_pairs(a: np.ndarray, b: np.ndarray, method: str) -> list[tuple[np.ndarray, np.ndarray]]:
    if min(a.shape) == 1:
        return _lone_strategy_pairs(a, b)
    _check_nashpy_size(a.shape, method)
    pairs = lemke_howson_pairs(a, b)[0] if method == "lemke-howson" else _nashpy_run(a, b, method)
    pairs = [(np.clip(np.asarray(x, float), 0, None), np.clip(np.asarray(y, float), 0, None)) for x, y in pairs]
    # (the integrator's end point may leave the simplex by rounding: -1e-12)
    kept = [(x / x.sum(), y / y.sum()) for x, y in pairs
            if np.all(np.isfinite(x)) and np.all(np.isfinite(y)) and x.sum() > 0 and y.sum() > 0]
    if method == "replicator" and not kept:
        raise UserError("method: replicator: the dynamics' end point left the simplex (an integration error); try "
                        "lemke-howson or nashpy-support")
    return _dedupe(kept)


def _nashpy_run(a: np.ndarray, b: np.ndarray, method: str) -> list:
    """The pairs nashpy's support or vertex enumeration, or the replicator's end point, give; its failures
    (and scipy's odeint stopping early) as one-line errors."""
    import nashpy

    game = nashpy.Game(a, b)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # nashpy warns on degenerate games; the gap check decides
        try:
            if method == "nashpy-support":
                pairs = list(game.support_enumeration(tol=1e-12))
            elif method == "nashpy-vertex":
                pairs = list(game.vertex_enumeration())
            else:  # replicator
                xs, ys = game.asymmetric_replicator_dynamics(timepoints=np.linspace(0, 200, 2001))
                pairs = [(xs[-1], ys[-1])]
        except (TypeError, ValueError, IndexError, np.linalg.LinAlgError) as exc:
            raise UserError(f"method: {method} failed on this degenerate game ({type(exc).__name__}: {exc}); "
                            "try lemke-howson or nashpy-support") from None
    failed = [w for w in caught if "ODEintWarning" in type(w.message).__name__ or "Excess work" in str(w.message)]
    if failed:  # scipy's odeint stopped early: its last row is not the dynamics' end point
        reason = str(failed[0].message).strip().split(" (")[0].split(".")[0]
        raise UserError(f"method: replicator: scipy's odeint failed on this game ({reason}); try lemke-howson or "
                        "nashpy-support")
    return pairs


def _openspiel_lp_pair(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    import contextlib
    import io

    import pyspiel
    from cvxpy.error import SolverError
    from open_spiel.python.algorithms import lp_solver

    game = pyspiel.create_matrix_game(a.tolist(), (-a).tolist())
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # cvxpy prints a failed solve, then returns None
            x, y, _, _ = lp_solver.solve_zero_sum_matrix_game(game)
    except (SolverError, TypeError, ValueError) as exc:
        raise UserError(f"method: openspiel-lp: OpenSpiel's LP (cvxpy) failed on this game ({type(exc).__name__}); "
                        "use linprog") from None
    x, y = np.clip(np.asarray(x, float).reshape(-1), 0, None), np.clip(np.asarray(y, float).reshape(-1), 0, None)
    return x / x.sum(), y / y.sum()


def solve_matrix(a: Any, b: Any = None, method: str = "linprog") -> Solution:
    """Solve the bimatrix game (A, B); B defaults to -A (zero-sum). Rows are the attacker.

    Args:
      a: [m, n] payoffs of the row player (the attacker).
      b: [m, n] payoffs of the column player, or None for -A.
      method: one of MATRIX_METHODS.

    Returns:
      A Solution whose equilibria carry their mixtures and NashConv gaps.
    """
    if method not in MATRIX_METHODS:
        raise UserError(f"method: {method!r} is not a matrix method; choose one of {', '.join(MATRIX_METHODS)}")
    a = payoff_array(a, "payoff matrix")
    b = -a if b is None else payoff_array(b, "defender payoffs")
    if b.shape != a.shape:
        raise UserError(f"defender payoffs: expected the attacker payoffs' shape {a.shape}, got {b.shape}")
    zero_sum = _is_zero_sum(a, b)
    if method in ZERO_SUM_ONLY and not zero_sum:
        raise UserError(f"method: {method} needs a zero-sum game; try nashpy-vertex or lemke-howson")
    start = time.perf_counter()
    x_opt: list[np.ndarray] = []
    y_opt: list[np.ndarray] = []
    value = None
    if method == "enumerate":
        value, xs, ys = optimal_sets(a)
        x_opt, y_opt = list(xs), list(ys)
        pairs = [(x, y) for x in xs for y in ys]
    elif method == "linprog":
        value, x, y = zero_sum_value(a)
        pairs = [(x, y)]
    elif method == "openspiel-lp":
        pairs = [_openspiel_lp_pair(a)]
    elif method == "pure":
        pairs = _pure_pairs(a, b)
    else:
        pairs = _nashpy_pairs(a, b, method)
    equilibria = [
        Equilibrium(
            attacker_payoff=float(x @ a @ y),
            defender_payoff=float(x @ b @ y),
            gap=matrix_nash_conv(a, b, x, y),
            attacker=x,
            defender=y,
        )
        for x, y in pairs
    ]
    equilibria, note = _checked(equilibria, method, gap_tolerance(a, b))
    if zero_sum and value is None and equilibria and method != "replicator":
        value = equilibria[0].attacker_payoff
    solution = Solution(method, equilibria, value, zero_sum, x_opt, y_opt, time.perf_counter() - start)
    solution.note = note
    return solution


def payoff_array(values, what: str) -> np.ndarray:
    """``values`` as a non-empty matrix of finite floats; a one-line UserError naming ``what`` otherwise."""
    try:
        raw = np.asarray(values)
    except ValueError as exc:  # ragged rows
        raise UserError(f"{what}: expected a matrix of numbers ({str(exc).splitlines()[0]})") from None
    if raw.dtype.kind not in "iuf":  # text, bools, complex numbers, objects: no payoffs
        raise UserError(f"{what}: expected a matrix of numbers, got {raw.dtype} entries")
    a = raw.astype(float)
    if a.ndim != 2 or 0 in a.shape:
        raise UserError(f"{what}: expected a non-empty 2-D matrix, got shape {a.shape}")
    if not np.isfinite(a).all():
        i, j = np.argwhere(~np.isfinite(a))[0]
        raise UserError(f"{what}: entry [{i}, {j}] is {a[i, j]}; payoffs must be finite")
    return a


def gap_tolerance(a: np.ndarray, b: np.ndarray) -> float:
    """The NashConv below which a pair counts as an equilibrium: 1e-6 of the payoffs' scale. (Until 2026-12-06 at
    least 1e-6: in a game of payoffs near 1e-8 every cell passed as a pure equilibrium.)"""
    return GAP_TOLERANCE * max(float(np.abs(a).max()), float(np.abs(b).max()))


def _checked(equilibria: list[Equilibrium], method: str, tolerance: float) -> tuple[list[Equilibrium], str | None]:
    """The pairs of nashpy's methods that are equilibria by their gap, and a note on those left out; the
    replicator's end point is kept as it is, with a note when it is no equilibrium."""
    if method == "replicator":
        gap = equilibria[0].gap if equilibria else float("nan")
        return equilibria, (None if gap <= tolerance else
                            f"replicator: the dynamics' end point is no equilibrium (NashConv {gap:.3g})")
    if method not in ("nashpy-support", "nashpy-vertex", "lemke-howson", "pure", "openspiel-lp"):
        return equilibria, None
    kept = [e for e in equilibria if e.gap <= tolerance]
    dropped = len(equilibria) - len(kept)
    if dropped:
        why = ("OpenSpiel's LP solver has an absolute tolerance, which these payoffs fall below; use linprog"
               if method == "openspiel-lp" else "a degenerate game's rounding")
        return kept, (f"{method}: left out {dropped} pair(s) whose NashConv exceeds {tolerance:.1e}, which no "
                      f"equilibrium has ({why})")
    if kept:
        return kept, None
    return kept, NO_EQUILIBRIUM.get(method, f"{method}: found no equilibrium of this degenerate game")


def _label_with_spec(solution: Solution, spec: GameSpec) -> Solution:
    """Attach behaviour strategies and classes to matrix equilibria of a spec's normal form."""
    nf = normal_form(spec)
    for eq in solution.equilibria:
        if eq.attacker is not None:
            eq.attacker_behaviour = attacker_behaviour(spec, eq.attacker, nf.attacker_pure)
            eq.defender_behaviour = defender_behaviour(spec, eq.defender, nf.defender_pure)
        eq.attacker_class = classify_attacker(spec, eq.attacker_behaviour)
        eq.defender_class = classify_defender(spec, eq.defender_behaviour)
    solution.spec = spec
    return solution


def _resolve_spec(game: Any) -> GameSpec | None:
    if isinstance(game, GameSpec):
        return game
    if isinstance(game, str):
        from redgame.theory.presets import make_spec

        return make_spec(game)
    return None


def solve(game: Any, method: str = "auto", **options: Any) -> Solution:
    """Solve a red-team game.

    Args:
      game: a GameSpec, a preset name, a payoff matrix A (zero-sum) or a pair (A, B).
      method: one of METHODS, or "auto": for zero-sum specs "enumerate" (every equilibrium),
        or "sequence-form-linprog" when the normal form has more than AUTO_ENUMERATE_MAX
        entries or the optimal sets are too large, or too fine, to enumerate; for zero-sum
        matrices "enumerate", or "linprog" where they cannot be enumerated (with a note);
        for general-sum specs and matrices "lemke-howson", and
        where none of its paths ends at an equilibrium "nashpy-support", "nashpy-vertex" (small
        games) and then "pure", with a note saying why.
      **options: for cfr / cfr+ / dcfr: ``target`` exploitability (default 1e-4) and
        ``iterations`` cap (default 20000).

    Returns:
      A Solution. For specs, each equilibrium carries behaviour strategies and classes.
    """
    spec = _resolve_spec(game)
    if method != "auto" and method not in METHODS:
        raise UserError(f"method: unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if spec is None:
        if isinstance(game, tuple) and len(game) == 2:
            a, b = game
        else:
            a, b = game, None
        if method in EXTENSIVE_METHODS + TREE_METHODS:
            raise UserError(f"method: {method} needs a game spec, not a matrix")
        if method == "auto":
            a_arr = payoff_array(a, "payoff matrix")
            b_arr = None if b is None else payoff_array(b, "defender payoffs")
            if b_arr is None or a_arr.shape != b_arr.shape or _is_zero_sum(a_arr, b_arr):
                try:
                    return solve_matrix(a, b, "enumerate")  # which refuses mismatched shapes in one line
                except (TooLargeToEnumerate, EnumerationFailed) as exc:  # as for a spec, below
                    return _lp_instead(lambda m: solve_matrix(a, b, m), "linprog", "LP", exc)
            return _general_sum_auto(lambda m: solve_matrix(a, b, m))
        return solve_matrix(a, b, method)
    if method == "auto" and spec.sums_to_zero:
        rows, cols = normal_form_size(spec)
        try:
            if rows * cols > AUTO_ENUMERATE_MAX:
                raise TooLargeToEnumerate("normal form too large")
            return _solve_spec(spec, "enumerate", options)
        except (TooLargeToEnumerate, EnumerationFailed) as exc:
            return _lp_instead(lambda m: _solve_spec(spec, m, options), "sequence-form-linprog", "sequence-form LP", exc)
    if method == "auto":
        check_normal_form_size(spec)  # one reason, not one per general-sum method
        return _general_sum_auto(lambda m: _solve_spec(spec, m, options))
    return _solve_spec(spec, method, options)


def _general_sum_auto(solve_with) -> Solution:
    """Lemke-Howson from every label; where none of its paths ends at an equilibrium (a degenerate game),
    nashpy's support enumeration, then its vertex enumeration, each where the game is small enough, then
    the pure equilibria (checked exactly)."""
    reasons = []
    for method in ("lemke-howson", "nashpy-support", "nashpy-vertex", "pure"):
        try:
            solution = solve_with(method)
        except UserError as exc:
            reasons.append(str(exc).removeprefix("method: "))
            continue
        if not solution.equilibria:
            reasons.append(solution.note or f"{method}: found no equilibrium")
            continue
        if reasons:
            solution.note = "; ".join(filter(None, [f"auto: {method}, since " + "; ".join(reasons), solution.note]))
        return solution
    raise UserError("method: auto found no equilibrium: " + "; ".join(reasons))


def _lp_instead(solve_with, method: str, name: str, exc: Exception) -> Solution:
    """``auto``'s answer where the optimal sets cannot be listed: the LP's value and one equilibrium, with a note."""
    why = "cannot be enumerated at this precision" if isinstance(exc, EnumerationFailed) else "are too large to enumerate"
    solution = solve_with(method)
    solution.note = f"auto: the optimal sets {why}; this is the {name}'s value and one equilibrium"
    return solution


def _pure_pairs(a: np.ndarray, b: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
    """Every pure equilibrium: a cell that is a best response of each player to the other's (within the
    gap tolerance); none when the game has none."""
    tolerance = gap_tolerance(a, b)
    rows, cols = np.nonzero((a >= a.max(axis=0, keepdims=True) - tolerance)
                            & (b >= b.max(axis=1, keepdims=True) - tolerance))
    m, n = a.shape
    return [(np.eye(m)[i], np.eye(n)[j]) for i, j in zip(rows, cols)]


def _solve_spec(spec: GameSpec, method: str, options: dict[str, Any]) -> Solution:
    if method in EXTENSIVE_METHODS:
        from redgame.games.extensive_solvers import solve_extensive

        return solve_extensive(spec, method, **options)
    if method in TREE_METHODS:
        return _solve_tree(spec)
    nf = normal_form(spec)
    b = None if spec.is_zero_sum else nf.defender_payoffs
    return _label_with_spec(solve_matrix(nf.attacker_payoffs, b, method), spec)


def behaviour_solution(spec: GameSpec, method: str, sigma: np.ndarray, rho: np.ndarray, seconds: float,
                       iterations: int | None = None) -> Solution:
    """A one-equilibrium Solution from behaviour strategies, checked by its NashConv."""
    u_a, u_d = expected_payoffs(spec, sigma, rho)
    eq = Equilibrium(
        attacker_payoff=float(u_a),
        defender_payoff=float(u_d),
        gap=nash_conv(spec, sigma, rho),
        attacker_behaviour=sigma,
        defender_behaviour=rho,
        attacker_class=classify_attacker(spec, sigma),
        defender_class=classify_defender(spec, rho),
    )
    return Solution(method=method, equilibria=[eq], value=float(u_a) if spec.sums_to_zero else None,
                    zero_sum=spec.sums_to_zero, seconds=seconds, iterations=iterations, spec=spec)


def _solve_tree(spec: GameSpec) -> Solution:
    from redgame.games.sequence_form import solve_sequence_form

    start = time.perf_counter()
    _, sigma, rho = solve_sequence_form(spec)
    return behaviour_solution(spec, "sequence-form-linprog", sigma, rho, time.perf_counter() - start)


def check_behaviour_equilibrium(spec: GameSpec, sigma: np.ndarray, rho: np.ndarray) -> float:
    """NashConv of a behaviour-strategy pair; used to verify extensive-form solutions."""
    return nash_conv(spec, sigma, rho)
