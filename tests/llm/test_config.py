"""TrainConfig's learning-rate schedule: closed-form values and the refusals."""

from __future__ import annotations

import pytest

from redgame.errors import UserError
from redgame.llm.config import TrainConfig


@pytest.mark.parametrize("steps,decay", [(1, 0), (1, 1), (7, 3), (24, 8), (5, 5)])
def test_the_rate_is_lr_then_falls_by_equal_parts_over_the_last_steps(steps, decay):
    cfg = TrainConfig(model="tiny", steps=steps, lr=3e-3, lr_decay_steps=decay).validate()
    rates = [cfg.lr_at(s) for s in range(steps)]
    stable = steps - decay
    assert rates[:stable] == [3e-3] * stable
    expected = [3e-3 * (decay - k) / (decay + 1) for k in range(decay)]  # D/(D+1), ..., 1/(D+1)
    assert rates[stable:] == pytest.approx(expected, rel=1e-12)
    assert all(r > 0 for r in rates)


def test_a_decay_longer_than_the_run_or_negative_is_refused_in_one_line():
    with pytest.raises(UserError, match=r"'lr_decay_steps' \(9\) must be at most 'steps' \(8\)"):
        TrainConfig(model="tiny", steps=8, lr_decay_steps=9).validate()
    with pytest.raises(UserError, match="'lr_decay_steps' must be >= 0, got -1"):
        TrainConfig(model="tiny", steps=8, lr_decay_steps=-1).validate()
