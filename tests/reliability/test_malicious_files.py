"""Files that would run code, or are damaged, are refused with one line and never executed.

A pickle "bomb" (unpickling it creates a marker file) is planted where redgame reads
weights: a checkpoint's ``weights.safetensors`` and an adapter's ``adapter_model.bin``.
The marker must never appear. A truncated checkpoint and one from another config are
refused naming the checkpoint, not with a traceback.
"""

import json
import pickle

import pytest
import torch
from safetensors.torch import load_file, save_file
from fault_runs import SMALL_GAME

from redgame.cli import main


class Bomb:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")  # unpickling creates the marker file


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory):
    """A finished one-step run, trained in this process (no thread setting: it would leak)."""
    root = tmp_path_factory.mktemp("one_step")
    config = root / "game.toml"
    config.write_text(SMALL_GAME.replace("threads = 1\n", ""))
    argv = ["llm", "train", "--model", "tiny", "--regime", "bipolicy", "--seed", "3", "--save-every", "1",
            "--no-progress", "--config", str(config)]
    assert main([*argv, "--steps", "1", "--out", str(root / "run")]) == 0
    return root, argv


def resume_error(capsys, run_dir, argv, *extra) -> str:
    assert main([*argv, "--steps", "2", "--out", str(run_dir), "--resume", *extra]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("redgame: error: checkpoint ") and "step_0001" in last, last
    return last


def copy_run(root, name):
    import shutil

    return shutil.copytree(root / "run", root / name)


def test_the_bomb_is_live(tmp_path):
    pickle.loads(pickle.dumps(Bomb(tmp_path / "live")))  # noqa: S301 - on purpose
    assert (tmp_path / "live").exists()


def test_a_pickle_in_place_of_checkpoint_weights_is_never_unpickled(one_step_run, capsys):
    root, argv = one_step_run
    run, marker = copy_run(root, "bomb"), root / "PWNED"
    (run / "checkpoints" / "step_0001" / "weights.safetensors").write_bytes(pickle.dumps({"w": Bomb(marker)}))
    assert "damaged" in resume_error(capsys, run, argv)
    assert not marker.exists()


def test_a_truncated_checkpoint_is_named(one_step_run, capsys):
    root, argv = one_step_run
    run = copy_run(root, "truncated")
    weights = run / "checkpoints" / "step_0001" / "optimizer.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    resume_error(capsys, run, argv)


@pytest.mark.parametrize("name, content", [
    ("state.json", "[]"), ("state.json", "{}"), ("state.json", '{"step": "1"}'), ("state.json", '{"step": 99}'),
    ("optimizer.json", "[]"), ("optimizer.json", '{"defender": null, "attacker": null}'),
])
def test_a_damaged_checkpoint_json_is_named(one_step_run, capsys, name, content):
    root, argv = one_step_run
    run = copy_run(root, f"json-{abs(hash((name, content)))}")
    (run / "checkpoints" / "step_0001" / name).write_text(content)
    assert "damaged" in resume_error(capsys, run, argv)


def test_a_checkpoint_rng_state_of_another_dtype_is_named(one_step_run, capsys):
    root, argv = one_step_run
    run = copy_run(root, "rng")
    rng = run / "checkpoints" / "step_0001" / "rng.safetensors"
    save_file({k: v.float() for k, v in load_file(str(rng)).items()}, str(rng))
    assert "damaged" in resume_error(capsys, run, argv)


@pytest.mark.parametrize("name", ["weights.safetensors", "optimizer.safetensors"])
def test_a_checkpoint_holding_nan_is_named_before_it_trains(one_step_run, capsys, name):
    """Resumed, NaN weights stopped the next step blaming the learning rate and advising --overwrite, which would
    have deleted the good checkpoints before the damaged one."""
    root, argv = one_step_run
    run = copy_run(root, f"nan-{name.partition('.')[0]}")
    path = run / "checkpoints" / "step_0001" / name
    tensors = load_file(str(path))
    first = next(k for k, v in tensors.items() if v.is_floating_point())
    save_file({**tensors, first: tensors[first].fill_(float("nan"))}, str(path))
    last = resume_error(capsys, run, argv)
    assert "hold NaN or inf" in last  # and, step_0001 being the only checkpoint, no "resume from the one before":
    assert "there is no whole checkpoint before it to resume from: start the run again with --overwrite" in last


def _first(tensors, key):
    return next(k for k in sorted(tensors) if key in k)


@pytest.mark.parametrize("name, damage, says", [
    # copy_ broadcast these over the weight, and the run resumed from them
    ("weights.safetensors", lambda t: {**t, _first(t, "lora_A"): torch.tensor(5.0)}, "this run's is"),
    ("weights.safetensors", lambda t: {**t, _first(t, "lora_A"): t[_first(t, "lora_A")][:1]}, "this run's is"),
    ("weights.safetensors", lambda t: {**t, _first(t, "lora_A"): t[_first(t, "lora_A")].long()}, "this run's is"),
    # load_state_dict took these, and the next step failed as an internal error (or went NaN)
    ("optimizer.safetensors", lambda t: {**t, _first(t, "exp_avg"): torch.zeros(3, 3)}, "is not of its shape"),
    ("optimizer.safetensors", lambda t: {**t, _first(t, "exp_avg"): torch.tensor(1.0)}, "is not of its shape"),
    ("optimizer.safetensors", lambda t: {k: v for k, v in t.items() if k != _first(t, "exp_avg_sq")}, "lacks"),
    ("optimizer.safetensors", lambda t: {k: (torch.full_like(v, -5.0) if k.endswith("/step") else v)
                                         for k, v in t.items()}, "is negative"),
])
def test_checkpoint_tensors_of_another_shape_or_a_damaged_optimizer_state_are_named(one_step_run, capsys, name,
                                                                                     damage, says):
    root, argv = one_step_run
    run = copy_run(root, f"shape-{abs(hash((name, says, damage.__code__.co_firstlineno)))}")
    path = run / "checkpoints" / "step_0001" / name
    save_file({k: v.contiguous() for k, v in damage(load_file(str(path))).items()}, str(path))
    last = resume_error(capsys, run, argv)
    assert "damaged or from another config" in last and says in last, last


def test_a_checkpoint_of_another_config_is_named(one_step_run, capsys):
    root, argv = one_step_run
    run = copy_run(root, "other")
    # the resumed config differs from the run's config.json: refused before any weight is read
    assert main([*argv, "--steps", "2", "--out", str(run), "--resume", "--set", "lora_rank=3"]) == 2
    assert "lora_rank is 3, the run's is" in capsys.readouterr().err.strip().splitlines()[-1]
    # config.json says rank 3 too, but the checkpoint holds rank-2 tensors: the checkpoint is named
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "lora_rank": 3}))
    assert "another config" in resume_error(capsys, run, argv, "--set", "lora_rank=3")


def test_a_pickled_adapter_is_refused_not_loaded(one_step_run, capsys):
    root, _ = one_step_run
    adapter, marker = root / "pickled_adapter", root / "PWNED_ADAPTER"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text((root / "run" / "final" / "defender" / "adapter_config.json").read_text())
    (adapter / "adapter_model.bin").write_bytes(pickle.dumps({"w": Bomb(marker)}))
    assert main(["llm", "eval", "--model", "tiny", "--adapter", str(adapter), "--no-utility",
                 "--max-new-tokens", "2"]) == 2
    assert "adapter_model.safetensors" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not marker.exists()
