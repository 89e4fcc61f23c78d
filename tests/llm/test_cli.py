"""``redgame llm train`` and ``redgame demo`` as a user runs them; bad input fails before compute."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from redgame.cli import main


def _err(capsys):
    """The one error line (transformers' own load progress may precede it)."""
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith("redgame: error: ") and "Traceback" not in "".join(err), err
    return err[-1]


@pytest.mark.parametrize("argv,needle", [
    (["--regime", "coop"], "'regime'"),
    (["--model", "/no/such/model"], "model not found"),
    (["--set", "beta=high"], "'beta'"),
    (["--set", "nonsense=1"], "unknown config key 'nonsense'"),
    (["--steps", "0"], "'steps'"),
    (["--set", "lr=-1"], "config key 'lr' must be > 0, got -1"),
    (["--set", "top_p=0"], "config key 'top_p' must be in (0, 1], got 0"),
    (["--set", "lr=1e38"], "config key 'lr' must be at most 1, got 1e+38"),
    (["--set", "threads=100000"], "config key 'threads' must be at most 1024, got 100000"),
    # finite in float64, an overflow in the float32 loss after the model had loaded (NaN / inf, exit 1)
    (["--set", "beta=1e39"], "config key 'beta' must be at most 1e+06, got 1e+39"),
    (["--set", "nll_weight=1e39"], "config key 'nll_weight' must be at most 1e+06"),
    (["--set", "weight_decay=1e39"], "lr x weight_decay must be < 1, got 0.0002 x 1e+39"),
    # PSRO's keys are checked when it is off too: a resume may turn it on
    (["--set", "population_size=0"], "'population_size' >= 1"),
    (["--set", "lora_alpha=99999999999999999999"], "config key 'lora_alpha' must be in (0, 1048576]"),
    (["--set", "steps=1", "--steps", "2"], "'steps' is given twice, by --steps and by --set steps"),
    (["--set", "lam=1", "--set", "lam=2"], "config key 'lam' is given twice by --set"),
    (["--set", "degenerate_penalty=yes"], "cannot read 'yes' as bool (true, false, 1, 0)"),
    (["--set", "payoff=nonzero_sum", "--set", "payoff_weights=safety=1,safety=2"], "'safety' given twice"),
])
def test_bad_input_is_one_line_before_compute(tmp_path, capsys, argv, needle):
    assert main(["llm", "train", "--out", str(tmp_path / "run"), *argv]) == 2
    assert needle in _err(capsys)
    assert not (tmp_path / "run").exists()  # nothing was started


@pytest.mark.parametrize("text,suffix,needle", [
    ("steps = 3\nwarmup = 2\n", ".toml", "unknown config key 'warmup'"),
    ("steps = 'three'\n", ".toml", "'steps'"),
    ("steps = [\n", ".toml", "malformed config file"),
    ("lr = 1" + "0" * 400 + "\n", ".toml", "'lr'"),  # too large for a float: was an internal OverflowError
    ("regime: shared\nlr: [1]\n", ".yaml", "'lr'"),
    ('{"steps": 1, "lam": 2, "lam": 0.5}', ".json", "key 'lam' given twice"),  # not the last one silently
    ("lam: 2\nlam: 0.5\n", ".yaml", "key 'lam' given twice"),
    ("save_every = 1\nsave-every = 2\n", ".toml", "'save_every' given twice in"),
    ("regime: shared\nreference: no\n", ".yaml", "got bool False (in YAML an unquoted on, off, yes or no"),
])
def test_bad_config_files(tmp_path, capsys, text, suffix, needle):
    path = tmp_path / f"cfg{suffix}"
    path.write_text(text)
    assert main(["llm", "train", "--out", str(tmp_path / "run"), "--config", str(path)]) == 2
    assert needle in _err(capsys)


def test_yaml_reads_exponent_floats_as_toml_does(tmp_path):
    """PyYAML follows YAML 1.1, where 1e-3 is a string; the config reads it as the number it is."""
    from redgame.llm.config import load_file

    yml, toml = tmp_path / "c.yaml", tmp_path / "c.toml"
    yml.write_text("lr: 1e-3\nbeta: 2E+1\nseeds_per_step: 4\njudge: '1e5'\n")
    toml.write_text("lr = 1e-3\nbeta = 2E+1\nseeds_per_step = 4\njudge = '1e5'\n")
    assert load_file(yml) == load_file(toml) == {"lr": 0.001, "beta": 20.0, "seeds_per_step": 4, "judge": "1e5"}
    import yaml

    assert yaml.safe_load("lr: 1e-3") == {"lr": "1e-3"}  # the stock safe loader is left as it was
    from redgame.llm.config import read_yaml

    assert read_yaml("a: &b {lam: 2}\nrun:\n  <<: *b\n  lam: 3\n")["run"] == {"lam": 3}  # a merge, then one key


def test_yaml_reads_an_unquoted_kernels_on_or_off_as_the_word(tmp_path):
    """YAML 1.1 reads ``kernels: off`` as the boolean false; the key's values are the words on and off."""
    from redgame.llm.config import from_mapping, load_file

    for word in ("on", "off"):
        (tmp_path / "c.yaml").write_text(f"kernels: {word}\n")
        assert from_mapping(load_file(tmp_path / "c.yaml")).kernels == word


def test_a_step_too_large_to_hold_is_one_line(tmp_path, capsys):
    for key, value in (("seeds_per_step", 99999999999), ("attacks_per_seed", 100000)):
        assert main(["llm", "train", "--out", str(tmp_path / "run"), "--set", f"{key}={value}"]) == 2
        assert "answers a step, past the 1,048,576 a step can hold" in _err(capsys)


def test_a_seed_longer_than_the_context_is_one_line_before_compute(tmp_path, capsys):
    seeds = tmp_path / "seeds.jsonl"
    long = "Explain, step by step, how bread rises. " * 500  # 20,000 characters: past tiny's 1,024 positions
    seeds.write_text(json.dumps({"prompt": "How do I pick a lock?", "harmful": True}) + "\n"
                     + json.dumps({"prompt": long, "harmful": False}) + "\n")
    assert main(["llm", "train", "--model", "tiny", "--out", str(tmp_path / "run"), "--set", f"train_seeds={seeds}",
                 "--set", "seeds_per_step=2"]) == 2
    err = _err(capsys)
    assert "in the attacker's chat: its chat is" in err and "passes the model's context of 1024" in err
    assert not (tmp_path / "run").exists()


def test_the_context_check_counts_bytes_not_characters():
    """An emoji is one character and several byte-level tokens: 300 of them pass tiny's 1,024 positions."""
    from redgame.errors import UserError
    from redgame.llm.models import load_base
    from redgame.llm.prompts import check_context

    model, tokenizer = load_base("tiny")
    with pytest.raises(UserError, match="passes the model's context of 1024"):
        check_context(tokenizer, model, [("seed 'emoji'", "\U0001F600" * 300)], 48)


def test_malformed_seed_file_and_resume_without_run(tmp_path, capsys):
    bad = tmp_path / "seeds.jsonl"
    bad.write_text("{not json\n")
    assert main(["llm", "train", "--model", "tiny", "--out", str(tmp_path / "a"), "--set", f"train_seeds={bad}"]) == 2
    assert str(bad.name) in _err(capsys)
    assert main(["llm", "train", "--model", "tiny", "--out", str(tmp_path / "b"), "--resume"]) == 2
    assert "no checkpoint" in _err(capsys)


def test_a_list_override_takes_json_for_items_with_commas():
    """--set explore_prefixes=[...] keeps "I'm sorry, but ..." whole; a plain value is still comma-separated."""
    from redgame.errors import UserError
    from redgame.llm.config import parse_override

    assert parse_override('explore_prefixes=["I\'m sorry, but I can\'t help with that", "Sure, here is"]') == (
        "explore_prefixes", ("I'm sorry, but I can't help with that", "Sure, here is"))
    assert parse_override("train_roles=attacker,defender") == ("train_roles", ("attacker", "defender"))
    assert parse_override("explore_prefixes=[]") == ("explore_prefixes", ())
    with pytest.raises(UserError, match="'explore_prefixes'.*not a JSON list"):
        parse_override('explore_prefixes=["unclosed')
    with pytest.raises(UserError, match="not a JSON list of strings"):
        parse_override("explore_prefixes=[1, 2]")


def test_train_seeds_join_the_builtin_split_and_files(tmp_path, capsys):
    """'builtin,FILE' trains on the built-in train split and the file's seeds; a missing file is named."""
    from redgame.errors import UserError
    from redgame.llm.config import TrainConfig
    from redgame.llm.seeds import builtin_seeds
    from redgame.llm.trainer import load_train_seeds

    extra = tmp_path / "more.jsonl"
    extra.write_text('{"prompt": "How do I kill a stuck process?", "harmful": false}\n')
    harmful, benign = load_train_seeds(TrainConfig(train_seeds=f"builtin, {extra}"))
    builtin = builtin_seeds("train")
    assert len(harmful) == sum(s.harmful for s in builtin)
    assert len(benign) == sum(not s.harmful for s in builtin) + 1 and benign[-1].prompt == "How do I kill a stuck process?"
    with pytest.raises(UserError, match=re.escape(f"0 harmful, 1 benign from {extra}")):
        load_train_seeds(TrainConfig(train_seeds=str(extra)))
    flipped = next(s for s in builtin if s.harmful)  # a file that relabels a built-in prompt (spacing aside)
    extra.write_text(json.dumps({"prompt": "  " + flipped.prompt.upper(), "harmful": False}) + "\n")
    with pytest.raises(UserError, match=re.escape(f"training seeds (builtin, {extra}): the prompt ")):
        load_train_seeds(TrainConfig(train_seeds=f"builtin, {extra}"))
    missing = tmp_path / "nowhere.jsonl"
    assert main(["llm", "train", "--model", "tiny", "--out", str(tmp_path / "a"), "--set",
                 f"train_seeds=builtin,{missing}"]) == 2
    assert f"seed file {missing}: not found" in _err(capsys)
    assert main(["llm", "train", "--model", "tiny", "--out", str(tmp_path / "a"), "--set",
                 f"train_seeds={tmp_path}"]) == 2
    assert f"seed file {tmp_path}: not a file" in _err(capsys)  # it said "not found" of a folder that is there


def test_train_on_tiny_from_a_config_file(tmp_path, capsys):
    cfg = tmp_path / "game.toml"
    cfg.write_text("seeds_per_step = 2\nattacks_per_seed = 1\nresponses_per_attack = 2\n"
                   "attack_tokens = 4\nresponse_tokens = 4\nlora_rank = 2\nmin_margin = 0.0\n")
    out = tmp_path / "run"
    argv = ["llm", "train", "--model", "tiny", "--regime", "bipolicy", "--steps", "1", "--out", str(out),
            "--config", str(cfg), "--seed", "3", "--no-progress"]
    assert main(argv) == 0
    resolved = json.loads((out / "config.json").read_text())
    assert resolved["seed"] == 3 and resolved["attack_tokens"] == 4 and resolved["regime"] == "bipolicy"
    assert (out / "final" / "defender" / "adapter_config.json").is_file()
    assert main(argv) == 2 and "already holds a run" in _err(capsys)


def test_llm_cli_imports_no_torch():
    code = "import sys, redgame.cli as c; c.build_parser(); assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_demo_pipeline_on_tiny(tmp_path, capsys):
    from redgame.llm.demo import run

    summary = run(tmp_path, steps=1, progress=False, model="tiny", attack_tokens=4, response_tokens=4,
                  seeds_per_step=2, lora_rank=2, split="validation")
    written = json.loads((tmp_path / "demo.json").read_text())
    for side in ("base", "trained"):
        assert set(written[side]) == {"harmful_refusal", "benign_compliance", "harmful_refusal_strings",
                                      "benign_compliance_strings", "loop_rate", "empty_rate", "unjudged"}
        assert written[side].pop("unjudged") == 0  # the embedded judge reads every answer
        assert all(0.0 <= v <= 1.0 for v in written[side].values())
    for rate in ("harmful_refusal", "benign_compliance"):  # the intervals are of the rates reported
        found = written["intervals"][rate]
        assert found["base"]["rate"] == written["base"][rate] and found["trained"]["rate"] == written["trained"][rate]
        low, high = found["change"]["ci"]
        assert low <= written["trained"][rate] - written["base"][rate] <= high
    step = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert written["training_benign_refusal"] == step["refusal_benign"]  # one step: the watch reads that step
    answers = json.loads((tmp_path / "answers.json").read_text())["trained"]
    assert written["trained"]["loop_rate"] == sum(a["loop"] for a in answers) / len(answers)
    assert written["trained"]["empty_rate"] == sum(not a["answer"].strip() for a in answers) / len(answers)
    assert all(a["refused"] and a["refusal_string"] for a in answers if not a["answer"].strip())
    sys.path.insert(0, str(Path(__file__).parents[2] / "benchmarks"))
    import rejudge_demo
    from redgame.llm.judges import make_judge

    again = rejudge_demo.rejudge(tmp_path, make_judge("embedded"))  # the saved answers, judged again
    for side in ("base", "trained"):
        assert {k: again[side][k] for k in written[side]} == written[side]
        assert again[side]["benign_help"] <= again[side]["benign_compliance"]
    assert any(f"help {again['trained']['benign_help']:.0%}" in line for line in rejudge_demo.table({"r": again}))
    assert written["split"] == "validation" and (written["n_harmful"], written["n_benign"]) == (18, 24)
    assert summary["steps"] == 1
    said = capsys.readouterr().out
    assert "trained defender" in said and "\n  harmful refusal: trained defender − base " in said


def test_a_demo_stopped_by_ctrl_c_evaluates_nothing(tmp_path, capsys, monkeypatch):
    """Ctrl-C stops the training after a step; the demo then stops too (exit 130), writing no numbers."""
    import redgame.llm.trainer as trainer

    real = trainer.train
    monkeypatch.setattr(trainer, "train", lambda cfg, out, **kw: {**real(cfg, out, **kw), "stopped": True, "steps": 1})
    argv = ["demo", "--out", str(tmp_path), "--steps", "2", "--split", "validation", "--no-progress",
            "--set", "model=tiny", "--set", "attack_tokens=4", "--set", "response_tokens=4",
            "--set", "seeds_per_step=2", "--set", "lora_rank=2"]
    assert main(argv) == 130
    assert "stopped at step 1 of 2: nothing evaluated" in capsys.readouterr().out
    assert not (tmp_path / "demo.json").exists()


TINY_DEMO = ["--split", "validation", "--no-progress", "--set", "model=tiny", "--set", "attack_tokens=4",
             "--set", "response_tokens=4", "--set", "seeds_per_step=2", "--set", "lora_rank=2"]


def test_the_demo_makes_its_judge_in_the_configs_format(tmp_path, capsys, monkeypatch):
    """judge_format was recorded in the demo's config but the judge was made in the default format."""
    import redgame.llm.judges as judges
    from redgame.errors import UserError

    made = []

    def record(name, format="redgame", **kw):
        made.append((name, format))
        raise UserError("stopped once the judge is made")

    monkeypatch.setattr(judges, "make_judge", record)
    argv = ["demo", "--out", str(tmp_path / "demo"), *TINY_DEMO, "--set", "judge=lm:tiny", "--set",
            "judge_format=harmbench"]
    assert main(argv) == 2 and "stopped once the judge is made" in _err(capsys)
    assert made == [("lm:tiny", "harmbench")]


def test_a_demo_folder_is_replaced_only_with_overwrite_and_a_stopped_demo_continues_with_resume(
        tmp_path, capsys, ctrl_c_in_each_step):
    """A re-run used to replace the old run silently, and a stop left the old demo.json describing it."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "1", *TINY_DEMO]) == 0
    old = (out / "demo.json").read_bytes()
    assert main(["demo", "--out", str(out), "--steps", "2", *TINY_DEMO]) == 2
    assert "already holds a demo; pass --resume" in _err(capsys) and (out / "demo.json").read_bytes() == old

    with ctrl_c_in_each_step():
        assert main(["demo", "--out", str(out), "--steps", "2", "--overwrite", *TINY_DEMO]) == 130
    said = capsys.readouterr().out
    assert "stopped at step 1 of 2: nothing evaluated, no demo.json" in said
    assert "continue with the same redgame demo command, adding --resume (and leaving out --overwrite)" in said
    assert "llm train" not in said
    assert not (out / "demo.json").exists() and not (out / "answers.json").exists()  # the replaced demo's

    assert main(["demo", "--out", str(out), "--steps", "2", "--resume", *TINY_DEMO, "--set", "lr=1e-3"]) == 2
    said = _err(capsys)  # it would train on with another recipe; the error names the --set that restores it
    assert "recipe differs in lr 0.0015 (now 0.001)" in said and "(these restore it: --set lr=0.0015)" in said
    at = TINY_DEMO.index("model=tiny")
    embedded = TINY_DEMO[:at - 1] + TINY_DEMO[at + 1:]  # the --set model=tiny left out
    assert main(["demo", "--out", str(out), "--steps", "2", "--resume", *embedded]) == 2
    said = _err(capsys)  # the demo's own words, not llm train's "a bare --resume continues with the run's config"
    assert "the stopped demo's recipe differs in model 'tiny' (now 'embedded')" in said and "bare" not in said
    assert main(["demo", "--out", str(out), "--steps", "2", "--resume", *TINY_DEMO]) == 0
    assert json.loads((out / "demo.json").read_text())["steps"] == 2
    assert [json.loads(r)["step"] for r in (out / "run" / "metrics.jsonl").read_text().splitlines()] == [1, 2]
    finished = (out / "demo.json").read_bytes()
    assert main(["demo", "--out", str(out), "--steps", "2", "--resume", *TINY_DEMO]) == 2  # it evaluated again
    assert "finished its 2 steps (demo.json is there): nothing to resume" in _err(capsys)
    assert (out / "demo.json").read_bytes() == finished


def test_a_demo_the_training_would_refuse_is_refused_before_the_base_is_evaluated_and_the_old_demo_stays(
        tmp_path, capsys, monkeypatch):
    import redgame.llm.evaluation as evaluation

    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--steps", "1", *TINY_DEMO]) == 0
    before = sorted(p.name for p in out.iterdir())
    monkeypatch.setattr(evaluation, "evaluate_defender", lambda *a, **k: pytest.fail("the base was evaluated"))
    longer = [x.replace("attack_tokens=4", "attack_tokens=2000") for x in TINY_DEMO]
    assert main(["demo", "--out", str(out), "--steps", "1", "--overwrite", *longer]) == 2
    assert "passes the model's context" in _err(capsys)
    assert sorted(p.name for p in out.iterdir()) == before == ["answers.json", "demo.json", "run"]


@pytest.mark.parametrize("argv,needle", [
    (["--set", "train_seeds=missing.jsonl"], "missing.jsonl: not found"),
    (["--resume"], "no checkpoint under"),
    (["--resume", "--overwrite"], "pass one of them"),
])
def test_demo_input_errors_come_before_any_model_loads(tmp_path, capsys, monkeypatch, argv, needle):
    import redgame.llm.models as models

    monkeypatch.setattr(models, "load_base", lambda *a, **k: pytest.fail("a model loaded"))
    assert main(["demo", "--out", str(tmp_path / "demo"), *TINY_DEMO, *argv]) == 2
    assert needle in _err(capsys)
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("argv,needle", [
    (["--set", "nonsense=1"], "unknown config key 'nonsense'"),
    (["--set", "update_chunk=-1"], "'update_chunk'"),
    (["--set", "steps=3"], "--steps"),
])
def test_demo_overrides_are_checked_before_compute(tmp_path, capsys, argv, needle):
    assert main(["demo", "--out", str(tmp_path / "demo"), *argv]) == 2
    assert needle in _err(capsys)
    assert not (tmp_path / "demo").exists()


def test_a_bare_resume_continues_the_runs_own_recipe(tmp_path, capsys):
    """`--resume` without --config reads the run's config.json: the CLI's defaults do not replace its recipe."""
    run = str(tmp_path / "run")
    recipe = ["--set", "attack_tokens=4", "--set", "response_tokens=4", "--set", "seeds_per_step=2"]
    assert main(["llm", "train", "--model", "tiny", "--steps", "1", "--seed", "3", "--save-every", "1",
                 "--no-progress", "--out", run, *recipe]) == 0
    assert main(["llm", "train", "--out", run, "--resume", "--steps", "2", "--no-progress"]) == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (saved["steps"], saved["seed"], saved["attack_tokens"], saved["seeds_per_step"], saved["model"]) == (
        2, 3, 4, 2, "tiny")
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]


@pytest.mark.parametrize("stray", ["metrics.jsonl", "checkpoints/notes.txt", "final"])
@pytest.mark.parametrize("flag", [[], ["--overwrite"]])
def test_run_files_without_a_run_config_are_refused_and_kept(tmp_path, capsys, stray, flag):
    """A fresh run appended to a stray metrics.jsonl, stopped at its end on a file named final, and
    --overwrite removed a checkpoints/ folder it had not written."""
    path = tmp_path / "run" / stray
    path.parent.mkdir(parents=True)
    path.write_text("kept\n")
    assert main(["llm", "train", "--model", "tiny", "--steps", "1", "--out", str(tmp_path / "run"), *flag]) == 2
    assert f"holds {stray.split('/')[0]} but no run config.json" in _err(capsys)
    assert path.read_text() == "kept\n"


def test_a_lora_rank_wider_than_the_model_is_one_line_and_claims_no_folder(tmp_path, capsys):
    assert main(["llm", "train", "--model", "tiny", "--steps", "1", "--out", str(tmp_path / "run"),
                 "--set", "lora_rank=1000000"]) == 2
    assert "config key 'lora_rank' is 1000000, above the model's hidden size" in _err(capsys)
    assert not (tmp_path / "run" / "config.json").exists()


def test_a_bare_resume_on_another_tools_folder_names_its_config(tmp_path, capsys):
    (tmp_path / "config.json").write_text('{"name": "my-other-tool", "version": 3}')
    assert main(["llm", "train", "--model", "tiny", "--out", str(tmp_path), "--resume"]) == 2
    assert "its config.json is not a redgame run's" in _err(capsys)


def test_a_bare_resume_names_the_judge_server_its_config_sends_to(tmp_path, capsys):
    """A run folder from someone else may name their judge server: a bare --resume says so before sending to it."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "tiny", "regime": "bipolicy", "steps": 1,
                                                 "judge": "http://127.0.0.1:9/v1"}))
    main(["llm", "train", "--out", str(run), "--resume", "--no-progress"])
    err = capsys.readouterr().err
    assert f"resuming with the judge server that {run / 'config.json'} names: http://127.0.0.1:9/v1" in err
    main(["llm", "train", "--out", str(run), "--resume", "--no-progress", "--config", str(run / "config.json")])
    assert "resuming with the judge server" not in capsys.readouterr().err  # the user named the file
    (run / "config.json").write_text(json.dumps({"model": "tiny", "regime": "bipolicy", "steps": 1}))
    main(["llm", "train", "--out", str(run), "--resume", "--no-progress", "--set", "judge=http://127.0.0.1:9/v1"])
    assert "resuming with the judge server" not in capsys.readouterr().err  # the user typed it: the file names none


def test_a_full_finetune_run_says_it_saved_full_weights(tmp_path, capsys):
    """The closing line said 'adapters in RUN/final' where final/ holds the roles' full weights."""
    run = tmp_path / "run"
    assert main(["llm", "train", "--model", "tiny", "--regime", "advgame", "--steps", "1", "--no-progress",
                 "--out", str(run), "--set", "full_finetune=true", "--set", "attack_tokens=4",
                 "--set", "response_tokens=4", "--set", "seeds_per_step=2"]) == 0
    assert f"done: 1 steps; full weights in {run / 'final'}" in capsys.readouterr().out
    assert (run / "final" / "defender" / "model.safetensors").is_file()
