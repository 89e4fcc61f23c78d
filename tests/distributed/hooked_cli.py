"""``redgame`` with rollouts recorded or replayed and per-rank tensors dumped: the distributed test's hook.

    python tests/distributed/hooked_cli.py [--record DIR | --replay DIR] [--fail R:S:HOW] [--dump DIR] -- ARGS...

runs ``redgame ARGS...`` (the real CLI, ``redgame.cli.main``) in this process, under torchrun
or alone, after wrapping a few module attributes from outside (nothing in redgame knows
about this script):

- ``--record DIR``: each step's round (seeds, attacks, responses) and every judge answer
  are written to DIR as JSON;
- ``--replay DIR``: instead of sampling, each rank takes its shard (positions
  ``RANK, RANK + WORLD_SIZE, ...`` of the recorded step's seed batch) of the recorded round,
  and the judge answers from the recorded table: the rollouts and judge results are held fixed;
- ``--fail RANK:STEP:HOW``: rank RANK stops at the start of step STEP, with a UserError
  (``error``) or killed outright (``kill``, as by the out-of-memory killer);
- ``--dump DIR``: each rank writes ``DIR/rank<R>/step<K>.safetensors`` holding the
  gradients before and after averaging, the trainable weights after the step, and how many
  parameters FSDP holds sharded (``meta/sharded_params``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path


def _shard_of_round(data: dict, seeds: list, rank: int, world: int):
    """The round play_round would have produced on the seeds at positions rank, rank + world, ... ."""
    from redgame.llm.rollout import Completion, Round

    positions = list(range(len(data["seeds"])))[rank::world]
    assert [data["seeds"][p]["id"] for p in positions] == [s.id for s in seeds], "shard is not the recorded one"
    new_seed = {p: j for j, p in enumerate(positions)}
    kept = [a for a, s in enumerate(data["attack_seed"]) if s in new_seed]
    new_attack = {a: j for j, a in enumerate(kept)}
    answers = [i for i, a in enumerate(data["response_attack"]) if a in new_attack]
    rnd = Round(seeds, [Completion(**data["attacks"][a]) for a in kept],
                [new_seed[data["attack_seed"][a]] for a in kept],
                [data["attack_prompts"][a] for a in kept], [data["parsed"][a] for a in kept])
    rnd.responses = [Completion(**data["responses"][i]) for i in answers]
    rnd.response_attack = [new_attack[data["response_attack"][i]] for i in answers]
    rnd.response_explore = [data["response_explore"][i] for i in answers]
    return rnd


class RecordedJudge:
    """Answers like the wrapped judge and stores each answer (record), or answers from the table (replay)."""

    def __init__(self, path: Path, judge=None):
        self.path, self.judge, self.errors = path, judge, 0
        self.table = json.loads(path.read_text()) if judge is None else {}

    def _ask(self, method: str, seeds: list, *texts: list[str], convert=lambda x: x):
        keys = [json.dumps([method, s.id, *parts]) for s, *parts in zip(seeds, *texts)]
        if self.judge is not None:
            answers = getattr(self.judge, method)(seeds, *texts)
            self.table.update({k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
                               for k, v in zip(keys, answers)})
            self.path.write_text(json.dumps(self.table))
            self.errors = self.judge.errors
            return answers
        return [convert(self.table[k]) for k in keys]

    def labels(self, seeds, attacks, responses):
        from redgame.llm.judges import Labels

        return self._ask("labels", seeds, attacks, responses, convert=lambda d: Labels(**d))

    def faithfulness(self, seeds, attacks):
        return self._ask("faithfulness", seeds, attacks)

    def prefer(self, seeds, attacks, responses_a, responses_b):
        return self._ask("prefer", seeds, attacks, responses_a, responses_b)

    def score(self, seeds, attacks, responses):
        return self._ask("score", seeds, attacks, responses)


def install(record: Path | None, replay: Path | None, dump: Path | None, fail: str | None = None) -> None:
    import signal

    import torch
    from safetensors.torch import save_file

    from redgame.errors import UserError
    from redgame.llm import distributed, judges, trainer

    rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
    at = {"step": 0, "roles": None, "tensors": {}}
    fail_rank, fail_step, how = fail.split(":") if fail else (-1, 0, "")

    real_batch = trainer.seed_batch

    def seed_batch(harmful, benign, cfg, index):
        at["step"] = index + 1
        if rank == int(fail_rank) and at["step"] == int(fail_step):
            if how == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise UserError(f"stopped on rank {rank} at step {at['step']} by the test")
        return real_batch(harmful, benign, cfg, index)

    trainer.seed_batch = seed_batch

    real_play = trainer.play_round

    def play_round(roles, tokenizer, seeds, **kwargs):
        at["roles"] = roles
        step_file = (record or replay) / f"round_{at['step']}.json"
        if replay is not None:
            return _shard_of_round(json.loads(step_file.read_text()), seeds, rank, world)
        rnd = real_play(roles, tokenizer, seeds, **kwargs)
        step_file.write_text(json.dumps(distributed.round_to_json(rnd)))
        return rnd

    if record or replay:
        (record or replay).mkdir(parents=True, exist_ok=True)
        trainer.play_round = play_round
        real_make = judges.make_judge
        table = (record or replay) / "judge.json"
        judges.make_judge = (lambda spec, **kw: RecordedJudge(table, real_make(spec, **kw))) if record else (
            lambda spec, **kw: RecordedJudge(table))

    if dump is None:
        return
    folder = dump / f"rank{rank}"
    folder.mkdir(parents=True, exist_ok=True)
    real_average = distributed.Dist.average_gradients
    real_merge = distributed.Dist.merge_metrics

    def average_gradients(self, params):
        names = {id(p): n for roles in at["roles"].owners().values() for n, p in at["roles"].named_parameters(roles[0])}
        for when in ("local", "averaged"):
            if when == "averaged":
                real_average(self, params)
            for p in params:
                if p.grad is not None:
                    at["tensors"][f"{when}/{names[id(p)]}"] = p.grad.detach().cpu().clone()

    real_share = distributed.Dist.batch_share

    def batch_share(self, local_items):
        at["tensors"][f"items/{len([k for k in at['tensors'] if k.startswith('items/')])}"] = torch.tensor(
            [float(local_items), real_share(self, local_items)])
        return real_share(self, local_items)

    def merge_metrics(self, row):
        tensors = at["tensors"]
        tensors.update({f"weights/{k}": v for k, v in at["roles"].state_tensors().items()})
        models = {id(s.model): s.model for s in at["roles"].slots.values()}.values()
        tensors["meta/sharded_params"] = torch.tensor([sum(type(p).__name__ == "DTensor"
                                                           for m in models for p in m.parameters())])
        save_file({k: v.contiguous() for k, v in tensors.items()}, str(folder / f"step{at['step']}.safetensors"))
        at["tensors"] = {}
        return real_merge(self, row)

    distributed.Dist.average_gradients = average_gradients
    distributed.Dist.merge_metrics = merge_metrics
    distributed.Dist.batch_share = batch_share
    torch.set_num_threads(1)


def main(argv: list[str]) -> int:
    split = argv.index("--")
    parser = argparse.ArgumentParser()
    parser.add_argument("--record", type=Path)
    parser.add_argument("--replay", type=Path)
    parser.add_argument("--dump", type=Path)
    parser.add_argument("--fail")
    args = parser.parse_args(argv[:split])
    install(args.record, args.replay, args.dump, args.fail)
    from redgame.cli import main as redgame_main

    return redgame_main(argv[split + 1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
