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


def _merged_deltas(roles, role):
    """s·B·A of each adapted layer, in float64, from the adapter's own tensors (not peft's get_delta_weight)."""
    slot = roles.slots[role]
    out = {}
    for name, m in slot.model.get_base_model().named_modules():
        if hasattr(m, "lora_A") and role in m.lora_A:
            b, a = m.lora_B[role].weight.double(), m.lora_A[role].weight.double()
            out[name] = m.scaling[role] * (b @ a)
    return out


def _ema_weights(roles, role):
    return {n: m.weight.detach().double() for n, m in roles.slots[role].ref_model.named_modules()
            if n in _merged_deltas(roles, role)}


def _base_weights(roles, role):
    slot = roles.slots[role]
    return {n: m.base_layer.weight.detach().double() for n, m in slot.model.get_base_model().named_modules()
            if n in _merged_deltas(roles, role)}


def test_ema_reference_is_the_ema_of_the_merged_delta(tiny):
    """AdvGame's DPO-MD with LoRA: the EMA model holds W + EMA(s·B·A), not W + s·EMA(B)·EMA(A)."""
    d = 0.9
    base_logits = _logits(tiny[0])
    roles = build_roles(tiny[0], regime="advgame", lora=LORA, reference="ema", ema_decay=d)
    with roles.reference("defender") as m:  # the EMA starts at the base (B = 0)
        torch.testing.assert_close(_logits(m), base_logits)
    torch.manual_seed(0)
    live = dict(roles.named_parameters("defender"))
    history, factors = [], []
    for _ in range(3):
        _perturb(live.values())
        history.append(_merged_deltas(roles, "defender"))
        factors.append({n: p.detach().double().clone() for n, p in live.items()})
        roles.update_reference("defender")
    ema, base = _ema_weights(roles, "defender"), _base_weights(roles, "defender")
    assert ema and ema.keys() == base.keys()
    gap = 0.0
    for name in ema:
        expected = (1 - d) * (d**2 * history[0][name] + d * history[1][name] + history[2][name])
        torch.testing.assert_close(ema[name] - base[name], expected, atol=1e-6, rtol=1e-5)
        # the factor-wise EMA is a different matrix
        ema_a, ema_b = (sum((1 - d) * d ** (2 - t) * f[f"base_model.model.{name}.lora_{ab}.defender.weight"]
                            for t, f in enumerate(factors)) for ab in "AB")
        gap = max(gap, float((LORA.alpha / LORA.rank * ema_b @ ema_a - expected).abs().max()))
    assert gap > 1e-4
    with roles.reference("defender") as m:  # the EMA model is what the reference runs
        ref_out = _logits(m)
    with roles.policy("defender") as m:
        assert not torch.allclose(_logits(m), ref_out)
    assert not torch.allclose(ref_out, base_logits)
    assert all(p.requires_grad for p in roles.parameters("defender"))
    assert not any(p.requires_grad for p in roles.slots["defender"].ref_model.parameters())
    with roles.reference("attacker") as m:  # the attacker's EMA did not move
        torch.testing.assert_close(_logits(m), base_logits)


def test_ema_state_round_trips_and_rollouts_sample_from_the_ema(tiny):
    from redgame.llm.models import load_base

    roles = build_roles(tiny[0], regime="advgame", lora=LORA, reference="ema", ema_decay=0.5, rollout="ema")
    _perturb(roles.parameters("defender"))
    roles.update_reference("defender")
    state = roles.state_tensors()
    assert any(k.startswith("defender.ref/") for k in state)
    other = build_roles(load_base("tiny")[0], regime="advgame", lora=LORA, reference="ema", ema_decay=0.5)
    other.load_state_tensors(state)
    for role in ("attacker", "defender"):
        with roles.reference(role) as a, other.reference(role) as b:
            torch.testing.assert_close(_logits(b), _logits(a))
    with roles.sampler("defender") as m:
        assert m is roles.slots["defender"].ref_model
    with other.sampler("defender") as m:  # rollout="live": the policy
        assert m is other.slots["defender"].model
    with pytest.raises(ValueError, match="rollout"):
        build_roles(load_base("tiny")[0], regime="bipolicy", lora=LORA, rollout="ema")


def test_advgame_full_finetune_two_full_models_with_an_ema_of_full_weights():
    from redgame.llm.models import load_base

    roles = build_roles(load_base("tiny")[0], regime="advgame", full_finetune=True, reference="ema", ema_decay=0.8,
                        rollout="ema")
    att, dfn = roles.slots["attacker"], roles.slots["defender"]
    assert att.model is not dfn.model and att.adapter is None and dfn.adapter is None
    before = [p.detach().clone() for p in dfn.ref_model.parameters()]
    _perturb(roles.parameters("defender"))
    roles.update_reference("defender")
    for r, b, p in zip(dfn.ref_model.parameters(), before, dfn.model.parameters()):
        torch.testing.assert_close(r, 0.8 * b + 0.2 * p.detach())
    with roles.sampler("attacker") as m:
        assert m is att.ref_model


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


def test_ema_of_a_bfloat16_base_accumulates_in_float32():
    """A small delta would round away in a bfloat16 EMA; it is kept in float32 and cast once."""
    from redgame.llm.models import load_base

    base = load_base("tiny")[0].to(torch.bfloat16)
    roles = build_roles(base, regime="advgame", lora=LORA, reference="ema", ema_decay=0.99)
    slot = roles.slots["defender"]
    with torch.no_grad():
        for n, p in roles.named_parameters("defender"):
            p.fill_(1e-3 if ".lora_B." in n else 1.0)
    for _ in range(3):
        roles.update_reference("defender")
    layers = _base_weights(roles, "defender")
    weights = dict(slot.ref_model.named_modules())
    for name, delta in slot.ema_delta.items():
        assert delta.dtype == torch.float32 and float(delta.abs().min()) > 0
        expected = (layers[name].float() + delta).to(torch.bfloat16)
        assert torch.equal(weights[name].weight, expected)


def test_full_finetune_keys_are_stable_and_loading_is_strict():
    """Checkpoint names of full weights must not depend on the process (they name the resume's tensors)."""
    first = build_roles(load_base("tiny")[0], regime="advgame", full_finetune=True, reference="ema")
    second = build_roles(load_base("tiny")[0], regime="advgame", full_finetune=True, reference="ema")
    assert [first.key(r) for r in ("attacker", "defender")] == ["full-attacker", "full-defender"]
    _perturb(first.parameters("defender"))
    second.load_state_tensors(first.state_tensors())
    for (n, a), (m, b) in zip(first.named_parameters("defender"), second.named_parameters("defender")):
        assert n == m and torch.equal(a, b)
    shared = build_roles(load_base("tiny")[0], regime="shared", full_finetune=True)
    assert shared.key("attacker") == shared.key("defender") == "full-attacker"
    tensors = first.state_tensors()
    tensors.pop(next(iter(tensors)))
    with pytest.raises(KeyError, match="differ from this run"):
        second.load_state_tensors(tensors)


def test_full_finetune_refuses_half_precision():
    base = load_base("tiny")[0].to(torch.bfloat16)
    with pytest.raises(ValueError, match="--dtype float32"):
        build_roles(base, regime="advgame", full_finetune=True, reference="ema")


def test_a_runs_full_weights_holding_nan_are_refused_where_they_load(tmp_path):
    """``eval --model RUN/final/defender`` of a diverged full_finetune run answered every prompt with nothing,
    which the judges read as a perfectly safe defender."""
    import json

    from safetensors.torch import load_file, save_file

    from redgame.errors import UserError
    from redgame.llm.models import tiny_tokenizer

    roles = build_roles(load_base("tiny")[0], regime="separate", full_finetune=True)
    role = tmp_path / "run" / "final" / "defender"
    roles.save_role("defender", role, tokenizer=tiny_tokenizer())
    (tmp_path / "run" / "config.json").write_text(json.dumps({"model": "tiny", "regime": "separate", "steps": 1}))
    load_base(str(role))  # whole: it loads
    weights = load_file(str(role / "model.safetensors"))
    save_file({k: v * float("nan") if v.is_floating_point() else v for k, v in weights.items()},
              str(role / "model.safetensors"))
    with pytest.raises(UserError, match="tensors hold NaN or inf values"):
        load_base(str(role))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_full_finetune_in_a_half_dtype_is_refused_by_the_config(dtype):
    """It was refused only once the base had loaded, though the config said the dtype."""
    from redgame.errors import UserError
    from redgame.llm.config import TrainConfig

    with pytest.raises(UserError, match=f"full_finetune trains the weights in the base's dtype, and in {dtype}"):
        TrainConfig(regime="separate", full_finetune=True, dtype=dtype).validate()
    TrainConfig(regime="separate", full_finetune=True, dtype="float32").validate()
