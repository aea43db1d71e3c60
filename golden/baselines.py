"""Baseline 4-bit formats the reports compare BlockDialect with (SPEC 8).

Every function is a fake-quantizer: it takes a float tensor, quantizes it along the last dimension
and returns the dequantized values as float32, so the formats can be compared element by element.
Element rounding is computed on exact quotients (float64 holds every quotient these formats need
to round without error), so the results do not depend on the order of floating-point operations.
"""
from __future__ import annotations

import torch

from golden import formatbook

FORMATS = ("fp16", "bd_two_stage", "bd_two_stage_trunc", "bd_mse", "mxfp4", "nvfp4", "int4")
# The BlockDialect formats and their golden.bd.quantize method: "bd_two_stage" is the default
# two-stage selector (SPEC 4.2, rounding stage 1), "bd_two_stage_trunc" the truncating variant.
BD_METHODS = {"bd_two_stage": "two_stage", "bd_two_stage_trunc": "two_stage_trunc", "bd_mse": "mse"}

# SPEC 8: E2M1 element magnitudes {0, 0.5, 1, 1.5, 2, 3, 4, 6}.
E2M1_VALUES = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
E2M1_MAX = 6.0
# OCP MX v1.0: the scale is 2^(floor(log2 amax) - emax_elem) with emax_elem = 2 for E2M1.
E2M1_EMAX = 2
# OCP MX v1.0: E8M0 encodes 2^-127 .. 2^127 (255 is NaN).
E8M0_MIN_EXP = -127
E8M0_MAX_EXP = 127
MXFP4_BLOCK_SIZES = (16, 32)
E8M0_BITS = 8
MXFP4_PAPER_EXP_BITS = 5   # SPEC 8: the paper counts a 5-bit shared exponent
# SPEC 8: NVFP4 blocks of 16, E4M3 block scale, FP32 per-tensor scale amax / (448 * 6).
NVFP4_BLOCK = 16
E4M3_MAX = 448.0
E4M3_BITS = 8
# SPEC 8: INT4 symmetric, levels -7..7, FP16 scale.
INT4_LEVELS = 7
INT4_BLOCK_SIZES = (16, 32, 64)
FP16_BITS = 16
FP16_MAX = 65504.0
FP16_MIN_SUBNORMAL = 2.0 ** -24
FP32_BITS = 32


def _as_float32(x, name: str = "x") -> torch.Tensor:
    """Converts a tensor or array to float32 and rejects what no format can encode."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, RuntimeError) as err:
            raise ValueError(f"{name}: cannot convert {type(x).__name__} to a tensor") from err
    if not (x.is_floating_point() or x.dtype in (torch.int8, torch.int16, torch.int32, torch.int64)):
        raise ValueError(f"{name}: expected a real tensor, got dtype {x.dtype}")
    if x.dim() == 0:
        raise ValueError(f"{name}: expected at least one dimension, got a scalar")
    x = x.detach().to(torch.float32)
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(f"{name}: non-finite value at index {first}")
    return x


def _blocks(x: torch.Tensor, block: int, name: str = "x") -> torch.Tensor:
    """(..., K) -> (..., K/B, B); the last dimension must be a multiple of the block."""
    if x.shape[-1] % block != 0:
        raise ValueError(f"{name}: last dimension {x.shape[-1]} is not a multiple of block={block}")
    return x.reshape(*x.shape[:-1], x.shape[-1] // block, block)


def _check_block(block, allowed: tuple[int, ...], fmt: str) -> int:
    if isinstance(block, bool) or not isinstance(block, int) or block not in allowed:
        raise ValueError(f"block: {fmt} supports block sizes {allowed}, got {block!r}")
    return block


def _round_e2m1(scaled: torch.Tensor) -> torch.Tensor:
    """Nearest E2M1 value, ties to even (even = last mantissa bit 0), clamped at +-6.

    `scaled` is float64 and holds the exact quotient, so equality with a midpoint is exact.
    """
    values = torch.tensor(E2M1_VALUES, dtype=torch.float64)
    mids = (values[:-1] + values[1:]) / 2
    # Midpoint i lies between codes i and i + 1; a tie goes up when code i + 1 is even.
    tie_goes_up = torch.arange(1, len(E2M1_VALUES)) % 2 == 0
    mag = scaled.abs().unsqueeze(-1)
    index = ((mag > mids) | ((mag == mids) & tie_goes_up)).sum(-1)
    return torch.copysign(values[index], scaled)


def _float32_exponent(x: torch.Tensor) -> torch.Tensor:
    """floor(log2 |x|) read from the float32 exponent field (exact; -127 for zero and subnormals)."""
    bits = x.to(torch.float32).view(torch.int32)
    return ((bits >> 23) & 0xFF) - 127


def mxfp4(x, block: int = 32) -> torch.Tensor:
    """OCP MX v1.0 MXFP4 (SPEC 8): E8M0 scale 2^(floor(log2 amax) - 2), E2M1 elements RNE."""
    _check_block(block, MXFP4_BLOCK_SIZES, "mxfp4")
    x = _as_float32(x)
    blocks = _blocks(x, block)
    amax = blocks.abs().amax(-1, keepdim=True)
    scale_exp = (_float32_exponent(amax) - E2M1_EMAX).clamp(E8M0_MIN_EXP, E8M0_MAX_EXP)
    scaled = torch.ldexp(blocks.to(torch.float64), -scale_exp.to(torch.float64))
    elements = _round_e2m1(scaled)
    return torch.ldexp(elements, scale_exp.to(torch.float64)).to(torch.float32).reshape(x.shape)


def nvfp4(x) -> torch.Tensor:
    """NVFP4 (SPEC 8): FP32 tensor scale amax / (448 * 6), E4M3 block scales, E2M1 elements RNE.

    The block scale is float32(amax_b / 6) / tensor_scale rounded to E4M3 (ties to even,
    subnormals kept, saturating at 448); a block whose scale rounds to 0 decodes to 0. Elements
    are the nearest E2M1 value of x / (block_scale * tensor_scale), computed exactly.
    """
    x = _as_float32(x)
    blocks = _blocks(x, NVFP4_BLOCK)
    tensor_amax = x.abs().amax()
    if float(tensor_amax) == 0.0:
        return torch.zeros_like(x)
    tensor_scale = tensor_amax / (E4M3_MAX * E2M1_MAX)  # float32, as SPEC 8 says
    block_amax = blocks.abs().amax(-1, keepdim=True)
    block_scale = ((block_amax / E2M1_MAX) / tensor_scale).clamp(max=E4M3_MAX)
    block_scale = block_scale.to(torch.float8_e4m3fn).to(torch.float64)
    # E4M3 (4 significant bits) times FP32 (24 bits) is exact in float64.
    full_scale = block_scale * tensor_scale.to(torch.float64)
    safe_scale = torch.where(full_scale > 0, full_scale, torch.ones_like(full_scale))
    elements = _round_e2m1(blocks.to(torch.float64) / safe_scale)
    elements = torch.where(full_scale > 0, elements, torch.zeros_like(elements))
    return (elements * full_scale).to(torch.float32).reshape(x.shape)


def int4(x, block: int = 32) -> torch.Tensor:
    """Symmetric INT4 (SPEC 8): FP16 scale amax / 7, levels round to nearest even, clamp [-7, 7].

    The FP16 scale saturates at 65504 and a non-zero block keeps at least the smallest FP16
    subnormal, so every non-zero block has a usable scale.
    """
    _check_block(block, INT4_BLOCK_SIZES, "int4")
    x = _as_float32(x)
    blocks = _blocks(x, block)
    amax = blocks.abs().amax(-1, keepdim=True)
    scale = (amax / INT4_LEVELS).clamp(max=FP16_MAX).to(torch.float16).to(torch.float64)
    scale = torch.where(amax > 0, scale.clamp(min=FP16_MIN_SUBNORMAL), torch.ones_like(scale))
    # torch.round rounds half to even; the float64 quotient is exact enough to see every tie.
    levels = torch.round(blocks.to(torch.float64) / scale).clamp(-INT4_LEVELS, INT4_LEVELS)
    return (levels * scale).to(torch.float32).reshape(x.shape)


def fake_quantize(x, fmt: str, block: int | None = None) -> torch.Tensor:
    """Quantizes and dequantizes x in one of FORMATS; returns float32 of x's shape."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt: unknown format {fmt!r}; expected one of {FORMATS}")
    if fmt == "fp16":
        if block is not None:
            raise ValueError(f"block: fp16 has no blocks, got block={block!r}")
        x = _as_float32(x)
        out = x.to(torch.float16)
        if not bool(torch.isfinite(out).all()):
            raise ValueError("x: value overflows FP16")
        return out.to(torch.float32)
    if fmt in BD_METHODS:
        from golden import bd  # imported here so the baselines work while bd is unavailable

        block = 32 if block is None else _check_block(block, formatbook.BLOCK_SIZES, fmt)
        return bd.dequantize(bd.quantize(x, block=block, method=BD_METHODS[fmt]))
    if fmt == "mxfp4":
        return mxfp4(x, block=32 if block is None else block)
    if fmt == "nvfp4":
        if block is not None and block != NVFP4_BLOCK:
            raise ValueError(f"block: nvfp4 uses blocks of {NVFP4_BLOCK}, got {block!r}")
        return nvfp4(x)
    return int4(x, block=32 if block is None else block)


def bits_per_element(fmt: str, block: int | None = None, convention: str = "ocp") -> float:
    """Storage cost in bits per element (SPEC 3, SPEC 8).

    NVFP4 is 4 + 8/16 = 4.5; its one FP32 tensor scale is shared by the whole tensor and is
    not included. `convention` only affects MXFP4: "ocp" counts the 8-bit E8M0 scale,
    "paper" the 5-bit exponent the BlockDialect paper assumes.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt: unknown format {fmt!r}; expected one of {FORMATS}")
    if convention not in ("ocp", "paper"):
        raise ValueError(f"convention: expected 'ocp' or 'paper', got {convention!r}")
    if fmt == "fp16":
        if block is not None:
            raise ValueError(f"block: fp16 has no blocks, got block={block!r}")
        return float(FP16_BITS)
    element_bits = formatbook.CODE_BITS  # every block format here stores 4-bit elements
    if fmt in BD_METHODS:
        block = 32 if block is None else _check_block(block, formatbook.BLOCK_SIZES, fmt)
        return element_bits + (formatbook.DIALECT_BITS + formatbook.EXP_BITS) / block
    if fmt == "mxfp4":
        block = 32 if block is None else _check_block(block, MXFP4_BLOCK_SIZES, fmt)
        scale_bits = E8M0_BITS if convention == "ocp" else MXFP4_PAPER_EXP_BITS
        return element_bits + scale_bits / block
    if fmt == "nvfp4":
        if block is not None and block != NVFP4_BLOCK:
            raise ValueError(f"block: nvfp4 uses blocks of {NVFP4_BLOCK}, got {block!r}")
        return element_bits + E4M3_BITS / NVFP4_BLOCK
    block = 32 if block is None else _check_block(block, INT4_BLOCK_SIZES, fmt)
    return element_bits + FP16_BITS / block
