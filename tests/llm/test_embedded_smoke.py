"""The real embedded model: load, one short rollout, one bipolicy update (CI smoke test)."""

import pytest
import torch

pytestmark = pytest.mark.embedded


def test_embedded_round_and_update(tmp_path, judge):
    from redgame.llm.config import TrainConfig
    from redgame.llm.models import load_base
    from redgame.llm.trainer import train

    base = load_base("embedded")
    cfg = TrainConfig(model="embedded", regime="bipolicy", steps=1, save_every=0, seeds_per_step=2,
                      attacks_per_seed=1, responses_per_attack=1, explore_prefixes=("I'm sorry, but I can't",),
                      attack_tokens=12, response_tokens=8, min_margin=0.0, lr=1e-3,
                      threads=torch.get_num_threads())  # set, as a config does, to the worker's share
    result = train(cfg, tmp_path, progress=False, base=base, judge=judge)
    roles = result["roles"]
    moved = [float(p.detach().abs().max()) for n, p in roles.named_parameters("defender") if "lora_B" in n]
    assert max(moved) > 0  # the defender adapter took one real update
    import json

    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert row["defender/pairs"] >= 1 and row["tokens_per_s"] > 0
    with roles.reference("defender") as m, torch.no_grad():
        assert m.config.num_hidden_layers == 30  # SmolLM2-135M
