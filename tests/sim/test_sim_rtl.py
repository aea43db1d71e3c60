"""Reduced cocotb + Verilator simulation of every emitted unit against the golden model.

Each case builds one ``rtl/bd_<unit>_b<B>.v`` (reusing ``sim_build/`` when nothing changed) and
runs its testbench at ``quick`` depth, the same run as ``make sim-quick``; real SmolLM2 blocks are
part of the quantizer and dot-product stimulus.
"""
from __future__ import annotations

import pytest

from tb import runner

pytestmark = pytest.mark.sim

# Every unit at every block size: about 2.5 minutes from a clean sim_build/ on an idle 2-core
# machine, builds included (quantizer B = 64 is the largest compile).
CASES = [(unit, block) for unit in runner.UNITS for block in runner.BLOCKS]

# cocotb tests per testbench, and the fewest input vectors a quick run must check.
EXPECTED_TESTS = {"decoder": 2, "quantizer": 3, "dot": 3}
MIN_VECTORS = {"decoder": 256 + 200, "quantizer": 600, "dot": 2000}
REAL_TAGS = {"quantizer": ("real/activation", "real/weight"), "dot": ("real/",)}


@pytest.mark.parametrize("unit,block", CASES, ids=[f"{u}-b{b}" for u, b in CASES])
def test_sim_unit_matches_golden(unit, block, tmp_path):
    args = runner.parse_args(["--quick", "--out", str(tmp_path)])
    run = runner.run_unit(unit, block, args, waves=False)
    problems = [run.error] if run.error else []
    problems += run.failures
    assert not problems, "\n".join(problems)
    assert run.tests == EXPECTED_TESTS[unit]
    assert run.failed == 0
    assert run.mismatches == 0
    assert run.vectors >= MIN_VECTORS[unit], f"only {run.vectors} vectors were checked"
    tags = {tag for record in run.details for tag in record.get("tags", {})}
    for wanted in REAL_TAGS.get(unit, ()):
        assert any(tag.startswith(wanted) for tag in tags), f"no {wanted!r} stimulus reached the scoreboard"
    if unit != "decoder":
        assert run.blocks_per_cycle == 1.0
