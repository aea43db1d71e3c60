"""Figures of the report (matplotlib, Agg backend, PNG)."""
from __future__ import annotations

import math
import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)

from golden.spec import NUM_DIALECTS  # noqa: E402

SQNR_PNG = "sqnr_per_layer.png"
DIALECT_PNG = "dialect_histogram.png"
PERPLEXITY_PNG = "perplexity_vs_bits.png"
BLOCK_SIZE_PNG = "sqnr_vs_block_size.png"
QUALITY_COST_PNG = "quality_vs_cost.png"


def _finite(values):
    return [v if v is not None and math.isfinite(v) else float("nan") for v in values]


def sqnr_per_layer(result: dict, specs, out: pathlib.Path) -> str:
    layers = list(result["tensor_metrics"]["layers"])
    fig, axes = plt.subplots(2, 1, figsize=(12, 8), sharex=True)
    for ax, kind in zip(axes, ("weight", "activation")):
        for s in specs:
            values = [result["tensor_metrics"]["layers"][name][kind][s.key]["sqnr_db"] for name in layers]
            ax.plot(range(len(layers)), _finite(values), marker=".", linewidth=0.8, label=s.label)
        ax.set_ylabel(f"{kind} SQNR (dB)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8, ncol=3)
    axes[1].set_xlabel("linear layer (model order)")
    step = max(1, len(layers) // 30)
    axes[1].set_xticks(range(0, len(layers), step))
    axes[1].set_xticklabels([layers[i].replace("model.layers.", "L") for i in range(0, len(layers), step)],
                            rotation=90, fontsize=6)
    fig.suptitle("SQNR per linear layer and format (higher is better)")
    fig.tight_layout()
    fig.savefig(out / SQNR_PNG, dpi=110)
    plt.close(fig)
    return SQNR_PNG


def dialect_histogram(result: dict, out: pathlib.Path) -> str:
    hist = result["dialects"]
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.4
    for offset, key, label in ((-width / 2, "weight_mse", "weights, MSE selection"),
                               (width / 2, "activation_two_stage", "activations, two-stage selection")):
        counts = hist[key]["counts"]
        total = max(1, sum(counts))
        ax.bar([d + offset for d in range(NUM_DIALECTS)], [c / total for c in counts], width, label=label)
    ax.set_xticks(range(NUM_DIALECTS))
    ax.set_xlabel("dialect id (pair = id // 2)")
    ax.set_ylabel("fraction of non-zero blocks")
    ax.set_title(f"Dialect usage, B={hist['block']}")
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / DIALECT_PNG, dpi=110)
    plt.close(fig)
    return DIALECT_PNG


def perplexity_vs_bits(result: dict, out: pathlib.Path) -> str:
    runs = result["perplexity"]["runs"]
    fig, ax = plt.subplots(figsize=(9, 5))
    markers = {"linear": "o", "full": "s"}
    for scope, marker in markers.items():
        keys = [k for k, r in runs.items() if r["scope"] == scope and r["bits_per_element"] < 16
                and not r.get("exact") and r.get("gain", 1.0) == 1.0]
        chosen = [runs[k] for k in keys]
        ax.errorbar([r["bits_per_element"] for r in chosen], [r["perplexity"] for r in chosen],
                    yerr=_yerr(chosen, [_band(result, k) for k in keys]), fmt=marker, capsize=3,
                    label=f"{scope} path (bars: noise band)")
        for r in chosen:
            ax.annotate(r["label"], (r["bits_per_element"], r["perplexity"]), fontsize=7,
                        xytext=(4, 2), textcoords="offset points")
    baseline = runs.get("baseline")
    if baseline is not None:
        ax.axhline(baseline["perplexity"], color="grey", linestyle="--", label="unquantized")
    ax.set_xlabel("bits per element (OCP convention for MXFP4)")
    ax.set_ylabel("perplexity (lower is better)")
    ax.set_title("Perplexity vs bits per element")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / PERPLEXITY_PNG, dpi=110)
    plt.close(fig)
    return PERPLEXITY_PNG


def sqnr_vs_block_size(result: dict, out: pathlib.Path) -> str:
    sweep = result["block_sizes"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for kind in ("weight", "activation"):
        points = sweep[kind]["mean_sqnr_db"]
        blocks = sorted(int(b) for b in points)
        ax.plot(blocks, _finite([points[str(b)] for b in blocks]), marker="o",
                label=f"{kind}s, {sweep[kind]['method']} selection")
    ax.set_xscale("log", base=2)
    ax.set_xticks([16, 32, 64])
    ax.set_xticklabels(["16", "32", "64"])
    ax.set_xlabel("block size B")
    ax.set_ylabel("mean SQNR over layers (dB)")
    ax.set_title("BlockDialect SQNR vs block size")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / BLOCK_SIZE_PNG, dpi=110)
    plt.close(fig)
    return BLOCK_SIZE_PNG


def _band(result: dict, key: str):
    return ((result.get("noise") or {}).get("bands", {}).get(key) or {}).get("band")


def _yerr(points, bands):
    """matplotlib's asymmetric error bars (below, above) from [low, high] bands (0 where none)."""
    ppl = [p["perplexity"] if "perplexity" in p else p["ppl"] for p in points]
    return [[v - b[0] if b else 0.0 for v, b in zip(ppl, bands)], [b[1] - v if b else 0.0 for v, b in zip(ppl, bands)]]


def quality_cost(result: dict, out: pathlib.Path) -> str | None:
    """Perplexity against gates per element and bits per element, both scopes, Pareto front drawn."""
    qc = result.get("quality_cost")
    if not qc or not any(qc["points"][s]["front_candidates"] for s in qc["points"]):
        return None
    scopes = [s for s in ("linear", "full") if qc["points"].get(s, {}).get("front_candidates")]
    fig, axes = plt.subplots(len(scopes), 2, figsize=(12, 4.5 * len(scopes)), squeeze=False)
    for row, scope in zip(axes, scopes):
        pts = qc["points"][scope]
        for ax, (axis, title) in zip(row, (("gates", "MAC gates per element"), ("bits", "bits per element"))):
            front = set(qc["fronts"][f"{axis}_{scope}"])
            for group, style in ((pts["front_candidates"], dict(fmt="o")), (pts["beside"], dict(fmt="x", color="grey"))):
                for p in group:
                    colour = style.get("color") or ("tab:red" if p["fmt"] == "bd" else "tab:blue")
                    ax.errorbar([p[axis]], [p["ppl"]], yerr=_yerr([p], [p["band"]]), fmt=style["fmt"], color=colour,
                                capsize=3, markersize=7 if p["label"] in front else 5,
                                markeredgecolor="black" if p["label"] in front else colour)
                    ax.annotate(p["label"], (p[axis], p["ppl"]), fontsize=7, textcoords="offset points",
                                xytext=(4, -10) if p in pts["beside"] else (4, 3))
            on = sorted((p for p in pts["front_candidates"] if p["label"] in front), key=lambda p: (p[axis], p["ppl"]))
            ax.step([p[axis] for p in on], [p["ppl"] for p in on], where="post", color="black", linewidth=0.8,
                    label="Pareto front")
            ax.set_xlabel(title)
            ax.set_ylabel(f"perplexity, {scope} path")
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
    fig.suptitle("Quality against cost (red: BlockDialect; grey x: NVFP4 with the dynamic scale, not on the front)")
    fig.tight_layout()
    fig.savefig(out / QUALITY_COST_PNG, dpi=110)
    plt.close(fig)
    return QUALITY_COST_PNG
