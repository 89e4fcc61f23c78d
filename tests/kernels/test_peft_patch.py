"""patch_peft on a tiny random Llama with LoRA: same outputs and gradients as peft; unpatch restores."""

import pytest
import torch

from _kernel_checks import check_close
from redgame.errors import UserError
from redgame.kernels import patch_peft, unpatch
from redgame.kernels.peft_patch import patched_layers

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def _tiny_lora_llama(seed):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=97, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
    base = LlamaForCausalLM(config)
    # init_lora_weights=False draws B at random too, so the LoRA term is not zero.
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS, lora_dropout=0.0, init_lora_weights=False)
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
