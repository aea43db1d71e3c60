"""The quantization methods and formats, named once (SPEC 4, 5, 8, 10).

A BlockDialect method is what ``golden.bd.quantize(method=...)`` takes; the same method is a format
of ``golden.baselines.fake_quantize`` (``"bd_" + name``), a stage-1 rule of the hardware quantizer
(``bd_hw.quantizer``), a code of the C kernels and a label of the report. Every one of those reads
this table instead of keeping its own.
"""
from __future__ import annotations

from typing import NamedTuple

__all__ = ["Method", "METHODS", "METHOD_NAMES", "BY_FORMAT", "BY_STAGE1", "STAGE1_RULES", "FORMATS",
           "FORMAT_LABELS", "method"]


class Method(NamedTuple):
    name: str               # golden.bd.quantize's `method` (SPEC 10)
    fmt: str                # the golden.baselines format that quantizes with it
    selection: str          # "two_stage" (SPEC 4) or "mse" (SPEC 5)
    stage1: str | None      # SPEC 4.2 rule of a two-stage selection: "round" (the default) or "trunc"
    code: int               # its code in the C kernels (bd_fake_blockdialect, bd_attention_f64)
    label: str              # how the report names it


# SPEC 4.2 [revised]: "two_stage" rounds the block maximum to pick the pair (the default and the
# hardware's rule), "two_stage_trunc" truncates it (the first reading of the paper, kept for
# comparison); "mse" searches every dialect (SPEC 5).
METHODS = {m.name: m for m in (
    Method("two_stage", "bd_two_stage", "two_stage", "round", 0, "two-stage"),
    Method("two_stage_trunc", "bd_two_stage_trunc", "two_stage", "trunc", 1, "two-stage-trunc"),
    Method("mse", "bd_mse", "mse", None, 2, "MSE"),
)}
METHOD_NAMES = tuple(METHODS)
BY_FORMAT = {m.fmt: m for m in METHODS.values()}
BY_STAGE1 = {m.stage1: m for m in METHODS.values() if m.stage1 is not None}
STAGE1_RULES = tuple(BY_STAGE1)

# Every format of golden.baselines.fake_quantize (SPEC 8 and BlockDialect's methods).
FORMATS = ("fp16", *BY_FORMAT, "mxfp4", "nvfp4", "int4")
FORMAT_LABELS = {"fp16": "FP16", "bd_two_stage": "BD two-stage", "bd_two_stage_trunc": "BD two-stage-trunc",
                 "bd_mse": "BD-MSE", "mxfp4": "MXFP4", "nvfp4": "NVFP4", "int4": "INT4"}


def method(name, argument: str = "method") -> Method:
    """The method called `name`; ValueError naming `argument` for anything else."""
    if not isinstance(name, str) or name not in METHODS:
        raise ValueError(f"{argument} must be one of {METHOD_NAMES}, got {name!r}")
    return METHODS[name]
