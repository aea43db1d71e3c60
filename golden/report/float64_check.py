"""Float64 cross-check of the exact dot product: `golden.bd.linear` (SPEC 6) against dequantize-then-
matmul in float64, on real operands.

`golden.bd.linear` sums exact block integers and rounds once to FP32. Every decoded value and every
product is exact in float64, so `dequantize(a) @ dequantize(w).T` in float64 is the exact sum
whenever the terms of a row span fewer than 53 bits, and the two must then agree to within one
FP32 rounding: a relative difference of at most 2^-24.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

from golden import bd
from golden.report.metrics import to_fp16_reference

FP32_ROUNDING_BOUND = 2.0 ** -24


class Agreement(NamedTuple):
    max_rel_diff: float          # over outputs whose exact value is non-zero
    exact_fraction: float        # outputs bit-identical to the float64 result rounded to FP32
    zero_mismatches: int         # outputs whose float64 value is 0 but the integer path's is not
    outputs: int


class Operands(NamedTuple):
    q_act: bd.Blocks
    q_weight: bd.Blocks
    reference: torch.Tensor      # float64 product of the dequantized operands, (T, N)


def operands(activation: torch.Tensor, weight: torch.Tensor, block: int = 32, name: str = "layer") -> Operands:
    """activation (T, K) quantized two-stage, weight (N, K) quantized MSE, as in the hardware, and
    the float64 product of their dequantized values."""
    q_act = bd.quantize(to_fp16_reference(activation, f"{name} activation"), block=block, method="two_stage")
    q_weight = bd.quantize(to_fp16_reference(weight, f"{name} weight"), block=block, method="mse")
    reference = bd.dequantize(q_act).to(torch.float64) @ bd.dequantize(q_weight).to(torch.float64).T
    return Operands(q_act, q_weight, reference)


def check(activation: torch.Tensor, weight: torch.Tensor, block: int = 32, name: str = "layer") -> Agreement:
    """bd.linear (exact accumulation) against the float64 product, on the operands of `operands`."""
    q_act, q_weight, reference = operands(activation, weight, block, name)
    integer_path = bd.linear(q_act, q_weight).to(torch.float64)
    nonzero = reference != 0
    rel = (integer_path - reference).abs()[nonzero] / reference.abs()[nonzero]
    return Agreement(
        max_rel_diff=float(rel.max()) if rel.numel() else 0.0,
        exact_fraction=float((integer_path == reference.to(torch.float32).to(torch.float64)).double().mean()),
        zero_mismatches=int((integer_path[~nonzero] != 0).sum()),
        outputs=reference.numel(),
    )
