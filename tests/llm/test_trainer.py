"""The trainer on the tiny model: every regime, reloading, exact resume, NaN and Ctrl-C stops."""

import json
import os
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from redgame.errors import UserError
from redgame.llm import trainer, watch
from redgame.llm.checkpoint import latest_checkpoint
from redgame.llm.models import load_base
from redgame.llm.roles import build_roles
from redgame.llm.trainer import TrainingStopped, seed_batch, train, updates_role

IDS = torch.tensor([[1, 17, 33, 4, 250]])


def _adapter(path):
    return load_file(str(path / "adapter_model.safetensors"))


@pytest.mark.parametrize("regime,loss", [("shared", "auto"), ("bipolicy", "auto"), ("separate", "ipo"),
                                         ("advgame", "auto"), ("advgame", "grpo"), ("sequential", "auto")])
def test_every_regime_trains_and_saves_loadable_adapters(tmp_path, judge, tiny_config, regime, loss, monkeypatch):
    cfg = tiny_config(regime=regime, loss=loss, steps=2)
    base = load_base("tiny")
    # The tiny model's random-token attacks are never faithful to the seed (each would earn -1,
    # leaving GRPO no contrast); count every attack faithful so both roles must learn.
    monkeypatch.setattr(judge, "faithful_threshold", -1.0)
    result = train(cfg, tmp_path, progress=False, base=base, judge=judge)
    roles = result["roles"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for key in ("attack_success", "refusal_harmful", "refusal_benign", "parse_errors", "judge_errors",
                "tokens_per_s", "time/rollout"):
        assert key in rows[0]
    assert json.loads((tmp_path / "config.json").read_text())["regime"] == regime
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())
    trained = set(cfg.train_roles) if regime != "sequential" else {"defender"}  # k=2: defender first
    for role in ("attacker", "defender"):
        weights = _adapter(tmp_path / "final" / role)
        lora_b = [v for k, v in weights.items() if "lora_B" in k]
        moved = any(float(v.abs().max()) > 0 for v in lora_b)  # B starts at zero in peft
        assert moved == (role in trained or regime == "shared"), role
        with roles.policy(role) as m, torch.no_grad():
            expected = m(input_ids=IDS).logits
        loaded = PeftModel.from_pretrained(load_base("tiny")[0], str(tmp_path / "final" / role))
        with torch.no_grad():
            torch.testing.assert_close(loaded(input_ids=IDS).logits, expected)


def test_a_run_that_the_over_refusal_watch_flags_says_so_at_the_end(tmp_path, judge, tiny_config, monkeypatch):
    lines = []
    monkeypatch.setattr(watch, "THRESHOLD", 0.0)  # every run is flagged
    train(tiny_config(steps=1), tmp_path / "flagged", progress=False, judge=judge, log=lines.append)
    assert sum(line.startswith("over-refusal watch:") for line in lines) == 1
    monkeypatch.setattr(watch, "THRESHOLD", 1.01)  # no run is flagged
    lines.clear()
    train(tiny_config(steps=1), tmp_path / "quiet", progress=False, judge=judge, log=lines.append)
    assert not any("over-refusal" in line for line in lines)


def test_the_watch_stays_quiet_where_a_finished_run_has_no_readable_metrics(tmp_path):
    lines = []
    trainer.warn_of_over_refusal(tmp_path, lines.append)  # no metrics.jsonl
    (tmp_path / "metrics.jsonl").write_text("")
    trainer.warn_of_over_refusal(tmp_path, lines.append)  # an empty one
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"step": 1, "refusal_benign": 1.0}) + "\n")
    trainer.warn_of_over_refusal(tmp_path, lines.append)
    assert len(lines) == 1 and "100%" in lines[0]


def test_resume_continues_exactly(tmp_path, judge, tiny_config):
    cfg = tiny_config(regime="advgame", steps=3, save_every=1, seed=7)
    train(cfg, tmp_path / "straight", progress=False, base=load_base("tiny"), judge=judge)
    cut = tiny_config(regime="advgame", steps=2, save_every=1, seed=7)
    train(cut, tmp_path / "cut", progress=False, base=load_base("tiny"), judge=judge)
    with pytest.raises(ValueError, match="already holds a run"):
        train(cfg, tmp_path / "cut", progress=False, base=load_base("tiny"), judge=judge)
    train(cfg, tmp_path / "cut", resume=True, progress=False, base=load_base("tiny"), judge=judge)
    for role in ("attacker", "defender"):
        a, b = _adapter(tmp_path / "straight" / "final" / role), _adapter(tmp_path / "cut" / "final" / role)
        assert a.keys() == b.keys()
        assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5
    a = load_file(str(latest_checkpoint(tmp_path / "straight") / "weights.safetensors"))
    b = load_file(str(latest_checkpoint(tmp_path / "cut") / "weights.safetensors"))
    assert any(".ref/" in k for k in a)  # the EMA reference is part of the state
    assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5
    rows = (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["step"] for r in rows] == [1, 2, 3]


def test_every_step_judges_from_an_empty_memo(tmp_path, judge, tiny_config, monkeypatch):
    """An embedding kept from the step before a checkpoint differed in its last bits from the resumed run's, which
    embeds it afresh in another batch's padding: a 2-process resume was 2.3e-6 off the uninterrupted run."""
    steps = []
    monkeypatch.setattr(judge, "forget", lambda: steps.append(len(steps) + 1))
    train(tiny_config(regime="bipolicy", steps=3, save_every=0), tmp_path / "run", progress=False, judge=judge)
    assert steps == [1, 2, 3]


def test_resume_refuses_another_recipe_or_no_step_left_and_keeps_the_run_config(tmp_path, judge, tiny_config):
    cfg = tiny_config(steps=2, save_every=1)
    train(cfg, tmp_path, progress=False, base=load_base("tiny"), judge=judge)
    saved = (tmp_path / "config.json").read_text()
    for changed, needle in ((dict(lora_rank=2), "lora_rank is 2, the run's is"), (dict(steps=1), "at step 2"),
                            (dict(steps=1), "--steps 1 is fewer; give at least 2")):
        with pytest.raises(ValueError, match=needle):
            train(tiny_config(**{"steps": 2, "save_every": 1, **changed}), tmp_path, resume=True, progress=False,
                  base=load_base("tiny"), judge=judge)
        assert (tmp_path / "config.json").read_text() == saved  # a refused resume leaves the run as it was
    import shutil

    shutil.rmtree(tmp_path / "final" / "defender")  # killed between the two roles' final writes
    train(tiny_config(steps=2, save_every=1), tmp_path, resume=True, progress=False, base=load_base("tiny"),
          judge=judge)
    assert (tmp_path / "final" / "defender").is_dir()


@pytest.mark.parametrize("lockstep", [False, True])
def test_under_fsdp_the_update_scores_without_a_rank_dependent_pass(monkeypatch, lockstep):
    """Under FSDP every rank must run the same forward passes. A rank whose batch repeated a prompt ran a second
    (prompt-sharing) pass the others did not, and the ranks then waited on each other for ever."""
    from redgame.llm.config import TrainConfig

    asked = {}
    monkeypatch.setattr(trainer, "score", lambda jobs, pad, **kw: asked.update(kw) or [])
    cfg = TrainConfig(model="tiny", share_prompts=True, micro_batch_tokens=512).validate()
    game = SimpleNamespace(cfg=cfg, dist=SimpleNamespace(lockstep=lockstep), tokenizer=SimpleNamespace(pad_token_id=0),
                           kernels=None)
    trainer._score(game, [])
    assert (asked["share_prompts"], asked["micro_tokens"]) == ((False, 0) if lockstep else (True, 512))


@pytest.mark.parametrize("regime,loss", [("bipolicy", "dpo"), ("bipolicy", "grpo"), ("bipolicy", "reinforce"),
                                         ("defender-sft", "auto")])
def test_under_fsdp_a_rank_with_nothing_to_learn_still_scores_a_zero_weight_unit(monkeypatch, regime, loss):
    """FSDP: a rank with nothing to learn must run the other ranks' forward passes. Its stand-in was a pair, which
    only DPO/IPO read: under SFT (or policy gradient) it scored nothing, and the other ranks waited for ever."""
    from redgame.llm.config import TrainConfig
    from redgame.llm.rewards import RoleSignal
    from redgame.llm.rollout import Completion

    monkeypatch.setattr(trainer, "sft_signal", lambda rnd, judged: RoleSignal())
    cfg = TrainConfig(model="tiny", regime=regime, loss=loss, explore_prefixes=("I'm sorry",)).validate()
    dist = SimpleNamespace(lockstep=True, batch_share=lambda n: 0.0 if n == 0 else 0.5, any_rank=lambda flag: True)
    samples = [Completion([5, 6], [7, 8, 9], "") for _ in range(2)]
    rnd = SimpleNamespace(attacks=samples, responses=samples)
    judged = SimpleNamespace(attacker=RoleSignal(), defender=RoleSignal(), attack_harmful=[])
    batches = trainer.role_batches(SimpleNamespace(cfg=cfg, dist=dist), 0, {"attacker": rnd, "defender": rnd},
                                   {"attacker": judged, "defender": judged})
    roles = ["defender"] if regime == "defender-sft" else ["attacker", "defender"]
    assert [b.role for b in batches] == roles
    assert all(b.stand_in and b.share == 0.0 and len(b.sequences) == (2 if loss == "dpo" else 1) for b in batches)


def test_a_resume_trains_at_its_own_learning_rate_and_a_refused_one_keeps_the_config(tmp_path, judge, tiny_config):
    """The optimiser's saved settings came back with its state: a resume at another lr trained at the old one."""
    train(tiny_config(steps=1, save_every=1, lr=2e-4), tmp_path, progress=False, base=load_base("tiny"), judge=judge)
    train(tiny_config(steps=2, save_every=1, lr=1e-2, weight_decay=0.5), tmp_path, resume=True, progress=False,
          base=load_base("tiny"), judge=judge)
    saved = json.loads((tmp_path / "checkpoints" / "step_0002" / "optimizer.json").read_text())
    groups = [g for meta in saved.values() for g in meta["param_groups"]]
    assert groups and all(g["lr"] == 1e-2 and g["weight_decay"] == 0.5 for g in groups)
    config = (tmp_path / "config.json").read_text()
    weights = tmp_path / "checkpoints" / "step_0002" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # damaged
    with pytest.raises(ValueError, match="damaged"):
        train(tiny_config(steps=3, save_every=1, lr=5e-2), tmp_path, resume=True, progress=False,
              base=load_base("tiny"), judge=judge)
    assert (tmp_path / "config.json").read_text() == config  # a refused resume leaves the run as it was


def test_the_last_steps_train_at_the_decayed_rate_and_the_steps_before_are_a_constant_runs(tmp_path, judge,
                                                                                           tiny_config, monkeypatch):
    real_step, rates = torch.optim.AdamW.step, []

    def recording(self, *a, **k):
        rates.append({g["lr"] for g in self.param_groups})
        return real_step(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", recording)
    train(tiny_config(steps=4, lr=1e-2, lr_decay_steps=2), tmp_path / "decay", progress=False,
          base=load_base("tiny"), judge=judge)
    expected = [1e-2, 1e-2, 1e-2 * 2 / 3, 1e-2 / 3]
    per_step = len(rates) // 4  # one optimiser step per parameter set
    assert per_step >= 1 and [r for k, r in enumerate(rates) if k % per_step == 0] == [{x} for x in expected]
    train(tiny_config(steps=4, lr=1e-2), tmp_path / "constant", progress=False, base=load_base("tiny"), judge=judge)
    rows = {name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("decay", "constant")}
    assert [r["lr"] for r in rows["decay"]] == pytest.approx(expected)
    learnt = lambda row: {k: v for k, v in row.items() if "loss" in k or "reward" in k}  # noqa: E731
    decayed, constant = rows["decay"][:3], rows["constant"][:3]  # step 3's losses come before its optimiser step
    assert all(learnt(a) for a in decayed) and [learnt(a) for a in decayed] == [learnt(b) for b in constant]
    assert learnt(rows["decay"][3]) != learnt(rows["constant"][3])


def test_resume_without_checkpoint_says_so(tmp_path, judge, tiny_config):
    with pytest.raises(ValueError, match="no checkpoint"):
        train(tiny_config(), tmp_path, resume=True, progress=False, base=load_base("tiny"), judge=judge)


def test_nan_loss_stops_and_keeps_last_checkpoint(tmp_path, judge, tiny_config, monkeypatch):
    real = trainer.role_loss
    calls = {"n": 0}

    def poisoned(cfg, roles, role, samples, signal_, pad_id, **kwargs):
        loss, info = real(cfg, roles, role, samples, signal_, pad_id, **kwargs)
        calls["n"] += role == "defender"  # the defender has pairs every step (the attacker's may all tie)
        return (loss * float("nan") if calls["n"] > 1 else loss), info  # from step 2 on

    monkeypatch.setattr(trainer, "role_loss", poisoned)
    with pytest.raises(TrainingStopped, match="step 2.*nan.*step_0001"):
        train(tiny_config(steps=3, save_every=1), tmp_path, progress=False, base=load_base("tiny"), judge=judge)
    assert latest_checkpoint(tmp_path).name == "step_0001"


def test_weights_that_diverge_without_a_nan_loss_stop_the_run_in_one_line(tmp_path, judge, tiny_config, capsys):
    """lr 1 in float16: each loss is finite, but the weights grow until the next rollout's logits overflow. The
    run stops with the cause and a fresh start at a lower rate (not a resume from the diverged checkpoints)."""
    cfg = tiny_config(steps=8, save_every=1, lr=1.0, dtype="float16")
    with pytest.raises(TrainingStopped, match=r"step \d: sampling: .* not finite.*the weights diverged \(lr 1, "
                                              r"dtype float16\).*--overwrite --set lr="):
        train(cfg, tmp_path, progress=False, base=load_base("tiny"), judge=judge)
    assert "the run stopped" not in capsys.readouterr().err  # one message, not two


def test_logits_that_are_not_finite_before_any_update_do_not_blame_the_learning_rate(tmp_path, judge, tiny_config,
                                                                                     monkeypatch):
    from redgame.llm import config

    with pytest.raises(UserError, match="'temperature' must be at least 0.01, got 1e-45"):  # before any model loads
        train(tiny_config(steps=1, temperature=1e-45), tmp_path, progress=False)
    monkeypatch.setattr(config, "MIN_TEMPERATURE", 0.0)  # logits that overflow anyway: the run's own check
    with pytest.raises(TrainingStopped, match=r"step 1: .*before any update: check the sampling settings "
                                              r"\(temperature 1e-45"):
        train(tiny_config(steps=1, temperature=1e-45), tmp_path, progress=False, base=load_base("tiny"), judge=judge)


def test_an_overwrite_stopped_midway_leaves_a_run_that_overwrite_takes(tmp_path, judge, tiny_config, monkeypatch):
    """The run's files go before its config.json: a stop between them leaves a folder that is still a run."""
    import shutil

    train(tiny_config(steps=1, save_every=1), tmp_path, progress=False, base=load_base("tiny"), judge=judge)
    real = shutil.rmtree

    def stopped(path, *a, **k):
        if Path(path).name == "final":
            raise KeyboardInterrupt
        return real(path, *a, **k)

    monkeypatch.setattr(shutil, "rmtree", stopped)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(steps=1), tmp_path, overwrite=True, progress=False, base=load_base("tiny"), judge=judge)
    monkeypatch.undo()
    assert (tmp_path / "config.json").is_file()
    train(tiny_config(steps=1), tmp_path, overwrite=True, progress=False, base=load_base("tiny"), judge=judge)
    assert (tmp_path / "final" / "defender").is_dir()


def test_gradients_or_weights_that_are_not_finite_stop_before_they_are_saved(tmp_path, judge, tiny_config,
                                                                             monkeypatch):
    real_clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda *a, **k: real_clip(*a, **k) * float("inf"))
    with pytest.raises(TrainingStopped, match="step 1: the .* gradients are not finite"):
        train(tiny_config(steps=2, save_every=1), tmp_path / "grads", progress=False, base=load_base("tiny"),
              judge=judge)
    monkeypatch.undo()
    real_step = torch.optim.AdamW.step

    def overflowing(self, *a, **k):
        out = real_step(self, *a, **k)
        with torch.no_grad():
            self.param_groups[0]["params"][0].fill_(float("inf"))
        return out

    monkeypatch.setattr(torch.optim.AdamW, "step", overflowing)
    with pytest.raises(TrainingStopped, match="step 1: the .* weights are not finite after the optimiser step"):
        train(tiny_config(steps=2, save_every=1), tmp_path / "weights", progress=False, base=load_base("tiny"),
              judge=judge)
    assert latest_checkpoint(tmp_path / "weights") is None


def test_a_stop_while_the_final_roles_are_written_leaves_no_half_and_names_the_resume(tmp_path, judge, tiny_config,
                                                                                     monkeypatch, capsys):
    from redgame.llm.roles import Roles

    real, seen = Roles.save_role, []

    def interrupted(self, role, path, tokenizer=None):
        seen.append(role)
        if role == "defender" and Path(path).parent.name.startswith(".tmp.final."):
            raise KeyboardInterrupt  # Ctrl-C after the attacker's final adapter was written
        return real(self, role, path, tokenizer=tokenizer)

    monkeypatch.setattr(Roles, "save_role", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_config(steps=2, save_every=1), tmp_path, progress=False, base=load_base("tiny"), judge=judge)
    assert not (tmp_path / "final").exists() and not list(tmp_path.glob(".tmp.final*"))
    assert "the final adapters were not written; last checkpoint" in capsys.readouterr().err
    monkeypatch.undo()
    train(tiny_config(steps=2, save_every=1), tmp_path, resume=True, progress=False, base=load_base("tiny"),
          judge=judge)
    assert sorted(p.name for p in (tmp_path / "final").iterdir()) == ["attacker", "defender"]


def test_a_checkpoint_left_half_written_by_a_kill_is_cleared_at_the_next_save(tmp_path, judge, tiny_config):
    train(tiny_config(steps=1, save_every=1), tmp_path, progress=False, base=load_base("tiny"), judge=judge)
    stale = tmp_path / "checkpoints" / ".tmp.step_0005.abc"  # killed mid-write at a step the resume never saves
    stale.mkdir()
    (stale / "weights.safetensors").write_bytes(b"half")
    train(tiny_config(steps=2, save_every=1), tmp_path, resume=True, progress=False, base=load_base("tiny"),
          judge=judge)
    assert not stale.exists() and (tmp_path / "checkpoints" / "step_0002").is_dir()


def test_overwrite_with_an_unreachable_judge_server_leaves_the_old_run(tmp_path, judge, tiny_config):
    """The judge server is asked before the old run's files go (it used to be asked first at step 1)."""
    train(tiny_config(steps=1, save_every=1), tmp_path, progress=False, base=load_base("tiny"), judge=judge)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(UserError, match="unreachable"):
        train(tiny_config(steps=1, judge="http://127.0.0.1:9/v1"), tmp_path, overwrite=True, progress=False,
              base=load_base("tiny"))
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_any_error_mid_run_names_the_last_checkpoint_and_the_resume_command(tmp_path, judge, tiny_config,
                                                                           monkeypatch, capsys):
    real = trainer.judge_round
    calls = {"n": 0}

    def broken(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # step 2
            raise RuntimeError("the judge server went away")
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "judge_round", broken)
    with pytest.raises(RuntimeError, match="went away"):
        train(tiny_config(steps=3, save_every=1), tmp_path, progress=False, base=load_base("tiny"), judge=judge)
    err = capsys.readouterr().err
    assert "stopped at step 2 (RuntimeError)" in err and "step_0001" in err
    assert f"--config {tmp_path / 'config.json'} --out {tmp_path} --resume" in err


def test_psro_step_where_no_role_trains_still_plays(tmp_path, judge, tiny_config):
    """sequential trains the defender first; with train_roles=attacker nobody trains at step 1 (was a crash)."""
    cfg = tiny_config(regime="sequential", train_roles=("attacker",), population_every=1, steps=3, sequential_k=1,
                      population_eval_seeds=2)
    result = train(cfg, tmp_path, progress=False, base=load_base("tiny"), judge=judge)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3] and not result["stopped"]
    assert not any(k.startswith("defender/") for r in rows for k in r)


def test_ctrl_c_checkpoints_and_exits_cleanly(tmp_path, judge, tiny_config, monkeypatch):
    real = trainer.judge_round

    def interrupted(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C mid-step
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "judge_round", interrupted)
    # start from Python's own handler: a process started in the background inherits SIGINT ignored
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = train(tiny_config(steps=3), tmp_path, progress=False, base=load_base("tiny"), judge=judge)
        assert result["stopped"] and result["steps"] == 1
        assert latest_checkpoint(tmp_path).name == "step_0001"
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the trainer put it back
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.mark.parametrize("launched", [False, True])
def test_ctrl_c_under_torchrun_says_the_launcher_will_kill_a_long_step(capsys, monkeypatch, launched):
    """torchrun SIGKILLs its workers 30 s after Ctrl-C by default: a longer step was lost after the line that
    promised its checkpoint."""
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    if launched:
        monkeypatch.setenv("TORCHELASTIC_RUN_ID", "none")
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with trainer._StopFlag() as stop:
            os.kill(os.getpid(), signal.SIGINT)
            assert stop.requested
    finally:
        signal.signal(signal.SIGINT, previous)
    said = capsys.readouterr().err  # not stdout, which may carry JSON (llm probe --json)
    assert "stopping after this step and checkpointing" in said
    assert ("start torchrun with --shutdown-timeout longer than a step" in said) == launched


def test_a_loss_not_finite_on_another_rank_is_not_blamed_on_this_ranks(tmp_path, judge, tiny_config, monkeypatch):
    """Under torchrun, the ranks whose loss was finite named it as the reason: "the defender loss is 0.68"."""
    from redgame.llm.distributed import Dist
    from redgame.llm.trainer import TrainingStopped

    monkeypatch.setattr(Dist, "all_ranks", lambda self, flag: False)  # another rank's loss was NaN
    with pytest.raises(TrainingStopped, match=r"step 1: the \w+ loss is not finite on another rank"):
        train(tiny_config(steps=1), tmp_path, progress=False, base=load_base("tiny"), judge=judge)


def test_ctrl_c_in_the_last_step_finishes_the_run(tmp_path, judge, tiny_config, monkeypatch):
    """Every step was played: the run ends as an uninterrupted one (it stopped without final/ before)."""
    real, calls = trainer.judge_round, []

    def interrupted_in_step_2(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # step 2's judging (one judge_round a step)
            os.kill(os.getpid(), signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "judge_round", interrupted_in_step_2)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        result = train(tiny_config(steps=2), tmp_path, progress=False, base=load_base("tiny"), judge=judge)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert len(calls) == 2 and not result["stopped"] and result["steps"] == 2
    assert (tmp_path / "final" / "defender" / "adapter_model.safetensors").is_file()
    assert result["interrupted"]  # a command that goes on from here (demo, probe, claims, train && eval) stops


def test_schedule_and_data_order(tiny_config):
    cfg = tiny_config(regime="sequential", sequential_k=2)
    assert [updates_role(cfg, s, "defender") for s in range(6)] == [True, True, False, False, True, True]
    assert [updates_role(cfg, s, "attacker") for s in range(6)] == [False, False, True, True, False, False]
    assert all(updates_role(tiny_config(regime="bipolicy"), s, "attacker") for s in range(3))
    assert not updates_role(tiny_config(train_roles=("defender",)), 0, "attacker")
    harmful, benign = [f"h{i}" for i in range(5)], [f"b{i}" for i in range(5)]

    class S(str):
        pass

    cfg = tiny_config(seeds_per_step=4)
    batch = seed_batch(harmful, benign, cfg, 3)
    assert batch == seed_batch(harmful, benign, cfg, 3)
    assert all(b.startswith("h") for b in batch[:2]) and all(b.startswith("b") for b in batch[2:])
    assert len(set(batch[:2])) == 2


def test_identity_attacks_train_the_defender_only(tiny, judge):
    from redgame.llm.rewards import RewardRules, judge_round
    from redgame.llm.roles import LoraSettings
    from redgame.llm.rollout import SamplingSettings, play_round
    from redgame.llm.seeds import builtin_seeds
    from redgame.llm.trainer import round_metrics

    model, tok = tiny
    roles = build_roles(model, regime="bipolicy", lora=LoraSettings(rank=4, alpha=8))
    seeds = [s for s in builtin_seeds("train") if s.harmful][:2] + [s for s in builtin_seeds("train") if not s.harmful][:1]
    short = SamplingSettings(max_new_tokens=4)
    rnd = play_round(roles, tok, seeds, attacks_per_seed=2, responses_per_attack=2, attack_sampling=short,
                     response_sampling=short, explore_prefixes=("I'm sorry",), identity_attacks=True)
    assert rnd.identity == [False] * 6 + [True] * 3
    assert rnd.attack_prompts[6:] == [s.prompt for s in seeds] and rnd.attack_seed[6:] == [0, 1, 2]
    assert len(rnd.responses) == 9 * 3 and rnd.parse_errors == sum(not p for p in rnd.parsed[:6])
    identity_answers = {i for i, a in enumerate(rnd.response_attack) if a >= 6}
    j = judge_round(judge, rnd, pairwise=False, min_margin=0.0)
    assert {i for i in j.defender.items} >= identity_answers  # the defender learns from them
    assert all(a < 6 for a in j.attacker.items) and all(a < 6 and b < 6 for a, b in j.attacker.pairs)
    pw = judge_round(judge, rnd, pairwise=True, min_margin=0.0)
    assert all(a < 6 for a in pw.attacker.items)
    row = round_metrics(rnd, j)
    direct_harm = [i for i in identity_answers if not rnd.response_explore[i] and seeds[rnd.attack_seed[rnd.response_attack[i]]].harmful]
    assert row["direct/refusal_harmful"] == pytest.approx(sum(j.refusal[i] for i in direct_harm) / len(direct_harm))
    assert row["faithful"] == pytest.approx(sum(j.faithful[:6]) / 6)
    sampled = [c for c, forced in zip(rnd.responses, rnd.response_explore) if not forced]
    assert row["empty"] == pytest.approx(sum(not c.text.strip() for c in sampled) / len(sampled))
    rewrites = [i for i, forced in enumerate(rnd.response_explore) if not forced and rnd.response_attack[i] < 6]
    on_benign = [i for i in rewrites if not seeds[rnd.attack_seed[rnd.response_attack[i]]].harmful]
    assert row["read_harmful_benign"] == pytest.approx(sum(j.read_harmful[i] for i in on_benign) / len(on_benign))
    by_seed = judge_round(judge, rnd, pairwise=False, min_margin=0.0, rules=RewardRules(request_class="seed"))
    assert by_seed.read_harmful == j.read_harmful  # the judge's reading is kept, whichever class the rewards use
    assert by_seed.attack_harmful == [seeds[rnd.attack_seed[a]].harmful for a in rnd.response_attack]


def test_update_epochs_take_several_optimiser_steps_on_one_reference(tmp_path, judge, tiny_config, monkeypatch):
    from redgame.llm import scoring

    rows = {"reference": 0, "policy": 0}

    def counting(real):
        def count(model, prompts, *args, **kwargs):
            rows["policy" if torch.is_grad_enabled() else "reference"] += len(prompts)  # the reference: no_grad
            return real(model, prompts, *args, **kwargs)
        return count

    for name in ("completion_logprobs", "completion_hidden"):  # log-probs, or hidden states for a fused loss
        monkeypatch.setattr(scoring, name, counting(getattr(scoring, name)))
    monkeypatch.setattr(judge, "faithful_threshold", -1.0)
    train(tiny_config(regime="bipolicy", steps=1, update_epochs=3), tmp_path, progress=False,
          base=load_base("tiny"), judge=judge)
    steps = load_file(str(latest_checkpoint(tmp_path) / "optimizer.safetensors"))
    counts = {k.split("/")[0]: float(v) for k, v in steps.items() if k.endswith("/step")}
    assert counts == {"attacker": 3.0, "defender": 3.0}  # AdamW's step counter, per adapter
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    sequences = 2 * (row["attacker/pairs"] + row["defender/pairs"])
    assert rows == {"reference": sequences, "policy": 3 * sequences}  # the reference once, reused by 3 epochs
    with pytest.raises(ValueError, match="update_epochs"):
        tiny_config(update_epochs=0).validate()


def test_kernels_on_and_off_train_alike_and_the_metrics_say_which_ran(tmp_path, judge, tiny_config, monkeypatch):
    """kernels=on: redgame.kernels' torch path on CPU, both roles in one pass, DPO by fused_preference_loss;
    off: peft, one pass per role, DPO on the log-probs."""
    rows, fused_calls = {}, {}
    real = trainer.fused_pairs_loss
    for kernels in ("on", "off"):
        calls = fused_calls.setdefault(kernels, [])
        monkeypatch.setattr(trainer, "fused_pairs_loss", lambda *a, calls=calls, **k: calls.append(1) or real(*a, **k))
        cfg = tiny_config(regime="bipolicy", steps=2, kernels=kernels, seed=3)
        train(cfg, tmp_path / kernels, progress=False, base=load_base("tiny"), judge=judge)
        rows[kernels] = [json.loads(line) for line in (tmp_path / kernels / "metrics.jsonl").read_text().splitlines()]
    assert {r["kernels/lora"] for r in rows["on"]} == {"torch"} and {r["kernels/lora"] for r in rows["off"]} == {"peft"}
    assert {r["kernels/logprobs"] for r in rows["on"]} == {"torch"}  # the kernels' chunked CPU path
    assert {r["kernels/logprobs"] for r in rows["off"]} == {"logits"}  # plain torch over the full logits
    assert {r["kernels/preference"] for r in rows["on"]} == {"torch"}  # DPO through fused_preference_loss
    assert {r["kernels/preference"] for r in rows["off"]} == {"none"}
    assert fused_calls["on"] and not fused_calls["off"]
    compared = [k for k in rows["off"][0] if k.endswith(("/pref_loss", "/margin", "/nll", "/kl", "/grad_norm"))]
    assert compared
    for key in compared:  # step 1 samples the same round (same seed, zero B): the same update
        assert rows["on"][0][key] == pytest.approx(rows["off"][0][key], rel=1e-4, abs=1e-5), key
    with pytest.raises(ValueError, match="kernels"):
        tiny_config(kernels="sometimes").validate()
    with pytest.raises(ValueError, match="full_finetune"):
        tiny_config(regime="separate", full_finetune=True, kernels="on").validate()


def test_kernels_auto_patches_lora_roles_on_a_cpu_and_leaves_them_to_peft_on_cuda(tiny_config, monkeypatch):
    """auto: the kernels' torch path on a CPU; on CUDA our log-probs but peft's LoRA layers (docs/gpu.md)."""
    import redgame.kernels

    patched = []
    monkeypatch.setattr(redgame.kernels, "patch_peft", patched.append)

    class LoraModel:  # all that auto reads besides the config: a peft model and where its weights live
        peft_config = {}

        def __init__(self, tensor):
            self.tensor = tensor

        def parameters(self):
            return iter([self.tensor])

    class Roles:
        def __init__(self, model):
            self.model = model

        def models(self):
            return [self.model]

    cfg = tiny_config(regime="bipolicy", kernels="auto")
    on_cpu, on_cuda = LoraModel(torch.zeros(1)), LoraModel(torch.zeros(1).as_subclass(_CudaTensor))
    assert trainer.kernels_in_the_loop(cfg, Roles(on_cpu)) and patched == [on_cpu]
    assert trainer.kernels_in_the_loop(cfg, Roles(on_cuda)) and patched == [on_cpu]  # log-probs only
    assert trainer.kernels_in_the_loop(tiny_config(regime="bipolicy", kernels="on"), Roles(on_cuda))
    assert patched == [on_cpu, on_cuda]
    assert not trainer.kernels_in_the_loop(tiny_config(regime="bipolicy", kernels="off"), Roles(on_cpu))
    assert not trainer.kernels_in_the_loop(cfg, Roles(object())) and patched == [on_cpu, on_cuda]  # no LoRA
    assert not trainer.kernels_in_the_loop(cfg, Roles(on_cpu), sharded=True) and patched == [on_cpu, on_cuda]  # FSDP


def test_fsdp_in_one_process_says_it_does_nothing_and_keeps_the_kernels(tmp_path, judge, tiny_config):
    lines = []
    train(tiny_config(regime="bipolicy", steps=1, fsdp=True, kernels="auto"), tmp_path, progress=False,
          base=load_base("tiny"), judge=judge, log=lines.append)
    assert any("'fsdp'" in line and "in one process it does nothing" in line for line in lines)
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row["kernels/lora"] == "torch"  # auto's CPU path: no shard stands in its way


class _CudaTensor(torch.Tensor):
    @property
    def is_cuda(self):
        return True


def test_benign_nll_scale_weighs_the_defenders_pairs_on_benign_prompts_only(tiny_config):
    from redgame.llm.rewards import RoleSignal
    from redgame.llm.trainer import pair_nll_weights

    signal_ = RoleSignal(pairs=[(0, 1), (2, 3), (5, 4)])
    judged = SimpleNamespace(attack_harmful=[True, True, False, False, True, True])  # per response
    cfg = tiny_config(loss="dpo", nll_weight=4.0, benign_nll_scale=2.5)
    assert pair_nll_weights(cfg, "defender", signal_, judged).tolist() == [4.0, 10.0, 4.0]  # by the chosen answer's prompt
    assert pair_nll_weights(cfg, "attacker", signal_, judged) == 4.0
    assert pair_nll_weights(tiny_config(nll_weight=4.0), "defender", signal_, judged) == 4.0  # scale 1: one number
    for loss in ("grpo", "reinforce", "reinforce_pp", "sft"):  # no NLL term, and units are samples, not pairs
        assert pair_nll_weights(tiny_config(loss=loss, nll_weight=4.0, benign_nll_scale=2.5), "defender", signal_,
                                judged) == 4.0
    with pytest.raises(ValueError, match="benign_nll_scale"):
        tiny_config(benign_nll_scale=-1.0).validate()


def test_per_pair_nll_weights_give_the_same_update_whole_or_in_micro_batches(tmp_path, judge, tiny_config,
                                                                            monkeypatch):
    """Distinct weights per pair reach the loss in the pairs' own order, pair by pair or all at once, through
    the fused preference loss (kernels on) and the log-prob path (off); equal weights are the scalar nll_weight."""
    real = trainer.pair_nll_weights

    def weights(per_pair):
        def pick(cfg, role, signal_, judged):
            if role == "defender" and signal_.pairs:
                return per_pair(len(signal_.pairs)) * cfg.nll_weight
            return real(cfg, role, signal_, judged)
        return pick

    def grad_norms(name, kernels="on", **overrides):
        cfg = tiny_config(regime="bipolicy", steps=1, kernels=kernels, seed=3, loss="dpo", nll_weight=2.0, **overrides)
        train(cfg, tmp_path / name, progress=False, base=load_base("tiny"), judge=judge)
        row = json.loads((tmp_path / name / "metrics.jsonl").read_text())
        assert row["defender/pairs"] >= 2
        return row["defender/grad_norm"], row.get("attacker/grad_norm", 0.0)  # no attacker pairs: all its attacks tie

    scalar = grad_norms("scalar")
    monkeypatch.setattr(trainer, "pair_nll_weights", weights(torch.ones))
    assert grad_norms("equal") == pytest.approx(scalar, rel=1e-5)
    monkeypatch.setattr(trainer, "pair_nll_weights", weights(lambda n: torch.arange(1.0, n + 1)))
    whole = grad_norms("whole", micro_batch_tokens=0)
    assert whole[0] != pytest.approx(scalar[0], rel=1e-3)  # the weights matter
    assert grad_norms("pair_by_pair", micro_batch_tokens=1) == pytest.approx(whole, rel=1e-5)
    assert grad_norms("log_probs", kernels="off", micro_batch_tokens=1) == pytest.approx(whole, rel=1e-4)


@pytest.mark.parametrize("loss, scored_at", [("reinforce", 0.7), ("grpo", 0.7), ("dpo", 1.0)])
def test_policy_gradient_updates_score_samples_at_the_sampling_temperature(tmp_path, judge, tiny_config, monkeypatch,
                                                                          loss, scored_at):
    """The rollout sampled at 0.7 and the update scored at 1: the ratio, the KL and the gradient were of another
    policy than the one that drew the samples. DPO's objective is on the policy itself: at 1."""
    real, seen = trainer.score, []
    monkeypatch.setattr(trainer, "score", lambda *a, **kw: seen.append(kw["temperature"]) or real(*a, **kw))
    train(tiny_config(steps=1, loss=loss, temperature=0.7), tmp_path, progress=False, base=load_base("tiny"),
          judge=judge)
    assert seen and set(seen) == {scored_at}


def test_the_judge_is_made_where_every_rank_hears_of_its_failure(tmp_path, tiny_config, monkeypatch):
    """Under torchrun with judge_rank, a judge that failed to load on its rank left the other rank waiting in a
    collective, which then died as an internal error: the judge is made inside dist.together."""
    from redgame.llm import distributed, judges

    inside = []
    real = distributed.Dist.together

    def together(self, step):
        inside.append(step)
        try:
            return real(self, step)
        finally:
            inside.pop()

    def make_judge(*args, **kwargs):
        assert inside, "the judge was made outside dist.together"
        raise UserError("judge classifier: no such folder")

    monkeypatch.setattr(distributed.Dist, "together", together)
    monkeypatch.setattr(judges, "make_judge", make_judge)
    with pytest.raises(UserError, match="no such folder"):
        train(tiny_config(steps=1), tmp_path / "run", progress=False, base=load_base("tiny"))
    assert not (tmp_path / "run" / "config.json").exists()


def test_population_eval_seeds_beyond_the_training_seeds_are_refused_before_loading(tmp_path, monkeypatch):
    """The run took 102 of 100,000 without a word, and its config.json kept 100,000; a resume that turns the
    population on (with no population saved yet) did the same."""
    from redgame.llm import models
    from redgame.llm.config import TrainConfig
    from redgame.llm.trainer import load_train_seeds

    harmful, benign = load_train_seeds(TrainConfig(model="tiny"))
    monkeypatch.setattr(models, "load_base", lambda *a, **k: pytest.fail("the model loaded"))
    with pytest.raises(UserError, match=f"'population_eval_seeds' \\(100000\\) asks for 50000 harmful and 50000 "
                                        f"benign training seeds; the training seeds hold {len(harmful)} and "
                                        f"{len(benign)}"):
        train(TrainConfig(model="tiny", population_every=1, population_eval_seeds=100000), tmp_path / "run",
              progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(UserError, match="'population_eval_seeds' \\(100000\\) asks for"):
        train(TrainConfig(model="tiny", population_every=1, population_eval_seeds=100000), tmp_path / "run",
              progress=False, resume=True)


def test_a_round_the_judge_could_not_read_stops_the_run_and_psro_counts_both_rounds_errors(monkeypatch):
    """A judge whose every reply was unparsable trained on (nothing) to the end and exited 0; under PSRO the
    attacker's round's parse and judge errors were left out of the step's row."""
    from types import SimpleNamespace as NS

    from redgame.llm.distributed import Dist

    game = NS(judge=NS(name="http:x"), cfg=NS(judge_format="redgame"), population=None, dist=Dist())
    with pytest.raises(UserError, match="step 3: the judge 'http:x' could read none of the answers of this step"):
        trainer.check_something_read(game, {"defender": NS(judge_error=[True, True])}, 2)
    trainer.check_something_read(game, {"defender": NS(judge_error=[True, False])}, 2)  # one read: it goes on
    trainer.check_something_read(game, {"defender": NS(judge_error=[])}, 2)  # nothing to read
    both = {"attacker": NS(judge_error=[True, True]), "defender": NS(judge_error=[False])}  # PSRO: one round read
    trainer.check_something_read(game, both, 2)
    monkeypatch.setattr(trainer, "round_metrics", lambda rnd, judged: {})
    rounds = {"attacker": NS(parse_errors=1), "defender": NS(parse_errors=2)}
    judged = {"attacker": NS(judge_errors=4), "defender": NS(judge_errors=3)}
    row = trainer.outcome_metrics(game, rounds, judged)
    assert row["judge_errors"] == 7 and row["parse_errors"] == 3
    shared, verdicts = NS(parse_errors=2), NS(judge_errors=3)  # one round for both roles: counted once
    row = trainer.outcome_metrics(game, {"attacker": shared, "defender": shared},
                                  {"attacker": verdicts, "defender": verdicts})
    assert row["judge_errors"] == 3 and row["parse_errors"] == 2
