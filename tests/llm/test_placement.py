"""Where the game runs: --device / --dtype, a Hub id from the local cache, the CUDA refusal."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from redgame.errors import UserError
from redgame.llm import models
from redgame.llm.config import TrainConfig
from redgame.llm.models import load_base, placement, resolve_device, resolve_dtype

BIN = Path(sys.executable).parent
HAS_CUDA = torch.cuda.is_available()
TINY_RUN = ["--model", "tiny", "--steps", "1", "--no-progress", "--set", "seeds_per_step=2",
            "--set", "attack_tokens=4", "--set", "response_tokens=4", "--set", "lora_rank=4"]


def test_auto_is_cuda_in_bf16_where_there_is_cuda_and_cpu_in_fp32_otherwise():
    device, dtype = placement("auto", "auto")
    assert (device.type, dtype) == (("cuda", torch.bfloat16) if HAS_CUDA else ("cpu", torch.float32))
    assert placement("cpu", "auto") == (torch.device("cpu"), torch.float32)
    assert resolve_dtype("bfloat16", torch.device("cpu")) == torch.bfloat16
    assert resolve_dtype("auto", torch.device("cuda", 0)) == torch.bfloat16
    assert resolve_dtype("float16") == torch.float16


@pytest.mark.parametrize("name", ["gpu", "cuda:x", "cuda:", "mps:0", "", "cuda:01", "cuda:\u00b2", "cuda:\u0661"])
def test_unknown_device_and_dtype_names_are_one_line_errors(name):
    """cuda:01 and Unicode digits passed str.isdigit, then crashed in torch.device as an internal error."""
    with pytest.raises(UserError, match="is not one of auto, cpu, cuda or cuda:N"):
        resolve_device(name)
    with pytest.raises(UserError, match="dtype 'float64' is not one of"):
        resolve_dtype("float64")
    with pytest.raises(UserError, match="device"):
        TrainConfig(device=name).validate()


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_cuda_is_refused(name):
    with pytest.raises(UserError, match=f"device '{name}': no CUDA device is visible"):
        resolve_device(name)


@pytest.mark.skipif(HAS_CUDA, reason="this machine has CUDA")
@pytest.mark.parametrize("command", [
    ["llm", "train", *TINY_RUN, "--out", "{tmp}/run", "--device", "cuda"],
    ["llm", "train", *TINY_RUN, "--out", "{tmp}/run", "--set", "device=cuda:1"],
    ["llm", "eval", "--model", "tiny", "--device", "cuda"],
    ["llm", "crossplay", "--runs", "{tmp}", "--out", "{tmp}/cp", "--model", "tiny", "--device", "cuda"],
    ["demo", "--out", "{tmp}/demo", "--device", "cuda", "--set", "model=tiny"],
])
@pytest.mark.slow
def test_every_llm_command_refuses_cuda_in_one_line_before_any_compute(tmp_path, command):
    if command[1] == "crossplay":  # a run folder for crossplay to find
        (tmp_path / "config.json").write_text(json.dumps({"model": "tiny", "regime": "bipolicy"}))
        from safetensors.torch import save_file

        for role in ("attacker", "defender"):  # files that pass the adapter checks made before any model loads
            folder = tmp_path / "final" / role
            folder.mkdir(parents=True)
            (folder / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA", "r": 2, "lora_alpha": 4}))
            save_file({"q_proj.lora_A.weight": torch.zeros(2, 8)}, str(folder / "adapter_model.safetensors"))
    args = [a.replace("{tmp}", str(tmp_path)) for a in command]
    run = subprocess.run([str(BIN / "redgame"), *args], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device is visible" in lines[0], run.stderr
    assert not (tmp_path / "run" / "metrics.jsonl").exists() and not (tmp_path / "demo").exists()


def _hub_layout(cache: Path, repo_id: str, model, tokenizer) -> Path:
    """The tiny model saved as huggingface_hub lays a download out: models--org--name/{refs,snapshots}."""
    revision = "0123456789abcdef0123456789abcdef01234567"
    root = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = root / "snapshots" / revision
    model.save_pretrained(snapshot)
    tokenizer.save_pretrained(snapshot)
    (root / "refs").mkdir(parents=True)
    (root / "refs" / "main").write_text(revision)
    return snapshot


def test_a_hub_id_in_the_local_cache_loads_offline_with_the_same_logits(tmp_path, monkeypatch):
    model, tokenizer = load_base("tiny")
    snapshot = _hub_layout(tmp_path / "hub", "someorg/tiny-chat", model, tokenizer)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert models.model_location("someorg/tiny-chat") == str(snapshot)
    loaded, loaded_tok = load_base("someorg/tiny-chat", dtype=torch.bfloat16, device="cpu")
    assert next(loaded.parameters()).dtype == torch.bfloat16 and loaded_tok.padding_side == "left"
    ids = torch.tensor([[1, 17, 33, 4]])
    with torch.no_grad():
        torch.testing.assert_close(loaded.float()(input_ids=ids).logits, model(input_ids=ids).logits,
                                   atol=0.05, rtol=0.05)  # bf16 weights
    with pytest.raises(UserError, match=r"'someorg/other' is not in the local Hugging Face cache .*huggingface-cli"):
        load_base("someorg/other")
    with pytest.raises(UserError, match="not in the local Hugging Face cache"):
        models.model_location("someorg/other")


@pytest.mark.slow
def test_train_takes_a_cached_hub_id_and_refuses_an_uncached_one_in_one_line(tmp_path):
    model, tokenizer = load_base("tiny")
    _hub_layout(tmp_path / "hub", "someorg/tiny-chat", model, tokenizer)
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1", "PATH": str(BIN)}
    ok = subprocess.run([str(BIN / "redgame"), "llm", "train", *TINY_RUN, "--model", "someorg/tiny-chat",
                         "--out", str(tmp_path / "run"), "--device", "cpu", "--dtype", "bfloat16"],
                        capture_output=True, text=True, timeout=300, env=env)
    assert ok.returncode == 0, ok.stderr[-2000:]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert (config["model"], config["device"], config["dtype"]) == ("someorg/tiny-chat", "cpu", "bfloat16")
    missing = subprocess.run([str(BIN / "redgame"), "llm", "train", *TINY_RUN, "--model", "someorg/absent",
                              "--out", str(tmp_path / "run2")], capture_output=True, text=True, timeout=120, env=env)
    assert missing.returncode == 2
    assert len(missing.stderr.strip().splitlines()) == 1 and "not in the local Hugging Face cache" in missing.stderr


def test_bfloat16_on_cpu_trains_the_tiny_game_with_float32_adapters(tmp_path, judge, tiny_config):
    from redgame.llm.trainer import train

    cfg = tiny_config(regime="advgame", steps=1, device="cpu", dtype="bfloat16")
    result = train(cfg, tmp_path, progress=False, judge=judge)
    roles = result["roles"]
    model = roles.models()[0]
    assert model.get_base_model().model.layers[0].mlp.up_proj.base_layer.weight.dtype == torch.bfloat16
    assert {p.dtype for role in ("attacker", "defender") for p in roles.parameters(role)} == {torch.float32}
    row = json.loads((tmp_path / "metrics.jsonl").read_text())
    losses = [v for k, v in row.items() if k.endswith("/pref_loss")]
    assert losses and all(v == v and abs(v) < 10 for v in losses)  # finite, sane


def test_an_empty_device_or_dtype_flag_is_refused_by_every_command_alike(capsys):
    """eval took --device "" as auto where train refused it."""
    from redgame.cli import main

    for flag in ("--device", "--dtype"):
        assert main(["llm", "eval", "--model", "tiny", flag, "", "--no-utility"]) == 2
        assert "'' is not one of" in capsys.readouterr().err
