"""Benchmark-only hardware, registered like the product's units (:class:`bd_hw.units.Unit`).

:data:`BENCH_UNITS` lists the comparison hardware by the names the benchmark and synthesis reports
use; :data:`ALL_UNITS` is the product's registry followed by them, for command lines that accept
both (``--units bd_quantizer,bd_mse_quantizer``).

=========================== ======== ======================================================
name                        kind     builder
=========================== ======== ======================================================
``bd_mse_quantizer``        quantizer ``BDMseQuantizer(B)``: bd_quantizer's frame, MSE selection
``sel_two_stage``           selector ``RegisteredSelector("two_stage", B)`` (rounding stage 1)
``sel_two_stage_trunc``     selector ``RegisteredSelector("two_stage_trunc", B)``
``sel_mse``                 selector ``RegisteredSelector("mse", B)`` (16 dialects in parallel)
``sel_mse_shared``          selector ``RegisteredSelector("mse_shared", B)`` (shared terms)
``bd_mse_shared_quantizer`` quantizer ``BDSharedMseQuantizer(B)``: the frame, shared-term MSE
``mac_bd`` ... ``mac_int8`` mac      ``make_mac(fmt, B)``: block MACs of BlockDialect and baselines
=========================== ======== ======================================================
"""
from __future__ import annotations

from bd_hw.units import UNITS, Unit

__all__ = ["BENCH_UNITS", "ALL_UNITS"]


def _mse_quantizer(B):
    from .mse_selector import BDMseQuantizer
    return BDMseQuantizer(B)


def _mse_shared_quantizer(B):
    from .mse_shared import BDSharedMseQuantizer
    return BDSharedMseQuantizer(B)


def _selector(B, method):
    from .selectors import RegisteredSelector
    return RegisteredSelector(method, B)


def _mac(B, fmt):
    from .baseline_macs import make_mac
    return make_mac(fmt, B)


BENCH_UNITS: dict[str, Unit] = {u.name: u for u in (
    Unit("bd_mse_quantizer", "quantizer", _mse_quantizer,
         summary="bd_quantizer's frame with the exhaustive MSE selection (SPEC 5, method mse)"),
    Unit("sel_two_stage", "selector", _selector, {"method": "two_stage"},
         summary="two-stage dialect selector, rounding stage 1, registered in and out"),
    Unit("sel_two_stage_trunc", "selector", _selector, {"method": "two_stage_trunc"},
         summary="two-stage dialect selector, truncating stage 1, registered in and out"),
    Unit("sel_mse", "selector", _selector, {"method": "mse"},
         summary="MSE dialect selector (16 dialects in parallel), registered in and out"),
    Unit("sel_mse_shared", "selector", _selector, {"method": "mse_shared"},
         summary="MSE dialect selector from shared terms (bench/hw/mse_shared.py), registered in "
                 "and out"),
    Unit("bd_mse_shared_quantizer", "quantizer", _mse_shared_quantizer,
         summary="bd_quantizer's frame with the shared-term MSE selection (SPEC 5, method mse)"),
    *(Unit(f"mac_{fmt}", "mac", _mac, {"fmt": fmt}, summary=f"{fmt} block MAC")
      for fmt in ("bd", "int4", "fp4", "fp6", "int8")),
)}

ALL_UNITS: dict[str, Unit] = {**UNITS, **BENCH_UNITS}
