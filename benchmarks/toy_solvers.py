"""Toy-game solver timings, printed as one table.

    python benchmarks/toy_solvers.py            # medians of 5 runs
    python benchmarks/toy_solvers.py --smoke    # one run each, the small games only (for CI)

Goals (issue #2): enumerate and classify all equilibria of prompt_map in < 1 s; reach
exploitability <= 1e-4 on hidden_intent and on a larger family member in < 10 s.
``goal/t`` is a goal's time over the median; ``LP/t`` compares each method with OpenSpiel's
``sequence-form-lp`` (cvxpy), the named baseline: its time over the method's, on the same game
(``sequence-form-linprog`` is scipy HiGHS); without the lp extra that row and column are empty. The default
``family`` preset is solved by ``method="auto"``.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

from redgame.games.claims import equilibrium_classes
from redgame.games.solve import solve
from redgame.theory import make_spec

REPEATS = 5


def median_time(fn, repeats: int = REPEATS) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="one run each, small games only")
    smoke = parser.parse_args().smoke
    repeats = 1 if smoke else REPEATS
    methods = ["sequence-form-linprog", "cfr+", "dcfr"]
    if importlib.util.find_spec("cvxpy") is not None:
        methods.insert(1, "sequence-form-lp")
    rows = []
    for lam in (0.0, 0.5):
        spec = make_spec("prompt_map", lam=lam)
        t, classes = median_time(lambda: equilibrium_classes(spec), repeats)
        rows.append((f"prompt_map lam={lam}", "enumerate + classify", t, 1.0, ",".join(sorted(classes))))
    games = [("hidden_intent", {"lam": 0.25})] + ([] if smoke else [("family", dict(n=8, k=4, q=0.25))])
    for name, params in games:
        spec = make_spec(name, **params)
        for method in methods:
            t, sol = median_time(lambda: solve(spec, method=method, target=1e-4), repeats)
            rows.append((f"{name} {params}", method, t, 10.0, f"value={sol.value:.5f} expl={sol.max_gap / 2:.1e}"))
    t, sol = median_time(lambda: solve(make_spec("family"), method="auto"), repeats)
    rows.append(("family (the default preset)", f"auto: {sol.method}", t, 1.0, f"value={sol.value:.5f}"))
    print_table(rows)


def print_table(rows: list[tuple]) -> None:
    """One line per (game, method): its median time, the goal's ratio to it (goal / time), and where OpenSpiel's
    sequence-form-lp solved the same game, the baseline's time over this method's (above 1: faster than it)."""
    baseline = {game: t for game, method, t, _, _ in rows if method == "sequence-form-lp"}
    print(f"{'game':<38} {'method':<30} {'median s':>9} {'goal s':>7} {'goal/t':>7} {'LP/t':>7}  result")
    for game, method, t, goal, result in rows:
        versus = f"{baseline[game] / t:6.2f}x" if game in baseline else f"{'-':>7}"
        print(f"{game:<38} {method:<30} {t:9.4f} {goal:7.1f} {goal / t:6.0f}x {versus}  {result}")


if __name__ == "__main__":
    main()
