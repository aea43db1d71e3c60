"""cocotb tests of ``bd_dot`` against ``golden.bd.linear`` (SPEC 6), FP32 bits compared exactly.

Stimulus: single-block pairs (quantized random blocks of every family, and arbitrary code fields),
multi-block dot products (random lengths, and real SmolLM2 weight rows against real activation rows,
activations two-stage and weights MSE quantized by the golden model), and the extremes: zero,
maximum magnitude over the longest supported sum, smallest magnitude, cancelling sums and rounding
ties. Protocol: sustained throughput and fixed latency when unstalled, valid gaps and back-pressure,
and a reset in the middle of a sum.
"""
from __future__ import annotations

import inspect
import itertools

import cocotb
import torch

from bd_hw import layouts, units

from .harness import StreamBench, check_run, count_problems, params, run_stream, write_stats
from .scoreboard import Scoreboard, dot_expectations
from .stimulus import (extreme_pairs, random_field_blocks, random_fp16_pairs, real_dot_rows)
from .stream import random_pauses


def hardware_defaults() -> tuple[int, int]:
    """(max_blocks, latency) of the emitted unit: the generator's default max_blocks, and the
    latency of the registered unit (its pipeline setting)."""
    from bd_hw.dot import BDDot
    max_blocks = inspect.signature(BDDot.__init__).parameters["max_blocks"].default
    p = params()
    return max_blocks, units.get(p.unit).latency(p.block)


def new_bench(dut) -> StreamBench:
    return StreamBench(dut, Scoreboard("bd_dot", layouts.unpack_dot_output, dut._log))


def expectations(sets) -> tuple[list[int], list, int]:
    """Concatenated input beats and expected results of (tag, q_act, q_weight) sets."""
    inputs, expected = [], []
    for tag, qa, qw in sets:
        i, e = dot_expectations(qa, qw, tag)
        inputs += i
        expected += e
    return inputs, expected, len(inputs)


def last_beat_cycles(accepted: list[tuple[int, int]], block: int) -> list[int]:
    """Cycles in which beats carrying ``last`` were taken."""
    last_bit = 1 << layouts.dot_input_layout(block)["last"].offset
    return [cycle for cycle, payload in accepted if payload & last_bit]


@cocotb.test()
async def dot_golden_sets(dut):
    """Random pairs, multi-block and real dot products, extremes, unstalled: bits, throughput, latency."""
    p = params()
    max_blocks, latency = hardware_defaults()
    bench = new_bench(dut)
    await bench.reset()
    pairs = p.count(quick=20, full=4000, light=800)
    sets = random_fp16_pairs(pairs, 1, p.block, seed=p.seed * 100)
    sets.append(("random/fields", *random_field_blocks(pairs * 3, 1, p.block, seed=p.seed * 100 + 50)))
    long = p.count(quick=4, full=150, light=30)
    for nblocks in (2, 7, 33):
        sets += [(f"{tag}/x{nblocks}", qa, qw)
                 for tag, qa, qw in random_fp16_pairs(long, nblocks, p.block, seed=p.seed * 100 + nblocks)]
    sets.append((f"random/fields/x{max_blocks}", *random_field_blocks(
        p.count(quick=2, full=16, light=4), max_blocks, p.block, seed=p.seed * 100 + 77)))
    sets += extreme_pairs(p.block, max_blocks)
    if p.real:
        sets += real_dot_rows(p, p.count(quick=6, full=400, light=80), seed=p.seed * 100 + 99)
    inputs, expected, beats = expectations(sets)
    run = await run_stream(bench, inputs, expected)
    problems = count_problems(run, beats, len(expected), bench.scoreboard)

    rate = bench.throughput(run["first_in"])
    lasts = last_beat_cycles(bench.source.accepted[run["first_in"]:], p.block)
    received = bench.sink.received[run["first_out"]:]
    # Cycles from the one in which a `last` beat is taken to the one in which its result is offered.
    latencies = {out[0] - taken for taken, out in zip(lasts, received)}
    board = bench.scoreboard.summary()
    write_stats("dot_golden_sets", vectors=beats, results=len(expected), mismatches=board["mismatches"],
                unstable_beats=bench.sink.unstable_beats, count_problems=problems,
                cycles=run["cycles"], blocks_per_cycle=rate["blocks_per_cycle"],
                latency=sorted(latencies), tags=board["tags"])
    dut._log.info(f"{beats} blocks, {len(expected)} results, {rate['blocks_per_cycle']:.4f} blocks/cycle, "
                  f"latency {sorted(latencies)}, families {board['tags']}")
    check_run(bench, board, problems)
    assert rate["blocks_per_cycle"] == 1.0, f"unstalled throughput {rate['blocks_per_cycle']} < 1 block/clock"
    assert latencies == {latency}, f"latency {sorted(latencies)} differs from the documented {latency}"


@cocotb.test()
async def dot_backpressure(dut):
    """Valid gaps and back-pressure, including stalls in the middle of multi-block sums."""
    p = params()
    bench = new_bench(dut)
    await bench.reset()
    n = p.count(quick=40, full=3000, light=600)
    patterns = [
        ("random", random_pauses(0.3, p.seed + 11), random_pauses(0.5, p.seed + 12)),
        ("periodic", itertools.cycle([False, True]), itertools.cycle([True, True, False])),
        ("bursty", itertools.cycle([False] * 9 + [True] * 4), itertools.cycle([True] * 6 + [False] * 5)),
    ]
    total = cycles = results = 0
    problems = []
    for k, (name, idle, backpressure) in enumerate(patterns):
        sets = [(f"backpressure/{name}/{tag}", qa, qw)
                for tag, qa, qw in random_fp16_pairs(n // 10, 1 + 2 * k, p.block, seed=p.seed * 500 + k)]
        sets.append((f"backpressure/{name}/fields",
                     *random_field_blocks(n // 2, 3, p.block, seed=p.seed * 600 + k)))
        inputs, expected, beats = expectations(sets)
        run = await run_stream(bench, inputs, expected, idle, backpressure)
        problems += count_problems(run, beats, len(expected), bench.scoreboard)
        total += beats
        results += len(expected)
        cycles += run["cycles"]
    board = bench.scoreboard.summary()
    write_stats("dot_backpressure", vectors=total, results=results, mismatches=board["mismatches"],
                unstable_beats=bench.sink.unstable_beats, count_problems=problems,
                cycles=cycles)
    check_run(bench, board, problems)


@cocotb.test()
async def dot_reset_mid_sum(dut):
    """Reset while a sum is half accumulated and results are queued: the next sums start from zero."""
    p = params()
    bench = new_bench(dut)
    await bench.reset()
    rounds = p.count(quick=3, full=10, light=5)
    lingering = spurious = dropped = after = 0
    problems = []
    start = bench.counter.cycles
    for r in range(rounds):
        # Long sums, back-pressured, so the reset finds partial sums and full pipeline stages.
        qa, qw = random_field_blocks(6, 9, p.block, seed=p.seed * 700 + r)
        inputs, expected, _ = expectations([("reset/before", qa, qw)])
        bench.set_traffic(random_pauses(0.1, r), random_pauses(0.7, r + 100))
        bench.scoreboard.expect_all(expected)
        bench.source.send_all(inputs)
        await bench.cycles(13 + 5 * r)
        lingering += await bench.reset(cycles=2 + r % 3)
        dropped += bench.scoreboard.flush()
        spurious += await bench.output_stays_quiet(12)
        qa, qw = random_field_blocks(5, 1 + r % 4, p.block, seed=p.seed * 800 + r)
        inputs, expected, beats = expectations([("reset/after", qa, qw)])
        run = await run_stream(bench, inputs, expected, random_pauses(0.2, r + 200),
                               random_pauses(0.3, r + 300))
        problems += count_problems(run, beats, len(expected), bench.scoreboard)
        after += beats
    board = bench.scoreboard.summary()
    write_stats("dot_reset_mid_sum", vectors=after, results=board["matches"], mismatches=board["mismatches"],
                unstable_beats=bench.sink.unstable_beats, count_problems=problems,
                cycles=bench.counter.cycles - start, dropped_by_reset=dropped,
                spurious_after_reset=spurious, valid_during_reset=lingering)
    check_run(bench, board, problems)
    assert dropped > 0, "no result was pending at the reset: the test did not reset mid-stream"
    assert lingering == 0, f"o.valid stayed high {lingering} times after a reset edge"
    assert spurious == 0, f"o.valid rose {spurious} times after reset with nothing sent"
