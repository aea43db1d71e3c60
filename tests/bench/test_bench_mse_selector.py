"""The benchmark's MSE selection (bench/hw/mse_selector.py) against golden.bd.quantize(x,
method="mse") (SPEC 5), and the stand-alone selectors of bench/hw/selectors.py against the golden
model's dialects. Stimuli come from golden.vectors (corners and random families)."""
from __future__ import annotations

import pytest
import torch
from amaranth.sim import Simulator

from bd_hw.layouts import pack_quantizer_input
from bench.hw.mse_selector import BDMseQuantizer
from bench.hw.selectors import SELECTIONS, DialectSelector, RegisteredSelector, check_method
from golden import bd, vectors
from tests.hw.testing import check_quantizer_stream, fp16_bits

B = 32


def _blocks(random_per_family: int, seed: int) -> torch.Tensor:
    """Every golden.vectors corner (zero, flushed subnormals, cost ties, exact midpoints, q = 31,
    non-finite elements) and seeded blocks of every random family."""
    parts = list(vectors.corner_blocks(B).values())
    parts += [vectors.random_blocks(random_per_family, B, f, seed=seed + i)
              for i, f in enumerate(vectors.RANDOM_FAMILIES)]
    return torch.cat(parts)



def _shared_exp(bits: list[int]) -> int:
    # SPEC 3: max FP16 exponent field, non-finite counted as 0
    return max(0 if e == 31 else e for e in ((b >> 10) & 0x1F for b in bits))


@pytest.mark.parametrize("method", list(SELECTIONS))
def test_selector_matches_golden(method):
    """Each selection reproduces the dialects of the golden.bd method it names (its ``method``)."""
    x = _blocks(30, seed=1)
    golden_method = SELECTIONS[method]().method
    want = bd.quantize(x, block=B, method=golden_method, nonfinite="flag").dialect.reshape(-1).tolist()
    dut = DialectSelector(method, B)
    got = []

    async def bench(ctx):
        for row in x:
            bits = fp16_bits(row)
            ctx.set(dut.data.as_value(), pack_quantizer_input(bits))
            ctx.set(dut.exp, _shared_exp(bits))
            await ctx.delay(1e-9)
            got.append(ctx.get(dut.dialect))

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    assert got == want
    # the blocks must reach more than a couple of dialects for the check to mean much
    assert len(set(want)) >= 8


def test_mse_quantizer_stream_matches_golden():
    x = _blocks(6, seed=2)
    dut = BDMseQuantizer(B)
    assert dut.method == "mse" and dut.latency == 4
    assert check_quantizer_stream(dut, x, "mse", seed=3) == len(x)


def test_bad_method():
    assert check_method("mse") == "mse"
    with pytest.raises(ValueError, match="method"):
        check_method("exhaustive")
    with pytest.raises(ValueError, match="method"):
        RegisteredSelector("exhaustive", B)
    with pytest.raises(ValueError, match="B must be one of"):
        DialectSelector("mse", 24)
