"""bd_dot and its small modules in the Amaranth simulator (SPEC 6, 9).

Whole-unit results are compared bit for bit with ``golden.bd.linear`` and with an independent
Python-integer reference (exact sum, one round-to-nearest-even to FP32).
"""
import random

import pytest
import torch
from amaranth.sim import Simulator

from bd_hw.dot import (AdderTree, BDDot, ExactAccumulator, FP32Normaliser, MultiplierArray,
                       PackedMultiplierArray, accumulator_bits, block_sum_bits)
from bd_hw.layouts import (pack, pack_dot_input, pack_lanes, unpack, unpack_dot_output,
                           unpack_lanes)
from tests.hw.testing import as_int, int_to_fp32_bits, run_comb, run_stream
from golden import bd
from golden.formatbook import FORMATBOOK
from golden.spec import BLOCK_SIZES

FB = FORMATBOOK.tolist()
PIPELINES = range(len(BDDot.CUT_POINTS) + 1)     # every setting of BDDot's pipeline parameter


def to_signed(v, w):
    v &= (1 << w) - 1
    return v - (1 << w) if v >> (w - 1) else v


def block_sum(a, w):
    """Exact S of SPEC 6 for two blocks given as dicts of codes, dialect, exp."""
    total = 0
    for ca, cw in zip(a["codes"], w["codes"]):
        p = FB[a["dialect"]][ca & 7] * FB[w["dialect"]][cw & 7]
        total += -p if (ca ^ cw) & 8 else p
    return total


def ref_dot(pairs):
    """FP32 bits of the exact dot product of a list of (a, w) block pairs."""
    return int_to_fp32_bits(sum(block_sum(a, w) << (a["exp"] + w["exp"]) for a, w in pairs), 36)


def golden_dot(pairs):
    def blocks(lst):
        n = len(lst)
        return bd.Blocks(torch.tensor([[b["exp"] for b in lst]], dtype=torch.uint8),
                         torch.tensor([[b["dialect"] for b in lst]], dtype=torch.uint8),
                         torch.tensor([[b["codes"] for b in lst]], dtype=torch.uint8),
                         torch.zeros(1, n, dtype=torch.bool))
    y = bd.linear(blocks([a for a, _ in pairs]), blocks([w for _, w in pairs]))
    return int(y.view(torch.int32).item()) & 0xFFFFFFFF


def random_blk(rng, B, exp_range=(0, 30)):
    """A random block as SPEC 3 allows it: an E = 0 block is dialect 0 with every index 0 (signs
    kept), which golden.bd.linear checks (SPEC 10)."""
    codes, dialect, exp = [rng.getrandbits(4) for _ in range(B)], rng.getrandbits(4), rng.randint(*exp_range)
    if exp == 0:
        codes, dialect = [c & 8 for c in codes], 0
    return {"codes": codes, "dialect": dialect, "exp": exp}


def beats_of(dots):
    beats = []
    for pairs in dots:
        for j, (a, w) in enumerate(pairs):
            beats.append(pack_dot_input(a["codes"], a["dialect"], a["exp"],
                                        w["codes"], w["dialect"], w["exp"], j == len(pairs) - 1))
    return beats


def check_dots(dots, outputs, *, golden=True):
    assert len(outputs) == len(dots)
    for n, (pairs, o) in enumerate(zip(dots, outputs)):
        got = unpack_dot_output(o)["result"]
        assert got == ref_dot(pairs), f"dot {n}: {got:#010x} != reference {ref_dot(pairs):#010x}"
        if golden:
            assert got == golden_dot(pairs), f"dot {n}: {got:#010x} != golden {golden_dot(pairs):#010x}"


# --- small modules ------------------------------------------------------------------------------

@pytest.mark.parametrize("products", ["lut", "dsp"])
def test_multiplier_array_exhaustive(products):
    """Every (sign, h) x (sign, h) lane pair, 32 x 32, spread over the lanes, each way of building
    the products: ``products[k] + carries[k]`` is the signed product."""
    B = 16
    pairs = [(a, w) for a in range(32) for w in range(32)]
    vectors = []
    for n in range(0, len(pairs), B):
        chunk = pairs[n:n + B]
        vectors.append({"a": pack_lanes([a for a, _ in chunk], 5),
                        "w": pack_lanes([w for _, w in chunk], 5)})
    results = run_comb(MultiplierArray(B, products), vectors, ["products", "carries"])
    got = [to_signed(p, 9) + (r["carries"] >> k & 1)
           for r in results for k, p in enumerate(unpack_lanes(r["products"], 9, B))]
    assert got == [(-1) ** ((a ^ w) >> 4) * (a & 15) * (w & 15) for a, w in pairs]
    # A carry only where the sign is applied: a ones' complement, never a second negation.
    assert all((r["carries"] >> k & 1) == ((a ^ w) >> 4)
               for r, n in zip(results, range(0, len(pairs), B))
               for k, (a, w) in enumerate(pairs[n:n + B]))


def test_packed_multiplier_array_exhaustive():
    """Every (sign, h) activation lane with every pair of (sign, h) weight lanes, 32^3 triples: each
    row's ``products + carries`` is its own signed product, so the two fields of a packed product
    never disturb each other (largest magnitudes in both rows included)."""
    B = 64
    triples = [(a, w0, w1) for a in range(32) for w0 in range(32) for w1 in range(32)]
    vectors = [{name: pack_lanes([t[i] for t in triples[n:n + B]], 5)
                for i, name in enumerate(("a", "w0", "w1"))} for n in range(0, len(triples), B)]
    results = run_comb(PackedMultiplierArray(B), vectors,
                       ["products0", "carries0", "products1", "carries1"])
    for row in (0, 1):
        got = [to_signed(p, 9) + (r[f"carries{row}"] >> k & 1) for r in results
               for k, p in enumerate(unpack_lanes(r[f"products{row}"], 9, B))]
        assert got == [(-1) ** ((t[0] ^ t[1 + row]) >> 4) * (t[0] & 15) * (t[1 + row] & 15)
                       for t in triples]


@pytest.mark.parametrize("B", BLOCK_SIZES)
def test_adder_tree(B):
    rng = random.Random(B)
    vectors = [[225] * B, [-225] * B, [0] * B, [225, -225] * (B // 2)]
    vectors += [[rng.randint(-225, 225) for _ in range(B)] for _ in range(40)]
    w = block_sum_bits(B)
    assert w == {16: 13, 32: 14, 64: 15}[B]
    results = run_comb(AdderTree(B), [{"products": pack_lanes([p & 0x1FF for p in v], 9)}
                                      for v in vectors], ["sum"])
    assert [to_signed(r["sum"], w) for r in results] == [sum(v) for v in vectors]


def test_accumulator_width():
    # SPEC 6: ceil(log2(225 B)) + 1 + 60 + ceil(log2(max_blocks))
    assert accumulator_bits(32, 256) == 13 + 1 + 60 + 8
    assert accumulator_bits(16, 1) == 12 + 1 + 60
    assert accumulator_bits(64, 257) == 14 + 1 + 60 + 9
    assert accumulator_bits(32, 256) == 82


@pytest.mark.parametrize("max_blocks,ready_prob", [(256, 1.0), (4, 0.5)])
def test_exact_accumulator(max_blocks, ready_prob):
    B = 32
    dut = ExactAccumulator(B, max_blocks)
    layout_in = dut.i.payload.shape()
    sw, W = block_sum_bits(B), dut.width
    assert W == accumulator_bits(B, max_blocks)
    rng = random.Random(max_blocks)
    sums, beats = [], []
    for _ in range(60):
        n = rng.randint(1, max_blocks if max_blocks < 8 else 8)
        terms = [(rng.choice([rng.randint(-7200, 7200), 7200, -7200, 0]), rng.randint(0, 60))
                 for _ in range(n)]
        sums.append(sum(s << e for s, e in terms))
        for j, (s, e) in enumerate(terms):
            beats.append(pack(layout_in, {"sum": s & ((1 << sw) - 1), "exp": e, "last": j == n - 1}))
    # max_blocks beats of the largest block value: the accumulator must not overflow.
    sums.append(max_blocks * (-7200 << 60))
    for j in range(max_blocks):
        beats.append(pack(layout_in, {"sum": -7200 & ((1 << sw) - 1), "exp": 60,
                                      "last": j == max_blocks - 1}))
    run = run_stream(dut, beats, expected=len(sums), valid_prob=0.8, ready_prob=ready_prob,
                     seed=1, tail=6)
    assert [to_signed(unpack(dut.o.payload.shape(), o)["total"], W) for o in run.outputs] == sums


@pytest.mark.parametrize("cuts", [(), ("abs",), ("lzc",), FP32Normaliser.CUT_POINTS])
def test_fp32_normaliser(cuts):
    W = 82
    dut = FP32Normaliser(W, cuts=cuts)
    assert dut.latency == FP32Normaliser.LATENCY + len(cuts)
    lim = 1 << (W - 1)
    values = [0, 1, -1, lim - 1, -lim + 1, -lim, 1 << 36, -(1 << 36), 3 << 40,
              (1 << 24) + 1, (1 << 25) + 2, (1 << 25) + 6, (1 << 24) - 1, (1 << 25) - 1,   # ties
              ((1 << 24) - 1) << 30 | (1 << 29), ((1 << 24) - 1) << 30 | (1 << 29) | 1,   # carry out
              ((1 << 24) - 2) << 30 | (1 << 29)]
    rng = random.Random(5)
    for _ in range(150):
        bits = rng.randint(1, W - 1)
        v = rng.getrandbits(bits)
        if rng.random() < 0.3:
            v = (v >> 20 << 20) | (rng.choice([0, 1 << 19, (1 << 19) - 1]) if bits > 21 else 0)
        values.append(-v if rng.getrandbits(1) else v)
    layout_in = dut.i.payload.shape()
    run = run_stream(dut, [pack(layout_in, {"value": v & ((1 << W) - 1)}) for v in values],
                     valid_prob=0.9, ready_prob=0.7, seed=2)
    assert [unpack(dut.o.payload.shape(), o)["result"] for o in run.outputs] == \
        [int_to_fp32_bits(v, 36) for v in values]
    # A few by hand: 1.0, -2^45 (the most negative 82-bit value in units of 2^-36), ties to even.
    assert int_to_fp32_bits(1 << 36, 36) == 0x3F800000
    assert int_to_fp32_bits(-lim, 36) == 0xD6000000
    assert int_to_fp32_bits((1 << 24) + 1, 0) == 0x4B800000
    assert int_to_fp32_bits((1 << 24) + 3, 0) == 0x4B800002


def test_fp32_normaliser_bad_parameters():
    with pytest.raises(ValueError, match="width"):
        FP32Normaliser(1)
    with pytest.raises(ValueError, match="width"):
        FP32Normaliser(200)
    with pytest.raises(ValueError, match="cuts"):
        FP32Normaliser(82, cuts=("tree",))


# --- the whole unit -----------------------------------------------------------------------------

@pytest.mark.parametrize("B,count,max_len,valid_prob,ready_prob,seed", [
    (16, 400, 1, 1.0, 1.0, 1),
    (16, 150, 6, 0.7, 0.5, 2),
    (32, 200, 4, 0.8, 0.6, 3),
    (32, 60, 8, 0.4, 0.95, 4),
    (32, 60, 3, 0.95, 0.2, 5),
    (64, 40, 3, 0.7, 0.6, 6),
])
def test_dot_random(B, count, max_len, valid_prob, ready_prob, seed):
    _check_random(BDDot(B), count, max_len, valid_prob, ready_prob, seed)


# Every pipeline setting beyond the default: fewer dots at B = 32, stalls on both sides.
@pytest.mark.parametrize("pipeline", PIPELINES[1:])
def test_dot_random_pipelined(pipeline):
    _check_random(BDDot(32, pipeline=pipeline), 80, 4, 0.8, 0.6, 10 + pipeline)
    _check_random(BDDot(16, max_blocks=4, pipeline=pipeline), 40, 4, 0.95, 0.3, 20 + pipeline)


# The other decoder construction (bd_hw.params.DECODES): at the default setting and the deepest,
# where the decoders' outputs are registered.
@pytest.mark.parametrize("pipeline", [0, PIPELINES[-1]])
def test_dot_random_anf_decode(pipeline):
    _check_random(BDDot(32, pipeline=pipeline, decode="anf"), 80, 4, 0.8, 0.6, 40 + pipeline)


def _check_random(dut, count, max_len, valid_prob, ready_prob, seed):
    B = dut.B
    rng = random.Random(seed)
    dots = [[(random_blk(rng, B), random_blk(rng, B)) for _ in range(rng.randint(1, max_len))]
            for _ in range(count)]
    run = run_stream(dut, beats_of(dots), expected=len(dots), valid_prob=valid_prob,
                     ready_prob=ready_prob, seed=seed, tail=10 + dut.pipeline)
    check_dots(dots, run.outputs)


@pytest.mark.parametrize("B,pipeline", [(16, 0), (32, 0), (32, PIPELINES[-1])])
def test_dot_special_sums(B, pipeline):
    rng = random.Random(B)
    zero = {"codes": [0] * B, "dialect": 0, "exp": 0}
    neg_zero = {"codes": [8] * B, "dialect": 0, "exp": 0}               # SPEC 3: a zero block keeps signs
    big = {"codes": [7] * B, "dialect": 0, "exp": 30}                    # 15 half-units, E = 30
    big_neg = {"codes": [15] * B, "dialect": 2, "exp": 30}               # -14 half-units
    small = {"codes": [1] + [0] * (B - 1), "dialect": 3, "exp": 1}       # one element of 1
    a = random_blk(rng, B, (1, 30))
    w = random_blk(rng, B, (1, 30))
    a_neg = dict(a, codes=[c ^ 8 for c in a["codes"]])
    dots = {
        "all zero": [(zero, zero)],
        "zero codes, negative signs": [(neg_zero, big), (big, neg_zero)],
        "maximum magnitude": [(big, big)] * 8,
        "maximum negative": [(big, big_neg)] * 8,
        "cancelling": [(a, w), (a_neg, w)],
        "cancelling to the smallest value": [(a, w), (small, small), (a_neg, w)],
        "huge plus tiny (sticky)": [(big, big), (small, small)],
        "huge minus tiny": [(big, big), (small, dict(small, codes=[9] + [0] * (B - 1)))],
        "single small": [(small, small)],
    }
    run = run_stream(BDDot(B, pipeline=pipeline), beats_of(dots.values()), expected=len(dots))
    check_dots(list(dots.values()), run.outputs)
    out = {k: unpack_dot_output(o)["result"] for k, o in zip(dots, run.outputs)}
    assert out["all zero"] == out["zero codes, negative signs"] == 0x00000000   # +0.0
    assert out["cancelling"] == 0
    assert out["cancelling to the smallest value"] == 0x2E800000              # 2^-34: 1 * 2^(2-36)
    assert out["maximum magnitude"] == int_to_fp32_bits(8 * 225 * B << 60, 36)


def test_dot_full_length_sum():
    """max_blocks beats of the largest block value in one sum (small max_blocks for speed) and a
    256-beat sum at the default."""
    B = 16
    big = {"codes": [7] * B, "dialect": 0, "exp": 30}
    dots = [[(big, big)] * 4, [(big, dict(big, codes=[15] * B))] * 4]
    run = run_stream(BDDot(B, max_blocks=4), beats_of(dots), expected=2)
    check_dots(dots, run.outputs)
    rng = random.Random(9)
    long = [[(random_blk(rng, B, (25, 30)), random_blk(rng, B, (25, 30))) for _ in range(256)]]
    run = run_stream(BDDot(B), beats_of(long), expected=1, ready_prob=0.7, seed=3)
    check_dots(long, run.outputs)


@pytest.mark.parametrize("B,pipeline", [(B, 0) for B in BLOCK_SIZES] + [(32, p) for p in PIPELINES[1:]])
def test_dot_latency_and_throughput(B, pipeline):
    dut = BDDot(B, pipeline=pipeline)
    assert dut.latency == 6 + min(pipeline, 4)       # the "ready" cut adds no stage
    rng = random.Random(B)
    dots = [[(random_blk(rng, B), random_blk(rng, B))] for _ in range(10)]
    run = run_stream(dut, beats_of(dots), expected=len(dots))
    assert run.accepted == list(range(10))
    assert run.first_valid == [c + dut.latency for c in run.accepted]
    check_dots(dots, run.outputs)


@pytest.mark.parametrize("max_blocks", [0, -1, 1.5, True, "4", None, 1 << 100])
def test_dot_bad_max_blocks(max_blocks):
    with pytest.raises(ValueError, match="max_blocks"):
        BDDot(32, max_blocks)


@pytest.mark.parametrize("pipeline", [-1, len(BDDot.CUT_POINTS) + 1, 1.0, True, "1", None])
def test_dot_bad_pipeline(pipeline):
    with pytest.raises(ValueError, match="pipeline"):
        BDDot(32, pipeline=pipeline)


@pytest.mark.parametrize("stall_free", [1, 0, "yes", None])
def test_dot_bad_stall_free(stall_free):
    with pytest.raises(ValueError, match="stall_free"):
        BDDot(32, stall_free=stall_free)


@pytest.mark.parametrize("decode", ["lut", "", None, 1])
def test_dot_bad_decode(decode):
    with pytest.raises(ValueError, match="decode"):
        BDDot(32, decode=decode)


@pytest.mark.parametrize("B", [0, 8, 33, 128, "16", True])
def test_dot_bad_block_size(B):
    """B is checked once, by the unit; its stages take the lane count they are given."""
    with pytest.raises(ValueError, match="B must be one of"):
        BDDot(B)


@pytest.mark.parametrize("pipeline", [4, 5, 6])
def test_dot_stall_holds_capacity(pipeline):
    """o.ready low for a long time: single-beat dots fill the unit, i.ready drops after
    ``capacity`` of them (``latency``, one more with the "ready" cut's spare bank), nothing is lost
    and the results leave in order."""
    dut = BDDot(16, max_blocks=4, pipeline=pipeline)
    assert dut.capacity == dut.latency + ("ready" in dut.cuts) and ("ready" in dut.cuts) == (pipeline == 6)
    rng = random.Random(pipeline)
    dots = [[(random_blk(rng, 16), random_blk(rng, 16))] for _ in range(dut.capacity + 3)]
    beats = beats_of(dots)
    results, accepted_while_stalled = [], []
    i_payload, o_payload = as_int(dut.i.payload), as_int(dut.o.payload)

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)
        pending = list(beats)
        for _ in range(30):
            ctx.set(dut.i.valid, bool(pending))
            if pending:
                ctx.set(i_payload, pending[0])
            _, _, i_ready = await ctx.tick().sample(dut.i.ready)
            accepted_while_stalled.append(bool(pending) and i_ready)
            if pending and i_ready:
                pending.pop(0)
        ctx.set(dut.o.ready, 1)
        while len(results) < len(dots):
            ctx.set(dut.i.valid, bool(pending))
            if pending:
                ctx.set(i_payload, pending[0])
            _, _, i_ready, o_valid, o_value = await ctx.tick().sample(dut.i.ready, dut.o.valid,
                                                                       o_payload)
            if pending and i_ready:
                pending.pop(0)
            if o_valid:
                results.append(o_value)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert sum(accepted_while_stalled) == dut.capacity
    check_dots(dots, results)
