"""Input conversion shared by golden.bd and golden.baselines, and the FP16 field split of SPEC 1.

The input rule (SPEC 10: `bd` and the baselines accept the same input types and report the same
errors), applied by :func:`as_real_tensor`:

- `x` is a torch tensor or a numpy array with at least one dimension (the last one is reduced).
- Floating-point dtypes are taken as they are. Integer dtypes (signed or unsigned, any width) are
  real numbers too and are converted with the same single rounding.
- bool and complex dtypes are refused: a mask is not a magnitude, and a complex number has none.
- Python lists, tuples and scalars are refused: they carry no dtype, and the converter would have to
  choose one (torch's default float32 would round a Python float twice on its way to FP16, against
  SPEC 1). Convert them first, e.g. `torch.tensor(values, dtype=torch.float64)`.
- A torch tensor keeps its device; a numpy array becomes a CPU tensor.

Each format then converts to its own input type with one round-to-nearest-even: FP16 for
BlockDialect (SPEC 1), FP32 for the baselines. A value that overflows that type during the
conversion is non-finite input, like Inf and NaN (SPEC 1); :func:`nonfinite_message` words the error
the same way for both.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from . import kernels
from .native import native_for
from .spec import EXP_FIELD_NONFINITE, FP16_EXP_BITS, FP16_MAN_BITS, SIGNIFICAND_HIDDEN


class Fields(NamedTuple):
    """Per-element FP16 fields after SPEC 1's rules, all int32 except `nonfinite`.

    `exp` is the exponent field counted for the shared exponent: 0 for zeros, flushed subnormals and
    non-finite elements. `sig` is the 11-bit significand M of a normal element and 0 otherwise, so
    every magnitude rule downstream sees those elements as zero. `sign` is kept for all elements.
    """

    sign: torch.Tensor
    exp: torch.Tensor
    sig: torch.Tensor
    nonfinite: torch.Tensor


def as_real_tensor(x, name: str = "x") -> torch.Tensor:
    """The one input rule of the golden model and the baselines (see the module docstring).

    Returns a detached torch tensor of a floating-point or integer dtype, on x's device (CPU for
    numpy input); raises ValueError naming `name` otherwise.
    """
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "iuf":
            raise ValueError(f"{name} must hold real numbers (a floating-point or integer dtype), "
                             f"got numpy dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        hint = (" (convert it first, e.g. torch.tensor(x, dtype=torch.float64))"
                if isinstance(x, (list, tuple, int, float)) else "")
        raise ValueError(f"{name} must be a torch tensor or a numpy array, got {type(x).__name__}{hint}")
    if x.is_complex() or x.dtype == torch.bool:
        raise ValueError(f"{name} must hold real numbers (a floating-point or integer dtype), got {x.dtype}")
    if x.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension (the reduction dimension)")
    return x.detach()


def nonfinite_message(mask: torch.Tensor, name: str, target: str) -> str:
    """The error for non-finite input after conversion to `target` ("FP16", "FP32"), naming the
    first offending index of `mask`."""
    index = tuple(int(i) for i in torch.nonzero(mask)[0])
    return (f"{name} holds a non-finite {target} value at index {index} (Inf, NaN, or a value beyond "
            f"the {target} range, which the conversion turns into Inf; SPEC 1)")


def to_fp16(x, name: str = "x") -> torch.Tensor:
    """Converts `x` (see :func:`as_real_tensor`) to FP16 with one round-to-nearest-even (SPEC 1).

    Values beyond the FP16 range become Inf here, which SPEC 1 treats as non-finite input. The
    result stays on x's device.
    """
    x = as_real_tensor(x, name)
    if x.dtype == torch.float64:
        return kernels.float64_to_fp16_native(x) if native_for(x) else float64_to_fp16_reference(x)
    # Every other dtype reaches FP16 with one rounding: float32 and narrower floats directly, and
    # an integer is exact in float32 up to 2^24, far beyond the FP16 range.
    return x.to(torch.float16)


def float64_to_fp16_reference(x: torch.Tensor) -> torch.Tensor:
    """float64 -> FP16 with one round-to-nearest-even, in torch operations on x's device (the path
    off the CPU; on the CPU golden.kernels does the same in C).

    torch narrows float64 through float32, which can round twice (a value just below an FP16 tie
    lands on the tie). Rounding to float32 *to odd* instead (truncate, then set the last bit when
    inexact) keeps the sticky information: float32 has 13 more significand bits than FP16, so the
    second rounding then gives the correctly rounded FP16 value, subnormals and overflow included.
    """
    nearest = x.to(torch.float32)
    widened = nearest.to(torch.float64)
    inexact = (widened != x) & ~torch.isnan(x)
    # The float32 neighbour toward zero (an overflow to Inf comes back to the largest float32).
    truncated = torch.where(widened.abs() > x.abs(), torch.nextafter(nearest, torch.zeros_like(nearest)), nearest)
    odd = (truncated.view(torch.int32) | 1).view(torch.float32)
    return torch.where(inexact, odd, nearest).to(torch.float16)


def to_fp32(x, name: str = "x") -> torch.Tensor:
    """Converts `x` (see :func:`as_real_tensor`) to FP32 with one round-to-nearest-even; the
    baselines' input type. Values beyond the FP32 range become Inf (non-finite input)."""
    return as_real_tensor(x, name).to(torch.float32)


def split(x16: torch.Tensor) -> Fields:
    """Splits FP16 values into sign, effective exponent field and significand (SPEC 1)."""
    # int32 is wide enough for every per-element quantity downstream and twice as fast as int64.
    bits = x16.contiguous().view(torch.int16).to(torch.int32) & 0xFFFF
    sign = bits >> 15
    ex = (bits >> FP16_MAN_BITS) & ((1 << FP16_EXP_BITS) - 1)
    man = bits & ((1 << FP16_MAN_BITS) - 1)
    nonfinite = ex == EXP_FIELD_NONFINITE
    normal = (ex > 0) & ~nonfinite
    exp = torch.where(normal, ex, torch.zeros_like(ex))
    sig = torch.where(normal, man + SIGNIFICAND_HIDDEN, torch.zeros_like(man))
    return Fields(sign, exp, sig, nonfinite)
