"""The bd_linear testbench: its golden jobs and scoreboard without a simulator, and the reduced
cocotb + Verilator run of the engine (SPEC 11)."""
from __future__ import annotations

import pytest
import torch

from golden import bd
from tb import axis_linear as al


def _frame(job: al.Job, corrupt=None) -> tuple[bytes, list[int]]:
    """The m_axis_y frame a correct engine sends for ``job``; ``corrupt(beat_index, results, user)``
    may change a beat."""
    data, user = b"", []
    for g, beat in enumerate(job.expected):
        results, u = list(beat.results), beat.user
        if corrupt is not None:
            results, u = corrupt(g, results, u)
        data += b"".join(r.to_bytes(4, "little") for r in results)
        user += [u] * (4 * job.lanes)
    return data, user


def test_job_beats_follow_pack_rows_and_golden_linear():
    B, N = 32, 4
    x = al.random_vector(3, B, "gaussian", 1)
    q = al.random_weights(2 * N + 1, 3, B, 2)
    job = al.make_job("t", x, q, N)
    al.check_sizes(job)
    rows = bd.pack_rows(q, lanes=N)
    assert [b.data for b in job.w_beats] == [bytes(rows[g, j].tolist()) for g in range(3) for j in range(3)]
    assert [b.last for b in job.w_beats] == [0, 0, 1] * 3
    assert [b.user for b in job.w_beats] == [0] * 8 + [1]
    assert b"".join(job.x_beats) == x.to(torch.float16).numpy().tobytes()        # little-endian FP16
    y = al.fp32_words(bd.linear(bd.quantize(x, B), q))
    assert [list(e.results) for e in job.expected] == [y[0:4], y[4:8], y[8:9] + [0, 0, 0]]
    assert [(e.user, e.last, e.checked) for e in job.expected] == [(0, 0, True)] * 2 + [(0, 1, True)]


def test_job_with_nonfinite_elements_computes_them_as_zero():
    B, N = 16, 2
    x = al.nonfinite_vector(4, B, seed=3, count=6)
    assert not torch.isfinite(x).all()
    q = al.random_weights(5, 4, B, 4)
    job = al.make_job("t", x, q, N)
    zeroed = torch.where(torch.isfinite(x), x, torch.zeros_like(x))
    y = al.fp32_words(bd.linear(bd.quantize(zeroed, B), q))
    assert job.invalid and all(e.user == al.USER_INVALID for e in job.expected)
    assert [r for e in job.expected for r in e.results][:5] == y


def test_job_with_altered_groups_and_tuser_noise():
    B, N = 16, 2
    q = al.random_weights(6, 4, B, 5)
    gen = torch.Generator().manual_seed(0)
    job = al.make_job("t", al.random_vector(4, B, "uniform", 6), q, N, alter={0: -2, 2: 1}, user_noise=gen)
    lengths, run = [], 0
    for b in job.w_beats:
        run += 1
        if b.last:
            lengths.append(run)
            run = 0
    assert lengths == [2, 4, 5]
    assert [(e.user, e.checked) for e in job.expected] == [(al.USER_MISMATCH, False), (0, True),
                                                           (al.USER_MISMATCH, False)]
    assert any(b.user and not b.last for b in job.w_beats)          # noise the engine must ignore
    assert [b.user for b in job.w_beats if b.last] == [0, 0, 1]


def test_scoreboard_passes_a_correct_frame_and_counts():
    job = al.make_job("fam/a", al.random_vector(2, 16, "gaussian", 7), al.random_weights(5, 2, 16, 8), 2,
                      alter={1: 1})
    board = al.LinearScoreboard(2)
    board.expect(job)
    # results of the altered group are undefined: garbage there must still pass
    board.check_frame(*_frame(job, lambda g, r, u: ([0xDEAD, 0xBEEF], u) if g == 1 else (r, u)))
    s = board.summary()
    assert (s["beats"], s["exact"], s["flag_only"], s["mismatches"], s["missing_beats"]) == (3, 2, 1, 0, 0)
    assert s["tags"] == {"fam/a": 3}


@pytest.mark.parametrize("fault", ["result_bit", "tuser", "tlast_early", "missing_beat", "unexpected"])
def test_scoreboard_catches_faults(fault):
    job = al.make_job("t", al.random_vector(2, 16, "gaussian", 9), al.random_weights(6, 2, 16, 10), 2)
    board = al.LinearScoreboard(2)
    board.expect(job)
    if fault == "result_bit":
        board.check_frame(*_frame(job, lambda g, r, u: ([r[0] ^ 1, r[1]], u) if g == 2 else (r, u)))
    elif fault == "tuser":
        board.check_frame(*_frame(job, lambda g, r, u: (r, u | al.USER_INVALID) if g == 0 else (r, u)))
    elif fault == "tlast_early":       # the frame ends one group early: the rest arrives as a new frame
        data, user = _frame(job)
        board.check_frame(data[:16], user[:16])
    elif fault == "missing_beat":
        data, user = _frame(job)
        board.check_frame(data[8:], user[8:])
    else:
        board.check_frame(*_frame(job))
        board.check_frame(*_frame(job))
    assert board.summary()["mismatches"] > 0 and board.failures


def test_scoreboard_flush_counts_dropped_beats():
    board = al.LinearScoreboard(4)
    board.expect(al.make_job("t", al.random_vector(1, 32, "gaussian", 11), al.random_weights(9, 1, 32, 12), 4))
    assert board.flush() == 3 and not board.pending


def test_runner_drives_every_engine_with_the_linear_testbench():
    """Every registered engine, the deepest pipeline setting too, runs tb.test_linear; a full run
    takes the deeper setting at light depth (as the _fast quantizer and dot unit), the suite quick."""
    from bd_hw import units
    from tb.build import test_module
    from tb.runner import depth_for

    engines = [u.name for u in units.UNITS.values() if u.kind == "linear"]
    assert {"bd_linear_n4", "bd_linear_n2", "bd_linear_fast_n4"} <= set(engines)
    assert all(test_module(name) == "tb.test_linear" for name in engines)
    assert [depth_for(32, False, n) for n in ("bd_linear_n4", "bd_linear_fast_n4", "bd_dot_fast",
                                              "bd_linear_n8")] == ["full", "light", "light", "light"]
    assert depth_for(32, True, "bd_linear_fast_n4") == "quick"


# --- Verilator runs (slow) ------------------------------------------------------------------------

QUICK_UNIT = ("bd_linear_n2", 16)      # the smaller engine keeps the suite's build short


@pytest.mark.sim
def test_sim_linear_reduced_run(tmp_path):
    """The cocotb testbench at quick depth (as ``make sim-quick``): every result beat golden, real
    SmolLM2 layers reached the scoreboard, one weight beat per clock, the documented latency."""
    from bd_hw import units
    from tb import runner

    unit, block = QUICK_UNIT
    lanes = units.get(unit).params["N"]
    args = runner.parse_args(["--quick", "--out", str(tmp_path)])
    run = runner.run_unit(unit, block, args, waves=False)
    problems = ([run.error] if run.error else []) + run.failures
    assert not problems, "\n".join(problems)
    assert run.tests == 4 and run.failed == 0
    assert run.mismatches == 0
    assert run.vectors >= 3000, f"only {run.vectors} weight blocks were checked"
    records = {r["test"]: r for r in run.details}
    tags = {tag for r in records.values() for tag in r.get("tags", {})}
    assert any(t.startswith("real/layers.3.self_attn") for t in tags)
    assert any(t.startswith("real/layers.7.mlp.down_proj") for t in tags)
    assert {"corner/nonfinite", "corner/block_count", "corner/odd_rows", "corner/limit"} <= tags
    unstalled = records["linear_real_layers_unstalled"]
    assert unstalled["weight_beats_per_cycle"] == 1.0 and unstalled["activation_blocks_per_cycle"] == 1.0
    assert run.blocks_per_cycle == lanes
    assert run.latency == [units.get(unit).latency(block)]
    assert records["linear_reset_mid_traffic"]["dropped_by_reset"] > 0


@pytest.mark.sim
def test_sim_fusesoc_sim_target_passes(tmp_path):
    """``fusesoc run --target sim``: the Verilog testbench of the core checks the emitted engine
    against the committed golden vectors and passes."""
    from tests.hw.test_hw_fusesoc import ROOT, fusesoc

    # The wheel's verilated.mk has no C++ standard for the testbench's coroutines (see the core).
    make = {"OPT_FAST": "-O0", "OPT_SLOW": "-O0", "OPT_GLOBAL": "-O0", "CFG_CXXFLAGS_STD": "-std=gnu++20"}
    result = fusesoc(ROOT, tmp_path / "build", "sim", make_variables=make)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "bd_linear_tb: PASS, 9 result beats" in log


@pytest.mark.sim
def test_sim_fusesoc_vectors_are_reproducible(tmp_path):
    """fusesoc/bd_linear_b32_n4_vectors.vh is what `python -m tb.linear_vectors` writes today."""
    from tb import linear_vectors

    assert linear_vectors.main(["--out", str(tmp_path)]) == 0
    out = tmp_path / linear_vectors.DEFAULT_OUT.name
    assert out.read_bytes() == linear_vectors.DEFAULT_OUT.read_bytes(), \
        "fusesoc/bd_linear_b32_n4_vectors.vh is stale: run `python -m tb.linear_vectors`"


def test_runner_update_keeps_only_rows_whose_verilog_is_unchanged(tmp_path):
    """--update: rows of units not run now are kept when their file's digest still matches, and
    dropped when the Verilog changed since (their figures would describe other hardware)."""
    import hashlib
    import json

    from tb import runner

    rtl = tmp_path / "rtl"
    rtl.mkdir()
    (rtl / "bd_dot_b32.v").write_text("module bd_dot_b32; endmodule\n")
    (rtl / "bd_quantizer_b32.v").write_text("module bd_quantizer_b32; endmodule\n")
    digest = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in rtl.iterdir()}
    (rtl / "bd_quantizer_b32.v").write_text("module bd_quantizer_b32; wire changed; endmodule\n")
    rows = [{**runner.asdict(runner.UnitRun(unit, 32, "full", tests=3, vectors=10)), "passed": True}
            for unit in ("bd_dot", "bd_quantizer", "bd_decoder")]
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.json").write_text(json.dumps({"rtl_sha256": digest, "runs": rows}))
    args = runner.parse_args(["--out", str(out), "--rtl", str(rtl), "--units", "bd_decoder",
                              "--blocks", "32", "--build-root", str(tmp_path / "build")])
    kept = runner.kept_runs(args)
    # bd_decoder is run now, bd_quantizer's file changed, bd_dot's did not.
    assert [(r.unit, r.block, r.vectors) for r in kept] == [("bd_dot", 32, 10)]
