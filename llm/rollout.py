"""Rollouts: batched sampling of attacks and responses with each role's weights active.

One round of the game (AdvGame, arXiv 2512.20806; Self-RedTeam, arXiv 2506.07468): for
each seed the attacker writes A attacks from its role prompt, its answer started inside the
attack tag (``prompts.ATTACK_PREFIX``); each attack is parsed from the tagged format (a parse failure is counted, and the defender then answers the seed
itself); the defender answers each attack D times. Optional exploration candidates are
defender answers started from a fixed prefix (e.g. a refusal), continued by the defender
and scored by the judge like any other sample.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from transformers import LogitsProcessorList

from redgame.llm import prompts as role_prompts
from redgame.llm.losses import decoder_and_head
from redgame.llm.prompt_sharing import SharedPrompts, cache_argument, cache_of, padded
from redgame.llm.prompts import attacker_messages, chat_text, defender_messages, parse_attack
from redgame.llm.sampling import ExponentialRaceSampler


@dataclass
class Completion:
    """A prompt and the tokens sampled after it (a forced prefix included)."""

    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    truncated: bool = False  # stopped at the token limit, not by a stop token


@dataclass
class SamplingSettings:
    max_new_tokens: int = 48
    temperature: float = 1.0
    top_p: float = 1.0
    greedy: bool = False
    batch_size: int = 32
    synced: bool = False  # FSDP: every rank runs as many forward passes as the longest (synced_gpus)
    share_prompts: bool = False  # read a prompt repeated in a batch once (its key-value cache shared)


def stop_ids(tokenizer, model=None) -> set[int]:
    """The tokens that end a completion: EOS, ChatML's end of turn, and every end the model's generation config
    lists (Qwen2.5 ends at ``<|endoftext|>`` too, Llama 3.1 at ``<|eom_id|>`` and ``<|eot_id|>``)."""
    ends = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    ends = [] if ends is None else [ends] if isinstance(ends, int) else list(ends)
    return {tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<|im_end|>"), *ends} - {None}


def finish_completion(tokenizer, prompt_ids: list[int], prefix_ids: list[int], new: list[int],
                      stop: set[int], max_new_tokens: int | None = None) -> Completion:
    """A completion from the sampled tokens: cut after the first stop token, the forced prefix in front.

    It is ``truncated`` when no stop token came within ``max_new_tokens`` new tokens.
    """
    stopped = False
    for k, t in enumerate(new):
        if t in stop:
            new, stopped = new[: k + 1], True
            break
    truncated = not stopped and max_new_tokens is not None and len(new) >= max_new_tokens
    completion = prefix_ids + new
    return Completion(prompt_ids, completion, tokenizer.decode(completion, skip_special_tokens=True).strip(),
                      truncated)


@torch.no_grad()
def generate(model, tokenizer, prompts: list[str], settings: SamplingSettings,
             prefixes: list[str] | None = None, greedy_rows: list[bool] | None = None) -> list[Completion]:
    """Sample one completion per prompt (already chat-formatted text), in batches.

    ``prefixes[i]``, when given and non-empty, is forced at the start of completion i.
    With ``settings.share_prompts``, prompts repeated within a batch (the D answers to one
    attack) are read once: :func:`_shared_prompt_cache`. ``greedy_rows[i]``: completion i is
    greedy while the others are sampled (:class:`~redgame.llm.sampling.ExponentialRaceSampler`;
    not with ``top_p < 1``).
    """
    prefixes = [""] * len(prompts) if prefixes is None else prefixes
    check_generate_inputs(prompts, prefixes, settings, greedy_rows)
    eos = stop_ids(tokenizer, model)
    pad = tokenizer.pad_token_id
    was_training = model.training
    model.eval()
    out: list[Completion] = []
    try:  # the caller's mode comes back whatever happens (a sampler's error included)
        for start in range(0, len(prompts), settings.batch_size):
            chunk = range(start, min(start + settings.batch_size, len(prompts)))
            prompt_ids = [tokenizer(prompts[i], add_special_tokens=False)["input_ids"] for i in chunk]
            prefix_ids = [tokenizer(prefixes[i], add_special_tokens=False)["input_ids"] if prefixes[i] else []
                          for i in chunk]
            device = next(model.parameters()).device
            cached = {}
            if settings.share_prompts and not settings.synced and len({tuple(p) for p in prompt_ids}) < len(prompt_ids):
                ids, mask, cached = _shared_prompt_cache(model, prompt_ids, prefix_ids, pad, device)
            else:
                ids, mask = padded([p + q for p, q in zip(prompt_ids, prefix_ids)], pad, left=True, device=device)
            kwargs = _decoding(settings, None if greedy_rows is None else [greedy_rows[i] for i in chunk], eos)
            gen = model.generate(input_ids=ids, attention_mask=mask,
                                 max_new_tokens=settings.max_new_tokens, pad_token_id=pad, eos_token_id=sorted(eos),
                                 synced_gpus=settings.synced, **cached, **kwargs)
            for row, (p, q) in enumerate(zip(prompt_ids, prefix_ids)):
                out.append(finish_completion(tokenizer, p, q, gen[row, ids.shape[1]:].tolist(), eos,
                                             settings.max_new_tokens))
    finally:
        model.train(was_training)
    return out


def check_generate_inputs(prompts: list[str], prefixes: list[str], settings: SamplingSettings,
                          greedy_rows: list[bool] | None = None) -> None:
    """A prefix (and a greedy flag, where given) for each prompt, a batch of at least one, and no empty prompt: a
    ValueError, not one from deep inside ``generate``."""
    if len(prefixes) != len(prompts):
        raise ValueError(f"generate: {len(prefixes)} prefixes for {len(prompts)} prompts; give one per prompt")
    if greedy_rows is not None and len(greedy_rows) != len(prompts):
        raise ValueError(f"generate: {len(greedy_rows)} greedy flags for {len(prompts)} prompts; give one per prompt")
    if greedy_rows is not None and (settings.greedy or settings.top_p < 1.0):
        raise ValueError("generate: greedy rows go with the exponential-race sampler (not greedy settings, top_p 1)")
    if settings.batch_size < 1:
        raise ValueError(f"generate: batch_size must be at least 1, got {settings.batch_size}")
    if empty := [i for i, (p, q) in enumerate(zip(prompts, prefixes)) if not p and not q]:
        raise ValueError(f"generate: prompt {empty[0]} is empty; a completion needs a prompt to follow")


# What a model's generation_config.json may set that changes the tokens ``generate`` picks, each at its "off"
# value: the policy samples from its own distribution (temperature and top-p alone), as the loss scores it and as
# vLLM samples. Qwen2.5-Instruct's config sets repetition_penalty 1.05, which generate applied unasked. (top_k, a
# sampling warper, is set where generate samples: with do_sample=False it only warns.)
PLAIN_DECODING = dict(repetition_penalty=1.0, encoder_repetition_penalty=1.0, no_repeat_ngram_size=0,
                      encoder_no_repeat_ngram_size=0, min_length=0, min_new_tokens=None, typical_p=1.0, min_p=None,
                      top_h=None, epsilon_cutoff=0.0, eta_cutoff=0.0, bad_words_ids=None, sequence_bias=None,
                      suppress_tokens=None, begin_suppress_tokens=None, forced_bos_token_id=None,
                      forced_eos_token_id=None, exponential_decay_length_penalty=None, renormalize_logits=False,
                      num_beams=1, num_beam_groups=1, diversity_penalty=0.0, guidance_scale=None,
                      watermarking_config=None)


def _decoding(settings: SamplingSettings, greedy_rows: list[bool] | None = None, ends=()) -> dict:
    """``generate``'s decoding arguments: greedy, our exponential-race sampler (some rows greedy, where
    ``greedy_rows`` says so; ``ends``: the ids that end a row), or its own nucleus sampler, with nothing of the
    model's generation config that would change the draw (:data:`PLAIN_DECODING`)."""
    if settings.greedy:
        return dict(PLAIN_DECODING, do_sample=False)
    if settings.top_p >= 1.0:
        greedy = None if greedy_rows is None else torch.tensor(greedy_rows, dtype=torch.bool)
        race = ExponentialRaceSampler(settings.temperature, greedy, tuple(ends))
        return dict(PLAIN_DECODING, do_sample=False, logits_processor=LogitsProcessorList([race]))
    return dict(PLAIN_DECODING, do_sample=True, temperature=settings.temperature, top_p=settings.top_p, top_k=0)


def _shared_prompt_cache(model, prompt_ids: list[list[int]], prefix_ids: list[list[int]], pad: int, device):
    """Inputs for ``generate`` whose rows share the key-value cache of their prompt, computed once.

    Every distinct prompt but its last token runs once, left-padded, after their common start run
    once; its cache rows are copied to each row that continues it
    (:meth:`redgame.llm.prompt_sharing.SharedPrompts.run`). A row is
    then [that prompt head | pads | last prompt token | forced prefix]: the attention mask has a
    hole, and positions count real tokens only, so the model sees each row as prompt + prefix.
    Returns (input ids, attention mask, generate's cache argument).
    """
    body, _ = decoder_and_head(model)
    shared = SharedPrompts([tuple(p[:-1]) for p in prompt_ids], pad, device)
    tail_ids, tail_mask = padded([p[-1:] + q for p, q in zip(prompt_ids, prefix_ids)], pad, left=True, device=device)
    out = shared.run(body) if shared.ids.shape[1] else None  # None: one-token prompts, nothing to share
    ids = torch.cat([shared.ids[shared.group], tail_ids], 1)  # the layout that ran
    mask = torch.cat([shared.mask[shared.group], tail_mask], 1)
    return ids, mask, {} if out is None else {cache_argument(body): shared.share(cache_of(out))}


@dataclass
class Round:
    """Everything sampled in one round, flat, with index lists tying the levels together."""

    seeds: list                       # the seeds (redgame.llm.seeds.Seed)
    attacks: list[Completion]         # A per seed
    attack_seed: list[int]            # attack -> seed index
    attack_prompts: list[str]         # parsed attack, or the seed prompt on a parse failure
    parsed: list[bool]                # did the attack parse
    responses: list[Completion] = field(default_factory=list)
    response_attack: list[int] = field(default_factory=list)   # response -> attack index
    response_explore: list[bool] = field(default_factory=list)  # a candidate, not a policy sample: forced prefix or greedy
    response_greedy: list[bool] = field(default_factory=list)  # a greedy candidate (greedy_candidates)
    identity: list[bool] = field(default_factory=list)  # per attack: the seed as written, not sampled

    def is_identity(self, attack: int) -> bool:
        return bool(self.identity) and self.identity[attack]

    @property
    def parse_errors(self) -> int:
        return sum(not ok for a, ok in enumerate(self.parsed) if not self.is_identity(a))


def _sample(roles, role: str, tokenizer, prompts: list[str], settings: SamplingSettings, prefixes: list[str],
            backend, *, live: bool = False) -> list[Completion]:
    """The role's completions: from its rollout weights (the policy, or its EMA model under AdvGame's default
    rollouts), or with ``live`` from its policy always (vLLM serves the policy's adapters)."""
    if backend is not None:
        return backend.generate(role, prompts, settings, prefixes)
    with (roles.sampling_policy(role) if live else roles.sampler(role)) as model:
        return generate(model, tokenizer, prompts, settings, prefixes)


def _append_attack(rnd: Round, seed: int, text: str, *, identity: bool) -> None:
    """An attack on seed ``seed`` that no weights sampled (the seed itself, or a fixed rewrite)."""
    rnd.attacks.append(Completion([], [], text))
    rnd.attack_seed.append(seed)
    rnd.attack_prompts.append(text)
    rnd.parsed.append(True)
    rnd.identity.append(identity)


def play_round(roles, tokenizer, seeds: list, *, attacks_per_seed: int, responses_per_attack: int,
               attack_sampling: SamplingSettings, response_sampling: SamplingSettings,
               explore_prefixes: tuple[str, ...] = (), identity_attacks: bool = False, backend=None,
               fixed_attacks: list[list[str]] | None = None, greedy_candidates: bool = False) -> Round:
    """Sample attacks with the attacker's weights, then responses with the defender's.

    ``identity_attacks``: the defender also answers each seed as written (the attack that
    leaves the seed unchanged), appended after the sampled attacks; the attacker does not
    learn from these (``Round.identity``).

    ``fixed_attacks``: per seed, attacks written beforehand (e.g. jailbreak templates applied
    to it), appended after the sampled ones as parsed attacks that no weights sampled.

    ``greedy_candidates``: the live defender also answers each attack greedily, as the evaluation
    does (under EMA rollouts too); like an answer started from an explore prefix, it is a candidate
    for the defender's pairs (``Round.response_explore``), not a sample of the policy.

    ``backend``: an object with ``generate(role, prompts, settings, prefixes)`` that samples
    instead of ``model.generate`` (e.g. :class:`redgame.llm.vllm_rollout.VLLMRollout`).
    """
    seed_index = [i for i in range(len(seeds)) for _ in range(attacks_per_seed)]
    prompts = [chat_text(tokenizer, attacker_messages(seeds[i])) for i in seed_index]
    # Sampling starts inside the attack tag when the prompts module offers a prefix for it.
    attack_prefix = getattr(role_prompts, "ATTACK_PREFIX", "")
    attacks = _sample(roles, "attacker", tokenizer, prompts, attack_sampling, [attack_prefix] * len(prompts), backend)
    parsed_text = [parse_attack(a.text) for a in attacks]
    rnd = Round(seeds, attacks, seed_index,
                [t if t is not None else seeds[i].prompt for t, i in zip(parsed_text, seed_index)],
                [t is not None for t in parsed_text], identity=[False] * len(attacks))
    for i, texts in enumerate(fixed_attacks or []):
        for text in texts:
            _append_attack(rnd, i, text, identity=False)
    if identity_attacks:
        for i, seed in enumerate(seeds):
            _append_attack(rnd, i, seed.prompt, identity=True)
    plan = [(a, "") for a in range(len(rnd.attacks)) for _ in range(responses_per_attack)]
    plan += [(a, prefix) for a in range(len(rnd.attacks)) for prefix in explore_prefixes]
    texts = [chat_text(tokenizer, defender_messages(rnd.attack_prompts[a])) for a, _ in plan]
    greedy_texts = [chat_text(tokenizer, defender_messages(p)) for p in rnd.attack_prompts] if greedy_candidates else []
    if greedy_texts and _can_fold_greedy(roles, response_sampling, backend):
        both = texts + greedy_texts
        with roles.sampling_policy("defender") as model:
            rnd.responses = generate(model, tokenizer, both, response_sampling, [p for _, p in plan] + [""] * len(
                greedy_texts), greedy_rows=[False] * len(texts) + [True] * len(greedy_texts))
    else:
        rnd.responses = _sample(roles, "defender", tokenizer, texts, response_sampling, [p for _, p in plan], backend)
        if greedy_texts:
            greedy = replace(response_sampling, greedy=True)
            rnd.responses += _sample(roles, "defender", tokenizer, greedy_texts, greedy, [""] * len(greedy_texts),
                                     backend, live=True)
    rnd.response_attack = [a for a, _ in plan] + list(range(len(greedy_texts)))
    rnd.response_explore = [bool(p) for _, p in plan] + [True] * len(greedy_texts)
    rnd.response_greedy = [False] * len(plan) + [True] * len(greedy_texts)
    return rnd


def _can_fold_greedy(roles, sampling: SamplingSettings, backend) -> bool:
    """Whether a round's greedy answers can join its sampled ones' ``generate`` call (one pass per token for both:
    the demo's rollout 2.3 s faster on a 2-core Zen 4, benchmarks/RESULTS.md): the same weights (live rollouts),
    our sampler (top_p 1), no other backend. Otherwise they are a second call."""
    return backend is None and getattr(roles, "rollout", "live") == "live" and sampling.top_p >= 1.0 and not sampling.greedy
