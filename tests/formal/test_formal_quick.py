"""The fast formal proofs (`make test`) and the planted-bug check at its cheapest.

`make formal` runs every proof (python -m formal); these tests run the ones that finish in
seconds: the stream protocol of the default quantizer by k-induction, one stage of its end-to-end
proof, the combinational-path rules of every clocked unit, and one run per planted bug showing
the proof that must catch it fails.
"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from amaranth.hdl import Module, Signal

from formal import bugs
from formal.harness import AXIS_PROPERTIES, PROTOCOL_PROPERTIES, SignalFinder
from formal.runner import run_job
from formal.units import bug_jobs, jobs

ROOT = Path(__file__).resolve().parents[2]


def _job(name):
    (job,) = [j for j in jobs((16,)) if j.name == name]
    return job


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    return tmp_path_factory.mktemp("formal")


def test_quick_set_is_small_and_covers_every_kind_of_cheap_proof():
    quick = [j for j in jobs() if j.quick]
    kinds = {j.kind for j in quick}
    assert {"protocol", "structural"} <= kinds
    assert all(j.B == 16 for j in quick)


def test_quantizer_protocol_proved_by_induction(work):
    rows = run_job(_job("bd_quantizer_b16_protocol"), work)
    assert {r.property for r in rows} == set(PROTOCOL_PROPERTIES)
    assert {r.status for r in rows} == {"proved"}, [(r.property, r.status, r.detail) for r in rows]


def test_engine_protocol_proved_and_not_vacuous(work):
    """bd_linear's AXI4-Stream rules close by k-induction, and every cover is reached: a harness
    whose clock never ticks would prove everything and reach nothing past step 0."""
    proof = run_job(_job("bd_linear_b16_n2_mb2_protocol"), work)
    assert {r.property for r in proof} >= set(AXIS_PROPERTIES)
    assert {r.status for r in proof} == {"proved"}, [(r.property, r.status, r.detail) for r in proof]
    covers = run_job(_job("bd_linear_b16_n2_mb2_cover"), work)
    assert {r.property for r in covers} >= {"result_delivered", "held_under_backpressure", "full"}
    assert {r.status for r in covers} == {"reached"}, [(r.property, r.status) for r in covers]
    assert max(r.depth for r in covers) > 10


def test_end_to_end_stage_job_closes_by_induction(work):
    """One stage of the quantizer's end-to-end proof closes by k-induction at depth 1."""
    rows = run_job(_job("bd_quantizer_b16_end_to_end_stage0"), work)
    assert {r.property for r in rows} >= {"stage0_valid", "s0_data", "s0_exp", "shadow0_E"}
    assert {r.status for r in rows} == {"proved"}, [(r.property, r.status, r.detail) for r in rows]


@pytest.mark.parametrize("unit", ["bd_quantizer", "bd_quantizer_fast"])
def test_end_to_end_parts_split_every_property_once(unit):
    """The per-stage jobs of the end-to-end proof together assert every property of the whole
    harness, each in exactly one job, and the output checks in the last one."""
    from amaranth.back import rtlil
    from bd_hw.units import UNITS
    from formal.units import quantizer_end_to_end

    def asserted(part):
        top = quantizer_end_to_end(UNITS[unit], 16, part=part)
        rtlil.convert(top, name="top")
        return top.props.asserts

    whole = asserted(None)
    latency = UNITS[unit].latency(16)
    parts = [asserted(n) for n in range(latency)]
    assert sorted(p for part in parts for p in part) == sorted(whole)
    assert {"exp", "invalid", "dialect", "codes"} <= set(parts[-1])
    assert all(f"stage{n}_valid" in parts[n] for n in range(latency))


@pytest.mark.parametrize("unit", ["bd_dot", "bd_dot_fast"])
def test_dot_end_to_end_parts_split_every_property_once(unit):
    """bd_dot's end-to-end jobs (front stages, the accumulator's term and total, the
    normaliser's stages) assert every property of the whole harness once, the output last."""
    from amaranth.back import rtlil
    from bd_hw.units import UNITS
    from formal.units import dot_end_to_end, dot_part_names

    def asserted(part):
        top = dot_end_to_end(UNITS[unit], 16, part=part)
        rtlil.convert(top, name="top")
        return top.props.asserts

    whole = asserted(None)
    names = dot_part_names(UNITS[unit], 16)
    assert len(names) == UNITS[unit].latency(16)
    parts = [asserted(n) for n in range(len(names))]
    assert sorted(p for part in parts for p in part) == sorted(whole)
    assert "result" in parts[-1] and {"running", "o_total"} <= set(parts[names.index("o")])
    assert all(f"{name}_valid" in parts[n] for n, name in enumerate(names))


@pytest.mark.parametrize("unit", ["bd_quantizer", "bd_dot"])
def test_no_combinational_ready_or_valid_path(work, unit):
    rows = run_job(_job(f"{unit}_b16_structural"), work)
    assert [(r.property, r.status) for r in rows] == [("ready_not_from_valid", "proved"),
                                                      ("valid_not_from_ready", "proved")]


@pytest.mark.parametrize("job", bug_jobs(also=False), ids=lambda j: j.name)
def test_planted_bug_is_caught(work, job):
    """Each planted bug makes the proof that guards it fail with a counterexample (on the unit it
    is planted in; `make formal` repeats it on the units of its ``also`` list)."""
    rows = run_job(job, work)
    failed = [r.property for r in rows if r.status == "failed"]
    assert failed, [(r.property, r.status, r.detail) for r in rows]


def test_planting_leaves_the_generator_unchanged():
    import bd_hw.dot as dot
    import bd_hw.float_add as fa
    import bd_hw.pipeline as pipeline
    import bd_hw.quantizer as q
    functions = lambda: (pipeline.pipeline_control, q.PairSelector.pair_of, dot.accumulator_bits,
                         dot.FP32Normaliser.elaborate, pipeline.Stages.register, fa._convert,
                         fa._round_pack, fa._add)
    before = (q.STAGE2_RANGES.clone(), q.MIDPOINTS.clone(), functions())
    for name in bugs.BUGS:
        with bugs.planted(name):
            pass
    assert bool((q.STAGE2_RANGES == before[0]).all()) and bool((q.MIDPOINTS == before[1]).all())
    assert functions() == before[2]


def test_a_bug_that_no_longer_matches_the_source_refuses_to_plant():
    def f(x):
        return x + 1
    with pytest.raises(LookupError, match="occurs 0 times"):
        bugs.recompiled(f, "x - 1", "x")
    assert bugs.recompiled(f, "x + 1", "x + 2")(1) == 3
    with pytest.raises(ValueError, match="bug must be one of"):
        bugs.planted("no_such_bug")


def test_signal_finder_names_a_missing_register():
    from amaranth.hdl import Fragment
    m = Module()
    s = Signal(name="s0_valid")
    m.d.sync += s.eq(1)
    find = SignalFinder(Fragment.get(m, None))
    assert find("s0_valid") is s
    with pytest.raises(KeyError, match="no signal 'x_valid'"):
        find("x_valid")


def test_cli_lists_jobs_and_rejects_bad_arguments():
    run = lambda *a: subprocess.run([sys.executable, "-m", "formal", *a], cwd=ROOT,
                                    capture_output=True, text=True)
    listed = run("--list", "--quick")
    assert listed.returncode == 0 and "bd_quantizer_b16_protocol" in listed.stdout
    bad = run("--blocks", "17")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "blocks" in bad.stderr
    none = run("--only", "no_such_job")
    assert none.returncode == 2 and "no job matches" in none.stderr


def _float16_bits(x) -> int:
    import numpy as np
    return int(np.asarray(x, dtype=np.float16).view(np.uint16))


def test_float_models_agree_with_numpy_float16():
    """The plain SPEC 6.1 models the float stage proofs compare against, simulated on a seeded
    sample and corner lists: FP16 addition (Inf, NaN, -0.0, subnormals, overflow, cancellation,
    ties) against numpy.float16's, and the block value's rounding to FP16 against numpy's
    float64 -> float16 conversion (one rounding: S * 2^(exp - 36) is exact in float64)."""
    import numpy as np
    from amaranth.hdl import Module, signed
    from amaranth.sim import Simulator
    from formal.models import block_value_model, float_add_model

    m = Module()
    a, b = Signal(16, name="a"), Signal(16, name="b")
    add = float_add_model(m, a, b, 5, 10)
    S, exp = Signal(signed(14), name="S"), Signal(6, name="exp")
    value = block_value_model(m, S, exp, 5, 10)
    rng = np.random.default_rng(26)
    corners = [0x0000, 0x8000, 0x7C00, 0xFC00, 0x7E00, 0xFD01, 0x0001, 0x8001, 0x03FF, 0x0400,
               0x7BFF, 0xFBFF, 0x3C00, 0xBC00, 0x3C01, 0x83FF, 0x6800, 0x1400]
    pairs = [(x, y) for x in corners for y in corners]
    pairs += [tuple(int(v) for v in rng.integers(0, 1 << 16, 2)) for _ in range(400)]
    for _ in range(300):     # near cancellation and near ties: y close to -x or a few binades off
        x = int(rng.integers(0, 1 << 16))
        y = ((x ^ 0x8000) + int(rng.integers(-3, 4)) * 1024 + int(rng.integers(-4, 5))) & 0xFFFF
        pairs.append((x, y))
    blocks = [(s, e) for s in (1, -1, 3, -7200, 7200, 0) for e in (0, 11, 12, 13, 26, 27, 50, 51, 63)]
    blocks += [(int(s), int(e)) for s, e in zip(rng.integers(-7200, 7201, 400), rng.integers(0, 64, 400))]
    wrong = []

    async def bench(ctx):
        for x, y in pairs:
            ctx.set(a, x)
            ctx.set(b, y)
            with np.errstate(all="ignore"):
                want = np.uint16(x).view(np.float16) + np.uint16(y).view(np.float16)
            got = (ctx.get(add.bits), ctx.get(add.nan))
            if (got[1] != 1) if np.isnan(want) else (got != (_float16_bits(want), 0)):
                wrong.append(("add", hex(x), hex(y), hex(got[0])))
        for s, e in blocks:
            ctx.set(S, s)
            ctx.set(exp, e)
            with np.errstate(all="ignore"):
                want = _float16_bits(np.float16(np.float64(s) * 2.0 ** (e - 36)))
            if ctx.get(value) != want:
                wrong.append(("block value", s, e, hex(ctx.get(value))))

    sim = Simulator(m)
    sim.add_testbench(bench)
    sim.run()
    assert not wrong, wrong[:10]
