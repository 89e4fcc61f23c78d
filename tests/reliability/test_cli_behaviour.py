"""``redgame llm train`` refuses bad configs and unsafe output folders in one line, before compute.

Every config key is given a value of the wrong type in TOML, YAML and ``--set``; the run
folder rules (``--resume`` needs a checkpoint, ``--out`` holding a run needs ``--resume``
or ``--overwrite``) are checked with model loading and the judge replaced by a marker
that fails the test if compute starts.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import get_origin, get_type_hints

import pytest
import yaml

from redgame.cli import main
from redgame.llm.config import TrainConfig
from fault_runs import ComputeStarted

HINTS = get_type_hints(TrainConfig)
WRONG = {bool: "yes", int: "three", float: "fast", str: 7, tuple: 5}  # a value of another type per field type


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("redgame: error: "), err
    return err[0]


def train(tmp_path, *argv) -> int:
    return main(["llm", "train", "--model", "tiny", "--out", str(tmp_path / "run"), "--no-progress", *argv])


@pytest.mark.parametrize("key", sorted(HINTS))
def test_a_wrong_type_for_any_key_names_the_key(tmp_path, capsys, no_compute, key):
    wrong = WRONG[get_origin(HINTS[key]) or HINTS[key]]
    toml = tmp_path / "game.toml"
    toml.write_text(f"{key} = {json.dumps(wrong)}\n")
    yml = tmp_path / "game.yaml"
    yml.write_text(yaml.safe_dump({"train": {key: wrong}}))
    for argv in (["--config", str(toml)], ["--config", str(yml)]):
        assert train(tmp_path, *argv) == 2
        assert f"'{key}'" in one_error_line(capsys)
    if not isinstance(wrong, str) or HINTS[key] is str or get_origin(HINTS[key]) is tuple:
        return  # --set values are text: only non-text fields can be mistyped there
    assert train(tmp_path, "--set", f"{key.replace('_', '-')}={wrong}") == 2
    assert f"'{key}'" in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("text,suffix,key", [
    ("[train]\nsteps = 2\nlearning_rate = 0.1\n", ".toml", "learning_rate"),
    ("train:\n  steps: 2\n  lora-rnak: 4\n", ".yaml", "lora_rnak"),
    ("lr = nan\n", ".toml", "lr"),
    ("kl_coef: -0.1\n", ".yaml", "kl_coef"),
    ("lora_dropout = 1.0\n", ".toml", "lora_dropout"),
    ("threads = -2\n", ".toml", "threads"),
    ("seed: 100000000000000000000000\n", ".yaml", "seed"),
    ("judge = 'gpt4'\n", ".toml", "judge"),
    ("steps = 2\n[train]\nlr = 0.1\n", ".toml", "[train]"),  # keys in and out of the section
])
def test_unknown_keys_and_unusable_values(tmp_path, capsys, no_compute, text, suffix, key):
    path = tmp_path / f"game{suffix}"
    path.write_text(text)
    assert train(tmp_path, "--config", str(path)) == 2
    assert (key if key.startswith("[") else f"'{key}'") in one_error_line(capsys)
    assert not (tmp_path / "run").exists()


def test_a_config_folder_is_named(tmp_path, capsys, no_compute):
    assert train(tmp_path, "--config", str(tmp_path)) == 2
    assert "is a folder" in one_error_line(capsys)


def test_resume_without_a_checkpoint_says_so(tmp_path, capsys, no_compute):
    assert train(tmp_path, "--resume") == 2
    line = one_error_line(capsys)
    assert "--resume: no checkpoint under" in line and "start without --resume" in line
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(json.dumps(dataclasses.asdict(TrainConfig())))  # killed before
    # its first checkpoint
    assert train(tmp_path, "--resume") == 2
    assert "no checkpoint" in (line := one_error_line(capsys)) and "--overwrite" in line


def test_out_holding_a_run_needs_resume_or_overwrite(tmp_path, capsys, no_compute, monkeypatch):
    run = tmp_path / "run"
    (run / "checkpoints" / "step_0002").mkdir(parents=True)
    (run / "checkpoints" / "step_0002" / "state.json").write_text('{"step": 2}')
    (run / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n')
    (run / "config.json").write_text(json.dumps(dataclasses.asdict(TrainConfig(seed=9))))
    (run / "eval.json").write_text("{}")  # results of the old run: they must go with it
    (run / "probe").mkdir()
    (run / "notes.txt").write_text("mine")  # not the run's: kept
    assert train(tmp_path) == 2
    assert "already holds a run" in (line := one_error_line(capsys)) and "--resume" in line and "--overwrite" in line
    assert json.loads((run / "config.json").read_text())["seed"] == 9  # untouched
    with pytest.raises(ComputeStarted):  # the model does not load: the old run must survive
        train(tmp_path, "--overwrite", "--seed", "4")
    assert (run / "checkpoints").is_dir() and (run / "metrics.jsonl").is_file() and (run / "eval.json").is_file()
    assert json.loads((run / "config.json").read_text())["seed"] == 9
    loaded_then_compute(monkeypatch)  # the model and judge load: now the old run is replaced
    with pytest.raises(ComputeStarted):
        train(tmp_path, "--overwrite", "--seed", "4")
    assert not (run / "checkpoints").exists() and not (run / "metrics.jsonl").exists()
    assert not (run / "eval.json").exists() and not (run / "probe").exists() and (run / "notes.txt").exists()
    assert json.loads((run / "config.json").read_text())["seed"] == 4


def loaded_then_compute(monkeypatch) -> None:
    """Model and judge 'load' (stand-ins), and the first compute after them raises ComputeStarted."""
    from redgame.llm import judges, models, trainer

    class Model:
        config = None  # no context length to check

        def to(self, **kwargs):
            return self

    def compute(*args, **kwargs):
        raise ComputeStarted

    monkeypatch.setattr(models, "load_base", lambda *a, **k: (Model(), object()))
    monkeypatch.setattr(judges, "make_judge", lambda *a, **k: object())
    monkeypatch.setattr(trainer, "build_roles", compute)


def test_a_config_json_that_is_not_a_runs_is_never_replaced(tmp_path, capsys, no_compute):
    run = tmp_path / "run"
    (run / "final").mkdir(parents=True)
    (run / "final" / "thesis.tex").write_text("mine")
    (run / "config.json").write_text('{"name": "my-app"}')
    for argv in ((), ("--overwrite",), ("--resume",)):
        assert train(tmp_path, *argv) == 2
        assert "not a redgame run's" in one_error_line(capsys) or "--resume" in argv
    assert (run / "final" / "thesis.tex").read_text() == "mine"


def test_a_failed_start_leaves_no_folder_behind(tmp_path, capsys, no_compute):
    assert main(["llm", "train", "--model", "tiny", "--out", str(tmp_path / "a" / "b" / "run"), "--resume"]) == 2
    assert "no checkpoint" in one_error_line(capsys) and not (tmp_path / "a").exists()


def test_a_lock_won_on_a_file_the_holder_removed_is_taken_again(tmp_path):
    """B opened the lock file just before its holder ended and removed it: a later run must not share it."""
    import fcntl

    from redgame.llm.run_lock import LOCK_FILE, run_lock

    with run_lock(tmp_path / "run"):
        stale = os.open(tmp_path / "run" / LOCK_FILE, os.O_RDWR)
        (tmp_path / "run" / "config.json").write_text("{}")  # the run wrote something: its folder stays
    fcntl.flock(stale, fcntl.LOCK_EX | fcntl.LOCK_NB)  # B holds a removed file
    with run_lock(tmp_path / "run"):  # C: a fresh file, held; B's lock is on nothing on disk
        assert (tmp_path / "run" / LOCK_FILE).is_file()
    os.close(stale)


@pytest.mark.parametrize("text", ["[1, 2]", "{not json"])
def test_a_config_json_that_is_no_runs_object_is_never_replaced(tmp_path, capsys, no_compute, text):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "config.json").write_text(text)
    assert train(tmp_path, "--overwrite") == 2
    assert "not a redgame run's" in one_error_line(capsys)
    assert (tmp_path / "run" / "config.json").read_text() == text


def test_resume_and_overwrite_together_are_refused(tmp_path, capsys, no_compute):
    assert train(tmp_path, "--resume", "--overwrite") == 2
    assert "pass one of them" in one_error_line(capsys)


def test_a_second_run_on_the_same_out_is_refused_while_the_first_holds_it(tmp_path, capsys, no_compute):
    from redgame.llm.run_lock import run_lock

    with run_lock(tmp_path / "run"):
        for argv in ((), ("--overwrite",)):
            assert train(tmp_path, *argv) == 2
            assert f"is in use by a run or a probe in progress (process {os.getpid()})" in one_error_line(capsys)
    with pytest.raises(ComputeStarted):  # released: the next run goes ahead
        train(tmp_path)


def test_out_that_is_a_file(tmp_path, capsys, no_compute):
    (tmp_path / "run").write_text("not a folder")
    assert train(tmp_path) == 2
    assert "is not a folder" in one_error_line(capsys)
