"""``bd_dot``: BlockDialect block dot product with exact accumulation (SPEC 6, SPEC 9).

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

**Latency: 6 clock cycles** (:attr:`BDDot.latency`): for a beat with ``last = 1`` transferred on
``i`` at rising edge ``n``, ``o.valid`` rises after edge ``n + 5`` and, with ``o.ready`` high, the
result is transferred on ``o`` at edge ``n + 6``.
One beat per clock; back-pressure holds every stage; ``o.valid`` is a register.

Pipeline (each line ends in a register stage):

1. two :class:`~bd_hw.decoder.BDDecoder` + :class:`MultiplierArray`: signed products ``P_k``;
   ``E_a + E_w``.
2. :class:`AdderTree`: exact block sum ``S``.
3. :class:`ExactAccumulator` (2 stages): ``S << (E_a + E_w)``, then ``A += term``; on ``last`` the
   total moves on and ``A`` restarts at 0.
4. :class:`FP32Normaliser` (2 stages): absolute value and leading-zero normalisation, then
   round-to-nearest-even and packing.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.spec import DEFAULT_MAX_BLOCKS, EXP_BITS, H_BITS, MAX_EXP_SUM, MAX_PRODUCT
from golden.spec import PRODUCT_EXP_OFFSET as FRAC_BITS   # SPEC 6: A is in units of 2^-36

from .arith import tree_sum
from .decoder import BDDecoder
from .layouts import DECODED_BITS, dot_input_layout, dot_output_layout, reject, unit_block_size
from .pipeline import pipeline_control, take

__all__ = ["MultiplierArray", "AdderTree", "ExactAccumulator", "FP32Normaliser", "BDDot",
           "FRAC_BITS", "MAX_EXP_SUM", "PRODUCT_BITS", "block_sum_bits", "accumulator_bits"]

EXP_SUM_BITS = EXP_BITS + 1                    # 6: E_a + E_w <= 60 (SPEC 6)
PRODUCT_BITS = MAX_PRODUCT.bit_length() + 1    # 9, signed: |P_k| <= 225


def _clog2(n: int) -> int:
    """ceil(log2(n)) for n >= 1."""
    return (n - 1).bit_length()


def block_sum_bits(B: int) -> int:
    """Signed width of an exact block sum: ``ceil(log2(225 B)) + 1`` (14 at B = 32)."""
    return _clog2(MAX_PRODUCT * B) + 1


def accumulator_bits(B: int, max_blocks: int) -> int:
    """SPEC 6: ``ceil(log2(225 B)) + 1 + 60 + ceil(log2(max_blocks))`` (82 at B = 32, 256)."""
    return block_sum_bits(B) + MAX_EXP_SUM + _clog2(max_blocks)


def _check_max_blocks(max_blocks, owner=None) -> int:
    if isinstance(max_blocks, bool) or not isinstance(max_blocks, int) or max_blocks < 1:
        reject(owner)
        raise ValueError(f"max_blocks must be an integer >= 1, not {max_blocks!r}")
    return max_blocks


class MultiplierArray(wiring.Component):
    """B sign-magnitude 4x4 multipliers (SPEC 6).

    Ports: ``a``, ``w`` in, B lanes of 5 bits ``{sign, h[3:0]}`` (the decoder's lanes);
    ``products`` out, B lanes of signed 9 bits (two's complement),
    ``P_k = (-1)^(s_a xor s_w) * h_a * h_w``.
    """

    def __init__(self, B: int = 32):
        self.B = B
        super().__init__({
            "a": In(data.ArrayLayout(DECODED_BITS, self.B)),
            "w": In(data.ArrayLayout(DECODED_BITS, self.B)),
            "products": Out(data.ArrayLayout(signed(PRODUCT_BITS), self.B)),
        })

    def elaborate(self, platform):
        m = Module()
        for k in range(self.B):
            a, w = self.a[k], self.w[k]
            mag = Signal(2 * H_BITS, name=f"mag{k}")
            m.d.comb += [
                mag.eq(a[:H_BITS] * w[:H_BITS]),
                self.products[k].eq(Mux(a[H_BITS] ^ w[H_BITS], -mag, mag)),
            ]
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
        m.d.comb += self.sum.eq(tree_sum(self.products[k] for k in range(self.B)))
        return m


class ExactAccumulator(wiring.Component):
    """Exact sum of block values in units of 2^-36 (SPEC 6); a stream component.

    ``i`` payload: ``sum`` (signed :func:`block_sum_bits`), ``exp`` (6 bits, ``E_a + E_w``),
    ``last`` (1). ``o`` payload: ``total``, signed :func:`accumulator_bits`, the exact sum
    ``sum(S_j * 2^exp_j)`` of the beats since the previous ``last``, one beat per ``last``.
    Latency 2: for a ``last`` beat accepted at edge ``t``, ``o.valid`` rises after edge ``t + 1`` and,
    with ``o.ready`` high, the total is transferred at edge ``t + 2`` (the convention of :class:`BDDot`).
    """

    LATENCY = 2

    def __init__(self, B: int = 32, max_blocks: int = DEFAULT_MAX_BLOCKS):
        self.B = B
        self.max_blocks = _check_max_blocks(max_blocks, owner=self)
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


class FP32Normaliser(wiring.Component):
    """Signed integer in units of ``2^-frac_bits`` -> IEEE binary32, nearest even (SPEC 6).

    A stream component. ``i`` payload: ``value``, signed ``width`` bits; ``o`` payload:
    ``result``, 32 bits. Zero gives +0.0. Latency 2: stage 1 takes the absolute value and
    normalises it (leading-zero count by a log-depth shifter), stage 2 rounds and packs.

    Raises ``ValueError`` if some ``width``-bit value would be subnormal or overflow in FP32
    (it never is for the accumulator widths of SPEC 6).
    """

    LATENCY = 2

    def __init__(self, width: int, frac_bits: int = FRAC_BITS):
        if width < 2:
            reject(self)
            raise ValueError(f"width must be at least 2, not {width!r}")
        # Smallest non-zero magnitude 2^-frac_bits must be normal; the largest, rounded up to a
        # power of two, 2^(width - 1 - frac_bits), must stay below 2^128.
        if 127 - frac_bits < 1 or width - 1 - frac_bits + 127 > 254:
            reject(self)
            raise ValueError(f"width={width}, frac_bits={frac_bits} leave the FP32 normal range")
        self.width, self.frac_bits = width, frac_bits
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({"value": signed(width)}))),
            "o": Out(stream.Signature(data.StructLayout({"result": 32}))),
        })

    @property
    def latency(self) -> int:
        return self.LATENCY

    def elaborate(self, platform):
        m = Module()
        W = self.width
        # Normalise into P = max(32, next power of two >= W) bits with the value's top bit at P - 1.
        P = max(32, 1 << _clog2(W))
        steps = [1 << j for j in reversed(range(_clog2(P)))]     # P/2, ..., 2, 1
        lz_bits = _clog2(P) + 1

        valid, load = pipeline_control(m, 2, self.i.valid, self.i.ready, self.o.ready)
        m.d.comb += self.o.valid.eq(valid[-1])

        x = self.i.payload.value
        neg = x[W - 1]
        mag = Signal(W, name="mag")
        m.d.comb += mag.eq(Mux(neg, -x, x))
        cur = Signal(P, name="norm0")
        m.d.comb += cur.eq(mag << (P - W))
        lz = []
        for j, s in enumerate(steps):
            shift = Signal(name=f"lz{s}")
            nxt = Signal(P, name=f"norm{j + 1}")
            m.d.comb += [shift.eq(~cur[P - s:].any()), nxt.eq(Mux(shift, cur << s, cur))]
            lz.append(shift)
            cur = nxt
        # lz bits from the smallest step upwards form the leading-zero count.
        s1_sign = Signal(reset_less=True)
        s1_zero = Signal(reset_less=True)
        s1_norm = Signal(P, reset_less=True)
        s1_lz = Signal(lz_bits, reset_less=True)
        with m.If(take(valid, load, self.i.valid, 0)):
            m.d.sync += [
                s1_sign.eq(neg), s1_zero.eq(~mag.any()), s1_norm.eq(cur),
                s1_lz.eq(Cat(*reversed(lz))),
            ]

        # Stage 2: value = norm * 2^(W - 1 - lz - frac_bits - (P - 1)); biased exponent below.
        bias = 127 + W - 1 - self.frac_bits
        mant = s1_norm[P - 24:P - 1]
        guard = s1_norm[P - 25]
        sticky = s1_norm[:P - 25].any()
        exp_field = Signal(8, name="exp_field")
        m.d.comb += exp_field.eq(bias - s1_lz)
        rounded = Signal(31, name="rounded")
        round_up = guard & (sticky | mant[0])
        m.d.comb += rounded.eq(Cat(mant, exp_field) + round_up)
        result = Signal(32, reset_less=True)
        with m.If(take(valid, load, self.i.valid, 1)):
            m.d.sync += result.eq(Mux(s1_zero, 0, Cat(rounded, s1_sign)))
        m.d.comb += self.o.payload.result.eq(result)
        return m


class BDDot(wiring.Component):
    """``bd_dot`` for block size ``B`` (16, 32 or 64) and ``max_blocks`` >= 1 beats per result.

    See the module docstring. Raises ``ValueError`` naming ``B`` or ``max_blocks``.
    """

    FRONT_STAGES = 2

    def __init__(self, B: int = 32, max_blocks: int = DEFAULT_MAX_BLOCKS):
        self.B = unit_block_size(B, self)
        self.max_blocks = _check_max_blocks(max_blocks, owner=self)
        self.acc_bits = accumulator_bits(self.B, self.max_blocks)
        if self.acc_bits - 1 - FRAC_BITS + 127 > 254:
            reject(self)
            raise ValueError(f"max_blocks={max_blocks} is too large: sums could overflow FP32")
        super().__init__({
            "i": In(stream.Signature(dot_input_layout(self.B))),
            "o": Out(stream.Signature(dot_output_layout())),
        })

    @property
    def latency(self) -> int:
        """Cycles from accepting a ``last`` beat to presenting its result (6)."""
        return self.FRONT_STAGES + ExactAccumulator.LATENCY + FP32Normaliser.LATENCY

    def elaborate(self, platform):
        m = Module()
        B = self.B
        p = self.i.payload
        m.submodules.accumulator = acc = ExactAccumulator(B, self.max_blocks)
        m.submodules.norm = norm = FP32Normaliser(self.acc_bits)
        valid, load = pipeline_control(m, self.FRONT_STAGES, self.i.valid, self.i.ready,
                                       acc.i.ready)

        # Stage 1: decode both blocks, multiply.
        m.submodules.dec_a = dec_a = BDDecoder(B)
        m.submodules.dec_w = dec_w = BDDecoder(B)
        m.submodules.mul = mul = MultiplierArray(B)
        m.d.comb += [
            dec_a.dialect.eq(p.a_dialect), dec_a.codes.eq(p.a_codes),
            dec_w.dialect.eq(p.w_dialect), dec_w.codes.eq(p.w_codes),
            mul.a.eq(dec_a.values), mul.w.eq(dec_w.values),
        ]
        s1_products = Signal(data.ArrayLayout(signed(PRODUCT_BITS), B), reset_less=True,
                             name="s1_products")
        s1_exp = Signal(EXP_SUM_BITS, reset_less=True)
        s1_last = Signal(reset_less=True)
        with m.If(take(valid, load, self.i.valid, 0)):
            m.d.sync += [s1_products.eq(mul.products), s1_exp.eq(p.a_exp + p.w_exp),
                         s1_last.eq(p.last)]

        # Stage 2: exact block sum.
        m.submodules.tree = tree = AdderTree(B)
        m.d.comb += tree.products.eq(s1_products)
        s2_sum = Signal(signed(block_sum_bits(B)), reset_less=True)
        s2_exp = Signal(EXP_SUM_BITS, reset_less=True)
        s2_last = Signal(reset_less=True)
        with m.If(take(valid, load, self.i.valid, 1)):
            m.d.sync += [s2_sum.eq(tree.sum), s2_exp.eq(s1_exp), s2_last.eq(s1_last)]

        m.d.comb += [
            acc.i.valid.eq(valid[-1]),
            acc.i.payload.sum.eq(s2_sum), acc.i.payload.exp.eq(s2_exp),
            acc.i.payload.last.eq(s2_last),
        ]
        # acc.o and norm.i have different field names, so they are joined by hand.
        m.d.comb += [
            norm.i.valid.eq(acc.o.valid), norm.i.payload.value.eq(acc.o.payload.total),
            acc.o.ready.eq(norm.i.ready),
        ]
        wiring.connect(m, wiring.flipped(self.o), norm.o)
        return m
