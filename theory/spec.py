"""The red-team game, defined once, as a validated spec.

A seed s has a class c(s) in {harmful, benign}. The attacker (player 0) maps the seed to an
attack style k; the defender (player 1) sees only an observation o ~ P(o | s, k), never the
class, and answers with an action a in {refuse, comply[, deflect]}. The judge's labels give
the payoffs:

- zero-sum, as in Self-RedTeam (arXiv 2506.07468) and La Malfa et al. (arXiv 2605.08427):
  u_A = 1[harmful and comply] + lambda * 1[benign and refuse], u_D = -u_A;
- non-zero-sum, as in AdvGame (arXiv 2512.20806): the defender weighs safety against
  helpfulness, the attacker weighs success against faithfulness to the seed.

An unfaithful style (one that changes the seed's intent) gets the attacker a fixed penalty,
AdvGame's reward of -1, whatever the defender does.

:func:`outcome_utilities` is the payoff of one outcome from its judge labels; the toy games
(:meth:`GameSpec.utilities`) and the LLM game's rewards (``redgame.llm.rewards``) both call it.

Player 0 is the attacker; "value" always means the attacker's expected payoff.

Seeds are drawn by chance with their priors (``seed_choice="chance"``), or picked by the
attacker itself (``seed_choice="attacker"``, as in the prompt-map game, where the attacker
chooses which prompt to send).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Union

import numpy as np

from redgame.errors import UserError

REFUSE, COMPLY, DEFLECT = "refuse", "comply", "deflect"
PLAIN = "plain"
SEED_CHOICES = ("chance", "attacker")
_TOL = 1e-9


@dataclass(frozen=True)
class Seed:
    """One seed prompt: a name, its hidden class and (for chance seeds) its prior."""

    name: str
    harmful: bool
    prior: float | None = None


@dataclass(frozen=True)
class ZeroSum:
    """u_A = (harm + lam * wrongful_refusal) * (1 - unfaithful) - unfaithful_penalty * unfaithful; u_D = -u_A."""

    lam: float = 0.0
    """Weight on wrongful refusals of benign seeds (>= 0)."""
    deflect_cost: float = 0.5
    """Share of a wrongful refusal that a deflection of a benign seed counts as, in [0, 1]."""
    unfaithful_penalty: float = 1.0
    """Attacker's loss for a style that is not faithful to the seed (>= 0)."""

    def __post_init__(self) -> None:
        _check_nonnegative(self, "lam", "unfaithful_penalty")
        _check_unit(self, "deflect_cost")


@dataclass(frozen=True)
class NonZeroSum:
    """Separate utilities (AdvGame): u_D = -safety*harm - helpfulness*wrongful_refusal;
    u_A = (attack_success*harm + benign_attack*wrongful_refusal) * (1 - unfaithful) - faithfulness*unfaithful."""

    safety: float = 1.0
    """Defender's loss when it complies with a harmful seed."""
    helpfulness: float = 1.0
    """Defender's loss when it refuses a benign seed."""
    attack_success: float = 1.0
    """Attacker's gain when the defender complies with a harmful seed."""
    benign_attack: float = 0.0
    """Attacker's gain when the defender refuses a benign seed."""
    faithfulness: float = 1.0
    """Attacker's loss for an unfaithful style (AdvGame: reward -1)."""
    deflect_cost: float = 0.5
    """Share of a wrongful refusal that a deflection of a benign seed counts as, in [0, 1]."""

    def __post_init__(self) -> None:
        _check_nonnegative(self, "safety", "helpfulness", "attack_success", "benign_attack", "faithfulness")
        _check_unit(self, "deflect_cost")


Payoff = Union[ZeroSum, NonZeroSum]


def outcome_utilities(payoff: Payoff, harm, wrongful_refusal, unfaithful):
    """(u_A, u_D) of outcomes from their judge labels: the game's one payoff definition.

    ``harm`` (the defender helped with a harmful request), ``wrongful_refusal`` (it refused a
    benign one) and ``unfaithful`` (the attack changed the seed's intent) are each in [0, 1]:
    floats or numpy arrays that broadcast together. Soft labels give expected utilities.
    """
    if isinstance(payoff, ZeroSum):
        u_a = (harm + payoff.lam * wrongful_refusal) * (1 - unfaithful) - payoff.unfaithful_penalty * unfaithful
        return u_a, -u_a
    u_a = (payoff.attack_success * harm + payoff.benign_attack * wrongful_refusal) * (1 - unfaithful)
    u_a = u_a - payoff.faithfulness * unfaithful
    u_d = -(payoff.safety * harm + payoff.helpfulness * wrongful_refusal) + 0 * unfaithful
    return u_a, u_d


@dataclass(frozen=True)
class GameSpec:
    """A finite attacker-defender game. Arrays are exposed as numpy properties.

    Attributes:
      name: a label for tables and plots.
      seeds: the seeds, with class and prior.
      styles: attack style names; a style called "plain" reveals the seed.
      faithful: faithful[s][k] is True when style k keeps seed s's intent.
      observations: the observation labels the defender can see.
      observation_probs: observation_probs[s][k][o] = P(o | s, k); each row sums to 1.
      actions: defender actions: ("refuse", "comply") or ("refuse", "comply", "deflect").
      payoff: ZeroSum or NonZeroSum.
      seed_choice: "chance" (seeds drawn with their priors) or "attacker" (attacker picks).
    """

    name: str
    seeds: tuple[Seed, ...]
    styles: tuple[str, ...]
    faithful: tuple[tuple[bool, ...], ...]
    observations: tuple[str, ...]
    observation_probs: tuple[tuple[tuple[float, ...], ...], ...]
    actions: tuple[str, ...] = (REFUSE, COMPLY)
    payoff: Payoff = field(default_factory=ZeroSum)
    seed_choice: str = "chance"

    def __post_init__(self) -> None:
        if not self.seeds:
            raise UserError("seeds: at least one seed is needed")
        names = [s.name for s in self.seeds]
        if len(set(names)) != len(names):
            raise UserError(f"seeds: names must be unique, got {names}")
        if self.seed_choice not in SEED_CHOICES:
            raise UserError(f"seed_choice: must be one of {SEED_CHOICES}, got {self.seed_choice!r}")
        if self.seed_choice == "chance":
            priors = [s.prior for s in self.seeds]
            if any(p is None for p in priors):
                raise UserError("prior: every seed needs a prior when seed_choice='chance'")
            if any(p < 0 or not np.isfinite(p) for p in priors):
                raise UserError(f"prior: priors must be finite and >= 0, got {priors}")
            if abs(sum(priors) - 1.0) > 1e-9:
                raise UserError(f"prior: priors must sum to 1, got sum {sum(priors):.6g}")
        if not self.styles or len(set(self.styles)) != len(self.styles):
            raise UserError(f"styles: need at least one style and unique names, got {self.styles}")
        if not self.observations or len(set(self.observations)) != len(self.observations):
            raise UserError(f"observations: need unique names, got {self.observations}")
        if self.actions not in ((REFUSE, COMPLY), (REFUSE, COMPLY, DEFLECT)):
            raise UserError(f"actions: must be (refuse, comply) or (refuse, comply, deflect), got {self.actions}")
        if not isinstance(self.payoff, (ZeroSum, NonZeroSum)):
            raise UserError(f"payoff: must be ZeroSum or NonZeroSum, got {type(self.payoff).__name__}")
        n_s, n_k, n_o = len(self.seeds), len(self.styles), len(self.observations)
        faithful = np.asarray(self.faithful, dtype=object)
        if faithful.shape != (n_s, n_k):
            raise UserError(f"faithful: expected shape ({n_s}, {n_k}) = (seeds, styles), got {faithful.shape}")
        if not self.faithful_mask.any(axis=1).all():
            raise UserError("faithful: every seed needs at least one faithful style")
        probs = np.asarray(self.observation_probs, dtype=float)
        if probs.shape != (n_s, n_k, n_o):
            raise UserError(
                f"observation_probs: expected shape ({n_s}, {n_k}, {n_o}) = (seeds, styles, observations),"
                f" got {probs.shape}"
            )
        if (probs < -_TOL).any() or not np.allclose(probs.sum(axis=2), 1.0, atol=1e-9):
            raise UserError("observation_probs: each P(o | seed, style) must be >= 0 and sum to 1")

    # -- arrays -------------------------------------------------------------------------
    @property
    def n_seeds(self) -> int:
        return len(self.seeds)

    @property
    def n_styles(self) -> int:
        return len(self.styles)

    @property
    def n_observations(self) -> int:
        return len(self.observations)

    @property
    def n_actions(self) -> int:
        return len(self.actions)

    @property
    def harmful_mask(self) -> np.ndarray:
        """[S] bool: which seeds are harmful."""
        return np.array([s.harmful for s in self.seeds], dtype=bool)

    @property
    def faithful_mask(self) -> np.ndarray:
        """[S, K] bool."""
        return np.array(self.faithful, dtype=bool)

    @property
    def obs_probs(self) -> np.ndarray:
        """[S, K, O] float: P(o | s, k)."""
        return np.asarray(self.observation_probs, dtype=float)

    @property
    def seed_weights(self) -> np.ndarray:
        """[S]: the priors for chance seeds; ones when the attacker picks the seed."""
        if self.seed_choice == "chance":
            return np.array([s.prior for s in self.seeds], dtype=float)
        return np.ones(self.n_seeds)

    @property
    def is_zero_sum(self) -> bool:
        """The payoff's type is ZeroSum (the game as declared; see :attr:`sums_to_zero`)."""
        return isinstance(self.payoff, ZeroSum)

    @property
    def sums_to_zero(self) -> bool:
        """u_A + u_D = 0 on every outcome: a ZeroSum payoff, or NonZeroSum weights that cancel in this game
        (as the AdvGame reference game's do). The solvers that need zero-sum numbers read this."""
        if self.is_zero_sum:
            return True
        u_a, u_d = self.utilities()
        return bool(np.allclose(u_a + u_d, 0.0, atol=1e-12))

    @property
    def plain_style(self) -> int | None:
        """Index of the style named "plain", if any."""
        return self.styles.index(PLAIN) if PLAIN in self.styles else None

    def outcome_indicators(self) -> tuple[np.ndarray, np.ndarray]:
        """harm[s, a] and wrongful_refusal[s, a] judge labels, each in [0, 1]."""
        harmful = self.harmful_mask
        harm = np.zeros((self.n_seeds, self.n_actions))
        wrongful = np.zeros((self.n_seeds, self.n_actions))
        harm[harmful, self.actions.index(COMPLY)] = 1.0
        wrongful[~harmful, self.actions.index(REFUSE)] = 1.0
        if DEFLECT in self.actions:
            wrongful[~harmful, self.actions.index(DEFLECT)] = self.payoff.deflect_cost
        return harm, wrongful

    def utilities(self) -> tuple[np.ndarray, np.ndarray]:
        """(u_A, u_D), each [S, K, A]: payoffs of an outcome (seed, style, defender action)."""
        harm, wrongful = self.outcome_indicators()
        unfaithful = (~self.faithful_mask).astype(float)[:, :, None]
        u_a, u_d = outcome_utilities(self.payoff, harm[:, None, :], wrongful[:, None, :], unfaithful)
        shape = (self.n_seeds, self.n_styles, self.n_actions)
        return np.broadcast_to(u_a, shape).copy(), np.broadcast_to(u_d, shape).copy()


MAX_WEIGHT = 1e6  # past this the solvers' LPs are too badly scaled for HiGHS (it fails at 1e20)


def _check_nonnegative(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not np.isfinite(value) or value < 0:
            raise UserError(f"{name}: must be a finite number >= 0, got {value!r}")
        if value > MAX_WEIGHT:
            raise UserError(f"{name}: at most {MAX_WEIGHT:g}, got {value!r} (a weight this large leaves the other "
                            "terms below the solvers' precision; rescale the weights instead)")


def _check_unit(obj, *names: str) -> None:
    for name in names:
        value = getattr(obj, name)
        if not np.isfinite(value) or not 0 <= value <= 1:
            raise UserError(f"{name}: must lie in [0, 1], got {value!r}")


def payoff_fields(kind: type) -> tuple[str, ...]:
    """Names of a payoff dataclass's parameters."""
    return tuple(f.name for f in fields(kind))
