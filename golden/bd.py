"""BlockDialect golden model: the public API of SPEC 10, bit-exact to ../shared/SPEC.md.

    q = quantize(x, block=32, method="two_stage")   # SPEC 3, 4 (activations) or 5 ("mse", weights)
                                                    # "two_stage_trunc": SPEC 4 with the truncating stage 1
    x_hat = dequantize(q)                           # SPEC 3
    y = linear(q_act, q_weight)                     # SPEC 6: exact block sums, one FP32 rounding
    y = linear(q_act, q_weight, accumulate="fp16")  # SPEC 6.1: "fp32" / "fp16", rounded in block order
    raw = pack(q); q2 = unpack(raw, block=32)       # SPEC 7

Everything is vectorised over whole tensors; integer arithmetic is used wherever the spec is integer.
Inputs are checked once, at the top of each entry point (SPEC 10): `x` by golden.fp16.as_real_tensor
(the rule golden.baselines shares), a Blocks value by `check_blocks`, whoever made it. Results stay
on the input's device.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from . import accumulate as accumulation
from . import fp16, kernels
from .exact import LIMB, exact_sum_to_f32, linear_exact, pow2_f32
from .formatbook import FORMATBOOK, INDEX_LUT, STAGE2_RANGES, VALUE_LUT
from .methods import METHOD_NAMES, Method
from .methods import method as _method
from .native import native_for, path
from .spec import (
    BLOCK_SIZES,
    CODE_BITS,
    DECODE_EXP_OFFSET,
    DEFAULT_ACCUMULATE,
    DIALECT_BITS,
    EXP_BITS,
    EXP_MAX,
    HEADER_BYTES,
    IDX_BITS,
    MAX_HALF_UNITS,
    MSE_UNIT,
    NUM_DIALECTS,
    NUM_PAIRS,
    PRODUCT_EXP_OFFSET,
    Q_BITS,
    Q_SHIFT_BASE,
    check_accumulate,
    check_block_size,
)

__all__ = [
    "Blocks", "FORMATBOOK", "BLOCK_SIZES", "METHODS", "quantize", "dequantize", "decode", "linear",
    "pack", "unpack", "check_blocks", "block_size", "pack_rows",
]

METHODS = METHOD_NAMES      # SPEC 4 and 5, named in golden.methods
NONFINITE_MODES = ("raise", "flag")


class Blocks(NamedTuple):
    """A block-quantized tensor (SPEC 10). Block size is `codes.shape[-1]`."""

    exp: torch.Tensor       # uint8 (..., K/B): shared exponent field E, 0 for an all-zero block
    dialect: torch.Tensor   # uint8 (..., K/B)
    codes: torch.Tensor     # uint8 (..., K/B, B): sign << 3 | idx
    invalid: torch.Tensor   # bool (..., K/B): the block held Inf or NaN (nonfinite="flag")


# ---- SPEC 10: validation at the boundary --------------------------------------------------------

_FIELD_DTYPES = {"exp": torch.uint8, "dialect": torch.uint8, "codes": torch.uint8, "invalid": torch.bool}
# SPEC 3 and 2: the largest value each integer field may hold.
_FIELD_MAX = {"exp": EXP_MAX, "dialect": NUM_DIALECTS - 1, "codes": (1 << CODE_BITS) - 1}
_IDX_MASK = (1 << IDX_BITS) - 1


def _first_index(mask: torch.Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in torch.nonzero(mask)[0])


def _check_quantize_args(block, method, nonfinite, pad) -> tuple[int, Method]:
    """The options of `quantize`; returns the block size and the method."""
    block = check_block_size(block)
    method = _method(method)
    if not isinstance(nonfinite, str) or nonfinite not in NONFINITE_MODES:
        raise ValueError(f"nonfinite must be one of {NONFINITE_MODES}, got {nonfinite!r}")
    if not isinstance(pad, (bool, np.bool_)):
        raise ValueError(f"pad must be True or False, got {pad!r}")
    return block, method


def check_blocks(q, name: str = "q") -> int:
    """SPEC 10: validates a Blocks value, made here or by hand, and returns its block size.

    Fields must be torch tensors on one device: uint8 `exp`, `dialect` shaped (..., K/B) and
    `codes` shaped (..., K/B, B) with B in BLOCK_SIZES, bool `invalid` shaped (..., K/B); values
    exp <= 30, dialect <= 15, codes <= 15; a zero block (exp 0) has dialect 0 and every index 0
    (SPEC 3). Anything else raises ValueError naming the field (`q.codes`, ...).
    """
    if not isinstance(q, Blocks):
        raise ValueError(f"{name} must be a golden.bd.Blocks, got {type(q).__name__}")
    for field, dtype in _FIELD_DTYPES.items():
        value = getattr(q, field)
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{name}.{field} must be a torch tensor, got {type(value).__name__}")
        if value.dtype != dtype:
            raise ValueError(f"{name}.{field} must have dtype {dtype}, got {value.dtype}")
    if q.codes.dim() < 2:
        raise ValueError(f"{name}.codes must have shape (..., K/B, B), got {tuple(q.codes.shape)}")
    block = q.codes.shape[-1]
    if block not in BLOCK_SIZES:
        raise ValueError(f"{name}.codes has block size {block} (its last dimension), not one of {BLOCK_SIZES}")
    lead = q.codes.shape[:-1]
    for field in ("exp", "dialect", "invalid"):
        value = getattr(q, field)
        if value.shape != lead:
            raise ValueError(f"{name}.{field} has shape {tuple(value.shape)}, expected {tuple(lead)} "
                             f"(the shape of {name}.codes without its last dimension)")
        if value.device != q.codes.device:
            raise ValueError(f"{name}.{field} is on {value.device} but {name}.codes on {q.codes.device}")
    _check_block_values(q, {field: f"{name}.{field}" for field in _FIELD_MAX})
    return block


def _check_block_values(q: Blocks, labels: dict[str, str]) -> None:
    """The value rules of SPEC 3 on well-shaped uint8 fields; `labels` names each field in errors."""
    for field, top in _FIELD_MAX.items():
        value = getattr(q, field)
        if value.numel() and int(value.max()) > top:
            index = _first_index(value > top)
            raise ValueError(f"{labels[field]} holds {int(value[index])} at index {index}; "
                             f"SPEC 3 allows 0..{top}")
    zero = q.exp == 0
    if not bool(zero.any()):
        return
    dialect = zero & (q.dialect != 0)
    if bool(dialect.any()):
        index = _first_index(dialect)
        raise ValueError(f"{labels['dialect']} is {int(q.dialect[index])} at index {index}, a zero block "
                         "(exp 0); SPEC 3: a zero block has dialect 0")
    idx = zero.unsqueeze(-1) & ((q.codes & _IDX_MASK) != 0)
    if bool(idx.any()):
        index = _first_index(idx)
        raise ValueError(f"{labels['codes']} holds {int(q.codes[index])} at index {index}, in a zero block "
                         "(exp 0); SPEC 3: every index of a zero block is 0, only sign bits may be set")


# Kept for callers of the earlier name: validates and returns the block size.
block_size = check_blocks


def quantize(x, block: int = 32, method: str = "two_stage", nonfinite: str = "raise",
             pad: bool = False) -> Blocks:
    """Quantizes `x` to BlockDialect along its last dimension (SPEC 3, 4 and 5).

    method: "two_stage" is the online selector of SPEC 4 (activations), whose stage 1 rounds the
    block maximum to the nearest pair; "two_stage_trunc" the same selector with the truncating
    stage 1; "mse" the exhaustive dialect search of SPEC 5 (weights). nonfinite: "raise" rejects
    Inf/NaN (and FP16 overflow) naming the first index; "flag" quantizes them as zero and sets the
    block's `invalid` flag, as the hardware does. pad (a bool): pad the last dimension with +0 up to
    a multiple of `block`. `x` follows the input rule of golden.fp16.as_real_tensor; a torch
    tensor's device is kept.
    """
    block, method = _check_quantize_args(block, method, nonfinite, pad)
    x16 = fp16.to_fp16(x)
    length = x16.shape[-1]
    if length % block:
        if not pad:
            raise ValueError(f"x: last dimension {length} is not a multiple of block={block} (use pad=True)")
        x16 = torch.nn.functional.pad(x16, (0, block - length % block))  # pads with +0
    if native_for(x16):                                             # golden.kernels: same bits
        q = Blocks(*kernels.quantize_native(x16, block, method.name))
        if nonfinite == "raise" and bool(q.invalid.any()):
            _raise_nonfinite(fp16.split(x16).nonfinite)
        return q
    return _quantize_reference(x16, block, method, nonfinite)


def _raise_nonfinite(mask: torch.Tensor):
    raise ValueError(fp16.nonfinite_message(mask, "x", "FP16") + "; use nonfinite='flag' to quantize it as zero")


def _quantize_reference(x16: torch.Tensor, block: int, method: Method, nonfinite: str) -> Blocks:
    """SPEC 3, 4 and 5 in eager torch: the reference of golden.kernels.quantize_native."""
    fields = fp16.split(x16)
    if nonfinite == "raise" and bool(fields.nonfinite.any()):
        _raise_nonfinite(fields.nonfinite)
    blocked = x16.shape[:-1] + (x16.shape[-1] // block, block)
    sign, ex, sig, bad = (t.reshape(blocked) for t in fields)
    shared = ex.amax(-1)                                            # SPEC 3: E = max ex
    shift = (Q_SHIFT_BASE + shared.unsqueeze(-1) - ex).clamp(max=2 * Q_BITS + 1)
    q = sig >> shift                                                # SPEC 4.1, truncation

    if method.selection == "two_stage":
        dialect = _select_two_stage(q, rounding=method.stage1 == "round")
    else:
        dialect = _select_mse(q, ex, sig, shared)
    dialect = torch.where(shared == 0, torch.zeros_like(dialect), dialect)  # SPEC 3: zero block

    idx = INDEX_LUT.to(q.device).view(-1)[dialect.unsqueeze(-1) * (1 << Q_BITS) + q.to(torch.int64)]  # SPEC 4.4
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
    ranges = STAGE2_RANGES.to(q.device)
    lo_a, hi_a = ranges[dialect_a].unbind(-1)
    lo_b, hi_b = ranges[dialect_a + 1].unbind(-1)
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
    value_lut = VALUE_LUT.to(device=q.device, dtype=torch.int32)
    for dialect in range(NUM_DIALECTS):                             # 16 whole-tensor passes
        value = value_lut[dialect][q.to(torch.int64)]
        error = torch.where(counted, scaled - MSE_UNIT * value, torch.zeros_like(scaled))
        costs.append((error * error).sum(-1, dtype=torch.int64))   # each term < 2^24
    return torch.stack(costs, -1).argmin(-1)                       # first minimum = lowest id


def decode(q: Blocks) -> tuple[torch.Tensor, torch.Tensor]:
    """SPEC 6 decode: per element sign (0/1) and magnitude h in half-units, int64 (..., K/B, B).

    The stored codes of a block flagged `invalid` decode like any other; the flag is q.invalid.
    """
    check_blocks(q)
    return _decode(q)


def _decode(q: Blocks) -> tuple[torch.Tensor, torch.Tensor]:
    codes = q.codes.to(torch.int64)
    idx = codes & _IDX_MASK
    h = FORMATBOOK.to(codes.device)[q.dialect.to(torch.int64).unsqueeze(-1), idx]
    return codes >> (CODE_BITS - 1), h


def dequantize(q: Blocks) -> torch.Tensor:
    """SPEC 3: (-1)^s * FORMATBOOK[d][idx] * 2^(E - 18), float32, shape (..., K).

    Every element of a block flagged `invalid` is NaN (SPEC 10).
    """
    check_blocks(q)
    return _dequantize(q)


def _dequantize(q: Blocks) -> torch.Tensor:
    if native_for(q.codes):                                          # golden.kernels: same bits
        return kernels.dequantize_native(q.exp, q.dialect, q.codes, q.invalid)
    sign, h = _decode(q)
    scale = pow2_f32(q.exp.to(torch.int64) - DECODE_EXP_OFFSET).unsqueeze(-1)
    magnitude = h.to(torch.float32) * scale
    values = torch.where(sign.bool(), -magnitude, magnitude)
    values = _nan_where_invalid(values, q.invalid.unsqueeze(-1))
    return values.reshape(values.shape[:-2] + (values.shape[-2] * values.shape[-1],))


def _nan_where_invalid(values: torch.Tensor, invalid: torch.Tensor) -> torch.Tensor:
    """SPEC 10: results that use a block flagged `invalid` are NaN (`invalid` broadcasts)."""
    return torch.where(invalid, torch.full((), math.nan, dtype=values.dtype, device=values.device), values)


def _signed_values(q: Blocks) -> torch.Tensor:
    sign, h = _decode(q)
    return torch.where(sign.bool(), -h, h)


def linear(q_act: Blocks, q_weight: Blocks, accumulate: str = DEFAULT_ACCUMULATE) -> torch.Tensor:
    """BlockDialect matrix product, like torch.nn.functional.linear (SPEC 6, 6.1).

    (..., K) x (N, K) -> (..., N). Each block sum is an exact integer. accumulate="exact" (default):
    a row's block values are added exactly in units of 2^-36 and rounded once to FP32, ties to even;
    a zero sum is +0.0. "fp32" / "fp16": added in block order with one FP32 / FP16 rounding per step
    (golden.accumulate). Every output is +0.0 when K = 0. An output that uses a block flagged
    `invalid` (in either operand) is NaN.
    """
    block = _check_linear_args(q_act, q_weight)
    accumulate = check_accumulate(accumulate)
    nblocks = q_act.codes.shape[-2]
    lead = q_act.codes.shape[:-2]
    columns = q_weight.codes.shape[0]
    if nblocks == 0:                                          # K = 0: empty sums are +0.0 (SPEC 10)
        return torch.zeros(lead + (columns,), dtype=torch.float32, device=q_act.codes.device)
    invalid = q_act.invalid.any(-1).unsqueeze(-1) | q_weight.invalid.any(-1)
    if accumulate != "exact":                                        # SPEC 6.1: rounded in block order
        out = accumulation.linear(_dequantize(q_act).reshape(-1, nblocks * block), _dequantize(q_weight),
                                  block, accumulate)
        return _nan_where_invalid(out.reshape(lead + (columns,)), invalid)
    if path() == "native":                                           # golden.exact: same bits
        a = [t.reshape((-1,) + t.shape[len(lead):]) for t in (q_act.exp, q_act.dialect, q_act.codes)]
        out = linear_exact(*a, q_weight.exp, q_weight.dialect, q_weight.codes, native=native_for(q_act.codes))
        return _nan_where_invalid(out.reshape(lead + (columns,)), invalid)

    a_values = _signed_values(q_act).reshape(-1, nblocks, block)
    a_exp = q_act.exp.to(torch.int64).reshape(-1, nblocks)
    w_values = _signed_values(q_weight).to(torch.float64).permute(1, 2, 0)   # (nb, B, N)
    w_exp = q_weight.exp.to(torch.int64).t()                                 # (nb, N)
    rows, columns = a_values.shape[0], w_values.shape[-1]

    out = torch.empty(rows, columns, dtype=torch.float32, device=a_values.device)
    chunk = max(1, (1 << 22) // max(1, columns * nblocks))   # bounds the (nb, rows, N) temporaries
    for start in range(0, rows, chunk):
        a = a_values[start:start + chunk].to(torch.float64).transpose(0, 1)   # (nb, r, B)
        # Block sums are at most 225 * 64 in magnitude: exact in float64, then exact as int64.
        sums = torch.bmm(a, w_values).round().to(torch.int64)                 # (nb, r, N)
        exponent = a_exp[start:start + chunk].t().unsqueeze(-1) + w_exp.unsqueeze(1)
        in_high = exponent >= LIMB
        terms = sums << torch.where(in_high, exponent - LIMB, exponent)
        low = torch.where(in_high, 0, terms).sum(0)
        high = torch.where(in_high, terms, 0).sum(0)
        out[start:start + chunk] = exact_sum_to_f32(low, high, -PRODUCT_EXP_OFFSET)
    out = out.reshape(lead + (columns,))
    return _nan_where_invalid(out, invalid)


def _check_linear_args(q_act, q_weight) -> int:
    """Both operands valid Blocks of one block size, one device and one K; the weight is (N, K)."""
    block = check_blocks(q_act, "q_act")
    if check_blocks(q_weight, "q_weight") != block:
        raise ValueError(f"q_weight has block size {q_weight.codes.shape[-1]} but q_act has {block}")
    if q_weight.codes.dim() != 3:
        raise ValueError(f"q_weight must be quantized from an (N, K) matrix, got codes of shape "
                         f"{tuple(q_weight.codes.shape)}")
    nblocks = q_act.codes.shape[-2]
    if q_weight.codes.shape[-2] != nblocks:
        raise ValueError(f"q_weight has {q_weight.codes.shape[-2]} blocks per row but q_act has {nblocks} "
                         "(the K dimensions differ)")
    if q_weight.codes.device != q_act.codes.device:
        raise ValueError(f"q_weight is on {q_weight.codes.device} but q_act on {q_act.codes.device}")
    return block


def pack(q: Blocks) -> torch.Tensor:
    """SPEC 7 storage: per block the word E << 4 | dialect (little-endian), then two codes per byte,
    element 2i in the low nibble of byte i. Returns uint8 (..., K/B * (2 + B/2)).

    The invalid flag has no place in storage, so flagged blocks are refused rather than dropped.
    """
    check_blocks(q)
    if bool(q.invalid.any()):
        raise ValueError(f"q has {int(q.invalid.sum())} invalid (Inf/NaN) blocks; "
                         "the packed format cannot carry the invalid flag")
    word = (q.exp.to(torch.int64) << 4) | q.dialect.to(torch.int64)
    header = torch.stack([word & 0xFF, word >> 8], -1)
    codes = q.codes.to(torch.int64)
    body = codes[..., 0::2] | (codes[..., 1::2] << 4)
    raw = torch.cat([header, body], -1).to(torch.uint8)
    return raw.reshape(raw.shape[:-2] + (raw.shape[-2] * raw.shape[-1],))


def unpack(raw, block: int = 32) -> Blocks:
    """Inverse of `pack` (SPEC 7). `raw` is a uint8 tensor or numpy array shaped
    (..., K/B * (2 + B/2)), or bytes (then 1-D). Refuses set upper header bits, E = 31 and a zero
    block (E = 0) whose dialect or any index is not 0: what SPEC 3 never produces."""
    block = check_block_size(block)
    raw = _raw_tensor(raw)
    stride = HEADER_BYTES + block // 2
    if raw.shape[-1] % stride:
        raise ValueError(f"raw: last dimension {raw.shape[-1]} is not a multiple of {stride} bytes "
                         f"(one block of {block})")
    blocks = raw.to(torch.int64).reshape(raw.shape[:-1] + (raw.shape[-1] // stride, stride))
    word = blocks[..., 0] | (blocks[..., 1] << 8)
    if bool((word >> (EXP_BITS + DIALECT_BITS)).any()):
        index = _first_index((word >> (EXP_BITS + DIALECT_BITS)) != 0)
        raise ValueError(f"raw holds a block header with its upper 7 bits set at block {index} (not SPEC 7 "
                         "data, or the wrong block size)")
    body = blocks[..., HEADER_BYTES:]
    codes = torch.stack([body & 0xF, body >> 4], -1).reshape(body.shape[:-1] + (block,))
    q = Blocks((word >> DIALECT_BITS).to(torch.uint8), (word & ((1 << DIALECT_BITS) - 1)).to(torch.uint8),
               codes.to(torch.uint8), torch.zeros(word.shape, dtype=torch.bool, device=word.device))
    _check_block_values(q, {"exp": "raw (a block header's exponent E)", "dialect": "raw (a block header's dialect)",
                            "codes": "raw (a block's element codes)"})
    return q


def _raw_tensor(raw) -> torch.Tensor:
    """`unpack`'s input as a uint8 tensor with at least one dimension (bytes become 1-D)."""
    if isinstance(raw, (bytes, bytearray, memoryview)):
        data = bytearray(raw)
        return torch.frombuffer(data, dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)
    if isinstance(raw, np.ndarray):
        if raw.dtype != np.uint8:
            raise ValueError(f"raw must hold bytes (uint8), got numpy dtype {raw.dtype}")
        raw = torch.from_numpy(np.ascontiguousarray(raw))
    if not isinstance(raw, torch.Tensor):
        raise ValueError(f"raw must be bytes or a uint8 tensor or numpy array, got {type(raw).__name__}")
    if raw.dtype != torch.uint8:
        raise ValueError(f"raw must hold bytes (uint8), got {raw.dtype}")
    if raw.dim() == 0:
        raise ValueError("raw must have at least one dimension")
    return raw


def pack_rows(q_weight: Blocks, lanes: int) -> torch.Tensor:
    """The weight stream of the ``bd_linear`` engine (SPEC 11): ``q_weight`` (R rows of K/B blocks)
    as uint8 ``(ceil(R / lanes), K / B, lanes * (2 + B/2))``.

    Entry ``[g, j]`` is one ``s_axis_w`` beat: block ``j`` of rows ``g * lanes ... g * lanes + lanes - 1``,
    each packed as by :func:`pack` (SPEC 7), lane ``n`` first at byte ``n * (2 + B/2)``. Rows beyond R
    in the last group are zero blocks (header word 0, codes 0), which add +0.0. ``lanes`` is one of
    SPEC 11's lane counts (1, 2, 4, 8). Like :func:`pack`, refuses blocks flagged invalid.
    """
    from .spec import LINEAR_LANES   # SPEC 11

    block = check_blocks(q_weight, "q_weight")
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
    raw = pack(q_weight).reshape(groups, lanes, nblocks, stride)
    return raw.permute(0, 2, 1, 3).reshape(groups, nblocks, lanes * stride).contiguous()
