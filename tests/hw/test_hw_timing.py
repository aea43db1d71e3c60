"""The timing tool of the synthesis CLI (``python -m bench.synth timing``): reading nextpnr's
report, describing the critical path, merging rows and writing timing.md / timing.json."""
import json
import subprocess
import sys
from pathlib import Path

from bench.synth import timing

ROOT = Path(__file__).resolve().parents[2]


def _seg(kind, cell, src, dst, delay, net=None):
    seg = {"type": kind, "from": {"cell": cell, "port": src, "loc": [1, 2]},
           "to": {"cell": cell, "port": dst, "loc": [1, 3]}, "delay": delay}
    if net:
        seg["net"] = net
    return seg


# A nextpnr --report document, trimmed to what the tool reads (two clocks, one critical path).
PNR_REPORT = {
    "fmax": {"$glbnet$clk": {"achieved": 87.123, "constraint": 100.0},
             "$glbnet$pnr_clk": {"achieved": 140.0, "constraint": 100.0}},
    "critical_paths": [{"from": "clk", "to": "clk", "path": [
        _seg("clk-to-q", "dut.accumulator.o_total_TRELLIS_FF_Q", "CLK", "Q", 0.52),
        _seg("routing", "dut.accumulator.o_total_TRELLIS_FF_Q", "Q", "A0", 1.10, net="n1"),
        _seg("logic", "dut.norm.mag_CCU2C_S0", "A0", "FCO", 0.40),
        _seg("logic", "dut.norm.mag_CCU2C_S0$1", "FCI", "FCO", 0.05),
        _seg("routing", "dut.norm.mag_CCU2C_S0$1", "FCO", "B", 0.90, net="n2"),
        _seg("logic", "dut.norm.lzc_LUT4_Z", "B", "Z", 0.25),
        _seg("setup", "dut.norm.s1_norm_TRELLIS_FF_Q", "DI", "CLK", 0.05),
    ]}],
}


def _row(unit, top, pipeline, fmax, note=""):
    return {"unit": unit, "top": top, "B": 32, "pipeline": pipeline, "cuts": [], "latency": 6,
            "family": "ecp5", "device": "ECP5", "luts": 3000, "carries": 200, "flops": 700,
            "dsps": 32, "fmax_mhz": fmax, "mapping": "abc9", "seconds": 1.0,
            "critical_path": "critical path a -> b: 1 LUT levels", "note": note}


def test_reads_the_slowest_clock_and_the_critical_path():
    fmax, path = timing.read_pnr_report(PNR_REPORT)
    assert fmax == 87.12 and len(path) == 7
    assert timing.levels(path) == (1, 2)           # one LUT, two carry steps
    assert timing.read_pnr_report({}) == (None, [])


def test_describe_names_the_path_and_its_logic():
    _, path = timing.read_pnr_report(PNR_REPORT)
    result = _row("bd_dot", "bd_dot_b32", 0, 87.12) | {"path": path}
    lines = timing.describe(result)
    assert lines[0].startswith("bd_dot B=32 pipeline=0 ECP5: 87.12 MHz, latency 6")
    assert lines[1] == ("critical path dut.accumulator.o_total -> dut.norm.s1_norm: 1 LUT levels "
                        "+ 2 carry steps, 0.70 ns logic, 2.00 ns routing")
    assert sum(1 for ln in lines[2:] if ln.lstrip().startswith(("logic", "clk-to-q", "setup"))) == 5


def test_report_merges_rows_and_counts_shipped_settings(tmp_path):
    old = [_row("bd_dot", "bd_dot_b32", 0, 55.0), _row("bd_dot", "bd_dot_b32", 0, 40.0, "before")]
    new = [_row("bd_dot", "bd_dot_b32", 0, 60.0), _row("bd_dot_fast", "bd_dot_fast_b32", 4, 90.5),
           {"unit": "bd_quantizer", "B": 32, "pipeline": 4, "family": "ecp5", "error": "asserted"}]
    rows = timing.merge_rows(old, new)
    assert len(rows) == 4                           # the re-run replaced its old row
    timing.write_report(rows, tmp_path)
    saved = json.loads((tmp_path / "timing.json").read_text())
    # The _fast build is the deepest setting of bd_dot; the note row does not count.
    assert saved["fmax_mhz"] == {"ecp5/bd_dot_b32": 90.5}
    assert [r["unit"] for r in saved["not_measured"]] == ["bd_quantizer"]
    text = (tmp_path / "timing.md").read_text()
    assert "| bd_dot_fast | 32 | ecp5 | 4 |" in text and "| bd_dot | 32 | ecp5 | before |" in text
    assert "- ecp5/bd_dot_b32: 90.5 MHz" in text


def test_fast_build_counts_over_a_faster_intermediate_setting(tmp_path):
    # An intermediate setting's row may predate later changes to the design; the shipped fastest
    # build is the _fast unit's, the figure the synthesis report gives too.
    rows = [_row("bd_dot", "bd_dot_b32", 3, 63.7), _row("bd_dot_fast", "bd_dot_fast_b32", 5, 62.8),
            _row("bd_quantizer", "bd_quantizer_b32", 4, 66.7),
            _row("bd_quantizer", "bd_quantizer_b32", 3, 50.5)]
    timing.write_report(rows, tmp_path)
    saved = json.loads((tmp_path / "timing.json").read_text())
    assert saved["fmax_mhz"] == {"ecp5/bd_dot_b32": 62.8, "ecp5/bd_quantizer_b32": 66.7}


def test_cli_rewrites_the_report_and_rejects_bad_arguments(tmp_path):
    timing.write_report([_row("bd_dot", "bd_dot_b32", 0, 55.0)], tmp_path)
    (tmp_path / "timing.md").unlink()

    def cli(*args):
        return subprocess.run([sys.executable, "-m", "bench.synth", "timing", *args], cwd=ROOT,
                              capture_output=True, text=True)
    r = cli("--from-json", "--out", str(tmp_path))
    assert r.returncode == 0 and (tmp_path / "timing.md").exists()
    for bad in (["--units", "nope"], ["--families", "xilinx", "--units", "bd_dot"], []):
        r = cli(*bad, "--out", str(tmp_path))
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_seed_rows_form_the_placement_spread_and_do_not_count(tmp_path):
    seed1 = _row("bd_dot", "bd_dot_b32", 0, 55.0)
    others = [_row("bd_dot", "bd_dot_b32", 0, fmax) | {"seed": seed}
              for seed, fmax in ((2, 58.5), (3, 52.25))]
    rows = timing.merge_rows([seed1], others + [_row("bd_dot", "bd_dot_b32", 0, 56.0)])
    assert len(rows) == 3                           # seeds are apart; seed 1 re-run replaced
    timing.write_report(rows, tmp_path)
    saved = json.loads((tmp_path / "timing.json").read_text())
    assert saved["fmax_mhz"] == {"ecp5/bd_dot_b32": 56.0}    # the best seed does not count
    text = (tmp_path / "timing.md").read_text()
    assert "| bd_dot | 32 | ecp5 | 0, seed 2 |" in text
    assert ("| bd_dot | 32 | ecp5 | 0 | seed 1: 56.0, seed 2: 58.5, seed 3: 52.2 | 52.2 | 56.0 | 58.5 |"
            in text)
    single = tmp_path / "single"
    timing.write_report([seed1], single)
    assert "Placement spread" not in (single / "timing.md").read_text()
    r = subprocess.run([sys.executable, "-m", "bench.synth", "timing", "--units", "bd_dot", "--seed", "x"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "--seed" in r.stderr, r.stderr
