"""The stream-protocol suite, one set of cocotb tests for every clocked unit of the registry
(``bd_quantizer``, ``bd_quantizer_trunc``, ``bd_dot``; the unit comes from ``TB_UNIT``).

Every output beat is checked in order, bit for bit, against the golden model by the unit's
scoreboard (``tb/stream_units.py``: ``golden.bd.quantize`` with the unit's method, or
``golden.bd.linear``); every run also checks that nothing is lost or duplicated and that an offered
output beat stays valid and unchanged until it is taken. Tests, in the manner of cocotbext-axi's
``TestFactory`` (``cocotb.parametrize`` in cocotb 2):

- ``golden_sets``: the unit's whole golden stimulus unstalled: one beat per clock sustained, and
  every result after exactly the documented latency.
- ``traffic``: random stimulus under every pair of an idle generator (gaps in ``i.valid``) and a
  back-pressure generator (``o.ready`` low): none, random, periodic and bursty.
- ``stall``: ``o.ready`` held low for long stretches with the source pushing: the unit fills its
  pipeline (as many beats as its capacity: its latency, plus one in a skid buffer's spare bank),
  then refuses input, and holds its output.
- ``reset_mid_traffic``: a reset with beats in flight and back-pressure: the unit comes back
  empty, offers nothing until fed, and then gets the next stream right.
"""
from __future__ import annotations

import itertools

import cocotb
from cocotb.triggers import ReadOnly, RisingEdge

from .harness import StreamBench, check_run, count_problems, params, run_stream, write_stats
from .stream import random_pauses
from .stream_units import model_for

# Pause generators by name: (idle on i.valid, back-pressure on o.ready), each a function of a seed.
PAUSES = {
    "none": (lambda seed: None, lambda seed: None),
    "random": (lambda seed: random_pauses(0.3, seed), lambda seed: random_pauses(0.5, seed + 1)),
    "periodic": (lambda seed: itertools.cycle([True, False]),
                 lambda seed: itertools.cycle([False, False, True])),
    "bursty": (lambda seed: itertools.cycle([False] * 7 + [True] * 3),
               lambda seed: itertools.cycle([True] * 5 + [False] * 6)),
}


def new_bench(dut):
    p = params()
    model = model_for(p)
    return p, model, StreamBench(dut, model.scoreboard(dut._log))


@cocotb.test()
async def golden_sets(dut):
    """The unit's golden stimulus, unstalled: bits, one beat per clock, fixed latency."""
    p, model, bench = new_bench(dut)
    await bench.reset()
    batch = model.golden_sets()
    run = await run_stream(bench, batch.inputs, batch.expected)
    problems = count_problems(run, len(batch.inputs), len(batch.expected), bench.scoreboard)

    rate = bench.throughput(run["first_in"])
    taken = model.result_cycles(bench.source.accepted[run["first_in"]:])
    received = bench.sink.received[run["first_out"]:]
    # Cycles from the one in which a beat is taken to the one in which its result is offered: the
    # number of register stages (a beat taken at edge t shows after edge t + latency - 1).
    latencies = {out[0] - cycle for cycle, out in zip(taken, received)}
    board = bench.scoreboard.summary()
    write_stats("golden_sets", vectors=len(batch.inputs), results=len(batch.expected),
                mismatches=board["mismatches"], unstable_beats=bench.sink.unstable_beats,
                count_problems=problems, cycles=run["cycles"],
                blocks_per_cycle=rate["blocks_per_cycle"], latency=sorted(latencies),
                tags=board["tags"])
    dut._log.info(f"{len(batch.inputs)} beats, {len(batch.expected)} results, "
                  f"{rate['blocks_per_cycle']:.4f} beats/cycle, latency {sorted(latencies)}, "
                  f"families {board['tags']}")
    check_run(bench, board, problems)
    assert rate["blocks_per_cycle"] == 1.0, f"unstalled throughput {rate['blocks_per_cycle']} < 1 beat/clock"
    assert latencies == {model.latency}, \
        f"latency {sorted(latencies)} differs from the documented {model.latency}"


@cocotb.test()
@cocotb.parametrize(idle=list(PAUSES), backpressure=list(PAUSES))
async def traffic(dut, idle: str, backpressure: str):
    """Random stimulus with gaps on the input and back-pressure on the output."""
    p, model, bench = new_bench(dut)
    await bench.reset()
    k = list(PAUSES).index(idle) * len(PAUSES) + list(PAUSES).index(backpressure)
    seed = p.seed * 1000 + 10 * k
    batch = model.traffic(model.traffic_size(), seed, f"traffic/{idle}/{backpressure}")
    run = await run_stream(bench, batch.inputs, batch.expected, PAUSES[idle][0](seed),
                           PAUSES[backpressure][1](seed + 7))
    problems = count_problems(run, len(batch.inputs), len(batch.expected), bench.scoreboard)
    board = bench.scoreboard.summary()
    write_stats(f"traffic_{idle}_{backpressure}", vectors=len(batch.inputs),
                results=len(batch.expected), mismatches=board["mismatches"], cycles=run["cycles"],
                unstable_beats=bench.sink.unstable_beats, count_problems=problems)
    check_run(bench, board, problems)


@cocotb.test()
async def stall(dut):
    """o.ready low for long stretches: the pipeline fills with exactly `capacity` beats (a result
    per register stage, one more with a skid buffer), i.ready stays low after that, the offered
    output holds still, and every result arrives right."""
    p, model, bench = new_bench(dut)
    await bench.reset()
    rounds = p.count(quick=3, full=20, light=6)
    hold = 3 * model.capacity + 10
    total = 0
    capacities = set()
    problems = []
    start = bench.counter.cycles
    for r in range(rounds):
        batch = model.single_results(2 * model.capacity + 3, p.seed * 4000 + r, "stall")
        first_in, first_out = len(bench.source.accepted), len(bench.sink.received)
        bench.set_traffic(None, itertools.repeat(True))       # o.ready held low
        bench.scoreboard.expect_all(batch.expected)
        bench.source.send_all(batch.inputs)
        await bench.cycles(hold)
        capacities.add(len(bench.source.accepted) - first_in)
        refused = 0
        for _ in range(hold):                                  # still stalled: nothing more is taken
            await RisingEdge(dut.clk)
            await ReadOnly()
            refused += int(bool(dut.i__valid.value) and not bool(dut.i__ready.value))
        assert refused == hold, f"i.ready rose {hold - refused} times with the pipeline full"
        run = await run_stream(bench, [], [], None, random_pauses(0.5, r))
        problems += count_problems({**run, "accepted": len(bench.source.accepted) - first_in,
                                    "received": len(bench.sink.received) - first_out},
                                   len(batch.inputs), len(batch.expected), bench.scoreboard)
        total += len(batch.inputs)
    board = bench.scoreboard.summary()
    write_stats("stall", vectors=total, results=total, mismatches=board["mismatches"],
                cycles=bench.counter.cycles - start, unstable_beats=bench.sink.unstable_beats,
                count_problems=problems, capacity=sorted(capacities))
    check_run(bench, board, problems)
    assert capacities == {model.capacity}, \
        f"the stalled unit took {sorted(capacities)} beats; it holds {model.capacity}"


@cocotb.test()
async def reset_mid_traffic(dut):
    """Reset with beats in flight and back-pressure: the unit comes back empty and correct."""
    p, model, bench = new_bench(dut)
    await bench.reset()
    rounds = p.count(quick=3, full=10, light=5)
    lingering = spurious = dropped = after = 0
    problems = []
    start = bench.counter.cycles
    for r in range(rounds):
        batch = model.traffic(40, p.seed * 2000 + r, "reset/before")
        bench.set_traffic(random_pauses(0.1, r), random_pauses(0.7, r + 100))
        bench.scoreboard.expect_all(batch.expected)
        bench.source.send_all(batch.inputs)
        await bench.cycles(2 * model.latency + 1 + 5 * r)   # part-way through the stream
        lingering += await bench.reset(cycles=2 + r % 3)
        dropped += bench.scoreboard.flush()
        spurious += await bench.output_stays_quiet(2 * model.latency)
        # After the reset the next stream must come out complete and right.
        batch = model.traffic(30, p.seed * 3000 + r, "reset/after")
        run = await run_stream(bench, batch.inputs, batch.expected, random_pauses(0.2, r + 200),
                               random_pauses(0.3, r + 300))
        problems += count_problems(run, len(batch.inputs), len(batch.expected), bench.scoreboard)
        after += len(batch.inputs)
    board = bench.scoreboard.summary()
    write_stats("reset_mid_traffic", vectors=after, results=board["matches"],
                mismatches=board["mismatches"], unstable_beats=bench.sink.unstable_beats,
                count_problems=problems, cycles=bench.counter.cycles - start,
                dropped_by_reset=dropped, spurious_after_reset=spurious,
                valid_during_reset=lingering)
    check_run(bench, board, problems)
    assert dropped > 0, "nothing was in flight at the reset: the test did not reset mid-traffic"
    assert lingering == 0, f"o.valid stayed high {lingering} times after a reset edge"
    assert spurious == 0, f"o.valid rose {spurious} times after reset with nothing sent"
