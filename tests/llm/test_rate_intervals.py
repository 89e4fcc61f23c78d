"""Held-out rates' intervals over the prompts: Wilson's against its closed form, and the paired change's plumbing
(which answers count, its sign, the prompts both judged)."""

import math

import pytest

from redgame.errors import UserError
from redgame.games.stats import paired_rate_diff_ci
from redgame.llm.rate_intervals import interval_lines, intervals, rate_change, rate_interval


def _answers(refused_harmful, refused_benign):
    rows = [("h", True, r) for r in refused_harmful] + [("b", False, r) for r in refused_benign]
    return [{"id": f"{kind}{i}", "harmful": harmful, "refused": r} for i, (kind, harmful, r) in enumerate(rows)]


def _wilson(k, n, z=1.959963984540054):
    """Wilson (1927), written out: centre and half-width of the score interval."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


@pytest.mark.parametrize("k, n", [(0, 7), (3, 7), (7, 7), (44, 72)])
def test_a_rate_and_its_wilson_interval_count_only_the_answers_the_judge_read(k, n):
    answers = _answers([True] * k + [False] * (n - k) + [None, None], [True, None, False])
    found = rate_interval(answers, "harmful_refusal")
    assert found["n"] == n and found["rate"] == k / n
    assert found["ci"] == pytest.approx(_wilson(k, n), abs=1e-12)
    benign = rate_interval(answers, "benign_compliance")  # compliance: the benign answers not refused
    assert benign["n"] == 2 and benign["rate"] == 0.5


def test_compliance_is_the_same_float_as_the_evaluations_one_minus_the_refused_share():
    """(n - k) / n and 1 - k / n differ in the last bit for many k, n (1 of 7): one rate, two numbers."""
    for n in range(1, 80):
        for k in range(n + 1):
            answers = _answers([], [True] * k + [False] * (n - k))
            assert rate_interval(answers, "benign_compliance")["rate"] == 1.0 - k / n


def test_a_change_is_after_minus_before_over_the_prompts_read_both_times():
    before = _answers([False, False, True, None, False], [False, False, False])
    after = _answers([True, True, True, True, None], [True, False, False])
    change = rate_change(before, after, "harmful_refusal")
    assert change["n"] == 3 and change["change"] == pytest.approx(2 / 3)  # h0, h1 gained; h2 kept; h3, h4 left out
    assert change["ci"] == pytest.approx(paired_rate_diff_ci([True, True, True], [False, False, True]))
    lost = rate_change(before, after, "benign_compliance")
    assert lost["n"] == 3 and lost["change"] == pytest.approx(-1 / 3) and lost["ci"][0] < -1 / 3 < lost["ci"][1]


def test_no_change_has_an_interval_around_zero_and_none_read_is_nan():
    same = _answers([True, False] * 10, [False] * 8)
    change = rate_change(same, same, "harmful_refusal")
    assert change["change"] == 0 and change["ci"][0] < 0 < change["ci"][1]
    unread = _answers([None] * 3, [None])
    assert rate_change(unread, unread, "harmful_refusal")["n"] == 0
    assert math.isnan(rate_interval(unread, "benign_compliance")["rate"])


def test_two_evaluations_of_other_prompts_are_refused():
    with pytest.raises(UserError, match="did not answer the same prompts"):
        rate_change(_answers([True], []), _answers([True], [True]), "harmful_refusal")


def test_the_lines_and_the_json_name_each_model_and_each_change_in_points():
    before, after = _answers([False] * 10, [False] * 10), _answers([True] * 5 + [False] * 5, [False] * 9 + [True])
    found = intervals({"base": before, "adapter": after})
    assert set(found["harmful_refusal"]) == {"base", "adapter", "change"}
    lines = interval_lines(found)
    assert lines[0].startswith("base: harmful refusal 0% [0, 28] of 10, benign compliance 100% [72, 100] of 10")
    assert lines[2].startswith("harmful refusal: adapter − base +50 points, 95% [")
    assert lines[3].startswith("benign compliance: adapter − base -10 points")
    alone = intervals({"adapter": after})  # --no-base: the adapter's own, under its name
    assert set(alone["harmful_refusal"]) == {"adapter"}
    assert interval_lines(alone, {"adapter": "trained"}) == [lines[1].replace("adapter:", "trained:")]
    unread = _answers([None] * 2, [None])
    assert interval_lines(intervals({"base": unread, "trained": unread})) == [
        "base: harmful refusal none read by the judge, benign compliance none read by the judge",
        "trained: harmful refusal none read by the judge, benign compliance none read by the judge",
        "harmful refusal: trained − base: no prompt read by the judge both times",
        "benign compliance: trained − base: no prompt read by the judge both times"]
    with pytest.raises(UserError, match="one or two models"):
        intervals({})
