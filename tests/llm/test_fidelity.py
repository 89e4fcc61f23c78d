"""The regimes as the papers run them, on the tiny model: REINFORCE++ for shared, GRPO's ratio and
clipping over update epochs, AdvGame's rollouts from the EMA model, two full models + pairwise judge."""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from redgame.llm import losses, role_loss, rollout, trainer
from redgame.llm.checkpoint import latest_checkpoint
from redgame.llm.config import TrainConfig, from_mapping, load_file as load_config
from redgame.llm.models import load_base
from redgame.llm.trainer import train

ROOT = Path(__file__).resolve().parents[2]


def _rows(folder):
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def test_shared_trains_with_reinforce_pp_by_default(tmp_path, judge, tiny_config, monkeypatch):
    assert TrainConfig(regime="shared").resolved_loss() == "reinforce_pp"
    monkeypatch.setattr(judge, "faithful_threshold", -1.0)  # random-token attacks count as faithful: a contrast
    seen = []
    real = losses.reinforce_pp_advantages
    monkeypatch.setattr(role_loss, "reinforce_pp_advantages",
                        lambda *a, **k: seen.append((a[4], k["group_baseline"])) or real(*a, **k))
    train(tiny_config(regime="shared", kl_coef=0.01), tmp_path, progress=False, base=load_base("tiny"), judge=judge)
    # Self-RedTeam's KL coefficient goes into the returns, and its rewards without a group baseline
    assert seen and set(seen) == {(0.01, False)}
    row = _rows(tmp_path)[-1]
    assert "defender/pg_loss" in row and "attacker/pg_loss" in row
    seen.clear()
    train(tiny_config(regime="shared", loss="reinforce_pp_baseline", steps=1), tmp_path / "baseline", progress=False,
          base=load_base("tiny"), judge=judge)
    assert seen and {b for _, b in seen} == {True}  # REINFORCE++-baseline: each group's mean subtracted first


def test_grpo_later_epochs_use_the_first_epochs_log_probs_as_pi_old(tmp_path, judge, tiny_config, monkeypatch):
    monkeypatch.setattr(judge, "faithful_threshold", -1.0)
    calls = []
    real = role_loss.policy_gradient_loss

    def spy(policy, reference, advantages, **kw):
        calls.append(kw["old"])
        return real(policy, reference, advantages, **kw)

    monkeypatch.setattr(role_loss, "policy_gradient_loss", spy)
    cfg = tiny_config(regime="advgame", loss="grpo", update_epochs=3, steps=1, rollout_policy="live")
    train(cfg, tmp_path, progress=False, base=load_base("tiny"), judge=judge)
    assert calls and calls[0] is None  # epoch 0: ratio 1, the plain estimator
    firsts = [c for c in calls if c is None]
    later = [c for c in calls if c is not None]
    assert later and len(later) >= len(firsts)  # epochs 1 and 2 weight by the ratio to epoch 0's log-probs
    assert "defender/clip_frac" in _rows(tmp_path)[-1]


@pytest.mark.parametrize("policy", ["ema", "live"])
def test_rollouts_come_from_the_ema_model_or_the_live_policy(tmp_path, judge, tiny_config, monkeypatch, policy):
    used = []
    real = rollout.generate
    monkeypatch.setattr(rollout, "generate", lambda model, *a, **k: used.append(model) or real(model, *a, **k))
    result = train(tiny_config(regime="advgame", rollout_policy=policy, steps=1), tmp_path, progress=False,
                   base=load_base("tiny"), judge=judge)
    slots = result["roles"].slots
    expected = {id(slots[r].ref_model if policy == "ema" else slots[r].model) for r in slots}
    assert {id(m) for m in used} == expected
    assert TrainConfig(regime="advgame").resolved_rollout_policy() == "ema"  # AdvGame's default
    assert TrainConfig(regime="bipolicy").resolved_rollout_policy() == "live"


def test_rollout_policy_and_clip_eps_are_checked():
    with pytest.raises(ValueError, match="rollout_policy"):
        TrainConfig(regime="bipolicy", rollout_policy="ema").validate()
    with pytest.raises(ValueError, match="rollout_policy"):
        TrainConfig(regime="advgame", rollout_policy="ema", population_every=2).validate()
    with pytest.raises(ValueError, match="rollout_policy"):
        TrainConfig(rollout_policy="offline").validate()
    with pytest.raises(ValueError, match="clip_eps"):
        TrainConfig(clip_eps=1.5).validate()
    assert TrainConfig(regime="advgame", population_every=2).resolved_rollout_policy() == "live"
    assert TrainConfig(regime="advgame", rollout_backend="vllm").resolved_rollout_policy() == "live"
    with pytest.raises(ValueError, match="full_finetune"):
        TrainConfig(regime="bipolicy", full_finetune=True).validate()


def test_the_advgame_config_runs_two_full_models_pairwise_with_an_ema_reference(tmp_path, judge, monkeypatch):
    """llm/configs/advgame_full.toml on the tiny model: two full models, pairwise judge, EMA reference and rollouts."""
    from redgame.llm import rewards

    pairwise = []
    real = rewards.judge_round
    monkeypatch.setattr(trainer, "judge_round", lambda *a, **k: pairwise.append(k["pairwise"]) or real(*a, **k))
    monkeypatch.setattr(judge, "faithful_threshold", -1.0)
    small = dict(model="tiny", steps=2, save_every=1, seeds_per_step=2, attack_tokens=6, response_tokens=6,
                 min_margin=0.0, lr=1e-2, explore_prefixes=["I'm sorry"])
    cfg = from_mapping(small, base=from_mapping(load_config(ROOT / "llm" / "configs" / "advgame_full.toml")))
    assert cfg.full_finetune and cfg.resolved_reference() == "ema" and cfg.resolved_rollout_policy() == "ema"
    result = train(cfg.validate(), tmp_path, progress=False, base=load_base("tiny"), judge=judge)
    roles = result["roles"]
    att, dfn = roles.slots["attacker"], roles.slots["defender"]
    assert att.model is not dfn.model and att.adapter is None and dfn.adapter is None
    assert pairwise and all(pairwise)
    state = load_file(str(latest_checkpoint(tmp_path) / "weights.safetensors"))
    assert any(".ref/" in k for k in state)  # the EMA of the full weights is part of the state
    base = dict(load_base("tiny")[0].named_parameters())
    moved = [n for n, p in dfn.model.named_parameters() if not torch.equal(p.detach(), base[n])]
    ema_moved = [n for n, p in dfn.ref_model.named_parameters() if not torch.equal(p.detach(), base[n])]
    assert moved and ema_moved  # the defender learned, and its EMA followed
    assert (tmp_path / "final" / "defender" / "model.safetensors").is_file()
    saved, _ = load_base(str(tmp_path / "final" / "defender"))  # a model folder, tokenizer included: --model loads it
    trained = dict(dfn.model.named_parameters())
    assert all(torch.equal(p, trained[n].detach()) for n, p in saved.named_parameters() if n in trained)
