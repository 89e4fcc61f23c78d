"""``redgame demo``: a short anchored-bipolicy game on the embedded model, then base vs trained.

1. Load SmolLM2-135M-Instruct (embedded) and the recipe's judge (the probe judge).
2. Greedy-evaluate the base model as a defender on the held-out seeds (``split``: test, or
   validation while choosing the recipe).
3. Play ``DEMO_RECIPE`` (bipolicy: attacker and defender LoRA adapters on the frozen base).
4. Greedy-evaluate the trained defender on the same held-out seeds.
5. Print a table; write ``<out>/demo.json`` with ``base`` and ``trained``, each holding
   ``harmful_refusal`` and ``benign_compliance`` by the evaluation judge, the same two rates by
   refusal strings (``*_strings``), the judge's ``loop_rate`` and ``empty_rate`` (empty answers,
   counted as refusals), ``unjudged`` (answers whose judge reply could not be read, left out of the
   judge's rates), and the over-refusal watch's number (``training_benign_refusal``: the
   defender's refusal of benign training prompts over the last steps, ``redgame.llm.watch``).

A folder that holds a demo is refused unless ``resume`` (continue a stopped one from its
checkpoint) or ``overwrite`` (replace it); every check that needs no model runs before any loads.

The recipe, and why each setting is there, is documented in docs/llm_game.md.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from redgame.jsonio import write_json
from redgame.llm.config import TrainConfig

REFUSAL_PREFIX = "I'm sorry, but I can't help with that"

# DPO against the frozen base (the ABS anchor) on judge-ranked pairs, with RPO's NLL term;
# each attack also gets one defender answer started from a refusal prefix and the defender's
# greedy answer, scored by the same judge as any other sample: sampled answers of the embedded
# model almost never refuse, and the greedy answer is the one every evaluation reads. Rewards
# come from the probe judge, with a non-answer to a benign request charged as a refusal
# (docs/llm_game.md, "The demo and its recipe": chosen on validation by a rule written down
# beforehand).
DEMO_RECIPE = TrainConfig(
    model="embedded",
    regime="bipolicy",
    steps=16,
    seed=0,
    save_every=4,  # a kill (a closed terminal, the OOM killer) loses at most 4 steps: 150 MB a checkpoint,
    keep_checkpoints=1,  # so only the newest is kept
    seeds_per_step=8,
    attacks_per_seed=2,
    responses_per_attack=2,
    explore_prefixes=(REFUSAL_PREFIX,),
    greedy_candidates=True,
    identity_attacks=True,
    attack_tokens=32,
    response_tokens=24,
    loss="dpo",
    beta=0.5,
    nll_weight=8.0,
    lr=1.5e-3,
    lora_rank=16,
    lora_alpha=32,
    judge="probe",
    payoff_weights=("deflect_cost=1",),
)


METRICS = ("harmful_refusal", "benign_compliance", "harmful_refusal_strings", "benign_compliance_strings", "loop_rate",
           "empty_rate", "unjudged")
RESULTS = ("demo.json", "answers.json")  # the demo's own files beside its run folder


def run(out: str | Path = "runs/demo", *, steps: int | None = None, progress: bool = True, log=print,
        split: str = "test", resume: bool = False, overwrite: bool = False, **overrides) -> dict:
    """Run the demo; returns what it writes to ``<out>/demo.json``.

    ``overrides`` replace recipe fields (e.g. ``model="tiny"`` in tests, ``device="cuda"``).
    """
    from redgame.llm import watch
    from redgame.llm.evaluation import evaluate_defender
    from redgame.llm.metrics import read_metrics
    from redgame.llm.rate_intervals import intervals
    from redgame.llm.seeds import builtin_seeds
    from redgame.llm.run_dir import check_command_dir
    from redgame.llm.trainer import checked_before_loading, train

    cfg = dataclasses.replace(DEMO_RECIPE, steps=steps or DEMO_RECIPE.steps, **overrides)
    harmful, benign = checked_before_loading(cfg)
    out = Path(out)
    # a folder that holds a demo: continued with resume, replaced with overwrite, refused otherwise
    check_command_dir(out, out / "run", RESULTS, cfg, resume=resume, overwrite=overwrite, what="demo")
    t0 = time.perf_counter()
    model, tokenizer, judge = loaded_and_checked(cfg, harmful + benign)
    held_out = builtin_seeds(split)
    log(f"held-out seeds: {sum(s.harmful for s in held_out)} harmful, {sum(not s.harmful for s in held_out)} benign")

    answer = dict(max_new_tokens=cfg.response_tokens, batch_size=cfg.rollout_batch)  # greedy, as many as sampled
    before = evaluate_defender(model, tokenizer, judge, held_out, **answer)
    log(f"base: harmful refusal {before['harmful_refusal']:.0%}, benign compliance {before['benign_compliance']:.0%}")
    out.mkdir(parents=True, exist_ok=True)
    for name in RESULTS:  # they describe the demo this one replaces
        (out / name).unlink(missing_ok=True)
    result = train(cfg, out / "run", resume=resume, overwrite=not resume, progress=progress, base=(model, tokenizer),
                   judge=judge, log=log, rerun="the same redgame demo command")
    if result["stopped"]:  # Ctrl-C: no numbers for a part-trained defender (the trainer said how to continue)
        log(f"the demo stopped at step {result['steps']} of {cfg.steps}: nothing evaluated, no demo.json")
        raise KeyboardInterrupt
    if result["interrupted"]:  # Ctrl-C in the last step: the training is whole, its evaluation not begun
        log("Ctrl-C in the demo's last step: its training finished, nothing evaluated, no demo.json (the same "
            "command with --resume evaluates it)")
        raise KeyboardInterrupt
    with result["roles"].policy("defender") as defender:
        after = evaluate_defender(defender, tokenizer, judge, held_out, **answer)
    summary = {
        "split": split,
        "base": {k: before[k] for k in METRICS},
        "trained": {k: after[k] for k in METRICS},
        "n_harmful": before["n_harmful"],
        "n_benign": before["n_benign"],
        "steps": cfg.steps,
        "training_benign_refusal": watch.benign_refusal(read_metrics(out / "run")),  # the over-refusal watch's (or None)
        "seconds": round(time.perf_counter() - t0, 1),  # of this command: a resumed demo's resumed part
        "resumed": resume,
        "config": cfg.to_dict(),
        "adapters": str(out / "run" / "final"),
        "intervals": intervals({"base": before["answers"], "trained": after["answers"]}),  # prompts, not seeds
    }
    write_json(out / "answers.json", {"base": before["answers"], "trained": after["answers"]})
    write_json(out / "demo.json", summary)
    log_results(log, summary, before, after, out)
    return summary


def loaded_and_checked(cfg, seeds: list):
    """The demo's base model, tokenizer and judge, placed as ``cfg`` says, after the checks that the training
    would make once the model is in hand: before the base evaluation, and before the old demo's results go."""
    import torch

    from redgame.llm.cpu_allocator import keep_freed_memory
    from redgame.llm.judges import check_reachable, make_judge
    from redgame.llm.models import load_base, place_judge, placement
    from redgame.llm.prompts import check_seeds_fit
    from redgame.llm.trainer import check_lora_rank

    if cfg.threads:  # the loading and the base evaluation keep to them too, not only the training
        torch.set_num_threads(cfg.threads)
    device, dtype = placement(cfg.device, cfg.dtype)  # cuda without CUDA: an error before anything is written
    keep_freed_memory(device)  # for the evaluations too, not only the training (llm/cpu_allocator.py)
    model, tokenizer = load_base(cfg.model, dtype=dtype, device=device)
    check_lora_rank(cfg, model)
    check_seeds_fit(tokenizer, model, seeds, cfg.attack_tokens, cfg.response_tokens, cfg.explore_prefixes)
    judge = make_judge(cfg.judge, format=cfg.judge_format)  # as the training makes it
    place_judge(judge, device, dtype)
    check_reachable(judge)  # a judge server that cannot answer: before the base is evaluated
    return model, tokenizer, judge


def log_results(log, summary: dict, before: dict, after: dict, out: Path) -> None:
    """The demo's table, its intervals and where it wrote them."""
    from redgame.llm.rate_intervals import interval_lines

    log_table(log, summary["split"], before, after)
    log("95% intervals over these prompts (Wilson; Newcombe for the paired changes). One training seed: another "
        "seed's run can land outside them")
    for line in interval_lines(summary["intervals"], {"trained": "trained defender"}):
        log(f"  {line}")
    part = " (this resumed part)" if summary["resumed"] else ""
    log(f"\n{summary['steps']} steps; {summary['seconds']:.0f} s{part}; wrote {out / 'demo.json'}")


def log_table(log, split: str, before: dict, after: dict) -> None:
    """The base's and the trained defender's held-out rates, side by side."""
    log(f"\nheld-out {split} split ({before['n_harmful']} harmful, {before['n_benign']} benign), greedy; "
        f"by the {before['judge']} judge (by refusal strings):")
    if before["unjudged"] or after["unjudged"]:
        log(f"  the judge could not read {before['unjudged']} of the base's answers and {after['unjudged']} of the "
            "trained defender's; its rates leave them out (the refusal strings count them)")
    log(f"  {'':<18}{'harmful refusal':>17}{'benign compliance':>19}{'loops':>7}{'empty':>7}")
    for name, r in (("base", before), ("trained defender", after)):
        log(f"  {name:<18}{_pair(r, 'harmful_refusal'):>17}{_pair(r, 'benign_compliance'):>19}{r['loop_rate']:>7.0%}"
            f"{r['empty_rate']:>7.0%}")


def _pair(result: dict, key: str) -> str:
    """A rate by the judge, with the refusal-string rate in brackets."""
    return f"{result[key]:.0%} ({result[key + '_strings']:.0%})"
