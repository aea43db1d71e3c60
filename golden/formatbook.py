"""The DialectFP4 formatbook and every table derived from it (SPEC 2, SPEC 4).

This module is the single copy of the formatbook. The golden model, the hardware generators and the
tests all import it; nothing else types the numbers again.

Source note (SPEC 2): the table is the formatbook of Figure 4 of Jang & Tambe, "BlockDialect"
(ICML 2025, arXiv 2501.01144), as transcribed by third-party implementations; it has not been checked
against the figure itself.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

# SPEC 2 and 4: defined in golden.spec, and imported from there by everyone else.
from golden.spec import LEVELS, MAX_HALF_UNITS, NUM_DIALECTS, Q_BITS

# SPEC 2: 16 dialects x 8 unsigned magnitudes in half-units (real value h / 2), ascending by index.
FORMATBOOK_ROWS: tuple[tuple[int, ...], ...] = (
    (0, 1, 2, 3, 4, 6, 11, 15),  # 0  P0 A
    (0, 1, 2, 3, 4, 6, 9, 15),   # 1  P0 B
    (0, 1, 2, 3, 4, 6, 11, 14),  # 2  P1 A
    (0, 1, 2, 3, 4, 6, 9, 14),   # 3  P1 B
    (0, 1, 2, 3, 4, 6, 10, 13),  # 4  P2 A
    (0, 1, 2, 3, 4, 6, 8, 13),   # 5  P2 B
    (0, 1, 2, 3, 4, 6, 10, 12),  # 6  P3 A
    (0, 1, 2, 3, 4, 6, 8, 12),   # 7  P3 B (= FP4 E2M1)
    (0, 1, 2, 3, 4, 6, 9, 11),   # 8  P4 A
    (0, 1, 2, 3, 4, 6, 7, 11),   # 9  P4 B
    (0, 1, 2, 3, 4, 6, 9, 10),   # 10 P5 A
    (0, 1, 2, 3, 4, 6, 7, 10),   # 11 P5 B
    (0, 1, 2, 3, 4, 6, 8, 9),    # 12 P6 A
    (0, 1, 2, 3, 4, 6, 7, 9),    # 13 P6 B
    (0, 1, 2, 3, 4, 6, 7, 8),    # 14 P7 A
    (0, 1, 2, 3, 4, 5, 6, 8),    # 15 P7 B
)

FORMATBOOK = torch.tensor(FORMATBOOK_ROWS, dtype=torch.int64)
FORMATBOOK.requires_grad_(False)


def _identity_levels() -> int:
    """SPEC 2: the number of leading indices whose magnitude is the index itself in every dialect."""
    n = 0
    while n < LEVELS and all(row[n] == n for row in FORMATBOOK_ROWS):
        n += 1
    return n


# SPEC 2: indices below 5 decode to themselves in every dialect; the magnitudes at indices 5, 6
# and 7 depend on the dialect.
IDENTITY_LEVELS = _identity_levels()
VARYING_COLUMNS: tuple[int, ...] = tuple(
    j for j in range(LEVELS) if len({row[j] for row in FORMATBOOK_ROWS}) > 1)


def anf_coefficients(dialect: int) -> tuple[int, int, int]:
    """The dialect's magnitudes at indices 5-7 as three XOR coefficients ``(c0, c1, c2)``:
    ``FORMATBOOK[dialect][idx] = c0 ^ (c1 if idx[1]) ^ (c2 if idx[0])`` for ``idx`` 5, 6, 7 (the
    algebraic normal form over the index's two low bits, which are 01, 10, 11 there). The hardware
    decoder selects these once per block, so a lane needs no 8:1 selection (SPEC 2, SPEC 6)."""
    if VARYING_COLUMNS != (5, 6, 7) or IDENTITY_LEVELS != 5:
        raise AssertionError("the ANF decode assumes indices 0-4 are the identity and 5-7 vary")
    v5, v6, v7 = FORMATBOOK_ROWS[dialect][5:8]
    return v5 ^ v6 ^ v7, v5 ^ v7, v6 ^ v7


def pair_of(dialect: int) -> int:
    """SPEC 2: dialects 2p and 2p + 1 form pair p."""
    return dialect // 2


def pair_max(pair: int) -> int:
    """SPEC 2: both dialects of pair p have the largest value 15 - p half-units."""
    return MAX_HALF_UNITS - pair


def midpoints(dialect: int) -> tuple[int, ...]:
    """SPEC 4.4: the 7 decision thresholds v_i + v_(i+1), in quarter-units (ties go up)."""
    v = FORMATBOOK_ROWS[dialect]
    return tuple(v[i] + v[i + 1] for i in range(LEVELS - 1))


class Stage2Range(NamedTuple):
    """Half-open interval [lo, hi) of quarter-units (SPEC 4.3)."""

    lo: int
    hi: int


def beneficial_range(dialect: int) -> Stage2Range:
    """SPEC 4.3: the quarter-units in which this dialect's own value (the one its partner lacks)
    is the nearest value of the pair's union, ties going to the larger magnitude."""
    partner = dialect ^ 1
    own = sorted(set(FORMATBOOK_ROWS[dialect]) - set(FORMATBOOK_ROWS[partner]))
    if len(own) != 1:
        raise AssertionError(f"dialect {dialect} must have exactly one value its partner lacks")
    union = sorted(set(FORMATBOOK_ROWS[dialect]) | set(FORMATBOOK_ROWS[partner]))
    j = union.index(own[0])
    # A half-unit value h is 2h quarter-units, so the midpoint of h1 and h2 is h1 + h2 quarter-units.
    return Stage2Range(union[j - 1] + union[j], union[j] + union[j + 1])


def _tables() -> tuple[torch.Tensor, torch.Tensor]:
    mids = torch.tensor([midpoints(d) for d in range(NUM_DIALECTS)], dtype=torch.int64)
    ranges = torch.tensor([beneficial_range(d) for d in range(NUM_DIALECTS)], dtype=torch.int64)
    return mids, ranges


# (16, 7) midpoints in quarter-units and (16, 2) stage-2 ranges [lo, hi) in quarter-units.
MIDPOINTS, STAGE2_RANGES = _tables()

# SPEC 4.4 / 5: index of the nearest value (ties up) for every q in 0..31 and every dialect, and that
# value in half-units, both (16, 32). Both methods round by the same midpoint comparison, because
# every midpoint is a whole quarter-unit.
INDEX_LUT = (torch.arange(1 << Q_BITS, dtype=torch.int64)[None, :, None] >= MIDPOINTS[:, None, :]).sum(-1)
VALUE_LUT = FORMATBOOK.gather(1, INDEX_LUT)
