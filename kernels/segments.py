"""SGMV's row grouping for multi-adapter LoRA: rows sorted by adapter, and where each group starts.

Punica's SGMV (Chen et al. 2023, arXiv 2310.18547) and S-LoRA (Sheng et al. 2023,
arXiv 2311.03285) gather the rows of each adapter into one segment, so that a tile holds
rows of a single adapter and every row meets only its own adapter: the work does not grow
with the number of adapters. A `SegmentPlan` is that grouping, built with torch ops on the
tensors' device (no host sync); the kernels find their tile's segment from `bounds`.

The plan is cached per `segment_ids` tensor (while it lives and is not modified in place),
so the many LoRA layers of one forward and backward pass share one plan, and the range
check of the ids, the only host sync, runs once per tensor.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass

import torch

from redgame.errors import UserError
from redgame.kernels.reference import storage_key


@dataclass(frozen=True)
class SegmentPlan:
    """order: int32 [M] row ids sorted by segment id (stable; −1 first).

    bounds: int32 [n_adapters + 2]; the rows of adapter a are order[bounds[a+1]:bounds[a+2]],
    the base-only rows (−1) are order[bounds[0]:bounds[1]].
    sorted: the ids were already in order (order is 0..M−1, so each segment is one run of
    rows); known on the CPU only (False on other devices: finding out would sync).
    """

    order: torch.Tensor
    bounds: torch.Tensor
    n_adapters: int
    sorted: bool = False

    @property
    def n_segments(self) -> int:
        return self.n_adapters + 1


_PLANS: dict[int, tuple] = {}


def _build(segment_ids: torch.Tensor, n_adapters: int, func: str) -> SegmentPlan:
    flat = segment_ids.reshape(-1)
    if flat.numel():
        low, high = torch.stack([flat.min(), flat.max()]).tolist()
        if low < -1 or high >= n_adapters:
            raise UserError(f"{func}: segment_ids must lie in [-1, {n_adapters}), got values in [{low}, {high}]")
    order = torch.argsort(flat, stable=True).to(torch.int32)
    counts = torch.zeros(n_adapters + 1, dtype=torch.int64, device=flat.device)
    counts.index_add_(0, flat.long() + 1, torch.ones(flat.shape, dtype=torch.int64, device=flat.device))
    bounds = torch.cat([counts.new_zeros(1), counts.cumsum(0)]).to(torch.int32)
    in_order = flat.device.type == "cpu" and bool((flat[1:] >= flat[:-1]).all())
    return SegmentPlan(order, bounds, n_adapters, in_order)


def segment_plan(segment_ids: torch.Tensor, n_adapters: int, func: str = "multi_lora_linear") -> SegmentPlan:
    """The plan of these (flattened) segment ids; raises UserError for ids outside [−1, n_adapters).

    Plans are cached per tensor while its version counter, storage and shape are unchanged (writes
    through ``.data`` in place or a numpy view are not seen; a tensor swapped in through ``.data``
    is, since the plan holds the old storage); inference-mode tensors, which have no version counter,
    are planned every call.
    """
    if segment_ids.is_inference():
        return _build(segment_ids, n_adapters, func)
    key = id(segment_ids)
    hit = _PLANS.get(key)
    if hit is not None:
        ref, planned_for, _storage, plan = hit
        if ref() is segment_ids and planned_for == storage_key(segment_ids, n_adapters):
            return plan
    plan = _build(segment_ids, n_adapters, func)
    if key not in _PLANS:
        weakref.finalize(segment_ids, _PLANS.pop, key, None)
    _PLANS[key] = (weakref.ref(segment_ids), storage_key(segment_ids, n_adapters), segment_ids.untyped_storage(), plan)
    return plan
