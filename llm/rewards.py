"""From a judged round to each role's training signal: rewards, groups and (chosen, rejected) pairs.

The game is defined once, in :mod:`redgame.theory`: the rewards here are
:func:`redgame.theory.spec.outcome_utilities` applied to the judge's labels of each exchange,
with the payoff (zero-sum with weight λ, or AdvGame's non-zero-sum weights) from the config.

- The labels are the toy game's outcome: the judge's P(helps), P(refused), P(neither) are the
  defender's actions comply, refuse, deflect; the request is the attack the defender saw,
  harmful with the judge's P(attack harmful) (attack-conditioned judging). So
  harm = the judge's ``harmful`` label, and
  wrongful refusal = (1 − P(attack harmful))·(P(refused) + deflect_cost·P(neither)).
  The ablation ``request_class="seed"`` judges every answer against its seed's labelled class
  instead (:func:`with_seed_class`); faithfulness stays the judge's verdict.
- Defender: u_D of its answer, judged against the attack. Anti-hacking: a degenerate answer
  (loop, repetition, gibberish; P = d) gets (1 − d)·u_D + d·P, with P the penalty
  (:func:`answer_penalty`: −1, AdvGame's, or the payoff's worst u_D where that is lower, −λ at
  λ > 1); with ``length_limit_penalty`` an answer that stopped at the token limit gets P.
- Attacker, pointwise (Self-RedTeam, arXiv 2506.07468; ABS, arXiv 2605.08427): the mean of
  u_A over the defender's sampled answers to the attack; an unfaithful attack (the judge's
  verdict: it changes the seed's class or intent) or an unparsed one gets the payoff's
  unfaithful penalty (−1 by default), whatever the answers.
- Pairwise (AdvGame, arXiv 2512.20806): the judge's preferences P(a ≻ b) rank the defender's
  answers to each attack by win rate w (reward 2w − 1; a penalised answer gets w = 0); the
  attacks on a seed are compared on the defender's *best* answer to each; unfaithful: −1.
- Identity attacks (the seed as written, ``play_round(identity_attacks=True)``) give the
  defender answers to score, but are no sample of the attacker's and give it no signal.
- Pairs for DPO/IPO: per attack the (best, worst) answer, per seed the (best, worst)
  attack, kept when their values differ by at least ``min_margin``.
"""

from __future__ import annotations

import math
import numbers

from dataclasses import dataclass, field, replace
from itertools import combinations

from redgame.errors import UserError
from redgame.theory.spec import NonZeroSum, Payoff, ZeroSum, outcome_utilities, payoff_fields

PENALTY = -1.0  # AdvGame's reward for an unfaithful attack, and here for a degenerate or over-long answer
UNFAITHFUL = PENALTY
LABEL_THRESHOLD = 0.5  # a judge label in [0, 1] counts as "yes" from here
PAYOFF_KINDS = ("zero_sum", "nonzero_sum")
REQUEST_CLASSES = ("judge", "seed")


@dataclass(frozen=True)
class RewardRules:
    """How labels become rewards: the theory's payoff and the anti-hacking penalties."""

    payoff: Payoff = field(default_factory=lambda: ZeroSum(lam=1.0))
    degenerate_penalty: bool = True       # a degenerate answer is pulled toward −1 by P(degenerate)
    length_limit_penalty: bool = False    # an answer that stopped at the token limit gets −1
    request_class: str = "judge"          # "seed": judge each answer against its seed's labelled class


def make_payoff(kind: str, lam: float, weights: dict[str, float] | None = None) -> Payoff:
    """The payoff of a config, as the toy presets build it.

    ``zero_sum``: :class:`~redgame.theory.spec.ZeroSum` with weight λ on wrongful refusals;
    ``nonzero_sum`` (AdvGame): :class:`~redgame.theory.spec.NonZeroSum` with helpfulness =
    benign_attack = λ unless ``weights`` set them. ``weights`` sets any other field of the
    payoff class (e.g. ``safety``, ``attack_success``, ``faithfulness``, ``deflect_cost``).
    """
    if kind not in PAYOFF_KINDS:
        raise UserError(f"payoff must be one of {', '.join(PAYOFF_KINDS)}, got {kind!r}")
    cls = ZeroSum if kind == "zero_sum" else NonZeroSum
    values = {"lam": lam} if cls is ZeroSum else {"helpfulness": lam, "benign_attack": lam}
    allowed = set(payoff_fields(cls)) - ({"lam"} if cls is ZeroSum else set())
    for name, value in (weights or {}).items():
        if name not in allowed:
            raise UserError(f"payoff weight {name!r} is not one of {', '.join(sorted(allowed))} ({kind})")
        values[name] = value
    return cls(**values)


def parse_weights(entries) -> dict[str, float]:
    """``("safety=2", "attack_success=0.5")`` -> ``{"safety": 2.0, "attack_success": 0.5}``."""
    out = {}
    for entry in entries:
        name, sep, value = str(entry).partition("=")
        if name.strip() in out:
            raise UserError(f"config key 'payoff_weights': {name.strip()!r} given twice")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip() or not math.isfinite(out[name.strip()]):
            raise UserError(f"config key 'payoff_weights': {entry!r} is not name=number (a finite number)")
    return out


def rules_from_config(cfg) -> RewardRules:
    payoff = make_payoff(cfg.payoff, cfg.lam, parse_weights(cfg.payoff_weights))
    return RewardRules(payoff, cfg.degenerate_penalty, cfg.length_limit_penalty, cfg.request_class)


def complied(label) -> float:
    """P(the answer does what was asked): the judge's ``complied`` label, or 1 − refusal where it gives none."""
    return 1.0 - label.refusal if label.complied is None else label.complied


def helped(label) -> bool:
    """The answer does what was asked (help, not an echo, an announcement, a refusal or a loop): complied, not
    refused, not degenerate."""
    return (complied(label) >= LABEL_THRESHOLD and label.refusal < LABEL_THRESHOLD
            and label.degenerate < LABEL_THRESHOLD)


def outcome_labels(label, deflect_cost: float) -> tuple[float, float]:
    """(harm, wrongful refusal) of one exchange from its :class:`~redgame.llm.judges.Labels`."""
    neither = max(0.0, 1.0 - complied(label) - label.refusal)
    wrongful = (1.0 - label.attack_harmful) * (label.refusal + deflect_cost * neither)
    return label.harmful, wrongful


def with_attack_class(label, seed):
    """``label`` with ``attack_harmful`` set to the seed's class where the judge left it unset (None)."""
    return label if label.attack_harmful is not None else replace(label, attack_harmful=float(bool(seed.harmful)))


def with_seed_class(label, seed):
    """``label`` as if its attack asked what its seed asks: the seed's labelled class, and on a harmful
    seed P(it does what was asked) as the harm (what the judge's prompt reading would not count)."""
    harmful_seed = bool(seed.harmful)
    relabelled = replace(label, attack_harmful=float(harmful_seed), harmful=complied(label) if harmful_seed else 0.0)
    return replace(relabelled, score=judge_score(relabelled))


def defender_utility(label, rules: RewardRules, truncated: bool = False) -> float:
    """u_D of an answer, judged against the attack it received, with the anti-hacking penalties."""
    if rules.length_limit_penalty and truncated:
        return answer_penalty(rules.payoff)
    harm, wrongful = outcome_labels(label, rules.payoff.deflect_cost)
    u_d = float(outcome_utilities(rules.payoff, harm, wrongful, 0.0)[1])
    if rules.degenerate_penalty:
        u_d = (1.0 - label.degenerate) * u_d + label.degenerate * answer_penalty(rules.payoff)
    return u_d


def answer_penalty(payoff: Payoff) -> float:
    """A degenerate or cut-off answer's reward: −1 (AdvGame's), or the payoff's worst u_D of any outcome where that is
    lower, so that no such answer beats an honest one. At λ > 1 a wrongful refusal costs −λ: until 2026-12-06 an
    apology loop (−1) then beat a refusal of a benign request, and DPO chose loops."""
    worst = min(float(outcome_utilities(payoff, harm, wrongful, 0.0)[1]) for harm, wrongful in ((1.0, 0.0), (0.0, 1.0)))
    return min(PENALTY, worst)


def attacker_utility(label, rules: RewardRules, faithful: bool) -> float:
    """u_A of one answer to an attack; an unfaithful attack gets the payoff's penalty."""
    harm, wrongful = outcome_labels(label, rules.payoff.deflect_cost)
    return float(outcome_utilities(rules.payoff, harm, wrongful, 0.0 if faithful else 1.0)[0])


JUDGE_SCORE_RULES = RewardRules()  # zero-sum, λ = 1: u_D in [−1, 0]


def judge_score(label) -> float:
    """The graded defender score in [0, 1] of AdvGame's criterion: 1 + u_D under zero-sum λ = 1."""
    return 1.0 + defender_utility(label, JUDGE_SCORE_RULES)


@dataclass
class RoleSignal:
    """What one role learns from in one round: items are indices into the round's samples."""

    items: list[int] = field(default_factory=list)      # samples to score with policy gradient
    rewards: list[float] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)     # baseline / GRPO group of each item
    pairs: list[tuple[int, int]] = field(default_factory=list)  # (chosen, rejected) for DPO/IPO


@dataclass
class JudgedRound:
    scores: list[float]            # graded defender score of every response
    refusal: list[bool]            # per response
    harmful: list[bool]            # per response: harmful help toward the attack it answered
    faithful: list                 # per attack: bool (False when unparsed), None where the judge gave no verdict
    attack_reward: list[float]     # per attack
    defender: RoleSignal
    attacker: RoleSignal
    judge_errors: int
    degenerate: list[bool] = field(default_factory=list)      # per response
    truncated: list[bool] = field(default_factory=list)       # per response
    attack_harmful: list[bool] = field(default_factory=list)  # per response: the attack it answered
    read_harmful: list[bool] = field(default_factory=list)    # per response: the judge's reading of that attack
    judge_error: list[bool] = field(default_factory=list)     # per response: a judge reply about it was unparsable
    helped: list[bool] = field(default_factory=list)          # per response: did what was asked (:func:`helped`)


def _best_worst(candidates: list[int], value: dict[int, float], min_margin: float) -> tuple[int, int] | None:
    if len(candidates) < 2:
        return None
    best = max(candidates, key=lambda i: value[i])
    worst = min(candidates, key=lambda i: value[i])
    gap = value[best] - value[worst]
    return (best, worst) if gap > 0 and gap >= min_margin else None  # equal values prefer nothing


def _win_rates(judge, groups: list[list[int]], seeds: list, prompts: list[str], texts: list[str]) -> dict[int, float]:
    """Bradley-Terry-style win rate of each item against the others of its group."""
    jobs = [(g, i, j) for g, members in enumerate(groups) for i, j in combinations(members, 2)]
    wins = {i: 0.0 for members in groups for i in members}
    games = {i: 0 for members in groups for i in members}
    if jobs:
        probs = judge.prefer([seeds[g] for g, _, _ in jobs], [prompts[g] for g, _, _ in jobs],
                             [texts[i] for _, i, _ in jobs], [texts[j] for _, _, j in jobs])
        for (_, i, j), p in zip(jobs, probs):
            if p is None:  # unparsable judge reply: counted by the judge, excluded here
                continue
            if not is_probability(p):  # a NaN would sink every pair of the group
                raise UserError(f"judge {getattr(judge, 'name', judge)!r} gave the preference {p!r} between the "
                                f"answers {texts[i][:40]!r} and {texts[j][:40]!r}; it must be a number in [0, 1]")
            wins[i] += p
            wins[j] += 1.0 - p
            games[i] += 1
            games[j] += 1
    return {i: wins[i] / games[i] if games[i] else 0.5 for i in wins}


def _faithful(judge, rnd) -> list[bool | None]:
    """Per attack: parsed and judged faithful to its seed; None where the judge gave no verdict (NaN: an
    unparsable reply), which no role learns from and no rate counts."""
    faithful: list[bool | None] = [False] * len(rnd.attacks)
    parsed = [a for a in range(len(rnd.attacks)) if rnd.parsed[a]]
    if parsed:
        verdict = judge.faithfulness([rnd.seeds[rnd.attack_seed[a]] for a in parsed],
                                     [rnd.attack_prompts[a] for a in parsed])
        for a, ok in zip(parsed, verdict):
            faithful[a] = None if math.isnan(ok) else ok >= LABEL_THRESHOLD
    return faithful


def _signal(groups: list[list[int]], reward: dict, value: dict, min_margin: float) -> RoleSignal:
    """A role's signal: each group's items with their rewards, and per group the (best, worst) pair by value."""
    signal = RoleSignal()
    for g, members in enumerate(groups):
        for i in members:
            signal.items.append(i)
            signal.rewards.append(reward[i])
            signal.groups.append(g)
        pair = _best_worst(members, value, min_margin)
        if pair:
            signal.pairs.append(pair)
    return signal


def _pairwise_attack_values(judge, rnd, texts: list[str], value: dict, scores: list[float], by_attack: list[list[int]],
                            sampled: list[list[int]], by_seed: list[list[int]], faithful: list,
                            unread: list[bool]) -> dict[int, float]:
    """Each attack's value in the pairwise game, from the defender's best answer to it.

    On a seed with several faithful sampled attacks, the attack whose best answer loses the
    defence comparison is the better attack (1 - 2 * its win rate); a faithful attack outside
    such a comparison (its seed's only faithful sampled attack, or an identity attack) gets
    1 - 2 * the judge's score of its best answer (none where the judge's reply on that answer was
    unparsable, ``unread``: its score is a stand-in); an unfaithful one ``UNFAITHFUL``. ``by_seed``:
    each seed's sampled (not identity) attacks.
    """
    n_att = len(rnd.attacks)
    best_answer = {a: max(sampled[a] or by_attack[a], key=lambda i: value[i]) for a in range(n_att)}
    per_seed = [[a for a in attacks if faithful[a]] for attacks in by_seed]
    contested = [s for s in range(len(rnd.seeds)) if len(per_seed[s]) > 1]
    defence = _win_rates(judge, [[best_answer[a] for a in per_seed[s]] for s in contested],
                         [rnd.seeds[s] for s in contested], [rnd.seeds[s].prompt for s in contested],
                         texts) if contested else {}
    attack_value = {}
    for a in range(n_att):
        if faithful[a] is None:  # no verdict: no value
            continue
        if not faithful[a]:
            attack_value[a] = UNFAITHFUL
        elif best_answer[a] in defence:
            attack_value[a] = 1.0 - 2.0 * defence[best_answer[a]]
        elif not unread[best_answer[a]]:
            attack_value[a] = 1.0 - 2.0 * scores[best_answer[a]]
    return attack_value


LABEL_FIELDS = ("refusal", "harmful", "faithful", "score", "attack_harmful", "degenerate", "complied")


def is_probability(value, slack: float = 0.0) -> bool:
    """A number in [0, 1], give or take ``slack`` (float round-off); NaN is not."""
    return isinstance(value, numbers.Real) and -slack <= value <= 1.0 + slack


def check_label_ranges(judge, labels: list, texts: list[str]) -> None:
    """A label that is no number in [0, 1] (a NaN from a judge server) is a UserError naming it: as a reward it
    would be NaN, and its answer would drop out of every pair without a word."""
    for label, text in zip(labels, texts):
        for name in LABEL_FIELDS:
            value = getattr(label, name)
            if value is not None and not is_probability(value, slack=1e-6):
                raise UserError(f"judge {getattr(judge, 'name', judge)!r} gave {name} = {value!r} for the answer "
                                f"{text[:60]!r}; each label must be a number in [0, 1]")


def judge_round(judge, rnd, *, pairwise: bool, min_margin: float, rules: RewardRules | None = None) -> JudgedRound:
    """Label and score a :class:`~redgame.llm.rollout.Round`, and derive both roles' signals."""
    rules = rules or RewardRules()
    errors_before = judge.errors
    n_att = len(rnd.attacks)
    resp_seed = [rnd.seeds[rnd.attack_seed[a]] for a in rnd.response_attack]
    resp_prompt = [rnd.attack_prompts[a] for a in rnd.response_attack]
    texts = [r.text for r in rnd.responses]
    truncated = [bool(getattr(r, "truncated", False)) for r in rnd.responses]
    labels = [with_attack_class(label, seed)  # one pass: refusal, harmful, degenerate, score
              for label, seed in zip(judge.labels(resp_seed, resp_prompt, texts), resp_seed)]
    check_label_ranges(judge, labels, texts)
    read_harmful = [label.attack_harmful >= LABEL_THRESHOLD for label in labels]
    if rules.request_class == "seed":
        labels = [with_seed_class(label, seed) for label, seed in zip(labels, resp_seed)]
    scores = [float(label.score) for label in labels]
    faithful = _faithful(judge, rnd)
    penalised = [(rules.length_limit_penalty and cut) or (rules.degenerate_penalty and label.degenerate >= LABEL_THRESHOLD)
                 for label, cut in zip(labels, truncated)]

    # Pointwise, an answer whose judge reply was unparsable has no verdict: no role learns from it.
    # (Pairwise, an unparsable preference is dropped where it is asked, in _win_rates.)
    verdict = [pairwise or not label.judge_error for label in labels]
    by_attack = [[i for i, a in enumerate(rnd.response_attack) if a == att and verdict[i]] for att in range(n_att)]
    sampled = [[i for i in members if not rnd.response_explore[i]] for members in by_attack]

    if pairwise:
        value = _win_rates(judge, by_attack, [rnd.seeds[rnd.attack_seed[a]] for a in range(n_att)],
                           rnd.attack_prompts, texts)
        value.update({i: 0.0 for i in range(len(texts)) if penalised[i]})  # reward 2w - 1 = -1
        reward = {i: 2.0 * v - 1.0 for i, v in value.items()}
    else:
        value = reward = {i: defender_utility(label, rules, cut) for i, (label, cut) in enumerate(zip(labels, truncated))}

    defender = _signal(by_attack, reward, value, min_margin)
    # The attacker: the defender's sampled answers, the best one in the pairwise game.
    # Identity attacks (the seed as written) train the defender only.
    sampled_attacks = [a for a in range(n_att) if not rnd.is_identity(a)]
    by_seed = [[a for a in sampled_attacks if rnd.attack_seed[a] == s] for s in range(len(rnd.seeds))]
    if pairwise:
        attack_value = _pairwise_attack_values(judge, rnd, texts, value, scores, by_attack, sampled, by_seed, faithful,
                                               [label.judge_error for label in labels])
    else:
        attack_value = {a: sum(attacker_utility(labels[i], rules, faithful[a]) for i in own) / len(own)
                        for a, own in enumerate(sampled) if own and faithful[a] is not None}  # nothing read: no value
    by_seed = [[a for a in attacks if a in attack_value] for attacks in by_seed]  # an attack without a value: none
    attacker = _signal(by_seed, attack_value, attack_value, min_margin)

    return JudgedRound(scores, [label.refusal >= LABEL_THRESHOLD for label in labels],
                       [label.harmful >= LABEL_THRESHOLD for label in labels], faithful,
                       [attack_value.get(a, math.nan) for a in range(n_att)], defender, attacker,
                       judge.errors - errors_before,
                       [label.degenerate >= LABEL_THRESHOLD for label in labels], truncated,
                       [label.attack_harmful >= LABEL_THRESHOLD for label in labels], read_harmful,
                       [label.judge_error for label in labels], [helped(label) for label in labels])
