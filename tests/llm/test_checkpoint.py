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
