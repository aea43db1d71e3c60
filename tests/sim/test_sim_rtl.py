"""Reduced cocotb + Verilator simulation of every emitted unit against the golden model.

Each case builds one ``rtl/<unit>_b<B>.v`` of the registry (reusing ``sim_build/`` when nothing
changed) and runs its testbench at ``quick`` depth, the same run as ``make sim-quick``; real SmolLM2
blocks are part of the quantizer and dot-product stimulus.
"""
from __future__ import annotations

import pytest

from bd_hw import units
from tb import runner

pytestmark = pytest.mark.sim

# Every unit at every block size: about 2.5 minutes from a clean sim_build/ on an idle 2-core
# machine, builds included (quantizer B = 64 is the largest compile).
# bd_linear has its own reduced run and figures: tests/sim/test_sim_linear.py.
CASES = [(u.name, block) for u, block in units.emitted() if u.kind != "linear"]

# cocotb tests per testbench, and the fewest input vectors a quick run must check.
EXPECTED_TESTS = {"decoder": 2, "quantizer": 3, "dot": 3}
MIN_VECTORS = {"decoder": 256 + 200, "quantizer": 600, "dot": 2000}
REAL_TAGS = {"quantizer": ("real/activation", "real/weight"), "dot": ("real/",)}


@pytest.mark.parametrize("unit,block", CASES, ids=[f"{u}-b{b}" for u, b in CASES])
def test_sim_unit_matches_golden(unit, block, tmp_path):
    kind = units.get(unit).kind
    args = runner.parse_args(["--quick", "--out", str(tmp_path)])
    run = runner.run_unit(unit, block, args, waves=False)
    problems = [run.error] if run.error else []
    problems += run.failures
    assert not problems, "\n".join(problems)
    assert run.tests == EXPECTED_TESTS[kind]
    assert run.failed == 0
    assert run.mismatches == 0
    assert run.vectors >= MIN_VECTORS[kind], f"only {run.vectors} vectors were checked"
    tags = {tag for record in run.details for tag in record.get("tags", {})}
    for wanted in REAL_TAGS.get(kind, ()):
        assert any(tag.startswith(wanted) for tag in tags), f"no {wanted!r} stimulus reached the scoreboard"
    if units.get(unit).clocked:
        assert run.blocks_per_cycle == 1.0
