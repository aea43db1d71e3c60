"""bd_dot's rounded accumulation modes (SPEC 6.1) in the Amaranth simulator, against golden.bd.linear.

Random dot products over the whole exponent range (many overflow FP16), corners built to overflow
to +Inf and -Inf and cancel to NaN, to land in the FP16 subnormals, to cancel exactly, and a long
one; every pipeline setting, under random gaps and back-pressure.
"""
import random

import pytest
import torch

from bd_hw.dot import BDDot
from bd_hw.layouts import unpack_dot_output
from bd_hw.params import DotParams
from golden import bd
from tests.hw.test_hw_dot import beats_of, random_blk
from tests.hw.testing import run_stream

MODES = ("fp32", "fp16")
QUIET_NAN = 0x7FC00000


def golden_dot(pairs, mode):
    def blocks(lst):
        return bd.Blocks(torch.tensor([[b["exp"] for b in lst]], dtype=torch.uint8),
                         torch.tensor([[b["dialect"] for b in lst]], dtype=torch.uint8),
                         torch.tensor([[b["codes"] for b in lst]], dtype=torch.uint8),
                         torch.zeros(1, len(lst), dtype=torch.bool))
    y = bd.linear(blocks([a for a, _ in pairs]), blocks([w for _, w in pairs]), accumulate=mode)
    return int(y.view(torch.int32).item()) & 0xFFFFFFFF


def full_block(B, exp, negative=False):
    """Every element at the largest magnitude (15 half-units in dialect 0), one sign."""
    return {"codes": [(8 if negative else 0) | 7] * B, "dialect": 0, "exp": exp}


def corner_dots(B):
    big, big_neg = full_block(B, 30), full_block(B, 30, negative=True)
    rng = random.Random(7)
    return [
        [(big, big)],                                              # overflows FP16: +Inf
        [(big, big), (big_neg, big)],                              # +Inf + (-Inf): NaN
        [(big, big), (big_neg, big), (big, big)],                  # NaN stays
        [(big_neg, big), (full_block(B, 2), full_block(B, 1))],    # -Inf + tiny
        [(full_block(B, 3), full_block(B, 2)), (full_block(B, 1), full_block(B, 1))],   # FP16 subnormals
        [(full_block(B, 20), full_block(B, 10)), (full_block(B, 20, True), full_block(B, 10))],  # exact 0
        [(full_block(B, 25), full_block(B, 25)), (full_block(B, 1), full_block(B, 1)),
         (full_block(B, 25, True), full_block(B, 25))],            # FP32 loses the small middle block
        [(random_blk(rng, B, (8, 20)), random_blk(rng, B, (8, 20))) for _ in range(40)],   # long
    ]


def check(dut, dots, mode, **run):
    result = run_stream(dut, beats_of(dots), expected=len(dots), **run)
    for n, (pairs, out) in enumerate(zip(dots, result.outputs)):
        got, want = unpack_dot_output(out)["result"], golden_dot(pairs, mode)
        assert got == want, f"dot {n}: {got:#010x} != golden {want:#010x}"
    return result


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pipeline", range(len(BDDot.FLOAT_CUT_POINTS) + 1))
def test_random_and_corner_dots_match_golden(mode, pipeline):
    B = 32
    rng = random.Random(100 + pipeline)
    dots = corner_dots(B) + [[(random_blk(rng, B), random_blk(rng, B)) for _ in range(rng.randint(1, 5))]
                             for _ in range(30)]
    check(BDDot(B, pipeline=pipeline, accumulate=mode), dots, mode, valid_prob=0.8, ready_prob=0.6,
          seed=pipeline, tail=6)
    results = [golden_dot(pairs, mode) for pairs in corner_dots(B)]
    if mode == "fp16":                       # the corners reach what they are built for
        assert results[0] == 0x7F800000 and results[1] == QUIET_NAN and results[2] == QUIET_NAN
        assert results[3] == 0xFF800000 and 0 < results[4] < 0x38800000 and results[5] == 0
    else:
        assert results[6] == 0                # the exact sum is not 0: order matters in FP32


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("B", (16, 64))
def test_other_block_sizes(mode, B):
    rng = random.Random(B)
    dots = corner_dots(B)[:6] + [[(random_blk(rng, B), random_blk(rng, B)) for _ in range(3)] for _ in range(8)]
    check(BDDot(B, accumulate=mode), dots, mode, valid_prob=0.9, ready_prob=0.7, seed=B)


@pytest.mark.parametrize("mode", MODES)
def test_latency_and_one_beat_per_clock(mode):
    """With o.ready high and a beat every clock, each result leaves `latency` edges after its last
    beat was taken, and no beat waits."""
    B = 32
    rng = random.Random(3)
    dots = [[(random_blk(rng, B), random_blk(rng, B)) for _ in range(n)] for n in (1, 1, 3, 2, 1, 4)]
    for pipeline in range(len(BDDot.FLOAT_CUT_POINTS) + 1):
        dut = BDDot(B, pipeline=pipeline, accumulate=mode)
        latency = dut.latency
        assert latency == (5 if mode == "fp32" else 6) + pipeline
        run = check(dut, dots, mode)
        lasts = [sum(len(d) for d in dots[:k + 1]) - 1 for k in range(len(dots))]
        assert run.accepted == list(range(len(run.accepted)))
        assert run.first_valid == [run.accepted[i] + latency for i in lasts]


def test_bad_accumulate_is_a_value_error():
    with pytest.raises(ValueError, match="accumulate"):
        BDDot(32, accumulate="bf16")
    with pytest.raises(ValueError, match="pipeline"):
        BDDot(32, pipeline=3, accumulate="fp32")
    assert DotParams(32, pipeline=4).accumulate == "exact" and DotParams(32, pipeline=4).latency == 10
    assert DotParams(32, accumulate="fp16", max_blocks=1 << 40).latency == 6   # no wide accumulator
