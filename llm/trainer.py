"""The game's training loop: rollout, judge, updates, metrics, checkpoints.

Usage::

    from redgame.llm.config import TrainConfig
    from redgame.llm.trainer import train
    train(TrainConfig(model="tiny", regime="bipolicy", steps=4), "runs/tiny")

Each step: sample a seed batch (half harmful, half benign, a fixed function of the seed
and the step), play a round (A attacks per seed, D answers per attack), judge it, and
update each trained parameter set once. The regimes differ in a few visible places:

- which weights play each role (``roles.build_roles``: shared / bipolicy / separate);
- the reward (pairwise preferences for ``advgame``, zero-sum pointwise otherwise);
- the loss (``config.loss``) and its reference (the frozen base, or the EMA for advgame);
- ``sequential`` updates one role for ``sequential_k`` steps while the other is frozen;
- ``shared`` sums both roles' losses into its one parameter set;
- the ablations train the defender alone with the game's budget: ``defender-sft`` (no
  attacker: NLL on the judge's best refusal of a harmful seed and its best helpful answer to
  a benign one, :func:`sft_signal`) and ``defender-vs-frozen`` (against the base attacker,
  never updated, and jailbreak templates, :func:`frozen_attacks`).

With ``population_every`` = K > 0 (PSRO, :mod:`redgame.llm.population`), every K steps both
adapters join a population whose meta-Nash is re-solved, and each trained role plays its
own round against an opponent drawn from the other role's meta-Nash mixture.

The code follows the run: :func:`set_up` (run folder, model on its device, judge, roles,
kernels, optimisers, resume), then per step :func:`play_step` = :func:`play` →
:func:`judge_rounds` → :func:`update_roles` (:func:`score_reference` once, then
:func:`take_update` per epoch: both roles' sequences scored in few micro-batched passes by
:mod:`redgame.llm.scoring`, each role's loss share back-propagated as it goes), then
:func:`log_row` and :func:`save_if_due`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import random
import shlex
import signal
import sys
import time
from pathlib import Path

import torch

from redgame.errors import Terminated, UserError, lost_peer, naming_the_file
from redgame.kernels.peft_patch import FUSED_CALLS
from redgame.llm import checkpoint as ckpt
from redgame.llm import distributed, watch
from redgame.llm.cpu_allocator import keep_freed_memory
from redgame.llm.config import ABLATIONS, RETURN_KL_LOSSES, TrainConfig, train_seed_sources
from redgame.llm.judge_features import is_blank
from redgame.llm.losses import TokenLogprobs, fused_pairs_loss, whiten
from redgame.llm.metrics import read_metrics
from redgame.llm.population import Population, write_summary as write_population
from redgame.llm.population import check_eval_seeds, eval_seeds as population_eval_seeds
from redgame.llm.prompts import check_seeds_fit
from redgame.llm.rewards import judge_round, rules_from_config
from redgame.llm.role_loss import (loss_from_logprobs, role_loss, role_sequences, scoring_temperature, signal_size,
                                   token_advantages)
from redgame.llm.roles import ROLES, LoraSettings, build_roles
from redgame.llm.rollout import SamplingSettings, play_round
from redgame.llm.run_dir import (RUN_MARKER, check_run_dir, claim_run_dir, keep_metrics_until, resume_hint,
                                 step_ranges)
from redgame.llm.run_lock import run_lock
from redgame.llm.scoring import Job, score

OPPONENT = {"attacker": "defender", "defender": "attacker"}


class TrainingStopped(RuntimeError):
    """The run stopped on purpose (a non-finite loss); the message says where it left off."""


def checked_before_loading(cfg: TrainConfig) -> tuple[list, list]:
    """The config checked, its rollout backend's needs met and its training seeds read, before any model loads:
    the (harmful, benign) training seeds."""
    cfg.validate()
    if cfg.rollout_backend == "vllm":
        from redgame.llm import vllm_rollout

        vllm_rollout.require(cfg)  # vllm installed, a GPU, a local model folder: before any compute
    return load_train_seeds(cfg)


def load_train_seeds(cfg: TrainConfig) -> tuple[list, list]:
    """(harmful, benign) training seeds: the built-in train split, the user's files, or both."""
    from redgame.llm.seeds import builtin_seeds, check_one_class_a_prompt, load_seeds

    sources = train_seed_sources(cfg.train_seeds)
    seeds = [s for name in sources for s in (builtin_seeds("train") if name == "builtin" else load_seeds(name))]
    check_one_class_a_prompt(seeds, f"training seeds ({', '.join(sources)})")  # a file may relabel a built-in one
    if held_out := [s for s in seeds if s.split not in ("", "train")]:
        raise UserError(f"training seeds: {len(held_out)} rows are in a split other than train (first: id "
                        f"{held_out[0].id!r}, split {held_out[0].split!r}); the game trains on train rows only, so "
                        "that validation can choose the recipe and test can report it; remove them from the "
                        "training files")
    harmful = [s for s in seeds if s.harmful]
    benign = [s for s in seeds if not s.harmful]
    if not harmful or not benign:
        shown = "the built-in train split" if sources == ["builtin"] else ", ".join(sources)
        raise UserError(f"training seeds need harmful and benign prompts; got {len(harmful)} harmful, "
                        f"{len(benign)} benign from {shown}")
    return harmful, benign


def seed_batch(harmful: list, benign: list, cfg: TrainConfig, step: int) -> list:
    """The step's seeds, half harmful, half benign: a pure function of (seed, step)."""
    rng = random.Random(f"{cfg.seed}:{step}")
    n_harm = cfg.seeds_per_step // 2
    pick = lambda pool, k: [pool[i % len(pool)] for i in rng.sample(range(max(k, len(pool))), k)]  # noqa: E731
    return pick(harmful, n_harm) + pick(benign, cfg.seeds_per_step - n_harm)


def updates_role(cfg: TrainConfig, step: int, role: str) -> bool:
    """Whether ``role`` is updated at ``step``: sequential alternates, defender first."""
    if role not in cfg.train_roles or (role == "attacker" and cfg.regime in ABLATIONS):
        return False
    if cfg.regime == "sequential":
        return ("defender", "attacker")[(step // cfg.sequential_k) % 2] == role
    return True


def round_metrics(rnd, judged) -> dict:
    """Attack success and refusal rates over the defender's sampled (not forced) answers that the judge read.

    Rates on the attacker's rewrites; ``direct/...`` on identity attacks (the seeds as written).
    ``read_harmful_harmful`` / ``read_harmful_benign``: the share of the rewrites of harmful / benign
    seeds (weighted by their sampled answers) that the judge read as harmful requests. Each rate
    ``key`` comes with ``count/key``, the number of answers it is over, by which the ranks of a
    torchrun pool it (:func:`redgame.llm.distributed.merge_rows`).
    """
    unjudged = judged.judge_error or [False] * len(rnd.responses)  # an unparsable judge reply: no verdict to count
    answered = [i for i, forced in enumerate(rnd.response_explore) if not forced]
    sampled = [i for i in answered if not unjudged[i]]
    harm_seed = [rnd.seeds[rnd.attack_seed[rnd.response_attack[i]]].harmful for i in range(len(rnd.responses))]
    attacks = [a for a in range(len(rnd.attacks)) if not rnd.is_identity(a)]
    out = {"parse_errors": rnd.parse_errors, "judge_errors": judged.judge_errors}

    def rate(key, items, flag):
        out[key] = sum(flag[i] for i in items) / len(items) if items else float("nan")
        out[f"count/{key}"] = len(items)

    rate("faithful", [a for a in attacks if judged.faithful[a] is not None], judged.faithful)  # None: no verdict
    rate("degenerate", answered, judged.degenerate)  # the shipped structure head's, for every judge: always read
    rate("truncated", answered, judged.truncated)
    rate("empty", answered, [is_blank(r.text) for r in rnd.responses])
    for prefix, identity in (("", False), ("direct/", True)):
        mine = [i for i in sampled if rnd.is_identity(rnd.response_attack[i]) == identity]
        if identity and not mine:
            continue
        on_harm = [i for i in mine if harm_seed[i]]
        on_benign = [i for i in mine if not harm_seed[i]]
        rate(f"{prefix}attack_success", on_harm, judged.harmful)
        rate(f"{prefix}refusal_harmful", on_harm, judged.refusal)
        rate(f"{prefix}refusal_benign", on_benign, judged.refusal)
        rate(f"{prefix}defender_score", mine, judged.scores)
        if not identity and judged.read_harmful:  # how the judge read the rewrites, whichever class the rewards used
            rate("read_harmful_harmful", on_harm, judged.read_harmful)
            rate("read_harmful_benign", on_benign, judged.read_harmful)
    _greedy_rates(rnd, judged, unjudged, harm_seed, rate)
    return out


def _greedy_rates(rnd, judged, unjudged, harm_seed, rate) -> None:
    """``greedy/...``: the greedy candidates' loop and refusal rates, the decoding every evaluation uses."""
    greedy = [i for i, g in enumerate(rnd.response_greedy) if g]
    if not greedy:
        return
    rate("greedy/degenerate", greedy, judged.degenerate)
    read = [i for i in greedy if not unjudged[i]]
    rate("greedy/refusal_harmful", [i for i in read if harm_seed[i]], judged.refusal)
    rate("greedy/refusal_benign", [i for i in read if not harm_seed[i]], judged.refusal)


LAUNCHER_KILLS = ("; torchrun kills its workers --shutdown-timeout seconds after Ctrl-C (30 unless set), so a step "
                  "longer than that is lost: start torchrun with --shutdown-timeout longer than a step")


class _StopFlag:
    """First Ctrl-C: finish the step, checkpoint, exit; a second one aborts at once. SIGTERM (a ``kill``, or
    torchrun stopping the processes of a run one of whose processes failed) aborts at once too, as
    :class:`~redgame.errors.Terminated`, so that the run names its last checkpoint before it ends."""

    def __init__(self):
        self.requested = False
        self._previous = None
        self._previous_term = None

    def __enter__(self):
        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            print("\nredgame: stopping after this step and checkpointing (Ctrl-C again to abort)"  # stdout may be JSON
                  + (LAUNCHER_KILLS if "TORCHELASTIC_RUN_ID" in os.environ else ""), file=sys.stderr, flush=True)

        def terminated(signum, frame):
            raise Terminated("SIGTERM")

        try:
            self._previous = signal.signal(signal.SIGINT, handler)
            self._previous_term = signal.signal(signal.SIGTERM, terminated)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            # None: the handler before was not set from Python; the system's default is the nearest to it
            signal.signal(signal.SIGTERM, signal.SIG_DFL if self._previous_term is None else self._previous_term)


def train(cfg: TrainConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False,
          progress: bool = True, base=None, judge=None, log=print, init: dict | None = None,
          rerun: str | None = None) -> dict:
    """Run the game for ``cfg.steps`` steps (in all, counting resumed ones); returns a summary: ``out``, ``steps``
    reached, ``stopped`` (Ctrl-C before the last step: checkpointed, not finished), ``interrupted`` (a Ctrl-C came,
    also in the last step, which finishes the run: a command that would go on from here stops) and ``roles``.

    ``base`` = (model, tokenizer) and ``judge`` may be passed in to reuse loaded ones.
    ``init`` = {role: adapter folder} starts those roles from saved weights (the probe's frozen
    defender) instead of a fresh adapter. ``rerun`` names the command that started the run where it is
    not ``redgame llm train`` (the demo), for the resume hints. Under
    torchrun / accelerate each process runs this on its shard (:mod:`redgame.llm.distributed`).
    """
    harmful, benign = checked_before_loading(cfg)
    if cfg.population_every:  # also on resume: a run that had no population yet draws its seeds now
        check_eval_seeds(harmful, benign, cfg.population_eval_seeds)
    # torchrun / accelerate: one process per rank; alone: one process, no process group
    dist = distributed.setup(min_items=cfg.seeds_per_step, judge_rank=cfg.judge_rank, device=cfg.device)
    try:
        dist.check_fits(cfg)  # every rank refuses alike, before the run folder is touched
        with contextlib.ExitStack() as held:
            dist.together(lambda: take_run_dir(held, out, cfg, dist, resume=resume, overwrite=overwrite))
            return _train(cfg, out, dist, harmful, benign, resume=resume, progress=progress,
                          base=base, judge=judge, log=log, init=init, rerun=rerun)
    finally:
        dist.close()


def take_run_dir(held: contextlib.ExitStack, out, cfg: TrainConfig, dist, *, resume: bool, overwrite: bool) -> None:
    """Rank 0, which alone writes the run folder, locks it (until ``held`` closes) and checks it before any
    compute (:func:`check_run_dir`); the other ranks have nothing to do here."""
    if dist.is_main:
        held.enter_context(run_lock(out))
        check_run_dir(out, cfg, resume=resume, overwrite=overwrite)


@dataclasses.dataclass
class Game:
    """What a run holds from step to step: the models, optimisers, judge and output files."""

    cfg: TrainConfig
    out: Path
    dist: distributed.Dist
    harmful: list
    benign: list
    roles: object
    optimizers: dict
    tokenizer: object
    judge: object
    start: int = 0
    population: Population | None = None
    backend: object = None  # vLLM rollouts, or None for model.generate
    attack_sampling: SamplingSettings | None = None
    response_sampling: SamplingSettings | None = None
    metrics_file: object = None
    writer: object = None
    kernels: bool = False   # redgame.kernels compute the token log-probs (and run the LoRA layers where patched)
    rerun: str | None = None  # the command that started the run, where not `redgame llm train` (resume_hint)


def kernels_in_the_loop(cfg: TrainConfig, roles, sharded: bool = False) -> bool:
    """Whether ``redgame.kernels`` compute the token log-probs; patches the LoRA layers where they run those too.

    ``on``: both, ``off``: neither (peft's layers, and plain torch over the full logits). ``auto``,
    for LoRA roles on a base not sharded by FSDP (``sharded``): both on a CPU (the kernels' torch path); on CUDA the
    log-probs and the fused preference loss (their gemm pass ran the DPO loss at 0.76× to
    0.90× Liger's time on one H200) but peft's LoRA layers, which were faster there than
    ours (docs/gpu.md). Full fine-tuning has no LoRA layer and trains the head: auto is off.
    """
    peft_models = [m for m in roles.models() if hasattr(m, "peft_config")]
    on_cuda = any(p.is_cuda for m in peft_models for p in m.parameters())
    eligible = cfg.kernels == "auto" and bool(peft_models) and not sharded
    if cfg.kernels == "on" or (eligible and not on_cuda):
        from redgame.kernels import patch_peft

        for model in peft_models:
            patch_peft(model)
    return cfg.kernels == "on" or eligible


def implementations(game: Game, fused_calls: int, peft_calls: int) -> dict:
    """Which code ran the LoRA layers and the token log-probs in a step (for the metrics row).

    ``triton`` (CUDA), ``interpret`` (Triton's interpreter), ``torch`` (the kernels' CPU path)
    or ``peft`` (peft's own LoRA layers); ``+peft`` when some calls fell back to peft. With the
    kernels off the log-probs are ``logits``: plain torch over the full logits.
    """
    from redgame.kernels import backend

    model = game.roles.models()[0]
    head = model.get_output_embeddings().weight
    kernel = backend(head) if game.kernels else "logits"
    lora = kernel if fused_calls else "peft"
    if fused_calls and peft_calls:
        lora += "+peft"
    return {"kernels/lora": lora, "kernels/logprobs": kernel,
            "kernels/preference": kernel if fused_preference(game) else "none"}


def fused_preference(game: Game) -> bool:
    """Whether the DPO / IPO update runs through ``redgame.kernels.fused_preference_loss``.

    With the kernels on, for a frozen LM head (LoRA roles), without activation checkpointing
    (``update_chunk``, which needs the log-probs per chunk).
    """
    cfg = game.cfg
    if not game.kernels or cfg.resolved_loss() not in ("dpo", "ipo") or cfg.update_chunk:
        return False
    return not any(m.get_output_embeddings().weight.requires_grad for m in game.roles.models())


def _train(cfg: TrainConfig, out, dist, harmful: list, benign: list, *, resume: bool, progress: bool, base, judge,
           log, init: dict | None = None, rerun: str | None = None) -> dict:
    from tqdm import tqdm

    game = set_up(cfg, out, dist, harmful, benign, resume=resume, base=base, judge=judge, log=log)
    game.rerun = rerun
    for role, path in (init or {}).items():
        game.roles.load_role(role, path)
    step = game.start
    try:
        bar = tqdm(range(game.start, cfg.steps), initial=game.start, total=cfg.steps,
                   disable=not (progress and dist.is_main), desc=f"{cfg.regime}", unit="step")
        with _StopFlag() as stop, bar:  # closed in the flag's scope: a Ctrl-C as it closed was lost in its __del__
            for step in bar:
                row = diverged_as_stop(play_step, game, step)
                log_row(game, row)
                bar.set_postfix(asr=f"{row['attack_success']:.2f}", ref_h=f"{row['refusal_harmful']:.2f}",
                                ref_b=f"{row['refusal_benign']:.2f}")
                stopping = dist.any_rank(stop.requested) and step + 1 < cfg.steps  # a stop in the last step: finish
                save_if_due(game, step + 1, stopping)
                if stopping:
                    if dist.is_main:  # one line, not one per rank
                        log(f"stopped at step {step + 1}; {resume_hint(game.out, game.rerun)}")
                    return {"out": str(game.out), "steps": step + 1, "stopped": True, "interrupted": True,
                            "roles": game.roles}
    except BaseException as exc:
        lost = dist.active and lost_peer(exc)  # another rank died or stopped: rank 0 itself may be gone
        ended = isinstance(exc, Terminated)  # under torchrun: perhaps its stop after rank 0 died
        if (dist.is_main or lost or ended) and not isinstance(exc, TrainingStopped):
            why = "another rank stopped" if lost else "terminated" if ended else type(exc).__name__
            print(f"redgame: the run stopped at step {step + 1} ({why}); {resume_hint(game.out, game.rerun)}",
                  file=sys.stderr)
        raise
    finally:
        if dist.is_main:
            game.metrics_file.close()
            if game.writer is not None:
                game.writer.close()
    if dist.is_main:
        write_final(game)
        if "defender" in cfg.train_roles:  # a frozen defender (the probe's) learned no over-refusal
            warn_of_over_refusal(game.out, log)
    dist.barrier()
    # interrupted: Ctrl-C in the last step, which finished the run; a command that goes on from here stops
    return {"out": str(game.out), "steps": cfg.steps, "stopped": False, "interrupted": stop.requested,
            "roles": game.roles}


def check_lora_rank(cfg: TrainConfig, model) -> None:
    """A LoRA rank above the model's width (no adapter is wider than the layer it adapts): one line before the
    run folder is claimed (a rank of a million ran the allocator out of memory, an internal error)."""
    width = getattr(model.config, "hidden_size", None)
    if not cfg.full_finetune and isinstance(width, int) and cfg.lora_rank > width:
        raise UserError(f"config key 'lora_rank' is {cfg.lora_rank}, above the model's hidden size {width}")


def write_final(game) -> None:
    """Both final roles, written into a temporary folder that then replaces ``final/``: a stop midway (Ctrl-C,
    a full disk) leaves the old ``final/`` or none, never one role, and names the resume that writes it."""
    try:
        with ckpt.folder_written_whole(game.out / "final") as tmp:
            for role in ROLES:
                game.roles.save_role(role, tmp / role, tokenizer=game.tokenizer)
    except BaseException:
        print(f"redgame: the final adapters were not written; {resume_hint(game.out, game.rerun)}", file=sys.stderr)
        raise


def diverged_as_stop(play, game, step: int) -> dict:
    """``play(game, step)``; a model whose next-token probabilities are no longer finite stops the run in one line.

    Weights that grew huge without a non-finite loss (a learning rate far too high, or float16 activations past
    their range) are found by the next rollout's sampler; the checkpoints written since may hold them, so the
    hint is a fresh start at a lower rate, not a resume.
    """
    try:
        return play(game, step)
    except FloatingPointError as exc:
        cfg = game.cfg
        if step == 0:  # no update yet: the base model and the sampling settings give these logits
            raise TrainingStopped(f"step 1: {exc}, before any update: check the sampling settings (temperature "
                                  f"{cfg.temperature:g}, top_p {cfg.top_p:g}) and the model's dtype "
                                  f"({cfg.dtype})") from exc
        restart = (f"redgame llm train --config {shlex.quote(str(game.out / RUN_MARKER))} "
                   f"--out {shlex.quote(str(game.out))} --overwrite --set lr=...")
        dtype = "" if cfg.dtype == "auto" else f", dtype {cfg.dtype}"
        raise TrainingStopped(f"step {step + 1}: {exc}: the weights diverged (lr {cfg.lr:g}{dtype}); the checkpoints "
                              f"of the last steps may hold them, so start again with a lower lr: {restart}") from exc


def warn_of_over_refusal(out: Path, log) -> None:
    """The over-refusal watch's warning, if the run's metrics call for one; unreadable metrics: none."""
    try:
        rows = read_metrics(out)
    except UserError:  # a resumed run whose metrics.jsonl was lost: the run itself is done
        return
    if over_refusal := watch.warning(rows):
        log(over_refusal)


# -- set-up ------------------------------------------------------------------------------------

def set_up(cfg: TrainConfig, out, dist, harmful: list, benign: list, *, resume: bool, base,
           judge, log) -> Game:
    """The run folder, the base model, the judge, the roles, their optimisers; restored on resume."""
    from redgame.llm.judges import check_reachable, make_judge
    from redgame.llm.models import load_base, place_judge

    out = Path(out)  # checked by take_run_dir; rank 0 replaces or writes it once everything has loaded
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device, dtype = dist.placement(cfg.device, cfg.dtype)
    keep_freed_memory(device)  # on a CPU: activations freed and reused without page faults (llm/cpu_allocator.py)
    model, tokenizer = base if base is not None else load_base(cfg.model, dtype=dtype)
    model.to(device=device, dtype=dtype)
    check_seeds_fit(tokenizer, model, harmful + benign, cfg.attack_tokens, cfg.response_tokens, cfg.explore_prefixes)
    check_lora_rank(cfg, model)
    def ready_judge():  # on the judge's rank(s) only: under together, so that every rank stops in one line
        nonlocal judge
        if judge is None and dist.judges_here(cfg.judge_rank):
            judge = make_judge(cfg.judge, format=cfg.judge_format)
        place_judge(judge, device, dtype)
        check_reachable(judge)

    def start_engine():
        nonlocal backend
        from redgame.llm.vllm_rollout import VLLMRollout

        backend = VLLMRollout(cfg, tokenizer, out, dtype, dist.rank, model=model, world_size=dist.world_size)

    # A judge that does not load, a judge server that cannot answer, or a vLLM engine that does not start is refused
    # on every rank before the old run's files go.
    backend = None
    dist.together(ready_judge)
    if cfg.rollout_backend == "vllm":
        dist.together(start_engine)
    if not resume:  # a resumed run's config.json is written once its checkpoint has loaded
        dist.together(lambda: claim_run_dir(out, cfg, resume=False) if dist.is_main else None)

    torch.manual_seed(cfg.seed)  # adapter init, then sampling
    roles = build_roles(model, regime="bipolicy" if cfg.regime in ABLATIONS else cfg.regime,
                        full_finetune=cfg.full_finetune,
                        lora=LoraSettings(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout),
                        reference=cfg.resolved_reference(), ema_decay=cfg.ema_decay,
                        rollout=cfg.resolved_rollout_policy())
    if cfg.fsdp and dist.active:
        dist.shard_frozen_layers(roles, cfg.seeds_per_step)
    elif cfg.fsdp:
        log("config key 'fsdp' shards the base over torchrun's processes; in one process it does nothing")
    optimizers = {key: torch.optim.AdamW(roles.parameters(owners[0]), lr=cfg.lr, weight_decay=cfg.weight_decay)
                  for key, owners in roles.owners().items()}
    game = Game(cfg, out, dist, harmful, benign, roles, optimizers, tokenizer, judge)
    game.kernels = kernels_in_the_loop(cfg, roles, sharded=dist.lockstep)
    if cfg.population_every:
        game.population = Population(size=cfg.population_size, attack_tokens=cfg.attack_tokens,
                                     response_tokens=cfg.response_tokens,
                                     eval_seeds=population_eval_seeds(harmful, benign, cfg.population_eval_seeds,
                                                                      cfg.seed))
    if resume:
        _restore(game, log)  # a damaged checkpoint is refused here, before config.json is touched
        dist.together(lambda: claim_run_dir(out, cfg, resume=True) if dist.is_main else None)
    if backend is not None:
        game.backend = backend
        backend.sync(roles)
    game.attack_sampling, game.response_sampling = (
        SamplingSettings(tokens, cfg.temperature, cfg.top_p, batch_size=cfg.rollout_batch, synced=dist.lockstep,
                         share_prompts=cfg.share_prompts) for tokens in (cfg.attack_tokens, cfg.response_tokens))
    if dist.is_main:
        game.metrics_file = (out / "metrics.jsonl").open("a")
        game.writer = tensorboard_writer(out / "tb", log)
    return game


def tensorboard_writer(folder: Path, log):
    """A TensorBoard writer for the run's ``tb/``, or None (said once) without the tensorboard package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # the llm extra installs it; a bare CUDA image may not have it
        log("tensorboard is not installed: no tb/ events (metrics.jsonl holds every metric)")
        return None
    return SummaryWriter(str(folder))


def _restore(game: Game, log) -> None:
    """Weights, optimisers, RNG and population from the last checkpoint; metrics trimmed to it."""
    latest = ckpt.latest_checkpoint(game.out)
    game.start = ckpt.load_checkpoint(latest, game.roles, game.optimizers)["step"]
    for skipped in ckpt.unfinished_checkpoints(game.out) if game.dist.is_main else []:
        log(f"{skipped} has no state.json (its write did not finish, or it was damaged): resuming from {latest.name}")
    saved = ckpt.load_extra(latest, "population")
    if game.population is not None and saved is not None:
        for note in game.population.load_state(*saved, where=f"checkpoint {latest}", roles=game.roles):  # one process
            log(note)
    elif saved is not None and game.dist.is_main:
        log("population_every = 0: PSRO stops here; the run's population of the checkpoint is not used from now on "
            "(population.json keeps it as it was)")
    if game.dist.is_main:
        log(f"resuming from step {game.start}")
        lost = keep_metrics_until(game.out / "metrics.jsonl", game.start)
        if lost:
            log(f"metrics.jsonl has no readable row for step(s) {step_ranges(lost)} (damaged or removed): "
                "their metrics are lost; the checkpoint's weights are not")


# -- one step: play, judge, update each role -------------------------------------------------

def play_step(game: Game, step: int) -> dict:
    """One game iteration; returns its metrics row."""
    forget = getattr(game.judge, "forget", None)
    if forget is not None:  # each step judges from an empty memo, as a resumed run's first step does: an embedding
        forget()            # depends on its batch's padding in the last bits, so one kept from an earlier step differs
    grow_population(game, step)
    calls = dict(FUSED_CALLS)
    t0 = time.perf_counter()
    rounds, row = play(game, step)
    t1 = time.perf_counter()
    judged = judge_rounds(game, rounds)
    check_something_read(game, judged, step)
    t2 = time.perf_counter()
    row.update(outcome_metrics(game, rounds, judged))
    row.update(update_roles(game, step, rounds, judged))
    fused = sum(FUSED_CALLS[k] - calls.get(k, 0) for k in ("lora", "multi_lora"))
    row.update(implementations(game, fused, FUSED_CALLS["peft"] - calls.get("peft", 0)))
    if game.backend is not None:
        game.backend.sync(game.roles)  # the next round samples from the updated adapters
    t3 = time.perf_counter()
    new_tokens = sum(len(c.completion_ids) for rnd in _distinct(rounds) for c in rnd.attacks + rnd.responses)
    row.update({"time/rollout": t1 - t0, "time/judge": t2 - t1, "time/update": t3 - t2,
                "tokens_per_s": new_tokens / max(t1 - t0, 1e-9)})
    return game.dist.merge_metrics(row)  # the global batch's row, with "world_size"


def grow_population(game: Game, step: int) -> None:
    """PSRO: every ``population_every`` steps both adapters join the population (re-solved)."""
    population = game.population
    if population is not None and (step % game.cfg.population_every == 0 or not len(population)):
        population.add(game.roles, step=step, tokenizer=game.tokenizer, judge=game.judge)
        write_population(population, game.out / "population.json")


def _distinct(by_role: dict) -> list:
    """The distinct values of a role -> value dict (both roles may share one round)."""
    return list({id(v): v for v in by_role.values()}.values())


def play(game: Game, step: int) -> tuple[dict, dict]:
    """Each role's round ({role: Round}, possibly one shared round) and the metrics of who met whom.

    Both roles learn from one round against each other; under PSRO each trained role plays
    its own round against a member drawn from the other role's meta-Nash mixture.
    """
    cfg, dist = game.cfg, game.dist
    dist.seed_step(cfg.seed, step)
    seeds = dist.shard(seed_batch(game.harmful, game.benign, cfg, step))
    fixed = frozen_attacks(cfg, seeds, step)
    sampled = {"defender-sft": 0, "defender-vs-frozen": cfg.attacks_per_seed - cfg.attacks_per_seed // 2}.get(
        cfg.regime, cfg.attacks_per_seed)
    play_one = lambda: play_round(game.roles, game.tokenizer, seeds, attacks_per_seed=sampled,  # noqa: E731
                                  responses_per_attack=cfg.responses_per_attack,
                                  attack_sampling=game.attack_sampling, response_sampling=game.response_sampling,
                                  explore_prefixes=tuple(cfg.explore_prefixes),
                                  identity_attacks=cfg.identity_attacks or cfg.regime == "defender-sft",
                                  backend=game.backend, fixed_attacks=fixed,
                                  greedy_candidates=cfg.greedy_candidates)
    row = {"step": step + 1}
    if game.population is None or not any(updates_role(cfg, step, r) for r in ROLES):
        return dict.fromkeys(ROLES, play_one()), row  # (or none learns: metrics only)
    rounds, rng = {}, random.Random(f"{cfg.seed}:psro:{step}")
    for role in ROLES:
        if updates_role(cfg, step, role):
            other = OPPONENT[role]
            k = game.population.sample(other, rng)
            row[f"psro/{role}_opponent_step"] = game.population.steps[k]
            with game.population.playing(game.roles, other, k):
                rounds[role] = play_one()
    return rounds, row


def frozen_attacks(cfg: TrainConfig, seeds: list, step: int) -> list[list[str]] | None:
    """defender-vs-frozen: per seed, attacks_per_seed // 2 jailbreak templates applied to it, drawn
    at random (a pure function of seed and step); the frozen base attacker samples the rest."""
    if cfg.regime != "defender-vs-frozen":
        return None
    from redgame.llm.templates import BUILTIN_TEMPLATES, apply_template

    rng, texts = random.Random(f"{cfg.seed}:{step}:templates"), list(BUILTIN_TEMPLATES.values())
    return [[apply_template(rng.choice(texts), s.prompt) for _ in range(cfg.attacks_per_seed // 2)] for s in seeds]


def sft_signal(rnd, judged):
    """defender-sft's targets: per seed as written, the judge's best-scored answer that refuses a
    harmful seed or helps with a benign one (not degenerate); a seed without one has no target.
    Help is :func:`redgame.llm.rewards.helped`: until 2026-12-05 any answer not refused served, so an
    echo of a benign prompt became the target where nothing helped."""
    from redgame.llm.rewards import RoleSignal

    out = RoleSignal()
    for a in range(len(rnd.attacks)):
        harmful = rnd.seeds[rnd.attack_seed[a]].harmful
        fits = [i for i, att in enumerate(rnd.response_attack) if att == a
                and (judged.refusal[i] if harmful else judged.helped[i])
                and not (judged.degenerate and judged.degenerate[i])
                and not (judged.judge_error and judged.judge_error[i])]  # an answer the judge could not read
        if fits:
            best = max(fits, key=lambda i: judged.scores[i])
            out.items.append(best)
            out.rewards.append(1.0)
            out.groups.append(a)
    return out


def judge_rounds(game: Game, rounds: dict) -> dict:
    """The judge's verdicts on each distinct round, by role."""
    cfg, rules = game.cfg, rules_from_config(game.cfg)
    verdicts = {id(rnd): game.dist.judge(lambda r: judge_round(game.judge, r, pairwise=cfg.regime == "advgame",
                                                               min_margin=cfg.min_margin, rules=rules),
                                         rnd, cfg.judge_rank)
                for rnd in _distinct(rounds)}
    return {role: verdicts[id(rnd)] for role, rnd in rounds.items()}


def check_something_read(game: Game, judged: dict, step: int) -> None:
    """A step in which the judge could read none of the answers, on any rank, stops the run in one line on every
    rank: no role learns from an answer without a verdict, so the run would go on learning nothing (an
    unparsable reply here and there is only counted, in ``judge_errors``)."""
    unread = [flag for verdicts in _distinct(judged) for flag in verdicts.judge_error or ()]
    if game.dist.all_ranks(all(unread)) and game.dist.any_rank(bool(unread)):
        raise UserError(f"step {step + 1}: the judge {getattr(game.judge, 'name', game.judge)!r} could read none "
                        f"of the answers of this step (every reply unparsable): check its format "
                        f"(judge_format={game.cfg.judge_format}) and, for a server, what it answers")


def outcome_metrics(game: Game, rounds: dict, judged: dict) -> dict:
    """Attack success and refusal rates of the defender's round (and of the attacker's, under PSRO); the parse and
    judge errors of every round played."""
    main = "defender" if "defender" in rounds else next(iter(rounds))
    row = round_metrics(rounds[main], judged[main])
    played = {id(rnd): role for role, rnd in rounds.items()}.values()  # under PSRO each role played its own round
    row["parse_errors"] = sum(rounds[role].parse_errors for role in played)
    row["judge_errors"] = sum(judged[role].judge_errors for role in played)
    if game.population is not None and "attacker" in rounds and "defender" in rounds:
        row["psro/attacker_round_attack_success"] = round_metrics(rounds["attacker"],
                                                                  judged["attacker"])["attack_success"]
    return row


@dataclasses.dataclass
class RoleBatch:
    """What one trained role learns from in a step: its sequences, units, signal and reference log-probs."""

    role: str
    samples: list             # the round's attacks or responses
    signal: object            # rewards.RoleSignal
    sequences: list           # role_sequences order
    units: list[list[int]]
    share: float              # this rank's weight of the global batch's mean (1.0 in one process)
    stand_in: bool            # FSDP: a zero-weight unit so that every rank runs the same passes
    of: object                # the batch's size for loss_from_logprobs
    reference: list | None = None   # per-sequence reference log-probs
    advantages: list | None = None  # per-sequence token advantages (REINFORCE/GRPO/REINFORCE++)
    old: list | None = None         # per-sequence log-probs of the first epoch (the importance ratio's π_old)
    nll_weight: object = None       # DPO/IPO: the NLL weight, a number or a [pairs] tensor (pair_nll_weights)


def update_roles(game: Game, step: int, rounds: dict, judged: dict) -> dict:
    """One optimiser step (``update_epochs`` of them) per parameter set with something to learn; its metrics."""
    roles, dist = game.roles, game.dist
    row: dict = {}
    batches = role_batches(game, step, rounds, judged)
    keys = {key: owners for key, owners in roles.owners().items()
            if dist.any_rank(any(b.role in owners for b in batches))}
    if not keys:
        return row
    score_reference(game, batches)  # fixed within the step: every epoch reuses it
    for _ in range(game.cfg.update_epochs):
        take_update(game, step, batches, keys, row)
    for owners in keys.values():
        roles.update_reference(owners[0])  # one parameter set, one EMA step per game step
    return row


def role_batches(game: Game, step: int, rounds: dict, judged: dict) -> list[RoleBatch]:
    """The trained roles' batches (a role with nothing to learn has none, unless FSDP needs a stand-in)."""
    cfg, dist = game.cfg, game.dist
    batches = []
    for role in ROLES:
        if role not in rounds or not updates_role(cfg, step, role):
            continue
        samples = rounds[role].attacks if role == "attacker" else rounds[role].responses
        signal_ = sft_signal(rounds[role], judged[role]) if cfg.regime == "defender-sft" else getattr(judged[role], role)
        size = signal_size(cfg, signal_)
        share = dist.batch_share(size)  # 1.0 in one process
        stand_in = dist.lockstep and dist.any_rank(size > 0) and size == 0
        if stand_in:  # FSDP: the same forward passes on every rank; share is 0 here
            signal_ = stand_in_signal(cfg, signal_)
        sequences, units = role_sequences(cfg, samples, signal_)
        if not sequences:
            continue
        tokens = sum(len(s.completion_ids) for s in sequences)
        of = len(units) if cfg.resolved_loss() in ("dpo", "ipo") else (len(units), tokens)
        batches.append(RoleBatch(role, samples, signal_, sequences, units, share, stand_in, of,
                                 nll_weight=pair_nll_weights(cfg, role, signal_, judged[role])))
    return batches


def stand_in_signal(cfg: TrainConfig, signal_):
    """A signal of one zero-weight unit where a rank has nothing to learn but FSDP needs its forward passes: a pair
    for DPO/IPO, an item with reward 0 for the losses that read items (policy gradient, SFT)."""
    if cfg.resolved_loss() in ("dpo", "ipo"):
        return dataclasses.replace(signal_, pairs=[(0, 0)])
    return dataclasses.replace(signal_, items=[0], rewards=[0.0], groups=[0])


def pair_nll_weights(cfg: TrainConfig, role: str, signal_, judged):
    """The NLL weight of a role's DPO/IPO pairs: ``nll_weight``, or per pair for the defender
    (other losses have no NLL term: the number, unused).

    With ``benign_nll_scale`` != 1 the defender's pairs on a benign prompt (by the same
    attack-conditioned judgement as the rewards: the attack that was answered, not the seed)
    weigh their chosen answer's NLL ``nll_weight × benign_nll_scale``, the others ``nll_weight``.
    """
    if (role != "defender" or cfg.benign_nll_scale == 1.0 or cfg.resolved_loss() not in ("dpo", "ipo")
            or not signal_.pairs or not judged.attack_harmful):
        return cfg.nll_weight
    return torch.tensor([cfg.nll_weight * (1.0 if judged.attack_harmful[c] else cfg.benign_nll_scale)
                         for c, _ in signal_.pairs])


def _score(game: Game, jobs: list, on_part=None) -> list:
    cfg = game.cfg
    # FSDP: every rank runs the same passes, so no split that depends on a rank's own batch (micro-batches of its
    # token count, or a second pass for its repeated prompts) may change their number
    lockstep = game.dist.lockstep
    micro = 0 if lockstep else cfg.micro_batch_tokens
    return score(jobs, game.tokenizer.pad_token_id, together=cfg.batch_roles, micro_tokens=micro,
                 chunk=cfg.update_chunk if on_part else 0, use_kernels=game.kernels,
                 share_prompts=cfg.share_prompts and not lockstep,
                 on_part=on_part, temperature=scoring_temperature(cfg))


def score_reference(game: Game, batches: list[RoleBatch]) -> None:
    """Each batch's reference log-probs and token advantages, without gradients, in as few passes as the regime allows.

    REINFORCE++ also scores the policy before the update (its KL penalty is in the returns).
    """
    roles = game.roles
    jobs = [Job(*roles.seat(b.role, reference=True), lambda r=b.role: roles.reference(r), b.sequences, b.units)
            for b in batches]
    with torch.no_grad():
        references = _score(game, jobs)
        olds = [None] * len(batches)
        if game.cfg.resolved_loss() in RETURN_KL_LOSSES:
            olds = _score(game, [Job(*roles.seat(b.role), lambda r=b.role: roles.policy(r), b.sequences, b.units)
                                 for b in batches])
    # REINFORCE++ whitens each role's returns over every rank's tokens: each rank pools each role, in one order,
    # its share of the role none where it has no batch (or FSDP's zero-weight stand-in)
    pool = game.dist.sum_over_ranks if game.cfg.resolved_loss() in RETURN_KL_LOSSES else None
    found = {b.role: (b, reference, old) for b, reference, old in zip(batches, references, olds)}
    for role in ROLES:
        b, reference, old = found.get(role, (None, None, None))
        pooled_here = b is not None and not (b.stand_in and pool)
        if pool and not pooled_here:
            whiten(torch.zeros(0), pool)  # this rank holds none of the role's tokens
        if b is None:
            continue
        b.reference = reference.per_sequence()
        advantages = (token_advantages(game.cfg, b.signal, reference, old, pool=pool) if pooled_here
                      else torch.zeros_like(reference.values))
        if advantages is not None:
            b.advantages = list(torch.split(advantages, [len(v) for v in b.reference]))


def _part_nll_weight(b: RoleBatch, units: list[int]):
    """The NLL weight of a micro-batch's pairs (``units``, in its order)."""
    if isinstance(b.nll_weight, torch.Tensor):
        return b.nll_weight[torch.tensor(units, dtype=torch.long)]
    return b.nll_weight


def _part_loss(cfg: TrainConfig, batches: list[RoleBatch], parts: dict):
    """The loss share of one micro-batch: each role's units in it, weighted by the role's share.

    A part with hidden states (the fused DPO / IPO path) gets its loss from
    :func:`redgame.llm.losses.fused_pairs_loss`, which also gives its log-probs.
    """
    losses = []
    for j, part in parts.items():
        b = batches[j]
        order = [b.units[u][k] for k in range(len(b.units[0])) for u in part.units]  # chosen..., rejected...
        if part.hidden:
            ref_sums = torch.stack([b.reference[i].sum() for i in order])
            loss, values = fused_pairs_loss([part.hidden[i] for i in order], [part.targets[i] for i in order],
                                            part.head, ref_sums, beta=cfg.beta, kind=cfg.resolved_loss(),
                                            nll_weight=_part_nll_weight(b, part.units), of=b.of)
            part.values.update(zip(order, values))
            losses.append(loss * b.share)
            continue
        policy = TokenLogprobs.of_sequences([part.values[i] for i in order])
        reference = TokenLogprobs.of_sequences([b.reference[i] for i in order])
        advantages = None if b.advantages is None else torch.cat([b.advantages[i] for i in order])
        old = None if b.old is None else TokenLogprobs.of_sequences([b.old[i] for i in order])
        loss, _ = loss_from_logprobs(cfg, policy, reference, advantages, of=b.of, old=old,
                                     nll_weight=_part_nll_weight(b, part.units))
        losses.append(loss * b.share)
    return sum(losses) if losses else None


def take_update(game: Game, step: int, batches: list[RoleBatch], keys: dict, row: dict) -> None:
    """One optimiser step of every parameter set in ``keys``: score, check, average, clip, step."""
    cfg, dist, roles = game.cfg, game.dist, game.roles
    row["lr"] = cfg.lr_at(step)
    for key, owners in keys.items():
        game.optimizers[key].zero_grad(set_to_none=True)
        for p in roles.parameters(owners[0]):
            p.requires_grad_(True)  # both adapters learn in one pass (set_adapter would freeze the other)
    fused = fused_preference(game)
    jobs = [Job(*roles.seat(b.role), lambda r=b.role: roles.policy(r), b.sequences, b.units, fused=fused)
            for b in batches]
    policy = _score(game, jobs, on_part=lambda parts: _part_loss(cfg, batches, parts))
    losses: dict = {}
    for b, logprobs in zip(batches, policy):
        key = roles.key(b.role)
        loss, info = role_loss(cfg, roles, b.role, b.samples, b.signal, game.tokenizer.pad_token_id,
                               ref_cache={b.role: TokenLogprobs.of_sequences(b.reference)}, policy=logprobs,
                               advantages=None if b.advantages is None else torch.cat(b.advantages),
                               old=None if b.old is None else TokenLogprobs.of_sequences(b.old), nll_weight=b.nll_weight)
        if b.old is None and cfg.update_epochs > 1:
            b.old = logprobs.per_sequence()  # π_old of the later epochs: the policy before the step's first update
        if not b.stand_in:
            row.update({f"{b.role}/{k}": v for k, v in info.items()})
        if loss is not None:
            losses[key] = losses.get(key, 0.0) + loss * b.share
    for key, owners in keys.items():
        loss = losses.get(key)
        if not dist.all_ranks(loss is None or bool(torch.isfinite(loss))):
            mine = loss is not None and not bool(torch.isfinite(loss))  # this rank's, or only another rank's
            shown = float(loss) if mine else "not finite on another rank"
            raise TrainingStopped(f"step {step + 1}: the {key} loss is {shown}; {resume_hint(game.out, game.rerun)}")
        params = roles.parameters(owners[0])
        dist.average_gradients(params)
        row[f"{key}/grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
        if not math.isfinite(row[f"{key}/grad_norm"]):  # a finite loss whose gradients overflowed
            raise TrainingStopped(f"step {step + 1}: the {key} gradients are not finite (norm "
                                  f"{row[f'{key}/grad_norm']}); {resume_hint(game.out, game.rerun)}")
        for group in game.optimizers[key].param_groups:
            group["lr"] = row["lr"]
        game.optimizers[key].step()
        if not all(bool(torch.isfinite(p).all()) for p in params):  # not saved: checkpoints come after the step
            raise TrainingStopped(f"step {step + 1}: the {key} weights are not finite after the optimiser step "
                                  f"(lr {row['lr']:g}); {resume_hint(game.out, game.rerun)}")


# -- log, checkpoint ----------------------------------------------------------------------------

def log_row(game: Game, row: dict) -> None:
    """Append the row to metrics.jsonl and TensorBoard (rank 0)."""
    if not game.dist.is_main:
        return
    with naming_the_file(game.out / "metrics.jsonl"):  # a full disk's error at the flush names no file
        game.metrics_file.write(json.dumps(row) + "\n")
        game.metrics_file.flush()
    for k, v in row.items():
        if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
            if game.writer is not None:
                game.writer.add_scalar(k, v, row["step"])


def save_if_due(game: Game, done: int, stopping: bool) -> None:
    """Checkpoint every ``save_every`` steps, at the end, and when stopping."""
    cfg = game.cfg
    if stopping or (cfg.save_every and done % cfg.save_every == 0) or done == cfg.steps:
        if game.dist.is_main:
            extras = {"population": game.population.state()} if game.population is not None else None
            ckpt.save_checkpoint(game.out, done, game.roles, game.optimizers, {"seed": cfg.seed}, extras=extras)
            if cfg.keep_checkpoints:
                ckpt.remove_older_checkpoints(game.out, keep=cfg.keep_checkpoints)
        game.dist.barrier()
