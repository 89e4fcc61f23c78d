"""Rows that continue a shared prompt's key-value cache see what one unpadded row sees."""

import contextlib

import torch

from redgame.llm.prompt_sharing import SharedPrompts, cache_argument, cache_of, common_prefix, padded


def test_layout_groups_rows_by_prompt_and_counts_positions_from_real_tokens():
    keys = [(5, 6, 7), (9,), (5, 6, 7), (1, 2), (9,), ()]  # () : a one-token prompt's head in the rollout
    shared = SharedPrompts(keys, pad_id=0, device="cpu")
    assert shared.distinct == [(5, 6, 7), (9,), (1, 2), ()]
    assert shared.group.tolist() == [0, 1, 0, 2, 1, 3]
    assert shared.ids.tolist() == [[5, 6, 7], [0, 0, 9], [0, 1, 2], [0, 0, 0]]
    assert shared.positions.tolist() == [[0, 1, 2], [0, 0, 0], [0, 0, 1], [0, 0, 0]]
    _, rest_mask = padded([[4, 4], [3], [8], [2, 2, 2], [1], [6]], pad_id=0)
    mask, positions = shared.continuation(rest_mask)
    assert mask.shape == (6, 3 + 3)
    assert mask[:, :3].tolist() == [[1, 1, 1], [0, 0, 1], [1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 0]]
    for row, key in enumerate(keys):  # row continues at its prompt's length
        assert positions[row].tolist() == [len(key), len(key) + 1, len(key) + 2]


def test_keys_map_to_tokens():
    shared = SharedPrompts([("a", (4, 5)), ("b", (4, 5)), ("a", (4, 5))], pad_id=0, device="cpu",
                           tokens=lambda key: key[1])
    assert shared.distinct == [("a", (4, 5)), ("b", (4, 5))]
    assert shared.group.tolist() == [0, 1, 0]
    assert shared.ids.tolist() == [[4, 5], [4, 5]]


def test_continuations_after_a_shared_cache_equal_one_unpadded_row_each(tiny):
    """Float64 reference: each prompt + continuation run alone, no padding at all."""
    from redgame.llm.losses import decoder_and_head

    model, _ = tiny
    body, _ = decoder_and_head(model.double())
    gen = torch.Generator().manual_seed(11)
    prompts = [torch.randint(3, 200, (n,), generator=gen).tolist() for n in (5, 2, 8)]
    rows = [(0, 3), (1, 1), (0, 5), (2, 2), (1, 4), (0, 1)]  # (prompt, continuation length): odd lengths, repeats
    keys = [tuple(prompts[p]) for p, _ in rows]
    rests = [torch.randint(3, 200, (n,), generator=gen).tolist() for _, n in rows]
    with torch.no_grad():
        shared = SharedPrompts(keys, pad_id=0, device="cpu")
        out = body(input_ids=shared.ids, attention_mask=shared.mask, position_ids=shared.positions, use_cache=True)
        ids, rest_mask = padded(rests, pad_id=0)
        mask, positions = shared.continuation(rest_mask)
        hidden = body(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                      **{cache_argument(body): shared.share(cache_of(out))}).last_hidden_state
        for row, (key, rest) in enumerate(zip(keys, rests)):
            alone = body(input_ids=torch.tensor([list(key) + rest])).last_hidden_state[0, len(key):]
            torch.testing.assert_close(hidden[row, :len(rest)], alone, rtol=1e-10, atol=1e-10)


def test_a_start_shared_by_a_rows_prompts_runs_once_and_continuations_equal_one_unpadded_row_each(tiny):
    """Float64 reference: row "a"'s three prompts begin with the same 4 tokens, run once; row "b"'s one prompt has
    no start of its own (its start columns masked); each continuation sees what its prompt + it alone sees."""
    from redgame.llm.losses import decoder_and_head

    model, _ = tiny
    body, _ = decoder_and_head(model.double())
    gen = torch.Generator().manual_seed(12)
    start = torch.randint(3, 200, (4,), generator=gen).tolist()
    keys = [("a", tuple(start + torch.randint(3, 200, (n,), generator=gen).tolist())) for n in (3, 1, 6)]
    keys.append(("b", tuple(start[:2] + [7, 8])))
    rows = [0, 1, 3, 0, 2, 3]  # which key each continuation follows
    rests = [torch.randint(3, 200, (n,), generator=gen).tolist() for n in (2, 3, 1, 4, 2, 3)]
    calls = []
    with torch.no_grad():
        shared = SharedPrompts([keys[k] for k in rows], pad_id=0, device="cpu", tokens=lambda k: k[1],
                               row=lambda k: k[0])
        out = shared.run(body, routing=lambda rows: calls.append(list(rows)) or contextlib.nullcontext())
        assert calls == [["a"], ["a", "a", "b", "a"]]  # row a's start, then every prompt's own tokens
        assert shared.mask.shape[1] == 4 + 6 and shared.mask[2, :4].tolist() == [0, 0, 0, 0]  # "b": no start
        assert shared.ids[0, :4].tolist() == start and shared.ids[2, :4].tolist() == [0, 0, 0, 0]
        ids, rest_mask = padded(rests, pad_id=0)
        mask, positions = shared.continuation(rest_mask)
        hidden = body(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                      **{cache_argument(body): shared.share(cache_of(out))}).last_hidden_state
        for row, (k, rest) in enumerate(zip(rows, rests)):
            prompt = list(keys[k][1])
            alone = body(input_ids=torch.tensor([prompt + rest])).last_hidden_state[0, len(prompt):]
            torch.testing.assert_close(hidden[row, :len(rest)], alone, rtol=1e-10, atol=1e-10)


def test_cache_argument_is_read_off_the_forward_signature():
    class OldNames(torch.nn.Module):
        def forward(self, input_ids, past_key_values=None, use_cache=False):
            return input_ids

    class NewNames(torch.nn.Module):
        def forward(self, input_ids, cache=None, use_cache=False):
            return input_ids

    assert cache_argument(OldNames()) == "past_key_values"
    assert cache_argument(NewNames()) == "cache"


def test_common_prefix_leaves_each_row_a_token_of_its_own():
    assert common_prefix([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]]) == 2
    assert common_prefix([[1, 2, 3], [1, 2, 3, 4]]) == 2  # one row is the other's start: it keeps its last token
    assert common_prefix([[1, 2], [3, 2]]) == 0
    assert common_prefix([[1, 2, 3]]) == 0  # one row: nothing to share
    assert common_prefix([[5], [5]]) == 0
