"""The testbench's own parts that run without a simulator: scoreboard, reproducers, stimulus intent."""
from __future__ import annotations

import itertools
from fractions import Fraction

import pytest
import torch

from bd_hw import layouts
from golden import bd, vectors
from tb import stimulus
from tb.scoreboard import Scoreboard, dot_expectations, quantizer_expectations
from tb.stream import random_pauses


def _exec_repro(repro: str, call: str):
    """Runs a scoreboard reproducer, binding the golden call's value to `result`."""
    namespace = {"torch": torch, "bd": bd}
    code = "\n".join(line.strip() for line in repro.splitlines())
    exec(code.replace(call, "result = " + call, 1), namespace)
    return namespace["result"]


def _board(block):
    return Scoreboard("q", lambda v: layouts.unpack_quantizer_output(v, block))


def test_sim_scoreboard_counts_matches_mismatches_and_missing():
    x = vectors.random_blocks(6, 16, "gaussian", seed=3)
    _, expected = quantizer_expectations(x, "t")
    board = _board(16)
    board.expect_all(expected)
    board.compare(expected[0].payload)
    board.compare(expected[1].payload ^ 1)          # one code bit wrong
    board.compare(expected[2].payload)
    assert (board.beats, board.matches, board.mismatches, board.pending) == (3, 2, 1, 3)
    assert "mismatch at beat 2" in board.failures[0] and "codes" in board.failures[0]
    assert not board.ok()
    assert board.flush() == 3 and board.pending == 0
    board.compare(expected[3].payload)               # nothing is expected any more
    assert board.unexpected == 1 and board.mismatches == 2


def test_sim_scoreboard_order_matters():
    x = vectors.random_blocks(2, 32, "uniform", seed=5)
    _, expected = quantizer_expectations(x, "t")
    assert expected[0].payload != expected[1].payload
    board = _board(32)
    board.expect_all(expected)
    board.compare(expected[1].payload)
    board.compare(expected[0].payload)
    assert board.mismatches == 2


def test_sim_quantizer_repro_reproduces_golden():
    x = vectors.corner_blocks(32)["nonfinite"][:3]
    _, expected = quantizer_expectations(x, "t")
    for item in expected:
        q = _exec_repro(item.repro, "bd.quantize(")
        assert q.codes[0].tolist() == item.fields["codes"]
        assert (int(q.dialect[0]), int(q.exp[0]), int(q.invalid[0])) == \
            (item.fields["dialect"], item.fields["exp"], item.fields["invalid"])
    assert any(item.fields["invalid"] for item in expected)


def test_sim_dot_repro_and_beats():
    qa, qw = stimulus.random_field_blocks(3, 4, 16, seed=9)
    inputs, expected = dot_expectations(qa, qw, "t")
    assert len(inputs) == 12 and len(expected) == 3
    lasts = [layouts.unpack_dot_input(v, 16)["last"] for v in inputs]
    assert lasts == [0, 0, 0, 1] * 3
    for item in expected:
        bits = _exec_repro(item.repro, "bd.linear(")
        assert int(bits[0]) & 0xFFFFFFFF == item.fields["result"]


def _exact_sum(qa, qw, row):
    sa, ha = bd.decode(qa)
    sw, hw = bd.decode(qw)
    s = (torch.where(sa.bool(), -ha, ha) * torch.where(sw.bool(), -hw, hw)).sum(-1)
    e = qa.exp.long() + qw.exp.long() - 36
    return sum(Fraction(int(s[row, b])) * Fraction(2) ** int(e[row, b]) for b in range(s.shape[1]))


def test_sim_tie_stimulus_hits_ties():
    """The rounding family sits where it says: exactly half an ulp off, and its neighbours."""
    qa, qw = stimulus.tie_pairs(32)
    big = Fraction(225 * 2 ** 24)
    ulp = 256
    offsets = [(_exact_sum(qa, qw, r) - big) / ulp for r in range(qa.codes.shape[0])]
    assert offsets[:5] == [Fraction(1, 2), Fraction(3, 2), Fraction(3, 4), Fraction(1, 4), Fraction(-1, 2)]
    assert Fraction(1, 2) < offsets[5] < Fraction(3, 4)


def test_sim_cancel_and_zero_stimulus():
    for tag, qa, qw in stimulus.extreme_pairs(16, max_blocks=4):
        sums = [_exact_sum(qa, qw, r) for r in range(qa.codes.shape[0])]
        if tag == "extreme/zero":
            assert all(v == 0 for v in sums)
        if tag == "extreme/cancel":
            assert sums[:8] == [0] * 8 and all(v > 0 for v in sums[8:])


def test_sim_random_pauses_is_seeded():
    a = list(itertools.islice(random_pauses(0.5, 4), 50))
    assert a == list(itertools.islice(random_pauses(0.5, 4), 50))
    assert 5 < sum(a) < 45
    with pytest.raises(ValueError, match="probability"):
        next(random_pauses(1.5, 0))


def _params(unit, block=32):
    from pathlib import Path

    from tb.harness import Params
    return Params(unit=unit, block=block, depth="quick", seed=1, stats_dir=Path("."), real=False)


def test_sim_models_follow_the_registry():
    """Each clocked unit gets the model of its kind, and a quantizer variant its own golden method:
    the odd-maximum corners, where the stage-1 rules split, give different expected beats."""
    from tb.stream_units import DotModel, QuantizerModel, model_for

    rounding, truncating = model_for(_params("bd_quantizer")), model_for(_params("bd_quantizer_trunc"))
    assert isinstance(rounding, QuantizerModel) and isinstance(model_for(_params("bd_dot")), DotModel)
    assert (rounding.method, truncating.method) == ("two_stage", "two_stage_trunc")
    assert rounding.latency == truncating.latency == 4 and model_for(_params("bd_dot")).latency == 6
    # the stall test's fill: one result per register stage, one more in the skid buffer of
    # bd_dot_fast and bd_quantizer_fast (their "ready" cut)
    fast, quantizer_fast = model_for(_params("bd_dot_fast")), model_for(_params("bd_quantizer_fast", 32))
    assert rounding.capacity == rounding.latency and fast.capacity == fast.latency + 1
    assert quantizer_fast.capacity == quantizer_fast.latency + 1 == 14
    x = vectors.corner_blocks(32)["odd_qmax"]
    r = rounding._batch(x, "odd")
    t = truncating._batch(x, "odd")
    assert r.inputs == t.inputs
    split = sum(a.payload != b.payload for a, b in zip(r.expected, t.expected))
    assert split >= len(x) - 4          # every odd maximum but q = 31 (4 rows) moves one pair
    assert 'method="two_stage_trunc"' in t.expected[0].repro
    with pytest.raises(ValueError, match="not a clocked stream unit"):
        model_for(_params("bd_decoder"))


def test_sim_dot_model_batches():
    from tb.stream_units import model_for

    model = model_for(_params("bd_dot", 16))
    single = model.single_results(5, seed=3, tag="s")
    assert len(single.inputs) == len(single.expected) == 5
    assert model.result_cycles([(c, v) for c, v in enumerate(single.inputs)]) == list(range(5))
    traffic = model.traffic(60, seed=2, tag="t")
    assert len(traffic.inputs) > len(traffic.expected) > 0


def test_sim_runner_depth_option_overrides_the_default():
    from tb import runner
    assert runner.depth_for(32, False, "bd_dot_fast") == "light"
    assert runner.parse_args(["--depth", "full", "--units", "bd_dot_fast"]).depth == "full"
    assert runner.parse_args([]).depth is None
