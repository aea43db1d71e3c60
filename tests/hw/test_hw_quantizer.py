"""bd_quantizer and its small modules in the Amaranth simulator (SPEC 1, 3, 4, 9).

Every output bit of the whole unit is compared with ``golden.bd.quantize(..., nonfinite="flag")``;
the small modules are compared with the SPEC formulas applied to ``golden.formatbook`` tables.
"""
import random

import pytest
import torch
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from bd_hw.arith import MaxTree
from bd_hw.layouts import (pack_lanes, pack_quantizer_input, unpack_lanes,
                           unpack_quantizer_output)
from bd_hw.quantizer import (BDQuantizer, ExponentMax, IndexMapper, RangeCounter,
                             SignificandShifter)
from bd_hw.testing import run_comb, run_stream, stream_get, stream_put
from golden import bd
from golden.formatbook import BLOCK_SIZES, MIDPOINTS, STAGE2_RANGES

POS_ZERO, NEG_ZERO = 0x0000, 0x8000
POS_INF, NEG_INF, QNAN, SNAN = 0x7C00, 0xFC00, 0x7E00, 0x7C01
ONE = 0x3C00
MAX_NORMAL = 0x7BFF          # 65504: ex = 30, man all ones
MIN_NORMAL = 0x0400


def fp16(sign, ex, man):
    return sign << 15 | ex << 10 | man


def fields(x):
    return x >> 15, (x >> 10) & 31, x & 0x3FF


# --- SPEC formulas for the small modules --------------------------------------------------------

def ref_exp(block):
    exps = [ex if 0 < ex < 31 else 0 for _, ex, _ in map(fields, block)]
    return max(exps), int(any(ex == 31 for _, ex, _ in map(fields, block)))


def ref_q(x, E):
    _, ex, man = fields(x)
    if ex in (0, 31) or ex > E:
        return 0
    shift = 6 + E - ex
    return (1024 + man) >> shift if shift < 11 else 0


def ref_counts(qs, pair):
    (lo_a, hi_a), (lo_b, hi_b) = STAGE2_RANGES[2 * pair].tolist(), STAGE2_RANGES[2 * pair + 1].tolist()
    ca = sum(lo_a <= q < hi_a for q in qs)
    cb = sum(lo_b <= q < hi_b for q in qs)
    return ca, cb, 2 * pair + (cb > ca)


def ref_idx(q, dialect):
    return sum(q >= m for m in MIDPOINTS[dialect].tolist())


# --- golden model of the whole unit -------------------------------------------------------------

def golden_quantize(blocks, B):
    signed = [[v - 65536 if v >= 32768 else v for v in blk] for blk in blocks]
    x = torch.tensor(signed, dtype=torch.int16).view(torch.float16)
    q = bd.quantize(x, block=B, nonfinite="flag")
    return [{"codes": q.codes[n, 0].tolist(), "dialect": int(q.dialect[n, 0]),
             "exp": int(q.exp[n, 0]), "invalid": int(q.invalid[n, 0])} for n in range(len(blocks))]


def random_block(rng, B, special=0.02):
    """FP16 elements spread over the few exponents below a random E, with occasional zeros,
    subnormals and (with probability ``special`` each) Inf/NaN."""
    E = rng.randint(1, 30)
    spread = rng.choice([0, 1, 2, 3, 6, 12])
    out = []
    for _ in range(B):
        r = rng.random()
        s = rng.getrandbits(1)
        if r < special:
            out.append(fp16(s, 31, rng.choice([0, rng.getrandbits(10)])))
        elif r < 0.06:
            out.append(fp16(s, 0, 0))
        elif r < 0.10:
            out.append(fp16(s, 0, rng.getrandbits(10)))
        else:
            ex = max(1, E - rng.randint(0, spread))
            out.append(fp16(s, ex, rng.getrandbits(10)))
    return out


def directed_blocks(B):
    rng = random.Random(B)
    blocks = {
        "all +0": [POS_ZERO] * B,
        "all -0": [NEG_ZERO] * B,
        "mixed zeros": [NEG_ZERO if k % 3 else POS_ZERO for k in range(B)],
        "subnormals only": [fp16(k & 1, 0, (37 * k + 1) & 0x3FF) for k in range(B)],
        "all ones (power of two)": [ONE] * B,
        "powers of two": [fp16(k & 1, 15 - (k % 7), 0) for k in range(B)],
        "q = 31 (man all ones at E)": [fp16(0, 20, 0x3FF)] + [fp16(1, 19, 0x155)] * (B - 1),
        "max normal": [MAX_NORMAL] * B,
        "min normal": [MIN_NORMAL] + [fp16(0, 0, 5)] * (B - 1),
        "+inf only": [POS_INF] * B,
        "nan only": [QNAN] * B,
        "inf among normals": [NEG_INF] + [fp16(0, 14, 100 * k % 1024) for k in range(B - 1)],
        "nan among normals": [fp16(1, 9, 3)] * (B - 2) + [SNAN, QNAN],
        "inf with -0": [POS_INF, NEG_ZERO] * (B // 2),
        "single element": [POS_ZERO] * (B - 1) + [fp16(1, 7, 0x200)],
        "-0 with normals": [NEG_ZERO] * (B // 2) + [fp16(0, 3, 0x3FF)] * (B // 2),
        "shift of 11 and more": [fp16(0, 25, 0)] + [fp16(0, 20, 0x3FF), fp16(1, 19, 0x3FF)] * (B // 2 - 1)
                                + [fp16(0, 1, 1)],
        "E = 1 with subnormals": [fp16(0, 1, 0x3FF), fp16(1, 0, 0x3FF)] * (B // 2),
    }
    # Stage-2 ties: as many elements in pair P0's A range [20, 26) as in its B range [15, 20).
    # E = 15: q = M >> 6 for ex = 15, so q = 20 is man = 256 and q = 15 is ex = 14, man = 896.
    tie = [fp16(0, 15, 0x3FF)] + [fp16(0, 15, 256), fp16(1, 14, 896)] * (B // 2 - 1) + [POS_ZERO]
    blocks["stage-2 tie goes to A"] = tie
    # Every q from 0 to 31 (midpoint ties go up): E = 16, q = M >> 6 at ex = 16, M >> 7 at 15...
    qs = [fp16(0, 16, 0x3FF)]
    for q in range(16, 31):
        qs.append(fp16(rng.getrandbits(1), 16, (q - 16) << 6 | rng.getrandbits(6)))
    for q in range(8, 16):
        qs.append(fp16(0, 15, (q - 8) << 7))
    for q in range(4, 8):
        qs.append(fp16(1, 14, (q - 4) << 8))
    qs += [fp16(0, 13, 0x300), fp16(0, 13, 0), fp16(0, 12, 0), fp16(0, 11, 0x3FF)]
    blocks["every q"] = (qs * 2)[:B]
    return blocks


# --- small modules ------------------------------------------------------------------------------

def test_max_tree():
    rng = random.Random(1)
    for width, count in [(5, 16), (5, 33), (3, 1), (7, 64)]:
        vectors = [[rng.getrandbits(width) >> rng.randint(0, width) for _ in range(count)]
                   for _ in range(40)]
        results = run_comb(MaxTree(width, count),
                           [{"values": pack_lanes(v, width)} for v in vectors], ["max"])
        assert [r["max"] for r in results] == [max(v) for v in vectors]


def test_max_tree_bad_parameters():
    with pytest.raises(ValueError, match="width"):
        MaxTree(0, 4)
    with pytest.raises(ValueError, match="count"):
        MaxTree(5, 0)


@pytest.mark.parametrize("B", [16, 64])
def test_exponent_max(B):
    rng = random.Random(B)
    blocks = [random_block(rng, B, special=0.03) for _ in range(60)] + list(directed_blocks(B).values())
    results = run_comb(ExponentMax(B), [{"data": pack_quantizer_input(b)} for b in blocks],
                       ["exp", "invalid"])
    for b, r in zip(blocks, results):
        assert (r["exp"], r["invalid"]) == ref_exp(b)


@pytest.mark.parametrize("B", [16, 32])
def test_significand_shifter(B):
    rng = random.Random(B + 1)
    vectors, expected = [], []
    for block in [random_block(rng, B) for _ in range(60)] + list(directed_blocks(B).values()):
        E, _ = ref_exp(block)
        vectors.append({"data": pack_quantizer_input(block), "exp": E})
        expected.append([ref_q(x, E) for x in block])
    # Precondition violated on purpose: lanes above the given exponent give 0.
    block = [fp16(0, 20, 0x3FF)] * B
    vectors.append({"data": pack_quantizer_input(block), "exp": 10})
    expected.append([0] * B)
    results = run_comb(SignificandShifter(B), vectors, ["q"])
    for e, r in zip(expected, results):
        assert unpack_lanes(r["q"], 5, B) == e
    assert any(31 in e for e in expected) and any(16 in e for e in expected)


@pytest.mark.parametrize("B", [16, 32])
def test_range_counter(B):
    rng = random.Random(B + 2)
    vectors = []
    for n in range(160):
        pair = n % 8
        qs = [rng.randint(8, 27) if rng.random() < 0.8 else rng.randint(0, 31) for _ in range(B)]
        vectors.append((qs, pair))
    # Equal counts -> A.
    lo_a, lo_b = STAGE2_RANGES[0, 0].item(), STAGE2_RANGES[1, 0].item()
    vectors.append(([lo_a, lo_b] * (B // 2), 0))
    results = run_comb(RangeCounter(B), [{"q": pack_lanes(q, 5), "pair": p} for q, p in vectors],
                       ["count_a", "count_b", "dialect"])
    dialects = set()
    for (qs, pair), r in zip(vectors, results):
        assert (r["count_a"], r["count_b"], r["dialect"]) == ref_counts(qs, pair)
        dialects.add(r["dialect"])
    assert results[-1]["dialect"] == 0 and results[-1]["count_a"] == results[-1]["count_b"] == B // 2
    assert dialects == set(range(16))


@pytest.mark.parametrize("B", [16, 32])
def test_index_mapper_exhaustive(B):
    """Every q (0..31) in every lane for every dialect."""
    vectors, expected = [], []
    for d in range(16):
        for j in range(32 // B or 1):
            for shift in range(0, 32, B):
                qs = [(k + shift + j) % 32 for k in range(B)]
                vectors.append({"q": pack_lanes(qs, 5), "dialect": d})
                expected.append([ref_idx(q, d) for q in qs])
    results = run_comb(IndexMapper(B), vectors, ["idx"])
    for e, r in zip(expected, results):
        assert unpack_lanes(r["idx"], 3, B) == e
    # The golden model's lookup table agrees with the midpoint rule.
    assert bd.INDEX_LUT.tolist() == [[ref_idx(q, d) for q in range(32)] for d in range(16)]


# --- the whole unit -----------------------------------------------------------------------------

def check_outputs(blocks, outputs, B):
    expected = golden_quantize(blocks, B)
    assert len(outputs) == len(blocks)
    for n, (o, e) in enumerate(zip(outputs, expected)):
        assert unpack_quantizer_output(o, B) == e, f"block {n}: {[hex(v) for v in blocks[n]]}"


@pytest.mark.parametrize("B", BLOCK_SIZES)
def test_quantizer_directed(B):
    blocks = directed_blocks(B)
    run = run_stream(BDQuantizer(B), [pack_quantizer_input(b) for b in blocks.values()])
    check_outputs(list(blocks.values()), run.outputs, B)
    out = dict(zip(blocks, (unpack_quantizer_output(o, B) for o in run.outputs)))
    # Hand-computed expectations straight from SPEC 1, 3 and 4.
    assert out["all -0"] == {"codes": [8] * B, "dialect": 0, "exp": 0, "invalid": 0}
    assert out["subnormals only"]["exp"] == 0 and out["subnormals only"]["dialect"] == 0
    assert out["subnormals only"]["codes"] == [8 * (k & 1) for k in range(B)]
    # 1.0: E = 15, q = 16, pair 7, no element in either range -> tie -> dialect 14, idx 7.
    assert out["all ones (power of two)"] == {"codes": [7] * B, "dialect": 14, "exp": 15, "invalid": 0}
    assert out["+inf only"] == {"codes": [0] * B, "dialect": 0, "exp": 0, "invalid": 1}
    assert out["inf with -0"]["codes"] == [0, 8] * (B // 2) and out["inf with -0"]["invalid"] == 1
    assert out["nan among normals"]["invalid"] == 1 and out["nan among normals"]["exp"] == 9
    assert out["max normal"]["exp"] == 30
    assert out["stage-2 tie goes to A"]["dialect"] == 0
    # E = 20; q = 2047 >> 6 = 31 -> pair 0, idx 7; the rest q = 1365 >> 7 = 10, in neither range
    # (tie 0 : 0 -> A = dialect 0), and 10 is dialect 0's fifth midpoint -> idx 5 (ties up).
    assert out["q = 31 (man all ones at E)"] == {"codes": [7] + [8 | 5] * (B - 1), "dialect": 0,
                                                  "exp": 20, "invalid": 0}


@pytest.mark.parametrize("B,count,valid_prob,ready_prob,seed", [
    (16, 1000, 1.0, 1.0, 1),
    (16, 600, 0.6, 0.5, 2),
    (32, 600, 0.8, 0.7, 3),
    (32, 200, 0.3, 0.9, 4),
    (32, 200, 0.9, 0.15, 5),
    (64, 120, 0.7, 0.6, 6),
])
def test_quantizer_random_backpressure(B, count, valid_prob, ready_prob, seed):
    rng = random.Random(seed)
    blocks = [random_block(rng, B) for _ in range(count)]
    run = run_stream(BDQuantizer(B), [pack_quantizer_input(b) for b in blocks],
                     valid_prob=valid_prob, ready_prob=ready_prob, seed=seed, tail=8)
    check_outputs(blocks, run.outputs, B)
    if B == 16 and count >= 300:
        seen = {unpack_quantizer_output(o, B)["dialect"] for o in run.outputs}
        assert seen == set(range(16)), f"dialects not covered: {set(range(16)) - seen}"


@pytest.mark.parametrize("B", BLOCK_SIZES)
def test_quantizer_latency_and_throughput(B):
    dut = BDQuantizer(B)
    assert dut.latency == 4
    rng = random.Random(7)
    blocks = [random_block(rng, B) for _ in range(12)]
    run = run_stream(dut, [pack_quantizer_input(b) for b in blocks])
    assert run.accepted == list(range(12))                  # one block per clock
    assert run.first_valid == [c + dut.latency for c in run.accepted]
    assert run.delivered == run.first_valid
    check_outputs(blocks, run.outputs, B)


def test_quantizer_stall_holds_everything():
    """o.ready low for a long time: the pipeline fills, i.ready drops, nothing is lost."""
    B = 16
    dut = BDQuantizer(B)
    rng = random.Random(8)
    blocks = [random_block(rng, B) for _ in range(10)]
    results, accepted_while_stalled = [], []

    async def producer(ctx):
        for b in blocks:
            await stream_put(ctx, dut.i, pack_quantizer_input(b))

    async def consumer(ctx):
        ctx.set(dut.o.ready, 0)
        for _ in range(20):
            _, _, i_ready, i_valid = await ctx.tick().sample(dut.i.ready, dut.i.valid)
            accepted_while_stalled.append(i_ready and i_valid)
        for _ in blocks:
            results.append(await stream_get(ctx, dut.o))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(producer, background=True)
    sim.add_testbench(consumer)
    sim.run()
    # Four register stages hold four blocks; then input is refused.
    assert sum(accepted_while_stalled) == dut.latency
    check_outputs(blocks, results, B)


def test_quantizer_refuses_input_during_reset():
    """While rst is high, i.ready is low (a beat offered then is not taken and lost); after it, the
    offered beat goes through."""
    B = 16
    dut = BDQuantizer(B)
    top = Module()
    top.domains.sync = sync = ClockDomain("sync")
    top.submodules.dut = dut
    block = [ONE] * B
    seen = []

    async def bench(ctx):
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload.as_value(), pack_quantizer_input(block))
        ctx.set(dut.o.ready, 1)
        ctx.set(sync.rst, 1)
        for _ in range(3):
            _, _, ready = await ctx.tick().sample(dut.i.ready)
            seen.append(ready)
        ctx.set(sync.rst, 0)
        await ctx.tick().until(dut.i.ready)
        ctx.set(dut.i.valid, 0)
        payload, = await ctx.tick().sample(dut.o.payload.as_value()).until(dut.o.valid)
        seen.append(payload)

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen[:3] == [0, 0, 0]
    check_outputs([block], seen[3:], B)


@pytest.mark.parametrize("B", [0, 8, 48, 128, "32", None])
def test_quantizer_bad_block_size(B):
    for cls in (BDQuantizer, ExponentMax, SignificandShifter, RangeCounter, IndexMapper):
        with pytest.raises(ValueError, match="B"):
            cls(B)
