"""Simulation helpers for the Amaranth-simulator tests of the units (tests/hw).

``stream_put`` / ``stream_get`` follow the pattern of Amaranth's stream documentation;
:func:`run_stream` drives a stream component cycle by cycle with random input gaps and random
output back-pressure, and checks the stream rules on the output (a payload offered with
``valid`` high stays, unchanged, until it is taken).
"""
from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

from amaranth.sim import Simulator

__all__ = ["stream_put", "stream_get", "StreamRun", "run_stream", "as_int"]

CLOCK_PERIOD = 1e-6


def as_int(value) -> int:
    """Plain int of a payload value (Amaranth views are set and read through ``as_value()``)."""
    return value.as_value() if hasattr(value, "as_value") else value


async def stream_put(ctx, stream, payload: int):
    """Offer ``payload`` and wait until it is taken (Amaranth stream docs pattern)."""
    ctx.set(stream.valid, 1)
    ctx.set(as_int(stream.payload), payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream) -> int:
    """Take one payload (Amaranth stream docs pattern)."""
    ctx.set(stream.ready, 1)
    payload, = await ctx.tick().sample(as_int(stream.payload)).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


@dataclass
class StreamRun:
    outputs: list = field(default_factory=list)          # o payloads, in order
    accepted: list = field(default_factory=list)         # cycle of each input transfer
    delivered: list = field(default_factory=list)        # cycle of each output transfer
    first_valid: list = field(default_factory=list)      # cycle each output was first offered
    cycles: int = 0


def run_stream(dut, inputs, *, expected: int | None = None, valid_prob: float = 1.0,
               ready_prob: float = 1.0, seed: int = 0, max_cycles: int | None = None,
               tail: int = 0) -> StreamRun:
    """Push ``inputs`` (payload ints) through ``dut.i`` and collect ``expected`` outputs of ``dut.o``.

    Each cycle an idle input is offered with probability ``valid_prob`` (once offered it is held
    until taken, as the stream rules require) and ``o.ready`` is high with probability
    ``ready_prob``. Asserts that an offered output is neither withdrawn nor changed before it is
    taken, and that nothing beyond ``expected`` outputs appears in ``tail`` extra cycles.
    """
    inputs = list(inputs)
    expected = len(inputs) if expected is None else expected
    if max_cycles is None:
        slack = 1 / max(min(valid_prob, ready_prob), 0.05)
        max_cycles = int((len(inputs) + 20) * slack * 4) + 100
    run = StreamRun()
    i_payload, o_payload = as_int(dut.i.payload), as_int(dut.o.payload)

    async def bench(ctx):
        rng = random.Random(seed)
        pending = deque(inputs)
        current = None
        held = None
        cycle = 0
        extra = 0
        while len(run.outputs) < expected or extra < tail:
            if len(run.outputs) >= expected:
                extra += 1
            if current is None and pending and rng.random() < valid_prob:
                current = pending.popleft()
            ctx.set(dut.i.valid, current is not None)
            if current is not None:
                ctx.set(i_payload, current)
            ready = rng.random() < ready_prob
            ctx.set(dut.o.ready, ready)
            _, _, i_ready, o_valid, o_value = await ctx.tick().sample(
                dut.i.ready, dut.o.valid, o_payload)
            if held is not None:
                assert o_valid, f"cycle {cycle}: o.valid withdrawn before the transfer"
                assert o_value == held, f"cycle {cycle}: o.payload changed while not taken"
            elif o_valid:
                run.first_valid.append(cycle)
            if o_valid:
                if ready:
                    assert len(run.outputs) < expected, f"cycle {cycle}: unexpected extra output"
                    run.outputs.append(o_value)
                    run.delivered.append(cycle)
                    held = None
                else:
                    held = o_value
            if current is not None and i_ready:
                run.accepted.append(cycle)
                current = None
            cycle += 1
            assert cycle < max_cycles, (f"timeout after {cycle} cycles: {len(run.outputs)} of "
                                        f"{expected} outputs")
        run.cycles = cycle

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.run()
    return run


def run_comb(dut, vectors, outputs):
    """Evaluate a combinational component: for each ``{port name: int}`` of ``vectors`` set the
    inputs and read the ``outputs`` (port names) as ints. Returns a list of dicts."""
    results = []

    async def bench(ctx):
        for vector in vectors:
            for name, value in vector.items():
                ctx.set(as_int(getattr(dut, name)), value)
            results.append({name: ctx.get(as_int(getattr(dut, name))) for name in outputs})

    sim = Simulator(dut)
    sim.add_testbench(bench)
    sim.run()
    return results


def int_to_fp32_bits(value: int, frac_bits: int = 36) -> int:
    """IEEE binary32 bits of ``value * 2^-frac_bits``, rounded to nearest, ties to even, computed
    with Python integers (an independent reference for tests; no overflow or subnormal handling,
    so callers keep to the normal range)."""
    if value == 0:
        return 0
    sign = int(value < 0)
    mag = abs(value)
    n = mag.bit_length()
    if n > 24:
        shift = n - 24
        kept, rest = mag >> shift, mag & ((1 << shift) - 1)
        half = 1 << (shift - 1)
        if rest > half or (rest == half and kept & 1):
            kept += 1
        if kept >> 24:
            kept >>= 1
            shift += 1
    else:
        shift = n - 24
        kept = mag << -shift
    biased = shift - frac_bits + 23 + 127
    if not 1 <= biased <= 254:
        raise ValueError("outside the FP32 normal range")
    return sign << 31 | biased << 23 | (kept - (1 << 23))


def fp16_bits(row) -> list[int]:
    """The FP16 bit patterns of a 1-D float16 tensor, as unsigned ints (one quantizer lane each)."""
    import torch
    return [int(v) & 0xFFFF for v in row.to(torch.float16).view(torch.int16).tolist()]


def check_quantizer_stream(dut, x, method: str, seed: int) -> int:
    """Runs the rows of ``x`` (FP16, (n, B)) through a quantizer under random valid and ready and
    asserts every output field equals ``golden.bd.quantize(x, method=method, nonfinite="flag")``.
    Returns the number of blocks checked."""
    from bd_hw.layouts import pack_quantizer_input, unpack_quantizer_output
    from golden import bd

    B = x.shape[-1]
    want = bd.quantize(x, block=B, method=method, nonfinite="flag")
    run = run_stream(dut, [pack_quantizer_input(fp16_bits(row)) for row in x], valid_prob=0.8,
                     ready_prob=0.6, seed=seed, tail=8)
    outputs = [unpack_quantizer_output(o, B) for o in run.outputs]
    assert len(outputs) == len(x)
    for n, out in enumerate(outputs):
        assert out == {"codes": want.codes.reshape(-1, B)[n].tolist(),
                       "dialect": int(want.dialect.reshape(-1)[n]),
                       "exp": int(want.exp.reshape(-1)[n]),
                       "invalid": int(want.invalid.reshape(-1)[n])}, n
    return len(outputs)
