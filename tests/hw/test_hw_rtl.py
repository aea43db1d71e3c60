"""rtl/ is the reproducible, lint-clean output of the generators (SPEC 9)."""
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from bd_hw.__main__ import UNITS, file_name, lint, main, write_verilog
from golden.formatbook import BLOCK_SIZES

ROOT = Path(__file__).resolve().parents[2]
RTL = ROOT / "rtl"
EXPECTED = sorted(file_name(u, B) for u in UNITS for B in BLOCK_SIZES)


def run_cli(*args, env=None, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "bd_hw", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


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
        r = run_cli("verilog", "--out", str(out), "--unit", "bd_quantizer", "--unit", "bd_dot",
                    "--block", "16", env=env, cwd=cwd)
        assert r.returncode == 0, r.stderr
        outs.append(out)
    for name in ("bd_quantizer_b16.v", "bd_dot_b16.v"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes()
        assert (outs[0] / name).read_bytes() == (RTL / name).read_bytes()
    before = {p: p.stat().st_mtime_ns for p in outs[0].iterdir()}
    r = run_cli("verilog", "--out", str(outs[0]), "--unit", "bd_quantizer", "--block", "16")
    assert r.returncode == 0 and "unchanged" in r.stdout
    assert {p: p.stat().st_mtime_ns for p in outs[0].iterdir()} == before


def test_rtl_has_no_paths_dates_or_hosts():
    host = socket.gethostname()
    for name in EXPECTED:
        text = (RTL / name).read_text()
        assert str(ROOT) not in text and "/home/" not in text and "/tmp" not in text
        assert host not in text or len(host) < 4
        assert not re.search(r"\b20\d\d-\d\d-\d\d\b|\b\d\d:\d\d:\d\d\b", text)


@pytest.mark.parametrize("B", BLOCK_SIZES)
def test_module_names_and_ports(B):
    width = {"bd_quantizer": (16 * B, 4 * B + 10), "bd_dot": (8 * B + 19, 32)}
    for unit in UNITS:
        text = (RTL / file_name(unit, B)).read_text()
        assert re.search(rf"^module {unit}\(", text, re.M)
        if unit == "bd_decoder":
            assert re.search(rf"input \[{4 * B - 1}:0\] codes;", text)
            assert re.search(r"input \[3:0\] dialect;", text)
            assert re.search(rf"output \[{5 * B - 1}:0\] values;", text)
            continue
        win, wout = width[unit]
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
    """The waivers cover Amaranth's idioms only: a width mismatch still fails."""
    (tmp_path / "bd_bad_b16.v").write_text(
        "module bd_bad(input wire [3:0] a, output wire [7:0] y);\n  assign y = a;\nendmodule\n")
    assert not lint(tmp_path, quiet=True)


def test_cli_help(capsys):
    r = run_cli("--help")
    assert r.returncode == 0 and "usage" in r.stdout.lower()
    for args in (["verilog", "--help"], ["lint", "--help"]):
        with pytest.raises(SystemExit) as exc:
            main(args)
        assert exc.value.code == 0
        assert "usage" in capsys.readouterr().out.lower()
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code != 0
