"""A run's folder: checked before any compute, claimed once the model has loaded, checked again on resume.

A folder holds a run when its ``config.json`` (``RUN_MARKER``) is a redgame run's config: it is written
first, atomically, so a run stopped at any point is still recognised as one. A new run never writes
into a folder that holds another's files; ``--overwrite`` removes only the files a run writes.
"""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path

from redgame.errors import UserError
from redgame.jsonio import write_text_atomically
from redgame.llm import checkpoint as ckpt
from redgame.llm.adapters import is_run_config
from redgame.llm.config import CHECKPOINT_KEYS, TrainConfig, resolve_reference, set_flag

RUN_MARKER = "config.json"
RUN_FILES = (RUN_MARKER, "metrics.jsonl", "population.json", "tb", ckpt.CHECKPOINTS, "final", "eval.json", "probe")
TRAINING_FILES = ("metrics.jsonl", "population.json", "tb", ckpt.CHECKPOINTS, "final")  # written only by a run


def check_run_dir(out: str | Path, cfg: TrainConfig, *, resume: bool, overwrite: bool) -> Path:
    """Check the output folder before any compute; change nothing in it (:func:`claim_run_dir` does, later)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    if resume and overwrite:
        raise UserError("--resume continues the run in --out and --overwrite replaces it; pass one of them")
    holds_run = holds_a_run(out)
    if resume:
        last = ckpt.latest_checkpoint(out)
        if last is None:
            again = "start it again with --overwrite" if holds_run else "start without --resume"
            raise UserError(f"--resume: no checkpoint under {out / ckpt.CHECKPOINTS}; {again}")
        check_resumable(out, cfg, int(last.name.removeprefix("step_")))
    elif holds_run and not overwrite:
        raise UserError(f"--out {out} already holds a run; pass --resume to continue it or --overwrite to replace it")
    elif not holds_run and (strays := [name for name in TRAINING_FILES if (out / name).exists()]):
        raise UserError(f"--out {out} holds {', '.join(strays)} but no run {RUN_MARKER}: a new run would add to "
                        "them and --overwrite would remove files it did not write; choose another folder")
    return out


def check_command_dir(out: Path, run: Path, results: tuple[str, ...], cfg: TrainConfig, *, resume: bool,
                      overwrite: bool, what: str,
                      may_change: tuple[str, ...] = ("steps", "threads", *CHECKPOINT_KEYS)) -> None:
    """A folder where a command (the demo, the probe) keeps its ``results`` beside the run it trains in ``run``: one
    that holds them or the run is continued with ``resume``, replaced with ``overwrite``, and otherwise refused; then
    ``run`` is checked as ``llm train`` checks one. A resume must be given the stopped command's recipe (its flags and
    ``--set``), the keys of ``may_change`` aside: they only extend, place or checkpoint it."""
    from redgame.jsonio import read_json_file

    if resume and overwrite:
        raise UserError(f"--resume continues the {what} in --out and --overwrite replaces it; pass one of them")
    holds = any((out / name).exists() for name in results) or holds_a_run(run)
    if holds and not (resume or overwrite):
        if ckpt.latest_checkpoint(run) is None:  # a kill before the first checkpoint left none
            raise UserError(f"--out {out} already holds a {what} with no checkpoint to resume from; pass --overwrite "
                            "to replace it, or another --out")
        raise UserError(f"--out {out} already holds a {what}; pass --resume to continue a stopped one, --overwrite "
                        "to replace it, or another --out")
    last = ckpt.latest_checkpoint(run) if resume and holds else None
    if resume and holds and last is None:  # check_run_dir would say "without --resume"
        raise UserError(f"--resume: no checkpoint under {run / ckpt.CHECKPOINTS}; start the {what} again with "
                        "--overwrite")
    if last is not None:  # before check_run_dir, whose advice is llm train's (a bare --resume keeps the run's config)
        saved, wanted = read_json_file(run / RUN_MARKER, str(run / RUN_MARKER)), cfg.to_dict()
        changed = sorted(k for k in wanted if k not in may_change and saved.get(k) != wanted[k])
        if changed:
            shown = ", ".join(f"{k} {saved.get(k)!r} (now {wanted[k]!r})" for k in changed)
            restore = " ".join(set_flag(k, saved.get(k)) for k in changed)
            raise UserError(f"--resume: the stopped {what}'s recipe differs in {shown}; resume with the flags and "
                            f"--set it was started with (these restore it: {restore})")
        if all((out / name).exists() for name in results) and ckpt.checkpoint_step(last) >= cfg.steps:
            raise UserError(f"--resume: the {what} in {out} finished its {cfg.steps} steps ({results[0]} is there): "
                            "nothing to resume; pass more --steps to train it on, or --overwrite to replace it")
    check_run_dir(run, cfg, resume=resume, overwrite=not resume)


def holds_a_run(out: Path) -> bool:
    """Whether ``out`` holds a redgame run (its ``config.json``, written before anything else); a
    ``config.json`` of something else is refused, never replaced."""
    marker = out / RUN_MARKER
    if marker.is_file():
        try:
            saved = json.loads(marker.read_bytes())  # written atomically: a run's always parses
        except (ValueError, RecursionError):
            saved = None
        if not is_run_config(saved):
            raise UserError(f"--out {out}: its {RUN_MARKER} is not a redgame run's (no model, regime and steps); "
                            "choose another folder, or remove that file if it is a damaged run's")
        return True
    return False


def claim_run_dir(out: Path, cfg: TrainConfig, *, resume: bool) -> None:
    """Once the model and judge have loaded: remove the replaced run's files (a fresh start in a folder that
    holds one, checked by :func:`check_run_dir`), and write the resolved config."""
    if not resume and holds_a_run(out):
        # the run's files, and the results that speak of it (its eval.json and probe/, read by `redgame report`);
        # config.json last, so that a stop midway leaves a folder that is still a run, which --overwrite takes
        for name in RUN_FILES[1:] + RUN_FILES[:1]:
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out / RUN_MARKER, json.dumps(cfg.to_dict(), indent=1) + "\n")


# What a resumed run must keep: the keys that make its weights what they are. The recipe (learning rate,
# seeds, losses, steps) may change on resume, as in a curriculum.
RESUME_MUST_KEEP = ("model", "regime", "full_finetune", "lora_rank", "lora_alpha", "reference")


def check_resumable(out: Path, cfg: TrainConfig, last_step: int) -> None:
    """A config that cannot continue the run in ``out`` (another base model or weight shape; no step left):
    a one-line error before the run's config.json is touched."""
    try:
        saved = json.loads((out / RUN_MARKER).read_text())
    except (OSError, ValueError):
        saved = None  # no readable config: the checkpoint's own check decides
    if isinstance(saved, dict):
        changed = [k for k in RESUME_MUST_KEEP if k in saved and _weights_key(saved, k) != _weights_key(cfg.to_dict(), k)]
        if changed:
            wanted, key = cfg.to_dict(), changed[0]
            raise UserError(f"--resume: this config's {key} is {wanted[key]!r}, the run's is {saved[key]!r}; "
                            f"{', '.join(RESUME_MUST_KEEP)} make the run's weights and cannot change on resume "
                            f"(a bare --resume continues with the run's own {out / RUN_MARKER}: leave out the flag, "
                            f"--set or --config that changes {key})")
    if cfg.steps < last_step:  # at last_step itself the run writes its final roles again (a kill may have cut them)
        raise UserError(f"--resume: the run is at step {last_step}; --steps {cfg.steps} is fewer; give at least "
                        f"{last_step}")


def _weights_key(config: dict, key: str):
    """What ``key`` of a run's config means for its weights: the reference as resolved ('auto' is advgame's EMA,
    the base otherwise); no LoRA shape under full fine-tuning, which trains none."""
    if key == "reference":
        return resolve_reference(config.get("regime"), config.get(key))
    if key in ("lora_rank", "lora_alpha") and config.get("full_finetune"):
        return None
    return config.get(key)


def keep_metrics_until(path: Path, step: int) -> list[int]:
    """Drop the metrics rows after ``step`` (steps a killed run did not checkpoint, redone on resume); returns the
    steps up to ``step`` with no readable row (damaged or removed rows: their metrics are lost for good)."""
    if not path.is_file():
        return list(range(1, step + 1))
    kept = []
    for line in path.read_bytes().decode("utf-8", errors="replace").splitlines():  # damaged bytes: that row goes
        try:
            row = json.loads(line)
        except (ValueError, RecursionError):  # a row cut short by the kill
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append((row["step"], line + "\n"))
    write_text_atomically(path, "".join(line for _, line in kept))
    return sorted(set(range(1, step + 1)) - {n for n, _ in kept})


def step_ranges(steps: list[int]) -> str:
    """Sorted step numbers said as ranges: [1, 2, 3, 7] -> "1-3, 7"."""
    runs: list[list[int]] = []
    for n in steps:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def resume_hint(out: Path, rerun: str | None = None) -> str:
    """Where a stopped run can continue from: its last checkpoint and the command that resumes it
    (``rerun``: the command that started it, where that is not ``redgame llm train``, e.g. the demo)."""
    last = ckpt.latest_checkpoint(out)
    config, folder = shlex.quote(str(out / RUN_MARKER)), shlex.quote(str(out))
    if rerun is not None:
        return (f"no checkpoint yet; start again with {rerun}, adding --overwrite" if last is None else
                f"last checkpoint {last}; continue with {rerun}, adding --resume (and leaving out --overwrite)")
    if last is None:
        return f"no checkpoint yet; start again with: redgame llm train --config {config} --out {folder} --overwrite"
    return f"last checkpoint {last}; continue with: redgame llm train --config {config} --out {folder} --resume"
