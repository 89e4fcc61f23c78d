"""Load the role adapters a run saved (``<run>/final/<role>``) onto one frozen base.

Runs write each role with peft's ``save_pretrained`` (``roles.Roles.save_role``); this
module puts several of them on one base as named adapters, so evaluation and cross-play
switch between checkpoints without reloading the model. Only safetensors are read.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from redgame.errors import UserError
from redgame.jsonio import parse_json

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def adapter_dir(path: str | Path, role: str = "defender") -> Path:
    """The adapter folder for ``path``: an adapter folder itself, a run folder's ``final/<role>``, or a
    checkpoint's ``<role>`` (``<run>/checkpoints/step_K``)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(f"adapter {path}: not found" if not path.exists() else f"adapter {path}: not a folder")
    for candidate in (path, path / "final" / role, path / role):
        if all((candidate / f).is_file() for f in ADAPTER_FILES):
            return candidate
    if (path / "final" / role / "model.safetensors").is_file():
        raise UserError(f"adapter {path}: the run saved full weights (full_finetune); only LoRA adapters load "
                        f"here: evaluate them as a model, with --model {path / 'final' / role}")
    raise UserError(f"adapter {path}: expected {' and '.join(ADAPTER_FILES)} in it, in {path / 'final' / role} "
                    f"(a run) or in {path / role} (a checkpoint)")


def run_config(run: str | Path) -> dict:
    """A run folder's ``config.json`` (its TrainConfig)."""
    path = Path(run) / "config.json"
    if not path.is_file():
        raise UserError(f"run {run}: no config.json; expected a folder written by 'redgame llm train'")
    return parse_json(path.read_text(), f"run {run}: config.json")


def attach(base, adapters: dict[str, Path]):
    """``base`` wrapped with each adapter under its name; ``base`` itself when there are none."""
    from peft import PeftModel

    model = base
    for name, path in adapters.items():
        try:
            if model is base:
                model = PeftModel.from_pretrained(base, str(path), adapter_name=name, is_trainable=False)
            else:
                model.load_adapter(str(path), adapter_name=name, is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as exc:  # shape mismatch: another base model
            raise not_this_base(path, exc) from exc
    model.eval()
    return model


def not_this_base(path, exc: Exception) -> UserError:
    """The one-line error for weights that do not fit the loaded base model, naming the first mismatch."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines if "mismatch" in line), lines[0] if lines else type(exc).__name__)
    return UserError(f"weights in {path} do not fit this base model ({detail}); load the base model they were "
                     "trained on (the 'model' of their run's config.json)")


@contextlib.contextmanager
def playing(model, adapter: str | None):
    """``model`` with adapter ``adapter`` active, or with every adapter off when it is None."""
    if adapter is not None:
        model.set_adapter(adapter)
        yield model
    elif hasattr(model, "disable_adapter"):
        with model.disable_adapter():
            yield model
    else:
        yield model
