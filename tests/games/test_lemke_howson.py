"""Lemke-Howson from every label, capped: against support enumeration, on a degenerate family game, and pure."""

import numpy as np
import pytest

from redgame.cli import main
from redgame.games.lemke_howson import lemke_howson_pairs
from redgame.games.solve import solve
from redgame.theory import make_spec
from redgame.theory.strategies import normal_form


def _gap(a, b, x, y):
    """NashConv by hand: each player's best pure deviation gain."""
    return float((a @ y).max() - x @ a @ y + (x @ b).max() - x @ b @ y)


@pytest.mark.parametrize("seed", range(6))
def test_every_path_ends_at_an_equilibrium_that_vertex_enumeration_finds(seed):
    import nashpy

    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=(4, 5)), rng.normal(size=(4, 5))  # continuous draws: nondegenerate
    pairs, failed = lemke_howson_pairs(a, b)
    assert failed == 0 and len(pairs) == 9
    found = list(nashpy.Game(a, b).vertex_enumeration())  # (support enumeration misses some of these)
    for x, y in pairs:
        x, y = x / x.sum(), y / y.sum()
        assert _gap(a, b, x, y) < 1e-9
        assert any(np.allclose(x, fx, atol=1e-7) and np.allclose(y, fy, atol=1e-7) for fx, fy in found)


FAMILY = dict(n=3, k=2, q=0.4, payoff="nonzero_sum", helpfulness=0.7, attack_success=0.5, benign_attack=0.7)


@pytest.mark.parametrize("safety", [0.0, 0.3])
def test_degenerate_family_games_end_in_equilibria_where_nashpy_cycled_or_stopped(safety):
    """safety 0.3: nashpy's own loop pivoted forever; safety 0: "could not find dropped label"."""
    spec = make_spec("family", safety=safety, **FAMILY)
    nf = normal_form(spec)
    solution = solve(spec)
    assert solution.method == "lemke-howson" and solution.equilibria
    for eq in solution.equilibria:
        assert _gap(nf.attacker_payoffs, nf.defender_payoffs, eq.attacker, eq.defender) <= 1e-6


def test_pairs_off_equilibrium_are_never_listed():
    spec = make_spec("family", n=3, k=2, harmful=1, payoff="nonzero_sum", safety=0, helpfulness=0.7, benign_attack=2)
    nf = normal_form(spec)
    solution = solve(spec, method="lemke-howson")
    assert all(_gap(nf.attacker_payoffs, nf.defender_payoffs, e.attacker, e.defender) <= 1e-6
               for e in solution.equilibria)  # one of four used to have a gap of 0.09


def test_pure_lists_every_cell_that_is_both_best_responses():
    rng = np.random.default_rng(3)
    a, b = rng.integers(0, 3, (5, 6)).astype(float), rng.integers(0, 3, (5, 6)).astype(float)  # many ties
    want = {(i, j) for i in range(5) for j in range(6) if a[i, j] == a[:, j].max() and b[i, j] == b[i].max()}
    got = {(int(e.attacker.argmax()), int(e.defender.argmax())) for e in solve((a, b), method="pure").equilibria}
    assert got == want and want
    none = solve((np.array([[1.0, 0.0], [0.0, 1.0]]), np.array([[0.0, 1.0], [1.0, 0.0]])), method="pure")
    assert not none.equilibria and none.note == "pure: this game has no pure equilibrium"  # matching pennies


def test_nashpy_failures_are_one_line_errors(capsys):
    argv = ["toy", "solve", "--game", "hidden_intent", "--param", "payoff=nonzero_sum", "--param", "safety=0",
            "--param", "helpfulness=0", "--param", "attack_success=0", "--param", "benign_attack=0"]
    assert main([*argv, "--method", "nashpy-vertex"]) == 2
    assert "nashpy-vertex failed on this degenerate game" in capsys.readouterr().err


def test_an_odeint_that_stops_early_is_a_one_line_error(capsys, monkeypatch):
    """Whether odeint stops early on a given game depends on the machine's floating point (this game's run did on
    an AVX-512 Xeon, not on an AVX2 EPYC), so the stop is made here as scipy makes it: its warning."""
    import warnings

    import nashpy

    class ODEintWarning(Warning):  # scipy's, by name: older scipy does not export it from scipy.integrate
        pass

    def stops_early(self, timepoints, **kwargs):
        warnings.warn("Excess work done on this call (perhaps wrong Dfun type). Run with full_output = 1 to get "
                      "quantitative information.", ODEintWarning)
        return np.full((len(timepoints), self.payoff_matrices[0].shape[0]), 0.5), \
            np.full((len(timepoints), self.payoff_matrices[0].shape[1]), 0.5)

    monkeypatch.setattr(nashpy.Game, "asymmetric_replicator_dynamics", stops_early)
    assert main(["toy", "solve", "--game", "hidden_intent", "--param", "lam=0.7", "--param", "q=0.4",
                 "--method", "replicator"]) == 2
    assert "replicator: scipy's odeint failed on this game (Excess work done on this call)" in capsys.readouterr().err


def test_a_replicator_whose_mixture_vanishes_is_one_line_not_an_empty_answer():
    """odeint ends at y = [-1.1e-12, -4e-15] here: the defender's mixture has vanished. That was dropped,
    leaving a solution with no end point (and before that, normalised into [0.996, 0.004] with gap 1.52)."""
    from redgame.errors import UserError

    with pytest.raises(UserError, match="replicator: the dynamics' end point left the simplex"):
        solve(np.array([[2.0, 0.0], [0.0, 1.0]]), method="replicator")
