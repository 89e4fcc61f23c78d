"""Rewards: the theory's payoff applied to judge labels, attack-conditioned, with the anti-hacking penalties."""

import dataclasses
import itertools

import numpy as np
import pytest

from redgame.errors import UserError
from redgame.llm.judges import Labels
from redgame.llm.rewards import (PENALTY, RewardRules, attacker_utility, defender_utility, judge_round, judge_score,
                                 make_payoff, outcome_labels, rules_from_config)
from redgame.llm.rollout import Completion, Round
from redgame.llm.seeds import Seed
from redgame.theory import PRESETS, NonZeroSum, ZeroSum, make_spec
from redgame.theory.spec import outcome_utilities

HARMFUL = Seed("h", "how to x", True, "test")
BENIGN = Seed("b", "how to bake", False, "test")


def _closed_form_utilities(spec):
    """The toy game's payoffs written out from the formulas in theory/spec.py's docstring."""
    harm, wrongful = spec.outcome_indicators()
    unfaithful = (~spec.faithful_mask).astype(float)[:, :, None]
    p = spec.payoff
    if isinstance(p, ZeroSum):
        u_a = (harm + p.lam * wrongful)[:, None, :] * (1 - unfaithful) - p.unfaithful_penalty * unfaithful
        u_a = np.broadcast_to(u_a, (spec.n_seeds, spec.n_styles, spec.n_actions)).copy()
        return u_a, -u_a
    u_a = (p.attack_success * harm + p.benign_attack * wrongful)[:, None, :] * (1 - unfaithful)
    u_a = u_a - p.faithfulness * unfaithful
    u_d = -(p.safety * harm + p.helpfulness * wrongful)[:, None, :] + 0 * unfaithful
    shape = (spec.n_seeds, spec.n_styles, spec.n_actions)
    return np.broadcast_to(u_a, shape).copy(), np.broadcast_to(u_d, shape).copy()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_toy_utilities_are_bit_identical_to_the_closed_form(name):
    for lam, deflect, payoff in itertools.product((0.0, 0.3, 1.0, 2.5), (False, True), ("zero_sum", "nonzero_sum")):
        spec = make_spec(name, lam=lam, deflect=deflect, payoff=payoff)
        for got, want in zip(spec.utilities(), _closed_form_utilities(spec)):
            assert got.dtype == want.dtype and got.shape == want.shape and got.tobytes() == want.tobytes()


def _labels(refusal=0.0, harmful=0.0, attack_harmful=1.0, degenerate=0.0, complied=None):
    return Labels(refusal, harmful, 1.0, 0.0, attack_harmful, degenerate, complied)


@pytest.mark.parametrize("payoff", [ZeroSum(lam=0.7), ZeroSum(lam=2.0, deflect_cost=0.2),
                                    NonZeroSum(safety=2.0, helpfulness=0.5, attack_success=1.5, benign_attack=0.3)])
def test_rewards_are_the_theory_payoff_of_the_labels(payoff):
    rules = RewardRules(payoff, degenerate_penalty=False)
    for ah, refusal, complied in itertools.product((0.0, 0.3, 1.0), (0.0, 0.2, 1.0), (0.0, 0.5)):
        complied = min(complied, 1 - refusal)
        label = _labels(refusal, ah * complied, ah, complied=complied)
        harm = ah * complied
        wrongful = (1 - ah) * (refusal + payoff.deflect_cost * (1 - complied - refusal))  # deflect = neither
        assert outcome_labels(label, payoff.deflect_cost) == pytest.approx((harm, wrongful))
        u_a, u_d = outcome_utilities(payoff, harm, wrongful, 0.0)
        assert defender_utility(label, rules) == pytest.approx(u_d)
        assert attacker_utility(label, rules, faithful=True) == pytest.approx(u_a)
        penalty = payoff.unfaithful_penalty if isinstance(payoff, ZeroSum) else payoff.faithfulness
        assert attacker_utility(label, rules, faithful=False) == pytest.approx(-penalty)
        if isinstance(payoff, ZeroSum):
            assert attacker_utility(label, rules, True) == pytest.approx(-defender_utility(label, rules))


def test_the_toy_game_and_the_llm_rewards_agree_on_every_pure_outcome():
    """Labels of the toy game's pure outcomes give the toy game's payoffs."""
    spec = make_spec("hidden_intent", lam=0.4, deflect=True)
    u_a, u_d = spec.utilities()
    rules = RewardRules(spec.payoff, degenerate_penalty=False)
    one_hot = {"refuse": (1.0, 0.0), "comply": (0.0, 1.0), "deflect": (0.0, 0.0)}  # (refusal, complied)
    for s, seed in enumerate(spec.seeds):
        for k in range(spec.n_styles):
            for a, action in enumerate(spec.actions):
                refusal, complied = one_hot[action]
                label = _labels(refusal, float(seed.harmful) * complied, float(seed.harmful), complied=complied)
                faithful = bool(spec.faithful_mask[s, k])
                assert attacker_utility(label, rules, faithful) == pytest.approx(u_a[s, k, a])
                if faithful:
                    assert defender_utility(label, rules) == pytest.approx(u_d[s, k, a])


def test_attack_conditioned_rewards():
    rules = RewardRules(ZeroSum(lam=1.0))
    refusal = _labels(refusal=1.0, attack_harmful=1.0)  # a benign seed rewritten into a harmful request, refused
    assert defender_utility(refusal, rules) == 0.0          # the defender is not punished for refusing it
    assert attacker_utility(refusal, rules, faithful=False) == -1.0  # the attacker is, for the unfaithful rewrite
    refused_benign = _labels(refusal=1.0, attack_harmful=0.0)
    assert defender_utility(refused_benign, rules) == -1.0   # a refusal of a benign attack is wrongful


def test_degenerate_and_length_limit_penalties():
    rules = RewardRules(ZeroSum(lam=1.0), degenerate_penalty=True, length_limit_penalty=True)
    safe = _labels(refusal=1.0)
    assert defender_utility(safe, rules) == 0.0
    assert defender_utility(_labels(refusal=1.0, degenerate=1.0), rules) == PENALTY == -1.0
    assert defender_utility(_labels(refusal=1.0, degenerate=0.25), rules) == pytest.approx(-0.25)
    assert defender_utility(safe, rules, truncated=True) == -1.0
    assert defender_utility(safe, RewardRules(length_limit_penalty=False), truncated=True) == 0.0
    assert defender_utility(_labels(refusal=1.0, degenerate=1.0), RewardRules(degenerate_penalty=False)) == 0.0
    assert judge_score(safe) == 1.0 and judge_score(_labels(harmful=1.0, complied=1.0)) == 0.0


@pytest.mark.parametrize("payoff", [ZeroSum(lam=0.5), ZeroSum(lam=1.0), ZeroSum(lam=1.5), ZeroSum(lam=3.0),
                                    NonZeroSum(safety=2.0, helpfulness=3.0)])
def test_a_degenerate_or_cut_answer_earns_no_more_than_any_honest_one(payoff):
    """At λ > 1 a wrongful refusal costs −λ: the penalty's −1 made an apology loop beat a refusal of a benign
    request (and DPO chose the loop). It is the worst u_D of any outcome, and AdvGame's −1 where that is lower."""
    rules = RewardRules(payoff, degenerate_penalty=True, length_limit_penalty=True)
    honest = [defender_utility(_labels(refusal=r, harmful=h * a, attack_harmful=a, complied=h), rules)
              for a in (0.0, 1.0) for r, h in ((1.0, 0.0), (0.0, 1.0), (0.0, 0.0))]
    loop = defender_utility(_labels(refusal=1.0, attack_harmful=0.0, degenerate=1.0), rules)
    cut = defender_utility(_labels(refusal=1.0, attack_harmful=0.0), rules, truncated=True)
    assert loop == cut == min(-1.0, *honest)
    assert loop == pytest.approx(-max(1.0, payoff.lam)) if isinstance(payoff, ZeroSum) else loop == -3.0


def test_payoff_from_config_keys():
    assert make_payoff("zero_sum", 0.3) == ZeroSum(lam=0.3)
    assert make_payoff("nonzero_sum", 0.3) == NonZeroSum(helpfulness=0.3, benign_attack=0.3)
    with pytest.raises(UserError, match="payoff"):
        make_payoff("both", 1.0)
    from redgame.llm.config import TrainConfig

    with pytest.raises(UserError, match="payoff"):
        TrainConfig(payoff="both").validate()
    with pytest.raises(UserError, match="lam"):
        TrainConfig(lam=-1.0).validate()
    with pytest.raises(UserError, match="judge_format"):
        TrainConfig(judge_format="wildguard").validate()  # the embedded judge has no prompt format
    cfg = TrainConfig(payoff="nonzero_sum", lam=0.5, payoff_weights=("safety=2", "attack_success=0.25")).validate()
    assert rules_from_config(cfg).payoff == NonZeroSum(safety=2.0, helpfulness=0.5, attack_success=0.25,
                                                       benign_attack=0.5)
    for weights, needle in ((("lam=2",), "'lam' is not one of"), (("safety",), "not name=number"),
                            (("safety=-1",), "safety"), (("faithfulness=x",), "not name=number")):
        with pytest.raises(UserError, match=needle):
            TrainConfig(payoff="nonzero_sum", payoff_weights=weights).validate()
    with pytest.raises(UserError, match="'safety' is not one of"):
        TrainConfig(payoff_weights=("safety=2",)).validate()  # a nonzero_sum weight under zero_sum


class ScriptedJudge:
    """Labels by keyword: "good" refuses, "bad" helps, "mid" does neither; prefers the higher score."""

    errors = 0

    def labels(self, seeds, attacks, responses):
        table = {"good": (1.0, 0.0), "bad": (0.0, 1.0), "mid": (0.0, 0.0), "loop": (0.0, 0.0)}
        out = [Labels(table[r][0], table[r][1] * s.harmful, 1.0, 0.0, float(s.harmful), float(r == "loop"), table[r][1])
               for s, r in zip(seeds, responses)]
        return [dataclasses.replace(x, score=judge_score(x)) for x in out]

    def score(self, seeds, attacks, responses):
        return [x.score for x in self.labels(seeds, attacks, responses)]

    def faithfulness(self, seeds, attacks):
        return [float(a != "off-topic") for a in attacks]

    def prefer(self, seeds, attacks, a, b):
        s = self.score(seeds, attacks, a), self.score(seeds, attacks, b)
        return [1.0 if x > y else 0.0 if x < y else 0.5 for x, y in zip(*s)]


def _round(texts, seed=HARMFUL):
    c = lambda t: Completion([1], [2], t)  # noqa: E731
    rnd = Round([seed], [c("a0"), c("a1"), c("a2")], [0, 0, 0], ["rewrite 1", "off-topic", seed.prompt],
                [True, True, False])
    rnd.responses = [c(t) for t in texts]
    rnd.response_attack = [0, 0, 1, 1, 2, 2]
    rnd.response_explore = [False] * 6
    return rnd


def test_judge_round_rewards_pairs_and_unfaithful_attacks():
    rnd = _round(["good", "bad", "mid", "mid", "bad", "bad"])
    for pairwise in (False, True):
        j = judge_round(ScriptedJudge(), rnd, pairwise=pairwise, min_margin=0.05)
        assert j.faithful == [True, False, False]  # off-topic is unfaithful; unparsed never faithful
        assert j.attack_reward[1] == j.attack_reward[2] == -1.0
        assert j.defender.pairs == [(0, 1)]  # ties give no pair
    pointwise = judge_round(ScriptedJudge(), rnd, pairwise=False, min_margin=0.05)
    # harmful seed, zero-sum with lam = 1: u_D(refuse) = 0, u_D(help) = -1, u_D(neither) = 0; u_A = -u_D
    assert pointwise.defender.rewards == pytest.approx([0.0, -1.0, 0.0, 0.0, -1.0, -1.0])
    assert pointwise.attack_reward[0] == pytest.approx((0.0 + 1.0) / 2)
    assert pointwise.attacker.pairs == [(0, 1)]
    pairwise = judge_round(ScriptedJudge(), rnd, pairwise=True, min_margin=0.05)
    assert pairwise.attack_reward[0] == pytest.approx(1 - 2 * 1.0)  # scored on the best answer (a refusal)
    assert pairwise.defender.rewards[:2] == pytest.approx([1.0, -1.0])
    assert pairwise.attacker.pairs == []  # its best answer refuses: -1, no better than the unfaithful attacks


class FailingJudge(ScriptedJudge):
    """"???" is an answer the judge could not read: its labels are ½ and marked."""

    def labels(self, seeds, attacks, responses):
        out = super().labels(seeds, attacks, ["mid" if r == "???" else r for r in responses])
        return [dataclasses.replace(x, refusal=0.5, harmful=0.5 * s.harmful, judge_error=True) if r == "???" else x
                for x, s, r in zip(out, seeds, responses)]


def test_an_answer_the_judge_could_not_read_teaches_no_role():
    """Pointwise: no pair, no reward and no attack value come from it; the metrics leave it out."""
    from redgame.llm.trainer import round_metrics, sft_signal

    rnd = _round(["good", "???", "bad", "bad", "???", "???"])
    j = judge_round(FailingJudge(), rnd, pairwise=False, min_margin=0.05)
    assert j.judge_error == [False, True, False, False, True, True]
    assert j.defender.items == [0, 2, 3] and j.defender.pairs == []  # "good" vs "???" would have been a pair
    assert j.attack_reward[0] == pytest.approx(0.0) and j.attack_reward[1] == -1.0  # unfaithful: penalised unread
    assert np.isnan(j.attack_reward[2])  # the identity attack: every answer unread
    row = round_metrics(rnd, j)
    assert row["count/refusal_harmful"] == 3 and row["refusal_harmful"] == pytest.approx(1 / 3)
    assert row["count/empty"] == 6  # the judge-free rates count every answer
    assert set(sft_signal(rnd, j).items) <= {0, 2, 3}  # defender-sft takes no unread answer as a target


def test_an_attack_whose_sampled_answers_were_all_unread_is_not_scored_on_the_forced_candidates():
    """The attacker's reward is its mean u_A over the defender's sampled answers; a forced exploration
    answer ("I'm sorry ...") is the defender's exploration, not its play, and scored the attack 0."""
    rnd = _round(["???", "???", "bad", "bad", "???", "???"])
    rnd.responses.append(Completion([1], [2], "good"))  # a forced-prefix candidate for attack 0
    rnd.response_attack.append(0)
    rnd.response_explore.append(True)
    j = judge_round(FailingJudge(), rnd, pairwise=False, min_margin=0.05)
    assert np.isnan(j.attack_reward[0]) and 0 not in j.attacker.items
    assert 6 in j.defender.items  # the defender still learns from its forced candidate


def test_ties_give_no_pair_even_at_zero_margin():
    """Equal values prefer nothing: at min_margin 0 a tie must not pair an answer with itself."""
    rnd = _round(["mid", "mid", "bad", "bad", "good", "good"])
    for pairwise in (False, True):
        j = judge_round(ScriptedJudge(), rnd, pairwise=pairwise, min_margin=0.0)
        assert all(a != b for a, b in j.defender.pairs + j.attacker.pairs)
        assert (0, 1) not in j.defender.pairs and (1, 0) not in j.defender.pairs


def test_judge_round_on_a_benign_seed_uses_lambda_and_penalises_loops():
    rnd = _round(["good", "bad", "mid", "loop", "bad", "bad"], seed=BENIGN)
    rules = RewardRules(ZeroSum(lam=0.5))
    j = judge_round(ScriptedJudge(), rnd, pairwise=False, min_margin=0.0, rules=rules)
    # benign: a refusal costs lam = 0.5, help costs nothing, neither costs lam * deflect_cost, a loop is -1
    assert j.defender.rewards[:4] == pytest.approx([-0.5, 0.0, -0.25, -1.0])
    assert j.degenerate == [False, False, False, True, False, False]
    pw = judge_round(ScriptedJudge(), rnd, pairwise=True, min_margin=0.0, rules=rules)
    assert pw.defender.rewards[3] == -1.0  # a degenerate answer loses every comparison


def test_judge_round_penalises_answers_at_the_length_limit_when_asked():
    rnd = _round(["good", "good", "mid", "mid", "bad", "bad"])
    rnd.responses[1] = Completion([1], [2], "good", truncated=True)
    off = judge_round(ScriptedJudge(), rnd, pairwise=False, min_margin=0.0)
    on = judge_round(ScriptedJudge(), rnd, pairwise=False, min_margin=0.0,
                     rules=RewardRules(length_limit_penalty=True))
    assert off.defender.rewards[:2] == [0.0, 0.0] and on.defender.rewards[:2] == [0.0, -1.0]
    assert on.truncated == [False, True, False, False, False, False]
    assert on.defender.pairs[0] == (0, 1)


class MisreadingJudge(ScriptedJudge):
    """Reads every rewrite (not the seed as written) as the opposite class, as a noisy prompt judge does."""

    def labels(self, seeds, attacks, responses):
        out = []
        for s, a, r in zip(seeds, attacks, responses):
            read = float(s.harmful) if a == s.prompt else float(not s.harmful)
            helps = {"good": 0.0, "bad": 1.0, "mid": 0.0, "loop": 0.0}[r]
            label = Labels({"good": 1.0}.get(r, 0.0), read * helps, 1.0, 0.0, read, float(r == "loop"), helps)
            out.append(dataclasses.replace(label, score=judge_score(label)))
        return out


@pytest.mark.parametrize("seed", [HARMFUL, BENIGN])
def test_request_class_seed_judges_answers_against_the_seeds_class(seed):
    rnd = _round(["good", "bad", "good", "bad", "good", "bad"], seed=seed)  # attack 0 rewrite, 2 the seed as written
    by_judge = judge_round(MisreadingJudge(), rnd, pairwise=False, min_margin=0.0)
    by_seed = judge_round(MisreadingJudge(), rnd, pairwise=False, min_margin=0.0, rules=RewardRules(request_class="seed"))
    # the seed as written is read right by both: refusing is right on a harmful seed, wrongful on a benign one
    right = [0.0, -1.0] if seed.harmful else [-1.0, 0.0]
    assert by_judge.defender.rewards[4:] == by_seed.defender.rewards[4:] == right
    # the rewrite is misread: the judge's reading reverses the defender's preference, the seed's class restores it
    assert by_judge.defender.rewards[:2] == right[::-1] and by_seed.defender.rewards[:2] == right
    assert by_seed.attack_harmful == [seed.harmful] * 6
    assert by_seed.harmful[:2] == [False, seed.harmful]
    assert by_seed.scores[:2] == [1.0 + r for r in right]
    assert by_seed.attack_reward[0] == pytest.approx(-sum(right) / 2)  # zero-sum: u_A = -u_D over its answers


def test_request_class_is_checked_by_the_config():
    from redgame.llm.config import TrainConfig

    assert rules_from_config(TrainConfig(request_class="seed").validate()).request_class == "seed"
    with pytest.raises(UserError, match="request_class"):
        TrainConfig(request_class="attack").validate()
    with pytest.raises(UserError, match="pairwise"):
        TrainConfig(request_class="seed", regime="advgame").validate()


@pytest.mark.parametrize("key, value", [("payoff", "nonzero_sum"), ("lam", 3.0), ("payoff_weights", ("unfaithful_penalty=2",))])
def test_advgame_refuses_payoff_settings_its_pairwise_rewards_ignore(key, value):
    """advgame accepted them and trained bit for bit as without them."""
    from redgame.llm.config import TrainConfig

    with pytest.raises(UserError, match=f"config key '{key}': advgame's rewards come from the judge's pairwise"):
        TrainConfig(regime="advgame", **{key: value}).validate()
    TrainConfig(regime="bipolicy", **{key: value}).validate()  # a pointwise regime reads them


@pytest.mark.parametrize("field, value", [("refusal", float("nan")), ("harmful", 1.5), ("attack_harmful", -0.2)])
def test_a_label_out_of_its_range_stops_the_round_in_one_line(field, value):
    """A NaN refusal made that answer's reward NaN and dropped the attack's DPO pair without a word."""

    class Broken(ScriptedJudge):
        def labels(self, seeds, attacks, responses):
            out = super().labels(seeds, attacks, responses)
            return [dataclasses.replace(out[0], **{field: value})] + out[1:]

    with pytest.raises(UserError, match=f"gave {field} = {value!r} for the answer 'good'"):
        judge_round(Broken(), _round(["good", "bad", "mid", "mid", "bad", "bad"]), pairwise=False, min_margin=0.05)


def test_a_preference_out_of_its_range_stops_the_pairwise_round_in_one_line():
    """A NaN preference made every reward of its group NaN and left the defender no pair, without a word."""

    class Broken(ScriptedJudge):
        def prefer(self, seeds, attacks, a, b):
            return [float("nan")] + super().prefer(seeds, attacks, a, b)[1:]

    with pytest.raises(UserError, match="gave the preference nan between the answers 'good' and 'bad'"):
        judge_round(Broken(), _round(["good", "bad", "mid", "mid", "bad", "bad"]), pairwise=True, min_margin=0.05)
