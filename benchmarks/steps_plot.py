"""Held-out refusal and compliance against training steps, from ``redgame llm eval`` outputs.

Each ``--group LABEL FILE...`` is one training condition: the eval JSONs (``redgame llm eval
--adapter RUN/checkpoints/step_K --out FILE``) of its checkpoints (a demo keeps them all only with
``--set keep_checkpoints=0``), over several seeds; the step
is read from the adapter's path. Per group and step the script prints harmful refusal and
benign compliance (by the judge, and by refusal strings) as the mean over seeds with a 95%
t-interval, and ``--out`` draws them: one panel per rate, a line per group, a dot per seed.
A file evaluated with the base model (no ``--no-base``) gives the base's rates at step 0.
Every file must be judged by one judge on one set of prompts (one split), and each
checkpoint evaluated once: a file that breaks either is refused.

    python benchmarks/steps_plot.py --group "train split" runs/a-s*/val_eval*.json \\
        --group "+24 lookalikes" runs/b-s*/val_eval*.json --out steps.png
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from rejudge_demo import t_interval  # noqa: E402

from redgame.errors import UserError  # noqa: E402
from redgame.figures import check_figure_path, save_figure  # noqa: E402
from redgame.jsonio import read_json_file  # noqa: E402
from redgame.llm.metrics import is_number  # noqa: E402

PANELS = (("harmful_refusal", "harmful refusal"), ("benign_compliance", "benign compliance"))


RATES = ("harmful_refusal", "benign_compliance", "harmful_refusal_strings", "over_refusal_strings")
MEASURED_ALIKE = ("eval_judge", "harmful_file", "benign_file")  # what every file of one plot must share
CHECKPOINT = re.compile(r"(?:^|[/\\])checkpoints[/\\]step_(\d+)(?:[/\\]|$)")


def rates(result: dict, name: str) -> dict[str, float]:
    """Harmful refusal and benign compliance, by the judge and by refusal strings, in points."""
    missing = [key for key in RATES if not (is_number(result.get(key)) and 0 <= result[key] <= 1)]
    if missing:  # a rate no answer was read for is null in the file
        raise UserError(f"{name}: {', '.join(missing)} is not a rate in [0, 1] (null, missing or out of range); "
                        "every rate is needed for the plot")
    return {"harmful_refusal": 100 * result["harmful_refusal"],
            "benign_compliance": 100 * result["benign_compliance"],
            "harmful_refusal_strings": 100 * result["harmful_refusal_strings"],
            "benign_compliance_strings": 100 * (1 - result["over_refusal_strings"])}


def read_reports(files: list[str]) -> dict[str, dict]:
    """Each file's JSON by its name, each read once (two groups may share a file: a common start)."""
    return {name: read_json_file(name, name) for name in dict.fromkeys(files)}


def read_eval(name: str, report: dict) -> int:
    """The training step of the checkpoint that ``report``, a ``redgame llm eval --adapter`` output read from
    ``name``, evaluates."""
    adapter = report.get("adapter") if isinstance(report.get("adapter"), str) else ""
    found = CHECKPOINT.search(adapter)
    if not found:
        raise UserError(f"{name}: its adapter {report.get('adapter')!r} is not a checkpoints/step_K folder")
    results = report.get("results") if isinstance(report.get("results"), dict) else {}
    if not isinstance(results.get("adapter"), dict):
        raise UserError(f"{name}: no adapter results (a redgame llm eval --adapter ... output holds them)")
    if "base" in results and not isinstance(results["base"], dict):
        raise UserError(f"{name}: its base results are not an object of rates; the file is damaged")
    return int(found.group(1))


def read_group(reports: dict[str, dict]) -> dict[int, list[dict[str, float]]]:
    """Rates by step over the group's eval files, by name (the base model's under step 0, once per file)."""
    by_step, adapters = defaultdict(list), {}
    for name, report in reports.items():
        step = read_eval(name, report)
        if report["adapter"] in adapters:  # one checkpoint evaluated twice would count as two seeds
            raise UserError(f"{name} and {adapters[report['adapter']]} both evaluate {report['adapter']}; "
                            "each checkpoint once")
        adapters[report["adapter"]] = name
        by_step[step].append(rates(report["results"]["adapter"], name))
        if "base" in report["results"]:
            by_step[0].append(rates(report["results"]["base"], name))
    return dict(sorted(by_step.items()))


def check_measured_alike(reports: dict[str, dict]) -> None:
    """Every file judged by one judge on one set of prompts: a validation file averaged with a test file, or
    two judges' rates, would make one interval of two measurements."""
    first = {}
    for name, report in reports.items():
        measured = {key: report.get(key, "embedded" if key == "eval_judge" else None) for key in MEASURED_ALIKE}
        if not first:
            first = dict(name=name, **measured)
        for key, value in measured.items():
            if value != first[key]:
                raise UserError(f"{name} was measured with {key} {value!r}, {first['name']} with {first[key]!r}; "
                                "every file of one plot must be measured alike")


def summary(groups: dict[str, dict]) -> list[str]:
    """One line per group and step: each rate's mean [95% t-interval] over the seeds."""
    lines = []
    for label, by_step in groups.items():
        for step, runs in by_step.items():
            cells = []
            for key in ("harmful_refusal", "harmful_refusal_strings", "benign_compliance", "benign_compliance_strings"):
                mean, lo, hi = t_interval([r[key] for r in runs])
                cells.append(f"{key} {mean:.1f}" + (f" [{lo:.1f}, {hi:.1f}]" if len(runs) > 1 else ""))
            lines.append(f"{label} | step {step} | n={len(runs)} | " + " | ".join(cells))
    return lines


def plot(groups: dict[str, dict], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(PANELS), figsize=(10, 3.8))
    for ax, (key, title) in zip(axes, PANELS):
        for i, (label, by_step) in enumerate(groups.items()):
            color = f"C{i}"
            steps = list(by_step)
            stats = [t_interval([r[key] for r in by_step[s]]) for s in steps]
            means = [m for m, _, _ in stats]
            spread = [[m - lo for m, lo, _ in stats], [hi - m for m, _, hi in stats]]  # NaN (one seed): no bar
            ax.errorbar([s + 0.3 * i for s in steps], means, yerr=spread, color=color, marker="o", capsize=3,
                        label=f"{label} (judge)")
            ax.plot(steps, [t_interval([r[key + "_strings"] for r in by_step[s]])[0] for s in steps], color=color,
                    linestyle=":", label=f"{label} (strings)")
            for s in steps:
                ax.scatter([s + 0.3 * i] * len(by_step[s]), [r[key] for r in by_step[s]], color=color, s=8, alpha=0.4)
        lowest = min(r[k] for by_step in groups.values() for runs in by_step.values() for r in runs
                     for k in (key, key + "_strings"))
        ax.set(title=f"{title} (%), mean and 95% interval", xlabel="training steps",
               ylim=(max(-5, lowest - 10), 105))  # the seeds' range, not the intervals', sets the scale
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, out, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--group", nargs="+", action="append", required=True, metavar=("LABEL", "FILE"),
                        help="a label, then the eval JSONs of that condition's checkpoints")
    parser.add_argument("--out", type=Path, help="where to write the plot (PNG)")
    args = parser.parse_args(argv)
    if any(len(g) < 2 for g in args.group):
        parser.error("each --group needs a label and at least one eval JSON")
    labels = [g[0] for g in args.group]
    for what, given in [("label", labels)] + [(f"eval JSON of group {g[0]!r}", [str(Path(f).resolve()) for f in g[1:]])
                                              for g in args.group]:
        repeated = sorted({x for x in given if given.count(x) > 1})
        if repeated:  # a group dropped, or one seed counted twice (two groups may share a file: a common start)
            raise UserError(f"--group: the {what} {repeated[0]} is given twice; each once")
    if args.out:
        check_figure_path("--out", args.out, example="steps.png")
    reports = read_reports([f for g in args.group for f in g[1:]])
    check_measured_alike(reports)
    groups = {g[0]: read_group({f: reports[f] for f in g[1:]}) for g in args.group}
    print("\n".join(summary(groups)))
    if args.out:
        print(f"wrote {plot(groups, args.out)}")  # with the .png a bare name gets
    return 0


if __name__ == "__main__":
    from redgame.cli import script_main

    raise SystemExit(script_main("steps_plot", main))
