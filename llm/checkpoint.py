"""Checkpoints of a game run: weights, optimiser and RNG states, written atomically.

A checkpoint is a folder ``checkpoints/step_XXXX/`` holding

- ``attacker/`` and ``defender/``: the roles' adapters in peft's format (safetensors);
- ``weights.safetensors``: every trainable and EMA-reference tensor, for an exact resume;
- ``optimizer.safetensors`` + ``optimizer.json``: the optimisers' tensors and hyper-parameters;
- ``rng.safetensors``: torch's CPU (and CUDA) generator states;
- ``state.json``: the step reached and the rest of the run's small state.

It is written to a temporary folder and renamed into place, so a crash never leaves a
half-written checkpoint. Only safetensors and JSON are read back: no pickle.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from redgame.errors import UserError, naming_the_file
from redgame.llm.adapters import non_finite

CHECKPOINTS = "checkpoints"
_STEP_DIR = re.compile(r"^step_(\d+)$")


def temp_dir_beside(target: Path, family: str | None = None) -> Path:
    """A new temporary folder next to ``target``, after removing those a killed writer left: for ``target``,
    or for every name that starts with ``family`` (``"step_"``: every checkpoint's)."""
    stem = family if family is not None else f"{target.name}."
    for prefix in (f".tmp.{stem}", f".old.{stem}"):
        for stale in target.parent.glob(prefix + "*"):
            shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".tmp.{target.name}.", dir=target.parent))


@contextlib.contextmanager
def folder_written_whole(target: Path, family: str | None = None):
    """Write ``target`` through the temporary folder this yields (:func:`temp_dir_beside`), which then replaces
    it in one rename (:func:`replace_dir`); a block that stops midway leaves the old ``target`` and no temporary
    folder."""
    tmp = temp_dir_beside(target, family)
    try:
        with naming_the_file(target):
            yield tmp
            replace_dir(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def replace_dir(src: Path, dst: Path) -> None:
    """Rename the complete folder ``src`` to ``dst``: ``dst`` is never seen half written or half deleted."""
    if not dst.exists():
        os.replace(src, dst)
        return
    old = Path(tempfile.mkdtemp(prefix=f".old.{dst.name}.", dir=dst.parent))
    os.replace(dst, old / dst.name)
    os.replace(src, dst)
    shutil.rmtree(old, ignore_errors=True)


def _optimizer_tensors(name: str, optimizer: torch.optim.Optimizer) -> tuple[dict, dict]:
    state = optimizer.state_dict()
    tensors, meta = {}, {"param_groups": state["param_groups"], "scalars": {}}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"{name}/{index}/{key}"] = value.detach().cpu().contiguous()
            else:
                meta["scalars"][f"{index}/{key}"] = value
    return tensors, meta


def _restore_optimizer(name: str, optimizer: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    prefix = f"{name}/"
    for key, value in tensors.items():
        if key.startswith(prefix):
            index, field = key[len(prefix):].split("/", 1)
            state.setdefault(int(index), {})[field] = value
    for key, value in meta["scalars"].items():
        index, field = key.split("/", 1)
        state.setdefault(int(index), {})[field] = value
    check_adamw_state(optimizer, state)
    settings = [{k: v for k, v in group.items() if k != "params"} for group in optimizer.param_groups]
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    for group, setting in zip(optimizer.param_groups, settings):  # the resumed run's lr, not the saved one
        group.update(setting)


def check_adamw_state(optimizer: torch.optim.Optimizer, state: dict[int, dict]) -> None:
    """A ValueError where a saved AdamW state cannot continue the run: ``load_state_dict`` checks none of this,
    and the next step failed on it (another shape, a missing moment) or went wrong (a negative step or second
    moment: a NaN update)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    for index, entry in state.items():
        if not 0 <= index < len(params):
            raise ValueError(f"optimizer state for parameter {index}; the optimizer has {len(params)}")
        if missing := [key for key in ("step", "exp_avg", "exp_avg_sq") if key not in entry]:
            raise ValueError(f"parameter {index}'s optimizer state lacks {missing[0]}")
        for key in ("exp_avg", "exp_avg_sq"):
            if not torch.is_tensor(entry[key]) or entry[key].shape != params[index].shape:
                raise ValueError(f"parameter {index}'s {key} is not of its shape {list(params[index].shape)}")
        step = entry["step"]
        if torch.is_tensor(step) and step.numel() != 1:
            raise ValueError(f"parameter {index}'s optimizer step is not one number")
        if not float(step) >= 0 or bool((entry["exp_avg_sq"] < 0).any()):
            raise ValueError(f"parameter {index}'s optimizer step or second moment is negative")


def save_checkpoint(run_dir: str | os.PathLike, step: int, roles, optimizers: dict[str, torch.optim.Optimizer],
                    state: dict, rng: torch.Tensor | None = None,
                    extras: dict[str, tuple[dict, dict]] | None = None) -> Path:
    """Write ``<run_dir>/checkpoints/step_XXXX`` atomically and return its path.

    Args:
        step: the number of completed steps.
        roles: a :class:`redgame.llm.roles.Roles`.
        optimizers: name -> optimiser.
        state: small JSON-able run state (data position, running stats).
        rng: the torch CPU generator state to store (default: the current one).
        extras: name -> (tensors, JSON state) of other run state (e.g. the PSRO population),
            written as ``<name>.safetensors`` and ``<name>.json``; read back by :func:`load_extra`.
    """
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"step_{step:04d}"
    # family: a kill mid-write at a step never saved again leaves no temporary folder either
    with folder_written_whole(final, family="step_") as tmp:
        for role in ("attacker", "defender"):
            roles.save_role(role, tmp / role)
        save_file(roles.state_tensors(), str(tmp / "weights.safetensors"))
        opt_tensors, opt_meta = {}, {}
        for name, optimizer in optimizers.items():
            t, m = _optimizer_tensors(name, optimizer)
            opt_tensors.update(t)
            opt_meta[name] = m
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        (tmp / "optimizer.json").write_text(json.dumps(opt_meta))
        rngs = {"cpu": (torch.get_rng_state() if rng is None else rng).contiguous()}
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                rngs[f"cuda{i}"] = s.contiguous()
        save_file(rngs, str(tmp / "rng.safetensors"))
        for name, (tensors, meta) in (extras or {}).items():
            save_file({k: t.contiguous() for k, t in tensors.items()}, str(tmp / f"{name}.safetensors"))
            (tmp / f"{name}.json").write_text(json.dumps(meta))
        (tmp / "state.json").write_text(json.dumps({"step": step, **state}, indent=1))
    return final


def checkpoint_step(folder: Path) -> int:
    """The step of a checkpoint folder ``step_XXXX``."""
    return int(_STEP_DIR.match(folder.name).group(1))


def step_folders(root: Path, whole: bool = True) -> list[tuple[int, Path]]:
    """(step, folder) of the ``step_XXXX`` folders in ``root`` (a run's ``checkpoints/``), by step: only those
    with their ``state.json`` (written last) unless ``whole`` is False."""
    if not root.is_dir():
        return []
    return sorted((int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name))
                  and (not whole or (p / "state.json").is_file()))


def latest_checkpoint(run_dir: str | os.PathLike) -> Path | None:
    """The checkpoint with the highest step, or None."""
    found = step_folders(Path(run_dir) / CHECKPOINTS)
    return found[-1][1] if found else None


def remove_older_checkpoints(run_dir: str | os.PathLike, keep: int) -> None:
    """Remove every complete checkpoint but the newest ``keep``: each is first renamed aside (a ``.old.step_``
    folder, which the next save removes if a kill stops this one), so none is ever seen half deleted."""
    root = Path(run_dir) / CHECKPOINTS
    for _, path in step_folders(root)[:-keep]:
        aside = Path(tempfile.mkdtemp(prefix=f".old.{path.name}.", dir=root))
        os.replace(path, aside / path.name)
        shutil.rmtree(aside, ignore_errors=True)


def unfinished_checkpoints(run_dir: str | os.PathLike) -> list[Path]:
    """Step folders past the latest checkpoint that have no ``state.json`` (written last), which resume skips."""
    latest = latest_checkpoint(run_dir)
    newest = -1 if latest is None else checkpoint_step(latest)
    return [p for step, p in step_folders(Path(run_dir) / CHECKPOINTS, whole=False) if step > newest]


def load_checkpoint(path: str | os.PathLike, roles, optimizers: dict[str, torch.optim.Optimizer]) -> dict:
    """Restore weights, optimisers and RNG states from ``path``; returns ``state.json``.

    Raises:
        UserError: a damaged file (truncated, not safetensors, e.g. a pickle) or a checkpoint of
            another config (other shapes or parameter names), naming the checkpoint.
    """
    path = Path(path)
    try:
        return _load_checkpoint(path, roles, optimizers)
    except (SafetensorError, OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise UserError(f"checkpoint {path} is damaged or from another config ({type(exc).__name__}: {first}); "
                        + what_removing_it_does(path)) from exc


def _load_checkpoint(path: Path, roles, optimizers: dict[str, torch.optim.Optimizer]) -> dict:
    state = json.loads((path / "state.json").read_text())  # read first: a damaged one changes nothing
    folder = _STEP_DIR.match(path.name)
    step = state.get("step") if isinstance(state, dict) else None
    if type(step) is not int or (folder is not None and int(folder[1]) != step):
        raise ValueError(f"state.json must be an object whose step is the folder's ({path.name}), got {state!r:.80}")
    weights, opt_tensors = load_file(str(path / "weights.safetensors")), load_file(str(path / "optimizer.safetensors"))
    for what, tensors in (("weights", weights), ("optimizer state", opt_tensors)):
        if bad := non_finite(tensors):  # resumed, they stopped the next step, blaming the learning rate
            raise ValueError(f"its {what} hold NaN or inf (e.g. {bad[0]})")
    roles.load_state_tensors(weights)
    opt_meta = json.loads((path / "optimizer.json").read_text())
    for name, optimizer in optimizers.items():
        _restore_optimizer(name, optimizer, opt_tensors, opt_meta[name])
    rngs = load_file(str(path / "rng.safetensors"))
    torch.set_rng_state(rngs["cpu"])
    if torch.cuda.is_available():
        cuda = [rngs[k] for k in sorted((k for k in rngs if k.startswith("cuda")), key=lambda k: int(k[4:]))]
        if cuda:
            torch.cuda.set_rng_state_all(cuda)
    return state


def load_extra(path: str | os.PathLike, name: str) -> tuple[dict, dict] | None:
    """(tensors, JSON state) saved under ``extras[name]`` by :func:`save_checkpoint`; None if absent."""
    path = Path(path)
    if not (path / f"{name}.json").is_file():
        return None
    try:
        return load_file(str(path / f"{name}.safetensors")), json.loads((path / f"{name}.json").read_text())
    except (SafetensorError, OSError, ValueError, RecursionError) as exc:  # RecursionError: JSON nested too deep
        raise UserError(f"checkpoint {path}: {name} state is damaged ({type(exc).__name__}); "
                        + what_removing_it_does(path)) from exc


def what_removing_it_does(path: Path) -> str:
    """The advice for a damaged checkpoint: resume from the one before it, or, where there is none (the run's first,
    or keep_checkpoints removed the others), start again."""
    before = _STEP_DIR.match(path.name) is not None and any(
        step < checkpoint_step(path) for step, _ in step_folders(path.parent))
    return ("remove it to resume from the one before" if before else
            "there is no whole checkpoint before it to resume from: start the run again with --overwrite")
