"""bd_quantizer and its small modules in the Amaranth simulator (SPEC 1, 3, 4, 9), for both stage-1
rules of SPEC 4.2 [revised] (``stage1="round"``, the default, and ``"trunc"``).

Every output bit of the whole unit is compared with an independent scalar reference of SPEC 3-4
written here with Python integers (:func:`ref_quantize`) and with ``golden.bd.quantize`` under the
method the unit reproduces; the small modules are compared with the SPEC formulas applied to
``golden.formatbook`` tables. Stimuli come from ``golden.vectors`` (every corner family and the
seeded random families).
"""
import random

import pytest
import torch
from amaranth.hdl import ClockDomain, Module
from amaranth.sim import Simulator

from bd_hw.arith import MaxTree
from bd_hw.layouts import (pack_lanes, pack_quantizer_input, unpack_lanes,
                           unpack_quantizer_output)
from bd_hw.quantizer import (BDQuantizer, ExponentMax, IndexMapper, PairSelector, RangeCounter,
                             SignificandShifter, TwoStageSelection)
from golden import bd, vectors
from golden.formatbook import MIDPOINTS, STAGE2_RANGES
from golden.spec import BLOCK_SIZES
from tests.hw.testing import run_comb, run_stream, stream_get, stream_put

RULES = ("round", "trunc")
PIPELINES = range(len(BDQuantizer.CUT_POINTS) + 1)     # every setting of the pipeline parameter
ONE = 0x3C00


def fields(x):
    return x >> 15, (x >> 10) & 31, x & 0x3FF


# --- SPEC formulas, on plain integers -----------------------------------------------------------

def ref_exp(block):
    exps = [ex if 0 < ex < 31 else 0 for _, ex, _ in map(fields, block)]
    return max(exps), int(any(ex == 31 for _, ex, _ in map(fields, block)))


def ref_q(x, E):
    _, ex, man = fields(x)
    if ex in (0, 31) or ex > E:
        return 0
    shift = 6 + E - ex
    return (1024 + man) >> shift if shift < 11 else 0


def ref_pair(qmax, stage1):
    """SPEC 4.2 [revised]: rounding (nearest pair maximum, ties up) or the truncating reading."""
    if stage1 == "round":
        return max(0, 15 - ((qmax + 1) >> 1))
    return 15 - (qmax >> 1)


def ref_counts(qs, pair):
    (lo_a, hi_a), (lo_b, hi_b) = STAGE2_RANGES[2 * pair].tolist(), STAGE2_RANGES[2 * pair + 1].tolist()
    ca = sum(lo_a <= q < hi_a for q in qs)
    cb = sum(lo_b <= q < hi_b for q in qs)
    return ca, cb, 2 * pair + (cb > ca)


def ref_idx(q, dialect):
    return sum(q >= m for m in MIDPOINTS[dialect].tolist())


def ref_quantize(block, stage1):
    """The whole of SPEC 3-4 for one block of FP16 bit patterns, nonfinite flagged."""
    E, invalid = ref_exp(block)
    qs = [ref_q(x, E) for x in block]
    dialect = ref_counts(qs, ref_pair(max(qs), stage1))[2] if E else 0
    codes = [x >> 15 << 3 | ref_idx(q, dialect) for x, q in zip(block, qs)]
    return {"codes": codes, "dialect": dialect, "exp": E, "invalid": invalid}


# --- the golden model ---------------------------------------------------------------------------

GOLDEN_METHOD = {"round": "two_stage", "trunc": "two_stage_trunc"}   # SPEC 10


def golden_quantize(blocks, B, stage1):
    x = torch.tensor([[v - 65536 if v >= 32768 else v for v in blk] for blk in blocks],
                     dtype=torch.int16).view(torch.float16)
    q = bd.quantize(x, block=B, method=GOLDEN_METHOD[stage1], nonfinite="flag")
    return [{"codes": q.codes[n, 0].tolist(), "dialect": int(q.dialect[n, 0]),
             "exp": int(q.exp[n, 0]), "invalid": int(q.invalid[n, 0])} for n in range(len(blocks))]


# --- stimulus from golden.vectors ---------------------------------------------------------------

def bits(x: torch.Tensor) -> list[list[int]]:
    return (x.view(torch.int16).to(torch.int32) & 0xFFFF).tolist()


def corner_rows(B):
    """{family: rows of FP16 bit patterns} of every golden.vectors corner family."""
    return {name: bits(x) for name, x in vectors.corner_blocks(B).items()}


def random_rows(n, B, seed):
    """n blocks drawn in turn from every golden.vectors random family."""
    per = -(-n // len(vectors.RANDOM_FAMILIES))
    parts = [vectors.random_blocks(per, B, f, seed=seed + i)
             for i, f in enumerate(vectors.RANDOM_FAMILIES)]
    return bits(torch.stack(parts, 1).reshape(-1, B)[:n])


def all_corners(B):
    return [row for rows in corner_rows(B).values() for row in rows]


# --- small modules ------------------------------------------------------------------------------

def test_max_tree():
    rng = random.Random(1)
    for width, count in [(5, 16), (5, 33), (3, 1), (7, 64)]:
        vecs = [[rng.getrandbits(width) >> rng.randint(0, width) for _ in range(count)]
                for _ in range(40)]
        results = run_comb(MaxTree(width, count),
                           [{"values": pack_lanes(v, width)} for v in vecs], ["max"])
        assert [r["max"] for r in results] == [max(v) for v in vecs]


def test_max_tree_bad_parameters():
    with pytest.raises(ValueError, match="width"):
        MaxTree(0, 4)
    with pytest.raises(ValueError, match="count"):
        MaxTree(5, 0)


@pytest.mark.parametrize("B", [16, 64])
def test_exponent_max(B):
    blocks = all_corners(B) + random_rows(60, B, seed=B)
    results = run_comb(ExponentMax(B), [{"data": pack_quantizer_input(b)} for b in blocks],
                       ["exp", "invalid"])
    for b, r in zip(blocks, results):
        assert (r["exp"], r["invalid"]) == ref_exp(b)
    # The corners say what they are built to hit, independently of any formula here.
    want = vectors.corner_expectations(B)
    got = iter(results)
    for family, rows in corner_rows(B).items():
        exps = [next(got) for _ in rows]
        assert [r["exp"] for r in exps] == want[family]["exp"].tolist(), family
        assert [r["invalid"] for r in exps] == want[family]["invalid"].int().tolist(), family


@pytest.mark.parametrize("B", [16, 32])
def test_significand_shifter(B):
    vecs, expected = [], []
    for block in all_corners(B) + random_rows(60, B, seed=B + 1):
        E, _ = ref_exp(block)
        vecs.append({"data": pack_quantizer_input(block), "exp": E})
        expected.append([ref_q(x, E) for x in block])
    # Precondition violated on purpose: lanes above the given exponent give 0.
    vecs.append({"data": pack_quantizer_input([0x53FF] * B), "exp": 10})
    expected.append([0] * B)
    results = run_comb(SignificandShifter(B), vecs, ["q"])
    for e, r in zip(expected, results):
        assert unpack_lanes(r["q"], 5, B) == e
    assert any(31 in e for e in expected) and any(16 in e for e in expected)


@pytest.mark.parametrize("stage1", RULES)
def test_pair_selector_exhaustive(stage1):
    """Every qmax (0..31) in every lane position, with random smaller lanes: qmax and the pair."""
    B = 16
    rng = random.Random(len(stage1))
    vecs, want = [], []
    for qmax in range(32):
        for lane in range(B):
            qs = [rng.randint(0, qmax) for _ in range(B)]
            qs[lane] = qmax
            vecs.append({"q": pack_lanes(qs, 5)})
            want.append((qmax, ref_pair(qmax, stage1) & 7))
    results = run_comb(PairSelector(B, stage1), vecs, ["qmax", "pair"])
    assert [(r["qmax"], r["pair"]) for r in results] == want


def test_pair_selector_rules_differ_only_on_odd_qmax():
    """SPEC 4.2: the rules agree on even qmax; rounding moves odd qmax below 31 one pair up (a
    larger pair maximum), and 31 stays in pair 0."""
    table = {}
    for stage1 in RULES:
        vecs = [{"q": pack_lanes([qmax] * 16, 5)} for qmax in range(16, 32)]
        table[stage1] = [r["pair"] for r in run_comb(PairSelector(16, stage1), vecs, ["pair"])]
    for qmax, p_round, p_trunc in zip(range(16, 32), table["round"], table["trunc"]):
        if qmax % 2 == 0 or qmax == 31:
            assert p_round == p_trunc, qmax
        else:
            assert p_round == p_trunc - 1, qmax
        # Rounding: the pair whose largest value (15 - p half-units = 2(15 - p) quarter-units) is
        # nearest the exact maximum, which lies in [qmax, qmax + 1); ties go up.
        assert 2 * (15 - p_round) >= qmax or p_round == 0


@pytest.mark.parametrize("B", [16, 32])
def test_range_counter(B):
    rng = random.Random(B + 2)
    vecs = []
    for n in range(160):
        pair = n % 8
        qs = [rng.randint(8, 27) if rng.random() < 0.8 else rng.randint(0, 31) for _ in range(B)]
        vecs.append((qs, pair))
    # Equal counts -> A.
    lo_a, lo_b = STAGE2_RANGES[0, 0].item(), STAGE2_RANGES[1, 0].item()
    vecs.append(([lo_a, lo_b] * (B // 2), 0))
    results = run_comb(RangeCounter(B), [{"q": pack_lanes(q, 5), "pair": p} for q, p in vecs],
                       ["count_a", "count_b", "dialect"])
    dialects = set()
    for (qs, pair), r in zip(vecs, results):
        assert (r["count_a"], r["count_b"], r["dialect"]) == ref_counts(qs, pair)
        dialects.add(r["dialect"])
    assert results[-1]["dialect"] == 0 and results[-1]["count_a"] == results[-1]["count_b"] == B // 2
    assert dialects == set(range(16))


@pytest.mark.parametrize("B", [16, 32])
def test_index_mapper_exhaustive(B):
    """Every q (0..31) in every lane for every dialect."""
    vecs, expected = [], []
    for d in range(16):
        for j in range(32 // B or 1):
            for shift in range(0, 32, B):
                qs = [(k + shift + j) % 32 for k in range(B)]
                vecs.append({"q": pack_lanes(qs, 5), "dialect": d})
                expected.append([ref_idx(q, d) for q in qs])
    results = run_comb(IndexMapper(B), vecs, ["idx"])
    for e, r in zip(expected, results):
        assert unpack_lanes(r["idx"], 3, B) == e
    # The golden model's lookup table agrees with the midpoint rule.
    assert bd.INDEX_LUT.tolist() == [[ref_idx(q, d) for q in range(32)] for d in range(16)]


# --- the whole unit -----------------------------------------------------------------------------

def check_outputs(blocks, outputs, B, stage1):
    """Every output against the golden model and the scalar reference."""
    assert len(outputs) == len(blocks)
    got = [unpack_quantizer_output(o, B) for o in outputs]
    for n, (g, block) in enumerate(zip(got, blocks)):
        assert g == ref_quantize(block, stage1), f"block {n}: {[hex(v) for v in block]}"
    assert got == golden_quantize(blocks, B, stage1)
    return got


@pytest.mark.parametrize("stage1", RULES)
def test_reference_matches_golden(stage1):
    """The scalar reference above is the golden model's rule (two independent readings of SPEC 4)."""
    blocks = all_corners(32) + random_rows(300, 32, seed=11)
    assert [ref_quantize(b, stage1) for b in blocks] == golden_quantize(blocks, 32, stage1)


@pytest.mark.parametrize("B,stage1,pipeline", [(B, s, 0) for B in BLOCK_SIZES for s in RULES]
                         + [(32, s, p) for s in RULES for p in PIPELINES[1:]])
def test_quantizer_corners(B, stage1, pipeline):
    rows = corner_rows(B)
    blocks = [row for family in rows.values() for row in family]
    dut = BDQuantizer(B, stage1, pipeline=pipeline)
    assert dut.method == {"round": "two_stage", "trunc": "two_stage_trunc"}[stage1]
    run = run_stream(dut, [pack_quantizer_input(b) for b in blocks])
    got = iter(check_outputs(blocks, run.outputs, B, stage1))
    want = vectors.corner_expectations(B)
    out = {family: [next(got) for _ in family_rows] for family, family_rows in rows.items()}
    # What the corners are built to hit (golden/vectors.py), independent of the reference above.
    for family, results in out.items():
        assert [r["exp"] for r in results] == want[family]["exp"].tolist(), family
        assert [r["invalid"] for r in results] == want[family]["invalid"].int().tolist(), family
    # SPEC 3: zero blocks are dialect 0 with every idx 0, signs kept.
    for r, row in zip(out["neg_zero"], rows["neg_zero"]):
        assert r["dialect"] == 0 and r["codes"] == [(x >> 15) << 3 for x in row]
    # The dialect each corner is built to select under this rule: "dialect" is the rounding rule's,
    # "dialect_trunc" the truncating rule's; midpoint_ties and all_codes have even maxima, where
    # the two rules agree (SPEC 4.2).
    key = "dialect" if stage1 == "round" else "dialect_trunc"
    checked = 0
    for family, results in out.items():
        dialects = want[family].get(key)
        if dialects is None and family in ("midpoint_ties", "all_codes"):
            dialects = want[family]["dialect"]
        if dialects is not None:
            assert [r["dialect"] for r in results] == dialects.tolist(), family
            checked += len(results)
    assert checked >= 16 * 7 + 32 + 32


def test_quantizer_rules_split_on_odd_maxima():
    """A block with an odd truncated maximum below 31 lands one pair higher with rounding."""
    B = 32
    # E = 15: q = M >> 6 at ex = 15; M = 1024 + 23 * 64 + 5 gives q = 23 (exact maximum 23.08).
    block = [15 << 10 | (23 - 16) << 6 | 5] + [ONE] * (B - 1)
    outs = {s: ref_quantize(block, s) for s in RULES}
    assert outs["trunc"]["dialect"] // 2 == 15 - 23 // 2 == 4
    assert outs["round"]["dialect"] // 2 == 15 - 12 == 3
    for stage1 in RULES:
        run = run_stream(BDQuantizer(B, stage1), [pack_quantizer_input(block)])
        assert check_outputs([block], run.outputs, B, stage1) == [outs[stage1]]


@pytest.mark.parametrize("stage1", RULES)
@pytest.mark.parametrize("B,count,valid_prob,ready_prob,seed", [
    (16, 1000, 1.0, 1.0, 1),
    (16, 600, 0.6, 0.5, 2),
    (32, 600, 0.8, 0.7, 3),
    (32, 200, 0.3, 0.9, 4),
    (32, 200, 0.9, 0.15, 5),
    (64, 120, 0.7, 0.6, 6),
])
def test_quantizer_random_backpressure(B, count, valid_prob, ready_prob, seed, stage1):
    blocks = random_rows(count, B, seed=100 * seed)
    run = run_stream(BDQuantizer(B, stage1), [pack_quantizer_input(b) for b in blocks],
                     valid_prob=valid_prob, ready_prob=ready_prob, seed=seed, tail=8)
    got = check_outputs(blocks, run.outputs, B, stage1)
    if B == 16 and count >= 1000:
        seen = {g["dialect"] for g in got}
        assert seen == set(range(16)), f"dialects not covered: {set(range(16)) - seen}"


# Every pipeline setting beyond the default: fewer blocks, stalls on both sides, both rules.
@pytest.mark.parametrize("stage1", RULES)
@pytest.mark.parametrize("pipeline", PIPELINES[1:])
def test_quantizer_random_pipelined(pipeline, stage1):
    for B, count, valid_prob, ready_prob, seed in [(32, 200, 0.8, 0.6, 30 + pipeline),
                                                   (16, 200, 0.95, 0.3, 40 + pipeline)]:
        blocks = random_rows(count, B, seed=seed)
        dut = BDQuantizer(B, stage1, pipeline=pipeline)
        run = run_stream(dut, [pack_quantizer_input(b) for b in blocks], valid_prob=valid_prob,
                         ready_prob=ready_prob, seed=seed, tail=8 + pipeline)
        check_outputs(blocks, run.outputs, B, stage1)


@pytest.mark.parametrize("B,stage1,pipeline", [(B, s, 0) for B in BLOCK_SIZES for s in RULES]
                         + [(32, "round", p) for p in PIPELINES[1:]])
def test_quantizer_latency_and_throughput(B, stage1, pipeline):
    dut = BDQuantizer(B, stage1, pipeline=pipeline)
    assert dut.latency == 4 + pipeline - (pipeline >= 9)     # the ninth cut, "ready", adds no stage
    blocks = random_rows(12, B, seed=7)
    run = run_stream(dut, [pack_quantizer_input(b) for b in blocks])
    assert run.accepted == list(range(12))                  # one block per clock
    assert run.first_valid == [c + dut.latency for c in run.accepted]
    assert run.delivered == run.first_valid
    check_outputs(blocks, run.outputs, B, stage1)


@pytest.mark.parametrize("pipeline", [0, 8, 9, 10])
def test_quantizer_stall_holds_everything(pipeline):
    """o.ready low for a long time: the pipeline fills, i.ready drops after ``capacity`` blocks (one
    per register stage, one more in the "ready" cut's spare bank), nothing is lost."""
    B = 16
    dut = BDQuantizer(B, pipeline=pipeline)
    assert dut.capacity == dut.latency + (pipeline >= 9)
    blocks = random_rows(dut.capacity + 6, B, seed=8)
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
    assert sum(accepted_while_stalled) == dut.capacity
    check_outputs(blocks, results, B, "round")


@pytest.mark.parametrize("pipeline", [8, 9])
def test_quantizer_ready_follows_a_register_with_the_ready_cut(pipeline):
    """A full unit: raising o.ready frees i.ready in the same cycle through the ready chain (pipeline
    8), but only a cycle later with the "ready" cut, whose skid buffer's spare bank is the ready
    the stages before it see."""
    B = 16
    dut = BDQuantizer(B, pipeline=pipeline)
    seen = []

    async def bench(ctx):
        ctx.set(dut.o.ready, 0)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload.as_value(), pack_quantizer_input([ONE] * B))
        for _ in range(dut.capacity + 2):
            await ctx.tick()
        seen.append(ctx.get(dut.i.ready))
        ctx.set(dut.o.ready, 1)
        seen.append(ctx.get(dut.i.ready))
        await ctx.tick()
        seen.append(ctx.get(dut.i.ready))

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(bench)
    sim.run()
    assert seen == ([0, 1, 1] if pipeline == 8 else [0, 0, 1])


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
    # 1.0 everywhere: E = 15, q = 16, pair 7, no element in either range -> tie -> dialect 14, idx 7.
    assert check_outputs([block], seen[3:], B, "round") == [
        {"codes": [7] * B, "dialect": 14, "exp": 15, "invalid": 0}]


def test_quantizer_params_place_the_skid_buffer_without_hardware():
    """The "ready" cut's stage, latency and capacity follow from the parameters, and the engine's
    deepest setting passes the quantizer's deepest on."""
    from amaranth.hdl import Module, Signal

    from bd_hw.params import LinearParams, QuantizerParams
    from bd_hw.pipeline import Stages
    deep = QuantizerParams(32, pipeline=len(QuantizerParams.CUT_POINTS))
    assert deep.stages[deep.skid_stage] == "s1" and deep.skid_stage == 8
    assert (deep.latency, deep.capacity) == (13, 14)
    at8 = QuantizerParams(32, pipeline=8)
    assert (at8.skid, at8.skid_stage, at8.latency, at8.capacity) == (False, None, 12, 12)
    # The engine's deepest setting takes every quantizer cut point; its skid buffer never fills
    # there (the quantizer's output is always ready), so it folds away in synthesis.
    assert LinearParams(32, 4, pipeline=LinearParams.ENGINE_DEPTH).quantizer == deep
    for stage in (0, 4):
        with pytest.raises(ValueError, match="skid_stage"):
            Stages(Module(), 4, Signal(), Signal(), Signal(), skid=True, skid_stage=stage)


@pytest.mark.parametrize("pipeline", [-1, len(BDQuantizer.CUT_POINTS) + 1, 1.0, True, "1", None])
def test_quantizer_bad_pipeline(pipeline):
    with pytest.raises(ValueError, match="pipeline"):
        BDQuantizer(32, pipeline=pipeline)


@pytest.mark.parametrize("B", [0, 8, 48, 128, "32", None, True])
def test_quantizer_bad_block_size(B):
    with pytest.raises(ValueError, match="B must be one of"):
        BDQuantizer(B)


def test_quantizer_bad_stage1():
    with pytest.raises(ValueError, match="stage1"):
        BDQuantizer(32, "nearest")
    with pytest.raises(ValueError, match="stage1"):
        TwoStageSelection("floor")
