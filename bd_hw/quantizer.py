"""``bd_quantizer``: online two-stage BlockDialect quantizer (SPEC 1, 3, 4, 9).

One block of ``B`` FP16 elements per clock in, one quantized block per clock out.

Streams (``amaranth.lib.stream``, payload layouts from :mod:`bd_hw.layouts`):

- ``i``: payload ``data``, B FP16 bit patterns, element k at ``[16k +: 16]``.
- ``o``: payload ``codes`` (4B, element k at ``[4k +: 4]``, ``code = sign << 3 | idx``),
  ``dialect`` (4), ``exp`` (5, the shared exponent E; 0 marks an all-zero block), ``invalid``
  (1: some element was Inf or NaN).

**Latency: 4 clock cycles** (:attr:`BDQuantizer.latency`): a beat transferred on ``i`` at rising
edge ``n`` (``i.valid`` and ``i.ready`` high there) raises ``o.valid`` after edge ``n + 3`` and, with
``o.ready`` high, is transferred on ``o`` at edge ``n + 4``. Throughput is one block per clock. Under back-pressure every stage holds its registers;
a stage may load while the one after it is empty, so bubbles collapse (see :mod:`bd_hw.pipeline`).
``o.valid`` comes from a register; ``i.ready`` depends combinationally on ``o.ready`` and ``rst``
only (it is low during reset).

Pipeline (each line ends in a register stage):

1. :class:`ExponentMax`: FTZ and non-finite handling, ``E = max(ex_k)``, ``invalid``.
2. :class:`SignificandShifter`: ``q_k = M_k >> (6 + E - ex_k)``; :class:`~bd_hw.arith.MaxTree`
   gives ``qmax``, and the pair ``p = 15 - (qmax >> 1)``.
3. :class:`RangeCounter`: stage-2 counts over the pair's two beneficial ranges, ties to A; the
   zero block (``E == 0``) forces dialect 0.
4. :class:`IndexMapper`: ``idx_k`` = number of the dialect's midpoints ``<= q_k`` (ties up);
   ``code_k = s_k << 3 | idx_k``.

Every table (stage-2 ranges, midpoints) is read from :mod:`golden.formatbook`.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.formatbook import (DIALECT_BITS, EXP_BITS, LEVELS, MIDPOINTS, NUM_DIALECTS, NUM_PAIRS,
                               STAGE2_RANGES)

from .arith import MaxTree, tree_sum
from .decoder import pack_row
from .layouts import (FP16_BITS, check_block_size, quantizer_input_layout,
                      quantizer_output_layout)
from .pipeline import pipeline_control, take

__all__ = ["ExponentMax", "SignificandShifter", "RangeCounter", "IndexMapper", "BDQuantizer",
           "Q_BITS", "PAIR_BITS", "IDX_BITS"]

Q_BITS = 5                                   # SPEC 4.1: quarter-units, 3 integer + 2 fraction bits
PAIR_BITS = (NUM_PAIRS - 1).bit_length()     # 3
IDX_BITS = (LEVELS - 1).bit_length()         # 3
# The zero block needs no special case in the index mapper only because q = 0 is below every
# dialect's first midpoint (SPEC 3: every idx of a zero block is 0).
assert min(MIDPOINTS[:, 0].tolist()) >= 1
MAN_BITS = 10                                # FP16 mantissa field
EX_NONFINITE = (1 << EXP_BITS) - 1           # 31: Inf / NaN


def _fields(x):
    """FP16 bits -> (sign, exponent field, mantissa field)."""
    return x[FP16_BITS - 1], x[MAN_BITS:MAN_BITS + EXP_BITS], x[:MAN_BITS]


class ExponentMax(wiring.Component):
    """Shared exponent of a block (SPEC 1, SPEC 3).

    Ports: ``data`` in, B FP16 elements; ``exp`` out 5, ``E = max(ex_k)`` with subnormal and
    non-finite elements counted as ``ex = 0``; ``invalid`` out 1, some ``ex_k == 31``.
    """

    def __init__(self, B: int = 32):
        self.B = check_block_size(B, owner=self)
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
                nonfinite[k].eq(ex == EX_NONFINITE),
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
        self.B = check_block_size(B, owner=self)
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
            normal = (ex != 0) & (ex != EX_NONFINITE)
            m.d.comb += [
                d.eq(self.exp - ex),
                # d < 5, written on the low 3 bits so that no width-mismatched compare is emitted
                self.q[k].eq(Mux(normal & ~d[3:].any() & (d[:3] < Q_BITS), top >> d[:3], 0)),
            ]
        return m


class RangeCounter(wiring.Component):
    """Stage 2 of SPEC 4: pick dialect A or B of pair ``pair`` by counting beneficial elements.

    Ports: ``q`` in, B x 5 bits; ``pair`` in 3; ``count_a``, ``count_b`` out (enough bits for B):
    the numbers of ``q_k`` in ``[lo, hi)`` of ``STAGE2_RANGES[2p]`` and ``STAGE2_RANGES[2p + 1]``;
    ``dialect`` out 4, ``2p`` if ``count_a >= count_b`` (ties to A) else ``2p + 1``.
    """

    def __init__(self, B: int = 32):
        self.B = check_block_size(B, owner=self)
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
        self.B = check_block_size(B, owner=self)
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


class BDQuantizer(wiring.Component):
    """``bd_quantizer`` for block size ``B`` (16, 32 or 64); see the module docstring.

    Raises ``ValueError`` naming ``B`` for an unsupported block size.
    """

    #: Cycles from acceptance on ``i`` to presentation on ``o`` with ``o.ready`` high.
    LATENCY = 4

    def __init__(self, B: int = 32):
        self.B = check_block_size(B, owner=self)
        super().__init__({
            "i": In(stream.Signature(quantizer_input_layout(self.B))),
            "o": Out(stream.Signature(quantizer_output_layout(self.B))),
        })

    @property
    def latency(self) -> int:
        """Pipeline latency in clock cycles (4)."""
        return self.LATENCY

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

        # Stage 1: 5-bit intermediates, qmax and the pair.
        m.submodules.shifter = shifter = SignificandShifter(B)
        m.submodules.qmax = qmax = MaxTree(Q_BITS, B)
        m.d.comb += [shifter.data.eq(s0_data), shifter.exp.eq(s0_exp), qmax.values.eq(shifter.q)]
        s1_q = reg(data.ArrayLayout(Q_BITS, B), "s1_q")
        s1_sign = reg(B, "s1_sign")
        s1_exp = reg(EXP_BITS, "s1_exp")
        s1_invalid = reg(1, "s1_invalid")
        s1_pair = reg(PAIR_BITS, "s1_pair")
        with m.If(stage(1)):
            m.d.sync += [
                s1_q.eq(shifter.q),
                s1_sign.eq(Cat(s0_data[k][FP16_BITS - 1] for k in range(B))),
                s1_exp.eq(s0_exp),
                s1_invalid.eq(s0_invalid),
                # p = 15 - (qmax >> 1) = ~qmax[3:1] for qmax in [16, 31]
                s1_pair.eq(~qmax.max[1:1 + PAIR_BITS]),
            ]

        # Stage 2: dialect (zero block -> dialect 0).
        m.submodules.ranges = ranges = RangeCounter(B)
        m.d.comb += [ranges.q.eq(s1_q), ranges.pair.eq(s1_pair)]
        s2_q = reg(data.ArrayLayout(Q_BITS, B), "s2_q")
        s2_sign = reg(B, "s2_sign")
        s2_exp = reg(EXP_BITS, "s2_exp")
        s2_invalid = reg(1, "s2_invalid")
        s2_dialect = reg(DIALECT_BITS, "s2_dialect")
        with m.If(stage(2)):
            m.d.sync += [
                s2_q.eq(s1_q), s2_sign.eq(s1_sign), s2_exp.eq(s1_exp), s2_invalid.eq(s1_invalid),
                s2_dialect.eq(Mux(s1_exp.any(), ranges.dialect, 0)),
            ]

        # Stage 3: element indices -> output register. In a zero block every q is 0 and every
        # midpoint is at least 1, so every idx is 0 without a special case.
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
