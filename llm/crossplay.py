"""Cross-play of LLM-game checkpoints and its meta-game.

Every attacker meets every defender on the held-out seeds; the judge labels each answer
against the attack it answered (attack-conditioned, as in training: an attack the judge reads
as benign is no attack success). Entry (i, j) of the payoff matrix is attacker i's attack
success rate (ASR) on the harmful seeds against defender j; the benign-compliance matrix
(the defender answers, not refuses, attacker i's rewrite of a benign seed) stands beside
it. The zero-sum meta-game on the ASR matrix is solved by ``redgame.games.metagame`` (an
LP), as in PSRO's empirical game (Lanctot et al. 2017, arXiv 1711.00832).

Attackers: ``base`` (the base model prompted as attacker), ``templates`` (a static
attacker: seed i wrapped in jailbreak template i mod T, a uniform mixture over templates,
``redgame.llm.templates``) and each run's final attacker. Defenders: ``base`` and each
run's final defender. Attacks and answers are greedy, so the matrix is deterministic.

The mirror gap of a run (La Malfa et al. 2026, arXiv 2605.08427): the best ASR of any
other attacker on the run's defender minus the run's self-play ASR (its own attacker on
its own defender). A large gap means self-play stopped applying adversarial pressure.
"""

from __future__ import annotations

from dataclasses import dataclass
import os
from pathlib import Path

import numpy as np

from redgame.errors import UserError
from redgame.figures import save_figure
from redgame.jsonio import write_json
from redgame.llm.adapters import adapter_dir, attach, checked_run_adapters, playing, run_config

BASE = "base"
TEMPLATES = "templates"


@dataclass(frozen=True)
class Run:
    """A finished training run: its name, folder and regime."""

    name: str
    path: Path
    regime: str


def check_seeds(seeds: list, where: str = "cross-play") -> None:
    """Cross-play measures ASR on harmful seeds and compliance on benign ones: it needs both."""
    harmful = sum(s.harmful for s in seeds)
    if not harmful or harmful == len(seeds):
        raise UserError(f"{where} needs harmful and benign seeds; got {harmful} harmful and "
                        f"{len(seeds) - harmful} benign")


def find_runs(paths) -> list[Run]:
    """Check each run folder (config.json and both final adapters) and name it by its folder; one folder
    given twice (under two spellings) is a UserError, as it would play itself as two runs."""
    runs, names, seen = [], set(), {}
    for p in paths:
        path = Path(p).expanduser()
        if path.resolve() in seen:
            raise UserError(f"--runs: {p} and {seen[path.resolve()]} are the same run folder; give each run once")
        seen[path.resolve()] = p
        cfg = run_config(path)
        checked_run_adapters(path, bool(cfg.get("full_finetune")), "cross-play")
        name = Path(os.path.abspath(path)).name or str(path)  # '.' by its folder's name; '/' as given
        while name in names or name in (BASE, TEMPLATES):
            name = f"{name}'"
        names.add(name)
        runs.append(Run(name, path, cfg.get("regime", "?")))
    return runs


def generate_attacks(model, tokenizer, seeds: list, *, max_new_tokens: int) -> tuple[list[str], list[bool]]:
    """The active weights' greedy attack on each seed; the seed itself when none parses."""
    from redgame.llm.prompts import (ATTACK_PREFIX, attacker_chats, attacker_messages, chat_text, check_context,
                                     parse_attack)
    from redgame.llm.rollout import SamplingSettings, generate

    check_context(tokenizer, model, attacker_chats(tokenizer, seeds), max_new_tokens)
    prompts = [chat_text(tokenizer, attacker_messages(s)) for s in seeds]
    outs = generate(model, tokenizer, prompts, SamplingSettings(max_new_tokens=max_new_tokens, greedy=True),
                    [ATTACK_PREFIX] * len(prompts))
    parsed = [parse_attack(o.text) for o in outs]
    return [p if p is not None else s.prompt for p, s in zip(parsed, seeds)], [p is not None for p in parsed]


def template_attacks(seeds: list, templates: dict[str, str]) -> list[str]:
    """Seed i wrapped in template i mod T."""
    from redgame.llm.templates import apply_template

    texts = list(templates.values())
    return [apply_template(texts[i % len(texts)], s.prompt) for i, s in enumerate(seeds)]


def crossplay(base, tokenizer, judge, runs: list[Run], seeds: list, *, templates: dict[str, str],
              attack_tokens: int = 64, response_tokens: int = 48, log=print, progress: bool = False) -> dict:
    """Play every attacker against every defender; returns the matrices and per-attacker stats.

    Returns:
        ``{"attackers", "defenders", "asr", "benign_compliance", "harmful_refusal", "parse_rate"}``;
        the matrices are [attackers, defenders] numpy arrays.
    """
    from redgame.llm.evaluation import evaluate_defender

    check_seeds(seeds)
    # peft adapter names must be module-name safe: run k plays as attacker_k / defender_k.
    slot = {(r.name, role): f"{role}_{k}" for k, r in enumerate(runs) for role in ("attacker", "defender")}
    model = attach(base, {slot[r.name, role]: adapter_dir(r.path, role)
                          for r in runs for role in ("attacker", "defender")})
    attackers = [BASE, TEMPLATES] + [r.name for r in runs]
    defenders = [BASE] + [r.name for r in runs]
    attacks, parse_rate = {}, {}
    for name in attackers:
        if name == TEMPLATES:
            attacks[name], parse_rate[name] = template_attacks(seeds, templates), 1.0
            continue
        with playing(model, None if name == BASE else slot[name, "attacker"]) as m:
            attacks[name], ok = generate_attacks(m, tokenizer, seeds, max_new_tokens=attack_tokens)
        parse_rate[name] = sum(ok) / len(ok)
        log(f"attacker {name}: {sum(ok)}/{len(ok)} attacks parsed")
    from tqdm import tqdm

    shape = (len(attackers), len(defenders))
    asr, benign, refusal = np.zeros(shape), np.zeros(shape), np.zeros(shape)
    bar = tqdm(total=len(attackers) * len(defenders), desc="cross-play", unit="pair", disable=not progress)
    for j, d in enumerate(defenders):
        with playing(model, None if d == BASE else slot[d, "defender"]) as m:
            for i, a in enumerate(attackers):
                r = evaluate_defender(m, tokenizer, judge, seeds, attacks=attacks[a], max_new_tokens=response_tokens)
                if np.isnan(r["attack_success"]):  # no meta-game without every cell of its payoff matrix
                    raise UserError(f"cross-play: the judge could read none of the answers to attacker {a}'s "
                                    f"harmful attacks on defender {d} ({r['unjudged']} unjudged): no ASR to play "
                                    "the meta-game on; check the judge (its format, its server)")
                asr[i, j], refusal[i, j] = r["attack_success"], r["harmful_refusal"]
                benign[i, j] = r["benign_compliance"]
                bar.update()
        log(f"defender {d}: ASR " + ", ".join(f"{a} {asr[i, j]:.2f}" for i, a in enumerate(attackers)))
    bar.close()
    return {"attackers": attackers, "defenders": defenders, "asr": asr, "benign_compliance": benign,
            "harmful_refusal": refusal, "parse_rate": parse_rate}


def mirror_gaps(attackers: list[str], defenders: list[str], asr: np.ndarray, runs: list[Run]) -> dict[str, dict]:
    """Per run: self-play ASR, the best other attacker's ASR on its defender, and their gap."""
    out = {}
    for r in runs:
        i, j = attackers.index(r.name), defenders.index(r.name)
        others = [k for k in range(len(attackers)) if k != i]
        best = max(others, key=lambda k: asr[k, j])
        out[r.name] = {"regime": r.regime, "selfplay_asr": float(asr[i, j]), "best_other_asr": float(asr[best, j]),
                       "best_other_attacker": attackers[best], "mirror_gap": float(asr[best, j] - asr[i, j])}
    return out


def mixed(row_mix, matrix, col_mix=None):
    """``row_mix @ matrix`` (``@ col_mix``: a number) over the mixes' supports: the NaN cell of a pair whose benign
    answers the judge read none of, in a row or column the mix gives no weight, does not make the mixture NaN."""
    rows = np.asarray(row_mix, dtype=float)
    per_column = rows[rows > 0] @ np.asarray(matrix, dtype=float)[rows > 0]
    if col_mix is None:
        return per_column
    cols = np.asarray(col_mix, dtype=float)
    return float(per_column[cols > 0] @ cols[cols > 0])


def summarise(played: dict, runs: list[Run]) -> dict:
    """Solve the meta-game and assemble what ``crossplay.json`` holds."""
    from redgame.games.metagame import solve_metagame

    a = played["asr"]
    nash = solve_metagame(a, attackers=played["attackers"], defenders=played["defenders"])
    out = nash.to_json()
    # A pure defender's exploitability: the best attacker's ASR on it above the game's value.
    out["defender_exploitability_each"] = dict(zip(played["defenders"], (a.max(axis=0) - nash.value).tolist()))
    out["attacker_shortfall_each"] = dict(zip(played["attackers"], (nash.value - a.min(axis=1)).tolist()))
    out["benign_compliance_matrix"] = played["benign_compliance"].tolist()
    out["harmful_refusal_matrix"] = played["harmful_refusal"].tolist()
    out["nash_benign_compliance"] = mixed(nash.attacker_mix, played["benign_compliance"], nash.defender_mix)
    out["parse_rate"] = played["parse_rate"]
    out["mirror_gap"] = mirror_gaps(played["attackers"], played["defenders"], a, runs)
    return out


def plot_heatmap(result: dict, path: Path) -> Path:
    """ASR and benign-compliance matrices side by side, meta-Nash weights in the labels."""
    from redgame.games.plots import _pyplot

    plt = _pyplot()
    att = [f"{n}\n({w:.2f})" for n, w in zip(result["attackers"], result["attacker_mix"])]
    dfn = [f"{n}\n({w:.2f})" for n, w in zip(result["defenders"], result["defender_mix"])]
    mats = (("attack success rate (payoff)", np.asarray(result["payoff_matrix"]), "Reds"),
            ("benign compliance", np.asarray(result["benign_compliance_matrix"]), "Greens"))
    fig, axes = plt.subplots(1, 2, figsize=(4.0 + 2.4 * len(dfn), 1.6 + 0.55 * len(att)), dpi=100)
    for ax, (title, m, cmap) in zip(axes, mats):
        ax.imshow(m, vmin=0, vmax=1, cmap=cmap, aspect="auto")
        for (i, j), v in np.ndenumerate(m):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=8, color="black" if v < 0.6 else "white")
        ax.set_xticks(range(len(dfn)), dfn, fontsize=7)
        ax.set_yticks(range(len(att)), att, fontsize=7)
        ax.set_xlabel("defender (meta-Nash weight)", fontsize=8)
        ax.set_title(title, fontsize=9)
    axes[0].set_ylabel("attacker (meta-Nash weight)", fontsize=8)
    fig.suptitle(f"cross-play: meta-game value (ASR) {result['value']:.3f}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, path)


OUTPUTS = ("crossplay.json", "crossplay.png")


def write(result: dict, out: Path) -> tuple[Path, Path]:
    """``<out>/crossplay.json`` and ``<out>/crossplay.png`` (:data:`OUTPUTS`)."""
    out.mkdir(parents=True, exist_ok=True)
    json_path = out / OUTPUTS[0]
    write_json(json_path, result)
    return json_path, plot_heatmap(result, out / OUTPUTS[1])
