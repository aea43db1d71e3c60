"""Ratios and the written report (``report.md``, ``report.json``) of a synthesis run."""
from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from bench.hw.baseline_macs import construction_key, split_construction
from bench.hw.lane_products import CONSTRUCTIONS
from bench.hw.units import ENGINE_LANES, ENGINE_PRODUCTS, ENGINE_PRODUCTS_LANES, engine_unit_name
from bench.hw.mse_shared import MAGNITUDES, STEPS, THRESHOLDS
from golden.spec import HEADER_BYTES, NUM_DIALECTS

from .flows import (ABC9_SCRIPT, ABC_SCRIPT, DSP_MIN_WIDTH, FAMILY, PNR_SEED, PNR_TARGET_MHZ,
                    TWO_INPUT_GATES)
from .units import UNIT_NAMES, unit_by_name

__all__ = ["METRICS", "summarise", "write_report", "load_report", "carried_results",
           "PAPER_MAC_AREA_UM2", "PAPER_SELECTOR_RATIO", "mac_key", "engine_scaling",
           "engine_section"]

# The paper's Table 5 (one MAC with its accumulator, Nangate 45 nm, 0.5 GHz, um^2) and its selector
# comparison; they are the paper's numbers, kept only to print beside ours.
PAPER_MAC_AREA_UM2 = {"int4": 207, "fp4": 247, "bd": 248, "fp6": 382, "int8": 554}
PAPER_SELECTOR_RATIO = 10.0
MAC_FORMATS = ("bd", "int4", "fp4", "fp6", "int8")
LANE_ONLY = "_lane"       # single BlockDialect MAC with the block's decoded columns as inputs
FP16_BYTES = 2

# Area measures compared in every ratio: generic cells, two-input gates, LUT4s per family.
METRICS = ("cells", "gates2", "ice40.luts", "ecp5.luts")

# (numerator, denominator) of the dialect-selection comparisons.
SELECTOR_PAIRS = {
    "literal": ("sel_mse", "sel_two_stage"),
    "designer": ("sel_mse_shared", "sel_two_stage"),
    "quantizer_literal": ("bd_mse_quantizer", "bd_quantizer"),
}
SELECTOR_PAIR_TEXT = {
    "literal": "literal MSE selector / two-stage selector",
    "designer": "shared-term MSE selector / two-stage selector",
    "quantizer_literal": "whole quantizer: literal MSE / two-stage",
}
# Cost of the rounding stage 1 (SPEC 4.2): rounding variant / truncating variant.
ROUNDING_PAIRS = {"selector": ("sel_two_stage", "sel_two_stage_trunc"),
                  "quantizer": ("bd_quantizer", "bd_quantizer_trunc")}


# Columns of the per-family place-and-route tables: (heading, key in a result's family dict).
FAMILY_COLUMNS = {
    "ice40": (("LUT4", "luts"), ("carry", "carries"), ("FF", "flops"), ("LC (harness)", "logic_cells"),
              ("Fmax MHz", "fmax_mhz")),
    "ecp5": (("LUT4", "luts"), ("CCU2C", "carries"), ("FF", "flops"), ("DSP", "dsp"), ("BRAM", "bram"),
             ("LC (harness)", "logic_cells"), ("Fmax MHz", "fmax_mhz")),
}

def figure(result: dict, metric: str):
    """``result[metric]``; ``"ice40.luts"`` reads ``result["ice40"]["luts"]``."""
    value = result
    for part in metric.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def _ratio(a, b):
    return round(a / b, 3) if a and b else None


def _pair_ratios(big: dict, small: dict) -> dict:
    return {m: _ratio(figure(big, m), figure(small, m)) for m in METRICS}


def weight_bandwidth(fmax_mhz: float, lanes: int, B: int) -> dict:
    """Weight stream of the matrix-vector engine at ``fmax_mhz``: one beat of ``lanes`` packed blocks
    (SPEC 7: ``2 + B/2`` bytes each) per clock, and the FP16 bytes per second those blocks stand for."""
    hz = fmax_mhz * 1e6
    return {"fmax_mhz": fmax_mhz, "lanes": lanes,
            "packed_bytes_per_s": hz * lanes * (HEADER_BYTES + B // 2),
            "fp16_bytes_per_s": hz * lanes * B * FP16_BYTES}


def construction_title(fmt: str, key: str) -> str:
    """What a block MAC's construction key means (:func:`~bench.hw.baseline_macs.construction_key`)."""
    construction, summation = split_construction(key)
    return CONSTRUCTIONS[fmt][construction] + (", products added by a carry-save bit heap"
                                               if summation == "heap" else "")


def mac_key(name: str):
    """``(framing, format, construction)`` of a MAC unit (``"block"`` or ``"single"``; a single
    BlockDialect MAC fed the block's decoded magnitudes has ``_lane`` after its construction), or
    None for other units."""
    unit = unit_by_name(name).unit
    if unit.kind != "mac":
        return None
    p = unit.params
    framing = "single" if name.startswith("mac1_") else "block"
    return framing, p["fmt"], (construction_key(p["construction"], p.get("summation", "tree"))
                               + (LANE_ONLY if p.get("block_values_in") else ""))


def _size_order(construction: str, figures: dict) -> tuple:
    """Smallest first: two-input gates, ties to the fewer generic cells, then to the name, so that
    neither the tables nor the choice of the smallest depend on the order of the rows."""
    return figures["gates2"], figures["cells"] or 0, construction


def mac_summary(results: list[dict]) -> dict:
    """Every MAC construction's figures by framing, block size and format, the smallest
    construction of each format (by two-input gates; lane-only variants excluded), BlockDialect's
    smallest over each format's smallest, and each format's smallest over FP4's."""
    macs: dict = {}
    for r in results:
        key = mac_key(r["unit"])
        if key is None or not r.get("gates2"):
            continue
        framing, fmt, c = key
        macs.setdefault(framing, {}).setdefault(str(r["B"]), {}).setdefault(fmt, {})[c] = (
            {m: figure(r, m) for m in METRICS} | {"unit": r["unit"], "measured": r.get("measured")})
    smallest, ratios, to_fp4, amortised = {}, {}, {}, {}
    for framing, by_block in macs.items():
        for B, fmts in by_block.items():
            best = {fmt: min((c for c in cs if not c.endswith(LANE_ONLY)),
                             key=lambda c: _size_order(c, cs[c]), default=None)
                    for fmt, cs in fmts.items()}
            smallest.setdefault(framing, {})[B] = best
            fig = {fmt: fmts[fmt][c] for fmt, c in best.items() if c}
            for fmt in MAC_FORMATS:
                if fmt != "bd" and "bd" in fig and fmt in fig:
                    ratios.setdefault(framing, {}).setdefault(B, {})[fmt] = (
                        {m: _ratio(fig["bd"][m], fig[fmt][m]) for m in METRICS}
                        | {"paper_45nm": round(PAPER_MAC_AREA_UM2["bd"] / PAPER_MAC_AREA_UM2[fmt], 3)})
                if "fp4" in fig and fmt in fig:
                    to_fp4.setdefault(framing, {}).setdefault(B, {})[fmt] = {
                        "gates2": _ratio(fig[fmt]["gates2"], fig["fp4"]["gates2"]),
                        "paper_45nm": round(PAPER_MAC_AREA_UM2[fmt] / PAPER_MAC_AREA_UM2["fp4"], 3)}
            # A single BlockDialect MAC whose block's magnitudes are decoded once for all the
            # lanes of a block: the lane, plus the decode's share (own decode - lane) / B.
            if framing == "single":
                for c, f in fmts.get("bd", {}).items():
                    lane = fmts["bd"].get(c + LANE_ONLY)
                    if lane and not c.endswith(LANE_ONLY):
                        amortised[c] = round(lane["gates2"] + (f["gates2"] - lane["gates2"]) / int(B), 1)
    return {"constructions": macs, "smallest": smallest, "ratios": ratios, "to_fp4": to_fp4,
            "single_bd_amortised": amortised}


def summarise(results: list[dict]) -> dict:
    """Every ratio of the report, the engine's weight bandwidth and the Fmax table."""
    at = {(r["unit"], r["B"]): r for r in results}
    summary: dict = {"macs": mac_summary(results), "selector_ratios": {}, "rounding_cost": {},
                     "weight_bandwidth": {}}
    for B in sorted({r["B"] for r in results}):
        for key, (big, small) in SELECTOR_PAIRS.items():
            if (big, B) in at and (small, B) in at:
                summary["selector_ratios"].setdefault(str(B), {})[key] = (
                    _pair_ratios(at[(big, B)], at[(small, B)])
                    | {"paper": PAPER_SELECTOR_RATIO if key != "quantizer_literal" else None,
                       "measured": sorted({at[(big, B)].get("measured"),
                                           at[(small, B)].get("measured")} - {None})})
        for key, (rnd, trunc) in ROUNDING_PAIRS.items():
            if (rnd, B) in at and (trunc, B) in at:
                a, b = at[(rnd, B)], at[(trunc, B)]
                summary["rounding_cost"].setdefault(str(B), {})[key] = {
                    m: {"rounding": figure(a, m), "truncating": figure(b, m),
                        "ratio": _ratio(figure(a, m), figure(b, m))}
                    for m in (*METRICS, "ice40.fmax_mhz", "ecp5.fmax_mhz")}
    for r in results:
        lanes = r.get("lanes")
        fmax = figure(r, "ecp5.fmax_mhz")
        if lanes and fmax:
            summary["weight_bandwidth"][f"ecp5/{_top(r)}"] = weight_bandwidth(
                fmax, lanes, r["B"])
    summary["engine_scaling"] = engine_scaling(results)
    return summary


#: Block size of the engine tables (SPEC 11's figures).
ENGINE_B = 32
#: ECP5 resources a unit uses, with the part's count: LUT4s (a CCU2C carry cell takes two),
#: flip-flops (one per LUT4), MULT18X18D, DP16KD.
ENGINE_RESOURCES = ("logic", "flops", "dsp", "bram")


def _engine_row(r: dict) -> dict:
    """The ECP5 figures of one engine build, what they use of the LFE5U-85F, and its rates."""
    fam = FAMILY["ecp5"]
    f = r.get("ecp5", {})
    capacity = {"logic": fam.luts, "flops": fam.luts, "dsp": fam.dsps, "bram": fam.brams}
    used = {"logic": (f.get("luts") or 0) + fam.luts_per_carry * (f.get("carries") or 0),
            "flops": f.get("flops"), "dsp": f.get("dsp"), "bram": f.get("bram")}
    row = {"unit": r["unit"], "lanes": r.get("lanes"), "B": r["B"], "latency": r.get("latency"),
           "measured": r.get("measured"), "note": _note(r, "ecp5"),
           **{k: f.get(k) for k in ("luts", "carries", "flops", "dsp", "bram", "fmax_mhz")},
           "lut_equivalents": used["logic"] if "luts" in f else None}
    if "luts" in f:
        share = {k: round(used[k] / capacity[k], 4) for k in ENGINE_RESOURCES if used[k] is not None}
        row["device_share"] = share
        row["fills_first"] = max(share, key=share.get)
    if row["fmax_mhz"] and row["lanes"]:
        bw = weight_bandwidth(row["fmax_mhz"], row["lanes"], r["B"])
        row |= {"packed_bytes_per_s": bw["packed_bytes_per_s"], "fp16_bytes_per_s": bw["fp16_bytes_per_s"],
                "macs_per_s": row["fmax_mhz"] * 1e6 * row["lanes"] * r["B"]}
    return row


def engine_scaling(results: list[dict]) -> dict:
    """The engine at the deepest pipeline on the ECP5: ``"lanes"``, one row per lane count with
    LUT products (bench.hw.units.ENGINE_LANES), and ``"products"``, the LUT, DSP and packed-DSP
    builds side by side at each lane count of ENGINE_PRODUCTS_LANES; rows only for builds that
    were mapped."""
    at = {(r["unit"], r["B"]): r for r in results}

    def row(N, products):
        r = at.get((engine_unit_name(N, products), ENGINE_B))
        return _engine_row(r) if r and ("ecp5" in r or r.get("errors")) else None

    lanes = {str(N): x for N in ENGINE_LANES if (x := row(N, "lut"))}
    products = {}
    for N in ENGINE_PRODUCTS_LANES:
        builds = {p: x for p in ENGINE_PRODUCTS if (x := row(N, p))}
        if len(builds) > 1:
            products[str(N)] = builds
    return {"lanes": lanes, "products": products}


def _pct(share, key):
    value = (share or {}).get(key)
    return "-" if value is None else f"{100 * value:.1f}"


def _giga(row, key):
    return "-" if row.get(key) is None else f"{row[key] / 1e9:.2f}"


ENGINE_COLUMNS = (("LUT4", "luts"), ("CCU2C", "carries"), ("FF", "flops"), ("MULT18X18D", "dsp"),
                  ("DP16KD", "bram"), ("Fmax MHz", "fmax_mhz"))


def engine_section(summary: dict) -> list[str]:
    """How the engine's cost grows with its lanes, and its products in LUTs, DSPs or packed DSPs."""
    scaling = summary.get("engine_scaling") or {}
    fam = FAMILY["ecp5"]
    lines = []
    if scaling.get("lanes"):
        lines += ["## Matrix-vector engine: cost against lanes (ECP5)", "",
                  f"`bd_linear` at B = {ENGINE_B}, its fastest build (`LinearParams.fastest`: "
                  "every pipeline cut point taken, one copy of the activation buffer per lane), "
                  "products in LUTs "
                  f"(`bench/hw/units.py`: `bd_linear_fast_n<N>`), on the {fam.device} "
                  f"({fam.luts} LUT4s and as many flip-flops, {fam.dsps} MULT18X18D, {fam.brams} "
                  "DP16KD). Rates at Fmax, one weight beat of N blocks per clock: packed weights "
                  "(SPEC 7, 2 + B/2 bytes per block), the FP16 bytes the same weights stand for, and "
                  "MACs (N x B per clock). *Use*: share of the part taken by logic (LUT4 + 2 per "
                  "CCU2C), flip-flops, DSPs and block RAMs; *fills first* names the largest.", "",
                  "| N | latency | " + " | ".join(h for h, _ in ENGINE_COLUMNS)
                  + " | packed GB/s | FP16 GB/s | GMAC/s | logic % | FF % | DSP % | BRAM % "
                  "| fills first | measured |",
                  "|---|---|" + "---|" * (len(ENGINE_COLUMNS) + 9)]
        missing = []
        for N, row in scaling["lanes"].items():
            share = row.get("device_share")
            lines.append("| " + " | ".join(_fmt(v) for v in [
                N, row["latency"], *(row.get(k) for _, k in ENGINE_COLUMNS)])
                + f" | {_giga(row, 'packed_bytes_per_s')} | {_giga(row, 'fp16_bytes_per_s')} | "
                f"{_giga(row, 'macs_per_s')} | "
                + " | ".join(_pct(share, k) for k in ENGINE_RESOURCES)
                + f" | {row.get('fills_first') or '-'} | {row['measured']} |")
            if row.get("luts") is None:
                missing.append(f"- N = {N}: not mapped ({row['note'] or 'not run'}).")
            elif not row.get("fmax_mhz"):
                missing.append(f"- N = {N}: no Fmax ({row['note'] or 'not placed'}); the other "
                               "figures are the mapped netlist's.")
        lines += ["", *missing, ""] if missing else [""]
    for N, builds in scaling.get("products", {}).items():
        lines += [f"## Matrix-vector engine products: LUTs, DSP blocks, packed DSP blocks (N = {N}, ECP5)",
                  "", "`products=\"lut\"`: each dot unit's 4x4 magnitude products in LUTs (the "
                  "default); `\"dsp\"`: one MULT18X18D per product; `\"dsp_packed\"`: the lanes "
                  "share the activation element, so one MULT18X18D forms two lanes' products, "
                  "`(h_w1 * 2^8 + h_w0) * h_a` (bd_hw.dot.PackedMultiplierArray). Deepest pipeline, "
                  f"B = {ENGINE_B}. *LUT4 eq.*: LUT4 + 2 per CCU2C; in brackets, over the LUT build.", "",
                  "| products | LUT4 | CCU2C | LUT4 eq. | FF | MULT18X18D | Fmax MHz | packed GB/s "
                  "| DSP % of the part | measured |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        base = builds.get("lut", {})
        for p, row in builds.items():
            def rel(key):
                v, b = row.get(key), base.get(key)
                return _fmt(v) + (f" ({v / b:.2f})" if v and b and p != "lut" else "")
            lines.append("| " + " | ".join([
                p, rel("luts"), _fmt(row.get("carries")), rel("lut_equivalents"), _fmt(row.get("flops")),
                _fmt(row.get("dsp")), rel("fmax_mhz"), _giga(row, "packed_bytes_per_s"),
                _pct(row.get("device_share"), "dsp"), str(row["measured"])]) + " |")
        lines.append("")
    return lines


def _top(r: dict) -> str:
    """Verilog top module of a result: ``<unit>_b<B>``, or as the registry names it."""
    return r.get("top") or f"{r['unit']}_b{r['B']}"


#: Marker of the deepest pipeline setting in a unit's name (bd_hw.units: ``bd_quantizer_fast``).
FAST = "_fast"


def fmax_table(results: list[dict]) -> dict[str, float]:
    """``"<family>/<unit>_b<B>"`` (``ice40/bd_quantizer_b32``) -> Fmax in MHz after place and route
    of the fastest setting shipped: a ``_fast`` build counts for its unit (``bd_quantizer_fast_b32``
    for ``bd_quantizer_b32``). :func:`fmax_by_top` has every build apart."""
    out: dict[str, float] = {}
    for key, fmax in fmax_by_top(results).items():
        unit_key = key.replace(FAST, "", 1)
        out[unit_key] = max(fmax, out.get(unit_key, 0.0))
    return out


def fmax_by_top(results: list[dict]) -> dict[str, float]:
    """``"<family>/<top module>"`` -> Fmax in MHz, one entry per build."""
    out = {}
    for r in results:
        for fam in FAMILY:
            fmax = figure(r, f"{fam}.fmax_mhz")
            if fmax:
                out[f"{fam}/{_top(r)}"] = fmax
    return out


# --- reading earlier reports ----------------------------------------------------------------------

def load_report(path: Path) -> dict:
    """A ``report.json`` of this flow; ``ValueError`` (one line) if it is missing or unreadable."""
    try:
        saved = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"no report at {path}") from None
    except (OSError, UnicodeDecodeError) as err:
        raise ValueError(f"cannot read {path}: {err.strerror if isinstance(err, OSError) else err}") \
            from None
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("results"), list) \
            or not isinstance(saved.get("meta"), dict):
        raise ValueError(f"{path} is not a report.json of python -m bench.synth "
                         "(no 'meta' and 'results')")
    date = saved["meta"].get("date") or _commit_date(Path(path))
    saved["results"] = [_upgrade(r, date) for r in saved["results"] if r.get("unit") in UNIT_NAMES]
    return saved


def _commit_date(path: Path) -> str:
    """Date of the last commit of ``path`` (reports written before results carried their date),
    else the file's modification date."""
    try:
        proc = subprocess.run(["git", "log", "-1", "--format=%cs", "--", path.name], cwd=path.parent,
                              capture_output=True, text=True, timeout=60)
        if proc.returncode == 0 and proc.stdout.strip():
            return proc.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return time.strftime("%Y-%m-%d", time.gmtime(path.stat().st_mtime))


def _upgrade(r: dict, date: str) -> dict:
    """A result in the current shape: per-family figures nested, a measurement date, the current
    title. Results written before the ECP5 flow kept the iCE40 figures at the top level."""
    r = dict(r)
    r.setdefault("measured", date)
    r["title"] = unit_by_name(r["unit"]).title
    r.pop("group", None)
    if "ice40" not in r and any(k.startswith("ice40_") or k == "pnr_note" for k in r):
        ice = {"device": FAMILY["ice40"].device}
        for old, new in (("ice40_luts", "luts"), ("ice40_carries", "carries"),
                         ("ice40_flops", "flops"), ("harness_luts", "harness_luts"),
                         ("harness_flops", "harness_flops"), ("fits", "fits"),
                         ("fmax_mhz", "fmax_mhz"), ("logic_cells", "logic_cells"),
                         ("device_logic_cells", "device_logic_cells"), ("pnr_note", "note"),
                         ("critical_path", "critical_path")):
            if old in r:
                ice[new] = r.pop(old)
        r.pop("device", None)
        r.pop("gates_other", None)
        r["ice40"] = ice
        # Steps that failed before the gate bound existed ("ice40: ... timed out") stay as errors.
    return r


def carried_results(previous: dict, results: list[dict], keep) -> list[dict]:
    """Results of ``previous`` for (unit, B) not in ``results`` whose unit ``keep(name)`` accepts;
    rows of units no longer in the registry are dropped."""
    have = {(r["unit"], r["B"]) for r in results}
    return [r for r in previous["results"] if (r["unit"], r["B"]) not in have
            and r["unit"] in UNIT_NAMES and keep(r["unit"])]


# --- the written report ---------------------------------------------------------------------------

def _fmt(v):
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def _readable(error: str) -> str:
    """A step's error as the report prints it: a tool run stopped by its time limit is recorded as
    subprocess.TimeoutExpired's text (the command line, cut short), said here in words instead."""
    step, _, text = error.partition(": ")
    return f"{step}: stopped at its time limit (--timeout)" if text.startswith("Command '") else error


def _note(r: dict, fam: str | None) -> str:
    parts = []
    if fam:
        fig = r.get(fam, {})
        if fig.get("fits") is False:
            parts.append("does not fit" + (f": {fig['note']}" if fig.get("note") else ""))
        flow = r.get("flow", {})
        if fam == "ecp5" and fig.get("dsp") and not ("dsp_min_width" in flow or flow.get("nodsp")) \
                and r["unit"] in UNIT_NAMES and unit_by_name(r["unit"]).lut_products:
            parts.append("narrow products in MULT18X18D: measured before the comparison units' "
                         "DSP policy, not comparable with the other rows")
        if fig.get("lut_mapper"):
            parts.append(f"LUTs mapped by `{fig['lut_mapper']}` (yosys's abc9 fails on this unit)")
        parts += [_readable(e) for e in r.get("errors", []) if e.startswith(fam)]
    else:
        parts += [e for e in r.get("errors", []) if not e.startswith(tuple(FAMILY))]
    return "; ".join(parts)


def _has(r: dict, fam: str) -> bool:
    """The result has figures of the family, or a step of it failed."""
    return fam in r or any(e.startswith(fam) for e in r.get("errors", []))


def order(results: list[dict], block: int) -> list[dict]:
    """Rows in registry order, the run's main block size first."""
    return sorted(results, key=lambda r: (r["B"] != block, r["B"], UNIT_NAMES.index(r["unit"])))


def write_report(out: Path, results: list[dict], summary: dict, meta: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    results = order(results, meta["block"])
    (out / "report.json").write_text(json.dumps(
        {"meta": meta, "fmax_mhz": fmax_table(results), "fmax_mhz_by_top": fmax_by_top(results),
         "results": results, "summary": summary},
        indent=2) + "\n")
    (out / "report.md").write_text("\n".join(markdown(results, summary, meta)) + "\n")


def markdown(results: list[dict], summary: dict, meta: dict) -> list[str]:
    carried = sorted({r["measured"] for r in results if r.get("measured") != meta["date"]})
    lines = ["# Synthesis figures", "",
             f"Generated by `python -m bench.synth` on {meta['date']} ({meta['wall_seconds']:.0f} s "
             f"wall time for the units measured that day). Tools: {meta['yosys']}; "
             f"{'; '.join(meta['nextpnr'])}."]
    if meta.get("reused"):
        lines.append(f"Figures of {', '.join(meta['reused'])} were taken from the work folder of an "
                     "earlier run that day (same Verilog, same flow; `--reuse`); the wall time "
                     "counts only the units synthesised in this run, each row's own time is in "
                     "report.json (`seconds`).")
    if carried:
        lines.append("Rows whose *measured* date is earlier were not synthesised in this run (units "
                     "synthesised only on request, `--units NAME`); their figures are kept from the "
                     f"report of that date ({', '.join(carried)}).")
    lines += ["",
              "- **cells**: yosys `synth -flatten -top X -noabc; abc -script S; stat` (generic "
              "gate-level cells, flip-flops included).",
              "- **gates2**: two-input gates after `abc -g " + ",".join(TWO_INPUT_GATES) +
              " -script S; opt_clean` (an ASIC-like count; inverters and flip-flops are listed apart).",
              f"- `S` = `{ABC_SCRIPT}`; for the FPGA mappings `scratchpad -set abc9.script "
              f"{ABC9_SCRIPT}`. Yosys's default ABC scripts add SAT sweeping and choice "
              "computation, which in the WebAssembly build take tens of minutes on these multiplier "
              "arrays (over 10 minutes on the INT4 MAC alone); measured against the defaults, the "
              "scripts used here give 3 % more cells on an 8-lane INT4 MAC and 5 % more LUTs on "
              "the 32-lane BlockDialect MAC. Every unit uses the same scripts.",
              "- **FPGA figures**: `synth_ice40` / `synth_ecp5` of the unit inside a place-and-route "
              "harness, the unit kept as its own module (`keep_hierarchy`, everything inside it "
              "flattened), so LUT4, carry, flip-flop, DSP and block-RAM counts are the unit's alone. "
              "The harness: a registered feedback shift register driven by one pin feeds every "
              "input bit, every output bit is registered and XOR-reduced into one pin by a tree of "
              "registered 4-input XORs (harness paths are one LUT deep), so Fmax is register to "
              "register through the unit. The comparison MACs and scale paths are mapped with "
              f"DSP blocks for multipliers with an operand of {DSP_MIN_WIDTH} bits or more only "
              "(`synth_ecp5`'s coarse step with its mul2dsp run on those multipliers alone), "
              "narrower products in LUTs (why: the MAC section).",
              f"- **Place and route** (seed {PNR_SEED}, target {PNR_TARGET_MHZ} MHz): "
              f"`{' '.join(FAMILY['ice40'].pnr)}` ({FAMILY['ice40'].luts} logic cells, no DSP) and "
              f"`{' '.join(FAMILY['ecp5'].pnr)}` ({FAMILY['ecp5'].luts} LUT4s, "
              f"{FAMILY['ecp5'].dsps} MULT18X18D, {FAMILY['ecp5'].brams} DP16KD). LC counts the "
              "logic cells (iCE40) or LUT slots (ECP5 `TRELLIS_COMB`) of unit and harness together. "
              "An ECP5 carry cell (CCU2C) holds two LUT4s.", ""]

    titles = {r["unit"]: r["title"] for r in results}
    lines += ["## Units", "", *[f"- `{name}`: {title}" for name, title in titles.items()], ""]
    header = "| unit | B | latency | in/out bits | cells | FF | gates2 | NOT | measured | note |"
    lines += ["## Generic cells and two-input gates", "", header,
              "|" + "---|" * (header.count("|") - 1)]
    for r in results:
        lines.append("| " + " | ".join(_fmt(v) for v in [
            r["unit"], r["B"], r.get("latency"), f"{r['port_bits_in']}/{r['port_bits_out']}", r.get("cells"),
            r.get("cells_flops"), r.get("gates2"), r.get("gates_not"), r.get("measured"),
            _note(r, None)]) + " |")
    for family, heading in (("ice40", "iCE40 HX8K"), ("ecp5", "ECP5")):
        columns = FAMILY_COLUMNS[family]
        lines += ["", f"## {heading} ({FAMILY[family].device})", "",
                  "| unit | B | " + " | ".join(c for c, _ in columns) + " | note |",
                  "|---|---|" + "---|" * len(columns) + "---|"]
        for r in results:
            if not _has(r, family):
                continue
            f = r.get(family, {})
            lines.append("| " + " | ".join(_fmt(v) for v in [
                r["unit"], r["B"], *(f.get(key) for _, key in columns), _note(r, family)]) + " |")
    lines.append("")

    if summary["weight_bandwidth"]:
        lines += ["## Matrix-vector engine: weight bandwidth at Fmax (ECP5)", "",
                  "One weight beat of N packed blocks (SPEC 7: 2 + B/2 bytes each) per clock; the "
                  "FP16 figure is the bandwidth the same weights would need as FP16 (N x B x 2 bytes "
                  "per clock).", "",
                  "| unit | N | Fmax MHz | packed weights GB/s | FP16 equivalent GB/s |",
                  "|---|---|---|---|---|"]
        for key, bw in summary["weight_bandwidth"].items():
            lines.append(f"| {key.split('/', 1)[1]} | {bw['lanes']} | {bw['fmax_mhz']:.2f} | "
                         f"{bw['packed_bytes_per_s'] / 1e9:.3f} | {bw['fp16_bytes_per_s'] / 1e9:.3f} |")
        lines.append("")

    lines += [*engine_section(summary)]
    lines += [*accumulation_section(results), *mac_section(summary), *decoder_section(results),
              *scale_section(results)]
    lines += [*rounding_section(summary), *selector_section(results, summary),
              *discussion(results, summary)]
    return lines


MAC_TEXT = {"int4": "INT4", "fp4": "FP4 E2M1", "fp6": "FP6 E2M3", "int8": "INT8", "bd": "BlockDialect"}


def mac_section(summary: dict) -> list[str]:
    """Every MAC construction in both framings, and the ratios of the smallest beside the paper's."""
    macs = summary["macs"]
    if not macs["constructions"]:
        return []
    lines = ["## MACs: every construction, both framings", "",
             "Each format's lane product is built in several ways (`bench/hw/lane_products.py`, each "
             "checked exhaustively against a Python model, BlockDialect against `golden.bd`'s "
             "decode over every dialect pair and code pair); the smallest in two-input gates is the "
             "format's baseline (**bold**). *Block MAC*: B lanes, one adder tree (and a popcount of "
             "the deferred +1 bits where a construction complements instead of negating), inputs "
             "and sum registered; a `_heap` construction adds the same lane products (and +1 bits) "
             "with one carry-save bit heap instead (`bench/hw/bit_heap.py`: Wallace's full-adder "
             "reduction of every product bit, one carry-propagate adder at the end, as ASIC dot "
             "products are built; an FPGA's carry chains favour adder trees, so compare the LUT4 "
             "columns too). *Single MAC* (the paper's framing): one lane and an accumulator "
             "as wide as the exact sum of a block of 32 products, inputs registered; the "
             "BlockDialect single MAC decodes its own dialects (`_lane` rows take the block's "
             "decoded index 5-7 columns as inputs instead: their magnitudes, or what the "
             "construction makes of them once per block, such as anf_lut's coefficients or "
             "blockprod_defer's products). FPGA figures where measured. "
             "Every comparison unit (these MACs and the scale paths below) is mapped as a "
             "designer would build it on the ECP5: a product that fits the sysDSP's smallest "
             "multiplier (9x9, MULT9X9D) in LUT fabric, one whose wider operand has "
             f"{DSP_MIN_WIDTH} bits or more in MULT18X18Ds (yosys infers only the 18x18; the iCE40 "
             "HX8K has no DSP). The lane products are 2x2 to 8x8 bits, so every MAC is LUTs "
             "only: yosys would otherwise give each lane of a minifloat or BlockDialect MAC an "
             "18x18 MULT18X18D, which no designer would do for a 2x2 product and which would "
             "leave its LUT4 and Fmax incomparable with the integer MACs' and with the iCE40's. "
             "Rows mapped with `synth_ecp5 -nodsp` (every multiplier in LUTs) are the same "
             "mapping for units without a wide multiplier. An ECP5 row measured before that "
             "choice says so in its note.", ""]
    for framing, heading in (("block", "Block MAC"), ("single", "Single MAC")):
        by_block = macs["constructions"].get(framing, {})
        if not by_block:
            continue
        lines += [f"### {heading} constructions", "",
                  "| B | format | construction | cells | gates2 | iCE40 LUT4 | ECP5 LUT4 | / smallest |",
                  "|---|---|---|---|---|---|---|---|"]
        for B in sorted(by_block, key=int):
            for fmt in MAC_FORMATS:
                cs = by_block[B].get(fmt, {})
                best = macs["smallest"][framing][B].get(fmt)
                for c, f in sorted(cs.items(), key=lambda kv: _size_order(*kv)):
                    name = f"**{c}**" if c == best else c
                    rel = _ratio(f["gates2"], cs[best]["gates2"]) if best else None
                    lines.append(f"| {B} | {MAC_TEXT[fmt]} | {name} | " + " | ".join(
                        _fmt(f[m]) for m in METRICS) + f" | {_fmt(rel)} |")
        lines.append("")
    if macs["single_bd_amortised"]:
        lines += ["BlockDialect single MAC with its dialect decode shared by the 32 lanes of a block "
                  "(the `_lane` MAC plus 1/32 of the decode, the difference to the self-contained "
                  "MAC): " + ", ".join(f"{c} {v:.0f} gates" for c, v in
                                       macs["single_bd_amortised"].items()) + ".", ""]
    lines += ["### BlockDialect / baseline, smallest against smallest", "",
              "The paper's ratio is Table 5's area (Nangate 45 nm, 0.5 GHz, one MAC with its "
              "accumulator: " + ", ".join(f"{MAC_TEXT[f]} {a}" for f, a in PAPER_MAC_AREA_UM2.items())
              + " um^2).", "",
              "| framing | B | baseline | BlockDialect construction | baseline construction | "
              "cells | gates2 | iCE40 LUT4 | ECP5 LUT4 | paper (45 nm) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for framing in ("single", "block"):
        for B, fmts in sorted(macs["ratios"].get(framing, {}).items(), key=lambda kv: int(kv[0])):
            best = macs["smallest"][framing][B]
            for fmt, r in fmts.items():
                lines.append(f"| {framing} | {B} | {MAC_TEXT[fmt]} | {best['bd']} | {best[fmt]} | "
                             + " | ".join(_fmt(r[m]) for m in METRICS) + f" | {_fmt(r['paper_45nm'])} |")
    lines += ["", *_mac_findings(macs)]
    lines += ["", "### Each format / FP4 (smallest constructions, two-input gates)", "",
              "| framing | B | " + " | ".join(MAC_TEXT[f] for f in MAC_FORMATS) + " |",
              "|---|---|" + "---|" * len(MAC_FORMATS)]
    lines.append("| paper (45 nm) | - | " + " | ".join(
        _fmt(round(PAPER_MAC_AREA_UM2[f] / PAPER_MAC_AREA_UM2["fp4"], 3)) for f in MAC_FORMATS) + " |")
    for framing in ("single", "block"):
        for B, fmts in sorted(macs["to_fp4"].get(framing, {}).items(), key=lambda kv: int(kv[0])):
            lines.append(f"| {framing} | {B} | " + " | ".join(
                _fmt(fmts.get(f, {}).get("gates2")) for f in MAC_FORMATS) + " |")
    return lines + [""]


def _mac_findings(macs: dict) -> list[str]:
    """The goals of the comparison, worded from the figures: BlockDialect against the smallest FP4
    MAC in both framings, and what the smallest BlockDialect construction saves over bd_dot's."""
    lines = []
    single = macs["ratios"].get("single", {}).get("32", {}).get("fp4")
    if single:
        lines.append(f"- Single MAC: BlockDialect / smallest FP4 = {single['gates2']:.2f} in two-input "
                     f"gates (the paper: {single['paper_45nm']:.3f}; within 10 %: "
                     f"{'yes' if single['gates2'] <= 1.10 else 'no'}).")
    amortised = macs["single_bd_amortised"]
    fp4 = macs["constructions"].get("single", {}).get("32", {}).get("fp4", {})
    best_fp4 = macs["smallest"].get("single", {}).get("32", {}).get("fp4")
    if amortised and best_fp4:
        c, v = min(amortised.items(), key=lambda kv: kv[1])
        lines.append(f"- Single MAC with the dialect decode shared by a block's 32 lanes ({c}): "
                     f"{v / fp4[best_fp4]['gates2']:.2f} of the smallest FP4 single MAC.")
    for B, fmts in sorted(macs["ratios"].get("block", {}).items(), key=lambda kv: int(kv[0])):
        if "fp4" in fmts:
            r = fmts["fp4"]["gates2"]
            lines.append(f"- Block MAC, B = {B}: BlockDialect / smallest FP4 = {r:.2f} in two-input "
                         f"gates (within 1.3x: {'yes' if r <= 1.3 else 'no'}).")
    for B, fmts in sorted(macs["constructions"].get("block", {}).items(), key=lambda kv: int(kv[0])):
        bd = fmts.get("bd", {})
        best = macs["smallest"]["block"][B].get("bd")
        # bd_dot's products: "lut" (its default) and "dsp" (bd_hw.dot.MultiplierArray)
        refs = [(c, setting) for c, setting in (("decoder_lut", "products='lut' (its default)"),
                                                 ("decoder_defer", "products='dsp'")) if c in bd]
        if refs and best:
            adopted = best in dict(refs)
            lines.append(f"- B = {B}: `bd_dot`'s " + "; ".join(
                f"{setting} is {c}, {bd[c]['gates2']} two-input gates "
                f"({bd[c]['gates2'] / bd[best]['gates2']:.2f} of the smallest, {best})"
                for c, setting in refs) + ("." if adopted else
                                           f"; {best} computes the same products "
                                           f"({construction_title('bd', best)}); `bd_dot` builds its "
                                           "decoders so with decode='anf', measured below in "
                                           "\"The decoder inside bd_dot\"."))
    int8 = [f["int8"]["gates2"] for by_b in macs["to_fp4"].values() for f in by_b.values()
            if f.get("int8", {}).get("gates2")]
    ours = f", ours {min(int8):.2f} to {max(int8):.2f}" if int8 else ""
    if lines:
        lines += ["", "Why BlockDialect does not come out at FP4's cost here:", "",
                  "- An E2M1 significand is 2 bits ({1, 1.5} x 2^e), so the published construction "
                  "multiplies 2x2 bits and shifts the short product by the exponent sum. "
                  "BlockDialect's indices 0-4 are the integers 0-4 in every dialect, but the "
                  "dialect-dependent indices 5-7 take the magnitudes 5-15 half-units, most with "
                  "4 significant bits (9, 11, 13, 15), so each lane needs the full 4x4 array: "
                  "16 partial-product bits against FP4's 4.",
                  *_bd_construction_findings(macs),
                  *_summation_findings(macs),
                  "- The paper's single MAC holds an accumulator of widths we do not know; ours sums "
                  "one block of 32 products exactly (14 bits for FP4 and BlockDialect). A wider "
                  "accumulator, the same in every format, would pull every ratio towards 1, and "
                  "the paper's ratios are flatter than ours in every format (its INT8 / FP4 is "
                  f"{PAPER_MAC_AREA_UM2['int8'] / PAPER_MAC_AREA_UM2['fp4']:.2f}{ours}).",
                  "- Gate counts are not 45 nm area: an XOR costs more than a NAND, and LUT counts "
                  "weigh logic differently again."]
    return lines


def _summation_findings(macs: dict) -> list[str]:
    """What the bit heap saves over the adder tree at B = 32, each format's smallest of each."""
    fmts = macs["constructions"].get("block", {}).get("32", {})
    saved, best = [], {}
    for fmt in MAC_FORMATS:
        by_summation = {}
        for key, fig in fmts.get(fmt, {}).items():
            if key.endswith(LANE_ONLY) or not fig.get("gates2"):
                continue
            summation = split_construction(key)[1]
            if summation not in by_summation or fig["gates2"] < by_summation[summation][1]:
                by_summation[summation] = (key, fig["gates2"])
        if len(by_summation) == 2:
            (_, tree), (_, heap) = by_summation["tree"], by_summation["heap"]
            saved.append(f"{MAC_TEXT[fmt]} {tree} -> {heap} ({100 * (heap - tree) / tree:+.1f} %)")
            best[fmt] = {s: g for s, (_, g) in by_summation.items()}
    if not saved:
        return []
    text = ("- Adding the products with a carry-save bit heap instead of an adder tree changes every "
            "format alike (smallest construction of each, two-input gates at B = 32: "
            + ", ".join(saved) + ")")
    if "bd" in best and "fp4" in best:
        text += (f", so BlockDialect / FP4 hardly moves: {best['bd']['tree'] / best['fp4']['tree']:.2f} "
                 f"with adder trees, {best['bd']['heap'] / best['fp4']['heap']:.2f} with bit heaps")
    return [text + "."]


def _bd_construction_findings(macs: dict) -> list[str]:
    """What the BlockDialect constructions measured at B = 32 say about where its cost lies, worded
    from their figures (a construction not measured is left out), each against the smallest with
    the same summation (the adder tree)."""
    block = macs["constructions"].get("block", {}).get("32", {}).get("bd", {})
    single = macs["constructions"].get("single", {}).get("32", {}).get("bd", {})
    trees = [c for c in block if split_construction(c)[1] == "tree" and block[c].get("gates2")]
    best = min(trees, key=lambda c: block[c]["gates2"], default=None)
    if not best:
        return []
    ref = block[best]["gates2"]

    def rel(c):
        return f"{block[c]['gates2']} gates at B = 32, {block[c]['gates2'] / ref:.2f}x {best}"

    lines = []
    if "sigshift_defer" in block:
        lines.append("- FP4's significand/shift form does not carry over (sigshift_defer, "
                     f"{rel('sigshift_defer')}): written as odd significands times 2^k, "
                     "BlockDialect's magnitudes need significands up to 15 (a 3x3 product of their "
                     "upper bits) and shifts up to 3 per operand, so each lane shifts an 8-bit "
                     "product by up to 6 places where FP4 shifts a 4-bit one by up to 4; the "
                     "shifter costs more than the partial products it saves.")
    if "blockprod_defer" in block:
        lines.append("- Forming the products of the two blocks' index 5-7 magnitudes once per "
                     f"block pair (blockprod_defer, {rel('blockprod_defer')}) takes the 4x4 "
                     "multiply out of the lanes only when both indices are 5-7, and then leaves a "
                     "9:1 choice of 8-bit products per lane, larger than the multiply it replaces; "
                     "the other cases still need an index 0-4 times a 4-bit magnitude.")
    if "anf_lut" in block and "decoder_lut" in block:
        saved = block["decoder_lut"]["gates2"] - block["anf_lut"]["gates2"]
        text = ("- What is left to save is the decode's per-lane selection. anf_lut turns the "
                "block's index 5-7 magnitudes into three XOR coefficients once per block, so a "
                "lane needs two ANDs and two XORs a bit and a 2:1 choice against its own index "
                "instead of the decoder's 8:1 selection; with the same multiplier array it is "
                f"{saved} gates ({100 * saved / block['decoder_lut']['gates2']:.1f} %) smaller than "
                "decoder_lut at B = 32.")
        luts = [(name, block["anf_lut"].get(f"{fam}.luts"), block["decoder_lut"].get(f"{fam}.luts"))
                for fam, name in (("ice40", "iCE40"), ("ecp5", "ECP5"))]
        luts = [f"{name} {a} against {b} LUT4" for name, a, b in luts if a and b]
        if luts:
            text += " On the FPGAs the two map differently: " + ", ".join(luts) + "."
        if "anf_lut" in single and "decoder_lut" in single:
            text += (f" In a self-contained single MAC anf_lut is the larger "
                     f"({single['anf_lut']['gates2']} against {single['decoder_lut']['gates2']} "
                     "gates): with one lane ABC folds decoder_lut's per-block formatbook row into "
                     "the lane's selection, while anf_lut's 12 coefficient bits stay.")
        lines.append(text)
    amortised = macs.get("single_bd_amortised", {})
    if amortised:
        c, v = min(amortised.items(), key=lambda kv: kv[1])
        lines.append("- The per-block part of the decode is small: shared by a block's 32 lanes it "
                     f"leaves the smallest single MAC at {v:.0f} gates ({c}).")
    return lines


# The decoder's two constructions (bd_hw.params.DECODES) alone and in the dot unit:
# (default unit, its build with decode="anf").
DECODER_PAIRS = (("bd_decoder", "bd_decoder_anf"), ("bd_dot", "bd_dot_anf"),
                 ("bd_dot_fast", "bd_dot_fast_anf"))


def decoder_section(results: list[dict]) -> list[str]:
    """The decoder's constructions compared where they are used: alone and inside ``bd_dot``."""
    by_unit = {(r["unit"], r["B"]): r for r in results}
    pairs = [(by_unit[(mux, 32)], by_unit[(anf, 32)]) for mux, anf in DECODER_PAIRS
             if (mux, 32) in by_unit and (anf, 32) in by_unit]
    if not pairs:
        return []
    lines = ["### The decoder inside bd_dot", "",
             "`bd_decoder` has two constructions of one function (`decode`, "
             "`bd_hw.params.DECODES`): `mux`, the dialect's formatbook row chosen once and an 8:1 "
             "selection per lane, and `anf`, the index 5-7 magnitudes as three XOR coefficients "
             "once and a 2:1 choice per lane (anf_lut's decode above). The block MACs above favour "
             "`anf`; here both are measured alone and inside the dot unit at B = 32, the default "
             "`mux` against the `_anf` build of the same unit (anf / mux in brackets).", "",
             "| unit | decode | gates2 | iCE40 LUT4 | iCE40 Fmax MHz | ECP5 LUT4 | ECP5 Fmax MHz |",
             "|---|---|---|---|---|---|---|"]

    # (metric as figure() reads it, its name in the ratio sentences; None: table only)
    columns = (("gates2", "two-input gates"), ("ice40.luts", "iCE40 LUT4"),
               ("ice40.fmax_mhz", None), ("ecp5.luts", "ECP5 LUT4"),
               ("ecp5.fmax_mhz", "ECP5 Fmax"))

    def ratios(anf, mux):
        """anf / mux of every column (None where either is missing)."""
        return [(figure(anf, metric) / figure(mux, metric)
                 if figure(anf, metric) and figure(mux, metric) else None, what)
                for metric, what in columns]

    fallback = []
    for mux, anf in pairs:
        for r, decode in ((mux, "mux (default)"), (anf, "anf")):
            mapped = [fam for fam in ("ice40", "ecp5") if figure(r, f"{fam}.lut_mapper")]
            if mapped:
                fallback.append(f"{r['unit']} on the {', '.join(mapped)}")
            cells = [_fmt(figure(r, metric)) for metric, _ in columns]
            if r is anf:
                cells = [f"{cell} ({q:.2f})" if q else cell
                         for cell, (q, _) in zip(cells, ratios(anf, mux))]
            lines.append("| " + " | ".join([mux["unit"], decode + (" (abc)" if mapped else ""),
                                            *cells]) + " |")

    def said(pair):
        mux, anf = pair
        return ", ".join(f"{q:.2f}x the {what}" for q, what in ratios(anf, mux) if q and what)

    dots = [(m, a) for m, a in pairs if m["unit"] != "bd_decoder"]
    smaller = [m["unit"] for m, a in dots if a.get("gates2") and a["gates2"] < m["gates2"]]
    lines += [""] + [f"- {a['unit']}: {said((m, a))} of {m['unit']}." for m, a in pairs]
    if fallback:
        lines += ["", "(abc): LUTs mapped by the `abc -lut 4` fallback, abc9 having failed on "
                  f"{'; '.join(fallback)}, so part of that row's LUT4 and Fmax difference may be "
                  "the mapper's rather than the decoder's."]
    lines += ["", "Alone, the decoder is all that is mapped. Inside the dot unit yosys and ABC map "
              "the whole unit (at the default setting the decoders and the multiplier array as one "
              "cloud; at the deepest the decoders' outputs registered), and the difference in the "
              "whole unit is no longer the decoder's own. "
              + ("`bd_dot` keeps `mux`: with `anf` it is not the smaller unit in two-input gates "
                 "at every setting measured" + (f" (smaller only as {', '.join(smaller)})"
                                                if smaller else "")
                 + ", and the placement spread of `bd_dot_fast` against `bd_dot_fast_anf` over "
                 "nextpnr seeds is in `timing.md`. `decode='anf'` stays a parameter of "
                 "`bd_decoder` and `bd_dot` for a target that favours it."
                 if len(smaller) < len(dots) else
                 "With `anf` the dot unit is the smaller at every setting measured."), ""]
    return lines


SCALE_UNITS = ("scale_bd", "scale_mxfp4", "scale_nvfp4", "scale_nvfp4_block")


def scale_section(results: list[dict]) -> list[str]:
    """The block dot products with their scale paths (``bench/hw/scale_paths.py``)."""
    rows = sorted((r for r in results if r["unit"] in SCALE_UNITS),
                  key=lambda r: (r["B"], SCALE_UNITS.index(r["unit"])))
    if not rows:
        return []
    lines = ["## Scale paths: block dot products with their scale handling", "",
             "One activation block and one weight block per clock, the exact block value out as an "
             "integer and an exponent (`bench/hw/scale_paths.py`): BlockDialect adds its two 5-bit "
             "exponents, MXFP4 its two E8M0 scales; NVFP4 multiplies its two E4M3 scales (4x4 "
             "significands) and the block sum by that product, and holds one FP32 x FP32 "
             "significand multiplier for the product of the tensor scales, applied once per result "
             "(`scale_nvfp4_block`: the same without it). "
             "Elements use each format's smallest block MAC (lane construction and summation). "
             "No accumulator or final "
             "rounding in any of them. On the ECP5 the narrow products (elements, NVFP4's 4x4 scale "
             "product) are in LUTs as for the MACs above, and NVFP4's wide ones in DSP blocks "
             "(its 13x9 multiply of the block sum by the scale product; the 24x24 FP32 "
             "significand product of `scale_nvfp4`), as a designer would build them: compare "
             "LUT4 and DSP together; on the iCE40, with no DSP, everything is LUTs.", "",
             "| unit | B | gates2 | gates2 / element | iCE40 LUT4 | iCE40 Fmax MHz | ECP5 LUT4 | "
             "ECP5 DSP | ECP5 Fmax MHz | measured |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        per = round(r["gates2"] / r["B"], 1) if r.get("gates2") else None
        lines.append("| " + " | ".join(_fmt(v) for v in [
            r["unit"], r["B"], r.get("gates2"), per, figure(r, "ice40.luts"),
            figure(r, "ice40.fmax_mhz"), figure(r, "ecp5.luts"), figure(r, "ecp5.dsp"),
            figure(r, "ecp5.fmax_mhz"), r.get("measured")]) + " |")
    return lines + [""]


# SPEC 6.1: the dot unit in each accumulation mode, default and deepest pipeline (issue 25).
ACCUMULATION_UNITS = ("bd_dot", "bd_dot_fp32", "bd_dot_fp16", "bd_dot_fast", "bd_dot_fp32_fast",
                      "bd_dot_fp16_fast")


def accumulation_section(results: list[dict]) -> list[str]:
    """``bd_dot`` in its three accumulation modes side by side (SPEC 6.1), with each rounded mode's
    figures as a fraction of the exact unit's at the same pipeline setting."""
    by_unit = {r["unit"]: r for r in results if r["unit"] in ACCUMULATION_UNITS and r["B"] == 32}
    if not {"bd_dot_fp32", "bd_dot_fp16"} & set(by_unit):
        return []
    lines = ["## Accumulation modes: exact, FP32, FP16 (SPEC 6.1)", "",
             "`bd_dot` at B = 32: exact (82-bit integer accumulator, one FP32 rounding), `fp32` and "
             "`fp16` (each block value converted to the format and added by a float adder that "
             "rounds every beat, the paper's FP16 accumulation). `_fast`: each mode's deepest "
             "pipeline setting (its latency in the table; the rounded modes have fewer cut points, "
             "as their float adder is a loop that adds one block per clock in SPEC 6.1's order, so "
             "no cut can go inside it). In brackets: the figure over the exact unit's at the same setting.", "",
             "| unit | latency | gates2 | FF | iCE40 LUT4 | iCE40 Fmax MHz | ECP5 LUT4 | ECP5 FF | "
             "ECP5 DSP | ECP5 Fmax MHz | measured |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    metrics = ("gates2", "cells_flops", "ice40.luts", "ice40.fmax_mhz", "ecp5.luts", "ecp5.flops",
               "ecp5.dsp", "ecp5.fmax_mhz")
    for name in ACCUMULATION_UNITS:
        r = by_unit.get(name)
        if r is None:
            continue
        exact = by_unit.get("bd_dot_fast" if name.endswith("_fast") else "bd_dot")
        cells = []
        for metric in metrics:
            value = figure(r, metric)
            ratio = _ratio(value, figure(exact, metric)) if exact is not None and exact is not r else None
            cells.append(_fmt(value) + (f" ({ratio:.2f})" if ratio is not None else ""))
        lines.append("| " + " | ".join([name, _fmt(r.get("latency")), *cells, _fmt(r.get("measured"))]) + " |")
    return lines + [""]


def rounding_section(summary: dict) -> list[str]:
    if not summary["rounding_cost"]:
        return []
    lines = ["## Stage 1: rounding vs truncating (SPEC 4.2)", "",
             "The rounding stage 1 picks the pair from `(qmax + 1) >> 1` instead of `qmax >> 1`: one "
             "5-bit incrementer and a clamp. Figures of each variant and rounding / truncating.", "",
             "| B | unit | cells | gates2 | iCE40 LUT4 | ECP5 LUT4 | iCE40 Fmax | ECP5 Fmax |",
             "|---|---|---|---|---|---|---|---|"]
    for B, kinds in summary["rounding_cost"].items():
        for kind, figs in kinds.items():
            cols = [f"{_fmt(f['rounding'])} / {_fmt(f['truncating'])} ({_fmt(f['ratio'])})"
                    for f in figs.values()]
            lines.append(f"| {B} | {ROUNDING_PAIRS[kind][0]} vs {ROUNDING_PAIRS[kind][1]} | "
                         + " | ".join(cols) + " |")
    return lines + [""]


def selector_section(results: list[dict], summary: dict) -> list[str]:
    if not summary["selector_ratios"]:
        return []
    lines = ["## Dialect selection: MSE / two-stage", "",
             "Both selectors take the block's FP16 elements and its shared exponent and give the "
             "dialect, inputs and output registered. The literal MSE selector computes SPEC 5 as "
             "written (every dialect's squared error of every element); the shared-term one "
             "(`bench/hw/mse_shared.py`) is built the way a designer would, bit-exact to the same "
             "choice. Each ratio is given both ways (MSE / two-stage, and two-stage as a share of "
             "MSE).", "",
             "| B | compared | cells | gates2 | iCE40 LUT4 | ECP5 LUT4 | two-stage share (gates2) "
             "| paper | measured |", "|---|---|---|---|---|---|---|---|---|"]
    for B, kinds in summary["selector_ratios"].items():
        for kind, r in kinds.items():
            share = f"{100 / r['gates2']:.1f} %" if r["gates2"] else "-"
            lines.append(f"| {B} | {SELECTOR_PAIR_TEXT[kind]} | "
                         + " | ".join(_fmt(r[m]) for m in METRICS)
                         + f" | {share} | {_fmt(r['paper'])} | {', '.join(r['measured'])} |")
    return lines + [""]


def discussion(results: list[dict], summary: dict) -> list[str]:
    """The comparison with the paper, worded from the measured figures."""
    lines = ["## Comparison with the paper: dialect selection", ""]
    at = {(r["unit"], r["B"]): r for r in results}
    sel = summary["selector_ratios"].get("32", {})
    mse, two = at.get(("sel_mse", 32)), at.get(("sel_two_stage", 32))
    if "literal" in sel and mse and two and mse.get("gates2") and two.get("gates2"):
        per_lane = (mse["gates2"] - two["gates2"]) / (NUM_DIALECTS * 32)
        lines += [f"The literal MSE selector is {_fmt(sel['literal']['gates2'])}x the two-stage "
                      f"selector in two-input gates (measured {mse['measured']}); the paper reports "
                      f"about {PAPER_SELECTOR_RATIO:.0f}x. It is SPEC 5 taken literally: 16 x 32 = "
                      "512 squared-error lanes, each an 11-bit |X - 256 v| and its square, about "
                      f"{per_lane:.0f} gates per lane beyond the whole two-stage selector "
                      f"({two['gates2']} gates: 32 five-bit shifters, one max tree, 64 range "
                      "compares and two popcounts)."]
    if "designer" in sel:
        lines += ["", f"The shared-term MSE selector is {_fmt(sel['designer']['gates2'])}x the "
                      f"two-stage selector in two-input gates ({_fmt(sel['designer']['ice40.luts'])}x "
                      f"in iCE40 LUTs, {_fmt(sel['designer']['ecp5.luts'])}x in ECP5 LUTs). It "
                      "drops what every dialect shares: sum X^2 (the same for all dialects, so "
                      "cost(d) - sum X^2 = 256 sum v (256 v - 2 X) orders the dialects alike) and "
                      "the per-dialect nearest-value search: an element's nearest value in any "
                      f"dialect is fixed by which of the {len(THRESHOLDS)} distinct midpoints of the "
                      f"{len(MAGNITUDES)} magnitudes {min(MAGNITUDES)}..{max(MAGNITUDES)} half-units "
                      "its q reaches, and each dialect's cost is a sum of per-midpoint terms "
                      "256 (v'^2 - v^2) N_t - 2 (v' - v) S_t over the count N_t and the sum S_t of X "
                      f"of the elements at or above midpoint t ({len(STEPS)} distinct terms). So per "
                      f"element {len(THRESHOLDS)} five-bit compares and per midpoint one masked adder "
                      f"tree, instead of {NUM_DIALECTS} nearest-value searches and squares per element; "
                      "the dialects differ only in which "
                      "midpoint terms they add. It is tested bit-exact against the golden model "
                      "(`tests/bench/test_bench_mse_shared.py`). This is a fair hardware cost of exact "
                      "MSE selection; the literal figure is an upper end."]
    if "quantizer_literal" in sel:
        q = sel["quantizer_literal"]
        lines.append(f"As whole quantizers (shared exponent, element indices and pipeline "
                     f"registers included) the literal ratio is {_fmt(q['gates2'])}x in gates and "
                     f"{_fmt(q['ice40.luts'])}x in iCE40 LUTs.")
    for fam in FAMILY:
        unfit = [r for r in results if r.get(fam, {}).get("fits") is False]
        if unfit:
            lines += ["", f"Units that do not fit the {FAMILY[fam].device} (figures without place "
                          "and route are still given): " + "; ".join(
                              f"{r['unit']} at B={r['B']} ({r[fam].get('note', '')})"
                              for r in unfit) + "."]
    return lines + [""]
