"""A run's metrics.jsonl: its rows checked, and the late mean of one metric."""

import json
import math

import pytest

from redgame.errors import UserError
from redgame.llm.metrics import read_metrics, tail_mean


def test_the_tail_mean_takes_the_last_steps_and_averages_their_readings():
    rows = [{"x": 1.0}, {"x": 2.0}, {"x": float("nan")}, {"y": 5}, {"x": None}, {"x": 4.0}]
    assert tail_mean(rows, "x", k=2) == pytest.approx(4.0)  # the None and 4: a step without a reading counts
    assert tail_mean(rows, "x", k=4) == pytest.approx(3.0)  # 2, NaN, None, 4 (the row without x is no step of x)
    assert tail_mean(rows, "x", k=10) == pytest.approx(7.0 / 3)
    assert math.isnan(tail_mean(rows, "z"))


def test_steps_without_a_reading_never_reach_back_to_older_ones():
    """Three old steps at 0.9 then five without a reading: the last five steps say nothing (it read 0.9)."""
    rows = [{"x": 0.9}] * 3 + [{"x": float("nan")}] * 5
    assert math.isnan(tail_mean(rows, "x"))


def test_the_window_is_the_last_steps_by_their_numbers_where_rows_have_them():
    """Rows 1, 3..6 (row 2 lost): the last five steps are 2..6, so step 1 stays out (it was in, by row count)."""
    from redgame.llm.metrics import last_step

    rows = [{"step": s, "x": x} for s, x in ((1, 1.0), (3, 0.2), (4, 0.2), (5, 0.2), (6, 0.2))]
    assert last_step(rows) == 6 and last_step([]) == 0 and last_step([{"x": 1}, {"x": 2}]) == 2
    assert tail_mean(rows, "x") == pytest.approx(0.2) and tail_mean(rows, "x", k=6) == pytest.approx(1.8 / 5)
    assert math.isnan(tail_mean(rows[:1] + [{"step": 9, "y": 0}], "x"))  # step 1 is no step of the last five
    for odd in (float("nan"), float("inf")):  # a hand-edited step: the rows are taken in order (it crashed)
        edited = rows[:-1] + [{"step": odd, "x": 0.2}]
        assert last_step(edited) == 5 and tail_mean(edited, "x") == pytest.approx(1.8 / 5)  # the last five rows


@pytest.mark.parametrize("data, needle", [
    (b"", "no rows in it"), (b'{"step": 1}\n[1, 2]\n', "line 2: not a JSON object"),
    (b'{"step": 1}\n{"step": \n{"step": 3}\n', "line 2: not valid JSON"),
    (b'{"step": 1}\n\xff\n{"step": 3}\n', r"line 2: not UTF-8 text \(byte 0\)"),
    (b'{"step": \n', "no rows in it")])  # its only line cut short: skipped, and then there is none
def test_bad_metrics_files_get_one_line_errors_naming_the_line(tmp_path, data, needle):
    (tmp_path / "metrics.jsonl").write_bytes(data)
    with pytest.raises(UserError, match=needle) as caught:
        read_metrics(tmp_path)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("last", [b'{"step": 3, "attack_suc', b'{"step": 3, "note": "\xc3', b"\xff\n"])
def test_a_last_line_cut_short_by_a_kill_is_skipped_with_a_warning(tmp_path, capsys, last):
    (tmp_path / "metrics.jsonl").write_bytes(b'{"step": 1}\n{"step": 2}\n' + last)
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
    warning = capsys.readouterr().err.strip().splitlines()
    assert len(warning) == 1 and warning[0].startswith("redgame: warning: ") and "line 3" in warning[0]


def test_a_file_that_cannot_be_read_is_a_one_line_error(tmp_path, monkeypatch):
    from pathlib import Path

    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n")

    def denied(path):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)  # tests may run as root, where a chmod is not enough
    with pytest.raises(UserError, match=r"metrics.jsonl: cannot be read \(Permission denied\)"):
        read_metrics(tmp_path)


def test_rows_are_read_in_order_and_blank_lines_skipped(tmp_path):
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1}) + "\n\n" + json.dumps({"step": 2}) + "\n")
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2]
