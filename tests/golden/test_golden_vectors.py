"""The shared vectors: every corner row really hits the corner it is named after, computed here
with the independent scalar reference, and the random generators are deterministic and finite."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch

from golden import formatbook as fb
from golden import vectors

BLOCKS = (16, 32, 64)


@pytest.fixture(scope="module", params=BLOCKS)
def corners(request):
    block = request.param
    return block, vectors.corner_blocks(block), vectors.corner_expectations(block)


def _fields(row: torch.Tensor, spec):
    return [spec.element_fields(b) for b in spec.fp16_bits(row)]


def _reference(rows: torch.Tensor, spec, method="two_stage"):
    return [spec.quantize_block(spec.fp16_bits(row), method) for row in rows]


def test_every_family_is_present(corners):
    block, blocks, expect = corners
    assert tuple(blocks) == vectors.CORNER_FAMILIES
    for family, x in blocks.items():
        assert x.dtype == torch.float16 and x.dim() == 2 and x.shape[1] == block and x.shape[0] >= 1
        for name, values in expect[family].items():
            assert values.shape == (x.shape[0],), (family, name)


def test_corners_are_deterministic():
    first, second = vectors.corner_blocks(32), vectors.corner_blocks(32)
    for family in first:
        assert torch.equal(first[family].view(torch.int16), second[family].view(torch.int16))


def test_intended_quantities_hold(corners, spec):
    """Every quantity a family promises (E, qmax, pair, counts, two-stage dialect under either
    stage-1 rule) is what the SPEC reference computes for that row."""
    _, blocks, expect = corners
    for family, x in blocks.items():
        by_rule = {"": _reference(x, spec), "_trunc": _reference(x, spec, "two_stage_trunc")}
        for name, values in expect[family].items():
            if name == "midpoint":
                continue
            suffix = "_trunc" if name.endswith("_trunc") else ""
            got = [r[name.removesuffix(suffix)] for r in by_rule[suffix]]
            assert got == [int(v) for v in values], (family, name)


def test_zero_families(corners, spec):
    _, blocks, _ = corners
    zero_bits = spec.fp16_bits(blocks["zero"])
    assert set(zero_bits) == {0x0000}
    neg = blocks["neg_zero"]
    assert set(spec.fp16_bits(neg)) <= {0x0000, 0x8000}
    assert all(0x8000 in spec.fp16_bits(row) for row in neg), "every row holds a -0"
    assert any(set(spec.fp16_bits(row)) == {0x8000} for row in neg), "one row is all -0"


def test_pow2_max_is_exactly_a_power_of_two(corners):
    _, blocks, _ = corners
    for row in blocks["pow2"].to(torch.float64):
        mantissa, _ = math.frexp(float(row.abs().max()))
        assert mantissa == 0.5, row


def test_subnormal_rows_hold_subnormals(corners, spec):
    _, blocks, _ = corners
    for row in blocks["subnormal"]:
        bits = spec.fp16_bits(row)
        assert any((b >> 10) & 31 == 0 and b & 1023 for b in bits), "a non-zero subnormal"
    # one row pairs the largest subnormal with the smallest normal
    assert any({0x03FF, 0x0400} <= set(spec.fp16_bits(row)) for row in blocks["subnormal"])


def test_nonfinite_rows_and_invalid_flag(corners, spec):
    _, blocks, expect = corners
    x = blocks["nonfinite"]
    has_nonfinite = ~torch.isfinite(x.to(torch.float32)).all(-1)
    assert torch.equal(expect["nonfinite"]["invalid"], has_nonfinite)
    assert torch.equal(vectors.expected_invalid(x), has_nonfinite)
    bits = set(spec.fp16_bits(x))
    assert {0x7C00, 0xFC00} <= bits, "both infinities"
    assert any((b >> 10) & 31 == 31 and b & 1023 for b in bits), "a NaN"
    assert has_nonfinite.any() and not has_nonfinite.all(), "flagged and clean rows both present"
    for family, e in expect.items():
        if family != "nonfinite":
            assert not e["invalid"].any(), family


def test_saturate_rows_reach_q31(corners, spec):
    _, blocks, _ = corners
    for method in ("two_stage", "two_stage_trunc"):
        for r in _reference(blocks["saturate_q31"], spec, method):
            assert r["qmax"] == 31 and r["pair"] == 0, method
    assert 0x7BFF in spec.fp16_bits(blocks["saturate_q31"]), "65504, the largest FP16 value"


def _exact_max_half_units(row: torch.Tensor, shared: int) -> Fraction:
    """The block maximum in half-units of the scale, exact (SPEC 3: a half-unit is 2^(E - 18))."""
    return Fraction(float(row.to(torch.float64).abs().max())) / Fraction(2) ** (shared - 18)


def test_odd_qmax_rows_split_the_two_stage1_rules(corners, spec):
    """The odd_qmax family: every odd q 17..31 with the maximum on the exact half-unit tie and off
    it; the rounding pair is the one whose largest value 15 - p is nearest the exact maximum (ties
    up), computed here from the value itself, and differs from the truncating pair except at 31."""
    _, blocks, _ = corners
    seen_q, ties = set(), set()
    for row in blocks["odd_qmax"]:
        fields = _fields(row, spec)
        shared = max(f[1] for f in fields)
        q = [m >> (6 + shared - ex) if m else 0 for _, ex, m, _ in fields]
        qmax = max(q)
        assert qmax % 2 == 1
        hv = _exact_max_half_units(row, shared)
        nearest = math.floor(hv + Fraction(1, 2))             # nearest half-unit, ties up
        if hv - math.floor(hv) == Fraction(1, 2):
            ties.add(qmax)
        rounding = spec.quantize_block(spec.fp16_bits(row), "two_stage")
        truncating = spec.quantize_block(spec.fp16_bits(row), "two_stage_trunc")
        assert rounding["pair"] == max(0, 15 - nearest)
        assert truncating["pair"] == 15 - math.floor(hv)
        assert (rounding["pair"] != truncating["pair"]) == (qmax != 31), qmax
        seen_q.add(qmax)
    assert seen_q == set(range(17, 32, 2))
    assert ties == seen_q, "every odd q also sits exactly on the half-unit tie"


def test_stage2_counts_tie_and_win_by_one_for_every_pair(corners, spec):
    """Counts computed here from the range definition, not from the family's promises."""
    _, blocks, _ = corners
    seen, odd = {}, set()
    for row in blocks["stage2_count_ties"]:
        fields = _fields(row, spec)
        shared = max(f[1] for f in fields)
        q = [m >> (6 + shared - ex) if m else 0 for _, ex, m, _ in fields]
        pair = max(0, 15 - ((max(q) + 1) >> 1))              # SPEC 4.2, rounding stage 1
        count_a = sum(spec.in_beneficial_range(2 * pair, v) for v in q)
        count_b = sum(spec.in_beneficial_range(2 * pair + 1, v) for v in q)
        seen.setdefault(pair, set()).add(count_a - count_b)
        if max(q) % 2:
            odd.add(pair)
    for pair in range(8):
        assert {0, 1, -1} <= seen[pair], (pair, seen.get(pair))
    # pairs 0..6 are also reached by an odd maximum that rounds up into them (q >= 16 rules out 7)
    assert odd == set(range(7))
    # a tie with non-zero counts in every pair, so the tie is a real comparison
    ties_nonzero = set()
    for r in _reference(blocks["stage2_count_ties"], spec):
        if r["count_a"] == r["count_b"] > 0:
            ties_nonzero.add(r["pair"])
    assert ties_nonzero == set(range(8))


def test_midpoint_rows_put_probes_on_and_beside_every_midpoint(corners, spec):
    _, blocks, expect = corners
    x = blocks["midpoint_ties"]
    covered = set()
    for row, r, dialect, mid in zip(x, _reference(x, spec), expect["midpoint_ties"]["dialect"].tolist(),
                                    expect["midpoint_ties"]["midpoint"].tolist()):
        assert r["dialect"] == dialect
        quarter = 2.0 ** (r["exp"] - 19)
        exact = [abs(float(v)) / quarter for v in row.to(torch.float64)]
        on = [i for i, v in enumerate(exact) if v == mid]
        below = [i for i, v in enumerate(exact) if mid - 1 < v < mid]
        above = [i for i, v in enumerate(exact) if mid < v < mid + 1]
        assert on and below and above, (dialect, mid)
        i = fb.midpoints(dialect).index(mid)
        assert all(r["idx"][k] == i + 1 for k in on), "the tie goes up"
        assert all(r["idx"][k] == i for k in below)
        assert all(r["idx"][k] == i + 1 for k in above)
        covered.add((dialect, mid))
    assert covered == {(d, m) for d in range(16) for m in fb.midpoints(d)}


def test_exp_spread_reaches_every_shift_and_q_zero(corners, spec):
    _, blocks, _ = corners
    for row in blocks["exp_spread"]:
        fields = _fields(row, spec)
        shared = max(f[1] for f in fields)
        gaps = {shared - ex for _, ex, m, _ in fields if m}
        assert set(range(13)) <= gaps
        q = [m >> (6 + shared - ex) for _, ex, m, _ in fields if m]
        assert 0 in q, "small elements truncate to q = 0"


def test_all_codes_hit_every_index_of_every_dialect(corners, spec):
    _, blocks, _ = corners
    hit = set()
    for r in _reference(blocks["all_codes"], spec):
        hit |= {(r["dialect"], c) for c in r["codes"]}
    assert hit == {(d, c) for d in range(16) for c in range(16)}


# ---- random blocks --------------------------------------------------------------------------

@pytest.mark.parametrize("family", vectors.RANDOM_FAMILIES)
def test_random_blocks_are_seeded_finite_fp16(family):
    a = vectors.random_blocks(200, 32, family, seed=7)
    b = vectors.random_blocks(200, 32, family, seed=7)
    c = vectors.random_blocks(200, 32, family, seed=8)
    assert a.dtype == torch.float16 and tuple(a.shape) == (200, 32)
    assert torch.equal(a.view(torch.int16), b.view(torch.int16))
    assert not torch.equal(a.view(torch.int16), c.view(torch.int16))
    assert torch.isfinite(a).all()
    assert tuple(vectors.random_blocks(3, 64, family).shape) == (3, 64)
    assert tuple(vectors.random_blocks(0, 16, family).shape) == (0, 16)


def test_random_families_have_their_character():
    spread = vectors.random_blocks(1000, 32, "exponent_spread", seed=1)
    ex = (spread.view(torch.int16).to(torch.int32) >> 10) & 31
    assert set(ex.flatten().tolist()) == set(range(1, 31))
    assert (spread < 0).any() and (spread > 0).any()

    def kurtosis(x):
        x = x.to(torch.float64).flatten()
        z = (x - x.mean()) / x.std()
        return float((z ** 4).mean())

    # Compare within rows of unit scale: divide each row by its RMS first.
    def rowwise(x):
        x = x.to(torch.float64)
        return x / x.square().mean(-1, keepdim=True).sqrt()

    gauss = rowwise(vectors.random_blocks(1000, 32, "gaussian", seed=1))
    heavy = rowwise(vectors.random_blocks(1000, 32, "heavy_tailed", seed=1))
    assert kurtosis(heavy) > 2 * kurtosis(gauss)
    # |U(-1, 1)| has mean 1/2 and the row maximum is close to 1; a Gaussian row sits far lower.
    uniform = vectors.random_blocks(1000, 32, "uniform", seed=1).to(torch.float64).abs()
    assert 0.45 < float((uniform / uniform.amax(-1, keepdim=True)).mean()) < 0.6
    gauss_abs = vectors.random_blocks(1000, 32, "gaussian", seed=1).to(torch.float64).abs()
    assert float((gauss_abs / gauss_abs.amax(-1, keepdim=True)).mean()) < 0.45
    lognormal = vectors.random_blocks(1000, 32, "lognormal", seed=1).to(torch.float64)
    ratio = lognormal.abs().amax(-1) / lognormal.abs().median(-1).values
    assert float(ratio.median()) > 10, "log-normal rows have a wide spread"


@pytest.mark.parametrize("kwargs, name", [
    ({"n": -1}, "n"), ({"n": 2.5}, "n"), ({"block": 8}, "block"), ({"block": 48}, "block"),
    ({"family": "cauchy"}, "family"), ({"seed": "x"}, "seed"),
])
def test_random_blocks_bad_arguments(kwargs, name):
    args = {"n": 4, "block": 32, "family": "gaussian", "seed": 0} | kwargs
    with pytest.raises(ValueError, match=name):
        vectors.random_blocks(**args)


@pytest.mark.parametrize("block", [8, 33, "32", True])
def test_corner_blocks_bad_block(block):
    with pytest.raises(ValueError, match="block"):
        vectors.corner_blocks(block)
    with pytest.raises(ValueError, match="block"):
        vectors.corner_expectations(block)
