"""The per-step metrics of the dynamics, for a batch of runs at once.

The same quantities as ``theory.classify.policy_metrics`` plus NashConv
(``games.exploitability.nash_conv``; Lanctot et al. 2017), computed for sigma [R, S, K] and
rho [R, O, A] in one pass so that thousands of steps stay cheap. The tests check every field
against those per-policy functions.
"""

from __future__ import annotations

import numpy as np

from redgame.theory.classify import TOL, refusal
from redgame.theory.spec import COMPLY, GameSpec
from redgame.theory.strategies import attacker_action_values, defender_observation_values, expected_payoffs

NUMERIC = ("selfplay_asr", "best_response_asr", "mirror_gap", "nash_conv", "over_refusal", "harmful_refusal")
CLASSES = ("defender_class", "attacker_class")


def best_attack_value(spec: GameSpec, values: np.ndarray) -> np.ndarray:
    """[...]: what an exact best-responding attacker earns, given its action values [..., S, K]."""
    if spec.seed_choice == "attacker":
        return values.reshape(*values.shape[:-2], -1).max(axis=-1)
    return values.max(axis=-1).sum(axis=-1)


def batch_metrics(spec: GameSpec, sigma: np.ndarray, rho: np.ndarray, classes: bool = True) -> dict[str, np.ndarray]:
    """Metrics of a batch of (attacker, defender) pairs, sigma [..., S, K] and rho [..., O, A]:
    each NUMERIC field is an array of the batch shape; each CLASSES field (when ``classes``) is
    nested lists of labels of that shape.

    nash_conv = [BR_A(rho) - u_A] + [BR_D(sigma) - u_D]; mirror_gap = BR_A(rho) - u_A.
    over_refusal / harmful_refusal: mean refusal over the faithful cells of benign / harmful
    seeds (NaN when there are none).
    """
    u_a, u_d = expected_payoffs(spec, sigma, rho)
    br_a = best_attack_value(spec, attacker_action_values(spec, rho))
    br_d = defender_observation_values(spec, sigma).max(axis=-1).sum(axis=-1)
    refused = refusal(spec, rho)
    faithful, harmful = spec.faithful_mask, spec.harmful_mask[:, None]

    def mean_over(cells: np.ndarray) -> np.ndarray:
        return refused[..., cells].mean(axis=-1) if cells.any() else np.full(u_a.shape, np.nan)

    out: dict[str, np.ndarray] = {
        "selfplay_asr": u_a,
        "best_response_asr": br_a,
        "mirror_gap": br_a - u_a,
        "nash_conv": (br_a - u_a) + (br_d - u_d),
        "over_refusal": mean_over(faithful & ~harmful),
        "harmful_refusal": mean_over(faithful & harmful),
    }
    if classes:
        out["defender_class"] = _nest(defender_classes(spec, rho).reshape(-1).tolist(), u_a.shape)
        out["attacker_class"] = _nest(attacker_classes(spec, sigma).reshape(-1).tolist(), u_a.shape)
    return out


def defender_classes(spec: GameSpec, rho: np.ndarray) -> np.ndarray:
    """``theory.classify.classify_defender`` of each defender in a batch rho [..., O, A], as an
    array of labels."""
    faithful, harmful = spec.faithful_mask, np.broadcast_to(spec.harmful_mask[:, None], spec.faithful_mask.shape)
    comply = np.einsum("sko,...o->...sk", spec.obs_probs, rho[..., spec.actions.index(COMPLY)])[..., faithful]
    harmful = harmful[faithful]
    refuse_all = (comply <= TOL).all(axis=-1)
    comply_all = (comply >= 1 - TOL).all(axis=-1)
    oracle = (comply[..., harmful] <= TOL).all(axis=-1) & (comply[..., ~harmful] >= 1 - TOL).all(axis=-1)
    return np.select([refuse_all, comply_all, oracle], ["always_refuse", "always_comply", "oracle"], "other")


def attacker_classes(spec: GameSpec, sigma: np.ndarray) -> np.ndarray:
    """``theory.classify.classify_attacker`` of each attacker in a batch sigma [..., S, K]."""
    harmful = spec.harmful_mask
    batch = sigma.shape[:-2]
    if spec.seed_choice == "attacker":
        mass = sigma.sum(axis=-1)
        on_harmful, on_benign = mass[..., harmful].sum(axis=-1) > TOL, mass[..., ~harmful].sum(axis=-1) > TOL
        return np.select([on_harmful & ~on_benign, on_benign & ~on_harmful], ["targets_harmful", "targets_benign"],
                         "targets_both")
    if spec.plain_style is None:
        return np.full(batch, "mixed")
    plain = sigma[..., spec.plain_style]
    is_plain, is_disguised = plain >= 1 - TOL, plain <= TOL
    return np.select(
        [is_plain.all(axis=-1), is_disguised.all(axis=-1),
         is_disguised[..., harmful].all(axis=-1) & is_plain[..., ~harmful].all(axis=-1),
         is_plain[..., harmful].all(axis=-1) & is_disguised[..., ~harmful].all(axis=-1)],
        ["plain_all", "disguise_all", "disguise_harmful", "disguise_benign"], "mixed")


def _nest(labels: list[str], shape: tuple[int, ...]) -> list:
    """Labels in row-major order as nested lists of ``shape``."""
    if len(shape) <= 1:
        return labels if shape else labels[0]
    step = len(labels) // shape[0]
    return [_nest(labels[i * step:(i + 1) * step], shape[1:]) for i in range(shape[0])]
