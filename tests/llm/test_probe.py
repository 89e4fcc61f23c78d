"""The mirror-gap probe on the tiny model: a fresh attacker against a run's frozen defender."""

import json
import re

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from redgame.errors import UserError
from redgame.games.stats import paired_rate_diff_ci, rate_ci
from redgame.llm.models import load_base
from redgame.llm.probe import probe, probe_config, summarise
from redgame.llm.trainer import train


def test_summary_pairs_prompts_and_matches_a_hand_computation():
    outcomes = {"selfplay": {"success": [True, False, False, False], "refusal_string": [0, 1, 1, 1], "parse_rate": 1},
                "best_response": {"success": [True, True, True, False], "refusal_string": [0, 0, 0, 1],
                                  "parse_rate": 0.5},
                "base_attacker": {"success": [False] * 4, "refusal_string": [1] * 4, "parse_rate": 1}}
    s = summarise(outcomes)
    assert s["selfplay_asr"] == 0.25 and s["best_response_asr"] == 0.75 and s["mirror_gap"] == 0.5
    assert s["best_response_refusal_strings"] == 0.25 and s["best_response_parse_rate"] == 0.5
    # the gap's interval is that of the paired outcomes (prompts 2 and 3 won by the best response alone)
    assert s["mirror_gap_ci"] == pytest.approx(list(paired_rate_diff_ci([1, 1, 1, 0], [1, 0, 0, 0])))
    assert s["mirror_gap_ci"][0] < 0.5 < s["mirror_gap_ci"][1]
    # each ASR's interval is Wilson's, which at 0 of 4 is not a point: [0, 0.49] (scipy's binomtest)
    assert s["base_attacker_asr_ci"] == pytest.approx([0.0, 0.4899], abs=1e-4)
    assert s["selfplay_asr_ci"] == pytest.approx(list(rate_ci(1, 4))) and s["selfplay_unjudged"] == 0


def test_an_answer_the_judge_could_not_read_counts_in_no_rate():
    """Unjudged answers (None) were counted as attack successes: their label of 0.5 passed the threshold."""
    outcomes = {"selfplay": {"success": [None, False, False, True], "refusal_string": [0, 1, 1, 0], "parse_rate": 1},
                "best_response": {"success": [True, None, True, None], "refusal_string": [0] * 4, "parse_rate": 1},
                "base_attacker": {"success": [None] * 4, "refusal_string": [0] * 4, "parse_rate": 1}}
    s = summarise(outcomes)
    assert (s["selfplay_asr"], s["selfplay_unjudged"], s["best_response_asr"]) == (pytest.approx(1 / 3), 1, 1.0)
    assert np.isnan(s["base_attacker_asr"]) and s["base_attacker_unjudged"] == 4
    assert s["mirror_gap"] == pytest.approx(1.0)  # the one prompt read under both (the third): 1 - 0


def test_probe_config_trains_only_a_fresh_attacker(tiny_config):
    cfg = probe_config(tiny_config(regime="defender-sft", identity_attacks=True, greedy_candidates=True), steps=3, seed=5)
    assert (cfg.regime, cfg.train_roles, cfg.steps, cfg.seed) == ("bipolicy", ("attacker",), 3, 5)
    assert cfg.explore_prefixes == () and not cfg.identity_attacks and not cfg.greedy_candidates


def test_a_best_response_gets_pairs_to_learn_from_whatever_the_run_sampled(tiny_config):
    """DPO pairs two attacks on one seed: a shared run's one attack per seed (REINFORCE++ needs no pair) gave the
    best response none, and it played as the base."""
    run = tiny_config(regime="shared", attacks_per_seed=1, responses_per_attack=1)
    cfg = probe_config(run, steps=1, seed=0)
    assert run.resolved_loss() == "reinforce_pp" and cfg.resolved_loss() == "dpo"
    assert (cfg.attacks_per_seed, cfg.responses_per_attack) == (2, 2)
    assert probe_config(tiny_config(attacks_per_seed=3), steps=1, seed=0).attacks_per_seed == 3


@pytest.mark.slow
def test_probe_freezes_the_defender_and_reports_the_gap(tmp_path, judge, tiny_config):
    run = tmp_path / "run"
    train(tiny_config(regime="shared", steps=1), run, progress=False, base=load_base("tiny"), judge=judge)
    summary = probe(run, steps=1, split="validation", progress=False, log=lambda *a: None)
    trained = load_file(str(run / "probe" / "attacker_run" / "final" / "defender" / "adapter_model.safetensors"))
    original = load_file(str(run / "final" / "defender" / "adapter_model.safetensors"))
    assert set(trained) == set(original)
    for k in original:  # the defender played frozen: the run's own weights, unchanged
        assert np.allclose(trained[k].numpy(), original[k].numpy())
    assert summary["n_harmful"] == 18 and summary["split"] == "validation"
    assert summary["mirror_gap"] == pytest.approx(summary["best_response_asr"] - summary["selfplay_asr"])
    assert json.loads((run / "probe" / "probe.json").read_text())["mirror_gap"] == summary["mirror_gap"]
    # A second probe whose evaluation judge cannot answer stops before the first probe's attacker is replaced
    before = {p: p.read_bytes() for p in (run / "probe").rglob("*") if p.is_file()}
    with pytest.raises(UserError, match="unreachable"):
        probe(run, steps=1, split="validation", eval_judge="http:http://127.0.0.1:9/v1", progress=False,
              log=lambda *a: None, overwrite=True)
    assert {p: p.read_bytes() for p in (run / "probe").rglob("*") if p.is_file()} == before


def test_probe_refuses_a_folder_without_a_run(tmp_path):
    with pytest.raises(UserError, match="no config.json"):
        probe(tmp_path, steps=1, progress=False)
    with pytest.raises(UserError, match="--steps"):
        probe(tmp_path, steps=0, progress=False)


@pytest.mark.parametrize("argv,needle", [
    (["--steps", "0"], "--steps must be >= 1"),
    (["--steps", "1"], "no config.json"),
    (["--steps", "1", "--prompts", "-1"], "--prompts must be 0 (all) or at least 2"),
    (["--steps", "1", "--prompts", "1"], "--prompts must be 0 (all) or at least 2"),
    (["--steps", "1", "--set", "seed=3"], "--set seed: the probe sets"),  # was dropped: every sweep ran seed 0
    (["--steps", "1", "--set", "train_roles=defender"], "--set train_roles: the probe sets"),
])
def test_probe_cli_bad_input_is_one_line(tmp_path, capsys, argv, needle):
    from redgame.cli import main

    assert main(["llm", "probe", "--run", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("redgame: error: ") and needle in err[-1]


def test_probe_cli_takes_the_model_and_recipe_overrides(tmp_path, capsys, monkeypatch):
    import redgame.llm.probe as probe_module
    from redgame.cli import main

    seen = {}
    monkeypatch.setattr(probe_module, "probe", lambda run, **kw: seen.update(kw) or {})
    monkeypatch.setattr(probe_module, "report_lines", lambda s: ["ok"])
    argv = ["llm", "probe", "--run", str(tmp_path), "--steps", "1", "--model", "tiny", "--set", "lr=0.01",
            "--set", "attack_tokens=6"]
    assert main(argv) == 0
    assert seen["model"] == "tiny" and seen["overrides"] == {"lr": 0.01, "attack_tokens": 6}
    assert main(["llm", "probe", "--run", str(tmp_path), "--steps", "1", "--set", "nonsense=1"]) == 2
    assert "unknown config key 'nonsense'" in capsys.readouterr().err


def test_probe_cli_json_is_strict_where_a_rate_had_nothing_to_read(tmp_path, capsys, monkeypatch):
    """An attacker whose answers the judge could not read has a NaN ASR: --json printed the token NaN."""
    import redgame.llm.probe as probe_module
    from redgame.cli import main

    outcomes = {"selfplay": {"success": [None, True, None, None], "refusal_string": [0] * 4, "parse_rate": 1},
                "best_response": {"success": [True, None, True, False], "refusal_string": [0] * 4, "parse_rate": 1},
                "base_attacker": {"success": [None] * 4, "refusal_string": [0] * 4, "parse_rate": 1}}  # no pair read
    monkeypatch.setattr(probe_module, "probe", lambda run, **kw: kw["log"]("a line for the user") or summarise(outcomes))
    assert main(["llm", "probe", "--run", str(tmp_path), "--steps", "1", "--json"]) == 0
    said = capsys.readouterr()
    assert said.err == "a line for the user\n"  # on stderr: the stop and resume lines were dropped with --json
    printed = json.loads(said.out, parse_constant=lambda token: pytest.fail(f"not JSON: {token}"))
    assert printed["base_attacker_asr"] is None and printed["mirror_gap_ci"] == [None, None]


@pytest.fixture(scope="module")
def one_step_run(tmp_path_factory, judge):
    from redgame.llm.config import TrainConfig

    run = tmp_path_factory.mktemp("probe") / "run"
    cfg = TrainConfig(model="tiny", steps=1, save_every=0, seeds_per_step=2, attacks_per_seed=1, responses_per_attack=2,
                      attack_tokens=4, response_tokens=4, min_margin=0.0, lora_rank=4, lora_alpha=8)
    train(cfg, run, progress=False, judge=judge, log=lambda *a: None)
    return run


def _keep_some_tensors(folder):
    """Keep three of the adapter file's LoRA tensors (a file damaged, or saved from another base)."""
    weights = folder / "adapter_model.safetensors"
    save_file(dict(sorted(load_file(str(weights)).items())[:3]), str(weights))


def _rename_tensors(folder):
    """lora_A renamed in the file: the other role's file is whole, this one is not."""
    weights = folder / "adapter_model.safetensors"
    save_file({k.replace("lora_A", "lora_Q"): v for k, v in load_file(str(weights)).items()}, str(weights))


def _scale_weights(folder, factor):
    weights = folder / "adapter_model.safetensors"
    save_file({k: v * factor for k, v in load_file(str(weights)).items()}, str(weights))


@pytest.mark.parametrize("damage, message", [
    (lambda run: (run / "final" / "attacker" / "adapter_model.safetensors").write_bytes(b"\x08" + b"\x00" * 49),
     "attacker/adapter_model.safetensors: damaged or not a LoRA adapter peft can load"),
    (lambda run: (run / "final" / "attacker" / "adapter_config.json").write_text("[]"),
     "attacker/adapter_config.json: expected a JSON object, got array"),
    (lambda run: save_file({"x": torch.zeros(1)}, str(run / "final" / "attacker" / "adapter_model.safetensors")),
     "attacker/adapter_model.safetensors: missing LoRA tensors"),
    (lambda run: _keep_some_tensors(run / "final" / "attacker"),
     "its adapters hold different LoRA tensors; one file is damaged: "),
    (lambda run: _keep_some_tensors(run / "final" / "attacker"), "final/attacker lacks 25 of the other's"),
    (lambda run: _rename_tensors(run / "final" / "defender"), "final/defender lacks 14 of the other's"),  # was blamed
    (lambda run: _scale_weights(run / "final" / "defender", float("nan")), "tensors hold NaN or inf values"),
    (lambda run: (run / "config.json").write_bytes(b"\xff"), "config.json: not UTF-8 text (byte 0)"),
    (lambda run: (run / "config.json").write_text("[]"), "config.json: expected a JSON object, got array"),
    (lambda run: (run / "config.json").write_text(json.dumps({**json.loads((run / "config.json").read_text()),
                                                              "full_finetune": True})),
     "trained full weights (full_finetune); the probe loads LoRA runs only"),
])
def test_a_damaged_run_is_refused_before_the_probe_trains(one_step_run, tmp_path, monkeypatch, damage, message):
    import shutil

    import redgame.llm.trainer as trainer

    run = tmp_path / "run"
    shutil.copytree(one_step_run, run, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    damage(run)
    monkeypatch.setattr(trainer, "train", lambda *a, **k: pytest.fail("the probe trained"))
    with pytest.raises(UserError, match=re.escape(message)):
        probe(run, steps=1, progress=False, log=lambda *a: None)
    assert not (run / "probe").exists()


def test_a_defender_missing_some_tensors_is_refused_when_its_role_loads(one_step_run, tmp_path):
    """Loaded leniently, the missing layers would keep their initial weights and play as the base model."""
    import shutil

    from redgame.llm.roles import LoraSettings, build_roles

    shutil.copytree(one_step_run / "final" / "defender", tmp_path / "defender")
    _keep_some_tensors(tmp_path / "defender")
    roles = build_roles(load_base("tiny")[0], regime="bipolicy", lora=LoraSettings(rank=4, alpha=8))
    with pytest.raises(UserError, match="missing LoRA tensors for this base model"):
        roles.load_role("defender", tmp_path / "defender")
    roles.load_role("defender", one_step_run / "final" / "defender")  # a whole file loads


@pytest.mark.parametrize("where", ["attacker_run", "attacker_run/inner"])
def test_an_out_that_would_replace_the_run_is_refused_and_the_run_kept(one_step_run, tmp_path, monkeypatch, where):
    """--out such that the best response's folder (OUT/attacker_run, trained with overwrite) is the run or holds it."""
    import shutil

    import redgame.llm.trainer as trainer

    run = tmp_path / where
    shutil.copytree(one_step_run, run, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    before = sorted(run.rglob("*"))
    monkeypatch.setattr(trainer, "train", lambda *a, **k: pytest.fail("the probe trained"))
    with pytest.raises(UserError, match="which would replace the run it probes"):
        probe(run, steps=1, out=tmp_path, progress=False)
    assert sorted(run.rglob("*")) == before


@pytest.mark.parametrize("inside", ["final", "final/defender", "checkpoints/step_0001"])
def test_an_out_inside_a_folder_the_run_rewrites_is_refused(one_step_run, inside):
    """--out RUN/final put the probe's files where the run's next write of final/ deletes them."""
    from redgame.llm.probe import check_apart

    with pytest.raises(UserError, match="or be replaced by it"):
        check_apart(one_step_run, one_step_run / inside / "attacker_run")
    check_apart(one_step_run, one_step_run / "probe" / "attacker_run")  # the default --out, RUN/probe


def test_the_probe_holds_its_run_so_no_train_replaces_it_meanwhile(one_step_run, tmp_path, monkeypatch):
    """A train --overwrite of the run removed the probe's folder mid-run; other probes of the run may go on."""
    import shutil

    import redgame.llm.probe as probe_module
    import redgame.llm.run_lock as run_lock_module
    from redgame.llm.run_lock import read_lock, run_lock

    run = tmp_path / "run"
    shutil.copytree(one_step_run, run, ignore=shutil.ignore_patterns("checkpoints", "tb"))

    def measure(*args, **kwargs):  # while the probe measures, a train of the same folder is refused
        with pytest.raises(UserError, match=r"--out .*run is in use by a run or a probe in progress"):
            with run_lock(run):
                pass
        with read_lock(run):  # a second probe reads it too
            pass
        return {"measured": True}

    monkeypatch.setattr(probe_module, "_measure", measure)
    assert probe(run, steps=1, progress=False) == {"measured": True}
    with run_lock(run):  # and a probe waits for the run's training
        with pytest.raises(UserError, match=r"--run .*run is in use by a run or a probe in progress \(process "):
            probe(run, steps=1, progress=False)

    def read_only(*args, **kwargs):
        raise PermissionError("read-only file system")

    monkeypatch.setattr(run_lock_module, "_lock", read_only)  # a run this process cannot write: probed unlocked
    monkeypatch.setattr(probe_module, "_measure", lambda *a, **k: {"measured": "unlocked"})
    assert probe(run, steps=1, progress=False) == {"measured": "unlocked"}
    monkeypatch.undo()
    shutil.rmtree(run / "final")  # a run still training has no final adapters yet: in use, not incomplete
    with run_lock(run):
        with pytest.raises(UserError, match=r"--run .*run is in use by a run or a probe in progress \(process "):
            probe(run, steps=1, progress=False)
    with pytest.raises(UserError, match=r"expected"):  # once it stopped, what it lacks is said
        probe(run, steps=1, progress=False)
    with pytest.raises(UserError, match=r"no config.json"):  # and a folder that is not there is not created
        probe(tmp_path / "missing", steps=1, progress=False)
    assert not (tmp_path / "missing").exists()
    (tmp_path / "notes").mkdir()  # a folder that is no run (a mistyped --run) is left as it was, with no lock file
    with pytest.raises(UserError, match=r"no config.json"):
        probe(tmp_path / "notes", steps=1, progress=False)
    assert list((tmp_path / "notes").iterdir()) == []


def test_the_judge_server_a_run_folder_names_is_not_contacted_unless_given(one_step_run, tmp_path, monkeypatch):
    """A run folder from someone else chose where the probe's training sent every judge question, with the user's
    API key: the probe asks for the server to be given on its own command line."""
    import json
    import shutil

    import redgame.llm.probe as probe_module

    run = tmp_path / "run"
    shutil.copytree(one_step_run, run, ignore=shutil.ignore_patterns("checkpoints", "tb"))
    config = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**config, "judge": "http://127.0.0.1:9/v1#theirs"}))
    monkeypatch.setattr(probe_module, "_measure", lambda run, cfg, *a, **k: {"judge": cfg.judge})
    with pytest.raises(UserError, match=r"its judge is a server \(http://127.0.0.1:9/v1#theirs\); the probe sends no "
                                        "prompts"):
        probe(run, steps=1, progress=False)
    assert probe(run, steps=1, progress=False, overrides={"judge": "embedded"}) == {"judge": "embedded"}
    (run / "config.json").write_text(json.dumps({**config, "judge": "http://127.0.0.1:9/v1",
                                                 "judge_format": "llamaguard"}))
    with pytest.raises(UserError, match="--set judge=embedded --set judge_format=redgame$"):  # a format of servers'
        probe(run, steps=1, progress=False)


def test_a_diverged_best_response_is_a_one_line_stop_not_an_internal_error(tmp_path, capsys, monkeypatch):
    import redgame.llm.probe as probe_module
    from redgame.cli import main
    from redgame.llm.trainer import TrainingStopped

    def diverge(run, **kw):
        raise TrainingStopped("step 1: the loss is not finite")

    monkeypatch.setattr(probe_module, "probe", diverge)
    assert main(["llm", "probe", "--run", str(tmp_path), "--steps", "1"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["redgame: probe: step 1: the loss is not finite"]


def test_a_best_response_of_one_answer_per_attack_is_refused(one_step_run):
    """--set responses_per_attack=1 was raised to 2 silently."""
    with pytest.raises(UserError, match="at least 2 answers per attack, got 1"):
        probe(one_step_run, steps=1, overrides={"responses_per_attack": 1}, progress=False)
    with pytest.raises(UserError, match="at least 2 attacks per seed, got 1"):
        probe(one_step_run, steps=1, overrides={"attacks_per_seed": 1}, progress=False)


def test_a_probe_stopped_with_one_attack_per_seed_is_started_again_not_resumed(tmp_path):
    """Probes before 2026-12-06 kept a run's one attack per seed: resuming one was refused for a recipe it could not
    be given (--set attacks_per_seed=1 is refused); the message says to start it again."""
    from redgame.llm.probe import check_not_pairless

    (tmp_path / "attacker_run").mkdir()
    check_not_pairless(tmp_path / "attacker_run")  # no config yet: the folder checks speak
    (tmp_path / "attacker_run" / "config.json").write_text(json.dumps({"attacks_per_seed": 2}))
    check_not_pairless(tmp_path / "attacker_run")
    (tmp_path / "attacker_run" / "config.json").write_text(json.dumps({"attacks_per_seed": 1}))
    with pytest.raises(UserError, match="started with 1 attack per seed.*start it again with --overwrite"):
        check_not_pairless(tmp_path / "attacker_run")


def test_a_probe_folder_is_replaced_only_with_overwrite_and_a_stopped_probe_continues_with_resume(
        one_step_run, tmp_path, capsys, ctrl_c_in_each_step):
    """A probe replaced the one its folder held without a word, and a stopped probe told the user to resume with
    `llm train`, which trained the attacker on but wrote no probe.json."""
    import shutil

    from redgame.cli import main

    out = tmp_path / "probe"
    argv = ["llm", "probe", "--run", str(one_step_run), "--out", str(out), "--prompts", "2", "--no-progress"]
    assert main([*argv, "--steps", "1"]) == 0
    old = (out / "probe.json").read_bytes()
    assert main([*argv, "--steps", "2"]) == 2
    assert "already holds a probe; pass --resume" in capsys.readouterr().err and (out / "probe.json").read_bytes() == old

    with ctrl_c_in_each_step():
        assert main([*argv, "--steps", "2", "--overwrite"]) == 130
    said = capsys.readouterr().out
    assert "the probe stopped at step 1 of 2: no probe.json" in said
    assert "continue with the same redgame llm probe command, adding --resume" in said and "llm train" not in said
    assert not (out / "probe.json").exists() and not (out / "answers.json").exists()  # the replaced probe's

    assert main([*argv, "--steps", "2", "--resume", "--set", "lr=1e-3"]) == 2
    assert "recipe differs in lr" in capsys.readouterr().err
    other = tmp_path / "other"  # the same recipe, another run: the config cannot tell them apart
    shutil.copytree(one_step_run, other)
    assert main([*argv[:3], str(other), *argv[4:], "--steps", "2", "--resume"]) == 2
    assert f"the stopped probe in {out} probes {one_step_run.resolve()}, not {other}" in capsys.readouterr().err
    assert main([*argv, "--steps", "2", "--resume"]) == 0
    assert json.loads((out / "probe.json").read_text())["steps"] == 2
    metrics = (out / "attacker_run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in metrics] == [1, 2]
    shutil.rmtree(out / "attacker_run")  # results and no checkpoint: "start without --resume" was then refused
    assert main([*argv, "--steps", "2", "--resume"]) == 2
    assert "no checkpoint under" in (err := capsys.readouterr().err) and "start the probe again with --overwrite" in err

