"""Learning dynamics of the red-team game, vectorised over independent runs.

Regimes (``DynamicsConfig.regime``):

- ``shared`` / ``bipolicy`` / ``separate``: simultaneous policy-gradient ascent, each role on
  its own payoff, through the parameterisations of ``games.policies`` (``model="tabular"``) or
  ``games.neural`` (``model="neural"``: a small network). ``estimator="exact"``
  uses the expected gradients; ``"sampled"`` is REINFORCE (Williams 1992) on ``batch`` plays
  per run with a leave-one-out baseline.
- ``advgame``: AdvGame's preference learning (Paulus et al., arXiv 2512.20806) on separate
  tables. A judge ranks candidates by their utility (the attacker's is its expected payoff
  against the defender), the (best, worst) pair gets a Bradley-Terry label
  P(best > worst) = sigmoid((u_best - u_worst) / judge_temp), and the pair trains by DPO
  (Rafailov et al. 2023) with ``beta`` against a reference that is an EMA of the policy,
  ref <- ema * ref + (1 - ema) * theta each step (DPO-MD); prompts and candidates are drawn
  from the EMA policies. ``exact`` takes every action as a candidate and the expectation
  over prompts and labels; ``sampled`` draws ``batch`` prompts and ``candidates`` responses.
- ``sequential``: the classic adversarial-training baseline on full tables, fictitious play
  (``rule="fp"``, Brown 1951: both best-respond to the other's average, the averages are the
  policies) or alternating best response (``rule="abr"``: the attacker on even steps).

Every ``log_every`` steps the metrics of ``games.batch_metrics`` are recorded for every run.
``run_dynamics`` can also advance several settings of the knobs in BATCHED (g, lr,
init_scale) at once, each with the same frozen draws; ``games.phase`` sweeps grids this way.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Protocol

import numpy as np

from redgame.errors import UserError
from redgame.games.batch_metrics import CLASSES, NUMERIC, batch_metrics
from redgame.games.policies import (
    FrozenDraws,
    Policies,
    attacker_policy,
    check_two_actions,
    defender_policy,
    make_policies,
)
from redgame.theory.classify import refusal
from redgame.theory.spec import GameSpec
from redgame.theory.strategies import (
    action_values,
    attacker_action_values,
    defender_observation_values,
    observation_values,
    payoff_tensors,
)

REGIMES = ("shared", "bipolicy", "separate", "advgame", "sequential")
MODELS = ("tabular", "neural")
ESTIMATORS = ("exact", "sampled")
SEQUENTIAL_RULES = ("fp", "abr")
BATCHED = ("g", "lr", "init_scale")  # knobs that may differ between the runs of one batch

# The reference setting's game per regime (preset name, parameters): the mirror game with K=8
# styles of one harmful seed; AdvGame on a non-zero-sum game whose observation reveals intent.
REFERENCE_GAMES: dict[str, tuple[str, dict[str, Any]]] = {
    "shared": ("mirror", {"harmful": 1, "benign": 0, "k": 8}),
    "bipolicy": ("mirror", {"harmful": 1, "benign": 0, "k": 8}),
    "separate": ("mirror", {"harmful": 1, "benign": 0, "k": 8}),
    "sequential": ("mirror", {"harmful": 1, "benign": 0, "k": 8}),
    "advgame": ("hidden_intent", {"q": 1.0, "payoff": "nonzero_sum", "lam": 0.5}),
}

# The largest step size, temperature, initial scale or coupling accepted: past it the logits overflow.
MAX_KNOB = 1e6


@dataclass
class DynamicsConfig:
    """One learning run over ``runs`` independent seeds. Defaults are the reference setting."""

    regime: str = "shared"
    """shared | bipolicy | separate | advgame | sequential."""
    model: str = "tabular"
    """tabular (one logit per cell, ``games.policies``) or neural (a small network, ``games.neural``)."""
    steps: int = 4000
    """Number of learning steps T."""
    runs: int = 20
    """Independent runs (random seeds), vectorised."""
    seed: int = 0
    """Seed of the frozen random draws and of any sampling."""
    lr: float = 0.5
    """Step size eta."""
    g: float = 1.0
    """Coupling of the tabular shared model, any real: defender logits = g * (base + theta) + b_D.
    It also sets the initial pair of every model (defender logits g * base + b_D at the start)."""
    shift: int = 0
    """Tabular only: the defender's logit at a cell reads the table ``shift`` styles further on
    (cyclically); 0 is the cell-aligned coupling of La Malfa et al."""
    init_scale: float = 1.0
    """Standard deviation of the frozen draws base, b_A, b_D."""
    estimator: str = "exact"
    """exact (expected gradients) or sampled (REINFORCE / sampled preference pairs)."""
    batch: int = 64
    """Plays (or prompts) per run and step when estimator=sampled."""
    rank: int = 2
    """bipolicy: rank r of each role's delta U V^T (tabular) or LoRA adapter A B (neural)."""
    features: int = 8
    """bipolicy, tabular: width d of the frozen feature matrix Phi [S, d]."""
    embed: int = 8
    """neural: width of the seed, style and role embeddings."""
    hidden: int = 32
    """neural: hidden units of the network."""
    role_scale: float = 1.0
    """neural: standard deviation of the two role embeddings at initialisation."""
    fit_steps: int = 1000
    """neural: Adam steps that fit the network to the base behaviour (the tabular initial pair)."""
    beta: float = 0.1
    """advgame: DPO inverse temperature."""
    ema: float = 0.95
    """advgame: reference update ref <- ema * ref + (1 - ema) * theta."""
    judge_temp: float = 0.5
    """advgame: Bradley-Terry temperature of the judge."""
    candidates: int = 4
    """advgame with estimator=sampled: responses drawn per prompt."""
    rule: str = "fp"
    """sequential: fp (fictitious play) or abr (alternating best response)."""
    log_every: int = 10
    """Record the metrics every this many steps (and at the first and last step)."""

    def __post_init__(self) -> None:
        if self.regime not in REGIMES:
            raise UserError(f"regime: unknown regime {self.regime!r}; choose one of {', '.join(REGIMES)}")
        if self.estimator not in ESTIMATORS:
            raise UserError(f"estimator: must be one of {ESTIMATORS}, got {self.estimator!r}")
        if self.rule not in SEQUENTIAL_RULES:
            raise UserError(f"rule: must be one of {SEQUENTIAL_RULES}, got {self.rule!r}")
        if self.model not in MODELS:
            raise UserError(f"model: must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.model == "neural" and self.regime == "sequential":
            raise UserError("model: sequential plays exact best responses on tables; model=neural does not apply")
        if self.model == "neural" and self.shift:
            raise UserError("shift: applies to the tabular model (the network reads the cell it is shown)")
        for name in ("steps", "runs", "batch", "rank", "features", "log_every"):
            if getattr(self, name) < 1:
                raise UserError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.seed < 2 ** 32:
            raise UserError(f"seed: must be an integer in [0, 2^32), got {self.seed}")
        if self.candidates < 2:
            raise UserError(f"candidates: need at least 2 responses to form a pair, got {self.candidates}")
        for name in ("lr", "beta", "judge_temp", "init_scale"):
            value = getattr(self, name)
            if not np.isfinite(value) or not 0 < value <= MAX_KNOB:
                raise UserError(f"{name}: must be a number in (0, {MAX_KNOB:g}], got {value}")
        if not 0 <= self.ema < 1:
            raise UserError(f"ema: must lie in [0, 1), got {self.ema}")
        if not np.isfinite(self.g) or abs(self.g) > MAX_KNOB:
            raise UserError(f"g: the coupling must be a finite number of size at most {MAX_KNOB:g}, got {self.g}")
        self.net()  # checks the network fields

    def net(self):
        """The neural model's NetConfig."""
        from redgame.games.neural import NetConfig

        return NetConfig(self.embed, self.hidden, self.role_scale, self.fit_steps)

    @classmethod
    def from_params(cls, params: dict[str, Any], **fixed: Any) -> "DynamicsConfig":
        """Build from ``k=v`` strings (the CLI's ``--param``), typed like the defaults."""
        types = {f.name: type(f.default) for f in fields(cls)}
        values: dict[str, Any] = dict(fixed)
        for key, raw in params.items():
            if key not in types:
                raise UserError(f"{key}: unknown dynamics parameter; known: {', '.join(types)}")
            kind = types[key]
            try:
                values[key] = kind(raw) if kind is not int else int(str(raw))
            except ValueError:
                raise UserError(f"{key}: expected {kind.__name__}, got {raw!r}") from None
        return cls(**values)


def make_setting(regime: str, game: str | None = None, params: dict[str, Any] | None = None,
                 **fixed: Any) -> tuple[GameSpec, DynamicsConfig]:
    """(spec, config) from ``k=v`` parameters: a key that names a DynamicsConfig field sets it,
    any other key is a parameter of the game (``game``, a preset; default: the regime's
    reference game). ``fixed`` config fields (e.g. runs, steps) cannot be set in ``params``."""
    from redgame.theory.presets import PRESETS, make_spec, preset_params

    params = dict(params or {})
    config_keys = {f.name for f in fields(DynamicsConfig)} - {"regime"}
    config_params = {k: v for k, v in params.items() if k in config_keys}
    game_params = {k: v for k, v in params.items() if k not in config_keys}
    clash = sorted(set(fixed) & set(config_params))
    if clash:
        raise UserError(f"--param: {clash[0]} is set by its own option")
    config = DynamicsConfig.from_params(config_params, regime=regime, **fixed)
    if game is None:
        game, defaults = REFERENCE_GAMES[regime]
        game_params = {**defaults, **game_params}
    if game in PRESETS:
        unknown = sorted(set(game_params) - set(preset_params(game)))
        if unknown:
            raise UserError(f"{unknown[0]}: unknown parameter; dynamics parameters: {', '.join(sorted(config_keys))};"
                             f" {game} parameters: {', '.join(preset_params(game))}")
    return make_spec(game, **game_params), config


@dataclass
class Trajectory:
    """Recorded metrics: ``metrics[name]`` is [n_logged, runs]; ``classes[name]`` a list of
    n_logged lists of run labels; the final policies sigma [R, S, K] and rho [R, O, 2]."""

    config: DynamicsConfig
    spec: GameSpec
    steps: np.ndarray
    metrics: dict[str, np.ndarray]
    classes: dict[str, list[list[str]]]
    sigma: np.ndarray
    rho: np.ndarray
    seconds: float = 0.0
    initial_refusal: np.ndarray | None = field(default=None, repr=False)
    knobs: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    """Each BATCHED knob's value per run [R] (runs of one setting share the config's values)."""
    tangent: dict[str, dict[str, np.ndarray]] | None = field(default=None, repr=False)
    """``games.tangent.coupling_report`` per run at the "start" and the "end" (None for
    sequential, which has no parameters, and for specs whose observations are not cells)."""

    def final(self) -> dict[str, Any]:
        """Means over runs at the last step, plus the class counts."""
        out: dict[str, Any] = {name: float(np.mean(values[-1])) for name, values in self.metrics.items()}
        for name, labels in self.classes.items():
            out[name] = {c: labels[-1].count(c) for c in sorted(set(labels[-1]))}
        return out

    def records(self):
        """One dict per (logged step, run), for metrics.jsonl."""
        for i, step in enumerate(self.steps):
            for run in range(self.sigma.shape[0]):
                row: dict[str, Any] = {"step": int(step), "run": run}
                row.update({n: _json_float(v[i, run]) for n, v in self.metrics.items()})
                row.update({n: labels[i][run] for n, labels in self.classes.items()})
                yield row


def _json_float(x: float) -> float | None:
    return None if not np.isfinite(x) else float(x)


# -- sampling helpers ---------------------------------------------------------------------

class Uniforms(Protocol):
    """Where the sampled estimators' plays come from: a ``numpy.random.Generator``, or the run's
    ``FrozenDraws``, which give every batched setting the same plays (common random numbers)."""

    def random(self, shape: tuple[int, ...]) -> np.ndarray: ...


def _categorical(plays: Uniforms, probs: np.ndarray) -> np.ndarray:
    """One draw per leading index from probs [..., N] (inverse CDF)."""
    u = plays.random(probs.shape[:-1] + (1,))
    return np.minimum((np.cumsum(probs, axis=-1) < u).sum(axis=-1), probs.shape[-1] - 1)


def _sample_prompts(spec: GameSpec, sigma: np.ndarray, n: int, plays: Uniforms):
    """(run, seed, style, observation) index arrays [R, n] of prompts drawn from sigma."""
    runs = np.broadcast_to(np.arange(sigma.shape[0])[:, None], (sigma.shape[0], n))
    if spec.seed_choice == "attacker":
        joint = sigma.reshape(sigma.shape[0], 1, -1)
        flat = _categorical(plays, np.broadcast_to(joint, (sigma.shape[0], n, joint.shape[-1])))
        s, k = np.divmod(flat, spec.n_styles)
    else:
        s = _categorical(plays, np.broadcast_to(spec.seed_weights, (sigma.shape[0], n, spec.n_seeds)))
        k = _categorical(plays, sigma[runs, s])
    o = _categorical(plays, spec.obs_probs[s, k])
    return runs, s, k, o


def _leave_one_out(x: np.ndarray) -> np.ndarray:
    """x minus the mean of the other entries of its row (an unbiased REINFORCE baseline)."""
    n = x.shape[-1]
    return x - (x.sum(axis=-1, keepdims=True) - x) / max(n - 1, 1)


# -- policy gradient ----------------------------------------------------------------------

def exact_logit_gradients(spec: GameSpec, sigma: np.ndarray, rho: np.ndarray,
                          tensors: tuple[np.ndarray, np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """dU_A/dz_A [R, S, K] and dU_D/dz_D [R, O] of the softmax attacker and sigmoid defender.
    ``tensors``: the spec's ``payoff_tensors``, when the caller has them already."""
    t_a, t_d = payoff_tensors(spec) if tensors is None else tensors
    q = action_values(t_a, rho)
    axes = (-2, -1) if spec.seed_choice == "attacker" else (-1,)
    grad_a = sigma * (q - (sigma * q).sum(axis=axes, keepdims=True))
    v = observation_values(t_d, sigma)
    refuse = rho[..., 0]
    return grad_a, refuse * (1.0 - refuse) * (v[..., 0] - v[..., 1])


def reinforce_logit_gradients(spec: GameSpec, sigma: np.ndarray, rho: np.ndarray, batch: int,
                              plays: Uniforms) -> tuple[np.ndarray, np.ndarray]:
    """Score-function estimates of the same gradients from ``batch`` sampled plays per run."""
    runs, s, k, o = _sample_prompts(spec, sigma, batch, plays)
    a = _categorical(plays, rho[runs, o])
    u_a, u_d = spec.utilities()
    adv_a, adv_d = _leave_one_out(u_a[s, k, a]) / batch, _leave_one_out(u_d[s, k, a]) / batch
    grad_a = np.zeros_like(sigma)
    np.add.at(grad_a, (runs, s, k), adv_a)
    if spec.seed_choice == "attacker":
        grad_a -= sigma * adv_a.sum(axis=1)[:, None, None]
    else:
        per_seed = np.zeros(sigma.shape[:2])
        np.add.at(per_seed, (runs, s), adv_a)
        grad_a -= sigma * per_seed[..., None]
    grad_d = np.zeros(rho.shape[:2])
    np.add.at(grad_d, (runs, o), ((a == 0) - rho[runs, o, 0]) * adv_d)
    return grad_a, grad_d


# -- AdvGame preference learning (DPO-MD) ---------------------------------------------------

def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def attack_utilities(spec: GameSpec, rho: np.ndarray) -> np.ndarray:
    """[R, S, K]: the attacker's expected utility of each (seed, style) against rho, unweighted."""
    u_a, _ = spec.utilities()
    return np.einsum("sko,roa,ska->rsk", spec.obs_probs, rho, u_a)


def dpo_md_exact(spec: GameSpec, z: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray],
                 beta: float, temp: float) -> tuple[np.ndarray, np.ndarray]:
    """Ascent directions (-dL/dz) of the expected DPO losses of both roles.

    Attacker: per seed (weight w_s; one context when it picks the seed) the (best, worst) style
    by utility against the reference defender. Defender: per prompt (s, k) ~ w_s sigma_ref and
    observation o, the (refuse, comply) pair labelled by the judge with
    P(refuse > comply) = sigmoid((u_D(refuse) - u_D(comply)) / temp); ties are dropped.
    For a pair, m = beta * ((z_w - z_l) - (ref_w - ref_l)) and -dL/dm = label - sigmoid(m).
    """
    (z_a, z_d), (ref_a, ref_d) = z, ref
    sigma_ref, rho_ref = attacker_policy(spec, ref_a), defender_policy(ref_d)
    runs = z_a.shape[0]
    values = attack_utilities(spec, rho_ref)
    shape = z_a.shape
    if spec.seed_choice == "attacker":
        values, za, ra, weights = (x.reshape(runs, 1, -1) for x in (values, z_a, ref_a, np.ones(shape)))
        weights = weights[..., 0]
    else:
        za, ra, weights = z_a, ref_a, np.broadcast_to(spec.seed_weights, shape[:2])
    best, worst = values.argmax(axis=-1)[..., None], values.argmin(axis=-1)[..., None]
    gap = (np.take_along_axis(values, best, -1) - np.take_along_axis(values, worst, -1))[..., 0]
    margin = beta * ((np.take_along_axis(za, best, -1) - np.take_along_axis(za, worst, -1))
                     - (np.take_along_axis(ra, best, -1) - np.take_along_axis(ra, worst, -1)))[..., 0]
    coef = weights * (gap > 1e-12) * beta * (_sigmoid(gap / temp) - _sigmoid(margin))
    grad_a = np.zeros_like(za)
    np.put_along_axis(grad_a, best, coef[..., None], -1)
    np.put_along_axis(grad_a, worst, np.take_along_axis(grad_a, worst, -1) - coef[..., None], -1)
    grad_a = grad_a.reshape(shape)

    _, u_d = spec.utilities()
    diff = u_d[..., 0] - u_d[..., 1]  # [S, K]: refuse minus comply
    label = _sigmoid(diff / temp) * (np.abs(diff) > 1e-12)
    valid = (np.abs(diff) > 1e-12).astype(float)
    reach = spec.seed_weights[:, None] * sigma_ref  # [R, S, K]
    weight_o = np.einsum("rsk,sko,sk->ro", reach, spec.obs_probs, valid)
    label_o = np.einsum("rsk,sko,sk->ro", reach, spec.obs_probs, label)
    grad_d = beta * (label_o - weight_o * _sigmoid(beta * (z_d - ref_d)))
    return grad_a, grad_d


def _dpo_pairs(plays: Uniforms, utilities: np.ndarray, temp: float):
    """From candidate utilities [..., n]: (chosen, rejected) candidate indices and a validity mask.

    The judge ranks by utility; the (best, worst) pair is kept when their utilities differ and
    labelled best > worst with Bradley-Terry probability sigmoid(gap / temp)."""
    best, worst = utilities.argmax(axis=-1), utilities.argmin(axis=-1)
    gap = utilities.max(axis=-1) - utilities.min(axis=-1)
    keep = plays.random(gap.shape) < _sigmoid(gap / temp)
    return np.where(keep, best, worst), np.where(keep, worst, best), gap > 1e-12


def dpo_md_sampled(spec: GameSpec, z: tuple[np.ndarray, np.ndarray], ref: tuple[np.ndarray, np.ndarray],
                   beta: float, temp: float, batch: int, n_candidates: int,
                   plays: Uniforms) -> tuple[np.ndarray, np.ndarray]:
    """The same ascent directions from ``batch`` sampled contexts and ``n_candidates`` samples of the
    reference policies per context (AdvGame's best-of-n / worst-of-n pairs)."""
    (z_a, z_d), (ref_a, ref_d) = z, ref
    sigma_ref, rho_ref = attacker_policy(spec, ref_a), defender_policy(ref_d)
    runs = np.arange(z_a.shape[0])[:, None]
    n_cells = spec.n_seeds * spec.n_styles

    # Attacker: contexts are seeds (or the whole table when it picks the seed).
    values = attack_utilities(spec, rho_ref).reshape(z_a.shape[0], -1)
    if spec.seed_choice == "attacker":
        probs = np.broadcast_to(sigma_ref.reshape(z_a.shape[0], 1, 1, -1), (z_a.shape[0], batch, n_candidates, n_cells))
        cells = _categorical(plays, probs)
    else:
        seeds = _categorical(plays, np.broadcast_to(spec.seed_weights, (z_a.shape[0], batch, spec.n_seeds)))
        styles = _categorical(plays, np.broadcast_to(sigma_ref[runs, seeds][:, :, None, :],
                                                   (z_a.shape[0], batch, n_candidates, spec.n_styles)))
        cells = seeds[..., None] * spec.n_styles + styles
    chosen, rejected, valid = _dpo_pairs(plays, values[runs[..., None], cells], temp)
    c_cell = np.take_along_axis(cells, chosen[..., None], -1)[..., 0]
    r_cell = np.take_along_axis(cells, rejected[..., None], -1)[..., 0]
    flat_z, flat_ref = z_a.reshape(z_a.shape[0], -1), ref_a.reshape(z_a.shape[0], -1)
    margin = beta * ((flat_z[runs, c_cell] - flat_z[runs, r_cell]) - (flat_ref[runs, c_cell] - flat_ref[runs, r_cell]))
    coef = valid * beta * (1.0 - _sigmoid(margin)) / batch
    grad_a = np.zeros_like(flat_z)
    np.add.at(grad_a, (np.broadcast_to(runs, c_cell.shape), c_cell), coef)
    np.add.at(grad_a, (np.broadcast_to(runs, r_cell.shape), r_cell), -coef)

    # Defender: prompts from the reference attacker, responses from the reference defender.
    _, s, k, o = _sample_prompts(spec, sigma_ref, batch, plays)
    actions = _categorical(plays, np.broadcast_to(rho_ref[runs, o][:, :, None, :], o.shape + (n_candidates, 2)))
    _, u_d = spec.utilities()
    utilities = u_d[s[..., None], k[..., None], actions]
    chosen, _, valid = _dpo_pairs(plays, utilities, temp)  # with two actions, rejected is the other one
    c_act = np.take_along_axis(actions, chosen[..., None], -1)[..., 0]
    sign = np.where(c_act == 0, 1.0, -1.0)  # log rho(refuse) - log rho(comply) = z_D
    margin = beta * sign * (z_d[runs, o] - ref_d[runs, o])
    grad_d = np.zeros_like(z_d)
    np.add.at(grad_d, (np.broadcast_to(runs, o.shape), o), valid * sign * beta * (1.0 - _sigmoid(margin)) / batch)
    return grad_a.reshape(z_a.shape), grad_d


# -- sequential best responses ------------------------------------------------------------

def best_responses(spec: GameSpec, sigma: np.ndarray, rho: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Pure exact best responses of each run: attacker to rho, defender to sigma (first argmax)."""
    values = attacker_action_values(spec, rho)
    if spec.seed_choice == "attacker":
        flat = values.reshape(values.shape[0], -1)
        br_a = np.eye(flat.shape[1])[flat.argmax(axis=1)].reshape(values.shape)
    else:
        br_a = np.eye(spec.n_styles)[values.argmax(axis=-1)]
    br_d = np.eye(spec.n_actions)[defender_observation_values(spec, sigma).argmax(axis=-1)]
    return br_a, br_d


# -- the loop -----------------------------------------------------------------------------

def _knobs(config: DynamicsConfig, settings: list[dict[str, float]] | None) -> dict[str, np.ndarray]:
    """Each BATCHED knob per run: ``config.runs`` runs per setting, settings in order."""
    settings = settings or [{}]
    for setting in settings:
        unknown = sorted(set(setting) - set(BATCHED))
        if unknown:
            raise UserError(f"{unknown[0]}: only {', '.join(BATCHED)} can differ between the runs of one batch")
        for name, value in setting.items():  # the same checks as a config with that value
            DynamicsConfig(**{**{f.name: getattr(config, f.name) for f in fields(config)}, name: value})
    return {name: np.repeat([float(s.get(name, getattr(config, name))) for s in settings], config.runs)
            for name in BATCHED}


def build_model(spec: GameSpec, config: DynamicsConfig, draws: FrozenDraws, coupling) -> Policies:
    """The regime's parameterisation (advgame and sequential use separate ones) in config.model."""
    kind = {"advgame": "separate", "sequential": "separate"}.get(config.regime, config.regime)
    if config.model == "neural":
        from redgame.games.neural import make_neural_policies

        return make_neural_policies(kind, spec, draws, coupling, config.net(), config.rank)
    return make_policies(kind, spec, draws, coupling, config.rank, config.features, config.shift)


class _Learner:
    """Holds the state of one regime and advances it by one step."""

    def __init__(self, spec: GameSpec, config: DynamicsConfig, knobs: dict[str, np.ndarray]) -> None:
        self.spec, self.config, self.lr = spec, config, knobs["lr"]
        tiles = len(knobs["lr"]) // config.runs
        draws = FrozenDraws.draw(spec, config.runs, config.seed, knobs["init_scale"], tiles)
        self.plays = draws  # the same plays for every batched setting (common random numbers)
        self.tensors = payoff_tensors(spec)
        self.model: Policies = build_model(spec, config, draws, knobs["g"])
        if config.regime == "advgame":
            self.ref = tuple(z.copy() for z in self.model.logits())
        if config.regime == "sequential":
            self.sigma, self.rho = self.model.policies()

    def policies(self) -> tuple[np.ndarray, np.ndarray]:
        if self.config.regime == "sequential":
            return self.sigma, self.rho
        return self.model.policies()

    def tangent(self) -> dict[str, np.ndarray] | None:
        """How one role's step moves the other's logits now (``games.tangent``), per run."""
        from redgame.games.tangent import coupling_report

        if self.config.regime == "sequential" or self.model.cells is None:
            return None
        return coupling_report(self.model, self.lr)

    def step(self, t: int) -> None:
        c, spec = self.config, self.spec
        if c.regime == "sequential":
            br_a, br_d = best_responses(spec, self.sigma, self.rho)
            if c.rule == "fp":
                self.sigma = self.sigma + (br_a - self.sigma) / (t + 2)
                self.rho = self.rho + (br_d - self.rho) / (t + 2)
            elif t % 2 == 0:
                self.sigma = br_a
            else:
                self.rho = br_d
            return
        if c.regime == "advgame":
            z = self.model.logits()
            if c.estimator == "exact":
                grad_a, grad_d = dpo_md_exact(spec, z, self.ref, c.beta, c.judge_temp)
            else:
                grad_a, grad_d = dpo_md_sampled(spec, z, self.ref, c.beta, c.judge_temp, c.batch, c.candidates,
                                                self.plays)
            self.model.step(self.model.backward(grad_a, grad_d), self.lr)
            z = self.model.logits()
            self.ref = tuple(c.ema * r + (1.0 - c.ema) * zi for r, zi in zip(self.ref, z))
            return
        sigma, rho = self.model.policies()
        if c.estimator == "exact":
            grad_a, grad_d = exact_logit_gradients(spec, sigma, rho, self.tensors)
        else:
            grad_a, grad_d = reinforce_logit_gradients(spec, sigma, rho, c.batch, self.plays)
        self.model.step(self.model.backward(grad_a, grad_d), self.lr)


def run_dynamics(spec: GameSpec, config: DynamicsConfig, progress: bool = False,
                 settings: list[dict[str, float]] | None = None, log_steps=()) -> Trajectory:
    """Train ``config.runs`` independent runs for ``config.steps`` steps and record the metrics.

    Args:
      settings: values of the BATCHED knobs (g, lr, init_scale), one dict per setting; each
        setting gets ``config.runs`` runs with the same frozen draws as every other setting
        (run r = setting * runs + i), and unset knobs keep the config's value. Default: one
        setting, the config's.
      log_steps: more steps at which to record the metrics.

    Returns:
      A Trajectory; its metrics are logged at step 0 (the untrained pair), every
      ``log_every`` steps, at ``log_steps`` and at the final step.
    """
    import time

    from tqdm import tqdm

    check_two_actions(spec)
    bad = [t for t in log_steps if not 0 <= t <= config.steps]
    if bad:
        raise UserError(f"steps: cannot log step {bad[0]} of a {config.steps}-step run")
    start = time.perf_counter()
    knobs = _knobs(config, settings)
    learner = _Learner(spec, config, knobs)
    logged = sorted({0, config.steps, *range(0, config.steps + 1, config.log_every), *map(int, log_steps)})
    initial_refusal = refusal(spec, learner.policies()[1])
    tangent = {"start": learner.tangent()}
    # Keep the logged policies (small: [n_logged, R, ...]) and measure them in one batched call.
    history = [learner.policies()]
    bar = tqdm(range(config.steps), desc=config.regime, disable=not progress, leave=False, mininterval=0.5)
    for t in bar:
        learner.step(t)
        if logged[len(history)] == t + 1:
            history.append(learner.policies())
    tangent["end"] = learner.tangent()
    sigmas, rhos = (np.stack(x) for x in zip(*history))
    values = batch_metrics(spec, sigmas, rhos)
    metrics = {name: values[name] for name in NUMERIC}
    classes = {name: values[name] for name in CLASSES}
    sigma, rho = history[-1]
    return Trajectory(config, spec, np.array(logged), metrics, classes, sigma, rho,
                      time.perf_counter() - start, initial_refusal, knobs,
                      None if tangent["start"] is None else tangent)
