"""tb.runner's choice of units and of their Verilog, without building anything."""
from __future__ import annotations

import functools
from pathlib import Path

from bd_hw import units
from tb import runner


def test_units_emitted_on_request_run_only_when_named():
    every = {u for u, _ in runner.selected(runner.parse_args([]))}
    assert units.UNITS["bd_linear_n16"] not in every and units.UNITS["bd_linear_n8"] in every
    named = runner.selected(runner.parse_args(["--units", "bd_linear_n16,bd_dot"]))
    assert [(u.name, B) for u, B in named] == [("bd_linear_n16", 32)] + \
        [("bd_dot", B) for B in units.UNITS["bd_dot"].blocks]


def test_verilog_source_of_a_unit_emitted_on_request(tmp_path, monkeypatch):
    """rtl/'s file when it is there; else the unit's Verilog written into the build folder once,
    and again only when it changes (so a Verilator build is reused)."""
    texts = iter(["module a; endmodule\n", "module a; endmodule\n", "module b; endmodule\n"])
    monkeypatch.setattr(units.Unit, "verilog", lambda self, B: next(texts))
    # a cache of this test's own, so no fake text outlives it
    monkeypatch.setattr(runner, "_generated_verilog", functools.cache(runner._generated_verilog.__wrapped__))
    args = runner.parse_args(["--units", "bd_linear_n16", "--rtl", str(tmp_path / "rtl"),
                              "--build-root", str(tmp_path / "build")])
    path = runner.verilog_source("bd_linear_n16", 32, args)
    assert path == tmp_path / "build" / "rtl" / "bd_linear_b32_n16.v"
    assert path.read_text() == "module a; endmodule\n"
    stamp = path.stat().st_mtime_ns
    # one elaboration per process: the same text again, then (a new process) a changed one
    assert runner.verilog_source("bd_linear_n16", 32, args) == path and path.stat().st_mtime_ns == stamp
    runner._generated_verilog.cache_clear()
    assert runner.verilog_source("bd_linear_n16", 32, args) == path and path.stat().st_mtime_ns == stamp
    runner._generated_verilog.cache_clear()
    assert runner.verilog_source("bd_linear_n16", 32, args).read_text() == "module b; endmodule\n"
    assert next(texts, None) is None          # three elaborations for four calls
    # a unit emitted to rtl/ is read from there, never written
    (tmp_path / "rtl").mkdir()
    assert runner.verilog_source("bd_dot", 32, args) == Path(tmp_path / "rtl" / "bd_dot_b32.v")
    assert not (tmp_path / "build" / "rtl" / "bd_dot_b32.v").exists()
