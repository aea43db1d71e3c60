"""The SPEC 5 MSE dialect selector built the way a designer would: the same choice as the literal
selector of :mod:`bench.hw.mse_selector`, bit for bit, without computing 16 x B squared errors.

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

:class:`SharedMseCosts` computes the ``c(d)``; :class:`SharedMseSelection` is the quantizer
frame's selection built from it (the argmin with ties to the lowest id), the counterpart of the
literal :class:`~bench.hw.mse_selector.MseSelection`, so the stand-alone selector frame of
:mod:`bench.hw.selectors` (``method="mse_shared"``) and the whole quantizer
(:class:`BDSharedMseQuantizer`) take either.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from bd_hw.arith import tree_sum
from bd_hw.quantizer import BDQuantizer, Selection
from golden.formatbook import FORMATBOOK_ROWS
from golden.spec import EXP_BITS, FP16_BITS, LEVELS, NUM_DIALECTS

from .mse_selector import HALF_UNIT, MIDPOINT_UNIT, X_BITS, X_MIN, MseSelection, cost_lane

__all__ = ["SharedMseCosts", "SharedMseSelection", "BDSharedMseQuantizer", "cost_bits",
           "MAGNITUDES", "THRESHOLDS", "STEPS", "DIALECT_STEPS", "BASE_VALUE"]

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
MAGNITUDES = sorted({BASE_VALUE} | {w for _, _, w in STEPS})           # nearest values: 4..15


def _step_bound(step, B: int) -> int:
    """Largest |256 (v'^2 - v^2) N_t - 2 (v' - v) S_t| over blocks of B elements."""
    _, v, w = step
    x_max = (1 << X_BITS) - 1
    return max(HALF_UNIT * (w * w - v * v) * B, 2 * (w - v) * B * x_max)


def cost_bits(B: int) -> int:
    """Width of one signed ``c(d)`` of a block of ``B`` elements."""
    return max(sum(_step_bound(s, B) for s in steps) for steps in DIALECT_STEPS).bit_length() + 1


class SharedMseCosts(wiring.Component):
    """The 16 relative costs ``c(d)`` of one block (combinational; see the module docstring).

    Ports: ``data`` in, B FP16 elements (element k at ``[16k +: 16]``); ``exp`` in 5, the block's E
    (``ExponentMax`` of the same data); ``costs`` out, 16 signed ``c(d)`` of :func:`cost_bits` bits
    (dialect d at ``[w*d +: w]``), ``c(d) - c(e) = (cost(d) - cost(e)) / 256`` with SPEC 5's costs.
    """

    def __init__(self, B: int = 32):
        self.B = B
        self.cost_bits = cost_bits(B)
        super().__init__({
            "data": In(data.ArrayLayout(FP16_BITS, self.B)),
            "exp": In(EXP_BITS),
            "costs": Out(data.ArrayLayout(signed(self.cost_bits), NUM_DIALECTS)),
        })

    def elaborate(self, platform):
        m = Module()
        B = self.B
        # Per element: X (SPEC 5, units of 1/256 half-unit) and whether it enters the cost
        # (normal and ex >= E - 1); q = X >> 7 in quarter-units.
        lanes = []
        for k in range(B):
            xk, included = cost_lane(m, self.data[k], self.exp, k)
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
        return m


class SharedMseSelection(MseSelection):
    """SPEC 5 from shared terms as the quantizer frame's selection (:class:`bd_hw.quantizer.Selection`):
    the 16 relative costs (stage 1), their argmin with ties to the lowest id (stage 2). It gives
    ``golden.bd.quantize(x, method="mse")``'s dialects, as the literal
    :class:`~bench.hw.mse_selector.MseSelection` does."""

    costs_unit = SharedMseCosts

    def state_shape(self, B: int):
        return data.ArrayLayout(signed(cost_bits(B)), NUM_DIALECTS)

class BDSharedMseQuantizer(BDQuantizer):
    """A ``bd_quantizer`` whose dialect is the SPEC 5 MSE choice from :class:`SharedMseSelection`;
    same streams, payloads and latency (4) as ``bd_quantizer``."""

    def __init__(self, B: int = 32):
        super().__init__(B, selection=SharedMseSelection())
