"""Floating-point parts of the rounded accumulation modes of ``bd_dot`` (SPEC 6.1).

``accumulate="fp32"`` and ``"fp16"`` need no wide exact accumulator: each block value is converted
to the accumulator's format and added by a floating-point adder that rounds every step.

- :class:`BlockToFloat` (combinational): a signed block sum ``S`` and ``E_a + E_w`` to the float
  ``S * 2^(E_a + E_w - 36)``. Exact for FP32 (``|S| < 2^15``); for FP16 rounded to nearest, ties to
  even, overflow to +-Inf, subnormals kept. A zero sum gives +0.0.
- :class:`FloatAdder` (combinational): IEEE addition in a :class:`FloatFormat`, round to nearest even,
  subnormals in and out, overflow to +-Inf, ``Inf + (-Inf)`` and NaN operands give the positive quiet
  NaN of the format (0x7E00 / 0x7FC00000).
- :class:`FloatWiden` (combinational): FP16 bits to the equal FP32 bits (NaN to 0x7FC00000).
- :class:`FloatAccumulator` (a stream component, latency 2): the running sum of :class:`BlockToFloat`
  values, one per beat, emitted and restarted at +0.0 after each ``last`` beat. Its adder is the one
  combinational loop of the rounded modes: a rounding after every beat at one beat per clock leaves
  no room for a register inside it.

Every intermediate value is a named Signal (``<name>_...``), so the Verilog has one wire per node.
"""
from __future__ import annotations

from typing import NamedTuple

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.spec import FP16_EXP_BITS, FP16_MAN_BITS, FP32_EXP_BITS, FP32_MAN_BITS, MAX_EXP_SUM
from golden.spec import PRODUCT_EXP_OFFSET   # SPEC 6: block value S * 2^(E_a + E_w - 36)

from .arith import leading_zeros

__all__ = ["FloatFormat", "FP16", "FP32", "FORMATS", "BlockToFloat", "FloatAdder", "FloatWiden",
           "FloatAccumulator", "EXP_SUM_BITS", "check_format", "check_conversion", "conversion_is_exact"]

EXP_SUM_BITS = MAX_EXP_SUM.bit_length()   # 6: E_a + E_w <= 60 (SPEC 6)
GUARD_BITS = 3                            # guard, round and sticky bits of the adder


class FloatFormat(NamedTuple):
    """An IEEE binary format: ``exp_bits`` exponent and ``man_bits`` stored mantissa bits."""

    name: str
    exp_bits: int
    man_bits: int

    @property
    def width(self) -> int:
        return 1 + self.exp_bits + self.man_bits

    @property
    def bias(self) -> int:
        return (1 << (self.exp_bits - 1)) - 1

    @property
    def exp_all_ones(self) -> int:
        return (1 << self.exp_bits) - 1

    @property
    def quiet_nan(self) -> int:
        """The positive quiet NaN: exponent all ones, the top mantissa bit set (SPEC 6.1)."""
        return self.exp_all_ones << self.man_bits | 1 << (self.man_bits - 1)

    @property
    def infinity(self) -> int:
        return self.exp_all_ones << self.man_bits


FP16 = FloatFormat("fp16", FP16_EXP_BITS, FP16_MAN_BITS)   # SPEC 1, SPEC 6.1
FP32 = FloatFormat("fp32", FP32_EXP_BITS, FP32_MAN_BITS)   # SPEC 1 outputs, SPEC 6.1
FORMATS = {f.name: f for f in (FP16, FP32)}


def _named(m: Module, name: str, value, shape=None) -> Signal:
    """``value`` as a Signal called ``name``, driven combinationally in ``m``."""
    node = Signal(value.shape() if shape is None else shape, name=name)
    m.d.comb += node.eq(value)
    return node


def _widen(m: Module, name: str, value, width: int) -> Signal:
    """``value`` zero-extended to a ``width``-bit wire. Arithmetic needs operands of one width (the
    lint rule WIDTHEXPAND), and Amaranth emits a plain extension as the narrower value itself; an OR
    with a zero constant of the full width becomes a wire of that width."""
    return _named(m, name, value | Const(0, width), width)


def _pow2_at_least(n: int) -> int:
    return max(2, 1 << (n - 1).bit_length())


def _count_leading_zeros(m: Module, name: str, x) -> Signal:
    """Zeros above the top one of ``x`` (``len(x)`` when ``x`` is zero), by the tree of
    :func:`bd_hw.arith.leading_zeros` on ``x`` padded below with ones to a power-of-two width."""
    width = _pow2_at_least(len(x))
    padded = _named(m, f"{name}_padded", Cat(Const((1 << (width - len(x))) - 1, width - len(x)), x)
                    if width > len(x) else x)
    _, count = leading_zeros(padded, m=m, name=name)
    return _named(m, f"{name}_count", count)


def _shift_left(m: Module, name: str, x, amount) -> Signal:
    """``x << amount`` truncated to ``len(x)`` bits: one constant-shift step per bit of ``amount``."""
    width = len(x)
    for j in range(len(amount)):
        step = min(1 << j, width)
        x = _named(m, f"{name}{j}", Mux(amount[j], Cat(Const(0, step), x[:width - step]), x), width)
    return x


def _shift_right_sticky(m: Module, name: str, x, amount) -> Signal:
    """``x >> amount`` with every bit shifted out ORed into bit 0 (the sticky bit)."""
    width = len(x)
    sticky = Const(0, 1)
    for j in range(len(amount)):
        step = min(1 << j, width)
        lost = _named(m, f"{name}{j}_lost", amount[j] & x[:step].any())
        sticky = _named(m, f"{name}{j}_sticky", sticky | lost)
        x = _named(m, f"{name}{j}", Mux(amount[j], x[step:], x), width)
    return _named(m, name, x | sticky)


def _round_pack(m: Module, name: str, fmt: FloatFormat, sig, exp_field, sign, overflow) -> Signal:
    """Round ``sig`` (hidden bit at the top, then ``man_bits`` mantissa bits, then at least two
    guard bits, the lowest of them sticky) to nearest even and pack it with ``exp_field`` (0 for a
    subnormal) and ``sign``; ``overflow`` (or a rounding carry into the all-ones exponent) gives
    Inf. A carry out of the mantissa moves into the exponent field, which is the right result."""
    M, E = fmt.man_bits, fmt.exp_bits
    extra = len(sig) - 1 - M
    man = sig[extra:extra + M]
    guard = sig[extra - 1]
    sticky = sig[:extra - 1].any()
    round_up = _named(m, f"{name}_round_up", guard & (sticky | man[0]))
    magnitude = _named(m, f"{name}_rounded", Cat(man, exp_field[:E]) + round_up, E + M)
    return _named(m, name, Cat(Mux(overflow, fmt.infinity, magnitude), sign), fmt.width)


def check_format(fmt) -> None:
    if fmt not in FORMATS.values():
        raise ValueError(f"fmt must be one of {', '.join(FORMATS)}, not {fmt!r}")


class _CheckedComponent(wiring.Component):
    """A part whose arguments ``check`` validates in ``__new__``, before the component exists, as
    :class:`bd_hw.params.ParametrisedComponent` does for the units: a rejected construction leaves
    nothing behind for Amaranth to warn about."""

    check = staticmethod(lambda *args, **kwargs: None)

    def __new__(cls, *args, **kwargs):
        cls.check(*args, **kwargs)
        return super().__new__(cls, src_loc_at=1)


class FloatAdder(_CheckedComponent):
    """IEEE addition ``a + b`` in ``fmt``, round to nearest even (combinational).

    Ports: ``a``, ``b`` in, ``sum`` out, each ``fmt.width`` bits. Subnormals are kept; overflow gives
    +-Inf; a NaN operand or ``Inf + (-Inf)`` gives the positive quiet NaN; an exact zero sum is +0.0
    unless both operands are -0.0.

    The operand of larger magnitude is ``big``; the other is aligned to it by a right shift that keeps
    a sticky bit, the two significands (with 3 guard bits) are added or subtracted, the sum is
    normalised (one right shift after a carry, or a left shift by its leading zeros, no further than
    the smallest exponent allows) and rounded once.
    """

    @staticmethod
    def check(fmt: FloatFormat = FP32) -> None:
        check_format(fmt)

    def __init__(self, fmt: FloatFormat = FP32):
        self.fmt = fmt
        super().__init__({"a": In(fmt.width), "b": In(fmt.width), "sum": Out(fmt.width)})

    def elaborate(self, platform):
        m = Module()
        fmt = self.fmt
        E, M = fmt.exp_bits, fmt.man_bits
        W = M + 1 + GUARD_BITS                       # aligned significand: hidden, mantissa, G R S

        def unpack(x, tag):
            exp, man = x[M:M + E], x[:M]
            normal = _named(m, f"{tag}_normal", exp.any())
            special = _named(m, f"{tag}_special", exp.all())
            return dict(
                sign=x[E + M], nan=_named(m, f"{tag}_nan", special & man.any()),
                inf=_named(m, f"{tag}_inf", special & ~man.any()),
                exp=_named(m, f"{tag}_exp", Mux(normal, exp, 1), E),        # subnormals: exponent 1
                sig=_named(m, f"{tag}_sig", Cat(man, normal)))

        a, b = unpack(self.a, "a"), unpack(self.b, "b")
        swap = _named(m, "swap", self.b[:E + M] > self.a[:E + M])
        big_exp = _named(m, "big_exp", Mux(swap, b["exp"], a["exp"]))
        small_exp = _named(m, "small_exp", Mux(swap, a["exp"], b["exp"]))
        big_sig = _named(m, "big_sig", Mux(swap, b["sig"], a["sig"]))
        small_sig = _named(m, "small_sig", Mux(swap, a["sig"], b["sig"]))
        big_sign = _named(m, "big_sign", Mux(swap, b["sign"], a["sign"]))
        subtract = _named(m, "subtract", a["sign"] ^ b["sign"])

        distance = _named(m, "distance", big_exp - small_exp, E)
        aligned = _shift_right_sticky(m, "align", Cat(Const(0, GUARD_BITS), small_sig), distance)
        big_ext = Cat(Const(0, GUARD_BITS), big_sig)
        total = _named(m, "total", Mux(subtract, big_ext - aligned, big_ext + aligned), W + 1)
        carry = total[W]

        # Carry: one place right, the dropped bit joins the sticky bit.
        after_carry = _named(m, "after_carry", Cat(total[0] | total[1], total[2:W + 1]))
        # No carry: left by the leading zeros, but not below exponent 1 (then the result is subnormal).
        zeros = _count_leading_zeros(m, "lzc", total[:W])
        n = len(zeros)
        limit = _named(m, "limit", big_exp - Const(1, E), E)
        # min(zeros, limit), with operands of one width (the limit wins only when below 2^n).
        use_limit = _named(m, "use_limit", ~limit[n:].any() & (zeros > limit[:n]))
        shift = _named(m, "shift", Mux(use_limit, limit, zeros), E)
        shifted = _shift_left(m, "normalise", total[:W], shift)
        sig = _named(m, "sig", Mux(carry, after_carry, shifted))
        exp_field = _named(m, "exp_field", Mux(carry, big_exp + 1, Mux(shifted[W - 1], big_exp - shift, 0)),
                           E + 1)
        overflow = _named(m, "overflow", exp_field[E] | exp_field[:E].all())    # >= all ones
        finite = _round_pack(m, "finite", fmt, sig, exp_field, big_sign, overflow)

        zero = _named(m, "zero", ~total.any())
        nan = _named(m, "nan", a["nan"] | b["nan"] | (a["inf"] & b["inf"] & subtract))
        inf = _named(m, "inf", a["inf"] | b["inf"])
        inf_sign = Mux(a["inf"], a["sign"], b["sign"])
        m.d.comb += self.sum.eq(
            Mux(nan, fmt.quiet_nan,
                Mux(inf, Cat(Const(fmt.infinity, E + M), inf_sign),
                    Mux(zero, Cat(Const(0, E + M), a["sign"] & b["sign"]), finite))))
        return m


def check_conversion(sum_bits, fmt) -> None:
    """The parameters of :class:`BlockToFloat` (``ValueError`` naming the bad one)."""
    check_format(fmt)
    if isinstance(sum_bits, bool) or not isinstance(sum_bits, int) or not 2 <= sum_bits <= 16:
        raise ValueError(f"sum_bits must be an integer from 2 to 16 (SPEC 6.1: |S| < 2^15), not {sum_bits!r}")


def conversion_is_exact(sum_bits: int, fmt: FloatFormat) -> bool:
    """Every block value with a ``sum_bits`` sum and a 6-bit exponent sum is a normal number of
    ``fmt`` (FP32: yes; FP16: no)."""
    low = -PRODUCT_EXP_OFFSET + fmt.bias                                            # |S| = 1, exp = 0
    high = (sum_bits - 1) + (1 << EXP_SUM_BITS) - 1 - PRODUCT_EXP_OFFSET + fmt.bias
    return fmt.man_bits >= _pow2_at_least(sum_bits) - 1 and low >= 1 and high < fmt.exp_all_ones


class BlockToFloat(_CheckedComponent):
    """A block sum to a float (combinational): ``S * 2^(exp - 36)`` in ``fmt`` (SPEC 6.1).

    Ports: ``sum`` in, signed ``sum_bits``; ``exp`` in, 6 bits (``E_a + E_w``); ``value`` out,
    ``fmt.width`` bits. A zero sum gives +0.0. When every value is representable (FP32: ``|S|`` has at
    most 15 bits and ``exp - 36`` lies in the normal range) the conversion is exact and has no rounding
    logic; otherwise (FP16) it rounds to nearest even, with overflow to +-Inf and subnormal results.
    """

    check = staticmethod(check_conversion)

    def __init__(self, sum_bits: int, fmt: FloatFormat = FP32):
        self.sum_bits, self.fmt = sum_bits, fmt
        self.width = _pow2_at_least(sum_bits)       # bits of the normalised magnitude
        self.exact = conversion_is_exact(sum_bits, fmt)
        super().__init__({"sum": In(signed(sum_bits)), "exp": In(EXP_SUM_BITS), "value": Out(fmt.width)})

    def elaborate(self, platform):
        m = Module()
        fmt, P = self.fmt, self.width
        E, M = fmt.exp_bits, fmt.man_bits
        x = self.sum
        negative = x[-1]
        magnitude = _named(m, "magnitude", Mux(negative, -x, x)[:self.sum_bits], P)
        zero = _named(m, "zero", ~magnitude.any())
        # Biased exponent of the top bit: (P - 1 - zeros) + exp - 36 + bias = exp + offset - zeros.
        # A negative offset (FP16: -6) becomes that many zeros above the magnitude, so that the
        # count includes it and the exponent is exp - count: no constant enters the arithmetic.
        offset = P - 1 - PRODUCT_EXP_OFFSET + fmt.bias
        lead = max(0, -offset)
        field = Cat(magnitude, Const(0, lead)) if lead else magnitude
        zeros = _count_leading_zeros(m, "lzc", field)
        norm = _shift_left(m, "normalise", field, zeros)[lead:]          # hidden bit at P - 1
        if self.exact:
            # FP32: exp + (offset - zeros), always normal; the mantissa is the magnitude's other bits.
            width = offset.bit_length()          # 106: 7 bits, at least the width of exp and zeros
            assert width >= max(EXP_SUM_BITS, len(zeros))
            rest = _named(m, "offset_rest", Const(offset, width) - _widen(m, "zeros_wide", zeros, width), width)
            exp_field = _named(m, "exp_field", _widen(m, "exp_wide", self.exp, width) + rest, E)
            finite = Cat(Const(0, M - (P - 1)), norm[:P - 1], exp_field, negative)
        else:
            # FP16: biased = exp - zeros, two's complement in `width` bits.
            width = max(EXP_SUM_BITS, len(zeros)) + 2
            biased = _named(m, "biased", _widen(m, "exp_wide", self.exp, width)
                            - _widen(m, "zeros_wide", zeros, width), width)
            subnormal = _named(m, "subnormal", biased[-1] | ~biased[:-1].any())           # biased <= 0
            overflow = _named(m, "overflow", ~biased[-1] & (biased[E:-1].any() | biased[:E].all()))
            # Subnormal: right by 1 - biased (at most 22 here), keeping a sticky bit.
            sig = Cat(Const(0, max(0, M + 3 - P)), norm)
            undershoot = _named(m, "undershoot", -(biased - 1), (len(sig) + 1).bit_length())
            amount = _named(m, "denormalise_by", Mux(subnormal, undershoot, 0), len(undershoot))
            den = _shift_right_sticky(m, "denormalise", sig, amount)
            exp_field = _named(m, "exp_field", Mux(subnormal, 0, biased[:E]), E + 1)
            finite = _round_pack(m, "finite", fmt, den, exp_field, negative, overflow)
        m.d.comb += self.value.eq(Mux(zero, 0, finite))
        return m


class FloatWiden(wiring.Component):
    """FP16 bits to the FP32 bits of the same value (combinational; exact, subnormals normalised).

    Ports: ``half`` in, 16 bits; ``single`` out, 32 bits. Infinities keep their sign, every NaN
    becomes 0x7FC00000 (SPEC 6.1).
    """

    def __init__(self):
        super().__init__({"half": In(FP16.width), "single": Out(FP32.width)})

    def elaborate(self, platform):
        m = Module()
        h = self.half
        E, M = FP16.exp_bits, FP16.man_bits
        sign, exp, man = h[E + M], h[M:M + E], h[:M]
        special = _named(m, "special", exp.all())
        subnormal = _named(m, "subnormal", ~exp.any())
        zeros = _count_leading_zeros(m, "lzc", man)
        # A subnormal man * 2^-24: the top one moves to the hidden place, zeros + 1 places left, and
        # the exponent field is 127 - 15 - zeros.
        norm = _shift_left(m, "normalise", man, _named(m, "shift", zeros + 1, len(zeros)))
        rebias = FP32.bias - FP16.bias                                    # 112 = 0b1110000
        width = rebias.bit_length()
        sub_exp = _named(m, "subnormal_exp", Const(rebias, width) - _widen(m, "zeros_wide", zeros, width), width)
        # A normal exponent field e (1..30) + 112: the low four bits stay, the top ones are 0111 + e[4].
        normal_exp = Cat(exp[:4], Mux(exp[4], Const(0b1000, 4), Const(0b0111, 4)))
        exp32 = _named(m, "exp32", Mux(subnormal, sub_exp, normal_exp), FP32.exp_bits)
        man32 = _named(m, "man32", Cat(Const(0, FP32.man_bits - M), Mux(subnormal, norm, man)))
        finite = Cat(man32, exp32, sign)
        m.d.comb += self.single.eq(
            Mux(special, Mux(man.any(), FP32.quiet_nan, Cat(Const(FP32.infinity, 31), sign)),
                Mux(subnormal & ~man.any(), Cat(Const(0, 31), sign), finite)))
        return m


class FloatAccumulator(_CheckedComponent):
    """Block values added in order with one rounding per beat (SPEC 6.1); a stream component.

    ``i`` payload: ``sum`` (signed ``sum_bits``), ``exp`` (6 bits, ``E_a + E_w``), ``last`` (1).
    ``o`` payload: ``total``, ``fmt.width`` bits: ``acc = fl(acc + fl(S_j * 2^(exp_j - 36)))`` over the
    beats since the previous ``last``, from ``acc = +0.0``, one beat per ``last``.
    Latency 2 (as :class:`bd_hw.dot.ExactAccumulator`): stage T registers the converted block value;
    stage O adds it to the running sum, and on ``last`` registers the total and restarts at +0.0.
    """

    LATENCY = 2

    check = staticmethod(check_conversion)

    def __init__(self, sum_bits: int, fmt: FloatFormat = FP32):
        self.sum_bits, self.fmt = sum_bits, fmt
        super().__init__({
            "i": In(stream.Signature(data.StructLayout({
                "sum": signed(sum_bits), "exp": EXP_SUM_BITS, "last": 1}))),
            "o": Out(stream.Signature(data.StructLayout({"total": fmt.width}))),
        })

    @property
    def latency(self) -> int:
        return self.LATENCY

    def elaborate(self, platform):
        m = Module()
        m.submodules.convert = convert = BlockToFloat(self.sum_bits, self.fmt)
        m.submodules.adder = adder = FloatAdder(self.fmt)
        width = self.fmt.width
        t_valid = Signal()
        t_value = Signal(width, reset_less=True)
        t_last = Signal(reset_less=True)
        o_valid = Signal()
        o_total = Signal(width, reset_less=True)
        running = Signal(width)                      # +0.0 after reset and after every last beat
        o_load = Signal()
        t_fire = Signal()
        t_load = Signal()
        m.d.comb += [
            convert.sum.eq(self.i.payload.sum), convert.exp.eq(self.i.payload.exp),
            o_load.eq(~o_valid | self.o.ready),
            t_fire.eq(t_valid & (~t_last | o_load)),
            t_load.eq(~t_valid | t_fire),
            self.i.ready.eq(t_load),
            self.o.valid.eq(o_valid),
            self.o.payload.total.eq(o_total),
            adder.a.eq(running), adder.b.eq(t_value),
        ]
        with m.If(t_load):
            m.d.sync += t_valid.eq(self.i.valid)
            with m.If(self.i.valid):
                m.d.sync += [t_value.eq(convert.value), t_last.eq(self.i.payload.last)]
        with m.If(o_load):
            m.d.sync += o_valid.eq(t_fire & t_last)
        with m.If(t_fire):
            with m.If(t_last):
                m.d.sync += [o_total.eq(adder.sum), running.eq(0)]
            with m.Else():
                m.d.sync += running.eq(adder.sum)
        return m
