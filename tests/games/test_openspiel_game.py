"""The extensive-form games in OpenSpiel: loading by name, OpenSpiel's own solvers, cross-checks."""

import numpy as np
import pyspiel
import pytest
from open_spiel.python import policy as policy_lib
from open_spiel.python.algorithms import exploitability, sequence_form_lp

from redgame.errors import UserError
from redgame.games.exploitability import nash_conv
from redgame.games.extensive_solvers import behaviour_from_policy
from redgame.games.openspiel_game import RedTeamGame, extensive_game, matrix_game
from redgame.games.optimal_sets import zero_sum_value
from redgame.games.solve import solve
from redgame.theory import make_spec, normal_form

CASES = [
    ("hidden_intent", {"lam": 0.25}),
    ("hidden_intent", {"lam": 0.7, "q": 0.4, "deflect": True}),
    ("prompt_map", {"lam": 0.5}),
    ("family", {"n": 4, "k": 3, "q": 0.2}),
]


def test_load_by_name_with_parameters():
    game = pyspiel.load_game("redgame_hidden_intent(lam=0.25)")
    assert game.get_parameters()["lam"] == 0.25
    value, _, _, _ = sequence_form_lp.solve_zero_sum_game(game)
    assert value == pytest.approx(0.125, abs=1e-7)
    with pytest.raises(UserError, match="^lam: must be a finite number >= 0, got -1.0"):
        pyspiel.load_game("redgame_hidden_intent(lam=-1.0)")


@pytest.mark.parametrize("name, params", CASES)
def test_sequence_form_lp_matrix_lp_and_cfr_plus_agree(name, params):
    spec = make_spec(name, **params)
    game = extensive_game(name, **params)
    sf_value, _, _, _ = sequence_form_lp.solve_zero_sum_game(game)
    matrix = pyspiel.extensive_to_matrix_game(pyspiel.convert_to_cached_tree(game))
    lp_value, _, _ = zero_sum_value(np.array(matrix.row_utilities()))
    cfr = solve(spec, method="cfr+", target=1e-4)
    assert sf_value == pytest.approx(lp_value, abs=1e-6)
    assert cfr.value == pytest.approx(lp_value, abs=1e-3)
    assert cfr.max_gap / 2 <= 1e-3
    # Our normal form and the pyspiel matrix game give the same value as OpenSpiel's conversion.
    assert zero_sum_value(normal_form(spec).attacker_payoffs)[0] == pytest.approx(lp_value, abs=1e-8)
    assert zero_sum_value(np.array(matrix_game(spec).row_utilities()))[0] == pytest.approx(lp_value, abs=1e-8)


@pytest.mark.parametrize("name, params", CASES)
def test_numpy_nash_conv_matches_openspiel(name, params):
    rng = np.random.default_rng(7)
    spec = make_spec(name, **params)
    game = RedTeamGame(spec=spec)
    pol = policy_lib.TabularPolicy(game)
    for _ in range(3):
        pol.action_probability_array[:] = rng.dirichlet(np.ones(pol.action_probability_array.shape[1]),
                                                         size=len(pol.action_probability_array))
        pol.action_probability_array *= pol.legal_actions_mask
        pol.action_probability_array /= pol.action_probability_array.sum(axis=1, keepdims=True)
        sigma, rho = behaviour_from_policy(spec, pol)
        assert nash_conv(spec, sigma, rho) == pytest.approx(exploitability.nash_conv(game, pol), abs=1e-9)


@pytest.mark.parametrize("method", ["sequence-form-lp", "cfr", "cfr+", "dcfr"])
def test_extensive_methods_through_the_front_door(method):
    sol = solve(make_spec("hidden_intent", lam=0.5), method=method, target=1e-4)
    assert sol.value == pytest.approx(0.25, abs=1e-3)
    assert sol.max_gap <= 2e-4 + 1e-9


def test_general_sum_game_type():
    game = RedTeamGame(spec=make_spec("hidden_intent", payoff="nonzero_sum", safety=2))
    assert game.get_type().utility == pyspiel.GameType.Utility.GENERAL_SUM
    with pytest.raises(ValueError, match="zero-sum"):
        solve(make_spec("hidden_intent", payoff="nonzero_sum", safety=2), method="sequence-form-lp")


def test_a_nonzero_sum_payoff_whose_utilities_cancel_is_a_zero_sum_openspiel_game():
    spec = make_spec("hidden_intent", payoff="nonzero_sum")  # the preset's weights cancel in this game
    assert RedTeamGame(spec=spec).get_type().utility == pyspiel.GameType.Utility.ZERO_SUM
    assert solve(spec, method="sequence-form-lp").value == pytest.approx(solve(spec, method="auto").value, abs=1e-6)
