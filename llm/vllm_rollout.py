"""Rollouts through vLLM (``--set rollout_backend=vllm``): GPU only, the roles served as LoRA adapters.

vLLM (Kwon et al. 2023, "Efficient Memory Management for Large Language Model Serving with
PagedAttention", SOSP) samples much faster than ``model.generate``; AdvGame (arXiv
2512.20806) and Self-RedTeam (arXiv 2506.07468) both sample their games with it. One vLLM
engine per process holds the frozen base; each role's adapter is a LoRA request. After each
update the trainer calls :meth:`VLLMRollout.sync`: the adapters are saved (peft format) to a
new folder and served under a new LoRA id, so vLLM loads the new weights instead of its
cached ones. The base must be a local Hugging Face model folder (vLLM loads it itself, from
safetensors only), and the roles must be LoRA adapters (not full fine-tuning).

Under torchrun each process's engine runs on that process's GPU with vLLM's
``external_launcher`` backend (as TRL's colocated vLLM: vLLM >= 0.10.2). Each request carries its
own sampling seed, drawn from torch's generator, so that a resumed run samples what the
uninterrupted one did (the generator is in the checkpoint; with N > 1 ranks it is seeded from
(seed, step, rank)): the engine's own stream starts again with every new engine.

Usage::

    backend = VLLMRollout(cfg, tokenizer, run_dir, dtype)   # UserError without vllm or CUDA
    backend.sync(roles)                               # after every update
    rnd = play_round(roles, tokenizer, seeds, ..., backend=backend)
"""

from __future__ import annotations

import importlib.util
import shutil
from pathlib import Path

import torch

from redgame.errors import UserError
from redgame.llm.models import MODEL_CHOICES
from redgame.llm.rollout import Completion, SamplingSettings, finish_completion, stop_ids

# Share of the GPU's memory vLLM may take; the training model needs the rest.
GPU_MEMORY_SHARE = 0.3
# the max_lora_rank values every vLLM the extra allows takes (newer ones also take 1, 320 and 512; older ones refused
# those after the model had loaded)
SERVED_RANKS = (8, 16, 32, 64, 128, 256)
MAX_LORA_RANK = SERVED_RANKS[-1]


def require(cfg) -> None:
    """Refuse ``rollout_backend=vllm`` where it cannot run, before any compute."""
    if importlib.util.find_spec("vllm") is None:
        raise UserError("rollout_backend=vllm needs the vllm package (pip install vllm, on a CUDA machine); "
                        "use rollout_backend=torch")
    if not torch.cuda.is_available():
        raise UserError("rollout_backend=vllm needs a CUDA GPU; none is visible (use rollout_backend=torch)")
    if cfg.full_finetune:
        raise UserError("rollout_backend=vllm serves the roles as LoRA adapters; it cannot run with full_finetune")
    if cfg.lora_rank > MAX_LORA_RANK:
        raise UserError(f"rollout_backend=vllm serves LoRA ranks up to {MAX_LORA_RANK}; config key 'lora_rank' is "
                        f"{cfg.lora_rank}")
    if cfg.device not in ("auto", "cuda"):  # cpu, or cuda:N: the roles would train on another device than vLLM's
        raise UserError(f"rollout_backend=vllm places its engine on the CUDA device itself, so --device {cfg.device} "
                        "would train the roles elsewhere; use --device auto or cuda (and choose the GPU with "
                        "CUDA_VISIBLE_DEVICES)")
    # 'embedded' and 'tiny' are redgame's own models, whatever folder of that name the working directory holds
    if cfg.model in MODEL_CHOICES or not Path(model_folder(cfg.model)).is_dir():
        raise UserError(f"rollout_backend=vllm needs a local Hugging Face model folder (or a Hub id in the local "
                        f"cache) as --model, got {cfg.model!r}")


def served_rank(rank: int) -> int:
    """vLLM's ``max_lora_rank`` for adapters of ``rank``: the smallest value vLLM takes (``SERVED_RANKS``) that holds
    ``rank``; an adapter of a smaller rank is served as it is."""
    return next(r for r in SERVED_RANKS if r >= rank)


def model_folder(name: str) -> str:
    """The folder vLLM loads: ``name`` itself, or a cached Hub id's snapshot folder."""
    from redgame.llm.models import model_location

    return model_location(name)


class VLLMRollout:
    """Samples each role's completions from one vLLM engine, the role's adapter as a LoRA request."""

    def __init__(self, cfg, tokenizer, run_dir: str | Path, dtype: torch.dtype, rank: int = 0, model=None,
                 world_size: int = 1):
        require(cfg)
        from vllm import LLM

        self.tokenizer, self.seed = tokenizer, cfg.seed
        self.stop = sorted(stop_ids(tokenizer, model))  # ``model``: the training's, whose generation config lists ends
        self.folder = Path(run_dir) / ".vllm_adapters" / f"rank{rank}"
        # under torchrun: the engine on this process's GPU (LOCAL_RANK); without it every rank's went to GPU 0
        launcher = {"distributed_executor_backend": "external_launcher"} if world_size > 1 else {}
        self.llm = LLM(model=model_folder(cfg.model), dtype=str(dtype).removeprefix("torch."), enable_lora=True,
                       max_lora_rank=served_rank(cfg.lora_rank), max_loras=2, load_format="safetensors",
                       gpu_memory_utilization=GPU_MEMORY_SHARE, seed=(cfg.seed + rank) % 2**32, **launcher)
        self.version = 0
        self.requests: dict = {}
        self.paths: list[Path] = []

    def sync(self, roles) -> None:
        """Save the roles' current adapters and serve them under new LoRA ids."""
        from vllm.lora.request import LoRARequest

        self.version += 1
        stale, self.paths = self.paths, []
        self.requests = {}
        for index, (key, owners) in enumerate(roles.owners().items()):
            path = self.folder / f"{key}-v{self.version}"
            roles.save_role(owners[0], path)
            self.paths.append(path)
            request = LoRARequest(f"{key}-v{self.version}", self.version * 2 + index, str(path))
            self.requests.update({role: request for role in owners})
        for path in stale:  # the engine holds the old weights in memory; the files are not needed
            shutil.rmtree(path, ignore_errors=True)

    def generate(self, role: str, prompts: list[str], settings: SamplingSettings,
                 prefixes: list[str]) -> list[Completion]:
        """One completion per chat-formatted prompt, ``prefixes[i]`` forced first, as ``rollout.generate``."""
        from vllm import SamplingParams

        if role not in self.requests:
            raise RuntimeError("VLLMRollout.sync(roles) must run before the first rollout")
        decoding = {"temperature": 0.0} if settings.greedy else {"temperature": settings.temperature,
                                                                 "top_p": settings.top_p}
        params = [SamplingParams(max_tokens=settings.max_new_tokens, stop_token_ids=self.stop, seed=seed, **decoding)
                  for seed in request_seeds(len(prompts))]
        prompt_ids = [self.tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
        prefix_ids = [self.tokenizer(q, add_special_tokens=False)["input_ids"] if q else [] for q in prefixes]
        inputs = [{"prompt_token_ids": p + q} for p, q in zip(prompt_ids, prefix_ids)]
        outputs = self.llm.generate(inputs, params, lora_request=self.requests[role], use_tqdm=False)
        return [finish_completion(self.tokenizer, p, q, list(o.outputs[0].token_ids), set(self.stop),
                                  settings.max_new_tokens)
                for p, q, o in zip(prompt_ids, prefix_ids, outputs)]


def request_seeds(n: int) -> list[int]:
    """A sampling seed per request, from torch's default generator (which checkpoints keep)."""
    return torch.randint(0, 2**31 - 1, (n,)).tolist()


__all__ = ["VLLMRollout", "require", "served_rank", "GPU_MEMORY_SHARE", "MAX_LORA_RANK"]
