"""Golden-model rates on a 4096 x 4096 FP16 tensor against torchao's MXFP4, and the exact linear
product against dequantize + float32 matmul, with the ratios golden/kernels.py is built to meet.

    python -m bench.golden_throughput [--rows 4096] [--cols 4096] [--repeats 3] [--threads 1]
                                      [--linear-rows 128] [--linear-out 2048] [--reference] [--json FILE]

Quantize and dequantize run on the ``--rows`` x ``--cols`` tensor; ``bd.linear`` multiplies
``--linear-rows`` x ``--cols`` two-stage activations by ``--linear-out`` x ``--cols`` MSE weights.
Every figure is the median of ``--repeats`` calls after a warm-up call, on ``--threads`` threads (the
targets are stated for one). ``--reference`` adds the eager reference path of ``golden.bd`` (one
timed call each, no warm-up: the MSE reference alone takes tens of seconds).

Targets (issue 12, one thread): two-stage quantize >= 10x the rate of torchao's MXFP4 ``to_mx`` +
``dequantize``, MSE quantize >= 1x, dequantize >= 5x; ``bd.linear`` <= 2x the time of
``bd.dequantize`` of both operands + float32 matmul. Issue 25: ``bd.linear`` with ``accumulate="fp32"``
or ``"fp16"`` (SPEC 6.1) <= 2x the time of the exact one.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, NamedTuple

import torch

from golden import baselines, bd, exact, native

TORCHAO_NAME = "torchao MXFP4 to_mx + dequantize (B=32)"
GOLDEN_MXFP4_NAME = "golden MXFP4 fake-quantize (B=32)"
TWO_STAGE_NAME = "bd two-stage quantize"
LINEAR_NAME = "bd.linear (exact)"
ACCUMULATE_NAMES = {mode: f"bd.linear (accumulate={mode})" for mode in ("fp32", "fp16")}   # SPEC 6.1
LINEAR_BASE_NAME = "bd.dequantize x2 + float32 matmul"

# name of the measured operation -> (name of the operation it is compared with, how, target).
# "rate": the rate ratio must be at least the target; "time": the time ratio at most the target.
TARGETS = {
    "bd two-stage quantize": (TORCHAO_NAME, "rate", 10.0),
    "bd MSE quantize": (TORCHAO_NAME, "rate", 1.0),
    "bd dequantize": (TORCHAO_NAME, "rate", 5.0),
    LINEAR_NAME: (LINEAR_BASE_NAME, "time", 2.0),
    **{name: (LINEAR_NAME, "time", 2.0) for name in ACCUMULATE_NAMES.values()},   # issue 25
}


class Rate(NamedTuple):
    name: str
    seconds: float            # median wall time of one call
    elements_per_second: float


def time_call(fn: Callable[[], object], repeats: int, warmup: bool = True) -> float:
    """Median wall time of `repeats` calls, after one warm-up call unless `warmup` is False."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def torchao_mx_call(x: torch.Tensor) -> Callable[[], object] | None:
    """torchao's MXFP4 (E2M1 elements, E8M0 scale per 32) quantize + dequantize of ``x``, or None
    without torchao. ``to_mx`` rejects FP16, so it gets the FP32 copy, made here, outside the timing."""
    try:
        from torchao.prototype.mx_formats.mx_tensor import MXTensor
    except ImportError:
        return None
    x32 = x.to(torch.float32)
    return lambda: MXTensor.to_mx(x32, torch.float4_e2m1fn_x2, 32).dequantize(torch.float32)


def golden_rates(x: torch.Tensor, repeats: int = 3, reference: bool = False) -> list[Rate]:
    """Times BlockDialect quantization (every method), dequantization, golden MXFP4 and torchao's
    MXFP4 on `x`; with `reference`, also the eager reference path (one call each)."""
    q = bd.quantize(x, method="two_stage")
    calls = {
        TWO_STAGE_NAME: lambda: bd.quantize(x, method="two_stage"),
        "bd two-stage-trunc quantize": lambda: bd.quantize(x, method="two_stage_trunc"),
        "bd MSE quantize": lambda: bd.quantize(x, method="mse"),
        "bd dequantize": lambda: bd.dequantize(q),
        "bd two-stage quantize + dequantize": lambda: bd.dequantize(bd.quantize(x, method="two_stage")),
        "bd two-stage fake-quantize": lambda: baselines.fake_quantize(x, "bd_two_stage", 32),
        GOLDEN_MXFP4_NAME: lambda: baselines.fake_quantize(x, "mxfp4", 32),
        "golden MXFP4 reference (B=32)": lambda: baselines.mxfp4(x, block=32),
    }
    torchao = torchao_mx_call(x)
    if torchao is not None:
        calls[TORCHAO_NAME] = torchao
    rates = [Rate(name, s, x.numel() / s) for name, fn in calls.items() for s in [time_call(fn, repeats)]]
    if reference:
        with native.use("reference"):
            for name in (TWO_STAGE_NAME, "bd MSE quantize", "bd dequantize"):
                seconds = time_call(calls[name], 1, warmup=False)
                rates.append(Rate(f"{name} (eager reference)", seconds, x.numel() / seconds))
    return rates


def linear_times(rows: int, cols: int, out: int, repeats: int, seed: int,
                 reference: bool = False) -> list[Rate]:
    """Times bd.linear on (rows, cols) two-stage activations x (out, cols) MSE weights, and the
    fake-quantized product it is compared with. elements_per_second counts multiply-adds."""
    generator = torch.Generator().manual_seed(seed + 1)
    q_act = bd.quantize(torch.randn(rows, cols, generator=generator), method="two_stage")
    q_weight = bd.quantize(torch.randn(out, cols, generator=generator), method="mse")
    macs = rows * cols * out
    calls = {
        LINEAR_NAME: lambda: bd.linear(q_act, q_weight),
        **{name: (lambda mode=mode: bd.linear(q_act, q_weight, accumulate=mode))
           for mode, name in ACCUMULATE_NAMES.items()},
        LINEAR_BASE_NAME: lambda: bd.dequantize(q_act) @ bd.dequantize(q_weight).t(),
        "bd.linear, sync-free window plan (the CUDA plan)": lambda: exact.linear_exact(
            q_act.exp, q_act.dialect, q_act.codes, q_weight.exp, q_weight.dialect, q_weight.codes,
            sync_free=True),
    }
    times = [Rate(name, s, macs / s) for name, fn in calls.items() for s in [time_call(fn, repeats)]]
    if reference:
        with native.use("reference"):
            seconds = time_call(calls[LINEAR_NAME], 1, warmup=False)
        times.append(Rate(f"{LINEAR_NAME} (eager reference)", seconds, macs / seconds))
    return times


def target_rows(rates: list[Rate]) -> list[dict]:
    """Each target of TARGETS with the measured ratio, where both operations were measured."""
    by_name = {r.name: r for r in rates}
    rows = []
    for name, (base, kind, target) in TARGETS.items():
        if name not in by_name or base not in by_name:
            continue
        ratio = (by_name[base].seconds / by_name[name].seconds if kind == "rate"
                 else by_name[name].seconds / by_name[base].seconds)
        met = ratio >= target if kind == "rate" else ratio <= target
        rows.append({"name": name, "compared_with": base, "kind": kind, "target": target,
                     "ratio": ratio, "met": met})
    return rows


def first_call_seconds() -> dict:
    """Cold build of the C kernels, and the first quantize call of a process with a warm cache
    (measured in a fresh interpreter)."""
    code = ("import time, torch; t = time.perf_counter(); from golden import bd; "
            "bd.quantize(torch.ones(1, 32)); print(time.perf_counter() - t)")
    root = str(Path(bd.__file__).resolve().parents[1])      # this checkout's golden package
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
    first = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    return {"build_cold_seconds": native.build_seconds(),
            "import_and_first_quantize_seconds": float(first.stdout.split()[-1])}


def measure(rows: int, cols: int, repeats: int, seed: int, threads: int, linear_rows: int,
            linear_out: int, reference: bool = False) -> dict:
    """Every golden figure of the report, measured on `threads` threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        generator = torch.Generator().manual_seed(seed)
        x = torch.randn(rows, cols, generator=generator).to(torch.float16)
        rates = golden_rates(x, repeats, reference)
        linear = linear_times(linear_rows, cols, linear_out, repeats, seed, reference)
    finally:
        torch.set_num_threads(previous)
    return {"shape": [rows, cols], "linear_shape": [linear_rows, cols, linear_out], "threads": threads,
            "repeats": repeats, "native": native.native_available(),
            "rates": [r._asdict() for r in rates], "linear": [r._asdict() for r in linear],
            "targets": target_rows(rates + linear), "first_call": first_call_seconds()}


def add_tensor_arguments(parser: argparse.ArgumentParser, reference_default: bool = False) -> None:
    """The benchmark tensor's options, shared with bench.bench (which times the reference by default)."""
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=4096, help="multiple of 32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (targets: one)")
    parser.add_argument("--linear-rows", type=int, default=128, help="activation rows of bd.linear")
    parser.add_argument("--linear-out", type=int, default=2048, help="weight rows of bd.linear")
    parser.add_argument("--reference", action=argparse.BooleanOptionalAction, default=reference_default,
                        help="also time the eager reference path (slow: about a minute)")


def parse_tensor_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parses and checks the options of add_tensor_arguments."""
    args = parser.parse_args(argv)
    for option in ("rows", "repeats", "threads", "linear_rows", "linear_out"):
        if getattr(args, option) < 1:
            parser.error(f"--{option.replace('_', '-')} must be at least 1")
    if args.cols < 32 or args.cols % 32:
        parser.error("--cols must be a positive multiple of 32")
    return args


def format_rates(result: dict) -> list[str]:
    """Markdown tables of the golden figures (shared with bench.bench)."""
    rates = [Rate(**r) for r in result["rates"]]
    torchao = next((r for r in rates if r.name == TORCHAO_NAME), None)
    lines = ["| operation | seconds | Melem/s | rate / torchao MXFP4 |", "|---|---|---|---|"]
    for r in rates:
        ratio = "-" if torchao is None else f"{torchao.seconds / r.seconds:.2f}"
        lines.append(f"| {r.name} | {r.seconds:.4f} | {r.elements_per_second / 1e6:.1f} | {ratio} |")
    linear = [Rate(**r) for r in result["linear"]]
    base = next(r for r in linear if r.name == LINEAR_BASE_NAME)
    m, k, n = result["linear_shape"]
    lines += ["", f"Linear {m} x {k} x {n}:", "",
              "| operation | seconds | GMAC/s | time / (dequantize + float32 matmul) |", "|---|---|---|---|"]
    for r in linear:
        lines.append(f"| {r.name} | {r.seconds:.4f} | {r.elements_per_second / 1e9:.2f} | "
                     f"{r.seconds / base.seconds:.2f} |")
    lines += ["", "Targets:", "", "| operation | compared with | ratio | target | met |", "|---|---|---|---|---|"]
    for t in result["targets"]:
        bound = ">=" if t["kind"] == "rate" else "<="
        what = "rate ratio" if t["kind"] == "rate" else "time ratio"
        lines.append(f"| {t['name']} | {t['compared_with']} ({what}) | {t['ratio']:.2f} | {bound} "
                     f"{t['target']:g} | {'yes' if t['met'] else 'no'} |")
    first = result["first_call"]
    lines += ["", f"C kernels: cold build {first['build_cold_seconds']:.2f} s (gcc, once per machine, "
              f"cached); a fresh process imports golden and quantizes its first block in "
              f"{first['import_and_first_quantize_seconds']:.2f} s with the cache warm."]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tensor_arguments(parser)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parse_tensor_arguments(parser, argv)
    result = measure(args.rows, args.cols, args.repeats, args.seed, args.threads, args.linear_rows,
                     args.linear_out, args.reference)
    print(f"{args.rows} x {args.cols} FP16, {args.threads} thread(s), median of {args.repeats}; "
          f"native kernels: {'yes' if result['native'] else 'no (' + str(native.native_error()) + ')'}")
    print("\n".join(format_rates(result)))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
