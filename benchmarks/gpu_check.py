"""GPU acceptance check: every kernel against float64, large offsets, the kernel benchmarks, a short game; one folder.

    python benchmarks/gpu_check.py --out runs/gpu_check            # one CUDA GPU: < 8 minutes on an H200
    python benchmarks/gpu_check.py --out runs/gpu_check --budget 530   # under `timeout 545`: the game
                                                                   # section fits its runs into what is left
    python benchmarks/gpu_check.py --out runs/gpu_check --smoke    # tiny shapes; on a CPU the Triton
                                                                   # kernels run in Triton's interpreter

Needs torch, triton, peft and transformers (liger-kernel optional: its DPO loss joins the
preference table; on a machine without network, a wheel of it in the checkout's ``.whl/`` folder is
installed into a temporary folder first, with pip, offline; the game section also uses safetensors,
and tensorboard and the embedded judge's package where installed); redgame need not be installed,
the checkout's packages are imported from this repository. Writes to --out:

- gpu_check.json: each section's status, seconds, headline and data;
- gpu_check.md: a summary table, then each section's notes;
- gpu_check.log: everything printed;
- gpu_game_runs.json (the game section, on a GPU): each game run's metrics, as it finishes.

A section is a function `section(ctx) -> dict(status="pass" | "fail" | "skip", headline=str,
notes=[markdown lines], data=<JSON>)`, listed in SECTIONS and run in order; one that raises
is recorded as failed and the rest still run. Each section after the environment runs in a
process of its own (this script again, for that section alone), so that a kernel that faults on the GPU,
which leaves its process's CUDA context unusable, costs its own section and not the ones after
it. Add one by writing such a function and appending it to SECTIONS. The exit status is 1 if
any section failed.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import os
import platform
import sys
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- set-up
def import_checkout() -> None:
    """Make `import redgame...` load this checkout, installed or not (the repo folders are its subpackages)."""
    try:
        import redgame.kernels  # noqa: F401
        return
    except ImportError:
        pass
    spec = importlib.util.spec_from_file_location(
        "redgame", REPO / "redgame" / "__init__.py", submodule_search_locations=[str(REPO / "redgame"), str(REPO)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["redgame"] = module
    spec.loader.exec_module(module)


class Tee(io.TextIOBase):
    """Write to the console and the log file at once."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text):
        for stream in self.streams:
            stream.write(text)
            stream.flush()
        return len(text)


@dataclass
class Context:
    out: Path
    smoke: bool
    device: str
    data: dict = field(default_factory=dict)
    deadline: float | None = None  # time.monotonic() by which the whole run must end (--budget)

    def seconds_left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()


def install_carried_wheels() -> str:
    """liger-kernel from a wheel in the checkout's ``.whl/`` (a GPU machine has no network) into a
    temporary folder, on this process's path and its children's; what was done, in words."""
    import glob
    import subprocess
    import tempfile

    if importlib.util.find_spec("liger_kernel") is not None:
        return "liger-kernel installed"
    wheels = sorted(glob.glob(str(REPO / ".whl" / "liger_kernel-*.whl")))
    if not wheels:
        return "no liger-kernel, and no wheel of it in .whl/"
    target = Path(tempfile.mkdtemp(prefix="liger-"))
    done = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-index", "--no-deps", "--target",
                           str(target), wheels[-1]], capture_output=True, text=True)
    if done.returncode != 0:
        return f"installing {Path(wheels[-1]).name} failed: {(done.stderr or done.stdout).strip()[-300:]}"
    sys.path.insert(0, str(target))
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(target), os.environ.get("PYTHONPATH")]))
    importlib.invalidate_caches()
    return f"installed {Path(wheels[-1]).name} into {target}"


def _status(ok: bool) -> str:
    return "pass" if ok else "fail"


# ----------------------------------------------------------------------------- sections
def section_environment(ctx: Context) -> dict:
    """Versions, the device and the checkout."""
    import torch
    import triton

    info = dict(python=platform.python_version(), torch=torch.__version__, cuda=torch.version.cuda,
                triton=triton.__version__, device=ctx.device, interpreter=os.environ.get("TRITON_INTERPRET", "0"),
                liger=_version("liger_kernel"), commit=_run_quietly(["git", "-C", str(REPO), "rev-parse", "HEAD"]))
    for name in ("peft", "transformers"):
        info[name] = __import__(name).__version__
    if ctx.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        info.update(gpu=props.name, sms=props.multi_processor_count, memory_gib=round(props.total_memory / 2**30, 1),
                    driver=_run_quietly(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]))
    print(json.dumps(info, indent=1))
    headline = info.get("gpu", "CPU (Triton interpreter)" if info["interpreter"] == "1" else "CPU")
    return dict(status="pass", headline=f"{headline}; torch {info['torch']}, triton {info['triton']}",
                notes=[f"- {k}: {v}" for k, v in info.items()], data=info)


def _version(module: str) -> str | None:
    """The installed version of ``module``'s distribution (found on the path, as a carried wheel is); None without."""
    if importlib.util.find_spec(module) is None:
        return None
    from importlib import metadata

    try:
        return metadata.version(module.replace("_", "-"))
    except metadata.PackageNotFoundError:
        return "installed (version unknown)"


def _run_quietly(cmd: list[str]) -> str | None:
    """A short command's first line of output; None where it is missing, fails or takes over 10 s."""
    import subprocess

    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip().splitlines()[0] if done.returncode == 0 and done.stdout.strip() else None


def _precision_variants(ctx: Context):
    """(label, dtype, tf32 dots) to check: fp32 with TF32 and with IEEE dots on a GPU, and bf16."""
    import torch

    if ctx.device == "cuda":
        return [("fp32, TF32 dots", torch.float32, True), ("fp32, IEEE dots", torch.float32, False),
                ("bf16", torch.bfloat16, False)]
    return [("fp32", torch.float32, False), ("bf16", torch.bfloat16, False)]


def section_kernel_checks(ctx: Context) -> dict:
    """Every kernel's forward and backward against float64 at odd shapes, per dtype; then every GPU config."""
    import torch

    from redgame.kernels import checks

    rows = []
    gen = torch.Generator().manual_seed(0)
    # At these tiny shapes autotuning would only cost compile time: one config each (all of them below).
    with checks.gpu_configs_at(0) if ctx.device == "cuda" else contextlib.nullcontext():
        for label, dtype, tf32 in _precision_variants(ctx):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            for name, case in checks.CASES.items():
                for c in case(gen, ctx.device, dtype, tf32=tf32):
                    rows.append(dict(variant=label, case=name, what=c.what, error=c.error, bound=c.bound, ok=c.ok))
                    print(f"{label:<16} {name:<32} {c.what:<20} {c.error:9.2e} <= {c.bound:7.1e}  {_status(c.ok)}")
    torch.backends.cuda.matmul.allow_tf32 = False
    if ctx.device == "cuda":  # the interpreter tests run these too (tests/kernels/test_gpu_configs.py)
        rows += _every_gpu_config(gen, ctx.device)
    failed = [r for r in rows if not r["ok"]]
    worst = {}
    for r in rows:
        key = (r["variant"], r["case"])
        worst[key] = max(worst.get(key, (0.0, r["bound"])), (r["error"], r["bound"]))
    notes = ["| dtype | kernel | worst relative error | bound |", "|---|---|---|---|"]
    notes += [f"| {v} | {c} | {e:.2e} | {b:.0e} |" for (v, c), (e, b) in worst.items()]
    return dict(status=_status(not failed), headline=f"{len(rows) - len(failed)}/{len(rows)} outputs and gradients "
                f"within tolerance", notes=notes, data=rows)


def _every_gpu_config(gen, device) -> list[dict]:
    """Config i of every kernel, bf16: each config the autotuner may pick is correct."""
    import torch

    from redgame.kernels import checks

    rows = []
    for index in range(checks.gpu_config_count()):
        with checks.gpu_configs_at(index):
            for name, case in checks.CASES.items():
                for c in case(gen, device, torch.bfloat16):
                    rows.append(dict(variant=f"bf16, config {index}", case=name, what=c.what, error=c.error,
                                     bound=c.bound, ok=c.ok))
        print(f"config {index}: {sum(r['ok'] for r in rows)}/{len(rows)} within tolerance so far")
    return rows


def section_large_offsets(ctx: Context) -> dict:
    """Index products past 2³¹: LoRA with M·N > 2³¹ and token log-probs with V·d > 2³¹ (GPU only)."""
    if ctx.device != "cuda":
        return dict(status="skip", headline="needs a GPU (tensors of 2³¹ elements)", notes=[], data={})
    import torch

    from redgame.kernels import checks, lora_linear, token_logprobs
    from redgame.kernels.logprobs import TRITON_PASSES, use_triton_pass
    from redgame.kernels.reference import token_logprobs_naive

    gen = torch.Generator(device="cuda").manual_seed(0)
    rows = []
    m, n, k, r = 1 << 17, (1 << 14) + 3, 64, 16  # y has M·N = 2.1e9 > 2³¹ elements
    x = torch.randn(m, k, device="cuda", generator=gen).bfloat16().requires_grad_()
    w = (torch.randn(n, k, device="cuda", generator=gen) / k**0.5).bfloat16()
    a = (torch.randn(r, k, device="cuda", generator=gen) / k**0.5).bfloat16()
    b = (torch.randn(n, r, device="cuda", generator=gen) / r**0.5).bfloat16()
    y = lora_linear(x, w, a, b, 2.0)
    picked = torch.cat([torch.arange(256, device="cuda"), torch.arange(m - 256, m, device="cuda")])
    xs = x.detach()[picked].float()
    want = xs @ w.float().T + 2.0 * (xs @ a.float().T) @ b.float().T
    rows.append(checks.compare(y.detach()[picked], want, torch.bfloat16, f"LoRA y, M·N = {m * n:.2e}"))
    (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
    ones = torch.ones(len(picked), n, device="cuda")
    want_dx = ones @ w.float() + 2.0 * (ones @ b.float()) @ a.float()
    rows.append(checks.compare(dx[picked], want_dx, torch.bfloat16, "LoRA dx, last rows"))
    del x, y, dx
    vocab, d, tokens = (1 << 19) + 5, 4096, 37  # the head has V·d = 2.1e9 > 2³¹ elements
    head = (torch.randn(vocab, d, device="cuda", generator=gen) / d**0.5).bfloat16()
    hidden = torch.randn(tokens, d, device="cuda", generator=gen).bfloat16().requires_grad_()
    targets = torch.randint(0, vocab, (tokens,), device="cuda", generator=gen)
    targets[:4] = vocab - 1
    h32 = hidden.detach().float().requires_grad_()
    want = token_logprobs_naive(h32, head.float(), targets)
    (want_dh,) = torch.autograd.grad(want.sum(), h32)
    for name in TRITON_PASSES:  # the gemm pass's index products are cuBLAS's; the online pass's its own
        with use_triton_pass(name):
            out = token_logprobs(hidden, head, targets)
            (dh,) = torch.autograd.grad(out.sum(), hidden)
        rows.append(checks.compare(out, want, torch.bfloat16, f"log p, V·d = {vocab * d:.2e}, {name} pass"))
        rows.append(checks.compare(dh, want_dh, torch.bfloat16, f"log p, d hidden, {name} pass"))
    for c in rows:
        print(f"{c.what:<32} {c.error:9.2e} <= {c.bound:7.1e}  {_status(c.ok)}")
    return dict(status=_status(all(c.ok for c in rows)), headline=", ".join(f"{c.what}: {c.error:.1e}" for c in rows),
                notes=[f"- {c.what}: relative error {c.error:.2e} (bound {c.bound:.0e})" for c in rows],
                data=[c.__dict__ for c in rows])


def section_kernel_benchmarks(ctx: Context) -> dict:
    """benchmarks/kernel_tables.py: on a GPU its GPU tables (--quick); --smoke: every table, tiny shapes."""
    spec = importlib.util.spec_from_file_location("kernel_benchmarks", REPO / "benchmarks" / "kernel_tables.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--smoke"] if ctx.smoke else ["--tables", "gpu", "--quick"]  # the FLOP counts need no GPU
    tables = bench.main(argv)
    notes, headline = _benchmark_headlines(tables)
    failed = any("error" in row for rows in tables.values() for row in rows)
    if ctx.smoke and not failed:
        headline = "every table ran at tiny shapes (smoke: the timings mean nothing)"
    return dict(status=_status(not failed), headline=headline, notes=notes, data=tables)


def _failed_row(table: str, row: dict) -> str:
    where = f"{row['impl']} at N={row['n']}" if "impl" in row else "the whole table"
    return f"- {table}: {where} failed: {row['error']}"


def _benchmark_headlines(tables: dict):
    """A few ratios from the tables (the full tables are in the log and the JSON); a row that failed is named."""
    notes = [_failed_row(name, row) for name, rows in tables.items() for row in rows if "error" in row]
    measured = {name: [row for row in rows if "error" not in row] for name, rows in tables.items()}
    if measured.get("lora"):
        ratios = [row["peft_ms"][2] / row["fused_ms"][2] for row in measured["lora"]]
        notes.append(f"- LoRA fused vs peft, fwd+bwd: {min(ratios):.2f}x to {max(ratios):.2f}x (> 1: fused faster)")
    if measured.get("multi_lora"):
        ratios = [row["peft_two_passes_ms"] / row["sgmv_ms"] for row in measured["multi_lora"]]
        eight = [row["sgmv_eight_adapters_ms"] / row["sgmv_ms"] for row in measured["multi_lora"]]
        notes.append(f"- SGMV vs two set_adapter passes: {min(ratios):.2f}x to {max(ratios):.2f}x; "
                     f"8 adapters / 2 adapters time: {min(eight):.2f} to {max(eight):.2f}")
    by_n = {}
    for row in measured.get("preference", []):
        by_n.setdefault(row["n"], {})[row["impl"]] = row
    for n, impls in by_n.items():
        ours = impls.get("redgame fused_preference_loss")
        if ours is None:
            continue
        parts = [f"{name}: {row['ms'] / ours['ms']:.2f}x time" + (
            f", {row['peak_mib'] / max(ours['peak_mib'], 1e-9):.1f}x memory" if ours["peak_mib"] else "")
            for name, row in impls.items() if row is not ours]
        notes.append(f"- preference loss, N={n}: fused {ours['ms']:.1f} ms; " + "; ".join(parts))
    return notes, (notes[0][2:] if notes else "tables printed to the log")


def section_game(ctx: Context) -> dict:
    """The LLM game on the tiny model with --device cuda, kernels on vs off (benchmarks/gpu_game.py)."""
    if ctx.smoke and ctx.device != "cuda":
        # Four tiny games with every LoRA layer in Triton's interpreter take many minutes on a CPU;
        # `python benchmarks/gpu_game.py --smoke` (tests/llm/test_gpu_game.py) runs this section on
        # the CPU's torch path, and tests/kernels/test_peft_patch.py the update in the interpreter.
        return dict(status="skip", headline="smoke on a CPU: run benchmarks/gpu_game.py --smoke for this section",
                    notes=[], data={})
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from gpu_game import section_game as game

    return game(ctx)


SECTIONS = [section_environment, section_kernel_checks, section_large_offsets, section_kernel_benchmarks, section_game]


# ----------------------------------------------------------------------------- main
def _name(section) -> str:
    return section.__name__.removeprefix("section_")


def run_sections(ctx: Context, sections, report=None, isolate: bool = False) -> list[dict]:
    """Run each section in order (with ``isolate``, each after the environment in a process of its own);
    `report(results)` after each, so a run killed halfway keeps what it finished."""
    results = []
    for section in sections:
        name = _name(section)
        print(f"\n## {name}: {section.__doc__.splitlines()[0]}")
        start = time.perf_counter()
        try:
            if ctx.seconds_left() <= 0:  # past --budget, a section would be killed halfway and lost
                result = dict(status="skip", headline="not started: --budget ran out", notes=[], data={})
            elif isolate and section is not section_environment:
                result = run_apart(ctx, name)
            else:
                result = run_one(ctx, section)
        except Exception:  # run_apart's own failure (it could not start the process)
            print(traceback.format_exc())
            result = dict(status="fail", headline=traceback.format_exc().strip().splitlines()[-1], notes=[], data={})
        result = dict(name=name, seconds=round(time.perf_counter() - start, 1), **result)
        print(f"-> {result['status']} in {result['seconds']} s: {result['headline']}")
        results.append(result)
        if report is not None:
            report(results)
    return results


def run_one(ctx: Context, section) -> dict:
    """``section(ctx)``; one that raises is a failed result, with its traceback printed."""
    try:
        return section(ctx)
    except Exception:  # a broken section is a result, not the end of the run
        print(traceback.format_exc())
        return dict(status="fail", headline=traceback.format_exc().strip().splitlines()[-1], notes=[], data={})


def run_apart(ctx: Context, name: str) -> dict:
    """Section ``name`` in a child process (this script with --result), which writes its files (the game's
    gpu_game_runs.json) into this run's folder and prints into this run's log; its result, or a failure naming
    how the process ended."""
    import subprocess
    import tempfile

    with tempfile.TemporaryDirectory(prefix=f"gpu_check_{name}_") as folder:
        result_file = Path(folder) / "result.json"
        cmd = [sys.executable, str(Path(__file__).resolve()), "--out", str(ctx.out), "--sections", name,
               "--result", str(result_file)]
        cmd += ["--smoke"] if ctx.smoke else []
        cmd += [] if ctx.deadline is None else ["--budget", f"{max(ctx.seconds_left(), 1.0):.1f}"]
        # unbuffered: what a section printed reaches the log even where its process is killed or crashes
        with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"}) as child:
            for line in child.stdout:
                print(line, end="")
        try:
            return json.loads(result_file.read_text())
        except (OSError, ValueError):
            return dict(status="fail", headline=f"its process ended with exit status {child.returncode} and no "
                        "result", notes=[], data={})


def write_report(out: Path, results: list[dict], started: str, command: list[str]) -> None:
    """gpu_check.json and gpu_check.md, each replaced whole (a kill midway leaves the previous one)."""
    from redgame.jsonio import write_text_atomically

    write_text_atomically(out / "gpu_check.json", json.dumps(dict(started=started, command=command, sections=results),
                                                             indent=1, default=str))
    lines = [f"# GPU check, {started}", "", f"`{' '.join(command)}`", "",
             "| section | status | seconds | headline |", "|---|---|---|---|"]
    lines += [f"| {r['name']} | {r['status']} | {r['seconds']} | {r['headline']} |" for r in results]
    for r in results:
        if r["notes"]:
            lines += ["", f"## {r['name']}", "", *r["notes"]]
    write_text_atomically(out / "gpu_check.md", "\n".join(lines) + "\n")


def main(argv=None) -> int:
    begun = time.monotonic()  # --budget counts from here, start-up (imports) included
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for gpu_check.json, gpu_check.md and gpu_check.log")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes (a check of this script, not of a GPU)")
    parser.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                        help="seconds the whole run may take (under `timeout 545`: 530): no section starts past "
                             "it, and the game section fits its runs into what is left and records the ones it "
                             "had to stop; the sections before the game are not stopped midway")
    parser.add_argument("--in-process", action="store_true",
                        help="run every section in this process (a GPU fault in one then fails the ones after it)")
    parser.add_argument("--result", default=None, help=argparse.SUPPRESS)  # run_apart's child: one section's result
    parser.add_argument("--sections", default=",".join(_name(s) for s in SECTIONS),
                        help="comma-separated sections to run, in this order (default: all): "
                             + ", ".join(_name(s) for s in SECTIONS))
    args = parser.parse_args(argv)
    by_name = {_name(s): s for s in SECTIONS}
    unknown = [n for n in args.sections.split(",") if n not in by_name]
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(by_name)}")
    sections = [by_name[n] for n in args.sections.split(",")]
    import torch  # does not import triton; peft does, so TRITON_INTERPRET is decided before anything else

    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.smoke:
        parser.error("no CUDA device: run with --smoke to check the script on a CPU")
    if device == "cpu":
        os.environ["TRITON_INTERPRET"] = "1"
    import_checkout()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    deadline = None if args.budget is None else begun + args.budget
    ctx = Context(out=out, smoke=args.smoke, device=device, deadline=deadline)
    if args.result:  # a section in a process of its own: it prints into the parent's log, and the parent reports
        from redgame.jsonio import write_text_atomically

        (section,) = sections
        result = run_one(ctx, section)
        write_text_atomically(args.result, json.dumps(result, default=str))
        return 1 if result["status"] == "fail" else 0
    with open(out / "gpu_check.log", "w") as log, contextlib.redirect_stdout(Tee(sys.stdout, log)):
        print(f"# gpu_check {'--smoke ' if args.smoke else ''}started {started}")
        print(install_carried_wheels())
        command = ["python", *sys.argv] if argv is None else ["gpu_check.py", *argv]
        results = run_sections(ctx, sections, report=lambda done: write_report(out, done, started, command),
                               isolate=not args.in_process)
        print(f"\n# done: {sum(r['seconds'] for r in results):.0f} s; "
              + ", ".join(f"{r['name']} {r['status']}" for r in results))
    return 1 if any(r["status"] == "fail" for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
