"""patch_peft on a tiny random Llama with LoRA: same outputs and gradients as peft; unpatch restores."""

import pytest
import torch

from _kernel_checks import check_close
from redgame.errors import UserError
from redgame.kernels import patch_peft, unpatch
from redgame.kernels.peft_patch import patched_layers

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# One linear of each shape (32 -> 32, 32 -> 16, 32 -> 48, 48 -> 32): the game's update in the Triton interpreter
# launches a kernel per layer, adapter and micro-batch, and took 50 s of CI with all seven.
SHAPES = ["q_proj", "v_proj", "gate_proj", "down_proj"]


def _tiny_lora_llama(seed, targets=TARGETS):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    base = LlamaForCausalLM(config)
    # init_lora_weights=False draws B at random too, so the LoRA term is not zero.
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0, init_lora_weights=False)
    return get_peft_model(base, lora)


def _loss_and_grads(model, input_ids):
    model.zero_grad(set_to_none=True)
    logits = model(input_ids=input_ids).logits
    loss = (logits.double() ** 2).mean()
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.requires_grad}
    return logits.detach(), grads


def test_patched_model_equals_peft_in_outputs_and_gradients(path, rng):
    mode, calls = path
    model = _tiny_lora_llama(seed=int(torch.randint(0, 2**31, (1,), generator=rng)))
    input_ids = torch.randint(0, 97, (2, 9), generator=rng)
    logits_peft, grads_peft = _loss_and_grads(model, input_ids)
    assert len(grads_peft) == 2 * len(TARGETS) * 2  # A and B of 7 linears in 2 layers

    patch_peft(model)
    assert patched_layers(model) == len(TARGETS) * 2
    logits_fused, grads_fused = _loss_and_grads(model, input_ids)
    check_close(logits_fused, logits_peft, torch.float32, "logits")
    for name, grad in grads_peft.items():
        check_close(grads_fused[name], grad, torch.float32, name)
    if mode == "interpret":
        assert calls["lora_linear_forward"] == calls["lora_linear_backward"] == len(TARGETS) * 2

    unpatch(model)
    assert patched_layers(model) == 0
    assert all("forward" not in layer.__dict__ for layer in model.modules())
    logits_again, _ = _loss_and_grads(model, input_ids)
    assert torch.equal(logits_again, logits_peft)


def test_disabled_adapter_falls_back_to_peft(rng):
    model = _tiny_lora_llama(seed=0)
    input_ids = torch.randint(0, 97, (1, 5), generator=rng)
    patch_peft(model)
    with torch.no_grad(), model.disable_adapter():
        base_only = model(input_ids=input_ids).logits
        unpatch(model)
        want = model(input_ids=input_ids).logits
    assert torch.equal(base_only, want)


def test_model_without_lora_is_a_clear_error():
    with pytest.raises(UserError, match="no peft LoRA Linear layer"):
        patch_peft(torch.nn.Sequential(torch.nn.Linear(3, 3)))


def _two_role_llama(seed, targets=TARGETS):
    """The tiny LoRA Llama with a second adapter, as the game's bipolicy roles hold them."""
    from peft import LoraConfig

    model = _tiny_lora_llama(seed, targets)
    model.add_adapter("other", LoraConfig(r=4, lora_alpha=8, target_modules=targets, lora_dropout=0.0,
                                          init_lora_weights=False))
    return model


def _game_update(model, sequences, *, kernels):
    """The game's DPO update on both adapters (redgame.llm.scoring + the trainer's loss): loss and gradients.

    Kernels off: peft's layers, one pass per adapter, the whole batch at once, the torch log-probs.
    Kernels on: patched layers, both adapters in one pass (multi_lora_linear), micro-batches.
    """
    import contextlib

    from redgame.llm.config import TrainConfig
    from redgame.llm.losses import TokenLogprobs
    from redgame.llm.scoring import Job, score
    from redgame.llm.role_loss import loss_from_logprobs

    cfg = TrainConfig(loss="dpo", beta=0.5, nll_weight=1.0)
    (patch_peft if kernels else unpatch)(model)
    units = [[k, 2 + k] for k in range(2)]

    def seat(name):
        @contextlib.contextmanager
        def enter():
            model.set_adapter(name)
            yield model
        return enter

    with torch.no_grad():
        refs = score([Job(model, None, model.disable_adapter, sequences, units)] * 2, 0, together=kernels,
                     use_kernels=kernels)
    model.zero_grad(set_to_none=True)
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)
    jobs = [Job(model, name, seat(name), sequences, units) for name in ("default", "other")]

    def on_part(parts):
        total = 0.0
        for j, part in parts.items():
            order = [units[u][k] for k in range(2) for u in part.units]
            pol = TokenLogprobs.of_sequences([part.values[i] for i in order])
            ref = TokenLogprobs.of_sequences([refs[j].per_sequence()[i] for i in order])
            total = total + loss_from_logprobs(cfg, pol, ref, of=len(units))[0]
        return total

    policy = score(jobs, 0, together=kernels, micro_tokens=24 if kernels else 0, use_kernels=kernels,
                   on_part=on_part)
    losses = torch.stack([loss_from_logprobs(cfg, p, r)[0] for p, r in zip(policy, refs)])
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    unpatch(model)
    return losses, grads


def test_the_games_update_with_kernels_on_equals_kernels_off(path, rng):
    """Losses and gradients of both adapters, kernels on (torch path or Triton interpreter) vs off (peft)."""
    from redgame.llm.rollout import Completion

    mode, calls = path
    model = _two_role_llama(seed=int(torch.randint(0, 2**31, (1,), generator=rng)), targets=SHAPES)
    lengths = [(5, 3), (2, 4), (7, 2), (3, 5)]  # two pairs: (0, 2) and (1, 3)
    sequences = [Completion(torch.randint(0, 97, (a,), generator=rng).tolist(),
                            torch.randint(0, 97, (b,), generator=rng).tolist(), "") for a, b in lengths]
    losses_off, grads_off = _game_update(model, sequences, kernels=False)
    losses_on, grads_on = _game_update(model, sequences, kernels=True)
    check_close(losses_on, losses_off, torch.float32, "losses")
    assert len(grads_off) == 2 * 2 * len(SHAPES) * 2 and grads_on.keys() == grads_off.keys()  # A, B; 2 adapters
    for name, grad in grads_off.items():
        check_close(grads_on[name], grad, torch.float32, name)
    if mode == "interpret":
        assert calls["lora_linear_forward"] and calls["lora_linear_backward"] and calls["gemm_logprob_parts"]


def test_a_patched_model_pickles_and_deep_copies(rng):
    """The patch was a bound method stored on each layer, which pickle cannot rebuild (torch.save(model))."""
    import copy
    import pickle

    model = patch_peft(_tiny_lora_llama(0))
    ids = torch.randint(0, 97, (2, 7), generator=rng)
    want = model(input_ids=ids).logits
    for clone in (pickle.loads(pickle.dumps(model)), copy.deepcopy(model)):
        assert patched_layers(clone) == patched_layers(model) > 0
        assert torch.equal(clone(input_ids=ids).logits, want)
        assert all(layer.forward.layer is layer for layer in clone.modules() if "forward" in layer.__dict__)


@pytest.mark.parametrize("extra, shared", [({}, True), ({"target_modules": [*TARGETS, "embed_tokens"]}, False),
                                           ({"modules_to_save": ["lm_head"]}, False)],
                         ids=["linears", "lora-embedding", "modules-to-save"])
def test_one_routed_pass_equals_peft_per_row_or_is_refused(rng, extra, shared):
    """A LoRA embedding, or a module peft copies per adapter, runs the active adapter for every row: routable()
    said yes and routed() gave rows of the inactive adapter and of none the active one's delta."""
    from peft import LoraConfig
    from redgame.kernels.peft_patch import routable, routed

    model = _tiny_lora_llama(seed=1)
    settings = {"r": 3, "lora_alpha": 5, "target_modules": TARGETS, "init_lora_weights": False, **extra}
    model.add_adapter("other", LoraConfig(**settings))
    model.add_adapter("third", LoraConfig(**{**settings, "lora_alpha": 7}))
    model.eval()
    patch_peft(model)
    names, rows = ["other", "third"], torch.tensor([0, 1, -1])
    assert routable(model, names) == shared
    if not shared:
        with pytest.raises(UserError, match="cannot share one pass"), routed(model, names, rows):
            pass
        return
    input_ids = torch.randint(0, 97, (3, 6), generator=rng)
    with torch.no_grad():
        with routed(model, names, rows):
            together = model(input_ids=input_ids).logits
        apart = []
        for i, name in enumerate(names):
            model.set_adapter(name)
            apart.append(model(input_ids=input_ids[i:i + 1]).logits)
        with model.disable_adapter():
            apart.append(model(input_ids=input_ids[2:]).logits)
    check_close(together, torch.cat(apart), torch.float32, "routed logits")
