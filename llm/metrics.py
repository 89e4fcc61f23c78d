"""A run's ``metrics.jsonl``: its rows, checked, and the late mean of one metric."""

from __future__ import annotations

import math
from pathlib import Path

from redgame.errors import UserError
from redgame.jsonio import parse_json


def read_metrics(run: Path) -> list[dict]:
    """The rows of ``<run>/metrics.jsonl``, checked: one JSON object a line, at least one."""
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"run {run}: no metrics.jsonl; expected a folder written by 'redgame llm train'")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            row = parse_json(line, f"{path}, line {n}")
            if not isinstance(row, dict):
                raise UserError(f"{path}, line {n}: not a JSON object")
            rows.append(row)
    if not rows:
        raise UserError(f"{path}: no rows in it")
    return rows


def tail_mean(rows: list[dict], key: str, k: int = 5) -> float:
    """The mean of ``key`` over the last ``k`` rows that record a finite number for it (NaN if none do)."""
    values = [r[key] for r in rows if isinstance(r.get(key), int | float) and math.isfinite(r[key])]
    return sum(values[-k:]) / len(values[-k:]) if values else math.nan
