"""How one role's update moves the other role's logits: the tangent kernel of a parameterisation.

A gradient step on parameters theta moves every logit z_i by lr * sum_j K_ij g_j to first
order, with K = J J^T the tangent kernel (Jacot et al., arXiv 1806.07572) of the logits
z = (z_A [cells], z_D [observations]) and g the logit gradients. Its blocks say what the
function class couples:

- ``coupling``: K_DA[c, c] / K_AA[c, c], how far an attacker step on cell c moves the
  defender's refusal logit on the same prompt, per unit it moves the attacker's own logit.
  It is g for the tabular shared model, 0 for bipolicy and separate;
- ``cross_coupling``: the same ratio for the other cells c' != c (mean), the spill-over of
  an attacker step on one prompt onto the refusal of the others, which only a network has;
- ``generalisation``: K_DD[c', c] / K_DD[c, c] over c' != c (mean), how far a defender step on
  one prompt moves its refusal of the others (0 for a table);
- ``step_a`` / ``step_d``: lr * mean diag K_AA / K_DD, the effective step size on the
  logits: lr for a table (lr * g^2 for the shared table's defender). Two parameterisations
  compare fairly at matched effective steps.

``J`` comes from the model's own ``backward`` (its vector-Jacobian product) applied to each
unit logit gradient, so this works for every ``Policies``.
"""

from __future__ import annotations

import numpy as np

from redgame.games.policies import Policies, cell_of_observation


def logit_jacobian(model: Policies) -> np.ndarray:
    """J [R, N, P]: d logit_i / d params for the N = S*K attacker then O defender logits."""
    z_a, z_d = model.logits()
    runs, n_a, n_d = z_a.shape[0], z_a[0].size, z_d.shape[1]
    rows = []
    for i in range(n_a + n_d):
        unit = np.zeros((runs, n_a + n_d))
        unit[:, i] = 1.0
        grads = model.backward(unit[:, :n_a].reshape(z_a.shape), unit[:, n_a:])
        rows.append(np.concatenate([g.reshape(runs, -1) for g in grads.values()], axis=1))
    return np.stack(rows, axis=1)


def tangent_kernel(model: Policies) -> np.ndarray:
    """K [R, N, N] = J J^T over the attacker's then the defender's logits."""
    jac = logit_jacobian(model)
    return jac @ np.swapaxes(jac, -1, -2)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, and 0 where a logit does not move at all (den = 0: e.g. the defender at g = 0)."""
    num, den = np.broadcast_arrays(num, den)
    return np.divide(num, den, out=np.zeros(num.shape), where=den > 1e-300)


def coupling_report(model: Policies, lr=1.0) -> dict[str, np.ndarray]:
    """Per run [R]: coupling, cross_coupling, generalisation, step_a and step_d (see the module
    docstring); ``lr`` is one number or one per run."""
    spec = model.spec
    kernel = tangent_kernel(model)
    n_a = spec.n_seeds * spec.n_styles
    k_aa, k_da = kernel[:, :n_a, :n_a], kernel[:, n_a:, :n_a]
    k_dd = kernel[:, n_a:, n_a:]
    obs_of_cell = np.argsort(cell_of_observation(spec))  # the observation that shows each cell
    moved = _ratio(k_da[:, obs_of_cell, :], np.diagonal(k_aa, axis1=1, axis2=2)[:, None, :])  # [R, cell_D, cell_A]
    aligned = np.diagonal(moved, axis1=1, axis2=2)
    spread = _ratio(k_dd[:, obs_of_cell][:, :, obs_of_cell], np.diagonal(k_dd, axis1=1, axis2=2)[:, obs_of_cell][:, None, :])
    off = ~np.eye(n_a, dtype=bool)
    lr = np.reshape(np.asarray(lr, dtype=float), (-1,))
    return {
        "coupling": aligned.mean(axis=1),
        "cross_coupling": moved[:, off].mean(axis=1) if n_a > 1 else np.zeros(len(kernel)),
        "generalisation": spread[:, off].mean(axis=1) if n_a > 1 else np.zeros(len(kernel)),
        "step_a": lr * np.diagonal(k_aa, axis1=1, axis2=2).mean(axis=1),
        "step_d": lr * np.diagonal(k_dd, axis1=1, axis2=2).mean(axis=1),
    }
