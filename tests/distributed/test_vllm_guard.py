"""``rollout_backend=vllm`` is refused, naming what is missing, before any compute or write."""

import importlib.util

import pytest
import torch

from redgame.errors import UserError
from redgame.llm import vllm_rollout
from redgame.llm.config import TrainConfig
from redgame.llm.trainer import train

HAS_VLLM_AND_GPU = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


@pytest.mark.skipif(HAS_VLLM_AND_GPU, reason="vllm and a GPU are here: nothing is missing")
def test_train_refuses_vllm_without_package_or_gpu(tmp_path):
    with pytest.raises(UserError, match="rollout_backend=vllm needs (the vllm package|a CUDA GPU)"):
        train(TrainConfig(model="tiny", rollout_backend="vllm", steps=1), tmp_path / "run", progress=False)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("overrides,match", [
    ({"model": "tiny"}, "local Hugging Face model folder"),
    ({"regime": "separate", "full_finetune": True}, "full_finetune"),
])
def test_vllm_needs_a_model_folder_and_adapters(monkeypatch, tmp_path, overrides, match):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object() if name == "vllm" else real(name, *a))
    monkeypatch.setattr(vllm_rollout.torch.cuda, "is_available", lambda: True)
    cfg = TrainConfig(**{"model": str(tmp_path), **overrides, "rollout_backend": "vllm"})
    with pytest.raises(UserError, match=match):
        vllm_rollout.require(cfg)


@pytest.mark.parametrize("name", ["tiny", "embedded"])
def test_vllm_refuses_redgames_own_models_beside_a_folder_of_their_name(monkeypatch, tmp_path, name):
    """With ./tiny in the working directory the guard passed, and vLLM would have loaded that folder while the
    trainer built redgame's tiny model."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "vllm" else real(n, *a))
    monkeypatch.setattr(vllm_rollout.torch.cuda, "is_available", lambda: True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).mkdir()
    with pytest.raises(UserError, match="local Hugging Face model folder"):
        vllm_rollout.require(TrainConfig(model=name, rollout_backend="vllm"))


def test_unknown_backend_is_named():
    with pytest.raises(UserError, match="'rollout_backend': 'vlm' is not one of torch, vllm"):
        TrainConfig(rollout_backend="vlm").validate()
