"""A run's ``metrics.jsonl``: its rows, checked, and the late mean of one metric."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from redgame.errors import UserError
from redgame.jsonio import decode_utf8, parse_json


def read_metrics(run: Path, *, allow_empty: bool = False) -> list[dict]:
    """The rows of ``<run>/metrics.jsonl``, checked: one JSON object a line, at least one (none is
    enough with ``allow_empty``: a run that has not finished its first step).

    A last line that is not JSON (a run killed mid-write cut it short) is skipped with a warning
    on stderr; an unparsable line anywhere else is an error.
    """
    path = Path(run) / "metrics.jsonl"
    if not path.is_file():
        raise UserError(f"run {run}: no metrics.jsonl; expected a folder written by 'redgame llm train'")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    lines = [(n, line) for n, line in enumerate(data.split(b"\n"), 1) if line.strip()]
    rows = [_parse_row(line, f"{path}, line {n}", last=n == lines[-1][0]) for n, line in lines]
    rows = [row for row in rows if row is not None]
    if not rows and not allow_empty:
        raise UserError(f"{path}: no rows in it")
    return rows


def _parse_row(line: bytes, where: str, *, last: bool) -> dict | None:
    """One line of metrics.jsonl as a JSON object; None (with a warning) for a last line that is not JSON."""
    try:
        row = parse_json(decode_utf8(line, where), where)
    except UserError as exc:
        if not last:
            raise
        print(f"redgame: warning: {exc}; skipped it (a run killed while writing its last line cuts it short)",
              file=sys.stderr)
        return None
    if not isinstance(row, dict):
        raise UserError(f"{where}: not a JSON object")
    return row


def tail_mean(rows: list[dict], key: str, k: int = 5) -> float:
    """The mean of ``key`` over the last ``k`` rows that hold it, counting only its finite values (a step
    whose rate had nothing to count records NaN); NaN if none of those rows has one. A step without a
    reading never reaches back to older steps."""
    window = [r[key] for r in rows if key in r][-k:]
    values = [float(v) for v in window if is_number(v) and math.isfinite(v)]
    return sum(values) / len(values) if values else math.nan


def is_number(value) -> bool:
    """A JSON number a float can hold: not a bool, nor an int of hundreds of digits (float() overflows)."""
    return type(value) is float or (type(value) is int and abs(value) < 2**1023)
