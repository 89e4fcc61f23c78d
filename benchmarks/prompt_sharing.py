"""The update's and the rollout's prompt passes with each layout of shared prompts, in one run.

    python benchmarks/prompt_sharing.py            # the embedded model, 2 threads, median of 7 after a warm-up
    python benchmarks/prompt_sharing.py --smoke    # the tiny model, one repetition: checks the script

Cases, shaped as the demo's (``redgame.llm.demo.DEMO_RECIPE``), on the game's real prompts (the
train split's seeds in the attacker's role prompt; the same seeds as written, as attacks, in
the defender's chat), each completion random tokens:

- ``update, attacker``: one micro-batch of 3 DPO pairs (3 prompts, 6 answers of 30 tokens),
  the policy's forward and backward through its LoRA adapter (the kernels' CPU path);
- ``update, defender``: 6 pairs (6 prompts, 12 answers of 24 tokens), the same; ``long start``: the
  same after 256 more tokens that every prompt begins with (a long system prompt, as users' own
  chats may have);
- ``rollout prefill, attacker`` / ``defender``: the prompt cache that ``generate`` continues
  (``rollout._shared_prompt_cache``), no gradients: 8 seeds' prompts each read by 2 rows, and
  24 attacks' prompts each read by 4 rows.

Layouts, each a named baseline of the next: ``own rows`` (every sequence runs its prompt:
``share_prompts`` off), ``prompts`` (each distinct prompt once, the path before 2026-12-08:
``prompt_sharing.common_prefix`` held at 0 here), ``+ starts`` (and the tokens that a role's prompts
all begin with once: the current path). Each repetition runs the layouts in turn, in a rotating order.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

LAYOUTS = ("own rows", "prompts", "+ starts")
LONG_START = 256  # tokens before the defender's chat in the long-start case: a long system prompt


@contextlib.contextmanager
def layout(name: str):
    """``prompts``: the start-sharing off (the path before it), by holding ``common_prefix`` at 0."""
    from redgame.llm import prompt_sharing

    real = prompt_sharing.common_prefix
    if name == "prompts":
        prompt_sharing.common_prefix = lambda rows: 0
    try:
        yield name != "own rows"
    finally:
        prompt_sharing.common_prefix = real


def game_prompts(tokenizer, n_attacker: int, n_defender: int) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of the attacker's role prompts for the first train seeds, and of the defender's chats on them."""
    from redgame.llm.prompts import attacker_messages, chat_text, defender_messages
    from redgame.llm.seeds import builtin_seeds

    seeds = builtin_seeds("train")
    ids = lambda text: tokenizer(text, add_special_tokens=False)["input_ids"]  # noqa: E731
    return ([ids(chat_text(tokenizer, attacker_messages(s))) for s in seeds[:n_attacker]],
            [ids(chat_text(tokenizer, defender_messages(s.prompt))) for s in seeds[:n_defender]])


def update_case(roles, prompts: list[list[int]], answer_tokens: int, gen: torch.Generator):
    """A callable: one micro-batch's log-probs, forward and backward, 2 answers a prompt, in a layout."""
    from redgame.llm.losses import completion_logprobs

    rows = [p for p in prompts for _ in range(2)]
    vocab = roles.models()[0].get_input_embeddings().num_embeddings
    answers = [torch.randint(3, vocab, (answer_tokens,), generator=gen).tolist() for _ in rows]

    def run(share: bool) -> None:
        with roles.policy("attacker") as model:
            completion_logprobs(model, rows, answers, pad_id=0, share_prompts=share).values.sum().backward()
    return run


def prefill_case(model, prompts: list[list[int]], readers: int):
    """A callable: the rollout's prompt cache for ``readers`` rows a prompt, no gradients, in a layout."""
    from redgame.llm.rollout import _shared_prompt_cache

    rows = [p for p in prompts for _ in range(readers)]

    @torch.no_grad()
    def run(share: bool) -> None:
        if share:
            _shared_prompt_cache(model, rows, [[] for _ in rows], 0, "cpu")
        else:  # every row reads its whole prompt, as generate does without a shared cache
            from redgame.llm.losses import decoder_and_head
            from redgame.llm.prompt_sharing import padded

            ids, mask = padded(rows, 0, left=True)
            decoder_and_head(model)[0](input_ids=ids, attention_mask=mask, use_cache=True)
    return run


def timed(run, reps: int) -> dict[str, float]:
    """Median seconds of ``run`` per layout over ``reps`` repetitions after a warm-up, the order rotating."""
    times: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    for rep in range(reps + 1):
        order = LAYOUTS[rep % 3:] + LAYOUTS[:rep % 3]
        for name in order:
            with layout(name) as share:
                start = time.perf_counter()
                run(share)
                if rep:  # the first round warms up
                    times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=7, help="timed repetitions after a warm-up")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--smoke", action="store_true", help="the tiny model, one repetition")
    args = parser.parse_args(argv)
    if args.reps < 1 or args.threads < 1:
        parser.error(f"--reps and --threads must be at least 1, got {args.reps} and {args.threads}")
    from redgame.kernels import patch_peft
    from redgame.llm.models import load_base
    from redgame.llm.roles import LoraSettings, build_roles

    torch.set_num_threads(args.threads)
    model, tokenizer = load_base("tiny" if args.smoke else "embedded")
    roles = build_roles(model, regime="bipolicy", lora=LoraSettings(rank=16, alpha=32))
    patch_peft(roles.models()[0])  # the game's LoRA layers (kernels = auto: the torch path on a CPU)
    gen = torch.Generator().manual_seed(0)
    attacker, defender = game_prompts(tokenizer, 8, 24)
    vocab = model.get_input_embeddings().num_embeddings
    system = torch.randint(3, vocab, (LONG_START,), generator=gen).tolist()  # a long system prompt's tokens
    cases = {"update, attacker (3 pairs)": update_case(roles, attacker[:3], 30, gen),
             "update, defender (6 pairs)": update_case(roles, defender[:6], 24, gen),
             "update, defender, long start (6 pairs)": update_case(roles, [system + p for p in defender[:6]], 24, gen),
             "rollout prefill, attacker (8 x 2)": prefill_case(model, attacker, 2),
             "rollout prefill, defender (24 x 4)": prefill_case(model, defender, 4)}
    reps = 1 if args.smoke else args.reps
    print(f"{'smoke: ' if args.smoke else ''}prompt passes on {'tiny' if args.smoke else 'embedded'}, "
          f"{args.threads} threads, median of {reps} after a warm-up")
    print(f"{'case':<40}" + "".join(f"{name:>11}" for name in LAYOUTS) + f"{'own/prompts':>13}{'prompts/+starts':>17}")
    for name, run in cases.items():
        t = timed(run, reps)
        print(f"{name:<40}" + "".join(f"{t[k]:10.3f}s" for k in LAYOUTS)
              + f"{t['own rows'] / t['prompts']:12.2f}x{t['prompts'] / t['+ starts']:16.2f}x")


if __name__ == "__main__":
    main()
