"""The full sets of optimal strategies of a zero-sum matrix game, as polytope vertices.

In a zero-sum game the Nash equilibria form a product X* x Y* of two polytopes
(von Neumann; see e.g. Maschler, Solan & Zamir, "Game Theory", 2013, ch. 5):
X* = {x in simplex : x^T A >= v} and Y* = {y in simplex : A y <= v}. The red-team games are
degenerate, so these sets are rarely single points, and one-equilibrium solvers (and
nashpy's support enumeration, which assumes non-degeneracy) can silently miss members.

We list the vertices of each polytope exactly: first drop variables that are 0 on the whole
polytope and constraints that are never tight (one small LP each), then enumerate the basic
feasible solutions of the reduced standard-form system. Degenerate vertices reached by
several bases are merged.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from math import comb

import numpy as np
from scipy.optimize import linprog

from redgame.errors import UserError
from redgame.theory.strategies import EnumerationFailed, TooLargeToEnumerate

MAX_BASES = 2_000_000
TOL = 1e-9
EQUALITY_TOL = 1e-6  # slack range below which a constraint is an implicit equality (payoffs scaled to [0, 1])
AT_VALUE = 1e-12  # a scaled payoff this close to the game's value is at it (the LP's rounding)
MAX_CONDITION = 1e12  # a basis worse conditioned than this is singular (its solution is rounding noise)


def polytope_vertices(g: np.ndarray, h: np.ndarray, tol: float = TOL) -> np.ndarray:
    """Vertices of P = {z >= 0, sum z = 1, G z <= h}, as rows of an [n_vertices, n] array.

    ``h`` is only exact to solver precision, so P is widened by ``tol``; a constraint whose slack
    stays below ``EQUALITY_TOL`` on the whole widened P (an implicit equality of P) is then
    enumerated as an equality at ``h``, so that the widening adds no sliver vertices (points a
    widened constraint lets through beside an exact vertex) to the exact ones.

    Raises:
      TooLargeToEnumerate: if P has too many bases to enumerate.
      EnumerationFailed: if P cannot be enumerated at this precision (it comes out empty: a
        constraint whose slack range is below ``EQUALITY_TOL`` but not zero, forced to equality).
    """
    try:
        return _vertices(g, h, tol)
    except TooLargeToEnumerate:
        raise
    except (RuntimeError, ValueError) as exc:
        raise imprecise(str(exc).split(chr(10))[0]) from None


def imprecise(detail: str) -> EnumerationFailed:
    """The error for optimal sets that this enumeration cannot list exactly, and what to use instead."""
    return EnumerationFailed(
        f"the optimal sets cannot be enumerated at this precision (a payoff difference below {EQUALITY_TOL:g} of the "
        f"payoff range, such as a tiny lam or q near 1: {detail}); use method='sequence-form-linprog' or 'linprog' "
        "(the value and one equilibrium)")


def _vertices(g: np.ndarray, h: np.ndarray, tol: float) -> np.ndarray:
    g = np.atleast_2d(np.asarray(g, dtype=float))
    h = np.asarray(h, dtype=float).reshape(-1)
    equal, slack = _tight_rows(g, h, tol)
    keep_vars = _support(g, h, equal, slack, tol)
    equalities = np.vstack([np.ones((1, g.shape[1])), g[equal]])[:, keep_vars]
    eq_rows = _independent_rows(equalities, tol)
    e_mat, e_rhs = equalities[eq_rows], np.r_[1.0, h[equal]][eq_rows]
    gs, hs = g[slack][:, keep_vars], h[slack]  # exact: the basic solutions' check allows tol
    nv, ms, me = int(keep_vars.sum()), int(slack.sum()), len(e_rhs)

    # Standard form: [E 0; G_s I] [z; s] = [e; h_s], z, s >= 0; a basis has me + ms columns.
    full = np.zeros((me + ms, nv + ms))
    full[:me, :nv] = e_mat
    full[me:, :nv] = gs
    full[me:, nv:] = np.eye(ms)
    rhs = np.concatenate([e_rhs, hs])
    found: dict[tuple, np.ndarray] = {}
    for z in _basic_solutions(full, rhs, tol):
        point = np.zeros(g.shape[1])
        point[keep_vars] = z[:nv]
        point /= point.sum()
        found.setdefault(tuple(np.round(point, 6) + 0.0), point)
    if not found:
        raise RuntimeError("optimal-set polytope has no vertex (numerical trouble)")
    return np.array(sorted(found.values(), key=lambda p: tuple(-p)))


def _lp_max(c: np.ndarray, g: np.ndarray, h: np.ndarray, a_eq: np.ndarray, b_eq: np.ndarray) -> float:
    """max c z over {z >= 0, G z <= h, A_eq z = b_eq} (scipy HiGHS)."""
    res = linprog(-c, A_ub=g if len(h) else None, b_ub=h if len(h) else None, A_eq=a_eq, b_eq=b_eq,
                  bounds=[(0, None)] * len(c), method="highs")
    if res.status != 0:
        raise RuntimeError(f"optimal-set polytope is empty or unbounded ({res.message})")
    return -res.fun


def _tight_rows(g: np.ndarray, h: np.ndarray, tol: float) -> tuple[np.ndarray, np.ndarray]:
    """(implicit equalities, other constraints that are tight somewhere) of P widened by ``tol``;
    a constraint never tight on P is dropped from both."""
    n = g.shape[1]
    ones = (np.ones((1, n)), [1.0])
    tight = np.array([_lp_max(row, g, h + tol, *ones) >= h[i] - tol for i, row in enumerate(g)], dtype=bool)
    equal = np.array([bool(tight[i]) and -_lp_max(-row, g, h + tol, *ones) >= h[i] - EQUALITY_TOL
                      for i, row in enumerate(g)], dtype=bool)
    return equal, tight & ~equal


def _support(g, h, equal, slack, tol) -> np.ndarray:
    """The variables that are positive somewhere on P (the others are 0 on all of P)."""
    n = g.shape[1]
    a_eq, b_eq = np.vstack([np.ones((1, n)), g[equal]]), np.r_[1.0, h[equal]]
    return np.array([_lp_max(np.eye(n)[j], g[slack], h[slack] + tol, a_eq, b_eq) > tol for j in range(n)])


def _independent_rows(rows: np.ndarray, tol: float) -> list[int]:
    """Indices of a maximal linearly independent subset of ``rows``, the first row kept."""
    chosen: list[int] = []
    for i in range(len(rows)):
        if np.linalg.matrix_rank(rows[chosen + [i]], tol=tol * max(1.0, np.abs(rows).max())) > len(chosen):
            chosen.append(i)
    return chosen


def _basic_solutions(full: np.ndarray, rhs: np.ndarray, tol: float) -> Iterator[np.ndarray]:
    """The basic feasible solutions of {full z = rhs, z >= 0}, one per nonsingular feasible basis, as they are
    found (a degenerate vertex comes once per basis: the caller merges them)."""
    size, n_cols = full.shape
    if comb(n_cols, size) > MAX_BASES:
        raise TooLargeToEnumerate(
            f"optimal set too large to enumerate ({comb(n_cols, size):.3g} bases > {MAX_BASES});"
            " use method='sequence-form-linprog' or 'linprog' (one equilibrium)"
        )
    combos = itertools.combinations(range(n_cols), size)
    while True:
        chunk = np.array(list(itertools.islice(combos, 20_000)), dtype=int)
        if chunk.size == 0:
            return
        mats = full[:, chunk].transpose(1, 0, 2)  # [B, size, size]
        ok = np.linalg.cond(mats) < MAX_CONDITION  # scale-free: a determinant depends on the payoffs' units
        if not ok.any():
            continue
        sol = np.linalg.solve(mats[ok], np.broadcast_to(rhs, (int(ok.sum()), size))[..., None])[..., 0]
        feasible = (sol >= -tol).all(axis=1)
        for basis, values in zip(chunk[ok][feasible], sol[feasible]):
            z = np.zeros(n_cols)
            z[basis] = np.clip(values, 0.0, None)
            yield z


def _maximin(a: np.ndarray) -> tuple[float, np.ndarray]:
    """(v, x) maximising v s.t. A^T x >= v, sum x = 1, x >= 0 (scipy HiGHS).

    The LP is solved on A mapped onto [0, 1] (x is the same under a positive affine map; v is mapped back):
    HiGHS's tolerances are absolute, and payoffs that differ by 1e-8 would otherwise all look equal to it.
    """
    if not np.isfinite(a).all():
        raise UserError("the zero-sum LP: a payoff is NaN or infinite")
    low, span = float(a.min()), float(a.max()) - float(a.min())
    if not np.isfinite(span):
        raise UserError("the zero-sum LP: the payoffs span more than a float holds; scale them down")
    if span == 0.0:
        return low, np.full(a.shape[0], 1.0 / a.shape[0])
    value, x = _maximin_unit((a - low) / span)
    return low + span * value, x


def _maximin_unit(a: np.ndarray) -> tuple[float, np.ndarray]:
    m, n = a.shape
    res = linprog(
        c=np.r_[np.zeros(m), -1.0],
        A_ub=np.c_[-a.T, np.ones(n)],
        b_ub=np.zeros(n),
        A_eq=np.r_[np.ones(m), 0.0][None, :],
        b_eq=[1.0],
        bounds=[(0, None)] * m + [(None, None)],
        method="highs",
    )
    if res.status != 0:
        raise UserError(f"the zero-sum LP failed in scipy's HiGHS ({res.message}); the payoffs may be badly scaled")
    x = np.clip(res.x[:m], 0, None)
    return float(-res.fun), x / x.sum()


def zero_sum_value(a: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(value, x, y) of the zero-sum game where the row player maximises x^T A y."""
    a = np.asarray(a, dtype=float)
    value, x = _maximin(a)
    _, y = _maximin(-a.T)  # the column player maximises -y^T A^T x
    return value, x, y


def optimal_sets(a: np.ndarray, tol: float = TOL) -> tuple[float, np.ndarray, np.ndarray]:
    """(value, vertices of X*, vertices of Y*) for the zero-sum game with row payoffs A.

    The sets are listed on A scaled to [0, 1] (a positive affine map leaves them unchanged), so
    that the tolerances are shares of the payoff range, whatever the payoffs' units."""
    a = np.asarray(a, dtype=float)
    value, _, _ = zero_sum_value(a)
    low, span = a.min(), np.ptp(a)
    scaled, scaled_value = ((a - low) / span, (value - low) / span) if span > 0 else (np.zeros_like(a), 0.0)
    off = np.abs(scaled - scaled_value)
    near = off[(off > AT_VALUE) & (off < 2 * EQUALITY_TOL)]  # twice: a margin over the widening by tol
    if near.size:
        # A constraint whose slack ranges over (0, that difference) would be taken for an equality, and the vertices
        # where it is slack lost (prompt_map at lam 1e-6 to 1e-8 listed 2 of its 4 optimal attacks), or the widening
        # would add false ones (28 "equilibria" at lam 1e-9): refused, as an enumeration that comes out empty is.
        raise imprecise(f"a payoff {near.min():.2g} of the range from the value")
    x_vertices = polytope_vertices(-scaled.T, -scaled_value * np.ones(a.shape[1]), tol)
    y_vertices = polytope_vertices(scaled, scaled_value * np.ones(a.shape[0]), tol)
    return value, x_vertices, y_vertices
