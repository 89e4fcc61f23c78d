"""Lemke-Howson from every initial label, each path capped, on nashpy's tableaux.

Lemke & Howson (1964), as integer pivoting with lexicographic ties (Nisan et al. 2007,
Algorithm 3.6; nashpy's ``lemke_howson``). On the floating-point normal forms of degenerate
games nashpy's loop can pivot forever or stop with "could not find dropped label"; here each
path is cut after :data:`MAX_PIVOTS_PER_LABEL` pivots per strategy, and a path that fails
gives no pair. What a path returns is checked by its NashConv by the caller.
"""

from __future__ import annotations

import warnings

import numpy as np

MAX_PIVOTS_PER_LABEL = 50  # times m + n: a path of a nondegenerate game pivots at most a few times per label


def lemke_howson_path(a: np.ndarray, b: np.ndarray, label: int, max_pivots: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The end of the Lemke-Howson path that drops ``label`` first, or None when it fails or passes
    ``max_pivots``."""
    from nashpy.linalg import create_col_tableau, create_row_tableau

    col, row = create_col_tableau(a, True), create_row_tableau(b, True)
    tableaux = (row, col) if label in row.non_basic_variables else (col, row)
    entering = label
    try:
        for pivot in range(max_pivots):
            entering = tableaux[pivot % 2].pivot_and_drop_label(entering)
            if col.non_basic_variables | row.non_basic_variables == col.labels:
                return row.to_strategy(col.non_basic_variables), col.to_strategy(row.non_basic_variables)
    except (ValueError, IndexError, ZeroDivisionError, FloatingPointError):
        return None  # nashpy: "could not find dropped label" on a degenerate tableau
    return None


def lemke_howson_pairs(a: np.ndarray, b: np.ndarray) -> tuple[list[tuple[np.ndarray, np.ndarray]], int]:
    """The mixed-strategy pairs the paths from every initial label end at, and how many paths failed."""
    m, n = a.shape
    pairs, failed = [], 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # nashpy warns on degenerate games; the caller's gap check decides
        for label in range(m + n):
            pair = lemke_howson_path(a, b, label, MAX_PIVOTS_PER_LABEL * (m + n))
            ok = pair is not None and pair[0].shape == (m,) and pair[1].shape == (n,) and all(
                np.all(np.isfinite(s)) and np.sum(s) > 0 for s in pair)
            if ok:
                pairs.append(pair)
            failed += not ok
    return pairs, failed
