"""llm/checkpoint.py: damaged states, step folders left unfinished, and keeping only the newest checkpoints."""

import pytest
import torch
from safetensors.torch import save_file

from redgame.errors import UserError
from redgame.llm.checkpoint import load_extra


@pytest.mark.parametrize("text", ["{not json", "[" * 200_000])  # the second: an internal RecursionError was
def test_a_damaged_extra_state_is_a_user_error_naming_the_checkpoint(tmp_path, text):
    save_file({"w": torch.zeros(2)}, str(tmp_path / "population.safetensors"))
    (tmp_path / "population.json").write_text('{"size": 2}')
    tensors, state = load_extra(tmp_path, "population")
    assert state == {"size": 2} and tensors["w"].shape == (2,)
    (tmp_path / "population.json").write_text(text)
    with pytest.raises(UserError, match=f"checkpoint {tmp_path}: population state is damaged"):
        load_extra(tmp_path, "population")
    assert load_extra(tmp_path, "absent") is None


def test_step_folders_past_the_latest_checkpoint_without_their_state_are_named(tmp_path):
    """Resume skips a step folder whose state.json (written last) is missing: it said nothing of it."""
    from redgame.llm.checkpoint import latest_checkpoint, unfinished_checkpoints

    assert unfinished_checkpoints(tmp_path) == []
    for step, complete in ((1, True), (2, False), (3, True), (4, False), (12, False)):
        folder = tmp_path / "checkpoints" / f"step_{step:04d}"
        folder.mkdir(parents=True)
        if complete:
            (folder / "state.json").write_text("{}")
    assert latest_checkpoint(tmp_path).name == "step_0003"
    assert [p.name for p in unfinished_checkpoints(tmp_path)] == ["step_0004", "step_0012"]


def test_keep_checkpoints_keeps_the_newest_and_a_kill_while_removing_loses_none_of_them(tmp_path, judge, tiny_config,
                                                                                    monkeypatch):
    """keep_checkpoints = 2: after each save only the newest two remain; a removal cut short leaves its folder
    aside (never a half-deleted step folder), and the next save clears it; the run resumes from the newest."""
    import shutil

    from redgame.llm import checkpoint
    from redgame.llm.models import load_base
    from redgame.llm.trainer import train

    train(tiny_config(steps=3, save_every=1, keep_checkpoints=2), tmp_path, progress=False, base=load_base("tiny"),
          judge=judge)
    root = tmp_path / "checkpoints"
    assert sorted(p.name for p in root.iterdir()) == ["step_0002", "step_0003"]

    def killed(path, ignore_errors=False):  # the process dies while the old folder is being removed
        raise KeyboardInterrupt

    real = shutil.rmtree
    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.remove_older_checkpoints(tmp_path, keep=1)
    monkeypatch.setattr(shutil, "rmtree", real)
    names = sorted(p.name for p in root.iterdir())
    assert names[1:] == ["step_0003"] and names[0].startswith(".old.step_0002.")  # aside, whole or not: not a step
    assert checkpoint.latest_checkpoint(tmp_path).name == "step_0003"
    train(tiny_config(steps=4, save_every=1, keep_checkpoints=2), tmp_path, resume=True, progress=False,
          base=load_base("tiny"), judge=judge)
    assert sorted(p.name for p in root.iterdir()) == ["step_0003", "step_0004"]


def test_a_damaged_checkpoint_points_at_the_one_before_only_where_there_is_one(tmp_path):
    """With keep_checkpoints the damaged one may be the only one: removing it to resume from the one before
    then ended in "no checkpoint"."""
    from redgame.llm.checkpoint import what_removing_it_does

    root = tmp_path / "checkpoints"
    for step in (2, 4):
        (root / f"step_{step:04d}").mkdir(parents=True)
    (root / "step_0004" / "state.json").write_text("{}")
    assert "start the run again with --overwrite" in what_removing_it_does(root / "step_0004")  # step 2 is not whole
    (root / "step_0002" / "state.json").write_text("{}")
    assert what_removing_it_does(root / "step_0004") == "remove it to resume from the one before"
    assert "start the run again" in what_removing_it_does(root / "step_0002")
