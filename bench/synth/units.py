"""What is synthesised: every unit of the registries, the product's (:data:`bd_hw.units.UNITS`)
followed by the benchmark hardware (:data:`bench.hw.units.BENCH_UNITS`), with what only synthesis
needs to know about each.

A unit is built at block size ``B`` with its registry parameters (``Unit.build(B)``) and only at
the block sizes its registry entry lists. Units in :data:`ON_REQUEST` run only when named
(``--units``): they take most of a run's time, and their last figures are carried over from the
previous report with the date they were measured. Units of a kind in :data:`FAMILIES` are placed
only on the families given there.
"""
from __future__ import annotations

from dataclasses import dataclass

from bd_hw.units import Unit
from bench.hw.baseline_macs import SMALLEST, construction_key
from bench.hw.units import ALL_UNITS, BENCH_UNITS

__all__ = ["SynthUnit", "UNITS", "UNIT_NAMES", "FAMILIES", "LUT_PRODUCT_KINDS", "ON_REQUEST",
           "unit_by_name"]

ALL_FAMILIES = ("ice40", "ecp5")

# Run only on request, so that a default run stays near a quarter of an hour on 2 cores:
# - the literal MSE selector and the whole quantizer built on it: about 180 000 two-input gates per
#   16 lanes, half an hour of the WebAssembly yosys each;
# - the shared-term MSE selector (over 10 minutes of iCE40 mapping) and its whole quantizer, which
#   adds nothing the selector comparison does not show;
# - the engine's other builds (about 10 minutes of ECP5 mapping and placement each): the default
#   run places bd_linear_n4, the engine of SPEC 11's figures (the wider engines, N = 8 and 16,
#   take longer still);
# - every MAC construction but each format's smallest block MAC (bench.hw.baseline_macs.SMALLEST,
#   its lane construction and summation):
#   every single MAC and the other block MACs, whose figures change only with the constructions;
# - the engine builds of the scaling and products tables (bench.hw.units: N = 16 alone takes
#   about an hour on the ECP5);
# - the decoder and dot units built with the other decoder construction (bench.hw.units, _anf).
ON_REQUEST = frozenset({"sel_mse", "bd_mse_quantizer", "sel_mse_shared", "bd_mse_shared_quantizer",
                        "bd_linear_n2", "bd_linear_fast_n4", "bd_linear_n8", "bd_linear_n16",
                        "bd_decoder_anf", "bd_dot_anf", "bd_dot_fast_anf"}
                       | {u.name for u in ALL_UNITS.values() if u.kind == "mac" and (
                           u.name.startswith("mac1_")
                           or SMALLEST[u.params["fmt"]] != construction_key(
                               u.params["construction"], u.params.get("summation", "tree")))}
                       | set(BENCH_UNITS).intersection(u.name for u in ALL_UNITS.values()
                                                       if u.kind == "linear"))
# Started first when units run in parallel: the longest syntheses (and the engines, see FAMILIES).
HEAVY = frozenset({"sel_mse", "bd_mse_quantizer"})
# Kinds of unit whose narrow products are mapped to LUTs and only their wide multipliers to DSP
# blocks (flows.DSP_MIN_WIDTH): the comparison MACs and scale paths. Their lane products are 2x2 to
# 8x8 bits; yosys would give each lane an 18x18 MULT18X18D on the ECP5, which no designer does for a
# 2x2 product and which leaves their LUT4 and Fmax incomparable with the iCE40 HX8K's (no DSP).
# NVFP4's wide scale products (the block sum times the scale product, 13x9; the FP32 significands'
# 24x24) stay in DSP blocks, where a designer puts them.
LUT_PRODUCT_KINDS = frozenset({"mac", "scale"})
# Kinds of unit that cannot fit every part: the matrix-vector engine (SPEC 11) at B = 32, N = 4
# holds four bd_dot units and a bd_quantizer, several times the iCE40 HX8K's 7680 logic cells.
FAMILIES = {"linear": ("ecp5",)}


@dataclass(frozen=True)
class SynthUnit:
    unit: Unit                                  # the registry entry

    @property
    def name(self) -> str:
        return self.unit.name

    @property
    def title(self) -> str:
        return self.unit.summary or self.unit.name

    @property
    def default(self) -> bool:
        return self.name not in ON_REQUEST

    @property
    def heavy(self) -> bool:
        return self.name in HEAVY or self.unit.kind in FAMILIES

    @property
    def lut_products(self) -> bool:
        """Narrow products in LUT fabric, wide ones only in DSP blocks (:data:`LUT_PRODUCT_KINDS`)."""
        return self.unit.kind in LUT_PRODUCT_KINDS

    @property
    def families(self) -> tuple[str, ...]:
        return FAMILIES.get(self.unit.kind, ALL_FAMILIES)

    @property
    def blocks(self) -> tuple[int, ...]:
        return self.unit.blocks

    @property
    def info(self) -> dict:
        """Registry parameters quoted in the report: the engine's lane count for its bandwidth."""
        lanes = self.unit.params.get("N", self.unit.params.get("lanes"))
        return {"lanes": lanes} if lanes else {}

    def build(self, B: int):
        return self.unit.build(B)

    def top(self, B: int) -> str:
        return self.unit.module(B)


UNITS: tuple[SynthUnit, ...] = tuple(SynthUnit(u) for u in ALL_UNITS.values())
UNIT_NAMES = tuple(u.name for u in UNITS)


def unit_by_name(name: str) -> SynthUnit:
    for unit in UNITS:
        if unit.name == name:
            return unit
    raise ValueError(f"unit must be one of {', '.join(UNIT_NAMES)}, not {name!r}")
