"""The MACs of the comparison (bench.hw.baseline_macs): every construction's block MAC and single
MAC against a Python reference on extreme and random vectors (each lane product is checked
exhaustively in test_bench_mac_constructions.py; here the frames: registers, adder tree or bit heap,
popcount of the deferred +1 bits, accumulator and its clear)."""
from __future__ import annotations

import gc
import json
import random
from pathlib import Path

import pytest
from amaranth.sim import Simulator

from bench.hw.baseline_macs import (SINGLE_MAC_BLOCK, SMALLEST, SUMMATIONS, BlockMac, SingleMac,
                                    construction_key, make_mac, minifloat_value_units,
                                    reference_block_sum, split_construction)
from bench.hw.units import BENCH_UNITS
from bench.hw.lane_products import CONSTRUCTIONS, FORMAT_BITS
from golden.formatbook import FORMATBOOK_ROWS

LANES = 32
VECTORS = 12
CASES = [(fmt, c) for fmt, names in CONSTRUCTIONS.items() for c in names]


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


@pytest.mark.parametrize("summation", SUMMATIONS)
@pytest.mark.parametrize("fmt,construction", CASES)
def test_mac_matches_reference(fmt, construction, summation):
    rng = random.Random(f"{fmt} {construction}")
    dut = BlockMac(fmt, construction, LANES, summation)
    bits = FORMAT_BITS[fmt]
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


@pytest.mark.parametrize("summation", SUMMATIONS)
@pytest.mark.parametrize("fmt,construction", CASES)
def test_single_mac_accumulates_a_block(fmt, construction, summation):
    """Blocks of SINGLE_MAC_BLOCK element pairs, one pair per clock and ``clear`` with each block's
    first pair: one clock after a block's last pair, ``sum`` holds its exact block sum (the first
    block of extreme products, the widest sum; then random blocks)."""
    rng = random.Random(f"single {fmt} {construction}")
    dut = SingleMac(fmt, construction, summation=summation)
    bits = FORMAT_BITS[fmt]
    blocks = [(a, w, 15 if fmt == "bd" else 0, 1 if fmt == "bd" else 0)
              for a, w, _, _ in _extreme_vectors(fmt, bits, SINGLE_MAC_BLOCK)[:2]]
    blocks += [([rng.randrange(1 << bits) for _ in range(SINGLE_MAC_BLOCK)],
                [rng.randrange(1 << bits) for _ in range(SINGLE_MAC_BLOCK)],
                rng.randrange(16), rng.randrange(16)) for _ in range(2)]
    beats = [(a[k], w[k], da, dw, k == 0) for a, w, da, dw in blocks for k in range(SINGLE_MAC_BLOCK)]
    beats.append((0, 0, 0, 0, True))        # starts the next block, so the last one completes
    sums = []

    async def bench(ctx):
        for n, (a, w, da, dw, clear) in enumerate(beats):
            ctx.set(dut.a, a)
            ctx.set(dut.w, w)
            ctx.set(dut.clear, clear)
            if fmt == "bd":
                ctx.set(dut.a_dialect, da)
                ctx.set(dut.w_dialect, dw)
            await ctx.tick()
            if n and n % SINGLE_MAC_BLOCK == 0:   # the previous block's last product is in
                sums.append(ctx.get(dut.sum))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert sums == [reference_block_sum(fmt, a, w, da, dw) for a, w, da, dw in blocks]


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
    with pytest.raises(ValueError, match="construction"):
        make_mac("fp4", 4, "booth")
    with pytest.raises(ValueError, match="lanes"):
        make_mac("int4", 0)
    with pytest.raises(ValueError, match="summation"):
        BlockMac("int4", "booth", 4, "wallace")
    with pytest.raises(ValueError, match="summation"):
        SingleMac("int4", "booth", summation="")
    gc.collect()   # the rejected component goes while its warning filter (bd_hw.layouts.reject) holds


SYNTH_REPORT = Path(__file__).resolve().parents[2] / "reports" / "synth" / "report.json"


def test_smallest_is_the_measured_smallest():
    """SMALLEST (what a default synthesis run and the scale-path units build) names, for every
    format, a construction with the fewest two-input gates among the committed report's block-MAC
    rows of that format at every block size measured (and measured at each); it must be measured at B = 32 in both framings
    (the report's ratios need both), so the check cannot pass on missing rows. The single MAC's
    smallest is the report's to find from its rows (bench/hw/baseline_macs.py says why it can
    differ)."""
    gates: dict = {}
    for r in json.loads(SYNTH_REPORT.read_text())["results"]:
        unit = BENCH_UNITS.get(r["unit"])
        if unit is None or unit.kind != "mac" or unit.params.get("block_values_in") or not r.get("gates2"):
            continue
        framing = "single" if r["unit"].startswith("mac1_") else "block"
        key = (framing, r["B"], unit.params["fmt"])
        gates.setdefault(key, {})[construction_key(unit.params["construction"],
                                                   unit.params.get("summation", "tree"))] = r["gates2"]
    for fmt, key in SMALLEST.items():
        assert key in gates.get(("block", 32, fmt), {}), fmt
        # the single MAC has no summation to choose: its lane construction is measured
        assert split_construction(key)[0] in gates.get(("single", 32, fmt), {}), fmt
    blocks = [(B, fmt, cs) for (framing, B, fmt), cs in gates.items() if framing == "block"]
    assert {B for B, _, _ in blocks} >= {16, 32, 64}
    for B, fmt, by_construction in blocks:
        assert by_construction.get(SMALLEST[fmt]) == min(by_construction.values()), \
            (B, fmt, SMALLEST[fmt], by_construction)
