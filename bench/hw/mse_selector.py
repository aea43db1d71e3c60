"""Exhaustive MSE dialect selection in hardware (SPEC 5), for the area comparison with the online
two-stage selection of SPEC 4 (the paper's argument for two-stage selection). Benchmark hardware:
``bench/synth.py`` and ``bench/verilator_throughput.py`` build it, the product does not.

- :class:`MseCosts` (combinational): ``data`` (B FP16 elements) and ``exp`` (the block's shared
  exponent E) in; the 16 exact costs out. All 16 dialects are tried in parallel: for each dialect
  every element's nearest index, its squared error, the sum over the block.
- :class:`MseSelection`: the costs as the first half of the quantizer frame's dialect selection
  (:class:`bd_hw.quantizer.Selection`), the argmin over dialects (ties to the lowest id,
  :func:`bd_hw.arith.tree_argmin`) as the second.
- :class:`BDMseQuantizer`: ``bd_quantizer``'s frame (:class:`bd_hw.quantizer.BDQuantizer`) with
  :class:`MseSelection`: the drop-in hardware equivalent of ``golden.bd.quantize(x, method="mse")``.

Arithmetic (SPEC 5, exact integers). For an element with ``ex >= E - 1`` (the others round alike in
every dialect and are left out of the cost), ``X = M * 2^(ex - E + 1)`` is its magnitude in units of
``1/256`` half-unit: ``M`` or ``2M``, so ``1024 <= X < 4096``. Its nearest index in dialect ``d``
(ties to the larger magnitude, values above the largest clamp to 7) counts the midpoints it reaches,
``X >= 128 * MIDPOINTS[d][i]`` (midpoints are in quarter-units), and its error is
``X - 256 * FORMATBOOK[d][idx]``. Flushed and non-finite elements have magnitude 0, index 0 and
error 0 in every dialect, so they simply drop out.
"""
from __future__ import annotations

import functools

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from bd_hw.arith import tree_argmin, tree_sum
from bd_hw.quantizer import BDQuantizer, Selection
from golden.formatbook import FORMATBOOK_ROWS, MIDPOINTS
from golden.spec import (EXP_BITS, EXP_FIELD_NONFINITE, FP16_BITS, FP16_MAN_BITS, LEVELS, MSE_UNIT,
                         NUM_DIALECTS)

__all__ = ["MseCosts", "MseSelection", "BDMseQuantizer", "X_BITS", "HALF_UNIT", "MIDPOINT_UNIT",
           "max_abs_error"]

# SPEC 5: X = M * 2^(ex - E + 1) with the 11-bit significand M and ex - E + 1 in {0, 1}.
X_BITS = 12
HALF_UNIT = MSE_UNIT              # one half-unit in units of X
MIDPOINT_UNIT = MSE_UNIT // 2     # one quarter-unit (the unit of MIDPOINTS) in units of X
X_MIN = 1 << (X_BITS - 2)         # 1024: smallest X of an element that enters the cost
MAN_BITS = FP16_MAN_BITS


@functools.cache
def max_abs_error() -> int:
    """Largest ``|X - 256 v|`` over every dialect and every ``X`` that enters a cost."""
    worst = 0
    for d in range(NUM_DIALECTS):
        base, thresholds = _nearest_index_thresholds(d)
        for x in range(X_MIN, 1 << X_BITS):
            idx = base + sum(x >= t for t in thresholds)
            worst = max(worst, abs(x - HALF_UNIT * FORMATBOOK_ROWS[d][idx]))
    return worst


def _nearest_index_thresholds(dialect: int) -> tuple[int, list[int]]:
    """For elements with ``X >= X_MIN``: the index they reach for sure (midpoints at or below
    ``X_MIN``) and the thresholds, in units of X, that still have to be compared."""
    mids = [MIDPOINT_UNIT * v for v in MIDPOINTS[dialect].tolist()]
    base = sum(1 for t in mids if t <= X_MIN)
    return base, [t for t in mids if t > X_MIN]


def cost_bits(B: int) -> int:
    """Width of one exact cost of a block of ``B`` elements."""
    return (B * max_abs_error() ** 2).bit_length()



def cost_lane(m: Module, x, exp, k: int):
    """SPEC 5 for lane ``k``: ``(X, included)``, X = M * 2^(ex - E + 1) (M or 2M, units of 1/256
    half-unit) and whether the element enters the cost (normal and ex >= E - 1)."""
    ex, man = x[MAN_BITS:MAN_BITS + EXP_BITS], x[:MAN_BITS]
    gap = Signal(EXP_BITS + 1, name=f"gap{k}")          # E - ex, modulo 64
    included = Signal(name=f"in{k}")
    xk = Signal(X_BITS, name=f"x{k}")
    normal = (ex != 0) & (ex != EXP_FIELD_NONFINITE)
    m.d.comb += [
        gap.eq(exp - ex),
        included.eq(normal & ((gap == 0) | (gap == 1))),
        xk.eq(Mux(gap == 0, Cat(0, man, 1), Cat(man, 1))),   # M or 2M, M = 1024 + man
    ]
    return xk, included

class MseCosts(wiring.Component):
    """The 16 exact SPEC 5 costs of one block (combinational; see the module docstring).

    Ports: ``data`` in, B FP16 elements (element k at ``[16k +: 16]``); ``exp`` in 5, the block's E
    (``ExponentMax`` of the same data); ``costs`` out, 16 costs of :func:`cost_bits` bits (dialect d
    at ``[w*d +: w]``).
    """

    def __init__(self, B: int = 32):
        self.B = B
        self.err_bits = max_abs_error().bit_length()
        self.cost_bits = cost_bits(B)
        super().__init__({
            "data": In(data.ArrayLayout(FP16_BITS, self.B)),
            "exp": In(EXP_BITS),
            "costs": Out(data.ArrayLayout(self.cost_bits, NUM_DIALECTS)),
        })

    def elaborate(self, platform):
        m = Module()
        B = self.B
        xs = [cost_lane(m, self.data[k], self.exp, k) for k in range(B)]

        for d in range(NUM_DIALECTS):
            base, thresholds = _nearest_index_thresholds(d)
            values = FORMATBOOK_ROWS[d]
            squares = []
            for k, (xk, included) in enumerate(xs):
                idx = Signal(range(LEVELS), name=f"d{d}_idx{k}")
                m.d.comb += idx.eq(base + tree_sum(xk >= t for t in thresholds) if thresholds
                                   else base)
                target = Signal(X_BITS, name=f"d{d}_v{k}")
                with m.Switch(idx):
                    for j in range(base, LEVELS):
                        with m.Case(j):
                            m.d.comb += target.eq(HALF_UNIT * values[j])
                err = Signal(self.err_bits, name=f"d{d}_err{k}")   # |X - 256 v|
                m.d.comb += err.eq(Mux(xk >= target, xk - target, target - xk))
                sq = Signal(2 * self.err_bits, name=f"d{d}_sq{k}")
                m.d.comb += sq.eq(Mux(included, err * err, 0))
                squares.append(sq)
            m.d.comb += self.costs[d].eq(tree_sum(squares))

        return m


class MseSelection(Selection):
    """SPEC 5 as the quantizer frame's selection: the 16 costs (stage 1), their argmin (stage 2)."""

    method = "mse"
    costs_unit = MseCosts      # the component computing the 16 costs

    def state_shape(self, B: int):
        return data.ArrayLayout(cost_bits(B), NUM_DIALECTS)

    def first(self, m, B, elements, exp, q):
        m.submodules.costs = costs = self.costs_unit(B)
        m.d.comb += [costs.data.eq(elements), costs.exp.eq(exp)]
        return costs.costs

    def second(self, m, B, state, q):
        return tree_argmin(state[d] for d in range(NUM_DIALECTS))


class BDMseQuantizer(BDQuantizer):
    """A ``bd_quantizer`` whose dialect is the SPEC 5 MSE choice; same streams, payloads and
    latency (4): exponent max | 16 costs (and q) | argmin | element indices."""

    def __init__(self, B: int = 32):
        super().__init__(B, selection=MseSelection())
