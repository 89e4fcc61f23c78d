"""The numpy network: backprop against finite differences, the base-behaviour fit, and the tangent
kernel against the change of the logits after a small step."""

from __future__ import annotations

import numpy as np
import pytest

from redgame.games import mlp
from redgame.games.neural import NetConfig, make_neural_policies
from redgame.games.policies import FrozenDraws, make_policies
from redgame.games.tangent import coupling_report, tangent_kernel
from redgame.theory.presets import make_spec


def _params(runs=2, seeds=2, styles=3, embed=4, hidden=5):
    rng = np.random.default_rng(1)
    p = mlp.init_params(lambda shape: rng.standard_normal((runs, *shape)), seeds, styles, embed, hidden)
    for v in p.values():
        v += 0.2 * rng.standard_normal(v.shape)  # nonzero biases too
    rows = mlp.cell_rows(seeds, styles, np.arange(seeds * styles), mlp.ATTACKER).join(
        mlp.cell_rows(seeds, styles, np.array([4, 0, 2]), mlp.DEFENDER))
    return p, rows


def test_backward_matches_finite_differences():
    p, rows = _params()
    weight = np.random.default_rng(2).standard_normal((2, len(rows)))
    out, cache = mlp.forward(p, rows)
    grads = mlp.backward(p, rows, cache, weight)
    h = 1e-6
    for name, value in p.items():
        want = np.zeros_like(value)
        for idx in np.ndindex(value.shape):
            old = value[idx]
            value[idx] = old + h
            up = (mlp.forward(p, rows)[0] * weight).sum()
            value[idx] = old - h
            down = (mlp.forward(p, rows)[0] * weight).sum()
            value[idx] = old
            want[idx] = (up - down) / (2 * h)
        np.testing.assert_allclose(grads[name], want, atol=1e-7, err_msg=name)


def test_runs_are_independent():
    p, rows = _params(runs=3)
    one = {k: v[1:2].copy() for k, v in p.items()}
    np.testing.assert_allclose(mlp.forward(p, rows)[0][1:2], mlp.forward(one, rows)[0], atol=1e-12)


def test_the_fit_reproduces_the_tabular_initial_pair():
    """Every neural model starts from the base behaviour: the tabular initial logits."""
    spec = make_spec("mirror", k=8)
    draws = FrozenDraws.draw(spec, 6, seed=0, scale=1.0)
    tabular = make_policies("separate", spec, FrozenDraws.draw(spec, 6, seed=0, scale=1.0))
    model = make_neural_policies("shared", spec, draws, 1.0, NetConfig())
    z_a, z_d = model.logits()
    t_a, t_d = tabular.logits()
    assert np.median(model.fit_error) < 1e-3 and model.fit_error.max() < 0.1
    assert np.abs(z_a - t_a).max() < 0.3 and np.abs(z_d - t_d).max() < 0.3


@pytest.mark.parametrize("kind,model,g", [("shared", "tabular", 1.0), ("shared", "tabular", -0.4),
                                         ("bipolicy", "tabular", 1.0), ("shared", "neural", 1.0),
                                         ("bipolicy", "neural", 1.0), ("separate", "neural", 1.0)])
def test_tangent_kernel_predicts_the_change_of_the_logits(kind, model, g):
    """A step lr * J^T v moves the logits by lr * K v to first order: K from the model's backward."""
    spec = make_spec("mirror", harmful=1, benign=1, k=3)
    draws = FrozenDraws.draw(spec, 2, seed=4, scale=1.0)
    if model == "neural":
        policies = make_neural_policies(kind, spec, draws, g, NetConfig(embed=3, hidden=6, fit_steps=30))
    else:
        policies = make_policies(kind, spec, draws, g, rank=2, features=3)
    rng = np.random.default_rng(5)
    for p in policies.params.values():  # off the LoRA starting point, where B = V = 0
        p += 0.3 * rng.standard_normal(p.shape)
    kernel = tangent_kernel(policies)
    z_a, z_d = policies.logits()
    v = rng.standard_normal((2, z_a[0].size + z_d.shape[1]))
    step = 1e-6
    policies.step(policies.backward(v[:, :z_a[0].size].reshape(z_a.shape), v[:, z_a[0].size:]), step)
    new_a, new_d = policies.logits()
    moved = np.concatenate([(new_a - z_a).reshape(2, -1), new_d - z_d], axis=1) / step
    np.testing.assert_allclose(moved, np.einsum("rij,rj->ri", kernel, v), rtol=1e-4, atol=1e-6)


def test_coupling_report_reads_the_hand_coupling_of_the_tables():
    spec = make_spec("mirror", k=4)
    for g in (1.0, 0.5, -2.0):
        shared = make_policies("shared", spec, FrozenDraws.draw(spec, 2, 0, 1.0), g)
        report = coupling_report(shared, lr=0.3)
        np.testing.assert_allclose(report["coupling"], g)
        np.testing.assert_allclose(report["cross_coupling"], 0.0)
        np.testing.assert_allclose(report["generalisation"], 0.0)
        np.testing.assert_allclose(report["step_a"], 0.3)
        np.testing.assert_allclose(report["step_d"], 0.3 * g * g)
    shifted = coupling_report(make_policies("shared", spec, FrozenDraws.draw(spec, 2, 0, 1.0), 1.0, shift=1))
    np.testing.assert_allclose(shifted["coupling"], 0.0)  # the defender's logit of a cell reads the next one
    np.testing.assert_allclose(shifted["cross_coupling"], 1.0 / 3)  # one of the 3 other cells, with weight 1
    separate = coupling_report(make_policies("separate", spec, FrozenDraws.draw(spec, 2, 0, 1.0)))
    np.testing.assert_allclose(separate["coupling"], 0.0)


def test_a_shared_network_couples_the_roles_without_being_told_to():
    """The shared network's attacker step on a prompt moves its refusal of the same prompt the
    same way (0 < coupling < 1), and of other prompts too (cross_coupling > 0); one network per
    role, or one adapter per role, does not couple them."""
    spec = make_spec("mirror", k=8)
    draws = FrozenDraws.draw(spec, 10, seed=0, scale=1.0)
    shared = coupling_report(make_neural_policies("shared", spec, draws, 1.0, NetConfig(fit_steps=300)))
    assert 0.2 < shared["coupling"].mean() < 0.8 and shared["cross_coupling"].mean() > 0.1
    assert shared["generalisation"].mean() > 0.2
    for kind in ("separate", "bipolicy"):
        report = coupling_report(make_neural_policies(kind, spec, FrozenDraws.draw(spec, 3, 0, 1.0), 1.0,
                                                      NetConfig(fit_steps=50)))
        np.testing.assert_allclose(report["coupling"], 0.0)
        np.testing.assert_allclose(report["cross_coupling"], 0.0)


def test_neural_models_need_cells_and_valid_shapes():
    spec = make_spec("hidden_intent")
    with pytest.raises(ValueError, match="^regime: neural shared needs a spec"):
        make_neural_policies("shared", spec, FrozenDraws.draw(spec, 1, 0, 1.0))
    with pytest.raises(ValueError, match="^hidden:"):
        NetConfig(hidden=0)
    with pytest.raises(ValueError, match="^model:"):
        make_neural_policies("advgame", make_spec("mirror", k=2), FrozenDraws.draw(make_spec("mirror", k=2), 1, 0, 1.0))
