"""Parameterised attacker and defender policies over a game spec, batched over runs.

The attacker holds style logits z_A [R, S, K] (a softmax per seed, or one softmax over all
(seed, style) cells when it picks the seed); the defender holds one refusal logit per
observation z_D [R, O] (refuse with probability sigmoid(z_D)). R independent runs share
nothing but the spec. Three ways to produce the logits, after "The Attacker in the Mirror"
(La Malfa et al., arXiv 2605.08427):

- ``shared``: one trainable table theta over the (seed, style) cells feeds both roles,
  z_A = base + theta + b_A and z_D = g * (base + theta) + b_D (read at the cell an
  observation reveals, or ``shift`` styles further on). base, b_A, b_D are frozen random
  draws; g, any real number, is the coupling. Both roles' gradients land on the same theta
  coordinates.
- ``bipolicy``: the same frozen base plus one LoRA-like low-rank delta per role,
  delta = Phi @ U @ V^T with Phi [S, d] a frozen feature matrix of the seeds (the frozen
  model's activations), U [d, r] and V [K, r] trainable (V starts at 0, as LoRA's B does).
- ``separate``: two independent full tables added to the same initial logits.

``shared`` and ``bipolicy`` need a spec in which each observation reveals exactly one
(seed, style) cell (the ``mirror`` preset); ``separate`` takes any two-action spec.
``games.neural`` holds the same three parameterisations with a small network instead of tables.

Every run-level knob (g, the step size, the scale of the draws) may be one number or one per
run, so runs of several settings advance together (``games.phase``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from redgame.errors import UserError
from redgame.theory.spec import COMPLY, REFUSE, GameSpec

PARAMETERISATIONS = ("shared", "bipolicy", "separate")


def cell_of_observation(spec: GameSpec) -> np.ndarray | None:
    """[O] flat (seed * K + style) cell index each observation reveals, or None when the
    observations are not a one-to-one image of the cells."""
    probs = spec.obs_probs
    n_cells = spec.n_seeds * spec.n_styles
    if spec.n_observations != n_cells or not np.all((probs == 0) | (probs == 1)):
        return None
    obs_of_cell = probs.reshape(n_cells, -1).argmax(axis=1)
    if len(set(obs_of_cell.tolist())) != n_cells:
        return None
    cells = np.empty(n_cells, dtype=int)
    cells[obs_of_cell] = np.arange(n_cells)
    return cells


def shift_cells(spec: GameSpec, cells: np.ndarray, shift: int) -> np.ndarray:
    """The cells read ``shift`` styles further on (cyclically, same seed): [O] flat cell indices."""
    seed, style = np.divmod(cells, spec.n_styles)
    return seed * spec.n_styles + (style + shift) % spec.n_styles


def per_run(value, ndim: int) -> np.ndarray:
    """A number or a per-run array [R] shaped to broadcast against [R, ...] arrays of ``ndim`` dims."""
    return np.reshape(np.asarray(value, dtype=float), (-1,) + (1,) * (ndim - 1))


def check_two_actions(spec: GameSpec) -> None:
    if spec.actions != (REFUSE, COMPLY):
        raise UserError(f"actions: the dynamics need a (refuse, comply) defender, got {spec.actions}; drop deflect")


def attacker_policy(spec: GameSpec, z_a: np.ndarray) -> np.ndarray:
    """sigma [..., S, K] from logits: a softmax per seed, or over all cells when it picks seeds."""
    axes = (-2, -1) if spec.seed_choice == "attacker" else (-1,)
    z = z_a - z_a.max(axis=axes, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=axes, keepdims=True)


def defender_policy(z_d: np.ndarray) -> np.ndarray:
    """rho [..., O, 2] = [P(refuse), P(comply)] from refusal logits [..., O]."""
    refuse = 0.5 * (1.0 + np.tanh(0.5 * z_d))  # sigmoid, stable for large |z|
    return np.stack([refuse, 1.0 - refuse], axis=-1)


@dataclass
class FrozenDraws:
    """The frozen random parts of a run: base [R, S, K], b_A [R, S, K], b_D [R, O].

    ``runs`` independent seeds' draws are repeated ``tiles`` times (run r = tile * runs + i), so
    several settings can share the same random numbers; ``normal`` draws any further frozen
    parts (features, network weights) the same way.
    """

    base: np.ndarray
    b_a: np.ndarray
    b_d: np.ndarray
    rng: np.random.Generator
    runs: int = 1
    tiles: int = 1

    def normal(self, shape: tuple[int, ...]) -> np.ndarray:
        """Standard normal draws [tiles * runs, *shape], the same for every tile."""
        draw = self.rng.standard_normal((self.runs, *shape))
        return np.tile(draw, (self.tiles,) + (1,) * len(shape))

    def random(self, shape: tuple[int, ...]) -> np.ndarray:
        """Uniform draws of ``shape`` = [tiles * runs, ...], the same for every tile: the sampled
        estimators' plays, so that a setting's samples do not depend on the settings batched beside it
        (as ``numpy.random.Generator.random`` when there is one tile)."""
        if shape[0] != self.tiles * self.runs:
            raise ValueError(f"draws for {self.tiles} x {self.runs} runs, asked for {shape[0]}")
        draw = self.rng.random((self.runs, *shape[1:]))
        return np.tile(draw, (self.tiles,) + (1,) * (len(shape) - 1))

    @classmethod
    def draw(cls, spec: GameSpec, runs: int, seed: int, scale=1.0, tiles: int = 1) -> "FrozenDraws":
        """``scale``: the standard deviation, one number or one per run [tiles * runs]."""
        draws = cls(np.empty(0), np.empty(0), np.empty(0), np.random.default_rng(seed), runs, tiles)
        s, k, o = spec.n_seeds, spec.n_styles, spec.n_observations
        draws.base = per_run(scale, 3) * draws.normal((s, k))
        draws.b_a = per_run(scale, 3) * draws.normal((s, k))
        draws.b_d = per_run(scale, 2) * draws.normal((o,))
        return draws


class Policies:
    """Maps trainable parameters to (z_A, z_D) and logit gradients back to parameter gradients.

    Subclasses set ``params`` (a dict of [R, ...] arrays) and implement ``logits`` and
    ``backward``; ``policies`` returns the behaviour strategies (sigma, rho).
    """

    params: dict[str, np.ndarray]

    def __init__(self, spec: GameSpec, draws: FrozenDraws, coupling=1.0, shift: int = 0) -> None:
        check_two_actions(spec)
        self.spec, self.draws = spec, draws
        self.g = np.asarray(coupling, dtype=float).reshape(-1)  # one number, or one per run
        cells = cell_of_observation(spec)
        if shift and cells is None:
            raise UserError(f"shift: needs a spec whose observation reveals one (seed, style) cell; {spec.name} does not")
        self.cells = cells if cells is None or not shift else shift_cells(spec, cells, shift)

    def _role_map(self, table: np.ndarray) -> np.ndarray:
        """A cell table [R, S, K] read at the cell each observation reveals: [R, O]."""
        return table.reshape(table.shape[0], -1)[:, self.cells]

    def _role_unmap(self, grad_obs: np.ndarray) -> np.ndarray:
        """Adjoint of _role_map: [R, O] -> [R, S, K]."""
        out = np.zeros((grad_obs.shape[0], self.spec.n_seeds * self.spec.n_styles))
        out[:, self.cells] = grad_obs
        return out.reshape(grad_obs.shape[0], self.spec.n_seeds, self.spec.n_styles)

    def _need_cells(self, name: str) -> None:
        if self.cells is None:
            raise UserError(
                f"regime: {name} needs a spec whose observation reveals one (seed, style) cell, such as the"
                f" 'mirror' preset; {self.spec.name} does not"
            )

    def initial_logits(self) -> tuple[np.ndarray, np.ndarray]:
        """The untrained pair, the same for every parameterisation: base + b_A and g*base + b_D."""
        d = self.draws
        z_d = d.b_d + (per_run(self.g, 2) * self._role_map(d.base) if self.cells is not None else 0.0)
        return d.base + d.b_a, z_d

    def logits(self) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def backward(self, grad_za: np.ndarray, grad_zd: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def policies(self) -> tuple[np.ndarray, np.ndarray]:
        z_a, z_d = self.logits()
        return attacker_policy(self.spec, z_a), defender_policy(z_d)

    def step(self, grads: dict[str, np.ndarray], lr) -> None:
        """Gradient ascent: params += lr * grads; ``lr`` is a number or one per run [R]."""
        for name, grad in grads.items():
            self.params[name] += per_run(lr, grad.ndim) * grad


class Shared(Policies):
    """z_A = base + theta + b_A, z_D = g * (base + theta) + b_D, one theta [R, S, K]."""

    def __init__(self, spec: GameSpec, draws: FrozenDraws, coupling=1.0, shift: int = 0) -> None:
        super().__init__(spec, draws, coupling, shift)
        self._need_cells("shared")
        self.params = {"theta": np.zeros_like(draws.base)}

    def logits(self) -> tuple[np.ndarray, np.ndarray]:
        d, theta = self.draws, self.params["theta"]
        return d.base + theta + d.b_a, per_run(self.g, 2) * self._role_map(d.base + theta) + d.b_d

    def backward(self, grad_za: np.ndarray, grad_zd: np.ndarray) -> dict[str, np.ndarray]:
        return {"theta": grad_za + per_run(self.g, 3) * self._role_unmap(grad_zd)}


class Bipolicy(Policies):
    """Frozen shared base; per role a low-rank delta Phi @ U @ V^T on frozen seed features Phi."""

    def __init__(self, spec: GameSpec, draws: FrozenDraws, coupling=1.0, rank: int = 2,
                 features: int = 8, shift: int = 0) -> None:
        super().__init__(spec, draws, coupling, shift)
        self._need_cells("bipolicy")
        if rank < 1 or features < 1:
            raise UserError(f"rank: rank and features must be >= 1, got rank={rank}, features={features}")
        runs = draws.base.shape[0]
        s, k = spec.n_seeds, spec.n_styles
        self.phi = draws.normal((s, features)) / np.sqrt(features)
        self.params = {
            "u_a": draws.normal((features, rank)),
            "v_a": np.zeros((runs, k, rank)),
            "u_d": draws.normal((features, rank)),
            "v_d": np.zeros((runs, k, rank)),
        }

    def _delta(self, role: str) -> np.ndarray:
        p = self.params
        return self.phi @ p[f"u_{role}"] @ np.swapaxes(p[f"v_{role}"], -1, -2)

    def logits(self) -> tuple[np.ndarray, np.ndarray]:
        d = self.draws
        z_d = self._role_map(per_run(self.g, 3) * d.base + self._delta("d")) + d.b_d
        return d.base + d.b_a + self._delta("a"), z_d

    def backward(self, grad_za: np.ndarray, grad_zd: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for role, grad in (("a", grad_za), ("d", self._role_unmap(grad_zd))):
            u, v = self.params[f"u_{role}"], self.params[f"v_{role}"]
            phi_t_grad = np.swapaxes(self.phi, -1, -2) @ grad  # [R, d, K]
            out[f"u_{role}"] = phi_t_grad @ v
            out[f"v_{role}"] = np.swapaxes(phi_t_grad, -1, -2) @ u
        return out


class Separate(Policies):
    """Two independent full tables: z_A = z_A0 + theta_A, z_D = z_D0 + theta_D."""

    def __init__(self, spec: GameSpec, draws: FrozenDraws, coupling=1.0, shift: int = 0) -> None:
        super().__init__(spec, draws, coupling, shift)
        self.z0 = self.initial_logits()
        self.params = {"theta_a": np.zeros_like(self.z0[0]), "theta_d": np.zeros_like(self.z0[1])}

    def logits(self) -> tuple[np.ndarray, np.ndarray]:
        return self.z0[0] + self.params["theta_a"], self.z0[1] + self.params["theta_d"]

    def backward(self, grad_za: np.ndarray, grad_zd: np.ndarray) -> dict[str, np.ndarray]:
        return {"theta_a": grad_za, "theta_d": grad_zd}


def make_policies(kind: str, spec: GameSpec, draws: FrozenDraws, coupling=1.0, rank: int = 2,
                  features: int = 8, shift: int = 0) -> Policies:
    """Build one of PARAMETERISATIONS; ``coupling`` is one number or one per run."""
    if kind == "shared":
        return Shared(spec, draws, coupling, shift)
    if kind == "bipolicy":
        return Bipolicy(spec, draws, coupling, rank, features, shift)
    if kind == "separate":
        return Separate(spec, draws, coupling, shift)
    raise UserError(f"policy: unknown parameterisation {kind!r}; choose one of {', '.join(PARAMETERISATIONS)}")
