"""The scipy sequence-form LP against the enumerated optimal sets, OpenSpiel's sequence-form LP
(cvxpy) and CFR+, and ``solve(method="auto")`` on games too large to enumerate."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from redgame.games.exploitability import nash_conv
from redgame.games.sequence_form import attacker_lp, defender_lp, solve_sequence_form
from redgame.games.solve import solve
from redgame.theory.presets import make_spec

SMALL = [
    ("prompt_map", {"lam": 0.0}), ("prompt_map", {"lam": 0.5}), ("prompt_map", {"lam": 0.3}),
    ("hidden_intent", {"lam": 0.25}), ("hidden_intent", {"lam": 2.0, "q": 0.4}),
    ("hidden_intent", {"lam": 0.7, "q": 0.5, "deflect": True}), ("family", {"n": 3, "k": 2, "q": 0.3, "lam": 0.6}),
    ("mirror", {"harmful": 1, "benign": 1, "k": 2, "lam": 0.4}),
]
LARGE = [("family", {}), ("family", {"n": 6, "k": 3, "q": 0.25, "lam": 0.5}), ("mirror", {"benign": 1, "lam": 0.5})]


@pytest.mark.parametrize("name,params", SMALL, ids=[f"{n}-{p}" for n, p in SMALL])
def test_value_and_equilibrium_match_the_enumerated_optimal_sets(name, params):
    spec = make_spec(name, **params)
    exact = solve(spec, method="enumerate")
    value, sigma, rho = solve_sequence_form(spec)
    assert value == pytest.approx(exact.value, abs=1e-9)
    assert defender_lp(spec)[0] == pytest.approx(value, abs=1e-9)  # LP duality: both sides agree
    assert nash_conv(spec, sigma, rho) < 1e-8


@pytest.mark.parametrize("name,params", LARGE, ids=[f"{n}-{p}" for n, p in LARGE])
def test_large_games_match_openspiel_and_cfr(name, params):
    spec = make_spec(name, **params)
    ours = solve(spec, method="sequence-form-linprog")
    assert ours.max_gap < 1e-8
    cfr = solve(spec, method="cfr+", target=1e-4)
    assert ours.value == pytest.approx(cfr.value, abs=3e-4)  # CFR+ stops at exploitability <= 1e-4
    pytest.importorskip("cvxpy", reason="OpenSpiel's sequence-form LP needs the lp extra")
    assert ours.value == pytest.approx(solve(spec, method="sequence-form-lp").value, abs=1e-6)


def test_strategies_are_behaviour_strategies():
    spec = make_spec("family", n=5, k=3, q=0.2, lam=0.3)
    _, sigma = attacker_lp(spec)
    _, rho = defender_lp(spec)
    assert sigma.shape == (5, 3) and rho.shape == (spec.n_observations, 2)
    np.testing.assert_allclose(sigma.sum(axis=1), 1.0)
    np.testing.assert_allclose(rho.sum(axis=1), 1.0)
    assert (sigma >= 0).all() and (rho >= 0).all()


def test_auto_enumerates_small_games_and_solves_the_lp_on_large_ones():
    small = solve(make_spec("prompt_map", lam=0.0))
    assert small.method == "enumerate" and small.note is None and len(small.defender_optimal) > 1
    large = solve(make_spec("family"))  # the default preset: 81 x 64 pure strategies
    assert large.method == "sequence-form-linprog" and "too large" in large.note
    assert large.value == pytest.approx(0.25, abs=1e-9) and large.max_gap < 1e-9


def test_bad_input():
    with pytest.raises(ValueError, match="^method: sequence-form-linprog needs a zero-sum game"):
        solve(make_spec("hidden_intent", payoff="nonzero_sum", benign_attack=0.0), method="sequence-form-linprog")
    with pytest.raises(ValueError, match="^method: sequence-form-linprog needs a game spec"):
        solve(np.eye(2), method="sequence-form-linprog")
    with pytest.raises(ValueError, match="normal form: .* too large"):
        solve(make_spec("family", n=8, k=4), method="linprog")


def test_toy_games_work_without_cvxpy():
    """Without the lp extra, every method but OpenSpiel's LPs works, and those name cvxpy."""
    code = (
        "import sys; sys.modules['cvxpy'] = None\n"
        "from redgame.games.solve import solve\n"
        "from redgame.theory import make_spec\n"
        "assert solve(make_spec('family')).value == 0.25\n"
        "assert abs(solve(make_spec('hidden_intent', lam=0.25), 'cfr+').value - 0.125) < 1e-3\n"
        "try:\n"
        "    solve(make_spec('hidden_intent'), 'sequence-form-lp')\n"
        "except ModuleNotFoundError as exc:\n"
        "    assert exc.name == 'cvxpy', exc.name\n"
        "else:\n"
        "    raise AssertionError('no error')\n"
        "from redgame.cli import main\n"
        "sys.exit(main(['toy', 'solve', '--game', 'hidden_intent', '--method', 'sequence-form-lp']))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "redgame: error: cvxpy is not installed; run: pip install 'redgame[lp]'"


def test_importing_the_package_registers_the_openspiel_games():
    code = ("import redgame.games, pyspiel\n"
            "names = [n for n in pyspiel.registered_names() if n.startswith('redgame_')]\n"
            "assert {'redgame_prompt_map', 'redgame_hidden_intent', 'redgame_family', 'redgame_mirror'} <= set(names)\n"
            "print(pyspiel.load_game('redgame_hidden_intent(lam=0.25)').num_players())\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "2", proc.stderr
