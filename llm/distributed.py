"""The game on several processes: torchrun / ``accelerate launch`` data parallelism.

``redgame llm train`` started by ``torchrun`` (or ``accelerate launch``, which sets the
same variables) reads ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` and joins a process group
(nccl on GPU, gloo on CPU). Then, as in PyTorch's DistributedDataParallel (Li et al. 2020,
"PyTorch Distributed: Experiences on Accelerating Data Parallel Training", VLDB):

- every rank holds the same adapters (same seed, same initialisation, same updates);
- the step's seed batch is a pure function of (seed, step), whatever the world size; rank r
  plays, judges and scores the seeds ``r, r + N, r + 2N, ...`` of it, so a run resumed at
  another world size sees the same data, step by step;
- each rank's loss is a mean over its own items; it is weighted by
  ``local items * N / global items`` and the gradients are summed and divided by N, so the
  update is the gradient of the mean over the *global* batch (exact for DPO/IPO and for the
  policy-gradient losses, whose surrogate and KL are both means over samples of each sample's
  token mean; REINFORCE++ whitens its returns over every rank's tokens, :meth:`Dist.sum_over_ranks`);
- each rank judges its own exchanges, or (``judge_rank``) one rank loads the judge and
  judges every rank's round, sent to it as JSON, and sends each rank its judged round back;
- only rank 0 writes the run folder (config, metrics, checkpoints, final adapters); the
  others wait at a barrier, and all ranks read the checkpoint on ``--resume``.

Gradients are averaged with one explicit ``all_reduce`` of the trainable gradients after
``backward`` rather than by wrapping the model in ``DistributedDataParallel``: a step runs
several forward passes through one peft model with different adapters active (policy,
reference, the other role), and a rank may have no pair to learn from in a step; DDP's
hooks expect one forward per backward over a fixed set of parameters, and a rank that
skips ``backward`` would leave the others waiting in DDP's all-reduce.

Usage::

    dist = setup()                      # from the environment; a no-op without WORLD_SIZE > 1
    seeds = dist.shard(global_seeds)
    loss = loss * dist.batch_share(n_local_items)
    loss.backward(); dist.average_gradients(params)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from dataclasses import dataclass

import torch

from redgame.errors import UserError

# Metrics that are counts over the whole batch (summed over ranks); the rest are averaged.
SUMMED_METRICS = ("parse_errors", "judge_errors", "attacker/pairs", "defender/pairs", "tokens_per_s")


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise UserError(f"environment variable {name}={raw!r} is not an integer") from None
    if value < 0:
        raise UserError(f"environment variable {name}={raw!r} must be >= 0")
    return value


@dataclass
class Dist:
    """This process's place in the run: world size, rank, and the collectives the trainer uses."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    backend: str | None = None   # None: one process, no process group
    owns_group: bool = False     # this object initialised the group (and destroys it)
    lockstep: bool = False       # FSDP: every rank must run the same forward passes

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" else torch.device("cpu")

    def placement(self, device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
        """Where this process's model runs, and in which dtype (``models.placement``).

        One process: ``device`` as given. Under torchrun with NCCL, rank r uses ``cuda:LOCAL_RANK``;
        with gloo, the CPU.
        """
        from redgame.llm.models import placement, resolve_dtype

        if not self.active:
            return placement(device, dtype)
        return self.device, resolve_dtype(dtype, self.device)

    # -- data ------------------------------------------------------------------------------
    def shard(self, items: list) -> list:
        """This rank's part of a global batch: items ``rank, rank + N, ...`` (harmful/benign stay balanced)."""
        return list(items[self.rank::self.world_size])

    def seed_step(self, seed: int, step: int) -> None:
        """With several ranks, seed torch's generator from (seed, step, rank) at each step.

        Ranks must sample different rollouts, and a resumed run must sample as the
        uninterrupted one did; one process keeps the single generator of the checkpoint.
        """
        if not self.active:
            return
        digest = hashlib.sha256(f"{seed}:{step}:{self.rank}".encode()).digest()
        torch.manual_seed(int.from_bytes(digest[:8], "little"))

    # -- collectives -------------------------------------------------------------------------
    def _all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        import torch.distributed as td

        moved = tensor.to(self.device)
        td.all_reduce(moved, op=td.ReduceOp.SUM)
        return moved.to(tensor.device)

    def sum_over_ranks(self, tensor: torch.Tensor) -> torch.Tensor:
        """``tensor`` summed over the ranks (itself in one process); every rank must call it."""
        return self._all_reduce(tensor) if self.active else tensor

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as td

            td.barrier()

    def together(self, step) -> None:
        """Run ``step()`` on this rank; when it raises on any rank, every rank raises (the failing one its own
        error, the others a UserError naming it), so that none waits at a collective for a rank that stopped.
        Itself a collective, so also a barrier."""
        error = None
        try:
            step()
        except Exception as exc:
            if not self.active:
                raise
            error = exc
        messages = self.all_gather_json(None if error is None else str(error).strip() or type(error).__name__)
        if error is not None:
            raise error
        failed = [(rank, message) for rank, message in enumerate(messages) if message is not None]
        if failed:
            raise UserError(f"rank {failed[0][0]} stopped: {failed[0][1]}")

    def batch_share(self, local_items: int) -> float:
        """``local_items * N / global_items``: the weight that makes the averaged gradient the global mean's."""
        if not self.active:
            return 1.0
        total = int(self._all_reduce(torch.tensor([float(local_items)], dtype=torch.float64)).item())
        return local_items * self.world_size / total if total else 0.0

    def any_rank(self, flag: bool) -> bool:
        if not self.active:
            return bool(flag)
        return bool(self._all_reduce(torch.tensor([1.0 if flag else 0.0])).item() > 0)

    def all_ranks(self, flag: bool) -> bool:
        return not self.any_rank(not flag)

    @torch.no_grad()
    def average_gradients(self, params: list[torch.nn.Parameter]) -> None:
        """Sum the gradients over ranks and divide by N, in one all_reduce (DDP's averaging).

        A rank without a gradient for a parameter adds zeros; a parameter no rank has a
        gradient for keeps ``grad = None`` (so the optimiser skips it, as in one process).
        """
        if not self.active or not params:
            return
        flat = [p.grad.reshape(-1).to(torch.float32) if p.grad is not None
                else torch.zeros(p.numel(), dtype=torch.float32, device=p.device) for p in params]
        present = torch.tensor([0.0 if p.grad is None else 1.0 for p in params], device=flat[0].device)
        buffer = self._all_reduce(torch.cat(flat + [present]))
        present = buffer[-len(params):]
        offset = 0
        for p, seen in zip(params, present.tolist()):
            n = p.numel()
            if seen > 0:
                grad = (buffer[offset:offset + n] / self.world_size).view_as(p).to(p.dtype)
                p.grad = grad if p.grad is None else p.grad.copy_(grad)
            offset += n

    def all_gather_json(self, value) -> list:
        """``value`` from every rank, in rank order, sent as JSON bytes (no pickle between processes)."""
        if not self.active:
            return [value]
        import torch.distributed as td

        data = torch.frombuffer(bytearray(json.dumps(value).encode()), dtype=torch.uint8).to(self.device)
        size = torch.tensor([data.numel()], dtype=torch.long, device=self.device)
        sizes = [torch.zeros_like(size) for _ in range(self.world_size)]
        td.all_gather(sizes, size)
        padded = torch.zeros(int(max(int(n) for n in sizes)), dtype=torch.uint8, device=self.device)
        padded[:data.numel()] = data
        chunks = [torch.zeros_like(padded) for _ in range(self.world_size)]
        td.all_gather(chunks, padded)
        return [json.loads(chunk[:int(n)].cpu().numpy().tobytes()) for chunk, n in zip(chunks, sizes)]

    def check_fits(self, cfg) -> None:
        """What a config cannot do in this many processes, as one UserError before any model loads (and
        before ``--overwrite`` removes anything): PSRO in several processes; FSDP whose seeds per step do
        not split evenly over the ranks."""
        if not self.active:
            return
        if cfg.population_every:
            raise UserError("population_every (PSRO) runs in one process; start it without torchrun/accelerate")
        if cfg.fsdp and cfg.seeds_per_step % self.world_size:
            raise UserError(f"config key 'fsdp': seeds_per_step ({cfg.seeds_per_step}) must be a multiple of the "
                            f"number of processes ({self.world_size}), so every rank runs the same forward passes")

    def shard_frozen_layers(self, roles, batch: int) -> None:
        """FSDP (``fully_shard``, Zhao et al. 2023, arXiv 2304.11277) on each transformer block of the base.

        The frozen base weights of the blocks are split over the ranks and gathered for each
        forward pass; the adapters (every ``lora_`` parameter, EMA references included) stay
        whole on every rank and are averaged by :meth:`average_gradients` as without FSDP.
        Embeddings, final norm and LM head stay whole too. Every rank must then run the same
        forward passes: ``batch`` (seeds per step) must split evenly over the ranks (:meth:`check_fits`).
        """
        if not self.active:
            return
        assert batch % self.world_size == 0, "check_fits refuses this config before any model loads"
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard

        mesh = init_device_mesh(self.device.type, (self.world_size,))
        for model in {id(s.model): s.model for s in roles.slots.values()}.values():
            if not hasattr(model, "get_base_model"):
                raise UserError("config key 'fsdp' shards the frozen base under adapters; it cannot run with full_finetune")
            adapters = {p for n, p in model.named_parameters() if "lora_" in n}
            blocks = set(getattr(model.get_base_model(), "_no_split_modules", None) or ())
            layers = [m for m in model.modules() if type(m).__name__ in blocks]
            if not layers:
                raise UserError("config key 'fsdp': the model names no transformer block class (_no_split_modules)")
            for layer in layers:
                fully_shard(layer, mesh=mesh, ignored_params=adapters)
        self.lockstep = True

    def judges_here(self, judge_rank: int) -> bool:
        """Whether this process needs a judge: always when each rank judges its own round."""
        return not self.active or judge_rank < 0 or self.rank == judge_rank

    def judge(self, judge_fn, rnd, judge_rank: int):
        """``judge_fn(rnd)`` for this rank's round: here, or on ``judge_rank`` for every rank's round."""
        if not self.active or judge_rank < 0:
            return judge_fn(rnd)
        rounds = self.all_gather_json(round_to_json(rnd))
        mine = [judged_to_json(judge_fn(rnd if r == self.rank else round_from_json(data)))
                for r, data in enumerate(rounds)] if self.rank == judge_rank else []
        return judged_from_json(self.all_gather_json(mine)[judge_rank][self.rank])

    def merge_metrics(self, row: dict) -> dict:
        """One metrics row for the global batch (:func:`merge_rows` of every rank's row), with ``world_size``."""
        rows = self.all_gather_json(row) if self.active else [row]
        return {**merge_rows(rows), "world_size": self.world_size}

    def close(self) -> None:
        if self.owns_group:
            import torch.distributed as td

            if td.is_initialized():
                td.destroy_process_group()
            self.owns_group = False


def merge_rows(rows: list[dict]) -> dict:
    """The ranks' metrics rows as one: counts summed, ``time/*`` the slowest rank, rates pooled.

    A rate ``key`` that comes with a count ``count/key`` (how many answers it is over) is the
    global batch's rate: each rank's rate weighted by its count, ranks with none left out. A
    role's other metrics (``ROLE/pref_loss``, ``ROLE/nll``, ``ROLE/margin``: means over the rank's
    pairs, so the one-process value) are weighted by the rank's ``ROLE/pairs`` (a DPO/IPO role's ``ROLE/kl``, a
    mean over tokens, only nearly: to about 3e-4 relative in the two-rank test). Other rates are
    the mean over ranks of their finite values. The ``count/`` keys are not kept. A policy-gradient role's
    metrics (``ROLE/nll``, ``ROLE/pg_loss``, ``ROLE/kl``, ``ROLE/mean_reward``: means over its samples) are
    weighted by ``ROLE/samples`` (until 2026-12-05 they were the plain mean over ranks, off where shards were uneven).
    """
    merged: dict = {}
    for key in dict.fromkeys(k for r in rows for k in r if not k.startswith("count/")):
        values = [r[key] for r in rows if key in r]
        numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        if key == "step" or len(values) == 1 or len(numbers) != len(values):
            merged[key] = values[0]
        elif key in SUMMED_METRICS or key.endswith(("/pairs", "/samples")):
            merged[key] = sum(numbers)
        elif key.startswith("time/"):
            merged[key] = max(numbers)  # the step waits for the slowest rank
        else:  # a role's per-pair (DPO) or per-sample (policy-gradient) means: weighted by its pairs or samples
            role = key.partition("/")[0]
            weight = lambda r: r.get(f"count/{key}", r.get(f"{role}/pairs", r.get(f"{role}/samples", 1)))  # noqa: E731
            merged[key] = _pooled_rate([(r[key], weight(r)) for r in rows if key in r])
    return merged


def _pooled_rate(rates: list[tuple[float, float]]) -> float:
    """The count-weighted mean of the finite rates with a positive count; NaN if there is none."""
    kept = [(value, count) for value, count in rates if math.isfinite(value) and count > 0]
    total = sum(count for _, count in kept)
    return sum(value * count for value, count in kept) / total if total else float("nan")


def round_to_json(rnd) -> dict:
    """A :class:`~redgame.llm.rollout.Round` as JSON-able lists and dicts."""
    return dataclasses.asdict(rnd)


def round_from_json(data: dict):
    from redgame.llm.rollout import Completion, Round
    from redgame.llm.seeds import Seed

    return Round(**{**data, "seeds": [Seed(**s) for s in data["seeds"]],
                    "attacks": [Completion(**c) for c in data["attacks"]],
                    "responses": [Completion(**c) for c in data["responses"]]})


def judged_to_json(judged) -> dict:
    return dataclasses.asdict(judged)


def judged_from_json(data: dict):
    from redgame.llm.rewards import JudgedRound, RoleSignal

    signal = lambda d: RoleSignal(**{**d, "pairs": [tuple(p) for p in d["pairs"]]})  # noqa: E731
    return JudgedRound(**{**data, "defender": signal(data["defender"]), "attacker": signal(data["attacker"])})


def setup(*, min_items: int | None = None, judge_rank: int = -1, device: str = "auto") -> Dist:
    """Join the process group described by the environment (torchrun, accelerate); one process without it.

    ``min_items``: the global batch size, which must give every rank at least one item;
    ``judge_rank``: the rank that judges (-1: every rank judges its own round);
    ``device``: ``auto`` (NCCL and ``cuda:LOCAL_RANK`` when CUDA is there, gloo and the CPU
    otherwise), ``cuda`` (NCCL; an error without CUDA) or ``cpu`` (gloo).
    """
    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return Dist()
    rank, local_rank = _env_int("RANK", 0), _env_int("LOCAL_RANK", 0)
    if rank >= world:
        raise UserError(f"environment: RANK={rank} is not below WORLD_SIZE={world}")
    if judge_rank >= world:
        raise UserError(f"config key 'judge_rank' ({judge_rank}) must be below the number of processes ({world})")
    if min_items is not None and min_items < world:
        raise UserError(f"config key 'seeds_per_step' ({min_items}) must be >= the number of processes ({world}): "
                        "each rank plays at least one seed")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name):
            raise UserError(f"WORLD_SIZE={world} but {name} is not set; "
                            "start the run with torchrun or accelerate launch")
    if device.startswith("cuda:"):
        raise UserError(f"device {device!r}: under torchrun each process uses cuda:LOCAL_RANK; pass --device cuda or auto")
    import torch.distributed as td

    from redgame.llm.models import resolve_device

    if not td.is_available():
        raise UserError("this torch build has no torch.distributed; run on one process")
    backend = "nccl" if resolve_device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        if local_rank >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK={local_rank} but this node has {torch.cuda.device_count()} GPUs")
        torch.cuda.set_device(local_rank)
    owns = not td.is_initialized()
    if owns:
        td.init_process_group(backend=backend, rank=rank, world_size=world)
    return Dist(world, rank, local_rank, backend, owns)


__all__ = ["Dist", "setup", "merge_rows", "SUMMED_METRICS"]
