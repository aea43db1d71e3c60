"""What is synthesised: the product units of the ``bd_hw`` registry and the comparison units that
exist only for these figures (block MACs, dialect selectors, the whole MSE quantizer).

Every unit is built at block size ``B`` by ``build(B)``; a unit may fix its block sizes (``blocks``)
and the FPGA families it is placed on (``families``). Units that are not ``default`` run only when
named (``--units``); their last figures are carried over from the committed report.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from amaranth.lib import wiring

__all__ = ["SynthUnit", "UNITS", "UNIT_NAMES", "FAMILIES", "unit_by_name"]

FAMILIES = ("ice40", "ecp5")


@dataclass(frozen=True)
class SynthUnit:
    name: str                 # report key; the Verilog top module is "<name>_b<B>"
    title: str
    group: str                # "product", "mac", "selector", "quantizer"
    build: Callable[[int], wiring.Component]
    default: bool = True      # part of a run without --units
    heavy: bool = False       # started first when units run in parallel (far longest synthesis)
    blocks: tuple[int, ...] | None = None        # only these block sizes (None: any)
    families: tuple[str, ...] = FAMILIES          # FPGA families it is mapped and placed on
    info: dict = field(default_factory=dict)      # unit parameters quoted in the report (e.g. lanes)

    def top(self, B: int) -> str:
        return f"{self.name}_b{B}"


def _product(unit: str, **params):
    def build(B: int):
        from bd_hw.__main__ import build as build_unit
        return build_unit(unit, B, **params)
    return build


def _mac(fmt: str):
    def build(B: int):
        from bd_hw.baseline_macs import make_mac
        return make_mac(fmt, B)
    return build


def _selector(method: str):
    def build(B: int):
        from bd_hw.mse_selector import RegisteredSelector
        return RegisteredSelector(method, B)
    return build


def _shared_mse_selector(B: int):
    from bench.hw.mse_shared import RegisteredSharedMseSelector
    return RegisteredSharedMseSelector(B)


def _mse_quantizer(B: int):
    from bd_hw.mse_selector import BDMseQuantizer
    return BDMseQuantizer(B)


UNITS: tuple[SynthUnit, ...] = (
    SynthUnit("bd_decoder", "bd_decoder (combinational)", "product", _product("bd_decoder")),
    SynthUnit("bd_quantizer", "bd_quantizer (two-stage, SPEC 4)", "product",
              _product("bd_quantizer")),
    SynthUnit("bd_dot", "bd_dot (block dot product + FP32)", "product", _product("bd_dot")),
    SynthUnit("mac_bd", "BlockDialect MAC", "mac", _mac("bd")),
    SynthUnit("mac_int4", "INT4 MAC", "mac", _mac("int4")),
    SynthUnit("mac_fp4", "FP4 E2M1 MAC", "mac", _mac("fp4")),
    SynthUnit("mac_fp6", "FP6 E2M3 MAC", "mac", _mac("fp6")),
    SynthUnit("mac_int8", "INT8 MAC", "mac", _mac("int8")),
    SynthUnit("sel_two_stage", "two-stage dialect selector", "selector", _selector("two_stage")),
    SynthUnit("sel_mse_shared", "MSE dialect selector (shared terms, bench/hw/mse_shared.py)",
              "selector", _shared_mse_selector),
    SynthUnit("sel_mse", "MSE dialect selector (SPEC 5 literally: 16 dialects in parallel)",
              "selector", _selector("mse"), default=False, heavy=True),
    SynthUnit("bd_mse_quantizer", "MSE quantizer (bd_quantizer with the literal MSE selector)",
              "quantizer", _mse_quantizer, default=False, heavy=True),
)
UNIT_NAMES = tuple(u.name for u in UNITS)


def unit_by_name(name: str) -> SynthUnit:
    for unit in UNITS:
        if unit.name == name:
            return unit
    raise ValueError(f"unit must be one of {', '.join(UNIT_NAMES)}, not {name!r}")
