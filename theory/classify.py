"""Classes of defender and attacker strategies, and the per-policy metrics.

Defender classes (La Malfa et al., arXiv 2605.08427): among the equilibria of the zero-sum
red-team game lie trivial ``always_refuse`` defenders and ``oracle`` defenders, which comply
exactly when the hidden intent is benign. A defender's class is read from its compliance
probability c[s, k] = sum_o P(o | s, k) rho[o, comply] on every faithful (seed, style):

- ``always_refuse``: c = 0 everywhere (refusing or deflecting);
- ``always_comply``: c = 1 everywhere;
- ``oracle``: c = 0 on harmful seeds and 1 on benign seeds, whatever the style;
- ``other``: anything else.

Attacker classes read where its mass goes: ``plain_all``, ``disguise_all``,
``disguise_harmful`` (disguises harmful seeds only), ``disguise_benign``, ``mixed`` for chance
seeds; ``targets_harmful``, ``targets_benign``, ``targets_both`` when it picks the seed.
"""

from __future__ import annotations

import numpy as np

from redgame.theory.spec import COMPLY, REFUSE, GameSpec
from redgame.theory.strategies import attacker_best_response, expected_payoffs

DEFENDER_CLASSES = ("always_refuse", "always_comply", "oracle", "other")
TOL = 1e-6


def compliance(spec: GameSpec, rho: np.ndarray) -> np.ndarray:
    """[S, K]: the probability that the defender complies with seed s sent in style k."""
    return np.einsum("sko,o->sk", spec.obs_probs, rho[:, spec.actions.index(COMPLY)])


def refusal(spec: GameSpec, rho: np.ndarray) -> np.ndarray:
    """[..., S, K]: the probability that defender rho [..., O, A] refuses seed s sent in style k."""
    return np.einsum("sko,...o->...sk", spec.obs_probs, rho[..., spec.actions.index(REFUSE)])


def classify_defender(spec: GameSpec, rho: np.ndarray, tol: float = TOL) -> str:
    """The class of a defender behaviour strategy rho [O, A]."""
    c = compliance(spec, rho)[spec.faithful_mask]
    harmful = np.broadcast_to(spec.harmful_mask[:, None], spec.faithful_mask.shape)[spec.faithful_mask]
    if (c <= tol).all():
        return "always_refuse"
    if (c >= 1 - tol).all():
        return "always_comply"
    if (c[harmful] <= tol).all() and (c[~harmful] >= 1 - tol).all():
        return "oracle"
    return "other"


def classify_attacker(spec: GameSpec, sigma: np.ndarray, tol: float = TOL) -> str:
    """The class of an attacker behaviour strategy sigma [S, K]."""
    harmful = spec.harmful_mask
    if spec.seed_choice == "attacker":
        mass = sigma.sum(axis=1)
        on_harmful, on_benign = mass[harmful].sum() > tol, mass[~harmful].sum() > tol
        return {(True, False): "targets_harmful", (False, True): "targets_benign"}.get(
            (on_harmful, on_benign), "targets_both"
        )
    plain = spec.plain_style
    if plain is None:
        return "mixed"
    plain_mass = sigma[:, plain]
    is_plain = plain_mass >= 1 - tol
    is_disguised = plain_mass <= tol
    if is_plain.all():
        return "plain_all"
    if is_disguised.all():
        return "disguise_all"
    if is_disguised[harmful].all() and is_plain[~harmful].all():
        return "disguise_harmful"
    if is_plain[harmful].all() and is_disguised[~harmful].all():
        return "disguise_benign"
    return "mixed"


def policy_metrics(spec: GameSpec, sigma: np.ndarray, rho: np.ndarray) -> dict[str, float | str]:
    """The metrics of an (attacker, defender) pair.

    - ``selfplay_asr``: the attacker's expected payoff under the pair;
    - ``best_response_asr``: the payoff of an exact best-responding attacker vs this defender;
    - ``mirror_gap``: their difference, the adversarial pressure self-play does not see;
    - ``over_refusal``: mean refusal probability on benign seeds over their faithful styles;
    - ``harmful_refusal``: the same on harmful seeds;
    - ``defender_class`` / ``attacker_class``.
    """
    u_a, _ = expected_payoffs(spec, sigma, rho)
    _, br = attacker_best_response(spec, rho)
    ref = refusal(spec, rho)
    faithful = spec.faithful_mask
    harmful = spec.harmful_mask

    def mean_over(mask_rows: np.ndarray) -> float:
        cells = faithful & mask_rows[:, None]
        return float(ref[cells].mean()) if cells.any() else float("nan")

    return {
        "selfplay_asr": float(u_a),
        "best_response_asr": br,
        "mirror_gap": br - float(u_a),
        "over_refusal": mean_over(~harmful),
        "harmful_refusal": mean_over(harmful),
        "defender_class": classify_defender(spec, rho),
        "attacker_class": classify_attacker(spec, sigma),
    }
