"""The shared, bipolicy and separate parameterisations with a small network instead of tables.

Each run first fits one network (``games.mlp``) to the initial logits of the tabular models
(the frozen draws of ``games.policies``): that is the base behaviour, an imperfect safety
prior that refuses each cell with its own random probability. So tabular and neural runs
start from the same policy pair and differ only in how an update of one role's logit moves
the other role's logits, i.e. in the function class. Then:

- ``shared``: the fitted network scores both roles; both roles' gradients train all of it;
- ``bipolicy``: the fitted network is frozen and each role trains its own LoRA adapter on
  W1, W1 + A B with B starting at 0 (Hu et al., arXiv 2106.09685): Anchored Bipolicy
  Self-Play (La Malfa et al., arXiv 2605.08427);
- ``separate``: two copies of the fitted network, one per role.

Nothing here ties the attacker's logit of a cell to the defender's logit of the same cell;
any coupling comes from the shared weights, and ``games.tangent`` measures it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from redgame.errors import UserError
from redgame.games import mlp
from redgame.games.mlp import ATTACKER, DEFENDER, Rows
from redgame.games.policies import FrozenDraws, Policies
from redgame.theory.spec import GameSpec


@dataclass(frozen=True)
class NetConfig:
    """The network's shape and its base-behaviour fit."""

    embed: int = 8
    """Width d of the seed, style and role embeddings."""
    hidden: int = 32
    """Hidden units H."""
    role_scale: float = 1.0
    """Standard deviation of the role embeddings at initialisation (how far apart the roles start)."""
    fit_steps: int = 1000
    """Adam steps of the fit to the base behaviour."""

    def __post_init__(self) -> None:
        for name in ("embed", "hidden", "fit_steps"):
            if getattr(self, name) < 1:
                raise UserError(f"{name}: must be >= 1, got {getattr(self, name)}")
        if not np.isfinite(self.role_scale) or self.role_scale < 0:
            raise UserError(f"role_scale: must be a finite number >= 0, got {self.role_scale}")


class Neural(Policies):
    """Common part: the attacker's rows (every cell), the defender's rows (the cell each
    observation reveals), the network fitted to the base behaviour (``self.base``), and the
    forward caches of the last ``logits()`` call, which ``backward`` differentiates: the
    gradient is taken at the parameters of the last ``logits()`` (as the learners call them)."""

    def __init__(self, spec: GameSpec, draws: FrozenDraws, coupling, net: NetConfig, kind: str) -> None:
        super().__init__(spec, draws, coupling)
        self._need_cells(f"neural {kind}")
        s, k = spec.n_seeds, spec.n_styles
        self.rows = {"a": mlp.cell_rows(s, k, np.arange(s * k), ATTACKER), "d": mlp.cell_rows(s, k, self.cells, DEFENDER)}
        self.base = mlp.init_params(draws.normal, s, k, net.embed, net.hidden, net.role_scale)
        z_a, z_d = self.initial_logits()
        target = np.concatenate([z_a.reshape(z_a.shape[0], -1), z_d], axis=1)
        self.fit_error = mlp.fit(self.base, self.rows["a"].join(self.rows["d"]), target, net.fit_steps)
        self._caches: dict[str, tuple] = {}

    def nets(self) -> dict[str, tuple[dict[str, np.ndarray], Rows]]:
        """{name: (network parameters, rows it scores)}; the attacker's rows come first."""
        raise NotImplementedError

    def logits(self) -> tuple[np.ndarray, np.ndarray]:
        scores = []
        for name, (params, rows) in self.nets().items():
            out, self._caches[name] = mlp.forward(params, rows)
            scores.append(out)
        flat = np.concatenate(scores, axis=1)
        n_a = self.spec.n_seeds * self.spec.n_styles
        return flat[:, :n_a].reshape(flat.shape[0], self.spec.n_seeds, self.spec.n_styles), flat[:, n_a:]

    def net_grads(self, grad_za: np.ndarray, grad_zd: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """{net name: gradients of its parameters} given the logit gradients."""
        flat = np.concatenate([grad_za.reshape(grad_za.shape[0], -1), grad_zd], axis=1)
        out, at = {}, 0
        for name, (params, rows) in self.nets().items():
            out[name] = mlp.backward(params, rows, self._caches[name], flat[:, at:at + len(rows)])
            at += len(rows)
        return out


class NeuralShared(Neural):
    """One network for both roles; both roles' gradients train every weight."""

    def __init__(self, spec: GameSpec, draws: FrozenDraws, coupling=1.0, net: NetConfig = NetConfig()) -> None:
        super().__init__(spec, draws, coupling, net, "shared")
        self.params = self.base
        self._both = self.rows["a"].join(self.rows["d"])

    def nets(self):
        return {"both": (self.params, self._both)}

    def backward(self, grad_za: np.ndarray, grad_zd: np.ndarray) -> dict[str, np.ndarray]:
        return self.net_grads(grad_za, grad_zd)["both"]


class NeuralBipolicy(Neural):
    """The fitted network frozen; per role a LoRA adapter W1 + A B on its first layer."""

    def __init__(self, spec: GameSpec, draws: FrozenDraws, coupling=1.0, net: NetConfig = NetConfig(),
                 rank: int = 2) -> None:
        super().__init__(spec, draws, coupling, net, "bipolicy")
        if rank < 1:
            raise UserError(f"rank: must be >= 1, got {rank}")
        runs = self.base["w1"].shape[0]
        self.params = {}
        for role in ("a", "d"):
            self.params[f"{role}.A"] = draws.normal((net.embed, rank)) / np.sqrt(net.embed)
            self.params[f"{role}.B"] = np.zeros((runs, rank, net.hidden))

    def nets(self):
        return {role: ({**self.base, "w1": self.base["w1"] + self.params[f"{role}.A"] @ self.params[f"{role}.B"]},
                       self.rows[role]) for role in ("a", "d")}

    def backward(self, grad_za: np.ndarray, grad_zd: np.ndarray) -> dict[str, np.ndarray]:
        out = {}
        for role, grads in self.net_grads(grad_za, grad_zd).items():
            grad_w1 = grads["w1"]  # [R, d, H]; W1 + A B gives dA = dW1 B^T and dB = A^T dW1
            out[f"{role}.A"] = grad_w1 @ np.swapaxes(self.params[f"{role}.B"], -1, -2)
            out[f"{role}.B"] = np.swapaxes(self.params[f"{role}.A"], -1, -2) @ grad_w1
        return out


class NeuralSeparate(Neural):
    """Two copies of the fitted network, one per role."""

    def __init__(self, spec: GameSpec, draws: FrozenDraws, coupling=1.0, net: NetConfig = NetConfig()) -> None:
        super().__init__(spec, draws, coupling, net, "separate")
        self.params = {f"{role}.{name}": value.copy() for role in ("a", "d") for name, value in self.base.items()}

    def nets(self):
        return {role: ({name: self.params[f"{role}.{name}"] for name in mlp.PARAMS}, self.rows[role])
                for role in ("a", "d")}

    def backward(self, grad_za: np.ndarray, grad_zd: np.ndarray) -> dict[str, np.ndarray]:
        return {f"{role}.{name}": g for role, grads in self.net_grads(grad_za, grad_zd).items()
                for name, g in grads.items()}


def make_neural_policies(kind: str, spec: GameSpec, draws: FrozenDraws, coupling=1.0, net: NetConfig = NetConfig(),
                         rank: int = 2) -> Neural:
    """Build the neural version of one of ``games.policies.PARAMETERISATIONS``."""
    if kind == "shared":
        return NeuralShared(spec, draws, coupling, net)
    if kind == "bipolicy":
        return NeuralBipolicy(spec, draws, coupling, net, rank)
    if kind == "separate":
        return NeuralSeparate(spec, draws, coupling, net)
    raise UserError(f"model: the neural model has shared, bipolicy and separate parameterisations, not {kind!r}")
