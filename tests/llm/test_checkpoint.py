"""llm/checkpoint.py: a damaged extra state (population.json) is a one-line error naming the checkpoint."""

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
