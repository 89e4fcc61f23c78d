"""Confidence intervals over seeds against closed forms, and the collapse test."""

from __future__ import annotations

import math

import numpy as np
import pytest

from redgame.games.stats import collapsed, mean_ci, mean_t_ci, pooled_sd, rate_ci, seed_summary, seeds_to_decide


def test_bootstrap_interval_of_a_mean_matches_the_normal_theory_interval():
    # For a large sample the percentile bootstrap of the mean approaches mean +- 1.96 s / sqrt(n).
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(4, 400))
    got = mean_ci(x)
    half = 1.959964 * x.std(axis=1, ddof=1) / math.sqrt(400)
    np.testing.assert_allclose(got[:, 0], x.mean(axis=1) - half, atol=0.02)
    np.testing.assert_allclose(got[:, 1], x.mean(axis=1) + half, atol=0.02)
    np.testing.assert_array_equal(mean_ci(x), got)  # a fixed generator: the same interval every time


def test_bootstrap_interval_edge_cases():
    np.testing.assert_allclose(mean_ci(np.full(20, 0.3)), [0.3, 0.3])  # every seed the same
    low, high = mean_ci(np.array([0.0, 1.0] * 10))
    assert 0.2 < low < 0.35 and 0.65 < high < 0.8  # about 0.5 +- 1.96 * 0.5 / sqrt(20)
    with pytest.raises(ValueError, match="^seeds: a confidence interval needs at least 2 seeds"):
        mean_ci(np.array([0.4]))


@pytest.mark.parametrize("k,n", [(0, 20), (7, 20), (20, 20), (1, 3)])
def test_wilson_interval_matches_its_closed_form(k, n):
    z, p = 1.959964, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    low, high = rate_ci(k, n)
    assert low == pytest.approx(max(centre - half, 0.0), abs=1e-6)
    assert high == pytest.approx(min(centre + half, 1.0), abs=1e-6)


def test_collapse_thresholds_and_summary():
    selfplay = np.array([[0.01, 0.05, 0.06, 0.0], [0.0, 0.0, 0.0, 0.0]])
    best = np.array([[0.5, 0.9, 0.9, 0.49], [0.7, 0.7, 0.7, 0.7]])
    np.testing.assert_array_equal(collapsed(selfplay, best), [[True, True, False, False], [True] * 4])
    out = seed_summary(selfplay, best)
    np.testing.assert_allclose(out["mirror_gap"], (best - selfplay).mean(axis=1))
    np.testing.assert_allclose(out["collapse_rate"], [0.5, 1.0])
    assert out["mirror_gap_ci"].shape == (2, 2) and out["collapse_rate_ci"].shape == (2, 2)
    np.testing.assert_allclose(out["mirror_gap_ci"][1], [0.7, 0.7])
    assert out["collapse_rate_ci"][1][0] == pytest.approx(rate_ci(4, 4)[0])


@pytest.mark.parametrize("d, one_sample, n", [(0.5, False, 64), (0.8, False, 26), (0.2, False, 394), (0.5, True, 34),
                                          (0.8, True, 15)])
def test_seeds_to_decide_matches_published_power_tables(d, one_sample, n):
    # Cohen (1988), tables 2.4.1 and 2.4.2, and G*Power's exact noncentral-t sizes (d = 0.2: 394, Cohen's 393
    # is his normal approximation): alpha 0.05 two-sided, power 0.8.
    assert seeds_to_decide(d * 0.3, 0.3, one_sample=one_sample) == n


def test_seeds_to_decide_reaches_its_power_by_simulation():
    from scipy.stats import ttest_ind

    rng = np.random.default_rng(0)
    n = seeds_to_decide(1.0, 1.0)
    power = {}
    for m in (n - 1, n):
        a, b = rng.normal(1.0, 1.0, (20_000, m)), rng.normal(0.0, 1.0, (20_000, m))
        power[m] = float((ttest_ind(a, b, axis=1).pvalue < 0.05).mean())
    assert power[n] >= 0.79 and power[n - 1] < 0.795  # 20,000 trials: standard error 0.003; at n - 1 it is 0.78


def test_seeds_to_decide_on_a_large_effect_by_simulation():
    """Where scipy's noncentral t gives NaN for its far tail (a large ncp) the power still rises with n:
    a +20-point gain over seeds spread 3 points takes 3 seeds, not the 15 it once said."""
    from scipy.stats import ttest_1samp

    assert seeds_to_decide(11.7, 1.0) == 2
    assert seeds_to_decide(0.2, 1e-12) == 2  # the near tail NaN too: it said None, as if no n would do
    n = seeds_to_decide(0.2, 0.03, one_sample=True)
    rng = np.random.default_rng(1)
    power = {m: float((ttest_1samp(rng.normal(0.2, 0.03, (20_000, m)), 0.0, axis=1).pvalue < 0.05).mean())
             for m in (n - 1, n)}
    assert n == 3 and power[n] >= 0.8 > power[n - 1]  # about 0.999 and 0.38


def test_seeds_to_decide_says_nothing_without_spread_or_difference():
    assert seeds_to_decide(0.2, 0.0) is None and seeds_to_decide(0.0, 1.0) is None
    assert seeds_to_decide(1e-6, 1.0) is None  # over the most seeds it will count
    assert seeds_to_decide(10.0, 1.0) == 2     # a huge difference: the fewest a t-test takes


def test_pooled_sd_is_the_two_sample_t_tests():
    a, b = [0.1, 0.4, 0.2], [0.0, 0.5, 0.9, 0.3]
    expected = math.sqrt((2 * np.var(a, ddof=1) + 3 * np.var(b, ddof=1)) / 5)
    assert pooled_sd(a, b) == pytest.approx(expected) and pooled_sd(a) == pytest.approx(np.std(a, ddof=1))


def test_the_t_interval_of_a_mean_is_scipys_and_a_point_without_spread():
    from scipy import stats as scipy_stats

    values = [0.6, 0.7, 0.65, 0.2]
    want = scipy_stats.ttest_1samp(values, 0.0).confidence_interval(0.95)
    assert mean_t_ci(values) == pytest.approx((want.low, want.high))
    assert mean_t_ci([0.25, 0.25]) == (0.25, 0.25)
    for value in (17 / 72, 0.2, 0.1, 1 / 3):  # equal values whose float mean rounds: still no spread
        for n in (3, 6, 7):
            low, high = mean_t_ci([value] * n)
            assert low == high
    with pytest.raises(ValueError, match="at least 2 values"):  # one seed was a point interval, as if certain
        mean_t_ci([0.3])


def test_holm_against_a_hand_computation_and_bonferroni():
    from redgame.games.stats import holm

    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> made non-decreasing
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    rng = np.random.default_rng(7)
    p = rng.uniform(0, 0.2, size=9)
    adjusted = np.array(holm(p))
    assert np.all(adjusted >= p) and np.all(adjusted <= np.minimum(1, 9 * p) + 1e-12)  # between raw and Bonferroni
    assert holm([]) == [] and holm([0.7]) == [0.7]


def test_t_pvalue_is_scipys_one_sample_t_test():
    from scipy.stats import ttest_1samp

    from redgame.games.stats import t_pvalue, variance_of_mean

    values = np.array([0.1, 0.35, 0.2, 0.15])
    assert t_pvalue(values.mean(), np.sqrt(variance_of_mean(values)), 3) == pytest.approx(
        ttest_1samp(values, 0.0).pvalue)
    assert t_pvalue(0.3, 0.0, 3) is None  # no spread: no test


def _coverage(n: int, probs: list[float]) -> float:
    """The exact probability, over every table of n pairs, that the paired interval covers the true difference."""
    from scipy.stats import multinomial

    from redgame.games.stats import paired_rate_diff_ci

    truth, covered = probs[1] - probs[2], 0.0
    for both in range(n + 1):
        for first in range(n + 1 - both):
            for second in range(n + 1 - both - first):
                neither = n - both - first - second
                low, high = paired_rate_diff_ci([1] * (both + first) + [0] * (second + neither),
                                                [1] * both + [0] * first + [1] * second + [0] * neither)
                if low <= truth <= high:
                    covered += multinomial.pmf([both, first, second, neither], n, probs)
    return covered


@pytest.mark.parametrize("probs", [[0.05, 0.1, 0.05, 0.8], [0.3, 0.2, 0.1, 0.4], [0.0, 0.1, 0.0, 0.9]])
def test_the_paired_rate_difference_interval_covers_at_its_level_at_eight_prompts(probs):
    """Exact coverage by enumeration (both, first only, second only, neither): the bootstrap of the paired
    differences it replaced covered 0.34-0.54 at 8 prompts and a gap of +0.05."""
    assert _coverage(8, probs) >= 0.95


def test_the_paired_rate_difference_intervals_worst_coverage_at_eight_prompts_is_the_documented_one():
    """docs/llm_evaluation.md: "falls to 0.87 at the worst (0, 0.25, 0.75, 0)"."""
    assert _coverage(8, [0.0, 0.25, 0.75, 0.0]) == pytest.approx(0.873, abs=0.001)


def test_the_paired_rate_difference_interval_is_mirrored_and_never_a_point():
    from redgame.games.stats import paired_rate_diff_ci

    first, second = [1, 1, 1, 0, 0, 1, 0, 0, 1], [1, 0, 0, 0, 1, 1, 0, 0, 0]
    low, high = paired_rate_diff_ci(first, second)
    assert low < (5 - 3) / 9 < high and -1 <= low and high <= 1
    assert paired_rate_diff_ci(second, first) == pytest.approx((-high, -low))
    low, high = paired_rate_diff_ci([0] * 8, [0] * 8)  # every pair agrees: the bootstrap gave [0, 0]
    assert low < 0 < high and high == pytest.approx(rate_ci(0, 8)[1], rel=0.5)
