"""Phase diagrams: the learning dynamics over a grid of knobs, many seeds per cell.

A grid names one or two keys with a list of values each: a ``DynamicsConfig`` field (g, lr,
init_scale, steps, shift, rank, hidden, ...) or a parameter of the game (k, lam, benign,
harmful, ...). Every cell trains ``seeds`` runs and reports, over the seeds, the means of the
self-play ASR, the best-response ASR and the mirror gap with 95% bootstrap intervals, and the
share of seeds that collapse (``games.stats``).

The cells share work where the shapes allow: the runs of every cell that differs only in g,
lr or init_scale advance as one batch (``run_dynamics(settings=...)``), each cell with the
same frozen draws (common random numbers, so cells differ only by the knob); a grid over
``steps`` is one run to the longest horizon, read at each one.
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field, fields, replace
from typing import Any

import numpy as np

from redgame.errors import UserError
from redgame.games.dynamics import BATCHED, REFERENCE_GAMES, DynamicsConfig, make_setting, run_dynamics
from redgame.games.stats import seed_summary

MAX_KEYS = 2  # a heatmap's two axes
FIXED_KEYS = ("regime", "runs", "log_every")  # set by the phase diagram itself
METRICS = ("mirror_gap", "best_response_asr", "selfplay_asr", "collapse_rate")


@dataclass
class PhaseDiagram:
    """The cells of a grid, in row-major order over ``keys``; each cell is a dict with the
    grid values and, over the seeds, selfplay_asr, best_response_asr, mirror_gap, each with a
    ``*_ci`` [low, high] 95% bootstrap interval, collapse_rate with a Wilson interval, and
    ``tangent``: the means of ``games.tangent.coupling_report`` at the "start" and the "end"
    (coupling, cross_coupling, generalisation, effective steps step_a and step_d; for a grid
    over ``steps``, the end of the longest horizon)."""

    regime: str
    model: str
    game: str
    seeds: int
    keys: list[str]
    values: list[list[Any]]
    cells: list[dict[str, Any]]
    seconds: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)  # the fixed --param values, in every cell
    spec: str = ""  # the full game name, with its parameters
    steps: int | None = 0  # every cell's steps; None where the grid sweeps them
    files: list[str] = field(default_factory=list)

    def grid(self, metric: str) -> np.ndarray:
        """The metric as an array [len(values[0]), len(values[1])] (or [len(values[0])])."""
        return np.array([c[metric] for c in self.cells]).reshape([len(v) for v in self.values])

    def to_json(self) -> dict[str, Any]:
        return {"regime": self.regime, "model": self.model, "game": self.game, "spec": self.spec,
                "params": self.params, "steps": self.steps, "seeds": self.seeds,
                "grid": dict(zip(self.keys, self.values)), "cells": self.cells, "seconds": self.seconds,
                "files": self.files}


def parse_grid(items: list[str] | None) -> dict[str, list[str]]:
    """``KEY=v1,v2,...`` items into {key: [values]}; a malformed or repeated item raises UserError."""
    grid: dict[str, list[str]] = {}
    for item in items or []:
        key, sep, text = item.partition("=")
        key = key.strip()
        values = [v.strip() for v in text.split(",") if v.strip()]
        if not sep or not key:
            raise UserError(f"--grid: expected KEY=v1,v2,..., got {item!r}")
        if not values:
            raise UserError(f"--grid: {key} has no values; give KEY=v1,v2,...")
        if key in grid:
            raise UserError(f"--grid: {key} is given twice")
        grid[key] = values
    return grid


def _check(grid: dict[str, list[Any]], params: dict[str, Any], seeds: int) -> None:
    if not grid:
        raise UserError("--grid: the grid is empty; give at least one KEY=v1,v2,...")
    if len(grid) > MAX_KEYS:
        raise UserError(f"--grid: at most {MAX_KEYS} keys (a heatmap's axes), got {', '.join(grid)};"
                        " fix the others with --param")
    for key, values in grid.items():
        if not len(values):
            raise UserError(f"--grid: {key} has no values")
        if key in FIXED_KEYS or key == "model":
            raise UserError(f"--grid: {key} is set by the phase diagram (use --regime / --seeds / --model)")
        if key in params:
            raise UserError(f"--grid: {key} is also given with --param")
    if seeds < 2:
        raise UserError(f"--seeds: must be >= 2 for confidence intervals over seeds, got {seeds}")


def _typed(game: str, key: str, value: Any) -> Any:
    """A grid value as the type of its config field or game parameter."""
    from redgame.theory.presets import coerce_params, preset_params

    kinds = {f.name: type(f.default) for f in fields(DynamicsConfig)}
    if key not in kinds:
        return coerce_params(game, {key: value})[key] if key in preset_params(game) else value
    try:
        return kinds[key](value) if kinds[key] is not int else int(str(value))
    except ValueError:
        raise UserError(f"{key}: expected {kinds[key].__name__}, got {value!r}") from None


def phase_diagram(regime: str, grid: dict[str, list[Any]], seeds: int = 20, model: str = "tabular",
                  game: str | None = None, params: dict[str, Any] | None = None,
                  progress: bool = False) -> PhaseDiagram:
    """Sweep ``grid`` ({key: values}, one or two keys) for one regime and model.

    Args:
      regime, model: as in DynamicsConfig.
      seeds: runs per cell (>= 2).
      game, params: the game preset (default: the regime's reference game) and fixed
        parameters (config fields or game parameters) for every cell.

    Raises:
      UserError: an empty grid, a key that is neither a config field nor a game parameter,
        a value of the wrong type, seeds < 2.
    """
    params = dict(params or {})
    _check(grid, params, seeds)
    start = time.perf_counter()
    base_spec, base = make_setting(regime, game, params, runs=seeds, model=model)
    game_name = game or REFERENCE_GAMES[regime][0]
    keys = list(grid)
    typed = {key: [_typed(game_name, key, v) for v in values] for key, values in grid.items()}
    for key, values in typed.items():  # as read: 1 and 1.0 are one value
        if len(set(values)) != len(values):
            raise UserError(f"--grid: {key} repeats a value: {', '.join(map(str, grid[key]))}")
    batched = [k for k in keys if k in BATCHED]
    grouped = [k for k in keys if k not in BATCHED and k != "steps"]
    horizons = sorted(set(typed.get("steps", [base.steps])))
    for h in horizons:
        replace(base, steps=h)  # each horizon checked as a run's steps are
    results: dict[tuple, dict[str, Any]] = {}
    for group in itertools.product(*(typed[k] for k in grouped)):
        spec, config = make_setting(regime, game, {**params, **dict(zip(grouped, group))}, runs=seeds, model=model)
        config = replace(config, steps=max(horizons), log_every=max(horizons))
        settings = [dict(zip(batched, values)) for values in itertools.product(*(typed[k] for k in batched))]
        traj = run_dynamics(spec, config, progress, settings, log_steps=horizons)
        for h in horizons:
            row = list(traj.steps).index(h)
            shape = (len(settings), seeds)
            stats = seed_summary(traj.metrics["selfplay_asr"][row].reshape(shape),
                                 traj.metrics["best_response_asr"][row].reshape(shape))
            tangent = _tangent_means(traj, len(settings))
            for i, setting in enumerate(settings):
                cell = {**dict(zip(grouped, group)), **setting, "steps": h}
                results[tuple(cell[k] for k in keys)] = {**{name: _plain(v[i]) for name, v in stats.items()},
                                                         "tangent": tangent[i]}
    cells = [{**dict(zip(keys, combo)), **results[combo]} for combo in itertools.product(*(typed[k] for k in keys))]
    return PhaseDiagram(regime, model, game_name, seeds, keys, [typed[k] for k in keys], cells,
                        time.perf_counter() - start, params=params, spec=base_spec.name,
                        steps=None if "steps" in grid else base.steps)


def _tangent_means(traj, n_settings: int) -> list[dict[str, dict[str, float]] | None]:
    """Per setting, the mean over seeds of each ``games.tangent`` quantity at the start and end."""
    if traj.tangent is None:
        return [None] * n_settings
    return [{when: {name: float(v.reshape(n_settings, -1)[i].mean()) for name, v in report.items()}
             for when, report in traj.tangent.items()} for i in range(n_settings)]


def _plain(x: np.ndarray) -> Any:
    return [float(v) for v in x] if np.ndim(x) else float(x)
