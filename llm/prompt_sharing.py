"""Rows that continue a few distinct prompts: each prompt runs once and its key-value cache is shared.

Used where the D answers to one attack follow the same prompt: sampling them (rollout) and
scoring them in the update (losses). The probe judge shares its chats its own way
(:func:`redgame.llm.judge_probe.read_heads`).
"""

from __future__ import annotations

import contextlib
import inspect

import torch


def padded(rows: list[list[int]], pad_id: int, left: bool = False, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [B, T] padded on the right (or left) with ``pad_id``, and the attention mask (on ``device``)."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(width - len(r), width) if left else slice(0, len(r))
        ids[i, span] = torch.tensor(r, dtype=torch.long)
        mask[i, span] = 1
    return (ids, mask) if device is None else (ids.to(device), mask.to(device))


def common_prefix(rows: list[list[int]]) -> int:
    """How many first tokens all of two or more rows share (the chat template's system turn and user header, a role
    prompt's fixed text), leaving each row at least one token of its own; 0 for one row."""
    if len(rows) < 2:
        return 0
    first, most = rows[0], min(len(r) for r in rows) - 1
    return next((k for k in range(most) if any(r[k] != first[k] for r in rows)), max(most, 0))


def cache_of(output):
    """The key-value cache a forward pass with ``use_cache=True`` returned."""
    return output.cache if getattr(output, "cache", None) is not None else output.past_key_values


def cache_argument(module) -> str:
    """The name of `module.forward`'s key-value cache argument (also generate's).

    transformers renamed `past_key_values` to `cache` during the 5.x series (5.17 has the
    old name, 5.24 the new one): read it off the signature rather than the version.
    """
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


class SharedPrompts:
    """The distinct prompts of some rows, left-padded, and which one each row continues.

    ``keys``: one hashable per row; rows with equal keys share a prompt. ``tokens(key)``: that
    prompt's token ids (the key itself by default); ``row(key)``: the adapter it runs through
    (None: one for all), whose prompts' common start :meth:`run` reads once. ``distinct`` lists
    the keys in the order of their first row; ``group[i]`` is row i's index in it; ``ids`` and
    ``mask`` [len(distinct), T] are the prompts, left-padded, on ``device``.
    """

    def __init__(self, keys: list, pad_id: int, device, tokens=lambda key: key, row=lambda key: None):
        index: dict = {}
        for key in keys:
            index.setdefault(key, len(index))
        self.distinct = list(index)
        self.group = torch.tensor([index[key] for key in keys], device=device)
        self.prompts = [list(tokens(k)) for k in self.distinct]
        self.rows = [row(k) for k in self.distinct]
        self.pad_id, self.device = pad_id, device
        self.ids, self.mask = padded(self.prompts, pad_id, left=True, device=device)

    @property
    def positions(self) -> torch.Tensor:
        """Position ids of the padded prompts: each counted from its first real token."""
        return (self.mask.cumsum(1) - 1).clamp_min(0)

    def run(self, body, routing=lambda rows: contextlib.nullcontext()):
        """The distinct prompts through the decoder ``body`` with ``use_cache``: its output, whose cache holds them all.

        The first tokens that one row's prompts all begin with (a role prompt's fixed text, the chat
        template's system turn: :func:`common_prefix`) run once for that row, and the prompts' own tokens
        run after a copy of that cache, left-padded, positions counted on from it (a causal model's
        states of a prefix do not depend on what follows it). ``ids`` and ``mask`` become the layout
        that ran: each prompt's row start (masked where it has none), then its own tokens.
        ``routing(rows)``: a context that runs each row of the pass through its adapter.
        """
        start = {r: common_prefix([p for q, p in zip(self.rows, self.prompts) if q == r]) for r in dict.fromkeys(self.rows)}
        starters = [r for r in start if start[r]]
        if not starters:
            with routing(self.rows):
                return body(input_ids=self.ids, attention_mask=self.mask, position_ids=self.positions, use_cache=True)
        ids, mask = padded([self.prompts[self.rows.index(r)][:start[r]] for r in starters], self.pad_id, left=True,
                           device=self.device)
        with routing(starters):
            out = body(input_ids=ids, attention_mask=mask, position_ids=(mask.cumsum(1) - 1).clamp_min(0), use_cache=True)
        which = torch.tensor([starters.index(r) if start[r] else 0 for r in self.rows], device=self.device)
        cache = cache_of(out)
        cache.batch_select_indices(which)  # each prompt's copy of its row's start
        has_start = torch.tensor([[bool(start[r])] for r in self.rows], device=self.device)
        own_ids, own_mask = padded([p[start[r]:] for r, p in zip(self.rows, self.prompts)], self.pad_id, left=True,
                                   device=self.device)
        self.ids = torch.cat([torch.where(has_start, ids[which], self.pad_id), own_ids], 1)
        self.mask = torch.cat([mask[which] * has_start, own_mask], 1)
        with routing(self.rows):
            return body(input_ids=own_ids, attention_mask=self.mask, position_ids=self.positions[:, ids.shape[1]:],
                        use_cache=True, **{cache_argument(body): cache})

    def share(self, cache):
        """``cache`` of the distinct prompts, its rows copied to the rows that continue each one (in place)."""
        cache.batch_select_indices(self.group)
        return cache

    def continuation(self, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(attention mask, position ids) of rows [rows, width] that run after their prompt's shared cache
        (:func:`continuation`)."""
        return continuation(self.mask, self.group, mask)


def continuation(prompt_mask: torch.Tensor, group: torch.Tensor,
                 mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(attention mask, position ids) of rows [rows, width] that run after cached prompts, row i after prompt
    ``group[i]``.

    ``prompt_mask`` marks the prompts' real tokens in their cache, ``mask`` each row's; the attention mask
    covers the prompt's padded cache then the row, and positions go on from the prompt's real tokens.
    """
    positions = prompt_mask.sum(1)[group][:, None] + torch.arange(mask.shape[1], device=mask.device)[None]
    return torch.cat([prompt_mask[group], mask], 1), positions
