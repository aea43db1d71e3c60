"""Shared pieces of the golden-model tests: hypothesis settings and an independent scalar reference.

The reference below is written from the text of SPEC.md with plain Python integers, one block and
one element at a time. It reads only the formatbook rows and does not share code with golden/bd.py,
so the tests compare two independent readings of the specification. It is exposed to the tests
through the `spec` fixture.
"""
from __future__ import annotations

import math
import struct
import sys
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:       # lets a bare `pytest` find the golden package too
    sys.path.insert(0, str(ROOT))

from golden import models  # noqa: E402  (after the path fix above)
from golden.formatbook import FORMATBOOK_ROWS  # noqa: E402


def real_captures() -> dict:
    """Three captured SmolLM2 layers (first, middle, last by name): name -> (activation, weight);
    skips the test when `make report` has not captured any."""
    files = sorted(models.CACHE_DIR.glob("*.pt"))
    if not files:
        pytest.skip("no captured SmolLM2 layer inputs under .cache/ (make report creates them)")
    stored = torch.load(files[0], weights_only=True, mmap=True)
    names = sorted(stored)
    return {name: stored[name] for name in (names[0], names[len(names) // 2], names[-1])}

# Registered, not loaded: the golden tests apply it with @settings(parent=...), so hypothesis
# tests elsewhere in the tree keep their own settings when everything runs in one session.
settings.register_profile(
    "golden", max_examples=40, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)


# ---- SPEC 1: FP16 fields -------------------------------------------------------------------

def fp16_bits(x16: torch.Tensor) -> list[int]:
    """Unsigned 16-bit patterns of an FP16 tensor, flattened."""
    return [b & 0xFFFF for b in x16.contiguous().view(torch.int16).flatten().tolist()]


def element_fields(bits: int) -> tuple[int, int, int, bool]:
    """(sign, effective exponent field, significand M, non-finite) of one FP16 pattern (SPEC 1).

    Subnormals and Inf/NaN have magnitude 0: effective exponent 0 and M = 0; the sign is kept.
    """
    sign, ex, man = bits >> 15, (bits >> 10) & 31, bits & 1023
    if ex == 31:
        return sign, 0, 0, True
    if ex == 0:
        return sign, 0, 0, False
    return sign, ex, 1024 + man, False


# ---- SPEC 2 and 4: nearest values ----------------------------------------------------------

def nearest_index(values: list[int], target) -> int:
    """Index of the value nearest to target (an int or an exact Fraction), ties to the larger value
    (values ascending, same units)."""
    best = 0
    for i, v in enumerate(values):
        if abs(target - v) <= abs(target - values[best]):
            best = i
    return best


def in_beneficial_range(dialect: int, q: int) -> bool:
    """SPEC 4.3, read literally: the dialect's own value (the one its partner lacks) is the nearest
    value of the pair's union to q (quarter-units), ties to the larger magnitude."""
    own = set(FORMATBOOK_ROWS[dialect]) - set(FORMATBOOK_ROWS[dialect ^ 1])
    union = sorted(set(FORMATBOOK_ROWS[dialect]) | set(FORMATBOOK_ROWS[dialect ^ 1]))
    return union[nearest_index([2 * v for v in union], q)] in own


# ---- SPEC 3, 4, 5: one block ---------------------------------------------------------------

def stage1_pair(qmax: int, rule: str) -> int:
    """SPEC 4.2 as printed: "two_stage" rounds, p = max(0, 15 - ((qmax + 1) >> 1)); "two_stage_trunc"
    truncates, p = 15 - (qmax >> 1). (qmax is in 16..31 for a block with E >= 1.)"""
    if rule == "two_stage_trunc":
        return 15 - (qmax >> 1)
    return max(0, 15 - ((qmax + 1) >> 1))


def quantize_block(bits: list[int], method: str = "two_stage") -> dict:
    """Quantizes one block given as FP16 bit patterns, exactly as the SPEC text describes.

    method: "two_stage" (stage 1 rounds), "two_stage_trunc" (stage 1 truncates) or "mse". For "mse"
    the reported pair and counts are those of the rounding stage 1 (informative only)."""
    if method not in ("two_stage", "two_stage_trunc", "mse"):
        raise ValueError(f"reference: unknown method {method!r}")
    fields = [element_fields(b) for b in bits]
    signs = [f[0] for f in fields]
    invalid = any(f[3] for f in fields)
    shared = max(f[1] for f in fields)                                   # SPEC 3
    out = {"exp": shared, "invalid": invalid, "signs": signs}
    if shared == 0:                                                      # SPEC 3: zero block
        out.update(q=[0] * len(bits), qmax=0, pair=None, count_a=0, count_b=0, dialect=0,
                   idx=[0] * len(bits), costs=None)
    else:
        # SPEC 4.1: truncating shift; an 11-bit M shifted by 11 or more is 0 anyway.
        q = [m >> (6 + shared - ex) if m else 0 for _, ex, m, _ in fields]
        qmax = max(q)
        pair = stage1_pair(qmax, method)                                 # SPEC 4.2
        count_a = sum(in_beneficial_range(2 * pair, v) for v in q)       # SPEC 4.3
        count_b = sum(in_beneficial_range(2 * pair + 1, v) for v in q)
        costs = None
        if method != "mse":
            dialect = 2 * pair if count_a >= count_b else 2 * pair + 1   # ties to A
            values = [2 * v for v in FORMATBOOK_ROWS[dialect]]           # quarter-units
            idx = [nearest_index(values, v) for v in q]                  # SPEC 4.4
        else:
            costs = [mse_cost_full(fields, shared, d) for d in range(16)]
            dialect = min(range(16), key=lambda d: (costs[d], d))        # SPEC 5, ties to lowest id
            idx = exact_indices(fields, shared, dialect)
        out.update(q=q, qmax=qmax, pair=pair, count_a=count_a, count_b=count_b, dialect=dialect,
                   idx=idx, costs=costs)
    out["codes"] = [s << 3 | i for s, i in zip(signs, out["idx"])]
    return out


def exact_indices(fields, shared: int, dialect: int) -> list[int]:
    """SPEC 5: nearest index to the exact value of each element, ties up, clamped to index 7.

    Both sides are integers in units of 2^-24: |x| = M * 2^(ex - 25) = (M << (ex - 1)) * 2^-24 and
    a value v half-units is v * 2^(E - 18) = (v << (E + 6)) * 2^-24."""
    values = [v << (shared + 6) for v in FORMATBOOK_ROWS[dialect]]
    return [nearest_index(values, m << (ex - 1)) if m else 0 for _, ex, m, _ in fields]


def mse_cost_full(fields, shared: int, dialect: int) -> int:
    """Squared error of the whole block in dialect d, units 2^-48 (every element included)."""
    values = [v << (shared + 6) for v in FORMATBOOK_ROWS[dialect]]
    total = 0
    for _, ex, m, _ in fields:
        exact = m << (ex - 1) if m else 0
        total += (exact - values[nearest_index(values, exact)]) ** 2
    return total


def spec_mse_cost(bits: list[int], dialect: int) -> int:
    """SPEC 5's cost formula as printed: elements with ex >= E - 1, in units of 2^(E - 26)."""
    fields = [element_fields(b) for b in bits]
    shared = max(f[1] for f in fields)
    values = FORMATBOOK_ROWS[dialect]
    total = 0
    for _, ex, m, _ in fields:
        if m and ex >= shared - 1:
            scaled = m << (ex - shared + 1)                   # M * 2^(ex - E + 1), an integer here
            hv = Fraction(m) * Fraction(2) ** (ex - shared - 7)    # half-units, exact
            v = values[nearest_index(values, hv)]
            total += (scaled - 256 * v) ** 2
    return total


def decode_value(exp: int, dialect: int, code: int) -> float:
    """SPEC 3: (-1)^s * FORMATBOOK[d][idx] * 2^(E - 18), exact as a Python float."""
    magnitude = math.ldexp(FORMATBOOK_ROWS[dialect][code & 7], exp - 18)
    return -magnitude if code >> 3 else magnitude


def quantize_rows(x16: torch.Tensor, method: str = "two_stage") -> dict[str, torch.Tensor]:
    """Reference quantization of an FP16 (n, B) tensor, one row per block, as tensors."""
    rows = [quantize_block(fp16_bits(row), method) for row in x16]
    return {
        "exp": torch.tensor([r["exp"] for r in rows], dtype=torch.uint8),
        "dialect": torch.tensor([r["dialect"] for r in rows], dtype=torch.uint8),
        "codes": torch.tensor([r["codes"] for r in rows], dtype=torch.uint8).reshape(x16.shape),
        "invalid": torch.tensor([r["invalid"] for r in rows], dtype=torch.bool),
        "rows": rows,
    }


# ---- SPEC 6: exact dot products, one rounding to FP32 ------------------------------------------

def fraction_to_float32(r: Fraction) -> float:
    """Rounds an exact rational to the nearest IEEE binary32 value, ties to even; zero is +0.0."""
    if r == 0:
        return 0.0
    sign = -1.0 if r < 0 else 1.0
    a = abs(r)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if a < Fraction(2) ** e:
        e -= 1
    elif a >= Fraction(2) ** (e + 1):
        e += 1
    quantum = Fraction(2) ** (max(e, -126) - 23)                  # subnormals share the 2^-149 step
    n = a / quantum
    whole = n.numerator // n.denominator
    rest = n - whole
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and whole % 2 == 1):
        whole += 1
    if whole * quantum >= Fraction(2) ** 128:
        return sign * math.inf
    return sign * float(whole * quantum)                          # exact: whole <= 2^24


def block_value(exp_a: int, dialect_a: int, codes_a: list[int],
                exp_w: int, dialect_w: int, codes_w: list[int]) -> Fraction:
    """SPEC 6: S * 2^(E_a + E_w - 36) with S the exact signed sum of 4x4-bit products."""
    s = 0
    for ca, cw in zip(codes_a, codes_w):
        product = FORMATBOOK_ROWS[dialect_a][ca & 7] * FORMATBOOK_ROWS[dialect_w][cw & 7]
        s += -product if (ca >> 3) ^ (cw >> 3) else product
    return s * Fraction(2) ** (exp_a + exp_w - 36)


def linear_reference(q_act, q_weight) -> torch.Tensor:
    """SPEC 6 for Blocks shaped (M, K/B) x (N, K/B): sum of exact block values, one FP32 rounding."""
    exp_a, dia_a, cod_a = q_act.exp.tolist(), q_act.dialect.tolist(), q_act.codes.tolist()
    exp_w, dia_w, cod_w = q_weight.exp.tolist(), q_weight.dialect.tolist(), q_weight.codes.tolist()
    out = []
    for m in range(len(exp_a)):
        row = []
        for n in range(len(exp_w)):
            total = sum(block_value(exp_a[m][j], dia_a[m][j], cod_a[m][j],
                                    exp_w[n][j], dia_w[n][j], cod_w[n][j]) for j in range(len(exp_a[m])))
            row.append(fraction_to_float32(Fraction(total)))
        out.append(row)
    return torch.tensor(out, dtype=torch.float32)


# ---- SPEC 6.1: rounded accumulation, with Python floats and numpy scalars ------------------------

QUIET_NAN_BITS = 0x7FC00000          # SPEC 6.1: the NaN of every result


def accumulate_values(values: list[float], mode: str) -> int:
    """SPEC 6.1 on exact block values (Python floats, in block order): FP32 bits of the result.

    "fp32": numpy float32 scalar additions, one IEEE rounding each. "fp16": each value rounded once
    from the Python float by numpy (float64 -> float16, ties to even, overflow to Inf); the sum of two
    FP16 values is exact as a Python float (both are multiples of 2^-24 below 2^16), so numpy rounds
    it once. Python floats give Inf + (-Inf) = NaN.
    """
    if mode == "fp32":
        acc = np.float32(0.0)
        for v in values:
            acc = acc + np.float32(v)
    elif mode == "fp16":
        acc = np.float16(0.0)
        with np.errstate(over="ignore", invalid="ignore"):
            for v in values:
                acc = np.float16(float(acc) + float(np.float16(v)))
    else:
        raise ValueError(f"reference: unknown mode {mode!r}")
    if math.isnan(float(acc)):
        return QUIET_NAN_BITS
    return struct.unpack("<I", struct.pack("<f", float(np.float32(acc))))[0]


def linear_accumulate_reference(q_act, q_weight, mode: str) -> torch.Tensor:
    """SPEC 6.1 for Blocks (M, K/B) x (N, K/B): block values V_j (exact, from block_value) added in
    order by accumulate_values; NaN where a block is flagged invalid (SPEC 10)."""
    exp_a, dia_a, cod_a = q_act.exp.tolist(), q_act.dialect.tolist(), q_act.codes.tolist()
    exp_w, dia_w, cod_w = q_weight.exp.tolist(), q_weight.dialect.tolist(), q_weight.codes.tolist()
    bad_a, bad_w = q_act.invalid.tolist(), q_weight.invalid.tolist()
    out = []
    for m in range(len(exp_a)):
        for n in range(len(exp_w)):
            if any(bad_a[m]) or any(bad_w[n]):
                out.append(QUIET_NAN_BITS)
                continue
            values = [float(block_value(exp_a[m][j], dia_a[m][j], cod_a[m][j], exp_w[n][j], dia_w[n][j], cod_w[n][j]))
                      for j in range(len(exp_a[m]))]
            out.append(accumulate_values(values, mode))
    signed = [b - (1 << 32) if b >> 31 else b for b in out]       # the int32 view of the same bits
    return torch.tensor(signed, dtype=torch.int32).view(torch.float32).reshape(len(exp_a), len(exp_w))


REFERENCE = SimpleNamespace(
    fp16_bits=fp16_bits, element_fields=element_fields, nearest_index=nearest_index,
    in_beneficial_range=in_beneficial_range, stage1_pair=stage1_pair, quantize_block=quantize_block, quantize_rows=quantize_rows,
    spec_mse_cost=spec_mse_cost, mse_cost_full=mse_cost_full, decode_value=decode_value,
    fraction_to_float32=fraction_to_float32, block_value=block_value, linear_reference=linear_reference,
    accumulate_values=accumulate_values, linear_accumulate_reference=linear_accumulate_reference,
)


@pytest.fixture(scope="session")
def spec():
    """The independent scalar reference of SPEC.md (see the module docstring)."""
    return REFERENCE


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise equality of float32 tensors (tells +0 from -0, NaN patterns alike)."""
    return a.shape == b.shape and torch.equal(a.contiguous().view(torch.int32), b.contiguous().view(torch.int32))


@pytest.fixture(scope="session")
def bits_equal():
    return same_bits
