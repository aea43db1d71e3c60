"""SPEC 6.1: the rounded accumulation modes of ``bd.linear`` ("fp32" and "fp16").

``bd.linear(q_act, q_weight, accumulate=...)`` dispatches here for every mode but "exact" (SPEC 6,
golden.bd and golden.exact). A dot product of ``K / B`` blocks adds its block values
``V_j = S_j * 2^(E_aj + E_wj - 36)`` one at a time, in block order, rounding after every step:

- "fp32": ``acc = fl32(acc + V_j)``, starting from +0.0.
- "fp16": ``acc = fl16(acc + fl16(V_j))``, starting from +0.0, with IEEE overflow to +-Inf, FP16
  subnormals kept and ``Inf + (-Inf) = NaN``; the result is the FP32 value of ``acc``.

Every NaN of the result is the positive quiet NaN 0x7FC00000 (x86 makes the negative one).

Why each step is exact where it must be, whatever the BLAS or the device:

- The operands come in dequantized, ``(-1)^s h 2^(E - 18)`` (SPEC 3). The products of one block share
  the power of two ``2^(E_a + E_w - 36)`` and their sum has ``|S| <= 225 B < 2^15``, so every partial
  sum of one block's product is an integer below 2^24 times that power: a float32 matrix product over
  the ``B`` elements of one block returns ``V_j`` exactly, in any order, with FMA or without. Off the
  CPU the products are float64 (a GPU may compute float32 products in TF32), then converted exactly.
- "fp32": ``acc + V_j`` in float32 is one IEEE rounding, ties to even. Every ``V_j`` is a multiple of
  2^-34 and so is every sum, so neither reaches the float32 subnormals (flush-to-zero cannot matter).
- "fp16": ``V_j`` is exact in float32, so its conversion to float16 is the one rounding ``fl16``
  (ties to even, overflow to Inf, subnormals kept). The sum of two float16 tensors is the correctly
  rounded FP16 sum on every device: a GPU adds halves natively; torch on the CPU adds them in float32
  and rounds to float16, which is innocuous double rounding because 24 >= 2 * 11 + 2 (Figueroa,
  "When is double rounding innocuous?", 1995). The tests hold both roundings to numpy on every FP16
  accumulator value and every block value that can occur.

Speed: for a tile of outputs one batched matrix product gives every block value at once (at most
``_TEMPORARY`` of them), then a loop over the ``K / B`` blocks adds them in order. On the benchmark
shape (128 x 4096 by 2048 x 4096, one thread; ``python -m bench.golden_throughput``) "fp32" takes
1.6x and "fp16" 1.7x the time of the exact product.
"""
from __future__ import annotations

import torch

from .spec import ACCUMULATE_MODES

__all__ = ["ROUNDED_MODES", "linear", "add_in_order"]

ROUNDED_MODES = tuple(mode for mode in ACCUMULATE_MODES if mode != "exact")   # SPEC 6.1

_TEMPORARY = 1 << 22               # block values per tile (float32): bounds the temporaries
_ROW_TILE = 256
_QUIET_NAN = torch.tensor(0x7FC00000, dtype=torch.int32).view(torch.float32)   # SPEC 6.1


def linear(a_values: torch.Tensor, w_values: torch.Tensor, block: int, mode: str) -> torch.Tensor:
    """SPEC 6.1 product of dequantized operands: float32 (rows, K) x (N, K) -> float32 (rows, N).

    ``mode`` is "fp32" or "fp16"; ``K`` is a positive multiple of ``block``. The callers are
    golden.bd.linear (which validates the Blocks and the mode) and the tests.
    """
    _check_mode(mode)
    device = a_values.device
    rows, columns = a_values.shape[0], w_values.shape[0]
    nblocks = a_values.shape[1] // block
    dtype = _products_dtype(device)
    # (nblocks, rows, B) and (nblocks, N, B): one block of every row side by side, contiguous.
    a = a_values.reshape(rows, nblocks, block).transpose(0, 1).to(dtype).contiguous()
    w = w_values.reshape(columns, nblocks, block).transpose(0, 1).to(dtype).contiguous()
    out = torch.empty(rows, columns, dtype=torch.float32, device=device)
    row_tile = max(1, min(rows, _ROW_TILE))
    column_tile = max(1, _TEMPORARY // (nblocks * row_tile))
    for r in range(0, rows, row_tile):
        for c in range(0, columns, column_tile):
            values = torch.bmm(a[:, r:r + row_tile], w[:, c:c + column_tile].transpose(1, 2))
            out[r:r + row_tile, c:c + column_tile] = add_in_order(values.to(torch.float32), mode)
    return out


def _check_mode(mode) -> None:
    if mode not in ROUNDED_MODES:
        raise ValueError(f"mode must be one of {ROUNDED_MODES}, got {mode!r}")


def _products_dtype(device: torch.device) -> torch.dtype:
    """float32 on the CPU; float64 elsewhere, where float32 products may be TF32 (module docstring)."""
    return torch.float32 if device.type == "cpu" else torch.float64


def add_in_order(values: torch.Tensor, mode: str) -> torch.Tensor:
    """SPEC 6.1 on block values (nblocks, ...), float32 and exact: the sum over the first dimension
    in order, rounded at every step ("fp32" or "fp16"), as float32 with every NaN 0x7FC00000."""
    _check_mode(mode)
    if mode == "fp16":
        values = values.half()                       # fl16(V_j)
    acc = torch.zeros(values.shape[1:], dtype=values.dtype, device=values.device)
    for value in values:
        acc += value                                 # fl32(acc + V_j) or fl16(acc + fl16(V_j))
    acc = acc.float()
    return torch.where(torch.isnan(acc), _QUIET_NAN.to(acc.device), acc)
