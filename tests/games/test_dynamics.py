"""Learning dynamics: gradients against finite differences of the theory's payoffs (tables and
networks, any coupling g), the batched metrics against the per-policy theory functions and the
normal form, batched settings against one run per setting, and each regime's learning rule.
The mirror-gap claims over 20 seeds with confidence intervals are in test_mirror_claims.py."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from redgame.games.batch_metrics import batch_metrics
from redgame.games.dynamics import (
    REFERENCE_GAMES,
    DynamicsConfig,
    dpo_md_exact,
    dpo_md_sampled,
    exact_logit_gradients,
    reinforce_logit_gradients,
    run_dynamics,
)
from redgame.games.exploitability import nash_conv
from redgame.games.neural import NetConfig, make_neural_policies
from redgame.games.policies import FrozenDraws, attacker_policy, cell_of_observation, defender_policy, make_policies
from redgame.theory.classify import policy_metrics
from redgame.theory.presets import make_spec
from redgame.theory.strategies import expected_payoffs, normal_form

SPECS = {
    "mirror": lambda: make_spec("mirror", harmful=1, benign=1, k=3, lam=0.5),
    "hidden_intent": lambda: make_spec("hidden_intent", q=0.3, lam=0.5),
    "prompt_map": lambda: make_spec("prompt_map", lam=0.5),
    "family_nonzero": lambda: make_spec("family", n=3, k=2, q=0.2, payoff="nonzero_sum", lam=0.4),
}


def reference(regime: str, **overrides):
    name, params = REFERENCE_GAMES[regime]
    config = DynamicsConfig(regime=regime, log_every=4000, **overrides)
    return run_dynamics(make_spec(name, **params), config)


def _fd(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    grad = np.zeros_like(x)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + h
        up = f()
        x[idx] = old - h
        down = f()
        x[idx] = old
        grad[idx] = (up - down) / (2 * h)
    return grad


def _model(kind, g, spec, shift=0, model="tabular"):
    draws = FrozenDraws.draw(spec, 2, seed=3, scale=1.0)
    if model == "neural":
        return make_neural_policies(kind, spec, draws, g, NetConfig(embed=3, hidden=5, fit_steps=20), rank=2)
    return make_policies(kind, spec, draws, coupling=g, rank=2, features=3, shift=shift)


@pytest.mark.parametrize("kind,g,spec_name,shift,model", [
    ("shared", 1.0, "mirror", 0, "tabular"), ("shared", -1.0, "mirror", 0, "tabular"),
    ("shared", 0.37, "mirror", 1, "tabular"), ("shared", np.array([2.5, -0.4]), "mirror", 0, "tabular"),
    ("bipolicy", 1.0, "mirror", 0, "tabular"), ("bipolicy", -1.0, "mirror", 2, "tabular"),
    ("separate", 1.0, "mirror", 0, "tabular"), ("separate", 1.0, "hidden_intent", 0, "tabular"),
    ("separate", 1.0, "prompt_map", 0, "tabular"),
    ("shared", 1.0, "mirror", 0, "neural"), ("bipolicy", 1.0, "mirror", 0, "neural"),
    ("separate", 0.5, "mirror", 0, "neural"),
])
def test_exact_gradients_match_finite_differences(kind, g, spec_name, shift, model):
    spec = SPECS[spec_name]()
    model = _model(kind, g, spec, shift, model)
    rng = np.random.default_rng(0)
    for p in model.params.values():  # move off the initial point (bipolicy's V and B start at 0)
        p += 0.3 * rng.standard_normal(p.shape)
    sigma, rho = model.policies()
    grads = model.backward(*exact_logit_gradients(spec, sigma, rho))
    frozen_sigma, frozen_rho = sigma.copy(), rho.copy()

    def attacker_payoff():  # the attacker's payoff as the attacker path of the parameters moves
        return expected_payoffs(spec, model.policies()[0], frozen_rho)[0].sum()

    def defender_payoff():
        return expected_payoffs(spec, frozen_sigma, model.policies()[1])[1].sum()

    for name, p in model.params.items():
        want = _fd(attacker_payoff, p) + _fd(defender_payoff, p)
        np.testing.assert_allclose(grads[name], want, atol=1e-7, err_msg=name)


def test_shared_updates_move_the_same_cells_for_both_roles():
    spec = make_spec("mirror", harmful=2, benign=1, k=4)
    cells = cell_of_observation(spec)
    assert sorted(cells.tolist()) == list(range(12))
    model = make_policies("shared", spec, FrozenDraws.draw(spec, 1, 0, 1.0), coupling=1.0)
    z_a0, z_d0 = model.logits()
    model.params["theta"][0, 1, 2] += 1.0  # one (seed, style) cell
    z_a, z_d = model.logits()
    assert np.flatnonzero(z_a - z_a0).tolist() == [1 * 4 + 2]
    obs = spec.observations.index("harmful_1:style_2")
    assert np.flatnonzero(z_d - z_d0).tolist() == [obs]
    assert cell_of_observation(make_spec("hidden_intent")) is None
    with pytest.raises(ValueError, match="mirror"):
        make_policies("shared", make_spec("hidden_intent"), FrozenDraws.draw(make_spec("hidden_intent"), 1, 0, 1.0))


def test_reinforce_is_unbiased():
    spec = SPECS["mirror"]()
    model = make_policies("separate", spec, FrozenDraws.draw(spec, 2, 1, 1.0))
    sigma, rho = model.policies()
    exact_a, exact_d = exact_logit_gradients(spec, sigma, rho)
    est_a, est_d = reinforce_logit_gradients(spec, sigma, rho, 200_000, np.random.default_rng(5))
    np.testing.assert_allclose(est_a, exact_a, atol=6e-3)
    np.testing.assert_allclose(est_d, exact_d, atol=6e-3)
    pm = SPECS["prompt_map"]()
    model = make_policies("separate", pm, FrozenDraws.draw(pm, 2, 1, 1.0))
    sigma, rho = model.policies()
    est_a, _ = reinforce_logit_gradients(pm, sigma, rho, 200_000, np.random.default_rng(6))
    np.testing.assert_allclose(est_a, exact_logit_gradients(pm, sigma, rho)[0], atol=6e-3)


def test_dpo_md_exact_is_the_gradient_of_the_expected_dpo_loss():
    spec = make_spec("hidden_intent", q=0.4, payoff="nonzero_sum", lam=0.5)
    rng = np.random.default_rng(2)
    z_a, z_d = rng.standard_normal((2, 2, 2)), rng.standard_normal((2, 3))
    ref_a, ref_d = rng.standard_normal((2, 2, 2)), rng.standard_normal((2, 3))
    beta, temp = 0.3, 0.7
    grad_a, grad_d = dpo_md_exact(spec, (z_a, z_d), (ref_a, ref_d), beta, temp)
    u_a, u_d = spec.utilities()
    sigma_ref, rho_ref = attacker_policy(spec, ref_a), defender_policy(ref_d)

    def bce(m, label):
        return -(label * np.log(1 / (1 + np.exp(-m))) + (1 - label) * np.log(1 / (1 + np.exp(m))))

    def loss():  # written out from the definition, one context at a time
        total = 0.0
        for r in range(2):
            for s in range(2):
                v = [sum(spec.obs_probs[s, k, o] * rho_ref[r, o] @ u_a[s, k] for o in range(3)) for k in range(2)]
                b, w = int(np.argmax(v)), int(np.argmin(v))
                if v[b] - v[w] > 1e-12:
                    m = beta * ((z_a[r, s, b] - z_a[r, s, w]) - (ref_a[r, s, b] - ref_a[r, s, w]))
                    total += spec.seed_weights[s] * bce(m, 1 / (1 + np.exp(-(v[b] - v[w]) / temp)))
                for k, o in itertools.product(range(2), range(3)):
                    diff = u_d[s, k, 0] - u_d[s, k, 1]
                    if abs(diff) > 1e-12:
                        weight = spec.seed_weights[s] * sigma_ref[r, s, k] * spec.obs_probs[s, k, o]
                        m = beta * (z_d[r, o] - ref_d[r, o])
                        total += weight * bce(m, 1 / (1 + np.exp(-diff / temp)))
        return total

    np.testing.assert_allclose(grad_a, -_fd(loss, z_a), atol=1e-7)
    np.testing.assert_allclose(grad_d, -_fd(loss, z_d), atol=1e-7)


def test_sampled_dpo_md_is_unbiased_for_the_exact_pairs():
    """With two candidates per context (2 styles, 2 actions), a sampled best/worst pair exists when
    both show up among the n draws, and is then the exact pair: E[sampled] = P(pair) * exact."""
    spec = make_spec("hidden_intent", q=0.4, payoff="nonzero_sum", lam=0.5)
    rng = np.random.default_rng(4)
    z = (rng.standard_normal((2, 2, 2)), rng.standard_normal((2, 3)))
    ref = (z[0] + 0.3 * rng.standard_normal((2, 2, 2)), z[1] + 0.3 * rng.standard_normal((2, 3)))
    beta, temp, n = 0.5, 0.7, 3
    exact_a, exact_d = dpo_md_exact(spec, z, ref, beta, temp)
    got_a, got_d = dpo_md_sampled(spec, z, ref, beta, temp, 400_000, n, np.random.default_rng(9))
    sigma_ref, rho_ref = attacker_policy(spec, ref[0]), defender_policy(ref[1])
    pair_a = 1 - (sigma_ref**n).sum(axis=-1, keepdims=True)
    pair_d = 1 - (rho_ref**n).sum(axis=-1)
    np.testing.assert_allclose(got_a, pair_a * exact_a, atol=2e-3)
    np.testing.assert_allclose(got_d, pair_d * exact_d, atol=2e-3)


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_batch_metrics_match_policy_metrics_and_nash_conv(spec_name):
    spec = SPECS[spec_name]()
    rng = np.random.default_rng(7)
    sigma = attacker_policy(spec, 2 * rng.standard_normal((4, spec.n_seeds, spec.n_styles)))
    rho = defender_policy(2 * rng.standard_normal((4, spec.n_observations)))
    rho[0] = np.eye(2)[rng.integers(0, 2, spec.n_observations)]  # a pure defender too
    got = batch_metrics(spec, sigma, rho)
    for r in range(4):
        want = policy_metrics(spec, sigma[r], rho[r])
        for name, value in want.items():
            if isinstance(value, str):
                assert got[name][r] == value, name
            else:
                np.testing.assert_allclose(got[name][r], value, atol=1e-12, err_msg=name)
        np.testing.assert_allclose(got["nash_conv"][r], nash_conv(spec, sigma[r], rho[r]), atol=1e-12)
    # Any batch shape: [2, 2] gives the same numbers and nested labels.
    nested = batch_metrics(spec, sigma.reshape(2, 2, *sigma.shape[1:]), rho.reshape(2, 2, *rho.shape[1:]))
    np.testing.assert_array_equal(nested["mirror_gap"].reshape(-1), got["mirror_gap"])
    assert nested["defender_class"] == [got["defender_class"][:2], got["defender_class"][2:]]


@pytest.mark.parametrize("spec_name", list(SPECS))
def test_best_response_asr_is_the_normal_form_best_response(spec_name):
    spec = SPECS[spec_name]()
    nf = normal_form(spec)
    rng = np.random.default_rng(11)
    rho = defender_policy(2 * rng.standard_normal((3, spec.n_observations)))
    sigma = attacker_policy(spec, rng.standard_normal((3, spec.n_seeds, spec.n_styles)))
    got = batch_metrics(spec, sigma, rho, classes=False)["best_response_asr"]
    for r in range(3):
        # The behaviour defender as a product mixture over the normal form's pure defenders.
        y = np.prod(rho[r][np.arange(spec.n_observations), nf.defender_pure], axis=1)
        assert abs(y.sum() - 1) < 1e-12
        np.testing.assert_allclose(got[r], (nf.attacker_payoffs @ y).max(), atol=1e-12)


# -- each regime's learning rule -----------------------------------------------------------

def test_advgame_reaches_the_oracle_when_the_observation_reveals_intent():
    traj = reference("advgame")
    assert not traj.spec.is_zero_sum
    assert traj.classes["defender_class"][-1] == ["oracle"] * traj.config.runs


def test_sequential_and_sampled_rules_learn():
    fp = reference("sequential", steps=500)
    assert fp.metrics["nash_conv"][-1].max() < 0.01  # fictitious play converges in zero-sum games
    abr = reference("sequential", steps=20, rule="abr")
    assert abr.classes["defender_class"][-1] == ["always_refuse"] * abr.config.runs
    sampled = reference("separate", steps=600, estimator="sampled", batch=32)
    assert sampled.metrics["best_response_asr"][-1].mean() < sampled.metrics["best_response_asr"][0].mean() - 0.3
    adv = reference("advgame", steps=800, estimator="sampled", batch=32)
    assert adv.metrics["nash_conv"][-1].mean() < adv.metrics["nash_conv"][0].mean() / 4


def test_batched_settings_are_runs_of_one_setting_each():
    """Settings of g, lr and init_scale advance as one batch with common draws; each setting's
    runs equal a run_dynamics of that setting alone, for tables and networks."""
    spec = make_spec("mirror", k=4)
    settings = [{"g": 0.5, "lr": 0.3}, {"g": 2.0, "init_scale": 2.0}, {}]
    for model, regime in (("tabular", "shared"), ("tabular", "bipolicy"), ("neural", "shared")):
        config = DynamicsConfig(regime=regime, model=model, steps=40, runs=3, log_every=40, fit_steps=30)
        batch = run_dynamics(spec, config, settings=settings, log_steps=[10])
        assert batch.steps.tolist() == [0, 10, 40]
        for i, setting in enumerate(settings):
            alone = run_dynamics(spec, DynamicsConfig(**{**config.__dict__, **setting}), log_steps=[10])
            for name in ("selfplay_asr", "best_response_asr"):
                np.testing.assert_allclose(batch.metrics[name][:, 3 * i:3 * i + 3], alone.metrics[name],
                                           atol=1e-10, err_msg=f"{model} {regime} {setting} {name}")
    with pytest.raises(ValueError, match="^k: only g, lr, init_scale"):
        run_dynamics(spec, DynamicsConfig(steps=2), settings=[{"k": 3}])
    with pytest.raises(ValueError, match="^lr:"):
        run_dynamics(spec, DynamicsConfig(steps=2), settings=[{"lr": -1.0}])


def test_metrics_are_logged_every_step_and_deterministic():
    spec = make_spec("mirror", k=3)
    a = run_dynamics(spec, DynamicsConfig(steps=30, runs=2, log_every=1))
    b = run_dynamics(spec, DynamicsConfig(steps=30, runs=2, log_every=1))
    assert a.steps.tolist() == list(range(31))
    assert a.metrics["selfplay_asr"].shape == (31, 2) and len(a.classes["defender_class"]) == 31
    np.testing.assert_array_equal(a.metrics["nash_conv"], b.metrics["nash_conv"])


@pytest.mark.parametrize("kwargs,culprit", [
    ({"regime": "selfish"}, "regime"), ({"steps": 0}, "steps"), ({"lr": -1.0}, "lr"), ({"g": float("inf")}, "g"),
    ({"estimator": "exactly"}, "estimator"), ({"ema": 1.0}, "ema"), ({"candidates": 1}, "candidates"),
    ({"rule": "br"}, "rule"), ({"model": "mlp"}, "model"), ({"model": "neural", "shift": 1}, "shift"),
    ({"model": "neural", "regime": "sequential"}, "model"), ({"hidden": 0}, "hidden"),
    ({"role_scale": -1.0}, "role_scale"), ({"init_scale": 0.0}, "init_scale"),
])
def test_bad_config_names_the_culprit(kwargs, culprit):
    with pytest.raises(ValueError, match=f"^{culprit}:"):
        DynamicsConfig(**kwargs)


def test_deflect_specs_are_refused_by_name():
    spec = make_spec("mirror", k=2, deflect=True)
    with pytest.raises(ValueError, match="^actions:"):
        run_dynamics(spec, DynamicsConfig(steps=2))
