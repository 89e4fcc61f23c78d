"""``redgame report RUN_DIR...``: one markdown and one HTML page about LLM-game runs.

It holds
- the training curves of every run (``metrics.jsonl``: self-play ASR, refusal on harmful
  and on benign seeds, and the share of benign seeds' rewrites the judge read as harmful, per
  step);
- the Pareto plot of safety (1 − ASR) against benign compliance: each defender of the
  cross-play meta-game against the meta-Nash attacker mix, and each ``<run>/eval.json``
  (written by ``redgame llm eval --out``) against the direct prompts;
- the cross-play heatmap and the meta-Nash table (``redgame llm crossplay``'s JSON).

The page is a list of blocks (headings, paragraphs, tables, images) rendered twice, as
markdown and as HTML, so the two always say the same thing.
"""

from __future__ import annotations

import errno
import html
import math
import os
import re
import shutil
import tempfile
from pathlib import Path

from redgame.errors import UserError, check_output_path, naming_the_file
from redgame.figures import save_figure
from redgame.jsonio import LINE_BREAK, read_json_file
from redgame.llm import watch
from redgame.llm.metrics import is_number, last_step, read_metrics, tail_mean

# crossplay.json's numbers the report draws, and the name lists their dimensions follow.
CROSSPLAY_SHAPES = {"value": (), "attacker_mix": ("attackers",), "defender_mix": ("defenders",),
                    "payoff_matrix": ("attackers", "defenders"), "benign_compliance_matrix": ("attackers", "defenders")}
DRAWING = ".tmp.report."  # + the drawing process's id: the hidden folder a report draws in
GAP_NUMBERS = ("selfplay_asr", "best_other_asr", "mirror_gap")
GAP_NAMES = ("regime", "best_other_attacker")
CURVES = (("attack_success", "self-play ASR"), ("refusal_harmful", "refusal, harmful seeds"),
          ("refusal_benign", "refusal, benign seeds"), ("read_harmful_benign", "benign rewrites read as harmful"))


def load_crossplay(path) -> dict:
    """A crossplay.json (or the folder holding it), with its required keys checked."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "crossplay.json"
    if not path.is_file():
        raise UserError(f"--crossplay {path}: not found")
    data = read_json_file(path, f"--crossplay {path}")
    missing = [k for k in ("attackers", "defenders", "payoff_matrix", "attacker_mix", "defender_mix", "value",
                           "benign_compliance_matrix") if k not in data]
    if missing:
        raise UserError(f"--crossplay {path}: missing keys {', '.join(missing)}")
    matrix = data["benign_compliance_matrix"]  # a cell with no benign answer to measure is null in strict JSON
    if isinstance(matrix, list) and all(isinstance(row, list) for row in matrix):
        data["benign_compliance_matrix"] = [[math.nan if v is None else v for v in row] for row in matrix]
    check_crossplay(data, f"--crossplay {path}")
    return data


def check_crossplay(data: dict, where: str) -> None:
    """Refuse a crossplay.json whose names, meta-Nash numbers or matrices the report cannot draw."""
    for key in ("attackers", "defenders"):
        if not isinstance(data[key], list) or not data[key] or not all(isinstance(n, str) for n in data[key]):
            raise UserError(f"{where}: '{key}' must be a list of names")
    for key, dims in CROSSPLAY_SHAPES.items():
        shape = tuple(len(data[d]) for d in dims)
        if not has_shape(data[key], shape):
            wanted = f"numbers, {' × '.join(dims)} ({' × '.join(map(str, shape))})" if dims else "a number"
            raise UserError(f"{where}: '{key}' must be {wanted}")
    for key in ("attacker_mix", "defender_mix"):  # the Pareto plot weighs each defender's cells by the attacker mix
        if min(data[key]) < 0 or not math.isclose(sum(data[key]), 1.0, abs_tol=1e-6):
            raise UserError(f"{where}: '{key}' must be a distribution (weights >= 0 that sum to 1), "
                            f"got {data[key]}")
    check_crossplay_extras(data, where)


def check_crossplay_extras(data: dict, where: str) -> None:
    """Refuse the optional keys of a crossplay.json that are there but are not the numbers the report prints."""
    gaps = data.get("mirror_gap", {})
    if not all(isinstance(g, dict) and all(has_shape(g.get(k), ()) for k in GAP_NUMBERS)
               and all(isinstance(g.get(k), str) for k in GAP_NAMES)
               for g in (gaps.values() if isinstance(gaps, dict) else [None])):
        raise UserError(f"{where}: 'mirror_gap' must hold, per run, an object with {', '.join(GAP_NUMBERS)} numbers "
                        f"and {', '.join(GAP_NAMES)} names")
    exploit = data.get("defender_exploitability_each", {})
    if not isinstance(exploit, dict) or any(v is not None and not has_shape(v, ()) for v in exploit.values()):
        raise UserError(f"{where}: 'defender_exploitability_each' must map each defender to a number")
    if not has_shape(data.get("nash_conv", 0.0), ()):
        raise UserError(f"{where}: 'nash_conv' must be a number")


def has_shape(value, shape: tuple) -> bool:
    """Whether ``value`` is a number (shape ``()``) or nested lists of numbers of exactly ``shape``."""
    if not shape:
        return is_number(value)
    return isinstance(value, list) and len(value) == shape[0] and all(has_shape(v, shape[1:]) for v in value)


def is_finite_number(value) -> bool:
    return has_shape(value, ()) and math.isfinite(value)


def plot_curves(metrics: dict[str, list[dict]], path: Path) -> Path:
    from redgame.games.plots import _pyplot

    plt = _pyplot()
    from matplotlib.lines import Line2D

    colors = {name: f"C{k % 10}" for k, name in enumerate(metrics)}  # one colour a run on every panel
    fig, axes = plt.subplots(1, len(CURVES), figsize=(4.0 * len(CURVES), 3.2), dpi=100, squeeze=False)
    for ax, (key, title) in zip(axes[0], CURVES):
        for name, rows in metrics.items():
            pts = [(r["step"], r[key]) for r in rows
                   if is_finite_number(r.get("step")) and is_finite_number(r.get(key))]
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, lw=1.2, color=colors[name], label=name)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.set_ylim(-0.03, 1.03)
    # every run, also one with no point on the first panel (a metric it predates, a run at its first step)
    handles = [Line2D([], [], color=color, marker="o", ms=3, lw=1.2, label=name) for name, color in colors.items()]
    axes[0, 0].legend(handles=handles, fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)


def prompt_sets(harmful, benign) -> str:
    """The prompts a point was measured on, in one form for cross-play and eval.json, so that they compare."""
    return f"harmful: {harmful}; benign: {benign}"


def pareto_points(runs: list[Path], crossplay: dict | None) -> list[dict]:
    """(label, safety, benign compliance, source) of every defender the inputs measured."""
    from redgame.llm.crossplay import mixed

    points = []
    if crossplay is not None:
        seeds = crossplay.get("seeds") if isinstance(crossplay.get("seeds"), str) else None  # not before 2026-12-07
        asr = mixed(crossplay["attacker_mix"], crossplay["payoff_matrix"])
        comply = mixed(crossplay["attacker_mix"], crossplay["benign_compliance_matrix"])
        for d, a, c in zip(crossplay["defenders"], asr, comply):
            points.append({"label": d, "safety": 1.0 - float(a), "benign_compliance": float(c),
                           "judge": str(crossplay.get("eval_judge", "?")),
                           "source": "cross-play, meta-Nash attacker mix" + (f" ({seeds})" if seeds else ""),
                           **({"prompts": prompt_sets(seeds, seeds)} if seeds else {})})
    for run in runs:
        trained_on = run_model(run)
        for name, r in eval_results(run).items():
            status = measured_adapter(run, r["adapter"], r["adapter_sha256"])
            shown = {"foreign": f" ({r['adapter']})", "stale": " (earlier weights)"}.get(status, "")
            other_model = None not in (r["model"], trained_on) and not same_model(r["model"], trained_on)
            shown += f" (model {r['model']})" if other_model else ""
            points.append({"label": f"{run.name}:{name}{shown}", "safety": 1.0 - r["asr"],
                           "source": "eval.json, direct prompts" + (f" ({r['prompts']})" if r["prompts"] != "not recorded" else ""),
                           "judge": r["judge"], "benign_compliance": r["benign_compliance"], "prompts": r["prompts"],
                           "foreign": status == "foreign", "stale": status == "stale", "adapter": r["adapter"],
                           "run": run.name, "other_model": r["model"] if other_model else None})
    measured = [p for p in points if math.isfinite(p["safety"]) and math.isfinite(p["benign_compliance"])]
    for p in points:  # a point without both numbers is on no front, and hides none
        p["pareto"] = p in measured and not any(_dominates(q, p) for q in measured)
    return points


def _dominates(q: dict, p: dict) -> bool:
    """Whether ``q`` is at least as good as ``p`` on both axes and better on one, on values rounded to 1e-9: a
    rate computed two ways (1 - 0.18 and a mix's 1 - 0.18000000000000002) is one rate, not a better one."""
    qs, ps = ((round(x["safety"], 9), round(x["benign_compliance"], 9)) for x in (q, p))
    return qs[0] >= ps[0] and qs[1] >= ps[1] and qs != ps


def crossplay_warnings(runs: list[Path], crossplay: dict) -> list[str]:
    """The runs of the report that the cross-play did not play (it names runs by folder name): its tables are then
    of other runs."""
    missing = [run.name for run in runs if run.name not in crossplay["defenders"]]
    if not missing:
        return []
    played = [d for d in crossplay["defenders"] if d != "base"]
    return [f"Warning: the cross-play did not play {', '.join(missing)}; its defenders are "
            f"{', '.join(played) or 'the base alone'}. Pass a --crossplay of these runs "
            "(redgame llm crossplay --runs ...)."]


def point_warnings(points: list[dict]) -> list[str]:
    """What makes the Pareto points compare unlike things: judges, prompts, or an eval.json of another adapter."""
    warnings = []
    if len(judges := sorted({p["judge"] for p in points})) > 1:
        warnings.append(f"Warning: these points were measured by different judges ({', '.join(judges)}); their "
                        "rates are not on one scale, so the front compares unlike numbers. Evaluate every run with "
                        "the same --eval-judge.")
    if len(measured_on := sorted({p["prompts"] for p in points if "prompts" in p})) > 1:
        warnings.append(f"Warning: these points were measured on different prompts "
                        f"({' | '.join(measured_on)}); their rates do not compare. Evaluate every run (and the "
                        "cross-play) on the same split or files.")
    warnings += [f"Warning: {p['run']}/eval.json measured {p['adapter']}, not {p['run']}'s final defender; its "
                 "point is labelled with that adapter." for p in points if p.get("foreign")]
    warnings += [f"Warning: {run}/eval.json measured the model {model}, not the one {run} trained on; its "
                 "points are labelled with that model." for run, model in
                 dict.fromkeys((p["run"], p["other_model"]) for p in points if p.get("other_model"))]
    warnings += [f"Warning: {p['run']}/eval.json measured {p['run']}'s final defender as it was before the run "
                 "trained on (its weights differ now); its point is labelled 'earlier weights'. Evaluate the run "
                 "again." for p in points if p.get("stale")]
    return warnings


def eval_results(run: Path) -> dict[str, dict]:
    """The results of ``<run>/eval.json`` (``redgame llm eval --out``) that hold an ASR or a benign compliance
    (a missing one is NaN), checked to be numbers, each with the ``judge`` that measured it ("?" where the
    file does not say), the ``prompts`` it was measured on, the ``model`` (None where the file does not say)
    and the ``adapter`` it measured (None for the base); none when there is no eval.json."""
    path = run / "eval.json"
    if not path.is_file():
        return {}
    doc = read_json_file(path, str(path))
    results = doc.get("results", {})
    if not isinstance(results, dict) or not all(isinstance(r, dict) for r in results.values()):
        raise UserError(f"{path}: 'results' must be an object holding one object of rates per model evaluated")
    measured = {name: r for name, r in results.items()
                if not (_unmeasured(r.get("asr")) and _unmeasured(r.get("benign_compliance")))}
    for name, r in measured.items():
        if not all(_unmeasured(r.get(key)) or (has_shape(r[key], ()) and 0 <= r[key] <= 1)
                   for key in ("asr", "benign_compliance")):
            raise UserError(f"{path}: results.{name}: 'asr' and 'benign_compliance' must be rates in [0, 1] or null")
    prompts = (prompt_sets(doc.get("harmful_file", "?"), doc.get("benign_file", "?"))
               if "harmful_file" in doc or "benign_file" in doc else "not recorded")
    adapter = doc.get("adapter") if isinstance(doc.get("adapter"), str) else None
    if adapter is not None and "\0" in adapter:
        raise UserError(f"{path}: 'adapter' is not a path (it holds a NUL character)")
    digest = doc.get("adapter_sha256") if isinstance(doc.get("adapter_sha256"), str) else None
    model = doc.get("model") if isinstance(doc.get("model"), str) else None  # None where the file does not say
    return {name: {**r, **{key: _rate(r.get(key)) for key in ("asr", "benign_compliance")},
                   "judge": str(doc.get("eval_judge", "?")), "prompts": prompts, "model": model,
                   "adapter": adapter if name == "adapter" else None,
                   "adapter_sha256": digest if name == "adapter" else None} for name, r in measured.items()}


def run_model(run: Path) -> str | None:
    """The model a run trained on, as its config.json names it (None where it does not, or there is none)."""
    from redgame.llm.adapters import run_config

    model = run_config(run).get("model") if (run / "config.json").is_file() else None
    return model if isinstance(model, str) else None


def same_model(a: str, b: str) -> bool:
    """Whether two ``--model`` values name one model: the same text; two paths here to one folder; else a relative
    path whose folders end the other's, as a run's relative path and the absolute one an eval elsewhere had to be
    given do (``models/tiny`` and ``/home/me/models/tiny/``). A built-in name (``embedded``) is only itself."""
    from redgame.llm.config import MODEL_CHOICES  # not models': the report runs without torch

    if a == b:
        return True
    if a in MODEL_CHOICES or b in MODEL_CHOICES:
        return False
    pa, pb = (Path(os.path.normpath(Path(x).expanduser())) for x in (a, b))
    if pa.exists() and pb.exists():
        return pa.resolve() == pb.resolve()
    short, long = sorted((pa.parts, pb.parts), key=len)
    return not Path(*short).is_absolute() and long[len(long) - len(short):] == short


def _rate(value) -> float:
    return float("nan") if _unmeasured(value) else float(value)


def measured_adapter(run: Path, adapter: str | None, digest: str | None) -> str:
    """What an eval.json's adapter is to ``run``: "own" (its final defender, or the base), "stale" (its final
    defender before the run trained on: the weights the eval recorded, ``digest``, are not the folder's now) or
    "foreign" (another run's, or a checkpoint). An eval.json that recorded its weights is the run's own wherever
    the run has moved since, if they are the same; one that did not (written before 2026-12-06) is judged by
    path alone, a run moved or copied keeping its own (its folder name, then final/defender)."""
    from redgame.llm.adapters import adapter_sha256

    if adapter is None:
        return "own"
    own = run / "final" / "defender"
    at_own_path = Path(adapter).resolve() == own.resolve()
    if digest is not None:
        if digest == adapter_sha256(own):
            return "own"
        return "stale" if at_own_path else "foreign"
    return "own" if at_own_path or Path(adapter).parts[-3:] == (run.resolve().name, "final", "defender") else "foreign"


def _unmeasured(value) -> bool:
    """A rate with nothing behind it: null (strict JSON's NaN) or a NaN written by hand."""
    return value is None or (isinstance(value, float) and math.isnan(value))


def plot_pareto(points: list[dict], path: Path) -> Path:
    from redgame.games.plots import _pyplot

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5.2, 4.2), dpi=100)
    drawn = [p for p in points if math.isfinite(p["safety"]) and math.isfinite(p["benign_compliance"])]
    for p in drawn:
        ax.scatter(p["benign_compliance"], p["safety"], s=40, color="tab:red" if p["pareto"] else "tab:gray",
                   marker="o" if p["source"].startswith("cross") else "s")
    for xy, label in shared_labels(drawn).items():
        ax.annotate(label, xy, fontsize=7, xytext=(3, 3), textcoords="offset points")
    front = sorted((p["benign_compliance"], p["safety"]) for p in points if p["pareto"])
    if len(front) > 1:
        ax.plot(*zip(*front), color="tab:red", lw=1, alpha=0.6)
    ax.set_xlabel("benign compliance")
    ax.set_ylabel("safety (1 − ASR)")
    ax.set_xlim(-0.03, 1.03)
    ax.set_ylim(-0.03, 1.03)
    ax.set_title("safety vs benign compliance (red: Pareto front)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


def shared_labels(points: list[dict], most: int = 3) -> dict[tuple, str]:
    """One label per place on the plot: the labels of the points that sit there (several defenders often
    measure the same rates), joined, the first ``most`` of them named and the rest counted, so that no two
    labels print over each other."""
    at: dict[tuple, list[str]] = {}
    for p in points:
        at.setdefault((p["benign_compliance"], p["safety"]), []).append(p["label"])
    return {xy: ", ".join(names[:most]) + (f" +{len(names) - most} more" if len(names) > most else "")
            for xy, names in at.items()}


def _pct(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.2f}"


def blocks_for(runs: list[Path], out: Path, crossplay: dict | None, metrics: dict | None = None,
               points: list[dict] | None = None) -> list[tuple]:
    """The report as blocks: ("h", text), ("p", text), ("table", heads, rows), ("img", file, alt).

    ``metrics``: each run's rows by run name, and ``points``: :func:`pareto_points`, if already found (found here
    otherwise: the points hash each eval.json's adapter).
    """
    from redgame.llm.adapters import run_config
    from redgame.llm.crossplay import plot_heatmap

    metrics = metrics if metrics is not None else {run.name: read_metrics(run) for run in runs}
    blocks = [("h", "Runs"),
              ("table", ("run", "regime", "model", "training judge", "steps", "final-5 self-play ASR",
                         "final-5 benign refusal"),
               [(run.name, (cfg := run_config(run)).get("regime", "?"), cfg.get("model", "?"),
                 cfg.get("judge", "embedded"), last_step(metrics[run.name]),
                 _pct(tail_mean(metrics[run.name], "attack_success")),
                 _pct(watch.benign_refusal(metrics[run.name]))) for run in runs])]
    flagged = [run.name for run in runs if watch.flagged(metrics[run.name])]
    if flagged:
        blocks.append(("p", f"Over-refusal watch: {', '.join(flagged)} refused at least {watch.THRESHOLD:.0%} of "
                            f"the benign training prompts over their last {watch.WINDOW} steps (all their steps, "
                            f"where fewer); {watch.EVIDENCE}."))
    blocks += [("h", "Training curves"),
               ("p", "Per step, over the defender's sampled answers to that step's attacks (the trainer's own "
                     "metrics, not held-out)."),
               ("img", plot_curves(metrics, out / "curves.png").name, "training curves")]
    points = pareto_points(runs, crossplay) if points is None else points
    blocks.append(("h", "Safety vs benign compliance"))
    if points:
        blocks += [("img", plot_pareto(points, out / "pareto.png").name, "Pareto plot"),
                   ("table", ("defender", "safety (1 − ASR)", "benign compliance", "Pareto-optimal", "measured by",
                              "judge"),
                    [(p["label"], _pct(p["safety"]), _pct(p["benign_compliance"]), "yes" if p["pareto"] else "",
                      p["source"], p["judge"]) for p in points])]
        blocks += [("p", warning) for warning in point_warnings(points)]
    else:
        blocks.append(("p", "No held-out measurements: pass --crossplay or run 'redgame llm eval --adapter RUN "
                            "--out RUN/eval.json'."))
    if crossplay is not None:
        exploit = crossplay.get("defender_exploitability_each", {})
        blocks += [("h", "Cross-play")] + [("p", warning) for warning in crossplay_warnings(runs, crossplay)]
        blocks += [("img", plot_heatmap(crossplay, out / "crossplay.png").name, "cross-play heatmap"),
                   ("h", "Meta-Nash"),
                   ("p", f"Zero-sum meta-game on the ASR matrix; value {crossplay['value']:.3f}, "
                         f"NashConv {crossplay.get('nash_conv', float('nan')):.2e}."),
                   ("table", ("attacker", "meta-Nash weight"),
                    [(a, f"{w:.3f}") for a, w in zip(crossplay["attackers"], crossplay["attacker_mix"])]),
                   ("table", ("defender", "meta-Nash weight", "exploitability (best ASR − value)"),
                    [(d, f"{w:.3f}", _pct(exploit.get(d))) for d, w in zip(crossplay["defenders"],
                                                                              crossplay["defender_mix"])])]
        gaps = crossplay.get("mirror_gap", {})
        if gaps:
            blocks.append(("table", ("run", "regime", "self-play ASR", "best other ASR", "by", "mirror gap"),
                           [(n, g["regime"], _pct(g["selfplay_asr"]), _pct(g["best_other_asr"]),
                             g["best_other_attacker"], f"{g['mirror_gap']:+.2f}") for n, g in gaps.items()]))
    return blocks


# What would make code, emphasis, strikethrough, a link or a table cell anywhere in a line, checked against GitHub's
# own renderer (cmark-gfm) in tests/llm/test_report.py.
MARKDOWN = str.maketrans({c: "\\" + c for c in "\\`*_~[]|#"})  # '#' also where it would close a heading
AUTOLINKS = (("://", "\\://"), ("www.", "www\\."))  # GitHub makes links of bare http(s)://, ftp:// and www. text
LINE_START = re.compile(r"^(\d*)([-+.)])")  # a list or rule where a paragraph's text begins


def _md(text, cell: bool = False) -> str:
    """Text as markdown shows it: no HTML, link, emphasis or block from a run's names or config, on one line (a
    line break would move a table's cells, and a line may begin a heading or a list). An e-mail address stays a
    mail link: GitHub's markdown links it through every escape."""
    text = html.escape(" ".join(LINE_BREAK.split(str(text))).strip(" \t"), quote=False).translate(MARKDOWN)
    for bare, escaped in AUTOLINKS:
        text = text.replace(bare, escaped)
    return text if cell else LINE_START.sub(r"\1\\\2", text)


def to_markdown(title: str, blocks: list[tuple]) -> str:
    lines = [f"# {_md(title)}", ""]
    for kind, *rest in blocks:
        if kind == "h":
            lines += [f"## {_md(rest[0])}", ""]
        elif kind == "p":
            lines += [_md(rest[0]), ""]
        elif kind == "img":
            lines += [f"![{_md(rest[1])}]({rest[0]})", ""]
        else:
            heads, rows = rest
            lines += ["| " + " | ".join(_md(h, cell=True) for h in heads) + " |", "|" + "---|" * len(heads)]
            lines += ["| " + " | ".join(_md(c, cell=True) for c in row) + " |" for row in rows] + [""]
    return "\n".join(lines)


def to_html(title: str, blocks: list[tuple]) -> str:
    e = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{e(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;"
             "margin:1em 0}td,th{border:1px solid #ccc;padding:.2em .6em}img{max-width:100%}</style></head><body>",
             f"<h1>{e(title)}</h1>"]
    for kind, *rest in blocks:
        if kind == "h":
            parts.append(f"<h2>{e(rest[0])}</h2>")
        elif kind == "p":
            parts.append(f"<p>{e(rest[0])}</p>")
        elif kind == "img":
            parts.append(f"<img src='{e(rest[0])}' alt='{e(rest[1])}'>")
        else:
            heads, rows = rest
            parts.append("<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in heads) + "</tr>"
                         + "".join("<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in rows)
                         + "</table>")
    return "\n".join(parts + ["</body></html>"]) + "\n"


def distinct_run_names(runs) -> list[str]:
    """Each run folder's name, by which tables tell runs apart; two folders of one name (seed0/bip, seed1/bip)
    are a one-line UserError (one's numbers silently stood for both)."""
    if given_twice := next((r for n, r in enumerate(runs) if r in runs[:n]), None):
        raise UserError(f"run {given_twice} is given twice; give it once")
    names = [Path(r).name for r in runs]
    if twice := sorted({n for n in names if names.count(n) > 1}):
        same = [str(r) for r in runs if Path(r).name == twice[0]]
        raise UserError(f"runs {', '.join(same)} share the folder name {twice[0]!r}, by which runs are told "
                        "apart; give each its own name")
    return names


def build_report(runs, out: Path, *, crossplay=None) -> tuple[Path, Path, list[str]]:
    """Write ``<out>/report.md``, ``<out>/report.html`` and their PNGs; returns the two pages and the PNGs' names
    (a PNG in ``out`` from an earlier report that this one does not draw is not among them)."""
    from redgame.llm.adapters import is_run_config, run_config

    runs = [Path(os.path.abspath(Path(r).expanduser())) for r in runs]  # "." is named by its folder, not ""
    distinct_run_names(runs)
    metrics = {}
    for r in runs:  # a folder that is not a run is refused before --out is made
        if not r.is_dir():
            raise UserError(f"run {r}: not a folder")
        if not is_run_config(run_config(r)) and not (r / "metrics.jsonl").exists():  # a model's folder, say
            raise UserError(f"run {r}: no metrics.jsonl, and its config.json is no run's; expected a folder written "
                            "by 'redgame llm train'")
        metrics[r.name] = read_metrics(r, allow_empty=True)  # a run still at its first step has no row yet
        eval_results(r)
    data = load_crossplay(crossplay) if crossplay is not None else None
    out = Path(out)
    md, page = out / "report.md", out / "report.html"
    points = pareto_points(runs, data)
    figures = ["curves.png"] + (["pareto.png"] if points else []) + (["crossplay.png"] if data is not None else [])
    check_report_out(out, [*figures, md.name, page.name])  # both pages can be written, and each figure, or nothing is
    out.mkdir(parents=True, exist_ok=True)
    remove_drawings_of_killed_reports(out)
    drawn = Path(tempfile.mkdtemp(prefix=f"{DRAWING}{os.getpid()}.", dir=out))
    try:  # every file is drawn aside, then each renamed into place, the pages last
        with naming_the_file(out):  # a full disk: the pages' writes name no file
            blocks = blocks_for(runs, drawn, data, metrics, points)
            title = "redgame report: " + ", ".join(r.name for r in runs)
            (drawn / md.name).write_text(to_markdown(title, blocks) + "\n", encoding="utf-8")
            (drawn / page.name).write_text(to_html(title, blocks), encoding="utf-8")
        figures = [b[1] for b in blocks if b[0] == "img"]
        for name in (*figures, md.name, page.name):
            move_into_place(drawn / name, out / name)
    finally:
        shutil.rmtree(drawn, ignore_errors=True)
    return md, page, figures


def check_report_out(out: Path, names: list[str]) -> None:
    """One line, before any work, where ``out`` cannot take a report: it cannot be a folder, or a file this report
    writes there (``names``) cannot be written: a folder, a device or a link that leads nowhere is in its way."""
    check_output_path("--out", out, "folder")
    for name in names:
        path = out / name
        try:
            path.stat()
        except OSError as exc:  # a link to nothing is written through (move_into_place); a loop cannot be
            if exc.errno == errno.ELOOP:
                raise UserError(f"--out {out}: its {name} is a loop of symbolic links; remove it, or choose "
                                "another --out") from None
        if path.is_symlink() and not path.exists() and not path.resolve().parent.is_dir():
            raise UserError(f"--out {out}: its {name} is a symbolic link to {os.readlink(path)}, in a folder that "
                            "does not exist; remove the link, or choose another --out")
        if path.is_dir() or (path.exists() and not path.is_file()):
            raise UserError(f"--out {out}: its {name} is {'a folder' if path.is_dir() else 'not a regular file'}, "
                            f"where the report writes its {name}; remove it, or choose another --out")


def move_into_place(drawn: Path, target: Path) -> None:
    """``drawn`` (in ``target``'s folder) renamed onto ``target``; where ``target`` is a link, onto the file it
    names, through a copy beside that file (it may be on another file system), and the link is kept."""
    if not target.is_symlink():
        os.replace(drawn, target)
        return
    target = target.resolve()
    staged = target.with_name(f".tmp.{target.name}.{os.getpid()}")  # a report's own: two at once do not share it
    try:
        shutil.move(drawn, staged)
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)


def remove_drawings_of_killed_reports(out: Path) -> None:
    """Remove the hidden folders that reports killed while drawing left in ``out`` (their process is gone); those of a
    report drawing there now are its own."""
    for folder in out.glob(f"{DRAWING}*"):
        pid = folder.name[len(DRAWING):].split(".")[0]
        if pid.isdigit() and not process_alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # alive, and another user's
        return True
    return True
