import numpy as np
import pytest

from redgame.theory import (
    GameSpec,
    Seed,
    ZeroSum,
    attacker_best_response,
    classify_attacker,
    classify_defender,
    expected_payoffs,
    make_spec,
    normal_form,
    parse_params,
    policy_metrics,
)
from redgame.theory.strategies import attacker_behaviour, defender_behaviour


def _two_seed_spec(**overrides):
    kw = dict(
        name="t",
        seeds=(Seed("h", True, 0.5), Seed("b", False, 0.5)),
        styles=("plain",),
        faithful=((True,), (True,)),
        observations=("h", "b"),
        observation_probs=(((1.0, 0.0),), ((0.0, 1.0),)),
    )
    kw.update(overrides)
    return GameSpec(**kw)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (dict(seeds=(Seed("h", True, 0.5), Seed("b", False, 0.6))), "prior"),
        (dict(seeds=(Seed("h", True, None), Seed("b", False, 0.5))), "prior"),
        (dict(faithful=((True,),)), "faithful"),
        (dict(observation_probs=(((0.5, 0.4),), ((0.0, 1.0),))), "observation_probs"),
        (dict(actions=("comply",)), "actions"),
        (dict(seed_choice="nobody"), "seed_choice"),
        (dict(styles=()), "styles"),
    ],
)
def test_spec_validation_names_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        _two_seed_spec(**overrides)


@pytest.mark.parametrize(
    "params, field",
    [({"lam": -0.1}, "lam"), ({"q": 1.5}, "q"), ({"foo": 1}, "foo"), ({"lam": "abc"}, "lam"),
     ({"deflect": "maybe"}, "deflect"), ({"payoff": "both"}, "payoff"), ({"safety": 2.0}, "safety")],
)
def test_preset_validation_names_the_field(params, field):
    with pytest.raises(ValueError, match=field):
        make_spec("hidden_intent", **params)


def test_zero_sum_payoffs_follow_the_formula():
    spec = make_spec("prompt_map", lam=0.3)
    u_a, u_d = spec.utilities()
    # seeds: harmful_1, harmful_2, benign_1, benign_2; actions: refuse, comply
    assert u_a[0, 0].tolist() == [0.0, 1.0]
    assert u_a[2, 0].tolist() == [0.3, 0.0]
    np.testing.assert_array_equal(u_d, -u_a)


def test_unfaithful_style_costs_the_attacker():
    spec = _two_seed_spec(styles=("plain", "twist"), faithful=((True, False), (True, True)),
                          observation_probs=(((1.0, 0.0), (0.0, 1.0)), ((0.0, 1.0), (0.0, 1.0))),
                          payoff=ZeroSum(lam=0.0, unfaithful_penalty=1.0))
    u_a, _ = spec.utilities()
    assert (u_a[0, 1] == -1.0).all()


def test_normal_form_matches_behaviour_payoffs():
    rng = np.random.default_rng(0)
    spec = make_spec("family", n=3, k=3, q=0.3, deflect=True)
    nf = normal_form(spec)
    for _ in range(10):
        x = rng.dirichlet(np.ones(len(nf.attacker_pure)))
        y = rng.dirichlet(np.ones(len(nf.defender_pure)))
        u_a, u_d = expected_payoffs(spec, attacker_behaviour(spec, x), defender_behaviour(spec, y))
        assert u_a == pytest.approx(x @ nf.attacker_payoffs @ y, abs=1e-12)
        assert u_d == pytest.approx(x @ nf.defender_payoffs @ y, abs=1e-12)


def test_best_response_equals_best_row_of_normal_form():
    rng = np.random.default_rng(1)
    for name in ("hidden_intent", "prompt_map", "family"):
        spec = make_spec(name)
        nf = normal_form(spec)
        y = rng.dirichlet(np.ones(len(nf.defender_pure)))
        _, value = attacker_best_response(spec, defender_behaviour(spec, y))
        assert value == pytest.approx((nf.attacker_payoffs @ y).max(), abs=1e-12)


def test_classes():
    spec = make_spec("prompt_map")
    refuse_all = np.array([[1.0, 0.0]] * 4)
    oracle = np.array([[1.0, 0.0]] * 2 + [[0.0, 1.0]] * 2)
    assert classify_defender(spec, refuse_all) == "always_refuse"
    assert classify_defender(spec, 1 - refuse_all) == "always_comply"
    assert classify_defender(spec, oracle) == "oracle"
    assert classify_defender(spec, np.full((4, 2), 0.5)) == "other"
    hidden = make_spec("hidden_intent")
    assert classify_attacker(hidden, np.array([[0.0, 1.0], [1.0, 0.0]])) == "disguise_harmful"
    assert classify_attacker(hidden, np.array([[0.0, 1.0], [0.0, 1.0]])) == "disguise_all"


def test_policy_metrics_mirror_gap():
    spec = make_spec("hidden_intent", lam=0.5)
    sigma = np.array([[1.0, 0.0], [1.0, 0.0]])  # plain everywhere
    rho = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])  # refuse harmful, comply benign and disguised
    m = policy_metrics(spec, sigma, rho)
    assert m["selfplay_asr"] == 0.0
    assert m["best_response_asr"] == pytest.approx(0.5)  # disguise the harmful seed
    assert m["mirror_gap"] == pytest.approx(0.5)
    assert m["over_refusal"] == 0.0


def test_parse_params():
    assert parse_params(["lam=0.5", "q = 0.1"]) == {"lam": "0.5", "q": " 0.1"}
    with pytest.raises(ValueError, match="key=value"):
        parse_params(["lam"])
    with pytest.raises(ValueError, match="--param: lam is given twice; give it once"):  # the last won unseen
        parse_params(["lam=0", "lam =1"])
