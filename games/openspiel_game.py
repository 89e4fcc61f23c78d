"""A red-team spec as OpenSpiel games: a matrix game, and an extensive-form Python game.

The extensive form has chance and imperfect information:

1. chance draws the seed with its prior (skipped when the attacker picks the seed);
2. the attacker (player 0) sees the seed and picks a style (or a (seed, style) pair);
3. chance draws the defender's observation from P(o | s, k) (skipped when it is certain);
4. the defender (player 1) sees only the observation and picks refuse / comply [/ deflect].

Information-state strings are the keys of OpenSpiel's tabular policies: "seed=<name>" for the
attacker and "obs=<label>" for the defender, so a defender cannot tell states apart that share
an observation. Each player moves once, so these strings also have perfect recall.

Each preset is registered by name, ``redgame_<preset>``, with the preset's parameters:
``pyspiel.load_game("redgame_hidden_intent(lam=0.25)")``. Any other spec is played with
``RedTeamGame(spec=spec)``. ``pyspiel.convert_to_cached_tree`` makes them fast for C++ solvers.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pyspiel

from redgame.errors import UserError
from redgame.theory.presets import PRESETS, coerce_params, make_spec, preset_params
from redgame.theory.spec import GameSpec
from redgame.theory.strategies import normal_form

GAME_PREFIX = "redgame_"
_SEED, _ATTACK, _OBSERVE, _DEFEND, _DONE = range(5)


def _game_type(short_name: str, params: dict[str, Any], zero_sum: bool) -> pyspiel.GameType:
    utility = pyspiel.GameType.Utility.ZERO_SUM if zero_sum else pyspiel.GameType.Utility.GENERAL_SUM
    return pyspiel.GameType(
        short_name=short_name,
        long_name=f"redgame red-team game {short_name}",
        dynamics=pyspiel.GameType.Dynamics.SEQUENTIAL,
        chance_mode=pyspiel.GameType.ChanceMode.EXPLICIT_STOCHASTIC,
        information=pyspiel.GameType.Information.IMPERFECT_INFORMATION,
        utility=utility,
        reward_model=pyspiel.GameType.RewardModel.TERMINAL,
        max_num_players=2,
        min_num_players=2,
        provides_information_state_string=True,
        provides_information_state_tensor=False,
        provides_observation_string=True,
        provides_observation_tensor=False,
        parameter_specification=params,
    )


_LAM_DEFAULTED = ("helpfulness", "benign_attack")


def _pyspiel_params(preset: str) -> dict[str, Any]:
    # pyspiel parameters need concrete types; -1.0 stands for "use lam" (helpfulness, benign_attack).
    return {k: (-1.0 if v is None else v) for k, v in preset_params(preset).items()}


@functools.lru_cache(maxsize=64)
def _utilities(spec: GameSpec) -> tuple[np.ndarray, np.ndarray]:
    return spec.utilities()


class RedTeamGame(pyspiel.Game):
    """An OpenSpiel game for a GameSpec (``spec=``) or a registered preset (``params=``)."""

    preset: str | None = None

    def __init__(self, params: dict[str, Any] | None = None, spec: GameSpec | None = None):
        if spec is None:
            if self.preset is None:
                raise UserError("spec: RedTeamGame needs a GameSpec (or use a registered preset game)")
            defaults = _pyspiel_params(self.preset)
            given = {k: (None if k in _LAM_DEFAULTED and v == -1.0 else v) for k, v in (params or {}).items()}
            spec = make_spec(self.preset, **given)
            merged = {k: (-1.0 if v is None else v) for k, v in coerce_params(self.preset, given).items()}
            short_name, spec_params = GAME_PREFIX + self.preset, defaults
        else:
            short_name, spec_params, merged = "redgame_spec", {}, {}
        self.spec = spec
        u_a, u_d = spec.utilities()
        seed_moves = spec.n_seeds * spec.n_styles if spec.seed_choice == "attacker" else spec.n_styles
        info = pyspiel.GameInfo(
            num_distinct_actions=max(seed_moves, spec.n_actions),
            max_chance_outcomes=max(spec.n_seeds, spec.n_observations),
            num_players=2,
            min_utility=float(min(u_a.min(), u_d.min())),
            max_utility=float(max(u_a.max(), u_d.max())),
            utility_sum=0.0 if spec.sums_to_zero else None,
            max_game_length=2,
        )
        super().__init__(_game_type(short_name, spec_params, spec.sums_to_zero), info, merged)

    def new_initial_state(self) -> "RedTeamState":
        return RedTeamState(self)

    def make_py_observer(self, iig_obs_type=None, params=None) -> "RedTeamObserver":
        return RedTeamObserver()


class RedTeamState(pyspiel.State):
    """seed -> attacker style -> observation -> defender action."""

    def __init__(self, game: RedTeamGame):
        super().__init__(game)
        self._spec = game.spec
        self.seed: int | None = None
        self.style: int | None = None
        self.observation: int | None = None
        self.action: int | None = None
        self._phase = _SEED if self._spec.seed_choice == "chance" else _ATTACK

    def current_player(self) -> int:
        if self._phase in (_SEED, _OBSERVE):
            return pyspiel.PlayerId.CHANCE
        if self._phase == _ATTACK:
            return 0
        if self._phase == _DEFEND:
            return 1
        return pyspiel.PlayerId.TERMINAL

    def _legal_actions(self, player: int) -> list[int]:
        if player == 0:
            n = self._spec.n_styles * (self._spec.n_seeds if self._spec.seed_choice == "attacker" else 1)
            return list(range(n))
        return list(range(self._spec.n_actions))

    def chance_outcomes(self) -> list[tuple[int, float]]:
        if self._phase == _SEED:
            return [(i, s.prior) for i, s in enumerate(self._spec.seeds) if s.prior > 0]
        probs = self._spec.obs_probs[self.seed, self.style]
        return [(o, float(p)) for o, p in enumerate(probs) if p > 0]

    def _after_attack(self) -> None:
        probs = self._spec.obs_probs[self.seed, self.style]
        support = np.flatnonzero(probs > 0)
        if len(support) == 1:
            self.observation = int(support[0])
            self._phase = _DEFEND
        else:
            self._phase = _OBSERVE

    def _apply_action(self, action: int) -> None:
        if self._phase == _SEED:
            self.seed, self._phase = action, _ATTACK
        elif self._phase == _ATTACK:
            if self._spec.seed_choice == "attacker":
                self.seed, self.style = divmod(action, self._spec.n_styles)
            else:
                self.style = action
            self._after_attack()
        elif self._phase == _OBSERVE:
            self.observation, self._phase = action, _DEFEND
        else:
            self.action, self._phase = action, _DONE

    def _action_to_string(self, player: int, action: int) -> str:
        spec = self._spec
        if player == pyspiel.PlayerId.CHANCE:
            return f"seed={spec.seeds[action].name}" if self._phase == _SEED else f"obs={spec.observations[action]}"
        if player == 0:
            if spec.seed_choice == "attacker":
                s, k = divmod(action, spec.n_styles)
                return f"{spec.seeds[s].name}:{spec.styles[k]}"
            return spec.styles[action]
        return spec.actions[action]

    def is_terminal(self) -> bool:
        return self._phase == _DONE

    def returns(self) -> list[float]:
        if not self.is_terminal():
            return [0.0, 0.0]
        u_a, u_d = _utilities(self._spec)
        idx = (self.seed, self.style, self.action)
        return [float(u_a[idx]), float(u_d[idx])]

    def __str__(self) -> str:
        parts = []
        if self.seed is not None:
            parts.append(f"seed={self._spec.seeds[self.seed].name}")
        if self.style is not None:
            parts.append(f"style={self._spec.styles[self.style]}")
        if self.observation is not None:
            parts.append(f"obs={self._spec.observations[self.observation]}")
        if self.action is not None:
            parts.append(f"action={self._spec.actions[self.action]}")
        return " ".join(parts)


class RedTeamObserver:
    """What a player knows: the attacker its seed, the defender its observation."""

    def __init__(self) -> None:
        self.tensor = np.zeros(0, np.float32)
        self.dict: dict[str, np.ndarray] = {}

    def set_from(self, state: RedTeamState, player: int) -> None:
        pass

    def string_from(self, state: RedTeamState, player: int) -> str:
        spec = state._spec
        if player == 0:
            if spec.seed_choice == "attacker":
                return "attacker"
            return "" if state.seed is None else f"seed={spec.seeds[state.seed].name}"
        return "" if state.observation is None else f"obs={spec.observations[state.observation]}"


def _register_presets() -> dict[str, type]:
    classes = {}
    for name in PRESETS:
        short_name = GAME_PREFIX + name
        cls = type(f"RedTeamGame_{name}", (RedTeamGame,), {"preset": name})
        globals()[cls.__name__] = cls  # module level, so OpenSpiel can find and copy it
        if short_name not in pyspiel.registered_names():
            pyspiel.register_game(_game_type(short_name, _pyspiel_params(name), True), cls)
        classes[name] = cls
    return classes


PRESET_GAMES = _register_presets()


def extensive_game(spec: GameSpec | str, **params: Any) -> pyspiel.Game:
    """The extensive-form OpenSpiel game of a spec, or of a preset name with parameters."""
    if isinstance(spec, str):
        return PRESET_GAMES[spec](params=params)
    return RedTeamGame(spec=spec)


def matrix_game(spec: GameSpec) -> pyspiel.MatrixGame:
    """The normal form of a spec as a pyspiel matrix game (attacker rows)."""
    nf = normal_form(spec)
    return pyspiel.create_matrix_game(
        GAME_PREFIX + spec.name.replace(" ", "_") + "_matrix",
        f"redgame {spec.name} (normal form)",
        list(nf.attacker_labels),
        list(nf.defender_labels),
        nf.attacker_payoffs.tolist(),
        nf.defender_payoffs.tolist(),
    )
