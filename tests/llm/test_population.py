"""PSRO opponent sampling on the tiny model: the population's payoffs, meta-Nash, swaps, resume."""

import json
import random

import numpy as np
import pytest
import torch
from peft import set_peft_model_state_dict

from redgame.llm import trainer
from redgame.llm.crossplay import generate_attacks
from redgame.llm.evaluation import evaluate_defender
from redgame.llm.models import load_base
from redgame.llm.population import Population, attacker_win_rate, eval_seeds
from redgame.llm.roles import LoraSettings, build_roles
from redgame.llm.seeds import builtin_seeds
from redgame.llm.trainer import train

IDS = torch.tensor([[1, 17, 33, 4, 250]])


def _perturb(roles, role, scale, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in roles.named_parameters(role):
            p.add_(scale * torch.randn(p.shape, generator=gen))


def _logits(roles, role):
    with roles.policy(role) as m, torch.no_grad():
        return m(input_ids=IDS).logits


@pytest.fixture
def grown(tiny, judge):
    """Roles with a population of two members, the second perturbed away from the first."""
    model, tok = tiny
    roles = build_roles(model, regime="bipolicy", lora=LoraSettings(rank=4, alpha=8))
    train_seeds = builtin_seeds("train")
    seeds = eval_seeds([s for s in train_seeds if s.harmful], [s for s in train_seeds if not s.harmful], 4, 0)
    pop = Population(size=3, eval_seeds=seeds, attack_tokens=6, response_tokens=6)
    pop.add(roles, step=0, tokenizer=tok, judge=judge)
    _perturb(roles, "attacker", 0.5, 1)
    _perturb(roles, "defender", 0.5, 2)
    pop.add(roles, step=5, tokenizer=tok, judge=judge)
    return roles, tok, pop, seeds


def test_payoffs_match_an_independent_replay_and_the_meta_nash_verifies(grown, judge):
    roles, tok, pop, seeds = grown
    assert pop.payoff.shape == (2, 2) and pop.names() == ["step0", "step5"]
    assert np.all((pop.payoff >= 0) & (pop.payoff <= 1))
    # Replay every entry on a fresh base with the members' weights loaded through peft.
    fresh_model, _ = load_base("tiny")
    fresh = build_roles(fresh_model, regime="bipolicy", lora=LoraSettings(rank=4, alpha=8))
    for i in range(2):
        set_peft_model_state_dict(fresh.slots["attacker"].model, {k.replace(".attacker", ""): v for k, v in
                                  pop.weights["attacker"][i].items()}, adapter_name="attacker")
        with fresh.policy("attacker") as m:
            attacks, _ = generate_attacks(m, tok, seeds, max_new_tokens=6)
        assert attacks == pop.attacks[i]
        for j in range(2):
            set_peft_model_state_dict(fresh.slots["defender"].model, {k.replace(".defender", ""): v for k, v in
                                      pop.weights["defender"][j].items()}, adapter_name="defender")
            with fresh.policy("defender") as m:
                played = evaluate_defender(m, tok, judge, seeds, attacks=attacks, max_new_tokens=6)
            assert pop.payoff[i, j] == pytest.approx(attacker_win_rate(played))
    # The meta-Nash: no pure deviation of either side gains (best-response gap).
    x, y, a = pop.mix["attacker"], pop.mix["defender"], pop.payoff
    assert x.sum() == pytest.approx(1) and y.sum() == pytest.approx(1)
    assert (a @ y).max() <= x @ a @ y + 1e-7
    assert (x @ a).min() >= x @ a @ y - 1e-7
    assert pop.value == pytest.approx(float(x @ a @ y))


def test_playing_swaps_a_member_in_and_restores_the_live_weights(grown):
    roles, _, pop, _ = grown
    live = _logits(roles, "attacker")
    with pop.playing(roles, "attacker", 0):
        with roles.reference("attacker") as base, torch.no_grad():
            expected = base(input_ids=IDS).logits  # member 0 was taken with B = 0: the base
        torch.testing.assert_close(_logits(roles, "attacker"), expected)
    torch.testing.assert_close(_logits(roles, "attacker"), live)
    assert not torch.allclose(live, expected)


def test_oldest_member_leaves_and_sampling_follows_the_mix(grown, judge):
    roles, tok, pop, _ = grown
    before = pop.payoff.copy()
    _perturb(roles, "defender", 0.5, 3)
    pop.add(roles, step=10, tokenizer=tok, judge=judge)
    pop.add(roles, step=15, tokenizer=tok, judge=judge)
    assert pop.names() == ["step5", "step10", "step15"]  # size 3: step0 left
    assert pop.payoff[0, 0] == before[1, 1]  # entries already played are kept, not replayed
    pop.mix["attacker"] = np.array([0.2, 0.0, 0.8])
    rng = random.Random(0)
    draws = [pop.sample("attacker", rng) for _ in range(4000)]
    assert 1 not in draws
    assert abs(draws.count(2) / 4000 - 0.8) < 0.03


def test_a_resumed_population_keeps_its_evaluation_seeds_and_shrinks_to_a_smaller_size(grown):
    """Its attacks were written for its evaluation seeds: judging them as rewrites of other seeds (a resume with
    another seed or count) gave wrong payoffs or an error; a smaller size kept every member."""
    from redgame.errors import UserError

    _, _, pop, seeds = grown
    tensors, meta = pop.state()
    meta = json.loads(json.dumps(meta))  # as the checkpoint stores it
    train_seeds = builtin_seeds("train")
    other = eval_seeds([s for s in train_seeds if s.harmful], [s for s in train_seeds if not s.harmful], 6, 9)
    resumed = Population(size=1, eval_seeds=other, attack_tokens=6, response_tokens=6)
    notes = resumed.load_state(tensors, meta)
    assert resumed.eval_seeds == seeds and resumed.names() == ["step5"]
    assert resumed.payoff.tolist() == [[pop.payoff[1, 1]]] and resumed.attacks == [pop.attacks[1]]
    assert set(resumed.weights["defender"][0]) == set(pop.weights["defender"][1])
    assert any("keeps the 4 evaluation seeds" in n for n in notes) and any("oldest 1 of its 2" in n for n in notes)
    same = Population(size=3, eval_seeds=seeds, attack_tokens=6, response_tokens=6)
    assert same.load_state(tensors, meta) == [] and same.names() == pop.names()
    for seed in meta["eval_seeds"]:  # saved before seeds carried their split: the same seeds, no note
        del seed["split"]
    assert Population(size=3, eval_seeds=seeds, attack_tokens=6, response_tokens=6).load_state(tensors, meta) == []
    del meta["eval_seeds"]  # a checkpoint written before the seeds were saved: a count that differs is one line
    with pytest.raises(UserError, match="attacked 4 evaluation seeds and this config names 6"):
        Population(size=3, eval_seeds=other, attack_tokens=6, response_tokens=6).load_state(tensors, meta)


def _damage(tensors, meta, how):
    tensors, meta = dict(tensors), json.loads(json.dumps(meta))
    if how == "no steps":
        del meta["steps"]
    elif how == "steps as text":
        meta["steps"] = "ab"
    elif how == "short payoff":
        meta["payoff"] = [1.0, 0.0]
    elif how == "an attack list missing":
        meta["attacks"].pop()
    elif how == "a member's tensor missing":
        del tensors[next(k for k in tensors if k.startswith("defender/1/"))]
    elif how == "a tensor of no member":
        tensors["defender/7/x"] = torch.zeros(1)
    elif how == "a seed without its prompt":
        del meta["eval_seeds"][0]["prompt"]
    elif how == "a null payoff":  # a NaN saved as null: the meta-game cannot be solved on it
        meta["payoff"][0][0] = None
    elif how == "a short attack list":  # resumed, then stopped a step later on "2 prompts for 4 seeds"
        meta["attacks"][0] = meta["attacks"][0][:2]
    elif how == "a list":
        meta = []
    return tensors, meta


@pytest.mark.parametrize("how, needle", [
    ("no steps", "needs the keys"), ("steps as text", "steps is not"), ("short payoff", "not a 2 x 2 matrix"),
    ("an attack list missing", "attacks is not 2 lists"), ("a member's tensor missing", "member 1's defender"),
    ("a tensor of no member", "of no member"), ("a seed without its prompt", "eval_seeds"),
    ("a null payoff", "matrix of win rates in \\[0, 1\\]"), ("a short attack list", "not one per evaluation seed"),
    ("a list", "needs the keys")])
def test_a_damaged_population_state_is_one_line_naming_the_checkpoint_and_restores_nothing(grown, how, needle):
    """A damaged state gave an internal error, or resumed and crashed a step later with advice to resume again."""
    from redgame.errors import UserError

    roles, _, pop, seeds = grown
    tensors, meta = _damage(*pop.state(), how)
    resumed = Population(size=3, eval_seeds=seeds, attack_tokens=6, response_tokens=6)
    with pytest.raises(UserError, match=rf"^checkpoint c: the population state is damaged \(.*{needle}.*\); remove"):
        resumed.load_state(tensors, meta, where="checkpoint c", roles=roles)
    assert resumed.steps == [] and resumed.attacks == []


def test_trainer_plays_each_role_against_drawn_members_and_resumes_exactly(tmp_path, judge, tiny_config, monkeypatch):
    seen = []  # (the attacker's largest |lora_B| while sampling, whose round it was)
    real = trainer.play_round

    def recording(roles, *args, **kwargs):
        b = max(float(p.abs().max()) for n, p in roles.named_parameters("attacker") if "lora_B" in n)
        seen.append(b)
        return real(roles, *args, **kwargs)

    monkeypatch.setattr(trainer, "play_round", recording)
    monkeypatch.setattr(judge, "faithful_threshold", -1.0)  # tiny attacks count, so the attacker learns
    cfg = tiny_config(regime="bipolicy", steps=3, save_every=1, seed=3, population_every=100,
                      population_eval_seeds=2)
    train(cfg, tmp_path / "straight", progress=False, base=load_base("tiny"), judge=judge)
    # One member (step 0, B = 0). Per step: the attacker's round (live weights), then the
    # defender's round against the step-0 attacker, whose B is zero even after updates.
    assert len(seen) == 6
    assert all(b == 0 for b in seen[1::2])
    assert seen[2] > 0 and seen[4] > 0
    rows = [json.loads(line) for line in (tmp_path / "straight" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["psro/defender_opponent_step"] == 0 and r["psro/attacker_opponent_step"] == 0 for r in rows)
    summary = json.loads((tmp_path / "straight" / "population.json").read_text())
    assert summary["members"] == ["step0"] and summary["attacker_mix"] == [1.0]

    every2 = dict(regime="advgame", save_every=1, seed=5, population_every=2, population_eval_seeds=2)
    train(tiny_config(steps=3, **every2), tmp_path / "full", progress=False, base=load_base("tiny"), judge=judge)
    train(tiny_config(steps=2, **every2), tmp_path / "cut", progress=False, base=load_base("tiny"), judge=judge)
    train(tiny_config(steps=3, **every2), tmp_path / "cut", resume=True, progress=False, base=load_base("tiny"),
          judge=judge)
    full = json.loads((tmp_path / "full" / "population.json").read_text())
    assert full["members"] == ["step0", "step2"]
    assert full == json.loads((tmp_path / "cut" / "population.json").read_text())
    scores = [[json.loads(line)["defender_score"] for line in (tmp_path / run / "metrics.jsonl").read_text().split("\n")
               if line] for run in ("full", "cut")]
    assert scores[0] == scores[1]  # to the bit (a run at population_every=2 differed from the 8th decimal, memo kept)
    for role in ("attacker", "defender"):
        from safetensors.torch import load_file

        a = load_file(str(tmp_path / "full" / "final" / role / "adapter_model.safetensors"))
        b = load_file(str(tmp_path / "cut" / "final" / role / "adapter_model.safetensors"))
        assert max(float((a[k] - b[k]).abs().max()) for k in a) <= 1e-5
    said = []  # PSRO turned off on resume: its population was dropped without a word
    train(tiny_config(steps=4, **{**every2, "population_every": 0}), tmp_path / "cut", resume=True, progress=False,
          base=load_base("tiny"), judge=judge, log=said.append)
    assert any("PSRO stops here" in line for line in said), said


@pytest.mark.parametrize("overrides,message", [
    (dict(regime="shared"), "needs two role adapters"),
    (dict(regime="separate", full_finetune=True), "needs two role adapters"),
    (dict(rollout_backend="vllm"), "rollout_backend 'torch'"),
    (dict(population_size=0), "population_size"),
    (dict(population_every=-1), "population_every"),
])
def test_bad_population_settings_are_refused(tiny_config, overrides, message):
    values = dict(population_every=2, **overrides) if "population_every" not in overrides else overrides
    with pytest.raises(ValueError, match=message):
        tiny_config(**values).validate()


def test_a_cell_the_judge_read_none_of_is_a_one_line_error_naming_the_judge():
    """It was NaN in the payoff matrix, and the meta-game's solver then blamed the matrix's shape."""
    from redgame.errors import UserError

    played = {"attack_success": float("nan"), "benign_compliance": float("nan"), "unjudged": 4}
    with pytest.raises(UserError, match="the judge could read none of the 4 answers .*check the judge"):
        attacker_win_rate(played)
    assert attacker_win_rate({"attack_success": float("nan"), "benign_compliance": 0.75}) == pytest.approx(0.25)
