"""SPEC 4.2, stage 1: the pair chosen from the block maximum, under both rules, for every FP16 value
the block maximum can take, against the formulas written out here from the specification."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch

from golden import bd


def rounding_pair(qmax: int) -> int:
    """SPEC 4.2 [revised], method "two_stage": p = max(0, 15 - ((qmax + 1) >> 1))."""
    return max(0, 15 - ((qmax + 1) >> 1))


def truncating_pair(qmax: int) -> int:
    """SPEC 4.2, first reading, method "two_stage_trunc": p = 15 - (qmax >> 1)."""
    return 15 - (qmax >> 1)


def test_pair_tables_for_every_reachable_qmax():
    """The block maximum's q lies in [16, 31] (SPEC 4.1); the two rules typed out as tables. They
    split exactly on the odd q below 31, where the maximum lies in [m + 1/2, m + 1) half-units."""
    rounding = {16: 7, 17: 6, 18: 6, 19: 5, 20: 5, 21: 4, 22: 4, 23: 3, 24: 3, 25: 2, 26: 2, 27: 1, 28: 1,
                29: 0, 30: 0, 31: 0}
    truncating = {q: 7 - (q - 16) // 2 for q in range(16, 32)}
    assert {q: rounding_pair(q) for q in range(16, 32)} == rounding
    assert {q: truncating_pair(q) for q in range(16, 32)} == truncating
    assert [q for q in range(16, 32) if rounding[q] != truncating[q]] == list(range(17, 31, 2))


def _every_maximum(block: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One block per normal FP16 magnitude (ex 1..30, every mantissa), that value alone at the front,
    with alternating sign; returns (blocks, ex, M)."""
    ex, man = torch.meshgrid(torch.arange(1, 31), torch.arange(1024), indexing="ij")
    ex, man = ex.reshape(-1), man.reshape(-1)
    sign = torch.arange(ex.numel()) % 2
    bits = (sign << 15) | (ex << 10) | man
    signed = torch.where(bits >= 0x8000, bits - 0x10000, bits).to(torch.int16)
    x = torch.zeros(ex.numel(), block, dtype=torch.int16)
    x[:, 0] = signed
    return x.view(torch.float16), ex, 1024 + man


@pytest.mark.parametrize("method, rule", [("two_stage", rounding_pair), ("two_stage_trunc", truncating_pair)])
def test_every_block_maximum_selects_the_spec_pair(method, rule):
    """Exhaustive over all 30 x 1024 normal maxima: the chosen dialect's pair is the spec formula
    applied to q = M >> 6 (E = ex for the maximum, SPEC 4.1)."""
    x, ex, sig = _every_maximum(16)
    q = bd.quantize(x, block=16, method=method)
    assert torch.equal(q.exp[:, 0].to(torch.int64), ex)
    qmax = (sig >> 6).tolist()
    assert set(qmax) == set(range(16, 32))
    expected = torch.tensor([rule(v) for v in qmax])
    assert torch.equal(q.dialect[:, 0].to(torch.int64) // 2, expected)


def test_rounding_pair_is_nearest_to_the_exact_maximum():
    """SPEC 4.2's reading of the formula: (qmax + 1) >> 1 is the exact maximum rounded to the nearest
    half-unit, ties up, although qmax was truncated. The maximum is M * 2^(ex - E - 7) = M / 128
    half-units; checked for every significand M."""
    for m in range(1024, 2048):
        hv = Fraction(m, 128)
        nearest = (hv + Fraction(1, 2)).__floor__()
        assert ((m >> 6) + 1) >> 1 == nearest, m
        assert rounding_pair(m >> 6) == max(0, 15 - nearest)
        assert truncating_pair(m >> 6) == 15 - hv.__floor__()


def test_odd_maximum_hand_example(bits_equal):
    """A block whose maximum is 8.75 half-units, where the rules split (this example changes with
    the revised SPEC 4.2: the truncating reading gave dialect 14).

    1.09375 = M 1120 at ex 15: E = 15, a half-unit is 2^-3, hv = 8.75, q = 1120 >> 6 = 17.
    0.8125 -> q 13, 0.5625 -> q 9.
    Rounding: (17 + 1) >> 1 = 9, pair 6 (largest value 9): A = 12 [15, 17), B = 13 [13, 15);
      13 is in B -> 0 : 1 -> dialect 13 (0 1 2 3 4 6 7 9; midpoints 1 3 5 7 10 13 16):
      17 -> idx 7 (9 = 1.125, error 0.03125), 13 -> idx 6 (7 = 0.875), 9 -> idx 4 (4 = 0.5).
    Truncating: 17 >> 1 = 8, pair 7 (largest value 8): A = 14 [13, 15), B = 15 [9, 11);
      13 in A, 9 in B -> 1 : 1, tie -> dialect 14 (0 1 2 3 4 6 7 8; midpoints 1 3 5 7 10 13 15):
      17 -> idx 7 (8 = 1.0, error 0.09375), 13 -> idx 6 (0.875), 9 -> idx 4 (0.5)."""
    x = torch.tensor([1.09375, 0.8125, 0.5625] + [0.0] * 29, dtype=torch.float16)
    rounding = bd.quantize(x, method="two_stage")
    assert (int(rounding.exp[0]), int(rounding.dialect[0])) == (15, 13)
    assert rounding.codes[0, :3].tolist() == [7, 6, 4]
    assert bd.dequantize(rounding)[:3].tolist() == [1.125, 0.875, 0.5]
    truncating = bd.quantize(x, method="two_stage_trunc")
    assert (int(truncating.exp[0]), int(truncating.dialect[0])) == (15, 14)
    assert truncating.codes[0, :3].tolist() == [7, 6, 4]
    assert bd.dequantize(truncating)[:3].tolist() == [1.0, 0.875, 0.5]
    # The default method is the rounding one.
    assert torch.equal(bd.quantize(x).dialect, rounding.dialect)
