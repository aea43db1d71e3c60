"""Quality against cost: perplexity against MAC gates per element and against bits per element, with the
Pareto front.

Gates come from the committed synthesis report (reports/synth/report.json, written by bench.synth;
golden never imports bench, so the figures are read from the file). Per element = the unit's
two-input gates / its lanes B, for the block dot product with its scale path (bench/hw/scale_paths.py:
`scale_<fmt>_b<B>`, elements in the format's smallest block-MAC construction). Where the synthesis
report has no scale-path unit at a block size, the figure is derived and says so:
- BlockDialect at a block size without `scale_bd`: its smallest block MAC at that size plus the
  scale path's increment measured at another size (a 5-bit exponent add, independent of B);
- INT4: its smallest block MAC alone (no scale-path unit is built: its FP16 x FP16 scale product is
  not counted, so the figure is a lower bound).
NVFP4's `scale_nvfp4` holds one FP32 x FP32 multiplier for the tensor scales beside the per-block path;
`scale_nvfp4_block` is the per-block path alone (given too: a design can share the multiplier).
"""
from __future__ import annotations

import json
import pathlib

DEFAULT_SYNTH_JSON = pathlib.Path(__file__).resolve().parents[2] / "reports" / "synth" / "report.json"
# Run-key stems (without the scope) and labels of the points, and the (format, B) of their MAC.
POINTS = (
    ("bd_mse_bd_two_stage_b16", "BD B=16 two-stage", "bd", 16),
    ("bd_mse_bd_two_stage_b32", "BD B=32 two-stage", "bd", 32),
    ("bd_mse_bd_two_stage_b64", "BD B=64 two-stage", "bd", 64),
    ("bd_mse_bd_mse_b16", "BD B=16 MSE activations", "bd", 16),
    ("bd_mse_bd_mse_b32", "BD B=32 MSE activations", "bd", 32),
    ("bd_mse_bd_mse_b64", "BD B=64 MSE activations", "bd", 64),
    ("mxfp4_mxfp4_b16", "MXFP4 B=16", "mxfp4", 16),
    ("mxfp4_mxfp4_b32", "MXFP4 B=32", "mxfp4", 32),
    ("nvfp4_nvfp4_b16_static", "NVFP4 static scale", "nvfp4", 16),
    ("int4_int4_b32", "INT4 B=32", "int4", 32),
)
# Beside the front, labelled, not part of it: its activation scale is one no online hardware has.
BESIDE = (("nvfp4_nvfp4_b16", "NVFP4 dynamic scale (sees the batch)", "nvfp4", 16),)
AXES = {"gates": "MAC gates / element", "bits": "bits / element"}


def load_synth(path: pathlib.Path | None = None) -> dict:
    """reports/synth/report.json (or `path`); a ValueError naming synth_json when it is missing or
    not a synthesis report."""
    path = pathlib.Path(path) if path is not None else DEFAULT_SYNTH_JSON
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"synth_json {path}: no such file") from None
    except (OSError, ValueError) as err:
        raise ValueError(f"synth_json {path}: not a readable JSON file ({err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("results"), list) or "macs" not in data.get("summary", {}):
        raise ValueError(f"synth_json {path}: not a bench.synth report (no results and summary.macs)")
    return data


def mac_costs(synth: dict) -> dict[str, dict]:
    """{"<fmt>_b<B>": {gates_per_element, gates2, lanes, units, derivation, measured}} for every MAC
    the points use."""
    rows = {r["top"]: r for r in synth["results"] if r.get("gates2") and r.get("top")}
    smallest = synth["summary"]["macs"]["smallest"]["block"]
    costs = {}

    def block_mac(fmt: str, B: int):
        construction = smallest.get(str(B), {}).get(fmt)
        return rows.get(f"mac_{fmt}_{construction}_b{B}") if construction else None

    for fmt, B in sorted({(p[2], p[3]) for p in POINTS + BESIDE}):
        unit = rows.get(f"scale_{fmt}_b{B}")
        entry = None
        if unit is not None:
            entry = {"gates2": unit["gates2"], "units": [unit["top"]], "derivation": "scale-path unit"}
        elif fmt == "bd" and block_mac(fmt, B) is not None:
            other = next(((rows[f"scale_bd_b{b}"], block_mac(fmt, b)) for b in (32, 16, 64)
                          if f"scale_bd_b{b}" in rows and block_mac(fmt, b) is not None), None)
            if other is not None:
                mac = block_mac(fmt, B)
                entry = {"gates2": mac["gates2"] + other[0]["gates2"] - other[1]["gates2"],
                         "units": [mac["top"], other[0]["top"], other[1]["top"]],
                         "derivation": f"{mac['top']} + ({other[0]['top']} - {other[1]['top']})"}
        elif block_mac(fmt, B) is not None:
            mac = block_mac(fmt, B)
            entry = {"gates2": mac["gates2"], "units": [mac["top"]],
                     "derivation": "block MAC only (no scale-path unit: lower bound)"}
        if entry is None:
            continue
        entry["lanes"] = B
        entry["gates_per_element"] = entry["gates2"] / B
        entry["measured"] = sorted({rows[u].get("measured") or "?" for u in entry["units"]})
        costs[f"{fmt}_b{B}"] = entry
    shared = rows.get("scale_nvfp4_block_b16")
    if shared is not None and "nvfp4_b16" in costs:
        costs["nvfp4_b16"]["per_block_only"] = {"unit": shared["top"], "gates2": shared["gates2"],
                                                "gates_per_element": shared["gates2"] / 16}
    return costs


def pareto_front(points: list[dict], x: str, y: str) -> list[str]:
    """Labels of the points no other point dominates (no larger x and y, one of them smaller)."""
    front = []
    for p in points:
        dominated = any(q is not p and q[x] <= p[x] and q[y] <= p[y] and (q[x] < p[x] or q[y] < p[y])
                        for q in points)
        if not dominated:
            front.append(p["label"])
    return front


def dominators(points: list[dict], p: dict, x: str, y: str) -> list[dict]:
    return [q for q in points if q is not p and q[x] <= p[x] and q[y] <= p[y] and (q[x] < p[x] or q[y] < p[y])]


def section(runs: dict, noise: dict, bits: dict[str, float], costs: dict[str, dict], synth_path: str) -> dict:
    """Points (scope x point) with gates and bits per element, perplexity and band; the Pareto front
    of each (axis, scope); and for each BlockDialect point, on the front or dominated by what (and
    whether that is within the noise band)."""
    from golden.report import noise as noise_bands

    out = {"synth_json": synth_path, "costs": costs, "points": {}, "fronts": {}, "blockdialect": {}}
    for scope in ("linear", "full"):
        points, beside = [], []
        for group, chosen in ((POINTS, points), (BESIDE, beside)):
            for stem, label, fmt, B in group:
                key = f"{scope}_{stem}"
                if key not in runs or f"{fmt}_b{B}" not in costs:
                    continue
                band = noise.get("bands", {}).get(key, {})
                chosen.append({"label": label, "key": key, "fmt": fmt, "block": B,
                               "gates": costs[f"{fmt}_b{B}"]["gates_per_element"], "bits": bits[key],
                               "ppl": runs[key]["perplexity"], "band": band.get("band"),
                               "window_band": band.get("window_band")})
        out["points"][scope] = {"front_candidates": points, "beside": beside}
        shared = costs.get("nvfp4_b16", {}).get("per_block_only")
        if shared:
            # The same front with NVFP4's tensor-scale multiplier shared by many units (not counted).
            alt = [dict(p, gates=shared["gates_per_element"]) if p["fmt"] == "nvfp4" else p for p in points]
            out["fronts"][f"gates_{scope}_nvfp4_per_block_only"] = pareto_front(alt, "gates", "ppl")
        for axis in AXES:
            front = pareto_front(points, axis, "ppl")
            out["fronts"][f"{axis}_{scope}"] = front
            for p in points:
                if p["fmt"] != "bd":
                    continue
                doms = dominators(points, p, axis, "ppl")
                out["blockdialect"].setdefault(f"{axis}_{scope}", []).append({
                    "label": p["label"], "on_front": p["label"] in front,
                    "dominated_by": [{"label": q["label"], "ppl_ratio": p["ppl"] / q["ppl"],
                                      "tie": noise_bands.tie(noise, runs, p["key"], q["key"])} for q in doms]})
    return out


def statement(qc: dict) -> list[str]:
    """Where BlockDialect sits on each front, in words, from the figures."""
    costs = qc["costs"]
    lines = []
    if "bd_b32" in costs:
        others = [f"{k.replace('_b', ' B=').upper()} {costs[k]['gates_per_element']:.0f} "
                  f"({costs['bd_b32']['gates_per_element'] / costs[k]['gates_per_element']:.2f}x)"
                  for k in costs if not k.startswith("bd_")]
        lines.append(f"- Cost: the BlockDialect MAC with its scale path is {costs['bd_b32']['gates_per_element']:.0f} "
                     "gates per element at B = 32 (BlockDialect / other in brackets): " + ", ".join(others) + ".")
    for name, entries in qc["blockdialect"].items():
        axis, scope = name.split("_")
        on = [e["label"] for e in entries if e["on_front"]]
        text = (f"- **{AXES[axis]}, {scope} path**: front = {', '.join(qc['fronts'][name]) or 'none'}. "
                + (f"BlockDialect on it: {', '.join(on)}." if on else "No BlockDialect point is on it."))
        off = []
        for e in entries:
            if e["on_front"]:
                continue
            best = max(e["dominated_by"], key=lambda d: d["ppl_ratio"])
            if all(d["tie"] for d in e["dominated_by"]):
                off.append(f"{e['label']} only by a tie ({best['label']}, within the noise band)")
            else:
                real = max((d for d in e["dominated_by"] if not d["tie"]), key=lambda d: d["ppl_ratio"])
                off.append(f"{e['label']} ({real['label']}: {100 * (1 - 1 / real['ppl_ratio']):.1f} % lower "
                           "perplexity at no more cost)")
        lines.append(text + (" Off it: " + "; ".join(off) + "." if off else ""))
    for scope in ("linear", "full"):
        alt = qc["fronts"].get(f"gates_{scope}_nvfp4_per_block_only")
        if alt is not None:
            bd_on = [label for label in alt if label.startswith("BD")]
            lines.append(f"- If NVFP4's tensor-scale multiplier is shared and not counted, the gates front of the "
                         f"{scope} path is {', '.join(alt)}" + (f" (BlockDialect: {', '.join(bd_on)})." if bd_on
                                                               else "; no BlockDialect point is on it."))
    return lines
