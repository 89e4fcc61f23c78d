"""The self-consistency collapse (La Malfa et al., arXiv 2605.08427) in the toys, over 20 seeds.

Each claim, or its failure, is asserted on 95% bootstrap intervals over 20 seeds, with margins
of at least 0.05 between the interval and the threshold. docs/theory.md reports the same
settings with the commands that print them.
"""

from __future__ import annotations

import numpy as np
import pytest

from redgame.games.dynamics import DynamicsConfig, run_dynamics
from redgame.games.phase import phase_diagram
from redgame.theory.presets import make_spec

SEEDS = 20


def cells(regime, grid, model="tabular", **params):
    diagram = phase_diagram(regime, grid, seeds=SEEDS, model=model, params=params)
    return {tuple(c[k] for k in diagram.keys): c for c in diagram.cells}


def low(cell, metric="mirror_gap"):
    return cell[f"{metric}_ci"][0]


def high(cell, metric="mirror_gap"):
    return cell[f"{metric}_ci"][1]


def test_shared_tables_collapse_at_the_reference_setting_and_one_model_per_role_does_not():
    shared = cells("shared", {"g": [1.0]})[(1.0,)]
    assert high(shared, "selfplay_asr") <= 0.01 and low(shared) >= 0.45
    assert shared["collapse_rate"] >= 0.6
    for regime in ("bipolicy", "separate"):
        other = cells(regime, {"g": [1.0]})[(1.0,)]
        assert high(other, "best_response_asr") <= 0.05, regime


def test_the_collapse_needs_a_positive_aligned_coupling_and_spread_initial_logits():
    grid = cells("shared", {"g": [0.0, 1.0], "init_scale": [0.25, 1.0]})
    # g = 0: the defender never learns and the attacker finds its weakest style: nothing is hidden
    assert high(grid[(0.0, 1.0)]) <= 0.15 and low(grid[(0.0, 1.0)], "selfplay_asr") >= 0.5
    assert high(grid[(1.0, 0.25)]) <= 0.1  # small initial spread: the defender catches up
    shifted = cells("shared", {"shift": [0, 1]})
    assert high(shifted[(1,)]) <= 0.25 and low(shifted[(0,)]) >= high(shifted[(1,)]) + 0.2


def test_the_gap_is_permanent_below_g_1_and_closes_above():
    """For 0 < g < 1 the abandoned styles stop moving; at g = 1 they move as log t; at g = 2 as a
    power of t (docs/theory.md, the rest points)."""
    spec = make_spec("mirror")
    horizons = [1000, 16000]
    traj = run_dynamics(spec, DynamicsConfig(runs=SEEDS, steps=16000, log_every=16000),
                        settings=[{"g": 0.5}, {"g": 1.0}, {"g": 2.0}], log_steps=horizons)
    best = traj.metrics["best_response_asr"][[list(traj.steps).index(h) for h in horizons]].reshape(2, 3, SEEDS)
    np.testing.assert_allclose(best[1, 0], best[0, 0], atol=0.01)  # g = 0.5: every seed's gap stays
    assert best[1, 0].mean() >= 0.6
    assert 0.01 <= (best[0, 1] - best[1, 1]).mean() <= 0.1 and best[1, 1].mean() >= 0.55  # g = 1: slowly
    assert best[1, 2].mean() <= best[0, 2].mean() - 0.25  # g = 2: it closes


def test_a_benign_seed_halves_the_gap_and_no_seed_meets_the_collapse_thresholds():
    grid = cells("shared", {"lam": [0.0, 1.0]}, benign="1")
    for cell in grid.values():
        assert cell["collapse_rate"] == 0.0  # the harmful seed is half the prompts: BR ASR <= 0.5 + lam/2 ...
        assert low(cell) >= 0.2  # ... but the same gap per harmful seed stays hidden


def test_a_shared_network_does_not_collapse_at_the_reference_setting():
    shared = cells("shared", {"g": [1.0]}, model="neural")[(1.0,)]
    assert high(shared, "best_response_asr") <= 0.05 and shared["collapse_rate"] == 0.0


def test_where_networks_leave_a_gap_one_network_per_role_leaves_it_too():
    """At a large initial spread the gap appears with a network, shared or not: it is initial
    compliance the defender never trained away, not self-consistency."""
    for regime in ("shared", "separate"):
        cell = cells(regime, {"init_scale": [4.0]}, model="neural", lr="0.014")[(4.0,)]
        assert low(cell) >= 0.4, regime


def test_bipolicy_beats_separate_only_at_unmatched_step_sizes():
    """K = 32, init_scale 2: at the same lr bipolicy closes more of the gap, but its effective
    step grows 20-fold as its factors grow; separate at a matched step does as well."""
    bipolicy = cells("bipolicy", {"lr": [0.5]}, k="32", init_scale="2")[(0.5,)]
    separate = cells("separate", {"lr": [0.5, 10.0]}, k="32", init_scale="2")
    assert high(bipolicy, "best_response_asr") <= low(separate[(0.5,)], "best_response_asr") - 0.05
    assert bipolicy["tangent"]["end"]["step_d"] >= 10 * bipolicy["tangent"]["start"]["step_d"]
    assert low(separate[(10.0,)], "best_response_asr") <= high(bipolicy, "best_response_asr")
    assert low(bipolicy, "best_response_asr") <= high(separate[(10.0,)], "best_response_asr")


@pytest.mark.parametrize("regime", ["shared"])
def test_negative_coupling_colludes(regime):
    cell = cells(regime, {"g": [-1.0]})[(-1.0,)]
    assert low(cell, "selfplay_asr") >= 0.5
