"""Every kernel, forward and backward, against a float64 reference at odd shapes.

The same checks run in the tests (torch path, Triton interpreter) and on a GPU
(`benchmarks/gpu_check.py`). Each `*_case` draws fresh inputs, runs the public function
on `device` in `dtype`, runs an independent float64 reference on the same (rounded)
inputs, and returns one `Comparison` per output and gradient.

Tolerance: the max abs error, relative to the largest entry of the reference, must stay
within `tolerance(dtype, tf32)`: what the dtype's rounding of inputs, intermediates
(probabilities and LoRA projections meet the tensor cores in the input dtype) and outputs
allows, with a margin. fp32 dots on a GPU may run as TF32 (10-bit mantissa, truncated),
which is as coarse as fp16 and twice worse for the truncation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .preference import preference_loss_naive
from .reference import token_logprobs_naive

RELATIVE_TOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.float16: 5e-3, torch.bfloat16: 2e-2}
TF32_TOL = 1e-2


def tolerance(dtype: torch.dtype, tf32: bool = False) -> float:
    """Max abs error allowed, relative to the largest reference entry."""
    return TF32_TOL if tf32 and dtype == torch.float32 else RELATIVE_TOL[dtype]


@dataclass
class Comparison:
    what: str
    error: float  # max abs error / max abs reference entry; inf if an entry is not finite
    bound: float

    @property
    def ok(self) -> bool:
        return self.error <= self.bound


def compare(actual, expected, dtype, what: str, tf32: bool = False) -> Comparison:
    """Relative max error of `actual` against the float64 `expected` (shapes must agree)."""
    if tuple(actual.shape) != tuple(expected.shape):
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}")
    actual = actual.detach().double().cpu()
    expected = expected.detach().double().cpu()
    scale = max(expected.abs().max().item() if expected.numel() else 0.0, 1e-6)
    if not torch.isfinite(actual).all():  # an element never written, or an overflow
        return Comparison(what, float("inf"), tolerance(dtype, tf32))
    error = (actual - expected).abs().max().item() / scale if actual.numel() else 0.0
    return Comparison(what, error, tolerance(dtype, tf32))


def assert_all_ok(comparisons: list[Comparison]) -> None:
    bad = [c for c in comparisons if not c.ok]
    assert not bad, "; ".join(f"{c.what}: relative error {c.error:.3e} > {c.bound:.1e}" for c in bad)


def _draw(gen, *shape, std=1.0):
    return torch.randn(tuple(shape), generator=gen, dtype=torch.float64) * std


def _grads_vs_reference(outputs, leaves, reference_fn, dtype, device, tf32, gen, names):
    """Backpropagate one random upstream gradient through both and compare everything."""
    upstream = _draw(gen, *outputs.shape)
    outputs.backward(upstream.to(device=device, dtype=outputs.dtype))
    ref_leaves = [leaf.detach().double().cpu().requires_grad_() for leaf in leaves]
    expected = reference_fn(*ref_leaves)
    expected.backward(upstream)
    results = [compare(outputs, expected, dtype, names[0], tf32)]
    results += [compare(leaf.grad, ref.grad, dtype, f"d {name}", tf32)
                for leaf, ref, name in zip(leaves, ref_leaves, names[1:])]
    return results


def per_row_lora(x, weight, lora_a, lora_b, scale, segment_ids, bias=None):
    """y_i = W·x_i + s_a·B_a·(A_a·x_i) (+ b), a = segment_ids[i] (−1: no LoRA), row by row via einsum."""
    keep = (segment_ids >= 0).to(x.dtype)
    pick = segment_ids.clamp(min=0)
    proj = torch.einsum("mk,mrk->mr", x, lora_a[pick])
    delta = torch.einsum("mr,mnr->mn", proj, lora_b[pick]) * (scale[pick] * keep)[:, None]
    out = x @ weight.T + delta
    return out if bias is None else out + bias


def lora_case(gen, device, dtype, tf32=False, m=37, k=71, n=53, r=5, scale=0.75):
    """lora_linear with a bias: y, dx, dA, dB, d bias."""
    from . import lora_linear

    def leaf(*shape, std):
        return _draw(gen, *shape, std=std).to(device=device, dtype=dtype).requires_grad_()

    x, lora_a, lora_b, bias = leaf(m, k, std=1.0), leaf(r, k, std=k**-0.5), leaf(n, r, std=r**-0.5), leaf(n, std=1.0)
    weight = (_draw(gen, n, k) / k**0.5).to(device=device, dtype=dtype)
    y = lora_linear(x, weight, lora_a, lora_b, scale, bias)
    assert y.dtype == dtype and y.shape == (m, n)

    def reference(x64, a64, b64, bias64):
        return per_row_lora(x64, weight.double().cpu(), a64[None], b64[None], torch.tensor([scale], dtype=torch.float64),
                            torch.zeros(m, dtype=torch.long), bias64)

    return _grads_vs_reference(y, [x, lora_a, lora_b, bias], reference, dtype, device, tf32, gen,
                               ["lora y", "x", "A", "B", "bias"])


def multi_lora_case(gen, device, dtype, tf32=False, m=37, k=71, n=53, r=5, n_adapters=3, in_order=False):
    """multi_lora_linear with every adapter and the base present: y, dx, every dA and dB.

    ``in_order``: the segment ids sorted (each adapter one run of rows, the scorer's layout).
    """
    from . import multi_lora_linear

    def leaf(*shape, std):
        return _draw(gen, *shape, std=std).to(device=device, dtype=dtype).requires_grad_()

    x, lora_a, lora_b = leaf(m, k, std=1.0), leaf(n_adapters, r, k, std=k**-0.5), leaf(n_adapters, n, r, std=r**-0.5)
    weight = (_draw(gen, n, k) / k**0.5).to(device=device, dtype=dtype)
    segment_ids = torch.randint(-1, n_adapters, (m,), generator=gen)
    segment_ids[:n_adapters + 1] = torch.arange(-1, n_adapters)
    if in_order:
        segment_ids = segment_ids.sort().values
    scales = [0.5 + i for i in range(n_adapters)]
    y = multi_lora_linear(x, weight, lora_a, lora_b, scales, segment_ids.to(device))
    assert y.dtype == dtype and y.shape == (m, n)

    def reference(x64, a64, b64):
        return per_row_lora(x64, weight.double().cpu(), a64, b64, torch.tensor(scales, dtype=torch.float64),
                            segment_ids)

    return _grads_vs_reference(y, [x, lora_a, lora_b], reference, dtype, device, tf32, gen,
                               ["multi-LoRA y", "x", "A (all adapters)", "B (all adapters)"])


def token_logprobs_case(gen, device, dtype, tf32=False, head_grad=False, n=37, d=71, vocab=1009):
    """token_logprobs with ignored rows and a target in the last partial vocab block: log p, dh (, dW)."""
    from . import token_logprobs

    hidden = _draw(gen, n, d).to(device=device, dtype=dtype).requires_grad_()
    head = (_draw(gen, vocab, d) * 2 / d**0.5).to(device=device, dtype=dtype).requires_grad_(head_grad)
    targets = torch.randint(0, vocab, (n,), generator=gen)
    targets[torch.randperm(n, generator=gen)[:5]] = -100
    targets[(targets != -100).nonzero()[0, 0]] = vocab - 1
    out = token_logprobs(hidden, head, targets.to(device))
    assert out.dtype == torch.float32 and out.shape == (n,)
    leaves, names = ([hidden, head], ["log p", "hidden", "head"]) if head_grad else ([hidden], ["log p", "hidden"])

    def reference(h64, w64=None):
        return token_logprobs_naive(h64, head.detach().double().cpu() if w64 is None else w64, targets)

    results = _grads_vs_reference(out, leaves, reference, dtype, device, tf32, gen, names)
    ignored = (targets == -100).to(device)
    assert (out.detach()[ignored] == 0).all() and (hidden.grad[ignored] == 0).all(), "ignored rows must give 0"
    return results


def preference_case(gen, device, dtype, tf32=False, kind="dpo", pairs=3, seq_len=7, d=40, vocab=1009,
                    beta=0.2, nll_weight=0.5):
    """fused_preference_loss with prompt and padding positions ignored: loss and d hidden."""
    from . import fused_preference_loss

    hidden = _draw(gen, 2 * pairs, seq_len, d).to(device=device, dtype=dtype).requires_grad_()
    ref_hidden = (_draw(gen, 2 * pairs, seq_len, d) + 0.3 * hidden.detach().double().cpu()).to(device=device,
                                                                                                 dtype=dtype)
    head = (_draw(gen, vocab, d) / d**0.5).to(device=device, dtype=dtype)
    targets = torch.randint(0, vocab, (2 * pairs, seq_len), generator=gen)
    targets[:, :2] = -100  # the prompt
    targets[1, seq_len - 2:] = -100  # padding of a shorter answer
    loss = fused_preference_loss(hidden, ref_hidden, head, targets.to(device), beta=beta, kind=kind,
                                 nll_weight=nll_weight)
    assert loss.dim() == 0 and loss.dtype == torch.float32

    def reference(h64):
        return preference_loss_naive(h64, ref_hidden.double().cpu(), head.double().cpu(), targets, beta, kind,
                                     nll_weight=nll_weight)

    return _grads_vs_reference(loss, [hidden], reference, dtype, device, tf32, gen, [f"{kind} loss", "hidden"])


def online_ranges_case(gen, device, dtype, tf32=False, n=21, d=24, vocab=517, splits=3):
    """The online pass over 3 vocabulary ranges of 192 (a multiple of 64, not of BLOCK_V 128 or 256), targets
    just past each range's end, where a range's last chunk runs over: log-sum-exp and target logit (Triton only)."""
    from .ops.token_logprobs import online_logprob_parts

    hidden = _draw(gen, n, d).to(device=device, dtype=dtype)
    head = (_draw(gen, vocab, d) * 2 / d**0.5).to(device=device, dtype=dtype)
    targets = torch.randint(0, vocab, (n,), generator=gen)
    targets[:6] = torch.tensor([192, 200, 255, 384, 400, 191])
    got = online_logprob_parts(hidden, head, targets.to(device), -100, False, splits=splits)
    logits = hidden.double().cpu() @ head.double().cpu().T
    return [compare(got.lse, torch.logsumexp(logits, -1), dtype, "log-sum-exp", tf32),
            compare(got.target_logit, logits.gather(1, targets[:, None])[:, 0], dtype, "target logit", tf32)]


def with_online_pass(case):
    """`case` (any function) with the Triton paths' log-probs from the one-kernel online pass instead of the default."""
    def run(*args, **kwargs):
        from .logprobs import use_triton_pass

        with use_triton_pass("online"):
            return case(*args, **kwargs)

    return run


CASES = {
    "lora_linear": lora_case,
    "multi_lora_linear": multi_lora_case,
    "token_logprobs (frozen head)": token_logprobs_case,
    "token_logprobs (trained head)": lambda *a, **kw: token_logprobs_case(*a, head_grad=True, **kw),
    "token_logprobs (frozen head, online pass)": with_online_pass(token_logprobs_case),
    "fused_preference_loss (dpo)": preference_case,
    "fused_preference_loss (ipo)": lambda *a, **kw: preference_case(*a, kind="ipo", **kw),
    "fused_preference_loss (dpo, online pass)": with_online_pass(preference_case),
    "online pass, ranges not a multiple of BLOCK_V": online_ranges_case,
}


def _gpu_config_lists() -> dict[str, list[dict]]:
    from .ops import lora_linear, token_logprobs

    return dict(lora_linear.gpu_configs(), _online_logprob_kernel=token_logprobs.gpu_configs())


def gpu_config_count() -> int:
    """How many GPU configs the longest kernel list has (the others wrap around)."""
    return max(len(configs) for configs in _gpu_config_lists().values())


def gpu_configs_at(index: int):
    """A context in which every Triton kernel runs its GPU config number `index` instead of autotuning."""
    from .ops._common import forced_configs

    return forced_configs({name: configs[index % len(configs)] for name, configs in _gpu_config_lists().items()})
