"""Helpers of the synthesis and Verilator benchmarks (bench.synth, bench.verilator_throughput) that
need no external tool: port parsing, C++ names, the place-and-route harness and the ratios."""
from __future__ import annotations

import json

import pytest
from amaranth.back import verilog

from bench.hw.baseline_macs import make_mac
from bench.synth import PnrHarness, _stat_cells, summarise
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


def test_stat_json_is_read(tmp_path):
    stat = {"modules": {"\\x": {"num_cells": 7, "num_cells_by_type": {"$_AND_": 5, "$_DFF_P_": 2}}}}
    path = tmp_path / "s.json"
    path.write_text("noise before\n" + json.dumps(stat))
    assert _stat_cells(path) == (7, {"$_AND_": 5, "$_DFF_P_": 2})


def test_ratios_are_blockdialect_over_baseline():
    rows = [
        {"unit": "mac_bd", "B": 32, "cells": 100, "gates2": 90, "ice40_luts": 50},
        {"unit": "mac_fp6", "B": 32, "cells": 200, "gates2": 180, "ice40_luts": 40},
        {"unit": "sel_mse", "B": 32, "cells": 1000, "gates2": 900, "ice40_luts": 500},
        {"unit": "sel_two_stage", "B": 32, "cells": 100, "gates2": 90, "ice40_luts": 100},
    ]
    summary = summarise(rows)
    fp6 = summary["mac_ratios"]["32"]["fp6"]
    assert (fp6["cells"], fp6["gates2"], fp6["ice40_luts"]) == (0.5, 0.5, 1.25)
    sel = summary["selector_ratios"]["32"]["selector"]
    assert (sel["cells"], sel["gates2"], sel["ice40_luts"]) == (10.0, 10.0, 5.0)
