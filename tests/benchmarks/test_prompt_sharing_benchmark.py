"""benchmarks/prompt_sharing.py: every case runs in every layout, and the previous path's layout leaves the start-sharing
as it found it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import prompt_sharing as bench  # noqa: E402

from redgame.llm import prompt_sharing  # noqa: E402


def test_the_smoke_run_times_each_case_in_each_layout(capsys):
    bench.main(["--smoke"])
    lines = capsys.readouterr().out.splitlines()
    rows = [line for line in lines if line.startswith(("update", "rollout"))]
    assert len(rows) == 5 and all(line.count("s ") >= 3 and line.rstrip().endswith("x") for line in rows)
    assert prompt_sharing.common_prefix([[1, 2, 3], [1, 2, 4]]) == 2  # put back after the 'prompts' layout


def test_the_previous_layout_holds_the_start_at_zero_and_puts_it_back_after_an_error():
    with pytest.raises(RuntimeError), bench.layout("prompts") as share:
        assert share and prompt_sharing.common_prefix([[1, 2, 3], [1, 2, 4]]) == 0
        raise RuntimeError
    assert prompt_sharing.common_prefix([[1, 2, 3], [1, 2, 4]]) == 2
    with bench.layout("own rows") as share:
        assert not share


@pytest.mark.parametrize("argv", [["--reps", "0"], ["--threads", "0"]])
def test_no_repetition_or_no_thread_is_a_usage_error(argv):
    with pytest.raises(SystemExit) as exit_:
        bench.main(argv)
    assert exit_.value.code == 2
