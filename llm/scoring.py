"""Log-probs of many roles' sequences in few forward passes, micro-batched.

A game step scores sequences twice: under each trained role's reference (no gradients) and
under its policy (with them). Each role's sequences are a :class:`Job`. :func:`score` runs

- **one pass for several jobs** (``together``) whose weights live in one peft model:
  attacker and defender under ``bipolicy``, ``advgame`` and ``sequential``, or both roles of
  ``shared``. The sequences form one batch and each row goes through its own job's adapter,
  or through none (``redgame.kernels.peft_patch.routed``, ``multi_lora_linear`` with one
  segment id per row: the per-row routing of Punica, Chen et al. 2023, arXiv 2310.18547).
  The numbers are those of one pass per job. Where that cannot be exact (kernels off, so
  the LoRA layers are peft's own; jobs in separate models; dropout), each job gets its own
  pass inside its own context (``Job.enter``), which is the previous path;
- **micro-batches** of at most ``micro_tokens`` padded tokens (rows × longest row), longest
  sequences first so that rows of similar length share a micro-batch (less padding). A job's
  ``units`` are the sequences that must share one (a DPO pair); with gradients, ``on_part``
  turns each micro-batch's log-probs into its share of the loss, which is back-propagated
  at once, so one micro-batch's activations are alive at a time (gradient accumulation);
- **shared prompts** (``share_prompts``): sequences of a micro-batch with the same prompt
  and adapter (a DPO pair's chosen and rejected answers) run the prompt once and continue
  from its key-value cache (``losses.completion_logprobs``);
- **losses on hidden states** (``Job.fused``): with gradients, a fused job's sequences skip
  the per-token log-probs; ``on_part`` gets their hidden states and targets instead
  (``Part.hidden``, ``Part.targets``, ``Part.head``: the input of a fused loss such as
  ``redgame.kernels.fused_preference_loss``) and fills ``Part.values`` (detached) itself.

Usage::

    jobs = [Job(model, "attacker", lambda: roles.policy("attacker"), sequences, units), ...]
    logprobs = score(jobs, pad_id, together=True, micro_tokens=4096, on_part=loss_of_part)
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from redgame.llm.losses import TokenLogprobs, at_temperature, completion_hidden, completion_logprobs, token_logprobs


@dataclass
class Job:
    """One role's sequences to score under one set of weights."""

    model: torch.nn.Module          # the module the sequences run in
    adapter: str | None             # its adapter for these rows (None: adapters off / full weights)
    enter: Callable                 # a context manager yielding the model set up for this job alone
    sequences: list                 # rollout Completions (prompt_ids, completion_ids)
    units: list[list[int]] = field(default_factory=list)  # sequences that share a micro-batch; default: each alone
    fused: bool = False             # with gradients, on_part gets this job's hidden states, not log-probs

    def __post_init__(self):
        if not self.units:
            self.units = [[i] for i in range(len(self.sequences))]


@dataclass
class Part:
    """What one micro-batch scored of one job: its units and their sequences' per-token log-probs."""

    units: list[int]                          # indices into job.units
    values: dict[int, torch.Tensor]           # sequence index -> its per-token log-probs
    hidden: dict[int, torch.Tensor] = field(default_factory=dict)   # fused jobs: sequence -> [tokens, d]
    targets: dict[int, torch.Tensor] = field(default_factory=dict)  # fused jobs: sequence -> [tokens] ids
    head: torch.Tensor | None = None                                # fused jobs: the LM head [V, d]


def _length(job: Job, unit: list[int]) -> int:
    return max(len(job.sequences[i].prompt_ids) + len(job.sequences[i].completion_ids) for i in unit)


def micro_batches(jobs: list[Job], micro_tokens: int) -> list[list[tuple[int, int]]]:
    """(job, unit) lists, each under ``micro_tokens`` padded tokens; 0: one batch in the given order."""
    units = [(j, u) for j, job in enumerate(jobs) for u in range(len(job.units))]
    if not micro_tokens:
        return [units] if units else []
    units.sort(key=lambda ju: -_length(jobs[ju[0]], jobs[ju[0]].units[ju[1]]))
    batches: list[list[tuple[int, int]]] = []
    rows = width = 0
    for j, u in units:
        n, length = len(jobs[j].units[u]), _length(jobs[j], jobs[j].units[u])
        if batches and (rows + n) * max(width, length) <= micro_tokens:
            batches[-1].append((j, u))
            rows, width = rows + n, max(width, length)
        else:
            batches.append([(j, u)])
            rows, width = n, length
    return batches


def _one_pass(jobs: list[Job]) -> tuple[Callable, tuple | None] | None:
    """How jobs that share a model run in one pass: (context, route), or None where they cannot."""
    from redgame.kernels.peft_patch import routable

    model = jobs[0].model
    if any(job.model is not model for job in jobs):
        return None
    names = list(dict.fromkeys(job.adapter for job in jobs if job.adapter is not None))
    if not names:  # every row without adapters
        off = model.disable_adapter if hasattr(model, "disable_adapter") else contextlib.nullcontext
        return off, None
    if hasattr(model, "peft_config") and routable(model, names):
        return contextlib.nullcontext, tuple(names)
    return None


def score(jobs: list[Job], pad_id: int, *, together: bool = True, micro_tokens: int = 0, chunk: int = 0,
          use_kernels: bool | None = None, share_prompts: bool = False,
          on_part: Callable | None = None, temperature: float = 1.0) -> list[TokenLogprobs]:
    """Each job's per-token log-probs (detached where ``on_part`` took the gradient), in job order, at
    ``temperature`` (:func:`redgame.llm.losses.completion_logprobs`).

    ``on_part({job index: Part})`` is called for every micro-batch with gradients on and
    returns the micro-batch's loss (or None); its backward pass runs before the next one.
    """
    groups: list[list[int]] = []
    for j, job in enumerate(jobs):
        same = next((g for g in groups if together and jobs[g[0]].model is job.model), None)
        same.append(j) if same is not None else groups.append([j])
    values: list[dict[int, torch.Tensor]] = [{} for _ in jobs]
    for group in groups:
        plan = _one_pass([jobs[j] for j in group]) if together else None
        passes = [(group, plan)] if plan is not None else [([j], None) for j in group]
        for members, how in passes:
            enter = how[0] if how is not None else jobs[members[0]].enter
            route_names = how[1] if how is not None else None
            with enter():
                _score_pass([jobs[j] for j in members], members, values, pad_id, route_names, micro_tokens,
                            chunk, use_kernels, share_prompts, on_part, temperature)
    return [TokenLogprobs.of_sequences([vals[i] for i in range(len(job.sequences))])
            for job, vals in zip(jobs, values)]


def _score_pass(jobs: list[Job], indices: list[int], values: list[dict], pad_id: int, route_names, micro_tokens: int,
                chunk: int, use_kernels, share_prompts: bool, on_part, temperature: float = 1.0) -> None:
    """One forward pass over ``jobs`` (sharing a model), micro-batch by micro-batch."""
    adapter_of = [-1 if route_names is None or job.adapter is None else route_names.index(job.adapter)
                  for job in jobs]
    for batch in micro_batches(jobs, micro_tokens):
        batch = sorted(batch, key=lambda ju: adapter_of[ju[0]])  # each adapter's rows one run: slices, not gathers
        seqs = [(j, i) for j, u in batch for i in jobs[j].units[u]]
        prompts = [jobs[j].sequences[i].prompt_ids for j, i in seqs]
        comps = [jobs[j].sequences[i].completion_ids for j, i in seqs]
        route = None if route_names is None else (route_names, [adapter_of[j] for j, _ in seqs])
        parts: dict[int, Part] = {indices[j]: Part([], {}) for j, _ in batch}
        fused = [jobs[j].fused and on_part is not None and torch.is_grad_enabled() for j, _ in seqs]
        if any(fused):
            _fused_inputs(jobs[0].model, seqs, prompts, comps, fused, pad_id, route, use_kernels, share_prompts,
                          [parts[indices[j]] for j, _ in seqs], temperature)
        else:
            lp = completion_logprobs(jobs[0].model, prompts, comps, pad_id, use_kernels=use_kernels, chunk=chunk,
                                     route=route, share_prompts=share_prompts, temperature=temperature)
            for (j, i), v in zip(seqs, lp.per_sequence()):
                parts[indices[j]].values[i] = v
        for j, u in batch:
            parts[indices[j]].units.append(u)
        if on_part is not None and torch.is_grad_enabled():
            loss = on_part(parts)
            if loss is not None:
                loss.backward()
        for k, part in parts.items():
            values[k].update({i: v.detach() for i, v in part.values.items()})


def _fused_inputs(model, seqs, prompts, comps, fused: list[bool], pad_id: int, route, use_kernels,
                  share_prompts: bool, parts: list[Part], temperature: float = 1.0) -> None:
    """One forward pass; fused sequences' hidden states and targets, the others' log-probs, into their parts."""
    hidden, head, targets = completion_hidden(model, prompts, comps, pad_id, route, share_prompts)
    hidden = at_temperature(hidden, temperature)
    lengths = [len(c) for c in comps]
    rows, row_targets = hidden.split(lengths), targets.split(lengths)
    plain = [k for k, f in enumerate(fused) if not f]
    if plain:
        values = token_logprobs(torch.cat([rows[k] for k in plain]), head, torch.cat([row_targets[k] for k in plain]),
                                use_kernels=use_kernels).split([lengths[k] for k in plain])
        for k, v in zip(plain, values):
            parts[k].values[seqs[k][1]] = v
    for k in (k for k, f in enumerate(fused) if f):
        parts[k].hidden[seqs[k][1]], parts[k].targets[seqs[k][1]], parts[k].head = rows[k], row_targets[k], head
