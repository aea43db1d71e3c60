"""Exhaustive MSE dialect selection in hardware (SPEC 5), for the area comparison with the online
two-stage selector of SPEC 4 (the paper's argument for two-stage selection).

Units:

- :class:`MseDialectSelector` (combinational): ``data`` (B FP16 elements) and ``exp`` (the block's
  shared exponent E) in; ``dialect`` out. All 16 dialects are tried in parallel: for each dialect
  every element's nearest index, its squared error, the sum over the block, then an argmin with
  ties to the lowest dialect id.
- :class:`TwoStageSelector` (combinational): the same ports, built from the two-stage quantizer's
  own parts (:class:`~bd_hw.quantizer.SignificandShifter`, :class:`~bd_hw.arith.MaxTree` for the
  pair, :class:`~bd_hw.quantizer.RangeCounter`), so the two selectors can be compared alone.
- :class:`RegisteredSelector`: either selector with its inputs and output registered, the frame in
  which both are synthesised.
- :class:`BDMseQuantizer`: a whole quantizer with ``bd_quantizer``'s streams and payloads
  (:mod:`bd_hw.layouts`) whose dialect comes from the MSE selector (SPEC 5) instead of SPEC 4's
  stages 1-2; it is the drop-in hardware equivalent of ``golden.bd.quantize(x, method="mse")``.

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
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.formatbook import DIALECT_BITS, EXP_BITS, FORMATBOOK_ROWS, LEVELS, MIDPOINTS, NUM_DIALECTS

from .arith import MaxTree, tree_sum
from .layouts import FP16_BITS, check_block_size, quantizer_input_layout, quantizer_output_layout
from .pipeline import pipeline_control, take
from .quantizer import (EX_NONFINITE, MAN_BITS, PAIR_BITS, Q_BITS, ExponentMax, IndexMapper,
                        RangeCounter, SignificandShifter)

__all__ = ["MseDialectSelector", "TwoStageSelector", "RegisteredSelector", "BDMseQuantizer",
           "SELECTORS", "check_method",
           "X_BITS", "HALF_UNIT", "MIDPOINT_UNIT"]

# SPEC 5: X = M * 2^(ex - E + 1) with the 11-bit significand M and ex - E + 1 in {0, 1}.
X_BITS = 12
HALF_UNIT = 256          # one half-unit in units of X
MIDPOINT_UNIT = 128      # one quarter-unit (the unit of MIDPOINTS) in units of X
X_MIN = 1 << (X_BITS - 2)  # 1024: smallest X of an element that enters the cost


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


class MseDialectSelector(wiring.Component):
    """SPEC 5 dialect choice of one block (combinational; see the module docstring).

    Ports: ``data`` in, B FP16 elements (element k at ``[16k +: 16]``); ``exp`` in 5, the block's E
    (``ExponentMax`` of the same data); ``dialect`` out 4; ``costs`` out, 16 exact costs (dialect d at
    ``[w*d +: w]``), exposed for tests and reports.
    """

    def __init__(self, B: int = 32):
        self.B = check_block_size(B)
        self.err_bits = max_abs_error().bit_length()
        self.cost_bits = (self.B * max_abs_error() ** 2).bit_length()
        super().__init__({
            "data": In(data.ArrayLayout(FP16_BITS, self.B)),
            "exp": In(EXP_BITS),
            "dialect": Out(DIALECT_BITS),
            "costs": Out(data.ArrayLayout(self.cost_bits, NUM_DIALECTS)),
        })

    def elaborate(self, platform):
        m = Module()
        B = self.B
        # Per element: X and whether it enters the cost (normal and ex >= E - 1).
        xs = []
        for k in range(B):
            x = self.data[k]
            ex, man = x[MAN_BITS:MAN_BITS + EXP_BITS], x[:MAN_BITS]
            gap = Signal(EXP_BITS + 1, name=f"gap{k}")          # E - ex, modulo 64
            included = Signal(name=f"in{k}")
            xk = Signal(X_BITS, name=f"x{k}")
            normal = (ex != 0) & (ex != EX_NONFINITE)
            m.d.comb += [
                gap.eq(self.exp - ex),
                included.eq(normal & ((gap == 0) | (gap == 1))),
                # M = 1024 + man; doubled when ex == E.
                xk.eq(Mux(gap == 0, Cat(0, man, 1), Cat(man, 1))),
            ]
            xs.append((xk, included))

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

        # Argmin over dialects, ties to the lowest id: a balanced tree that keeps the left
        # (lower-id) candidate unless the right one is strictly smaller.
        level = [(self.costs[d], d) for d in range(NUM_DIALECTS)]
        depth = 0
        while len(level) > 1:
            nxt = []
            for j in range(0, len(level), 2):
                (cl, il), (cr, ir) = level[j], level[j + 1]
                c = Signal(self.cost_bits, name=f"min{depth}_{j // 2}_cost")
                i = Signal(DIALECT_BITS, name=f"min{depth}_{j // 2}_id")
                take_right = cr < cl
                m.d.comb += [c.eq(Mux(take_right, cr, cl)), i.eq(Mux(take_right, ir, il))]
                nxt.append((c, i))
            level = nxt
            depth += 1
        # SPEC 3: a zero block (E == 0) is dialect 0; every cost is then 0 and the argmin gives 0
        # already, the Mux states the rule rather than relying on that.
        m.d.comb += self.dialect.eq(Mux(self.exp == 0, 0, level[0][1]))
        return m


class TwoStageSelector(wiring.Component):
    """SPEC 4 stages 1-2 (the two-stage quantizer's own parts): ``data``, ``exp`` in; ``dialect`` out."""

    def __init__(self, B: int = 32):
        self.B = check_block_size(B)
        super().__init__({
            "data": In(data.ArrayLayout(FP16_BITS, self.B)),
            "exp": In(EXP_BITS),
            "dialect": Out(DIALECT_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.shifter = shifter = SignificandShifter(self.B)
        m.submodules.qmax = qmax = MaxTree(Q_BITS, self.B)
        m.submodules.ranges = ranges = RangeCounter(self.B)
        m.d.comb += [
            shifter.data.eq(self.data), shifter.exp.eq(self.exp),
            qmax.values.eq(shifter.q),
            ranges.q.eq(shifter.q),
            ranges.pair.eq(~qmax.max[1:1 + PAIR_BITS]),   # SPEC 4.2: p = 15 - (qmax >> 1)
            self.dialect.eq(Mux(self.exp == 0, 0, ranges.dialect)),
        ]
        return m


SELECTORS = {"mse": MseDialectSelector, "two_stage": TwoStageSelector}


def check_method(method: str) -> str:
    """Return ``method`` if it names a selector of :data:`SELECTORS`, else raise ``ValueError``."""
    if method not in SELECTORS:
        raise ValueError(f"method must be one of {sorted(SELECTORS)}, not {method!r}")
    return method


class RegisteredSelector(wiring.Component):
    """``method`` ("mse" or "two_stage") selector with registered ``data``/``exp`` inputs and a
    registered ``dialect`` output (latency 2), the frame used for synthesis."""

    def __init__(self, method: str = "mse", B: int = 32):
        self.method = check_method(method)
        self.B = check_block_size(B)
        super().__init__({
            "data": In(data.ArrayLayout(FP16_BITS, self.B)),
            "exp": In(EXP_BITS),
            "dialect": Out(DIALECT_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.selector = sel = SELECTORS[self.method](self.B)
        m.d.sync += [sel.data.eq(self.data), sel.exp.eq(self.exp), self.dialect.eq(sel.dialect)]
        return m


class BDMseQuantizer(wiring.Component):
    """A ``bd_quantizer`` whose dialect is the SPEC 5 MSE choice; same streams and payloads.

    **Latency: 4 clock cycles**, one more stage of logic than ``bd_quantizer`` would need but the
    same count: exponent max | 16 costs (and q) | argmin | element indices. The valid/ready control is :func:`bd_hw.pipeline.pipeline_control`, as in
    ``bd_quantizer``.
    """

    LATENCY = 4

    def __init__(self, B: int = 32):
        self.B = check_block_size(B)
        super().__init__({
            "i": In(stream.Signature(quantizer_input_layout(self.B))),
            "o": Out(stream.Signature(quantizer_output_layout(self.B))),
        })

    def elaborate(self, platform):
        m = Module()
        B = self.B
        valid, load = pipeline_control(m, self.LATENCY, self.i.valid, self.i.ready, self.o.ready)
        m.d.comb += self.o.valid.eq(valid[-1])

        def stage(n):
            return take(valid, load, self.i.valid, n)

        def reg(shape, name):
            return Signal(shape, name=name, reset_less=True)

        # Stage 0: shared exponent and invalid flag.
        m.submodules.exp_max = exp_max = ExponentMax(B)
        m.d.comb += exp_max.data.eq(self.i.payload.data)
        s0_data = reg(data.ArrayLayout(FP16_BITS, B), "s0_data")
        s0_exp = reg(EXP_BITS, "s0_exp")
        s0_invalid = reg(1, "s0_invalid")
        with m.If(stage(0)):
            m.d.sync += [s0_data.eq(self.i.payload.data), s0_exp.eq(exp_max.exp),
                         s0_invalid.eq(exp_max.invalid)]

        # Stages 1-2: the selector, cut into costs (registered in stage 1, q alongside) and the
        # argmin (stage 2).
        m.submodules.selector = sel = MseDialectSelector(B)
        m.submodules.shifter = shifter = SignificandShifter(B)
        m.d.comb += [sel.data.eq(s0_data), sel.exp.eq(s0_exp),
                     shifter.data.eq(s0_data), shifter.exp.eq(s0_exp)]
        s1_q = reg(data.ArrayLayout(Q_BITS, B), "s1_q")
        s1_sign = reg(B, "s1_sign")
        s1_exp = reg(EXP_BITS, "s1_exp")
        s1_invalid = reg(1, "s1_invalid")
        s1_costs = reg(data.ArrayLayout(sel.cost_bits, NUM_DIALECTS), "s1_costs")
        with m.If(stage(1)):
            m.d.sync += [
                s1_q.eq(shifter.q),
                s1_sign.eq(Cat(s0_data[k][FP16_BITS - 1] for k in range(B))),
                s1_exp.eq(s0_exp), s1_invalid.eq(s0_invalid),
                s1_costs.eq(sel.costs),
            ]
        # Argmin of the registered costs, ties to the lowest id.
        level = [(s1_costs[d], d) for d in range(NUM_DIALECTS)]
        while len(level) > 1:
            level = [(Mux(cr < cl, cr, cl), Mux(cr < cl, ir, il))
                     for (cl, il), (cr, ir) in zip(level[0::2], level[1::2])]
        s2_q = reg(data.ArrayLayout(Q_BITS, B), "s2_q")
        s2_sign = reg(B, "s2_sign")
        s2_exp = reg(EXP_BITS, "s2_exp")
        s2_invalid = reg(1, "s2_invalid")
        s2_dialect = reg(DIALECT_BITS, "s2_dialect")
        with m.If(stage(2)):
            m.d.sync += [s2_q.eq(s1_q), s2_sign.eq(s1_sign), s2_exp.eq(s1_exp),
                         s2_invalid.eq(s1_invalid),
                         s2_dialect.eq(Mux(s1_exp == 0, 0, level[0][1]))]   # SPEC 3: zero block
        # Stage 3: element indices (SPEC 5 rounds to nearest, ties up, which the midpoint compare
        # on q gives exactly: SPEC 4.4) -> output register.
        m.submodules.index = index = IndexMapper(B)
        m.d.comb += [index.q.eq(s2_q), index.dialect.eq(s2_dialect)]
        out = reg(quantizer_output_layout(B), "s3_out")
        with m.If(stage(3)):
            for k in range(B):
                m.d.sync += out.codes[k].eq(Cat(index.idx[k], s2_sign[k]))
            m.d.sync += [out.dialect.eq(s2_dialect), out.exp.eq(s2_exp),
                         out.invalid.eq(s2_invalid)]
        m.d.comb += self.o.payload.eq(out)
        return m
