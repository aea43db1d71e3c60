"""rtl/ is the reproducible, lint-clean output of the unit registry (SPEC 9 [revised])."""
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bd_hw import units
from bd_hw.__main__ import lint, main, write_verilog
from golden.spec import BLOCK_SIZES

ROOT = Path(__file__).resolve().parents[2]
RTL = ROOT / "rtl"
EXPECTED = sorted(u.file_name(B) for u, B in units.emitted())


def run_cli(*args, env=None, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "bd_hw", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_registry_emits_the_spec_files():
    """SPEC 9: every unit at 16, 32 and 64, plus the truncating quantizer, the deepest pipeline
    settings at 32 (the engine's too) and the dot unit's SPEC 6.1 accumulation modes at 32."""
    assert EXPECTED == sorted([f"bd_{u}_b{B}.v" for u in ("decoder", "quantizer", "dot")
                               for B in BLOCK_SIZES] + ["bd_quantizer_trunc_b32.v",
                                                         "bd_quantizer_fast_b32.v", "bd_dot_fast_b32.v"]
                              + ["bd_linear_b32_n4.v", "bd_linear_b32_n8.v",    # SPEC 11
                                 "bd_linear_b16_n2.v", "bd_linear_fast_b32_n4.v"]
                              + [f"bd_dot_{mode}{fast}_b32.v" for mode in ("fp32", "fp16")    # SPEC 6.1
                                 for fast in ("", "_fast")])
    assert units.get("bd_quantizer").params == {"stage1": "round"}
    assert units.get("bd_quantizer_trunc").params == {"stage1": "trunc"}
    assert [units.get(n).latency(32) for n in units.UNITS] == [None, 4, 4, 6, 13, 10, 5, 6, 7, 8, 8, 8, 8, 12, 8]
    # bd_linear_n16 is registered but emitted only when named
    assert [f for u, B in units.emitted(["bd_linear_n16"], on_request=True)
            for f in [u.file_name(B)]] == ["bd_linear_b32_n16.v"]
    assert not units.emitted(["bd_linear_n16"])
    with pytest.raises(ValueError, match="unit must be one of"):
        units.get("dot")
    with pytest.raises(ValueError, match="B must be one of"):
        units.build("bd_dot", 24)


def test_committed_rtl_matches_fresh_generation(tmp_path):
    assert sorted(p.name for p in RTL.glob("*.v")) == EXPECTED
    write_verilog(tmp_path, quiet=True)
    for name in EXPECTED:
        assert (tmp_path / name).read_bytes() == (RTL / name).read_bytes(), \
            f"rtl/{name} is stale: run `make verilog`"


def test_generation_is_deterministic_across_processes(tmp_path):
    """Different hash seeds and working directories give the same bytes; a rerun changes nothing."""
    outs = []
    for seed, cwd in (("1", ROOT), ("12345", tmp_path)):
        out = tmp_path / f"out{seed}"
        env = dict(os.environ, PYTHONHASHSEED=seed, PYTHONPATH=str(ROOT))
        r = run_cli("verilog", "--out", str(out), "--units", "bd_quantizer,bd_dot",
                    "--blocks", "16", env=env, cwd=cwd)
        assert r.returncode == 0, r.stderr
        outs.append(out)
    for name in ("bd_quantizer_b16.v", "bd_dot_b16.v"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
        assert (outs[0] / name).read_bytes() == (RTL / name).read_bytes()
    before = {p: p.stat().st_mtime_ns for p in outs[0].iterdir()}
    r = run_cli("verilog", "--out", str(outs[0]), "--units", "bd_quantizer", "--blocks", "16")
    assert r.returncode == 0 and "unchanged" in r.stdout
    assert {p: p.stat().st_mtime_ns for p in outs[0].iterdir()} == before


def test_rtl_has_no_paths_dates_or_hosts():
    host = socket.gethostname()
    for name in EXPECTED:
        text = (RTL / name).read_text()
        assert str(ROOT) not in text and "/home/" not in text and "/tmp" not in text
        assert host not in text or len(host) < 4
        assert not re.search(r"\b20\d\d-\d\d-\d\d\b|\b\d\d:\d\d:\d\d\b", text)


# Bytes of Verilog per lane (B lanes, B x N for an engine), by kind of unit. Every tree node is a
# named wire, so a file grows linearly with its lanes: 350 to 9,900 bytes per lane when this was
# written (the most for the smallest blocks, whose normaliser is shared by fewer lanes), against
# 770 to 39,000 when shared subtrees were re-emitted at every use.
BYTES_PER_LANE = {"decoder": 512, "quantizer": 5_000, "dot": 6_500, "linear": 11_000}


@pytest.mark.parametrize("unit,B", [(u.name, B) for u, B in units.emitted()])
def test_verilog_size_per_lane(unit, B):
    """The emitted Verilog stays as compact as its logic (no re-emitted subtrees)."""
    u = units.get(unit)
    lanes = B * u.params.get("N", 1)
    size = (RTL / u.file_name(B)).stat().st_size
    assert size <= BYTES_PER_LANE[u.kind] * lanes, \
        f"rtl/{u.file_name(B)}: {size} bytes, {size // lanes} per lane (limit {BYTES_PER_LANE[u.kind]})"


_MODULE = re.compile(r"^module (\\\S+|\w+)\s*\(", re.M)


# bd_linear (SPEC 11 names and AXI4-Stream ports): tests/hw/test_hw_linear.py
@pytest.mark.parametrize("unit,B", [(u.name, B) for u, B in units.emitted() if u.kind != "linear"])
def test_module_names_and_ports(unit, B):
    """The top module is named after its file; every submodule is prefixed by it (SPEC 9)."""
    u = units.get(unit)
    text = (RTL / u.file_name(B)).read_text()
    top = u.module(B)
    assert top == Path(u.file_name(B)).stem == f"{unit}_b{B}"
    modules = [name.lstrip("\\") for name in _MODULE.findall(text)]
    assert modules[0] == top
    assert len(modules) > 1 and all(name.startswith(top + ".") for name in modules[1:]), modules
    if u.kind == "decoder":
        assert re.search(rf"input \[{4 * B - 1}:0\] codes;", text)
        assert re.search(r"input \[3:0\] dialect;", text)
        assert re.search(rf"output \[{5 * B - 1}:0\] values;", text)
        return
    win, wout = {"quantizer": (16 * B, 4 * B + 10), "dot": (8 * B + 19, 32)}[u.kind]
    for port in ("clk", "rst", "i__valid", "o__ready"):
        assert re.search(rf"input {port};", text)
    for port in ("i__ready", "o__valid"):
        assert re.search(rf"output {port};", text)
    assert re.search(rf"input \[{win - 1}:0\] i__payload;", text)
    assert re.search(rf"output \[{wout - 1}:0\] o__payload;", text)


def test_rtl_is_lint_clean():
    r = run_cli("lint", "rtl")
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("clean:") == len(EXPECTED)


def test_lint_reports_warnings(tmp_path):
    """The waivers cover Amaranth's idioms only: a width mismatch still fails, and so does a top
    module not named after its file (only prefixed submodules are waived)."""
    (tmp_path / "bd_bad_b16.v").write_text(
        "module bd_bad_b16(input wire [3:0] a, output wire [7:0] y);\n  assign y = a;\nendmodule\n")
    assert not lint(tmp_path, quiet=True)
    (tmp_path / "bd_bad_b16.v").unlink()
    text = (RTL / "bd_dot_b16.v").read_text()
    (tmp_path / "bd_dot_b16.v").write_text(text.replace("module bd_dot_b16(", "module bd_dot(", 1))
    assert not lint(tmp_path, quiet=True)
    (tmp_path / "bd_dot_b16.v").write_text(text)
    assert lint(tmp_path, quiet=True)


def test_cli_help(capsys):
    r = run_cli("--help")
    assert r.returncode == 0 and "usage" in r.stdout.lower()
    for args in (["verilog", "--help"], ["lint", "--help"], ["list", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 0
        assert "usage" in capsys.readouterr().out.lower()
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code != 0


def test_cli_errors_are_one_line(tmp_path):
    r = run_cli("lint", str(tmp_path / "missing"))
    assert r.returncode == 1 and r.stderr.strip().count("\n") == 0 and "missing" in r.stderr
    r = run_cli("verilog", "--units", "dot", "--out", str(tmp_path))
    assert r.returncode == 2 and "unknown unit dot" in r.stderr
    r = run_cli("verilog", "--blocks", "24", "--out", str(tmp_path))
    assert r.returncode == 2 and "block sizes" in r.stderr
    r = run_cli("list")
    assert r.returncode == 0 and "bd_quantizer_trunc" in r.stdout and "stage1=trunc" in r.stdout
