"""Every lane-product construction of the MAC comparison (bench.hw.lane_products), exhaustively:
each element pair of every format (2^8 for 4-bit, 2^12 for FP6, 2^16 for INT8) and, for
BlockDialect, every dialect pair x code pair (2^16), against a Python model (golden.bd's decode for
BlockDialect) in the Amaranth simulator."""
from __future__ import annotations

import gc
import itertools

import pytest
import torch
from amaranth.sim import Simulator

from bench.hw.lane_products import (CONSTRUCTIONS, FORMAT_BITS, ProductArray, block_input_values,
                                    element_value, product_bits, takes_block_inputs)
from golden import bd
from golden.spec import NUM_DIALECTS

# (format, construction, block magnitudes as inputs)
CASES = [(fmt, c, False) for fmt, names in CONSTRUCTIONS.items() for c in names]
CASES += [("bd", c, True) for c in CONSTRUCTIONS["bd"] if takes_block_inputs(c)]


def _bd_reference() -> dict:
    """golden.bd's decode of every code in every dialect: (dialect, code) -> signed half-units."""
    codes = torch.arange(16, dtype=torch.uint8).repeat(NUM_DIALECTS, 1).unsqueeze(0)
    dialect = torch.arange(NUM_DIALECTS, dtype=torch.uint8).unsqueeze(0)
    q = bd.Blocks(exp=torch.ones_like(dialect), dialect=dialect, codes=codes,
                  invalid=torch.zeros_like(dialect, dtype=torch.bool))
    sign, h = bd.decode(q)
    value = torch.where(sign.bool(), -h, h)[0]
    return {(d, c): int(value[d, c]) for d in range(NUM_DIALECTS) for c in range(16)}


def _run(dut, steps):
    """Drive ``steps`` (lists of (a codes, w codes, a dialect, w dialect)) and return, per step, the
    lanes' products + carries."""
    bits, lanes, pb = dut.bits, dut.lanes, product_bits(dut.fmt)
    out = []

    async def bench(ctx):
        for a, w, da, dw in steps:
            ctx.set(dut.a, sum(c << (bits * k) for k, c in enumerate(a)))
            ctx.set(dut.w, sum(c << (bits * k) for k, c in enumerate(w)))
            if dut.block_values_in:
                for name, value in block_input_values(dut.construction, da, dw).items():
                    ctx.set(getattr(dut, name).as_value(), value)
            elif dut.fmt == "bd":
                ctx.set(dut.a_dialect, da)
                ctx.set(dut.w_dialect, dw)
            await ctx.delay(1e-9)
            raw = ctx.get(dut.products.as_value())
            carries = ctx.get(dut.carries)
            got = []
            for k in range(lanes):
                p = (raw >> (pb * k)) & ((1 << pb) - 1)
                p -= (p >> (pb - 1)) << pb
                got.append(p + ((carries >> k) & 1))
            out.append(got)

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    return out


@pytest.mark.parametrize("fmt,construction,block_values_in", CASES)
def test_construction_is_exact_for_every_pair(fmt, construction, block_values_in):
    bits = FORMAT_BITS[fmt]
    lanes = 64 if fmt == "bd" else min(256, 1 << (2 * bits))
    pairs = list(itertools.product(range(1 << bits), repeat=2))
    dialects = list(itertools.product(range(NUM_DIALECTS), repeat=2)) if fmt == "bd" else [(0, 0)]
    steps, expected = [], []
    ref = _bd_reference() if fmt == "bd" else None
    for da, dw in dialects:
        for i in range(0, len(pairs), lanes):
            chunk = pairs[i:i + lanes]
            steps.append(([a for a, _ in chunk], [w for _, w in chunk], da, dw))
            if ref is None:
                expected.append([element_value(fmt, a) * element_value(fmt, w) for a, w in chunk])
            else:
                expected.append([ref[(da, a)] * ref[(dw, w)] for a, w in chunk])
    got = _run(ProductArray(fmt, construction, lanes, block_values_in), steps)
    for step, want, have in zip(steps, expected, got):
        assert have[:len(want)] == want, (fmt, construction, step[2:], step[0][:4], step[1][:4])


def test_python_models_agree_with_the_formats():
    # E2M1 in half-units is dialect 7 of the formatbook (SPEC 2); E2M3 tops at 7.5 = 60 eighths.
    ref = _bd_reference()
    assert [element_value("fp4", c) for c in range(16)] == [ref[(7, c)] for c in range(16)]
    assert element_value("fp6", 0b011111) == 60 and element_value("fp6", 0b100001) == -1
    assert element_value("int8", 0x80) == -128 and element_value("int4", 7) == 7


def test_bad_construction_names_the_argument():
    with pytest.raises(ValueError, match="construction"):
        ProductArray("fp4", "booth", 4)
    with pytest.raises(ValueError, match="fmt"):
        ProductArray("fp5", "mul", 4)
    with pytest.raises(ValueError, match="block_values_in"):
        ProductArray("bd", "decoder", 4, block_values_in=True)
    gc.collect()   # the rejected components go while their warning filter (bd_hw.layouts.reject) holds
