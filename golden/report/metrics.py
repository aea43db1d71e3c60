"""Tensor-level error of every format on real linear-layer operands.

Every format receives the FP16-rounded tensor (SPEC 1: the hardware's inputs are FP16), and the
error is measured against that same FP16 tensor, in float64. With this reference BlockDialect-MSE
is, block by block, the dialect of least squared error (SPEC 5), so its SQNR can never be below the
two-stage selector's: a property the tests check.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from golden import baselines, bd, fp16, model_quantization
from golden.methods import BY_FORMAT, FORMAT_LABELS
from golden.spec import BLOCK_SIZES, NUM_DIALECTS


class FormatSpec(NamedTuple):
    """One format at one block size. `fmt` is a golden.baselines format name."""

    key: str
    fmt: str
    block: int | None
    label: str


LABELS = FORMAT_LABELS


def spec(fmt: str, block: int | None) -> FormatSpec:
    key = fmt if block is None else f"{fmt}_b{block}"
    label = LABELS[fmt] if block is None else f"{LABELS[fmt]} B={block}"
    return FormatSpec(key, fmt, block, label)


# golden.baselines format name -> golden.bd.quantize method. "bd_two_stage" is the rounding stage 1
# of SPEC 4.2 [revised], "bd_two_stage_trunc" the first, truncating reading.
BD_METHOD = {fmt: m.name for fmt, m in BY_FORMAT.items()}
SELECTORS = tuple(BD_METHOD)                    # the three BlockDialect selectors, MSE last
ONLINE_SELECTORS = tuple(fmt for fmt, m in BY_FORMAT.items() if m.selection == "two_stage")

# The formats compared on every layer: BlockDialect's selectors, the baselines at their block sizes
# (NVFP4 is defined for 16 only). Activations are measured with every selector at every block size
# (the online quantizer is what activations use); weights with MSE at every block size (what they
# use) and the online selectors at B=32 only, for the selection comparison.
MAIN_SPECS = (spec("bd_two_stage", 32), spec("bd_mse", 32), spec("mxfp4", 16), spec("mxfp4", 32),
              spec("nvfp4", 16), spec("int4", 32))
SPECS_BY_KIND = {
    "weight": tuple(dict.fromkeys(MAIN_SPECS + (spec("bd_two_stage_trunc", 32), spec("bd_mse", 16),
                                                spec("bd_mse", 64)))),
    "activation": tuple(dict.fromkeys(MAIN_SPECS + tuple(spec(fmt, b) for b in BLOCK_SIZES for fmt in SELECTORS))),
}
TENSOR_SPECS = tuple(dict.fromkeys(SPECS_BY_KIND["weight"] + SPECS_BY_KIND["activation"]))
SWEEP_METHOD = {"weight": "mse", "activation": "two_stage"}
# Histograms are reported at the default block size.
DIALECT_BLOCK = 32


def selection_key(fmt: str, block: int) -> str:
    """Key of a BlockDialect selector's dialect choices in TensorResult.dialects."""
    return f"{BD_METHOD[fmt]}_b{block}"


def bits(fmt: str, block: int | None, convention: str = "ocp") -> float:
    """Bits per element of a format (golden.baselines accounting; NVFP4's block is implied)."""
    return baselines.bits_per_element(fmt, None if fmt == "nvfp4" else block, convention)


def fake_quantize(x: torch.Tensor, fmt: str, block: int | None,
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """golden.model_quantization.fake_quantize (the last dimension zero-padded to whole blocks) in
    `dtype`."""
    return model_quantization.fake_quantize(x, fmt, block, dtype)


def sqnr_db(signal_energy: float, noise_energy: float) -> float:
    """10 log10(signal / noise); +inf for an exact result, -inf for an all-zero signal."""
    if noise_energy == 0.0:
        return math.inf
    if signal_energy == 0.0:
        return -math.inf
    return 10.0 * math.log10(signal_energy / noise_energy)


class ErrorStats(NamedTuple):
    signal: float   # sum of squares of the reference, float64
    noise: float    # sum of squared errors
    count: int


def error_stats(reference: torch.Tensor, approx: torch.Tensor) -> ErrorStats:
    reference = reference.to(torch.float64)
    error = approx.to(torch.float64) - reference
    return ErrorStats(float((reference * reference).sum()), float((error * error).sum()), reference.numel())


class TensorResult(NamedTuple):
    """Errors of every spec on one tensor, plus BlockDialect's dialect choices for every selector and
    block size measured (keyed by `selection_key`)."""

    stats: dict[str, ErrorStats]
    dialects: dict[str, torch.Tensor]   # int64 dialect id of every non-zero block


def to_fp16_reference(x: torch.Tensor, name: str) -> torch.Tensor:
    """SPEC 1's FP16 input (one rounding, also from float64) as float32; an overflow of the FP16
    range is reported, not hidden."""
    x16 = fp16.to_fp16(x)
    if not bool(torch.isfinite(x16).all()):
        raise ValueError(f"{name}: values beyond the FP16 range; SPEC 1 inputs must be FP16")
    return x16.to(torch.float32)


def tensor_result(x: torch.Tensor, specs=TENSOR_SPECS, name: str = "x") -> TensorResult:
    """Runs every spec on x (FP16-rounded first) along its last dimension."""
    reference = to_fp16_reference(x, name)
    stats, dialects = {}, {}
    for s in specs:
        if s.fmt in BD_METHOD:
            q = bd.quantize(reference, block=s.block, method=BD_METHOD[s.fmt])
            approx = bd.dequantize(q)
            dialects[selection_key(s.fmt, s.block)] = q.dialect[q.exp > 0].to(torch.int64)
        else:
            approx = fake_quantize(reference, s.fmt, s.block)
        stats[s.key] = error_stats(reference, approx)
    return TensorResult(stats, dialects)


def sample_rows(weight: torch.Tensor, max_rows: int | None, seed: int) -> torch.Tensor:
    """At most `max_rows` output rows of a weight, seeded and in order; all rows when None."""
    if max_rows is None or weight.shape[0] <= max_rows:
        return weight
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randperm(weight.shape[0], generator=generator)[:max_rows].sort().values
    return weight[rows]


def dialect_histogram(dialects: torch.Tensor) -> list[int]:
    return torch.bincount(dialects, minlength=NUM_DIALECTS).tolist()
