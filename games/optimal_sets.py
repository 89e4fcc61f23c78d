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
from math import comb

import numpy as np
from scipy.optimize import linprog

from redgame.errors import UserError
from redgame.theory.strategies import TooLargeToEnumerate

MAX_BASES = 2_000_000
TOL = 1e-9


def polytope_vertices(g: np.ndarray, h: np.ndarray, tol: float = TOL) -> np.ndarray:
    """Vertices of P = {z >= 0, sum z = 1, G z <= h}, as rows of an [n_vertices, n] array.

    Raises:
      ValueError: if P is empty or too large to enumerate.
    """
    g = np.atleast_2d(np.asarray(g, dtype=float))
    h = np.asarray(h, dtype=float).reshape(-1)
    m, n = g.shape
    h = h + tol  # the LP value is only exact to solver precision
    a_eq = np.ones((1, n))
    bounds = [(0, None)] * n

    def lp_max(c: np.ndarray) -> float:
        res = linprog(-c, A_ub=g if m else None, b_ub=h if m else None, A_eq=a_eq, b_eq=[1.0], bounds=bounds,
                      method="highs")
        if res.status != 0:
            raise RuntimeError(f"optimal-set polytope is empty or unbounded ({res.message})")
        return -res.fun

    # Reduce: a variable that is 0 on all of P, or a constraint never tight on P, can go.
    keep_vars = np.array([lp_max(np.eye(n)[j]) > tol for j in range(n)])
    keep_rows = np.array([lp_max(g[i]) >= h[i] - 2 * tol for i in range(m)], dtype=bool)
    gr, hr = g[keep_rows][:, keep_vars], h[keep_rows]
    nv, mr = int(keep_vars.sum()), int(keep_rows.sum())

    # Standard form: [G I; 1 0] [z; s] = [h; 1], z, s >= 0; a basis has mr + 1 columns.
    full = np.zeros((mr + 1, nv + mr))
    full[:mr, :nv] = gr
    full[:mr, nv:] = np.eye(mr)
    full[mr, :nv] = 1.0
    rhs = np.concatenate([hr, [1.0]])
    n_cols, size = nv + mr, mr + 1
    if comb(n_cols, size) > MAX_BASES:
        raise TooLargeToEnumerate(
            f"optimal set too large to enumerate ({comb(n_cols, size):.3g} bases > {MAX_BASES});"
            " use method='sequence-form-linprog' or 'linprog' (one equilibrium)"
        )
    found: dict[tuple, np.ndarray] = {}
    combos = itertools.combinations(range(n_cols), size)
    while True:
        chunk = np.array(list(itertools.islice(combos, 20_000)), dtype=int)
        if chunk.size == 0:
            break
        mats = full[:, chunk].transpose(1, 0, 2)  # [B, size, size]
        dets = np.linalg.det(mats)
        ok = np.abs(dets) > 1e-10
        if not ok.any():
            continue
        sol = np.linalg.solve(mats[ok], np.broadcast_to(rhs, (int(ok.sum()), size))[..., None])[..., 0]
        feasible = (sol >= -tol).all(axis=1)
        for basis, values in zip(chunk[ok][feasible], sol[feasible]):
            z = np.zeros(n_cols)
            z[basis] = np.clip(values, 0.0, None)
            point = np.zeros(n)
            point[keep_vars] = z[:nv]
            point /= point.sum()
            found.setdefault(tuple(np.round(point, 6) + 0.0), point)
    if not found:
        raise RuntimeError("optimal-set polytope has no vertex (numerical trouble)")
    return np.array(sorted(found.values(), key=lambda p: tuple(-p)))


def _maximin(a: np.ndarray) -> tuple[float, np.ndarray]:
    """(v, x) maximising v s.t. A^T x >= v, sum x = 1, x >= 0 (scipy HiGHS)."""
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
    """(value, vertices of X*, vertices of Y*) for the zero-sum game with row payoffs A."""
    a = np.asarray(a, dtype=float)
    value, _, _ = zero_sum_value(a)
    x_vertices = polytope_vertices(-a.T, -value * np.ones(a.shape[1]), tol)
    y_vertices = polytope_vertices(a, value * np.ones(a.shape[0]), tol)
    return value, x_vertices, y_vertices
