"""benchmarks/llm_step.py: a path's settings are checked before either path runs (each takes minutes)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import llm_step  # noqa: E402

from redgame.errors import UserError  # noqa: E402


@pytest.mark.parametrize("argv, message", [
    (["--set", "bogus=1"], "unknown config key 'bogus'"),
    (["--set", "lr=abc"], "cannot read 'abc' as float"),
    (["--set", "full_finetune=true"], "full_finetune"),  # valid alone, not with the demo's regime
    (["--set", "keep_freed_memory=maybe"], "keep_freed_memory: cannot read 'maybe'"),
    (["--set", "threads=1"], "llm_step sets steps, save_every and threads itself"),
    (["--set", "lr=1e-3", "--set", "lr=2e-3"], "a key is given twice"),
])
def test_bad_settings_are_refused_before_any_path_runs(monkeypatch, argv, message):
    monkeypatch.setattr(llm_step, "in_subprocess", lambda *a: pytest.fail("a path ran"))
    with pytest.raises(UserError, match=message):
        llm_step.main(argv)


@pytest.mark.parametrize("argv", [["--iters", "0"], ["--threads", "0"]])
def test_no_iteration_or_no_thread_is_a_usage_error(monkeypatch, argv):
    monkeypatch.setattr(llm_step, "in_subprocess", lambda *a: pytest.fail("a path ran"))
    with pytest.raises(SystemExit) as exit_:
        llm_step.main(argv)
    assert exit_.value.code == 2
