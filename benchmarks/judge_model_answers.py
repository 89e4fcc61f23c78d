"""Unlabelled exchanges of the embedded model, to be labelled by hand for the judge set.

The judge set (llm/data/judge_set.jsonl) was written by people; the game's numbers come from
the embedded model's own answers, which look different (they restate the request, then start
to comply in general terms, cut off at 24 or 48 tokens). This script writes those answers as
unlabelled JSONL lines (``prompt``, ``seed_class``, ``category``, ``seed_id``, ``response``,
``source``), the format of ``redgame llm judge --input``, for a reader to label.

Three modes:

- ``sample``: the defender's answers to the seeds of one split (train by default: the judge
  set's new rows may only use seeds the game trains on), in the game's defender chat format:
  the base model greedy at 24 and 48 new tokens and one temperature-1 sample at 48, and each
  run's final defender adapter (``--runs``) greedy at 24 tokens, as ``redgame demo`` evaluates; with
  ``--draws K``, K more temperature-1 answers of the base model at 24 tokens, as the game's rollouts
  sample them (``--no-base --draws K`` without ``--runs`` gives only those).
- ``draw``: a set to label from ``sample``'s output: every answer to a harmful seed and
  a fixed-seed draw of ``--benign K`` answers to benign seeds, shuffled, numbered, in the judge
  set's format without labels (as llm/data/judge_model_holdout_2.jsonl was drawn; ``--split train``
  or ``validation`` for rows to train the probe on, as llm/data/judge_model_sampled.jsonl was).
- ``demo``: the answers a ``redgame demo`` run saved (``<run>/answers.json``: the base and the
  trained defender on the test split, greedy, 24 tokens), to build the model hold-out set.

    python benchmarks/judge_model_answers.py sample --out runs/model_answers_train.jsonl \
        --runs runs/demo-s0/run runs/demo-s1/run ...
    python benchmarks/judge_model_answers.py demo --out runs/model_answers_test.jsonl \
        runs/demo-s0 runs/demo-s1 ...
    python benchmarks/judge_model_answers.py demo --no-base --distinct --out runs/defender_answers_val.jsonl \
        runs/val-nll4-s5 runs/val-nll2-s5 ...
    python benchmarks/judge_model_answers.py draw runs/model_answers_t1.jsonl --benign 84 \
        --prefix mh2 --out runs/model_holdout_2_unlabelled.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from redgame.errors import UserError, check_output_path
from redgame.jsonio import decode_utf8, parse_json, read_json_file, write_text_atomically


def _line(seed_id, prompt, harmful, category, response, source) -> dict:
    return {"seed_id": seed_id, "prompt": prompt, "seed_class": "harmful" if harmful else "benign",
            "category": category if harmful else "benign", "response": response.strip(), "source": source}


def sample(split: str, runs: list[str], seed: int, with_base: bool = True, draws: int = 0) -> list[dict]:
    """Each run's defender's answers to the seeds of ``split``, the base model's unless ``with_base`` is off,
    and ``draws`` more temperature-1 answers of the base model at 24 tokens (as the game's rollouts sample)."""
    import torch

    from redgame.llm.adapters import adapter_dir, attach, playing
    from redgame.llm.models import load_base
    from redgame.llm.prompts import chat_text, defender_messages
    from redgame.llm.rollout import SamplingSettings, generate
    from redgame.llm.seeds import builtin_seeds

    torch.manual_seed(seed)
    seeds = builtin_seeds(split)
    parents = [Path(r).parent.name for r in runs]  # <name>/run -> name
    if len(set(parents)) < len(runs):  # a second run of one name replaced the first, without a word
        raise UserError(f"--runs: {len(runs)} runs give {len(set(parents))} names (each run is named by its parent "
                        "folder, <name>/run); give runs whose parent folders differ")
    if "base" in parents:  # its answers would replace the base model's greedy ones (base-greedy-24)
        raise UserError("--runs: a run named 'base' (base/run) is taken for the base model; rename its folder")
    names = {name: adapter_dir(r) for name, r in zip(parents, runs)}
    base, tokenizer = load_base("embedded")
    model = attach(base, names)
    prompts = [chat_text(tokenizer, defender_messages(s.prompt)) for s in seeds]
    settings = {"base-greedy-24": (None, SamplingSettings(max_new_tokens=24, greedy=True)),
                "base-greedy-48": (None, SamplingSettings(max_new_tokens=48, greedy=True)),
                "base-t1-48": (None, SamplingSettings(max_new_tokens=48, temperature=1.0))} if with_base else {}
    settings |= {f"base-t1-24-{k}": (None, SamplingSettings(max_new_tokens=24, temperature=1.0)) for k in range(draws)}
    settings |= {f"{name}-greedy-24": (name, SamplingSettings(max_new_tokens=24, greedy=True)) for name in names}
    out = []
    for source, (adapter, setting) in settings.items():
        with playing(model, adapter) as m:
            answers = generate(m, tokenizer, prompts, setting)
        out += [_line(s.id, s.prompt, s.harmful, s.category, a.text, source) for s, a in zip(seeds, answers)]
        print(f"{source}: {len(answers)} answers", flush=True)
    return out


def from_demo(folders: list[str], with_base: bool = True, distinct: bool = False) -> list[dict]:
    """The base and trained answers a demo run saved (the base once: greedy answers are the same in every run);
    without ``with_base`` only the trained defenders'; with ``distinct`` each (prompt, answer) once."""
    from redgame.llm.seeds import builtin_seeds

    categories = {s.id: s.category for s in builtin_seeds("all")}
    out, seen = [], set()
    for folder in folders:
        path = Path(folder) / "answers.json"
        saved = read_json_file(path, f"{path} (a redgame demo output folder holds answers.json)")
        for role in ("base", "trained") if with_base else ("trained",):
            if not isinstance(saved.get(role), list):
                raise UserError(f"{path}: no list of '{role}' answers; is it a redgame demo's?")
            source = "base-greedy-24" if role == "base" else f"{Path(folder).name}-greedy-24"
            for n, a in enumerate(saved[role], 1):
                if not (isinstance(a, dict) and a.get("id") in categories and isinstance(a.get("prompt"), str)
                        and isinstance(a.get("answer"), str) and isinstance(a.get("harmful"), bool)):
                    raise UserError(f"{path}: '{role}' answer {n} is not a demo's answer to a built-in seed (id of a "
                                    "seed, prompt, answer, harmful)")
                key = (a["prompt"], a["answer"].strip())
                if (role == "base" or distinct) and key in seen:
                    continue
                seen.add(key)
                out.append(_line(a["id"], a["prompt"], a["harmful"], categories[a["id"]], a["answer"], source))
    return out


SAMPLED_FIELDS = ("prompt", "response", "category", "source")  # what draw copies from a line of sample


def draw(path: str, benign: int, prefix: str, seed: int, split: str = "holdout") -> list[dict]:
    """All answers to harmful seeds and ``benign`` drawn answers to benign ones, shuffled, numbered, in ``split``."""
    import random

    try:
        text = decode_utf8(Path(path).read_bytes(), path)
    except OSError as exc:
        raise UserError(f"{path}: cannot be read ({exc.strerror or type(exc).__name__})") from None
    rows = [parse_json(line, f"{path}, line {i}") for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    for i, r in enumerate(rows, 1):
        if not (isinstance(r, dict) and r.get("seed_class") in ("harmful", "benign")
                and all(isinstance(r.get(key), str) for key in SAMPLED_FIELDS)):
            raise UserError(f"{path}: exchange {i} is not a line of 'sample' (seed_class harmful or benign, and "
                            f"{', '.join(SAMPLED_FIELDS)} as text)")
    if not rows:
        raise UserError(f"{path}: no exchanges in it (write it with 'sample')")
    rng = random.Random(seed)
    drawn = [r for r in rows if r["seed_class"] == "harmful"]
    benign_rows = [r for r in rows if r["seed_class"] == "benign"]
    if not 0 <= benign <= len(benign_rows):
        raise UserError(f"--benign {benign}: {path} has {len(benign_rows)} answers to benign seeds")
    drawn += rng.sample(benign_rows, benign)
    rng.shuffle(drawn)
    return [{"id": f"{prefix}-{i:04d}", "split": split, "prompt": r["prompt"], "seed_class": r["seed_class"],
             "response": r["response"], "category": r["category"], "source": "embedded-model",
             "sampled": r["source"]} for i, r in enumerate(drawn, 1)]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    s = sub.add_parser("sample", help="generate answers to the seeds of a split")
    s.add_argument("--split", default="train")
    s.add_argument("--runs", nargs="*", default=[], help="run folders (<name>/run) whose final defender also answers")
    s.add_argument("--seed", type=int, default=0, help="torch seed of the temperature-1 samples")
    s.add_argument("--no-base", action="store_true", help="only the runs' defenders answer, not the base model")
    s.add_argument("--draws", type=int, default=0,
                   help="this many temperature-1 answers of the base model at 24 tokens per seed, as the game samples")
    s.add_argument("--threads", type=int, default=1)
    s.add_argument("--out", required=True)
    d = sub.add_parser("demo", help="the answers saved by redgame demo runs")
    d.add_argument("folders", nargs="+", help="demo output folders (holding answers.json)")
    d.add_argument("--no-base", action="store_true", help="only the trained defenders' answers")
    d.add_argument("--distinct", action="store_true", help="each (prompt, answer) once")
    d.add_argument("--out", required=True)
    h = sub.add_parser("draw", help="draw a hold-out set to label from the output of sample")
    h.add_argument("answers", help="a JSONL file written by sample")
    h.add_argument("--benign", type=int, required=True, help="how many answers to benign seeds to draw")
    h.add_argument("--prefix", required=True, help="the ids' prefix (mh2: mh2-0001, ...)")
    h.add_argument("--seed", type=int, default=2026, help="seed of the draw and the shuffle")
    h.add_argument("--split", default="holdout", help="the lines' split: holdout, or train / validation for rows to train on")
    h.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.mode == "sample" and args.draws < 0:
        parser.error(f"--draws must be at least 0, got {args.draws}")
    if args.mode == "sample" and args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    check_output_path("--out", args.out, "file", example="answers.jsonl")
    if args.mode == "sample":
        import torch

        torch.set_num_threads(args.threads)
        rows = sample(args.split, args.runs, args.seed, with_base=not args.no_base, draws=args.draws)
    elif args.mode == "draw":
        rows = draw(args.answers, args.benign, args.prefix, args.seed, args.split)
    else:
        rows = from_demo(args.folders, with_base=not args.no_base, distinct=args.distinct)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(args.out, "".join(json.dumps(r) + "\n" for r in rows))
    print(f"wrote {len(rows)} exchanges to {args.out}")


if __name__ == "__main__":
    from redgame.cli import script_main

    raise SystemExit(script_main("judge_model_answers", main))
