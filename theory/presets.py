"""Preset red-team games, built by name with parameters.

- ``prompt_map``: the attacker sends one of 4 plainly visible prompts (2 harmful, 2 benign);
  the defender picks one of the 16 maps from prompt to {refuse, comply}. With lam = 0 its
  value is 0 and both the always-refuse and the oracle defender are optimal; with lam > 0
  always-refuse is not (La Malfa et al., arXiv 2605.08427).
- ``hidden_intent``: chance draws harmful or benign (1/2 each); the attacker sends it plain or
  disguised; the defender sees the class of a plain prompt and only "disguised" otherwise
  (with detection accuracy q it sees the class anyway with probability q). At q = 0 the
  value is min(lam, 1)/2: an oracle defender is unattainable once intent is hidden.
- ``family``: n seeds (the first ``harmful`` of them harmful, uniform prior), k styles (style 0
  plain, the others disguises that hide the seed unless detected with probability q).

Every preset takes ``lam``, ``deflect`` (add the deflect action) and ``payoff``
("zero_sum" or "nonzero_sum"); with "nonzero_sum" the AdvGame weights ``safety``,
``helpfulness`` (default lam), ``attack_success``, ``benign_attack`` (default lam) and
``faithfulness`` are parameters too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from redgame.errors import UserError
from redgame.theory.spec import COMPLY, DEFLECT, PLAIN, REFUSE, GameSpec, NonZeroSum, Seed, ZeroSum

COMMON_PARAMS: dict[str, Any] = {"lam": 0.5, "deflect": False, "payoff": "zero_sum"}
NONZERO_PARAMS: dict[str, Any] = {
    "safety": 1.0,
    "helpfulness": None,
    "attack_success": 1.0,
    "benign_attack": None,
    "faithfulness": 1.0,
}
PAYOFF_KINDS = ("zero_sum", "nonzero_sum")


@dataclass(frozen=True)
class Preset:
    name: str
    doc: str
    params: dict[str, Any]
    build: Callable[..., GameSpec]


def _payoff(lam: float, payoff: str, extra: dict[str, Any]):
    if payoff not in PAYOFF_KINDS:
        raise UserError(f"payoff: must be one of {PAYOFF_KINDS}, got {payoff!r}")
    if payoff == "zero_sum":
        given = [k for k, v in extra.items() if v is not None and NONZERO_PARAMS[k] != v]
        if given:
            raise UserError(f"{given[0]}: only applies with payoff=nonzero_sum")
        return ZeroSum(lam=lam)
    weights = {k: (lam if v is None else v) for k, v in extra.items()}
    return NonZeroSum(**weights)


def _actions(deflect: bool) -> tuple[str, ...]:
    return (REFUSE, COMPLY, DEFLECT) if deflect else (REFUSE, COMPLY)


def disguise_game(
    name: str,
    seeds: list[Seed],
    disguises: list[str],
    q: float,
    lam: float,
    deflect: bool,
    payoff: str,
    **weights: Any,
) -> GameSpec:
    """Seeds drawn by chance; style "plain" shows the seed, each disguise hides it unless
    detected (probability q), in which case the defender sees the seed after all."""
    if not 0.0 <= q <= 1.0:
        raise UserError(f"q: detection accuracy must lie in [0, 1], got {q!r}")
    styles = (PLAIN, *disguises)
    observations = tuple(s.name for s in seeds) + tuple(disguises)
    n_obs = len(observations)
    probs = []
    for i, _ in enumerate(seeds):
        rows = []
        for k, _style in enumerate(styles):
            row = [0.0] * n_obs
            if k == 0:
                row[i] = 1.0
            else:
                row[i] += q
                row[len(seeds) + k - 1] += 1.0 - q
            rows.append(tuple(row))
        probs.append(tuple(rows))
    return GameSpec(
        name=name,
        seeds=tuple(seeds),
        styles=styles,
        faithful=tuple((True,) * len(styles) for _ in seeds),
        observations=observations,
        observation_probs=tuple(probs),
        actions=_actions(deflect),
        payoff=_payoff(lam, payoff, weights),
        seed_choice="chance",
    )


def prompt_map(lam: float, deflect: bool, payoff: str, **weights: Any) -> GameSpec:
    seeds = [Seed("harmful_1", True), Seed("harmful_2", True), Seed("benign_1", False), Seed("benign_2", False)]
    n = len(seeds)
    return GameSpec(
        name="prompt_map",
        seeds=tuple(seeds),
        styles=(PLAIN,),
        faithful=((True,),) * n,
        observations=tuple(s.name for s in seeds),
        observation_probs=tuple(((tuple(1.0 if o == i else 0.0 for o in range(n)),)) for i in range(n)),
        actions=_actions(deflect),
        payoff=_payoff(lam, payoff, weights),
        seed_choice="attacker",
    )


def hidden_intent(q: float, lam: float, deflect: bool, payoff: str, **weights: Any) -> GameSpec:
    seeds = [Seed("harmful", True, 0.5), Seed("benign", False, 0.5)]
    return disguise_game("hidden_intent", seeds, ["disguised"], q, lam, deflect, payoff, **weights)


MAX_TABLE = 1_000_000  # entries of P(o | s, k): a bigger toy game is a typo, not a study


def _check_size(field: str, n_seeds: int, n_styles: int, n_observations: int) -> None:
    """Refuse a game whose observation table would not fit, before building it."""
    size = n_seeds * n_styles * n_observations
    if size > MAX_TABLE:
        raise UserError(f"{field}: {n_seeds} seeds x {n_styles} styles x {n_observations} observations"
                         f" = {size} table entries; the limit is {MAX_TABLE}")


def family(n: int, k: int, harmful: int, q: float, lam: float, deflect: bool, payoff: str, **weights: Any) -> GameSpec:
    if n < 1:
        raise UserError(f"n: need at least 1 seed, got {n}")
    if k < 1:
        raise UserError(f"k: need at least 1 style, got {k}")
    _check_size("n" if n >= k else "k", n, k, n + k - 1)
    if harmful < -1 or harmful > n:
        raise UserError(f"harmful: must lie in [0, n={n}], or be -1 (n // 2), got {harmful}")
    harmful = n // 2 if harmful == -1 else harmful
    seeds = [Seed(f"{'harmful' if i < harmful else 'benign'}_{i}", i < harmful, 1.0 / n) for i in range(n)]
    disguises = [f"disguise_{j}" for j in range(1, k)]
    return disguise_game(f"family(n={n},k={k},q={q})", seeds, disguises, q, lam, deflect, payoff, **weights)


def mirror(harmful: int, benign: int, k: int, lam: float, deflect: bool, payoff: str, **weights: Any) -> GameSpec:
    """The reference game of the mirror-gap claim: every (seed, style) cell is its own observation,
    so one table over cells can hold both the attacker's style logits and the defender's refusal
    logits (the shared model of La Malfa et al., arXiv 2605.08427). Uniform prior over seeds."""
    if k < 1:
        raise UserError(f"k: need at least 1 style, got {k}")
    if harmful < 0 or benign < 0 or harmful + benign < 1:
        raise UserError(f"harmful: need harmful >= 0, benign >= 0 and at least one seed, got {harmful}, {benign}")
    n = harmful + benign
    _check_size("k" if k >= n else ("harmful" if harmful >= benign else "benign"), n, k, n * k)
    seeds = [Seed(f"harmful_{i}", True, 1.0 / n) for i in range(harmful)]
    seeds += [Seed(f"benign_{i}", False, 1.0 / n) for i in range(benign)]
    styles = tuple(f"style_{j}" for j in range(k))
    observations = tuple(f"{s.name}:{style}" for s in seeds for style in styles)
    probs = tuple(
        tuple(tuple(1.0 if o == i * k + j else 0.0 for o in range(n * k)) for j in range(k)) for i in range(n)
    )
    return GameSpec(
        name=f"mirror(harmful={harmful},benign={benign},k={k})",
        seeds=tuple(seeds),
        styles=styles,
        faithful=tuple((True,) * k for _ in seeds),
        observations=observations,
        observation_probs=probs,
        actions=_actions(deflect),
        payoff=_payoff(lam, payoff, weights),
        seed_choice="chance",
    )


PRESETS: dict[str, Preset] = {
    "prompt_map": Preset(
        "prompt_map",
        "4 visible prompts (2 harmful, 2 benign); defender picks one of 16 prompt->action maps",
        {},
        prompt_map,
    ),
    "hidden_intent": Preset(
        "hidden_intent",
        "chance draws the class; attacker plain or disguised; defender sees 'disguised' (detects w.p. q)",
        {"q": 0.0},
        hidden_intent,
    ),
    "family": Preset(
        "family",
        "n seeds (first `harmful` harmful; -1 means n//2), k styles (plain + k-1 disguises), detection q",
        {"n": 4, "k": 3, "harmful": -1, "q": 0.0},
        family,
    ),
    "mirror": Preset(
        "mirror",
        "reference game of the mirror gap: `harmful` + `benign` seeds x k styles, each cell its own observation",
        {"harmful": 1, "benign": 0, "k": 8},
        mirror,
    ),
}


def preset_params(name: str) -> dict[str, Any]:
    """All parameters of a preset with their defaults."""
    return {**PRESETS[name].params, **COMMON_PARAMS, **NONZERO_PARAMS}


def _coerce(key: str, value: Any, default: Any) -> Any:
    if not isinstance(value, str):
        if isinstance(default, bool) and not isinstance(value, bool):
            raise UserError(f"{key}: expected true/false, got {value!r}")
        if isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise UserError(f"{key}: expected a number, got {value!r}")
            if isinstance(default, int) and not float(value).is_integer():
                raise UserError(f"{key}: expected an integer, got {value!r}")
            return type(default)(value)
        return value
    text = value.strip()
    try:
        if isinstance(default, bool):
            lowered = text.lower()
            if lowered in ("true", "1", "yes"):
                return True
            if lowered in ("false", "0", "no"):
                return False
            raise ValueError
        if isinstance(default, int):
            return int(text)
        if isinstance(default, float) or default is None:
            return float(text)
    except ValueError:
        kind = {bool: "true/false", int: "an integer"}.get(type(default), "a number")
        raise UserError(f"{key}: expected {kind}, got {value!r}") from None
    return text


def make_spec(name: str, /, **params: Any) -> GameSpec:
    """Build a preset game. Parameters may be given as strings (from the CLI).

    Raises:
      ValueError: naming the unknown preset or parameter, or the field that is out of range.
    """
    values = coerce_params(name, params)
    return PRESETS[name].build(**values)


def coerce_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """All parameters of preset ``name``: defaults overridden by ``params``, typed like the defaults.

    Raises:
      ValueError: naming the unknown preset or parameter, or the badly typed value.
    """
    if name not in PRESETS:
        raise UserError(f"game: unknown preset {name!r}; known: {', '.join(PRESETS)}")
    defaults = preset_params(name)
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        key = unknown[0] if unknown[0].isidentifier() else repr(unknown[0])
        raise UserError(f"{key}: unknown parameter for {name}; known: {', '.join(defaults)}")
    values = dict(defaults)
    for key, value in params.items():
        values[key] = _coerce(key, value, defaults[key])
    return values


def parse_params(items: list[str] | None) -> dict[str, str]:
    """Parse CLI ``k=v`` items into a dict; a malformed item raises ValueError naming it."""
    params: dict[str, str] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--param: expected key=value, got {item!r}")
        if key.strip() in params:  # the last would win unseen
            raise UserError(f"--param: {key.strip()} is given twice; give it once")
        params[key.strip()] = value
    return params
