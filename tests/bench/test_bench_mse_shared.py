"""Shared-term MSE selection (bench.hw.mse_shared) against golden.bd.quantize(x, method="mse")
(SPEC 5): the stand-alone selector's dialect of every block and, through an independent exact cost of
every dialect, every cost difference of :class:`SharedMseCosts`; the whole quantizer built on it as a
stream. Every X an element can bring into the cost is swept; corner and seeded random blocks come
from golden.vectors."""
from __future__ import annotations

import pytest
import torch
from amaranth.hdl import Module
from amaranth.sim import Simulator

from bench.hw.mse_shared import DIALECT_STEPS, THRESHOLDS, BDSharedMseQuantizer, SharedMseCosts
from bench.hw.selectors import DialectSelector
from golden import bd, vectors
from golden.formatbook import FORMATBOOK_ROWS, MIDPOINTS
from golden.spec import NUM_DIALECTS
from tests.hw.testing import check_quantizer_stream, fp16_bits

FP16_EXP_NONFINITE = 31



def _reference_costs(bits: list[int]) -> tuple[int, list[int]]:
    """E and the exact SPEC 5 cost of every dialect, element by element (scalar integers)."""
    exps = [(b >> 10) & 0x1F for b in bits]
    E = max(0 if e == FP16_EXP_NONFINITE else e for e in exps)
    costs = [0] * NUM_DIALECTS
    for b, ex in zip(bits, exps):
        if ex in (0, FP16_EXP_NONFINITE) or ex < E - 1:
            continue
        X = (1024 + (b & 0x3FF)) << (ex - E + 1)
        for d in range(NUM_DIALECTS):
            # nearest index, ties to the larger magnitude: midpoints (quarter-units) reached
            idx = sum(X >= 128 * int(t) for t in MIDPOINTS[d])
            costs[d] += (X - 256 * int(FORMATBOOK_ROWS[d][idx])) ** 2
    return E, costs


def _simulate(B: int, blocks: list[list[int]]) -> list[tuple[int, list[int]]]:
    """(dialect of the stand-alone selector, costs of SharedMseCosts) of every block."""
    costs_dut, selector = SharedMseCosts(B), DialectSelector("mse_shared", B)
    top = Module()
    top.submodules.costs = costs_dut
    top.submodules.selector = selector
    got = []

    async def bench(ctx):
        for bits in blocks:
            exps = [(b >> 10) & 0x1F for b in bits]
            E = max(0 if e == FP16_EXP_NONFINITE else e for e in exps)
            for dut in (costs_dut, selector):
                ctx.set(dut.data, bits)
                ctx.set(dut.exp, E)
            await ctx.delay(1e-9)
            costs = ctx.get(costs_dut.costs)
            got.append((ctx.get(selector.dialect), [int(costs[d]) for d in range(NUM_DIALECTS)]))

    sim = Simulator(top)
    sim.add_testbench(bench)
    sim.run()
    return got


def _check(B: int, x: torch.Tensor) -> list[int]:
    """Simulate the FP16 blocks x (n, B); every dialect and cost difference must match."""
    blocks = [fp16_bits(row) for row in x]
    golden_dialect = bd.quantize(x, block=B, method="mse", nonfinite="flag").dialect.reshape(-1).tolist()
    got = _simulate(B, blocks)
    for n, (bits, (dialect, costs)) in enumerate(zip(blocks, got)):
        E, ref = _reference_costs(bits)
        assert dialect == golden_dialect[n], (n, bits)
        if E == 0:
            assert dialect == 0
            continue
        assert ref.index(min(ref)) == dialect, n              # the reference agrees with golden
        # c(d) - c(0) = (cost(d) - cost(0)) / 256 for every dialect, exactly
        assert [c - costs[0] for c in costs] == [(r - ref[0]) // 256 for r in ref], n
        assert all((r - ref[0]) % 256 == 0 for r in ref)
    return golden_dialect


def _fp16(sign: int, ex: int, man: int) -> int:
    return (sign << 15) | (ex << 10) | man


def test_every_element_value_in_the_cost():
    """Every (ex in {E, E - 1}, mantissa) an element of the cost can have, 16 per block, each block
    with one element at E so that E is fixed: every X of SPEC 5 (1024..2047 and the even values of
    2048..4094), signs alternating (the cost ignores them)."""
    B, E = 16, 15
    values = [_fp16(man & 1, ex, man) for ex in (E, E - 1) for man in range(1024)]
    blocks = []
    for j in range(0, len(values), B - 1):
        chunk = values[j:j + B - 1]
        blocks.append([_fp16(0, E, 1023)] + chunk + [0] * (B - 1 - len(chunk)))
    x = torch.tensor(blocks, dtype=torch.int32).to(torch.int16).view(torch.float16)
    dialects = _check(B, x)
    assert len(set(dialects)) >= 3


def test_single_element_blocks_every_q():
    """One element per block at each of the 32 q values and each midpoint's X on either side: the
    nearest value changes exactly at the shared thresholds."""
    B, E = 16, 20
    rows = []
    for t in THRESHOLDS:
        for X in (128 * t - 1, 128 * t):                       # just below and at the midpoint
            if X < 2048:
                bits = _fp16(0, E - 1, X - 1024)
            else:
                bits = _fp16(0, E, X // 2 - 1024)
            rows.append([bits, _fp16(0, E, 0)] + [0] * (B - 2))
    x = torch.tensor(rows, dtype=torch.int32).to(torch.int16).view(torch.float16)
    _check(B, x)


@pytest.mark.parametrize("B", [16, 32])
def test_corner_blocks(B):
    x = torch.cat(list(vectors.corner_blocks(B).values()))
    _check(B, x)


def test_cost_ties_go_to_the_lowest_dialect():
    """Blocks of one repeated value tie the dialects that hold it exactly (1.0 is 8 half-units:
    dialects 5, 7, 12, 14, 15; 0.75 is 12 half-units: dialects 6, 7): the lowest id must win."""
    B = 16
    rows = [torch.full((B,), v) for v in (1.0, -1.0, 0.75, 0.5, 1.75, 1.875)]
    x = torch.stack(rows).to(torch.float16)
    dialects = _check(B, x)
    assert dialects[0] == dialects[1] == 5 and dialects[2] == 6


@pytest.mark.parametrize("family", vectors.RANDOM_FAMILIES)
def test_random_blocks(family):
    x = vectors.random_blocks(40, block=32, family=family, seed=11)
    _check(32, x)


def test_largest_costs_at_b64():
    """Every element at the largest and at the smallest X: the cost width holds at B = 64."""
    B = 64
    rows = [[_fp16(0, 30, 1023)] * B, [_fp16(1, 30, 0)] * B,
            [_fp16(0, 30, 1023)] + [_fp16(0, 29, 1023)] * (B - 1)]
    x = torch.tensor(rows, dtype=torch.int32).to(torch.int16).view(torch.float16)
    _check(B, x)


def test_steps_are_the_formatbook_staircase():
    """Each dialect's steps rebuild its nearest value for every q an element of the cost can have."""
    for d in range(NUM_DIALECTS):
        for q in range(8, 32):
            value = 4 + sum(w - v for t, v, w in DIALECT_STEPS[d] if q >= t)
            idx = sum(q >= int(t) for t in MIDPOINTS[d])
            assert value == int(FORMATBOOK_ROWS[d][idx]), (d, q)


def test_whole_quantizer_stream():
    """bd_quantizer's frame with the shared-term selection: every field of every block as
    golden.bd.quantize(method="mse"), under random valid and ready."""
    B = 32
    x = torch.cat([*vectors.corner_blocks(B).values(), vectors.random_blocks(12, B, "lognormal", 5)])
    dut = BDSharedMseQuantizer(B)
    assert dut.method == "mse" and dut.latency == 4
    assert check_quantizer_stream(dut, x, "mse", seed=7) == len(x)


def test_bad_block_size():
    with pytest.raises(ValueError, match="B must be one of"):
        BDSharedMseQuantizer(24)
    with pytest.raises(ValueError, match="B must be one of"):
        DialectSelector("mse_shared", 24)
