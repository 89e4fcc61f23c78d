"""The LLM mirror-gap probe: how far a fresh attacker gets against a run's frozen defender.

The toy games measure collapse into self-consistency by the mirror gap, the best response's
attack success minus self-play's (La Malfa et al. 2026, arXiv 2605.08427; the toy version in
``redgame.games``). Here the best response is approximate: a fresh attacker adapter, started
from the base, trained for K game steps against the run's defender, which stays frozen
(``train_roles = attacker``, the run's own recipe otherwise). Then, greedily, on held-out
harmful seeds (validation while choosing a recipe, test for reported numbers):

- ``selfplay_asr``: the run's own attacker against its defender;
- ``best_response_asr``: the probe's attacker against the same defender;
- ``base_attacker_asr``: the base model prompted as attacker (a floor the probe should beat);
- ``mirror_gap``: the mean over prompts of the best response's success minus self-play's, over the
  prompts whose answers the judge read under both (best_response_asr - selfplay_asr where it read every
  answer), with Newcombe's 95% interval for a difference of paired rates over prompts
  (``redgame.games.stats.paired_rate_diff_ci``); each ASR
  has a 95% Wilson interval (``rate_ci``). An answer whose judge reply could not be read counts
  in neither (``*_unjudged``).

Every attack success is labelled by the evaluation judge (``eval_judge``), which need not be the
judge the run or the probe trained against; the refusal-string rate stands beside each.

Usage::

    from redgame.llm.probe import probe
    result = probe("runs/bip", steps=4, split="validation")
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from redgame.errors import UserError
from redgame.jsonio import write_json
from redgame.llm.adapters import ADAPTER_FILES, adapter_dir, checked_run_adapters, lora_tensor_names, run_config
from redgame.llm.run_lock import read_lock

ATTACKERS = ("selfplay", "best_response", "base_attacker")
RESULTS = ("probe.json", "answers.json")  # the probe's own files beside its attacker_run
PROBED = "probed_run.json"  # which run the attacker_run trains against: a resume must probe the same one
SPLITS = ("validation", "test")


# The keys a best response fixes (probe_config) or takes from the probe's flags: --set would be dropped.
PROBE_SETS = {"regime", "train_roles", "steps", "seed", "loss", "reference", "population_every",
              "explore_prefixes", "identity_attacks", "greedy_candidates", "full_finetune", "device", "dtype", "model"}


def probe_config(run_cfg, *, steps: int, seed: int):
    """The run's recipe turned into a best-response run: bipolicy, only the attacker learns.

    The defender's exploration (explore_prefixes, identity attacks, greedy candidates) is dropped: the defender
    does not learn, and the attacker's reward comes from the defender's sampled answers. At least
    2 attacks per seed and 2 answers per attack: the best response learns by DPO, whose attacker
    pairs are two attacks on one seed (a run of one attack per seed, such as a shared run's
    REINFORCE++, gave it no pair, and an untrained "best response" its gap of 0).
    """
    return dataclasses.replace(
        run_cfg, regime="bipolicy", train_roles=("attacker",), steps=steps, seed=seed, loss="auto", lr_decay_steps=0,
        reference="auto", population_every=0, explore_prefixes=(), identity_attacks=False, greedy_candidates=False,
        full_finetune=False, attacks_per_seed=max(2, run_cfg.attacks_per_seed),
        responses_per_attack=max(2, run_cfg.responses_per_attack)).validate()


def check_run(run: str | Path):
    """The run's TrainConfig, after checking that both final adapters are there and can be read."""
    from redgame.llm.config import from_mapping

    cfg = from_mapping(run_config(run), where=f" in {Path(run) / 'config.json'}")
    names = {role: lora_tensor_names(folder / ADAPTER_FILES[1])
             for role, folder in checked_run_adapters(run, cfg.full_finetune, "the probe").items()}
    if names["attacker"] != names["defender"]:  # one run's roles share their LoRA settings, so the same tensors
        lacks = {role: sorted(names[other] - names[role])
                 for role, other in (("attacker", "defender"), ("defender", "attacker"))}
        raise UserError(f"run {run}: its adapters hold different LoRA tensors; one file is damaged: " + "; ".join(
            f"{adapter_dir(run, role)} lacks {len(missing)} of the other's (e.g. {missing[0]})"
            for role, missing in lacks.items() if missing))
    return cfg


def attack_outcomes(model, tokenizer, judge, seeds: list, attacker: str | None, defender: str, *,
                    attack_tokens: int, response_tokens: int) -> dict:
    """Per harmful seed: did the attacker's greedy rewrite get harmful help, and was it refused by strings."""
    from redgame.llm.adapters import playing
    from redgame.llm.crossplay import generate_attacks
    from redgame.llm.evaluation import evaluate_defender

    with playing(model, attacker) as m:
        attacks, parsed = generate_attacks(m, tokenizer, seeds, max_new_tokens=attack_tokens)
    with playing(model, defender) as m:
        result = evaluate_defender(m, tokenizer, judge, seeds, attacks=attacks, max_new_tokens=response_tokens)
    return {"success": [a["attack_success"] for a in result["answers"]],
            "refusal_string": [a["refusal_string"] for a in result["answers"]],
            "parse_rate": sum(parsed) / len(parsed), "answers": result["answers"]}


def summarise(outcomes: dict) -> dict:
    """Rates over the answers the judge read, with Wilson intervals (a bootstrap shrinks to a point at 0 and 1),
    and the paired mirror gap over the prompts both attackers' answers were read on, with Newcombe's paired
    interval (until 2026-12-06 a bootstrap: a point where every pair agreed, and far too narrow at 8 prompts)."""
    import numpy as np

    from redgame.games.stats import paired_rate_diff_ci, rate_ci

    out = {}
    for name, o in outcomes.items():
        read = [s for s in o["success"] if s is not None]  # None: the judge could not read its reply
        out[f"{name}_asr"] = float(np.mean(read)) if read else float("nan")
        out[f"{name}_asr_ci"] = list(rate_ci(sum(read), len(read))) if read else [float("nan")] * 2
        out[f"{name}_unjudged"] = len(o["success"]) - len(read)
        out[f"{name}_refusal_strings"] = float(np.mean(o["refusal_string"]))
        out[f"{name}_parse_rate"] = o["parse_rate"]
    pairs = [(b, s) for b, s in zip(outcomes["best_response"]["success"], outcomes["selfplay"]["success"])
             if b is not None and s is not None]
    gap = np.array([float(b) - float(s) for b, s in pairs])
    out["mirror_gap"] = float(gap.mean()) if pairs else float("nan")
    out["mirror_gap_ci"] = (list(paired_rate_diff_ci([b for b, _ in pairs], [s for _, s in pairs])) if pairs
                            else [float("nan")] * 2)
    return out


def probe(run: str | Path, *, steps: int, split: str = "validation", out: str | Path | None = None,
          eval_judge: str = "embedded", seed: int = 0, prompts: int = 0, device: str = "auto", dtype: str = "auto",
          model: str | None = None, overrides: dict | None = None, progress: bool = True, log=print,
          resume: bool = False, overwrite: bool = False) -> dict:
    """Train a best-response attacker against ``run``'s frozen defender; returns (and writes) the summary.

    ``prompts``: evaluate on the split's first N harmful seeds (0: all of them). ``model``: the
    run's base model (default: the one in its config). ``overrides``: config keys of the
    best-response training that replace the run's (e.g. ``{"lr": 1e-3}``). An ``out`` that holds a
    probe is continued with ``resume`` (a stopped one, from its checkpoint), replaced with ``overwrite``,
    and otherwise refused, as the demo's folder is.
    """
    if steps < 1:
        raise UserError(f"--steps must be >= 1, got {steps}")
    if prompts < 0 or prompts == 1:
        raise UserError(f"--prompts must be 0 (all) or at least 2 (the intervals are over prompts), got {prompts}")
    if split not in SPLITS:
        raise UserError(f"--split {split!r} is not one of {', '.join(SPLITS)}")
    from redgame.llm.config import from_mapping
    from redgame.llm.run_dir import check_command_dir

    fixed = sorted(set(overrides or {}) & PROBE_SETS)
    if fixed:
        raise UserError(f"--set {fixed[0]}: the probe sets {', '.join(sorted(PROBE_SETS))} itself (by its flags "
                        "--steps, --seed, --device, --dtype, --model, or as a best response is defined); leave it out")
    run = Path(run)
    run_config(run)  # a folder that is no run is refused before its lock file is made in it
    out = Path(out) if out is not None else run / "probe"
    check_apart(run, out / "attacker_run")  # nor is a run that the probe's training would replace touched
    # Held from the start: no train replaces the run while it is probed (other probes may read it too), and a
    # run still training, which has no final adapters yet, is said to be in use rather than incomplete.
    with read_lock(run):
        run_cfg = from_mapping(overrides or {}, where=" (--set)", base=check_run(run))
        if run_cfg.judge.startswith("http") and "judge" not in (overrides or {}):
            embedded = "--set judge=embedded" + ("" if run_cfg.judge_format == "redgame" else
                                                 " --set judge_format=redgame")
            raise UserError(f"run {run}: its judge is a server ({run_cfg.judge}); the probe sends no prompts (nor "
                            "your API key) to a server that a run folder names: give it yourself with --set judge=..., "
                            f"or train the best response with {embedded}")
        for key, what in (("attacks_per_seed", "attacks per seed"), ("responses_per_attack", "answers per attack")):
            if key in (overrides or {}) and getattr(run_cfg, key) < 2:
                raise UserError(f"--set {key}: a best response compares at least 2 {what}, got "
                                f"{getattr(run_cfg, key)}")
        cfg = dataclasses.replace(probe_config(run_cfg, steps=steps, seed=seed), device=device, dtype=dtype,
                                  model=model or run_cfg.model)
        if resume:
            check_not_pairless(out / "attacker_run")
        check_command_dir(out, out / "attacker_run", RESULTS + (PROBED,), cfg, resume=resume, overwrite=overwrite,
                          what="probe")
        if resume:
            check_same_run(run, out)
        return _measure(run, cfg, out, eval_judge=eval_judge, prompts=prompts, split=split, progress=progress,
                        log=log, resume=resume)


def check_not_pairless(attacker_run: Path) -> None:
    """A probe started before 2026-12-06 on a run of one attack per seed: its best response had no pair to learn
    from (:func:`probe_config`), and its recipe differs from today's in attacks_per_seed, so it cannot be resumed."""
    from redgame.jsonio import read_json_file
    from redgame.llm.run_dir import RUN_MARKER

    try:
        saved = read_json_file(attacker_run / RUN_MARKER, str(attacker_run / RUN_MARKER))
    except UserError:  # none yet, or damaged: the folder checks say which
        return
    if isinstance(saved, dict) and isinstance(saved.get("attacks_per_seed"), int) and saved["attacks_per_seed"] < 2:
        raise UserError(f"--resume: the probe in {attacker_run.parent} was started with 1 attack per seed, from which "
                        "its best response could not learn (DPO pairs two attacks on one seed); start it again with "
                        "--overwrite")


def check_same_run(run: Path, out: Path) -> None:
    """A resumed probe trains on against the run it started against: the best-response config does not say which
    run that was (two seeds of one recipe give the same one), so ``out/probed_run.json`` does."""
    from redgame.jsonio import read_json_file

    marker = out / PROBED
    started = read_json_file(marker, str(marker)).get("run") if marker.is_file() else None
    if started != str(run.resolve()):
        said = f"probes {started}" if started else "does not say which run it probes"
        raise UserError(f"--resume: the stopped probe in {out} {said}, not {run}; resume it with that --run, or "
                        "start again with --overwrite")


def check_apart(run: Path, attacker_run: Path) -> None:
    """The best response trains in ``attacker_run`` with overwrite: refuse a folder that is the run, or holds it,
    or lies in a folder the run's training rewrites (final/, checkpoints/: the probe's files would go with it)."""
    from redgame.llm.run_dir import TRAINING_FILES

    inner, outer = run.resolve(), attacker_run.resolve()
    if inner == outer or outer in inner.parents or any(inner / name in outer.parents for name in TRAINING_FILES):
        raise UserError(f"--out: the probe trains its attacker in {attacker_run}, which would replace the run it "
                        f"probes ({run}), or be replaced by it; choose an --out outside the run's own folders")


def _measure(run: Path, cfg, out: Path, *, eval_judge: str, prompts: int, split: str, progress: bool, log,
             resume: bool) -> dict:
    """Train the best response in ``out/attacker_run`` and play the three attackers against the run's defender."""
    from redgame.llm.adapters import attach
    from redgame.llm.judges import check_reachable, make_judge
    from redgame.llm.models import load_base, place_judge, placement
    from redgame.llm.seeds import builtin_seeds
    from redgame.llm.trainer import train

    torch_device, torch_dtype = placement(cfg.device, cfg.dtype)
    # Before the old probe goes: a bad judge name or server, or run adapters that do not fit this base model.
    judge = make_judge(eval_judge)
    check_reachable(judge)
    base, tokenizer = load_base(cfg.model, dtype=torch_dtype, device=torch_device)
    runs_adapters = {"run_attacker": adapter_dir(run, "attacker"), "run_defender": adapter_dir(run, "defender")}
    base = attach(base, runs_adapters).unload()  # they fit; the training below gets the bare base back
    for stale in RESULTS:  # they would describe the attacker this probe replaces
        (out / stale).unlink(missing_ok=True)
    if not resume:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / PROBED, {"run": str(run.resolve())})
    t0 = time.perf_counter()
    trained = train(cfg, out / "attacker_run", resume=resume, overwrite=not resume, progress=progress, log=log,
                    base=(base, tokenizer), init={"defender": adapter_dir(run, "defender")},
                    rerun="the same redgame llm probe command")
    if trained["stopped"]:  # Ctrl-C: a part-trained best response is no probe; the trainer said how to continue
        log(f"the probe stopped at step {trained['steps']} of {cfg.steps}: no probe.json")
        raise KeyboardInterrupt
    if trained["interrupted"]:  # Ctrl-C in the last step: the best response is whole, not yet measured
        log("Ctrl-C in the probe's last step: its training finished, nothing measured, no probe.json (the same "
            "command with --resume measures it)")
        raise KeyboardInterrupt
    train_seconds = time.perf_counter() - t0

    place_judge(judge, torch_device, torch_dtype)
    base, tokenizer = load_base(cfg.model, dtype=torch_dtype, device=torch_device)
    model = attach(base, {**runs_adapters, "probe_attacker": adapter_dir(out / "attacker_run", "attacker")})
    harmful = [s for s in builtin_seeds(split) if s.harmful][:prompts or None]
    play = dict(attack_tokens=cfg.attack_tokens, response_tokens=cfg.response_tokens)
    outcomes = {name: attack_outcomes(model, tokenizer, judge, harmful, attacker, "run_defender", **play)
                for name, attacker in zip(ATTACKERS, ("run_attacker", "probe_attacker", None))}
    summary = {"run": str(run), "regime": check_run(run).regime, "steps": cfg.steps, "seed": cfg.seed,
               "split": split, "eval_judge": getattr(judge, "name", eval_judge), "n_harmful": len(harmful),
               **summarise(outcomes), "train_seconds": round(train_seconds, 1),
               "seconds": round(time.perf_counter() - t0, 1)}
    write_json(out / "answers.json", {k: o["answers"] for k, o in outcomes.items()})
    write_json(out / "probe.json", summary)
    return summary


def report_lines(summary: dict) -> list[str]:
    """The probe's result as a few lines of text."""
    ci = lambda key: "[{:+.2f}, {:+.2f}]".format(*summary[f"{key}_ci"])  # noqa: E731
    unread = lambda name: (f"; {n} unjudged" if (n := summary.get(f"{name}_unjudged", 0)) else "")  # noqa: E731
    return [f"probe of {summary['run']} ({summary['regime']}), {summary['steps']} best-response steps, "
            f"{summary['n_harmful']} harmful {summary['split']} prompts, judged by {summary['eval_judge']}:",
            f"  self-play ASR        {summary['selfplay_asr']:.2f} {ci('selfplay_asr')} (95% Wilson){unread('selfplay')}",
            f"  best-response ASR    {summary['best_response_asr']:.2f} {ci('best_response_asr')}"
            f"{unread('best_response')}",
            f"  base-attacker ASR    {summary['base_attacker_asr']:.2f} {ci('base_attacker_asr')}"
            f"{unread('base_attacker')}",
            f"  mirror gap           {summary['mirror_gap']:+.2f} {ci('mirror_gap')} (95% Newcombe paired interval over prompts)"]
