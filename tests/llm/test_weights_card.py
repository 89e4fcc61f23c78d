"""A weights file and its card saved as one pair: the card is the commit point, so a save that fails
anywhere leaves the old pair whole."""

import json
import os

import pytest
import torch

from redgame.errors import UserError
from redgame.llm import weights_card
from redgame.llm.weights_card import load_tensors_with_card, save_tensors_with_card

WEIGHTS, CARD = "head.safetensors", "head.json"


def save(folder, value: float):
    return save_tensors_with_card(folder, WEIGHTS, CARD, {"w": torch.full((3, 2), value)}, {"trained": value})


def load(folder):
    tensors, card = load_tensors_with_card(folder, WEIGHTS, CARD, ("w",), "train-head")
    assert card["trained"] == tensors["w"][0, 0].item()  # the card belongs to these weights
    return card["trained"]


def files(folder):
    return sorted(p.name for p in folder.iterdir())


def test_saves_alternate_between_two_names_and_keep_one_pair(tmp_path):
    save(tmp_path, 1.0)
    assert files(tmp_path) == [CARD, WEIGHTS] and load(tmp_path) == 1.0
    save(tmp_path, 2.0)
    second = json.loads((tmp_path / CARD).read_text())["weights"]
    assert second.startswith("head.") and second != WEIGHTS and files(tmp_path) == sorted([CARD, second])
    assert load(tmp_path) == 2.0
    save(tmp_path, 3.0)
    assert files(tmp_path) == [CARD, WEIGHTS] and load(tmp_path) == 3.0


@pytest.mark.parametrize("saves_before", [1, 2])
@pytest.mark.parametrize("fail_at", ["weights", "card"])
def test_a_save_killed_at_either_rename_keeps_the_old_pair(tmp_path, monkeypatch, saves_before, fail_at):
    for value in range(saves_before):
        save(tmp_path, float(value))
    old = float(saves_before - 1)
    real_replace = os.replace

    def killed(src, dst):
        if str(dst).endswith(".json") == (fail_at == "card"):
            raise KeyboardInterrupt  # a kill between the two renames, or before the first
        real_replace(src, dst)

    monkeypatch.setattr(weights_card.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        save(tmp_path, 9.0)
    monkeypatch.undo()
    assert load(tmp_path) == old
    assert not [name for name in files(tmp_path) if name.startswith(".tmp")]
    save(tmp_path, 5.0)  # the next save clears what the killed one left
    assert load(tmp_path) == 5.0 and len(files(tmp_path)) == 2


def test_a_card_without_a_weights_name_reads_the_default_file(tmp_path):
    save(tmp_path, 1.0)
    card = json.loads((tmp_path / CARD).read_text())
    del card["weights"]  # a pair written before cards named their weights
    (tmp_path / CARD).write_text(json.dumps(card))
    assert load(tmp_path) == 1.0
    save(tmp_path, 2.0)
    assert load(tmp_path) == 2.0 and WEIGHTS not in files(tmp_path)


def test_a_card_naming_a_file_elsewhere_is_refused_and_never_removed(tmp_path):
    folder, outside = tmp_path / "judge", tmp_path / "keep.safetensors"
    save(folder, 1.0)
    outside.write_bytes((folder / WEIGHTS).read_bytes())
    card = json.loads((folder / CARD).read_text())
    (folder / CARD).write_text(json.dumps({**card, "weights": "../keep.safetensors"}))
    with pytest.raises(UserError, match="neither head.safetensors nor"):
        load(folder)
    save(folder, 2.0)
    assert outside.exists() and load(folder) == 2.0


def test_missing_mismatched_and_unreadable_pairs_are_one_line_errors(tmp_path):
    with pytest.raises(UserError, match="lacks head.safetensors and head.json; write the pair with `redgame llm "
                                        "train-head"):
        load(tmp_path)
    (tmp_path / WEIGHTS).write_bytes(b"")  # the weights there, the card gone: it said both were missing
    with pytest.raises(UserError, match="lacks head.json; write the pair with"):
        load(tmp_path)
    (tmp_path / WEIGHTS).unlink()
    (tmp_path / "a.jsonl").write_text("{}")  # a file: the command it suggested would refuse it as --out
    with pytest.raises(UserError, match="a.jsonl is a file; give the folder that holds head.safetensors and head.json"):
        load(tmp_path / "a.jsonl")
    save(tmp_path, 1.0)
    save(tmp_path, 2.0)
    named = json.loads((tmp_path / CARD).read_text())["weights"]
    (tmp_path / named).rename(tmp_path / "moved")
    with pytest.raises(UserError, match=f"^head in {tmp_path}: head.json names {named}, which is missing"):
        load(tmp_path)
    (tmp_path / "moved").rename(tmp_path / named)
    save_tensors_with_card(tmp_path / "other", WEIGHTS, CARD, {"w": torch.zeros(3, 2)}, {"trained": 0.0})
    (tmp_path / named).write_bytes((tmp_path / "other" / WEIGHTS).read_bytes())
    with pytest.raises(UserError, match="does not belong to"):
        load(tmp_path)
    (tmp_path / CARD).write_text("{not json")
    with pytest.raises(UserError, match="unreadable"):
        load(tmp_path)
    (tmp_path / CARD).write_text("[" * 200_000)  # nested past the parser's recursion limit: an internal error was
    with pytest.raises(UserError, match="unreadable"):
        load(tmp_path)
    save(tmp_path, 3.0)  # and a save beside it still reads the old card as "none"
    assert load(tmp_path) == 3.0
