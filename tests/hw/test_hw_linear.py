"""bd_linear (SPEC 11) and its small parts in the Amaranth simulator.

Each part is checked against a Python model of its ports with random stimulus and back-pressure;
the whole engine is checked bit for bit against ``golden.bd.linear`` through its AXI4-Stream ports
(the golden answers come from :mod:`tb.axis_linear`, shared with the cocotb testbench), with random
pauses on all three streams, back-to-back matrices, Inf/NaN vectors, rows not a multiple of N,
groups with a wrong block count, over-long vectors and a reset in mid-traffic. Unstalled runs
measure the documented latency and the sustained rate of one weight beat and one activation block
per clock. The engine runs at the default ``pipeline`` setting (0) and at the deepest one
(:data:`DEEP`), the unstalled run at a middle setting too.
"""
from __future__ import annotations

import dataclasses
import gc
import random
import re
import warnings
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from amaranth.hdl import UnusedElaboratable
from amaranth.lib import data
from amaranth.back import verilog
from amaranth.sim import Simulator

from bd_hw import units
from bd_hw.layouts import block_layout, meta_layout, pack, result_layout, unpack
from bd_hw.linear import BDLinear
from bd_hw.linear_parts import (ActivationBuffer, GroupCounter, LaneCollector, PackedBlockUnpacker,
                                VectorCounter)
from bd_hw.params import LinearParams
from tests.hw.testing import CLOCK_PERIOD, as_int, run_comb
from golden import bd, vectors
from golden.spec import LINEAR_LANES
from tb.axis_linear import USER_MISMATCH, Job, make_job, unpack_y

ROOT = Path(__file__).resolve().parents[2]
DEEP = len(BDLinear.CUT_POINTS)         # every cut point of the quantizer and the dot units taken


def turnaround(pipeline: int) -> int:
    """Vector turnaround at ``pipeline``: the quantizer's latency and one edge; its ninth cut
    point, ``"ready"``, adds no stage."""
    return 5 + pipeline - (pipeline >= 9)


def dot_stages(pipeline: int) -> int:
    """Register stages the dot units' cut points add at ``pipeline``: the first four each one (the
    engine does not take the fifth, ``"ready"``)."""
    return min(pipeline, 4)


def clocked(dut, bench):
    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD)
    sim.add_testbench(bench)
    sim.run()


def weights(rows: int, nblocks: int, block: int, seed: int, family: str = "gaussian") -> bd.Blocks:
    x = vectors.random_blocks(rows * nblocks, block, family, seed=seed).reshape(rows, -1)
    return bd.quantize(x, block=block, method="mse")


# --- PackedBlockUnpacker --------------------------------------------------------------------------

@pytest.mark.parametrize("B,N", [(16, 1), (16, 8), (32, 4), (32, 16), (64, 2)])
def test_unpacker_matches_pack_rows(B, N):
    """Beats from bd.pack_rows unpack to the rows' fields; set upper header bits are ignored."""
    q = weights(2 * N + 1, 3, B, seed=B + N)
    beats = bd.pack_rows(q, lanes=N)
    dut = PackedBlockUnpacker(B, N)
    layout = data.ArrayLayout(block_layout(B), N)
    stride = 2 + B // 2
    vecs, wanted = [], []
    rng = random.Random(N)
    for g in range(beats.shape[0]):
        for j in range(beats.shape[1]):
            raw = bytearray(beats[g, j].tolist())
            for n in range(N):
                raw[n * stride + 1] |= rng.getrandbits(7) << 1     # header bits 15:9
            vecs.append({"tdata": int.from_bytes(raw, "little")})
            lanes = []
            for n in range(N):
                r = g * N + n
                if r < q.exp.shape[0]:
                    lanes.append({"codes": q.codes[r, j].tolist(), "dialect": int(q.dialect[r, j]),
                                  "exp": int(q.exp[r, j])})
                else:
                    lanes.append({"codes": [0] * B, "dialect": 0, "exp": 0})
            wanted.append(lanes)
    got = run_comb(dut, vecs, ["blocks"])
    for k, (out, lanes) in enumerate(zip(got, wanted)):
        assert unpack(layout, out["blocks"]) == lanes, f"beat {k}"


# --- ActivationBuffer -----------------------------------------------------------------------------

def test_activation_buffer_against_model():
    """Random writes and synchronous reads: data the cycle after r_en, held while r_en is low,
    the new word when reading the address being written (transparent)."""
    B, depth = 16, 12
    dut = ActivationBuffer(B, depth)
    layout = block_layout(B)
    rng = random.Random(3)

    def word():
        return pack(layout, {"codes": [rng.getrandbits(4) for _ in range(B)],
                             "dialect": rng.getrandbits(4), "exp": rng.getrandbits(5)})

    async def bench(ctx):
        mem = [0] * depth
        r_data = 0
        collisions = 0
        for cycle in range(600):
            w_en, w_addr, w_data = rng.random() < 0.5, rng.randrange(depth), word()
            r_en, r_addr = rng.random() < 0.6, rng.randrange(depth)
            if rng.random() < 0.15:
                r_addr = w_addr
            ctx.set(dut.w_en, w_en)
            ctx.set(dut.w_addr, w_addr)
            ctx.set(as_int(dut.w_data), w_data)
            ctx.set(dut.r_en, r_en)
            ctx.set(dut.r_addr, r_addr)
            await ctx.tick()
            if w_en:
                mem[w_addr] = w_data
            if r_en:
                r_data = mem[r_addr]
                collisions += w_en and r_addr == w_addr
            assert ctx.get(as_int(dut.r_data)) == r_data, f"cycle {cycle}"
        assert collisions > 10

    clocked(dut, bench)


# --- VectorCounter --------------------------------------------------------------------------------

def test_vector_counter_against_model():
    """Random activation traffic: counts, write addresses, in-flight blocks, the closing tlast, the
    over-long vector and the Inf/NaN flag; clear starts over."""
    limit, flight = 5, 4
    dut = VectorCounter(limit, flight)
    rng = random.Random(5)

    async def bench(ctx):
        count = write = inflight = 0
        closed = invalid = False
        seen = {"overflow": 0, "loaded": 0, "dropped": 0, "invalid": 0}
        for cycle in range(3000):
            take = not closed and inflight < flight and rng.random() < 0.7
            last = take and rng.random() < 0.2
            written = inflight > 0 and rng.random() < 0.6
            bad = written and rng.random() < 0.1
            loaded = closed and inflight == 0
            clear = loaded and rng.random() < 0.5
            for name, value in (("take", take), ("last", last), ("written", written),
                                ("invalid", bad), ("clear", clear)):
                ctx.set(getattr(dut, name), value)
            _, _, w_addr, w_en, got_loaded, got_count, overflow = await ctx.tick().sample(
                dut.w_addr, dut.w_en, dut.loaded, dut.count, dut.overflow)
            # outputs of this cycle, before the edge
            assert got_count == count and overflow == (count > limit), f"cycle {cycle}"
            assert got_loaded == loaded, f"cycle {cycle}"
            assert w_en == (written and write < limit), f"cycle {cycle}"
            if w_en:
                assert w_addr == write, f"cycle {cycle}"
            seen["overflow"] += overflow
            seen["loaded"] += loaded
            seen["dropped"] += written and write >= limit
            # the edge
            if clear:
                count = write = inflight = 0
                closed = invalid = False
            else:
                count += take and count <= limit
                closed |= last
                write += written and write < limit
                invalid |= bad
                inflight += int(take) - int(written)
            assert ctx.get(dut.closed) == closed and ctx.get(dut.any_invalid) == invalid, f"cycle {cycle}"
            seen["invalid"] += invalid
        assert all(seen.values()), seen

    clocked(dut, bench)


# --- GroupCounter ---------------------------------------------------------------------------------

def test_group_counter_against_model():
    """Block index within a group and the block-count check at its tlast, with groups shorter,
    equal to and longer than the vector (beyond max_blocks too), and over-long vectors."""
    limit = 6
    dut = GroupCounter(limit)
    rng = random.Random(9)

    async def bench(ctx):
        index = 0
        blocks = rng.randint(1, limit)
        outcomes = {True: 0, False: 0}
        for cycle in range(4000):
            take = rng.random() < 0.8
            stop = blocks + rng.choice((-1, 0, 0, 0, 1, limit))      # planned group length
            last = take and (index + 1 >= stop or rng.random() < 0.03)
            overflow = blocks == limit + 1
            ctx.set(dut.take, take)
            ctx.set(dut.last, last)
            ctx.set(dut.blocks, blocks)
            ctx.set(dut.overflow, overflow)
            _, _, addr, mismatch = await ctx.tick().sample(dut.addr, dut.mismatch)
            assert addr == index % (1 << dut.addr_bits), f"cycle {cycle}"
            if last:
                assert mismatch == (overflow or index + 1 != blocks), f"cycle {cycle}"
                outcomes[bool(mismatch)] += 1
                index = 0
                if rng.random() < 0.3:
                    blocks = rng.randint(1, limit + 1)
            elif take:
                index = min(index + 1, limit)
        assert min(outcomes.values()) > 50, outcomes

    clocked(dut, bench)


# --- LaneCollector --------------------------------------------------------------------------------

def run_collector(dut, *, count, seed, meta_gap, delay, o_ready, cycles):
    """Drive a LaneCollector as the engine does: a flags beat offered with probability
    ``1 - meta_gap`` (taken while ``meta.ready``), each taken group's results arriving on every
    lane together ``delay(rng)`` cycles after its flags (at least 2, in order, at most one a
    cycle), ``o.ready`` from ``o_ready(cycle, rng)``. Checks at every clock that the results are
    always taken, that the output holds until taken, and that the owed groups stay within
    capacity; returns ``(out, sent, owed_seen, meta_ready)``: the output beats in order, the
    (results, flags) sent, the owed counts and the ``meta.ready`` seen cycle by cycle."""
    N = dut.N
    rng = random.Random(seed)
    layout = result_layout(N)
    sent = [([rng.getrandbits(32) for _ in range(N)],
             {"invalid": rng.getrandbits(1), "mismatch": rng.getrandbits(1), "final": rng.getrandbits(1)})
            for _ in range(count)]
    out, owed_seen, meta_ready = [], [], []

    async def bench(ctx):
        next_meta, arrivals, held, owed = 0, deque(), None, 0
        for cycle in range(cycles):
            offer = next_meta < count and rng.random() >= meta_gap
            ctx.set(dut.meta.valid, offer)
            if offer:
                ctx.set(as_int(dut.meta.payload), pack(meta_layout(), sent[next_meta][1]))
            arrive = bool(arrivals) and arrivals[0][0] <= cycle
            for n in range(N):
                ctx.set(dut.results[n].valid, arrive)
                if arrive:
                    ctx.set(dut.results[n].payload.result, sent[arrivals[0][1]][0][n])
            ready = o_ready(cycle, rng)
            ctx.set(dut.o.ready, ready)
            samples = await ctx.tick().sample(dut.meta.ready, *(r.ready for r in dut.results),
                                              dut.o.valid, as_int(dut.o.payload))
            m_ready, r_ready, valid, payload = samples[2], samples[3:3 + N], samples[-2], samples[-1]
            assert all(r_ready), f"cycle {cycle}: a result was refused"
            if held is not None:
                assert valid and payload == held, f"cycle {cycle}: output changed before it was taken"
            held = payload if valid and not ready else None
            meta_ready.append(m_ready)
            owed_seen.append(owed)
            if offer and m_ready:
                at = max(cycle + delay(rng), arrivals[-1][0] + 1 if arrivals else 0)
                arrivals.append((at, next_meta))
                next_meta += 1
                owed += 1
            if arrive:
                arrivals.popleft()
            if valid and ready:
                out.append(unpack(layout, payload))
                owed -= 1
            assert 0 <= owed <= dut.capacity, f"cycle {cycle}: {owed} groups owed"

    clocked(dut, bench)
    return out, sent, owed_seen, meta_ready


def test_lane_collector_in_order_under_backpressure():
    """Random gaps on the flags, results arriving 2 to 9 cycles after their flags, o.ready low in
    long stretches and random: every output beat holds the n-th group's results and flags, in
    order, none lost or repeated; the credit fills (capacity groups owed) and holds there."""
    N, count = 4, 300
    dut = LaneCollector(N, capacity=12)
    stretch = lambda cycle, rng: (cycle // 40) % 3 != 1 and rng.random() < 0.7
    out, sent, owed, _ = run_collector(dut, count=count, seed=11, meta_gap=0.2,
                                       delay=lambda rng: rng.randint(2, 9), o_ready=stretch,
                                       cycles=40 * count)
    assert len(out) == count
    for i, (beat, (results, meta)) in enumerate(zip(out, sent)):
        assert beat["data"] == results, f"beat {i}"
        assert beat["user"] == meta["invalid"] | meta["mismatch"] << 1 and beat["last"] == meta["final"]
    assert max(owed) == dut.capacity


@pytest.mark.parametrize("spare", [1, 0])
def test_lane_collector_full_rate_needs_one_slot_beyond_the_round_trip(spare):
    """Flags offered every clock, results ``delay`` cycles later, o.ready high: with capacity
    ``delay + 2`` (the groups owed at full rate, ``delay + 1``, and one slot more) meta.ready never
    drops; one slot fewer and it does. meta.ready and the results' ready do not follow o.ready
    within a cycle."""
    N, delay = 2, 6
    dut = LaneCollector(N, capacity=delay + 1 + spare)

    out, _, _, meta_ready = run_collector(dut, count=60, seed=3, meta_gap=0.0, delay=lambda rng: delay,
                                          o_ready=lambda cycle, rng: True, cycles=100)
    assert len(out) == 60
    assert all(meta_ready[:60]) == bool(spare)

    async def bench(ctx):
        for cycle in range(30):
            ctx.set(dut.meta.valid, 1)
            ctx.set(dut.results[0].valid, cycle > 3)
            seen = []
            for ready in (0, 1):
                ctx.set(dut.o.ready, ready)
                seen.append((ctx.get(dut.meta.ready), ctx.get(dut.results[0].ready)))
            assert seen[0] == seen[1], f"cycle {cycle}: ready follows o.ready"
            ctx.set(dut.o.ready, cycle % 3 == 0)
            await ctx.tick()

    dut = LaneCollector(N, capacity=4)
    clocked(dut, bench)


# --- the whole engine -----------------------------------------------------------------------------

@dataclass
class EngineRun:
    received: list = field(default_factory=list)        # (cycle, results, user, last)
    x_taken: list = field(default_factory=list)         # cycles
    w_taken: list = field(default_factory=list)         # (cycle, last)
    cycles: int = 0
    most_owed: int = 0                                  # row groups taken, results not yet out


def run_engine(dut: BDLinear, segments, *, x_pause=0.0, w_pause=0.0, y_pause=0.0, y_ready=None,
               seed=0, max_cycles=60000) -> list[EngineRun]:
    """Drive the AXI ports of ``dut`` cycle by cycle. ``segments`` is a list of ``(jobs, cut)``:
    the jobs' beats are sent back to back; with ``cut`` set, aresetn goes low after ``cut`` cycles
    (3 cycles of reset, queues dropped) and the next segment starts; otherwise the segment runs until
    every expected beat has arrived. Checks the AXI rules on m_axis_y (valid and data held until
    taken; no valid in reset), that no beat arrives beyond the expected ones and that the engine
    never owes more than its capacity. ``y_ready(cycle)``, if given, drives m_axis_y_tready instead
    of the random pauses."""
    rng = random.Random(seed)
    runs = []

    def setall(ctx, signals):
        for sig, value in signals:
            ctx.set(sig, value)

    async def bench(ctx):
        ctx.set(dut.aresetn, 1)
        cycle = 0
        for jobs, cut in segments:
            run = EngineRun()
            runs.append(run)
            x_q = deque((int.from_bytes(b, "little"), int(k == len(j.x_beats) - 1))
                        for j in jobs for k, b in enumerate(j.x_beats))
            w_q = deque((int.from_bytes(b.data, "little"), b.last, b.user) for j in jobs for b in j.w_beats)
            expected = sum(len(j.expected) for j in jobs)
            x_cur = w_cur = None
            held = None
            start = cycle
            while cut is None or cycle - start < cut:
                if x_cur is None and x_q and rng.random() >= x_pause:
                    x_cur = x_q.popleft()
                if w_cur is None and w_q and rng.random() >= w_pause:
                    w_cur = w_q.popleft()
                ready = y_ready(cycle) if y_ready else rng.random() >= y_pause
                setall(ctx, [(dut.s_axis_x_tvalid, x_cur is not None), (dut.s_axis_w_tvalid, w_cur is not None),
                             (dut.m_axis_y_tready, ready)])
                if x_cur is not None:
                    setall(ctx, [(dut.s_axis_x_tdata, x_cur[0]), (dut.s_axis_x_tlast, x_cur[1])])
                if w_cur is not None:
                    setall(ctx, [(dut.s_axis_w_tdata, w_cur[0]), (dut.s_axis_w_tlast, w_cur[1]),
                                 (dut.s_axis_w_tuser, w_cur[2])])
                _, _, x_rdy, w_rdy, y_valid, y_data, y_user, y_last = await ctx.tick().sample(
                    dut.s_axis_x_tready, dut.s_axis_w_tready, dut.m_axis_y_tvalid, dut.m_axis_y_tdata,
                    dut.m_axis_y_tuser, dut.m_axis_y_tlast)
                beat = (y_data, y_user, y_last)
                if held is not None:
                    assert y_valid and beat == held, f"cycle {cycle}: m_axis_y changed before it was taken"
                held = beat if y_valid and not ready else None
                if y_valid and ready:
                    run.received.append((cycle, unpack_y(y_data, dut.N), y_user, y_last))
                    assert len(run.received) <= expected, f"cycle {cycle}: unexpected result beat"
                if x_cur is not None and x_rdy:
                    run.x_taken.append(cycle)
                    x_cur = None
                if w_cur is not None and w_rdy:
                    run.w_taken.append((cycle, w_cur[1]))
                    w_cur = None
                owed = sum(last for _, last in run.w_taken) - len(run.received)
                run.most_owed = max(run.most_owed, owed)
                assert owed <= dut.capacity, f"cycle {cycle}: {owed} groups owed"
                cycle += 1
                assert cycle - start < max_cycles, f"timeout: {len(run.received)} of {expected} results"
                if cut is None and len(run.received) == expected:
                    assert not x_q and not w_q and x_cur is None and w_cur is None, "beats left unsent"
                    # a few more cycles: nothing else may arrive
                    for _ in range(dut.latency + 4):
                        setall(ctx, [(dut.s_axis_x_tvalid, 0), (dut.s_axis_w_tvalid, 0),
                                     (dut.m_axis_y_tready, 1)])
                        _, _, y_valid = await ctx.tick().sample(dut.m_axis_y_tvalid)
                        assert not y_valid, "result beat beyond the expected ones"
                        cycle += 1
                    break
            run.cycles = cycle - start
            if cut is not None:
                setall(ctx, [(dut.aresetn, 0), (dut.s_axis_x_tvalid, 0), (dut.s_axis_w_tvalid, 0),
                             (dut.m_axis_y_tready, 1)])
                for _ in range(3):
                    await ctx.tick()
                    cycle += 1
                    assert not ctx.get(dut.m_axis_y_tvalid), "m_axis_y_tvalid high in reset"
                    assert not ctx.get(dut.s_axis_x_tready) and not ctx.get(dut.s_axis_w_tready)
                ctx.set(dut.aresetn, 1)

    sim = Simulator(dut)
    sim.add_clock(CLOCK_PERIOD, domain="sync")
    sim.add_testbench(bench)
    sim.run()
    return runs


def check_results(jobs: list[Job], run: EngineRun):
    expected = [e for j in jobs for e in j.expected]
    assert len(run.received) == len(expected)
    for k, ((_, results, user, last), want) in enumerate(zip(run.received, expected)):
        assert want.matches(results, user, last), (
            f"result beat {k}: got {[hex(r) for r in results]} user {user} last {last}, "
            f"expected {[hex(r) for r in want.results]} user {want.user} last {want.last}")


def mixed_jobs(B, N, seed, count, max_blocks):
    """Random vectors of several families and lengths, Inf/NaN in some, rows not a multiple of N,
    and groups with a wrong block count."""
    gen = torch.Generator().manual_seed(seed)
    jobs = []
    for i in range(count):
        nblocks = 1 + i % min(4, max_blocks)
        family = vectors.RANDOM_FAMILIES[i % len(vectors.RANDOM_FAMILIES)]
        x = vectors.random_blocks(nblocks, B, family, seed=seed * 50 + i).reshape(-1)
        if i % 3 == 1:
            x[int(torch.randint(0, x.numel(), (1,), generator=gen))] = float(["inf", "-inf", "nan"][i % 3])
        rows = 1 + (3 * i + 2) % (2 * N + 3)
        q = weights(rows, nblocks, B, seed=seed * 70 + i, family=family)
        alter = {}
        if i % 4 == 2:
            alter = {0: 1} if nblocks == 1 else {0: -1}
        jobs.append(make_job(f"mixed{i}", x, q, N, alter=alter, user_noise=gen))
    return jobs


def test_linear_rejects_bad_parameters():
    """Each bad argument is named, by the parameter value and by the engine, and a rejected
    engine leaves no component behind (no "created but never used" warning)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for kwargs, name in (({"B": 24}, "B"), ({"N": 3}, "N"), ({"N": 32}, "N"),
                             ({"max_blocks": 0}, "max_blocks"), ({"max_blocks": 2.0}, "max_blocks"),
                             ({"max_blocks": 2 ** 100}, "max_blocks"), ({"pipeline": -1}, "pipeline"),
                             ({"pipeline": DEEP + 1}, "pipeline"), ({"pipeline": True}, "pipeline"),
                             ({"pipeline": 1.0}, "pipeline"), ({"accumulate": "fp8"}, "accumulate"),
                             ({"products": "shared"}, "products"), ({"products": "dsp2"}, "products"),
                             ({"activation_copies": 3}, "activation_copies"),
                             ({"N": 4, "activation_copies": 8}, "activation_copies"),
                             ({"activation_copies": 0}, "activation_copies"),
                             ({"activation_copies": True}, "activation_copies")):
            for make in (BDLinear, LinearParams):
                with pytest.raises(ValueError, match=name):
                    make(**kwargs)
        gc.collect()
    assert not [w for w in caught if issubclass(w.category, UnusedElaboratable)]
    params = LinearParams(32, 8, pipeline=2)
    engine = BDLinear(params)
    assert engine.params is params and BDLinear(32, N=8, pipeline=2).params == params
    assert params.accumulate == "exact" and params.dot.accumulate == "exact"
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.N = 4
    assert DEEP == 10 and BDLinear.CUT_POINTS[0] == ("select", "abs")
    assert BDLinear.CUT_POINTS[8:] == (("ready", None), ("exp16", None))
    # The engine never holds its dot units, so it does not take their "ready" cut.
    assert BDLinear.CUT_POINTS[3] == ("exp", "decode") and BDLinear.CUT_POINTS[5] == ("count", None)
    # The dot units' "negatives" cut adds no stage: the engine's latency stops growing at 4.
    assert BDLinear.CUT_POINTS[4] == ("exp8", "negatives")
    fast = LinearParams.fastest(32, 8)
    assert (fast.pipeline, fast.activation_copies, fast.dot.pipeline) == (DEEP, 8, 5)
    assert fast.dot.cuts == {"abs", "lzc", "tree", "decode", "negatives"}
    for p in range(DEEP + 1):
        dut = LinearParams(32, 4, pipeline=p)       # the figures, without building hardware
        assert "ready" not in dut.dot.cuts
        assert (dut.latency, dut.vector_latency, dut.capacity) == \
            (8 + dot_stages(p), turnaround(p), 9 + dot_stages(p))


@pytest.mark.parametrize("pipeline", [0, 2, DEEP])
def test_linear_unstalled_latency_and_rate(pipeline):
    """No pauses: results equal golden, latency == .latency for every group, one weight beat and
    one activation block per clock, and a vector turnaround of .vector_latency."""
    B, N = 16, 2
    dut = BDLinear(B, N, max_blocks=8, pipeline=pipeline)
    assert (dut.latency, dut.vector_latency) == (8 + dot_stages(pipeline), turnaround(pipeline))
    jobs = []
    # (40, 1): one-block groups back to back, the most results in flight at full rate
    for i, (rows, nblocks) in enumerate(((5, 3), (4, 1), (7, 8), (2, 2), (40, 1))):
        x = vectors.random_blocks(nblocks, B, "gaussian", seed=i).reshape(-1)
        jobs.append(make_job(f"plain{i}", x, weights(rows, nblocks, B, seed=10 + i), N))
    run, = run_engine(dut, [(jobs, None)])
    check_results(jobs, run)
    lasts = [c for c, last in run.w_taken if last]
    assert [c - t for (c, *_), t in zip(run.received, lasts)] == [dut.latency] * len(lasts)
    w, x = 0, 0
    for job in jobs:
        xs = run.x_taken[x:x + len(job.x_beats)]
        ws = [c for c, _ in run.w_taken[w:w + len(job.w_beats)]]
        assert xs[-1] - xs[0] == len(xs) - 1, "activation blocks not one per clock"
        assert ws[-1] - ws[0] == len(ws) - 1, "weight beats not one per clock"
        assert ws[0] - xs[-1] == dut.vector_latency
        if w:
            assert xs[0] == run.w_taken[w - 1][0] + 1, "next vector not taken right after the matrix"
        x += len(job.x_beats)
        w += len(job.w_beats)


@pytest.mark.parametrize("N,pipeline", [(1, DEEP), (4, 0)])
def test_linear_output_held_low(N, pipeline):
    """m_axis_y_tready low for long stretches under a stream of one-block groups and longer ones:
    the collector fills to its capacity, s_axis_w_tready drops, and every result comes out once
    and right when the output opens again."""
    B = 16
    dut = BDLinear(B, N, max_blocks=8, pipeline=pipeline)
    jobs = [make_job("short", vectors.random_blocks(1, B, "gaussian", seed=1).reshape(-1),
                     weights(30 * N, 1, B, seed=2), N)] + mixed_jobs(B, N, seed=5, count=4, max_blocks=8)
    run, = run_engine(dut, [(jobs, None)], y_ready=lambda cycle: cycle % 90 >= 60, w_pause=0.05, seed=2)
    check_results(jobs, run)
    assert run.most_owed == dut.capacity


@pytest.mark.parametrize("N,pipeline", [(1, 0), (4, 0), (4, DEEP)])
def test_linear_random_backpressure(N, pipeline):
    """Random pauses on s_axis_x, s_axis_w and m_axis_y, back-to-back matrices of every kind."""
    B = 16
    dut = BDLinear(B, N, max_blocks=8, pipeline=pipeline)
    jobs = mixed_jobs(B, N, seed=N + pipeline, count=10, max_blocks=8)
    assert any(j.invalid for j in jobs) and any(j.altered_groups for j in jobs)
    assert any(len(j.expected) * N != j.x16.numel() for j in jobs)
    run, = run_engine(dut, [(jobs, None)], x_pause=0.3, w_pause=0.3, y_pause=0.5, seed=N)
    check_results(jobs, run)
    assert any(user & USER_MISMATCH for _, _, user, _ in run.received)


@pytest.mark.parametrize("products,N,pipeline", [("dsp", 2, 0), ("dsp_packed", 4, 0),
                                                  ("dsp_packed", 1, DEEP)])
def test_linear_products_bit_exact(products, N, pipeline):
    """Each way of building the products (``dsp``: one multiplier per lane and element;
    ``dsp_packed``: two lanes' products per multiplier, an odd lane alone) gives the golden bits
    under random pauses."""
    B = 16
    dut = BDLinear(B, N, max_blocks=8, pipeline=pipeline, products=products)
    assert dut.params.dot.products == ("shared" if products == "dsp_packed" else products)
    jobs = mixed_jobs(B, N, seed=N + pipeline + 7, count=6, max_blocks=8)
    run, = run_engine(dut, [(jobs, None)], x_pause=0.3, w_pause=0.3, y_pause=0.4, seed=N + 3)
    check_results(jobs, run)


@pytest.mark.parametrize("N,pipeline", [(8, 0), (8, DEEP), (16, 0)])
def test_wide_engines_bit_exact(N, pipeline):
    """SPEC 11 [revised]: the engines of 8 and 16 lanes at B = 32 give the golden bits for every
    row (rows not a multiple of N, Inf/NaN, wrong block counts) under random pauses."""
    B = 32
    dut = BDLinear(B, N, max_blocks=4, pipeline=pipeline)
    jobs = mixed_jobs(B, N, seed=N + pipeline, count=4, max_blocks=4)
    assert any(j.invalid for j in jobs) and any(j.altered_groups for j in jobs)
    run, = run_engine(dut, [(jobs, None)], x_pause=0.2, w_pause=0.2, y_pause=0.3, seed=N)
    check_results(jobs, run)


@pytest.mark.parametrize("N,copies", [(2, 2), (4, 2)])
def test_linear_activation_copies(N, copies):
    """``activation_copies``: every copy of the activation buffer holds the vector (each lane
    group reads its own) and the results are the golden bits under random pauses; the Verilog has
    one memory and one read register per copy."""
    B = 16
    dut = BDLinear(B, N, max_blocks=8, pipeline=DEEP, activation_copies=copies)
    jobs = mixed_jobs(B, N, seed=N + copies + 11, count=6, max_blocks=8)
    run, = run_engine(dut, [(jobs, None)], x_pause=0.3, w_pause=0.3, y_pause=0.4, seed=N + 5)
    check_results(jobs, run)
    text = verilog.convert(BDLinear(B, N, max_blocks=8, pipeline=DEEP, activation_copies=copies),
                           name="engine")
    assert len(re.findall(r"^\s*reg \[\d+:0\] memory \[", text, re.MULTILINE)) == copies
    assert {f"a_activation{c}" for c in range(copies)} <= set(re.findall(r"\b(a_activation\d+)\b", text))


@pytest.mark.parametrize("accumulate", ["fp32", "fp16"])
def test_linear_rounded_accumulation(accumulate):
    """SPEC 6.1 modes: every lane's dot unit rounds in block order; results equal golden in that
    mode (vectors large enough to overflow FP16), with random pauses, at the default and deepest
    pipeline; the latency follows the dot unit's."""
    B, N = 16, 2
    for pipeline in (0, DEEP):
        dut = BDLinear(B, N, max_blocks=8, pipeline=pipeline, accumulate=accumulate)
        dot_cuts = min(pipeline, 2)
        assert dut.latency == (7 if accumulate == "fp32" else 8) + dot_cuts
        jobs = []
        for i, (rows, nblocks) in enumerate(((5, 3), (4, 8), (3, 1))):
            x = vectors.random_blocks(nblocks, B, "exponent_spread", seed=40 + i).reshape(-1) * 2000
            jobs.append(make_job(f"{accumulate}{i}", x, weights(rows, nblocks, B, seed=50 + i), N,
                                 accumulate=accumulate))
        run, = run_engine(dut, [(jobs, None)], x_pause=0.2, w_pause=0.3, y_pause=0.3, seed=pipeline)
        check_results(jobs, run)


@pytest.mark.parametrize("pipeline", [0, DEEP])
def test_linear_vector_limits(pipeline):
    """A vector of exactly max_blocks blocks works; one block more flags every group (tuser bit 1)."""
    B, N, limit = 16, 2, 4
    dut = BDLinear(B, N, max_blocks=limit, pipeline=pipeline)
    full = make_job("full", vectors.random_blocks(limit, B, "uniform", seed=1).reshape(-1),
                    weights(3, limit, B, seed=2), N)
    long_x = vectors.random_blocks(limit + 1, B, "uniform", seed=3).reshape(-1)
    too_long = make_job("too_long", long_x, weights(3, limit + 1, B, seed=4), N)
    too_long.expected = [e.__class__(e.results, e.user | USER_MISMATCH, e.last, checked=False)
                         for e in too_long.expected]
    after = make_job("after", vectors.random_blocks(2, B, "gaussian", seed=5).reshape(-1),
                     weights(4, 2, B, seed=6), N)
    jobs = [full, too_long, after]
    run, = run_engine(dut, [(jobs, None)], x_pause=0.2, y_pause=0.2, seed=4)
    check_results(jobs, run)


@pytest.mark.parametrize("pipeline", [0, DEEP])
def test_linear_reset_mid_traffic(pipeline):
    """aresetn low while vectors load, matrices stream and results wait: afterwards the engine
    starts from a clean state (a new vector first) and gives golden results."""
    B, N = 16, 2
    dut = BDLinear(B, N, max_blocks=8, pipeline=pipeline)
    first = mixed_jobs(B, N, seed=21, count=4, max_blocks=8)
    second = mixed_jobs(B, N, seed=22, count=3, max_blocks=8)
    third = mixed_jobs(B, N, seed=23, count=3, max_blocks=8)
    runs = run_engine(dut, [(first, 23), (second, 9), (third, None)], w_pause=0.1, y_pause=0.6, seed=7)
    assert runs[0].w_taken and runs[1].x_taken, "a cut came before any traffic"
    for jobs, run in zip((first, second), runs):       # whatever arrived before a reset is right
        expected = [e for j in jobs for e in j.expected]
        for (_, results, user, last), want in zip(run.received, expected):
            assert want.matches(results, user, last)
    check_results(third, runs[2])


# --- the emitted Verilog --------------------------------------------------------------------------

LINEAR_UNITS = [(u, B) for u, B in units.emitted() if u.kind == "linear"]


@pytest.mark.parametrize("unit,B", LINEAR_UNITS, ids=[u.file_name(B) for u, B in LINEAR_UNITS])
def test_linear_rtl_names_and_axi_ports(unit, B):
    """rtl/bd_linear[_fast]_bB_nN.v: top module named after the file, submodules prefixed by it,
    and the SPEC 11 ports with their widths (aclk/aresetn, no clk/rst)."""
    N = unit.params["N"]
    text = (ROOT / "rtl" / unit.file_name(B)).read_text()
    base = unit.name.removesuffix(f"_n{N}")
    top = f"{base}_b{B}_n{N}"
    assert base in ("bd_linear", "bd_linear_fast") and unit.params.get("pipeline", 0) == \
        (DEEP if base.endswith("_fast") else 0)
    assert unit.module(B) == top and unit.file_name(B) == f"{top}.v"
    modules = [m.lstrip("\\") for m in re.findall(r"^module\s+(\\\S+|\w+)", text, re.MULTILINE)]
    assert modules[0] == top and all(m.startswith(top + ".") for m in modules[1:])
    header = re.search(rf"^module {top}\((.*?)\);", text, re.MULTILINE | re.DOTALL).group(1)
    ports = {p.strip() for p in header.split(",")}
    widths = {"aclk": 1, "aresetn": 1,
              "s_axis_x_tdata": 16 * B, "s_axis_x_tvalid": 1, "s_axis_x_tready": 1, "s_axis_x_tlast": 1,
              "s_axis_w_tdata": 8 * N * (2 + B // 2), "s_axis_w_tvalid": 1, "s_axis_w_tready": 1,
              "s_axis_w_tlast": 1, "s_axis_w_tuser": 1,
              "m_axis_y_tdata": 32 * N, "m_axis_y_tvalid": 1, "m_axis_y_tready": 1, "m_axis_y_tlast": 1,
              "m_axis_y_tuser": 2}
    assert ports == set(widths)
    outputs = {"s_axis_x_tready", "s_axis_w_tready", "m_axis_y_tdata", "m_axis_y_tvalid",
               "m_axis_y_tlast", "m_axis_y_tuser"}
    for port, width in widths.items():
        direction = "output" if port in outputs else "input"
        vector = f"\\[{width - 1}:0\\] " if width > 1 else ""
        assert re.search(rf"^\s*{direction} {vector}{port};", text, re.MULTILINE), port


def test_verilator_throughput_driver_for_the_engine():
    """bench/verilator_driver.cpp.in rendered for the engine: aclk/aresetn instead of clk/rst,
    valid and ready held high, tlast/tuser framed by beat counters (not random), tdata from the
    random pools, and N weight blocks counted per weight beat taken."""
    from bench.verilator_throughput import ENGINE_BLOCKS, ENGINE_GROUPS, _cpp_driver, top_ports

    unit, B = LINEAR_UNITS[-1]
    top = unit.module(B)
    driver = _cpp_driver(top, top_ports((ROOT / "rtl" / unit.file_name(B)).read_text(), top))
    assert "${" not in driver and f'#include "V{top}.h"' in driver
    assert "top->clk" not in driver and "top->rst" not in driver
    assert "top->aclk = 0; top->eval();" in driver and "top->aclk = 1; top->eval();" in driver
    assert "top->aresetn = 0;" in driver and "top->aresetn = 1;" in driver
    assert "top->s_axis_x_tvalid = 1; top->s_axis_w_tvalid = 1; top->m_axis_y_tready = 1;" in driver
    for port in ("s_axis_x_tdata", "s_axis_w_tdata"):
        assert f"top->{port}[j] = pool_{port}[p][j];" in driver
    for port in ("s_axis_x_tlast", "s_axis_w_tlast", "s_axis_w_tuser", "s_axis_x_tvalid", "aclk"):
        assert f"pool_{port}" not in driver
    assert f"top->s_axis_w_tlast = wn % {ENGINE_BLOCKS} == {ENGINE_BLOCKS - 1};" in driver
    beats = ENGINE_BLOCKS * ENGINE_GROUPS
    assert f"top->s_axis_w_tuser = wn % {beats} == {beats - 1};" in driver
    assert f"accepted += {unit.params['N']} * (top->s_axis_w_tvalid & top->s_axis_w_tready);" in driver
