"""Load the role adapters a run saved (``<run>/final/<role>``) onto one frozen base.

Runs write each role with peft's ``save_pretrained`` (``roles.Roles.save_role``); this
module puts several of them on one base as named adapters, so evaluation and cross-play
switch between checkpoints without reloading the model. Only safetensors are read.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from redgame.errors import UserError
from redgame.jsonio import read_json_file

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
LORA_TENSORS = (".lora_A.", ".lora_B.")


def adapter_dir(path: str | Path, role: str = "defender") -> Path:
    """The adapter folder for ``path``: an adapter folder itself, a run folder's ``final/<role>``, or a
    checkpoint's ``<role>`` (``<run>/checkpoints/step_NNNN``)."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise UserError(f"adapter {path}: not found{_padded_hint(path)}" if not path.exists()
                        else f"adapter {path}: not a folder")
    for candidate in (path, path / "final" / role, path / role):
        if all((candidate / f).is_file() for f in ADAPTER_FILES):
            return candidate
    if (path / "final" / role / "model.safetensors").is_file():
        raise UserError(f"adapter {path}: the run saved full weights (full_finetune); only LoRA adapters load "
                        f"here: evaluate them as a model, with --model {path / 'final' / role}")
    raise UserError(f"adapter {path}: expected {' and '.join(ADAPTER_FILES)} in it, in {path / 'final' / role} "
                    f"(a run) or in {path / role} (a checkpoint)")


def _padded_hint(path: Path) -> str:
    """Where ``path`` is a checkpoint named without its zero padding (``step_1`` for ``step_0001``): which one."""
    import re

    match = re.fullmatch(r"step_(\d+)", path.name)
    padded = path.with_name(f"step_{int(match[1]):04d}") if match else None
    return f" (checkpoint folders are zero-padded: {padded})" if padded and padded.is_dir() and padded != path else ""


def adapter_sha256(folder: Path) -> str | None:
    """The SHA-256 of an adapter folder's weights (which weights an evaluation measured); None without them."""
    from redgame.llm.weights_card import file_sha256

    weights = Path(folder) / ADAPTER_FILES[1]
    return file_sha256(weights) if weights.is_file() else None


def checked_adapter_dir(path: str | Path, role: str = "defender") -> Path:
    """``adapter_dir(path, role)`` after checking that its files can be loaded (before any model is)."""
    folder = adapter_dir(path, role)
    check_lora_config(folder / ADAPTER_FILES[0])
    lora_tensor_names(folder / ADAPTER_FILES[1])
    return folder


def checked_run_adapters(run: str | Path, full_finetune: bool, reader: str) -> dict[str, Path]:
    """A run's two final adapter folders, checked before any model loads. ``reader`` (cross-play, the probe)
    puts LoRA adapters side by side on one base, so a run that trained full weights is a UserError."""
    if full_finetune:
        raise UserError(f"run {run} trained full weights (full_finetune); {reader} loads LoRA runs only, "
                        "side by side on one base")
    return {role: checked_adapter_dir(run, role) for role in ("attacker", "defender")}


def check_lora_config(path: Path) -> dict:
    """An ``adapter_config.json``, checked where peft would fail with a TypeError, or scale a layer by NaN or an
    overflowing number (every logit NaN: an evaluation read that as a perfectly safe model): a LoRA config with a
    positive integer rank ``r`` and a ``lora_alpha`` in (0, MAX_LORA_ALPHA], and the same of each module's rank
    and alpha in ``rank_pattern`` and ``alpha_pattern``."""
    from redgame.llm.config import MAX_LORA_ALPHA

    where = f"adapter {path}"
    config = read_json_file(path, where)
    if config.get("peft_type") != "LORA":
        raise UserError(f"{where}: peft_type is {config.get('peft_type')!r}; only LoRA adapters (\"LORA\") load here")
    ranks, alphas = (config.get(key) if config.get(key) is not None else {} for key in ("rank_pattern", "alpha_pattern"))
    if not isinstance(ranks, dict) or not isinstance(alphas, dict):
        raise UserError(f"{where}: 'rank_pattern' and 'alpha_pattern' must be objects of module name to number")
    for key, r in [("r", config.get("r")), *((f"rank_pattern.{m}", v) for m, v in ranks.items())]:
        if type(r) is not int or r < 1:
            raise UserError(f"{where}: '{key}' (the LoRA rank{'' if key == 'r' else ' of a module'}) must be a positive "
                            f"integer, got {r!r}")
    for key, alpha in [("lora_alpha", config.get("lora_alpha")), *((f"alpha_pattern.{m}", v) for m, v in alphas.items())]:
        if type(alpha) not in (int, float) or not 0 < alpha <= MAX_LORA_ALPHA:  # NaN fails too
            raise UserError(f"{where}: '{key}' must be a number in (0, {MAX_LORA_ALPHA}], got {alpha!r}")
    return config


def lora_tensor_names(path: Path) -> set[str]:
    """The tensor names in an ``adapter_model.safetensors``, read from its header; a file that is not
    safetensors, is cut short, or holds no LoRA tensor is a one-line UserError naming it."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            names = set(f.keys())
    except (SafetensorError, OSError) as exc:
        raise damaged(path, exc) from exc
    if not any(part in name for name in names for part in LORA_TENSORS):
        raise UserError(f"adapter {path}: missing LoRA tensors (none in it is named *.lora_A.* or *.lora_B.*)")
    return names


def damaged(path, exc: Exception) -> UserError:
    """The one-line error for an adapter file that cannot be read, with the first line of the reason."""
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return UserError(f"adapter {path}: damaged or not a LoRA adapter peft can load ({detail})")


def run_model(run: str | Path) -> str:
    """The base model a run trained on: the ``model`` of its config.json."""
    model = run_config(run).get("model")
    if not isinstance(model, str) or not model:
        raise UserError(f"run {run}: config.json: 'model' must be a model name, got {model!r}")
    return model


def is_run_config(config) -> bool:
    """Whether a parsed ``config.json`` is a redgame run's (a TrainConfig), not a model's or another tool's."""
    return isinstance(config, dict) and {"model", "regime", "steps"} <= config.keys()


def run_model_of(adapter: str | Path) -> str | None:
    """The model of the run that ``adapter`` (a run folder, one of its checkpoints or its role folders) is in,
    from the nearest ``config.json`` of a run at most three folders up; None outside a run."""
    path = Path(adapter).expanduser()
    for folder in [path, *list(path.parents)[:3]]:
        if (folder / "config.json").is_file() and is_run_config(run_config(folder)):  # a run's, not a model's
            return run_model(folder)  # (a damaged config.json is a one-line error here)
    return None


def run_config(run: str | Path) -> dict:
    """A run folder's ``config.json`` (its TrainConfig), a JSON object."""
    path = Path(run) / "config.json"
    if not path.is_file():
        raise UserError(f"run {run}: no config.json; expected a folder written by 'redgame llm train'")
    return read_json_file(path, f"run {run}: config.json")


def attach(base, adapters: dict[str, Path]):
    """``base`` wrapped with each adapter under its name; ``base`` itself when there are none."""
    from peft import PeftModel
    from safetensors import SafetensorError

    model = base
    for name, path in adapters.items():
        check_lora_config(Path(path) / ADAPTER_FILES[0])
        try:
            if isinstance(model, PeftModel):  # one adapter attached already (here, or by the caller)
                model.load_adapter(str(path), adapter_name=name, is_trainable=False)
            else:
                model = PeftModel.from_pretrained(base, str(path), adapter_name=name, is_trainable=False)
        except (RuntimeError, ValueError, KeyError) as exc:  # shape mismatch: another base model
            raise not_this_base(path, exc) from exc
        except (SafetensorError, TypeError, AttributeError, ImportError) as exc:  # a damaged file or config (one
            raise damaged(path, exc) from exc  # that names a package not installed, such as megatron)
        check_complete(model, name, path)
    model.eval()
    return model


def check_complete(model, name: str, path: Path) -> None:
    """Refuse an adapter whose file lacks LoRA tensors that ``model`` has for it: peft would only warn, and
    leave them at their initial values (lora_B zero: those layers would play as the base model)."""
    from peft import get_peft_model_state_dict

    # save_embedding_layers=False: "auto" asks the Hub whether the adapter's base model exists
    loaded = get_peft_model_state_dict(model, adapter_name=name, save_embedding_layers=False)
    missing = sorted(set(loaded) - lora_tensor_names(Path(path) / ADAPTER_FILES[1]))
    if missing:
        raise UserError(f"adapter {path}: missing LoRA tensors for this base model: {len(missing)} of {len(loaded)} "
                        f"(e.g. {missing[0]}); the file is damaged or from another base model")
    check_finite(loaded, path)


def non_finite(tensors: dict) -> list[str]:
    """The names of the floating-point tensors that hold NaN or inf."""
    import torch

    return [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]


def check_finite(tensors: dict, path) -> None:
    """Refuse weights holding NaN or inf (a diverged or damaged run): greedy decoding would answer every
    prompt with nothing, which the judges read as a refusal, a perfectly safe defender."""
    bad = non_finite(tensors)
    if bad:
        raise UserError(f"weights in {path}: {len(bad)} of {len(tensors)} tensors hold NaN or inf values "
                        f"(e.g. {bad[0]}); the run that wrote them diverged, or the file is damaged")


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
