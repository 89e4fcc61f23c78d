"""The payoff tensors and the normal form's size, against the normal form itself."""

from __future__ import annotations

import numpy as np
import pytest

from redgame.theory.presets import make_spec
from redgame.theory.strategies import (
    TooLargeToEnumerate,
    action_values,
    defender_behaviour_of_pure,
    normal_form,
    normal_form_size,
    observation_values,
    payoff_tensors,
)

SPECS = [("prompt_map", {"lam": 0.5}), ("hidden_intent", {"q": 0.3, "lam": 0.2, "deflect": True}),
         ("family", {"n": 3, "k": 2, "q": 0.4, "payoff": "nonzero_sum", "lam": 0.3}), ("mirror", {"k": 3, "benign": 1})]


@pytest.mark.parametrize("name,params", SPECS, ids=[n for n, _ in SPECS])
def test_sizes_and_tensors_match_the_normal_form(name, params):
    spec = make_spec(name, **params)
    nf = normal_form(spec)
    assert normal_form_size(spec) == nf.attacker_payoffs.shape
    t_a, t_d = payoff_tensors(spec)
    rho = defender_behaviour_of_pure(spec, nf.defender_pure)  # every pure defender
    sigma_rows = np.zeros((len(nf.attacker_pure), spec.n_seeds, spec.n_styles))
    if spec.seed_choice == "attacker":
        sigma_rows[np.arange(len(sigma_rows)), nf.attacker_pure[:, 0], nf.attacker_pure[:, 1]] = 1.0
    else:
        sigma_rows[np.arange(len(sigma_rows))[:, None], np.arange(spec.n_seeds), nf.attacker_pure] = 1.0
    # U_A(i, j) = sum_sk sigma_i[s, k] * action_values(rho_j)[s, k]; U_D likewise from the defender's side.
    np.testing.assert_allclose(np.einsum("isk,jsk->ij", sigma_rows, action_values(t_a, rho)), nf.attacker_payoffs,
                               atol=1e-12)
    np.testing.assert_allclose(np.einsum("ioa,joa->ij", observation_values(t_d, sigma_rows), rho), nf.defender_payoffs,
                               atol=1e-12)


def test_a_normal_form_too_large_to_build_is_refused_by_name():
    spec = make_spec("family", n=8, k=4)
    assert normal_form_size(spec) == (4**8, 2**11)
    with pytest.raises(TooLargeToEnumerate, match="^normal form: 65536 x 2048"):
        normal_form(spec)
