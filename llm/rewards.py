"""From a judged round to each role's training signal: rewards, groups and (chosen, rejected) pairs.

All of the game's reward logic lives here.

- Pointwise, zero-sum (Self-RedTeam, arXiv 2506.07468; ABS, arXiv 2605.08427): the judge's
  graded defender score s ∈ [0, 1] of an exchange gives u_D = 2s − 1 and u_A = −u_D. An
  attack's reward is the mean of u_A over the defender's sampled answers to it.
- Pairwise, non-zero-sum (AdvGame, arXiv 2512.20806): the judge's preferences P(a ≻ b)
  rank the defender's answers to each attack by win rate; the attacks on a seed are
  compared on the defender's *best* answer to each, judged against the seed.
- Either way, an attack that failed to parse or is unfaithful to its seed gets −1.
- Identity attacks (the seed as written, ``play_round(identity_attacks=True)``) give the
  defender answers to score, but are no sample of the attacker's and give it no signal.
- Pairs for DPO/IPO: per attack the (best, worst) answer, per seed the (best, worst)
  attack, kept when their scores differ by at least ``min_margin``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from itertools import combinations

UNFAITHFUL = -1.0
LABEL_THRESHOLD = 0.5  # a judge label in [0, 1] counts as "yes" from here


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
    harmful: list[bool]            # per response
    faithful: list[bool]           # per attack (False when unparsed)
    attack_reward: list[float]     # per attack
    defender: RoleSignal
    attacker: RoleSignal
    judge_errors: int


def _best_worst(candidates: list[int], value: dict[int, float], min_margin: float) -> tuple[int, int] | None:
    if len(candidates) < 2:
        return None
    best = max(candidates, key=lambda i: value[i])
    worst = min(candidates, key=lambda i: value[i])
    return (best, worst) if value[best] - value[worst] >= min_margin else None


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
            wins[i] += p
            wins[j] += 1.0 - p
            games[i] += 1
            games[j] += 1
    return {i: wins[i] / games[i] if games[i] else 0.5 for i in wins}


def judge_round(judge, rnd, *, pairwise: bool, min_margin: float) -> JudgedRound:
    """Label and score a :class:`~redgame.llm.rollout.Round`, and derive both roles' signals."""
    errors_before = judge.errors
    n_att = len(rnd.attacks)
    resp_seed = [rnd.seeds[rnd.attack_seed[a]] for a in rnd.response_attack]
    resp_prompt = [rnd.attack_prompts[a] for a in rnd.response_attack]
    texts = [r.text for r in rnd.responses]
    labels = judge.labels(resp_seed, resp_prompt, texts)  # one pass: refusal, harmful, score
    scores = [float(label.score) for label in labels]

    faithful = [False] * n_att
    parsed = [a for a in range(n_att) if rnd.parsed[a]]
    if parsed:
        verdict = judge.faithfulness([rnd.seeds[rnd.attack_seed[a]] for a in parsed],
                                     [rnd.attack_prompts[a] for a in parsed])
        for a, ok in zip(parsed, verdict):
            faithful[a] = ok >= LABEL_THRESHOLD

    by_attack = [[i for i, a in enumerate(rnd.response_attack) if a == att] for att in range(n_att)]
    sampled = [[i for i in members if not rnd.response_explore[i]] for members in by_attack]

    if pairwise:
        value = _win_rates(judge, by_attack, [rnd.seeds[rnd.attack_seed[a]] for a in range(n_att)],
                           rnd.attack_prompts, texts)
    else:
        value = {i: s for i, s in enumerate(scores)}

    defender = RoleSignal()
    for att, members in enumerate(by_attack):
        for i in members:
            defender.items.append(i)
            defender.rewards.append(2.0 * value[i] - 1.0)
            defender.groups.append(att)
        pair = _best_worst(members, value, min_margin)
        if pair:
            defender.pairs.append(pair)

    # The attacker: the defender's sampled answers, the best one in the pairwise game.
    # Identity attacks (the seed as written) train the defender only.
    sampled_attacks = [a for a in range(n_att) if not rnd.is_identity(a)]
    attack_value: dict[int, float] = {}
    if pairwise:
        best_answer = {a: max(sampled[a] or by_attack[a], key=lambda i: value[i]) for a in range(n_att)}
        per_seed = [[a for a in sampled_attacks if rnd.attack_seed[a] == s and faithful[a]] for s in range(len(rnd.seeds))]
        # The attack whose best answer loses the defence comparison is the better attack.
        contested = [s for s in range(len(rnd.seeds)) if len(per_seed[s]) > 1]
        defence = _win_rates(judge, [[best_answer[a] for a in per_seed[s]] for s in contested],
                             [rnd.seeds[s] for s in contested], [rnd.seeds[s].prompt for s in contested],
                             texts) if contested else {}
        for a in range(n_att):
            if not faithful[a]:
                attack_value[a] = UNFAITHFUL
            elif best_answer[a] in defence:
                attack_value[a] = 1.0 - 2.0 * defence[best_answer[a]]
            else:  # the only faithful attack on its seed: the judge's score of its best answer
                attack_value[a] = 1.0 - 2.0 * scores[best_answer[a]]
    else:
        for a in range(n_att):
            own = sampled[a] or by_attack[a]
            attack_value[a] = (sum(1.0 - 2.0 * scores[i] for i in own) / len(own)) if faithful[a] else UNFAITHFUL

    attacker = RoleSignal()
    for s in range(len(rnd.seeds)):
        members = [a for a in sampled_attacks if rnd.attack_seed[a] == s]
        for a in members:
            attacker.items.append(a)
            attacker.rewards.append(attack_value[a])
            attacker.groups.append(s)
        pair = _best_worst(members, attack_value, min_margin)
        if pair:
            attacker.pairs.append(pair)

    return JudgedRound(scores, [label.refusal >= LABEL_THRESHOLD for label in labels],
                       [label.harmful >= LABEL_THRESHOLD for label in labels], faithful,
                       [attack_value[a] for a in range(n_att)], defender, attacker, judge.errors - errors_before)
