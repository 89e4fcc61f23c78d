"""``redgame llm eval``, ``redgame llm crossplay`` and ``redgame report``.

Registered from ``redgame.llm.cli``; torch and transformers are imported in the handlers.
"""

from __future__ import annotations

import json
from pathlib import Path

from redgame.errors import UserError
from redgame.jsonio import strict_json, write_json
from redgame.llm import judge_cli
from redgame.llm.judge_formats import FORMATS


def register(subparsers, llm_subparsers) -> None:
    """Add ``eval`` and ``crossplay`` under ``redgame llm``, and the top-level ``report``."""
    ev = llm_subparsers.add_parser(
        "eval", help="ASR, over-refusal and a utility proxy of a model (and an adapter)",
        description="Greedy answers to harmful and benign prompts, labelled by the judge, plus multiple-choice "
                    "accuracy by log-likelihood. Defaults: the held-out test split of the built-in seeds.")
    ev.add_argument("--model",
                    help="'embedded', 'tiny', a local model folder or a Hugging Face Hub id in the local cache "
                         "(default: the model of the run that --adapter is in, else embedded)")
    ev.add_argument("--adapter", help="a LoRA adapter folder, a run folder (its final/defender) or one of its "
                                      "checkpoints (checkpoints/step_NNNN, zero-padded: its defender)")
    ev.add_argument("--split", default="test", choices=("train", "validation", "test"),
                    help="the built-in seeds' split whose prompts are evaluated where --harmful / --benign are not "
                         "given: test for reported numbers, validation while choosing a recipe (default: test)")
    ev.add_argument("--harmful", help="harmful prompts: HarmBench CSV, JSONL/JSON, or one per line")
    ev.add_argument("--benign", help="benign prompts: JSONL/JSON, one per line, or an XSTest CSV (prompt,type,label)")
    ev.add_argument("--utility", help="multiple-choice JSONL (question, choices, answer); default: built-in set")
    ev.add_argument("--no-utility", action="store_true", help="skip the utility proxy")
    ev.add_argument("--no-base", action="store_true", help="with --adapter: do not also evaluate the base")
    ev.add_argument("--eval-judge", "--judge", dest="eval_judge", default="embedded",
                    help="the evaluation judge, separate from the one a run trained against: 'embedded', "
                         "'embedded:<folder>', 'probe', 'probe:<folder>', 'lm:<model>' or 'http:<url>[#model]' "
                         "(default: embedded); the refusal-string metric is reported beside it")
    ev.add_argument("--eval-judge-format", default="redgame", choices=FORMATS,
                    help="classifier prompts of an lm:/http: evaluation judge (default: redgame)")
    ev.add_argument("--max-new-tokens", type=int, default=48, help="answer length (default: 48)")
    ev.add_argument("--out", help="also write the JSON (with every answer) to this file")
    ev.add_argument("--json", action="store_true", help="print JSON instead of the markdown table")
    _device_and_progress_flags(ev)
    ev.set_defaults(func=run_eval, out_kind="file")

    cp = llm_subparsers.add_parser(
        "crossplay", help="every attacker against every defender; the meta-Nash of the ASR matrix",
        description="Attackers: the base prompted as attacker, a static jailbreak-template attacker, each run's "
                    "final attacker. Defenders: the base and each run's final defender. Writes "
                    "<out>/crossplay.json and <out>/crossplay.png.")
    cp.add_argument("--model", help="base model of the runs (default: the runs' own)")
    cp.add_argument("--runs", nargs="+", required=True, metavar="RUN_DIR", help="run folders of 'redgame llm train'")
    cp.add_argument("--out", required=True, help="output folder")
    cp.add_argument("--split", default="test", choices=("train", "validation", "test"),
                    help="the built-in seeds' split that is played where --seeds is not given: test for reported "
                         "numbers, validation while choosing a recipe (default: test)")
    cp.add_argument("--seeds", help="held-out seed file with harmful and benign rows (default: the built-in --split)")
    cp.add_argument("--templates", help="jailbreak template file (JSON list/object, or text blocks split by ---)")
    cp.add_argument("--judge", "--eval-judge", dest="judge", default="embedded",
                    help="the evaluation judge (default: embedded)")
    cp.add_argument("--judge-format", default="redgame", choices=FORMATS,
                    help="classifier prompts of an lm:/http: judge (default: redgame)")
    cp.add_argument("--attack-tokens", type=int, default=64, help="attack length (default: 64)")
    cp.add_argument("--response-tokens", type=int, default=48, help="answer length (default: 48)")
    cp.add_argument("--json", action="store_true", help="print crossplay.json")
    cp.add_argument("--overwrite", action="store_true", help="replace the crossplay.json and crossplay.png in --out")
    _device_and_progress_flags(cp)
    cp.set_defaults(func=run_crossplay)

    judge_cli.register(llm_subparsers)

    rp = subparsers.add_parser(
        "report", help="markdown + HTML report of LLM-game runs: curves, Pareto plot, cross-play, meta-Nash")
    rp.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folders (metrics.jsonl, optional eval.json)")
    rp.add_argument("--crossplay", help="a crossplay.json or the folder holding it")
    rp.add_argument("--out", default="report", help="output folder (default: report)")
    rp.set_defaults(func=run_report)


def _device_and_progress_flags(parser) -> None:
    from redgame.llm.cli import add_placement_flags

    add_placement_flags(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def _placement(args):
    from redgame.llm.cli import placement_of

    return placement_of(args)


def _positive(name: str, value: int) -> None:
    if value < 1:
        raise UserError(f"{name} must be >= 1, got {value}")


def _check_model(name: str) -> None:
    from redgame.llm.cli import check_model_name

    check_model_name(name)


def prompt_source(path: str | None, split: str) -> str:
    """Where an evaluation's prompts came from, as its JSON records it: the user's file, or the built-in split."""
    return str(Path(path).resolve()) if path else f"built-in {split} split"


def check_eval_out(out: Path) -> None:
    """``--out`` replaces an earlier evaluation's JSON only: not an input file, a run's config, or anything else."""
    if out.is_dir():
        raise UserError(f"--out {out} is a folder; give a file, e.g. {out / 'eval.json'}")
    if not out.exists() or out.stat().st_size == 0:  # an empty file holds nothing to lose
        return
    try:
        doc = json.loads(out.read_text())
    except (OSError, UnicodeDecodeError, ValueError):
        doc = None
    if not (isinstance(doc, dict) and {"results", "table"} <= doc.keys()):
        raise UserError(f"--out {out} exists and is not an evaluation's JSON (redgame llm eval --out); it is not "
                        "replaced: choose another file, or remove it first")


def run_eval(args) -> int:
    from redgame.llm import safety_eval
    from redgame.llm.adapters import adapter_sha256, attach, checked_adapter_dir, playing, run_model_of
    from redgame.llm.judge_formats import judge_kind
    from redgame.llm.rate_intervals import interval_lines, intervals
    from redgame.llm.seeds import check_one_class_a_prompt
    from redgame.llm.utility import choice_jobs, load_questions

    _positive("--max-new-tokens", args.max_new_tokens)
    if args.no_base and not args.adapter:
        raise UserError("--no-base skips the base beside an --adapter; without --adapter there is nothing to evaluate")
    if args.no_utility and args.utility:
        raise UserError("--utility names the questions that --no-utility skips; pass one of them")
    judge_kind(args.eval_judge, args.eval_judge_format, where="--eval-judge: ")
    args.model = args.model or (run_model_of(args.adapter) if args.adapter else None) or "embedded"
    _check_model(args.model)
    if args.out:
        check_eval_out(Path(args.out))
    device, dtype = _placement(args)
    # Every file is read and checked before any model loads.
    default_harmful, default_benign = safety_eval.default_sets(args.split)
    harmful, dropped_h = safety_eval.load_class(args.harmful, harmful=True) if args.harmful else (default_harmful, 0)
    benign, dropped_b = safety_eval.load_class(args.benign, harmful=False) if args.benign else (default_benign, 0)
    if args.harmful or args.benign:  # a prompt in both classes would count as a refusal and as an over-refusal
        files = " and ".join(f"--{flag} {path}" if path else f"the built-in {args.split} split's {flag} prompts"
                             for flag, path in (("harmful", args.harmful), ("benign", args.benign)))
        check_one_class_a_prompt(harmful + benign, files)
    questions = None if args.no_utility else load_questions(args.utility)
    adapter = checked_adapter_dir(args.adapter) if args.adapter else None

    from redgame.llm.judges import make_judge
    from redgame.llm.models import load_base, place_judge

    base, tokenizer = load_base(args.model, dtype=dtype, device=device)
    if questions:
        choice_jobs(base, tokenizer, questions)  # each fits the model's context: checked before any answer is generated
    judge = make_judge(args.eval_judge, format=args.eval_judge_format)
    place_judge(judge, device, dtype)
    model = attach(base, {"evaluated": adapter} if adapter else {})
    names = ([] if adapter and args.no_base else ["base"]) + (["adapter"] if adapter else [])
    from tqdm import tqdm

    results = {}
    for name in tqdm(names, desc="eval", unit="model", disable=args.no_progress or args.json):
        with playing(model, "evaluated" if name == "adapter" else None) as m:
            results[name] = safety_eval.evaluate(m, tokenizer, judge, harmful, benign, questions,
                                                 max_new_tokens=args.max_new_tokens)
    summary = {
        "model": args.model, "adapter": str(Path(adapter).resolve()) if adapter else None,
        "adapter_sha256": adapter_sha256(adapter) if adapter else None,  # which weights: a run may train on since
        "eval_judge": judge.name,
        "refusal_strings": "a refusal phrase in the answer's first 400 characters (no judge)",
        "harmful_file": prompt_source(args.harmful, args.split),
        "benign_file": prompt_source(args.benign, args.split),
        "set_aside": {"harmful_file": dropped_h, "benign_file": dropped_b},
        "results": {k: {m: v for m, v in r.items() if m != "answers"} for k, r in results.items()},
        "table": safety_eval.markdown_table(results),
        "intervals": intervals({k: r["answers"] for k, r in results.items()}),  # over the prompts, not seeds
    }
    # printed before the file is written: a write that fails (a full disk) does not take the numbers with it
    if args.json:
        print(strict_json(summary), flush=True)
    else:
        print(f"{len(harmful)} harmful, {len(benign)} benign prompts; greedy, {args.max_new_tokens} tokens; "
              f"evaluation judge {judge.name} (and refusal strings)")
        print(summary["table"])
        print("\n95% intervals of the judge's rates over these prompts (Wilson; Newcombe for the paired change):")
        for line in interval_lines(summary["intervals"]):
            print(f"  {line}", flush=True)
    if args.out:
        full = {**summary, "answers": {k: r["answers"] for k, r in results.items()}}
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        write_json(args.out, full)
    return 0


def run_crossplay(args) -> int:
    from redgame.errors import check_not_replacing
    from redgame.llm import crossplay
    from redgame.llm.adapters import run_model
    from redgame.llm.judge_formats import judge_kind
    from redgame.llm.seeds import builtin_seeds, load_seeds
    from redgame.llm.templates import load_templates

    _positive("--attack-tokens", args.attack_tokens)
    _positive("--response-tokens", args.response_tokens)
    check_not_replacing(args.out, crossplay.OUTPUTS, args.overwrite, "a cross-play")
    runs = crossplay.find_runs(args.runs)
    models = set() if args.model else {run_model(r.path) for r in runs}
    model_name = args.model or (models.pop() if len(models) == 1 else None)
    if model_name is None:
        raise UserError(f"--runs were trained on different models {sorted(map(str, models))}; pass --model")
    _check_model(model_name)
    device, dtype = _placement(args)
    seeds = load_seeds(args.seeds) if args.seeds else builtin_seeds(args.split)
    crossplay.check_seeds(seeds, f"--seeds {args.seeds}" if args.seeds else f"cross-play on the {args.split} split")
    templates = load_templates(args.templates)
    judge_kind(args.judge, args.judge_format, where="--judge: ")

    from redgame.llm.judges import make_judge
    from redgame.llm.models import load_base, place_judge

    base, tokenizer = load_base(model_name, dtype=dtype, device=device)
    judge = make_judge(args.judge, format=args.judge_format)
    place_judge(judge, device, dtype)
    played = crossplay.crossplay(base, tokenizer, judge, runs, seeds, templates=templates,
                                 attack_tokens=args.attack_tokens, response_tokens=args.response_tokens,
                                 log=(lambda *a: None) if args.json else print,
                                 progress=not (args.no_progress or args.json))
    result = {"model": model_name, "eval_judge": judge.name, "seeds": prompt_source(args.seeds, args.split),
              "n_harmful": sum(s.harmful for s in seeds), "n_benign": sum(not s.harmful for s in seeds),
              **crossplay.summarise(played, runs)}
    # printed before the files are written: a write that fails (a full disk) does not take the numbers with it
    if args.json:
        print(strict_json(result), flush=True)
    else:
        print(f"meta-game value (ASR at the meta-Nash): {result['value']:.3f}")
        print("attacker mix: " + ", ".join(f"{n} {w:.2f}" for n, w in zip(result["attackers"], result["attacker_mix"])))
        print("defender mix: " + ", ".join(f"{n} {w:.2f}" for n, w in zip(result["defenders"], result["defender_mix"])))
        for name, g in result["mirror_gap"].items():
            print(f"mirror gap of {name} ({g['regime']}): self-play ASR {g['selfplay_asr']:.2f}, "
                  f"best other ({g['best_other_attacker']}) {g['best_other_asr']:.2f}, gap {g['mirror_gap']:+.2f}",
                  flush=True)
    json_path, png = crossplay.write(result, Path(args.out))
    if not args.json:
        print(f"wrote {json_path} and {png}")
    return 0


def run_report(args) -> int:
    from redgame.llm.report import build_report

    md, html, pictures = build_report(args.runs, Path(args.out), crossplay=args.crossplay)
    print(f"wrote {md} and {html}" + (f", with {', '.join(pictures)}" if pictures else ""))
    return 0

