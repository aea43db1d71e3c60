"""cocotb tests of ``bd_linear`` (SPEC 11) through its AXI4-Stream ports, with cocotbext-axi.

``AxiStreamSource`` drives ``s_axis_x`` (one frame per activation vector) and ``s_axis_w`` (one
frame per row group, ``tuser`` per beat), ``AxiStreamSink`` takes ``m_axis_y`` (one frame per
matrix); every port has a pause generator. :class:`tb.axis_linear.LinearScoreboard` checks every
result beat bit for bit against ``golden.bd.linear`` (:mod:`tb.axis_linear` builds the jobs), and a
handshake monitor stamps every transfer with its clock cycle for the rate and latency figures and
checks that ``m_axis_y`` holds its beat until it is taken.

Stimulus: real SmolLM2 layers (an attention projection and an MLP down projection, several input
tokens each, rows not a multiple of N), vectors with Inf/NaN, odd row counts, row groups with a
wrong block count, ``tuser`` set on beats without ``tlast``, vectors of exactly ``max_blocks`` and
one block more, all back to back; then a reset in mid-traffic.
"""
from __future__ import annotations

import itertools

import cocotb
import torch
from cocotb.clock import Clock
from cocotb.triggers import ReadOnly, RisingEdge
from cocotbext.axi import AxiStreamBus, AxiStreamFrame, AxiStreamSink, AxiStreamSource

from . import axis_linear as al
from .harness import CLOCK_PERIOD_NS, params, write_stats
from .stream import never_pause, random_pauses

FP16_BYTES = 2


def engine_figures(block: int, lanes: int) -> tuple[int, int, int]:
    """(latency, vector_latency, max_blocks) of the engine under test, from the unit registry."""
    from bd_hw import units
    engine = units.get(params().unit).parameters_at(block)
    assert engine.N == lanes, f"the registry's {params().unit} has N={engine.N}, the design {lanes}"
    return engine.latency, engine.vector_latency, engine.max_blocks


class LinearBench:
    """Clock, cocotbext-axi source/sink on every stream, scoreboard and handshake log."""

    def __init__(self, dut):
        self.dut = dut
        self.block = len(dut.s_axis_x_tdata) // (8 * FP16_BYTES)
        self.lanes = len(dut.m_axis_y_tdata) // 32
        p = params()
        assert p.block == self.block, f"TB_BLOCK={p.block} but the design has B={self.block}"
        Clock(dut.aclk, CLOCK_PERIOD_NS, unit="ns").start()
        dut.aresetn.value = 0
        reset = {"reset": dut.aresetn, "reset_active_level": False}
        self.x = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis_x"), dut.aclk, **reset)
        self.w = AxiStreamSource(AxiStreamBus.from_prefix(dut, "s_axis_w"), dut.aclk, **reset)
        self.y = AxiStreamSink(AxiStreamBus.from_prefix(dut, "m_axis_y"), dut.aclk, **reset)
        for port in (self.x, self.w, self.y):
            port.log.setLevel("WARNING")
        self.board = al.LinearScoreboard(self.lanes, dut._log)
        self.cycle = 0
        self.x_taken: list[int] = []
        self.w_taken: list[tuple[int, int]] = []
        self.y_taken: list[int] = []
        self.unstable = 0            # m_axis_y beats changed or withdrawn before being taken
        self.valid_in_reset = 0      # m_axis_y_tvalid or a tready high after a reset edge
        cocotb.start_soon(self._monitor())
        cocotb.start_soon(self._receive())

    async def _receive(self):
        while True:
            frame = await self.y.recv()
            self.board.check_frame(bytes(frame.tdata), frame.tuser)

    async def _monitor(self):
        d = self.dut
        held = None
        in_reset = 0
        while True:
            await RisingEdge(d.aclk)
            await ReadOnly()
            self.cycle += 1
            if not int(d.aresetn.value):
                in_reset += 1
                if in_reset > 1:
                    self.valid_in_reset += int(d.m_axis_y_tvalid.value) + int(d.s_axis_x_tready.value) \
                        + int(d.s_axis_w_tready.value)
                held = None
                continue
            in_reset = 0
            if int(d.s_axis_x_tvalid.value) and int(d.s_axis_x_tready.value):
                self.x_taken.append(self.cycle)
            if int(d.s_axis_w_tvalid.value) and int(d.s_axis_w_tready.value):
                self.w_taken.append((self.cycle, int(d.s_axis_w_tlast.value)))
            valid = int(d.m_axis_y_tvalid.value)
            beat = (d.m_axis_y_tdata.value.to_unsigned(), int(d.m_axis_y_tuser.value),
                    int(d.m_axis_y_tlast.value)) if valid else None
            if held is not None and beat != held:
                self.unstable += 1
            ready = int(d.m_axis_y_tready.value)
            if valid and ready:
                self.y_taken.append(self.cycle)
            held = beat if valid and not ready else None

    def set_pauses(self, x=None, w=None, y=None):
        self.x.set_pause_generator(x if x is not None else never_pause())
        self.w.set_pause_generator(w if w is not None else never_pause())
        self.y.set_pause_generator(y if y is not None else never_pause())

    async def reset(self, cycles: int = 3):
        """aresetn low for ``cycles`` edges, queued frames dropped, answers not yet given forgotten."""
        self.x.clear()
        self.w.clear()
        self.dut.aresetn.value = 0
        for _ in range(cycles):
            await RisingEdge(self.dut.aclk)
        self.dut.aresetn.value = 1
        await RisingEdge(self.dut.aclk)
        return self.board.flush()

    def send(self, jobs: list[al.Job]):
        for job in jobs:
            al.check_sizes(job)
            self.board.expect(job)
            self.x.send_nowait(AxiStreamFrame(job.x_frame()))
            beats: list[al.WBeat] = []
            for beat in job.w_beats:
                beats.append(beat)
                if beat.last:
                    data = b"".join(b.data for b in beats)
                    user = [b.user for b in beats for _ in b.data]
                    self.w.send_nowait(AxiStreamFrame(data, tuser=user))
                    beats = []

    async def drain(self, timeout_cycles: int):
        start = self.cycle
        while self.board.pending and self.cycle - start < timeout_cycles:
            await RisingEdge(self.dut.aclk)
        for _ in range(16):      # anything beyond the expected beats shows up here
            await RisingEdge(self.dut.aclk)

    async def run(self, jobs: list[al.Job], timeout_cycles: int | None = None) -> dict:
        first_x, first_w, first_y = len(self.x_taken), len(self.w_taken), len(self.y_taken)
        start = self.cycle
        self.send(jobs)
        beats = sum(len(j.x_beats) + len(j.w_beats) for j in jobs)
        await self.drain(timeout_cycles or 40 * beats + 2000)
        return {"cycles": self.cycle - start, "x": self.x_taken[first_x:], "w": self.w_taken[first_w:],
                "y": self.y_taken[first_y:]}

    def check(self, extra: list[str] = ()):
        board = self.board.summary()
        problems = list(extra)
        if board["missing_beats"]:
            problems.append(f"{board['missing_beats']} expected result beats never arrived")
        if board["mismatches"]:
            problems.append(f"{board['mismatches']} mismatches, first: {board['first_failure']}")
        if self.unstable:
            problems.append(f"m_axis_y changed or dropped a beat {self.unstable} times before a transfer")
        if self.valid_in_reset:
            problems.append(f"tvalid/tready high {self.valid_in_reset} times during reset")
        assert not problems, "; ".join(problems)


def counts(p, jobs) -> dict:
    return {"jobs": len(jobs), "weight_blocks": sum(j.weight_blocks for j in jobs),
            "activation_blocks": sum(len(j.x_beats) for j in jobs),
            "invalid_vectors": sum(j.invalid for j in jobs),
            "altered_groups": sum(len(j.altered_groups) for j in jobs)}


def real_set(p, lanes: int, rows: int, vectors: int, seed: int) -> list[al.Job]:
    if not p.real:
        return []
    return al.real_jobs(p.block, lanes, rows, vectors, seed)


def corner_set(p, lanes: int, max_blocks: int, seed: int) -> list[al.Job]:
    """Inf/NaN vectors, odd row counts, altered block counts, tuser on non-tlast beats, the vector
    length limits; random vectors and MSE-quantized random weights."""
    B = p.block
    jobs = []
    k = itertools.count(seed * 1000)
    for rows in sorted({1, max(1, lanes - 1), lanes + 1, 3 * lanes + 2}):
        for nblocks in (1, 3, 7):
            x = al.random_vector(nblocks, B, "heavy_tailed", next(k))
            jobs.append(al.make_job(f"corner/odd_rows/r{rows}_k{nblocks}", x,
                                    al.random_weights(rows, nblocks, B, next(k)), lanes))
    for count in (1, 5, 3 * B):
        x = al.nonfinite_vector(4, B, next(k), count)
        jobs.append(al.make_job(f"corner/nonfinite/{count}", x,
                                al.random_weights(2 * lanes + 1, 4, B, next(k)), lanes))
    gen = torch.Generator().manual_seed(seed)
    for alter in ({0: -1}, {1: 1}, {0: 3, 2: -4}, {2: 1}, {1: -1, 2: -1}):
        x = al.random_vector(5, B, "uniform", next(k))
        jobs.append(al.make_job(f"corner/block_count/{alter}", x,
                                al.random_weights(3 * lanes, 5, B, next(k)), lanes, alter=alter,
                                user_noise=gen))
    x = al.nonfinite_vector(6, B, next(k), 2)
    jobs.append(al.make_job("corner/block_count/nonfinite", x, al.random_weights(2 * lanes - 1, 6, B, next(k)),
                            lanes, alter={1: -2}, user_noise=gen))
    x = al.random_vector(max_blocks, B, "exponent_spread", next(k))
    jobs.append(al.make_job("corner/limit/max_blocks", x, al.random_weights(lanes + 1, max_blocks, B, next(k)),
                            lanes))
    x = al.random_vector(max_blocks + 1, B, "gaussian", next(k))
    jobs.append(al.flag_every_group(al.make_job(
        "corner/limit/too_long", x, al.random_weights(lanes, max_blocks + 1, B, next(k)), lanes)))
    x = al.random_vector(2, B, "lognormal", next(k))
    jobs.append(al.make_job("corner/limit/after_too_long", x, al.random_weights(lanes, 2, B, next(k)), lanes))
    return jobs


def spans(jobs, run) -> tuple[list[float], list[float], list[int]]:
    """Per job: weight beats and activation blocks per clock over their own spans; the cycles from
    each vector's final block to its matrix's first weight beat."""
    w_rates, x_rates, turnarounds = [], [], []
    x, w = 0, 0
    for job in jobs:
        xs = run["x"][x:x + len(job.x_beats)]
        ws = [c for c, _ in run["w"][w:w + len(job.w_beats)]]
        x += len(job.x_beats)
        w += len(job.w_beats)
        if len(xs) > 1:
            x_rates.append(len(xs) / (xs[-1] - xs[0] + 1))
        if len(ws) > 1:
            w_rates.append(len(ws) / (ws[-1] - ws[0] + 1))
        if xs and ws:
            turnarounds.append(ws[0] - xs[-1])
    return w_rates, x_rates, turnarounds


@cocotb.test()
async def linear_real_layers_unstalled(dut):
    """Real layers with nothing paused: bits, one weight beat and one activation block per clock,
    the documented latency and vector turnaround."""
    p = params()
    bench = LinearBench(dut)
    latency, vector_latency, _ = engine_figures(bench.block, bench.lanes)
    bench.set_pauses()
    await bench.reset()
    lanes = bench.lanes
    jobs = real_set(p, lanes, rows=p.count(quick=2 * lanes + 1, full=8 * lanes + 3),
                    vectors=p.count(quick=2, full=6, light=3), seed=p.seed)
    if not jobs:
        jobs = corner_set(p, lanes, 8, p.seed)[:6]
    run = await bench.run(jobs)
    w_rates, x_rates, turnarounds = spans(jobs, run)
    lasts = [c for c, last in run["w"] if last]
    latencies = sorted({y - t for t, y in zip(lasts, run["y"])})
    total_w = sum(len(j.w_beats) for j in jobs)
    board = bench.board.summary()
    figures = counts(p, jobs)
    write_stats("linear_real_layers_unstalled", vectors=figures["weight_blocks"], results=board["exact_lanes"],
                mismatches=board["mismatches"], cycles=run["cycles"],
                blocks_per_cycle=min(w_rates) * lanes if w_rates else None,
                weight_beats_per_cycle=min(w_rates) if w_rates else None,
                activation_blocks_per_cycle=min(x_rates) if x_rates else None,
                weight_blocks_per_cycle_overall=total_w * lanes / run["cycles"],
                latency=latencies, vector_turnaround=sorted(set(turnarounds)), tags=board["tags"],
                unstable_beats=bench.unstable, **figures)
    dut._log.info(f"{figures}, {board['exact']} result beats exact, weight beats/clock {min(w_rates):.3f}, "
                  f"activation blocks/clock {min(x_rates):.3f}, latency {latencies}, "
                  f"turnaround {sorted(set(turnarounds))}")
    bench.check()
    assert min(w_rates) == 1.0, f"weight beats per clock {min(w_rates)} < 1 without back-pressure"
    assert min(x_rates) == 1.0, f"activation blocks per clock {min(x_rates)} < 1"
    assert latencies == [latency], f"latency {latencies} differs from the documented {latency}"
    assert set(turnarounds) == {vector_latency}, f"vector turnaround {set(turnarounds)} != {vector_latency}"


@cocotb.test()
async def linear_real_layers_backpressure(dut):
    """Real layers with random pauses on s_axis_x, s_axis_w and m_axis_y."""
    p = params()
    bench = LinearBench(dut)
    bench.set_pauses(random_pauses(0.3, p.seed + 1), random_pauses(0.25, p.seed + 2),
                     random_pauses(0.5, p.seed + 3))
    await bench.reset()
    jobs = real_set(p, bench.lanes, rows=p.count(quick=bench.lanes + 3, full=4 * bench.lanes + 1),
                    vectors=p.count(quick=2, full=4, light=2), seed=p.seed + 10)
    run = await bench.run(jobs)
    board = bench.board.summary()
    figures = counts(p, jobs)
    write_stats("linear_real_layers_backpressure", vectors=figures["weight_blocks"],
                results=board["exact_lanes"], mismatches=board["mismatches"], cycles=run["cycles"],
                tags=board["tags"], unstable_beats=bench.unstable, **figures)
    bench.check()
    assert not p.real or board["exact"] == sum(len(j.expected) for j in jobs)


@cocotb.test()
async def linear_corners(dut):
    """Inf/NaN vectors, odd row counts, wrong block counts, tuser noise and the vector length
    limits, back to back, under random, periodic and bursty pauses on every port."""
    p = params()
    bench = LinearBench(dut)
    _, _, max_blocks = engine_figures(bench.block, bench.lanes)
    await bench.reset()
    patterns = [
        ("random", random_pauses(0.3, p.seed + 4), random_pauses(0.3, p.seed + 5), random_pauses(0.4, p.seed + 6)),
        ("periodic", itertools.cycle([False, True]), itertools.cycle([False, False, True]),
         itertools.cycle([True, False, False])),
        ("bursty", itertools.cycle([False] * 9 + [True] * 3), itertools.cycle([False] * 12 + [True] * 5),
         itertools.cycle([False] * 6 + [True] * 7)),
    ]
    rounds = p.count(quick=1, full=3, light=2)
    totals = {}
    cycles = 0
    for r, (name, px, pw, py) in enumerate(patterns[:max(rounds, 1)]):
        bench.set_pauses(px, pw, py)
        jobs = corner_set(p, bench.lanes, max_blocks, p.seed * 10 + r)
        run = await bench.run(jobs)
        cycles += run["cycles"]
        for key, value in counts(p, jobs).items():
            totals[key] = totals.get(key, 0) + value
    board = bench.board.summary()
    write_stats("linear_corners", vectors=totals["weight_blocks"], results=board["exact_lanes"],
                mismatches=board["mismatches"], cycles=cycles, flag_only_beats=board["flag_only"],
                tags=board["tags"], unstable_beats=bench.unstable, **totals)
    bench.check()
    assert board["flag_only"] > 0 and totals["invalid_vectors"] > 0


@cocotb.test()
async def linear_reset_mid_traffic(dut):
    """aresetn low while vectors load, matrices stream and results wait; afterwards every answer is
    golden again, and nothing is offered while the engine is idle."""
    p = params()
    bench = LinearBench(dut)
    _, _, max_blocks = engine_figures(bench.block, bench.lanes)
    await bench.reset()
    rounds = p.count(quick=3, full=6, light=4)
    dropped = spurious = 0
    after = 0
    for r in range(rounds):
        bench.set_pauses(random_pauses(0.2, r), random_pauses(0.2, r + 50), random_pauses(0.7, r + 100))
        jobs = corner_set(p, bench.lanes, 8, p.seed * 100 + r)[:8]
        bench.send(jobs)
        for _ in range(15 + 37 * r):
            await RisingEdge(dut.aclk)
        dropped += await bench.reset(cycles=2 + r % 3)
        for _ in range(12):     # nothing sent: nothing may come out
            await RisingEdge(dut.aclk)
            await ReadOnly()
            spurious += int(dut.m_axis_y_tvalid.value)
        await RisingEdge(dut.aclk)
        fresh = real_set(p, bench.lanes, rows=bench.lanes + 1, vectors=1, seed=p.seed + r) \
            + corner_set(p, bench.lanes, max_blocks, p.seed * 200 + r)[3:7]
        await bench.run(fresh)
        after += sum(j.weight_blocks for j in fresh)
    board = bench.board.summary()
    write_stats("linear_reset_mid_traffic", vectors=after, results=board["exact_lanes"],
                mismatches=board["mismatches"], dropped_by_reset=dropped, spurious_after_reset=spurious,
                valid_during_reset=bench.valid_in_reset, tags=board["tags"], unstable_beats=bench.unstable)
    bench.check()
    assert dropped > 0, "no result was pending at any reset: the test did not reset mid-traffic"
    assert spurious == 0, f"m_axis_y_tvalid rose {spurious} times after reset with nothing sent"
