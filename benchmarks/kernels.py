"""Ratio tables for redgame.kernels against named baselines, printed in one run.

    python benchmarks/kernels.py                # CPU table; the GPU tables too when CUDA is available
    python benchmarks/kernels.py --smoke        # every table at tiny shapes on this machine
    TRITON_INTERPRET=1 python benchmarks/kernels.py --smoke   # ... with the Triton kernels interpreted

CPU table (the torch reference path, issue #4): token log-probs forward + backward at the
embedded model's head (V=49,152, d=576) with N=2,048 rows, fp32, frozen and trained head:
redgame's chunked path against naive logits + log_softmax + gather. Each case runs in a
fresh subprocess. Peak resident memory growth = VmHWM after the measured call (the
high-water mark is reset through /proc/self/clear_refs just before it) minus VmRSS before
it; inputs are allocated and one warm-up call is made first, and glibc runs with a fixed
mmap threshold so that freed memory leaves the resident set. Goal: >= 5x lower than naive.

GPU tables (bf16; goals on H100): LoRA fused vs peft (forward, backward, full) at
Qwen2.5-7B shapes with the roofline fraction; two adapters in one launch vs two
`set_adapter` passes; DPO on token log-probs vs naive and Liger at V=151,936.
Times are medians (with 20%/80% quantiles in the detail columns) from triton.testing.do_bench;
peak memory is torch.cuda.max_memory_allocated growth over the inputs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch

from redgame.kernels import lora_linear, multi_lora_linear, preference_loss, token_logprobs
from redgame.kernels.reference import token_logprobs_naive

CPU_CASE = dict(n=2048, v=49152, d=576)
CPU_SMOKE_CASE = dict(n=64, v=4099, d=32)
MEMORY_GOAL_CPU = 5.0
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


def measure_cpu_case(impl: str, n: int, v: int, d: int, head_grad: bool, reps: int) -> dict:
    """One token-log-probs case in this (fresh) process: peak RSS growth and timings."""
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(n, d, generator=gen, requires_grad=True)
    head = (torch.randn(v, d, generator=gen) / d**0.5).requires_grad_(head_grad)
    targets = torch.randint(0, v, (n,), generator=gen)
    fn = token_logprobs_naive if impl == "naive" else token_logprobs

    def fwd_bwd():
        fn(hidden, head, targets).sum().backward()
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


def cpu_memory_table(case: dict, reps: int) -> None:
    print(f"\n## token log-probs fwd+bwd on CPU (reference path), N={case['n']}, V={case['v']}, d={case['d']}, fp32, "
          f"{torch.get_num_threads()} threads, {reps} reps")
    print(f"{'head':<8} {'impl':<8} {'peak RSS growth MiB':>20} {'median s':>9} {'min s':>7} {'max s':>7}"
          f" {'naive/redgame memory':>21} {'time ratio':>10}")
    # A fixed mmap threshold turns off glibc's dynamic one, so freed blocks leave the resident
    # set at once and the warm-up call's freed memory cannot hide the measured call's peak.
    env = dict(os.environ, TRITON_INTERPRET="0", MALLOC_MMAP_THRESHOLD_="65536")
    for head_grad in (False, True):
        results = {}
        for impl in ("naive", "redgame"):
            cmd = [sys.executable, __file__, "--cpu-case", impl, "--reps", str(reps),
                   "--case", json.dumps(case)] + (["--head-grad"] if head_grad else [])
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            results[impl] = json.loads(out.strip().splitlines()[-1])
        for impl, res in results.items():
            med = statistics.median(res["times"])
            ratio = results["naive"]["peak_growth_mib"] / max(results["redgame"]["peak_growth_mib"], 1e-9)
            time_ratio = med / statistics.median(results["naive"]["times"])
            print(f"{'trained' if head_grad else 'frozen':<8} {impl:<8} {res['peak_growth_mib']:20.1f} {med:9.3f}"
                  f" {min(res['times']):7.3f} {max(res['times']):7.3f}"
                  f" {(f'{ratio:.1f}x' if impl == 'redgame' else ''):>21} {time_ratio:9.2f}x")
    print(f"goal: >= {MEMORY_GOAL_CPU:.0f}x lower peak resident memory growth than naive")


# ----------------------------------------------------------------------------- timing helpers
def time_ms(fn, grad_to_none=()):
    """(median, q20, q80) milliseconds: do_bench on CUDA, a perf_counter loop elsewhere."""
    if torch.cuda.is_available():
        from triton.testing import do_bench

        return tuple(do_bench(fn, grad_to_none=list(grad_to_none), quantiles=[0.5, 0.2, 0.8]))
    times = []
    for _ in range(5):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
        for t in grad_to_none:
            t.grad = None
    q = statistics.quantiles(times, n=5)
    return statistics.median(times), q[0], q[-1]


def peak_mib(fn):
    """Peak CUDA memory growth over what is allocated now, in MiB; None off CUDA."""
    if not torch.cuda.is_available():
        return None
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


def lora_table(shapes, ranks, rows, device, dtype):
    print(f"\n## LoRA linear, fused vs peft, {dtype}, {device}: time ratios peft/fused (> 1 = fused faster)")
    print(f"{'K->N':<12} {'r':>3} {'M':>6} {'fwd':>6} {'bwd':>6} {'full':>6} {'fused full ms':>14}"
          f" {'peft full ms':>13} {'roofline':>9} {'max err':>8}")
    peaks = _peaks()
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
                    res[name] = (fwd[0], bwd[0], full)
                flops = 4 * m * n * k + 6 * m * k * r + 6 * m * n * r
                nbytes = x.element_size() * (3 * m * k + 2 * n * k + 3 * m * n)
                roof = "-"
                if peaks:
                    roof = f"{100 * max(flops / peaks[0], nbytes / peaks[1]) * 1e3 / res['fused'][2][0]:.0f}%"
                ratios = [res["peft"][i] / res["fused"][i] for i in (0, 1)]
                ratios.append(res["peft"][2][0] / res["fused"][2][0])
                print(f"{f'{k}->{n}':<12} {r:>3} {m:>6} {ratios[0]:6.2f} {ratios[1]:6.2f} {ratios[2]:6.2f}"
                      f" {res['fused'][2][0]:14.3f} {res['peft'][2][0]:13.3f} {roof:>9} {err:8.1e}")
    print("goal (H100, bf16): full >= 1.3x faster than peft and >= 70% of the roofline"
          " (roofline = max(FLOPs / peak, bytes / bandwidth) for the useful FLOPs and one pass over each tensor)")


def multi_lora_table(shapes, ranks, rows, device, dtype):
    print(f"\n## two adapters in one launch vs two passes (half the rows each), fwd+bwd, {dtype}, {device}")
    print(f"{'K->N':<12} {'r':>3} {'M':>6} {'multi ms':>9} {'2x peft set_adapter ms':>23} {'ratio':>6}"
          f" {'2x fused single ms':>19} {'ratio':>6}")
    for k, n in shapes:
        for r in ranks:
            layer = _peft_layer(k, n, r, ["attacker", "defender"], device, dtype)
            w = layer.base_layer.weight
            names = ("attacker", "defender")
            a_stack = torch.stack([layer.lora_A[s].weight.detach() for s in names]).requires_grad_()
            b_stack = torch.stack([layer.lora_B[s].weight.detach() for s in names]).requires_grad_()
            scales = [layer.scaling[s] for s in names]
            for m in rows:
                x = torch.randn(m, k, device=device, dtype=dtype, requires_grad=True)
                dy = torch.randn(m, n, device=device, dtype=dtype)
                seg = torch.arange(m, device=device) * 2 // m  # first half attacker, second half defender
                half = m // 2

                def multi():
                    multi_lora_linear(x, w, a_stack, b_stack, scales, seg).backward(dy)

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

                params = [x, a_stack, b_stack] + [p for p in layer.parameters() if p.requires_grad]
                t_multi = time_ms(multi, params)[0]
                t_peft = time_ms(peft_passes, params)[0]
                t_fused = time_ms(fused_passes, params)[0]
                print(f"{f'{k}->{n}':<12} {r:>3} {m:>6} {t_multi:9.3f} {t_peft:23.3f} {t_peft / t_multi:6.2f}"
                      f" {t_fused:19.3f} {t_fused / t_multi:6.2f}")
    print("goal (H100, bf16): one launch >= 1.6x faster than two passes")


# ----------------------------------------------------------------------------- preference loss table
def preference_table(v, d, rows, seq, device, dtype):
    print(f"\n## DPO on token log-probs, fwd+bwd (policy + reference), V={v}, d={d}, seq={seq}, frozen head,"
          f" {dtype}, {device}")
    print(f"{'N':>6} {'redgame ms':>11} {'naive ms':>9} {'liger ms':>9} {'redgame/liger':>14}"
          f" {'redgame MiB':>12} {'naive MiB':>10} {'liger MiB':>10} {'naive/redgame mem':>18} {'loss diff':>10}")
    try:
        from liger_kernel.chunked_loss import LigerFusedLinearDPOLoss
    except ImportError:
        LigerFusedLinearDPOLoss = None
    gen = torch.Generator(device=device).manual_seed(0)
    head = (torch.randn(v, d, device=device, generator=gen) / d**0.5).to(dtype)
    for n in rows:
        pairs = n // (2 * seq)
        hidden = torch.randn(n, d, device=device, generator=gen).to(dtype).requires_grad_()
        ref_hidden = torch.randn(n, d, device=device, generator=gen).to(dtype)
        targets = torch.randint(0, v, (n,), device=device, generator=gen)

        def loss_with(logprob_fn):
            def run():
                pol = logprob_fn(hidden, head, targets).view(2 * pairs, seq).sum(1)
                with torch.no_grad():
                    ref = logprob_fn(ref_hidden, head, targets).view(2 * pairs, seq).sum(1)
                return preference_loss(pol[:pairs], pol[pairs:], ref[:pairs], ref[pairs:], beta=0.1)
            return run

        impls = {"redgame": loss_with(token_logprobs), "naive": loss_with(token_logprobs_naive)}
        if LigerFusedLinearDPOLoss is not None:
            liger = LigerFusedLinearDPOLoss(beta=0.1, compiled=torch.cuda.is_available(), use_ref_model=True)
            impls["liger"] = lambda: liger(head, hidden.view(2 * pairs, seq, d), targets.view(2 * pairs, seq),
                                           ref_input=ref_hidden.view(2 * pairs, seq, d), ref_weight=head)[0]
        losses = {name: fn().item() for name, fn in impls.items()}
        times = {name: time_ms(lambda fn=fn: fn().backward(), [hidden])[0] for name, fn in impls.items()}
        mems = {name: peak_mib(lambda fn=fn: fn().backward()) for name, fn in impls.items()}
        hidden.grad = None
        diff = max(abs(value - losses["naive"]) for value in losses.values())
        lt, lm = times.get("liger"), mems.get("liger")
        liger_ms = "-" if lt is None else f"{lt:.2f}"
        vs_liger = "-" if lt is None else f"{times['redgame'] / lt:.2f}"
        mem_ratio = "-" if mems["redgame"] is None else f"{mems['naive'] / max(mems['redgame'], 1e-9):.1f}x"
        print(f"{n:>6} {times['redgame']:11.2f} {times['naive']:9.2f} {liger_ms:>9} {vs_liger:>14}"
              f" {_fmt_mib(mems['redgame']):>12} {_fmt_mib(mems['naive']):>10} {_fmt_mib(lm):>10}"
              f" {mem_ratio:>18} {diff:10.1e}")
    print("goal (H100, bf16): peak memory >= 20x below naive at 8k tokens; time <= 0.8x Liger with a frozen head")


# ----------------------------------------------------------------------------- main
def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny shapes: check that every table runs")
    parser.add_argument("--reps", type=int, default=3, help="timed repetitions per CPU case (>= 1)")
    parser.add_argument("--cpu-case", choices=["naive", "redgame"], help=argparse.SUPPRESS)
    parser.add_argument("--case", type=json.loads, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--head-grad", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.reps < 1:
        parser.error("--reps must be >= 1")
    if args.cpu_case:
        print(json.dumps(measure_cpu_case(args.cpu_case, head_grad=args.head_grad, reps=args.reps, **args.case)))
        return

    print(f"# redgame.kernels benchmarks ({time.strftime('%Y-%m-%d %H:%M %Z')}, torch {torch.__version__}, "
          f"TRITON_INTERPRET={os.environ.get('TRITON_INTERPRET', '0')})")
    cpu_memory_table(CPU_SMOKE_CASE if args.smoke else CPU_CASE, 1 if args.smoke else args.reps)
    if args.smoke:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        dtype = torch.bfloat16 if device == "cuda" else torch.float32
        lora_table([(64, 96)], [8], [37], device, dtype)
        multi_lora_table([(64, 96)], [8], [38], device, dtype)
        preference_table(1009, 32, [64], 16, device, dtype)
    elif torch.cuda.is_available():
        print(f"\nGPU: {torch.cuda.get_device_name()}")
        qwen7b = [(3584, 3584), (3584, 18944), (18944, 3584)]
        lora_table(qwen7b, [16, 64], [512, 4096, 16384], "cuda", torch.bfloat16)
        multi_lora_table(qwen7b[:2], [16, 64], [4096, 16384], "cuda", torch.bfloat16)
        preference_table(151936, 3584, [2048, 8192, 16384], 512, "cuda", torch.bfloat16)
    else:
        print("\nCUDA is not available: the GPU tables (LoRA vs peft, two adapters in one launch,"
              " preference loss vs naive and Liger) were not run.")


if __name__ == "__main__":
    main()
