"""Strict JSON for the commands' output: a number with nothing to measure it on (nan, inf) becomes null."""

from __future__ import annotations

import json
import math


def strict_json(obj, indent: int | None = 1) -> str:
    """``obj`` as strict JSON: every non-finite float (a rate with nothing to measure it on) is null."""
    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        if isinstance(x, (list, tuple)):
            return [clean(v) for v in x]
        return x

    return json.dumps(clean(obj), indent=indent, allow_nan=False)
