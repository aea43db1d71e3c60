"""The float parts of the rounded accumulation modes (bd_hw/float_add.py, SPEC 6.1) against numpy.

Exhaustive where the inputs are small: FloatWiden on all 65536 FP16 patterns, BlockToFloat on every
15-bit block sum and every 6-bit exponent sum in both formats, the FP16 adder on every FP16 value
against 256 operands that cover every exponent field, both signs and the mantissa ends. Dense random
and corner pairs for the FP32 adder, and for the FP32 loop's adder without special cases on its
domain. The sweeps run through Verilator (tests/hw/verilated_comb.py); a few hundred corners also
run in the Amaranth simulator, and FloatAccumulator runs there as a stream against golden.accumulate
under random gaps and back-pressure, in long walks that exercise the registered exponent
differences of its loop.
"""
import numpy as np
import pytest
import torch
from amaranth.sim import Simulator

from bd_hw.float_add import (FP16, FP32, BlockToFloat, FloatAccumulator, FloatAdder, FloatWiden,
                              conversion_is_exact)
from golden import accumulate
from tests.hw.testing import run_stream
from tests.hw.verilated_comb import Compiled

NP_TYPES = {"fp16": (np.float16, np.uint16), "fp32": (np.float32, np.uint32)}
SUM_BITS = 15                                     # block sums at B = 64 (the widest)


def expected_bits(values: np.ndarray, fmt) -> np.ndarray:
    """Bits of a numpy array in ``fmt``'s type, every NaN the format's positive quiet NaN."""
    kind, uint = NP_TYPES[fmt.name]
    bits = values.astype(kind).view(uint).astype(np.int64)
    return np.where(np.isnan(values), fmt.quiet_nan, bits)


def as_float(bits: np.ndarray, fmt) -> np.ndarray:
    kind, uint = NP_TYPES[fmt.name]
    return bits.astype(uint).view(kind)


def numpy_add(a_bits: np.ndarray, b_bits: np.ndarray, fmt) -> np.ndarray:
    """fl(a + b): FP16 sums are exact in float64 and rounded once; FP32 by numpy's float32 add."""
    a, b = as_float(a_bits, fmt), as_float(b_bits, fmt)
    with np.errstate(all="ignore"):
        if fmt is FP16:
            total = (a.astype(np.float64) + b.astype(np.float64)).astype(np.float16)
        else:
            total = a + b
    return expected_bits(total, fmt)


def simulate(dut, ports_in, port_out, vectors) -> list[int]:
    out = []

    async def bench(ctx):
        for values in vectors:
            for port, value in zip(ports_in, values):
                ctx.set(port, int(value))
            out.append(ctx.get(port_out))
    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    return out


def corner_operands(fmt) -> np.ndarray:
    """Every exponent field with the smallest, a middle and the largest mantissa, both signs."""
    E, M = fmt.exp_bits, fmt.man_bits
    exps = range(1 << E) if E <= 5 else sorted({0, 1, 2, 3, 60, 100, 126, 127, 128, 150, 200, 253, 254, 255})
    mans = (0, 1, 2, 1 << (M - 1), (1 << M) - 2, (1 << M) - 1)
    return np.array([s << (E + M) | e << M | man for s in (0, 1) for e in exps for man in mans], dtype=np.int64)


@pytest.fixture(scope="module")
def verilated(tmp_path_factory):
    """The combinational parts compiled once per test session."""
    root = tmp_path_factory.mktemp("float_add")
    cache = {}

    def get(name, make):
        if name not in cache:
            cache[name] = Compiled(make(), root / name)
        return cache[name]
    return get


# ---- Amaranth simulator: corners -----------------------------------------------------------------

@pytest.mark.parametrize("fmt", [FP16, FP32], ids=lambda f: f.name)
def test_adder_corners_in_the_amaranth_simulator(fmt):
    ops = corner_operands(fmt)
    rng = np.random.default_rng(1)
    pairs = np.stack([rng.choice(ops, 400), rng.choice(ops, 400)], 1)
    dut = FloatAdder(fmt)
    got = simulate(dut, (dut.a, dut.b), dut.sum, pairs)
    assert got == numpy_add(pairs[:, 0], pairs[:, 1], fmt).tolist()


def test_bad_parameters_are_value_errors():
    with pytest.raises(ValueError, match="fmt"):
        FloatAdder("fp16")
    with pytest.raises(ValueError, match="sum_bits"):
        BlockToFloat(40, FP16)
    with pytest.raises(ValueError, match="fmt"):
        BlockToFloat(14, "bf16")


# ---- Verilator sweeps ----------------------------------------------------------------------------

def test_widen_every_fp16_pattern(verilated):
    widen = verilated("widen", FloatWiden)
    every = np.arange(1 << 16)
    got = widen(half=every)["single"]
    assert np.array_equal(got, expected_bits(as_float(every, FP16).astype(np.float32), FP32))


@pytest.mark.parametrize("fmt", [FP16, FP32], ids=lambda f: f.name)
def test_block_to_float_every_sum_and_exponent(fmt, verilated):
    """All 2^15 block sums x all 64 exponent sums (beyond SPEC's 60 too), against float64 rounded
    once by numpy (IEEE: a zero sum is +0.0, a negative one too small for FP16 is -0.0, which adds
    like +0.0 to the running sum)."""
    convert = verilated(f"convert_{fmt.name}", lambda: BlockToFloat(SUM_BITS, fmt))
    s = np.arange(-(1 << (SUM_BITS - 1)), 1 << (SUM_BITS - 1))
    e = np.arange(64)
    s_all, e_all = np.repeat(s, len(e)), np.tile(e, len(s))
    got = convert(sum=s_all & ((1 << SUM_BITS) - 1), exp=e_all)["value"]
    with np.errstate(over="ignore"):
        value = (s_all.astype(np.float64) * np.exp2(e_all - 36.0)).astype(NP_TYPES[fmt.name][0])
    expected = expected_bits(value, fmt)      # a zero sum is +0.0; a tiny negative one rounds to -0.0
    assert np.array_equal(got, expected)
    assert conversion_is_exact(SUM_BITS, fmt) == (fmt is FP32)
    if fmt is FP16:
        assert np.isinf(value).sum() > 1000 and (np.abs(value[value != 0]) < 2.0 ** -14).sum() > 1000


def test_fp16_adder_every_accumulator(verilated):
    """Every FP16 pattern (Inf and NaN included) plus 256 operands: 16.8 million sums."""
    adder = verilated("adder_fp16", lambda: FloatAdder(FP16))
    every = np.arange(1 << 16)
    operands = corner_operands(FP16)
    operands = np.unique(np.concatenate([operands, np.random.default_rng(2).integers(0, 1 << 16, 256)]))[:256]
    for chunk in np.array_split(operands, 4):
        a, b = np.repeat(every, len(chunk)), np.tile(chunk, len(every))
        got = adder(a=a, b=b)["sum"]
        assert np.array_equal(got, numpy_add(a, b, FP16))


def test_fp32_adder_dense_random_and_corners(verilated):
    """4 million FP32 pairs: random bits, random with nearby exponents (cancellation, ties, carries)
    and corner operands against each other."""
    adder = verilated("adder_fp32", lambda: FloatAdder(FP32))
    rng = np.random.default_rng(3)
    n = 1 << 20
    a = rng.integers(0, 1 << 32, 4 * n, dtype=np.int64)
    b = rng.integers(0, 1 << 32, 4 * n, dtype=np.int64)
    # Nearby magnitudes: b is a with a few low bits and the sign changed, or a few exponent steps away.
    b[n:2 * n] = a[n:2 * n] ^ rng.integers(0, 1 << 8, n) ^ (rng.integers(0, 2, n) << 31)
    b[2 * n:3 * n] = (a[2 * n:3 * n] + (rng.integers(-30, 31, n) << 23)) & 0xFFFFFFFF
    ops = corner_operands(FP32)
    a[3 * n:], b[3 * n:] = rng.choice(ops, n), rng.choice(ops, n)
    got = adder(a=a, b=b)["sum"]
    assert np.array_equal(got, numpy_add(a, b, FP32))


def accumulator_domain_fp32(rng, n) -> np.ndarray:
    """FP32 values the FP32 accumulator's loop can hold: zero, or normal multiples of 2^-36 of at
    most 2^63 (exponent fields 91 to 190; the block values' 15 significant bits or any 24)."""
    exp = rng.integers(91, 191, n)
    man = rng.integers(0, 1 << 23, n)
    man = np.where(rng.integers(0, 2, n) == 1, man & ~((1 << 9) - 1), man)     # block-value-like
    man = np.where(exp == 190, 0, man)                                         # 2^63 at most
    man = np.where(exp < 91 + 23, man & ~((1 << (91 + 23 - exp)) - 1), man)    # multiples of 2^-36
    bits = rng.integers(0, 2, n) << 31 | exp << 23 | man
    return np.where(rng.random(n) < 0.01, 0, bits)


def test_fp32_loop_adder_on_the_accumulator_domain(verilated):
    """The FP32 accumulator's adder (ieee=False: no special cases, no subnormal limit) on 4 million
    pairs of normal or zero operands whose sum is normal or zero, as in its loop: random from its
    domain and with nearby exponents (cancellation, ties, carries)."""
    adder = verilated("adder_fp32_loop", lambda: FloatAdder(FP32, ieee=False))
    rng = np.random.default_rng(6)
    n = 1 << 20
    a, b = accumulator_domain_fp32(rng, 4 * n), accumulator_domain_fp32(rng, 4 * n)
    b[n:2 * n] = (a[n:2 * n] ^ (1 << 31)) + rng.integers(-(1 << 12), 1 << 12, n) * (1 << 9)   # cancel
    b[2 * n:3 * n] = a[2 * n:3 * n] - (rng.integers(0, 3, n) << 23) + rng.integers(-512, 512, n)  # d <= 2
    total = numpy_add(a, b, FP32)

    def normal_or_zero(x):
        field = x >> 23 & 0xFF
        return ((x & 0x7FFFFFFF) == 0) | ((field >= 1) & (field <= 254))
    keep = normal_or_zero(a) & normal_or_zero(b) & normal_or_zero(total)
    got = adder(a=a[keep], b=b[keep])["sum"]
    assert np.array_equal(got, total[keep])
    assert keep.mean() > 0.99


def test_fp32_running_sum_cannot_leave_the_loop_domain():
    """The argument of FloatAccumulator's docstring, on the numbers: from 2^63, or just below it,
    adding the largest block value (either sign) stays at most 2^63; the smallest non-zero block
    value, 2^-36, is normal."""
    largest = np.float32(14400 * 2.0 ** 24)                  # |S| <= 225 * 64, E_a + E_w <= 60
    top = np.float32(2.0 ** 63)
    below = np.nextafter(top, np.float32(0))
    for acc in (top, below, -top, -below):
        for v in (largest, -largest):
            assert abs(acc + v) <= top
    assert np.float32(2.0 ** -36) >= np.finfo(np.float32).tiny


# ---- FloatAccumulator: a stream, against golden.accumulate -----------------------------------------

@pytest.mark.parametrize("fmt", [FP16, FP32], ids=lambda f: f.name)
def test_accumulator_stream_matches_the_golden_model(fmt):
    rng = np.random.default_rng(4)
    beats, sums = [], []
    for length in (1, 3, 7, 2, 12, 1, 5, 9):
        s = rng.integers(-14400, 14401, length)
        e = rng.integers(2, 61, length)
        if length == 2:                            # overflow, then the opposite Inf: NaN in FP16
            s, e = np.array([14400, -14400]), np.array([60, 60])
        sums.append((s, e))
        for k, (sk, ek) in enumerate(zip(s, e)):
            beats.append(int(sk) & ((1 << SUM_BITS) - 1) | int(ek) << SUM_BITS | int(k == length - 1) << (SUM_BITS + 6))
    dut = FloatAccumulator(SUM_BITS, fmt)
    run = run_stream(dut, beats, expected=len(sums), valid_prob=0.7, ready_prob=0.6, seed=5, tail=8)
    for (s, e), got in zip(sums, run.outputs):
        values = torch.ldexp(torch.tensor(s, dtype=torch.float32), torch.tensor(e - 36))
        want = accumulate.add_in_order(values[:, None], fmt.name)
        want_bits = int(want.view(torch.int32)) & 0xFFFFFFFF
        if fmt is FP16:                            # the accumulator's FP16 bits, widened
            got = int(expected_bits(as_float(np.array([got]), FP16).astype(np.float32), FP32)[0])
        assert got == want_bits
    assert FloatAccumulator.LATENCY == 3


@pytest.mark.parametrize("fmt", [FP16, FP32], ids=lambda f: f.name)
def test_accumulator_long_walks_match_the_golden_model(fmt):
    """800 beats in groups of 1 to 60, exponent sums in narrow windows (the running sum and the terms
    a place or two apart: cancellation, the near path, carries), across the FP16 subnormals
    (exponent sums 0 to 12) and overflow (50 to 60), without gaps and under back-pressure: every
    step's exponent bookkeeping (the registered differences) meets every kind of result."""
    rng = np.random.default_rng(7 if fmt is FP16 else 8)
    sums = []
    windows = ((28, 31), (0, 4), (8, 12), (40, 43), (50, 60), (2, 60))
    while sum(len(s) for s, _ in sums) < 800:
        length = int(rng.integers(1, 61))
        low, high = windows[len(sums) % len(windows)]
        s = rng.integers(-14400, 14401, length)
        s = np.where(rng.random(length) < 0.3, -np.roll(s, 1), s)          # undo the previous term
        e = rng.integers(low, high + 1, length)
        sums.append((s, e))
    walk(fmt, sums, seed=9)


def walk(fmt, sums, seed):
    """Groups of (block sums, exponent sums) through FloatAccumulator as a stream, without gaps
    mostly and under back-pressure, each group's total against golden.accumulate."""
    beats = [int(sk) & ((1 << SUM_BITS) - 1) | int(ek) << SUM_BITS | int(k == len(s) - 1) << (SUM_BITS + 6)
             for s, e in sums for k, (sk, ek) in enumerate(zip(s, e))]
    run = run_stream(FloatAccumulator(SUM_BITS, fmt), beats, expected=len(sums), valid_prob=0.9,
                     ready_prob=0.8, seed=seed, tail=4)
    for n, ((s, e), got) in enumerate(zip(sums, run.outputs)):
        values = torch.ldexp(torch.tensor(s, dtype=torch.float32), torch.tensor(e - 36))
        want = int(accumulate.add_in_order(values[:, None], fmt.name).view(torch.int32)) & 0xFFFFFFFF
        if fmt is FP16:
            got = int(expected_bits(as_float(np.array([got]), FP16).astype(np.float32), FP32)[0])
        assert got == want, f"group {n}: {got:#010x} != {want:#010x}"



def test_fp16_accumulator_terms_that_round_into_the_next_binade():
    """FP16 block values whose rounding carries into the exponent (|S| = 2^k - j with the top 11
    bits ones and the rest rounding up: 4095, 8190, 8191, 16380 ... 16383, also into the smallest
    normal from the subnormals): the loop's exponent differences with such a term are chosen by
    that carry, which no random sum above is likely to produce."""
    rng = np.random.default_rng(11)
    carrying = np.array([4095, 8190, 8191, 16380, 16381, 16382, 16383])
    sums = []
    while sum(len(s) for s, _ in sums) < 300:
        length = int(rng.integers(1, 9))
        s = np.where(rng.random(length) < 0.6, rng.choice(carrying, length), rng.integers(1, 16384, length))
        s = np.where(rng.random(length) < 0.5, -s, s)
        low = int(rng.integers(0, 50))
        e = rng.integers(low, low + 4, length)                   # neighbours: every path of the adder
        sums.append((s, e))
    walk(FP16, sums, seed=12)
