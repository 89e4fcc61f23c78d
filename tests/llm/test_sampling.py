"""The exponential-race sampler: its draws follow softmax(logits / T), and generate decodes them."""

import pytest
import torch

from redgame.llm.models import load_base
from redgame.llm.rollout import SamplingSettings, generate
from redgame.llm.sampling import ExponentialRaceSampler, draw


@pytest.mark.parametrize("temperature", [1.0, 0.5, 2.0])
def test_draws_follow_the_softmax(temperature):
    torch.manual_seed(0)
    logits = torch.randn(3, 7) * 2
    logits[1, 4] = float("-inf")  # a forbidden token
    n = 60_000
    assert draw(logits, temperature).shape == (3,)
    rows = draw(logits.repeat_interleave(n, 0), temperature).view(3, n)
    expected = torch.softmax(logits.double() / temperature, dim=-1)
    for row in range(3):
        freq = torch.bincount(rows[row], minlength=7).double() / n
        # 5 standard errors of a binomial proportion, per token
        bound = 5 * (expected[row] * (1 - expected[row]) / n).sqrt() + 1e-12
        assert ((freq - expected[row]).abs() <= bound).all(), (row, freq, expected[row])
    assert not (rows[1] == 4).any()


def test_the_processor_keeps_one_finite_token_per_row_and_is_seeded():
    scores = torch.randn(5, 11)
    torch.manual_seed(3)
    a = ExponentialRaceSampler(0.7)(None, scores)
    torch.manual_seed(3)
    b = ExponentialRaceSampler(0.7)(None, scores)
    assert torch.equal(a, b)
    assert (torch.isfinite(a).sum(1) == 1).all()


def test_non_finite_logits_are_a_clear_error():
    with pytest.raises(FloatingPointError, match="not finite"):
        draw(torch.tensor([[0.0, float("nan"), 1.0]]))
    with pytest.raises(ValueError, match="temperature"):
        ExponentialRaceSampler(0.0)


def test_generate_samples_through_it_reproducibly():
    model, tokenizer = load_base("tiny")
    prompts = ["<|im_start|>user\nhello<|im_end|>\n<|im_start|>assistant\n"] * 4
    settings = SamplingSettings(max_new_tokens=6, temperature=1.0, top_p=1.0)
    torch.manual_seed(1)
    first = [c.completion_ids for c in generate(model, tokenizer, prompts, settings)]
    torch.manual_seed(1)
    again = [c.completion_ids for c in generate(model, tokenizer, prompts, settings)]
    assert first == again
    assert len({tuple(c) for c in first}) > 1  # sampled, not greedy: four rows of one prompt differ


def test_greedy_and_nucleus_sampling_keep_generate_s_own_decoding():
    from redgame.llm.rollout import PLAIN_DECODING, _decoding

    assert _decoding(SamplingSettings(greedy=True)) == {**PLAIN_DECODING, "do_sample": False}
    nucleus = _decoding(SamplingSettings(top_p=0.9, temperature=0.7))
    assert nucleus["do_sample"] is True and nucleus["top_p"] == 0.9 and "logits_processor" not in nucleus
    full = _decoding(SamplingSettings(temperature=0.7))
    assert full["do_sample"] is False and isinstance(full["logits_processor"][0], ExponentialRaceSampler)
    assert full["logits_processor"][0].temperature == 0.7


def test_a_token_of_probability_zero_is_never_drawn_even_when_a_uniform_draw_is_zero(monkeypatch):
    """torch.rand gives exactly 0 once in 2**24: -log 0 is an infinite wait, the one possible token scored 0, and
    argmax returned token 0, whose logit was -inf."""
    monkeypatch.setattr(torch, "rand_like", lambda x: torch.zeros_like(x))
    logits = torch.tensor([[float("-inf"), 0.0, float("-inf")], [float("-inf"), -3.0, 5.0]])
    assert draw(logits).tolist() == [1, 2]


def test_greedy_rows_take_their_argmax_and_the_others_draw_as_they_would_alone():
    logits = torch.randn(7, 50, generator=torch.Generator().manual_seed(1), dtype=torch.float64).float() * 3
    greedy = torch.tensor([False, True, False, False, True, True, False])
    ids = torch.zeros(7, 4, dtype=torch.long)  # no row has ended
    torch.manual_seed(5)
    alone = draw(logits[~greedy], 1.3)
    torch.manual_seed(5)
    sampler = ExponentialRaceSampler(1.3, greedy, ends=(49,))
    kept = sampler(ids, logits).argmax(-1)
    assert torch.equal(kept[greedy], logits[greedy].argmax(-1)) and torch.equal(kept[~greedy], alone)
    # once every sampled row has drawn an end, nothing more is drawn (a call of those rows alone would have stopped)
    ended = ids.clone()
    ended[~greedy, -1] = 49
    sampler(ended, logits)  # marks them; they stay ended whatever padding follows
    state = torch.get_rng_state()
    assert torch.equal(sampler(torch.zeros_like(ids), logits).argmax(-1), logits.argmax(-1))
    assert torch.equal(torch.get_rng_state(), state)
    # a prompt (or forced prefix) that ends in an end token has not ended: its first token is drawn
    torch.manual_seed(5)
    fresh = ExponentialRaceSampler(1.3, greedy, ends=(49,))
    assert torch.equal(fresh(torch.full_like(ids, 49), logits).argmax(-1)[~greedy], alone)
    with pytest.raises(ValueError, match="3 greedy_rows flags for 7 rows"):
        ExponentialRaceSampler(1.0, greedy[:3])(ids, logits)
