"""Hand-worked examples from the SPEC text, and bad arguments.

Each expected value below was worked out by hand from SPEC.md; the comments show the arithmetic.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from golden import bd


def fp16_from_bits(bits: list[int], block: int = 32) -> torch.Tensor:
    padded = bits + [0] * (block - len(bits))
    signed = [b - 0x10000 if b >= 0x8000 else b for b in padded]
    return torch.tensor(signed, dtype=torch.int16).view(torch.float16)


def padded(values: list[float], block: int = 32, dtype=torch.float16) -> torch.Tensor:
    return torch.tensor(values + [0.0] * (block - len(values)), dtype=dtype)


def only_block(q: bd.Blocks) -> tuple[int, int, list[int], bool]:
    assert q.exp.numel() == 1
    return int(q.exp.flatten()[0]), int(q.dialect.flatten()[0]), q.codes.flatten().tolist(), bool(q.invalid.flatten()[0])


def test_zero_block(bits_equal):
    q = bd.quantize(torch.zeros(32))
    assert only_block(q) == (0, 0, [0] * 32, False)
    assert bits_equal(bd.dequantize(q), torch.zeros(32))
    assert q.exp.dtype == q.dialect.dtype == q.codes.dtype == torch.uint8 and q.invalid.dtype == torch.bool


def test_negative_zero_block_keeps_signs(bits_equal):
    x = padded([-0.0] * 5 + [0.0, -0.0])
    q = bd.quantize(x)
    assert only_block(q) == (0, 0, [8] * 5 + [0, 8] + [0] * 25, False)      # SPEC 3: signs kept
    assert bits_equal(bd.dequantize(q), x.to(torch.float32))                  # -0.0 decodes to -0.0


def test_power_of_two_maximum_two_stage(bits_equal):
    # 1.0 = M 1024 at ex 15 -> E = 15, q = 1024 >> 6 = 16, pair 15 - 8 = 7; no q in [13,15) or [9,11)
    # -> tie 0:0 -> A = dialect 14 (0 1 2 3 4 6 7 8; midpoints in quarter-units 1 3 5 7 10 13 15).
    # q: 0.5 -> 8 (idx 4), -0.25 -> 4 (idx 2), 0.75 -> 12 (idx 5), 0.375 -> 6 (idx 3).
    x = padded([1.0, 0.5, -0.25, 0.75, 0.375])
    q = bd.quantize(x, method="two_stage")
    assert only_block(q) == (15, 14, [7, 4, 8 | 2, 5, 3] + [0] * 27, False)
    # scale 2^(15 - 18) = 1/8 per half-unit: every value comes back exactly.
    assert bits_equal(bd.dequantize(q), x.to(torch.float32))


def test_mse_cost_ties_go_to_the_lowest_dialect(bits_equal):
    # Same block in half-units: 8, 4, 2, 6, 3. Dialects holding 8 (and 0..4, 6) have cost 0:
    # 5, 7, 12, 14, 15. The lowest id, 5 (0 1 2 3 4 6 8 13), wins: 8 -> idx 6, 6 -> idx 5.
    x = padded([1.0, 0.5, -0.25, 0.75, 0.375])
    q = bd.quantize(x, method="mse")
    assert only_block(q) == (15, 5, [6, 4, 8 | 2, 5, 3] + [0] * 27, False)
    assert bits_equal(bd.dequantize(q), x.to(torch.float32))


def test_subnormals_flush_to_zero_and_keep_their_sign():
    # 0x0001 and 0x83FF are subnormal: magnitude 0, ex counted as 0; 1.0 sets E = 15, pair 7, dialect 14.
    q = bd.quantize(fp16_from_bits([0x0001, 0x83FF, 0x3C00]))
    assert only_block(q) == (15, 14, [0, 8, 7] + [0] * 29, False)
    # A block of subnormals only is a zero block.
    q = bd.quantize(fp16_from_bits([0x0001, 0x8001, 0x03FF]))
    assert only_block(q) == (0, 0, [0, 8, 0] + [0] * 29, False)


def test_saturating_block_q31():
    # 65504 = M 2047 at ex 30: E = 30, q = 2047 >> 6 = 31, pair 0. 40000 = M 1250 at ex 30: q = 19,
    # in B's range [15, 20) -> count 0 : 1 -> dialect 1 (0 1 2 3 4 6 9 15; midpoints 1 3 5 7 10 15 24).
    # 31 -> idx 7 = 15 * 2^12 = 61440; 19 -> idx 6 = 9 * 2^12 = 36864.
    q = bd.quantize(padded([65504.0, 40000.0]))
    assert only_block(q) == (30, 1, [7, 6] + [0] * 30, False)
    assert bd.dequantize(q)[:2].tolist() == [61440.0, 36864.0]
    # Alone, the maximum leaves both counts at 0 -> A = dialect 0.
    assert only_block(bd.quantize(padded([-65504.0])))[:3] == (30, 0, [15] + [0] * 31)


def test_stage2_count_tie_goes_to_a_and_majority_to_b():
    # E = 15, a quarter-unit is 2^-4. 1.0 -> q 16 (pair 7, A [13,15), B [9,11)).
    # 0.8125 -> q 13 (A), 0.5625 -> q 9 (B): 1 : 1, tie -> A = 14, midpoints 1 3 5 7 10 13 15:
    # 13 -> idx 6 (on the midpoint, goes up), 9 -> idx 4.
    q = bd.quantize(padded([1.0, 0.8125, 0.5625]))
    assert only_block(q) == (15, 14, [7, 6, 4] + [0] * 29, False)
    assert bd.dequantize(q)[:3].tolist() == [1.0, 0.875, 0.5]
    # -0.625 -> q 10 (B): 1 : 2 -> B = 15 (0 1 2 3 4 5 6 8; midpoints 1 3 5 7 9 11 14):
    # 13 -> idx 6, 9 -> idx 5 (on the midpoint), 10 -> idx 5.
    q = bd.quantize(padded([1.0, 0.8125, 0.5625, -0.625]))
    assert only_block(q) == (15, 15, [7, 6, 5, 8 | 5] + [0] * 28, False)
    assert bd.dequantize(q)[:4].tolist() == [1.0, 0.75, 0.625, -0.625]


def test_nonfinite_raise_names_the_first_index():
    x = torch.zeros(2, 64, dtype=torch.float16)
    x[0, 3] = 1.0
    x[1, 37] = float("nan")
    x[1, 50] = float("inf")
    with pytest.raises(ValueError, match=r"\(1, 37\)"):
        bd.quantize(x)
    with pytest.raises(ValueError, match=r"\(1, 37\)"):
        bd.quantize(x, method="mse")


@pytest.mark.parametrize("method", bd.METHODS)
def test_nonfinite_flag_mode(method):
    bits = [0x3C00, 0xFE00, 0x7C00, 0xFC00, 0x3800]       # 1.0, -NaN, +Inf, -Inf, 0.5
    x = torch.stack([fp16_from_bits(bits), fp16_from_bits([0x3C00])])
    q = bd.quantize(x, nonfinite="flag", method=method)
    assert q.invalid[:, 0].tolist() == [True, False]
    # Non-finite elements: magnitude 0, sign kept; E from the finite elements only.
    assert q.exp[:, 0].tolist() == [15, 15]
    assert q.codes[0, 0, 1:4].tolist() == [8, 0, 8]
    sign, half_units = bd.decode(q)
    assert sign[0, 0, :5].tolist() == [0, 1, 0, 1, 0] and half_units[0, 0, :5].tolist() == [8, 0, 0, 0, 4]
    # SPEC 10: a flagged block dequantizes to NaN as a whole; the clean row decodes as usual.
    x_hat = bd.dequantize(q)
    assert x_hat[0].isnan().all() and x_hat[1, 0].item() == 1.0 and not x_hat[1].isnan().any()
    # Only Inf/NaN: a zero block, still flagged.
    q = bd.quantize(fp16_from_bits([0x7C00, 0xFC01]), nonfinite="flag", method=method)
    assert only_block(q) == (0, 0, [0, 8] + [0] * 30, True)


def test_float32_overflowing_fp16_is_nonfinite():
    x = padded([1.0, 2.0, 3.0, 4.0, 5.0, 1e5], dtype=torch.float32)
    with pytest.raises(ValueError, match=r"\(5,\)"):
        bd.quantize(x)
    q = bd.quantize(x, nonfinite="flag")
    assert bool(q.invalid[0]) and q.codes[0, 5].item() == 0
    # 65519 rounds to 65504 (finite); 65520 is the tie above it and rounds to Inf (SPEC 1, RNE).
    assert not bool(bd.quantize(padded([65519.0], dtype=torch.float32), nonfinite="flag").invalid[0])
    with pytest.raises(ValueError):
        bd.quantize(padded([-65520.0], dtype=torch.float32))


def test_float32_input_rounds_to_nearest_even_fp16():
    # SPEC 1. In the block of max 1.0 (E = 15), an element at ex 14 has q = M >> 7; midpoint 13 of
    # dialect 14 is M = 1664. 1663.5 * 2^-11 is a tie between M 1663 and 1664 -> even 1664 -> q 13 ->
    # idx 6; 1662.5 * 2^-11 ties between 1662 and 1663 -> even 1662 -> q 12 -> idx 5.
    x = padded([1.0, 1663.5 * 2.0 ** -11, 1662.5 * 2.0 ** -11], dtype=torch.float32)
    q = bd.quantize(x)
    assert only_block(q)[:3] == (15, 14, [7, 6, 5] + [0] * 29)


def test_float64_input_rounds_once_to_fp16():
    # (1663.5 - 2^-20) * 2^-11 lies just below the tie: one rounding gives M 1663 (q 12, idx 5);
    # rounding to float32 first lands on the tie and then on M 1664 (q 13, idx 6).
    x = padded([1.0, (1663.5 - 2.0 ** -20) * 2.0 ** -11], dtype=torch.float64)
    assert only_block(bd.quantize(x))[2][:2] == [7, 5]


@pytest.mark.parametrize("method", ["two_stage", "mse"])
@pytest.mark.parametrize("block", [16, 32, 64])
def test_block_sizes_cut_the_last_dimension(block, method):
    gen = torch.Generator().manual_seed(block)
    x = torch.randn(2, 3, 128, generator=gen).to(torch.float16)
    q = bd.quantize(x, block=block, method=method)
    n = 128 // block
    assert q.exp.shape == q.dialect.shape == q.invalid.shape == (2, 3, n)
    assert q.codes.shape == (2, 3, n, block)
    alone = bd.quantize(x.reshape(-1, block), block=block, method=method)
    assert torch.equal(q.exp.reshape(-1), alone.exp.reshape(-1))
    assert torch.equal(q.dialect.reshape(-1), alone.dialect.reshape(-1))
    assert torch.equal(q.codes.reshape(-1, block), alone.codes.reshape(-1, block))
    assert bd.dequantize(q).shape == x.shape


def test_pad_true_pads_with_positive_zero():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 40, generator=gen)
    with pytest.raises(ValueError, match=r"\bx\b|pad"):
        bd.quantize(x)
    q = bd.quantize(x, pad=True)
    explicit = bd.quantize(torch.cat([x, torch.zeros(2, 24)], -1))
    for field in bd.Blocks._fields:
        assert torch.equal(getattr(q, field), getattr(explicit, field)), field
    assert q.codes[:, 1, 8:].eq(0).all()
    # Blocks carry no length, so dequantize returns the padded length.
    x_hat = bd.dequantize(q)
    assert x_hat.shape == (2, 64) and x_hat[:, 40:].eq(0).all()


def test_numpy_input_matches_torch():
    x = np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)
    a, b = bd.quantize(x), bd.quantize(torch.from_numpy(x))
    for field in bd.Blocks._fields:
        assert torch.equal(getattr(a, field), getattr(b, field))


def test_pack_hand_example():
    # SPEC 7, B = 16: word E << 4 | dialect = 21 << 4 | 10 = 0x15A, little-endian 5A 01; then codes,
    # element 2i in the low nibble of byte i.
    codes = torch.tensor([[list(range(16))]], dtype=torch.uint8)                   # (1, 1, 16)
    q = bd.Blocks(torch.tensor([[21]], dtype=torch.uint8), torch.tensor([[10]], dtype=torch.uint8),
                  codes, torch.zeros(1, 1, dtype=torch.bool))
    raw = bd.pack(q)
    assert raw.dtype == torch.uint8
    assert raw.tolist() == [[0x5A, 0x01, 0x10, 0x32, 0x54, 0x76, 0x98, 0xBA, 0xDC, 0xFE]]
    back = bd.unpack(raw, block=16)
    for field in ("exp", "dialect", "codes"):
        assert torch.equal(getattr(back, field), getattr(q, field)), field
    assert not back.invalid.any()
    # Largest fields: E = 30, dialect 15 -> 0x01EF.
    q = q._replace(exp=torch.tensor([[30]], dtype=torch.uint8), dialect=torch.tensor([[15]], dtype=torch.uint8))
    assert bd.pack(q)[0, :2].tolist() == [0xEF, 0x01]


# ---- bad arguments ------------------------------------------------------------------------------

@pytest.mark.parametrize("block", [8, 48, 128, "32", 32.0, True, None])
def test_quantize_bad_block(block):
    with pytest.raises(ValueError, match="block"):
        bd.quantize(torch.zeros(4, 64), block=block)


@pytest.mark.parametrize("kwargs, name", [
    ({"method": "greedy"}, "method"), ({"method": None}, "method"),
    ({"nonfinite": "ignore"}, "nonfinite"),
])
def test_quantize_bad_options(kwargs, name):
    with pytest.raises(ValueError, match=name):
        bd.quantize(torch.zeros(4, 32), **kwargs)


@pytest.mark.parametrize("x", [[1.0] * 32, torch.tensor(1.0), "text", torch.zeros(32, dtype=torch.complex64)])
def test_quantize_bad_input(x):
    with pytest.raises(ValueError, match=r"\bx\b"):
        bd.quantize(x)


def test_quantize_shape_not_multiple_of_block():
    with pytest.raises(ValueError, match=r"\bx\b"):
        bd.quantize(torch.zeros(3, 48), block=32)
    with pytest.raises(ValueError, match=r"\bx\b"):
        bd.quantize(torch.zeros(3, 32), block=64)


def _q(rows: int, k: int, block: int) -> bd.Blocks:
    return bd.quantize(torch.randn(rows, k, generator=torch.Generator().manual_seed(rows + k)), block=block)


def test_linear_bad_arguments():
    with pytest.raises(ValueError, match="q_act|q_weight"):
        bd.linear(_q(2, 64, 16), _q(3, 64, 32))                  # mismatched block sizes
    with pytest.raises(ValueError, match="q_act|q_weight"):
        bd.linear(_q(2, 64, 32), _q(3, 96, 32))                  # mismatched K
    with pytest.raises(ValueError, match="q_weight"):
        bd.linear(_q(2, 64, 32), bd.quantize(torch.zeros(2, 3, 64)))   # weight must be (N, K)
    with pytest.raises(ValueError, match="q_act"):
        bd.linear(torch.zeros(2, 64), _q(3, 64, 32))
    with pytest.raises(ValueError, match="q_weight"):
        bd.linear(_q(2, 64, 32), torch.zeros(3, 64))


def test_dequantize_and_pack_bad_arguments():
    with pytest.raises(ValueError, match=r"\bq\b"):
        bd.dequantize(torch.zeros(2, 32))
    with pytest.raises(ValueError, match=r"\bq\b"):
        bd.pack(torch.zeros(2, 32))


def test_unpack_bad_arguments():
    raw = bd.pack(_q(2, 64, 32))
    with pytest.raises(ValueError, match="raw"):
        bd.unpack(raw[:, :-1], block=32)                          # not a whole number of blocks
    with pytest.raises(ValueError, match="block"):
        bd.unpack(raw, block=8)
