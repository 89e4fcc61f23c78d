"""Role weights by regime: what is shared, what is trained, what the reference is, saving."""

import pytest
import torch
from peft import PeftModel

from redgame.llm.models import load_base
from redgame.llm.roles import LoraSettings, build_roles

LORA = LoraSettings(rank=4, alpha=8)
IDS = torch.tensor([[1, 17, 33, 4, 250]])


def _logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def _perturb(params):
    with torch.no_grad():
        for p in params:
            p.add_(0.05 * torch.randn_like(p))


@pytest.mark.parametrize("regime", ["bipolicy", "advgame", "sequential"])
def test_bipolicy_two_adapters_on_one_frozen_base(tiny, regime):
    model, _ = tiny
    base_logits = _logits(model)
    roles = build_roles(model, regime=regime, lora=LORA)
    att, dfn = roles.parameters("attacker"), roles.parameters("defender")
    assert att and dfn and not {id(p) for p in att} & {id(p) for p in dfn}
    assert all(".attacker." in n for n, _ in roles.named_parameters("attacker"))
    _perturb(dfn)
    with roles.policy("defender") as m:
        moved = _logits(m)
    with roles.policy("attacker") as m:
        torch.testing.assert_close(_logits(m), base_logits)  # attacker's B is still zero
    with roles.reference("defender") as m:                  # the anchor: adapters disabled
        torch.testing.assert_close(_logits(m), base_logits)
    assert not torch.allclose(moved, base_logits)
    frozen = [p for n, p in roles.slots["defender"].model.named_parameters() if "lora_" not in n]
    assert frozen and not any(p.requires_grad for p in frozen)


def test_shared_one_adapter_plays_both_roles(tiny):
    roles = build_roles(tiny[0], regime="shared", lora=LORA)
    assert roles.owners() == {"shared": ["attacker", "defender"]}
    assert [id(p) for p in roles.parameters("attacker")] == [id(p) for p in roles.parameters("defender")]


def test_separate_shares_nothing_and_full_finetune_trains_copies(tiny):
    model, _ = tiny
    roles = build_roles(model, regime="separate", lora=LORA)
    assert roles.slots["attacker"].model is not roles.slots["defender"].model
    base_a = dict(roles.slots["attacker"].model.named_parameters())
    base_d = dict(roles.slots["defender"].model.named_parameters())
    name = next(n for n in base_a if "lora_" not in n)
    assert base_a[name].data_ptr() != base_d[name].data_ptr()

    full = build_roles(load_base("tiny")[0], regime="separate", full_finetune=True)
    n_base = sum(p.numel() for p in load_base("tiny")[0].parameters())
    assert all(p.requires_grad for p in full.parameters("attacker"))
    assert sum(p.numel() for p in full.parameters("defender")) == n_base  # a whole copy, no adapter
    with pytest.raises(ValueError, match="full_finetune"):
        build_roles(load_base("tiny")[0], regime="bipolicy", full_finetune=True)
    with pytest.raises(ValueError, match="unknown regime"):
        build_roles(load_base("tiny")[0], regime="coop")


def test_ema_reference_is_dpo_md_mirror_step(tiny):
    roles = build_roles(tiny[0], regime="advgame", lora=LORA, reference="ema", ema_decay=0.95)
    live = dict(roles.named_parameters("defender"))
    ref = {n.replace(".defender.", ".defender_ref."): None for n in live}
    all_params = dict(roles.slots["defender"].model.named_parameters())
    before = {n: all_params[n].detach().clone() for n in ref}
    _perturb(live.values())
    roles.update_reference("defender")
    for n, p in live.items():
        r = n.replace(".defender.", ".defender_ref.")
        torch.testing.assert_close(all_params[r], 0.95 * before[r] + 0.05 * p.detach())
        assert not all_params[r].requires_grad
    with roles.reference("defender") as m:  # the EMA adapter is what the reference runs
        ref_out = _logits(m)
    with roles.policy("defender") as m:
        assert not torch.allclose(_logits(m), ref_out)
    assert all(p.requires_grad for p in roles.parameters("defender"))


@pytest.mark.parametrize("regime", ["bipolicy", "shared"])
def test_saved_roles_load_with_plain_peft(tiny, tmp_path, regime):
    roles = build_roles(tiny[0], regime=regime, lora=LORA)
    _perturb(roles.parameters("defender"))
    _perturb(roles.parameters("attacker"))
    for role in ("attacker", "defender"):
        roles.save_role(role, tmp_path / role)
        with roles.policy(role) as m:
            expected = _logits(m)
        loaded = PeftModel.from_pretrained(load_base("tiny")[0], str(tmp_path / role))
        torch.testing.assert_close(_logits(loaded), expected)
        assert (tmp_path / role / "adapter_model.safetensors").is_file()
