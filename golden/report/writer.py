"""report.json (every figure) and report.md (tables, figures by relative path)."""
from __future__ import annotations

import json
import math
import pathlib

from golden.report import metrics, plots

# Headline rows: (label, weight spec key, activation spec key, perplexity suffix). BlockDialect
# stores weights chosen by MSE and activations by the two-stage selector, as in the paper.
HEADLINE = (
    ("BlockDialect B=32", "bd_mse_b32", "bd_two_stage_b32", "bd_mse_bd_two_stage_b32"),
    ("BlockDialect B=16", "bd_mse_b16", "bd_two_stage_b16", "bd_mse_bd_two_stage_b16"),
    ("MXFP4 B=32", "mxfp4_b32", "mxfp4_b32", "mxfp4_mxfp4_b32"),
    ("MXFP4 B=16", "mxfp4_b16", "mxfp4_b16", "mxfp4_mxfp4_b16"),
    ("NVFP4 (B=16)", "nvfp4_b16", "nvfp4_b16", "nvfp4_nvfp4_b16"),
    ("INT4 B=32", "int4_b32", "int4_b32", "int4_int4_b32"),
)


def _json_safe(value):
    """Infinities and NaN are not JSON: write them as strings so strict readers still load the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
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


def headline_rows(result: dict) -> list[list[str]]:
    summary = result["tensor_metrics"]["summary"]
    runs = result["perplexity"]["runs"]
    rows = []
    for label, w_key, a_key, ppl_suffix in HEADLINE:
        fmt = result["formats"][a_key]
        linear = runs.get(f"linear_{ppl_suffix}")
        full = runs.get(f"full_{ppl_suffix}")
        rows.append([label, _f(fmt["bits_per_element"]), _f(fmt["bits_per_element_paper"]),
                     _f(summary["weight"][w_key]["mean_sqnr_db"]), _f(summary["activation"][a_key]["mean_sqnr_db"]),
                     _f(linear["perplexity"], 3) if linear else "n/a", _f(full["perplexity"], 3) if full else "n/a"])
    return rows


def markdown(result: dict, figures: dict[str, str]) -> str:
    meta, timing = result["meta"], result["timing"]
    summary = result["tensor_metrics"]["summary"]
    runs = result["perplexity"]["runs"]
    hw = result["hardware_equivalence"]
    sel = result["selection"]
    out = []
    out.append("# BlockDialect format comparison on real LLaMA tensors\n")
    if meta["quick"]:
        out.append("**Quick mode**: only the first and last decoder layers are measured and fake-quantized, "
                   "on a short text. The figures check that the pipeline works; they do not describe the model.\n")
    out.append(f"Model: `{meta['model_file']}`; text: `{meta['text']}` ({meta['text_tokens']} tokens). "
               f"Tensor metrics use the linear-layer inputs of the first {meta['capture_tokens']} tokens and, "
               f"per weight, {meta['weight_rows_per_layer'] or 'all'} output rows sampled with a fixed seed; "
               f"{meta['layers_measured']} linear layers. Perplexity uses the first {meta['perplexity_tokens']} "
               f"tokens. torch {meta['torch']}, transformers {meta['transformers']}, torch threads: {meta['threads']}.\n")
    if meta["default_model"]:
        out.append("> **Caveat on weights.** The default model's weights were stored as **Q4_1** in the GGUF file "
                   "(blocks of 32 on a 16-level affine grid) and are dequantized on loading. Weight comparisons are "
                   "therefore biased toward grids like Q4_1's (uniform levels in blocks of 32, which favours INT4-like "
                   "formats) and perplexity starts from an already 4-bit model. The activations are genuine: "
                   "they are computed by the model in FP32 on real text.\n")
    out.append("Every format receives the FP16-rounded tensor (SPEC 1) and is measured against it. "
               "SQNR = 10 log10(sum x^2 / sum (x - x_hat)^2) per layer; \"mean\" is over layers. "
               "Bits per element count element codes and per-block metadata; MXFP4's are given for its 8-bit "
               "E8M0 scale (OCP) and, in the \"paper\" column, for the paper's 5-bit exponent; NVFP4 excludes its one "
               "FP32 tensor scale.\n")

    out.append("## Headline\n")
    out.append("BlockDialect: weights by MSE selection, activations by the two-stage selector. Perplexity: "
               f"FP32 baseline {_f(runs['baseline_fp32']['perplexity'], 3)}"
               + (f", FP16 {_f(runs['linear_fp16_fp16']['perplexity'], 3)}" if "linear_fp16_fp16" in runs else "")
               + ".\n")
    out.append(_table(["format", "bits/elem (OCP)", "bits/elem (paper)", "weight SQNR dB", "activation SQNR dB",
                       "PPL linear", "PPL full path"], headline_rows(result)) + "\n")

    out.append("## Tensor-level error, all formats\n")
    rows = []
    for s in metrics.TENSOR_SPECS:
        row = [s.label, _f(result["formats"][s.key]["bits_per_element"])]
        for kind in ("weight", "activation"):
            m = summary[kind].get(s.key)
            row += ([_f(m["mean_sqnr_db"]), _f(m["min_sqnr_db"]), _f(m["pooled_sqnr_db"]), f"{m['mse']:.3e}"]
                    if m else ["n/a"] * 4)
        rows.append(row)
    out.append(_table(["format", "bits/elem", "W mean SQNR", "W min", "W pooled", "W MSE",
                       "A mean SQNR", "A min", "A pooled", "A MSE"], rows) + "\n")
    out.append(f"![SQNR per layer]({figures['sqnr']})\n")

    out.append("## BlockDialect block size\n")
    sweep = result["block_sizes"]
    rows = [[f"{kind}s, {sweep[kind]['method']}"] + [_f(sweep[kind]["mean_sqnr_db"][b]) for b in ("16", "32", "64")]
            for kind in ("weight", "activation")]
    out.append(_table(["tensor, selection", "B=16", "B=32", "B=64"], rows) + "\n")
    out.append(f"![SQNR vs block size]({figures['block_size']})\n")

    out.append("## Dialect selection: two-stage vs MSE\n")
    out.append("Agreement is the fraction of non-zero blocks (B=32) where both selectors choose the same dialect; "
               "the SQNR loss is BD-MSE minus BD two-stage, per layer.\n")
    rows = [[kind, _f(sel[kind]["agreement_rate"], 4), str(sel[kind]["blocks"]),
             _f(sel[kind]["mean_sqnr_loss_db"], 3), _f(sel[kind]["max_sqnr_loss_db"], 3)]
            for kind in ("weight", "activation")]
    out.append(_table(["tensor", "agreement", "blocks", "mean SQNR loss dB", "max SQNR loss dB"], rows) + "\n")
    hist = result["dialects"]
    rows = []
    for d in range(len(hist["weight_mse"]["counts"])):
        rows.append([str(d)] + [_f(100 * hist[k]["counts"][d] / max(1, hist[k]["blocks"]), 1)
                                for k in ("weight_mse", "weight_two_stage", "activation_two_stage", "activation_mse")])
    out.append(_table(["dialect", "W MSE %", "W two-stage %", "A two-stage %", "A MSE %"], rows) + "\n")
    out.append(f"![Dialect usage]({figures['dialects']})\n")

    out.append("## Perplexity\n")
    out.append(f"{result['perplexity']['tokens']} tokens cut into consecutive, non-overlapping windows of "
               f"{result['perplexity']['window']} tokens, each evaluated from scratch; perplexity = exp(total NLL / "
               "predicted tokens). *linear*: every decoder nn.Linear has its weight fake-quantized once and its "
               "input on every call (the output head, tied to the embedding, stays FP32). *full path*: also Q and "
               "K (blocks along head_dim) for QK^T, and the probabilities (blocks along the key dimension, zero-"
               "padded) and V (blocks along its sequence dimension) for scores x V, through an eager attention "
               f"function registered only while the run lasts. {result['perplexity']['quantized_layers']} layers "
               "quantized.\n")
    rows = [[r["label"], r["scope"], str(r["weight_fmt"]), str(r["act_fmt"]), _f(r["bits_per_element"]),
             _f(r["perplexity"], 3), _f(r["seconds"], 0)] for r in runs.values()]
    out.append(_table(["run", "scope", "weights", "activations", "bits/elem", "perplexity", "seconds"], rows) + "\n")
    quantization = result["perplexity"]["weight_quantization_s"]
    out.append("Seconds are for the forward passes; fake-quantizing all weights once per format took "
               + ", ".join(f"{k} {v:.0f} s" for k, v in quantization.items()) + ".\n")
    out.append(f"![Perplexity vs bits]({figures['perplexity']})\n")

    out.append("## Hardware equivalence\n")
    out.append("`golden.bd.linear` (exact integer block sums, one FP32 rounding, SPEC 6) against "
               "`dequantize(a) @ dequantize(w).T` in float64, activations two-stage and weights MSE, "
               f"{hw['activation_rows']} activation rows x {hw['weight_rows']} weight rows per layer. They should "
               f"agree to one FP32 rounding (relative difference <= 2^-24 = {hw['bound']:.3e}).\n")
    rows = [[name, f"{r['max_rel_diff']:.3e}", _f(r["exact_fraction"], 4), str(r["zero_mismatches"]), str(r["outputs"])]
            for name, r in hw["layers"].items()]
    out.append(_table(["layer", "max rel diff", "bit-identical fraction", "zero mismatches", "outputs"], rows) + "\n")
    out.append(f"Largest relative difference: **{hw['max_rel_diff']:.3e}**.\n")

    out.append("## Timing\n")
    out.append(_table(["phase", "seconds"], [[k.removesuffix("_s"), _f(v, 1)] for k, v in timing.items()]) + "\n")

    out.append("## Per-layer SQNR (dB)\n")
    keys = [s.key for s in metrics.MAIN_SPECS]
    rows = []
    for name, entry in result["tensor_metrics"]["layers"].items():
        rows.append([name] + [_f(entry["weight"][k]["sqnr_db"]) for k in keys]
                    + [_f(entry["activation"][k]["sqnr_db"]) for k in keys])
    labels = [s.label for s in metrics.MAIN_SPECS]
    out.append(_table(["layer"] + [f"W {l}" for l in labels] + [f"A {l}" for l in labels], rows) + "\n")
    return "\n".join(out)


def write(result: dict, out: pathlib.Path) -> dict[str, pathlib.Path]:
    out.mkdir(parents=True, exist_ok=True)
    figures = {
        "sqnr": plots.sqnr_per_layer(result, metrics.MAIN_SPECS, out),
        "dialects": plots.dialect_histogram(result, out),
        "perplexity": plots.perplexity_vs_bits(result, out),
        "block_size": plots.sqnr_vs_block_size(result, out),
    }
    result = dict(result, figures=figures)
    (out / "report.json").write_text(json.dumps(_json_safe(result), indent=1, allow_nan=False) + "\n")
    (out / "report.md").write_text(markdown(result, figures))
    return {"json": out / "report.json", "markdown": out / "report.md",
            **{k: out / v for k, v in figures.items()}}
