"""``redgame llm train`` under torchrun: 2 gloo processes on CPU, the tiny model, 2 steps.

The reference is one process on the same global batch: its rollouts and judge answers are
recorded once (``hooked_cli.py --record``) and replayed, sharded, to the 2-rank run, so the
two runs differ only in how the batch is split and the gradients are combined.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from redgame.errors import UserError
from redgame.llm import distributed

HOOK = Path(__file__).with_name("hooked_cli.py")
BIN = Path(sys.executable).parent
TRAIN = ["llm", "train", "--model", "tiny", "--no-progress", "--save-every", "1",
         "--set", "seeds_per_step=6", "--set", "attack_tokens=6", "--set", "response_tokens=6",
         "--set", "lora_rank=4", "--set", "lora_alpha=8", "--set", "lr=0.01",
         "--set", "explore_prefixes=I'm sorry", "--set", "min_margin=0.1"]
# seeds_per_step=6: the ranks' shards hold different numbers of harmful seeds, so a rate averaged
# over ranks differs from the global batch's. min_margin=0.1: a rank can have no preference pair in
# a step while the other has some (the zero-gradient / FSDP stand-in path).


def _launch(cmd: list, ranks: int = 1) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    if ranks > 1:
        cmd = [str(BIN / "torchrun"), "--standalone", "--nproc_per_node", str(ranks), "--no-python", *cmd]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)


def _run(cmd: list, ranks: int = 1) -> None:
    done = _launch(cmd, ranks)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _record(root: Path, *flags: str) -> Path:
    """One process, 2 steps: its rollouts and judge answers recorded, its gradients dumped."""
    _run([sys.executable, str(HOOK), "--record", str(root / "rec"), "--dump", str(root / "one"), "--",
          *TRAIN, *flags, "--steps", "2", "--out", str(root / "single")])
    return root


def _assert_averaged_gradients_match(one: Path, two: Path) -> int:
    """Each step's averaged gradient on both ranks equals the one process's; how many steps had one."""
    compared = 0
    for step in (1, 2):
        single = load_file(str(one / "rank0" / f"step{step}.safetensors"))
        ranks = [load_file(str(two / f"rank{r}" / f"step{step}.safetensors")) for r in (0, 1)]
        averaged = [k for k in single if k.startswith("averaged/")]
        compared += bool(averaged)
        for k in averaged:
            torch.testing.assert_close(ranks[0][k], single[k], atol=1e-6, rtol=1e-5, msg=f"step {step} {k}")
            assert torch.equal(ranks[0][k], ranks[1][k])
    return compared


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    return _record(tmp_path_factory.mktemp("single"))


@pytest.mark.parametrize("mode", [["--set", "judge_rank=1"], ["--set", "fsdp=true"]], ids=["ddp-judge-rank-1", "fsdp"])
def test_two_ranks_hold_one_adapter_and_average_to_the_single_process_gradient(tmp_path, recorded, mode):
    """Replicated (rank 1 alone holds the recorded judge and judges both ranks' rounds) or FSDP-sharded base."""
    _run([sys.executable, str(HOOK), "--replay", str(recorded / "rec"), "--dump", str(tmp_path / "two"), "--",
          *TRAIN, "--steps", "2", *mode, "--out", str(tmp_path / "ddp")], ranks=2)

    compared = 0
    for step in (1, 2):
        one = load_file(str(recorded / "one" / "rank0" / f"step{step}.safetensors"))
        ranks = [load_file(str(tmp_path / "two" / f"rank{r}" / f"step{step}.safetensors")) for r in (0, 1)]
        assert (int(ranks[0]["meta/sharded_params"]) > 0) == ("fsdp=true" in mode)  # FSDP split the base
        # (1) the ranks hold identical adapters (and EMA/optimiser-driven state) after the step
        weights = [k for k in one if k.startswith("weights/")]
        assert weights and all(torch.equal(ranks[0][k], ranks[1][k]) for k in weights), step
        # (2) the averaged gradient is the single-process gradient of the global batch
        averaged = [k for k in one if k.startswith("averaged/")]
        if not averaged:  # no pair anywhere this step: no update on any rank (checked by the weights above)
            continue
        compared += 1
        assert set(averaged) == {k for k in ranks[0] if k.startswith("averaged/")}
        for k in averaged:
            torch.testing.assert_close(ranks[0][k], one[k], atol=1e-6, rtol=1e-5, msg=f"step {step} {k}")
            assert torch.equal(ranks[0][k], ranks[1][k])
        # ... which neither rank's own gradient is: the all-reduce did the work
        biggest = max(averaged, key=lambda k: float(one[k].abs().max()))
        assert float(one[biggest].abs().max()) > 1e-4
        for r in (0, 1):
            assert float((ranks[r][biggest.replace("averaged/", "local/")] - one[biggest]).abs().max()) > 1e-5
        # the shards cover the global batch: per-rank item counts add up to the single process's
        counts = sorted(k for k in one if k.startswith("items/"))
        for k in counts:
            assert float(ranks[0][k][0] + ranks[1][k][0]) == float(one[k][0])

    assert compared
    rows = _rows(tmp_path / "ddp")
    assert [r["step"] for r in rows] == [1, 2] and {r["world_size"] for r in rows} == {2}
    assert {r["world_size"] for r in _rows(recorded / "single")} == {1}
    for a, b in zip(_rows(recorded / "single"), rows):  # same rollouts, same judge: same round metrics
        for key in ("defender/pairs", "attacker/pairs", "parse_errors"):
            assert a.get(key) == b.get(key), key
        for key in ("attack_success", "refusal_harmful", "refusal_benign", "faithful", "defender_score"):
            assert a[key] == pytest.approx(b[key], nan_ok=True), key  # pooled by count, not averaged over ranks
        for key in ("defender/pref_loss", "defender/nll", "defender/margin"):  # per-pair means, by the ranks' pairs
            assert a.get(key) == pytest.approx(b.get(key), rel=1e-5, abs=1e-7, nan_ok=True), key
    # rank 0 alone wrote the checkpoint, and it holds what both ranks hold
    saved = load_file(str(tmp_path / "ddp" / "checkpoints" / "step_0002" / "weights.safetensors"))
    last = load_file(str(tmp_path / "two" / "rank1" / "step2.safetensors"))
    assert all(torch.equal(v, last[f"weights/{k}"]) for k, v in saved.items())
    assert not list((tmp_path / "ddp" / "checkpoints").glob(".tmp.*"))


def test_reinforce_pp_whitens_over_both_ranks_tokens(tmp_path):
    """`shared` trains with REINFORCE++, whose returns are whitened over the role's whole batch: each rank
    whitened its own tokens, and the averaged gradient was 26% off the one process's (79% at step 2)."""
    one = _record(tmp_path / "single", "--regime", "shared")
    _run([sys.executable, str(HOOK), "--replay", str(one / "rec"), "--dump", str(tmp_path / "two"), "--",
          *TRAIN, "--regime", "shared", "--steps", "2", "--out", str(tmp_path / "ddp")], ranks=2)
    assert _assert_averaged_gradients_match(one / "one", tmp_path / "two") == 2


@pytest.mark.slow
@pytest.mark.long
def test_plain_cli_under_torchrun_then_resume_on_one_process(tmp_path):
    """FSDP here: the ranks' generations of different lengths stay in step (synced_gpus)."""
    run = tmp_path / "run"
    _run([str(BIN / "redgame"), *TRAIN, "--set", "fsdp=true", "--steps", "1", "--out", str(run)], ranks=2)
    assert [(r["step"], r["world_size"]) for r in _rows(run)] == [(1, 2)]
    _run([str(BIN / "redgame"), *TRAIN, "--set", "fsdp=true", "--steps", "2", "--resume", "--out", str(run)])
    assert [(r["step"], r["world_size"]) for r in _rows(run)] == [(1, 2), (2, 1)]
    for role in ("attacker", "defender"):
        assert (run / "final" / role / "adapter_model.safetensors").is_file()


def test_a_folder_rank_0_refuses_stops_every_rank_with_its_reason(tmp_path):
    """Rank 0 alone locks and checks the run folder; the other ranks used to go on loading, then die in gloo
    ("Connection closed by peer", an internal error) or wait at the next collective."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"model": "tiny", "regime": "bipolicy", "steps": 1}))
    done = _launch([str(BIN / "redgame"), *TRAIN, "--steps", "1", "--out", str(run)], ranks=2)
    assert done.returncode != 0
    assert "redgame: error: --out" in done.stderr and "already holds a run" in done.stderr
    assert "redgame: error: rank 0 stopped: --out" in done.stderr and "internal error" not in done.stderr
    assert sorted(p.name for p in run.iterdir()) == ["config.json"]


@pytest.mark.parametrize("fail", ["1:2:error", "0:2:kill"])
def test_a_rank_that_stops_or_dies_mid_run_leaves_the_others_a_resume_line_not_an_internal_error(tmp_path, fail):
    """The other rank's collective fails in gloo ("Connection closed by peer"): it said "internal error", and
    with rank 0 killed no process named the checkpoint and the resume."""
    run = tmp_path / "run"
    done = _launch([sys.executable, str(HOOK), "--fail", fail, "--", *TRAIN, "--steps", "3", "--out", str(run)],
                   ranks=2)
    assert done.returncode != 0 and "internal error" not in done.stderr, done.stderr[-3000:]
    # the survivor's collective fails, or torchrun, seeing a process gone, terminates it first (SIGTERM)
    assert re.search(r"redgame: the run stopped at step 2 \((another rank stopped|terminated)\); last checkpoint",
                     done.stderr), done.stderr[-3000:]
    assert f"--out {run} --resume" in done.stderr
    assert ("redgame: error: another process of this torchrun run stopped (its own lines say why)" in done.stderr
            or "redgame: terminated (SIGTERM)" in done.stderr)
    if fail.endswith("error"):
        assert "redgame: error: stopped on rank 1 at step 2 by the test" in done.stderr
    assert [p.name for p in (run / "checkpoints").iterdir()] == ["step_0001"]


def test_one_process_needs_no_process_group(monkeypatch):
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    dist = distributed.setup(min_items=1)
    assert (dist.world_size, dist.is_main, dist.active) == (1, True, False)
    assert dist.shard([1, 2, 3]) == [1, 2, 3] and dist.batch_share(5) == 1.0
    assert dist.merge_metrics({"step": 1})["world_size"] == 1
    with pytest.raises(UserError, match="refused"):  # alone, together() is the step itself
        dist.together(lambda: (_ for _ in ()).throw(UserError("refused")))
    shards = [distributed.Dist(world_size=3, rank=r).shard(list(range(8))) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(8)) and shards[0] == [0, 3, 6]


def test_merged_rates_are_pooled_by_their_counts():
    rows = [{"step": 3, "refusal_harmful": 1.0, "count/refusal_harmful": 1, "empty": float("nan"), "count/empty": 0,
             "defender/pairs": 2, "time/update": 1.5, "note": "a"},
            {"step": 3, "refusal_harmful": 0.0, "count/refusal_harmful": 3, "empty": 0.5, "count/empty": 2,
             "defender/pairs": 5, "time/update": 2.5, "note": "b", "lr": 0.1}]
    merged = distributed.merge_rows(rows)
    assert merged == {"step": 3, "refusal_harmful": 0.25, "empty": 0.5, "defender/pairs": 7, "time/update": 2.5,
                      "note": "a", "lr": 0.1}  # 1 of 4 answers refused, not the ranks' mean 0.5
    assert distributed.merge_rows([{"a": 0.5, "b": 1}]) == {"a": 0.5, "b": 1}  # a lone row as it is (no count)
    nan = distributed.merge_rows([{"r": float("nan"), "count/r": 0}, {"r": float("nan"), "count/r": 0}])["r"]
    assert nan != nan


def test_a_roles_per_pair_means_are_weighted_by_its_pairs():
    """Ranks holding 6 and 4 pairs: the merged loss is the mean over the 10 pairs, the one-process row's, not
    the ranks' mean (0.649717 against 0.649252 in a replayed two-rank run)."""
    losses = [0.9, 0.2, 0.4, 0.7, 0.1, 0.3, 0.8, 0.5, 0.6, 0.05]
    rows = [{"step": 2, "defender/pref_loss": sum(part) / len(part), "defender/pairs": len(part)}
            for part in (losses[:6], losses[6:])]
    merged = distributed.merge_rows(rows)
    assert merged["defender/pairs"] == 10 and merged["defender/pref_loss"] == pytest.approx(sum(losses) / 10)


def test_a_policy_gradient_roles_means_are_weighted_by_its_samples():
    """Ranks holding 2 and 1 samples (seeds_per_step 3): REINFORCE's nll and mean reward were the ranks' plain
    mean (-0.657 against the one-process -0.688 in a replayed run)."""
    from redgame.llm.config import TrainConfig
    from redgame.llm.losses import TokenLogprobs
    from redgame.llm.role_loss import loss_from_logprobs

    rewards, nll = [-1.0, -0.5, -0.6], [2.0, 4.0, 9.0]
    rows = [{"step": 1, "defender/mean_reward": sum(r) / len(r), "defender/nll": sum(n) / len(n),
             "defender/samples": len(r)} for r, n in ((rewards[:2], nll[:2]), (rewards[2:], nll[2:]))]
    merged = distributed.merge_rows(rows)
    assert merged["defender/samples"] == 3 and merged["defender/mean_reward"] == pytest.approx(sum(rewards) / 3)
    assert merged["defender/nll"] == pytest.approx(sum(nll) / 3)
    values = torch.tensor([-1.0, -2.0, -0.5])
    logprobs = TokenLogprobs(values, torch.tensor([0, 0, 1]), 2)
    _, info = loss_from_logprobs(TrainConfig(loss="reinforce"), logprobs, logprobs, torch.ones(3))
    assert info["samples"] == 2  # what a rank's row is weighted by


@pytest.mark.parametrize("env,match", [
    ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR is not set"),
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two' is not an integer"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 is not below WORLD_SIZE=2"),
    ({"WORLD_SIZE": "8", "RANK": "0", "MASTER_ADDR": "localhost", "MASTER_PORT": "1"}, "seeds_per_step"),
    ({"WORLD_SIZE": "2", "RANK": "0", "JUDGE": "2"}, "'judge_rank' \\(2\\) must be below the number of processes"),
])
def test_bad_launch_environment_is_a_user_error(monkeypatch, env, match):
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    env = dict(env)
    judge_rank = int(env.pop("JUDGE", -1))
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(UserError, match=match):
        distributed.setup(min_items=4, judge_rank=judge_rank)


@pytest.mark.parametrize("keys, match", [
    ({"population_every": 1}, "population_every \\(PSRO\\) runs in one process"),
    ({"fsdp": True, "seeds_per_step": 3},
     "seeds_per_step \\(3\\) must be a multiple of the number of processes \\(2\\)"),
])
def test_what_a_config_cannot_do_in_several_processes_is_refused_before_the_run_folder_is_touched(
        tmp_path, monkeypatch, keys, match):
    """Both used to be refused after the model had loaded, when --overwrite had already removed the old run."""
    from redgame.llm.config import TrainConfig
    from redgame.llm.trainer import train

    monkeypatch.setattr(distributed, "setup", lambda **kw: distributed.Dist(world_size=2))
    old = tmp_path / "run"
    old.mkdir()
    (old / "config.json").write_text(json.dumps({"model": "tiny"}))
    (old / "metrics.jsonl").write_text('{"step": 1}\n')
    cfg = TrainConfig(model="tiny", steps=1, **{"seeds_per_step": 4, **keys})
    with pytest.raises(UserError, match=match):
        train(cfg, old, overwrite=True, progress=False, log=lambda *a: None)
    assert sorted(p.name for p in old.iterdir()) == ["config.json", "metrics.jsonl"]
    assert distributed.Dist(world_size=1).check_fits(cfg) is None  # one process does both
