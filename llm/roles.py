"""Who plays which role: the trainable parameters of attacker and defender, by regime.

- ``bipolicy`` (and ``advgame``, ``sequential``): one frozen base with two peft LoRA
  adapters, ``attacker`` and ``defender`` (Anchored Bipolicy Self-Play, La Malfa et al.
  2026, arXiv 2605.08427). The anchor is the base with the adapters disabled.
- ``separate``: two adapters sharing nothing, each on its own copy of the base; with
  ``full_finetune`` the full weights of two model copies are trained (AdvGame, arXiv
  2512.20806); ``advgame`` with ``full_finetune`` too.
- ``shared``: one adapter (or, with ``full_finetune``, the full weights) plays both roles;
  only the role prompt tells them apart (Self-RedTeam, arXiv 2506.07468).

With ``reference="ema"`` each role also keeps an EMA copy of its weights,
θ_ref ← d·θ_ref + (1−d)·θ after every update (AdvGame's DPO-MD); otherwise the reference
is the frozen base. The EMA is of the weights the role plays with: the full weights under
``full_finetune``, and with LoRA the merged weights W + s·B·A, i.e. an EMA of the merged
delta s·B·A (kept densely in float32), not EMA(B)·EMA(A), which is a different matrix.
The EMA model is a copy of the base whose adapted linear layers hold W + EMA(s·B·A) (the
other weights are shared with the base); AdvGame samples its rollouts from it
(:meth:`Roles.sampler`, ``rollout="ema"``).

Usage::

    roles = build_roles(base, regime="bipolicy", lora=LoraSettings(rank=16))
    with roles.policy("defender") as model:      # the defender adapter is active
        ...
    with roles.reference("defender") as model:   # the anchor: adapters disabled
        ...
"""

from __future__ import annotations

import contextlib
import copy
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, get_peft_model, set_peft_model_state_dict
from safetensors.torch import load_file, save_file

from redgame.errors import UserError
from redgame.llm.config import check_full_finetune_dtype
from redgame.llm.checkpoint import replace_dir, temp_dir_beside

ROLES = ("attacker", "defender")
REGIMES = ("shared", "bipolicy", "separate", "advgame", "sequential")


@dataclass
class LoraSettings:
    rank: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: str | list[str] = "all-linear"

    def peft_config(self) -> LoraConfig:
        return LoraConfig(r=self.rank, lora_alpha=self.alpha, lora_dropout=self.dropout,
                          target_modules=self.target_modules, task_type="CAUSAL_LM", bias="none")


@dataclass
class _Slot:
    """One role's seat: the module it runs in, its adapter name (None: full weights)."""

    model: torch.nn.Module
    adapter: str | None
    ref_model: torch.nn.Module | None = None  # the EMA model, or the frozen base under full fine-tuning
    ema_delta: dict[str, torch.Tensor] | None = None  # LoRA + ema: layer name -> EMA of s·B·A (float32)


def _lora_layers(peft_model, adapter: str) -> dict[str, torch.nn.Module]:
    """The peft LoRA layers that hold ``adapter``, by their name in the base model."""
    return {name: m for name, m in peft_model.get_base_model().named_modules()
            if hasattr(m, "get_delta_weight") and adapter in getattr(m, "lora_A", {})}


def _foldable(model, layers: list) -> bool:
    """Whether LoRA layers' deltas can be folded into their base weights for sampling: plain float32 linears, not
    sharded (no process group), none tied to another module (an adapted output head shares the input
    embedding's weight in SmolLM2: folding its delta would move the embedding too)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return False
    uses: dict[int, int] = {}
    for _, p in model.named_parameters(remove_duplicate=False):
        uses[id(p)] = uses.get(id(p), 0) + 1
    bases = [layer.get_base_layer() for layer in layers]
    return all(type(b) is torch.nn.Linear and type(b.weight) is torch.nn.Parameter and b.weight.dtype == torch.float32
               and uses.get(id(b.weight), 0) == 1 for b in bases)


def _frozen_copy(base) -> torch.nn.Module:
    """A frozen copy of ``base`` whose linear layers are its own and every other weight the base's."""
    shared = {id(p): p for m in base.modules() if not isinstance(m, torch.nn.Linear)
              for p in m.parameters(recurse=False)}
    copy_ = copy.deepcopy(base, memo=dict(shared))
    copy_.requires_grad_(False)
    return copy_


class Roles:
    """The attacker's and defender's trainable weights and their references."""

    def __init__(self, slots: dict[str, _Slot], regime: str, reference: str, ema_decay: float, rollout: str = "live"):
        self.slots, self.regime, self.reference_kind, self.ema_decay = slots, regime, reference, ema_decay
        self.rollout = rollout

    # -- which weights are live --------------------------------------------------------
    @contextlib.contextmanager
    def policy(self, role: str):
        slot = self.slots[role]
        if slot.adapter is not None:
            slot.model.set_adapter(slot.adapter)  # peft also marks this adapter trainable
        yield slot.model

    @contextlib.contextmanager
    def reference(self, role: str):
        slot = self.slots[role]
        if slot.ref_model is not None:
            yield slot.ref_model
        else:
            with slot.model.disable_adapter():
                yield slot.model

    def sampler(self, role: str):
        """The weights a role's rollouts are sampled from: the EMA model (``rollout="ema"``) or its policy
        (:meth:`sampling_policy`)."""
        return self.reference(role) if self.rollout == "ema" else self.sampling_policy(role)

    @contextlib.contextmanager
    def sampling_policy(self, role: str):
        """The role's policy for ``generate``: its LoRA folded into the base's weights (W + s·B·A), so that each
        adapted layer runs one product a token, not three (a decoding step's products are a few rows each, and
        their per-call cost, not their arithmetic, is most of the step); the same policy to float32 rounding.
        Only over a float32 base in one process (a bfloat16 weight would round the small delta away, a
        sharded one is not whole here); elsewhere :meth:`policy`. The base's own tensors come back after,
        kept rather than subtracted, so they stay bit for bit."""
        slot = self.slots[role]
        with self.policy(role) as model:
            layers = list(_lora_layers(model, slot.adapter).values()) if slot.adapter is not None else []
            if not layers or not _foldable(model, layers):
                yield model
                return
            kept = []
            try:
                with torch.no_grad():
                    for layer in layers:
                        base = layer.get_base_layer()
                        kept.append((base, base.weight.data))
                        base.weight.data = base.weight.data + layer.get_delta_weight(slot.adapter)
                with model.disable_adapter():
                    yield model
            finally:
                for base, weight in kept:
                    base.weight.data = weight

    def seat(self, role: str, reference: bool = False) -> tuple[torch.nn.Module, str | None]:
        """The module the role's policy (or reference) runs in, and its adapter there.

        None means no adapter: the adapters switched off (the base as anchor) or full weights.
        """
        slot = self.slots[role]
        if not reference:
            return slot.model, slot.adapter
        if slot.ref_model is not None:
            return slot.ref_model, None
        return slot.model, None

    def models(self) -> list[torch.nn.Module]:
        """The distinct modules the roles play in (one peft model, or one per role)."""
        return list({id(s.model): s.model for s in self.slots.values()}.values())

    def parameters(self, role: str) -> list[torch.nn.Parameter]:
        return [p for _, p in self.named_parameters(role)]

    def named_parameters(self, role: str) -> list[tuple[str, torch.nn.Parameter]]:
        slot = self.slots[role]
        if slot.adapter is None:
            return list(slot.model.named_parameters())
        tag = f".{slot.adapter}."
        return [(n, p) for n, p in slot.model.named_parameters() if tag in n]

    def owners(self) -> dict[str, list[str]]:
        """Distinct trainable parameter sets and the roles that play with each."""
        out: dict[str, list[str]] = {}
        for role in ROLES:
            out.setdefault(self.key(role), []).append(role)
        return out

    def key(self, role: str) -> str:
        """The name of the role's trainable set: its adapter, or ``full-<first role that owns the model>``
        (the same in every process, so that checkpoints, optimiser state and metrics keep their names)."""
        slot = self.slots[role]
        if slot.adapter is not None:
            return slot.adapter
        return f"full-{next(r for r in ROLES if self.slots[r] is slot)}"

    @torch.no_grad()
    def update_reference(self, role: str) -> None:
        """EMA step of the role's reference towards its current weights (no-op for base).

        Full weights: θ_ref ← d·θ_ref + (1−d)·θ. LoRA: Δ_ref ← d·Δ_ref + (1−d)·s·B·A per
        adapted layer, and the EMA model's weight becomes W + Δ_ref.
        """
        if self.reference_kind != "ema":
            return
        slot = self.slots[role]
        d = self.ema_decay
        if slot.ema_delta is None:
            for r, p in zip(slot.ref_model.parameters(), slot.model.parameters()):
                r.mul_(d).add_(p.detach(), alpha=1.0 - d)
            return
        for name, layer in _lora_layers(slot.model, slot.adapter).items():
            slot.ema_delta[name].mul_(d).add_(layer.get_delta_weight(slot.adapter).float(), alpha=1.0 - d)
        self._write_ema_model(slot)

    @staticmethod
    @torch.no_grad()
    def _write_ema_model(slot: _Slot) -> None:
        """The EMA model's adapted weights: the base weight plus the EMA of the merged delta."""
        layers = _lora_layers(slot.model, slot.adapter)
        for name, module in slot.ref_model.named_modules():
            if name in slot.ema_delta:
                module.weight.copy_(layers[name].base_layer.weight.float() + slot.ema_delta[name])

    # -- state for checkpoints ---------------------------------------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """All trainable and EMA weights, flat, for an exact resume."""
        return {name: t.detach().cpu().contiguous() for name, t in self._state_targets()}

    @torch.no_grad()
    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore what :meth:`state_tensors` saved; KeyError when a tensor is missing or not this run's, ValueError
        when one has another shape (``copy_`` would broadcast a scalar or a row over the weight) or is not floating."""
        expected = dict(self._state_targets())
        if set(expected) != set(tensors):
            odd = sorted(set(expected) ^ set(tensors))
            raise KeyError(f"{len(odd)} tensors differ from this run's, e.g. {odd[0]!r}")
        for name, value in tensors.items():
            if value.shape != expected[name].shape or not value.dtype.is_floating_point:
                raise ValueError(f"{name} is {value.dtype} {list(value.shape)}; this run's is "
                                 f"{expected[name].dtype} {list(expected[name].shape)}")
        for name, value in tensors.items():
            expected[name].copy_(value)
        for roles in self.owners().values():
            if self.slots[roles[0]].ema_delta is not None:
                self._write_ema_model(self.slots[roles[0]])

    def _state_targets(self):
        """(name, tensor) of every trainable and EMA weight: the live tensors behind :meth:`state_tensors`."""
        for key, roles in self.owners().items():
            slot = self.slots[roles[0]]
            for n, p in self.named_parameters(roles[0]):
                yield f"{key}/{n}", p
            if slot.ema_delta is not None:
                for n, delta in slot.ema_delta.items():
                    yield f"{key}.ref/{n}", delta
            elif slot.ref_model is not None and self.reference_kind == "ema":
                for n, p in slot.ref_model.named_parameters():
                    yield f"{key}.ref/{n}", p

    def save_role(self, role: str, path: str | os.PathLike, tokenizer=None) -> None:
        """Save a role's weights where ``PeftModel.from_pretrained(base, path)`` loads them; full weights
        with ``tokenizer`` form a model folder that ``--model PATH`` (``from_pretrained``) loads."""
        path = Path(path)
        slot = self.slots[role]
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = temp_dir_beside(path)
        try:
            if slot.adapter is None:  # full weights: config + safetensors, loadable by from_pretrained
                target = tmp
                slot.model.config.save_pretrained(target)
                state = {n: p.detach().cpu().contiguous() for n, p in slot.model.state_dict().items()}
                tied = getattr(slot.model.config, "tie_word_embeddings", False)
                if tied:
                    state.pop("lm_head.weight", None)
                save_file(state, str(target / "model.safetensors"), metadata={"format": "pt"})
                if tokenizer is not None:
                    tokenizer.save_pretrained(str(target))
            else:
                slot.model.save_pretrained(str(tmp), selected_adapters=[slot.adapter], safe_serialization=True)
                target = tmp / slot.adapter if slot.adapter != "default" else tmp
            replace_dir(target, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def load_role(self, role: str, path: str | os.PathLike) -> None:
        """Load weights saved by :meth:`save_role` into a role (the probe's frozen defender); a LoRA file
        that lacks some of the role's tensors is refused (those layers would play as the base model)."""
        from redgame.llm.adapters import check_complete, check_finite, not_this_base

        slot = self.slots[role]
        try:
            if slot.adapter is None:
                weights = load_file(str(Path(path) / "model.safetensors"))
                check_finite(weights, path)
                slot.model.load_state_dict(weights, strict=False)
            else:
                set_peft_model_state_dict(slot.model, load_file(str(Path(path) / "adapter_model.safetensors")),
                                          adapter_name=slot.adapter)
        except RuntimeError as exc:  # another base model's shapes
            raise not_this_base(path, exc) from exc
        if slot.adapter is not None:
            check_complete(slot.model, slot.adapter, Path(path))


def build_roles(base, *, regime: str, lora: LoraSettings | None = None, full_finetune: bool = False,
                reference: str = "base", ema_decay: float = 0.95, rollout: str = "live") -> Roles:
    """Wrap a frozen base model into the attacker and defender of ``regime``.

    Args:
        base: a causal LM with frozen weights (from ``redgame.llm.models.load_base``).
        regime: one of ``REGIMES``.
        lora: adapter settings (ignored with ``full_finetune``).
        full_finetune: train full weights (``shared``, ``separate`` and ``advgame`` only).
        reference: ``"base"`` (the frozen base; KL anchor) or ``"ema"`` (DPO-MD).
        ema_decay: the EMA decay of the reference.
        rollout: ``"live"`` (sample from the policy) or ``"ema"`` (from the EMA model; needs
            ``reference="ema"``).
    Returns:
        a :class:`Roles`.
    """
    _check_roles_arguments(regime, full_finetune, reference, rollout)
    if full_finetune:
        check_full_finetune_dtype(str(next(base.parameters()).dtype).removeprefix("torch."))
    for p in base.parameters():
        p.requires_grad_(False)
    if full_finetune:
        slots = _full_model_slots(base, regime, reference)
    else:
        slots = _adapter_slots(base, regime, lora or LoraSettings(), reference)
    for slot in {id(s): s for s in slots.values()}.values():
        slot.model.train()
    return Roles(slots, regime, reference, ema_decay, rollout)


def _check_roles_arguments(regime: str, full_finetune: bool, reference: str, rollout: str) -> None:
    if regime not in REGIMES:
        raise UserError(f"unknown regime {regime!r}; expected one of {', '.join(REGIMES)}")
    if reference not in ("base", "ema"):
        raise UserError(f"unknown reference {reference!r}; expected 'base' or 'ema'")
    if full_finetune and regime not in ("shared", "separate", "advgame"):
        raise UserError(f"full_finetune is for the 'shared', 'separate' and 'advgame' regimes, not {regime!r}")
    if rollout not in ("live", "ema") or (rollout == "ema" and reference != "ema"):
        raise UserError(f"rollout {rollout!r}: expected 'live', or 'ema' with reference 'ema'")


def _full_model_slots(base, regime: str, reference: str) -> dict:
    """Each role a trainable copy of the base (one copy for both under ``shared``), its reference
    the frozen base or, with ``reference="ema"``, a frozen copy that the EMA updates."""
    def slot():
        model = copy.deepcopy(base).requires_grad_(True).train()
        return _Slot(model, None, ref_model=copy.deepcopy(model).requires_grad_(False) if reference == "ema" else base)

    if regime == "shared":
        shared = slot()
        return {"attacker": shared, "defender": shared}
    return {role: slot() for role in ROLES}


def _adapter_slots(base, regime: str, lora: LoraSettings, reference: str) -> dict:
    """LoRA adapters on the frozen base: one ``shared`` adapter for both roles, one per role on
    a copy of the base each (``separate``), or one per role on the same base (the others)."""
    def with_adapters(model, names):
        peft_model = get_peft_model(model, lora.peft_config(), adapter_name=names[0])
        for name in names[1:]:
            peft_model.add_adapter(name, lora.peft_config())
        return peft_model

    def slot_for(peft_model, name, ema_model):
        slot = _Slot(peft_model, name)
        if ema_model is not None:  # the EMA starts at the adapter's merged delta s·B·A = 0: the base
            slot.ref_model = ema_model
            slot.ema_delta = {n: torch.zeros(layer.base_layer.weight.shape, dtype=torch.float32,
                                             device=layer.base_layer.weight.device)
                              for n, layer in _lora_layers(peft_model, name).items()}
        return slot

    def ema_copy(model):  # before peft wraps the model: a plain copy of the base
        return _frozen_copy(model) if reference == "ema" else None

    if regime == "shared":
        ema = ema_copy(base)
        shared = slot_for(with_adapters(base, ["shared"]), "shared", ema)
        return {"attacker": shared, "defender": shared}
    if regime == "separate":
        slots = {}
        for role in ROLES:
            own = copy.deepcopy(base)
            ema = ema_copy(own)
            slots[role] = slot_for(with_adapters(own, [role]), role, ema)
        return slots
    emas = {role: ema_copy(base) for role in ROLES}
    peft_model = with_adapters(base, list(ROLES))
    return {role: slot_for(peft_model, role, emas[role]) for role in ROLES}


__all__ = ["ROLES", "REGIMES", "LoraSettings", "Roles", "build_roles", "PeftModel"]
