"""Format comparison on real LLaMA tensors: BlockDialect against MXFP4, NVFP4 and INT4.

`python -m golden.report [--quick] [--model PATH] [--text PATH] [--out DIR] [--max-tokens N]`
writes report.md, report.json and PNG figures. Everything in them is computed by `run`.
"""
from __future__ import annotations

import math
import pathlib
import platform
import time
from typing import NamedTuple

import torch
from tqdm import tqdm

from golden import models
from golden.report import hardware, metrics, perplexity


class Options(NamedTuple):
    quick: bool
    model: pathlib.Path | None      # None: the default SmolLM2 GGUF
    text: pathlib.Path | None       # None: GPL-3
    out: pathlib.Path
    ppl_tokens: int                 # tokens of the text used for perplexity
    window: int                     # perplexity window (tokens)
    capture_tokens: int             # tokens whose linear inputs are measured
    weight_rows: int | None         # output rows sampled per weight for tensor metrics (None: all)
    hw_layers: int                  # layers in the hardware-equivalence check
    hw_rows: int                    # activation rows and weight rows used there
    seed: int
    threads: int                    # torch threads


# Budgets measured on 2 shared cores: see the timing section of the full report.
FULL = dict(ppl_tokens=2048, window=512, capture_tokens=512, weight_rows=256, hw_layers=8, hw_rows=128)
QUICK = dict(ppl_tokens=128, window=128, capture_tokens=64, weight_rows=64, hw_layers=2, hw_rows=32)


# One thread by default: the quantizers are elementwise integer code that a second thread barely
# speeds up, and on a machine shared with other jobs the threads' spin-waiting made the
# quantizers 10-100 times slower than a single thread (measured).
DEFAULT_THREADS = 1


def options(quick=False, model=None, text=None, out=None, max_tokens=None, seed=0,
            threads=DEFAULT_THREADS) -> Options:
    preset = dict(QUICK if quick else FULL)
    if max_tokens is not None:
        if max_tokens < 2:
            raise ValueError(f"max_tokens must be at least 2, got {max_tokens}")
        preset["ppl_tokens"] = max_tokens
        preset["window"] = min(preset["window"], max_tokens)
        preset["capture_tokens"] = min(preset["capture_tokens"], max_tokens)
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    out = pathlib.Path(out) if out is not None else pathlib.Path("reports/golden-quick" if quick else "reports/golden")
    return Options(quick, None if model is None else pathlib.Path(model),
                   None if text is None else pathlib.Path(text), out, seed=seed, threads=threads, **preset)


def quick_layers(model) -> list[str]:
    """Quick mode measures the first and the last decoder layer (and nothing else)."""
    last = model.config.num_hidden_layers - 1
    return [rf"^model\.layers\.0\.", rf"^model\.layers\.{last}\."]


def _finite_mean(values) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def tensor_section(captures: dict[str, models.LinearCapture], opts: Options, progress) -> dict:
    """Per-layer SQNR and MSE of every format, dialect histograms and selector agreement."""
    layers, histograms, agreement = {}, {}, {}
    memo: dict[tuple, tuple] = {}  # q/k/v and gate/up share their input tensor
    unique_results = {"weight": [], "activation": []}
    for index, (name, capture) in enumerate(captures.items()):
        progress.set_description(f"tensors {name}")
        entry = {}
        for kind, tensor in (("weight", metrics.sample_rows(capture.weight, opts.weight_rows, opts.seed + index)),
                             ("activation", capture.activation)):
            key = (kind, tensor.data_ptr(), tuple(tensor.shape))
            if key not in memo:
                # The tensor is kept alive with its result so that its address is never reused.
                memo[key] = (tensor, metrics.tensor_result(tensor, metrics.SPECS_BY_KIND[kind], f"{name} {kind}"))
                unique_results[kind].append(memo[key][1])
            result = memo[key][1]
            entry[kind] = {k: {"sqnr_db": metrics.sqnr_db(st.signal, st.noise), "mse": st.noise / st.count}
                           for k, st in result.stats.items()}
        entry["shape"] = {"weight": list(capture.weight.shape), "activation": list(capture.activation.shape),
                          "weight_rows_measured": min(capture.weight.shape[0], opts.weight_rows or capture.weight.shape[0])}
        layers[name] = entry
        progress.update()

    summary = {}
    for kind in ("weight", "activation"):
        summary[kind] = {}
        for s in metrics.SPECS_BY_KIND[kind]:
            per_layer = [layers[n][kind][s.key]["sqnr_db"] for n in layers]
            signal = sum(r.stats[s.key].signal for r in unique_results[kind])
            noise = sum(r.stats[s.key].noise for r in unique_results[kind])
            count = sum(r.stats[s.key].count for r in unique_results[kind])
            summary[kind][s.key] = {"mean_sqnr_db": _finite_mean(per_layer),
                                    "min_sqnr_db": min(per_layer),
                                    "pooled_sqnr_db": metrics.sqnr_db(signal, noise),
                                    "mse": noise / count}
        for method in ("two_stage", "mse"):
            chosen = [r.dialects[method] for r in unique_results[kind]]
            counts = [sum(c) for c in zip(*(metrics.dialect_histogram(d) for d in chosen))]
            histograms[f"{kind}_{method}"] = {"counts": counts, "blocks": sum(counts)}
        same = sum(int((r.dialects["two_stage"] == r.dialects["mse"]).sum()) for r in unique_results[kind])
        total = sum(r.dialects["mse"].numel() for r in unique_results[kind])
        loss = [layers[n][kind][f"bd_mse_b{metrics.DIALECT_BLOCK}"]["sqnr_db"]
                - layers[n][kind][f"bd_two_stage_b{metrics.DIALECT_BLOCK}"]["sqnr_db"] for n in layers]
        agreement[kind] = {"agreement_rate": same / total if total else math.nan, "blocks": total,
                           "mean_sqnr_loss_db": _finite_mean(loss), "max_sqnr_loss_db": max(loss)}

    sweep = {kind: {"method": metrics.SWEEP_METHOD[kind],
                    "mean_sqnr_db": {str(b): summary[kind][f"bd_{metrics.SWEEP_METHOD[kind]}_b{b}"]["mean_sqnr_db"]
                                     for b in (16, 32, 64)}}
             for kind in ("weight", "activation")}
    histograms["block"] = metrics.DIALECT_BLOCK
    return {"tensor_metrics": {"layers": layers, "summary": summary}, "dialects": histograms,
            "selection": agreement, "block_sizes": sweep}


def hardware_layers(names: list[str], count: int) -> list[str]:
    """At most `count` layers: one of each kind (q_proj, ..., down_proj, lm_head), taken at depths
    spread over the model, so that every shape of product is checked."""
    kinds: dict[str, list[str]] = {}
    for name in names:
        kinds.setdefault(name.rsplit(".", 1)[-1], []).append(name)
    groups = list(kinds.values())
    one_per_kind = [group[round(j * (len(group) - 1) / max(1, len(groups) - 1))] for j, group in enumerate(groups)]
    keep = sorted({round(i * (len(one_per_kind) - 1) / max(1, count - 1)) for i in range(count)})
    return [one_per_kind[i] for i in keep]


def hardware_section(captures, opts: Options, progress) -> dict:
    """bd.linear against float64 dequantize-matmul on a spread of layers."""
    per_layer = {}
    for name in hardware_layers(list(captures), opts.hw_layers):
        progress.set_description(f"hardware {name}")
        c = captures[name]
        result = hardware.check(c.activation[:opts.hw_rows], c.weight[:opts.hw_rows], name=name)
        per_layer[name] = result._asdict()
        progress.update()
    return {"layers": per_layer, "bound": hardware.FP32_ROUNDING_BOUND,
            "max_rel_diff": max(r["max_rel_diff"] for r in per_layer.values()),
            "min_exact_fraction": min(r["exact_fraction"] for r in per_layer.values()),
            "zero_mismatches": sum(r["zero_mismatches"] for r in per_layer.values()),
            "activation_rows": opts.hw_rows, "weight_rows": opts.hw_rows}


def perplexity_section(model, ids, opts: Options, layers, progress) -> dict:
    schemes = perplexity.perplexity_schemes(opts.quick)
    # Group runs by weight format so each set of fake-quantized weights is computed once.
    order = sorted(schemes, key=lambda s: (s.scope != "baseline", str(s.weight_fmt), str(s.block)))
    modules = perplexity.quantized_linears(model, layers)
    runs, weights, weights_key = {}, None, None
    weight_seconds = {}
    for s in order:
        if s.scope != "baseline" and (s.weight_fmt, s.block) != weights_key:
            progress.set_description(f"weights {s.weight_fmt} B={s.block}")
            start = time.perf_counter()
            weights, weights_key = None, None  # free the previous set first
            weights = perplexity.quantized_weights(modules, s.weight_fmt, s.block)
            weights_key = (s.weight_fmt, s.block)
            weight_seconds[f"{s.weight_fmt}" + ("" if s.block is None else f"_b{s.block}")] = time.perf_counter() - start
        start = time.perf_counter()
        progress.set_description(f"perplexity {s.scope} {s.label}")
        with perplexity.installed(model, s, weights, layers):
            result = perplexity.evaluate(model, ids, opts.window, on_window=progress.update)
        runs[s.key] = {"label": s.label, "scope": s.scope, "weight_fmt": s.weight_fmt, "act_fmt": s.act_fmt,
                       "block": s.block, "bits_per_element": perplexity.scheme_bits(s),
                       "bits_per_element_paper": perplexity.scheme_bits(s, "paper"),
                       "perplexity": result.perplexity, "nll_sum": result.nll_sum,
                       "predicted_tokens": result.predicted_tokens, "windows": result.windows,
                       "seconds": time.perf_counter() - start}
    return {"tokens": int(ids.shape[1]), "window": opts.window, "quantized_layers": len(modules),
            "weight_quantization_s": weight_seconds,
            "runs": {s.key: runs[s.key] for s in schemes}}


def run(opts: Options) -> dict:
    """Computes every figure of the report; returns the JSON-ready dictionary."""
    torch.manual_seed(opts.seed)
    torch.set_num_threads(opts.threads)
    started, cpu_started = time.perf_counter(), time.process_time()
    timing = {}
    model_path = models.default_model_path() if opts.model is None else opts.model
    text = models.read_text(opts.text)

    tqdm.write(f"loading {model_path}")
    model, tokenizer = models.load_model(model_path)
    timing["load_model_s"] = time.perf_counter() - started
    all_ids = models.tokenize(tokenizer, text)
    ppl_ids = all_ids[:, :opts.ppl_tokens]
    layers = quick_layers(model) if opts.quick else None
    n_windows = len(perplexity.windows(ppl_ids, opts.window))
    schemes = perplexity.perplexity_schemes(opts.quick)

    mark = time.perf_counter()
    captures = models.capture_linear_inputs(model, tokenizer, text, opts.capture_tokens, layers)
    timing["capture_s"] = time.perf_counter() - mark

    total_steps = (len(captures) + len(hardware_layers(list(captures), opts.hw_layers))
                   + n_windows * len(schemes))
    result = {}
    with tqdm(total=total_steps, unit="step", dynamic_ncols=True) as progress:
        mark = time.perf_counter()
        result.update(tensor_section(captures, opts, progress))
        timing["tensor_metrics_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        result["hardware_equivalence"] = hardware_section(captures, opts, progress)
        timing["hardware_equivalence_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        result["perplexity"] = perplexity_section(model, ppl_ids, opts, layers, progress)
        timing["perplexity_s"] = time.perf_counter() - mark

    import transformers

    result["formats"] = {s.key: {"fmt": s.fmt, "block": s.block, "label": s.label,
                                 "bits_per_element": metrics.bits(s.fmt, s.block),
                                 "bits_per_element_paper": metrics.bits(s.fmt, s.block, "paper")}
                         for s in metrics.TENSOR_SPECS}
    result["meta"] = {
        "quick": opts.quick,
        "model": str(model_path),
        "model_file": model_path.name,
        "default_model": opts.model is None,
        "text": str(opts.text or models.DEFAULT_TEXT_PATH),
        "text_tokens": int(all_ids.shape[1]),
        "capture_tokens": int(min(opts.capture_tokens, all_ids.shape[1])),
        "perplexity_tokens": int(ppl_ids.shape[1]),
        "window": opts.window,
        "weight_rows_per_layer": opts.weight_rows,
        "layers_measured": len(captures),
        "layer_filter": layers,
        "seed": opts.seed,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
    }
    timing["total_s"] = time.perf_counter() - started
    # CPU seconds of this process (all threads): on a shared machine the wall time above depends on
    # the other load, this does much less.
    timing["total_cpu_s"] = time.process_time() - cpu_started
    result["timing"] = timing
    return result
