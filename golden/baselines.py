"""Baseline 4-bit formats the reports compare BlockDialect with (SPEC 8).

Every function is a fake-quantizer: it takes a float tensor, quantizes it along the last dimension
and returns the dequantized values as float32, so the formats can be compared element by element.
Element rounding is computed on exact quotients (float64 holds every quotient these formats need
to round without error), so the results do not depend on the order of floating-point operations.
"""
from __future__ import annotations

import torch

from golden import fp16, kernels, methods
from golden.native import native_for
from golden.spec import (CODE_BITS, DEFAULT_BLOCK, DIALECT_BITS, E2M1_EMAX, E2M1_MAX, E4M3_BITS, E4M3_MAX,
                         E8M0_BITS, E8M0_MAX_EXP, E8M0_MIN_EXP, EXP_BITS, FP16_BITS, FP16_MAX, INT4_LEVELS,
                         INT4_SCALE_MIN, MXFP4_BLOCK_SIZES, MXFP4_PAPER_EXP_BITS, NVFP4_BLOCK, check_block_size)

FORMATS = methods.FORMATS
# The BlockDialect formats and their golden.bd.quantize method (golden.methods).
BD_METHODS = {fmt: m.name for fmt, m in methods.BY_FORMAT.items()}
# Formats whose quantization of an element depends on the whole tensor (SPEC 8: NVFP4's FP32 tensor
# scale from the tensor's amax), not on its block alone.
TENSOR_SCALED_FORMATS = ("nvfp4",)


def _as_float32(x, name: str = "x") -> torch.Tensor:
    """The input rule shared with golden.bd (golden.fp16.as_real_tensor), converted to FP32, the
    baselines' input type, with one rounding. Inf, NaN and values beyond the FP32 range (a float64
    input such as 1e39 becomes Inf here) are non-finite input, refused as golden.bd refuses them."""
    x = fp16.to_fp32(x, name)
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        raise ValueError(fp16.nonfinite_message(bad, name, "FP32"))
    return x


def _blocks(x: torch.Tensor, block: int, name: str = "x") -> torch.Tensor:
    """(..., K) -> (..., K/B, B); the last dimension must be a multiple of the block."""
    if x.shape[-1] % block != 0:
        raise ValueError(f"{name}: last dimension {x.shape[-1]} is not a multiple of block={block}")
    return x.reshape(*x.shape[:-1], x.shape[-1] // block, block)


def _check_block(block, allowed: tuple[int, ...], fmt: str) -> int:
    """golden.spec.check_block_size, then the sizes this format defines (a subset of BLOCK_SIZES)."""
    block = check_block_size(block)
    if block not in allowed:
        raise ValueError(f"block: {fmt} supports block sizes {allowed}, got {block!r}")
    return block


def _round_e2m1(scaled: torch.Tensor) -> torch.Tensor:
    """Nearest E2M1 value, ties to even (even = last mantissa bit 0), clamped at +-6.

    `scaled` is float64 and holds the exact quotient, so every tie is seen. E2M1's values are evenly
    spaced within each range, 0.5 apart below 2, 1 apart in [2, 4) and 2 apart from 4 on, and in
    each range the even codes are the even multiples of the spacing: rounding half to even at that
    spacing is the nearest value with E2M1's ties. The spacings are powers of two, so it is exact.
    """
    mag = scaled.abs()
    step = torch.where(mag < 2, 0.5, torch.where(mag < 4, 1.0, 2.0)).to(mag.dtype)
    return torch.copysign((torch.round(mag / step) * step).clamp(max=E2M1_MAX), scaled)


def _float32_exponent(x: torch.Tensor) -> torch.Tensor:
    """floor(log2 |x|) read from the float32 exponent field (exact; -127 for zero and subnormals)."""
    bits = x.to(torch.float32).view(torch.int32)
    return ((bits >> 23) & 0xFF) - 127


def mxfp4(x, block: int = 32) -> torch.Tensor:
    """OCP MX v1.0 MXFP4 (SPEC 8): E8M0 scale 2^(floor(log2 amax) - 2), E2M1 elements RNE."""
    block = _check_block(block, MXFP4_BLOCK_SIZES, "mxfp4")
    x = _as_float32(x)
    blocks = _blocks(x, block)
    amax = blocks.abs().amax(-1, keepdim=True)
    scale_exp = (_float32_exponent(amax) - E2M1_EMAX).clamp(E8M0_MIN_EXP, E8M0_MAX_EXP)
    scaled = torch.ldexp(blocks.to(torch.float64), -scale_exp.to(torch.float64))
    elements = _round_e2m1(scaled)
    return torch.ldexp(elements, scale_exp.to(torch.float64)).to(torch.float32).reshape(x.shape)


def check_tensor_amax(tensor_amax, name: str = "tensor_amax") -> float | None:
    """None (NVFP4's tensor scale from the tensor's own amax) or a static amax: a positive finite
    number whose FP32 tensor scale amax / (448 * 6) does not underflow to zero."""
    if tensor_amax is None:
        return None
    if isinstance(tensor_amax, bool) or not isinstance(tensor_amax, (int, float)):
        raise ValueError(f"{name} must be None or a positive number, got {tensor_amax!r}")
    as_fp32 = torch.tensor(float(tensor_amax), dtype=torch.float32)
    value = float(as_fp32)
    if not (value > 0 and value != float("inf")) or float(as_fp32 / (E4M3_MAX * E2M1_MAX)) == 0.0:
        raise ValueError(f"{name} must be a positive finite FP32 number, got {tensor_amax!r}")
    return value


def nvfp4(x, tensor_amax: float | None = None) -> torch.Tensor:
    """NVFP4 (SPEC 8): FP32 tensor scale amax / (448 * 6), E4M3 block scales, E2M1 elements RNE.

    The block scale is float32(amax_b / 6) / tensor_scale rounded to E4M3 (ties to even,
    subnormals kept, saturating at 448); a block whose scale rounds to 0 decodes to 0. Elements
    are the nearest E2M1 value of x / (block_scale * tensor_scale), computed exactly.
    `tensor_amax`: None takes amax from x itself (the dynamic scale, which sees the whole tensor);
    a number is a static, calibrated amax (elements beyond it saturate at 448 * 6 * tensor_scale).
    """
    tensor_amax = check_tensor_amax(tensor_amax)
    x = _as_float32(x)
    blocks = _blocks(x, NVFP4_BLOCK)
    if x.numel() == 0:
        return x
    if tensor_amax is None:
        tensor_amax = x.abs().amax()
        if float(tensor_amax) == 0.0:
            return torch.zeros_like(x)
    else:
        tensor_amax = torch.tensor(tensor_amax, dtype=torch.float32)
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
    block = check_block_size(block)
    x = _as_float32(x)
    blocks = _blocks(x, block)
    amax = blocks.abs().amax(-1, keepdim=True)
    scale = (amax / INT4_LEVELS).clamp(max=FP16_MAX).to(torch.float16).to(torch.float64)
    scale = torch.where(amax > 0, scale.clamp(min=INT4_SCALE_MIN), torch.ones_like(scale))
    # torch.round rounds half to even; the float64 quotient is exact enough to see every tie.
    levels = torch.round(blocks.to(torch.float64) / scale).clamp(-INT4_LEVELS, INT4_LEVELS)
    return (levels * scale).to(torch.float32).reshape(x.shape)


def _fake_block(fmt: str, block: int | None) -> int | None:
    """The block size fake_quantize uses for `fmt` (None for fp16), validated."""
    if fmt == "fp16":
        if block is not None:
            raise ValueError(f"block: fp16 has no blocks, got block={block!r}")
        return None
    if fmt == "nvfp4":
        if block is not None:
            _check_block(block, (NVFP4_BLOCK,), fmt)
        return NVFP4_BLOCK
    block = DEFAULT_BLOCK if block is None else check_block_size(block)
    return _check_block(block, MXFP4_BLOCK_SIZES, fmt) if fmt == "mxfp4" else block


def _fake_native(x, fmt: str, block: int | None, dtype: torch.dtype,
                 tensor_amax: float | None = None) -> torch.Tensor | None:
    """golden.kernels' fused pass where it serves x (an FP16, float32 or float64 CPU tensor whose
    last dimension holds whole blocks); None where the reference must run."""
    if (not isinstance(x, torch.Tensor) or x.dtype not in kernels.FAKE_QUANTIZE_INPUTS or x.dim() == 0
            or x.numel() == 0 or x.shape[-1] % (block or 1) or not native_for(x)):
        return None
    return kernels.fake_quantize_native(x.detach(), fmt, block, dtype, tensor_amax)


def fake_quantize(x, fmt: str, block: int | None = None, dtype: torch.dtype = torch.float32,
                  tensor_amax: float | None = None) -> torch.Tensor:
    """Quantizes and dequantizes x in one of FORMATS; returns x's shape in `dtype`, float32 (the
    default) or float64: every value of these formats is an FP32 number, so both hold it exactly.
    `tensor_amax` (NVFP4 only): a static amax for the FP32 tensor scale, see `nvfp4`.

    On the CPU a fused C kernel (golden.kernels) computes FP16, float32 and float64 input in one
    pass; the functions above are the reference it equals bit for bit, and run everywhere else.
    """
    if fmt not in FORMATS:
        raise ValueError(f"fmt: unknown format {fmt!r}; expected one of {FORMATS}")
    if dtype not in kernels.FAKE_QUANTIZE_DTYPES:
        raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype!r}")
    block = _fake_block(fmt, block)
    if tensor_amax is not None and fmt != "nvfp4":
        raise ValueError(f"tensor_amax: only nvfp4 has a tensor scale, got fmt={fmt!r}")
    tensor_amax = check_tensor_amax(tensor_amax)
    fast = _fake_native(x, fmt, block, dtype, tensor_amax)
    if fast is not None:
        return fast
    if fmt == "fp16":
        x16 = fp16.to_fp16(x)                  # the same single rounding as golden.bd (SPEC 1)
        bad = ~torch.isfinite(x16)
        if bool(bad.any()):
            raise ValueError(fp16.nonfinite_message(bad, "x", "FP16"))
        out = x16.to(torch.float32)
    elif fmt in BD_METHODS:
        from golden import bd  # imported here so the baselines work while bd is unavailable

        out = bd.dequantize(bd.quantize(x, block=block, method=BD_METHODS[fmt]))
    elif fmt == "mxfp4":
        out = mxfp4(x, block=block)
    elif fmt == "nvfp4":
        out = nvfp4(x, tensor_amax)
    else:
        out = int4(x, block=block)
    return out.to(dtype)


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
    element_bits = CODE_BITS  # every block format here stores 4-bit elements
    if fmt in BD_METHODS:
        block = DEFAULT_BLOCK if block is None else check_block_size(block)
        return element_bits + (DIALECT_BITS + EXP_BITS) / block
    if fmt == "mxfp4":
        block = DEFAULT_BLOCK if block is None else _check_block(block, MXFP4_BLOCK_SIZES, fmt)
        scale_bits = E8M0_BITS if convention == "ocp" else MXFP4_PAPER_EXP_BITS
        return element_bits + scale_bits / block
    if fmt == "nvfp4":
        if block is not None:
            _check_block(block, (NVFP4_BLOCK,), fmt)
        return element_bits + E4M3_BITS / NVFP4_BLOCK
    block = DEFAULT_BLOCK if block is None else check_block_size(block)
    return element_bits + FP16_BITS / block
