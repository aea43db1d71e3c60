"""BlockDialect golden model: the public API of SPEC 10, bit-exact to ../shared/SPEC.md.

    q = quantize(x, block=32, method="two_stage")   # SPEC 3, 4 (activations) or 5 ("mse", weights)
                                                    # "two_stage_trunc": SPEC 4 with the truncating stage 1
    x_hat = dequantize(q)                           # SPEC 3
    y = linear(q_act, q_weight)                     # SPEC 6: exact block sums, one FP32 rounding
    raw = pack(q); q2 = unpack(raw, block=32)       # SPEC 7

Everything is vectorised over whole tensors; integer arithmetic is used wherever the spec is integer.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from . import fp16
from .formatbook import FORMATBOOK, MIDPOINTS, STAGE2_RANGES
from .spec import (
    BLOCK_SIZES,
    DECODE_EXP_OFFSET,
    EXP_FIELD_NONFINITE,
    HEADER_BYTES,
    MAX_HALF_UNITS,
    MSE_UNIT,
    NUM_DIALECTS,
    NUM_PAIRS,
    PRODUCT_EXP_OFFSET,
    Q_BITS,
    Q_SHIFT_BASE,
    check_block_size,
)

__all__ = [
    "Blocks", "FORMATBOOK", "BLOCK_SIZES", "METHODS", "quantize", "dequantize", "decode", "linear",
    "pack", "unpack", "block_size", "pack_rows",
]

# SPEC 4 and 5: "two_stage" rounds the block maximum to pick the pair (SPEC 4.2, the default and the
# hardware's rule), "two_stage_trunc" truncates it (the first reading of the paper, kept for
# comparison), "mse" searches every dialect (SPEC 5).
METHODS = ("two_stage", "two_stage_trunc", "mse")
NONFINITE_MODES = ("raise", "flag")

# SPEC 4.4 / 5: index of the nearest value (ties up) for every q in 0..31 and every dialect. Both
# methods round by the same midpoint comparison, because every midpoint is a whole quarter-unit.
_Q_VALUES = torch.arange(1 << Q_BITS, dtype=torch.int64)
INDEX_LUT = (_Q_VALUES[None, :, None] >= MIDPOINTS[:, None, :]).sum(-1)   # (16, 32)
VALUE_LUT = FORMATBOOK.gather(1, INDEX_LUT)                                  # (16, 32) half-units


class Blocks(NamedTuple):
    """A block-quantized tensor (SPEC 10). Block size is `codes.shape[-1]`."""

    exp: torch.Tensor       # uint8 (..., K/B): shared exponent field E, 0 for an all-zero block
    dialect: torch.Tensor   # uint8 (..., K/B)
    codes: torch.Tensor     # uint8 (..., K/B, B): sign << 3 | idx
    invalid: torch.Tensor   # bool (..., K/B): the block held Inf or NaN (nonfinite="flag")


def block_size(q: Blocks, name: str = "q") -> int:
    """Validates a Blocks value and returns its block size."""
    if not isinstance(q, Blocks):
        raise ValueError(f"{name} must be a golden.bd.Blocks, got {type(q).__name__}")
    if q.codes.dim() < 2:
        raise ValueError(f"{name}.codes must have shape (..., K/B, B), got {tuple(q.codes.shape)}")
    block = q.codes.shape[-1]
    if block not in BLOCK_SIZES:
        raise ValueError(f"{name}.codes has block size {block}, not one of {BLOCK_SIZES}")
    lead = q.codes.shape[:-1]
    for field in ("exp", "dialect", "invalid"):
        if getattr(q, field).shape != lead:
            raise ValueError(f"{name}.{field} has shape {tuple(getattr(q, field).shape)}, expected {tuple(lead)}")
    return block


def _first_index(mask: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.nonzero(mask)[0])


def quantize(x, block: int = 32, method: str = "two_stage", nonfinite: str = "raise",
             pad: bool = False) -> Blocks:
    """Quantizes `x` to BlockDialect along its last dimension (SPEC 3, 4 and 5).

    method: "two_stage" is the online selector of SPEC 4 (activations), whose stage 1 rounds the
    block maximum to the nearest pair; "two_stage_trunc" the same selector with the truncating
    stage 1; "mse" the exhaustive dialect search of SPEC 5 (weights). nonfinite: "raise" rejects Inf/NaN (and FP16 overflow)
    naming the first index; "flag" quantizes them as zero and sets the block's `invalid` flag, as
    the hardware does. pad: pad the last dimension with +0 up to a multiple of `block`.
    """
    block = check_block_size(block)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if nonfinite not in NONFINITE_MODES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_MODES}, got {nonfinite!r}")
    x16 = fp16.to_fp16(x)
    length = x16.shape[-1]
    if length % block:
        if not pad:
            raise ValueError(f"x: last dimension {length} is not a multiple of block={block} (use pad=True)")
        x16 = torch.nn.functional.pad(x16, (0, block - length % block))  # pads with +0
    fields = fp16.split(x16)
    if nonfinite == "raise" and bool(fields.nonfinite.any()):
        index = _first_index(fields.nonfinite)
        raise ValueError(f"x holds a non-finite FP16 value at index {index} "
                         "(Inf, NaN or overflow of the FP16 range); use nonfinite='flag' to quantize it as zero")

    blocked = x16.shape[:-1] + (x16.shape[-1] // block, block)
    sign, ex, sig, bad = (t.reshape(blocked) for t in fields)
    shared = ex.amax(-1)                                            # SPEC 3: E = max ex
    shift = (Q_SHIFT_BASE + shared.unsqueeze(-1) - ex).clamp(max=2 * Q_BITS + 1)
    q = sig >> shift                                                # SPEC 4.1, truncation

    if method in ("two_stage", "two_stage_trunc"):
        dialect = _select_two_stage(q, rounding=method == "two_stage")
    else:
        dialect = _select_mse(q, ex, sig, shared)
    dialect = torch.where(shared == 0, torch.zeros_like(dialect), dialect)  # SPEC 3: zero block

    idx = INDEX_LUT.view(-1)[dialect.unsqueeze(-1) * (1 << Q_BITS) + q.to(torch.int64)]   # SPEC 4.4
    codes = (sign << 3) | idx
    return Blocks(shared.to(torch.uint8), dialect.to(torch.uint8), codes.to(torch.uint8), bad.any(-1))


def _stage1_pair(qmax: torch.Tensor, rounding: bool) -> torch.Tensor:
    """SPEC 4.2: the pair whose largest value (15 - p half-units) is nearest the block maximum.

    rounding: p = max(0, 15 - ((qmax + 1) >> 1)), the nearest half-unit with ties up;
    otherwise the truncating rule p = 15 - (qmax >> 1). qmax lies in [16, 31] when E >= 1; the
    clamp to [0, 7] only matters for qmax = 31 (rounding) and for E == 0 blocks, fixed later.
    """
    half_units = (qmax + 1) >> 1 if rounding else qmax >> 1
    return (MAX_HALF_UNITS - half_units).clamp(0, NUM_PAIRS - 1)


def _select_two_stage(q: torch.Tensor, rounding: bool = True) -> torch.Tensor:
    """SPEC 4.2 and 4.3: pair from the block maximum, then the dialect whose range holds more q."""
    qmax = q.amax(-1)
    pair = _stage1_pair(qmax, rounding)
    dialect_a = 2 * pair
    lo_a, hi_a = STAGE2_RANGES[dialect_a].unbind(-1)
    lo_b, hi_b = STAGE2_RANGES[dialect_a + 1].unbind(-1)
    count_a = ((q >= lo_a.unsqueeze(-1)) & (q < hi_a.unsqueeze(-1))).sum(-1)
    count_b = ((q >= lo_b.unsqueeze(-1)) & (q < hi_b.unsqueeze(-1))).sum(-1)
    return (dialect_a + (count_b > count_a).to(dialect_a.dtype)).to(torch.int64)   # ties go to A


def _select_mse(q: torch.Tensor, ex: torch.Tensor, sig: torch.Tensor, shared: torch.Tensor) -> torch.Tensor:
    """SPEC 5: exact integer squared error of every dialect; the smallest wins, ties to the lowest id.

    Only elements with ex >= E - 1 enter the cost (the others round alike in every dialect); for them
    M * 2^(ex - E + 1) is M or 2M, exact in int64.
    """
    shared = shared.unsqueeze(-1)
    counted = ex >= shared - 1
    scaled = torch.where(counted, sig << (ex - shared + 1).clamp(min=0), torch.zeros_like(sig))
    costs = []
    for dialect in range(NUM_DIALECTS):                             # 16 whole-tensor passes
        value = VALUE_LUT[dialect].to(torch.int32)[q.to(torch.int64)]
        error = torch.where(counted, scaled - MSE_UNIT * value, torch.zeros_like(scaled))
        costs.append((error * error).sum(-1, dtype=torch.int64))   # each term < 2^24
    return torch.stack(costs, -1).argmin(-1)                       # first minimum = lowest id


def _pow2_f32(exponent: torch.Tensor) -> torch.Tensor:
    """Exact 2^exponent in FP32 for normal exponents, built from the bit pattern."""
    return ((exponent + 127) << 23).to(torch.int32).view(torch.float32)


def decode(q: Blocks) -> tuple[torch.Tensor, torch.Tensor]:
    """SPEC 6 decode: per element sign (0/1) and magnitude h in half-units, int64 (..., K/B, B)."""
    block_size(q)
    codes = q.codes.to(torch.int64)
    idx = codes & 7
    h = FORMATBOOK[q.dialect.to(torch.int64).unsqueeze(-1), idx]
    return codes >> 3, h


def dequantize(q: Blocks) -> torch.Tensor:
    """SPEC 3: (-1)^s * FORMATBOOK[d][idx] * 2^(E - 18), float32, shape (..., K)."""
    sign, h = decode(q)
    scale = _pow2_f32(q.exp.to(torch.int64) - DECODE_EXP_OFFSET).unsqueeze(-1)
    magnitude = h.to(torch.float32) * scale
    values = torch.where(sign.bool(), -magnitude, magnitude)
    return values.reshape(values.shape[:-2] + (-1,))


def _signed_values(q: Blocks) -> torch.Tensor:
    sign, h = decode(q)
    return torch.where(sign.bool(), -h, h)


_LIMB = 32
_LIMB_MASK = (1 << _LIMB) - 1
_SMALL_HI = 1 << 29          # below this the two-limb magnitude fits in 61 bits
_BIG_SHIFT = 20              # larger magnitudes drop 20 bits into a sticky bit before rounding
_FP32_SIG_BITS = 24


def _exact_sum_to_f32(low: torch.Tensor, high: torch.Tensor, unit_exp: int) -> torch.Tensor:
    """Rounds the exact integer (high * 2^32 + low) * 2^unit_exp to FP32, ties to even (SPEC 6).

    `low` and `high` are int64 partial sums; the value can exceed int64, so the magnitude is kept
    as two limbs, squeezed into 61 bits with a sticky bit where needed, then rounded once.
    """
    high = high + (low >> _LIMB)                      # carry so that 0 <= low < 2^32
    low = low & _LIMB_MASK
    negative = high < 0
    borrow = negative & (low != 0)
    mag_hi = torch.where(negative, -high - borrow.to(torch.int64), high)
    mag_lo = torch.where(borrow, (1 << _LIMB) - low, low)

    big = mag_hi >= _SMALL_HI
    drop = torch.where(big, _BIG_SHIFT, 0)
    sticky = (mag_lo & ((1 << drop) - 1)) != 0
    magnitude = (mag_hi << (_LIMB - drop)) | (mag_lo >> drop) | sticky.to(torch.int64)

    # Bit length: a float64 estimate corrected exactly with integer shifts.
    _, estimate = torch.frexp(magnitude.to(torch.float64))
    length = estimate.to(torch.int64)
    length = length - ((magnitude >> (length - 1).clamp(min=0)) == 0).to(torch.int64)
    length = length + ((magnitude >> length) != 0).to(torch.int64)

    shift = (length - _FP32_SIG_BITS).clamp(min=0)
    kept = magnitude >> shift
    rest = magnitude - (kept << shift)
    half = (1 << shift) >> 1
    round_up = (shift > 0) & ((rest > half) | ((rest == half) & ((kept & 1) == 1)))
    kept = kept + round_up.to(torch.int64)
    carry = kept >> _FP32_SIG_BITS                    # rounding up to 2^24 renormalises
    kept = kept >> carry
    exponent = shift + carry + drop + unit_exp

    value = kept.to(torch.float32) * _pow2_f32(exponent)
    return torch.where(negative, -value, value)


def linear(q_act: Blocks, q_weight: Blocks) -> torch.Tensor:
    """Exact BlockDialect matrix product, like torch.nn.functional.linear (SPEC 6).

    (..., K) x (N, K) -> (..., N). Each block sum is an exact integer; a row's block values are added
    exactly in units of 2^-36 and rounded once to FP32, ties to even; a zero sum is +0.0.
    """
    block = block_size(q_act, "q_act")
    if block_size(q_weight, "q_weight") != block:
        raise ValueError(f"q_weight has block size {q_weight.codes.shape[-1]} but q_act has {block}")
    if q_weight.codes.dim() != 3:
        raise ValueError(f"q_weight must be quantized from an (N, K) matrix, got codes of shape "
                         f"{tuple(q_weight.codes.shape)}")
    nblocks = q_act.codes.shape[-2]
    if q_weight.codes.shape[-2] != nblocks:
        raise ValueError(f"q_weight has {q_weight.codes.shape[-2]} blocks per row but q_act has {nblocks} "
                         "(the K dimensions differ)")

    lead = q_act.codes.shape[:-2]
    a_values = _signed_values(q_act).reshape(-1, nblocks, block)
    a_exp = q_act.exp.to(torch.int64).reshape(-1, nblocks)
    w_values = _signed_values(q_weight).to(torch.float64).permute(1, 2, 0)   # (nb, B, N)
    w_exp = q_weight.exp.to(torch.int64).t()                                 # (nb, N)
    rows, columns = a_values.shape[0], w_values.shape[-1]

    out = torch.empty(rows, columns, dtype=torch.float32)
    chunk = max(1, (1 << 22) // max(1, columns * nblocks))   # bounds the (nb, rows, N) temporaries
    for start in range(0, rows, chunk):
        a = a_values[start:start + chunk].to(torch.float64).transpose(0, 1)   # (nb, r, B)
        # Block sums are at most 225 * 64 in magnitude: exact in float64, then exact as int64.
        sums = torch.bmm(a, w_values).round().to(torch.int64)                 # (nb, r, N)
        exponent = a_exp[start:start + chunk].t().unsqueeze(-1) + w_exp.unsqueeze(1)
        in_high = exponent >= _LIMB
        terms = sums << torch.where(in_high, exponent - _LIMB, exponent)
        low = torch.where(in_high, 0, terms).sum(0)
        high = torch.where(in_high, terms, 0).sum(0)
        out[start:start + chunk] = _exact_sum_to_f32(low, high, -PRODUCT_EXP_OFFSET)
    return out.reshape(lead + (columns,))


def pack(q: Blocks) -> torch.Tensor:
    """SPEC 7 storage: per block the word E << 4 | dialect (little-endian), then two codes per byte,
    element 2i in the low nibble of byte i. Returns uint8 (..., K/B * (2 + B/2)).

    The invalid flag has no place in storage, so flagged blocks are refused rather than dropped.
    """
    block = block_size(q)
    if bool(q.invalid.any()):
        raise ValueError(f"q has {int(q.invalid.sum())} invalid (Inf/NaN) blocks; "
                         "the packed format cannot carry the invalid flag")
    word = (q.exp.to(torch.int64) << 4) | q.dialect.to(torch.int64)
    header = torch.stack([word & 0xFF, word >> 8], -1)
    codes = q.codes.to(torch.int64)
    body = codes[..., 0::2] | (codes[..., 1::2] << 4)
    raw = torch.cat([header, body], -1).to(torch.uint8)
    return raw.reshape(raw.shape[:-2] + (-1,))


def unpack(raw, block: int = 32) -> Blocks:
    """Inverse of `pack` (SPEC 7). `raw` is a uint8 tensor or array shaped (..., K/B * (2 + B/2)),
    or bytes."""
    block = check_block_size(block)
    if isinstance(raw, (bytes, bytearray, memoryview)):
        raw = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
    elif isinstance(raw, np.ndarray):
        raw = torch.from_numpy(np.ascontiguousarray(raw))
    if not isinstance(raw, torch.Tensor) or raw.dtype != torch.uint8 or raw.dim() == 0:
        raise ValueError("raw must be bytes or a uint8 tensor/array with at least one dimension")
    stride = HEADER_BYTES + block // 2
    if raw.shape[-1] % stride:
        raise ValueError(f"raw: last dimension {raw.shape[-1]} is not a multiple of {stride} bytes "
                         f"(one block of {block})")
    blocks = raw.to(torch.int64).reshape(raw.shape[:-1] + (-1, stride))
    word = blocks[..., 0] | (blocks[..., 1] << 8)
    if bool((word >> 9).any()):
        raise ValueError("raw holds a block header with its upper 7 bits set (not SPEC 7 data, or the "
                         "wrong block size)")
    body = blocks[..., HEADER_BYTES:]
    codes = torch.stack([body & 0xF, body >> 4], -1).reshape(body.shape[:-1] + (block,))
    exp = (word >> 4).to(torch.uint8)
    if bool((exp == EXP_FIELD_NONFINITE).any()):
        raise ValueError("raw holds a block with shared exponent 31, which SPEC 3 does not produce")
    return Blocks(exp, (word & 0xF).to(torch.uint8), codes.to(torch.uint8), torch.zeros_like(exp, dtype=torch.bool))


def pack_rows(q_weight: Blocks, lanes: int) -> torch.Tensor:
    """The weight stream of the ``bd_linear`` engine (SPEC 11): ``q_weight`` (R rows of K/B blocks)
    as uint8 ``(ceil(R / lanes), K / B, lanes * (2 + B/2))``.

    Entry ``[g, j]`` is one ``s_axis_w`` beat: block ``j`` of rows ``g * lanes ... g * lanes + lanes - 1``,
    each packed as by :func:`pack` (SPEC 7), lane ``n`` first at byte ``n * (2 + B/2)``. Rows beyond R
    in the last group are zero blocks (header word 0, codes 0), which add +0.0. ``lanes`` is one of
    SPEC 11's lane counts (1, 2, 4, 8). Like :func:`pack`, refuses blocks flagged invalid.
    """
    from .spec import LINEAR_LANES   # SPEC 11

    block = block_size(q_weight, "q_weight")
    if q_weight.codes.dim() != 3:
        raise ValueError(f"q_weight must be quantized from an (R, K) matrix, got codes of shape "
                         f"{tuple(q_weight.codes.shape)}")
    if isinstance(lanes, bool) or not isinstance(lanes, (int, np.integer)) or int(lanes) not in LINEAR_LANES:
        raise ValueError(f"lanes must be one of {LINEAR_LANES}, got {lanes!r}")
    lanes = int(lanes)
    rows, nblocks = q_weight.exp.shape
    groups = -(-rows // lanes)
    extra = groups * lanes - rows
    if extra:
        zero = Blocks(*(torch.zeros((extra,) + tuple(t.shape[1:]), dtype=t.dtype, device=t.device)
                        for t in q_weight))
        q_weight = Blocks(*(torch.cat([t, z]) for t, z in zip(q_weight, zero)))
    stride = HEADER_BYTES + block // 2
    if groups == 0:   # pack() cannot infer the row length of zero rows
        return torch.zeros((0, nblocks, lanes * stride), dtype=torch.uint8, device=q_weight.codes.device)
    raw = pack(q_weight).reshape(groups, lanes, nblocks, stride)
    return raw.permute(0, 2, 1, 3).reshape(groups, nblocks, lanes * stride).contiguous()
