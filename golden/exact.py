"""SPEC 6's exact linear product, once: the two-limb exact sum and its one rounding to FP32, and
the float64 window plan that computes the same sum with matrix products on every device.

golden.bd.linear's reference loop adds block values as two int64 limbs and rounds with
:func:`exact_sum_to_f32`; :func:`linear_exact`, its fast path, gets the same bits from float64
GEMMs. Block values ``S * 2^(E_a + E_w - 36)`` are summed exactly by float64 matrix products. A row's
blocks are cut into exponent windows counted down from the row's largest block exponent ``top``;
inside window ``[lo, lo + n)`` an element is decoded to ``h * 2^(lo + n - 1 - (top - E))``, an
integer, so that every partial sum of one product of windows is an integer below 2^53 and BLAS (any
order, FMA or not) returns it exactly. One product is rounded to FP32 by its float32 conversion (the
one rounding); several are added as two-limb integers and rounded once by :func:`exact_sum_to_f32`.
The window widths come from the exponent spread the operands actually have (on the CPU, where reading
it costs nothing) or from the worst case, which needs four products (``sync_free``, the default off
the CPU, so no value travels back to the host). Captured SmolLM2 layers spread 5 to 8 exponent steps
in activation rows and 2 to 5 in weight rows against a budget of 34 to 36: one float64 GEMM.

A float64 GEMM is the fastest exact sum available on every device: it runs at 0.7x the rate of the
float32 one here, and the rest (decode, one rounding) is a few passes over the operands. On the CPU
the decode is a C function (golden.kernels.decode_window_native), elsewhere the same decode in torch
(the tests run that one on the CPU too).
"""
from __future__ import annotations

import torch

from . import kernels
from .native import native_for
from .formatbook import FORMATBOOK
from .spec import MAX_PRODUCT, PRODUCT_EXP_OFFSET

__all__ = ["linear_exact", "exact_sum_to_f32", "add_shifted", "pow2_f32", "LIMB"]


def pow2_f32(exponent: torch.Tensor) -> torch.Tensor:
    """Exact 2^exponent in FP32 for normal exponents, built from the bit pattern."""
    return ((exponent + 127) << 23).to(torch.int32).view(torch.float32)


LIMB = 32
LIMB_MASK = (1 << LIMB) - 1
_SMALL_HI = 1 << 29          # below this the two-limb magnitude fits in 61 bits
_BIG_SHIFT = 20              # larger magnitudes drop 20 bits into a sticky bit before rounding
_FP32_SIG_BITS = 24


def exact_sum_to_f32(low: torch.Tensor, high: torch.Tensor, unit_exp: int) -> torch.Tensor:
    """Rounds the exact integer (high * 2^32 + low) * 2^unit_exp to FP32, ties to even (SPEC 6).

    `low` and `high` are int64 partial sums; the value can exceed int64, so the magnitude is kept
    as two limbs, squeezed into 61 bits with a sticky bit where needed, then rounded once.
    """
    high = high + (low >> LIMB)                      # carry so that 0 <= low < 2^32
    low = low & LIMB_MASK
    negative = high < 0
    borrow = negative & (low != 0)
    mag_hi = torch.where(negative, -high - borrow.to(torch.int64), high)
    mag_lo = torch.where(borrow, (1 << LIMB) - low, low)

    big = mag_hi >= _SMALL_HI
    drop = torch.where(big, _BIG_SHIFT, 0)
    sticky = (mag_lo & ((1 << drop) - 1)) != 0
    magnitude = (mag_hi << (LIMB - drop)) | (mag_lo >> drop) | sticky.to(torch.int64)

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

    value = kept.to(torch.float32) * pow2_f32(exponent)
    return torch.where(negative, -value, value)


_F64_BITS = 53
_CHUNK_ELEMENTS = (1 << 25) // MAX_PRODUCT     # 225 K < 2^25: budget 53 - 25 = 28


def _budget(nblocks: int, block: int) -> int:
    """Exponent steps (of the two operands together) one GEMM can span exactly: every partial sum
    of h_a * h_w * 2^(steps) over K = nblocks * block terms stays below 2^53."""
    return _F64_BITS - (MAX_PRODUCT * nblocks * block).bit_length()


def _windows(spread_a: int, spread_w: int, budget: int) -> tuple[int, int]:
    """Window widths (w_a, w_w) with (w_a - 1) + (w_w - 1) <= budget that need the fewest GEMMs to
    cover block-exponent offsets 0..spread on each side."""
    best = None
    for w_a in range(1, budget + 2):
        w_w = budget + 2 - w_a
        count = (spread_a // w_a + 1) * (spread_w // w_w + 1)
        if best is None or count < best[0]:
            best = (count, w_a, w_w)
    return best[1], best[2]


def _decode_window(exp, dialect, codes, top, lo: int, width: int, book: torch.Tensor,
                   native: bool) -> torch.Tensor:
    """(rows, nb, B) float64: (-1)^s h 2^(lo + width - 1 - (top - E)) inside the window, else 0."""
    if native:
        return kernels.decode_window_native(exp, dialect, codes, top, lo, width)
    down = top.unsqueeze(-1) - exp.to(torch.int64)                          # (rows, nb)
    inside = (down >= lo) & (down < lo + width)
    ones = torch.ones(down.shape, dtype=torch.float64, device=exp.device)
    scale = torch.where(inside, torch.ldexp(ones, (lo + width - 1 - down).clamp(min=0)), 0.0)
    c = codes.to(torch.int64)
    h = book[dialect.to(torch.int64).unsqueeze(-1), c & 7].to(torch.float64)
    signed = torch.where(c >= 8, -h, h)
    return signed * scale.unsqueeze(-1)


_books: dict[torch.device, torch.Tensor] = {}


def _book(device: torch.device) -> torch.Tensor:
    """The formatbook (SPEC 2) as an int64 tensor on `device`, copied there once."""
    if device not in _books:
        _books[device] = FORMATBOOK.to(device)
    return _books[device]


def linear_exact(a_exp, a_dialect, a_codes, w_exp, w_dialect, w_codes, *,
                 sync_free: bool | None = None, native: bool | None = None) -> torch.Tensor:
    """SPEC 6 exact product of activations (rows, nb, B) and weights (N, nb, B), float32 (rows, N).

    sync_free: plan the exponent windows for the worst case instead of reading the operands'
    exponent spread back to the host (default: on non-CPU devices). native: decode with the C
    function (default: when golden.native.native_for(a_codes) holds); False runs the torch decode every
    other device runs.
    """
    device = a_codes.device
    rows, nblocks, block = a_codes.shape
    columns = w_codes.shape[0]
    if sync_free is None:
        sync_free = device.type != "cpu"
    if native is None:
        native = native_for(a_codes)
    book = _book(device)
    a_top = a_exp.to(torch.int64).amax(-1)
    w_top = w_exp.to(torch.int64).amax(-1)
    # K is cut into chunks of at most _CHUNK_ELEMENTS, which leave a budget of 28 exponent steps.
    chunk = max(1, _CHUNK_ELEMENTS // block)
    terms = []
    for start in range(0, nblocks, chunk):
        parts = [t[:, start:start + chunk].contiguous()
                 for t in (a_exp, a_dialect, a_codes, w_exp, w_dialect, w_codes)]
        terms += _window_products(parts, a_top, w_top, book, sync_free, native)
    # Every term counts in units of 2^(a_top + w_top - 36 - 2 _SPAN), times 2^shift.
    unit = a_top.unsqueeze(-1) + w_top.unsqueeze(0) - 2 * _SPAN - PRODUCT_EXP_OFFSET
    if len(terms) == 1:
        # One exact float64 product: its conversion to float32 is the one rounding (ties to even),
        # and the power of two that follows is exact (the exponent stays within -67..24). Adding +0.0
        # turns a -0.0 from the GEMM into the +0.0 SPEC 6 asks for.
        product, shift = terms[0]
        return (product + 0.0).to(torch.float32) * pow2_f32(unit + shift)
    low = torch.zeros(rows, columns, dtype=torch.int64, device=device)
    high = torch.zeros_like(low)
    for product, shift in terms:
        add_shifted(low, high, product.to(torch.int64), shift)
    return exact_sum_to_f32(low, high, unit)


# Offsets top - E range over 0..29 for nonzero blocks (E in 1..30); zero blocks decode to 0 anywhere.
_SPAN = 30


def _window_products(parts, a_top, w_top, book, sync_free: bool, native: bool) -> list:
    """The exact float64 products of one K chunk, one per pair of exponent windows, each with the
    power of two (over the unit of linear_exact) it carries."""
    a_exp, a_dialect, a_codes, w_exp, w_dialect, w_codes = parts
    nblocks, block = a_codes.shape[1], a_codes.shape[2]
    budget = _budget(nblocks, block)
    if sync_free:
        spread_a = spread_w = _SPAN - 1
    else:
        spread_a = int(_spread(a_exp, a_top))
        spread_w = int(_spread(w_exp, w_top))
    width_a, width_w = _windows(spread_a, spread_w, budget)
    a_windows = [(lo, min(width_a, _SPAN - lo)) for lo in range(0, spread_a + 1, width_a)]
    w_windows = [(lo, min(width_w, _SPAN - lo)) for lo in range(0, spread_w + 1, width_w)]
    a_dec = [_decode_window(a_exp, a_dialect, a_codes, a_top, lo, n, book, native).flatten(1)
             for lo, n in a_windows]
    w_dec = [_decode_window(w_exp, w_dialect, w_codes, w_top, lo, n, book, native).flatten(1).t()
             for lo, n in w_windows]
    terms = []
    for (lo_a, n_a), a in zip(a_windows, a_dec):
        for (lo_w, n_w), w in zip(w_windows, w_dec):
            # An element of block exponent E = top - down is stored as h 2^(lo + n - 1 - down), that is
            # h 2^E times 2^(lo + n - 1 - top): in units of 2^(top - _SPAN) it weighs
            # 2^(_SPAN - (lo + n - 1)) more than stored. The product is an integer below 2^53.
            shift = 2 * _SPAN - (lo_a + n_a - 1) - (lo_w + n_w - 1)
            terms.append((a @ w, shift))
    return terms


def _spread(exp: torch.Tensor, top: torch.Tensor) -> torch.Tensor:
    """Largest top - E over the nonzero blocks (0 when there are none)."""
    e = exp.to(torch.int64)
    down = torch.where(e > 0, top.unsqueeze(-1) - e, 0)
    return down.amax() if down.numel() else torch.zeros((), dtype=torch.int64)


def add_shifted(low: torch.Tensor, high: torch.Tensor, value: torch.Tensor, shift: int) -> None:
    """(high * 2^32 + low) += value * 2^shift exactly, keeping every partial sum inside int64."""
    if shift >= LIMB:
        high += value << (shift - LIMB)
        return
    vh, vl = value >> LIMB, value & LIMB_MASK      # value = vh * 2^32 + vl, 0 <= vl < 2^32
    moved = vl << shift                                 # < 2^63
    low += moved & LIMB_MASK
    high += (vh << shift) + (moved >> LIMB)
