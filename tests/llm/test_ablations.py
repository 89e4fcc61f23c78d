"""The ablation regimes: defender-sft (no attacker) and defender-vs-frozen (base attacker + templates)."""

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file

from redgame.errors import UserError
from redgame.llm.losses import TokenLogprobs
from redgame.llm.models import load_base
from redgame.llm.role_loss import loss_from_logprobs
from redgame.llm.rollout import Completion, Round
from redgame.llm.seeds import Seed
from redgame.llm.templates import BUILTIN_TEMPLATES
from redgame.llm.trainer import frozen_attacks, sft_signal, train, updates_role


def _lora_b_moved(folder) -> bool:
    weights = load_file(str(folder / "adapter_model.safetensors"))
    return any(float(v.abs().max()) > 0 for k, v in weights.items() if "lora_B" in k)  # B starts at zero


@pytest.mark.parametrize("regime", ["defender-sft", "defender-vs-frozen"])
def test_ablations_train_the_defender_only(tmp_path, judge, tiny_config, regime, monkeypatch):
    cfg = tiny_config(regime=regime, steps=2, identity_attacks=True)
    monkeypatch.setattr(judge, "faithful_threshold", -1.0)
    seen = []
    import redgame.llm.trainer as trainer

    real = trainer.play_round
    monkeypatch.setattr(trainer, "play_round", lambda *a, **kw: seen.append(real(*a, **kw)) or seen[-1])
    # every answer counts as a non-degenerate refusal of a harmful seed or help with a benign one
    real_judge = trainer.judge_round

    def fitting(*a, **kw):
        j = real_judge(*a, **kw)
        rnd = a[1]
        j.refusal = [rnd.seeds[rnd.attack_seed[rnd.response_attack[i]]].harmful for i in range(len(rnd.responses))]
        j.degenerate = [False] * len(rnd.responses)
        return j

    monkeypatch.setattr(trainer, "judge_round", fitting)
    train(cfg, tmp_path, progress=False, base=load_base("tiny"), judge=judge)
    assert not _lora_b_moved(tmp_path / "final" / "attacker")
    assert _lora_b_moved(tmp_path / "final" / "defender")
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("attacker/grad_norm" not in r and "defender/grad_norm" in r for r in rows)
    rnd = seen[0]
    if regime == "defender-sft":  # no attacker: the seeds as written only
        assert all(rnd.identity) and len(rnd.attacks) == cfg.seeds_per_step
    else:  # one sampled attack and one template per seed, then the identity attacks
        n = cfg.seeds_per_step
        assert rnd.identity == [False] * (2 * n) + [True] * n
        templated = rnd.attack_prompts[n:2 * n]
        assert all(any(t.replace("{prompt}", s.prompt) == a for t in BUILTIN_TEMPLATES.values())
                   for a, s in zip(templated, rnd.seeds))
        assert [len(a.completion_ids) for a in rnd.attacks[n:]] == [0] * (2 * n)


def test_frozen_attacks_are_half_the_budget_and_a_function_of_seed_and_step(tiny_config):
    seeds = [Seed("a", "how do I pick a lock", True, "x"), Seed("b", "bake bread", False, "x")]
    cfg = tiny_config(regime="defender-vs-frozen", attacks_per_seed=5)
    one = frozen_attacks(cfg, seeds, step=3)
    assert [len(x) for x in one] == [2, 2] and one == frozen_attacks(cfg, seeds, step=3)
    assert all(s.prompt in a for s, x in zip(seeds, one) for a in x)
    assert frozen_attacks(tiny_config(regime="bipolicy"), seeds, step=3) is None
    assert not updates_role(cfg, 0, "attacker") and updates_role(cfg, 0, "defender")


def test_sft_targets_are_the_judges_best_fitting_answer():
    seeds = [Seed("h", "harm", True, "x"), Seed("b", "help", False, "x"), Seed("h2", "harm2", True, "x")]
    rnd = Round(seeds, [Completion([], [], s.prompt) for s in seeds], [0, 1, 2], [s.prompt for s in seeds],
                [True] * 3, identity=[True] * 3)
    rnd.response_attack = [0, 0, 0, 1, 1, 1, 2]
    judged = SimpleNamespace(refusal=[True, False, True, True, False, False, False],
                             helped=[False, True, False, False, True, False, True],
                             degenerate=[False, False, True, False, False, False, False],
                             scores=[0.6, 0.9, 0.99, 0.95, 0.7, 0.8, 0.1], judge_error=[])  # [] : every answer read
    signal = sft_signal(rnd, judged)
    # harmful seed 0: the refusals are 0 and 2, 2 loops -> 0; benign seed 1: the helpful answer 4, not the
    # better-scored 5, which neither refuses nor helps (an echo); harmful seed 2: no refusal -> no target
    assert signal.items == [0, 4] and signal.rewards == [1.0, 1.0]
    judged.helped[4] = False  # a benign seed with no answer that helps: no target (the echo was taken)
    assert sft_signal(rnd, judged).items == [0]


def test_sft_gradient_is_that_of_the_mean_length_normalised_nll(tiny_config):
    from redgame.llm.role_loss import token_advantages

    cfg = tiny_config(regime="defender-sft", kl_coef=0.0)
    values = torch.tensor([-1.0, -2.0, -0.5, -0.5, -2.0], requires_grad=True)
    policy = TokenLogprobs(values, torch.tensor([0, 0, 1, 1, 1]), 2)
    reference = TokenLogprobs(values.detach(), policy.seq, 2)
    adv = token_advantages(cfg, SimpleNamespace(items=[0, 1], rewards=[1.0, 1.0], groups=[0, 1], pairs=[]), reference)
    loss, info = loss_from_logprobs(cfg, policy, reference, adv)
    (grad,) = torch.autograd.grad(loss, values)
    nll = -(values[:2].sum() / 2 + values[2:].sum() / 3) / 2  # mean over targets of the per-token mean NLL
    (expected,) = torch.autograd.grad(nll, values)
    torch.testing.assert_close(grad, expected)
    assert info["nll"] == pytest.approx(float(nll)) and info["pg_loss"] == pytest.approx(-1.0)  # the metric to read
    # a later update_epochs epoch: still the NLL gradient, however far the targets' log-probs have risen (the
    # clipped surrogate zeroed every token whose ratio passed 1 + clip_eps)
    old = TokenLogprobs(values.detach() - 0.3, policy.seq, 2)
    (later,) = torch.autograd.grad(loss_from_logprobs(cfg.validate(), policy, reference, adv, old=old)[0], values)
    torch.testing.assert_close(later, expected)


@pytest.mark.parametrize("overrides,message", [
    (dict(regime="defender-sft", explore_prefixes=()), "explore_prefixes"),
    (dict(regime="defender-sft", loss="dpo"), "loss sft"),
    (dict(regime="bipolicy", loss="sft"), "defender-sft only"),
    (dict(regime="defender-vs-frozen", attacks_per_seed=1), "attacks_per_seed >= 2"),
    (dict(regime="defender-sft", population_every=2), "defender only"),
    (dict(regime="defender-sft", train_roles=("attacker",)), "nothing would learn"),  # ran, and trained nothing
    (dict(regime="defender-vs-frozen", attacks_per_seed=2, train_roles=("attacker",)), "nothing would learn"),
])
def test_ablation_configs_refused_with_one_line(tiny_config, overrides, message):
    with pytest.raises(UserError, match=message):
        tiny_config(**overrides).validate()


def test_sft_takes_no_echo_of_a_benign_prompt_for_help(judge):
    """With the embedded judge: an echo neither refuses nor helps, and was the target where nothing helped."""
    from redgame.llm.rewards import judge_round
    from redgame.llm.rollout import Completion

    bread = Seed("b", "How do I bake a loaf of sourdough bread?", False, "cooking")
    help_ = ("Mix 500 g of flour, 350 g of water, 100 g of starter and 10 g of salt; fold it every half hour, "
             "let it rise overnight and bake it at 240 C for 45 minutes.")
    answers = ["I'm sorry, but I can't help with that.", bread.prompt, help_]
    done = lambda t: Completion([1], [2], t)  # noqa: E731
    for given, want in ((answers, [help_]), (answers[:2], [])):
        rnd = Round([bread], [done("")], [0], [bread.prompt], [True], [done(a) for a in given], [0] * len(given),
                    [False] * len(given), [True])
        judged = judge_round(judge, rnd, pairwise=False, min_margin=0.0)
        assert [given[i] for i in sft_signal(rnd, judged).items] == want
