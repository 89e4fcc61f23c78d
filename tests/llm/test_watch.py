"""The over-refusal watch: the late mean of a run's benign refusal, read against its threshold."""

import pytest

from redgame.llm import watch


def rows(values):
    return [{"step": n, "refusal_benign": v} for n, v in enumerate(values, 1)]


def test_the_number_is_the_mean_of_the_last_window_of_steps():
    values = [0.9, 0.9, 0.0, 0.1, 0.2, 0.3, 0.4]  # the first two fall outside a window of 5
    assert watch.WINDOW == 5
    assert watch.benign_refusal(rows(values)) == pytest.approx(sum(values[-5:]) / 5)
    assert watch.benign_refusal(rows([0.5])) == pytest.approx(0.5)  # a run shorter than the window


def test_a_step_without_a_reading_counts_and_a_run_without_the_metric_has_no_number():
    mixed = rows([0.9] + [0.2] * 4 + [float("nan")]) + [{"population": 1}]  # a NaN step, a row of another kind
    assert watch.benign_refusal(mixed) == pytest.approx(0.2)  # the last five steps, four of them with a reading
    assert watch.benign_refusal([{"population": 1}]) is None
    assert not watch.flagged([{"population": 1}]) and watch.warning([]) is None


@pytest.mark.parametrize("late,flagged", [(0.1375, False), (0.149, False), (0.15, True), (0.2, True), (0.54, True)])
def test_the_threshold_separates_the_runs_it_was_fixed_on(late, flagged):
    # 0.1375 and 0.200: the closest runs on either side among the twelve it was fixed on
    assert watch.flagged(rows([late] * 5)) is flagged
    assert (watch.warning(rows([late] * 5)) is not None) is flagged


def test_the_warning_names_the_number_and_the_window():
    text = watch.warning(rows([0.0, 0.6, 0.6, 0.6, 0.6, 0.6]))
    assert "60%" in text and "last 5 steps" in text and "15%" in text
    assert "over the last 2 steps" in watch.warning(rows([0.6, 0.6]))  # a run shorter than the window
    assert "in its one step" in watch.warning(rows([0.6]))


def test_reaches_is_at_or_above_the_threshold_and_never_for_a_missing_number():
    assert watch.reaches(watch.THRESHOLD) and watch.reaches(1.0)
    assert not watch.reaches(watch.THRESHOLD - 1e-9) and not watch.reaches(0.0)
    assert not watch.reaches(None)


def test_a_mean_of_exactly_the_threshold_from_rates_of_twelve_answers_is_flagged():
    """(0 + 0 + 3/12 + 4/12 + 2/12) / 5 is 3/20 exactly, and summed as floats one step under 0.15: not flagged."""
    steps = rows([0, 0, 3 / 12, 4 / 12, 2 / 12])
    assert watch.benign_refusal(steps) < watch.THRESHOLD  # the float sum, as the watch computes it
    assert watch.flagged(steps) and watch.warning(steps) is not None


def test_a_run_whose_defender_does_not_learn_gets_no_warning(tmp_path, judge, tiny_config, monkeypatch):
    """The probe's best response trains the attacker against a frozen defender: the watch warned of that defender's
    over-refusal, which no training of this run made."""
    from redgame.llm import trainer

    monkeypatch.setattr(trainer.watch, "warning", lambda rows: "over-refusal watch: WARNED")
    said = []
    trainer.train(tiny_config(steps=1, train_roles=("attacker",)), tmp_path / "a", progress=False, judge=judge,
                  log=said.append)
    assert not any("WARNED" in str(x) for x in said)
    trainer.train(tiny_config(steps=1), tmp_path / "b", progress=False, judge=judge, log=said.append)
    assert any("WARNED" in str(x) for x in said)
