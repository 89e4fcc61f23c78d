"""A run's metrics.jsonl: its rows checked, and the late mean of one metric."""

import json
import math

import pytest

from redgame.errors import UserError
from redgame.llm.metrics import read_metrics, tail_mean


def test_the_tail_mean_skips_rows_without_a_finite_number_before_it_takes_the_window():
    rows = [{"x": 1.0}, {"x": 2.0}, {"x": float("nan")}, {"y": 5}, {"x": None}, {"x": 4.0}]
    assert tail_mean(rows, "x", k=2) == pytest.approx(3.0)  # 2 and 4: the NaN, None and absent rows skipped
    assert tail_mean(rows, "x", k=10) == pytest.approx(7.0 / 3)
    assert math.isnan(tail_mean(rows, "z"))


@pytest.mark.parametrize("text, needle", [("", "no rows in it"), ('{"step": 1}\n[1, 2]\n', "line 2: not a JSON object"),
                                          ('{"step": 1}\n{"step": \n', "line 2: not valid JSON")])
def test_bad_metrics_files_get_one_line_errors_naming_the_line(tmp_path, text, needle):
    (tmp_path / "metrics.jsonl").write_text(text)
    with pytest.raises(UserError, match=needle):
        read_metrics(tmp_path)


def test_rows_are_read_in_order_and_blank_lines_skipped(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n\n" + json.dumps({"step": 2}) + "\n")
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
