"""``bd_dot``: BlockDialect block dot product, exact or rounded accumulation (SPEC 6, 6.1, SPEC 9).

Streams (payload layouts from :mod:`bd_hw.layouts`):

- ``i``: ``a_codes`` 4B, ``a_dialect`` 4, ``a_exp`` 5, ``w_codes`` 4B, ``w_dialect`` 4, ``w_exp`` 5,
  ``last`` 1: one activation block and one weight block per beat.
- ``o``: ``result`` 32, IEEE binary32 bits of the dot product of all beats since the previous
  ``last`` (inclusive of the beat with ``last = 1``).

Each beat adds the exact block value ``S * 2^(E_a + E_w - 36)`` to an integer accumulator ``A`` in
units of ``2^-36``. After a beat with ``last = 1`` the unit emits ``A`` rounded once to FP32
(nearest, ties to even; a zero sum is +0.0) and starts a new sum from 0. Beats with ``last = 0``
produce no output.

``A`` has ``ceil(log2(225 B)) + 1 + 60 + ceil(log2(max_blocks))`` bits (SPEC 6), so the sum is exact
for up to ``max_blocks`` beats per result and exponents ``E <= 30`` (SPEC 3); longer sums wrap, and
exponent fields of 31 (never produced by ``bd_quantizer``) are outside the contract.

**Latency: 6 + pipeline clock cycles** for ``pipeline`` 0 to 4, and 10 at the deepest setting,
``pipeline`` 5 and 6 (6: ``bd_dot_fast``), whose fifth and sixth cuts add no stage (:attr:`BDDot.latency`;
``pipeline`` is 0 by default, see :class:`BDDot` for its cut points): for a beat with ``last = 1`` transferred on ``i`` at rising edge
``n``, ``o.valid`` rises after edge ``n + latency - 1`` and, with ``o.ready`` high, the result is
transferred on ``o`` at edge ``n + latency``.
One beat per clock at every setting; back-pressure holds every stage; ``o.valid`` is a register.
Under back-pressure the unit holds :attr:`BDDot.capacity` results: its latency, and one more at
``pipeline = 6`` (the skid buffer's spare bank).

Pipeline (each line ends in a register stage; optional cuts in brackets):

1. two :class:`~bd_hw.decoder.BDDecoder` [``"decode"``] + :class:`MultiplierArray`: signed
   products ``P_k``, each negative one as a ones' complement, and the count of those (its +1s);
   ``E_a + E_w``.
2. exact block sum ``S`` by an adder tree [``"tree"``, after sums of 8 products], the count of
   negative products added last.
3. :class:`ExactAccumulator` (2 stages): ``S << (E_a + E_w)``, then ``A += term``; on ``last`` the
   total moves on and ``A`` restarts at 0.
4. :class:`FP32Normaliser` (2 stages): absolute value [``"abs"``], leading-zero count [``"lzc"``]
   and normalising shift, then round-to-nearest-even and packing.

``accumulate="fp32"`` or ``"fp16"`` (SPEC 6.1) keep steps 1 and 2 and replace 3 and 4 by
:class:`bd_hw.float_add.FloatAccumulator` (3 stages): the block value converted to the format in two
(exact in FP32, rounded in FP16) and unpacked, then added to the unpacked running sum by a near/far
float adder, rounding at every beat (the one-cycle loop); "fp16" adds one stage that widens the
FP16 total to FP32. **Latency: 5 + pipeline ("fp32"), 6 + pipeline ("fp16")**, with the cut points
``"tree"`` and ``"decode"``. These modes need no wide
accumulator, so ``max_blocks`` does not limit them.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import C, Cat, Module, Mux, Signal, signed
from amaranth.utils import ceil_log2
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.spec import DEFAULT_MAX_BLOCKS, H_BITS, MAX_EXP_SUM, MAX_PRODUCT
from golden.spec import PRODUCT_EXP_OFFSET as FRAC_BITS   # SPEC 6: A is in units of 2^-36

from .arith import leading_zeros, tree_sum
from .decoder import BDDecoder
from .float_add import EXP_SUM_BITS, FORMATS, FloatAccumulator, FloatWiden
from .layouts import DECODED_BITS, dot_input_layout, dot_output_layout
from .params import (SHARED_PRODUCTS, DotParams, Params, ParametrisedComponent, accumulator_bits,
                     block_sum_bits)
from .pipeline import Stages

__all__ = ["MultiplierArray", "PackedMultiplierArray", "AdderTree", "ExactAccumulator", "FP32Normaliser", "BDDot",
           "FRAC_BITS", "MAX_EXP_SUM", "PRODUCT_BITS", "block_sum_bits", "accumulator_bits"]

PRODUCT_BITS = MAX_PRODUCT.bit_length() + 1    # 9, signed: |P_k| <= 225


class MultiplierArray(wiring.Component):
    """B sign-magnitude 4x4 multipliers (SPEC 6), the sign applied as a ones' complement.

    Ports: ``a``, ``w`` in, B lanes of 5 bits ``{sign, h[3:0]}`` (the decoder's lanes);
    ``products`` out, B lanes of signed 9 bits (two's complement), and ``carries`` out, B bits:
    ``products[k] + carries[k] = P_k = (-1)^(s_a xor s_w) * h_a * h_w``. A negative product is
    given as the complement of its magnitude, ``-h_a h_w - 1``, with its ``+1`` in ``carries``:
    the unit adds the B carry bits once, by a popcount, instead of negating every lane (with
    ``bd_dot``'s decoders, ``decoder_lut`` in ``bench/hw/lane_products.py``; ``decoder_defer``
    with ``products="dsp"``).

    ``products`` says how the 4x4 magnitude product is written (:data:`~bd_hw.params.PRODUCTS`):
    ``"lut"``, the sum of four shifted partial products ``h_a * w_i * 2^i`` (no multiply operator,
    so FPGA mappers build it from LUTs and carry chains), or ``"dsp"``, a ``*``, which yosys maps to
    one 18x18 DSP block per lane on the ECP5.
    """

    def __init__(self, B: int = 32, products: str = "lut"):
        self.B, self.products_as = B, products       # checked by the unit
        super().__init__({
            "a": In(data.ArrayLayout(DECODED_BITS, self.B)),
            "w": In(data.ArrayLayout(DECODED_BITS, self.B)),
            "products": Out(data.ArrayLayout(signed(PRODUCT_BITS), self.B)),
            "carries": Out(self.B),
        })

    def elaborate(self, platform):
        m = Module()
        for k in range(self.B):
            a, w = self.a[k], self.w[k]
            h_a, h_w = a[:H_BITS], w[:H_BITS]
            negative = Signal(name=f"neg{k}")
            mag = Signal(2 * H_BITS, name=f"mag{k}")
            m.d.comb += negative.eq(a[H_BITS] ^ w[H_BITS])
            if self.products_as == "dsp":
                m.d.comb += mag.eq(h_a * h_w)
            else:
                m.d.comb += mag.eq(_array_product(m, h_a, h_w, f"p{k}"))
            _complement(m, mag, negative, self.products[k], self.carries, k)
        return m


def _array_product(m: Module, x, y, name: str):
    """``x * y`` of two unsigned values of ``n`` bits as an array multiplier, with no multiply
    operator (so FPGA mappers build it from LUTs and carries): row ``i`` is ``x`` gated by ``y_i``,
    added to the upper bits of the rows above it. Every adder takes two operands of one width, so
    the Verilog holds no implicit widening; the first row pair is split at its top bit for that."""
    n = len(x)
    rows = []
    for i in range(n):
        row = Signal(n, name=f"{name}_row{i}")
        m.d.comb += row.eq(x & y[i].replicate(n))
        rows.append(row)
    low = Signal(n, name=f"{name}_s1_low")             # rows[0] / 2 + rows[1] without its top bit
    top = Signal(2, name=f"{name}_s1_top")
    m.d.comb += [low.eq(rows[0][1:] + rows[1][:n - 1]), top.eq(low[n - 1] + rows[1][n - 1])]
    acc = Cat(low[:n - 1], top)                        # n + 1 bits: rows[0] / 2 + rows[1]
    bits = [rows[0][0]]
    for i in range(2, n):
        step = Signal(n + 1, name=f"{name}_s{i}")
        m.d.comb += step.eq(acc[1:] + rows[i])
        bits.append(acc[0])
        acc = step
    return Cat(*bits, acc)


def _complement(m: Module, mag, negative, product, carries, k: int):
    """Lane ``k``'s signed product as ``product + carries[k]``: the 8-bit magnitude, complemented
    when the product is negative, and the +1 of that negation as the carry."""
    m.d.comb += [product.eq(Cat(mag ^ negative.replicate(2 * H_BITS), negative).as_signed()),
                 carries[k].eq(negative)]


class PackedMultiplierArray(wiring.Component):
    """Two rows' products of one activation block, two per multiplier (``bd_linear``'s
    ``products="dsp_packed"``).

    Ports: ``a``, ``w0``, ``w1`` in, B lanes of 5 bits ``{sign, h[3:0]}``; ``products0``,
    ``carries0`` and ``products1``, ``carries1`` out, each pair as :class:`MultiplierArray`'s for
    ``(a, w0)`` and ``(a, w1)``.

    Lane k multiplies magnitudes only: ``(h_w1 * 2^8 + h_w0) * h_a = h_w1 h_a 2^8 + h_w0 h_a``,
    a 12 x 4-bit product that yosys maps to one MULT18X18D on the ECP5. Both fields are at most
    ``15 * 15 = 225 < 2^8`` (SPEC 6), so bits 0-7 hold row 0's magnitude and bits 8-15 row 1's with
    no carry between them; each sign is then applied to its own field as in :class:`MultiplierArray`.
    """

    FIELD = 2 * H_BITS
    assert MAX_PRODUCT < 1 << FIELD          # the two fields of a packed product cannot overlap

    def __init__(self, B: int = 32):
        self.B = B
        lanes = data.ArrayLayout(DECODED_BITS, self.B)
        products = data.ArrayLayout(signed(PRODUCT_BITS), self.B)
        super().__init__({
            "a": In(lanes), "w0": In(lanes), "w1": In(lanes),
            "products0": Out(products), "carries0": Out(self.B),
            "products1": Out(products), "carries1": Out(self.B),
        })

    def elaborate(self, platform):
        m = Module()
        F = self.FIELD
        for k in range(self.B):
            a, w0, w1 = self.a[k], self.w0[k], self.w1[k]
            packed = Signal(F + H_BITS, name=f"packed{k}")
            wide = Signal(2 * F, name=f"wide{k}")
            m.d.comb += [packed.eq(Cat(w0[:H_BITS], C(0, F - H_BITS), w1[:H_BITS])),
                         wide.eq(packed * a[:H_BITS])]
            for row, w, products, carries in ((0, w0, self.products0, self.carries0),
                                              (1, w1, self.products1, self.carries1)):
                negative = Signal(name=f"neg{k}_{row}")
                m.d.comb += negative.eq(a[H_BITS] ^ w[H_BITS])
                _complement(m, wide[row * F:(row + 1) * F], negative, products[k], carries, k)
        return m


class AdderTree(wiring.Component):
    """Exact signed sum of B products (SPEC 6): a balanced adder tree.

    Ports: ``products`` in, B lanes of signed 9 bits; ``sum`` out, signed
    :func:`block_sum_bits` bits (14 at B = 32).
    """

    def __init__(self, B: int = 32):
        self.B = B
        super().__init__({
            "products": In(data.ArrayLayout(signed(PRODUCT_BITS), self.B)),
            "sum": Out(signed(block_sum_bits(self.B))),
        })

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.sum.eq(tree_sum((self.products[k] for k in range(self.B)), m=m))
        return m


class ExactAccumulator(wiring.Component):
    """Exact sum of block values in units of 2^-36 (SPEC 6); a stream component.

    ``i`` payload: ``sum`` (signed :func:`block_sum_bits`), ``exp`` (6 bits, ``E_a + E_w``),
    ``last`` (1). ``o`` payload: ``total``, signed :func:`accumulator_bits`, the exact sum
    ``sum(S_j * 2^exp_j)`` of the beats since the previous ``last``, one beat per ``last``.
    Latency 2: for a ``last`` beat accepted at edge ``t``, ``o.valid`` rises after edge ``t + 1`` and,
    with ``o.ready`` high, the total is transferred at edge ``t + 2`` (the convention of :class:`BDDot`).
    """

    LATENCY = DotParams.ACCUMULATOR_LATENCY

    def __init__(self, B: int = 32, max_blocks: int = DEFAULT_MAX_BLOCKS):
        self.B, self.max_blocks = B, max_blocks      # checked by the unit
        self.width = accumulator_bits(self.B, self.max_blocks)
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "sum": signed(block_sum_bits(self.B)),
                "exp": EXP_SUM_BITS,
                "last": 1,
            }))),
            "o": Out(stream.Signature(data.StructLayout({"total": signed(self.width)}))),
        })

    @property
    def latency(self) -> int:
        return self.LATENCY

    def elaborate(self, platform):
        m = Module()
        W = self.width
        # Stage T: the block value as a W-bit term.
        t_valid = Signal()
        t_term = Signal(signed(W), reset_less=True)
        t_last = Signal(reset_less=True)
        # Stage O: the finished total; `running` is the running sum (state, not a pipeline stage).
        o_valid = Signal()
        o_total = Signal(signed(W), reset_less=True)
        running = Signal(signed(W))
        wide = Signal(signed(W))
        m.d.comb += wide.eq(self.i.payload.sum)
        # Barrel shifter S << (E_a + E_w), one constant-shift stage per bit of the shift amount,
        # each truncated to W bits.
        shifted = wide
        for j in range(EXP_SUM_BITS):
            step = Signal(signed(W), name=f"shift{j}")
            m.d.comb += step.eq(Mux(self.i.payload.exp[j], (shifted << (1 << j))[:W], shifted))
            shifted = step

        o_load = Signal()
        t_fire = Signal()      # stage T's beat is consumed this cycle
        t_load = Signal()
        m.d.comb += [
            o_load.eq(~o_valid | self.o.ready),
            t_fire.eq(t_valid & (~t_last | o_load)),
            t_load.eq(~t_valid | t_fire),
            self.i.ready.eq(t_load),
            self.o.valid.eq(o_valid),
            self.o.payload.total.eq(o_total),
        ]
        with m.If(t_load):
            m.d.sync += t_valid.eq(self.i.valid)
            with m.If(self.i.valid):
                m.d.sync += [
                    t_term.eq(shifted),
                    t_last.eq(self.i.payload.last),
                ]
        total = Signal(signed(W))
        m.d.comb += total.eq(running + t_term)
        with m.If(o_load):
            m.d.sync += o_valid.eq(t_fire & t_last)
        with m.If(t_fire):
            with m.If(t_last):
                m.d.sync += [o_total.eq(total), running.eq(0)]
            with m.Else():
                m.d.sync += running.eq(total)
        return m


@dataclass(frozen=True)
class NormaliserParams(Params):
    """:class:`FP32Normaliser`: input ``width``, ``frac_bits`` and optional ``cuts``."""

    width: int
    frac_bits: int = FRAC_BITS
    cuts: frozenset = frozenset()

    CUT_POINTS = DotParams.NORMALISER_CUT_POINTS
    LATENCY = DotParams.NORMALISER_LATENCY          # without cuts

    def __post_init__(self):
        object.__setattr__(self, "cuts", frozenset(self.cuts))
        if self.width < 2:
            raise ValueError(f"width must be at least 2, not {self.width!r}")
        # Smallest non-zero magnitude 2^-frac_bits must be normal; the largest, rounded up to a
        # power of two, 2^(width - 1 - frac_bits), must stay below 2^128.
        if 127 - self.frac_bits < 1 or self.width - 1 - self.frac_bits + 127 > 254:
            raise ValueError(f"width={self.width}, frac_bits={self.frac_bits} leave the FP32 "
                             "normal range")
        if not self.cuts <= set(self.CUT_POINTS):
            raise ValueError(f"cuts must be taken from {self.CUT_POINTS}, not {sorted(self.cuts)}")

    @property
    def latency(self) -> int:
        return self.LATENCY + len(self.cuts)


class FP32Normaliser(ParametrisedComponent):
    """Signed integer in units of ``2^-frac_bits`` -> IEEE binary32, nearest even (SPEC 6).

    A stream component. ``i`` payload: ``value``, signed ``width`` bits; ``o`` payload:
    ``result``, 32 bits. Zero gives +0.0. Two register stages, and one more per optional cut point
    in ``cuts`` (a subset of :data:`CUT_POINTS`, in any order); :attr:`latency` is their number.

    1. absolute value (a ``width``-bit negation); *cut* ``"abs"``; leading-zero count of the
       magnitude by a tree (``log2 P`` levels of a 2:1 choice, ``P`` = the next power of two
       ``>= width``, at least 32); *cut* ``"lzc"``; barrel shift left by the count, which puts the
       leading one at bit ``P - 1``; register.
    2. round-to-nearest-even and packing; register.

    Raises ``ValueError`` if some ``width``-bit value would be subnormal or overflow in FP32
    (it never is for the accumulator widths of SPEC 6), or for an unknown cut point.
    """

    Params = NormaliserParams
    CUT_POINTS = NormaliserParams.CUT_POINTS
    LATENCY = NormaliserParams.LATENCY

    def __init__(self, *args, **kwargs):
        p = self.settle(*args, **kwargs)
        self.width, self.frac_bits, self.cuts = p.width, p.frac_bits, p.cuts
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"value": signed(self.width)}))),
            "o": Out(stream.Signature(data.StructLayout({"result": 32}))),
        })

    def elaborate(self, platform):
        m = Module()
        W = self.width
        # Normalise into P = max(32, next power of two >= W) bits with the value's top bit at P - 1.
        P = max(32, 1 << ceil_log2(W))

        st = Stages(m, self.latency, self.i.valid, self.i.ready, self.o.ready)
        m.d.comb += self.o.valid.eq(st.valid)

        x = self.i.payload.value
        mag = Signal(W, name="mag")
        m.d.comb += mag.eq(Mux(x[W - 1], -x, x))
        v = st.cut("abs", "abs" in self.cuts, sign=x[W - 1], mag=mag)
        wide = Signal(P, name="wide")
        m.d.comb += wide.eq(v.pop("mag") << (P - W))
        zero, lz = leading_zeros(wide, m=m)
        v = st.cut("lzc", "lzc" in self.cuts, **v, zero=zero, lz=lz, wide=wide)
        # Barrel shift by the count, one constant-shift step per bit of it, each truncated to P.
        shifted = v["wide"]
        for j in range(len(v["lz"])):
            step = Signal(P, name=f"normalise{j}")
            m.d.comb += step.eq(Mux(v["lz"][j], (shifted << (1 << j))[:P], shifted))
            shifted = step
        lz = Signal(ceil_log2(P) + 1, name="lz")      # one spare bit: exp_field = bias - lz below
        m.d.comb += lz.eq(v["lz"])
        s1 = st.register("s1", sign=v["sign"], zero=v["zero"], lz=lz, norm=shifted)

        # Stage 2: value = norm * 2^(W - 1 - lz - frac_bits - (P - 1)); biased exponent below.
        bias = 127 + W - 1 - self.frac_bits
        norm = s1["norm"]
        mant = norm[P - 24:P - 1]
        guard = norm[P - 25]
        sticky = norm[:P - 25].any()
        exp_field = Signal(8, name="exp_field")
        m.d.comb += exp_field.eq(bias - s1["lz"])
        rounded = Signal(31, name="rounded")
        round_up = guard & (sticky | mant[0])
        m.d.comb += rounded.eq(Cat(mant, exp_field) + round_up)
        s2 = st.register("s2", result=Mux(s1["zero"], 0, Cat(rounded, s1["sign"])))
        m.d.comb += self.o.payload.result.eq(s2["result"])
        return m


class BDDot(ParametrisedComponent):
    """``bd_dot`` for block size ``B`` (16, 32 or 64), ``max_blocks`` >= 1 beats per result,
    ``pipeline`` extra register stages (0 to ``len(CUT_POINTS)``) and the SPEC 6.1 ``accumulate``
    mode: the arguments of :class:`~bd_hw.params.DotParams` (or one).

    ``pipeline = n`` inserts registers at the first ``n`` of :data:`CUT_POINTS`, which are ordered
    by where the time goes on an FPGA (the longest path of the unit with the cuts before it taken,
    measured after place and route; ``reports/synth/timing.md``; for the fifth, in ``bd_linear``'s
    stall-free dot units):

    - ``"abs"``: in the FP32 normaliser, between the 82-bit absolute value and the leading-zero
      normalisation;
    - ``"lzc"``: in the FP32 normaliser, between the leading-zero count and the normalising shift;
    - ``"tree"``: in the middle of the adder tree (after sums of 8 products);
    - ``"decode"``: between the two decoders and the multipliers;
    - ``"negatives"``: no new stage; the count of negative products (their +1s) is split at the
      tree's runs of 8 lanes: the product stage registers each run's count (4 bits) instead of
      their total, and the block-sum stage adds the counts beside the tree. The 32-lane count
      was the longest path left in the product stage (into ``s1_negatives``, from the decoded
      lanes), in the engine's dot units, which have no ready chain.
    - ``"ready"``: no new stage; the block-sum stage becomes a skid buffer (a spare bank of its
      21 bits), so the front stages' enables come from a register instead of the ready chain
      through the accumulator and the normaliser (the critical path with the four cuts before
      it). The unit then holds one result more than its latency (:attr:`capacity`).

    In the rounded modes ``accumulate="fp32"`` / ``"fp16"`` only ``"tree"`` and ``"decode"`` remain
    (:data:`~bd_hw.params.DotParams.FLOAT_CUT_POINTS`).

    :attr:`latency` is ``6 + pipeline`` (exact, 0 to 4; 10 at ``pipeline`` 5 and 6; ``5 + pipeline`` "fp32",
    ``6 + pipeline`` "fp16");
    throughput stays one beat per clock. See the module docstring. Raises ``ValueError`` naming
    ``B``, ``max_blocks``, ``pipeline`` or ``accumulate``.
    """

    Params = DotParams
    CUT_POINTS = DotParams.CUT_POINTS
    FLOAT_CUT_POINTS = DotParams.FLOAT_CUT_POINTS
    TREE_GROUP = DotParams.TREE_GROUP

    def __init__(self, *args, **kwargs):
        p = self.settle(*args, **kwargs)
        self.B, self.max_blocks, self.pipeline, self.accumulate = \
            p.B, p.max_blocks, p.pipeline, p.accumulate
        self.cuts, self.norm_cuts, self.front_stages = p.cuts, p.norm_cuts, p.front_stages
        self.acc_bits = p.acc_bits
        ports = {"i": In(stream.Signature(dot_input_layout(self.B))),
                 "o": Out(stream.Signature(dot_output_layout()))}
        if p.products == SHARED_PRODUCTS:
            # The multipliers' ports, for products built outside (MultiplierArray's contract):
            # the decoded lanes out, the products and their carries in, the same cycle.
            lanes = data.ArrayLayout(DECODED_BITS, self.B)
            ports |= {"mul_a": Out(lanes), "mul_w": Out(lanes),
                      "mul_products": In(data.ArrayLayout(signed(PRODUCT_BITS), self.B)),
                      "mul_carries": In(self.B)}
        super().__init__(ports)

    @property
    def capacity(self) -> int:
        """Most results owed at once: :attr:`latency`, plus one with the ``"ready"`` cut."""
        return self.params.capacity

    def elaborate(self, platform):
        m = Module()
        B = self.B
        p = self.i.payload
        if self.accumulate == "exact":
            m.submodules.accumulator = acc = ExactAccumulator(B, self.max_blocks)
            m.submodules.norm = norm = FP32Normaliser(self.acc_bits, cuts=self.norm_cuts)
        else:
            m.submodules.accumulator = acc = FloatAccumulator(block_sum_bits(B), FORMATS[self.accumulate])
        # stall_free: the unit's output is never held, so no stage waits (no ready chain).
        held = (lambda ready: C(1)) if self.params.stall_free else (lambda ready: ready)
        st = Stages(m, self.front_stages, self.i.valid, self.i.ready, held(acc.i.ready),
                    skid=self.params.skid)

        # Decode both blocks; optional cut; multiply; register.
        m.submodules.dec_a = dec_a = BDDecoder(B, decode=self.params.decode)
        m.submodules.dec_w = dec_w = BDDecoder(B, decode=self.params.decode)
        if self.params.products == SHARED_PRODUCTS:     # the multipliers are outside
            mul_a, mul_w = self.mul_a, self.mul_w
            products, carries = self.mul_products, self.mul_carries
        else:
            m.submodules.mul = mul = MultiplierArray(B, self.params.products)
            mul_a, mul_w, products, carries = mul.a, mul.w, mul.products, mul.carries
        m.d.comb += [
            dec_a.dialect.eq(p.a_dialect), dec_a.codes.eq(p.a_codes),
            dec_w.dialect.eq(p.w_dialect), dec_w.codes.eq(p.w_codes),
        ]
        v = st.cut("s0", "decode" in self.cuts, a=dec_a.values, w=dec_w.values,
                   exp=(p.a_exp + p.w_exp)[:EXP_SUM_BITS], last=p.last)
        m.d.comb += [mul_a.eq(v.pop("a")), mul_w.eq(v.pop("w"))]
        # The +1 of every negative product (MultiplierArray's carries), counted once (registered at
        # the block sum's width, so that it is added to the sum at one width). With the "negatives"
        # cut, each run of `group` lanes is counted here and the runs' counts are added in the
        # block-sum stage, beside the tree.
        group = min(self.TREE_GROUP, B) if "tree" in self.cuts else B
        negatives = Signal(signed(block_sum_bits(B)), name="negatives")
        if "negatives" in self.cuts:
            count_bits = group.bit_length()
            counts = [tree_sum(list(carries[g:g + group]), m=m, name=f"negatives{g // group}")
                      for g in range(0, B, group)]
            v = st.register("s1", **v, products=products,
                            counts=Cat(*(c[:count_bits] for c in counts)))
            counts = v.pop("counts")
            m.d.comb += negatives.eq(tree_sum(
                (counts[n * count_bits:(n + 1) * count_bits] for n in range(len(counts) // count_bits)),
                m=m, name="negatives_total"))
            v["negatives"] = negatives
        else:
            m.d.comb += negatives.eq(tree_sum(list(carries), m=m, name="negatives"))
            v = st.register("s1", **v, products=products, negatives=negatives)

        # Exact block sum: sums of TREE_GROUP products; optional cut; their sum; register.
        products = v.pop("products")
        partial = [tree_sum((products[k] for k in range(g, g + group)), m=m, name=f"sum{g // group}")
                   for g in range(0, B, group)]
        width = block_sum_bits(group) if group < B else block_sum_bits(B)
        v = st.cut("s2", "tree" in self.cuts, **v,
                   partial=Cat(*(x.as_signed()[:width] for x in partial)))
        parts = v.pop("partial")
        total = tree_sum((parts[n * width:(n + 1) * width].as_signed() for n in range(len(partial))),
                         m=m, name="total")
        # The +1s of the negative products, added last.
        block = Signal(signed(len(total) + 1), name="block_sum")
        m.d.comb += block.eq(total + v.pop("negatives"))
        v = st.register("s3", **v, sum=block[:block_sum_bits(B)].as_signed())

        m.d.comb += [
            acc.i.valid.eq(st.valid),
            acc.i.payload.sum.eq(v["sum"]), acc.i.payload.exp.eq(v["exp"]),
            acc.i.payload.last.eq(v["last"]),
        ]
        if self.accumulate == "exact":
            # acc.o and norm.i have different field names, so they are joined by hand.
            m.d.comb += [
                norm.i.valid.eq(acc.o.valid), norm.i.payload.value.eq(acc.o.payload.total),
                acc.o.ready.eq(held(norm.i.ready)),
            ]
            if self.params.stall_free:
                m.d.comb += [norm.o.ready.eq(1), self.o.valid.eq(norm.o.valid),
                             self.o.payload.eq(norm.o.payload)]
            else:
                wiring.connect(m, wiring.flipped(self.o), norm.o)
        elif self.accumulate == "fp32":
            m.d.comb += [
                self.o.valid.eq(acc.o.valid), self.o.payload.result.eq(acc.o.payload.total),
                acc.o.ready.eq(held(self.o.ready)),
            ]
        else:                                 # "fp16": the FP16 total widened to FP32, registered
            m.submodules.widen = widen = FloatWiden()
            if self.params.stall_free:
                out = Stages(m, 1, acc.o.valid, Signal(name="widen_ready"), C(1), prefix="w")
                m.d.comb += acc.o.ready.eq(1)
            else:
                out = Stages(m, 1, acc.o.valid, acc.o.ready, self.o.ready, prefix="w")
            m.d.comb += widen.half.eq(acc.o.payload.total)
            result = out.register("widened", result=widen.single)["result"]
            m.d.comb += [self.o.valid.eq(out.valid), self.o.payload.result.eq(result)]
        return m
