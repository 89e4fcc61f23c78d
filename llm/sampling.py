"""Temperature sampling by an exponential race, for ``generate``.

``generate(do_sample=True)`` draws each token with ``torch.multinomial``: on a CPU it takes
the argmax of p_i / E_i over the vocabulary, E_i ~ Exp(1), and its ``exponential_`` draws
cost 185 ms per step on 96 rows of SmolLM2's 49,152-token vocabulary (2 cores).
:class:`ExponentialRaceSampler` runs the same race with E_i = −log U_i, 42 ms there: the same
distribution, softmax(logits / T) (the race is the Gumbel-max trick), but for its far tail: U is
float32, in steps of 2⁻²⁴, so no wait is below about 1e-7, and a token less likely than about 1e-7
of the row's likeliest is drawn less often than its probability (0.71× at 1e-7; float64 uniforms
would cost a fifth more per step and change every run's samples). Like multinomial's, a
draw changes under a small change of the logits only near a tie, so two runs whose numbers
differ slightly (kernels on and off, bfloat16) keep the same samples; an inverse-CDF draw,
tried first (3 ms), moves every token's interval with each earlier probability and made such
runs diverge. It is a logits processor that leaves only the drawn token finite, so
``generate`` runs with ``do_sample=False`` and its argmax returns the draw. The draw comes
from torch's default generator: ``torch.manual_seed`` makes it reproducible.

Rows may also be greedy (``greedy_rows``): they take their argmax, and the race draws for the
other rows only, as many waits as a call of those rows alone would draw (none once every one of
them has ended), so that folding a round's greedy answers into its sampled ones' call leaves the
samples as they were.

Nucleus sampling (``top_p < 1``) stays with ``generate``'s own sampler.
"""

from __future__ import annotations

import torch
from transformers import LogitsProcessor


class ExponentialRaceSampler(LogitsProcessor):
    """Keeps one token per row, drawn from softmax(scores / temperature); use with greedy decoding.

    ``greedy_rows`` [B] (bool): rows that keep their argmax instead; ``ends``: the token ids that end a row (a
    greedy row's pass that outlasts every sampled row's end draws nothing).
    """

    def __init__(self, temperature: float = 1.0, greedy_rows: torch.Tensor | None = None, ends: tuple[int, ...] = ()):
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)
        self.greedy_rows = greedy_rows
        self.ends = torch.tensor(sorted(ends), dtype=torch.long)
        self.ended = None  # per row: has it drawn an end (its later tokens are padding)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.greedy_rows is None:
            tokens = draw(scores, self.temperature)
        else:
            tokens = self._mixed(input_ids, scores)
        out = torch.full_like(scores, float("-inf"))
        return out.scatter_(1, tokens[:, None], 0.0)


    def _mixed(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Greedy rows' argmax; the sampled rows' race while one of them has not ended."""
        greedy = self.greedy_rows.to(scores.device)
        if greedy.shape != scores.shape[:1]:
            raise ValueError(f"ExponentialRaceSampler: {greedy.shape[0]} greedy_rows flags for {scores.shape[0]} rows")
        last = input_ids[:, -1]
        if self.ended is None:  # the first call: the last tokens are the prompts' (or forced prefixes'), no draw's
            self.ended = torch.zeros_like(last, dtype=torch.bool)
        else:
            self.ended |= torch.isin(last, self.ends.to(last.device))
        tokens = scores.argmax(dim=-1)
        if not (self.ended | greedy).all():
            tokens[~greedy] = draw(scores[~greedy], self.temperature)
        return tokens


def draw(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """One token id per row of ``logits`` [B, V], drawn from softmax(logits / temperature)."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)
    if not torch.isfinite(probs.sum(dim=-1)).all():
        raise FloatingPointError("sampling: the next-token probabilities are not finite (NaN or inf logits "
                                 "from the model)")
    # Exp(1); rand gives exactly 0 once in 2**24, an infinite wait that scored a token 0, and a row whose every
    # possible token waited forever drew token 0 whatever its probability: the waits stay finite (at most 87.3)
    waits = torch.rand_like(probs).clamp_min_(torch.finfo(probs.dtype).tiny).log_().neg_()
    return (probs / waits).argmax(dim=-1)
