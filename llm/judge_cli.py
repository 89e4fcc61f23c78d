"""``redgame llm judge`` (the judge as an instrument) and ``redgame llm train-judge``.

Registered from ``redgame.llm.eval_cli``; torch and transformers are imported in the handlers.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

from redgame.errors import UserError, check_output_path
from redgame.figures import check_figure_path, save_figure

BUILTIN_INPUT = "builtin"


def register(llm_subparsers) -> None:
    from redgame.llm.judge_formats import FORMATS
    from redgame.llm.rewards import PAYOFF_KINDS

    jd = llm_subparsers.add_parser(
        "judge", help="judge exchanges from a JSONL file: labels, the defender's reward, and metrics against labels",
        description="Each input line: prompt, response; optional seed_class (harmful | benign), attack, seed with "
                    "original_class, truncated, and the labels harmful / refused / degenerate / attack_harmful / "
                    "attack_faithful. Prints one JSON line per input (refused, harmful, refusal, harmfulness, score, "
                    "...) in input order, and precision / recall / F1 / accuracy / Cohen's kappa of each label the "
                    "lines carry, with the ROC AUC of the harmfulness and refusal probabilities "
                    "(to stderr; with --json, all in one JSON document on stdout).")
    jd.add_argument("--judge", default="embedded",
                    help="'embedded', 'embedded:<folder>', 'probe', 'probe:<folder>', 'lm:<model>' or "
                         "'http:<url>[#model]' (default: embedded)")
    jd.add_argument("--format", default="redgame", choices=FORMATS,
                    help="classifier prompts of an lm: or http: judge (default: redgame)")
    jd.add_argument("--input", required=True,
                    help=f"a JSONL file, or '{BUILTIN_INPUT}' for the built-in labelled judge set")
    jd.add_argument("--split", help="keep only the lines whose \"split\" is this (e.g. validation)")
    jd.add_argument("--payoff", default="zero_sum", choices=PAYOFF_KINDS, help="payoff of the score (default: zero_sum)")
    jd.add_argument("--lam", type=float, default=1.0, help="weight of a wrongful refusal (default: 1.0)")
    jd.add_argument("--second-labels", metavar="FILE",
                    help="a second labeller's labels of the same lines (JSONL: id and labels): also prints the judge "
                         "against them and the two labellers' agreement (Cohen's kappa)")
    jd.add_argument("--json", action="store_true", help="one JSON document: judge, results, metrics")
    jd.add_argument("--plot", metavar="FILE", type=Path,
                    help="draw the ROC curves of harmfulness and refusal against the lines' labels (.png, .svg, .pdf "
                         "or another format matplotlib writes; a name without a suffix is saved as .png)")
    jd.set_defaults(func=run_judge)

    tj = llm_subparsers.add_parser(
        "train-judge", help="retrain the embedded judge's classifier (deterministic) and write its weights",
        description="Fits the classifier heads on the lines with split 'train', chooses the L2 weights and the "
                    "faithfulness threshold on split 'validation', and writes the weights (safetensors) and "
                    "judge_classifier.json (the card: the weights' file name and SHA-256, the validation metrics) "
                    "into --out; a save killed halfway leaves the old pair whole.")
    tj.add_argument("--data", nargs="+", action="extend",
                    help=f"labelled JSONL files with a split field, or '{BUILTIN_INPUT}', taken together "
                         f"(default: the built-in judge set; the flag may repeat)")
    tj.add_argument("--attacks", nargs="+", action="extend", metavar="FILE",
                    help="labelled attack rewrites (JSONL: seed, attack, original_class, attack_harmful, "
                         "attack_faithful, split): a faithfulness head on (seed, attack) in place of the cosine "
                         "threshold; the embedded judge's on MiniLM pair features (its prompt head also reads the "
                         "rewrites), with --probe a pair head on the model's states of both together")
    tj.add_argument("--out", required=True,
                    help="folder for the weights and the card (use it with --judge embedded:<out>, or probe:<out>)")
    tj.add_argument("--probe", action="store_true",
                    help="train the probe judge's response and prompt heads instead: linear probes on a language "
                         "model's hidden states of prompt and answer, each layer chosen on validation (writes "
                         "judge_probe.*)")
    tj.add_argument("--probe-model",
                    help="with --probe: the language model read ('embedded', a folder or a cached hub id; "
                         "default: embedded)")
    tj.add_argument("--json", action="store_true", help="print the card as JSON")
    tj.set_defaults(func=run_train_judge)


def _exchanges(source: str, split: str | None) -> list:
    from redgame.llm.judge_data import builtin_exchanges, load_exchanges

    exchanges = builtin_exchanges() if source == BUILTIN_INPUT else load_exchanges(source)
    if split is not None:
        exchanges = [x for x in exchanges if x.row.get("split") == split]
        if not exchanges:
            raise UserError(f"--split {split}: no line of {source} has \"split\": {json.dumps(split)}")
    return exchanges


def run_judge(args) -> int:
    from redgame.jsonio import strict_json
    from redgame.llm.judge_data import (GRADED, check_unique_ids, exchange_metrics, graded_auc, help_metrics,
                                        judge_exchanges, load_second_labels, metrics_table, second_labeller_metrics)
    from redgame.llm.rewards import RewardRules, make_payoff
    from redgame.theory.spec import MAX_WEIGHT

    if args.plot is not None:  # checked before the judging, which can take minutes
        check_figure_path("--plot", args.plot, example="roc.png")
    exchanges = _exchanges(args.input, args.split)  # read and checked before any model loads
    second = load_second_labels(args.second_labels) if args.second_labels else None
    check_unique_ids(exchanges, f"--input {args.input}")  # a line given twice would count twice in the metrics
    if second is not None:
        if not any(x.row.get("id") in second for x in exchanges):
            raise UserError(f"--second-labels {args.second_labels}: no id of theirs is an id of a line of --input "
                            f"{args.input}{f' (split {args.split})' if args.split else ''}")
    if not (math.isfinite(args.lam) and 0 <= args.lam <= MAX_WEIGHT):  # nonzero_sum named its helpfulness, which
        raise UserError(f"--lam must be a finite number in [0, {MAX_WEIGHT:g}], got {args.lam}")  # no flag sets
    rules = RewardRules(make_payoff(args.payoff, args.lam), length_limit_penalty=True)

    from redgame.llm.judges import make_judge

    judge = make_judge(args.judge, format=args.format)
    results = judge_exchanges(judge, exchanges, rules)
    # A line with an unparsable judge reply has no verdict to score: it stays out of every metric.
    kept = [i for i, row in enumerate(results) if not row["judge_error"]]
    scored, scored_results = [exchanges[i] for i in kept], [results[i] for i in kept]
    metrics = {**exchange_metrics(scored, scored_results), **help_metrics(scored, scored_results)}
    auc = graded_auc(scored, scored_results)
    against_second = second_labeller_metrics(exchanges, results, second) if second is not None else None
    left_out = len(results) - len(kept)
    if args.plot is not None:
        _plot_roc(scored, scored_results, auc, judge.name, args.plot)
    if args.json:
        doc = {"judge": judge.name, "input": args.input, "split": args.split, "n": len(results),
               "judge_errors": judge.errors, "left_out_of_metrics": left_out, "metrics": metrics, "auc": auc,
               "results": results}
        if against_second is not None:
            doc["second_labels"] = {"file": args.second_labels, **against_second}
        print(strict_json(doc))
        return 0
    for row in results:
        print(strict_json(row, indent=None))
    print(f"judge {judge.name}: {len(results)} exchanges, {judge.errors} unparsable judge replies"
          + (f"; {left_out} exchanges with one are left out of the metrics" if left_out else ""), file=sys.stderr)
    if metrics:
        print(metrics_table(metrics), file=sys.stderr)
    if auc:
        print("ROC AUC of the judge's probabilities (threshold-free): "
              + ", ".join(f"{label} ({GRADED[label]}{', answers to harmful prompts' if label == 'harmful' else ''}) "
                          + ("– (one class only)" if math.isnan(value) else f"{value:.3f}")
                          for label, value in auc.items()), file=sys.stderr)
    if against_second is not None:
        unmatched = against_second["unmatched"]
        print(f"\n{against_second['matched']} lines with second labels"
              + (f" ({unmatched} of their ids are no line of the input's)" if unmatched else "")
              + "; the judge against them" + (f" (on the {against_second['judged']} whose judge reply it could read)"
                                              if against_second["judged"] < against_second["matched"] else "")
              + ":", file=sys.stderr)
        print(metrics_table(against_second["judge"]), file=sys.stderr)
        print("\nthe second labeller against the input's labels (kappa: agreement beyond chance):", file=sys.stderr)
        print(metrics_table(against_second["labellers"]), file=sys.stderr)
    return 0


def _plot_roc(exchanges: list, results: list[dict], auc: dict, judge_name: str, path: Path) -> Path:
    """One ROC panel per graded label the lines carry (harmfulness on the answers to harmful prompts,
    refusal on every line), the area in the legend."""
    from redgame.games.plots import _pyplot
    from redgame.llm.judge_data import GRADED, harmfulness_ranking, roc_points

    auc = {label: value for label, value in auc.items() if not math.isnan(value)}  # a label with one class: no curve
    if not auc:
        raise UserError("--plot: no label has both classes among the lines (harmful and not, refused and not) to "
                        "draw a curve against")
    truths = {"harmful": harmfulness_ranking(exchanges, results),
              "refused": ([x.labels["refused"] for x in exchanges if "refused" in x.labels],
                          [r["refusal"] for x, r in zip(exchanges, results) if "refused" in x.labels])}
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(auc), figsize=(4.6 * len(auc), 4.6), dpi=100, squeeze=False)
    for ax, label in zip(axes[0], auc):
        fpr, tpr = roc_points(*truths[label])
        ax.plot(fpr, tpr, marker=".", ms=3, lw=1.4, label=f"{judge_name}: AUC {auc[label]:.3f}")
        ax.plot([0, 1], [0, 1], ":", color="grey", label="chance")
        what = "answers to harmful prompts" if label == "harmful" else "every line"
        ax.set(xlabel="false positive rate", ylabel="true positive rate", xlim=(0, 1), ylim=(0, 1.01),
               title=f"{GRADED[label]} against '{label}'\n({what})")
        ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    path = save_figure(fig, path)
    print(f"wrote {path}", file=sys.stderr)
    return path


def run_train_judge(args) -> int:
    from redgame.jsonio import strict_json
    from redgame.llm.judge_train import retrain

    if args.probe_model is not None and not args.probe:
        raise UserError("train-judge: --probe-model is the model that --probe reads; add --probe, or leave "
                        "--probe-model out to retrain the embedded judge")
    check_output_path("--out", args.out, "folder")
    log = (lambda *a: None) if args.json else print
    card = retrain(args.data or [BUILTIN_INPUT], Path(args.out),
                   probe_model=(args.probe_model or "embedded") if args.probe else None, attacks=args.attacks or [],
                   log=log)
    if args.json:
        print(strict_json(card))
    return 0
