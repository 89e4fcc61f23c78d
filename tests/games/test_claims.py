"""The equilibrium claims of La Malfa et al. (arXiv 2605.08427), checked exactly."""

import pytest

from redgame.games.claims import equilibrium_classes, game_value, hidden_intent_value
from redgame.theory import make_spec


def test_prompt_map_lambda_zero_holds_trivial_and_oracle_defenders():
    spec = make_spec("prompt_map", lam=0.0)
    assert game_value(spec) == 0.0
    assert {"always_refuse", "oracle"} <= equilibrium_classes(spec)


@pytest.mark.parametrize("lam", [0.1, 0.5, 1.0, 3.0])
def test_prompt_map_positive_lambda_rules_out_always_refuse(lam):
    classes = equilibrium_classes(make_spec("prompt_map", lam=lam))
    assert "always_refuse" not in classes
    assert "oracle" in classes


@pytest.mark.parametrize("lam", [0.0, 0.25, 0.5, 0.99, 1.0, 2.0])
@pytest.mark.parametrize("q", [0.0, 0.3])
def test_hidden_intent_value_closed_form(lam, q):
    spec = make_spec("hidden_intent", lam=lam, q=q)
    assert game_value(spec) == pytest.approx(hidden_intent_value(lam, q), abs=1e-8)


@pytest.mark.parametrize("lam", [0.25, 0.5, 2.0])
def test_hidden_intent_has_no_oracle(lam):
    assert "oracle" not in equilibrium_classes(make_spec("hidden_intent", lam=lam))
    # Full detection (q = 1) restores the oracle.
    assert "oracle" in equilibrium_classes(make_spec("hidden_intent", lam=lam, q=1.0))


def test_game_value_of_a_game_too_large_to_enumerate_is_the_lp_value():
    from redgame.games.solve import solve

    spec = make_spec("family")  # 81 × 64 strategies: the optimal sets are not listed
    assert game_value(spec) == pytest.approx(solve(spec, method="sequence-form-linprog").value, abs=1e-9)
