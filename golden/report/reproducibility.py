"""Measures how far the report's figures move when the machine's kernels change.

`python -m golden.report.reproducibility [--out DIR] [--max-tokens N] [--runs REGEX] [--quick]` runs
`python -m golden.report` four times in fresh processes: in float64 and in float32, each under two
kernel setups that differ the way two machines of this kind can differ,

- "AVX-512": ATen's AVX-512 kernels, MKL and oneDNN free to pick theirs, 2 threads, 4 windows per pass;
- "AVX2": ATen, MKL and oneDNN held to AVX2 (`ATEN_CPU_CAPABILITY`, `MKL_ENABLE_INSTRUCTIONS`,
  `ONEDNN_MAX_CPU_ISA`), 1 thread, 1 window per pass (other matrix shapes, so other blockings),

then compares every figure of the two reports of each type (timings and metadata aside) and writes
reproducibility.md and reproducibility.json. A figure agrees to n significant digits when its relative
difference is below 5 x 10^-n.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from golden.cli import write_outputs
from golden.report.writer import json_safe

PROG = "python -m golden.report.reproducibility"
SETUPS = {
    "AVX-512": ({}, ["--threads", "2", "--batch", "4"]),
    "AVX2": ({"ATEN_CPU_CAPABILITY": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
             ["--threads", "1", "--batch", "1"]),
}
DTYPES = ("float64", "float32")
# Report sections compared (everything but timings, metadata, file names and the format table).
SECTIONS = ("tensor_metrics", "selection", "dialects", "block_sizes", "stage1", "perplexity", "hardware_exact",
            "float64_check")
IGNORED_KEYS = {"seconds", "cpu_seconds", "weight_quantization_s", "exact_seconds", "fake_seconds"}
DIGITS = 4
# The perplexity runs measured by default: the unquantized model, each activation selector, the full
# path, the hardware-exact mode and two baselines (all runs would take four times the report's time).
DEFAULT_RUNS = ("^(baseline|linear_bd_mse_bd_two_stage_b32|linear_bd_mse_bd_two_stage_trunc_b32|linear_bd_mse_bd_mse_b32|"
                "full_bd_mse_bd_two_stage_b32|full_nvfp4_nvfp4_b16|linear_mxfp4_mxfp4_b32|"
                "exact_linear_bd_mse_bd_two_stage_b32)$")


def leaves(value, path=()):
    """(path, number) for every numeric figure under `value`, timings left out."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key not in IGNORED_KEYS:
                yield from leaves(item, path + (str(key),))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from leaves(item, path + (str(index),))
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield path, float(value)
    elif value in ("inf", "-inf", "nan"):
        yield path, float(value)


def relative_difference(a: float, b: float) -> float:
    if a == b or (math.isnan(a) and math.isnan(b)):
        return 0.0
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.inf
    return abs(a - b) / max(abs(a), abs(b))


class Difference(NamedTuple):
    figures: int
    identical: int
    max_rel_diff: float
    worst: str                      # the figure with the largest difference
    worst_values: tuple[float, float]
    beyond: int                     # figures whose relative difference is 5e-DIGITS or more


def compare(a: dict, b: dict, section: str) -> Difference:
    """Every figure of `section` in two reports, matched by its path."""
    left, right = dict(leaves(a.get(section, {}))), dict(leaves(b.get(section, {})))
    if set(left) != set(right):
        missing = sorted(set(left) ^ set(right))[:3]
        raise ValueError(f"the two reports hold different figures in {section}, for example {missing}")
    worst, worst_diff, identical, beyond = "", 0.0, 0, 0
    for path, x in left.items():
        diff = relative_difference(x, right[path])
        identical += diff == 0.0
        beyond += diff >= 5 * 10.0 ** -DIGITS
        if diff > worst_diff or not worst:
            worst, worst_diff = "/".join(path), diff
    values = (left[tuple(worst.split("/"))], right[tuple(worst.split("/"))]) if worst else (math.nan, math.nan)
    return Difference(len(left), identical, worst_diff, worst, values, beyond)


def perplexity_table(a: dict, b: dict) -> list[tuple[str, float, float, float]]:
    runs_a, runs_b = a["perplexity"]["runs"], b["perplexity"]["runs"]
    return [(run["label"] + (" [" + run["scope"] + "]" if run["scope"] != "baseline" else ""),
             run["perplexity"], runs_b[key]["perplexity"], relative_difference(run["perplexity"], runs_b[key]["perplexity"]))
            for key, run in runs_a.items()]


def run_report(setup: str, dtype: str, out: pathlib.Path, extra: list[str]) -> dict:
    env_extra, args = SETUPS[setup]
    env = dict(os.environ, **env_extra)
    command = [sys.executable, "-m", "golden.report", "--dtype", dtype, "--out", str(out), *args, *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"{' '.join(command)} failed: {tail}")
    return json.loads((out / "report.json").read_text())


def _f(x: float) -> str:
    return f"{x:.3e}" if x else "0"


def markdown(result: dict) -> str:
    out = ["# Reproducibility of the format report across kernels\n",
           f"Generated by `{PROG} {' '.join(result['arguments'])}` in {result['seconds']:.0f} s. The same report "
           "configuration was run four times, in fresh processes: in float64 and in float32, each under two kernel "
           "setups that differ the way two machines of this kind can (the CPU's vector width and the BLAS code path, "
           "the thread count, the matrix shapes):\n"]
    for name, (env, args) in SETUPS.items():
        settings = ", ".join(f"`{k}={v}`" for k, v in env.items()) or "no kernel restriction"
        out.append(f"- **{name}**: {settings}; `{' '.join(args)}`")
    out.append("")
    out.append(f"A figure agrees to {DIGITS} significant digits when its relative difference is below "
               f"5e-{DIGITS}. Timings and metadata are left out. The unquantized output head runs in float32 in "
               "both types (nothing after it is quantized), so perplexities keep differences of about 1e-5 even "
               "in float64: those come from the head's float32 product and softmax, not from any code.\n")
    for dtype in DTYPES:
        if dtype not in result["comparisons"]:
            continue
        out.append(f"## {dtype}\n")
        out.append("| section | figures | bit-identical | max relative difference | beyond 5e-4 | worst figure |")
        out.append("|---|---|---|---|---|---|")
        for section, d in result["comparisons"][dtype]["sections"].items():
            out.append(f"| {section} | {d['figures']} | {d['identical']} | {_f(d['max_rel_diff'])} | {d['beyond']} | "
                       f"`{d['worst']}` ({d['worst_values'][0]:.6g} vs {d['worst_values'][1]:.6g}) |")
        out.append("")
        out.append("| run | AVX-512 | AVX2 | relative difference |")
        out.append("|---|---|---|---|")
        for label, a, b, diff in result["comparisons"][dtype]["perplexity"]:
            out.append(f"| {label} | {a:.6f} | {b:.6f} | {_f(diff)} |")
        out.append("")
    verdict = result.get("verdict")
    if verdict:
        out.append(f"**{verdict}**\n")
    return "\n".join(out)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("reports/golden"),
                        help="folder for reproducibility.md and .json (default reports/golden)")
    parser.add_argument("--quick", action="store_true", help="the quick report configuration")
    parser.add_argument("--max-tokens", type=int, default=512, help="perplexity tokens of each report (default 512)")
    parser.add_argument("--runs", default=DEFAULT_RUNS, metavar="REGEX",
                        help="perplexity runs of each report (default: the unquantized model, the three activation "
                             "selectors at B=32, the full path, the hardware-exact mode, NVFP4 and MXFP4)")
    parser.add_argument("--dtypes", default=",".join(DTYPES), help="comma-separated: float64,float32 (default both)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="reports run at the same time (default 1; their figures do not depend on it)")
    args = parser.parse_args(argv)
    dtypes = [d for d in args.dtypes.split(",") if d]
    if not dtypes or any(d not in DTYPES for d in dtypes):
        print(f"{PROG}: error: --dtypes must list some of {', '.join(DTYPES)}, got {args.dtypes!r}", file=sys.stderr)
        return 2
    if args.out.exists() and not args.out.is_dir():
        print(f"{PROG}: error: --out {args.out}: exists and is not a folder", file=sys.stderr)
        return 2
    extra = ["--max-tokens", str(args.max_tokens), "--runs", args.runs] + (["--quick"] if args.quick else [])
    if args.jobs < 1:
        print(f"{PROG}: error: --jobs must be at least 1, got {args.jobs}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    comparisons = {}
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.jobs) as pool:
        jobs = {(dtype, setup): pool.submit(run_report, setup, dtype, pathlib.Path(tmp) / f"{dtype}-{setup}", extra)
                for dtype in dtypes for setup in SETUPS}
        try:
            reports = {key: job.result() for key, job in jobs.items()}
        except RuntimeError as err:
            print(f"{PROG}: error: {err}", file=sys.stderr)
            return 1
    for dtype in dtypes:
        a, b = (reports[dtype, setup] for setup in SETUPS)
        comparisons[dtype] = {"sections": {s: compare(a, b, s)._asdict() for s in SECTIONS if s in a},
                              "perplexity": perplexity_table(a, b),
                              "cpu_capability": {k: reports[dtype, k]["meta"]["cpu_capability"] for k in SETUPS}}
    result = {"arguments": [a for a in (argv if argv is not None else sys.argv[1:])],
              "seconds": time.perf_counter() - started, "digits": DIGITS, "comparisons": comparisons}
    if "float64" in comparisons:
        sections = comparisons["float64"]["sections"].values()
        beyond = sum(d["beyond"] for d in sections)
        total = sum(d["figures"] for d in sections)
        worst = max(d["max_rel_diff"] for d in sections)
        agreement = (f"all {total} figures agree" if beyond == 0 else f"{beyond} of {total} figures do not agree")
        result["verdict"] = (f"float64: {agreement} to {DIGITS} significant digits across the two setups "
                             f"(largest relative difference {_f(worst)}).")

    def write() -> str:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "reproducibility.json").write_text(json.dumps(json_safe(result), indent=1, allow_nan=False) + "\n")
        (args.out / "reproducibility.md").write_text(markdown(result))
        return f"wrote {args.out / 'reproducibility.md'}: {result.get('verdict', '')}"
    return write_outputs(PROG, write)


if __name__ == "__main__":
    sys.exit(main())
