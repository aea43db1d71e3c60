"""``bd_quantizer``: online two-stage BlockDialect quantizer (SPEC 1, 3, 4, 9).

One block of ``B`` FP16 elements per clock in, one quantized block per clock out.

Streams (``amaranth.lib.stream``, payload layouts from :mod:`bd_hw.layouts`):

- ``i``: payload ``data``, B FP16 bit patterns, element k at ``[16k +: 16]``.
- ``o``: payload ``codes`` (4B, element k at ``[4k +: 4]``, ``code = sign << 3 | idx``),
  ``dialect`` (4), ``exp`` (5, the shared exponent E; 0 marks an all-zero block), ``invalid``
  (1: some element was Inf or NaN).

**Latency: 4 + pipeline clock cycles** for ``pipeline`` 0 to 8, ``3 + pipeline`` from 9 on (the
ninth cut, ``"ready"``, adds no stage; :attr:`BDQuantizer.latency`; ``pipeline`` is 0 by default,
see :class:`BDQuantizer` for its cut points): a beat transferred on ``i`` at rising edge ``n``
(``i.valid`` and ``i.ready`` high there) raises ``o.valid`` after edge ``n + latency - 1`` and, with
``o.ready`` high, is transferred on ``o`` at edge ``n + latency``. Throughput is one block per clock
at every setting. Under back-pressure every stage holds its registers; a stage may load while the
one after it is empty, so bubbles collapse (see :mod:`bd_hw.pipeline`); the unit holds
:attr:`BDQuantizer.capacity` blocks (its latency, one more with ``"ready"``). ``o.valid`` comes
from a register; ``i.ready`` depends combinationally on ``o.ready`` and ``rst`` only (it is low
during reset), and with ``"ready"`` on ``rst`` and registers only.

The frame (each line ends in a register stage; optional cuts in brackets):

0. :class:`ExponentMax`: FTZ and non-finite handling, ``E = max(ex_k)`` [``"exp16"``, ``"exp8"``,
   ``"exp"``, inside its maximum tree], ``invalid``.
1. :class:`SignificandShifter`: ``q_k = M_k >> (6 + E - ex_k)`` [``"shift"``]; the first half of
   the dialect selection [``"qmax8"``, ``"qmax"``, ``"pair_rule"``, inside it]; with ``"ready"``
   this stage's register is a skid buffer.
2. the second half of the dialect selection [``"count"``, ``"select"``, inside it]; the zero block
   (``E == 0``) forces dialect 0.
3. :class:`IndexMapper`: ``idx_k`` = number of the dialect's midpoints ``<= q_k`` (ties up);
   ``code_k = s_k << 3 | idx_k``.

The dialect selection is a parameter (:class:`Selection`). The product's is
:class:`TwoStageSelection`: stage 1 :class:`PairSelector` (``qmax`` and the pair, SPEC 4.2, with the
``stage1`` rule ``"round"``, the default, or ``"trunc"``), stage 2 :class:`RangeCounter` (SPEC 4.3).
The benchmark's exhaustive MSE selection (SPEC 5, ``bench/hw/mse_selector.py``) plugs into the same
frame. Every table (stage-2 ranges, midpoints) is read from :mod:`golden.formatbook`.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.formatbook import MIDPOINTS, STAGE2_RANGES
from golden.spec import (DIALECT_BITS, EXP_BITS, EXP_FIELD_NONFINITE, FP16_BITS, FP16_MAN_BITS,
                         IDX_BITS, LEVELS, NUM_DIALECTS, NUM_PAIRS, Q_BITS)

from .arith import pack_row, tree_max, tree_sum
from .layouts import quantizer_input_layout, quantizer_output_layout
from .params import ParametrisedComponent, QuantizerParams
from .pipeline import Stages
from .selection import STAGE1_RULES, Selection, check_stage1

__all__ = ["ExponentMax", "SignificandShifter", "PairSelector", "RangeMembership", "RangeCount",
           "RangeCounter", "IndexMapper",
           "Selection", "TwoStageSelection", "BDQuantizer", "STAGE1_RULES", "PAIR_BITS"]

PAIR_BITS = (NUM_PAIRS - 1).bit_length()     # 3
GROUPS = 4          # lane groups whose maxima are registered by the "exp" and "qmax" cuts
LANE_GROUPS = 8     # lane groups whose maxima are registered by the "exp8" and "qmax8" cuts
LANE_PAIRS = 16     # lane groups whose maxima are registered by the "exp16" cut
MAN_BITS = FP16_MAN_BITS
#: The cut points inside the shared exponent's maximum tree, earliest first, with the number of
#: runs of lanes whose maxima each registers.
EXP_CUTS = (("exp16", LANE_PAIRS), ("exp8", LANE_GROUPS), ("exp", GROUPS))
# The zero block needs no special case in the index mapper only because q = 0 is below every
# dialect's first midpoint (SPEC 3: every idx of a zero block is 0).
assert min(MIDPOINTS[:, 0].tolist()) >= 1


def maxima(m, values, groups: int, name: str) -> list:
    """The maxima of ``groups`` equal runs of ``values``: a level of a balanced maximum tree, as
    named nodes of ``m`` (a run of one value is that value)."""
    size = len(values) // groups
    return [tree_max(values[g * size:(g + 1) * size], m=m, name=f"{name}{g}") for g in range(groups)]


def _lanes(value, width: int) -> list:
    """The ``width``-bit lanes of a flat value (a registered list of maxima)."""
    return [value[k * width:(k + 1) * width] for k in range(len(value) // width)]


def _fields(x):
    """FP16 bits -> (sign, exponent field, mantissa field)."""
    return x[FP16_BITS - 1], x[MAN_BITS:MAN_BITS + EXP_BITS], x[:MAN_BITS]


class ExponentMax(wiring.Component):
    """Shared exponent of a block (SPEC 1, SPEC 3).

    Ports: ``data`` in, B FP16 elements; ``exp`` out 5, ``E = max(ex_k)`` with subnormal and
    non-finite elements counted as ``ex = 0``; ``invalid`` out 1, some ``ex_k == 31``;
    ``partial`` out, ``groups`` x 5 bits: the maxima of ``groups`` equal runs of lanes (``exp`` is
    their maximum), for a pipeline register inside the maximum tree.
    """

    def __init__(self, B: int = 32, groups: int = 1):
        self.B, self.groups = B, groups
        super().__init__({
            "data": In(data.ArrayLayout(FP16_BITS, self.B)),
            "exp": Out(EXP_BITS),
            "invalid": Out(1),
            "partial": Out(data.ArrayLayout(EXP_BITS, groups)),
        })

    def elaborate(self, platform):
        m = Module()
        nonfinite = Signal(self.B)
        ex = []
        for k in range(self.B):
            _, e, _ = _fields(self.data[k])
            lane_exp = Signal(EXP_BITS, name=f"ex{k}")     # a tree leaf, used twice
            m.d.comb += [nonfinite[k].eq(e == EXP_FIELD_NONFINITE),
                         lane_exp.eq(Mux(nonfinite[k], 0, e))]
            ex.append(lane_exp)
        for g, value in enumerate(maxima(m, ex, self.groups, "max")):
            m.d.comb += self.partial[g].eq(value)
        m.d.comb += [
            self.exp.eq(tree_max((self.partial[g] for g in range(self.groups)), m=m)),
            self.invalid.eq(nonfinite.any()),
        ]
        return m


class SignificandShifter(wiring.Component):
    """5-bit intermediates ``q_k = M_k >> (6 + E - ex_k)`` by truncation (SPEC 4.1).

    Ports: ``data`` in, B FP16 elements; ``exp`` in 5, the block's ``E``; ``q`` out, B x 5 bits.
    Subnormal (``ex == 0``) and non-finite (``ex == 31``) elements give 0, and so does any shift of
    11 or more. Since ``M`` has its top bit at position 10, ``M >> (6 + d) = M[10:6] >> d`` and
    only ``d = E - ex`` in 0..4 can be non-zero. Precondition: ``exp >= ex_k`` for every finite
    element (true when ``exp`` comes from :class:`ExponentMax`); a lane with ``ex_k > exp`` gives 0.
    """

    def __init__(self, B: int = 32):
        self.B = B
        super().__init__({
            "data": In(data.ArrayLayout(FP16_BITS, self.B)),
            "exp": In(EXP_BITS),
            "q": Out(data.ArrayLayout(Q_BITS, self.B)),
        })

    def elaborate(self, platform):
        m = Module()
        for k in range(self.B):
            _, ex, man = _fields(self.data[k])
            d = Signal(EXP_BITS + 1, name=f"d{k}")        # E - ex, modulo 64
            top = Cat(man[MAN_BITS - (Q_BITS - 1):], 1)    # M[10:6], 5 bits
            normal = (ex != 0) & (ex != EXP_FIELD_NONFINITE)
            m.d.comb += [
                d.eq(self.exp - ex),
                # d < 5, written on the low 3 bits so that no width-mismatched compare is emitted
                self.q[k].eq(Mux(normal & ~d[3:].any() & (d[:3] < Q_BITS), top >> d[:3], 0)),
            ]
        return m


class PairSelector(wiring.Component):
    """Stage 1 of SPEC 4 [revised]: ``qmax = max(q_k)`` and the pair it selects.

    Ports: ``q`` in, B x 5 bits; ``qmax`` out 5; ``pair`` out 3. ``stage1`` is the rule of
    SPEC 4.2: ``"round"`` (the default) picks the pair whose largest value is nearest the block
    maximum, ties up, ``p = max(0, 15 - ((qmax + 1) >> 1))``; ``"trunc"`` is the first reading of the
    paper, ``p = 15 - (qmax >> 1)``. For ``qmax`` in [16, 31] (every block with ``E >= 1``) both are
    a few gates: truncation is ``~qmax[3:1]``; rounding adds one 5-bit incrementer,
    ``r = (qmax + 1) >> 1`` in [8, 16], then ``p = 0`` if ``r == 16`` else ``~r[2:0]``.
    """

    def __init__(self, B: int = 32, stage1: str = "round", groups: int = 1):
        self.B, self.stage1, self.groups = B, stage1, groups     # checked by the unit
        super().__init__({
            "q": In(data.ArrayLayout(Q_BITS, self.B)),
            "qmax": Out(Q_BITS),
            "pair": Out(PAIR_BITS),
            # maxima of `groups` equal runs of lanes, for a pipeline register inside the tree
            "partial": Out(data.ArrayLayout(Q_BITS, groups)),
        })

    @staticmethod
    def pair_of(qmax, stage1: str):
        """The pair selected by ``qmax`` under the ``stage1`` rule (see the class docstring)."""
        if stage1 == "trunc":
            # p = 15 - (qmax >> 1) = ~qmax[3:1] for qmax in [16, 31]
            return ~qmax[1:1 + PAIR_BITS]
        # r = (qmax + 1) >> 1 in [8, 16]; p = max(0, 15 - r): 0 when r = 16, else 7 - r[2:0]
        r = (qmax + 1)[1:1 + Q_BITS]
        return Mux(r[PAIR_BITS + 1], 0, ~r[:PAIR_BITS])

    def elaborate(self, platform):
        m = Module()
        for g, value in enumerate(maxima(m, [self.q[k] for k in range(self.B)], self.groups, "max")):
            m.d.comb += self.partial[g].eq(value)
        m.d.comb += [
            self.qmax.eq(tree_max((self.partial[g] for g in range(self.groups)), m=m)),
            self.pair.eq(self.pair_of(self.qmax, self.stage1)),
        ]
        return m


def _range_membership(m, B, q, pair):
    """``(in_a, in_b)``: B bits each, lane ``k`` in ``[lo, hi)`` of the pair's two stage-2
    ranges (the first half of :class:`RangeCounter`)."""
    ranges = STAGE2_RANGES.tolist()
    if max(hi for _, hi in ranges) >> Q_BITS:
        raise AssertionError("stage-2 ranges must fit in the 5-bit range of q")
    bounds = {name: Signal(Q_BITS, name=name) for name in ("lo_a", "hi_a", "lo_b", "hi_b")}
    with m.Switch(pair):
        for p in range(NUM_PAIRS):
            (lo_a, hi_a), (lo_b, hi_b) = ranges[2 * p], ranges[2 * p + 1]
            with m.Case(p):
                m.d.comb += [bounds["lo_a"].eq(lo_a), bounds["hi_a"].eq(hi_a),
                             bounds["lo_b"].eq(lo_b), bounds["hi_b"].eq(hi_b)]
    in_a = Signal(B)
    in_b = Signal(B)
    for k in range(B):
        m.d.comb += [
            in_a[k].eq((q[k] >= bounds["lo_a"]) & (q[k] < bounds["hi_a"])),
            in_b[k].eq((q[k] >= bounds["lo_b"]) & (q[k] < bounds["hi_b"])),
        ]
    return in_a, in_b


def _count_ports(B: int) -> dict:
    """The ports :class:`RangeCount` and :class:`RangeCounter` share: ``pair`` in; the counts and
    the dialect out."""
    cbits = B.bit_length()
    return {"pair": In(PAIR_BITS), "count_a": Out(cbits), "count_b": Out(cbits),
            "dialect": Out(DIALECT_BITS)}


def _range_counts(m, B, in_a, in_b, count_a, count_b, dialect, pair):
    """Drive ``count_a``, ``count_b`` (the popcounts) and ``dialect`` (the second half of
    :class:`RangeCounter`)."""
    m.d.comb += [
        count_a.eq(tree_sum((in_a[k] for k in range(B)), m=m, name="count_a")),
        count_b.eq(tree_sum((in_b[k] for k in range(B)), m=m, name="count_b")),
        dialect.eq(RangeCounter.decide(count_a, count_b, pair)),
    ]


class RangeMembership(wiring.Component):
    """The first half of :class:`RangeCounter`: which ``q_k`` lie in the pair's two ranges.

    Ports: ``q`` in, B x 5 bits; ``pair`` in 3; ``in_a``, ``in_b`` out, B bits: lane ``k`` is in
    ``[lo, hi)`` of ``STAGE2_RANGES[2p]`` (``in_a``) and of ``STAGE2_RANGES[2p + 1]`` (``in_b``).
    """

    def __init__(self, B: int = 32):
        self.B = B
        super().__init__({
            "q": In(data.ArrayLayout(Q_BITS, self.B)),
            "pair": In(PAIR_BITS),
            "in_a": Out(self.B),
            "in_b": Out(self.B),
        })

    def elaborate(self, platform):
        m = Module()
        in_a, in_b = _range_membership(m, self.B, self.q, self.pair)
        m.d.comb += [self.in_a.eq(in_a), self.in_b.eq(in_b)]
        return m


class RangeCount(wiring.Component):
    """The second half of :class:`RangeCounter`: count the lanes in each range and decide.

    Ports: ``in_a``, ``in_b`` in, B bits; ``pair`` in 3; ``count_a``, ``count_b`` out (enough
    bits for B), their popcounts; ``dialect`` out 4, :meth:`RangeCounter.decide`.
    """

    def __init__(self, B: int = 32):
        self.B = B
        super().__init__({"in_a": In(self.B), "in_b": In(self.B), **_count_ports(self.B)})

    def elaborate(self, platform):
        m = Module()
        _range_counts(m, self.B, self.in_a, self.in_b, self.count_a, self.count_b, self.dialect,
                      self.pair)
        return m


class RangeCounter(wiring.Component):
    """Stage 2 of SPEC 4: pick dialect A or B of pair ``pair`` by counting beneficial elements.

    Ports: ``q`` in, B x 5 bits; ``pair`` in 3; ``count_a``, ``count_b`` out (enough bits for B):
    the numbers of ``q_k`` in ``[lo, hi)`` of ``STAGE2_RANGES[2p]`` and ``STAGE2_RANGES[2p + 1]``;
    ``dialect`` out 4, ``2p`` if ``count_a >= count_b`` (ties to A) else ``2p + 1``.
    The logic of :class:`RangeMembership` then that of :class:`RangeCount` (the quantizer's
    ``"count"`` cut registers the membership bits between them).
    """

    def __init__(self, B: int = 32):
        self.B = B
        super().__init__({"q": In(data.ArrayLayout(Q_BITS, self.B)), **_count_ports(self.B)})

    def elaborate(self, platform):
        m = Module()
        in_a, in_b = _range_membership(m, self.B, self.q, self.pair)
        _range_counts(m, self.B, in_a, in_b, self.count_a, self.count_b, self.dialect, self.pair)
        return m

    @staticmethod
    def decide(count_a, count_b, pair):
        """The dialect from the two counts: ``2p`` if ``count_a >= count_b`` (ties to A), else
        ``2p + 1``."""
        return Cat(count_b > count_a, pair)


class IndexMapper(wiring.Component):
    """Step 4 of SPEC 4: nearest index, ties to the larger magnitude.

    Ports: ``q`` in, B x 5 bits; ``dialect`` in 4; ``idx`` out, B x 3 bits,
    ``idx_k = sum over i of [q_k >= MIDPOINTS[dialect][i]]``. The dialect selects its 7 midpoints
    once (shared by all lanes); each lane has 7 comparators.
    """

    def __init__(self, B: int = 32):
        self.B = B
        super().__init__({
            "q": In(data.ArrayLayout(Q_BITS, self.B)),
            "dialect": In(DIALECT_BITS),
            "idx": Out(data.ArrayLayout(IDX_BITS, self.B)),
        })

    def elaborate(self, platform):
        m = Module()
        table = MIDPOINTS.tolist()
        nmid = LEVELS - 1
        if max(max(row) for row in table) >> Q_BITS:
            raise AssertionError("midpoints must fit in the 5-bit range of q")
        mids = Signal(data.ArrayLayout(Q_BITS, nmid), name="mids")
        with m.Switch(self.dialect):
            for d in range(NUM_DIALECTS):
                with m.Case(d):
                    m.d.comb += mids.eq(pack_row(table[d], Q_BITS))
        for k in range(self.B):
            q = self.q[k]
            m.d.comb += self.idx[k].eq(tree_sum((q >= mids[i] for i in range(nmid)), m=m, name=f"idx{k}"))
        return m


class TwoStageSelection(Selection):
    """SPEC 4 stages 1 and 2: :class:`PairSelector` (with the ``stage1`` rule), then
    :class:`RangeCounter`."""

    def __init__(self, stage1: str = "round"):
        self.stage1 = check_stage1(stage1)
        self.method = STAGE1_RULES[self.stage1]

    def state_shape(self, B: int):
        return PAIR_BITS

    #: The frame's cut points inside :meth:`first` and :meth:`second`.
    FIRST_CUTS = ("qmax8", "qmax", "pair_rule")
    SECOND_CUTS = ("count", "select")

    def first(self, m, B, elements, exp, q, cuts=None):
        cuts = cuts or {}
        groups = LANE_GROUPS if "qmax8" in cuts else GROUPS if "qmax" in cuts else 1
        m.submodules.pair = pair = PairSelector(B, self.stage1, groups=groups)
        m.d.comb += pair.q.eq(q)
        if not cuts:
            return pair.pair
        # The "qmax8" and "qmax" cuts: inside the maximum tree, after the maxima of
        # LANE_GROUPS and GROUPS runs of lanes.
        partial = [pair.partial[g] for g in range(groups)]
        for name, count in (("qmax8", LANE_GROUPS), ("qmax", GROUPS)):
            if name in cuts:
                runs = maxima(m, partial, count, f"{name}_run")
                partial = _lanes(cuts[name](partial=Cat(*runs))["partial"], Q_BITS)
        qmax = tree_max(partial, m=m, name="qmax")
        if "pair_rule" in cuts:
            # The "pair_rule" cut: qmax registered before the stage-1 rule.
            qmax = cuts["pair_rule"](qmax=qmax)["qmax"]
        return PairSelector.pair_of(qmax, self.stage1)

    def second(self, m, B, state, q, cuts=None):
        cuts = cuts or {}
        if "count" not in cuts:
            m.submodules.ranges = ranges = RangeCounter(B)
            m.d.comb += [ranges.q.eq(q), ranges.pair.eq(state)]
        else:
            # The "count" cut: the membership bits registered before their popcounts.
            m.submodules.ranges = member = RangeMembership(B)
            m.d.comb += [member.q.eq(q), member.pair.eq(state)]
            v = cuts["count"](in_a=member.in_a, in_b=member.in_b, pair=state)
            m.submodules.counts = ranges = RangeCount(B)
            m.d.comb += [ranges.in_a.eq(v["in_a"]), ranges.in_b.eq(v["in_b"]),
                         ranges.pair.eq(v["pair"])]
            state = v["pair"]
        if "select" not in cuts:
            return ranges.dialect
        # The "select" cut: between the two range counts and their comparison.
        v = cuts["select"](count_a=ranges.count_a, count_b=ranges.count_b, pair=state)
        return RangeCounter.decide(v["count_a"], v["count_b"], v["pair"])


class BDQuantizer(ParametrisedComponent):
    """``bd_quantizer`` for block size ``B`` (16, 32 or 64); see the module docstring. Takes the
    arguments of :class:`~bd_hw.params.QuantizerParams` (or one).

    ``stage1`` is the SPEC 4.2 rule of the two-stage selection (``"round"``, the default, or
    ``"trunc"``); ``selection`` replaces the two-stage selection altogether (a :class:`Selection`,
    for example the benchmark's MSE selection), in which case ``stage1`` must be left alone.
    :attr:`method` is the ``golden.bd.quantize`` method the unit reproduces bit for bit.

    ``pipeline`` (0 to ``len(CUT_POINTS)``, default 0) adds that many register stages at the first
    cut points of :data:`CUT_POINTS`, ordered by where the time goes (the longest path after place
    and route with the cuts before it taken; ``reports/synth/timing.md``):

    - ``"select"``: inside the second half of the dialect selection (two-stage: between the range
      counts and their comparison; see :class:`Selection`);
    - ``"shift"``: between the significand shifter and the first half of the selection (``q``
      registered before ``qmax`` and the pair);
    - ``"qmax"``: inside the first half of the selection (two-stage: in the maximum tree of ``q``,
      after the maxima of four runs of lanes);
    - ``"exp"``: inside the shared exponent's maximum tree, after the maxima of four runs of lanes;
    - ``"exp8"``: earlier in the same tree, after the maxima of eight runs of lanes (with
      ``"exp"``, every stage of the tree is at most two compare-and-select levels);
    - ``"count"``: inside the second half of the selection (two-stage: the range-membership bits
      registered before their popcounts; see :class:`RangeMembership`, :class:`RangeCount`);
    - ``"qmax8"``: in the maximum tree of ``q``, after the maxima of eight runs of lanes;
    - ``"pair_rule"``: inside the first half of the selection (two-stage: ``qmax`` registered
      before the stage-1 rule that turns it into the pair);
    - ``"ready"``: no new stage; the register after the first half of the selection (``s1``, the
      first stage without the FP16 elements: 201 bits at B = 32) becomes a skid buffer with a
      spare bank, so the enables of the stages before it follow a register instead of the ready
      chain from ``o.ready`` through every stage (the critical path with the eight cuts before
      it). The unit then holds one block more than its latency (:attr:`capacity`);
    - ``"exp16"``: in the shared exponent's maximum tree, after the maxima of sixteen runs of
      lanes (one compare-and-select level after the leaves; with ``"exp8"`` and ``"exp"`` the
      tree's first stage no longer holds two levels after the leaves).

    :attr:`latency` is ``4 + pipeline`` (``3 + pipeline`` from 9 on); throughput stays one block
    per clock.
    Raises ``ValueError`` naming ``B``, ``stage1``, ``selection`` or ``pipeline``.
    """

    Params = QuantizerParams
    #: Register stages without optional cuts.
    LATENCY = QuantizerParams.BASE_LATENCY
    CUT_POINTS = QuantizerParams.CUT_POINTS

    def __init__(self, *args, **kwargs):
        p = self.settle(*args, **kwargs)
        self.B, self.pipeline, self.cuts = p.B, p.pipeline, p.cuts
        self.selection = p.selection or TwoStageSelection(p.stage1)
        super().__init__({
            "i": In(stream.Signature(quantizer_input_layout(self.B))),
            "o": Out(stream.Signature(quantizer_output_layout(self.B))),
        })

    @property
    def capacity(self) -> int:
        """Most blocks held at once: :attr:`latency`, plus one with the ``"ready"`` cut."""
        return self.params.capacity

    @property
    def method(self) -> str:
        """The ``golden.bd.quantize`` method of this unit (``two_stage``, ``two_stage_trunc``, ...)."""
        return self.params.method

    def elaborate(self, platform):
        m = Module()
        B, sel = self.B, self.selection
        st = Stages(m, self.latency, self.i.valid, self.i.ready, self.o.ready,
                    skid=self.params.skid, skid_stage=self.params.skid_stage)
        m.d.comb += self.o.valid.eq(st.valid)
        v = {"data": self.i.payload.data}

        def inside(names, method, *args):
            """Call a selection method, with ``cuts``: for each of the cut points ``names`` that
            is taken, a function that registers its values and the frame's (``v``) in that stage;
            registers the method's result at each one it leaves uncalled."""
            nonlocal v
            taken = [name for name in names if name in self.cuts]
            if not taken:
                return method(m, B, *args)
            called = []

            def cut_at(name):
                def cut(**values):
                    nonlocal v
                    called.append(name)
                    regs = st.register(name, **v, **values)
                    v = {k: regs[k] for k in v}
                    return {k: regs[k] for k in values}
                return cut

            result = method(m, B, *args, cuts={name: cut_at(name) for name in taken})
            for name in taken:
                if name not in called:
                    result = cut_at(name)(result=result)["result"]
            return result

        # Stage 0: shared exponent and invalid flag; optional cuts inside the maximum tree, after
        # the maxima of LANE_PAIRS ("exp16"), LANE_GROUPS ("exp8") and GROUPS ("exp") runs of lanes.
        groups = next((count for name, count in EXP_CUTS if name in self.cuts), 1)
        m.submodules.exp_max = exp_max = ExponentMax(B, groups)
        m.d.comb += exp_max.data.eq(v["data"])
        v = {**v, "invalid": exp_max.invalid}
        partial = [exp_max.partial[g] for g in range(groups)]
        for name, count in EXP_CUTS:
            if name in self.cuts:
                v = st.register(name, **v, partial=Cat(*maxima(m, partial, count, f"{name}_run")))
                partial = _lanes(v.pop("partial"), EXP_BITS)
        exp = tree_max(partial, m=m, name="exp")
        v = st.register("s0", **v, exp=exp)

        # Stage 1: 5-bit intermediates; optional cut; the first half of the selection (with the
        # optional "qmax" cut inside).
        m.submodules.shifter = shifter = SignificandShifter(B)
        m.d.comb += [shifter.data.eq(v["data"]), shifter.exp.eq(v["exp"])]
        v = st.cut("shift", "shift" in self.cuts, **v, q=shifter.q)
        first = inside(TwoStageSelection.FIRST_CUTS, sel.first, v["data"], v["exp"], v["q"])
        sign = Cat(v["data"][k][FP16_BITS - 1] for k in range(B))
        v = st.register("s1", q=v["q"], sign=sign, exp=v["exp"], invalid=v["invalid"],
                        select=first)

        # Stage 2: the dialect (SPEC 3: a zero block is dialect 0), with the optional "select"
        # cut inside the selection.
        state = v.pop("select")
        dialect = inside(TwoStageSelection.SECOND_CUTS, sel.second, state, v["q"])
        v = st.register("s2", **v, dialect=Mux(v["exp"].any(), dialect, 0))

        # Stage 3: element indices -> output register. In a zero block every q is 0 and every
        # midpoint is at least 1, so every idx is 0 without a special case. The MSE choice of
        # SPEC 5 rounds each element to nearest, ties up, which the midpoint compare on q gives
        # exactly too (SPEC 4.4).
        m.submodules.index = index = IndexMapper(B)
        m.d.comb += [index.q.eq(v["q"]), index.dialect.eq(v["dialect"])]
        out = Signal(quantizer_output_layout(B), name="out")
        for k in range(B):
            m.d.comb += out.codes[k].eq(Cat(index.idx[k], v["sign"][k]))
        m.d.comb += [out.dialect.eq(v["dialect"]), out.exp.eq(v["exp"]),
                     out.invalid.eq(v["invalid"])]
        s3 = st.register("s3", out=out)
        m.d.comb += self.o.payload.eq(s3["out"])
        return m
