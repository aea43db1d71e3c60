"""Exhaustive checks of the formatbook tables (SPEC 2, 3, 4.3, 4.4) and of decoding every code."""
from __future__ import annotations

import math

import pytest
import torch

from golden import bd
from golden.spec import E2M1_VALUES
from golden import formatbook as fb

# SPEC 4.3, typed from the specification on purpose: this is the one place that checks that the
# ranges derived from the formatbook are the ones the specification prints.
SPEC_STAGE2_TABLE = {
    0: ((20, 26), (15, 20)),
    1: ((20, 25), (15, 20)),
    2: ((18, 23), (14, 18)),
    3: ((18, 22), (14, 18)),
    4: ((16, 20), (13, 16)),
    5: ((16, 19), (13, 16)),
    6: ((15, 17), (13, 15)),
    7: ((13, 15), (9, 11)),
}


def test_formatbook_shape_and_order():
    assert tuple(bd.FORMATBOOK.shape) == (16, 8)
    assert torch.equal(bd.FORMATBOOK.to(torch.int64), torch.tensor(fb.FORMATBOOK_ROWS))
    for row in fb.FORMATBOOK_ROWS:
        assert list(row) == sorted(set(row)), "values must be distinct and ascending by index"
        assert 0 <= row[0] and row[-1] <= 15, "magnitudes are 4-bit unsigned (SPEC 6)"


def test_pairs_share_their_largest_value():
    for dialect, row in enumerate(fb.FORMATBOOK_ROWS):
        assert row[-1] == 15 - dialect // 2 == fb.pair_max(fb.pair_of(dialect))


def test_each_dialect_has_exactly_one_value_its_partner_lacks():
    for dialect in range(16):
        own = set(fb.FORMATBOOK_ROWS[dialect]) - set(fb.FORMATBOOK_ROWS[dialect ^ 1])
        assert len(own) == 1, dialect


def test_dialect_7_is_fp4_e2m1():
    # SPEC 2 notes dialect 7 equals FP4 E2M1; E2M1 values in half-units are twice the real values.
    assert [2 * v for v in E2M1_VALUES] == list(fb.FORMATBOOK_ROWS[7])


@pytest.mark.parametrize("pair", range(8))
def test_stage2_ranges_match_spec_table(pair, spec):
    a_range, b_range = SPEC_STAGE2_TABLE[pair]
    for dialect, expected in ((2 * pair, a_range), (2 * pair + 1, b_range)):
        # Derived table in formatbook.py.
        assert tuple(int(v) for v in fb.STAGE2_RANGES[dialect]) == expected
        assert tuple(fb.beneficial_range(dialect)) == expected
        # The definition read literally, for every q a 5-bit intermediate can take.
        members = [q for q in range(32) if spec.in_beneficial_range(dialect, q)]
        assert members == list(range(*expected)), (dialect, members)


def test_stage2_ranges_of_a_pair_do_not_overlap():
    for pair in range(8):
        a = set(range(*fb.STAGE2_RANGES[2 * pair].tolist()))
        b = set(range(*fb.STAGE2_RANGES[2 * pair + 1].tolist()))
        assert not a & b, pair


def test_midpoints_are_sums_of_neighbours():
    for dialect, row in enumerate(fb.FORMATBOOK_ROWS):
        expected = [row[i] + row[i + 1] for i in range(7)]
        assert list(fb.midpoints(dialect)) == expected
        assert fb.MIDPOINTS[dialect].tolist() == expected
        assert max(expected) < 32, "every midpoint fits the 5-bit q"


def test_every_midpoint_tie_goes_up(spec):
    """SPEC 4.4: q exactly on v_i + v_(i+1) maps to i + 1; one quarter-unit below maps to i."""
    for dialect, row in enumerate(fb.FORMATBOOK_ROWS):
        values = [2 * v for v in row]
        for i, mid in enumerate(fb.midpoints(dialect)):
            assert spec.nearest_index(values, mid) == i + 1, (dialect, i)
            assert spec.nearest_index(values, mid - 1) == i, (dialect, i)


def test_midpoint_formula_equals_nearest_for_every_q(spec):
    """SPEC 4.4's sum of comparisons is the nearest index (ties up) for each q in 0..31."""
    for dialect, row in enumerate(fb.FORMATBOOK_ROWS):
        mids = fb.midpoints(dialect)
        for q in range(32):
            formula = sum(q >= m for m in mids)
            assert formula == spec.nearest_index([2 * v for v in row], q), (dialect, q)


def test_decode_every_dialect_index_sign_and_exponent(bits_equal):
    """SPEC 3 and 6: every (dialect, sign, idx) at every shared exponent 1..30."""
    block = 16
    codes = torch.arange(16, dtype=torch.uint8)                      # all sign/idx combinations
    exps = torch.arange(1, 31, dtype=torch.uint8)
    dialects = torch.arange(16, dtype=torch.uint8)
    exp_grid, dialect_grid = torch.meshgrid(exps, dialects, indexing="ij")
    q = bd.Blocks(
        exp=exp_grid.reshape(-1, 1).contiguous(),
        dialect=dialect_grid.reshape(-1, 1).contiguous(),
        codes=codes.expand(exp_grid.numel(), 1, block).contiguous(),
        invalid=torch.zeros(exp_grid.numel(), 1, dtype=torch.bool),
    )
    got = bd.dequantize(q)
    assert got.dtype == torch.float32 and tuple(got.shape) == (exp_grid.numel(), block)
    expected = torch.tensor([
        [math.copysign(math.ldexp(fb.FORMATBOOK_ROWS[d][c & 7], e - 18), -1.0 if c >> 3 else 1.0)
         for c in range(16)]
        for e, d in zip(exp_grid.flatten().tolist(), dialect_grid.flatten().tolist())
    ], dtype=torch.float32)
    assert bits_equal(got, expected)

    sign, half_units = bd.decode(q)
    assert torch.equal(sign.to(torch.int64), (codes.to(torch.int64) >> 3).expand(exp_grid.numel(), 1, block))
    rows = torch.tensor(fb.FORMATBOOK_ROWS)[dialect_grid.flatten().to(torch.int64)]   # (n, 8)
    expected_h = rows[:, (codes.to(torch.int64) & 7)].unsqueeze(1)
    assert torch.equal(half_units.to(torch.int64), expected_h)


def test_decoded_values_are_exact_in_float32():
    # SPEC 3: 4-bit magnitudes times 2^(E - 18) with E in 1..30 never round in FP32.
    for e in (1, 30):
        for h in range(16):
            value = math.ldexp(h, e - 18)
            assert float(torch.tensor(value, dtype=torch.float32)) == value
