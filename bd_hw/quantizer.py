"""``bd_quantizer``: online two-stage BlockDialect quantizer (SPEC 1, 3, 4, 9).

One block of ``B`` FP16 elements per clock in, one quantized block per clock out.

Streams (``amaranth.lib.stream``, payload layouts from :mod:`bd_hw.layouts`):

- ``i``: payload ``data``, B FP16 bit patterns, element k at ``[16k +: 16]``.
- ``o``: payload ``codes`` (4B, element k at ``[4k +: 4]``, ``code = sign << 3 | idx``),
  ``dialect`` (4), ``exp`` (5, the shared exponent E; 0 marks an all-zero block), ``invalid``
  (1: some element was Inf or NaN).

**Latency: 4 clock cycles** (:attr:`BDQuantizer.latency`): a beat transferred on ``i`` at rising
edge ``n`` (``i.valid`` and ``i.ready`` high there) raises ``o.valid`` after edge ``n + 3`` and, with
``o.ready`` high, is transferred on ``o`` at edge ``n + 4``. Throughput is one block per clock.
Under back-pressure every stage holds its registers; a stage may load while the one after it is
empty, so bubbles collapse (see :mod:`bd_hw.pipeline`). ``o.valid`` comes from a register;
``i.ready`` depends combinationally on ``o.ready`` and ``rst`` only (it is low during reset).

The frame (each line ends in a register stage):

0. :class:`ExponentMax`: FTZ and non-finite handling, ``E = max(ex_k)``, ``invalid``.
1. :class:`SignificandShifter`: ``q_k = M_k >> (6 + E - ex_k)``; the first half of the dialect
   selection.
2. the second half of the dialect selection; the zero block (``E == 0``) forces dialect 0.
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

from .arith import MaxTree, pack_row, tree_sum
from .layouts import quantizer_input_layout, quantizer_output_layout, reject, unit_block_size
from .pipeline import pipeline_control, take

__all__ = ["ExponentMax", "SignificandShifter", "PairSelector", "RangeCounter", "IndexMapper",
           "Selection", "TwoStageSelection", "BDQuantizer", "STAGE1_RULES", "PAIR_BITS"]

PAIR_BITS = (NUM_PAIRS - 1).bit_length()     # 3
MAN_BITS = FP16_MAN_BITS
# SPEC 4.2 [revised]: the stage-1 rules, and the golden.bd method each one implements (SPEC 10).
STAGE1_RULES = {"round": "two_stage", "trunc": "two_stage_trunc"}
# The zero block needs no special case in the index mapper only because q = 0 is below every
# dialect's first midpoint (SPEC 3: every idx of a zero block is 0).
assert min(MIDPOINTS[:, 0].tolist()) >= 1


def _fields(x):
    """FP16 bits -> (sign, exponent field, mantissa field)."""
    return x[FP16_BITS - 1], x[MAN_BITS:MAN_BITS + EXP_BITS], x[:MAN_BITS]


def check_stage1(stage1) -> str:
    if stage1 not in STAGE1_RULES:
        raise ValueError(f"stage1 must be one of {tuple(STAGE1_RULES)}, got {stage1!r}")
    return stage1


class ExponentMax(wiring.Component):
    """Shared exponent of a block (SPEC 1, SPEC 3).

    Ports: ``data`` in, B FP16 elements; ``exp`` out 5, ``E = max(ex_k)`` with subnormal and
    non-finite elements counted as ``ex = 0``; ``invalid`` out 1, some ``ex_k == 31``.
    """

    def __init__(self, B: int = 32):
        self.B = B
        super().__init__({
            "data": In(data.ArrayLayout(FP16_BITS, self.B)),
            "exp": Out(EXP_BITS),
            "invalid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.tree = tree = MaxTree(EXP_BITS, self.B)
        nonfinite = Signal(self.B)
        for k in range(self.B):
            _, ex, _ = _fields(self.data[k])
            m.d.comb += [
                nonfinite[k].eq(ex == EXP_FIELD_NONFINITE),
                tree.values[k].eq(Mux(nonfinite[k], 0, ex)),
            ]
        m.d.comb += [
            self.exp.eq(tree.max),
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

    def __init__(self, B: int = 32, stage1: str = "round"):
        self.B = B
        try:
            self.stage1 = check_stage1(stage1)
        except ValueError:
            reject(self)
            raise
        super().__init__({
            "q": In(data.ArrayLayout(Q_BITS, self.B)),
            "qmax": Out(Q_BITS),
            "pair": Out(PAIR_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.tree = tree = MaxTree(Q_BITS, self.B)
        m.d.comb += [tree.values.eq(self.q), self.qmax.eq(tree.max)]
        if self.stage1 == "trunc":
            # p = 15 - (qmax >> 1) = ~qmax[3:1] for qmax in [16, 31]
            m.d.comb += self.pair.eq(~self.qmax[1:1 + PAIR_BITS])
        else:
            # r = (qmax + 1) >> 1 in [8, 16]; p = max(0, 15 - r): 0 when r = 16, else 7 - r[2:0]
            r = Signal(Q_BITS, name="rounded")
            m.d.comb += [
                r.eq((self.qmax + 1)[1:]),
                self.pair.eq(Mux(r[PAIR_BITS + 1], 0, ~r[:PAIR_BITS])),
            ]
        return m


class RangeCounter(wiring.Component):
    """Stage 2 of SPEC 4: pick dialect A or B of pair ``pair`` by counting beneficial elements.

    Ports: ``q`` in, B x 5 bits; ``pair`` in 3; ``count_a``, ``count_b`` out (enough bits for B):
    the numbers of ``q_k`` in ``[lo, hi)`` of ``STAGE2_RANGES[2p]`` and ``STAGE2_RANGES[2p + 1]``;
    ``dialect`` out 4, ``2p`` if ``count_a >= count_b`` (ties to A) else ``2p + 1``.
    """

    def __init__(self, B: int = 32):
        self.B = B
        cbits = self.B.bit_length()
        super().__init__({
            "q": In(data.ArrayLayout(Q_BITS, self.B)),
            "pair": In(PAIR_BITS),
            "count_a": Out(cbits),
            "count_b": Out(cbits),
            "dialect": Out(DIALECT_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        ranges = STAGE2_RANGES.tolist()
        if max(hi for _, hi in ranges) >> Q_BITS:
            raise AssertionError("stage-2 ranges must fit in the 5-bit range of q")
        bounds = {name: Signal(Q_BITS, name=name) for name in ("lo_a", "hi_a", "lo_b", "hi_b")}
        with m.Switch(self.pair):
            for p in range(NUM_PAIRS):
                (lo_a, hi_a), (lo_b, hi_b) = ranges[2 * p], ranges[2 * p + 1]
                with m.Case(p):
                    m.d.comb += [bounds["lo_a"].eq(lo_a), bounds["hi_a"].eq(hi_a),
                                 bounds["lo_b"].eq(lo_b), bounds["hi_b"].eq(hi_b)]
        in_a = Signal(self.B)
        in_b = Signal(self.B)
        for k in range(self.B):
            q = self.q[k]
            m.d.comb += [
                in_a[k].eq((q >= bounds["lo_a"]) & (q < bounds["hi_a"])),
                in_b[k].eq((q >= bounds["lo_b"]) & (q < bounds["hi_b"])),
            ]
        m.d.comb += [
            self.count_a.eq(tree_sum(in_a[k] for k in range(self.B))),
            self.count_b.eq(tree_sum(in_b[k] for k in range(self.B))),
            self.dialect.eq(Cat(self.count_b > self.count_a, self.pair)),
        ]
        return m


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
            m.d.comb += self.idx[k].eq(tree_sum(q >= mids[i] for i in range(nmid)))
        return m


class Selection:
    """How the quantizer frame picks a block's dialect, in two pipeline stages.

    :meth:`first` is the logic between the stage-0 registers (``elements``, the FP16 data, and ``exp``) and the stage-1
    registers; its result, of shape :meth:`state_shape`, is registered there beside ``q``.
    :meth:`second` turns that state (and the registered ``q``) into the dialect, registered in
    stage 2 (the frame forces dialect 0 for a zero block). Both add their submodules to ``m``.
    ``method`` names the ``golden.bd.quantize`` method whose dialects it reproduces.
    """

    method: str = ""

    def state_shape(self, B: int):
        raise NotImplementedError

    def first(self, m: Module, B: int, elements, exp, q):
        raise NotImplementedError

    def second(self, m: Module, B: int, state, q):
        raise NotImplementedError


class TwoStageSelection(Selection):
    """SPEC 4 stages 1 and 2: :class:`PairSelector` (with the ``stage1`` rule), then
    :class:`RangeCounter`."""

    def __init__(self, stage1: str = "round"):
        self.stage1 = check_stage1(stage1)
        self.method = STAGE1_RULES[self.stage1]

    def state_shape(self, B: int):
        return PAIR_BITS

    def first(self, m, B, elements, exp, q):
        m.submodules.pair = pair = PairSelector(B, self.stage1)
        m.d.comb += pair.q.eq(q)
        return pair.pair

    def second(self, m, B, state, q):
        m.submodules.ranges = ranges = RangeCounter(B)
        m.d.comb += [ranges.q.eq(q), ranges.pair.eq(state)]
        return ranges.dialect


class BDQuantizer(wiring.Component):
    """``bd_quantizer`` for block size ``B`` (16, 32 or 64); see the module docstring.

    ``stage1`` is the SPEC 4.2 rule of the two-stage selection (``"round"``, the default, or
    ``"trunc"``); ``selection`` replaces the two-stage selection altogether (a :class:`Selection`,
    for example the benchmark's MSE selection), in which case ``stage1`` must be left alone.
    :attr:`method` is the ``golden.bd.quantize`` method the unit reproduces bit for bit.
    Raises ``ValueError`` naming ``B``, ``stage1`` or ``selection``.
    """

    #: Cycles from acceptance on ``i`` to presentation on ``o`` with ``o.ready`` high.
    LATENCY = 4

    def __init__(self, B: int = 32, stage1: str = "round", selection: Selection | None = None):
        self.B = unit_block_size(B, self)
        if selection is None:
            try:
                selection = TwoStageSelection(stage1)
            except ValueError:
                reject(self)
                raise
        elif stage1 != "round" or not isinstance(selection, Selection):
            reject(self)
            raise ValueError("selection must be a Selection, given without stage1")
        self.selection = selection
        super().__init__({
            "i": In(stream.Signature(quantizer_input_layout(self.B))),
            "o": Out(stream.Signature(quantizer_output_layout(self.B))),
        })

    @property
    def latency(self) -> int:
        """Pipeline latency in clock cycles (4)."""
        return self.LATENCY

    @property
    def method(self) -> str:
        """The ``golden.bd.quantize`` method of this unit (``two_stage``, ``two_stage_trunc``, ...)."""
        return self.selection.method

    def elaborate(self, platform):
        m = Module()
        B, sel = self.B, self.selection
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

        # Stage 1: 5-bit intermediates and the first half of the selection.
        m.submodules.shifter = shifter = SignificandShifter(B)
        m.d.comb += [shifter.data.eq(s0_data), shifter.exp.eq(s0_exp)]
        first = sel.first(m, B, s0_data, s0_exp, shifter.q)
        s1_q = reg(data.ArrayLayout(Q_BITS, B), "s1_q")
        s1_sign = reg(B, "s1_sign")
        s1_exp = reg(EXP_BITS, "s1_exp")
        s1_invalid = reg(1, "s1_invalid")
        s1_state = reg(sel.state_shape(B), "s1_select")
        with m.If(stage(1)):
            m.d.sync += [
                s1_q.eq(shifter.q),
                s1_sign.eq(Cat(s0_data[k][FP16_BITS - 1] for k in range(B))),
                s1_exp.eq(s0_exp),
                s1_invalid.eq(s0_invalid),
                s1_state.eq(first),
            ]

        # Stage 2: the dialect (SPEC 3: a zero block is dialect 0).
        dialect = sel.second(m, B, s1_state, s1_q)
        s2_q = reg(data.ArrayLayout(Q_BITS, B), "s2_q")
        s2_sign = reg(B, "s2_sign")
        s2_exp = reg(EXP_BITS, "s2_exp")
        s2_invalid = reg(1, "s2_invalid")
        s2_dialect = reg(DIALECT_BITS, "s2_dialect")
        with m.If(stage(2)):
            m.d.sync += [
                s2_q.eq(s1_q), s2_sign.eq(s1_sign), s2_exp.eq(s1_exp), s2_invalid.eq(s1_invalid),
                s2_dialect.eq(Mux(s1_exp.any(), dialect, 0)),
            ]

        # Stage 3: element indices -> output register. In a zero block every q is 0 and every
        # midpoint is at least 1, so every idx is 0 without a special case. The MSE choice of
        # SPEC 5 rounds each element to nearest, ties up, which the midpoint compare on q gives
        # exactly too (SPEC 4.4).
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
