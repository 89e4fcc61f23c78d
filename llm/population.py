"""PSRO-style opponent sampling: a population of past adapters and the meta-Nash over it.

Policy-Space Response Oracles (Lanctot et al. 2017, arXiv 1711.00832): keep each role's past
policies, estimate the empirical game of every attacker against every defender, solve it,
and train each role against an opponent drawn from the other role's meta-Nash mixture
instead of against the other role's latest weights.

Here, every ``population_every`` steps both roles' current adapter weights join the
population (the oldest leaves beyond ``population_size``), the missing entries of the
payoff matrix are played, and the zero-sum meta-game is solved by
``redgame.games.metagame`` (an LP). Entry (i, j) is attacker i's win rate against
defender j on fixed evaluation seeds from the training split, greedy: the mean of its
attack success on the harmful seeds and the defender's refusal rate on its rewrites of the
benign seeds, the two ways the attacker wins the game. Attacks are played once per
attacker and kept, so each recomputation costs one attack batch and 2P − 1 answer batches.

Usage (the trainer does this when ``population_every`` > 0)::

    pop = Population(size=4, eval_seeds=seeds, attack_tokens=32, response_tokens=24)
    pop.add(roles, step=0, tokenizer=tok, judge=judge)   # snapshot, play new entries, solve
    k = pop.sample("attacker", rng)                       # an opponent index from the mix
    with pop.playing(roles, "attacker", k):              # its weights in the attacker's seat
        ...
"""

from __future__ import annotations

import contextlib
import dataclasses
import random

import numpy as np
import torch

from redgame.errors import UserError
from redgame.llm.roles import ROLES


class Population:
    """Past attacker and defender adapters, their cross-play matrix and its meta-Nash."""

    def __init__(self, *, size: int, eval_seeds: list, attack_tokens: int, response_tokens: int):
        if size < 1:
            raise UserError(f"population size must be >= 1, got {size}")
        self.size, self.eval_seeds = size, list(eval_seeds)
        self.attack_tokens, self.response_tokens = attack_tokens, response_tokens
        self.steps: list[int] = []                                   # the step each member was taken at
        self.weights: dict[str, list[dict[str, torch.Tensor]]] = {r: [] for r in ROLES}
        self.attacks: list[list[str]] = []                           # each attacker's greedy attacks
        self.payoff = np.zeros((0, 0))                               # [attackers, defenders] win rates
        self.mix = {r: np.ones(0) for r in ROLES}
        self.value = float("nan")

    def __len__(self) -> int:
        return len(self.steps)

    # -- swapping a member's weights into a role's seat --------------------------------
    @staticmethod
    def snapshot(roles, role: str) -> dict[str, torch.Tensor]:
        return {n: p.detach().cpu().clone() for n, p in roles.named_parameters(role)}

    @contextlib.contextmanager
    def playing(self, roles, role: str, index: int):
        """The role's seat holds member ``index``'s weights inside the block (no gradients)."""
        params = dict(roles.named_parameters(role))
        live = {n: p.detach().clone() for n, p in params.items()}
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(self.weights[role][index][n])
        try:
            yield
        finally:
            with torch.no_grad():
                for n, p in params.items():
                    p.copy_(live[n])

    # -- growing the population and its empirical game ---------------------------------
    def add(self, roles, *, step: int, tokenizer, judge) -> None:
        """Snapshot both roles, drop the oldest beyond ``size``, play the new entries, solve."""
        for role in ROLES:
            self.weights[role].append(self.snapshot(roles, role))
        self.steps.append(step)
        self._drop_oldest(keep=self.size - 1)  # the new member's row and column are not played yet
        self._play_new_entries(roles, tokenizer, judge)
        self._solve()

    def _drop_oldest(self, keep: int) -> None:
        """Drop the oldest members until ``keep`` played ones are left (each its weights, attacks, row, column)."""
        while len(self.attacks) > keep:
            self.steps.pop(0)
            for role in ROLES:
                self.weights[role].pop(0)
            self.attacks.pop(0)
            self.payoff = self.payoff[1:, 1:]

    def _play_new_entries(self, roles, tokenizer, judge) -> None:
        from redgame.llm.crossplay import generate_attacks
        from redgame.llm.evaluation import evaluate_defender

        new = len(self.steps) - 1
        with self.playing(roles, "attacker", new), roles.policy("attacker") as model:
            attacks, _ = generate_attacks(model, tokenizer, self.eval_seeds, max_new_tokens=self.attack_tokens)
        self.attacks.append(attacks)
        payoff = np.full((new + 1, new + 1), np.nan)
        payoff[:new, :new] = self.payoff
        for j in range(new + 1):
            rows = range(new + 1) if j == new else [new]
            with self.playing(roles, "defender", j), roles.policy("defender") as model:
                for i in rows:
                    played = evaluate_defender(model, tokenizer, judge, self.eval_seeds, attacks=self.attacks[i],
                                               max_new_tokens=self.response_tokens)
                    payoff[i, j] = attacker_win_rate(played)
        self.payoff = payoff

    def _solve(self) -> None:
        from redgame.games.metagame import solve_metagame

        nash = solve_metagame(self.payoff, attackers=self.names(), defenders=self.names())
        self.mix = {"attacker": nash.attacker_mix, "defender": nash.defender_mix}
        self.value = nash.value
        self.nash = nash

    def names(self) -> list[str]:
        return [f"step{s}" for s in self.steps]

    def sample(self, role: str, rng: random.Random) -> int:
        """A member of ``role`` drawn from its meta-Nash mixture."""
        mix = np.clip(self.mix[role], 0.0, None)
        return rng.choices(range(len(mix)), weights=(mix / mix.sum()).tolist())[0]

    # -- saving with a checkpoint -------------------------------------------------------
    def summary(self) -> dict:
        """What ``<run>/population.json`` holds: members, the matrix, the meta-Nash."""
        return {"members": self.names(), "payoff_matrix": self.payoff.tolist(),
                "attacker_mix": self.mix["attacker"].tolist(), "defender_mix": self.mix["defender"].tolist(),
                "value": self.value, "nash_conv": self.nash.nash_conv if len(self) else float("nan")}

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """(tensors for safetensors, JSON state) to resume the population exactly."""
        tensors = {f"{role}/{k}/{n}": t for role in ROLES for k, w in enumerate(self.weights[role])
                   for n, t in w.items()}
        return tensors, {"steps": self.steps, "attacks": self.attacks, "payoff": self.payoff.tolist(),
                         "eval_seeds": [dataclasses.asdict(s) for s in self.eval_seeds]}

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict, where: str = "population state",
                   roles=None) -> list[str]:
        """Restore a saved population; returns what differs from this one's settings, said in words.

        Its members' attacks were written for the saved evaluation seeds, so those are kept whatever
        the resumed config says (``seed``, ``population_eval_seeds``, ``train_seeds``); a smaller
        ``population_size`` drops the oldest members now. A state that does not hang together (or,
        given ``roles``, whose members' weights are not the roles' adapters) is a UserError naming
        ``where``, raised before anything is restored.
        """
        from redgame.llm.seeds import Seed

        check_state(tensors, meta, where, roles)
        notes = []
        self.steps, self.attacks = list(meta["steps"]), [list(a) for a in meta["attacks"]]
        if "eval_seeds" in meta:
            saved = [Seed(**s) for s in meta["eval_seeds"]]
            if saved != self.eval_seeds:
                notes.append(f"the population keeps the {len(saved)} evaluation seeds its attacks were written "
                             f"for (this config's {len(self.eval_seeds)} differ)")
            self.eval_seeds = saved
        elif self.attacks and len(self.attacks[0]) != len(self.eval_seeds):  # a checkpoint from before 2026-12-05
            raise UserError(f"the checkpoint's population attacked {len(self.attacks[0])} evaluation seeds and this "
                            f"config names {len(self.eval_seeds)}: resume with --set population_eval_seeds="
                            f"{len(self.attacks[0])} (and the run's seed)")
        self.payoff = np.asarray(meta["payoff"], dtype=float).reshape(len(self.steps), len(self.steps))
        self.weights = {r: [{} for _ in self.steps] for r in ROLES}
        for key, t in tensors.items():
            role, k, name = key.split("/", 2)
            self.weights[role][int(k)][name] = t
        if len(self.steps) > self.size:
            notes.append(f"population_size {self.size}: the oldest {len(self.steps) - self.size} of its "
                         f"{len(self.steps)} members leave")
            self._drop_oldest(keep=self.size)
        if self.steps:
            self._solve()
        return notes


def check_state(tensors: dict, meta, where: str, roles=None) -> None:
    """A UserError naming ``where`` unless ``meta`` and ``tensors`` are a whole population's state: steps, one
    attack list per member, a members x members payoff matrix, and each member's weights for both roles (the
    names and shapes of ``roles``' adapters, when given)."""
    def damaged(what: str):
        return UserError(f"{where}: the population state is damaged ({what}); remove the checkpoint to resume from "
                         "the one before (where there is none, start the run again with --overwrite)")

    if not isinstance(meta, dict) or not {"steps", "attacks", "payoff"} <= meta.keys():
        raise damaged("it needs the keys steps, attacks and payoff")
    steps, attacks, payoff = meta["steps"], meta["attacks"], meta["payoff"]
    if not isinstance(steps, list) or not all(type(s) is int for s in steps):
        raise damaged("steps is not a list of integers")
    n = len(steps)
    if not isinstance(attacks, list) or len(attacks) != n or not all(
            isinstance(a, list) and all(isinstance(x, str) for x in a) for a in attacks):
        raise damaged(f"attacks is not {n} lists of strings, one per member")
    if not isinstance(payoff, list) or len(payoff) != n or not all(
            isinstance(row, list) and len(row) == n and all(type(x) in (int, float) and 0 <= x <= 1 for x in row)
            for row in payoff):  # win rates: every cell is played when a member joins
        raise damaged(f"payoff is not a {n} x {n} matrix of win rates in [0, 1]")
    if "eval_seeds" in meta:
        from redgame.llm.seeds import Seed

        try:
            seeds = [Seed(**s) for s in meta["eval_seeds"]]
        except TypeError:  # not a list, an item not an object, or fields that are not a seed's
            raise damaged("eval_seeds is not a list of seeds") from None
        if any(len(a) != len(seeds) for a in attacks):
            raise damaged(f"a member's attacks are not one per evaluation seed ({len(seeds)})")
    held = {(role, k): {} for role in ROLES for k in range(n)}
    for key, t in tensors.items():
        role, _, rest = key.partition("/")
        k, _, name = rest.partition("/")
        member = (role, int(k)) if k.isascii() and k.isdigit() else None
        if member not in held or not name:
            raise damaged(f"a tensor {key!r} of no member")
        held[member][name] = tuple(t.shape)
    for (role, k), names in held.items():
        want = None if roles is None else {m: tuple(p.shape) for m, p in roles.named_parameters(role)}
        if not names or (want is not None and names != want):
            raise damaged(f"member {k}'s {role} weights are {'missing' if not names else 'not the adapter'}")


def attacker_win_rate(played: dict) -> float:
    """The attacker's payoff: mean of its ASR on harmful seeds and its refusal rate on benign ones (of those the
    judge read); a UserError when the judge read none of the answers."""
    rates = [r for r in (played["attack_success"], 1.0 - played["benign_compliance"]) if not np.isnan(r)]
    if not rates:
        raise UserError(f"population: the judge could read none of the {played.get('unjudged', 'evaluated')} "
                        "answers of a cross-play cell: no payoff to play the meta-game on; check the judge "
                        "(its format, its server)")
    return float(np.mean(rates))


def check_eval_seeds(harmful: list, benign: list, n: int) -> None:
    """A one-line error where the training seeds cannot give ``n`` evaluation seeds, half harmful (a run took fewer
    without a word, while its config.json kept the number asked for)."""
    if n // 2 > len(harmful) or n - n // 2 > len(benign):
        raise UserError(f"config key 'population_eval_seeds' ({n}) asks for {n // 2} harmful and {n - n // 2} benign "
                        f"training seeds; the training seeds hold {len(harmful)} and {len(benign)}")


def eval_seeds(harmful: list, benign: list, n: int, seed: int) -> list:
    """``n`` fixed training seeds for the payoff matrix, half harmful (a function of ``seed``)."""
    rng = random.Random(f"{seed}:population")
    k = n // 2
    return rng.sample(harmful, min(k, len(harmful))) + rng.sample(benign, min(n - k, len(benign)))


def write_summary(population: Population, path) -> None:
    """``population.json``: the summary, written atomically."""
    from pathlib import Path

    from redgame.jsonio import strict_json, write_text_atomically

    write_text_atomically(Path(path), strict_json(population.summary()) + "\n")
