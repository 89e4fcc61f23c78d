"""Ratio tables for redgame.kernels against named baselines, printed in one run.

    python benchmarks/kernel_tables.py                # the CPU tables; the GPU tables too when CUDA is available
    python benchmarks/kernel_tables.py --smoke        # every table at tiny shapes (a check, not a measurement)
    TRITON_INTERPRET=1 python benchmarks/kernel_tables.py --smoke   # ... with the Triton kernels interpreted

Tables (`--tables`, default all; `--json PATH` also writes them as JSON):

- cpu: peak resident memory growth of the CPU torch path against naive logits, at the
  embedded model's head (V=49,152, d=576), each case in a fresh subprocess: token log-probs
  forward + backward over N=2,048 rows (frozen and trained head; goal >= 5x lower) and
  fused_preference_loss over 2,048 policy + 2,048 reference tokens (goal >= 10x lower).
  Peak growth = VmHWM after the measured call (reset through /proc/self/clear_refs just
  before it) minus VmRSS before it, after one warm-up call, with glibc's mmap threshold
  fixed so that freed memory leaves the resident set.
- flops: matmul FLOPs of forward + backward counted by torch's FlopCounterMode on the
  torch paths, against the formulas of docs/kernels.md.
- gpu (CUDA only, bf16; `--quick` for fewer rows): fused LoRA vs peft at Qwen2.5-7B shapes
  with the roofline fraction; two adapters in one SGMV launch vs two `set_adapter` passes
  (and eight adapters over the same rows); fused_preference_loss (its default GEMM pass, and
  its one-kernel online pass) vs Liger's
  LigerFusedLinearDPOLoss (when installed) and vs naive, at V=151,936, d=3,584. Times are
  medians from triton.testing.do_bench; peak memory is torch.cuda.max_memory_allocated
  growth over the inputs.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import import_checkout  # noqa: E402

import_checkout()  # redgame need not be installed: gpu_check.py runs this script, and it runs its own cases
from redgame.errors import check_output_path  # noqa: E402
from redgame.jsonio import strict_json, write_text_atomically  # noqa: E402
from redgame.kernels import (fused_preference_loss, lora_linear, multi_lora_linear, preference_loss,  # noqa: E402
                             token_logprobs)
from redgame.kernels.checks import with_online_pass as online_pass  # noqa: E402
from redgame.kernels.preference import preference_loss_naive  # noqa: E402
from redgame.kernels.reference import token_logprobs_naive  # noqa: E402

CPU_CASE = dict(n=2048, v=49152, d=576)
CPU_SMOKE_CASE = dict(n=64, v=4099, d=32)
MEMORY_GOALS_CPU = {"logprobs": 5.0, "preference": 10.0}
PREFERENCE_SEQ_LEN = {2048: 128, 64: 16}  # N tokens = 2B sequences of this length
TABLES = ("cpu", "flops", "gpu")
# Dense bf16 tensor-core peak (FLOP/s) and HBM bandwidth (B/s) for the roofline column.
PEAKS = {"H100": (989e12, 3.35e12), "H200": (989e12, 4.8e12), "A100": (312e12, 2.0e12)}


# ----------------------------------------------------------------------------- CPU memory table
def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_high_water_mark() -> None:
    with open("/proc/self/clear_refs", "w") as refs:  # "5" resets VmHWM (Linux >= 4.0)
        refs.write("5")


def _preference_inputs(gen, n, v, d, dtype=torch.float32, device="cpu"):
    """2B = n / T sequences of T tokens, every token counted; hidden requires grad."""
    seq_len = PREFERENCE_SEQ_LEN.get(n, 16)
    seqs = n // seq_len
    hidden = torch.randn(seqs, seq_len, d, generator=gen, device=device).to(dtype).requires_grad_()
    ref_hidden = torch.randn(seqs, seq_len, d, generator=gen, device=device).to(dtype)
    targets = torch.randint(0, v, (seqs, seq_len), generator=gen, device=device)
    return hidden, ref_hidden, targets


def measure_cpu_case(kind: str, impl: str, n: int, v: int, d: int, head_grad: bool, reps: int) -> dict:
    """One case in this (fresh) process: peak RSS growth and timings of forward + backward."""
    gen = torch.Generator().manual_seed(0)
    head = (torch.randn(v, d, generator=gen) / d**0.5).requires_grad_(head_grad)
    if kind == "logprobs":
        hidden = torch.randn(n, d, generator=gen, requires_grad=True)
        targets = torch.randint(0, v, (n,), generator=gen)
        fn = token_logprobs_naive if impl == "naive" else token_logprobs

        def loss():
            return fn(hidden, head, targets).sum()
    else:
        hidden, ref_hidden, targets = _preference_inputs(gen, n, v, d)
        fn = preference_loss_naive if impl == "naive" else fused_preference_loss

        def loss():
            return fn(hidden, ref_hidden, head, targets)

    def fwd_bwd():
        loss().backward()
        hidden.grad = head.grad = None

    fwd_bwd()  # warm-up: thread pools, allocator arenas
    before = _rss_kib("VmRSS")
    _reset_high_water_mark()
    start = time.perf_counter()
    fwd_bwd()
    times = [time.perf_counter() - start]
    growth = _rss_kib("VmHWM") - before
    for _ in range(reps - 1):
        start = time.perf_counter()
        fwd_bwd()
        times.append(time.perf_counter() - start)
    return dict(peak_growth_mib=growth / 1024, times=times)


def cpu_memory_table(case: dict, reps: int) -> list[dict]:
    print(f"\n## CPU torch path vs naive, fwd+bwd, N={case['n']}, V={case['v']}, d={case['d']}, fp32, "
          f"{torch.get_num_threads()} threads, {reps} reps")
    print(f"{'case':<22} {'impl':<8} {'peak RSS growth MiB':>20} {'median s':>9} {'min s':>7} {'max s':>7}"
          f" {'naive/redgame memory':>21} {'time/naive':>10}")
    # A fixed mmap threshold turns off glibc's dynamic one, so freed blocks leave the resident
    # set at once and the warm-up call's freed memory cannot hide the measured call's peak.
    env = dict(os.environ, TRITON_INTERPRET="0", MALLOC_MMAP_THRESHOLD_="65536")
    rows = []
    for kind, head_grad, label in (("logprobs", False, "log-probs, frozen"), ("logprobs", True, "log-probs, trained"),
                                   ("preference", False, "preference loss (DPO)")):
        results = {}
        for impl in ("naive", "redgame"):
            cmd = [sys.executable, __file__, "--cpu-case", kind, impl, "--reps", str(reps),
                   "--case", json.dumps(case)] + (["--head-grad"] if head_grad else [])
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            results[impl] = json.loads(out.strip().splitlines()[-1])
        ratio = results["naive"]["peak_growth_mib"] / max(results["redgame"]["peak_growth_mib"], 1e-9)
        for impl, res in results.items():
            med = statistics.median(res["times"])
            time_ratio = med / statistics.median(results["naive"]["times"])
            print(f"{label:<22} {impl:<8} {res['peak_growth_mib']:20.1f} {med:9.3f}"
                  f" {min(res['times']):7.3f} {max(res['times']):7.3f}"
                  f" {(f'{ratio:.1f}x' if impl == 'redgame' else ''):>21} {time_ratio:9.2f}x")
            rows.append(dict(case=label, impl=impl, peak_growth_mib=res["peak_growth_mib"], times_s=res["times"],
                             memory_ratio=ratio if impl == "redgame" else None, goal=MEMORY_GOALS_CPU[kind]))
    print("goal: >= 5x lower peak resident memory growth than naive for the log-probs, >= 10x for the preference loss")
    return rows


# ----------------------------------------------------------------------------- FLOP table
def _counted_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


@contextlib.contextmanager
def _torch_path():
    """CPU tensors take the torch path within the block, whatever TRITON_INTERPRET says outside.

    Triton is imported first, so that it is built for the mode of the rest of the run.
    """
    if importlib.util.find_spec("triton") is not None:
        import triton  # noqa: F401
    saved = os.environ.get("TRITON_INTERPRET")
    os.environ["TRITON_INTERPRET"] = "0"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop("TRITON_INTERPRET")
        else:
            os.environ["TRITON_INTERPRET"] = saved


def flops_table(case: dict) -> list[dict]:
    """Matmul FLOPs of forward + backward on the torch paths, counted, against the formulas."""
    n, v, d = case["n"], case["v"], case["d"]
    nvd = n * v * d
    print(f"\n## matmul FLOPs, forward + backward, torch paths, N={n}, V={v}, d={d} (FlopCounterMode)")
    print(f"{'case':<24} {'impl':<8} {'formula':<24} {'formula GFLOP':>14} {'counted GFLOP':>14} {'counted/formula':>16}")
    gen = torch.Generator().manual_seed(0)
    head = torch.randn(v, d, generator=gen) / d**0.5
    hidden = torch.randn(n, d, generator=gen, requires_grad=True)
    targets = torch.randint(0, v, (n,), generator=gen)
    pref_hidden, ref_hidden, pref_targets = _preference_inputs(gen, n, v, d)
    cases = [
        ("log-probs, frozen head", "naive", "4NVd", 4, lambda: token_logprobs_naive(hidden, head, targets).sum().backward()),
        ("log-probs, frozen head", "redgame", "4NVd", 4, lambda: token_logprobs(hidden, head, targets).sum().backward()),
        ("log-probs, trained head", "naive", "6NVd", 6,
         lambda: token_logprobs_naive(hidden, head.requires_grad_(), targets).sum().backward()),
        ("log-probs, trained head", "redgame", "8NVd (no [N, V] kept)", 8,
         lambda: token_logprobs(hidden, head.requires_grad_(), targets).sum().backward()),
        ("preference loss", "naive", "4NVd policy + 2NVd ref", 6,
         lambda: preference_loss_naive(pref_hidden, ref_hidden, head.requires_grad_(False), pref_targets).backward()),
        ("preference loss", "redgame", "4NVd policy + 2NVd ref", 6,
         lambda: fused_preference_loss(pref_hidden, ref_hidden, head.requires_grad_(False), pref_targets).backward()),
    ]
    rows = []
    for label, impl, formula, factor, fn in cases:
        with _torch_path():
            counted = _counted_flops(fn)
        hidden.grad = pref_hidden.grad = head.grad = None
        print(f"{label:<24} {impl:<8} {formula:<24} {factor * nvd / 1e9:14.2f} {counted / 1e9:14.2f}"
              f" {counted / (factor * nvd):16.3f}")
        rows.append(dict(case=label, impl=impl, formula=formula, formula_flops=factor * nvd, counted_flops=counted))
    print("(the O(N·d) terms, e.g. the target logits, are not matmuls and are not counted)")
    return rows


# ----------------------------------------------------------------------------- timing helpers
# Timed calls per measurement off CUDA (--smoke sets 1: the interpreter is slow and its times mean nothing).
CPU_TIMING_REPS = 5


def time_ms(fn, grad_to_none=()):
    """(median, q20, q80) milliseconds: do_bench on CUDA, a perf_counter loop elsewhere."""
    if torch.cuda.is_available():
        from triton.testing import do_bench

        return tuple(do_bench(fn, grad_to_none=list(grad_to_none), quantiles=[0.5, 0.2, 0.8]))
    times = []
    for _ in range(CPU_TIMING_REPS):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
        for t in grad_to_none:
            t.grad = None
    if len(times) == 1:
        return times[0], times[0], times[0]
    q = statistics.quantiles(times, n=5)
    return statistics.median(times), q[0], q[-1]


def peak_mib(fn, grad_to_none=()):
    """Peak CUDA memory growth over what is allocated now, in MiB; None off CUDA.

    The tensors in ``grad_to_none`` lose their gradient first, so that every implementation
    measured in turn pays for allocating it (none accumulates into the last one's).
    """
    if not torch.cuda.is_available():
        return None
    for t in grad_to_none:
        t.grad = None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2**20


def _fmt_mib(value):
    return "-" if value is None else f"{value:.0f}"


def _peaks():
    if not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    return next((v for k, v in PEAKS.items() if k in name), None)


# ----------------------------------------------------------------------------- LoRA tables
class _OneLinear(torch.nn.Module):
    def __init__(self, k, n):
        super().__init__()
        self.proj = torch.nn.Linear(k, n, bias=False)

    def forward(self, x):
        return self.proj(x)


def _peft_layer(k, n, r, adapters, device, dtype):
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=r, lora_alpha=2 * r, target_modules=["proj"], init_lora_weights=False)
    model = get_peft_model(_OneLinear(k, n).to(device=device, dtype=dtype), config, adapter_name=adapters[0])
    for name in adapters[1:]:
        model.add_adapter(name, config)
    model.to(device=device, dtype=dtype)
    return model.base_model.model.proj


def lora_table(shapes, ranks, rows, device, dtype) -> list[dict]:
    print(f"\n## LoRA linear, fused vs peft, {dtype}, {device}: time ratios peft/fused (> 1 = fused faster)")
    print(f"{'K->N':<12} {'r':>3} {'M':>6} {'fwd':>6} {'bwd':>6} {'full':>6} {'fused full ms':>14}"
          f" {'peft full ms':>13} {'roofline':>9} {'max err':>8}")
    peaks = _peaks()
    table = []
    for k, n in shapes:
        for r in ranks:
            layer = _peft_layer(k, n, r, ["default"], device, dtype)
            w, a, b = layer.base_layer.weight, layer.lora_A["default"].weight, layer.lora_B["default"].weight
            scale = layer.scaling["default"]
            for m in rows:
                x = torch.randn(m, k, device=device, dtype=dtype, requires_grad=True)
                dy = torch.randn(m, n, device=device, dtype=dtype)
                impls = {"peft": lambda: layer(x), "fused": lambda: lora_linear(x, w, a, b, scale)}
                err = ((impls["fused"]().float() - impls["peft"]().float()).abs().max()
                       / impls["peft"]().float().abs().max()).item()
                res = {}
                for name, fn in impls.items():
                    grads = (x, a, b)
                    fwd = time_ms(fn)
                    y = fn()
                    bwd = time_ms(lambda: y.backward(dy, retain_graph=True), grads)
                    full = time_ms(lambda: fn().backward(dy), grads)
                    res[name] = (fwd[0], bwd[0], full[0])
                flops = 4 * m * n * k + 6 * m * k * r + 6 * m * n * r
                nbytes = x.element_size() * (3 * m * k + 2 * n * k + 3 * m * n)
                roof = None
                if peaks:
                    roof = max(flops / peaks[0], nbytes / peaks[1]) * 1e3 / res["fused"][2]
                ratios = [res["peft"][i] / res["fused"][i] for i in range(3)]
                roof_text = "-" if roof is None else f"{100 * roof:.0f}%"
                print(f"{f'{k}->{n}':<12} {r:>3} {m:>6} {ratios[0]:6.2f} {ratios[1]:6.2f} {ratios[2]:6.2f}"
                      f" {res['fused'][2]:14.3f} {res['peft'][2]:13.3f} {roof_text:>9} {err:8.1e}")
                table.append(dict(k=k, n=n, r=r, m=m, fused_ms=res["fused"], peft_ms=res["peft"], roofline=roof,
                                  max_rel_err=err))
    print("goal (H100, bf16): full >= 1.3x faster than peft and >= 70% of the roofline"
          " (roofline = max(FLOPs / peak, bytes / bandwidth) for the useful FLOPs 4MNK + 6MKr + 6MNr"
          " and one pass over each tensor)")
    return table


def multi_lora_table(shapes, ranks, rows, device, dtype) -> list[dict]:
    print(f"\n## two adapters in one SGMV launch vs two passes (half the rows each), fwd+bwd, {dtype}, {device}")
    print(f"{'K->N':<12} {'r':>3} {'M':>6} {'SGMV ms':>8} {'2x peft set_adapter ms':>23} {'ratio':>6}"
          f" {'2x fused single ms':>19} {'ratio':>6} {'SGMV, 8 adapters ms':>20}")
    table = []
    for k, n in shapes:
        for r in ranks:
            layer = _peft_layer(k, n, r, ["attacker", "defender"], device, dtype)
            w = layer.base_layer.weight
            names = ("attacker", "defender")
            a_stack = torch.stack([layer.lora_A[s].weight.detach() for s in names]).requires_grad_()
            b_stack = torch.stack([layer.lora_B[s].weight.detach() for s in names]).requires_grad_()
            a_eight = a_stack.detach().repeat(4, 1, 1).requires_grad_()
            b_eight = b_stack.detach().repeat(4, 1, 1).requires_grad_()
            scales = [layer.scaling[s] for s in names]
            for m in rows:
                x = torch.randn(m, k, device=device, dtype=dtype, requires_grad=True)
                dy = torch.randn(m, n, device=device, dtype=dtype)
                seg = torch.arange(m, device=device) * 2 // m  # first half attacker, second half defender
                seg_eight = torch.arange(m, device=device) * 8 // m
                half = m // 2

                def sgmv():
                    multi_lora_linear(x, w, a_stack, b_stack, scales, seg).backward(dy)

                def sgmv_eight():
                    multi_lora_linear(x, w, a_eight, b_eight, scales * 4, seg_eight).backward(dy)

                def peft_passes():
                    outs = []
                    for name, rows_x in zip(names, (x[:half], x[half:])):
                        layer.set_adapter(name)
                        outs.append(layer(rows_x))
                    torch.cat(outs).backward(dy)

                def fused_passes():
                    outs = [lora_linear(x[:half], w, a_stack[0], b_stack[0], scales[0]),
                            lora_linear(x[half:], w, a_stack[1], b_stack[1], scales[1])]
                    torch.cat(outs).backward(dy)

                params = [x, a_stack, b_stack, a_eight, b_eight] + [p for p in layer.parameters() if p.requires_grad]
                t_sgmv, t_peft, t_fused, t_eight = (time_ms(fn, params)[0]
                                                    for fn in (sgmv, peft_passes, fused_passes, sgmv_eight))
                print(f"{f'{k}->{n}':<12} {r:>3} {m:>6} {t_sgmv:8.3f} {t_peft:23.3f} {t_peft / t_sgmv:6.2f}"
                      f" {t_fused:19.3f} {t_fused / t_sgmv:6.2f} {t_eight:20.3f}")
                table.append(dict(k=k, n=n, r=r, m=m, sgmv_ms=t_sgmv, peft_two_passes_ms=t_peft,
                                  fused_two_passes_ms=t_fused, sgmv_eight_adapters_ms=t_eight))
    print("goal (H100, bf16): one launch >= 1.6x faster than two peft passes; 8 adapters cost about what 2 do")
    return table


# ----------------------------------------------------------------------------- preference loss table
def preference_table(v, d, rows, seq, device, dtype) -> list[dict]:
    print(f"\n## DPO loss from hidden states, fwd+bwd (policy + reference), V={v}, d={d}, seq={seq}, frozen head,"
          f" {dtype}, {device}")
    print(f"{'N':>6} {'impl':<28} {'ms':>9} {'peak MiB':>9} {'vs redgame ms':>14} {'vs redgame MiB':>15}"
          f" {'loss diff':>10}")
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss
    except Exception as exc:  # not installed, or failing on import (another triton): the table goes on without it
        print(f"(no Liger row: {_error_text(exc)})")
        LigerFusedLinearDPOLoss = None
    gen = torch.Generator(device=device).manual_seed(0)
    head = (torch.randn(v, d, device=device, generator=gen) / d**0.5).to(dtype)
    table = []
    for n in rows:
        pairs = n // (2 * seq)
        hidden = torch.randn(2 * pairs, seq, d, device=device, generator=gen).to(dtype).requires_grad_()
        ref_hidden = torch.randn(2 * pairs, seq, d, device=device, generator=gen).to(dtype)
        targets = torch.randint(0, v, (2 * pairs, seq), device=device, generator=gen)

        def unfused():
            pol = token_logprobs(hidden.view(-1, d), head, targets.view(-1)).view(2 * pairs, seq).sum(1)
            with torch.no_grad():
                ref = token_logprobs(ref_hidden.view(-1, d), head, targets.view(-1)).view(2 * pairs, seq).sum(1)
            return preference_loss(pol[:pairs], pol[pairs:], ref[:pairs], ref[pairs:], beta=0.1)

        impls = {"redgame fused_preference_loss": lambda: fused_preference_loss(hidden, ref_hidden, head, targets),
                 "redgame fused, online pass": lambda: online_pass(fused_preference_loss)(hidden, ref_hidden, head,
                                                                                           targets),
                 "redgame token_logprobs + DPO": unfused,
                 "naive (full logits)": lambda: preference_loss_naive(hidden, ref_hidden, head, targets)}
        if LigerFusedLinearDPOLoss is not None:
            liger = LigerFusedLinearDPOLoss(beta=0.1, compiled=torch.cuda.is_available(), use_ref_model=True)
            impls["liger LigerFusedLinearDPOLoss"] = lambda: liger(head, hidden, targets, ref_input=ref_hidden,
                                                                   ref_weight=head)[0]
        measured = {}
        for name, fn in impls.items():
            try:
                measured[name] = dict(loss=fn().item(), ms=time_ms(lambda fn=fn: fn().backward(), [hidden])[0],
                                      peak_mib=peak_mib(lambda fn=fn: fn().backward(), [hidden]))
            except Exception as exc:  # a baseline out of memory, or Liger failing: its row says so, the rest stay
                table.append(dict(n=n, impl=name, error=_error_text(exc)))
                print(f"{n:>6} {name:<28} failed: {table[-1]['error']}")
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
            hidden.grad = None
        ours = measured.get("redgame fused_preference_loss")
        exact = measured.get("naive (full logits)", ours)
        for name, row in measured.items():
            mem_ratio = "-" if ours is None or ours["peak_mib"] is None else \
                f"{row['peak_mib'] / max(ours['peak_mib'], 1e-9):.1f}x"
            time_ratio = "-" if ours is None else f"{row['ms'] / ours['ms']:.2f}x"
            loss_diff = "-" if exact is None else f"{abs(row['loss'] - exact['loss']):.1e}"
            print(f"{n:>6} {name:<28} {row['ms']:9.2f} {_fmt_mib(row['peak_mib']):>9} {time_ratio:>14}"
                  f" {mem_ratio:>15} {loss_diff:>10}")
            table.append(dict(n=n, impl=name, **row))
    print("goal (H100, bf16): peak memory >= 20x below naive at 8k tokens; time <= 0.8x Liger with a frozen head")
    return table


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"[:300]


def _kept(results: dict, name: str, table) -> None:
    """``results[name] = table()``; a table that fails leaves one error row (and the tables before it whole)."""
    try:
        results[name] = table()
    except Exception as exc:
        results[name] = [dict(error=_error_text(exc))]
        print(f"\n{name} table failed: {results[name][0]['error']}")


# ----------------------------------------------------------------------------- main
def run_tables(tables, smoke: bool, quick: bool, reps: int) -> dict:
    """Print the chosen tables and return their rows by name."""
    results = {}
    cpu_case = CPU_SMOKE_CASE if smoke else CPU_CASE
    if "cpu" in tables:
        results["cpu"] = cpu_memory_table(cpu_case, 1 if smoke else reps)
    if "flops" in tables:
        results["flops"] = flops_table(cpu_case)
    if "gpu" not in tables:
        return results
    if smoke:
        global CPU_TIMING_REPS
        CPU_TIMING_REPS = 1
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        _kept(results, "lora", lambda: lora_table([(64, 96)], [8], [37], device, dtype))
        _kept(results, "multi_lora", lambda: multi_lora_table([(64, 96)], [8], [40], device, dtype))
        _kept(results, "preference", lambda: preference_table(1009, 32, [64], 16, device, dtype))
    elif torch.cuda.is_available():
        print(f"\nGPU: {torch.cuda.get_device_name()}")
        qwen7b = [(3584, 3584), (3584, 18944), (18944, 3584)]
        bf16 = torch.bfloat16
        _kept(results, "lora", lambda: lora_table(qwen7b, [16, 64], [4096] if quick else [512, 4096, 16384], "cuda",
                                                  bf16))
        _kept(results, "multi_lora", lambda: multi_lora_table(qwen7b[:2], [16, 64], [4096] if quick else [4096, 16384],
                                                              "cuda", bf16))
        _kept(results, "preference", lambda: preference_table(151936, 3584, [2048, 8192] if quick else
                                                              [2048, 8192, 16384], 512, "cuda", bf16))
    else:
        print("\nCUDA is not available: the GPU tables (LoRA vs peft, two adapters in one launch,"
              " preference loss vs naive and Liger) were not run.")
    return results


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes: check that every table runs")
    parser.add_argument("--quick", action="store_true", help="GPU tables at fewer row counts (for gpu_check.py)")
    parser.add_argument("--tables", default=",".join(TABLES), help=f"comma-separated subset of {','.join(TABLES)}")
    parser.add_argument("--json", default=None, help="also write the tables' rows to this JSON file")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per CPU case (>= 1)")
    parser.add_argument("--cpu-case", nargs=2, metavar=("KIND", "IMPL"), help=argparse.SUPPRESS)
    parser.add_argument("--case", type=json.loads, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--head-grad", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be >= 1")
    tables = [t.strip() for t in args.tables.split(",") if t.strip()]
    if not tables or any(t not in TABLES for t in tables):
        parser.error(f"--tables must be a comma-separated subset of {','.join(TABLES)}, got {args.tables!r}")
    if args.json:  # before the tables, which take minutes
        check_output_path("--json", args.json, "file", example="kernels.json")
    if args.cpu_case:
        kind, impl = args.cpu_case
        print(json.dumps(measure_cpu_case(kind, impl, head_grad=args.head_grad, reps=args.reps, **args.case)))
        return {}

    print(f"# redgame.kernels benchmarks ({time.strftime('%Y-%m-%d %H:%M %Z')}, torch {torch.__version__}, "
          f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')})")
    results = run_tables(tables, args.smoke, args.quick, args.reps)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_text_atomically(args.json, strict_json(results))
    return results


if __name__ == "__main__":
    from redgame.cli import script_main

    raise SystemExit(script_main("kernel_tables", main))
