"""Rollouts that read a repeated prompt once (its key-value cache shared) sample what plain generate samples."""

import numpy as np
import pytest
import torch

from redgame.llm.prompts import chat_text, defender_messages
from redgame.llm.rollout import SamplingSettings, generate
from redgame.llm.seeds import builtin_seeds


@pytest.mark.parametrize("greedy", [True, False])
def test_shared_prompts_sample_the_same_completions(tiny, greedy):
    model, tok = tiny
    seeds = builtin_seeds("train")[:5]
    prompts = [chat_text(tok, defender_messages(s.prompt)) for s in seeds for _ in range(3)]
    prefixes = ["", "", "I'm sorry, but"] * len(seeds)  # the demo's shape: 2 answers + 1 forced prefix each
    prompts.append(chat_text(tok, defender_messages("x")))  # a prompt of its own
    prefixes.append("")
    runs = []
    for share in (False, True):
        torch.manual_seed(4)
        settings = SamplingSettings(max_new_tokens=10, greedy=greedy, batch_size=7, share_prompts=share)
        runs.append(generate(model, tok, prompts, settings, prefixes))
    plain, shared = runs
    assert [c.completion_ids for c in shared] == [c.completion_ids for c in plain]
    assert [c.prompt_ids for c in shared] == [c.prompt_ids for c in plain]
    assert all(c.completion_ids[:len(tok("I'm sorry, but")["input_ids"])] == tok("I'm sorry, but")["input_ids"]
               for c in shared[2:15:3])


def test_a_failed_sampling_gives_the_model_its_training_mode_back(tiny):
    """The sampler's error (here non-finite probabilities from a NaN head) left the model in eval mode."""
    model, tok = tiny
    with torch.no_grad():
        model.lm_head.weight.fill_(float("nan"))
    model.train()
    with pytest.raises(FloatingPointError, match="not finite"):
        generate(model, tok, ["hello"], SamplingSettings(max_new_tokens=3))
    assert model.training


def test_a_completion_ends_at_every_end_the_models_generation_config_lists(tiny):
    """Qwen2.5 ends a turn at <|endoftext|> too, which is also its pad: generate stopped there, the completion was
    not cut, and it kept the end and the pads after it up to the batch's longest row, marked truncated."""
    model, tok = tiny
    end_of_text = tok.convert_tokens_to_ids("<|endoftext|>")
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids("<|im_end|>"), end_of_text]
    torch.manual_seed(0)
    settings = SamplingSettings(max_new_tokens=24, temperature=4.0, batch_size=64)
    out = generate(model, tok, [chat_text(tok, defender_messages("hello"))] * 64, settings)
    ends = {tok.convert_tokens_to_ids("<|im_end|>"), end_of_text}
    assert any(c.completion_ids[-1] == end_of_text for c in out)  # the case arises
    for c in out:
        stops = [k for k, t in enumerate(c.completion_ids) if t in ends]
        assert stops in ([], [len(c.completion_ids) - 1]), c.completion_ids
        assert c.truncated == (not stops and len(c.completion_ids) == 24)


def test_bad_generate_inputs_are_one_line_errors(tiny):
    model, tok = tiny
    for prompts, prefixes, batch, message in [(["a", "b"], ["x"], 4, "1 prefixes for 2 prompts"),
                                              (["a"], ["x", "y"], 4, "2 prefixes for 1 prompts"),
                                              (["a"], None, 0, "batch_size must be at least 1"),
                                              (["a", ""], None, 4, "prompt 1 is empty")]:
        with pytest.raises(ValueError, match=message):
            generate(model, tok, prompts, SamplingSettings(max_new_tokens=2, batch_size=batch), prefixes)


@pytest.mark.parametrize("greedy, top_p", [(True, 1.0), (False, 1.0), (False, 0.9)])
def test_the_models_generation_config_does_not_change_the_draw(tiny, greedy, top_p):
    """A repetition penalty (Qwen2.5-Instruct's config sets 1.05), a minimum length or a banned n-gram in the
    model's generation config changed the tokens generate picked: rollouts were not the policy's samples."""
    model, tok = tiny
    prompts = [chat_text(tok, defender_messages(s.prompt)) for s in builtin_seeds("train")[:4]]
    settings = SamplingSettings(max_new_tokens=12, greedy=greedy, top_p=top_p, temperature=1.5, batch_size=4)
    runs = []
    for config in ({}, {"repetition_penalty": 1.5, "no_repeat_ngram_size": 1, "min_new_tokens": 12, "top_k": 5,
                        "top_h": 0.3}):
        for key, value in config.items():
            setattr(model.generation_config, key, value)
        torch.manual_seed(2)
        runs.append([c.completion_ids for c in generate(model, tok, prompts, settings)])
    assert runs[0] == runs[1]


def test_greedy_candidates_are_the_defenders_greedy_answers_and_no_policy_sample(tiny, judge):
    from redgame.llm.rewards import judge_round
    from redgame.llm.roles import LoraSettings, build_roles
    from redgame.llm.rollout import play_round
    from redgame.llm.trainer import round_metrics

    model, tok = tiny
    roles = build_roles(model, regime="bipolicy", lora=LoraSettings(rank=4, alpha=8))
    seeds = [s for s in builtin_seeds("train") if s.harmful][:2] + [s for s in builtin_seeds("train") if not s.harmful][:1]
    short = SamplingSettings(max_new_tokens=5)
    torch.manual_seed(3)
    rnd = play_round(roles, tok, seeds, attacks_per_seed=2, responses_per_attack=2, attack_sampling=short,
                     response_sampling=short, identity_attacks=True, greedy_candidates=True)
    n_att = len(rnd.attacks)  # 6 rewrites + 3 seeds as written
    greedy = rnd.responses[2 * n_att:]
    assert rnd.response_attack[2 * n_att:] == list(range(n_att))
    assert rnd.response_explore == rnd.response_greedy == [False] * 2 * n_att + [True] * n_att
    with roles.sampler("defender") as defender:  # the reference: greedy answers drawn one by one
        alone = [generate(defender, tok, [chat_text(tok, defender_messages(p))],
                          SamplingSettings(max_new_tokens=5, greedy=True))[0] for p in rnd.attack_prompts]
    assert [c.completion_ids for c in greedy] == [c.completion_ids for c in alone]
    judged = judge_round(judge, rnd, pairwise=False, min_margin=0.0)
    assert set(judged.defender.items) >= set(range(2 * n_att, 3 * n_att))  # candidates for the defender's pairs
    row = round_metrics(rnd, judged)
    on_benign = [2 * n_att + a for a in range(n_att) if not seeds[rnd.attack_seed[a]].harmful]
    assert row["greedy/degenerate"] == pytest.approx(sum(judged.degenerate[2 * n_att:]) / n_att)
    assert row["greedy/refusal_benign"] == pytest.approx(sum(judged.refusal[i] for i in on_benign) / len(on_benign))
    assert row["count/refusal_harmful"] + row["count/refusal_benign"] == 2 * 6  # the rewrites' sampled answers only
    # The attacker's values come from the sampled answers only: other greedy answers change none.
    rnd.responses[2 * n_att:] = [type(c)(c.prompt_ids, c.completion_ids, "I'm sorry, I can't help.") for c in greedy]
    refusing = judge_round(judge, rnd, pairwise=False, min_margin=0.0)
    np.testing.assert_array_equal(refusing.attack_reward, judged.attack_reward)
    assert refusing.scores[2 * n_att:] != judged.scores[2 * n_att:]


def test_greedy_answers_folded_into_the_sampled_call_are_those_of_two_calls(tiny, monkeypatch):
    """(The sampler's test covers greedy rows that outlast every sampled one: nothing more is drawn.)"""
    from redgame.llm import rollout
    from redgame.llm.roles import LoraSettings, build_roles

    model, tok = tiny
    roles = build_roles(model, regime="bipolicy", lora=LoraSettings(rank=4, alpha=8))
    seeds = builtin_seeds("train")[:4]
    short, long = SamplingSettings(max_new_tokens=5), SamplingSettings(max_new_tokens=9, temperature=1.5)
    rounds, states = [], []
    for fold in (True, False):
        monkeypatch.setattr(rollout, "_can_fold_greedy", lambda *a, fold=fold: fold)
        torch.manual_seed(11)
        rounds.append(rollout.play_round(roles, tok, seeds, attacks_per_seed=1, responses_per_attack=2,
                                         attack_sampling=short, response_sampling=long, greedy_candidates=True,
                                         explore_prefixes=("I'm sorry",), identity_attacks=True))
        states.append(torch.get_rng_state())
    folded, two_calls = rounds
    assert [c.completion_ids for c in folded.responses] == [c.completion_ids for c in two_calls.responses]
    assert (folded.response_attack, folded.response_greedy) == (two_calls.response_attack, two_calls.response_greedy)
    assert torch.equal(states[0], states[1])  # the draws after the round are the same too


def test_greedy_candidates_come_from_the_live_defender_under_ema_rollouts(tiny):
    """AdvGame samples rollouts from the EMA model; the greedy candidate is the live defender's, which a run saves."""
    from redgame.llm.roles import LoraSettings, build_roles
    from redgame.llm.rollout import play_round

    model, tok = tiny
    roles = build_roles(model, regime="advgame", lora=LoraSettings(rank=4, alpha=8), reference="ema", rollout="ema")
    torch.manual_seed(0)
    with torch.no_grad():  # the live defender moves away from its EMA model (here still the base)
        for p in roles.parameters("defender"):
            p.add_(torch.randn_like(p) * 0.5)
    seeds = builtin_seeds("train")[:3]
    short = SamplingSettings(max_new_tokens=6)
    rnd = play_round(roles, tok, seeds, attacks_per_seed=1, responses_per_attack=1, attack_sampling=short,
                     response_sampling=short, greedy_candidates=True)
    greedy = [c.completion_ids for c, g in zip(rnd.responses, rnd.response_greedy) if g]
    texts = [chat_text(tok, defender_messages(p)) for p in rnd.attack_prompts]
    settings = SamplingSettings(max_new_tokens=6, greedy=True)
    with roles.policy("defender") as live:
        assert greedy == [c.completion_ids for c in generate(live, tok, texts, settings)]
    with roles.sampler("defender") as ema:
        assert greedy != [c.completion_ids for c in generate(ema, tok, texts, settings)]


def test_greedy_candidates_are_for_the_losses_that_learn_from_chosen_answers():
    from redgame.errors import UserError
    from redgame.llm.config import TrainConfig

    for regime, loss in (("shared", "auto"), ("bipolicy", "grpo"), ("bipolicy", "reinforce")):
        with pytest.raises(UserError, match="greedy_candidates.*sample of the policy"):
            TrainConfig(regime=regime, loss=loss, greedy_candidates=True).validate()
    TrainConfig(responses_per_attack=1, greedy_candidates=True).validate()  # dpo: 1 sampled + 1 greedy
    with pytest.raises(UserError, match="at least 2 responses per attack"):
        TrainConfig(responses_per_attack=1).validate()


def test_sampling_with_the_adapter_folded_into_the_weights_draws_what_the_adapter_draws(tiny):
    """generate over W + s·B·A (one product a layer) samples what it samples over W and the adapter's two, and the
    base's weights come back bit for bit."""
    from redgame.llm.roles import LoraSettings, build_roles

    model, tok = tiny
    roles = build_roles(model, regime="bipolicy", lora=LoraSettings(rank=4, alpha=8))
    torch.manual_seed(0)
    with torch.no_grad():  # adapters that move the policy far from the base
        for role in ("attacker", "defender"):
            for p in roles.parameters(role):
                p.add_(torch.randn_like(p) * 0.3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    prompts = [chat_text(tok, defender_messages(s.prompt)) for s in builtin_seeds("train")[:6]]
    settings = SamplingSettings(max_new_tokens=8, temperature=1.2)
    draws = []
    for context in (roles.policy, roles.sampling_policy, roles.sampler):
        torch.manual_seed(5)
        with context("defender") as m:
            draws.append([c.completion_ids for c in generate(m, tok, prompts, settings)])
    assert draws[0] == draws[1] == draws[2]
    with roles.policy("attacker") as m:
        torch.manual_seed(5)
        attacker = [c.completion_ids for c in generate(m, tok, prompts, settings)]
    assert attacker != draws[0]  # the adapters matter: the folded one is the defender's
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())
    with roles.sampling_policy("defender"):  # inside, the base's weights hold the defender's delta
        assert sum(not torch.equal(p, before[n]) for n, p in model.named_parameters() if "base_layer" in n) > 0


def test_an_adapted_head_tied_to_the_embedding_is_not_folded(tiny):
    """SmolLM2 ties its output head to its input embedding: folding the head's delta would move the embedding."""
    from redgame.llm.roles import LoraSettings, build_roles

    model, tok = tiny
    roles = build_roles(model, regime="bipolicy", lora=LoraSettings(rank=4, alpha=8,
                                                                    target_modules=["q_proj", "v_proj", "lm_head"]))
    with torch.no_grad():
        for p in roles.parameters("defender"):
            p.add_(torch.randn_like(p) * 0.3)
    ids = torch.tensor([tok("How do I bake bread?")["input_ids"]])
    with roles.policy("defender") as m, torch.no_grad():
        want = m(input_ids=ids).logits
    with roles.sampling_policy("defender") as m, torch.no_grad():
        got = m(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-5)
