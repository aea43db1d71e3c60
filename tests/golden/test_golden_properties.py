"""Properties of golden.bd checked with hypothesis against the SPEC text."""
from __future__ import annotations

import math
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from golden import bd, vectors
from golden.formatbook import FORMATBOOK_ROWS

GOLDEN = settings(settings.get_profile("golden"))  # registered in conftest.py

BLOCK_SIZES = (16, 32, 64)


def bits_to_fp16(bits: list[int]) -> torch.Tensor:
    signed = [b - 0x10000 if b >= 0x8000 else b for b in bits]
    return torch.tensor(signed, dtype=torch.int16).view(torch.float16)


@st.composite
def fp16_rows(draw, max_rows: int = 4):
    """FP16 blocks (n, B) whose exponents sit within 13 of a drawn top exponent, so that the block
    maximum, mid-size and truncated-to-zero elements all occur; some zeros and subnormals too."""
    block = draw(st.sampled_from(BLOCK_SIZES))
    rows = []
    for _ in range(draw(st.integers(1, max_rows))):
        top = draw(st.integers(1, 30))
        element = st.tuples(st.integers(0, 1), st.integers(max(0, top - 13), top), st.integers(0, 1023))
        fields = draw(st.lists(element, min_size=block, max_size=block))
        rows.append([s << 15 | ex << 10 | man for s, ex, man in fields])
    return bits_to_fp16(sum(rows, [])).reshape(len(rows), block)


@st.composite
def seeded_rows(draw):
    """Rows from the shared random families, seed drawn by hypothesis."""
    block = draw(st.sampled_from(BLOCK_SIZES))
    family = draw(st.sampled_from(vectors.RANDOM_FAMILIES))
    return vectors.random_blocks(draw(st.integers(1, 8)), block, family, seed=draw(st.integers(0, 2**31)))


any_rows = st.one_of(fp16_rows(), seeded_rows())
methods = st.sampled_from(bd.METHODS)


@GOLDEN
@given(x16=any_rows, method=methods)
def test_dequantize_is_within_half_a_step(x16, method):
    """For an element whose value lies inside the chosen dialect's range, the error is at most half
    the gap between the two dialect values around it (SPEC 3, 4.4, 5: nearest value); an element
    above the largest value decodes to the largest value; the sign always survives.

    Stage 1 bounds the clamping error (SPEC 4.2): the truncating rule sets the largest value to the
    block maximum rounded down to a half-unit (error < 1 half-unit), the rounding rule to the
    nearest half-unit (error < 1/2), except where it clamps at pair 0 (maximum in [15.5, 16))."""
    block = x16.shape[-1]
    q = bd.quantize(x16, block=block, method=method)
    x_hat = bd.dequantize(q).to(torch.float64).reshape(x16.shape)
    assert torch.equal(torch.signbit(x_hat), torch.signbit(x16))
    x = x16.to(torch.float64)
    normal = (x.abs() >= 2.0 ** -14)
    for row in range(x.shape[0]):
        shared, dialect = int(q.exp[row, 0]), int(q.dialect[row, 0])
        values = FORMATBOOK_ROWS[dialect]
        unit = 2.0 ** (shared - 18)                    # one half-unit
        clamped = float(x[row].abs().max()) / unit >= 15.5
        for k in range(block):
            if not normal[row, k]:
                assert x_hat[row, k] == 0
                continue
            hv = abs(float(x[row, k])) / unit           # exact: both are binary floats in range
            err = abs(float(x[row, k] - x_hat[row, k])) / unit
            if hv >= values[-1]:
                assert abs(float(x_hat[row, k])) / unit == values[-1]
                if method == "two_stage_trunc" or (method == "two_stage" and clamped):
                    assert err < 1                      # v7 = floor(hv of the block maximum)
                elif method == "two_stage":
                    assert err < 0.5                    # v7 = hv of the block maximum, rounded
                continue
            i = max(j for j in range(8) if values[j] <= hv)
            step = values[i + 1] - values[i]
            assert err <= step / 2, (row, k, hv, dialect)


@pytest.mark.parametrize("method", ["two_stage", "two_stage_trunc"])
@GOLDEN
@given(x16=any_rows)
def test_two_stage_never_beats_mse_on_the_spec_cost(method, x16, spec):
    block = x16.shape[-1]
    two = bd.quantize(x16, block=block, method=method).dialect[:, 0].tolist()
    mse = bd.quantize(x16, block=block, method="mse").dialect[:, 0].tolist()
    for row, d_two, d_mse in zip(x16, two, mse):
        bits = spec.fp16_bits(row)
        if max(spec.element_fields(b)[1] for b in bits) == 0:
            assert d_two == d_mse == 0
            continue
        costs = [spec.spec_mse_cost(bits, d) for d in range(16)]
        assert costs[d_mse] == min(costs) and d_mse == costs.index(min(costs))
        assert costs[d_two] >= costs[d_mse]


@GOLDEN
@given(x16=any_rows, method=methods)
def test_pack_unpack_round_trip(x16, method):
    block = x16.shape[-1]
    q = bd.quantize(x16, block=block, method=method)
    raw = bd.pack(q)
    assert raw.dtype == torch.uint8 and raw.shape == (x16.shape[0], 2 + block // 2)
    back = bd.unpack(raw, block=block)
    for field in bd.Blocks._fields:
        assert torch.equal(getattr(back, field), getattr(q, field)), field
    # SPEC 7 layout, read back by hand from the bytes.
    r = raw.to(torch.int64)
    word = r[:, 0] | r[:, 1] << 8
    assert torch.equal(word >> 4, q.exp[:, 0].to(torch.int64))
    assert torch.equal(word & 15, q.dialect[:, 0].to(torch.int64))
    low, high = r[:, 2:] & 15, r[:, 2:] >> 4
    assert torch.equal(torch.stack([low, high], -1).reshape(-1, block), q.codes[:, 0].to(torch.int64))


@GOLDEN
@given(data=st.data())
def test_unpack_pack_round_trip_on_arbitrary_bytes(data):
    block = data.draw(st.sampled_from(BLOCK_SIZES))
    n = data.draw(st.integers(1, 6))
    rows = []
    for _ in range(n):
        word = data.draw(st.integers(0, 30)) << 4 | data.draw(st.integers(0, 15))
        body = data.draw(st.lists(st.integers(0, 255), min_size=block // 2, max_size=block // 2))
        rows.append([word & 0xFF, word >> 8] + body)
    raw = torch.tensor(rows, dtype=torch.uint8).reshape(1, -1)       # n blocks along the last dimension
    q = bd.unpack(raw, block=block)
    assert q.codes.shape == (1, n, block)
    assert torch.equal(bd.pack(q), raw)


@GOLDEN
@given(x16=fp16_rows(), method=methods, data=st.data())
def test_power_of_two_scaling_shifts_only_the_exponent(x16, method, data):
    """Multiplying by 2^k moves every exponent field by k, so E moves by k and nothing else changes
    (as long as no normal element leaves the normal range)."""
    ex = (x16.view(torch.int16).to(torch.int32) >> 10) & 31
    normal = (ex > 0) & (ex < 31)
    if not normal.any():
        return
    low, high = int(ex[normal].min()), int(ex[normal].max())
    k = data.draw(st.integers(1 - low, 30 - high))
    scaled = (x16.to(torch.float64) * 2.0 ** k).to(torch.float16)
    scaled = torch.where(normal, scaled, x16)       # zeros and subnormals stay as they were
    block = x16.shape[-1]
    a = bd.quantize(x16, block=block, method=method)
    b = bd.quantize(scaled, block=block, method=method)
    nonzero = a.exp > 0
    assert torch.equal(b.exp.to(torch.int32)[nonzero], a.exp.to(torch.int32)[nonzero] + k)
    assert torch.equal(a.dialect[nonzero], b.dialect[nonzero])
    assert torch.equal(a.codes[nonzero], b.codes[nonzero])


@GOLDEN
@given(x16=any_rows, method=methods)
def test_negation_flips_only_the_sign_bits(x16, method):
    block = x16.shape[-1]
    a = bd.quantize(x16, block=block, method=method)
    b = bd.quantize(-x16, block=block, method=method)
    assert torch.equal(a.exp, b.exp) and torch.equal(a.dialect, b.dialect)
    assert torch.equal(a.codes ^ 8, b.codes)


# ---- SPEC 6: exact dot products ------------------------------------------------------------------

def test_fraction_to_float32_oracle(spec):
    """The test's own FP32 rounding: ties to even, subnormals, overflow, against hand values."""
    f = spec.fraction_to_float32
    two = Fraction(2)
    assert f(Fraction(0)) == 0.0 and math.copysign(1.0, f(Fraction(0))) == 1.0
    assert f(1 + two ** -24) == 1.0                                  # tie, even stays
    assert f(1 + 3 * two ** -24) == 1 + 2.0 ** -22                   # tie, odd rounds up
    assert f(1 + two ** -24 + two ** -80) == 1 + 2.0 ** -23          # just above the tie
    assert f(-(1 + two ** -24)) == -1.0
    assert f(two ** -149) == 2.0 ** -149 and f(two ** -150) == 0.0   # smallest subnormal; tie to 0
    assert f(3 * two ** -151) == 2.0 ** -149
    assert f(two ** 128) == math.inf and f((2 - two ** -23) * two ** 127) == 3.4028234663852886e38
    for value in (1 / 3, math.pi, 1e-40, 123456789.0, -2.5e30):
        assert f(Fraction(value)) == float(torch.tensor(value, dtype=torch.float32))


def _blocks(exp, dialect, codes) -> bd.Blocks:
    exp_t = torch.tensor(exp, dtype=torch.uint8)
    return bd.Blocks(exp_t, torch.tensor(dialect, dtype=torch.uint8),
                     torch.tensor(codes, dtype=torch.uint8), torch.zeros(exp_t.shape, dtype=torch.bool))


@st.composite
def blocks_pair(draw):
    """Arbitrary well-formed activation (M, K/B) and weight (N, K/B) Blocks, every field at random."""
    block = draw(st.sampled_from(BLOCK_SIZES))
    m, n, nb = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 4))
    exps = st.one_of(st.integers(0, 30), st.sampled_from([0, 1, 2, 29, 30]))  # SPEC 6 holds for any E

    def side(rows):
        return _blocks(
            [[draw(exps) for _ in range(nb)] for _ in range(rows)],
            [[draw(st.integers(0, 15)) for _ in range(nb)] for _ in range(rows)],
            [[draw(st.lists(st.integers(0, 15), min_size=block, max_size=block)) for _ in range(nb)]
             for _ in range(rows)])
    return side(m), side(n)


@GOLDEN
@given(pair=blocks_pair())
def test_linear_equals_exact_rational_reference(pair, spec, bits_equal):
    q_act, q_weight = pair
    got = bd.linear(q_act, q_weight)
    assert got.dtype == torch.float32
    assert bits_equal(got, spec.linear_reference(q_act, q_weight))


@GOLDEN
@given(x16=seeded_rows(), w_seed=st.integers(0, 2**31), method=methods)
def test_linear_on_quantized_data(x16, w_seed, method, spec, bits_equal):
    block = x16.shape[-1]
    k = block * 2
    act = x16.reshape(-1)[: (x16.numel() // k) * k].reshape(-1, k)
    if act.shape[0] == 0:
        act = torch.cat([x16.reshape(-1), x16.reshape(-1)])[:k].reshape(1, k)
    weight = vectors.random_blocks(6, block, "gaussian", seed=w_seed).reshape(3, k)
    q_act = bd.quantize(act, block=block, method="two_stage")
    q_weight = bd.quantize(weight, block=block, method=method)
    assert bits_equal(bd.linear(q_act, q_weight), spec.linear_reference(q_act, q_weight))


def test_linear_rounds_once_not_per_block(bits_equal):
    """2^24 + 1 + 2^-34: one rounding gives 2^24 + 2; summing in float64 first would land on the
    tie 2^24 + 1 and round to 2^24 (even). Block exponents: E_a + E_w = 60, 36 and 2."""
    one = [1] + [0] * 15                                               # idx 1 is 1 half-unit in every dialect
    zero = [0] * 16
    act = _blocks([[30, 18, 1]], [[0, 7, 15]], [[one, one, one]])
    weight = _blocks([[30, 18, 1], [30, 18, 1], [30, 18, 1]], [[3, 3, 3]] * 3,
                     [[one, one, one], [one, one, zero], [one, [3] + [0] * 15, zero]])
    got = bd.linear(act, weight)
    # Row 2: 2^24 + 3 is a tie between 2^24 + 2 and 2^24 + 4; even is 2^24 + 4.
    assert bits_equal(got, torch.tensor([[2.0 ** 24 + 2, 2.0 ** 24, 2.0 ** 24 + 4]], dtype=torch.float32))


def test_linear_exact_cancellation_gives_positive_zero(bits_equal):
    plus_one = [1] + [0] * 15         # sign 0, idx 1
    minus_one = [9] + [0] * 15        # sign 1, idx 1
    act = _blocks([[20, 20]], [[0, 0]], [[plus_one, plus_one]])
    weight = _blocks([[20, 20]], [[0, 0]], [[plus_one, minus_one]])
    assert bits_equal(bd.linear(act, weight), torch.zeros(1, 1))
    # All-negative products that do not cancel keep their sign.
    weight = _blocks([[20, 20]], [[0, 0]], [[minus_one, minus_one]])
    assert bd.linear(act, weight).item() == -2 * 2.0 ** (40 - 36)


def test_linear_leading_dimensions():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 64, generator=gen)
    w = torch.randn(5, 64, generator=gen)
    q_x, q_w = bd.quantize(x), bd.quantize(w, method="mse")
    y = bd.linear(q_x, q_w)
    assert y.shape == (2, 3, 5)
    flat = bd.linear(bd.quantize(x.reshape(6, 64)), q_w)
    assert torch.equal(y.reshape(6, 5), flat)
    # The exact result differs from the float32 product of the dequantized tensors only by rounding.
    a, w = bd.dequantize(q_x).to(torch.float64), bd.dequantize(q_w).to(torch.float64)
    ref = a @ w.T
    bound = 2.0 ** -24 * ref.abs() + 1e-12 * (a.abs() @ w.abs().T)
    assert ((y.to(torch.float64) - ref).abs() <= bound).all()


@pytest.mark.parametrize("block", BLOCK_SIZES)
@settings(GOLDEN, max_examples=10)
@given(data=st.data())
def test_linear_block_order_does_not_matter(block, data, bits_equal):
    """SPEC 6: one rounding of the exact sum makes the result independent of block order."""
    seed = data.draw(st.integers(0, 2**31))
    x = vectors.random_blocks(8, block, "exponent_spread", seed=seed).reshape(2, 4 * block)
    w = vectors.random_blocks(12, block, "lognormal", seed=seed + 1).reshape(3, 4 * block)
    perm = torch.randperm(4, generator=torch.Generator().manual_seed(seed))
    cols = (perm[:, None] * block + torch.arange(block)).reshape(-1)
    a = bd.linear(bd.quantize(x, block=block), bd.quantize(w, block=block))
    b = bd.linear(bd.quantize(x[:, cols], block=block), bd.quantize(w[:, cols], block=block))
    assert bits_equal(a, b)
