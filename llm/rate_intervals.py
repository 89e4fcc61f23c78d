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
    counted, n = sum(read), len(read)
    _, refusal = RATES[rate]  # a rate of no refusal is 1 - the refused share, the float evaluate_defender gives
    return {"rate": counted / n if refusal else 1.0 - (n - counted) / n, "ci": list(rate_ci(counted, n)), "n": n}


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


def intervals(answers: dict[str, list[dict]]) -> dict:
    """Per rate, each model's Wilson interval (``answers``: model name -> its answers), and, given two models on
    the same prompts, the paired interval of the second's rate minus the first's under ``"change"``:
    ``{rate: {name: …, …, "change": …}}``."""
    if not 1 <= len(answers) <= 2:
        raise UserError(f"rate intervals: one or two models' answers, not {len(answers)}")
    out = {}
    for rate in RATES:
        out[rate] = {name: rate_interval(given, rate) for name, given in answers.items()}
        if len(answers) == 2:
            out[rate]["change"] = rate_change(*answers.values(), rate)
    return out


def interval_lines(found: dict, labels: dict[str, str] | None = None) -> list[str]:
    """:func:`intervals` in words: each model's rates with their intervals, then each change, in points
    (``labels``: a model's name as the lines say it, where it differs)."""
    labels = labels or {}

    def rate_text(r: dict) -> str:
        if not r["n"]:
            return "none read by the judge"
        lo, hi = (100 * x for x in r["ci"])
        return f"{100 * r['rate']:.0f}% [{lo:.0f}, {hi:.0f}] of {r['n']}"

    models = [name for name in next(iter(found.values())) if name != "change"]
    said = [labels.get(name, name) for name in models]
    lines = [f"{label}: " + ", ".join(f"{rate.replace('_', ' ')} {rate_text(parts[name])}"
                                      for rate, parts in found.items()) for name, label in zip(models, said)]
    for rate, parts in found.items():
        if "change" not in parts:
            continue
        c, head = parts["change"], f"{rate.replace('_', ' ')}: {said[1]} − {said[0]}"
        if not c["n"]:
            lines.append(f"{head}: no prompt read by the judge both times")
            continue
        lo, hi = (100 * x for x in c["ci"])
        lines.append(f"{head} {100 * c['change']:+.0f} points, 95% [{lo:+.0f}, {hi:+.0f}] (paired, over the "
                     f"{c['n']} prompts judged both times)")
    return lines
