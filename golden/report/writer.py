"""report.json (every figure) and report.md (tables, figures by relative path)."""
from __future__ import annotations

import json
import math
import pathlib

from golden.report import metrics, noise, plots, quality_cost

# Headline rows: (label, weight spec key, activation spec key, perplexity suffix). BlockDialect
# stores weights chosen by MSE and activations by the two-stage selector with the rounding stage 1
# (SPEC 4.2 [revised]), as the hardware does.
HEADLINE = (
    ("BlockDialect B=32", "bd_mse_b32", "bd_two_stage_b32", "bd_mse_bd_two_stage_b32"),
    ("BlockDialect B=16", "bd_mse_b16", "bd_two_stage_b16", "bd_mse_bd_two_stage_b16"),
    ("BlockDialect B=64", "bd_mse_b64", "bd_two_stage_b64", "bd_mse_bd_two_stage_b64"),
    ("MXFP4 B=32", "mxfp4_b32", "mxfp4_b32", "mxfp4_mxfp4_b32"),
    ("MXFP4 B=16", "mxfp4_b16", "mxfp4_b16", "mxfp4_mxfp4_b16"),
    ("NVFP4 (B=16), static calibrated scale", "nvfp4_b16", None, "nvfp4_nvfp4_b16_static"),
    ("NVFP4 (B=16), per-tensor dynamic scale, sees the whole batch", "nvfp4_b16", "nvfp4_b16", "nvfp4_nvfp4_b16"),
    ("INT4 B=32", "int4_b32", "int4_b32", "int4_int4_b32"),
)
REPRODUCIBILITY_MD = "reproducibility.md"


def json_safe(value):
    """Infinities and NaN are not JSON: write them as strings so strict readers still load the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    return value


def json_restore(value):
    """Inverse of json_safe: the strings "inf", "-inf" and "nan" back to floats."""
    if value in ("inf", "-inf", "nan"):
        return float(value)
    if isinstance(value, dict):
        return {k: json_restore(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_restore(v) for v in value]
    return value


def _f(value, digits=2) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _ppl(run) -> str:
    return _f(run["perplexity"], 3) if run else "n/a"


def _ppl_band(result: dict, key: str, digits: int = 2) -> str:
    """Perplexity with its noise band: "43.52 ±0.99 %", a dagger where the band is the floor."""
    run = result["perplexity"]["runs"].get(key)
    if run is None:
        return "n/a"
    entry = result.get("noise", {}).get("bands", {}).get(key) or {}
    half = entry.get("rel_half_width")
    if half is None:
        return _f(run["perplexity"], digits)
    return f"{_f(run['perplexity'], digits)} ±{_percent(half)}" + ("†" if entry.get("source") == "floor" else "")


def _percent(fraction: float) -> str:
    """A relative width in percent, to two significant digits (noise bands span orders of magnitude)."""
    return f"{100 * fraction:.2g} %"


def headline_rows(result: dict) -> list[list[str]]:
    summary = result["tensor_metrics"]["summary"]
    runs = result["perplexity"]["runs"]
    rows = []
    for label, w_key, a_key, ppl_suffix in HEADLINE:
        if not any(f"{scope}_{ppl_suffix}" in runs for scope in ("linear", "full")) and a_key is None:
            continue
        fmt = result["formats"][w_key]
        rows.append([label, _f(fmt["bits_per_element"]), _f(fmt["bits_per_element_paper"]),
                     _f(summary["weight"][w_key]["mean_sqnr_db"]),
                     _f(summary["activation"][a_key]["mean_sqnr_db"]) if a_key else "n/a (static scale)",
                     _ppl_band(result, f"linear_{ppl_suffix}", 3), _ppl_band(result, f"full_{ppl_suffix}", 3)])
    return rows


def _intro(result: dict) -> list[str]:
    meta = result["meta"]
    out = ["# BlockDialect format comparison on real LLaMA tensors\n"]
    if meta["quick"]:
        out.append("**Quick mode**: only the first and last decoder layers are measured and quantized, "
                   "on a short text. The figures check that the pipeline works; they do not describe the model.\n")
    out.append(f"Model: `{meta['model_file']}`; text: `{meta['text']}` ({meta['text_tokens']} tokens). "
               f"Tensor metrics use the linear-layer inputs of the first {meta['capture_tokens']} tokens and, "
               f"per weight, {meta['weight_rows_per_layer'] or 'all'} output rows sampled with a fixed seed; "
               f"{meta['layers_measured']} linear layers. Perplexity uses the first {meta['perplexity_tokens']} "
               f"tokens. The model runs in **{meta['dtype']}** on {meta['device']} (see Reproducibility). "
               f"torch {meta['torch']} ({meta['cpu_capability']} kernels), transformers {meta['transformers']}, "
               f"torch threads: {meta['threads']}.\n")
    if meta["default_model"]:
        out.append("> **Caveat on weights.** The default model's weights were stored as **Q4_1** in the GGUF file "
                   "(blocks of 32 on a 16-level affine grid) and are dequantized on loading. Weight comparisons are "
                   "therefore biased toward grids like Q4_1's (uniform levels in blocks of 32, which favours INT4-like "
                   "formats) and perplexity starts from an already 4-bit model. The activations are genuine: "
                   "they are computed by the model on real text.\n")
    out.append("Every format receives the FP16-rounded tensor (SPEC 1, one rounding) and is measured against it. "
               "SQNR = 10 log10(sum x^2 / sum (x - x_hat)^2) per layer; \"mean\" is over layers, \"pooled\" sums "
               "signal and noise over all layers first. Bits per element count element codes and per-block metadata; "
               "MXFP4's are given for its 8-bit E8M0 scale (OCP) and, in the \"paper\" column, for the paper's 5-bit "
               "exponent; NVFP4 excludes its one FP32 tensor scale.\n")
    return out


def _headline(result: dict) -> list[str]:
    runs = result["perplexity"]["runs"]
    baseline = runs.get("baseline")
    fp16 = runs.get("linear_fp16_fp16")
    return ["## Headline\n",
            "BlockDialect: weights by MSE selection, activations by the online two-stage selector with the "
            "**rounding stage 1** of SPEC 4.2 [revised] (`method=\"two_stage\"`, what `rtl/bd_quantizer_b*.v` "
            "implements); the truncating rule is compared in the next section. Perplexity: unquantized "
            f"{_ppl(baseline)}" + (f", FP16 {_ppl(fp16)}" if fp16 else "") + ".\n",
            _table(["format", "bits/elem (OCP)", "bits/elem (paper)", "weight SQNR dB", "activation SQNR dB",
                    "PPL linear", "PPL full path"], headline_rows(result)) + "\n",
            "± is the noise band of each perplexity (see Noise bands; † where it is the floor measured on other "
            "runs). " + _tie_sentence(result, [p for _, _, _, p in HEADLINE]) + "\n"]


def _tie_sentence(result: dict, stems: list[str]) -> str:
    """The pairs among the runs `stems` (both scopes) whose difference is inside their noise bands."""
    runs, bands = result["perplexity"]["runs"], result.get("noise")
    if not bands:
        return ""
    labels = {k: r["label"] for k, r in runs.items()}
    found = []
    for scope in ("linear", "full"):
        pairs = noise.ties(bands, runs, [f"{scope}_{s}" for s in stems])
        found += [f"{labels[a]} and {labels[b]} ({scope}: {runs[a]['perplexity']:.2f} vs {runs[b]['perplexity']:.2f})"
                  for a, b in pairs]
    if not found:
        return "No two of these perplexities are within each other's noise bands: every difference here is real."
    return "Ties (difference inside the noise bands): " + "; ".join(found) + "."


def _stage1(result: dict) -> list[str]:
    rows = [[str(r["block"]), r["selector"], _f(r["pooled_sqnr_db"]), _f(r["mean_sqnr_db"]),
             _f(r["agreement_with_mse"], 4), _f(r["ppl_linear"], 3), _f(r["ppl_full"], 3)]
            for r in result["stage1"]]
    return ["## Activation selectors: rounding vs truncating stage 1 vs MSE\n",
            "SPEC 4.2 [revised]: `two_stage` picks the pair whose largest value is nearest the block maximum "
            "(`p = 15 - ((qmax + 1) >> 1)`), `two_stage_trunc` the first reading (`p = 15 - (qmax >> 1)`), `mse` "
            "the dialect of least squared error (SPEC 5). Activation SQNR over all layers (pooled) and its mean "
            "per layer; agreement is the fraction of non-zero activation blocks where the selector picks the "
            "MSE dialect; perplexity with MSE-selected weights at the same block size.\n",
            _table(["B", "activation selector", "A pooled SQNR dB", "A mean SQNR dB", "agreement with MSE",
                    "PPL linear", "PPL full path"], rows) + "\n"]


def _tensor_table(result: dict, figures: dict) -> list[str]:
    summary = result["tensor_metrics"]["summary"]
    rows = []
    for s in metrics.TENSOR_SPECS:
        row = [s.label, _f(result["formats"][s.key]["bits_per_element"])]
        for kind in ("weight", "activation"):
            m = summary[kind].get(s.key)
            row += ([_f(m["mean_sqnr_db"]), _f(m["min_sqnr_db"]), _f(m["pooled_sqnr_db"]), f"{m['mse']:.4e}"]
                    if m else ["n/a"] * 4)
        rows.append(row)
    return ["## Tensor-level error, all formats\n",
            _table(["format", "bits/elem", "W mean SQNR", "W min", "W pooled", "W MSE",
                    "A mean SQNR", "A min", "A pooled", "A MSE"], rows) + "\n",
            f"![SQNR per layer]({figures['sqnr']})\n"]


def _block_size(result: dict, figures: dict) -> list[str]:
    sweep = result["block_sizes"]
    rows = [[f"{kind}s, {sweep[kind]['method']}"] + [_f(sweep[kind]["mean_sqnr_db"][b]) for b in ("16", "32", "64")]
            for kind in ("weight", "activation")]
    return ["## BlockDialect block size\n",
            _table(["tensor, selection", "B=16", "B=32", "B=64"], rows) + "\n",
            f"![SQNR vs block size]({figures['block_size']})\n"]


def _selection(result: dict, figures: dict) -> list[str]:
    sel = result["selection"]
    specs = {s.key: s for s in metrics.TENSOR_SPECS}
    order = {fmt: i for i, fmt in enumerate(metrics.SELECTORS)}
    rows = [[kind, specs[key].label, _f(r["agreement_rate"], 4), str(r["blocks"]), _f(r["mean_sqnr_loss_db"], 3),
             _f(r["max_sqnr_loss_db"], 3)]
            for kind in ("weight", "activation")
            for key, r in sorted(sel[kind].items(), key=lambda item: (specs[item[0]].block, order[specs[item[0]].fmt]))]
    hist = result["dialects"]
    keys = [k for k in ("weight_mse", "weight_two_stage", "weight_two_stage_trunc", "activation_two_stage",
                        "activation_two_stage_trunc", "activation_mse") if k in hist]
    histogram = [[str(d)] + [_f(100 * hist[k]["counts"][d] / max(1, hist[k]["blocks"]), 1) for k in keys]
                 for d in range(len(hist["weight_mse"]["counts"]))]
    return ["## Dialect selection: online selectors vs MSE\n",
            "Agreement is the fraction of non-zero blocks where the online selector chooses the MSE dialect; "
            "the SQNR loss is BD-MSE minus the selector, per layer.\n",
            _table(["tensor", "selector", "agreement", "blocks", "mean SQNR loss dB", "max SQNR loss dB"], rows) + "\n",
            f"Dialect usage at B={hist['block']} (% of non-zero blocks):\n",
            _table(["dialect"] + [k.replace("_", " ") + " %" for k in keys], histogram) + "\n",
            f"![Dialect usage]({figures['dialects']})\n"]


def _perplexity(result: dict, figures: dict) -> list[str]:
    ppl = result["perplexity"]
    bands = result.get("noise", {}).get("bands", {})
    rows = [[r["label"], r["scope"] + (", exact" if r.get("exact") else ""), str(r["weight_fmt"]), str(r["act_fmt"]),
             _f(r["bits_per_element"]), _f(r["perplexity"], 4), _band(bands.get(k, {}).get("band")),
             _band(bands.get(k, {}).get("window_band")), _f(r["seconds"], 1)] for k, r in ppl["runs"].items()]
    quantization = ppl["weight_quantization_s"]
    return ["## Perplexity\n",
            f"{ppl['tokens']} tokens cut into consecutive, non-overlapping windows of {ppl['window']} tokens, each "
            "evaluated from scratch; perplexity = exp(total NLL / predicted tokens). The model runs in "
            f"{ppl['dtype']}; the unquantized output head in float32. *linear*: every decoder nn.Linear has its "
            "weight quantized once and its input on every call (the output head, tied to the embedding, stays "
            "unquantized). *full path*: also Q and K (blocks along head_dim) for QK^T, and the probabilities "
            "(blocks along the key dimension, zero-padded) and V (blocks along its sequence dimension) for "
            "scores x V. Attention, in every run the unquantized one included, is the report's own function, "
            "registered only while the run lasts: in float64 on the CPU one fused pass (golden.report."
            "attention.attention_native) whose bits depend on neither threads, batch nor CPU. "
            f"{ppl['quantized_layers']} layers quantized. *exact*: see Hardware-exact perplexity.\n",
            _table(["run", "scope", "weights", "activations", "bits/elem", "perplexity", "noise band",
                    "window band", "seconds"], rows) + "\n",
            "Seconds are for the forward passes; quantizing all weights once per format took "
            + ", ".join(f"{k} {v:.1f} s" for k, v in quantization.items()) + ".\n",
            f"![Perplexity vs bits]({figures['perplexity']})\n"]


def _band(band) -> str:
    return "n/a" if not band else f"[{band[0]:.2f}, {band[1]:.2f}]"


def _noise(result: dict, figures: dict) -> list[str]:
    bands = result.get("noise")
    if not bands:
        return []
    runs = result["perplexity"]["runs"]
    rows = []
    for key in bands["exponent_runs"]:
        b = bands["bands"][key]
        rows.append([runs[key]["label"], runs[key]["scope"], _f(runs[key]["perplexity"], 3),
                     ", ".join(_f(v, 3) for v in b["perturbed"]), _band(b["band"]), f"±{_percent(b['rel_half_width'])}",
                     _band(b["window_band"])])
    floors = "; ".join(f"{scope} ±{_percent(f['rel_half_width'])} ({f['from']})" for scope, f in bands["floors"].items())
    windows = [b["window_band"] for b in bands["bands"].values() if b.get("window_band")]
    keys = [k for k, b in bands["bands"].items() if b.get("window_band")]
    widths = [math.log(b[1] / runs[k]["perplexity"]) for k, b in zip(keys, windows)]
    from golden.report.perplexity import NOISE_EXPONENT

    return ["## Noise bands\n",
            f"Every perplexity carries a noise floor. **Perturbation band** (the one used for ties): the run "
            f"repeated with every quantized linear input scaled by (1 + 2^-{NOISE_EXPONENT}) and by "
            f"(1 - 2^-{NOISE_EXPONENT}) before its quantizer: a change of no meaning that still flips FP16 "
            "roundings and codes. The band is [min, max] of the three perplexities; each costs two runs, so it is "
            "measured on the runs below and every other run is given the largest half-width measured in its scope "
            f"(the floor: {floors or 'none measured'}; † in the tables). Two perplexities are a **tie** when "
            "their ratio is within the sum of their half-widths. **Window band**: exp(mean NLL ± its standard "
            f"error over the {runs[next(iter(runs))]['windows']} evaluation windows), how far the figure would "
            "move on other text of this kind"
            + (f" (±{_percent(min(widths))} to ±{_percent(max(widths))})" if widths else "")
            + "; every format sees the same windows, so it does not decide ties between formats.\n",
            _table(["run", "scope", "perplexity", "perturbed (up, down)", "perturbation band", "half-width",
                    "window band"], rows) + "\n"]


def _calibration(result: dict) -> list[str]:
    calib = result.get("calibration")
    if not calib:
        return []
    runs = result["perplexity"]["runs"]
    rows = []
    for scope in ("linear", "full"):
        static, dynamic = runs.get(f"{scope}_nvfp4_nvfp4_b16_static"), runs.get(f"{scope}_nvfp4_nvfp4_b16")
        if static or dynamic:
            rows.append([scope, _ppl_band(result, f"{scope}_nvfp4_nvfp4_b16_static", 3),
                         _ppl_band(result, f"{scope}_nvfp4_nvfp4_b16", 3),
                         f"{100 * (static['perplexity'] / dynamic['perplexity'] - 1):+.2f} %" if static and dynamic else "n/a"])
    return ["## NVFP4 activation scale: static calibrated vs dynamic\n",
            "NVFP4's FP32 tensor scale (amax / (448 x 6), SPEC 8) taken from each activation tensor's own amax "
            "sees the whole batch, future tokens and other sequences included: no online hardware has it. The "
            "static variant fixes it per layer from a calibration pass (`golden.calibration`): the unquantized "
            f"model run on {calib['tokens']} tokens of `{calib['text']}` (tokens {calib['first_token']} to "
            f"{calib['first_token'] + calib['tokens'] - 1}: {calib['rule']}), the largest |input| of every "
            f"quantized linear layer{' and the largest |Q|, |K|, |V| and probability of every attention module' if calib['scope'] == 'full' else ''}"
            f" ({len(calib['amax'])} scales). Disjoint from the evaluation tokens: their longest common run of tokens "
            f"is {calib['longest_common_run_tokens']} (a calibration text sharing a run of "
            f"{calib['shared_passage_limit_tokens']} tokens is refused). Values beyond the calibrated amax "
            "saturate at 448 x 6 x tensor scale.\n",
            _table(["scope", "PPL static calibrated", "PPL dynamic (sees the whole batch)", "static / dynamic"],
                   rows) + "\n"]


def _quality_cost(result: dict, figures: dict) -> list[str]:
    qc = result.get("quality_cost")
    if not qc or not any(qc["points"][s]["front_candidates"] for s in qc["points"]):
        return []
    costs = qc["costs"]
    cost_rows = [[key, str(c["gates2"]), str(c["lanes"]), _f(c["gates_per_element"], 1), c["derivation"],
                  ", ".join(c["measured"])] for key, c in costs.items()]
    rows = []
    for scope, pts in qc["points"].items():
        for p in pts["front_candidates"] + pts["beside"]:
            on = [a for a in quality_cost.AXES if p["label"] in qc["fronts"].get(f"{a}_{scope}", [])]
            rows.append([p["label"], scope, _f(p["gates"], 1), _f(p["bits"]), _ppl_band(result, p["key"]),
                         _band(p.get("window_band")),
                         "beside (not a candidate)" if p in pts["beside"] else (", ".join(on) or "no")])
    extra = costs.get("nvfp4_b16", {}).get("per_block_only")
    return ["## Quality against cost\n",
            f"Perplexity against the MAC's two-input gates per element and against bits per element. Gates: "
            f"`{qc['synth_json']}` (bench.synth), the block dot product with its scale path per lane "
            "(golden/report/quality_cost.py says which unit gives each figure):\n",
            _table(["MAC", "gates2", "lanes", "gates / element", "figure", "measured"], cost_rows) + "\n",
            ("NVFP4's unit holds one FP32 x FP32 multiplier for the tensor scales; without it (`"
             f"{extra['unit']}`, a multiplier shared by several units) it is {extra['gates_per_element']:.1f} gates "
             "per element.\n" if extra else ""),
            "BlockDialect's two-stage and MSE activations share the MAC (their quantizers differ, and are not "
            "counted). NVFP4 with the dynamic scale is shown beside the front, not on it. The Pareto front "
            "(lower is better on both axes) is computed on the central perplexities; a point dominated only "
            "by points within its noise band is a tie.\n",
            _table(["point", "scope", "gates / element", "bits / element", "perplexity", "window band",
                    "on the front (axis)"], rows) + "\n",
            "Where BlockDialect sits:\n", *quality_cost.statement(qc), "",
            f"![Quality against cost]({figures['quality_cost']})\n" if "quality_cost" in figures else ""]
def _rel(value) -> str:
    return "n/a" if value is None else f"{value:+.2e}"


def _hardware_exact(result: dict) -> list[str]:
    rows = result["hardware_exact"]
    if not rows:
        return []
    table = [[r["label"], r.get("accumulate", "exact"), _f(r["fake"], 6), _f(r["exact"], 6), _rel(r["rel_diff"]),
              _rel(r.get("rel_diff_accumulation")) if r.get("accumulate", "exact") != "exact" else "",
              _f(r["fake_seconds"], 1), _f(r["exact_seconds"], 1)] for r in rows]
    largest = max((abs(r["rel_diff"]) for r in rows if r["rel_diff"] is not None and r.get("accumulate", "exact") == "exact"),
                  default=None)
    return ["## Hardware-exact perplexity\n",
            "In the *exact* runs every quantized linear layer is computed by `golden.bd.linear` on the quantized "
            "operands: exact integer block sums, one FP32 rounding per output (SPEC 6), the bits a chain of "
            "`bd_dot` units returns. The fake-quantized runs multiply the dequantized operands in "
            f"{result['perplexity']['dtype']} instead. Same activations, weights and windows; the only difference "
            "is that each linear output is rounded once to FP32, which can move later FP16 roundings and codes. "
            "The *accumulation* column is bd.linear's mode (SPEC 6.1): `exact` as above, `fp32` adds the block values "
            "in block order in FP32 (one rounding per block), `fp16` is the paper's (each block value rounded to "
            "FP16, added in FP16), as `bd_dot_fp32` / `bd_dot_fp16` compute them.\n",
            _table(["scheme", "accumulation", "fake-quantized PPL", "hardware-exact PPL", "relative difference",
                    "vs exact accumulation", "fake s", "exact s"], table) + "\n",
            f"Largest relative difference of exact accumulation from fake quantization: "
            f"**{'n/a' if largest is None else f'{largest:.2e}'}**.\n"] + _accumulation_effect(result)


def _accumulation_effect(result: dict) -> list[str]:
    """The perplexity effect of each rounded accumulation mode, in words, from the figures."""
    baseline = result["perplexity"]["runs"].get("baseline")
    said = []
    for r in result["hardware_exact"]:
        if r.get("accumulate", "exact") == "exact" or r["exact_accumulation"] is None:
            continue
        change, exact = r["exact"] - r["exact_accumulation"], r["exact_accumulation"]
        if change == 0:
            effect = f"the same perplexity as exact accumulation ({_f(exact, 6)}), to the last bit"
        else:
            effect = (f"perplexity {_f(r['exact'], 6)} against {_f(exact, 6)} with exact accumulation, "
                      f"{'higher' if change > 0 else 'lower'} by {abs(r['rel_diff_accumulation']):.2e} (relative)")
            if baseline is not None and exact != baseline["perplexity"]:
                share = change / (exact - baseline["perplexity"])
                effect += f", {100 * share:+.2f}% of the quantization's own change from the unquantized {_ppl(baseline)}"
        said.append(f"- **{r['accumulate'].upper()} accumulation** ({r['label']}): {effect}.")
    return ["Effect of the accumulation mode on perplexity:\n", "\n".join(said) + "\n"] if said else []


def _accumulation(result: dict) -> list[str]:
    acc = result.get("accumulation")
    if not acc:
        return []
    modes, pooled = acc["modes"], acc["pooled_sqnr_db"]
    keys = modes + ["quantization"]
    rows = [[name] + [f"{_f(entry[k]['sqnr_db'], 1)} ({100 * entry[k]['differing_fraction']:.1f}%)" for k in keys]
            for name, entry in acc["layers"].items()]
    rows.append(["**pooled**"] + [f"**{_f(pooled[k], 1)}**" for k in keys])
    said = [f"`{m}` {_f(pooled[m], 1)} dB" + (f" ({pooled[m] - pooled['quantization']:.1f} dB above the "
                                               "quantization's error)" if math.isfinite(pooled[m]) else "")
            for m in modes]
    return ["## Error added by the accumulation\n",
            "`golden.bd.linear` in each accumulation mode of SPEC 6.1 against the float64 product of the same "
            "dequantized operands (activations two-stage, weights MSE, B=32, the layers of the float64 cross-check, "
            f"{acc['activation_rows']} activation rows x {acc['weight_rows']} weight rows each). The operands are "
            "the same in every mode, so the differences are the accumulation's alone. Output SQNR in dB, higher is "
            "better; *quantization* is the product of the dequantized operands against that of the FP16 operands "
            "they come from (the quantization's own error), for scale. In brackets, the share of outputs that differ "
            "from the reference; *inf*: no output does. `exact` rounds the exact sum once, to the nearest FP32 value, "
            "so no mode can come closer.\n",
            _table(["layer"] + [f"{m} SQNR dB" for m in modes] + ["quantization SQNR dB"], rows) + "\n",
            "Pooled over the layers: " + "; ".join(said) + f"; quantization {_f(pooled['quantization'], 1)} dB.\n"]


def _block_maps(result: dict) -> list[str]:
    rows = result.get("block_maps")
    if not rows:
        return []
    table, said = [], []
    for r in rows:
        bits, u32, u16 = r["operand_bits"], r["uniform"]["32"], r["uniform"]["16"]
        table.append([r["scope"], f"`{r['block_map']}`", _f(bits["weight"], 3), _f(bits["activation"], 3),
                      _f(r["bits_per_element"], 3), _f(r["perplexity"], 4),
                      f"{_ppl(u32)} at {_f(u32['bits_per_element'], 3)}" if u32 else "n/a",
                      f"{_ppl(u16)} at {_f(u16['bits_per_element'], 3)}" if u16 else "n/a"])
        if u32 and u16 and u32["perplexity"] != u16["perplexity"] and u32["bits_per_element"] != u16["bits_per_element"]:
            gain = (u32["perplexity"] - r["perplexity"]) / (u32["perplexity"] - u16["perplexity"])
            cost = (r["bits_per_element"] - u32["bits_per_element"]) / (u16["bits_per_element"] - u32["bits_per_element"])
            said.append(f"- {r['scope']} scope: the map gets {100 * gain:.0f}% of B=16's perplexity gain over B=32 "
                        f"for {100 * cost:.0f}% of its extra bits per element.")
    tokens = rows[0]["operand_bits"]["tokens"]
    text = ["## Dynamic block sizes\n",
            "A block map gives each operand its block size (`--block-map`; the first pattern found in a linear "
            "layer's name sets its weight's and input's block, `attn_scores` the operands of QK^T, `attn_values` the "
            "probabilities and V, `*` the rest; the linear scope ignores the attention entries). Bits per element are "
            "SPEC 3's `4 + 9/B` of each operand, averaged over the model's actual operands, counted element by element: "
            "every quantized weight once, and the activation operands of one window of "
            f"{tokens} tokens (every quantized layer's input and, in the full path, Q, K, V and the probabilities of "
            "every layer's attention). Weights MSE, activations two-stage, as the B=32 and B=16 rows beside it.\n",
            _table(["scope", "block map", "weight bits/elem", "activation bits/elem", "bits/elem", "PPL",
                    "uniform B=32: PPL at bits", "uniform B=16: PPL at bits"], table) + "\n"]
    return text + (["\n".join(said) + "\n"] if said else [])


def _float64_check(result: dict) -> list[str]:
    check = result["float64_check"]
    rows = [[name, f"{r['max_rel_diff']:.3e}", _f(r["exact_fraction"], 4), str(r["zero_mismatches"]), str(r["outputs"])]
            for name, r in check["layers"].items()]
    return ["## Float64 cross-check of the exact dot product\n",
            "`golden.bd.linear` (exact integer block sums, one FP32 rounding, SPEC 6) against "
            "`dequantize(a) @ dequantize(w).T` in float64, activations two-stage and weights MSE, "
            f"{check['activation_rows']} activation rows x {check['weight_rows']} weight rows per layer. They should "
            f"agree to one FP32 rounding (relative difference <= 2^-24 = {check['bound']:.3e}).\n",
            _table(["layer", "max rel diff", "bit-identical fraction", "zero mismatches", "outputs"], rows) + "\n",
            f"Largest relative difference: **{check['max_rel_diff']:.3e}**.\n"]


def _reproducibility(out: pathlib.Path | None) -> list[str]:
    text = ["## Reproducibility\n",
            "Quantized runs are only as reproducible as the FP16 rounding in front of every quantizer: in float32, "
            "BLAS and vector kernels that differ by CPU move an input by an ulp, a code changes, and the "
            "perplexity moves by up to a few percent. This report runs the model in float64, where the same "
            "change is 2^29 times smaller and no code moves. "]
    if out is not None and (out / REPRODUCIBILITY_MD).is_file():
        text[-1] += (f"[{REPRODUCIBILITY_MD}]({REPRODUCIBILITY_MD}) measures it: the same configuration under "
                     "different kernels and thread counts, in float64 and in float32.")
    else:
        text[-1] += "`python -m golden.report.reproducibility` measures it."
    text[-1] += "\n"
    return text


def _timing(result: dict) -> list[str]:
    return ["## Timing\n",
            _table(["phase", "seconds"], [[k.removesuffix("_s"), _f(v, 1)] for k, v in result["timing"].items()]) + "\n"]


def _per_layer(result: dict) -> list[str]:
    keys = [s.key for s in metrics.MAIN_SPECS]
    rows = [[name] + [_f(entry["weight"][k]["sqnr_db"]) for k in keys] + [_f(entry["activation"][k]["sqnr_db"]) for k in keys]
            for name, entry in result["tensor_metrics"]["layers"].items()]
    labels = [s.label for s in metrics.MAIN_SPECS]
    return ["## Per-layer SQNR (dB)\n",
            _table(["layer"] + [f"W {l}" for l in labels] + [f"A {l}" for l in labels], rows) + "\n"]


def markdown(result: dict, figures: dict[str, str], out: pathlib.Path | None = None) -> str:
    """report.md: the sections in reading order. `out` is the report's folder (for the link to a
    reproducibility measurement written there)."""
    sections = (_intro(result), _headline(result), _stage1(result), _tensor_table(result, figures),
                _block_size(result, figures), _selection(result, figures), _perplexity(result, figures),
                _noise(result, figures), _calibration(result), _quality_cost(result, figures), _hardware_exact(result),
                _accumulation(result), _block_maps(result), _float64_check(result), _reproducibility(out), _timing(result),
                _per_layer(result))
    return "\n".join(line for section in sections for line in section)


def write(result: dict, out: pathlib.Path) -> dict[str, pathlib.Path]:
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "sqnr": plots.sqnr_per_layer(result, metrics.MAIN_SPECS, out),
        "dialects": plots.dialect_histogram(result, out),
        "perplexity": plots.perplexity_vs_bits(result, out),
        "block_size": plots.sqnr_vs_block_size(result, out),
        "quality_cost": plots.quality_cost(result, out),
    }
    figures = {k: v for k, v in figures.items() if v}      # a figure without data is not drawn
    result = dict(result, figures=figures)
    (out / "report.json").write_text(json.dumps(json_safe(result), indent=1, allow_nan=False) + "\n")
    (out / "report.md").write_text(markdown(result, figures, out))
    return {"json": out / "report.json", "markdown": out / "report.md",
            **{k: out / v for k, v in figures.items()}}
