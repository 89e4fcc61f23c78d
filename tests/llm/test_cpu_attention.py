"""redgame_sdpa: transformers' sdpa, with a half-precision CPU backward computed in float32."""

import copy
import types

import pytest
import torch
import torch.nn.functional as F

from redgame.llm import cpu_attention
from redgame.llm.models import load_base


@pytest.fixture
def calls(monkeypatch):
    """The dtype of q in every scaled_dot_product_attention call."""
    seen = []
    original = F.scaled_dot_product_attention

    def recording(query, *args, **kwargs):
        seen.append(query.dtype)
        return original(query, *args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", recording)
    return seen


def _hidden_and_grad(model, ids, mask):
    embeds = model.get_input_embeddings()(ids).detach().requires_grad_()
    hidden = model.model(inputs_embeds=embeds, attention_mask=mask).last_hidden_state
    (grad,) = torch.autograd.grad(hidden.double()[mask.bool()].square().sum(), embeds)  # padding left out
    return hidden.detach().double(), grad.double()


def _batch(model):
    ids = torch.randint(3, model.config.vocab_size, (3, 11), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, :4] = 0  # one left-padded row
    return ids, mask


def test_loaded_models_use_it_and_float32_is_plain_sdpa(calls):
    model, _ = load_base("tiny")
    assert model.config._attn_implementation == cpu_attention.NAME
    plain = copy.deepcopy(model)
    plain.set_attn_implementation("sdpa")
    ids, mask = _batch(model)
    ours, theirs = _hidden_and_grad(model, ids, mask), _hidden_and_grad(plain, ids, mask)
    assert torch.equal(ours[0], theirs[0]) and torch.equal(ours[1], theirs[1])
    assert set(calls) == {torch.float32}


def test_bfloat16_backward_runs_in_float32_and_matches_float64(calls):
    """The attention call alone, GQA and a padding mask: output and d q, d k, d v against float64."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(3, heads, 13, 16, generator=gen) for heads in (4, 2, 2))
    mask = torch.ones(3, 1, 13, 13, dtype=torch.bool).tril()
    mask[0, :, :, :5] = False
    mask[0, :, :5, :5] = torch.eye(5, dtype=torch.bool)  # padded queries see only themselves
    module = types.SimpleNamespace(num_key_value_groups=2, is_causal=True, training=False)
    out_grad = torch.randn(3, 13, 4, 16, generator=gen)

    def run(dtype, attention):
        leaves = [t.to(dtype).requires_grad_() for t in (q, k, v)]
        out, _ = attention(module, *leaves, mask, dropout=0.0, scaling=0.25)
        return [out.double(), *(g.double() for g in torch.autograd.grad(out, leaves, out_grad.to(dtype)))]

    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    want = run(torch.float64, sdpa_attention_forward)
    calls.clear()
    got = run(torch.bfloat16, cpu_attention._attention)
    assert set(calls) == {torch.float32}  # with gradients: q, k, v in float32
    for name, a, b in zip(["out", "dq", "dk", "dv"], got, want):
        assert (a - b).norm() <= 1e-2 * b.norm(), name
    with torch.no_grad():
        calls.clear()
        cpu_attention._attention(module, q.bfloat16(), k.bfloat16(), v.bfloat16(), mask, scaling=0.25)
    assert set(calls) == {torch.bfloat16}  # no gradient: sdpa as it is


def test_rows_that_see_no_key_are_opened_to_every_key_and_the_others_kept():
    from redgame.llm.cpu_attention import attend_somewhere

    allowed = torch.tensor([[False, False, False], [True, False, False], [True, True, False]])[None, None]
    opened = attend_somewhere(allowed)
    assert opened[0, 0, 0].all() and torch.equal(opened[0, 0, 1:], allowed[0, 0, 1:])
    additive = torch.where(allowed, 0.0, torch.finfo(torch.bfloat16).min).to(torch.bfloat16)
    opened = attend_somewhere(additive)
    assert (opened[0, 0, 0] == 0).all() and torch.equal(opened[0, 0, 1:], additive[0, 0, 1:])
    assert attend_somewhere(None) is None
