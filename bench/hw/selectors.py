"""Dialect selectors alone, for the area comparison of two-stage against MSE selection.

A selector is the two selection stages of the quantizer frame (:class:`bd_hw.quantizer.Selection`)
without the frame: :class:`DialectSelector` chains them combinationally (``data``, ``exp`` in;
``dialect`` out), and :class:`RegisteredSelector` registers its inputs and output, the frame in which
``bench/synth.py`` synthesises every selector alike. :data:`SELECTIONS` names them by the
``golden.bd.quantize`` method they reproduce.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from bd_hw.layouts import reject, unit_block_size
from bd_hw.quantizer import SignificandShifter, TwoStageSelection
from golden.spec import DIALECT_BITS, EXP_BITS, FP16_BITS

from .mse_selector import MseSelection
from .mse_shared import SharedMseSelection

__all__ = ["SELECTIONS", "check_method", "DialectSelector", "RegisteredSelector"]

SELECTIONS = {
    "two_stage": lambda: TwoStageSelection("round"),        # SPEC 4.2 [revised], the default
    "two_stage_trunc": lambda: TwoStageSelection("trunc"),
    "mse": MseSelection,                                    # SPEC 5, literal: 16 dialects in parallel
    "mse_shared": SharedMseSelection,                       # SPEC 5 from shared terms (mse_shared.py)
}


def check_method(method) -> str:
    """Return ``method`` if it names a selection of :data:`SELECTIONS`, else raise ``ValueError``."""
    if method not in SELECTIONS:
        raise ValueError(f"method must be one of {', '.join(SELECTIONS)}, got {method!r}")
    return method


class DialectSelector(wiring.Component):
    """Both stages of the ``method`` selection, combinational: ``data`` (B FP16) and ``exp`` (the
    block's E) in, ``dialect`` out (0 for a zero block, SPEC 3)."""

    def __init__(self, method: str = "two_stage", B: int = 32):
        try:
            self.method = check_method(method)
        except ValueError:
            reject(self)
            raise
        self.B = unit_block_size(B, self)
        super().__init__({
            "data": In(data.ArrayLayout(FP16_BITS, self.B)),
            "exp": In(EXP_BITS),
            "dialect": Out(DIALECT_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        sel = SELECTIONS[self.method]()
        m.submodules.shifter = shifter = SignificandShifter(self.B)
        m.d.comb += [shifter.data.eq(self.data), shifter.exp.eq(self.exp)]
        state = sel.first(m, self.B, self.data, self.exp, shifter.q)
        dialect = sel.second(m, self.B, state, shifter.q)
        m.d.comb += self.dialect.eq(Mux(self.exp.any(), dialect, 0))
        return m


class RegisteredSelector(DialectSelector):
    """A :class:`DialectSelector` with registered ``data``/``exp`` inputs and a registered
    ``dialect`` output (latency 2), the frame used for synthesis."""

    def __init__(self, method: str = "mse", B: int = 32):
        super().__init__(method, B)

    def elaborate(self, platform):
        m = Module()
        m.submodules.selector = sel = DialectSelector(self.method, self.B)
        m.d.sync += [sel.data.eq(self.data), sel.exp.eq(self.exp), self.dialect.eq(sel.dialect)]
        return m
