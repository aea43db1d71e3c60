"""The SPEC 5 MSE dialect selector built the way a designer would: the same choice as the literal
selector of :mod:`bd_hw.mse_selector`, bit for bit, without computing 16 x B squared errors.

Two observations share the work the literal form repeats:

1. ``sum X^2`` is common to every dialect, so the dialects are ordered alike by
   ``cost(d) - sum X^2 = 256 * sum v (256 v - 2 X)`` (``v`` the element's nearest value in ``d``).
2. An element that enters the cost has ``X >= 1024`` (``hv >= 4`` half-units), so its nearest value
   is one of the 12 distinct magnitudes 4..15 of the formatbook's upper indices, and which one is
   fixed by the midpoints ``v_i + v_(i+1)`` (quarter-units) its ``q = X >> 7`` reaches (SPEC 4.4:
   midpoints are whole quarter-units). Over all 16 dialects there are only
   :data:`len(THRESHOLDS) <THRESHOLDS>` distinct such midpoints above 8 quarter-units, each compared
   once per element and shared by every dialect.

With ``v(q)`` a staircase that starts at ``v_4 = 4`` and steps from ``v`` to ``v'`` at midpoint
``t``, summing ``v (256 v - 2 X)`` over the block telescopes into per-midpoint terms::

    c(d) = sum over d's steps (t, v, v') of 256 (v'^2 - v^2) N_t - 2 (v' - v) S_t   (+ a constant)

where ``N_t`` counts the elements that enter the cost and reach ``t``, and ``S_t`` sums their ``X``;
the constant ``256 * 16 N - 8 S`` (the first value, 4, of every dialect) is the same for all
dialects and is left out. So per element: ``X``, its inclusion and one 5-bit compare per
threshold; per threshold: a popcount and a masked adder tree of 12-bit ``X``; per distinct step: two
constant multiplies; per dialect: the sum of its (at most three) step terms; then the argmin with
ties to the lowest id (SPEC 5) and the zero block (SPEC 3). ``c(d) = (cost(d) - sum X^2) / 256 -
constant`` exactly, so the argmin, ties included, is SPEC 5's.

:class:`SharedMseSelector` has the literal selector's ports (``data``, ``exp`` in; ``dialect`` out;
``costs`` out, here the signed ``c(d)``), so either can be dropped into the same frame.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from bd_hw.arith import tree_sum
from bd_hw.layouts import FP16_BITS, check_block_size
from bd_hw.mse_selector import HALF_UNIT, MIDPOINT_UNIT, X_BITS, X_MIN
from bd_hw.quantizer import EX_NONFINITE, MAN_BITS
from golden.formatbook import DIALECT_BITS, EXP_BITS, FORMATBOOK_ROWS, LEVELS, NUM_DIALECTS

__all__ = ["SharedMseSelector", "RegisteredSharedMseSelector", "THRESHOLDS", "STEPS", "DIALECT_STEPS", "BASE_VALUE"]

Q_FROM_X = MIDPOINT_UNIT.bit_length() - 1     # 7: q = X >> 7, X's top 5 bits (quarter-units)
Q_MIN = X_MIN // MIDPOINT_UNIT                 # 8: smallest q of an element in the cost


def _staircase(dialect: int) -> tuple[int, list[tuple[int, int, int]]]:
    """The value every counted element reaches for sure (midpoints at or below q = 8) and the
    steps ``(t, v, v')`` above it: at ``q >= t`` the nearest value goes from ``v`` to ``v'``."""
    values = [int(v) for v in FORMATBOOK_ROWS[dialect]]
    base, steps = 0, []
    for i in range(LEVELS - 1):
        t = values[i] + values[i + 1]          # SPEC 4.4 midpoint, quarter-units
        if t <= Q_MIN:
            base = i + 1
        else:
            steps.append((t, values[i], values[i + 1]))
    return values[base], steps


_STAIRS = [_staircase(d) for d in range(NUM_DIALECTS)]
BASE_VALUE = {v for v, _ in _STAIRS}
assert len(BASE_VALUE) == 1, "the constant term is common to every dialect only if v_base is"
BASE_VALUE = BASE_VALUE.pop()                                          # 4 half-units
DIALECT_STEPS = [steps for _, steps in _STAIRS]                        # per dialect
STEPS = sorted({s for steps in DIALECT_STEPS for s in steps})          # distinct (t, v, v')
THRESHOLDS = sorted({t for t, _, _ in STEPS})                          # distinct midpoints > 8


def _step_bound(step, B: int) -> int:
    """Largest |256 (v'^2 - v^2) N_t - 2 (v' - v) S_t| over blocks of B elements."""
    _, v, w = step
    x_max = (1 << X_BITS) - 1
    return max(HALF_UNIT * (w * w - v * v) * B, 2 * (w - v) * B * x_max)


class SharedMseSelector(wiring.Component):
    """SPEC 5 dialect choice of one block from shared terms (combinational; module docstring).

    Ports: ``data`` in, B FP16 elements (element k at ``[16k +: 16]``); ``exp`` in 5, the block's E
    (``ExponentMax`` of the same data); ``dialect`` out 4; ``costs`` out, 16 signed ``c(d)``
    (dialect d at ``[w*d +: w]``), ``c(d) - c(e) = (cost(d) - cost(e)) / 256``.
    """

    def __init__(self, B: int = 32):
        self.B = check_block_size(B, owner=self)
        bound = max(sum(_step_bound(s, self.B) for s in steps) for steps in DIALECT_STEPS)
        self.cost_bits = bound.bit_length() + 1
        super().__init__({
            "data": In(data.ArrayLayout(FP16_BITS, self.B)),
            "exp": In(EXP_BITS),
            "dialect": Out(DIALECT_BITS),
            "costs": Out(data.ArrayLayout(signed(self.cost_bits), NUM_DIALECTS)),
        })

    def elaborate(self, platform):
        m = Module()
        B = self.B
        # Per element: X (SPEC 5, units of 1/256 half-unit) and whether it enters the cost
        # (normal and ex >= E - 1); q = X >> 7 in quarter-units.
        lanes = []
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
                xk.eq(Mux(gap == 0, Cat(0, man, 1), Cat(man, 1))),   # M or 2M, M = 1024 + man
            ]
            lanes.append((xk, xk[Q_FROM_X:], included))

        # Per midpoint t: N_t (elements in the cost at or above t) and S_t (the sum of their X),
        # both widened by a zero sign bit so the step terms below are signed.
        shared = {}
        for t in THRESHOLDS:
            reach = Signal(B, name=f"ge{t}")
            m.d.comb += reach.eq(Cat(inc & (q >= t) for _, q, inc in lanes))
            count = Signal(range(B + 1), name=f"n{t}")
            total = Signal(range(B * (1 << X_BITS)), name=f"s{t}")
            m.d.comb += [count.eq(tree_sum(list(reach))),
                         total.eq(tree_sum(Mux(reach[k], xk, 0) for k, (xk, _, _) in enumerate(lanes)))]
            shared[t] = (Cat(count, Const(0, 1)).as_signed(), Cat(total, Const(0, 1)).as_signed())

        # Per distinct step (t, v, v'): 256 (v'^2 - v^2) N_t - 2 (v' - v) S_t.
        terms = {}
        for step in STEPS:
            t, v, w = step
            n, s = shared[t]
            term = Signal(signed(_step_bound(step, B).bit_length() + 1), name=f"step{t}_{v}_{w}")
            m.d.comb += term.eq(n * (HALF_UNIT * (w * w - v * v)) - s * (2 * (w - v)))
            terms[step] = term
        for d in range(NUM_DIALECTS):
            m.d.comb += self.costs[d].eq(tree_sum(terms[s] for s in DIALECT_STEPS[d]))

        # Argmin over dialects, ties to the lowest id: keep the left (lower-id) candidate unless
        # the right one is strictly smaller.
        level = [(self.costs[d], d) for d in range(NUM_DIALECTS)]
        depth = 0
        while len(level) > 1:
            nxt = []
            for j in range(0, len(level), 2):
                (cl, il), (cr, ir) = level[j], level[j + 1]
                c = Signal(signed(self.cost_bits), name=f"min{depth}_{j // 2}_cost")
                i = Signal(DIALECT_BITS, name=f"min{depth}_{j // 2}_id")
                take_right = cr < cl
                m.d.comb += [c.eq(Mux(take_right, cr, cl)), i.eq(Mux(take_right, ir, il))]
                nxt.append((c, i))
            level, depth = nxt, depth + 1
        m.d.comb += self.dialect.eq(Mux(self.exp == 0, 0, level[0][1]))   # SPEC 3: zero block
        return m


class RegisteredSharedMseSelector(wiring.Component):
    """:class:`SharedMseSelector` with registered ``data``/``exp`` inputs and a registered
    ``dialect`` output (latency 2): the frame in which the literal and two-stage selectors are
    synthesised (``bd_hw.mse_selector.RegisteredSelector``)."""

    def __init__(self, B: int = 32):
        self.B = check_block_size(B, owner=self)
        super().__init__({
            "data": In(data.ArrayLayout(FP16_BITS, self.B)),
            "exp": In(EXP_BITS),
            "dialect": Out(DIALECT_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.selector = sel = SharedMseSelector(self.B)
        m.d.sync += [sel.data.eq(self.data), sel.exp.eq(self.exp), self.dialect.eq(sel.dialect)]
        return m
