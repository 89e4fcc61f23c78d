"""The red-team game defined once: seeds and intents, attack styles, observations, defender
actions, judge outcomes, payoffs (zero-sum and non-zero-sum), strategies and metrics.

No solver is imported here; ``redgame.games`` builds OpenSpiel games and solves them.
"""

from redgame.theory.classify import (
    DEFENDER_CLASSES,
    classify_attacker,
    classify_defender,
    compliance,
    policy_metrics,
    refusal,
)
from redgame.theory.presets import PRESETS, coerce_params, make_spec, parse_params, preset_params
from redgame.theory.spec import COMPLY, DEFLECT, PLAIN, REFUSE, GameSpec, NonZeroSum, Seed, ZeroSum
from redgame.theory.strategies import (
    NormalForm,
    attacker_behaviour,
    attacker_best_response,
    defender_behaviour,
    defender_best_response,
    expected_payoffs,
    normal_form,
)

__all__ = [
    "COMPLY", "DEFLECT", "PLAIN", "REFUSE", "DEFENDER_CLASSES", "GameSpec", "NonZeroSum", "NormalForm",
    "PRESETS", "Seed", "coerce_params", "ZeroSum", "attacker_behaviour", "attacker_best_response", "classify_attacker",
    "classify_defender", "compliance", "defender_behaviour", "defender_best_response", "expected_payoffs",
    "make_spec", "normal_form", "parse_params", "policy_metrics", "preset_params", "refusal",
]
