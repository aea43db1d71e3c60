"""Format comparison on real LLaMA tensors: BlockDialect against MXFP4, NVFP4 and INT4.

`python -m golden.report [--quick] [--model PATH] [--text PATH] [--out DIR] [--device cpu|cuda |
--device-map auto] ...` writes report.md, report.json and PNG figures. Everything in them is
computed by `run`.
"""
from __future__ import annotations

import math
import os
import pathlib
import platform
import re
import time
from typing import NamedTuple

import torch
from tqdm import tqdm

from golden import calibration, models
from golden.report import accumulation, block_maps, float64_check, metrics, noise, perplexity, quality_cost


class Options(NamedTuple):
    quick: bool
    model: pathlib.Path | None      # None: the default SmolLM2 GGUF
    text: pathlib.Path | None       # None: GPL-3
    out: pathlib.Path
    ppl_tokens: int                 # tokens of the text used for perplexity
    window: int                     # perplexity window (tokens)
    capture_tokens: int             # tokens whose linear inputs are measured
    weight_rows: int | None         # output rows sampled per weight for tensor metrics (None: all)
    check_layers: int               # layers in the float64 cross-check of bd.linear
    check_rows: int                 # activation rows and weight rows used there
    seed: int
    threads: int                    # torch threads
    dtype: torch.dtype = torch.float64   # the model's compute type (float64: machine-independent)
    device: str | None = None       # "cpu", "cuda", "cuda:N" (None: CPU)
    device_map: str | None = None   # "auto": spread over the GPUs by accelerate
    runs: str | None = None         # regular expression selecting perplexity runs by key (None: all)
    batch: int = 4                  # perplexity windows per forward pass
    calibration_text: pathlib.Path | None = None   # NVFP4 static scales' text (None: the text after the evaluation tokens)
    noise_runs: str | None = None   # regular expression of the runs measured again perturbed (None: the preset's)
    synth_json: pathlib.Path | None = None         # synthesis figures (None: the committed reports/synth/report.json)
    block_map: str = block_maps.DEFAULT_BLOCK_MAP   # blocks per operand of the block-map runs


# Budgets measured on 2 shared cores: see the timing section of the full report.
FULL = dict(ppl_tokens=2048, window=512, capture_tokens=512, weight_rows=256, check_layers=8, check_rows=128)
QUICK = dict(ppl_tokens=128, window=128, capture_tokens=64, weight_rows=64, check_layers=2, check_rows=32)
# Runs measured again with perturbed inputs for the noise band (golden.report.noise): each costs two
# more runs, so the headline BlockDialect scheme and the static NVFP4 one; the others get the floor.
NOISE_RUNS = {False: r"^linear_(bd_mse_bd_two_stage_b32|nvfp4_nvfp4_b16_static)$",
              True: r"^linear_bd_mse_bd_two_stage_b32$"}
NO_NOISE_RUNS = "none"


class TextError(ValueError):
    """A text the report was given cannot serve (a calibration text that overlaps the evaluation)."""

# Every core this process may run on. The quantizers split their work over torch's thread count
# without spin-waiting, and float64 matrix products scale with the cores.
DEFAULT_THREADS = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
DTYPES = {"float64": torch.float64, "float32": torch.float32}


def options(quick=False, model=None, text=None, out=None, max_tokens=None, seed=0,
            threads=DEFAULT_THREADS, dtype="float64", device=None, device_map=None, runs=None,
            batch=4, calibration_text=None, noise_runs=None, synth_json=None,
            block_map=block_maps.DEFAULT_BLOCK_MAP) -> Options:
    preset = dict(QUICK if quick else FULL)
    if max_tokens is not None:
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 2:
            raise ValueError(f"max_tokens must be an integer of at least 2, got {max_tokens!r}")
        preset["ppl_tokens"] = max_tokens
        preset["window"] = min(preset["window"], max_tokens)
        preset["capture_tokens"] = min(preset["capture_tokens"], max_tokens)
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be a positive integer, got {batch!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {tuple(DTYPES)}, got {dtype!r}")
    models.check_device(device, device_map)
    if runs is not None:
        try:
            re.compile(runs)
        except re.error as err:
            raise ValueError(f"runs must be a regular expression, got {runs!r}: {err}") from err
    if noise_runs is None:
        # An explicit run selection measures those runs only.
        noise_runs = NO_NOISE_RUNS if runs is not None else NOISE_RUNS[bool(quick)]
    if not isinstance(noise_runs, str):
        raise ValueError(f"noise_runs must be a regular expression or {NO_NOISE_RUNS!r}, got {noise_runs!r}")
    try:
        re.compile(noise_runs)
    except re.error as err:
        raise ValueError(f"noise_runs must be a regular expression, got {noise_runs!r}: {err}") from err
    block_map = block_maps.normalize(block_map)
    out = pathlib.Path(out) if out is not None else pathlib.Path("reports/golden-quick" if quick else "reports/golden")
    return Options(quick, None if model is None else pathlib.Path(model),
                   None if text is None else pathlib.Path(text), out, seed=seed, threads=threads,
                   dtype=DTYPES[dtype], device=device, device_map=device_map, runs=runs, batch=batch,
                   calibration_text=None if calibration_text is None else pathlib.Path(calibration_text),
                   noise_runs=noise_runs, synth_json=None if synth_json is None else pathlib.Path(synth_json),
                   block_map=block_map, **preset)


def quick_layers(model) -> list[str]:
    """Quick mode measures the first and the last decoder layer (and nothing else)."""
    last = model.config.num_hidden_layers - 1
    return [rf"^model\.layers\.0\.", rf"^model\.layers\.{last}\."]


def _finite_mean(values) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return sum(finite) / len(finite) if finite else math.nan


def tensor_section(captures: dict[str, models.LinearCapture], opts: Options, progress) -> dict:
    """Per-layer SQNR and MSE of every format, dialect histograms and selector agreement."""
    layers = {}
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
    return {"tensor_metrics": {"layers": layers, "summary": _summary(layers, unique_results)},
            "dialects": _histograms(unique_results), "selection": _selection(layers, unique_results),
            "block_sizes": _sweep(layers)}


def _summary(layers: dict, results: dict) -> dict:
    """Per kind and format: SQNR mean and minimum over layers, pooled over all tensors, and MSE."""
    summary = {}
    for kind in ("weight", "activation"):
        summary[kind] = {}
        for s in metrics.SPECS_BY_KIND[kind]:
            per_layer = [layers[n][kind][s.key]["sqnr_db"] for n in layers]
            signal = sum(r.stats[s.key].signal for r in results[kind])
            noise = sum(r.stats[s.key].noise for r in results[kind])
            count = sum(r.stats[s.key].count for r in results[kind])
            summary[kind][s.key] = {"mean_sqnr_db": _finite_mean(per_layer), "min_sqnr_db": min(per_layer),
                                    "pooled_sqnr_db": metrics.sqnr_db(signal, noise), "mse": noise / count}
    return summary


def _histograms(results: dict) -> dict:
    """Dialect usage of every selector at the default block size."""
    histograms = {"block": metrics.DIALECT_BLOCK}
    for kind in ("weight", "activation"):
        for fmt in metrics.SELECTORS:
            chosen = [r.dialects[metrics.selection_key(fmt, metrics.DIALECT_BLOCK)] for r in results[kind]]
            counts = [sum(c) for c in zip(*(metrics.dialect_histogram(d) for d in chosen))]
            histograms[f"{kind}_{metrics.BD_METHOD[fmt]}"] = {"counts": counts, "blocks": sum(counts)}
    return histograms


def _selection(layers: dict, results: dict) -> dict:
    """Per kind, online selector and block size: the fraction of non-zero blocks where it picks the
    MSE dialect, and the per-layer SQNR it loses against MSE."""
    selection = {}
    for kind in ("weight", "activation"):
        selection[kind] = {}
        for s in metrics.SPECS_BY_KIND[kind]:
            if s.fmt not in metrics.ONLINE_SELECTORS:
                continue
            mse_key = metrics.selection_key("bd_mse", s.block)
            if f"bd_mse_b{s.block}" not in layers[next(iter(layers))][kind]:
                continue
            own = metrics.selection_key(s.fmt, s.block)
            same = sum(int((r.dialects[own] == r.dialects[mse_key]).sum()) for r in results[kind])
            total = sum(r.dialects[mse_key].numel() for r in results[kind])
            loss = [layers[n][kind][f"bd_mse_b{s.block}"]["sqnr_db"] - layers[n][kind][s.key]["sqnr_db"]
                    for n in layers]
            selection[kind][s.key] = {"agreement_rate": same / total if total else math.nan, "blocks": total,
                                      "mean_sqnr_loss_db": _finite_mean(loss), "max_sqnr_loss_db": max(loss)}
    return selection


def _sweep(layers: dict) -> dict:
    """BlockDialect's mean SQNR over layers at every block size, each kind with its own selector."""
    sweep = {}
    for kind, method in metrics.SWEEP_METHOD.items():
        fmt = next(f for f, m in metrics.BD_METHOD.items() if m == method)
        sweep[kind] = {"method": method, "mean_sqnr_db": {
            str(b): _finite_mean([layers[n][kind][f"{fmt}_b{b}"]["sqnr_db"] for n in layers])
            for b in sorted(perplexity.BD_BLOCKS)}}
    return sweep


def check_layers(names: list[str], count: int) -> list[str]:
    """At most `count` layers: one of each kind (q_proj, ..., down_proj, lm_head), taken at depths
    spread over the model, so that every shape of product is checked."""
    kinds: dict[str, list[str]] = {}
    for name in names:
        kinds.setdefault(name.rsplit(".", 1)[-1], []).append(name)
    groups = list(kinds.values())
    one_per_kind = [group[round(j * (len(group) - 1) / max(1, len(groups) - 1))] for j, group in enumerate(groups)]
    keep = sorted({round(i * (len(one_per_kind) - 1) / max(1, count - 1)) for i in range(count)})
    return [one_per_kind[i] for i in keep]


def float64_section(captures, opts: Options, progress) -> dict:
    """bd.linear against float64 dequantize-matmul on a spread of layers."""
    per_layer = {}
    for name in check_layers(list(captures), opts.check_layers):
        progress.set_description(f"float64 check {name}")
        c = captures[name]
        result = float64_check.check(c.activation[:opts.check_rows], c.weight[:opts.check_rows], name=name)
        per_layer[name] = result._asdict()
        progress.update()
    return {"layers": per_layer, "bound": float64_check.FP32_ROUNDING_BOUND,
            "max_rel_diff": max(r["max_rel_diff"] for r in per_layer.values()),
            "min_exact_fraction": min(r["exact_fraction"] for r in per_layer.values()),
            "zero_mismatches": sum(r["zero_mismatches"] for r in per_layer.values()),
            "activation_rows": opts.check_rows, "weight_rows": opts.check_rows}


def selected_schemes(opts: Options) -> list[perplexity.Scheme]:
    """The perplexity runs of this report: all of the preset, or those whose key matches opts.runs."""
    schemes = perplexity.perplexity_schemes(opts.quick, opts.block_map)
    chosen = schemes if opts.runs is None else [s for s in schemes if re.search(opts.runs, s.key)]
    if not chosen:
        raise ValueError(f"runs {opts.runs!r} matches none of the runs: {', '.join(s.key for s in schemes)}")
    if opts.noise_runs == NO_NOISE_RUNS:
        return chosen
    noisy = [s for s in chosen if s.scope != "baseline" and re.search(opts.noise_runs, s.key)]
    if not noisy:
        raise ValueError(f"noise_runs {opts.noise_runs!r} matches none of the runs: "
                         f"{', '.join(s.key for s in chosen)}")
    return chosen + [perplexity.noise_scheme(s, d) for s in noisy for d in perplexity.NOISE_GAINS]


def quality_cost_section(result: dict, costs: dict, synth_path: pathlib.Path) -> dict:
    """The quality-against-cost section of a result whose perplexity runs and noise bands are
    measured, with the synthesis figures ``costs`` (:func:`quality_cost.mac_costs`) of
    ``synth_path``."""
    runs = result["perplexity"]["runs"]
    return quality_cost.section(runs, result["noise"], {k: r["bits_per_element"] for k, r in runs.items()},
                                costs, _shown_path(synth_path))


def _shown_path(path: pathlib.Path) -> str:
    """`path` relative to the repository when it lies inside it (so reports do not name a checkout)."""
    root = quality_cost.DEFAULT_SYNTH_JSON.parents[2]
    try:
        return str(pathlib.Path(path).resolve().relative_to(root))
    except ValueError:
        return str(path)


def calibration_ids(tokenizer, all_ids: torch.Tensor, ppl_ids: torch.Tensor, opts: Options) -> tuple[torch.Tensor, dict]:
    """The calibration tokens of the static NVFP4 scales and where they come from: as many tokens as
    the evaluation has, from --calibration-text, or by default the text's tokens right after the
    evaluation tokens. A TextError when they share a passage with the evaluation tokens."""
    count = ppl_ids.shape[1]
    if opts.calibration_text is None:
        ids = all_ids[:, count:2 * count]
        source = {"text": str(opts.text or models.DEFAULT_TEXT_PATH), "first_token": count, "tokens": int(ids.shape[1]),
                  "rule": "the evaluation text's tokens right after the evaluation tokens"}
    else:
        ids = models.tokenize(tokenizer, models.read_text(opts.calibration_text))[:, :count]
        source = {"text": str(opts.calibration_text), "first_token": 0, "tokens": int(ids.shape[1]),
                  "rule": "the first tokens of --calibration-text"}
    name = "--calibration-text" if opts.calibration_text is not None else "default calibration text"
    if ids.shape[1] < opts.window:
        raise TextError(f"{name}: {ids.shape[1]} tokens, fewer than one window of {opts.window}"
                        + ("" if opts.calibration_text else "; the text is too short, give --calibration-text"))
    try:
        source["longest_common_run_tokens"] = calibration.check_disjoint(ids, ppl_ids)
    except ValueError as err:
        raise TextError(f"{name}: {str(err).replace('calibration_ids ', '')}") from None
    source["shared_passage_limit_tokens"] = calibration.SHARED_PASSAGE_TOKENS
    return ids, source


def perplexity_section(model, ids, opts: Options, layers, progress, calibration_amax=None) -> dict:
    schemes = selected_schemes(opts)
    # Runs of one weight format follow each other: the time to quantize the weights is reported once.
    order = sorted(schemes, key=lambda s: (s.scope != "baseline", str(s.weight_fmt), str(s.block or s.block_map)))
    modules = perplexity.quantized_linears(model, layers)
    runs, weight_seconds = {}, {}
    for s in order:
        progress.set_description(f"perplexity {s.key}")
        start = time.perf_counter()
        with perplexity.installed(model, s, layers, calibration_amax) as handle:
            if s.scope != "baseline":
                size = "_map" if s.block_map else ("" if s.block is None else f"_b{s.block}")
                weight_seconds.setdefault(f"{s.weight_fmt}{size}", time.perf_counter() - start)
            bits = _run_bits(model, handle, s, opts.window)
            start, cpu_start = time.perf_counter(), time.process_time()
            result = perplexity.evaluate(model, ids, opts.window, on_window=progress.update, batch=opts.batch)
        runs[s.key] = {"label": s.label, "scope": s.scope, "weight_fmt": s.weight_fmt, "act_fmt": s.act_fmt,
                       "block": s.block, "exact": s.exact, "static": s.static, "gain": s.gain,
                       "accumulate": s.accumulate, "block_map": s.block_map, **bits,
                       "perplexity": result.perplexity, "nll_sum": result.nll_sum,
                       "predicted_tokens": result.predicted_tokens, "windows": result.windows,
                       "window_nll": list(result.window_nll), "window_tokens": list(result.window_tokens),
                       "seconds": time.perf_counter() - start, "cpu_seconds": time.process_time() - cpu_start}
    return {"tokens": int(ids.shape[1]), "window": opts.window, "quantized_layers": len(modules),
            "dtype": str(opts.dtype).removeprefix("torch."), "weight_quantization_s": weight_seconds,
            "runs": {s.key: runs[s.key] for s in schemes}}


def _run_bits(model, handle, s: perplexity.Scheme, tokens: int) -> dict:
    """A run's bits per element: the format's, or for a block map the average over the model's
    operands of one window (golden.report.block_maps), weights and activations also apart."""
    if s.block_map is None:
        return {"bits_per_element": perplexity.scheme_bits(s), "bits_per_element_paper": perplexity.scheme_bits(s, "paper")}
    bits = {convention: block_maps.operand_bits(model, handle, tokens, s.weight_fmt, s.act_fmt, convention)
            for convention in ("ocp", "paper")}
    return {"bits_per_element": bits["ocp"].all, "bits_per_element_paper": bits["paper"].all,
            "operand_bits": bits["ocp"]._asdict()}


def stage1_rows(result: dict) -> list[dict]:
    """SPEC 4.2 [revised] in figures: each activation selector at each block size, with MSE weights."""
    summary = result["tensor_metrics"]["summary"]["activation"]
    selection = result["selection"]["activation"]
    runs = result["perplexity"]["runs"]
    rows = []
    for block in sorted(perplexity.BD_BLOCKS):
        for fmt in metrics.SELECTORS:
            key = f"{fmt}_b{block}"
            ppl = {scope: runs.get(perplexity.bd_scheme(scope, fmt, block).key) for scope in ("linear", "full")}
            rows.append({"block": block, "selector": metrics.BD_METHOD[fmt], "format": fmt,
                         "pooled_sqnr_db": summary[key]["pooled_sqnr_db"], "mean_sqnr_db": summary[key]["mean_sqnr_db"],
                         "agreement_with_mse": 1.0 if fmt == "bd_mse" else selection[key]["agreement_rate"],
                         "ppl_linear": ppl["linear"]["perplexity"] if ppl["linear"] else None,
                         "ppl_full": ppl["full"]["perplexity"] if ppl["full"] else None})
    return rows


def hardware_exact_rows(result: dict) -> list[dict]:
    """Each hardware-exact run beside the fake-quantized run of the same scheme and, for a rounded
    accumulation mode (SPEC 6.1), beside the hardware-exact run with exact accumulation."""
    runs = result["perplexity"]["runs"]
    same = ("scope", "weight_fmt", "act_fmt", "block", "block_map")

    def twin(run: dict, exact: bool) -> dict | None:
        return next((r for r in runs.values() if all(r.get(f) == run.get(f) for f in same) and r["exact"] == exact
                     and r.get("accumulate", "exact") == "exact" and r.get("gain", 1.0) == 1.0), None)

    def rel(run: dict, other: dict | None) -> float | None:
        return (run["perplexity"] - other["perplexity"]) / other["perplexity"] if other else None

    rows = []
    for key, run in runs.items():
        if not run["exact"] or run.get("gain", 1.0) != 1.0:
            continue
        fake, exact_sum = twin(run, False), twin(run, True)
        rows.append({"key": key, "label": run["label"], "block": run["block"],
                     "accumulate": run.get("accumulate", "exact"), "exact": run["perplexity"],
                     "fake": fake["perplexity"] if fake else None, "rel_diff": rel(run, fake),
                     "exact_accumulation": exact_sum["perplexity"] if exact_sum else None,
                     "rel_diff_accumulation": rel(run, exact_sum),
                     "exact_seconds": run["seconds"], "fake_seconds": fake["seconds"] if fake else None})
    return rows


def block_map_rows(result: dict) -> list[dict]:
    """Each block-map run beside the uniform B=32 and B=16 runs of the same formats and scope."""
    runs = result["perplexity"]["runs"]
    rows = []
    for key, run in runs.items():
        if run.get("block_map") is None or run.get("gain", 1.0) != 1.0:
            continue
        uniform = {}
        for block in (32, 16):
            other = next((r for r in runs.values() if r["block"] == block and not r["exact"]
                          and r.get("gain", 1.0) == 1.0 and not r.get("static")
                          and all(r[f] == run[f] for f in ("scope", "weight_fmt", "act_fmt"))), None)
            uniform[block] = None if other is None else {"perplexity": other["perplexity"],
                                                         "bits_per_element": other["bits_per_element"]}
        rows.append({"key": key, "label": run["label"], "scope": run["scope"], "block_map": run["block_map"],
                     "perplexity": run["perplexity"], "bits_per_element": run["bits_per_element"],
                     "operand_bits": run["operand_bits"], "uniform": {str(b): u for b, u in uniform.items()}})
    return rows


def run(opts: Options) -> dict:
    """Computes every figure of the report; returns the JSON-ready dictionary."""
    torch.manual_seed(opts.seed)
    torch.set_num_threads(opts.threads)
    started, cpu_started = time.perf_counter(), time.process_time()
    timing = {}
    model_path = models.default_model_path() if opts.model is None else opts.model
    text = models.read_text(opts.text)

    tqdm.write(f"loading {model_path}")
    model, tokenizer = models.load_model(model_path, dtype=opts.dtype, device=opts.device,
                                         device_map=opts.device_map)
    timing["load_model_s"] = time.perf_counter() - started
    all_ids = models.tokenize(tokenizer, text)
    ppl_ids = all_ids[:, :opts.ppl_tokens]
    layers = quick_layers(model) if opts.quick else None
    n_windows = len(perplexity.windows(ppl_ids, opts.window))
    schemes = selected_schemes(opts)
    # Inputs that can be refused are checked before the long work.
    static = [s for s in schemes if s.static]
    calib_ids, calib_source = calibration_ids(tokenizer, all_ids, ppl_ids, opts) if static else (None, None)
    synth_path = opts.synth_json or quality_cost.DEFAULT_SYNTH_JSON
    costs = quality_cost.mac_costs(quality_cost.load_synth(synth_path))
    calib_windows = len(perplexity.windows(calib_ids, opts.window)) if static else 0
    names = list(perplexity.quantized_linears(model, layers))
    for block_map in dict.fromkeys(s.block_map for s in schemes if s.block_map is not None):
        block_maps.check_matches(block_map, names)

    mark = time.perf_counter()
    captures = models.capture_linear_inputs(model, tokenizer, text, opts.capture_tokens, layers, dtype=opts.dtype)
    timing["capture_s"] = time.perf_counter() - mark

    total_steps = (len(captures) + 2 * len(check_layers(list(captures), opts.check_layers))
                   + n_windows * len(schemes) + calib_windows)
    result = {}
    with tqdm(total=total_steps, unit="step", dynamic_ncols=True) as progress:
        mark = time.perf_counter()
        result.update(tensor_section(captures, opts, progress))
        timing["tensor_metrics_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        result["float64_check"] = float64_section(captures, opts, progress)
        timing["float64_check_s"] = time.perf_counter() - mark
        mark = time.perf_counter()
        result["accumulation"] = accumulation.section(captures, check_layers(list(captures), opts.check_layers),
                                                      opts.check_rows, progress)
        timing["accumulation_s"] = time.perf_counter() - mark
        del captures
        amax = None
        if static:
            mark = time.perf_counter()
            progress.set_description("calibrating NVFP4 activation scales")
            scope = "full" if any(s.scope == "full" for s in static) else "linear"
            amax = calibration.calibrate(model, calib_ids, opts.window, layers, scope, opts.batch, progress.update)
            timing["calibration_s"] = time.perf_counter() - mark
            result["calibration"] = dict(calib_source, scope=scope, amax=amax)
        mark = time.perf_counter()
        result["perplexity"] = perplexity_section(model, ppl_ids, opts, layers, progress, amax)
        timing["perplexity_s"] = time.perf_counter() - mark
    result["stage1"] = stage1_rows(result)
    result["hardware_exact"] = hardware_exact_rows(result)
    runs = result["perplexity"]["runs"]
    result["noise"] = noise.section(runs)
    result["quality_cost"] = quality_cost_section(result, costs, synth_path)
    result["block_maps"] = block_map_rows(result)

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
        "layers_measured": len(result["tensor_metrics"]["layers"]),
        "layer_filter": layers,
        "runs_filter": opts.runs,
        "noise_runs": opts.noise_runs,
        "block_map": opts.block_map,
        "seed": opts.seed,
        "dtype": str(opts.dtype).removeprefix("torch."),
        "device": str(models.model_device(model)) if opts.device_map is None else f"device_map={opts.device_map}",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "threads": torch.get_num_threads(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    timing["total_s"] = time.perf_counter() - started
    # CPU seconds of this process (all threads): on a shared machine the wall time above depends on
    # the other load, this does much less.
    timing["total_cpu_s"] = time.process_time() - cpu_started
    result["timing"] = timing
    return result
