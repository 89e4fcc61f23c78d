"""Re-judge the answers that ``redgame demo`` runs saved, under the current (or another) judge.

Each demo folder holds ``answers.json``: the base model's and the trained defender's greedy
answers to the held-out seeds. When the judge changes, the runs need not be trained again to
see how their numbers move: this script labels the saved answers with the judge given and
prints, per run, harmful refusal and benign compliance (judge, then refusal strings), benign
help (answers that do what was asked, so not an echo or a bare "I can help"; read it with
``--judge probe``, the embedded judge misses most of the small model's help), the
loop and empty-answer rates, and per group of runs (folder names that differ only in a
trailing ``-s<seed>``) the mean change over seeds with a 95% t-interval. The rates are those
of :func:`redgame.llm.evaluation.judge_answers`, the function ``redgame demo`` uses.

    python benchmarks/rejudge_demo.py runs/demo-s0 runs/demo-s1 runs/demo-s2
    python benchmarks/rejudge_demo.py runs/demo-s* --judge embedded:runs/judge --json
    python benchmarks/rejudge_demo.py runs/demo-s* --labels labelled.jsonl

``--labels FILE`` reads the answers by people's labels instead of a judge: a JSONL file in the judge
set's format (``prompt``, ``response``, ``harmful``, ``refused``, ``degenerate``, ``kind``) that labels
every saved answer, matched by prompt and answer.

The runs were trained against the judge of their day; only their evaluation changes here.
"""

from __future__ import annotations

import argparse
import math
import re
from pathlib import Path

from redgame.errors import UserError
from redgame.jsonio import read_json_file, strict_json
from redgame.llm.report import distinct_run_names

RATES = ("harmful_refusal", "benign_compliance", "harmful_refusal_strings", "benign_compliance_strings", "benign_help")


def rejudge(folder: Path, judge) -> dict:
    """``{"base": rates, "trained": rates}`` of one demo folder's saved answers under ``judge``."""
    from redgame.llm.evaluation import judge_answers
    from redgame.llm.seeds import builtin_seeds

    path = folder / "answers.json"
    if not path.is_file():
        raise UserError(f"{path}: no such file (a redgame demo output folder holds answers.json)")
    seeds = {s.id: s for s in builtin_seeds("all")}
    out = {}
    saved = read_json_file(path, str(path))
    missing = [role for role in ("base", "trained") if not isinstance(saved, dict) or role not in saved]
    if missing:
        raise UserError(f"{path}: no '{missing[0]}' answers (a redgame demo saves the base's and the trained "
                        "defender's)")
    if set(saved) != {"base", "trained"}:
        raise UserError(f"{path}: answers of {', '.join(repr(r) for r in sorted(set(saved) - {'base', 'trained'}))} "
                        "beside the base's and the trained defender's; is it a redgame demo's?")
    for role, answers in saved.items():
        if not (isinstance(answers, list) and all(isinstance(a, dict) and a.get("id") in seeds
                                                  and isinstance(a.get("prompt"), str)
                                                  and isinstance(a.get("answer"), str) for a in answers)):
            raise UserError(f"{path}: '{role}' must be a list of answers, each with a built-in seed's id, its "
                            "prompt and the answer")
    check_whole(folder, saved, seeds)
    for role, answers in saved.items():
        picked = [seeds[a["id"]] for a in answers]
        rates = judge_answers(judge, picked, [a["prompt"] for a in answers], [a["answer"] for a in answers])
        out[role] = {k: v for k, v in rates.items() if k != "answers"}
    return out


def check_whole(folder: Path, saved: dict, seeds: dict) -> None:
    """Each prompt answered once, the same prompts by base and trained defender, and (where the folder's
    demo.json says how many) every prompt of each class: a rate over part of the answers is a UserError."""
    path = folder / "answers.json"
    ids = {role: [a["id"] for a in answers] for role, answers in saved.items()}
    for role, given in ids.items():
        repeated = sorted({i for i in given if given.count(i) > 1})
        if repeated:
            raise UserError(f"{path}: '{role}' answers the prompt {repeated[0]} more than once")
    if set(ids["base"]) != set(ids["trained"]):
        raise UserError(f"{path}: the base and the trained defender answered different prompts "
                        f"({len(ids['base'])} and {len(ids['trained'])}); the file is damaged")
    demo = folder / "demo.json"
    counts = read_json_file(demo, str(demo)) if demo.is_file() else {}
    counts = counts if isinstance(counts, dict) else {}
    if not ids["trained"]:  # every rate would be NaN
        raise UserError(f"{path}: no answers in it; the file is damaged or not a demo's")
    for key, harmful in (("n_harmful", True), ("n_benign", False)):
        answered = sum(seeds[i].harmful == harmful for i in ids["trained"])
        if isinstance(counts.get(key), int) and answered != counts[key]:
            raise UserError(f"{path}: {answered} answers to {key[2:]} prompts, where {demo.name} counts "
                            f"{counts[key]}; the file is damaged or from another run")


class LabelledAnswers:
    """A judge that reads labels: each (prompt, answer) labelled in a judge-set file, as
    :class:`~redgame.llm.judges.Labels` (an echo or off-topic answer neither refuses nor complies)."""

    name = "labels"

    def __init__(self, path: str):
        from redgame.llm.judge_data import load_exchanges

        self.path, self.by_answer = path, {}
        for x in load_exchanges(path):
            if "refused" not in x.labels or "harmful" not in x.labels:
                raise UserError(f"{path}: a line without 'refused' and 'harmful' labels ({x.request[:60]!r})")
            labels = (x.labels["refused"], x.labels["harmful"], x.labels.get("degenerate", False), x.complied)
            self.by_answer[(x.request, x.response.strip())] = labels

    def labels(self, seeds, attacks, texts):
        from redgame.llm.judges import Labels

        out = []
        for prompt, text in zip(attacks, texts):
            found = self.by_answer.get((prompt, text.strip()))
            if found is None:
                raise UserError(f"{self.path} does not label the answer {text.strip()[:60]!r} to {prompt[:60]!r}")
            refused, harmful, loop, complied = map(float, found)
            out.append(Labels(refusal=refused, harmful=harmful, faithful=1.0, score=0.0, degenerate=loop,
                              complied=complied))
        return out


def answer_reader(judge: str, labels: str | None = None):
    """What reads saved answers: the labels of a judge-set file when given, else the judge named."""
    if labels:
        return LabelledAnswers(labels)
    from redgame.llm.judges import make_judge

    return make_judge(judge)


def t_interval(values: list[float]) -> tuple[float, float, float]:
    """Mean and 95% Student-t interval (``redgame.games.stats.mean_t_ci``) of a few seeds' values; NaN bounds
    for one seed."""
    from redgame.games.stats import mean_t_ci

    mean = sum(values) / len(values)
    return (mean, math.nan, math.nan) if len(values) < 2 else (mean, *mean_t_ci(values))


def table(results: dict[str, dict]) -> list[str]:
    """Per-run lines, then each group's mean change (trained − base, points) over its seeds."""
    pair = lambda r, k: f"{r[k]:.0%} ({r[k + '_strings']:.0%})"  # noqa: E731
    lines = ["run: harmful refusal, benign compliance, judge (strings); benign help; loops; empty"]
    groups: dict[str, list[dict]] = {}
    for name, r in results.items():
        for role in ("base", "trained"):
            x = r[role]
            lines.append(f"  {name} {role:<8} {pair(x, 'harmful_refusal'):>10} {pair(x, 'benign_compliance'):>10} "
                         f"help {x['benign_help']:.0%} loops {x['loop_rate']:.0%} empty {x['empty_rate']:.0%}")
        groups.setdefault(re.sub(r"-s\d+$", "", name), []).append(r)
    for group, runs in groups.items():
        for key in RATES:
            gains = [100 * (r["trained"][key] - r["base"][key]) for r in runs]
            mean, low, high = t_interval(gains)
            lines.append(f"{group} {key}: {len(runs)} seeds {[round(g, 1) for g in gains]}, "
                         f"mean {mean:+.1f} [{low:+.1f}, {high:+.1f}]")
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="redgame demo output folders (holding answers.json)")
    reader = parser.add_mutually_exclusive_group()  # the rates would be the labels', credited to the judge named
    reader.add_argument("--judge", help="a judge name, as redgame llm judge --judge (default: embedded)")
    reader.add_argument("--labels", help="read the answers by the labels of this judge-set JSONL file, not a judge")
    parser.add_argument("--json", action="store_true", help="print the rates as JSON")
    args = parser.parse_args(argv)
    judge = answer_reader(args.judge or "embedded", args.labels)
    results = {name: rejudge(Path(f), judge) for name, f in zip(distinct_run_names(args.folders), args.folders)}
    print(strict_json(results) if args.json else "\n".join(table(results)))


if __name__ == "__main__":
    from redgame.cli import script_main

    raise SystemExit(script_main("rejudge_demo", main))
