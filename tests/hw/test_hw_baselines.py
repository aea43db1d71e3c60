"""Baseline block MACs (bench.hw.baseline_macs) against a Python reference on random vectors."""
from __future__ import annotations

import random

import pytest
from amaranth.sim import Simulator

from bench.hw.baseline_macs import FORMATS, make_mac, minifloat_value_units, reference_block_sum
from golden.formatbook import FORMATBOOK_ROWS

LANES = 32
VECTORS = 40


def _lanes_int(codes, bits):
    return sum(c << (bits * k) for k, c in enumerate(codes))


def _extreme_vectors(fmt, bits, lanes):
    """All-max-magnitude operands of both signs: the adder tree's widest sums."""
    if fmt in ("int4", "int8"):
        lowest = 1 << (bits - 1)                    # most negative two's complement code
        return [([lowest] * lanes, [lowest] * lanes, 0, 0),
                ([lowest] * lanes, [lowest - 1] * lanes, 0, 0)]
    top = (1 << (bits - 1)) - 1                     # largest positive magnitude code
    neg = top | (1 << (bits - 1))
    vectors = [([top] * lanes, [top] * lanes, 0, 0), ([top] * lanes, [neg] * lanes, 0, 0)]
    if fmt == "bd":
        vectors += [([top] * lanes, [neg] * lanes, 0, 0), ([neg] * lanes, [neg] * lanes, 15, 1)]
    return vectors


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_mac_matches_reference(fmt):
    rng = random.Random(hash(fmt) & 0xFFFF)
    dut = make_mac(fmt, LANES)
    bits = dut.FORMAT.bits
    vectors = _extreme_vectors(fmt, bits, LANES)
    for _ in range(VECTORS):
        vectors.append(([rng.randrange(1 << bits) for _ in range(LANES)],
                        [rng.randrange(1 << bits) for _ in range(LANES)],
                        rng.randrange(16), rng.randrange(16)))
    results = []

    async def bench(ctx):
        pending = []
        for vector in vectors + [None, None]:
            if vector is not None:
                a, w, da, dw = vector
                ctx.set(dut.a, _lanes_int(a, bits))
                ctx.set(dut.w, _lanes_int(w, bits))
                if fmt == "bd":
                    ctx.set(dut.a_dialect, da)
                    ctx.set(dut.w_dialect, dw)
            await ctx.tick()
            pending.append(ctx.get(dut.sum))
        # Two registers (input, output): the sum of the vector set before tick t is read after tick t + 1.
        results.extend(pending[1:1 + len(vectors)])

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(results) == len(vectors)
    for (a, w, da, dw), got in zip(vectors, results):
        assert got == reference_block_sum(fmt, a, w, da, dw), (fmt, a, w, da, dw)


def test_minifloat_reference_values():
    # E2M1 magnitudes in units of 0.5 are the OCP MX E2M1 values {0, .5, 1, 1.5, 2, 3, 4, 6} doubled,
    # which is also dialect 7 of the formatbook (SPEC 2).
    assert [minifloat_value_units(c, 2, 1) for c in range(8)] == list(FORMATBOOK_ROWS[7])
    assert [minifloat_value_units(c, 2, 1) for c in range(8, 16)] == [-v for v in FORMATBOOK_ROWS[7]]
    # E2M3: largest 7.5, smallest subnormal 0.125 (units of 1/8).
    assert minifloat_value_units(0b011111, 2, 3) == 60
    assert minifloat_value_units(0b000001, 2, 3) == 1


def test_bad_arguments():
    with pytest.raises(ValueError, match="fmt"):
        make_mac("fp5")
    with pytest.raises(ValueError, match="lanes"):
        make_mac("int4", 0)
