"""FP16 field split with the flush-to-zero and non-finite rules of SPEC 1."""
from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

EXP_FIELD_MAX = 31      # SPEC 1: ex == 31 is Inf or NaN
SIGNIFICAND_HIDDEN = 1024  # SPEC 1: M = 1024 + man for a normal element


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


def to_fp16(x, name: str = "x") -> torch.Tensor:
    """Converts a torch tensor or numpy array to FP16 with one round-to-nearest-even (SPEC 1).

    Values beyond the FP16 range become Inf here, which SPEC 1 treats as non-finite input.
    """
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise ValueError(f"{name} must hold real numbers, got numpy dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    elif not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch tensor or a numpy array, got {type(x).__name__}")
    if x.is_complex():
        raise ValueError(f"{name} must hold real numbers, got {x.dtype}")
    if x.dim() == 0:
        raise ValueError(f"{name} must have at least one dimension (the reduction dimension)")
    x = x.detach()
    if x.dtype == torch.float64:
        # torch narrows float64 through float32, which can round twice; numpy rounds once (SPEC 1).
        with np.errstate(over="ignore"):
            return torch.from_numpy(x.cpu().numpy().astype(np.float16)).to(x.device)
    return x.to(torch.float16)


def split(x16: torch.Tensor) -> Fields:
    """Splits FP16 values into sign, effective exponent field and significand (SPEC 1)."""
    # int32 is wide enough for every per-element quantity downstream and twice as fast as int64.
    bits = x16.contiguous().view(torch.int16).to(torch.int32) & 0xFFFF
    sign = bits >> 15
    ex = (bits >> 10) & 0x1F
    man = bits & 0x3FF
    nonfinite = ex == EXP_FIELD_MAX
    normal = (ex > 0) & ~nonfinite
    exp = torch.where(normal, ex, torch.zeros_like(ex))
    sig = torch.where(normal, man + SIGNIFICAND_HIDDEN, torch.zeros_like(man))
    return Fields(sign, exp, sig, nonfinite)
