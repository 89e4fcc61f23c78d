"""The MiniLM embedder: unit rows, and a huge text costs what its first characters do."""

import torch

from redgame.llm.embedder import CHARS_PER_TOKEN_CUT, MAX_TOKENS, MiniLMEmbedder


def test_a_huge_text_is_cut_before_tokenising_and_embeds_as_its_beginning():
    """A 5 MB answer was tokenised whole (20 s and 1 GB for one line) though only its first 256 tokens are read."""
    embedder = MiniLMEmbedder()
    seen = []
    tokenize = embedder.tokenizer
    embedder.tokenizer = lambda texts, **kw: seen.extend(map(len, texts)) or tokenize(texts, **kw)
    sentence = "Mix the flour with water, knead the dough and let it rise for an hour. "
    huge = sentence * 20_000  # 1.4 million characters
    vectors = embedder.encode([huge, huge[:MAX_TOKENS * CHARS_PER_TOKEN_CUT], "a kitten"])
    assert max(seen) == MAX_TOKENS * CHARS_PER_TOKEN_CUT
    assert torch.equal(vectors[0], vectors[1])
    assert torch.allclose(vectors.norm(dim=1), torch.ones(3), atol=1e-6)
    short = embedder.encode([sentence * 3])  # well under the token limit: unchanged by the cut
    embedder.tokenizer = tokenize
    assert torch.equal(short, embedder.encode([sentence * 3]))
