"""cocotb tests of ``bd_quantizer`` against ``bd.quantize(..., method="two_stage", nonfinite="flag")``.

Every output beat is compared bit for bit (codes, dialect, exp, invalid) with the golden model, in
order. Stimulus: all ``golden.vectors`` corners, every random family, raw FP16 bit patterns and
real SmolLM2 activation and weight blocks. Protocol: sustained throughput and fixed latency when
unstalled, random and periodic valid gaps and back-pressure, and a reset in the middle of traffic.
"""
from __future__ import annotations

import itertools

import cocotb
import torch

from bd_hw import layouts
from golden import vectors

from .harness import StreamBench, check_run, count_problems, params, run_stream, write_stats
from .scoreboard import Scoreboard, quantizer_expectations
from .stimulus import quantizer_sets, raw_bit_blocks
from .stream import random_pauses


def documented_latency(block: int) -> int:
    from bd_hw import units
    return units.get(params().unit).latency(block)


def golden_method() -> str:
    """The golden.bd method the unit under test reproduces (``BDQuantizer.method``)."""
    from bd_hw import units
    from bd_hw.layouts import reject

    dut = units.get(params().unit).build(params().block)
    reject(dut)
    return dut.method


def new_bench(dut, block: int) -> StreamBench:
    board = Scoreboard("bd_quantizer", lambda v: layouts.unpack_quantizer_output(v, block), dut._log)
    return StreamBench(dut, board)


def mixed_blocks(p, n: int, seed: int) -> torch.Tensor:
    """n blocks drawn from every random family and raw bit patterns, interleaved."""
    per = -(-n // (len(vectors.RANDOM_FAMILIES) + 1))
    parts = [vectors.random_blocks(per, p.block, f, seed=seed + i)
             for i, f in enumerate(vectors.RANDOM_FAMILIES)]
    parts.append(raw_bit_blocks(per, p.block, seed + 50))
    mixed = torch.stack(parts, 1).reshape(-1, p.block)      # interleave the families
    return mixed[:n]


@cocotb.test()
async def quantizer_golden_sets(dut):
    """Corners, random families, raw bits and real blocks, unstalled: bits, throughput, latency."""
    p = params()
    bench = new_bench(dut, p.block)
    await bench.reset()
    sets = quantizer_sets(p, random_per_family=p.count(quick=24, full=5000, light=1000),
                          real_per_kind=p.count(quick=100, full=10000, light=2000))
    inputs, expected = [], []
    for tag, x in sets:
        i, e = quantizer_expectations(x, tag, golden_method())
        inputs += i
        expected += e
    run = await run_stream(bench, inputs, expected)
    problems = count_problems(run, len(inputs), len(expected), bench.scoreboard)

    rate = bench.throughput(run["first_in"])
    accepted = bench.source.accepted[run["first_in"]:]
    received = bench.sink.received[run["first_out"]:]
    # Cycles from the one in which a beat is taken to the one in which its result is offered:
    # the number of register stages (a beat taken at edge t shows after edge t + latency - 1).
    latencies = {out[0] - acc[0] for acc, out in zip(accepted, received)}
    board = bench.scoreboard.summary()
    write_stats("quantizer_golden_sets", vectors=len(inputs), mismatches=board["mismatches"],
                unstable_beats=bench.sink.unstable_beats, count_problems=problems,
                cycles=run["cycles"], blocks_per_cycle=rate["blocks_per_cycle"],
                latency=sorted(latencies), tags=board["tags"])
    dut._log.info(f"{len(inputs)} blocks, {rate['blocks_per_cycle']:.4f} blocks/cycle, "
                  f"latency {sorted(latencies)} cycles, families {board['tags']}")
    check_run(bench, board, problems)
    assert rate["blocks_per_cycle"] == 1.0, f"unstalled throughput {rate['blocks_per_cycle']} < 1 block/clock"
    assert latencies == {documented_latency(p.block)}, \
        f"latency {sorted(latencies)} differs from the documented {documented_latency(p.block)}"


@cocotb.test()
async def quantizer_backpressure(dut):
    """Random and periodic valid gaps and ready back-pressure: nothing lost, duplicated or reordered."""
    p = params()
    bench = new_bench(dut, p.block)
    await bench.reset()
    n = p.count(quick=150, full=15000, light=3000)
    patterns = [
        ("random", random_pauses(0.3, p.seed + 1), random_pauses(0.5, p.seed + 2)),
        ("periodic", itertools.cycle([True, False]), itertools.cycle([False, False, True])),
        ("bursty", itertools.cycle([False] * 7 + [True] * 3), itertools.cycle([True] * 5 + [False] * 6)),
    ]
    total = cycles = 0
    problems = []
    for k, (name, idle, backpressure) in enumerate(patterns):
        x = mixed_blocks(p, n // len(patterns), seed=p.seed * 1000 + 10 * k)
        inputs, expected = quantizer_expectations(x, f"backpressure/{name}", golden_method())
        run = await run_stream(bench, inputs, expected, idle, backpressure)
        problems += count_problems(run, len(inputs), len(expected), bench.scoreboard)
        total += len(inputs)
        cycles += run["cycles"]
    board = bench.scoreboard.summary()
    write_stats("quantizer_backpressure", vectors=total, mismatches=board["mismatches"], cycles=cycles,
                unstable_beats=bench.sink.unstable_beats, count_problems=problems)
    check_run(bench, board, problems)


@cocotb.test()
async def quantizer_reset_mid_stream(dut):
    """Reset with the pipeline full and back-pressured: the unit comes back empty and correct."""
    p = params()
    bench = new_bench(dut, p.block)
    await bench.reset()
    rounds = p.count(quick=3, full=10, light=5)
    total = cycles = lingering = spurious = dropped = 0
    problems = []
    start = bench.counter.cycles
    for r in range(rounds):
        x = mixed_blocks(p, 40, seed=p.seed * 2000 + r)
        inputs, expected = quantizer_expectations(x, "reset/before", golden_method())
        bench.set_traffic(random_pauses(0.2, r), random_pauses(0.6, r + 100))
        bench.scoreboard.expect_all(expected)
        bench.source.send_all(inputs)
        await bench.cycles(5 + 3 * r)           # the pipeline is part-way through the stream
        lingering += await bench.reset(cycles=2 + r % 3)
        dropped += bench.scoreboard.flush()
        spurious += await bench.output_stays_quiet(10)
        # After the reset the next stream must come out complete and right.
        x = mixed_blocks(p, 30, seed=p.seed * 3000 + r)
        inputs, expected = quantizer_expectations(x, "reset/after", golden_method())
        run = await run_stream(bench, inputs, expected, random_pauses(0.2, r + 200),
                               random_pauses(0.3, r + 300))
        problems += count_problems(run, len(inputs), len(expected), bench.scoreboard)
        total += len(inputs)
    cycles = bench.counter.cycles - start
    board = bench.scoreboard.summary()
    write_stats("quantizer_reset_mid_stream", vectors=board["matches"], mismatches=board["mismatches"],
                unstable_beats=bench.sink.unstable_beats, count_problems=problems,
                cycles=cycles, dropped_by_reset=dropped, spurious_after_reset=spurious,
                valid_during_reset=lingering)
    check_run(bench, board, problems)
    assert dropped > 0, "no beat was in flight at the reset: the test did not reset mid-stream"
    assert lingering == 0, f"o.valid stayed high {lingering} times after a reset edge"
    assert spurious == 0, f"o.valid rose {spurious} times after reset with nothing sent"
