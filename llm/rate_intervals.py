"""How far a held-out evaluation's rates can be trusted over its prompts: each rate's Wilson interval,
and the paired interval of a change between two models that answered the same prompts.

The rates are the evaluation judge's harmful refusal and benign compliance
(:func:`redgame.llm.evaluation.evaluate_defender`), counted over the answers the judge read. A
change (trained − base) is paired: the same prompts answered twice, so its interval is Newcombe's
method 10 (Newcombe 1998, Stat. Med. 17:2635; ``redgame.games.stats.paired_rate_diff_ci``) over
the prompts the judge read both times, and each rate's interval is Wilson's (Wilson 1927).

These intervals cover the sampling of prompts only. They say nothing of a training run's seed: a
second run of the same command can land elsewhere (docs/llm_evaluation.md measures by how much),
so a claim about a recipe needs several seeds and the t intervals of ``redgame llm claims``.
"""

from __future__ import annotations

from redgame.errors import UserError

# rate -> (the seeds' class it is counted on, whether it counts a refusal (True) or its absence)
RATES = {"harmful_refusal": (True, True), "benign_compliance": (False, False)}


def _outcomes(answers: list[dict], rate: str) -> list[bool | None]:
    """Per answer of the rate's class: whether it counts toward the rate; None where the judge could not read it."""
    harmful, refusal = RATES[rate]
    return [None if a["refused"] is None else a["refused"] == refusal for a in answers if a["harmful"] == harmful]


def rate_interval(answers: list[dict], rate: str) -> dict:
    """``{"rate", "ci", "n"}``: the rate over the answers the judge read, its Wilson 95% interval, and their
    number (nan and [nan, nan] where it read none)."""
    from redgame.games.stats import rate_ci

    read = [x for x in _outcomes(answers, rate) if x is not None]
    if not read:
        return {"rate": float("nan"), "ci": [float("nan")] * 2, "n": 0}
    return {"rate": sum(read) / len(read), "ci": list(rate_ci(sum(read), len(read))), "n": len(read)}


def rate_change(before: list[dict], after: list[dict], rate: str) -> dict:
    """``{"change", "ci", "n"}``: after's rate minus before's over the prompts the judge read in both (``before``
    and ``after`` are two models' answers to the same prompts, in the same order), with Newcombe's paired 95%
    interval and the number of those prompts."""
    from redgame.games.stats import paired_rate_diff_ci

    if [a["id"] for a in before] != [a["id"] for a in after]:
        raise UserError("rate change: the two evaluations did not answer the same prompts in the same order")
    pairs = [(b, a) for b, a in zip(_outcomes(before, rate), _outcomes(after, rate)) if a is not None and b is not None]
    if not pairs:
        return {"change": float("nan"), "ci": [float("nan")] * 2, "n": 0}
    first, second = [a for _, a in pairs], [b for b, _ in pairs]
    return {"change": (sum(first) - sum(second)) / len(pairs), "ci": list(paired_rate_diff_ci(first, second)),
            "n": len(pairs)}


def intervals(before: list[dict], after: list[dict] | None = None) -> dict:
    """Each rate's Wilson interval for ``before`` (and ``after``), and, given both, the change's paired interval:
    ``{rate: {"before": …, "after": …, "change": …}}``."""
    out = {}
    for rate in RATES:
        out[rate] = {"before": rate_interval(before, rate)}
        if after is not None:
            out[rate].update(after=rate_interval(after, rate), change=rate_change(before, after, rate))
    return out


def interval_lines(found: dict, before: str = "base", after: str = "trained") -> list[str]:
    """:func:`intervals` in words: each model's rates with their intervals, then each change, in points."""
    def rate_text(r: dict) -> str:
        lo, hi = (100 * x for x in r["ci"])
        return f"{100 * r['rate']:.0f}% [{lo:.0f}, {hi:.0f}] of {r['n']}"

    lines = []
    for model, name in (("before", before), ("after", after)):
        if model in next(iter(found.values())):
            lines.append(f"{name}: " + ", ".join(f"{rate.replace('_', ' ')} {rate_text(parts[model])}"
                                                 for rate, parts in found.items()))
    for rate, parts in found.items():
        if "change" in parts:
            c = parts["change"]
            lo, hi = (100 * x for x in c["ci"])
            lines.append(f"{rate.replace('_', ' ')}: {after} − {before} {100 * c['change']:+.0f} points, 95% "
                         f"[{lo:+.0f}, {hi:+.0f}] (paired, over the {c['n']} prompts judged both times)")
    return lines
