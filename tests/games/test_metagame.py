"""Meta-game: meta-Nash mixtures verified by their best-response gaps and known values; the toy
cross-play matrix checked against the theory's payoffs."""

from __future__ import annotations

import numpy as np
import pytest
from open_spiel.python import policy as policy_lib
from open_spiel.python.algorithms import expected_game_score

from redgame.games.crossplay import BEST_RESPONSE, crossplay_matrices, train_regimes
from redgame.games.dynamics import DynamicsConfig
from redgame.games.metagame import solve_metagame
from redgame.games.solve import solve_matrix
from redgame.theory.presets import make_spec
from redgame.games.openspiel_game import RedTeamGame


def best_response_gaps(a, b, x, y):
    """Computed here from scratch: what each player gains by deviating to a pure strategy."""
    return (a @ y).max() - x @ a @ y, (x @ b).max() - x @ b @ y


def openspiel_attacker_value(spec, sigma, rho) -> float:
    """The attacker's expected return from OpenSpiel's tree walk with sigma and rho as a tabular policy."""
    game = RedTeamGame(spec=spec)
    pol = policy_lib.TabularPolicy(game)
    for key, index in pol.state_lookup.items():
        if key.startswith("obs="):
            row = rho[[str(o) for o in spec.observations].index(key[4:])]
        elif key == "attacker":
            row = sigma.reshape(-1)
        else:
            row = sigma[[s.name for s in spec.seeds].index(key.removeprefix("seed="))]
        pol.action_probability_array[index] = 0.0
        pol.action_probability_array[index, :len(row)] = row
    return expected_game_score.policy_value(game.new_initial_state(), [pol, pol])[0]


def test_rock_paper_scissors_closed_form():
    rps = np.array([[0, -1, 1], [1, 0, -1], [-1, 1, 0]], dtype=float)
    meta = solve_metagame(rps, attackers=["r", "p", "s"], defenders=["R", "P", "S"])
    np.testing.assert_allclose(meta.attacker_mix, [1 / 3] * 3, atol=1e-8)
    np.testing.assert_allclose(meta.defender_mix, [1 / 3] * 3, atol=1e-8)
    assert abs(meta.value) < 1e-9 and meta.nash_conv < 1e-9


@pytest.mark.parametrize("seed", range(6))
def test_random_zero_sum_meta_nash_verifies(seed):
    rng = np.random.default_rng(seed)
    a = rng.uniform(0, 1, (rng.integers(2, 7), rng.integers(2, 7)))
    meta = solve_metagame(a)
    gap_a, gap_d = best_response_gaps(a, -a, meta.attacker_mix, meta.defender_mix)
    assert gap_a < 1e-8 and gap_d < 1e-8
    np.testing.assert_allclose([meta.defender_exploitability, meta.attacker_exploitability], [gap_a, gap_d], atol=1e-12)
    # The value agrees with a second solver (OpenSpiel's LP, through cvxpy + ECOS).
    other = solve_matrix(a, method="openspiel-lp")
    np.testing.assert_allclose(meta.value, other.equilibria[0].attacker_payoff, atol=1e-6)


@pytest.mark.parametrize("seed", range(4))
def test_general_sum_meta_nash_verifies(seed):
    rng = np.random.default_rng(100 + seed)
    a, b = rng.uniform(0, 1, (2, 4, 3))
    meta = solve_metagame(a, b)
    assert meta.method == "lemke-howson"
    gap_a, gap_d = best_response_gaps(a, b, meta.attacker_mix, meta.defender_mix)
    assert gap_a < 1e-8 and gap_d < 1e-8
    assert abs(meta.defender_value - meta.attacker_mix @ b @ meta.defender_mix) < 1e-12


# Two bimatrix games on which Lemke-Howson's paths end at no equilibrium (the review's t=35 and t=54): a
# constant-sum game on a half-integer grid, B = 1 - A, and a random continuous one; nashpy's support
# enumeration finds 2 and 3 equilibria.
GRID = [[1.0, 1.0, 0.5, 1.0], [0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0], [0.5, 0.0, 0.5, 0.0], [0.5, 0.5, 1.0, 1.0]]
RANDOM_A = [[0.4838, 0.7874, 0.3597, 0.5424], [0.3683, 0.8661, 0.9148, 0.6318], [0.9810, 0.7321, 0.8304, 0.8947],
            [0.2719, 0.9867, 0.3904, 0.4972], [0.1803, 0.8215, 0.3369, 0.6893]]
RANDOM_B = [[0.2184, 0.3514, 0.3842, 0.2366], [0.0351, 0.7702, 0.9504, 0.2262], [0.1627, 0.3476, 0.0828, 0.6497],
            [0.3686, 0.5625, 0.9058, 0.8616], [0.9217, 0.9351, 0.5898, 0.5023]]


@pytest.mark.parametrize("a, b", [(GRID, 1 - np.array(GRID)), (RANDOM_A, RANDOM_B)])
def test_general_sum_meta_games_where_lemke_howson_ends_nowhere_are_solved(a, b):
    a, b = np.array(a), np.array(b)
    meta = solve_metagame(a, b)  # was: "lemke-howson found no equilibrium of the meta-game"
    gap_a, gap_d = best_response_gaps(a, b, meta.attacker_mix, meta.defender_mix)
    assert gap_a < 1e-6 and gap_d < 1e-6 and meta.method != "lemke-howson"


@pytest.mark.parametrize("scale", [1.0, 1e-8, 1e-11, 1e7])
def test_matching_pennies_value_and_mixes(scale):
    """At any scale: HiGHS's tolerances are absolute, and a 1e-8 margin gave a pure mix and NashConv 1e-8."""
    meta = solve_metagame(0.5 + scale * np.array([[1.0, 0.0], [0.0, 1.0]]))
    assert abs(meta.value - 0.5 - 0.5 * scale) < 1e-9 * scale + 1e-15 and meta.nash_conv < 1e-9 * scale + 1e-15
    np.testing.assert_allclose(meta.attacker_mix, [0.5, 0.5], atol=1e-9)
    np.testing.assert_allclose(meta.defender_mix, [0.5, 0.5], atol=1e-9)


def test_a_game_of_equal_payoffs_has_its_value_and_no_gap():
    meta = solve_metagame(np.full((3, 2), 0.25))
    assert meta.value == 0.25 and meta.nash_conv == 0.0


def test_payoffs_whose_range_overflows_a_float_are_one_line():
    from redgame.errors import UserError

    with pytest.raises(UserError, match="span more than a float holds"):
        solve_metagame(np.array([[1e308, -1e308], [-1e308, 1e308]]))
    from redgame.games.optimal_sets import zero_sum_value

    with pytest.raises(UserError, match="a payoff is NaN or infinite"):  # the solver's own check, for library callers
        zero_sum_value(np.array([[np.nan, 0.0], [0.0, 1.0]]))


@pytest.mark.parametrize("kwargs,culprit", [
    ({"payoffs": [1.0, 2.0]}, "payoffs"),
    ({"payoffs": [[1.0, 2.0]], "attackers": ["a", "b"]}, "attackers"),
    ({"payoffs": [[1.0, 2.0]], "defenders": ["d"]}, "defenders"),
    ({"payoffs": [[1.0, 2.0]], "defender_payoffs": [[1.0]]}, "defender_payoffs"),
    ({"payoffs": [[1.0, 2.0, 3.0]] * 2, "defender_payoffs": [-1.0, -2.0, -3.0]}, "defender_payoffs"),  # broadcast
    ({"payoffs": [[1.0, 2.0]] * 2, "defender_payoffs": 0.0}, "defender_payoffs"),
])
def test_bad_matrices_name_the_culprit(kwargs, culprit):
    with pytest.raises(ValueError, match=f"^{culprit}"):
        solve_metagame(**kwargs)


def test_toy_crossplay_matrix_and_meta_nash():
    spec = make_spec("mirror", k=4)
    trained = train_regimes(spec, DynamicsConfig(steps=300, runs=2, log_every=300))
    attackers, defenders, a, b = crossplay_matrices(spec, trained)
    assert attackers == [*defenders, BEST_RESPONSE] and len(defenders) == 5
    # Entries are run-averaged payoffs; the reference is OpenSpiel's own game-tree evaluation.
    sigmas, rhos = trained["shared"].sigma, trained["bipolicy"].rho
    want = np.mean([openspiel_attacker_value(spec, s, r) for s, r in zip(sigmas, rhos)])
    np.testing.assert_allclose(a[0, 1], want, atol=1e-10)
    np.testing.assert_allclose(a + b, 0.0, atol=1e-12)
    # The best-responding attacker weakly beats every trained attacker against every defender.
    assert (a[-1] >= a[:-1].max(axis=0) - 1e-12).all()
    meta = solve_metagame(a, None, attackers, defenders)
    assert meta.attacker_mix[-1] > 1 - 1e-9
    gap_a, gap_d = best_response_gaps(a, b, meta.attacker_mix, meta.defender_mix)
    assert gap_a < 1e-8 and gap_d < 1e-8
    np.testing.assert_allclose(meta.value, a[-1].min(), atol=1e-9)
