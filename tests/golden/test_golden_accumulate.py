"""bd.linear's accumulation modes (SPEC 6.1) against an independent model.

The model (tests/golden/conftest.py: accumulate_values, linear_accumulate_reference) takes the exact
block values from the scalar reference of SPEC 6 and adds them with Python floats and numpy float16 /
float32 scalars. Exhaustive where the inputs are small: the FP16 rounding of every block value that
can occur, and one FP16 step from every FP16 accumulator; then corner sequences (overflow to Inf,
Inf + (-Inf), FP16 subnormals, cancellation, ties), long vectors, every vector family of
golden/vectors.py and real SmolLM2 layers, through bd.linear.
"""

import numpy as np
import pytest
import torch

from golden import accumulate, bd, vectors
from golden.spec import ACCUMULATE_MODES, MAX_EXP_SUM, MAX_PRODUCT, PRODUCT_EXP_OFFSET, check_accumulate

from .conftest import real_captures

ROUNDED = ("fp32", "fp16")
QUIET_NAN = 0x7FC00000
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def bits(t: torch.Tensor) -> torch.Tensor:
    return t.contiguous().view(torch.int32)


def numpy_bits(x: np.ndarray) -> np.ndarray:
    """FP32 bits of a numpy array (any float type), every NaN the quiet NaN of SPEC 6.1."""
    out = x.astype(np.float32).view(np.uint32).astype(np.int64)
    return np.where(np.isnan(x), QUIET_NAN, out)


def torch_bits(t: torch.Tensor) -> np.ndarray:
    return bits(t).numpy().astype(np.int64) & 0xFFFFFFFF


# ---- validation -----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["FP16", "bf16", "", None, 16, True])
def test_bad_accumulate_is_a_value_error_naming_it(bad):
    q = bd.quantize(torch.ones(2, 32))
    with pytest.raises(ValueError, match="accumulate"):
        bd.linear(q, q, accumulate=bad)
    with pytest.raises(ValueError, match="accumulate"):
        check_accumulate(bad)


def test_modes_are_the_spec_modes():
    assert ACCUMULATE_MODES == ("exact", "fp32", "fp16") and accumulate.ROUNDED_MODES == ROUNDED
    with pytest.raises(ValueError, match="mode"):
        accumulate.add_in_order(torch.zeros(2, 1), "exact")


# ---- the rounding steps, exhaustively -----------------------------------------------------------------

def test_fl16_of_every_possible_block_value_matches_numpy():
    """Every V = S * 2^e with |S| <= 225 * 64 and e in -34 .. 24: torch's float32 -> float16 (what
    add_in_order does with one block) against numpy's float64 -> float16."""
    s = np.arange(-MAX_PRODUCT * 64, MAX_PRODUCT * 64 + 1, dtype=np.float64)
    e = np.arange(2 - PRODUCT_EXP_OFFSET, MAX_EXP_SUM - PRODUCT_EXP_OFFSET + 1)
    values = (s[None, :] * np.exp2(e)[:, None]).ravel()
    with np.errstate(over="ignore"):
        expected = values.astype(np.float16) + np.float16(0.0)        # +0 + fl16(V): -0 becomes +0
    got = accumulate.add_in_order(torch.from_numpy(values.astype(np.float32))[None], "fp16")
    assert np.array_equal(torch_bits(got), numpy_bits(expected))
    assert np.isinf(expected).sum() > 1000 and (np.abs(expected) < 2.0 ** -14).sum() > 1000   # both edges met


# FP16 operands of one step: every exponent field (Inf and NaN included), both signs, the mantissas at
# the ends and in the middle.
_STEP_OPERANDS = np.array([s << 15 | ex << 10 | man for s in (0, 1) for ex in range(32)
                           for man in (0, 1, 0x155, 0x200, 0x3FF)], dtype=np.uint16).view(np.float16)


def test_fp16_step_from_every_accumulator_matches_numpy():
    """fl16(acc + v) for all 65536 FP16 accumulators (Inf and NaN included) and 320 operands, against
    the exact float64 sum rounded once by numpy."""
    every = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    for chunk in np.array_split(_STEP_OPERANDS, 8):
        acc = np.repeat(every, len(chunk))
        v = np.tile(chunk, len(every))
        with np.errstate(over="ignore", invalid="ignore"):
            first = (0.0 + acc.astype(np.float64)).astype(np.float16)           # +0 + acc
            expected = (first.astype(np.float64) + v.astype(np.float64)).astype(np.float16)
        values = torch.from_numpy(np.stack([acc, v]).astype(np.float32))
        got = accumulate.add_in_order(values, "fp16")
        assert np.array_equal(torch_bits(got), numpy_bits(expected))


def _random_block_values(gen: torch.Generator, shape, spread: tuple[int, int]) -> torch.Tensor:
    """Block values S * 2^e, |S| <= 225 * 32, e drawn in spread (float32, exact)."""
    s = torch.randint(-MAX_PRODUCT * 32, MAX_PRODUCT * 32 + 1, shape, generator=gen).to(torch.float32)
    e = torch.randint(spread[0], spread[1] + 1, shape, generator=gen)
    return torch.ldexp(s, e)


@pytest.mark.parametrize("mode", ROUNDED)
@pytest.mark.parametrize("spread", [(-34, 24), (-34, -20), (-5, 3), (10, 24)])
def test_random_sequences_match_the_scalar_model(mode, spread, spec):
    gen = torch.Generator().manual_seed(hash((mode, spread)) & 0xFFFF)
    values = _random_block_values(gen, (40, 60), spread)
    got = accumulate.add_in_order(values, mode)
    expected = [spec.accumulate_values(values[:, i].tolist(), mode) for i in range(values.shape[1])]
    assert torch_bits(got).tolist() == expected


def _corner_sequences() -> dict[str, list[float]]:
    big, fp16_max = 2.0 ** 24 * 14400, 65504.0
    return {
        "overflow_to_inf": [fp16_max, 16.0],                     # 65520: rounds past 65504
        "just_below_overflow": [fp16_max, 15.0],                 # 65519: rounds to 65504
        "negative_overflow": [-fp16_max, -32.0],
        "block_value_overflows": [big],
        "inf_minus_inf": [big, -big],
        "inf_minus_inf_after_sum": [40000.0, 40000.0, -70000.0],
        "inf_then_finite": [big, -1.0, 3.0],
        "nan_stays": [big, -big, 1.0, big],
        "fp16_subnormals": [2.0 ** -24, 2.0 ** -24, 3 * 2.0 ** -25, -2.0 ** -23],
        "below_half_the_smallest_subnormal": [2.0 ** -26, -2.0 ** -26, 2.0 ** -34],
        "subnormal_tie": [2.0 ** -25, 2.0 ** -24 * 3],           # ties of the FP16 conversion
        "cancel_to_zero": [1000.0, -1000.0],
        "cancellation_order": [2.0 ** 30, 1.0, -2.0 ** 30],      # fp32 loses the 1, exact keeps it
        "fp32_tie_even": [2.0 ** 24, 1.0, 1.0],
        "fp16_tie_even": [2048.0, 1.0, 1.0, 3.0],
        "zeros": [0.0, 0.0],
    }


@pytest.mark.parametrize("mode", ROUNDED)
@pytest.mark.parametrize("name", sorted(_corner_sequences()))
def test_corner_sequences_match_the_scalar_model(mode, name, spec):
    sequence = _corner_sequences()[name]
    got = accumulate.add_in_order(torch.tensor(sequence, dtype=torch.float32)[:, None], mode)
    assert torch_bits(got).tolist() == [spec.accumulate_values(sequence, mode)]


def test_corner_sequences_reach_what_they_are_named_for(spec):
    """The corners hit Inf, the positive quiet NaN, FP16 subnormals and order dependence."""
    results = {name: {mode: spec.accumulate_values(seq, mode) for mode in ROUNDED}
               for name, seq in _corner_sequences().items()}
    assert results["overflow_to_inf"]["fp16"] == 0x7F800000
    assert results["negative_overflow"]["fp16"] == 0xFF800000
    assert results["just_below_overflow"]["fp16"] == 0x477FE000          # 65504.0
    assert results["inf_minus_inf"]["fp16"] == QUIET_NAN
    assert results["inf_minus_inf_after_sum"]["fp16"] == QUIET_NAN
    assert results["fp16_subnormals"]["fp16"] not in (0, QUIET_NAN)
    assert results["cancellation_order"]["fp32"] == 0 and results["cancel_to_zero"]["fp16"] == 0
    assert results["fp32_tie_even"]["fp32"] == 0x4B800000                # 2^24: both ties to even


# ---- bd.linear end to end -----------------------------------------------------------------------------

def _blocks(exp, dialect, codes) -> bd.Blocks:
    exp = torch.as_tensor(exp, dtype=torch.uint8)
    return bd.Blocks(exp, torch.as_tensor(dialect, dtype=torch.uint8), torch.as_tensor(codes, dtype=torch.uint8),
                     torch.zeros(exp.shape, dtype=torch.bool))


def _random_blocks(exps: torch.Tensor, block: int, seed: int) -> bd.Blocks:
    """Random dialects and codes under the given block exponents (zero blocks kept valid)."""
    gen = torch.Generator().manual_seed(seed)
    dialect = torch.randint(16, exps.shape, generator=gen)
    codes = torch.randint(16, exps.shape + (block,), generator=gen)
    zero = exps == 0
    dialect[zero] = 0
    codes[zero] &= 8
    return _blocks(exps, dialect, codes)


def _check_every_mode(q_act, q_weight, spec, bits_equal):
    for mode in ROUNDED:
        got = bd.linear(q_act, q_weight, accumulate=mode)
        assert bits_equal(got, spec.linear_accumulate_reference(q_act, q_weight, mode)), mode
    assert bits_equal(bd.linear(q_act, q_weight, accumulate="exact"), bd.linear(q_act, q_weight))


@pytest.mark.parametrize("block", (16, 32, 64))
def test_vector_families_in_every_mode(block, spec, bits_equal):
    rows = [x for x in vectors.corner_blocks(block).values()]
    rows += [vectors.random_blocks(24, block, family=f, seed=3) for f in vectors.RANDOM_FAMILIES]
    x = torch.cat(rows)
    x = x[: x.shape[0] // 8 * 8].reshape(-1, 8 * block)              # 8 blocks per row
    q_act = bd.quantize(x, block, nonfinite="flag")
    weights = torch.cat([vectors.random_blocks(8, block, family=f, seed=4) for f in vectors.RANDOM_FAMILIES])
    q_weight = bd.quantize(weights.reshape(-1, 8 * block), block, method="mse")
    assert q_act.invalid.any()                                        # the nonfinite corner rows
    _check_every_mode(q_act, q_weight, spec, bits_equal)


def test_exponent_extremes_overflow_cancel_and_underflow(spec, bits_equal):
    """Block exponents at both ends: FP16 overflow (E_a + E_w = 60), Inf + (-Inf), values in the
    FP16 subnormals and below them, exact cancellation."""
    a_exp = torch.tensor([[30, 30, 1, 2, 15, 30], [1, 1, 2, 3, 1, 2], [20, 20, 20, 20, 20, 20],
                          [30, 0, 30, 5, 30, 30]])
    w_exp = torch.tensor([[30, 30, 3, 1, 15, 30], [4, 2, 1, 1, 3, 1], [15, 15, 15, 15, 15, 15],
                          [30, 30, 0, 30, 30, 30], [12, 13, 11, 12, 13, 14]])
    q_act = _random_blocks(a_exp, 32, 6)
    q_weight = _random_blocks(w_exp, 32, 7)
    # Row 0, block 1 cancels block 0 exactly against weight row 0 (same codes, signs flipped).
    q_act.codes[0, 1], q_act.dialect[0, 1] = q_act.codes[0, 0] ^ 8, q_act.dialect[0, 0]
    q_weight.codes[0, 1], q_weight.dialect[0, 1] = q_weight.codes[0, 0], q_weight.dialect[0, 0]
    _check_every_mode(q_act, q_weight, spec, bits_equal)
    fp16 = bits(bd.linear(q_act, q_weight, accumulate="fp16"))
    assert (fp16 == 0x7F800000).any() or (fp16 == -0x800000).any()     # some output overflowed


def test_inf_plus_minus_inf_is_the_positive_quiet_nan(spec, bits_equal):
    """Two blocks whose values overflow FP16 with opposite signs: NaN 0x7FC00000, not x86's negative NaN."""
    codes = torch.full((1, 2, 32), 7)
    codes[0, 1] |= 8
    q_act = _blocks([[30, 30]], [[0, 0]], codes)
    q_weight = _blocks([[30, 30]], [[0, 0]], torch.full((1, 2, 32), 7))
    got = bd.linear(q_act, q_weight, accumulate="fp16")
    assert bits(got).tolist() == [[QUIET_NAN]]
    assert bits(bd.linear(q_act, q_weight, accumulate="fp32")).tolist() == [[0]]
    _check_every_mode(q_act, q_weight, spec, bits_equal)


def test_long_vectors(spec, bits_equal):
    """K = 8192 at B = 32 (256 blocks, the hardware's default max_blocks)."""
    gen = torch.Generator().manual_seed(9)
    a_exp = torch.randint(8, 22, (3, 256), generator=gen)
    w_exp = torch.randint(8, 22, (4, 256), generator=gen)
    _check_every_mode(_random_blocks(a_exp, 32, 10), _random_blocks(w_exp, 32, 11), spec, bits_equal)


def test_real_smollm2_layers(spec, bits_equal):
    """Captured inputs and weights of three SmolLM2 layers: bd.linear in every mode against the model,
    and FP16 accumulation really differs from the exact sum somewhere (FP32 rarely does: on these
    432 outputs never; the corner "cancellation_order" shows it can)."""
    differs = {mode: 0 for mode in ROUNDED}
    for name, (activation, weight) in real_captures().items():
        q_act = bd.quantize(activation[:6], method="two_stage")
        q_weight = bd.quantize(weight[:24], method="mse")
        _check_every_mode(q_act, q_weight, spec, bits_equal)
        exact = bd.linear(q_act, q_weight)
        for mode in ROUNDED:
            differs[mode] += int((bd.linear(q_act, q_weight, accumulate=mode) != exact).sum())
    assert differs["fp16"] > 0, differs


@pytest.mark.parametrize("mode", ROUNDED)
def test_tiles_and_float64_products_give_the_same_bits(mode, monkeypatch, bits_equal):
    """Small tiles (many of them, ragged at the edges) and the float64 block products other devices
    use give the bits of the default plan."""
    gen = torch.Generator().manual_seed(12)
    q_act = bd.quantize(torch.randn(2, 5, 640, generator=gen) * 300)
    q_weight = bd.quantize(torch.randn(37, 640, generator=gen) * 300, method="mse")
    expected = bd.linear(q_act, q_weight, accumulate=mode)
    assert expected.shape == (2, 5, 37)
    monkeypatch.setattr(accumulate, "_TEMPORARY", 20 * 3 * 7)
    monkeypatch.setattr(accumulate, "_ROW_TILE", 3)
    assert bits_equal(bd.linear(q_act, q_weight, accumulate=mode), expected)
    monkeypatch.undo()
    a, w = bd.dequantize(q_act).reshape(-1, 640), bd.dequantize(q_weight)
    monkeypatch.setattr(accumulate, "_products_dtype", lambda device: torch.float64)
    assert bits_equal(accumulate.linear(a, w, 32, mode).reshape(2, 5, 37), expected)


@pytest.mark.parametrize("mode", ROUNDED)
def test_invalid_blocks_empty_shapes_and_k_zero(mode, bits_equal):
    x = vectors.random_blocks(8, 32, family="gaussian", seed=12).reshape(2, 128)
    x[1, 40] = float("inf")
    q = bd.quantize(x, nonfinite="flag")
    q_weight = bd.quantize(vectors.random_blocks(12, 32, family="uniform", seed=13).reshape(3, 128))
    got = bd.linear(q, q_weight, accumulate=mode)
    assert (bits(got[1]) == QUIET_NAN).all() and not got[0].isnan().any()
    none = bd.quantize(torch.zeros(0, 128))
    assert bd.linear(none, q_weight, accumulate=mode).shape == (0, 3)
    empty = bd.quantize(torch.zeros(2, 0))
    assert bits_equal(bd.linear(empty, bd.quantize(torch.zeros(4, 0)), accumulate=mode), torch.zeros(2, 4))


@CUDA
@pytest.mark.parametrize("mode", ROUNDED)
def test_cuda_keeps_the_device_and_the_bits(mode, bits_equal):
    gen = torch.Generator().manual_seed(14)
    q_act = bd.quantize(torch.randn(16, 1024, generator=gen) * 1000)
    q_weight = bd.quantize(torch.randn(40, 1024, generator=gen) * 1000, method="mse")
    expected = bd.linear(q_act, q_weight, accumulate=mode)
    got = bd.linear(bd.Blocks(*(t.cuda() for t in q_act)), bd.Blocks(*(t.cuda() for t in q_weight)),
                    accumulate=mode)
    assert got.device.type == "cuda" and bits_equal(got.cpu(), expected)
