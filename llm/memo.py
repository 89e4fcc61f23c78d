"""A memo for batched work on texts: each distinct key computed once, a bounded number kept.

The judges embed the same answers several times in one game step (labels, scores,
preferences) and ``redgame llm train-judge`` reads the same exchanges to fit, to choose and to
measure; both ask a :class:`Memo` instead of the model.
"""

from __future__ import annotations

from typing import Callable, Hashable, Sequence


class Memo:
    """The values of keys, each missing key computed once, in one batch per request.

    Args:
        compute: a batch of distinct keys -> their values, in order.
        limit: how many keys to keep (None: all). A request that would pass it clears the memo
            first and then keeps all of its own keys, so one request never computes a key twice.
        initial: values already computed, by key.

    Example:
        >>> memo = Memo(lambda texts: [len(t) for t in texts], limit=1000)
        >>> memo.get(["a cat", "a dog", "a cat"])     # computes "a cat" and "a dog" once each
        [5, 5, 5]
    """

    def __init__(self, compute: Callable[[list], Sequence], limit: int | None = None, initial: dict | None = None):
        self.compute = compute
        self.limit = limit
        self.stored: dict = dict(initial or {})

    def get(self, keys: Sequence[Hashable]) -> list:
        """The value of each key, in order."""
        unique = list(dict.fromkeys(keys))
        missing = self.missing(unique)
        if missing and self.limit is not None and len(self.stored) + len(missing) > self.limit:
            self.stored.clear()
            missing = unique
        if missing:
            self.stored.update(zip(missing, self.compute(missing)))
        return [self.stored[k] for k in keys]

    def missing(self, keys: Sequence[Hashable]) -> list:
        """The distinct keys not kept, in order of first appearance."""
        return [k for k in dict.fromkeys(keys) if k not in self.stored]

    def put(self, keys: Sequence[Hashable], values: Sequence) -> None:
        """Keep values computed elsewhere (of a repeated key, its first); past ``limit``, as :meth:`get`."""
        if len(keys) != len(values):
            raise ValueError(f"Memo.put: {len(keys)} keys but {len(values)} values")
        first: dict = {}
        for key, value in zip(keys, values):
            first.setdefault(key, value)
        fresh = {k: v for k, v in first.items() if k not in self.stored}
        if self.limit is not None and len(self.stored) + len(fresh) > self.limit:
            self.stored.clear()
            fresh = first
        self.stored.update(fresh)

    def clear(self) -> None:
        self.stored.clear()
