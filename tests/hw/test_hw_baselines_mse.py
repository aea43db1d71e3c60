"""MSE dialect selector (bd_hw.mse_selector) against golden.bd.quantize(x, method="mse") (SPEC 5)."""
from __future__ import annotations

import pytest
import torch
from amaranth.sim import Simulator

from bd_hw.layouts import pack_quantizer_input, unpack_quantizer_output
from bd_hw.mse_selector import BDMseQuantizer, MseDialectSelector, check_method
from golden import bd

B = 32


def _corner_blocks() -> torch.Tensor:
    """Blocks that reach the rules' edges: zero, flushed subnormals, cost ties, exact midpoints,
    the clamp above the largest value, non-finite elements, a single non-zero element."""
    rows = []
    rows.append(torch.zeros(B))
    rows.append(torch.full((B,), 1e-7))                       # subnormal in FP16: flushed
    rows.append(torch.ones(B))                                # value 8 half-units: dialects 5, 7, 12, 14, 15 tie
    rows.append(torch.full((B,), -1.0))
    one_hot = torch.zeros(B)
    one_hot[5] = 3.0
    rows.append(one_hot)
    # every q from 16 to 31 quarter-units (the top binade), and the binade below, at scale 1
    rows.append(torch.cat([torch.arange(16, 32) / 16, torch.arange(16, 32) / 32]))
    # exact midpoints of dialect 0 and 15 values (ties go to the larger magnitude)
    rows.append(torch.tensor([1.875, 1.75, 1.625, 1.5, 1.25, 1.125, 1.0, 0.875] * 4))
    rows.append(torch.tensor([1.9990234375, 1.0] * (B // 2)))   # largest significand: clamp
    inf_row = torch.randn(B)
    inf_row[3] = float("inf")
    inf_row[9] = float("nan")
    rows.append(inf_row)
    return torch.stack(rows).to(torch.float16)


def _random_blocks(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, B, generator=g)
    # spread of scales and heavy tails so every pair and many dialects are met
    x = x * torch.exp2(torch.randint(-12, 8, (n, 1), generator=g).float())
    x = x * torch.where(torch.rand(n, B, generator=g) < 0.1, 8.0, 1.0)
    return x.to(torch.float16)


def _bits(row: torch.Tensor) -> list[int]:
    return [int(v) & 0xFFFF for v in row.view(torch.int16).tolist()]


def _shared_exp(bits: list[int]) -> int:
    # SPEC 3: max FP16 exponent field, non-finite counted as 0
    exps = [(b >> 10) & 0x1F for b in bits]
    return max(0 if e == 31 else e for e in exps)


def test_selector_matches_golden_mse():
    x = torch.cat([_corner_blocks(), _random_blocks(120, 1)])
    golden_q = bd.quantize(x, block=B, method="mse", nonfinite="flag")
    dut = MseDialectSelector(B)
    got = []

    async def bench(ctx):
        for row in x:
            bits = _bits(row)
            ctx.set(dut.data.as_value(), pack_quantizer_input(bits))
            ctx.set(dut.exp, _shared_exp(bits))
            await ctx.delay(1e-9)
            got.append(ctx.get(dut.dialect))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    want = golden_q.dialect.reshape(-1).tolist()
    assert got == want
    # the random blocks must reach more than a couple of dialects for the check to mean much
    assert len(set(want)) >= 8


def test_mse_quantizer_stream_matches_golden():
    x = torch.cat([_corner_blocks(), _random_blocks(24, 2)])
    golden_q = bd.quantize(x, block=B, method="mse", nonfinite="flag")
    dut = BDMseQuantizer(B)
    outputs = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 1)
        sent = 0
        for cycle in range(len(x) * 2 + 10):
            # stall the output every third cycle to exercise back-pressure
            ctx.set(dut.o.ready, cycle % 3 != 2)
            if sent < len(x):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload.as_value(), pack_quantizer_input(_bits(x[sent])))
            else:
                ctx.set(dut.i.valid, 0)
            _, _, i_ready, o_valid, o_ready, payload = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, dut.o.ready, dut.o.payload)
            if o_valid and o_ready:
                outputs.append(unpack_quantizer_output(payload.as_value().value, B))
            if sent < len(x) and i_ready:
                sent += 1

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert len(outputs) == len(x)
    for n, out in enumerate(outputs):
        assert out["dialect"] == int(golden_q.dialect.reshape(-1)[n]), n
        assert out["exp"] == int(golden_q.exp.reshape(-1)[n]), n
        assert out["invalid"] == int(golden_q.invalid.reshape(-1)[n]), n
        assert out["codes"] == golden_q.codes.reshape(-1, B)[n].tolist(), n


def test_bad_method():
    assert check_method("mse") == "mse"
    with pytest.raises(ValueError, match="method"):
        check_method("exhaustive")
