"""Scale-path units (bench.hw.scale_paths) against their Python model: corner and seeded random
blocks with random scales through the Amaranth simulator, and NVFP4's E4M3 x E4M3 scale product
over every pair of scale magnitudes."""
from __future__ import annotations

import gc
import random

import pytest
from amaranth.sim import Simulator

from bench.hw.scale_paths import (SCALE_FORMATS, ScaleDot, reference_scale_dot,
                                  reference_tensor_product)

SCALE_BITS = {"bd": 5, "mxfp4": 8, "nvfp4": 8}


def _simulate(dut, beats):
    """Drive ``beats`` (dicts of port values) one per clock; outputs two clocks later."""
    outs = [name for name in ("value", "exp", "nan", "t_sig", "t_exp") if hasattr(dut, name)]
    got = []

    async def bench(ctx):
        for n, beat in enumerate(beats + [None, None]):
            if beat is not None:
                for name, v in beat.items():
                    ctx.set(getattr(dut, name), v)
            await ctx.tick()
            if n >= 1:
                got.append({name: ctx.get(getattr(dut, name)) for name in outs})

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    return got[:len(beats)]


def _beats(fmt, B, rng, count, tensor=True):
    top = (1 << SCALE_BITS[fmt]) - 1
    scales = [(0, 0), (top, top), (top, 1), (1, top)]
    beats = []
    for n in range(count):
        sa, sw = scales[n] if n < len(scales) else (rng.randrange(top + 1), rng.randrange(top + 1))
        a = [7 if n < 2 else rng.randrange(16) for _ in range(B)]
        w = [15 if n == 1 else 7 if n == 0 else rng.randrange(16) for _ in range(B)]
        beat = {"a": sum(c << (4 * k) for k, c in enumerate(a)),
                "w": sum(c << (4 * k) for k, c in enumerate(w)), "a_scale": sa, "w_scale": sw}
        ref = dict(fmt=fmt, a=a, w=w, a_scale=sa, w_scale=sw)
        if fmt == "bd":
            beat["a_dialect"], beat["w_dialect"] = rng.randrange(16), rng.randrange(16)
            ref |= {"a_dialect": beat["a_dialect"], "w_dialect": beat["w_dialect"]}
        if fmt == "nvfp4" and tensor:
            beat["t_a"], beat["t_w"] = rng.randrange(1 << 31), rng.randrange(1 << 31)
        beats.append((beat, ref))
    return beats


@pytest.mark.parametrize("fmt,B,tensor", [("bd", 32, True), ("bd", 16, True), ("mxfp4", 32, True),
                                          ("nvfp4", 16, True), ("nvfp4", 16, False)])
def test_scale_dot_matches_model(fmt, B, tensor):
    rng = random.Random(f"{fmt} {B}")
    beats = _beats(fmt, B, rng, 24, tensor)
    dut = ScaleDot(fmt, B, tensor)
    got = _simulate(dut, [b for b, _ in beats])
    for (beat, ref), out in zip(beats, got):
        want = reference_scale_dot(**ref)
        if "t_a" in beat:
            want |= reference_tensor_product(beat["t_a"], beat["t_w"])
        assert out == want, (fmt, ref["a_scale"], ref["w_scale"])


def test_nvfp4_scale_product_every_pair():
    """Every pair of E4M3 magnitudes (2^14) with all-maximum FP4 elements, 16 lanes: the value is
    the block sum times the scale product, exactly."""
    dut = ScaleDot("nvfp4", 16)
    top = [7] * 16
    beats = [{"a": sum(c << (4 * k) for k, c in enumerate(top)), "w": sum(c << (4 * k) for k, c in enumerate(top)),
              "a_scale": sa, "w_scale": sw, "t_a": 0, "t_w": 0}
             for sa in range(128) for sw in range(0, 128, 1)]
    got = _simulate(dut, beats)
    for beat, out in zip(beats, got):
        want = reference_scale_dot("nvfp4", top, top, beat["a_scale"], beat["w_scale"])
        assert (out["value"], out["exp"], out["nan"]) == (want["value"], want["exp"], want["nan"])


def test_bad_arguments():
    with pytest.raises(ValueError, match="fmt"):
        ScaleDot("fp8", 32)
    with pytest.raises(ValueError, match="B"):
        ScaleDot("nvfp4", 32)
    assert set(SCALE_FORMATS) == set(SCALE_BITS)
    gc.collect()   # the rejected components go while their warning filter (bd_hw.layouts.reject) holds
