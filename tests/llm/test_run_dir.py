"""The run folder's checks: what a resume must keep, and the metrics rows it keeps.

The folder checks as a user meets them (a folder that holds a run, another tool's files, ``--resume``
without a checkpoint) are tested through ``train`` and the CLI in ``test_trainer.py`` and ``test_cli.py``.
"""

import json

import pytest

from redgame.llm.config import TrainConfig
from redgame.llm.run_dir import check_resumable, keep_metrics_until, step_ranges


def test_resume_compares_what_the_weights_are_not_how_the_config_spells_them(tmp_path):
    """advgame's reference 'auto' is its EMA, so 'ema' resumes it; a full fine-tune has no LoRA shape to keep."""
    def run_of(**keys):
        (tmp_path / "config.json").write_text(json.dumps(TrainConfig(model="tiny", **keys).to_dict()))

    run_of(regime="advgame")
    check_resumable(tmp_path, TrainConfig(model="tiny", regime="advgame", reference="ema"), 1)
    with pytest.raises(ValueError, match="reference is 'base', the run's is 'auto'"):
        check_resumable(tmp_path, TrainConfig(model="tiny", regime="advgame", reference="base"), 1)
    run_of(regime="bipolicy", reference="base")
    check_resumable(tmp_path, TrainConfig(model="tiny", regime="bipolicy"), 1)
    run_of(regime="advgame", full_finetune=True)
    check_resumable(tmp_path, TrainConfig(model="tiny", regime="advgame", full_finetune=True, lora_rank=8), 1)
    run_of(regime="advgame")
    with pytest.raises(ValueError, match="lora_rank is 8"):
        check_resumable(tmp_path, TrainConfig(model="tiny", regime="advgame", lora_rank=8), 1)


def test_resume_trims_metrics_past_the_checkpoint_and_drops_damaged_rows(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_bytes(b'{"step": 1}\n{"step": 2, "note": "\xff"}\n[' + b"[" * 5000 + b'\n{"step": 3}\n{"step": 2, "cut')
    assert keep_metrics_until(path, 2) == []  # the damaged row after step 2 is a kill's, and step 2 is kept
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2]


def test_resume_names_the_steps_whose_rows_were_damaged_or_removed(tmp_path):
    """A damaged row at or before the checkpoint's step cannot be redone: it was dropped without a word."""
    path = tmp_path / "metrics.jsonl"
    path.write_text('{"step": 1}\n{"step": 2, "cut\n{"step": 4}\n{"step": 5}\n')
    assert keep_metrics_until(path, 4) == [2, 3]
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 4]
    assert keep_metrics_until(tmp_path / "removed.jsonl", 2) == [1, 2]
    assert step_ranges([1, 2, 3, 7, 9, 10]) == "1-3, 7, 9-10" and step_ranges([]) == ""


@pytest.mark.parametrize("key, value", [("judge", "embedded"), ("payoff_weights", ()), ("greedy_candidates", False),
                                        ("lr", 0.0015), ("explore_prefixes", ["I'm sorry, but I can't help with that"]),
                                        ("payoff_weights", ["deflect_cost=1", "safety=2"]), ("seed", 3),
                                        ("explore_prefixes", ["[x]"]), ("explore_prefixes", ["", "Sure"])])
def test_the_flag_a_refused_resume_names_gives_the_key_its_saved_value(key, value):
    """A demo started before the recipe changed is refused on --resume; the error names the --set that restores
    each changed key, and each, read back through a shell and the config's parser, gives the saved value."""
    import shlex

    from redgame.llm.config import parse_override, set_flag

    flag, text = shlex.split(set_flag(key, value))
    assert flag == "--set"
    parsed = parse_override(text)
    assert parsed == (key, tuple(value) if isinstance(value, list) else value)
