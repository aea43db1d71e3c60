"""Golden-model quantization rate on a 4096 x 4096 FP16 tensor, with MXFP4 fake-quantization of the
same tensor beside it as the ratio to beat.

    python -m bench.golden_throughput [--rows 4096] [--cols 4096] [--repeats 3] [--json FILE]
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from typing import Callable, NamedTuple

import torch

from golden import baselines, bd


class Rate(NamedTuple):
    name: str
    seconds: float            # median wall time of one call
    elements_per_second: float


def time_call(fn: Callable[[], object], repeats: int) -> float:
    """Median wall time of `repeats` calls after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def golden_rates(x: torch.Tensor, repeats: int = 3) -> list[Rate]:
    """Times BlockDialect quantization (both methods), dequantization and MXFP4 on `x`."""
    q = bd.quantize(x, method="two_stage")
    calls = {
        "bd two-stage quantize": lambda: bd.quantize(x, method="two_stage"),
        "bd MSE quantize": lambda: bd.quantize(x, method="mse"),
        "bd dequantize": lambda: bd.dequantize(q),
        "bd two-stage fake-quantize": lambda: bd.dequantize(bd.quantize(x, method="two_stage")),
        "MXFP4 fake-quantize (B=32)": lambda: baselines.mxfp4(x, block=32),
    }
    rates = []
    for name, fn in calls.items():
        seconds = time_call(fn, repeats)
        rates.append(Rate(name, seconds, x.numel() / seconds))
    return rates


def add_tensor_arguments(parser: argparse.ArgumentParser) -> None:
    """The benchmark tensor's options, shared with bench.bench."""
    parser.add_argument("--rows", type=int, default=4096)
    parser.add_argument("--cols", type=int, default=4096, help="multiple of 32")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)


def parse_tensor_arguments(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parses and checks the options of add_tensor_arguments."""
    args = parser.parse_args(argv)
    if args.rows < 1:
        parser.error("--rows must be at least 1")
    if args.cols < 32 or args.cols % 32:
        parser.error("--cols must be a positive multiple of 32")
    if args.repeats < 1:
        parser.error("--repeats must be at least 1")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_tensor_arguments(parser)
    parser.add_argument("--json", help="also write the figures to this JSON file")
    args = parse_tensor_arguments(parser, argv)

    generator = torch.Generator().manual_seed(args.seed)
    x = torch.randn(args.rows, args.cols, generator=generator).to(torch.float16)
    rates = golden_rates(x, args.repeats)
    reference = next(r for r in rates if r.name.startswith("MXFP4"))

    print(f"{args.rows} x {args.cols} FP16, {torch.get_num_threads()} threads, median of {args.repeats}")
    print(f"{'operation':30} {'seconds':>9} {'Melem/s':>9} {'time / MXFP4':>13}")
    for r in rates:
        print(f"{r.name:30} {r.seconds:9.3f} {r.elements_per_second / 1e6:9.1f} "
              f"{r.seconds / reference.seconds:13.2f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"shape": [args.rows, args.cols], "threads": torch.get_num_threads(),
                       "rates": [r._asdict() for r in rates]}, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
