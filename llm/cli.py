"""``redgame llm train`` and ``redgame demo``.

torch and transformers are imported inside the handlers, so that ``redgame toy ...``
starts fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from redgame.errors import UserError
from redgame.llm import eval_cli
from redgame.llm.config import (REGIMES, TrainConfig, from_mapping, help_lines, load_file, lookup, parse_overrides,
                                train_seed_sources)


def register(subparsers) -> None:
    llm = subparsers.add_parser("llm", help="the attacker-defender game on a language model")
    llm_sub = llm.add_subparsers(dest="llm_command", metavar="COMMAND")
    llm_sub.required = True
    train = llm_sub.add_parser(
        "train", help="train attacker and defender by playing the game",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (set in --config FILE or with --set key=value):\n  " + "\n  ".join(help_lines()))
    train.add_argument("--model", help="'embedded', 'tiny', a local model folder or a Hugging Face Hub id in the "
                                       "local cache (default: embedded)")
    train.add_argument("--regime", help=f"one of {', '.join(REGIMES)} (default: bipolicy)")
    train.add_argument("--steps", type=int, help="game iterations in all (default: 20)")
    train.add_argument("--out", required=True, help="run folder: config, metrics, checkpoints, final adapters")
    train.add_argument("--config", help="TOML or YAML config file")
    train.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override one config key")
    train.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace the run already in --out")
    train.add_argument("--save-every", type=int, help="checkpoint every K steps (default: 10)")
    train.add_argument("--seed", type=int, help="seed of everything (default: 0)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_placement_flags(train)
    train.set_defaults(func=run_train)
    eval_cli.register(subparsers, llm_sub)
    register_probe(llm_sub)

    demo = subparsers.add_parser("demo", help="a short bipolicy game on the embedded model, then base vs trained")
    demo.add_argument("--out", default="runs/demo", help="output folder (default: runs/demo)")
    demo.add_argument("--steps", type=int, help="game iterations (default: the demo recipe's)")
    demo.add_argument("--split", default="test", choices=("validation", "test"),
                      help="held-out seeds it is measured on: validation while choosing a recipe (default: test)")
    demo.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="override one key of the recipe, e.g. update_chunk=8 (less memory) or threads=1")
    demo.add_argument("--no-progress", action="store_true", help="no progress bar")
    demo.add_argument("--resume", action="store_true", help="continue a demo stopped in --out (Ctrl-C) from its "
                      "checkpoint, with the same flags (--steps, threads, save_every and keep_checkpoints aside)")
    demo.add_argument("--overwrite", action="store_true", help="replace the demo in --out")
    add_placement_flags(demo)
    demo.set_defaults(func=run_demo)


def register_probe(llm_sub) -> None:
    probe = llm_sub.add_parser(
        "probe", help="the mirror gap: a fresh attacker trained against a run's frozen defender",
        description="Freezes the run's defender, trains a fresh attacker adapter from the base against it for "
                    "--steps game steps (the run's recipe, attacker only), then reports on held-out harmful seeds "
                    "the self-play ASR (the run's own attacker), the best-response ASR and the mirror gap, judged "
                    "by the evaluation judge, with 95% intervals over prompts (Wilson for each ASR, Newcombe's "
                    "paired interval for the gap).")
    probe.add_argument("--run", required=True, help="a run folder of 'redgame llm train' (config.json, final/)")
    probe.add_argument("--steps", type=int, required=True, help="best-response training steps")
    probe.add_argument("--split", default="validation", choices=("validation", "test"),
                       help="held-out seeds: validation while choosing recipes, test for reported numbers "
                            "(default: validation)")
    probe.add_argument("--model", help="the run's base model (default: the one in its config.json)")
    probe.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override one config key of the best-response training (default: the run's recipe)")
    probe.add_argument("--prompts", type=int, default=0, help="the split's first N harmful seeds, N >= 2 (default 0: all)")
    probe.add_argument("--eval-judge", "--judge", dest="eval_judge", default="embedded",
                       help="the evaluation judge, named as for llm eval (default: embedded)")
    probe.add_argument("--seed", type=int, default=0, help="seed of the probe's attacker (default: 0)")
    probe.add_argument("--out", help="output folder (default: <run>/probe)")
    probe.add_argument("--json", action="store_true", help="print the JSON summary")
    probe.add_argument("--no-progress", action="store_true", help="no progress bar")
    probe.add_argument("--resume", action="store_true",
                       help="continue a stopped probe in --out from its checkpoint (the same flags, --steps, "
                            "save_every and keep_checkpoints aside)")
    probe.add_argument("--overwrite", action="store_true", help="replace the probe that --out holds")
    add_placement_flags(probe)
    probe.set_defaults(func=run_probe)


def add_placement_flags(parser) -> None:
    """``--device`` and ``--dtype``, the same for every command that runs a model."""
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: auto, the CUDA device when torch sees "
                                         "one, else the CPU)")
    parser.add_argument("--dtype", help="auto | float32 | bfloat16 | float16 of the base model (default: auto, "
                                        "bfloat16 on CUDA, float32 on CPU)")


def placement_of(args):
    """(torch device, torch dtype) from ``--device`` / ``--dtype``, checked before anything loads."""
    from redgame.llm.config import check_device_name, check_dtype_name
    from redgame.llm.models import placement

    device, dtype = flag_or_auto(args.device), flag_or_auto(args.dtype)
    check_device_name(device)
    check_dtype_name(dtype)
    return placement(device, dtype)


def flag_or_auto(value: str | None) -> str:
    """A --device / --dtype as given ("" too: refused as train refuses it), or auto when absent."""
    return "auto" if value is None else value


def resolve_config(args) -> TrainConfig:
    """The file, with --set and the explicit flags over it (a key given by both is refused); checked before any
    compute.

    The file is ``--config``; with ``--resume`` and no ``--config``, the run's own ``config.json``, so that a
    bare ``--resume`` continues the recipe the run was started with (the flags and ``--set`` still change it).
    """
    from redgame.llm.run_dir import RUN_MARKER, holds_a_run  # another tool's config.json: one line from it

    saved = Path(args.out) / RUN_MARKER
    config = args.config or (str(saved) if args.resume and holds_a_run(saved.parent) else None)
    cfg = from_mapping(load_file(config), where=f" in {config}") if config else TrainConfig()
    flags = {key: getattr(args, key) for key in ("model", "regime", "steps", "save_every", "seed", "device", "dtype")}
    overrides = parse_overrides(args.set, flags)
    saved_judge = cfg.judge
    cfg = from_mapping(overrides, where=" (command line)", base=cfg).validate()
    if config == str(saved) and not args.config and cfg.judge == saved_judge:  # the file's server, not one typed
        say_which_server_judges(cfg, saved)
    check_model_name(cfg.model)
    check_device(cfg.device)
    for name in train_seed_sources(cfg.train_seeds):
        path = None if name == "builtin" else lookup(name, "config key 'train_seeds'")
        if name != "builtin" and not (path and path.is_file()):  # a folder: not a file, as --harmful says
            raise FileNotFoundError(f"config key 'train_seeds': seed file {name}: "
                                    + ("not a file" if path else "not found"))
    return cfg


def say_which_server_judges(cfg: TrainConfig, saved: Path) -> None:
    """A bare --resume that will send the exchanges to a judge server says which, on stderr: the run's folder may
    have come from someone else, and its config.json names their server."""
    from redgame.llm.judge_formats import judge_kind

    if judge_kind(cfg.judge, cfg.judge_format) == "http" and os.environ.get("RANK", "0") == "0":
        print(f"redgame: resuming with the judge server that {saved} names: {cfg.judge} (--set judge=... for "
              "another)", file=sys.stderr)


def check_model_name(name: str) -> None:
    """'embedded', 'tiny', an existing path, or a Hub id in the local cache; a one-line error otherwise."""
    from redgame.llm.models import model_location

    model_location(name)


def check_device(device: str) -> None:
    """A CUDA device asked for where there is none: a one-line error before any compute."""
    if device != "auto" and device != "cpu":
        from redgame.llm.models import resolve_device

        resolve_device(device)


def run_train(args) -> int:
    from redgame.llm.trainer import TrainingStopped, train

    cfg = resolve_config(args)
    try:
        result = train(cfg, args.out, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    except TrainingStopped as exc:
        print(f"redgame: {exc}", file=sys.stderr)
        return 1
    if result["stopped"]:  # Ctrl-C: checkpointed, not finished; 130 as for any interrupted command (train && eval stops)
        return 130
    if os.environ.get("RANK", "0") == "0":  # under torchrun: rank 0 reports
        saved = "full weights" if cfg.full_finetune else "adapters"
        print(f"done: {result['steps']} steps; {saved} in {Path(args.out) / 'final'}")
    return 130 if result["interrupted"] else 0  # Ctrl-C in the last step finished the run: train && eval stops


def run_probe(args) -> int:
    from redgame.jsonio import strict_json
    from redgame.llm.probe import probe, report_lines
    from redgame.llm.trainer import TrainingStopped

    device, dtype = flag_or_auto(args.device), flag_or_auto(args.dtype)
    placement_of(args)  # a bad or absent device: one line before anything loads
    overrides = parse_overrides(args.set)
    try:
        summary = probe(args.run, steps=args.steps, split=args.split, out=args.out, eval_judge=args.eval_judge,
                        seed=args.seed, prompts=args.prompts, model=args.model, overrides=overrides, device=device,
                        dtype=dtype, progress=not args.no_progress, log=say_beside_json if args.json else print,
                        resume=args.resume, overwrite=args.overwrite)
    except TrainingStopped as exc:  # the best response diverged: no probe.json, as for a stopped train
        print(f"redgame: probe: {exc}", file=sys.stderr)
        return 1
    print(strict_json(summary) if args.json else "\n".join(report_lines(summary)))  # NaN: null
    return 0


def say_beside_json(*text) -> None:
    """A line for the user where stdout carries JSON: on stderr (a stopped probe's resume command was lost)."""
    print(*text, file=sys.stderr, flush=True)


def run_demo(args) -> int:
    from redgame.llm.demo import run
    from redgame.llm.trainer import TrainingStopped

    if args.steps is not None and args.steps < 1:
        raise UserError(f"--steps must be >= 1, got {args.steps}")
    overrides = parse_overrides(args.set, {k: getattr(args, k) for k in ("device", "dtype")})
    if "steps" in overrides:
        raise UserError("demo: set the number of steps with --steps")
    try:
        run(args.out, steps=args.steps, progress=not args.no_progress, split=args.split, resume=args.resume,
            overwrite=args.overwrite, **overrides)
    except TrainingStopped as exc:
        print(f"redgame: {exc}", file=sys.stderr)
        return 1
    return 0
