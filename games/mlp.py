"""A small role-conditioned network in numpy, batched over runs, with hand-written backprop.

One network scores a (seed, style, role) triple, the toy analogue of one language model that
plays either role depending on its prompt (Self-RedTeam, arXiv 2506.07468):

    x = E_seed[s] + E_style[k] + E_role[role]          (summed embeddings, as token + position)
    f(s, k, role) = w2 . tanh(x W1 + b1) + b2

With role = attacker, f is the logit of style k for seed s; with role = defender, f is the
refusal logit of the observation that reveals (s, k). Every parameter has a leading run axis
[R, ...], so R independent networks train together. ``backward`` is the exact gradient (the
tests check it against finite differences); ``fit`` regresses the outputs on target logits
with Adam (Kingma & Ba, arXiv 1412.6980), to give every network the same base behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

ATTACKER, DEFENDER = 0, 1
PARAMS = ("e_seed", "e_style", "e_role", "w1", "b1", "w2", "b2")


@dataclass(frozen=True)
class Rows:
    """The N inputs a network scores: seed, style and role indices [N], and their one-hot
    matrices [N, n] (the adjoints of the embedding lookups)."""

    seed: np.ndarray
    style: np.ndarray
    role: np.ndarray
    n_seeds: int
    n_styles: int

    def __post_init__(self) -> None:
        for name, size in (("seed", self.n_seeds), ("style", self.n_styles), ("role", 2)):
            object.__setattr__(self, f"{name}_onehot", np.eye(size)[getattr(self, name)])

    def __len__(self) -> int:
        return len(self.seed)

    def join(self, other: "Rows") -> "Rows":
        """These rows, then ``other``'s."""
        return Rows(*(np.concatenate([getattr(self, f), getattr(other, f)]) for f in ("seed", "style", "role")),
                    self.n_seeds, self.n_styles)


def cell_rows(n_seeds: int, n_styles: int, cells: np.ndarray, role: int) -> Rows:
    """Rows for flat (seed * K + style) cell indices [N], all with one role."""
    seed, style = np.divmod(np.asarray(cells), n_styles)
    return Rows(seed, style, np.full(len(seed), role), n_seeds, n_styles)


def init_params(normal: Callable[[tuple[int, ...]], np.ndarray], n_seeds: int, n_styles: int, embed: int,
                hidden: int, role_scale: float = 1.0) -> dict[str, np.ndarray]:
    """Random parameters [R, ...]; ``normal(shape)`` returns standard normal draws [R, *shape]."""
    params = {
        "e_seed": normal((n_seeds, embed)),
        "e_style": normal((n_styles, embed)),
        "e_role": role_scale * normal((2, embed)),
        "w1": normal((embed, hidden)) / np.sqrt(embed),
        "w2": normal((hidden,)) / np.sqrt(hidden),
    }
    runs = params["w1"].shape[0]
    params["b1"] = np.zeros((runs, hidden))
    params["b2"] = np.zeros(runs)
    return params


def forward(p: dict[str, np.ndarray], rows: Rows) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray]]:
    """Scores [R, N] of the rows, and the cache (x, h) that ``backward`` needs."""
    x = p["e_seed"][:, rows.seed] + p["e_style"][:, rows.style] + p["e_role"][:, rows.role]  # [R, N, d]
    h = x @ p["w1"]  # [R, N, H]; in place from here: these are the largest arrays
    h += p["b1"][:, None, :]
    np.tanh(h, out=h)
    return np.einsum("rnh,rh->rn", h, p["w2"]) + p["b2"][:, None], (x, h)


def backward(p: dict[str, np.ndarray], rows: Rows, cache: tuple[np.ndarray, np.ndarray],
             grad: np.ndarray) -> dict[str, np.ndarray]:
    """Gradients of sum(grad * scores) with respect to every parameter, given grad [R, N]."""
    x, h = cache
    grad_pre = h * h  # [R, N, H]: grad * w2 * (1 - h^2), in place
    np.subtract(1.0, grad_pre, out=grad_pre)
    grad_pre *= grad[..., None]
    grad_pre *= p["w2"][:, None, :]
    grad_x = grad_pre @ np.swapaxes(p["w1"], -1, -2)  # [R, N, d]
    return {
        "e_seed": rows.seed_onehot.T @ grad_x,
        "e_style": rows.style_onehot.T @ grad_x,
        "e_role": rows.role_onehot.T @ grad_x,
        "w1": np.swapaxes(x, -1, -2) @ grad_pre,
        "b1": grad_pre.sum(axis=1),
        "w2": (grad[:, None, :] @ h)[:, 0, :],
        "b2": grad.sum(axis=1),
    }


def fit(p: dict[str, np.ndarray], rows: Rows, target: np.ndarray, steps: int, lr: float = 0.02) -> np.ndarray:
    """Fit the scores of ``rows`` to ``target`` [R, N] in place: Adam on the mean squared error.
    Returns the final root-mean-square error per run [R]."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(x) for k, x in p.items()}
    for t in range(1, steps + 1):
        out, cache = forward(p, rows)
        grads = backward(p, rows, cache, 2.0 * (out - target) / target.shape[1])
        for k, g in grads.items():
            m[k] = beta1 * m[k] + (1 - beta1) * g
            v[k] = beta2 * v[k] + (1 - beta2) * g * g
            p[k] -= lr * (m[k] / (1 - beta1**t)) / (np.sqrt(v[k] / (1 - beta2**t)) + eps)
    return np.sqrt(((forward(p, rows)[0] - target) ** 2).mean(axis=1))
