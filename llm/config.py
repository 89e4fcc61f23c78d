"""The configuration of ``redgame llm train``: one dataclass, documented field by field.

Loaded from TOML (``tomllib``) or YAML, then overridden from the command line. Unknown
keys and wrong types are refused with a one-line error naming the key, before any
compute.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_origin, get_type_hints

from redgame.errors import UserError
from redgame.llm.judge_formats import FORMATS, judge_kind
from redgame.llm.rewards import PAYOFF_KINDS, REQUEST_CLASSES, rules_from_config

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

# The largest LoRA alpha trained or loaded: alpha / r scales the adapter's output, and a scale past this
# overflows activations (NaN logits: empty answers, which judges read as refusals).
MAX_LORA_ALPHA = 2**20
# The most torch CPU threads a run asks for (torch and the tokenizer's thread pool fail past a few thousand).
MAX_THREADS = 1024

MODEL_CHOICES = ("embedded", "tiny")  # the built-in models; any other --model is a folder or a hub id
CHECKPOINT_KEYS = ("save_every", "keep_checkpoints")  # where a run checkpoints, not what it trains: may change on resume

REGIMES = ("shared", "bipolicy", "separate", "advgame", "sequential", "defender-sft", "defender-vs-frozen")
# Ablations: the defender alone, with the game's budget (docs/llm_evaluation.md, "Ablations").
ABLATIONS = ("defender-sft", "defender-vs-frozen")
DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"
DTYPE_NAMES = ("auto", "float32", "bfloat16", "float16")
LOSSES = ("auto", "dpo", "ipo", "grpo", "reinforce", "reinforce_pp", "reinforce_pp_baseline", "sft")
RETURN_KL_LOSSES = ("reinforce_pp", "reinforce_pp_baseline")  # REINFORCE++: the KL is in the return, not the loss
ROLLOUT_POLICIES = ("auto", "ema", "live")


def _f(default, doc: str):
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: tuple(default), metadata={"help": doc})
    return field(default=default, metadata={"help": doc})


# Answers sampled in one step (seeds x attacks and the identity x responses and a forced one), at most:
# far past any real recipe (AdvGame's largest is tens of thousands), below what exhausts memory at once.
MAX_ANSWERS_PER_STEP = 1 << 20
MAX_SCALE = 1e6  # beta, kl_coef and the NLL weights: recipes use 0.01 to 10; near 1e38 the float32 loss overflows
MAX_LR = 1.0  # AdamW moves each weight by about lr a step: above 1 no recipe is meant
MIN_TEMPERATURE = 0.01  # below it sampling is greedy in all but name, and the scaled logits overflow near 1e-37


def check_full_finetune_dtype(dtype: str) -> None:
    """Full weights train in the base's dtype: refuse one whose AdamW steps would round away."""
    if dtype != "float32":
        raise UserError(f"full_finetune trains the weights in the base's dtype, and in {dtype} AdamW's small steps "
                        "round away; run it with --dtype float32")


@dataclass
class TrainConfig:
    """One run of the attacker-defender game on a language model."""

    model: str = _f("embedded", "base model: 'embedded' (SmolLM2-135M-Instruct), 'tiny' (random, tests), a local "
                                "path, or a Hugging Face Hub id (org/name) already in the local cache")
    device: str = _f("auto", "auto | cpu | cuda | cuda:N (auto: the CUDA device when torch sees one, else the CPU); "
                             "the base, both adapters and an lm: judge run there")
    dtype: str = _f("auto", "auto | float32 | bfloat16 | float16 of the frozen base (auto: bfloat16 on CUDA, "
                            "float32 on CPU); adapters and optimiser states stay float32")
    kernels: str = _f("auto", "auto | on | off: redgame.kernels in training, the fused LoRA linear (patch_peft) and "
                              "the fused token log-probs (auto, for LoRA roles: both on a CPU; on CUDA the log-probs "
                              "only, peft's LoRA layers being faster there; docs/gpu.md)")
    regime: str = _f("bipolicy", "shared | bipolicy | separate | advgame | sequential, or an ablation: defender-sft "
                                 "(NLL on the judge's best refusal / helpful answer, no attacker) | defender-vs-frozen "
                                 "(the defender against the frozen base attacker and jailbreak templates)")
    steps: int = _f(20, "game iterations (rollout, judge, updates)")
    seed: int = _f(0, "seed of every random choice: data order, sampling, adapter init")
    save_every: int = _f(10, "write a checkpoint every this many steps (0: only at the end)")
    keep_checkpoints: int = _f(0, "keep only the newest this many checkpoints (0: all); an older one goes once a newer "
                                  "one is written whole")
    judge: str = _f("embedded", "judge: 'embedded', 'embedded:<folder>', 'probe', 'probe:<folder>', 'lm:<model>' or "
                                "'http:<url>[#model]'")
    judge_format: str = _f("redgame", "classifier prompts of an lm:/http: judge: redgame | harmbench | llamaguard | "
                                      "wildguard")
    payoff: str = _f("zero_sum", "the theory's payoff the rewards come from: zero_sum | nonzero_sum (AdvGame)")
    lam: float = _f(1.0, "weight of a wrongful refusal of a benign request (zero_sum: lam; nonzero_sum: the "
                         "defender's helpfulness and the attacker's benign_attack weight)")
    payoff_weights: tuple = _f((), "other weights of the payoff, name=number (nonzero_sum: safety, helpfulness, "
                                   "attack_success, benign_attack, faithfulness; both: deflect_cost; zero_sum: "
                                   "unfaithful_penalty), e.g. safety=2,attack_success=0.5")
    request_class: str = _f("judge", "the class of the request each answer is judged against: 'judge' (the judge's "
                                     "reading of the attack the defender received) or 'seed' (its seed's labelled "
                                     "class, an ablation); faithfulness is the judge's either way")
    degenerate_penalty: bool = _f(True, "a degenerate answer (loop, repetition, gibberish) is pulled to the worst "
                                        "reward: -1, or the payoff's worst where lower (-lam at lam > 1)")
    length_limit_penalty: bool = _f(False, "an answer that stops at response_tokens gets the worst reward: -1 "
                                           "(AdvGame), or the payoff's worst where lower; off by "
                                           "default: at a few dozen tokens most answers stop there")
    train_seeds: str = _f("", "seed files (JSONL/CSV/TXT), comma-separated, to train on instead of the built-in "
                             "train split; 'builtin' names that split (e.g. 'builtin,more.jsonl')")
    seeds_per_step: int = _f(8, "seeds per iteration, half harmful and half benign")
    attacks_per_seed: int = _f(2, "A: attacks sampled per seed")
    responses_per_attack: int = _f(2, "D: defender responses sampled per attack")
    explore_prefixes: tuple = _f((), "defender exploration candidates: one per attack started from each prefix")
    greedy_candidates: bool = _f(False, "the live defender also answers each attack greedily, as the evaluation "
                                        "does, as one more candidate for its pairs (not a policy sample; losses "
                                        "dpo, ipo and sft)")
    identity_attacks: bool = _f(False, "the defender also answers each seed as written (the attack that changes "
                                       "nothing), besides the attacker's rewrites; the attacker gets no signal from it")
    attack_tokens: int = _f(64, "max new tokens of an attack")
    response_tokens: int = _f(48, "max new tokens of a response")
    rollout_batch: int = _f(96, "prompts sampled together in one generate call (more: faster on a CPU, more memory)")
    temperature: float = _f(1.0, "sampling temperature of both roles (the policy-gradient losses also score "
                                 "their samples at it)")
    top_p: float = _f(1.0, "nucleus sampling threshold of both roles")
    loss: str = _f("auto", "auto | dpo | ipo | grpo | reinforce | reinforce_pp | reinforce_pp_baseline | sft (auto: "
                           "reinforce_pp for shared, as Self-RedTeam trains; sft for defender-sft; dpo otherwise; "
                           "reinforce_pp_baseline subtracts each group's mean reward first)")
    beta: float = _f(0.1, "DPO/IPO inverse temperature")
    nll_weight: float = _f(0.0, "weight of RPO's length-normalised NLL on the chosen answer")
    benign_nll_scale: float = _f(1.0, "DPO/IPO: the defender's NLL weight on answers to benign prompts (the attack it "
                                      "answered, as the rewards judge it) is nll_weight times this; the rest keep "
                                      "nll_weight")
    kl_coef: float = _f(0.05, "KL-to-reference weight of reinforce/grpo/sft (a loss term) and reinforce_pp(_baseline) "
                              "(a penalty in each token's return; Self-RedTeam uses 0.01)")
    clip_eps: float = _f(0.2, "PPO/GRPO clipping of the importance ratio in update_epochs after the first")
    reference: str = _f("auto", "auto | base | ema (auto: ema for advgame = DPO-MD, the frozen base otherwise)")
    ema_decay: float = _f(0.95, "EMA decay of the reference model (DPO-MD)")
    rollout_policy: str = _f("auto", "auto | ema | live: sample the rollouts from the EMA model (AdvGame's default; "
                                     "needs reference ema) or from the live policy (on-policy; AdvGame's ablation); "
                                     "auto: ema when the reference is the EMA, without PSRO or vLLM; live otherwise")
    min_margin: float = _f(0.05, "a pair is used only when the judge's scores differ, and by at least this")
    sequential_k: int = _f(2, "sequential: steps of one role before switching to the other")
    train_roles: tuple = _f(("attacker", "defender"), "which roles are updated")
    population_every: int = _f(0, "PSRO: every this many steps add both adapters to a population, re-solve its "
                                  "meta-Nash, and train each role against opponents drawn from it (0: off)")
    population_size: int = _f(4, "PSRO: members kept per role (the oldest leaves)")
    population_eval_seeds: int = _f(8, "PSRO: training seeds (half harmful) on which the population's payoffs are played")
    lr: float = _f(2e-4, "AdamW learning rate")
    lr_decay_steps: int = _f(0, "the last D steps lower the learning rate linearly toward 0: they run at D/(D+1), "
                                "(D-1)/(D+1), ..., 1/(D+1) of lr (warmup-stable-decay's decay phase, Hu et al. "
                                "2024); 0: lr throughout")
    update_chunk: int = _f(0, "sequences per forward pass in the update, activations recomputed in the backward "
                              "(0: the whole batch at once; 8-16 cuts the update's memory several-fold for ~1/3 more time)")
    micro_batch_tokens: int = _f(1024, "padded tokens (sequences x longest one) per forward pass of the update; each "
                                       "micro-batch's share of the loss is back-propagated at once (gradient "
                                       "accumulation: the same gradient, the memory of one micro-batch); 0: the "
                                       "whole batch in one pass")
    share_prompts: bool = _f(True, "sequences on one prompt (the answers to one attack when sampled, a DPO pair's two "
                                   "answers in the update) run the prompt once and continue from its key-value cache, "
                                   "and in the update the start that one role's prompts share (the role prompt's fixed "
                                   "text) runs once a micro-batch (less compute and memory, the same numbers to "
                                   "rounding); off under FSDP, whose ranks must run the same passes")
    batch_roles: bool = _f(True, "score both roles' sequences in one forward pass, each row through its own adapter "
                                 "(needs kernels; the regimes whose roles share a model); false: one pass per role")
    update_epochs: int = _f(1, "optimiser steps per game step on the same round (GRPO's mu; the reference is fixed within a step)")
    weight_decay: float = _f(0.0, "AdamW weight decay")
    max_grad_norm: float = _f(1.0, "gradient clipping norm")
    lora_rank: int = _f(16, "LoRA rank")
    lora_alpha: int = _f(32, "LoRA alpha")
    lora_dropout: float = _f(0.0, "LoRA dropout")
    full_finetune: bool = _f(False, "train full weights instead of adapters (shared, separate and advgame: two full "
                                    "models)")
    threads: int = _f(0, "torch CPU threads (0: torch's default)")
    rollout_backend: str = _f("torch", "rollouts: 'torch' (model.generate) or 'vllm' (GPU; LoRA per role)")
    fsdp: bool = _f(False, "under torchrun: shard the frozen base's transformer blocks over the ranks (FSDP)")
    judge_rank: int = _f(-1, "under torchrun: the rank that loads the judge and judges all ranks (-1: each its own)")

    def resolved_loss(self) -> str:
        if self.regime == "defender-sft":
            return "sft"
        return ("reinforce_pp" if self.regime == "shared" else "dpo") if self.loss == "auto" else self.loss

    def lr_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based): ``lr``, then a linear decay over the last ``lr_decay_steps``.

        The decay phase of a warmup-stable-decay schedule (Hu et al. 2024, MiniCPM, arXiv:2404.06395): the
        steps before it are those of a constant-rate run, and each decayed step keeps a share of the rate
        (D/(D+1), ..., 1/(D+1) for D decayed steps), none of them zero.
        """
        left = self.steps - step  # this step and those after it
        return self.lr if left > self.lr_decay_steps else self.lr * left / (self.lr_decay_steps + 1)

    def candidates_per_attack(self) -> int:
        """The defender's answers to each attack: sampled, from explore prefixes, and the greedy one."""
        return self.responses_per_attack + len(self.explore_prefixes) + int(self.greedy_candidates)

    def resolved_reference(self) -> str:
        return resolve_reference(self.regime, self.reference)

    def resolved_rollout_policy(self) -> str:
        if self.rollout_policy != "auto":
            return self.rollout_policy
        kept = self.resolved_reference() == "ema" and not self.population_every and self.rollout_backend == "torch"
        return "ema" if kept else "live"

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    def validate(self) -> "TrainConfig":
        """This config, after checking every key; a one-line UserError naming the first key that is wrong."""
        self._check_choices_and_counts()
        self._check_placement_and_judge()
        self._check_training_values()
        self._check_combinations()
        return self

    def _check_choices_and_counts(self) -> None:
        """Each key's allowed words, counts and ranges, and a step's size."""
        choices = {"regime": REGIMES, "loss": LOSSES, "reference": ("auto", "base", "ema"),
                   "rollout_backend": ("torch", "vllm"), "payoff": PAYOFF_KINDS, "judge_format": FORMATS,
                   "kernels": ("auto", "on", "off"), "rollout_policy": ROLLOUT_POLICIES,
                   "request_class": REQUEST_CLASSES}
        for key, allowed in choices.items():
            if getattr(self, key) not in allowed:
                raise UserError(f"config key '{key}': {getattr(self, key)!r} is not one of {', '.join(allowed)}")
        positive = ("steps", "seeds_per_step", "attacks_per_seed", "responses_per_attack", "attack_tokens",
                    "response_tokens", "lora_rank", "sequential_k", "update_epochs", "rollout_batch")
        for key in positive:
            if getattr(self, key) < 1:
                raise UserError(f"config key '{key}' must be >= 1, got {getattr(self, key)}")
        answers = self.seeds_per_step * (self.attacks_per_seed + 1) * (self.responses_per_attack + 1)
        if answers > MAX_ANSWERS_PER_STEP:
            raise UserError(f"config keys 'seeds_per_step' ({self.seeds_per_step}), 'attacks_per_seed' "
                            f"({self.attacks_per_seed}) and 'responses_per_attack' ({self.responses_per_attack}) ask "
                            f"for about {answers:,} answers a step, past the {MAX_ANSWERS_PER_STEP:,} a step can hold")
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise UserError(f"config key '{f.name}' must be a finite number, got {value}")
        at_least_zero = ("kl_coef", "weight_decay", "nll_weight", "benign_nll_scale", "min_margin", "threads",
                         "update_chunk", "lam", "micro_batch_tokens", "lr_decay_steps")
        for key in at_least_zero:
            if getattr(self, key) < 0:
                raise UserError(f"config key '{key}' must be >= 0, got {getattr(self, key)}")
        if not 0.0 <= self.lora_dropout < 1.0:
            raise UserError(f"config key 'lora_dropout' must be in [0, 1), got {self.lora_dropout}")
        if self.threads > MAX_THREADS:
            raise UserError(f"config key 'threads' must be at most {MAX_THREADS}, got {self.threads}")
        if not 0 < self.lora_alpha <= MAX_LORA_ALPHA:
            raise UserError(f"config key 'lora_alpha' must be in (0, {MAX_LORA_ALPHA}], got {self.lora_alpha}")
        if self.max_grad_norm <= 0:
            raise UserError(f"config key 'max_grad_norm' must be > 0, got {self.max_grad_norm}")
        if not -2**63 <= self.seed < 2**64:
            raise UserError(f"config key 'seed' must fit in 64 bits, got {self.seed}")

    def _check_placement_and_judge(self) -> None:
        """The device, the dtype, the judge and the payoff its labels are read by."""
        check_device_name(self.device, "config key 'device':")
        check_dtype_name(self.dtype, "config key 'dtype':")
        judge_kind(self.judge, self.judge_format, where="config key 'judge': ", format_where="config key 'judge_format': ")
        rules_from_config(self)  # the payoff's kind, lam and weights, checked as the toy spec checks them
        if self.request_class == "seed" and self.regime == "advgame":
            raise UserError("config key 'request_class': 'seed' relabels pointwise rewards, and advgame's come from the "
                            "judge's pairwise preferences; use request_class='judge' with advgame")
        payoff_set = [key for key, default in (("payoff", "zero_sum"), ("lam", 1.0), ("payoff_weights", ()))
                      if getattr(self, key) != default]
        if payoff_set and self.regime == "advgame":  # they shape pointwise rewards only; they would change nothing
            raise UserError(f"config key {payoff_set[0]!r}: advgame's rewards come from the judge's pairwise "
                            "preferences, which the payoff's kind, lam and weights do not change; leave them at their "
                            "defaults with advgame (payoff_weights= with nothing after it clears the demo's), or "
                            "train a pointwise regime (bipolicy) with them")
        if self.judge_rank < -1:
            raise UserError(f"config key 'judge_rank' must be -1 (every rank judges) or a rank, got {self.judge_rank}")

    def _check_training_values(self) -> None:
        """Checkpoints, the optimiser, the reference's EMA, sampling and the roles trained."""
        for key in ("save_every", "keep_checkpoints"):
            if getattr(self, key) < 0:
                raise UserError(f"config key '{key}' must be >= 0, got {getattr(self, key)}")
        if not 0.0 < self.ema_decay < 1.0:
            raise UserError(f"config key 'ema_decay' must be in (0, 1), got {self.ema_decay}")
        if not 0.0 < self.clip_eps < 1.0:
            raise UserError(f"config key 'clip_eps' must be in (0, 1), got {self.clip_eps}")
        self._check_rollout_policy()
        for key in ("beta", "lr", "temperature"):
            if not getattr(self, key) > 0:
                raise UserError(f"config key {key!r} must be > 0, got {getattr(self, key)}")
        if self.temperature < MIN_TEMPERATURE:
            raise UserError(f"config key 'temperature' must be at least {MIN_TEMPERATURE:g}, got {self.temperature:g}: "
                            "below it sampling is greedy in all but name (and near 1e-37 the logits overflow)")
        if self.lr_decay_steps > self.steps:
            raise UserError(f"config key 'lr_decay_steps' ({self.lr_decay_steps}) must be at most 'steps' "
                            f"({self.steps}): the decay covers the last steps of the run")
        if self.lr > MAX_LR:
            raise UserError(f"config key 'lr' must be at most {MAX_LR:g}, got {self.lr:g}: AdamW would move every "
                            "weight by about lr each step (LoRA rates are 1e-5 to 1e-2)")
        self._check_scales()
        if not 0 < self.top_p <= 1:
            raise UserError(f"config key 'top_p' must be in (0, 1], got {self.top_p}")
        if self.seeds_per_step < 2:
            raise UserError("config key 'seeds_per_step' must be >= 2 (half harmful, half benign)")
        bad = set(self.train_roles) - {"attacker", "defender"}
        if bad or not self.train_roles:
            raise UserError(f"config key 'train_roles': expected attacker and/or defender, got {list(self.train_roles)}")

    def _check_combinations(self) -> None:
        """Keys that are valid alone and not together."""
        if self.kernels == "on" and self.full_finetune:
            raise UserError("config key 'kernels': 'on' patches LoRA adapters and full_finetune trains none; "
                            "use kernels=auto or off")
        if self.fsdp and self.full_finetune:
            raise UserError("config key 'fsdp' shards the frozen base under adapters; it cannot run with full_finetune")
        if self.full_finetune and self.regime not in ("shared", "separate", "advgame"):
            raise UserError(f"config key 'full_finetune' is for regimes shared, separate and advgame, not {self.regime!r}")
        if self.full_finetune and self.dtype != "auto":  # 'auto' is checked once the base loads (its dtype)
            check_full_finetune_dtype(self.dtype)
        if self.regime in ABLATIONS or self.loss == "sft":
            self._check_ablation()
        self._check_population()
        if self.greedy_candidates and self.resolved_loss() not in ("dpo", "ipo", "sft"):
            raise UserError(f"config key 'greedy_candidates' is for the losses that learn from chosen answers (dpo, "
                            f"ipo, sft); loss {self.resolved_loss()!r} would take the greedy answer for a sample of "
                            "the policy (greedy_candidates=false turns it off; the demo's recipe has it on)")
        if self.resolved_loss() in ("dpo", "ipo") and self.candidates_per_attack() < 2:
            raise UserError("config: dpo/ipo need at least 2 responses per attack (responses_per_attack + "
                            "explore_prefixes + greedy_candidates)")

    def _check_rollout_policy(self) -> None:
        if self.rollout_policy != "ema":
            return
        if self.resolved_reference() != "ema":
            raise UserError("config key 'rollout_policy': 'ema' samples from the EMA model, which is kept with "
                            "reference=ema only (advgame's default)")
        if self.population_every or self.rollout_backend != "torch":
            raise UserError("config key 'rollout_policy': 'ema' samples with rollout_backend 'torch' and without "
                            "PSRO (population_every = 0); use rollout_policy=live")

    def _check_ablation(self) -> None:
        if self.regime == "defender-sft" and self.loss not in ("auto", "sft"):
            raise UserError(f"regime 'defender-sft' trains with loss sft, not {self.loss!r}: set loss=sft (or auto)")
        if self.regime == "defender-sft" and not self.explore_prefixes:
            raise UserError("regime 'defender-sft' trains with loss sft on the judge's best refusal, which needs a "
                            "refusal among explore_prefixes (e.g. explore_prefixes=\"I'm sorry\")")
        if self.loss == "sft" and self.regime != "defender-sft":
            raise UserError("config key 'loss': sft is the loss of regime defender-sft only")
        if self.population_every:
            raise UserError(f"config key 'population_every' (PSRO) trains both roles; regime {self.regime!r} "
                            "trains the defender only")
        if self.regime in ABLATIONS and "defender" not in self.train_roles:
            raise UserError(f"config key 'train_roles': regime {self.regime!r} trains the defender only, and "
                            f"{list(self.train_roles)} leaves it out: nothing would learn (drop train_roles)")
        if self.regime == "defender-vs-frozen" and self.attacks_per_seed < 2:
            raise UserError("regime 'defender-vs-frozen' needs attacks_per_seed >= 2 (half come from the frozen "
                            "attacker, half from jailbreak templates)")

    def _check_scales(self) -> None:
        """Upper bounds where a finite float64 would overflow the float32 loss (a NaN after the model loads)."""
        for key in ("beta", "kl_coef", "nll_weight", "benign_nll_scale"):
            if getattr(self, key) > MAX_SCALE:
                raise UserError(f"config key {key!r} must be at most {MAX_SCALE:g}, got {getattr(self, key):g}")
        if self.lr * self.weight_decay >= 1:
            raise UserError(f"config key 'weight_decay': lr x weight_decay must be < 1, got {self.lr:g} x "
                            f"{self.weight_decay:g}; AdamW multiplies every weight by 1 - lr x weight_decay a step "
                            "(typical weight decays are 0 to 0.1)")

    def _check_population(self) -> None:
        """PSRO's keys, checked whether it is on or not (a resume may turn it on)."""
        if self.population_every < 0 or self.population_size < 1 or self.population_eval_seeds < 2:
            raise UserError("config keys 'population_every' >= 0, 'population_size' >= 1 and "
                            "'population_eval_seeds' >= 2 are needed")
        if not self.population_every:
            return
        if self.regime == "shared" or self.full_finetune:
            raise UserError("config key 'population_every' (PSRO) needs two role adapters; "
                            f"regime {self.regime!r}{' with full_finetune' if self.full_finetune else ''} has none to swap")
        if self.rollout_backend != "torch":
            raise UserError("config key 'population_every' (PSRO) samples with rollout_backend 'torch' only")


def resolve_reference(regime: str, reference: str) -> str:
    """The reference model a config's ``reference`` means: 'auto' is advgame's EMA, the base for every other regime."""
    return ("ema" if regime == "advgame" else "base") if reference == "auto" else reference


def check_device_name(name: str, what: str = "device") -> None:
    """Refuse a device name that is not auto, cpu, cuda or cuda:N (nothing is imported or touched)."""
    if name in ("auto", "cpu", "cuda") or re.fullmatch(r"cuda:(0|[1-9][0-9]*)", str(name), flags=re.ASCII):
        return  # an index as torch.device reads it: ASCII digits, no leading zero
    raise UserError(f"{what} {name!r} is not one of {DEVICE_CHOICES}")


def check_dtype_name(name: str, what: str = "dtype") -> None:
    """Refuse a dtype name that is not auto, float32, bfloat16 or float16."""
    if name not in DTYPE_NAMES:
        raise UserError(f"{what} {name!r} is not one of {', '.join(DTYPE_NAMES)}")


def _hints() -> dict[str, Any]:
    return get_type_hints(TrainConfig)


def _coerce(key: str, value: Any, where: str) -> Any:
    """Check a loaded value against the field's type; ints are accepted for floats."""
    kind = _hints()[key]
    origin = get_origin(kind) or kind
    ok = {
        bool: isinstance(value, bool),
        int: isinstance(value, int) and not isinstance(value, bool),
        float: isinstance(value, (int, float)) and not isinstance(value, bool),
        str: isinstance(value, str),
        tuple: isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value),
    }[origin]
    if origin is str and isinstance(value, bool) and key == "kernels":
        return "on" if value else "off"  # YAML 1.1 reads an unquoted on / off as a boolean
    if not ok:
        quote = (" (in YAML an unquoted on, off, yes or no is a boolean: put the value in quotes)"
                 if origin is str and isinstance(value, bool) else "")
        raise UserError(f"config key '{key}'{where}: expected {getattr(origin, '__name__', origin)}, "
                        f"got {type(value).__name__} {value!r}{quote}")
    if origin is float:
        try:
            return float(value)
        except OverflowError:  # an int of hundreds of digits
            raise UserError(f"config key '{key}'{where}: {str(value)[:20]}... is too large for a float") from None
    if origin is tuple:
        return tuple(value)
    return value


def from_mapping(data: dict[str, Any], where: str = "", base: TrainConfig | None = None) -> TrainConfig:
    """A config from a mapping (file contents, overrides), refusing unknown keys and bad types."""
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    values = dataclasses.asdict(base or TrainConfig())
    seen = {}
    for given, value in data.items():
        key = str(given).replace("-", "_")
        if key in seen:
            raise UserError(f"config key {key!r} given twice{where} (as {seen[key]!r} and {given!r})")
        seen[key] = given
        if key not in names:
            raise UserError(f"unknown config key {key!r}{where}")
        values[key] = _coerce(key, value, where)
    return TrainConfig(**values)


def lookup(path: str | Path, what: str) -> Path | None:
    """``path`` if it exists, else None; a name the system cannot look up (too long, a NUL byte) is a UserError."""
    try:
        return Path(path) if Path(path).exists() else None
    except (OSError, ValueError) as exc:
        shown = str(path) if len(str(path)) <= 80 else str(path)[:80] + "..."
        raise UserError(f"{what}: cannot look up {shown!r}: {getattr(exc, 'strerror', None) or exc}") from None


# YAML 1.2's floats: PyYAML follows YAML 1.1, which reads 1e-3 (no dot) as the string "1e-3".
YAML_FLOAT = re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$")


def read_yaml(text: str):
    """``yaml.safe_load`` that also reads ``1e-3`` as a float, as TOML, JSON and YAML 1.2 do."""
    import yaml

    class Loader(yaml.SafeLoader):
        def construct_mapping(self, node, deep=False):  # a key written twice is refused, as TOML does
            keys = [self.construct_object(k, deep=True) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"]
            mapping_of_distinct_keys((k, None) for k in keys)
            return super().construct_mapping(node, deep)

    Loader.yaml_implicit_resolvers = {k: list(v) for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", YAML_FLOAT, list("-+0123456789."))
    loader = Loader(text)  # what yaml.safe_load does, with this SafeLoader
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def mapping_of_distinct_keys(pairs) -> dict:
    """A JSON object or YAML mapping whose keys are each given once (TOML refuses a repeat itself)."""
    out = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"key {key!r} given twice")
        out[key] = value
    return out


def load_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or YAML config file into a mapping (a section ``[train]`` is accepted)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"config file {path} is a folder; give the file (a run's is {path / 'config.json'})")
    if not (lookup(path, "config file") and path.is_file()):
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
        if path.suffix in (".yaml", ".yml"):
            data = read_yaml(text) or {}
        elif path.suffix == ".json":
            data = json.loads(text, object_pairs_hook=mapping_of_distinct_keys)
        else:
            data = tomllib.loads(text)
    except Exception as exc:  # one line naming the file, whatever the parser said
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(f"malformed config file {path}: {first}") from None
    if not isinstance(data, dict):
        raise UserError(f"malformed config file {path}: expected a mapping of keys to values")
    if isinstance(data.get("train"), dict):
        if set(data) != {"train"}:
            raise UserError(f"config file {path}: keys both in a [train] section and outside it; put them all in one")
        data = data["train"]
    return data


def train_seed_sources(train_seeds: str) -> list[str]:
    """The seed files of config key ``train_seeds`` (comma-separated; ``builtin``: the built-in train split)."""
    return [name.strip() for name in train_seeds.split(",") if name.strip()] or ["builtin"]


def parse_overrides(texts, flags: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``--set key=value`` overrides as a mapping, with ``flags`` (a flag's config key and value, None when
    absent) added: a key given twice, by two ``--set`` or by a ``--set`` and its flag, is refused, not one of
    the two silently dropped."""
    out: dict[str, Any] = {}
    for text in texts:
        key, value = parse_override(text)
        if key in out:
            raise UserError(f"config key '{key}' is given twice by --set; give it once")
        out[key] = value
    for key, value in (flags or {}).items():
        if value is None:
            continue
        if key in out:
            raise UserError(f"'{key}' is given twice, by --{key.replace('_', '-')} and by --set {key}; give it once")
        out[key] = value
    return out


def parse_override(text: str) -> tuple[str, Any]:
    """``key=value`` from the command line, the value typed by the field."""
    key, sep, raw = text.partition("=")
    key = key.strip().replace("-", "_")
    if not sep:
        raise UserError(f"override {text!r} is not key=value")
    if key not in _hints():
        raise UserError(f"unknown config key {key!r}")
    origin = get_origin(_hints()[key]) or _hints()[key]
    if origin is tuple:
        return key, _tuple_value(key, raw)
    try:
        if origin is bool:
            if raw.lower() not in ("true", "false", "1", "0"):
                raise ValueError
            return key, raw.lower() in ("true", "1")
        return key, origin(raw)
    except ValueError:
        allowed = " (true, false, 1, 0)" if origin is bool else ""
        raise UserError(f"config key '{key}': cannot read {raw!r} as {origin.__name__}{allowed}") from None


def _tuple_value(key: str, raw: str) -> tuple:
    """A JSON list of strings (items may hold commas: ``["I'm sorry, but", "Sure"]``), else comma-separated."""
    if not raw.lstrip().startswith("["):
        return tuple(s for s in raw.split(",") if s)
    try:
        items = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"config key '{key}': {raw!r} is not a JSON list ({exc.msg}, column {exc.colno})") from None
    if not (isinstance(items, list) and all(isinstance(item, str) for item in items)):
        raise UserError(f"config key '{key}': {raw!r} is not a JSON list of strings")
    return tuple(items)


def set_flag(key: str, value) -> str:
    """The ``--set key=value`` that :func:`parse_override` reads back as this value, quoted for a POSIX shell: a
    tuple as a JSON list where comma-splitting would not give its items back (an item with a comma, an empty
    one, or a first one that opens with ``[``), else comma-separated."""
    if isinstance(value, bool):
        text = str(value).lower()
    elif isinstance(value, (list, tuple)):
        items = [str(v) for v in value]
        needs_json = any("," in v or not v for v in items) or (items and items[0].lstrip().startswith("["))
        text = json.dumps(items) if needs_json else ",".join(items)
    else:
        text = "" if value is None else str(value)
    return f"--set {shlex.quote(f'{key}={text}')}"


def help_lines() -> list[str]:
    """``key (default): doc`` for each field, for ``--help``."""
    return [f"{f.name} ({f.default if f.default is not dataclasses.MISSING else f.default_factory()}): "
            f"{f.metadata['help']}" for f in dataclasses.fields(TrainConfig)]


__all__ = ["TrainConfig", "from_mapping", "load_file", "lookup", "parse_override", "parse_overrides",
           "train_seed_sources", "help_lines",
           "REGIMES", "LOSSES", "ROLLOUT_POLICIES", "ABLATIONS",
           "check_device_name", "check_dtype_name"]
