"""Every combination of config keys either trains one step on the tiny model or is refused in
one line before any compute: a property test over the whole config space.

Each key draws from valid values and from values that must be refused (0 where >= 1 is needed,
a negative weight, an unknown name). A drawn config first runs with model loading and the judge
replaced by :class:`ComputeStarted`: a refusal must come before that, as one ``redgame: error``
line with exit 2. A config that gets as far as compute then runs for real, one step, and must
finish (exit 0, both roles' final adapters written).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import io
import json
import tempfile
from pathlib import Path
from unittest import mock

from fault_runs import ComputeStarted
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from redgame.cli import main
from redgame.llm import judges, models
from redgame.llm.config import LOSSES, REGIMES, TrainConfig

# Per key: (values that are valid alone, values that must be refused). The game stays a few
# tokens long. Valid values can still be refused in combination (full_finetune with bipolicy,
# PSRO with shared, DPO with one response and no exploration prefix, rollouts from an EMA
# that is not kept, advgame with a payoff setting other than the default: the defaults are
# drawn more often, so that advgame configs still train).
VALUES = {
    "model": (["tiny"], []),
    "device": (["auto", "cpu"], ["gpu", "cuda:x"]),
    "dtype": (["auto", "float32", "bfloat16"], ["float64"]),
    "kernels": (["auto", "on", "off"], ["sometimes"]),
    "regime": (list(REGIMES), ["coop"]),
    "steps": ([1], [0]),
    "seed": ([0, 1, 2, 3], []),
    "save_every": ([0, 1], [-1]),
    "keep_checkpoints": ([0, 1, 3], [-1]),
    "judge": (["embedded"], ["gpt4"]),
    "judge_format": (["redgame"], ["shieldgemma", "wildguard"]),  # the embedded judge has no prompt format
    "payoff": (["zero_sum", "zero_sum", "nonzero_sum"], ["both"]),
    "lam": ([1.0, 1.0, 0.0, 2.0], [-1.0]),
    "payoff_weights": ([(), (), ("deflect_cost=0.2",)], [("lam=2",), ("safety",), ("deflect_cost=2",)]),
    "request_class": (["judge", "seed"], ["attack"]),  # seed: refused with the advgame regime
    "degenerate_penalty": ([True, False], []),
    "length_limit_penalty": ([False, True], []),
    "train_seeds": ([""], ["/no/such/seeds.jsonl"]),
    "seeds_per_step": ([2, 3], [1]),
    "attacks_per_seed": ([1, 2], [0]),
    "responses_per_attack": ([1, 2], [0]),
    "explore_prefixes": ([(), ("I'm sorry",)], []),
    "identity_attacks": ([False, True], []),
    "greedy_candidates": ([False, True], []),
    "attack_tokens": ([2, 4], [0]),
    "response_tokens": ([2, 4], [0]),
    "temperature": ([0.7, 1.0], [0.0]),
    "top_p": ([0.9, 1.0], [0.0, 1.5]),
    "loss": (list(LOSSES), ["ppo"]),
    "beta": ([0.1, 0.5], [0.0]),
    "nll_weight": ([0.0, 1.0], [-1.0]),
    "benign_nll_scale": ([0.0, 1.0, 2.5], [-1.0]),
    "kl_coef": ([0.0, 0.05], [-0.1]),
    "reference": (["auto", "base", "ema"], ["none"]),
    "ema_decay": ([0.5, 0.95], [0.0, 1.0]),
    "rollout_policy": (["auto", "auto", "live", "ema"], ["offline"]),  # ema: refused unless reference is ema
    "clip_eps": ([0.1, 0.2], [0.0, 1.0]),
    "min_margin": ([0.0, 0.05], [-0.1]),
    "sequential_k": ([1, 2], [0]),
    "train_roles": ([("attacker",), ("defender",), ("attacker", "defender")], [(), ("judge",)]),
    "population_every": ([0, 0, 0, 1], [-1]),
    "population_size": ([1, 2], [0]),
    "population_eval_seeds": ([2, 4], [1]),
    "lr": ([1e-3], [0.0, 2.0]),
    "lr_decay_steps": ([0, 1], [-1, 2]),
    "update_chunk": ([0, 1, 2], [-1]),
    "micro_batch_tokens": ([0, 8, 4096], [-1]),
    "share_prompts": ([True, False], []),
    "batch_roles": ([True, False], []),
    "rollout_batch": ([1, 32], [0]),
    "update_epochs": ([1, 2], [0]),
    "weight_decay": ([0.0, 0.01], [-0.1]),
    "max_grad_norm": ([1.0], [0.0]),
    "lora_rank": ([1, 2], [0]),
    "lora_alpha": ([2], [0]),
    "lora_dropout": ([0.0, 0.5], [-0.1, 1.0]),
    "full_finetune": ([False, False, False, True], []),
    "threads": ([0, 1], [-1]),
    "rollout_backend": (["torch"], ["vllm"]),
    "fsdp": ([False, True], []),
    "judge_rank": ([-1, 0], [-2]),
}
KEYS = [f.name for f in dataclasses.fields(TrainConfig)]


def test_every_config_key_is_fuzzed():
    missing = sorted(set(KEYS) - set(VALUES))
    assert not missing, f"add values for {missing} to VALUES in {Path(__file__).name}"


def _run(out: Path, config: Path) -> tuple[int, list[str]]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["llm", "train", "--config", str(config), "--out", str(out), "--overwrite", "--no-progress"])
    return code, err.getvalue().strip().splitlines()


def _refuse(*args, **kwargs):
    raise ComputeStarted


_make_judge = judges.make_judge
_cached_judge = functools.lru_cache(maxsize=None)(_make_judge)  # one embedded judge for all examples


@st.composite
def configs(draw) -> dict:
    """A config of valid values, with at most one key set to a value that must be refused."""
    values = {key: draw(st.sampled_from(VALUES[key][0])) for key in VALUES}
    spoilable = [key for key in VALUES if VALUES[key][1]]
    for key in draw(st.lists(st.sampled_from(spoilable), max_size=1)):
        values[key] = draw(st.sampled_from(VALUES[key][1]))
    return values


@settings(max_examples=40, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(configs())
def test_a_config_runs_one_step_or_is_refused_before_compute(values):
    with tempfile.TemporaryDirectory() as tmp:
        config, out = Path(tmp) / "game.json", Path(tmp) / "run"
        config.write_text(json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}))
        with mock.patch.object(models, "load_base", _refuse), mock.patch.object(judges, "make_judge", _refuse):
            try:
                code, err = _run(out, config)
            except ComputeStarted:
                code = None
        if code is not None:  # refused before compute: one line, exit 2
            assert code == 2 and len(err) == 1 and err[0].startswith("redgame: error: "), (values, code, err)
            event("refused before compute")
            return
        event("ran one step")
        with mock.patch.object(judges, "make_judge", _cached_judge):
            code, err = _run(out, config)
        assert code == 0, (values, err[-5:])
        assert (out / "final" / "attacker").is_dir() and (out / "final" / "defender").is_dir(), values
