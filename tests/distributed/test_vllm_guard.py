"""``rollout_backend=vllm`` is refused, naming what is missing, before any compute or write."""

import importlib.util
import json

import pytest
import torch

from redgame.errors import UserError
from redgame.llm import vllm_rollout
from redgame.llm.config import TrainConfig
from redgame.llm.trainer import train

HAS_VLLM_AND_GPU = importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def _pretend_vllm_and_a_gpu(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda n, *a: object() if n == "vllm" else real(n, *a))
    monkeypatch.setattr(vllm_rollout.torch.cuda, "is_available", lambda: True)


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
    _pretend_vllm_and_a_gpu(monkeypatch)
    cfg = TrainConfig(**{"model": str(tmp_path), **overrides, "rollout_backend": "vllm"})
    with pytest.raises(UserError, match=match):
        vllm_rollout.require(cfg)


@pytest.mark.parametrize("name", ["tiny", "embedded"])
def test_vllm_refuses_redgames_own_models_beside_a_folder_of_their_name(monkeypatch, tmp_path, name):
    """With ./tiny in the working directory the guard passed, and vLLM would have loaded that folder while the
    trainer built redgame's tiny model."""
    _pretend_vllm_and_a_gpu(monkeypatch)
    monkeypatch.chdir(tmp_path)
    (tmp_path / name).mkdir()
    with pytest.raises(UserError, match="local Hugging Face model folder"):
        vllm_rollout.require(TrainConfig(model=name, rollout_backend="vllm"))


def test_unknown_backend_is_named():
    with pytest.raises(UserError, match="'rollout_backend': 'vlm' is not one of torch, vllm"):
        TrainConfig(rollout_backend="vlm").validate()


@pytest.mark.parametrize("overrides,match", [
    ({"lora_rank": 300}, "LoRA ranks up to 256; config key 'lora_rank' is 300"),  # vLLM 0.10 refused 320 late
    ({"device": "cpu"}, "--device cpu would train the roles elsewhere"),
    ({"device": "cuda:1"}, "--device cuda:1 would train the roles elsewhere"),
])
def test_vllm_refuses_a_rank_it_cannot_serve_and_a_device_it_does_not_use(monkeypatch, tmp_path, overrides, match):
    _pretend_vllm_and_a_gpu(monkeypatch)
    with pytest.raises(UserError, match=match):
        vllm_rollout.require(TrainConfig(model=str(tmp_path), rollout_backend="vllm", **overrides))


def test_the_engine_gets_the_games_dtype_and_a_max_lora_rank_vllm_takes(monkeypatch, tmp_path):
    """vLLM takes max_lora_rank only from 8, 16, 32, 64, 128, 256 (newer ones also 320, 512): rank 4 was passed as 4
    (an error after the run folder was claimed), and the engine ran in its own dtype, not the game's."""
    import sys
    import types

    assert [vllm_rollout.served_rank(r) for r in (1, 4, 8, 9, 16, 24, 64, 200, 256)] == \
        [8, 8, 8, 16, 16, 32, 64, 256, 256]
    _pretend_vllm_and_a_gpu(monkeypatch)
    engines = []
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=lambda **kwargs: engines.append(kwargs)))
    cfg = TrainConfig(model=str(tmp_path), rollout_backend="vllm", lora_rank=4)
    tokenizer = types.SimpleNamespace(eos_token_id=2, convert_tokens_to_ids=lambda token: 7)  # 7: <|im_end|>
    model = types.SimpleNamespace(generation_config=types.SimpleNamespace(eos_token_id=[2, 0]))  # as Qwen2.5's
    rollout = vllm_rollout.VLLMRollout(cfg, tokenizer, run_dir=tmp_path / "run", dtype=torch.bfloat16, model=model)
    assert rollout.stop == [0, 2, 7]  # the ends the training model's generation config lists, not only the tokenizer's
    assert engines[0]["model"] == str(tmp_path)
    assert (engines[0]["dtype"], engines[0]["max_lora_rank"]) == ("bfloat16", 8)
    assert engines[0]["load_format"] == "safetensors"  # a folder's pickle weights stay unread there too
    assert "distributed_executor_backend" not in engines[0]  # one process: vLLM's own executor
    assert not (tmp_path / "run").exists()


def test_under_torchrun_each_engine_takes_its_ranks_gpu_and_every_seed_is_one_vllm_takes(monkeypatch, tmp_path):
    """Every rank's engine went to GPU 0 (vLLM's one-process executor); seed -1, or one past 2**32 - 1 with the
    rank added, passed the guard and failed in vLLM after the model had loaded."""
    import sys
    import types

    _pretend_vllm_and_a_gpu(monkeypatch)
    engines = []
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=lambda **kwargs: engines.append(kwargs)))
    tokenizer = types.SimpleNamespace(eos_token_id=2, convert_tokens_to_ids=lambda token: 7)
    for seed, rank in ((-1, 0), (2**32 - 1, 1)):
        cfg = TrainConfig(model=str(tmp_path), rollout_backend="vllm", seed=seed)
        vllm_rollout.VLLMRollout(cfg, tokenizer, run_dir=tmp_path / "run", dtype=torch.bfloat16, rank=rank,
                                 world_size=2)
    assert [e["distributed_executor_backend"] for e in engines] == ["external_launcher"] * 2
    assert [e["seed"] for e in engines] == [2**32 - 1, 0]


def test_each_request_samples_with_a_seed_from_torchs_generator(monkeypatch, tmp_path):
    """The engine's own stream restarts with each engine: a resumed run sampled step k with step 0's seeds. The
    requests' seeds come from torch's generator, which the checkpoint keeps (and torchrun seeds per step)."""
    import sys
    import types

    _pretend_vllm_and_a_gpu(monkeypatch)
    asked = []

    class Engine:
        def __init__(self, **kwargs):
            pass

        def generate(self, inputs, params, lora_request, use_tqdm):
            asked.append([p.kwargs["seed"] for p in params])
            return [types.SimpleNamespace(outputs=[types.SimpleNamespace(token_ids=[5, 2])]) for _ in inputs]

    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(
        LLM=Engine, SamplingParams=lambda **kwargs: types.SimpleNamespace(kwargs=kwargs)))
    rollout = vllm_rollout.VLLMRollout(TrainConfig(model=str(tmp_path), rollout_backend="vllm"), _Tokenizer(),
                                       run_dir=tmp_path / "run", dtype=torch.bfloat16)
    rollout.requests = {"defender": None}
    from redgame.llm.rollout import SamplingSettings

    for _ in range(2):
        torch.manual_seed(11)
        out = rollout.generate("defender", ["a", "b", "c"], SamplingSettings(max_new_tokens=4), ["", "", ""])
    assert asked[0] == asked[1] and len(set(asked[0])) == 3  # the same generator state: the same seeds
    assert [c.completion_ids for c in out] == [[5, 2]] * 3


class _Tokenizer:
    eos_token_id = 2

    def convert_tokens_to_ids(self, token):
        return 7

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(ch) for ch in text]}

    def decode(self, ids, skip_special_tokens=True):
        return " ".join(map(str, ids))


def test_an_engine_that_does_not_start_leaves_the_old_run_as_it_was(monkeypatch, tmp_path):
    """The engine starts before the run folder is claimed: a failed start with --overwrite leaves the old run."""
    import sys
    import types

    from redgame.llm import models

    model, tokenizer = models.load_base("tiny")
    model.save_pretrained(tmp_path / "model")
    tokenizer.save_pretrained(tmp_path / "model")
    run = tmp_path / "run"  # an old run's files, written as a finished run leaves them
    (run / "final").mkdir(parents=True)
    (run / "config.json").write_text(json.dumps(TrainConfig(model="tiny", steps=1).to_dict()))
    (run / "metrics.jsonl").write_text('{"step": 0}\n')
    (run / "final" / "attacker.safetensors").write_bytes(b"old weights")
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}

    def no_memory(**kwargs):
        raise RuntimeError("CUDA out of memory")

    _pretend_vllm_and_a_gpu(monkeypatch)
    monkeypatch.setattr(models, "resolve_device", lambda name="auto": torch.device("cpu"))  # the training's side
    monkeypatch.setitem(sys.modules, "vllm", types.SimpleNamespace(LLM=no_memory))
    cfg = TrainConfig(model=str(tmp_path / "model"), rollout_backend="vllm", steps=1, lora_rank=4)
    with pytest.raises(RuntimeError, match="out of memory"):
        train(cfg, run, overwrite=True, progress=False)
    assert {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()} == before
