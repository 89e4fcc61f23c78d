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
- ``shared`` sums both roles' losses into its one parameter set.

With ``population_every`` = K > 0 (PSRO, :mod:`redgame.llm.population`), every K steps both
adapters join a population whose meta-Nash is re-solved, and each trained role plays its
own round against an opponent drawn from the other role's meta-Nash mixture.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import signal
import sys
import time
from pathlib import Path

import torch

from redgame.errors import UserError
from redgame.llm import checkpoint as ckpt
from redgame.llm import distributed
from redgame.llm.config import TrainConfig
from redgame.llm.losses import completion_logprobs, dpo_pairs_loss, kl_to_reference, policy_gradient_loss
from redgame.llm.population import Population, write_summary as write_population
from redgame.llm.population import eval_seeds as population_eval_seeds
from redgame.llm.rewards import judge_round, rules_from_config
from redgame.llm.roles import ROLES, LoraSettings, build_roles
from redgame.llm.rollout import SamplingSettings, play_round

RUN_MARKER = "config.json"
OPPONENT = {"attacker": "defender", "defender": "attacker"}


class TrainingStopped(RuntimeError):
    """The run stopped on purpose (a non-finite loss); the message says where it left off."""


def prepare_run_dir(out: str | Path, cfg: TrainConfig, *, resume: bool, overwrite: bool) -> Path:
    """Check the output folder before any compute, and write the resolved config."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} exists and is not a folder")
    holds_run = (out / RUN_MARKER).is_file() or (out / ckpt.CHECKPOINTS).is_dir()
    if resume:
        if ckpt.latest_checkpoint(out) is None:
            again = "start it again with --overwrite" if holds_run else "start without --resume"
            raise UserError(f"--resume: no checkpoint under {out / ckpt.CHECKPOINTS}; {again}")
    elif holds_run and not overwrite:
        raise UserError(f"--out {out} already holds a run; pass --resume to continue it or --overwrite to replace it")
    elif holds_run:
        import shutil

        for name in (RUN_MARKER, "metrics.jsonl", "population.json", "tb", ckpt.CHECKPOINTS, "final"):
            target = out / name
            shutil.rmtree(target) if target.is_dir() else target.unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_MARKER).write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
    return out


def keep_metrics_until(path: Path, step: int) -> None:
    """Drop the metrics rows after ``step`` (steps a killed run did not checkpoint, redone on resume)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:  # a row cut short by the kill
            continue
        if isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] <= step:
            kept.append(line + "\n")
    ckpt.write_text_atomically(path, "".join(kept))


def resume_hint(out: Path) -> str:
    """Where a stopped run can continue from: its last checkpoint and the command that resumes it."""
    last = ckpt.latest_checkpoint(out)
    if last is None:
        return f"no checkpoint yet; start again with: redgame llm train --config {out / RUN_MARKER} --out {out} --overwrite"
    return f"last checkpoint {last}; continue with: redgame llm train --config {out / RUN_MARKER} --out {out} --resume"


def load_train_seeds(cfg: TrainConfig) -> tuple[list, list]:
    """(harmful, benign) training seeds: the built-in train split or the user's file."""
    from redgame.llm.seeds import builtin_seeds, load_seeds

    seeds = load_seeds(cfg.train_seeds) if cfg.train_seeds else builtin_seeds("train")
    harmful = [s for s in seeds if s.harmful]
    benign = [s for s in seeds if not s.harmful]
    if not harmful or not benign:
        raise UserError(f"training seeds need harmful and benign prompts; got {len(harmful)} harmful, "
                        f"{len(benign)} benign from {cfg.train_seeds or 'the built-in train split'}")
    return harmful, benign


def seed_batch(harmful: list, benign: list, cfg: TrainConfig, step: int) -> list:
    """The step's seeds, half harmful, half benign: a pure function of (seed, step)."""
    rng = random.Random(f"{cfg.seed}:{step}")
    n_harm = cfg.seeds_per_step // 2
    pick = lambda pool, k: [pool[i % len(pool)] for i in rng.sample(range(max(k, len(pool))), k)]  # noqa: E731
    return pick(harmful, n_harm) + pick(benign, cfg.seeds_per_step - n_harm)


def updates_role(cfg: TrainConfig, step: int, role: str) -> bool:
    """Whether ``role`` is updated at ``step``: sequential alternates, defender first."""
    if role not in cfg.train_roles:
        return False
    if cfg.regime == "sequential":
        return ("defender", "attacker")[(step // cfg.sequential_k) % 2] == role
    return True


def signal_size(cfg: TrainConfig, signal_) -> int:
    """How many items a role's loss averages over: pairs for DPO/IPO, samples otherwise."""
    return len(signal_.pairs) if cfg.resolved_loss() in ("dpo", "ipo") else len(signal_.items)


def _policy_and_reference(roles, role: str, samples: list, pad_id: int, ref_cache: dict | None = None,
                          chunk: int = 0):
    """Per-token log-probs of ``samples`` under the role's policy (with grad) and reference.

    ``ref_cache`` keeps the reference's log-probs by role, for later epochs on the same samples;
    ``chunk`` > 0 recomputes the policy's activations in the backward pass, ``chunk`` sequences at a time.
    """
    prompts, comps = [s.prompt_ids for s in samples], [s.completion_ids for s in samples]
    ref_lp = None if ref_cache is None else ref_cache.get(role)
    if ref_lp is None:
        with torch.no_grad(), roles.reference(role) as ref:
            ref_lp = completion_logprobs(ref, prompts, comps, pad_id)
        if ref_cache is not None:
            ref_cache[role] = ref_lp
    with roles.policy(role) as model:
        return completion_logprobs(model, prompts, comps, pad_id, chunk=chunk), ref_lp


def role_loss(cfg: TrainConfig, roles, role: str, samples: list, signal_, pad_id: int,
              ref_cache: dict | None = None) -> tuple[torch.Tensor | None, dict]:
    """One role's loss on its samples (completions) and signal (rewards / pairs)."""
    kind = cfg.resolved_loss()
    if kind in ("dpo", "ipo"):
        if not signal_.pairs:
            return None, {}
        n = len(signal_.pairs)
        chosen_then_rejected = [samples[c] for c, _ in signal_.pairs] + [samples[r] for _, r in signal_.pairs]
        pol_lp, ref_lp = _policy_and_reference(roles, role, chosen_then_rejected, pad_id, ref_cache, cfg.update_chunk)
        loss, info = dpo_pairs_loss(pol_lp.slice(0, n), pol_lp.slice(n, 2 * n), ref_lp.slice(0, n),
                                    ref_lp.slice(n, 2 * n), beta=cfg.beta, kind=kind, nll_weight=cfg.nll_weight)
        info["kl"] = float(kl_to_reference(pol_lp, ref_lp).detach())
        info["pairs"] = n
        return loss, info
    pol_lp, ref_lp = _policy_and_reference(roles, role, [samples[i] for i in signal_.items], pad_id, ref_cache,
                                           cfg.update_chunk)
    loss, info = policy_gradient_loss(pol_lp, ref_lp, torch.tensor(signal_.rewards), torch.tensor(signal_.groups),
                                      kl_coef=cfg.kl_coef, normalise=kind == "grpo")
    info["mean_reward"] = sum(signal_.rewards) / len(signal_.rewards)
    return loss, info


def round_metrics(rnd, judged) -> dict:
    """Attack success and refusal rates over the defender's sampled (not forced) answers.

    Rates on the attacker's rewrites; ``direct/...`` on identity attacks (the seeds as written).
    """
    sampled = [i for i, forced in enumerate(rnd.response_explore) if not forced]
    harm_seed = [rnd.seeds[rnd.attack_seed[rnd.response_attack[i]]].harmful for i in range(len(rnd.responses))]
    rate = lambda xs, flag: sum(flag[i] for i in xs) / len(xs) if xs else float("nan")  # noqa: E731
    attacks = [a for a in range(len(rnd.attacks)) if not rnd.is_identity(a)]
    out = {"faithful": sum(judged.faithful[a] for a in attacks) / max(1, len(attacks)),
           "parse_errors": rnd.parse_errors, "judge_errors": judged.judge_errors,
           "degenerate": rate(sampled, judged.degenerate), "truncated": rate(sampled, judged.truncated)}
    for prefix, identity in (("", False), ("direct/", True)):
        mine = [i for i in sampled if rnd.is_identity(rnd.response_attack[i]) == identity]
        if identity and not mine:
            continue
        on_harm = [i for i in mine if harm_seed[i]]
        on_benign = [i for i in mine if not harm_seed[i]]
        out.update({f"{prefix}attack_success": rate(on_harm, judged.harmful),
                    f"{prefix}refusal_harmful": rate(on_harm, judged.refusal),
                    f"{prefix}refusal_benign": rate(on_benign, judged.refusal),
                    f"{prefix}defender_score": sum(judged.scores[i] for i in mine) / max(1, len(mine))})
    return out


class _StopFlag:
    """First Ctrl-C: finish the step, checkpoint, exit; a second one aborts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def __enter__(self):
        def handler(signum, frame):
            if self.requested:
                raise KeyboardInterrupt
            self.requested = True
            print("\nredgame: stopping after this step and checkpointing (Ctrl-C again to abort)", flush=True)

        try:
            self._previous = signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: leave signals alone
            self._previous = None
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)


def train(cfg: TrainConfig, out: str | Path, *, resume: bool = False, overwrite: bool = False,
          progress: bool = True, base=None, judge=None, log=print) -> dict:
    """Run the game for ``cfg.steps`` steps (in all, counting resumed ones); returns a summary.

    ``base`` = (model, tokenizer) and ``judge`` may be passed in to reuse loaded ones. Under
    torchrun / accelerate each process runs this on its shard (:mod:`redgame.llm.distributed`).
    """
    cfg.validate()
    if cfg.rollout_backend == "vllm":
        from redgame.llm import vllm_rollout

        vllm_rollout.require(cfg)  # vllm installed, a GPU, a local model folder: before any compute
    harmful, benign = load_train_seeds(cfg)
    # torchrun / accelerate: one process per rank; alone: one process, no process group
    dist = distributed.setup(min_items=cfg.seeds_per_step, judge_rank=cfg.judge_rank)
    try:
        return _train(cfg, out, dist, harmful, benign, resume=resume, overwrite=overwrite, progress=progress,
                      base=base, judge=judge, log=log)
    finally:
        dist.close()


def _train(cfg: TrainConfig, out, dist, harmful: list, benign: list, *, resume: bool, overwrite: bool,
           progress: bool, base, judge, log) -> dict:
    from torch.utils.tensorboard import SummaryWriter
    from tqdm import tqdm

    from redgame.llm.judges import make_judge
    from redgame.llm.models import load_base

    if dist.is_main:  # rank 0 checks and writes the run folder; the others wait for it
        out = prepare_run_dir(out, cfg, resume=resume, overwrite=overwrite)
    dist.barrier()
    out = Path(out)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    model, tokenizer = base if base is not None else load_base(cfg.model)
    if dist.active:
        model.to(dist.device)
    if judge is None and dist.judges_here(cfg.judge_rank):
        judge = make_judge(cfg.judge, format=cfg.judge_format)

    torch.manual_seed(cfg.seed)  # adapter init, then sampling
    roles = build_roles(model, regime=cfg.regime, full_finetune=cfg.full_finetune,
                        lora=LoraSettings(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout),
                        reference=cfg.resolved_reference(), ema_decay=cfg.ema_decay)
    if cfg.fsdp:
        dist.shard_frozen_layers(roles, cfg.seeds_per_step)  # a no-op in one process
    optimizers = {key: torch.optim.AdamW(roles.parameters(owners[0]), lr=cfg.lr, weight_decay=cfg.weight_decay)
                  for key, owners in roles.owners().items()}
    population = None
    if cfg.population_every:
        if dist.active:
            raise UserError("population_every (PSRO) runs in one process; start it without torchrun/accelerate")
        population = Population(size=cfg.population_size, attack_tokens=cfg.attack_tokens,
                                response_tokens=cfg.response_tokens,
                                eval_seeds=population_eval_seeds(harmful, benign, cfg.population_eval_seeds, cfg.seed))
    start = 0
    if resume:
        latest = ckpt.latest_checkpoint(out)
        state = ckpt.load_checkpoint(latest, roles, optimizers)
        start = state["step"]
        saved = ckpt.load_extra(latest, "population")
        if population is not None and saved is not None:
            population.load_state(*saved)
        if dist.is_main:
            log(f"resuming from step {start}")
            keep_metrics_until(out / "metrics.jsonl", start)
    backend = None
    if cfg.rollout_backend == "vllm":
        from redgame.llm.vllm_rollout import VLLMRollout

        backend = VLLMRollout(cfg, tokenizer, out, dist.rank)
        backend.sync(roles)
    attack_sampling = SamplingSettings(cfg.attack_tokens, cfg.temperature, cfg.top_p, synced=dist.lockstep)
    response_sampling = SamplingSettings(cfg.response_tokens, cfg.temperature, cfg.top_p, synced=dist.lockstep)
    pad_id = tokenizer.pad_token_id
    metrics_file = (out / "metrics.jsonl").open("a") if dist.is_main else None
    writer = SummaryWriter(str(out / "tb")) if dist.is_main else None
    step = start
    try:
        with _StopFlag() as stop:
            bar = tqdm(range(start, cfg.steps), initial=start, total=cfg.steps, disable=not (progress and dist.is_main),
                       desc=f"{cfg.regime}", unit="step")
            for step in bar:
                if population is not None and (step % cfg.population_every == 0 or not len(population)):
                    population.add(roles, step=step, tokenizer=tokenizer, judge=judge)
                    write_population(population, out / "population.json")
                t0 = time.perf_counter()
                dist.seed_step(cfg.seed, step)
                seeds = dist.shard(seed_batch(harmful, benign, cfg, step))

                def play_and_judge():
                    rnd = play_round(roles, tokenizer, seeds, attacks_per_seed=cfg.attacks_per_seed,
                                     responses_per_attack=cfg.responses_per_attack, attack_sampling=attack_sampling,
                                     response_sampling=response_sampling,
                                     explore_prefixes=tuple(cfg.explore_prefixes),
                                     identity_attacks=cfg.identity_attacks, backend=backend)
                    t = time.perf_counter()
                    judged = dist.judge(lambda r: judge_round(judge, r, pairwise=cfg.regime == "advgame",
                                                              min_margin=cfg.min_margin, rules=rules_from_config(cfg)),
                                        rnd, cfg.judge_rank)
                    return rnd, judged, time.perf_counter() - t

                opponents = {}
                if population is None or not any(updates_role(cfg, step, r) for r in ROLES):
                    # both roles learn from one round against each other (or none learns: metrics only)
                    plays = dict.fromkeys(ROLES, play_and_judge())
                else:  # PSRO: each trained role plays its own round against a drawn member
                    plays, rng = {}, random.Random(f"{cfg.seed}:psro:{step}")
                    for role in ROLES:
                        if updates_role(cfg, step, role):
                            other = OPPONENT[role]
                            k = population.sample(other, rng)
                            opponents[f"psro/{role}_opponent_step"] = population.steps[k]
                            with population.playing(roles, other, k):
                                plays[role] = play_and_judge()
                rounds = list({id(p[0]): p for p in plays.values()}.values())
                judge_time = sum(p[2] for p in rounds)
                t2 = time.perf_counter()
                t1 = t2 - judge_time
                samples = {role: p[0].attacks if role == "attacker" else p[0].responses for role, p in plays.items()}
                signals = {role: getattr(p[1], role) for role, p in plays.items()}
                main = plays.get("defender", next(iter(plays.values())))
                row = {"step": step + 1, **round_metrics(main[0], main[1]), **opponents}
                if population is not None and "attacker" in plays and "defender" in plays:
                    row["psro/attacker_round_attack_success"] = round_metrics(*plays["attacker"][:2])["attack_success"]
                ref_cache: dict = {}  # reference log-probs: fixed within a step, reused by every epoch
                for key, owners in roles.owners().items():
                    updated = False
                    for epoch in range(cfg.update_epochs):
                        losses = []
                        for role in owners:
                            if updates_role(cfg, step, role):
                                size, signal_ = signal_size(cfg, signals[role]), signals[role]
                                share = dist.batch_share(size)  # 1.0 in one process
                                stand_in = dist.lockstep and dist.any_rank(size > 0) and size == 0
                                if stand_in:  # FSDP: the same forward passes on every rank; share is 0 here
                                    signal_ = dataclasses.replace(signal_, pairs=[(0, 0)])
                                loss, info = role_loss(cfg, roles, role, samples[role], signal_, pad_id,
                                                       ref_cache=ref_cache)
                                if not stand_in:
                                    row.update({f"{role}/{k}": v for k, v in info.items()})
                                if loss is not None:
                                    losses.append(loss * share)
                        if not dist.any_rank(bool(losses)):
                            break
                        loss = sum(losses) if losses else None
                        if not dist.all_ranks(loss is None or bool(torch.isfinite(loss))):
                            shown = float(loss.detach()) if loss is not None else "not finite on another rank"
                            raise TrainingStopped(f"step {step + 1}: the {key} loss is {shown}; {resume_hint(out)}")
                        optimizers[key].zero_grad(set_to_none=True)
                        if loss is not None:
                            loss.backward()
                        params = roles.parameters(owners[0])
                        dist.average_gradients(params)
                        row[f"{key}/grad_norm"] = float(torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm))
                        optimizers[key].step()
                        updated = True
                    if updated:
                        roles.update_reference(owners[0])  # one parameter set, one EMA step per game step
                if backend is not None:
                    backend.sync(roles)  # the next round samples from the updated adapters
                t3 = time.perf_counter()
                new_tokens = sum(len(c.completion_ids) for p in rounds for c in p[0].attacks + p[0].responses)
                row.update({"time/rollout": t1 - t0, "time/judge": t2 - t1, "time/update": t3 - t2,
                            "tokens_per_s": new_tokens / max(t1 - t0, 1e-9)})
                row = dist.merge_metrics(row)  # the global batch's row, with "world_size"
                if dist.is_main:
                    metrics_file.write(json.dumps(row) + "\n")
                    metrics_file.flush()
                    for k, v in row.items():
                        if k != "step" and isinstance(v, (int, float)) and math.isfinite(v):
                            writer.add_scalar(k, v, step + 1)
                bar.set_postfix(asr=f"{row['attack_success']:.2f}", ref_h=f"{row['refusal_harmful']:.2f}",
                                ref_b=f"{row['refusal_benign']:.2f}")
                done = step + 1
                stopping = dist.any_rank(stop.requested)
                if stopping or (cfg.save_every and done % cfg.save_every == 0) or done == cfg.steps:
                    if dist.is_main:
                        extras = {"population": population.state()} if population is not None else None
                        ckpt.save_checkpoint(out, done, roles, optimizers, {"seed": cfg.seed}, extras=extras)
                    dist.barrier()
                if stopping:
                    log(f"stopped at step {done}; {resume_hint(out)}")
                    return {"out": str(out), "steps": done, "stopped": True, "roles": roles}
    except BaseException as exc:
        if dist.is_main and not isinstance(exc, TrainingStopped):
            print(f"redgame: the run stopped at step {step + 1} ({type(exc).__name__}); {resume_hint(out)}",
                  file=sys.stderr)
        raise
    finally:
        if dist.is_main:
            metrics_file.close()
            writer.close()
    final = out / "final"
    if dist.is_main:
        for role in ROLES:
            roles.save_role(role, final / role)
    dist.barrier()
    return {"out": str(out), "steps": cfg.steps, "stopped": False, "roles": roles}
