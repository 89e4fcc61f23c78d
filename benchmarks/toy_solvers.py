"""Toy-game solver timings, printed as one table.

    python benchmarks/toy_solvers.py

Goals (issue #2): enumerate and classify all equilibria of prompt_map in < 1 s; reach
exploitability <= 1e-4 on hidden_intent and on a larger family member in < 10 s.
Each time is the median of several runs.
"""

from __future__ import annotations

import statistics
import time

from redgame.games.claims import equilibrium_classes
from redgame.games.solve import solve
from redgame.theory import make_spec

REPEATS = 5


def median_time(fn) -> tuple[float, object]:
    times, out = [], None
    for _ in range(REPEATS):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), out


def main() -> None:
    rows = []
    for lam in (0.0, 0.5):
        spec = make_spec("prompt_map", lam=lam)
        t, classes = median_time(lambda: equilibrium_classes(spec))
        rows.append((f"prompt_map lam={lam}", "enumerate + classify", t, 1.0, ",".join(sorted(classes))))
    big = dict(n=8, k=4, q=0.25)
    for name, params in (("hidden_intent", {"lam": 0.25}), ("family", big)):
        spec = make_spec(name, **params)
        for method in ("sequence-form-lp", "cfr+", "dcfr"):
            t, sol = median_time(lambda: solve(spec, method=method, target=1e-4))
            expl = sol.max_gap / 2
            label = f"{name} {params}"
            rows.append((label, method, t, 10.0, f"value={sol.value:.5f} expl={expl:.1e}"))
    print(f"{'game':<38} {'method':<22} {'median s':>9} {'goal s':>7} {'ratio':>7}  result")
    for game, method, t, goal, result in rows:
        print(f"{game:<38} {method:<22} {t:9.4f} {goal:7.1f} {goal / t:6.0f}x  {result}")


if __name__ == "__main__":
    main()
