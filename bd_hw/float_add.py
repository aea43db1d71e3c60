"""Floating-point parts of the rounded accumulation modes of ``bd_dot`` (SPEC 6.1).

``accumulate="fp32"`` and ``"fp16"`` need no wide exact accumulator: each block value is converted
to the accumulator's format and added by a floating-point adder that rounds every step.

- :class:`BlockToFloat` (combinational): a signed block sum ``S`` and ``E_a + E_w`` to the float
  ``S * 2^(E_a + E_w - 36)``. Exact for FP32 (``|S| < 2^15``); for FP16 rounded to nearest, ties to
  even, overflow to +-Inf, subnormals kept. A zero sum gives +0.0.
- :class:`FloatAdder` (combinational): IEEE addition in a :class:`FloatFormat`, round to nearest even,
  subnormals in and out, overflow to +-Inf, ``Inf + (-Inf)`` and NaN operands give the positive quiet
  NaN of the format (0x7E00 / 0x7FC00000): operands unpacked, the near/far adder :func:`_add`, packed.
- :class:`FloatWiden` (combinational): FP16 bits to the equal FP32 bits (NaN to 0x7FC00000).
- :class:`FloatAccumulator` (a stream component, latency 3): the running sum of :class:`BlockToFloat`
  values, one per beat, emitted and restarted at +0.0 after each ``last`` beat. Its adder is the one
  combinational loop of the rounded modes: a rounding after every beat at one beat per clock leaves
  no room for a register inside it. Everything else (the conversion, in two stages, the unpacking,
  the packing of the total) is outside the loop, and the running sum stays unpacked.

Every intermediate value is a named Signal (``<name>_...``), so the Verilog has one wire per node.
"""
from __future__ import annotations

from typing import NamedTuple

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from golden.spec import FP16_EXP_BITS, FP16_MAN_BITS, FP32_EXP_BITS, FP32_MAN_BITS, MAX_EXP_SUM
from golden.spec import PRODUCT_EXP_OFFSET   # SPEC 6: block value S * 2^(E_a + E_w - 36)

from .arith import leading_zeros

__all__ = ["FloatFormat", "FP16", "FP32", "FORMATS", "BlockToFloat", "FloatAdder", "FloatWiden", "LateExponent",
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
    """``x >> amount`` with every bit shifted out ORed into bit 0 (the sticky bit).

    The sticky bit is taken from ``x`` itself, beside the shifter: bit ``i`` is lost when
    ``amount > i``. Gathered from the shifter's steps instead, it would come after the last of
    them, and it enters the sum that follows at its lowest bit, the start of the carry chain."""
    width = len(x)
    # below[i] = amount > i: 2^amount - 1, built from amount's bits (logic, not compare chains).
    below = Const(0, width)
    for j in reversed(range(len(amount))):
        step = min(1 << j, width)
        below = _named(m, f"{name}_below{j}", Mux(amount[j], Cat(Const((1 << step) - 1, step), below[:width - step]),
                                                  below), width)
    sticky = _named(m, f"{name}_sticky", (x & below).any())
    for j in range(len(amount)):
        step = min(1 << j, width)
        x = _named(m, f"{name}{j}", Mux(amount[j], x[step:], x), width)
    return _named(m, name, x | sticky)


def _round_pack(m: Module, name: str, fmt: FloatFormat, sig, exp_field, sign, overflow) -> tuple[Signal, Signal]:
    """Round ``sig`` (hidden bit at the top, then ``man_bits`` mantissa bits, then at least two
    guard bits; any bits below them count as sticky) to nearest even and pack it with
    ``exp_field`` (0 for a subnormal) and ``sign``; ``overflow`` (or a rounding carry into the
    all-ones exponent) gives Inf. A carry out of the mantissa moves into the exponent field, which
    is the right result. Returns the bits and that carry (whether the rounding raised the
    exponent field), which is known without the increment."""
    M, E = fmt.man_bits, fmt.exp_bits
    extra = len(sig) - 1 - M
    man = sig[extra:extra + M]
    guard = sig[extra - 1]
    sticky = sig[:extra - 1].any()
    round_up = _named(m, f"{name}_round_up", guard & (sticky | man[0]))
    carry = _named(m, f"{name}_carry", round_up & man.all())
    magnitude = _named(m, f"{name}_rounded", Cat(man, exp_field[:E]) + round_up, E + M)
    return _named(m, name, Cat(Mux(overflow, fmt.infinity, magnitude), sign), fmt.width), carry


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


def _unpack(m: Module, tag: str, fmt: FloatFormat, x) -> dict:
    """IEEE bits to the adder's operand form: ``sign``, ``exp`` (the exponent field, 1 for zero and
    subnormals), ``sig`` (hidden bit on top, ``man_bits + 1`` bits), ``inf`` and ``nan`` flags."""
    E, M = fmt.exp_bits, fmt.man_bits
    exp, man = x[M:M + E], x[:M]
    normal = _named(m, f"{tag}_normal", exp.any())
    special = _named(m, f"{tag}_special", exp.all())
    return dict(sign=_named(m, f"{tag}_sign", x[E + M]),
                exp=_named(m, f"{tag}_exp", Mux(normal, exp, 1), E),
                sig=_named(m, f"{tag}_sig", Cat(man, normal)),
                inf=_named(m, f"{tag}_inf", special & ~man.any()),
                nan=_named(m, f"{tag}_nan", special & man.any()))


def _pack(m: Module, name: str, fmt: FloatFormat, x: dict) -> Signal:
    """The operand form back to IEEE bits (every NaN the positive quiet NaN)."""
    E, M = fmt.exp_bits, fmt.man_bits
    finite = Cat(x["sig"][:M], Mux(x["sig"][M], x["exp"], 0), x["sign"])
    return _named(m, name, Mux(x["nan"], fmt.quiet_nan,
                               Mux(x["inf"], Cat(Const(fmt.infinity, E + M), x["sign"]), finite)),
                  fmt.width)


def _step(x, n: int):
    """``x + n`` for n in -2 ... 2, each written with one-bit constants (the lint rule WIDTHEXPAND
    flags a wider constant, which Amaranth emits at its smallest width)."""
    if n == 0:
        return x
    if abs(n) == 1:
        return x + 1 if n > 0 else x - 1
    return Cat(x[0], _step(x[1:], n // 2))


def _exp_differences(m: Module, name: str, fmt: FloatFormat, x, y) -> tuple[Signal, Signal]:
    """``(x - y, y - x)`` of two exponent fields, each in ``exp_bits + 1`` bits two's complement."""
    E = fmt.exp_bits
    return (_named(m, f"{name}_xy", x - y, E + 1), _named(m, f"{name}_yx", y - x, E + 1))


def _from_one(m: Module, name: str, fmt: FloatFormat, y) -> tuple[Signal, Signal]:
    """``(1 - y, y - 1)`` as :func:`_exp_differences` gives them (exponent 1: a zero sum)."""
    behind = _named(m, f"{name}_yx", y - 1, fmt.exp_bits + 1)
    return _named(m, f"{name}_xy", ~behind + 1, fmt.exp_bits + 1), behind


class LateExponent(NamedTuple):
    """An exponent field ``base + carry`` whose ``carry`` (a rounding's carry into the exponent, or
    None when there is none) is known later than ``base``: differences with it are computed from
    ``base`` and chosen by ``carry`` last, so that they do not wait for the rounding."""

    base: Value
    carry: Value | None = None


def _carried(m: Module, name: str, fmt: FloatFormat, carry, plain, raised) -> Value:
    """``plain`` (a difference with ``base``), or ``raised`` (with ``base + 1``) when ``carry``."""
    if carry is None:
        return plain
    return _named(m, name, Mux(carry, raised, plain), fmt.exp_bits + 1)


def _late_differences(m: Module, name: str, fmt: FloatFormat, x, y: LateExponent) -> tuple[Value, Value]:
    """``(x - y, y - x)`` as :func:`_exp_differences` (``x`` None: :func:`_from_one`) gives them,
    for the late exponent ``y``."""
    ahead, behind = _from_one(m, name, fmt, y.base) if x is None else _exp_differences(m, name, fmt, x, y.base)
    return (_carried(m, f"{name}_xy_carried", fmt, y.carry, ahead, _step(ahead, -1)),
            _carried(m, f"{name}_yx_carried", fmt, y.carry, behind, _step(behind, 1)))


def _add(m: Module, fmt: FloatFormat, a: dict, b: dict, ieee: bool = True, differences=None,
         follow=None) -> dict:
    """``a + b`` rounded to nearest even, operands and result in the form of :func:`_unpack`.

    Two paths side by side, so that one operand passes through either an alignment shift or a
    normalising shift, never both:

    - *near* (an effective subtraction with exponents at most 1 apart, when it cancels at least
      the top bit): the difference of the significands (both orders, and both one-place
      offsets, computed at once from the operands), its leading-zero count and one left shift. The
      result is exact, so there is no rounding.
    - *far* (everything else): the smaller operand aligned by a right shift with guard, round and
      sticky bits, one add or subtract, at most one place of normalisation either way, and the
      round-to-nearest-even increment.

    With ``ieee`` the result is IEEE's for every operand (subnormals, overflow to Inf, NaN). Without
    it the operands must be zero or normal and the result must be zero or normal (no overflow, no
    subnormal): the rule of the FP32 accumulator, whose values are multiples of 2^-36 below 2^64
    (see :class:`FloatAccumulator`); the subnormal limit of the normalising shift and the special
    cases then have no logic.

    ``differences``, if given, are ``(a.exp - b.exp, b.exp - a.exp)`` (:func:`_exp_differences`)
    from registers, so that no subtraction of exponents starts the adder. With ``follow`` (an
    exponent field, or a :class:`LateExponent`) the result also has ``differences``: those of its own exponent and
    ``follow``, chosen among candidates computed beside the paths, as its exponent is (and, when
    ``follow`` has a carry, by that carry too).
    """
    E, M = fmt.exp_bits, fmt.man_bits
    W = M + 1                                        # significand with its hidden bit
    ea, eb, ma, mb = a["exp"], b["exp"], a["sig"], b["sig"]
    subtract = _named(m, "subtract", a["sign"] ^ b["sign"])
    a_minus_b, b_minus_a = differences or _exp_differences(m, "exp", fmt, ea, eb)
    a_big = _named(m, "a_big", ~a_minus_b[E])                  # ea >= eb
    same_exp = _named(m, "same_exp", ~a_minus_b.any())
    distance = _named(m, "distance", Mux(a_big, a_minus_b, b_minus_a), E)
    apart_one = _named(m, "apart_one", distance[0] & ~distance[1:].any())
    big_exp = _named(m, "big_exp", Mux(a_big, ea, eb))
    big_sign = _named(m, "big_sign", Mux(a_big, a["sign"], b["sign"]))

    # ---- near path: every difference it can need, straight from the operands ---------------------
    # N is the difference in units of half the big operand's last place, W + 1 bits.
    diff_ab = _named(m, "near_ab", ma - mb, W + 1)            # same exponent, both orders
    diff_ba = _named(m, "near_ba", mb - ma, W + 1)
    diff_a1 = _named(m, "near_a1", Cat(Const(0, 1), ma) - _widen(m, "near_b_wide", mb, W + 1), W + 1)
    diff_b1 = _named(m, "near_b1", Cat(Const(0, 1), mb) - _widen(m, "near_a_wide", ma, W + 1), W + 1)
    b_larger = _named(m, "near_b_larger", diff_ab[W])
    near_value = _named(m, "near_value",
                        Mux(same_exp, Cat(Const(0, 1), Mux(b_larger, diff_ba, diff_ab)[:W]),
                            Mux(a_big, diff_a1, diff_b1)), W + 1)
    near = _named(m, "near", subtract & (same_exp | (apart_one & ~near_value[W])))
    near_sign = _named(m, "near_sign", Mux(same_exp, Mux(b_larger, b["sign"], a["sign"]), big_sign))
    zeros = _count_leading_zeros(m, "near_lzc", near_value)
    near_zero = _named(m, "near_zero", ~near_value.any())
    if ieee:
        # Not below exponent 1: a smaller result stays subnormal.
        limit = _named(m, "near_limit", big_exp - 1, E)
        n = len(zeros)
        use_limit = _named(m, "near_use_limit", ~limit[n:].any() & (zeros > limit[:n]))
        zeros = _named(m, "near_shift", Mux(use_limit, limit, zeros), E)
    near_norm = _shift_left(m, "near_normalise", near_value, zeros)
    near_exp = _named(m, "near_exp", Mux(near_zero, 1, big_exp - _widen(m, "near_shift_wide", zeros, E)), E)

    # ---- far path ---------------------------------------------------------------------------------
    big_sig = _named(m, "big_sig", Mux(a_big, ma, mb))
    small_sig = _named(m, "small_sig", Mux(a_big, mb, ma))
    G = GUARD_BITS
    k = (W + G - 1).bit_length()              # shifts of 2^k - 1 >= W + G places clear the operand
    beyond = _named(m, "align_beyond", distance[k:].any())
    small_ext = _named(m, "small_ext", Mux(beyond, small_sig.any(), Cat(Const(0, G), small_sig)), W + G)
    aligned = _shift_right_sticky(m, "align", small_ext, distance[:k])
    flip = _named(m, "align_flip", aligned ^ Mux(subtract, (1 << (W + G)) - 1, 0), W + G)
    # Rounding by injection: each place the sum can take (one right after a carry, as it is, one
    # left after a subtraction lost its top bit) has its own sum with half a unit of that last place
    # added, so rounding to nearest needs no second carry chain; a tie (nothing below the half) then
    # clears the last bit. The half lands in the big operand's zero guard bits, except after a
    # carry, where it is the big significand's last bit: that sum adds the significand plus one,
    # an increment of the operand registers beside the exponent compare.
    # A subtraction's sums carry 2^(W + G) (big + ~aligned + 1): their top bit is inverted.
    inc_a = _named(m, "far_inc_a", ma + 1, W + 1)
    inc_b = _named(m, "far_inc_b", mb + 1, W + 1)
    big_inc = _named(m, "far_big_inc", Mux(a_big, inc_a, inc_b))
    sum_c = _named(m, "far_sum_carry", Cat(Const(0, G), big_inc) + _widen(m, "align_wide", aligned, W + G + 1),
                   W + G + 2)      # additions
    sum_p = _named(m, "far_sum_plain", Cat(Const(1 << (G - 1), G), big_sig) + flip + subtract, W + G + 1)
    sum_l = _named(m, "far_sum_left", Cat(Const(1 << (G - 2), G), big_sig) + flip + subtract, W + G + 1)
    beyond_p = _named(m, "far_beyond_plain", sum_p[W + G] ^ subtract)   # >= 2^(W + G) once rounded
    use_c = _named(m, "far_use_carry", ~subtract & beyond_p)
    use_l = _named(m, "far_use_left", subtract & ~sum_l[W + G - 1] & sum_l[W + G])
    up_c = _named(m, "far_up_carry", sum_c[W + G + 1])                  # rounded up to 2^(W + G + 1)

    def window(total, low):
        """The W bits above the guard place ``low``, the last one cleared on a tie."""
        tie = ~total[:low + 1].any()
        return Cat(total[low + 1] & ~tie, total[low + 2:low + 1 + W])
    chosen = _named(m, "far_chosen", Mux(use_c, window(sum_c, G), Mux(use_l, window(sum_l, G - 2),
                                                                        window(sum_p, G - 1))), W)
    # A sum rounded up to the next power of two has zeros in its window: its top bit is set here.
    up = _named(m, "far_up", Mux(use_c, up_c, subtract & ~use_l & beyond_p))
    far_sig = _named(m, "far_sig", Cat(chosen[:W - 1], chosen[W - 1] | up))

    def select_far(step):
        """The far path's exponent, or a value that follows it: ``step(n)`` is the base plus n."""
        return Mux(use_c, Mux(up_c, step(2), step(1)), Mux(use_l, step(-1), Mux(up, step(1), step(0))))
    far_exp = _named(m, "far_exp", select_far(lambda n: _step(big_exp, n)), E + 1)

    out = dict(sign=_named(m, "sum_sign", Mux(near, near_sign & ~near_zero, big_sign)),
               exp=_named(m, "sum_exp", Mux(near, near_exp, far_exp[:E]), E),
               sig=_named(m, "sum_sig", Mux(near, near_norm[1:], far_sig), W))
    if follow is not None:
        # The next differences: the result's exponent is big_exp + n (far) or big_exp - zeros
        # (near; 1 when the sum is zero), so each candidate starts from big_exp - follow.
        # With a carry, the candidates for base + 1 are one lower (ahead) or higher (behind).
        follow = follow if isinstance(follow, LateExponent) else LateExponent(follow)
        carry = follow.carry
        ahead, behind = _exp_differences(m, "follow", fmt, big_exp, follow.base)
        reach = (-2, -1, 1, 2) if carry is not None else (-1, 1, 2)

        def label(n):
            return f"{n + 1}" if n >= -1 else f"_m{-n - 1}"
        aheads, behinds = {0: ahead}, {0: behind}
        for n in reach:
            aheads[n] = _named(m, f"follow_ahead{label(n)}", _step(ahead, n), E + 1)
            behinds[n] = _named(m, f"follow_behind{label(n)}", _step(behind, -n), E + 1)
        far_next = {n: (_carried(m, f"follow_ahead{label(n)}_carried", fmt, carry, aheads[n], aheads.get(n - 1)),
                        _carried(m, f"follow_behind{label(n)}_carried", fmt, carry, behinds[n], behinds.get(n - 1)))
                    for n in (-1, 0, 1, 2)}
        zeros_wide = _widen(m, "follow_zeros", zeros, E + 1)
        from_zero = _late_differences(m, "follow_zero", fmt, None, follow)
        near_ahead, near_behind = ahead - zeros_wide, behind + zeros_wide
        if carry is not None:
            near_ahead = _carried(m, "follow_near_ahead_carried", fmt, carry,
                                  _named(m, "follow_near_ahead_plain", near_ahead, E + 1),
                                  _named(m, "follow_near_ahead_raised", ahead + ~zeros_wide, E + 1))
            near_behind = _carried(m, "follow_near_behind_carried", fmt, carry,
                                   _named(m, "follow_near_behind_plain", near_behind, E + 1),
                                   _named(m, "follow_near_behind_raised", behind - ~zeros_wide, E + 1))
        near_ahead = _named(m, "follow_near_ahead", Mux(near_zero, from_zero[0], near_ahead), E + 1)
        near_behind = _named(m, "follow_near_behind", Mux(near_zero, from_zero[1], near_behind), E + 1)
        out["differences"] = (
            _named(m, "next_ahead", Mux(near, near_ahead, select_far(lambda n: far_next[n][0])), E + 1),
            _named(m, "next_behind", Mux(near, near_behind, select_far(lambda n: far_next[n][1])), E + 1))
    if not ieee:
        out.update(inf=Const(0, 1), nan=Const(0, 1))
        return out
    overflow = _named(m, "overflow", ~near & (far_exp[E] | far_exp[:E].all()))
    nan = _named(m, "sum_nan", a["nan"] | b["nan"] | (a["inf"] & b["inf"] & subtract))
    inf = _named(m, "sum_inf", ~nan & (a["inf"] | b["inf"] | overflow))
    out["sign"] = _named(m, "sum_sign_ieee", Mux(a["inf"], a["sign"], Mux(b["inf"], b["sign"], out["sign"])))
    out.update(inf=inf, nan=nan)
    return out


class FloatAdder(_CheckedComponent):
    """IEEE addition ``a + b`` in ``fmt``, round to nearest even (combinational).

    Ports: ``a``, ``b`` in, ``sum`` out, each ``fmt.width`` bits. Subnormals are kept; overflow gives
    +-Inf; a NaN operand or ``Inf + (-Inf)`` gives the positive quiet NaN; an exact zero sum is +0.0
    unless both operands are -0.0.

    The operands are unpacked, added by the near/far adder of :func:`_add` (the one inside the
    accumulator's loop) and packed. ``ieee=False`` builds that adder without its special cases and
    subnormal limit: then operands and sum must be zero or normal, as in :class:`FloatAccumulator`'s
    FP32 loop.
    """

    @staticmethod
    def check(fmt: FloatFormat = FP32, ieee: bool = True) -> None:
        check_format(fmt)

    def __init__(self, fmt: FloatFormat = FP32, ieee: bool = True):
        self.fmt, self.ieee = fmt, ieee
        super().__init__({"a": In(fmt.width), "b": In(fmt.width), "sum": Out(fmt.width)})

    def elaborate(self, platform):
        m = Module()
        total = _add(m, self.fmt, _unpack(m, "a", self.fmt, self.a), _unpack(m, "b", self.fmt, self.b),
                     self.ieee)
        m.d.comb += self.sum.eq(_pack(m, "packed", self.fmt, total))
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
        m.d.comb += self.value.eq(_convert(m, self.sum_bits, self.fmt, self.sum, self.exp)[0])
        return m


def _convert(m: Module, sum_bits: int, fmt: FloatFormat, x, exp, register=lambda **values: values):
    """The logic of :class:`BlockToFloat`: the bits of ``x * 2^(exp - 36)`` in ``fmt``, and its
    exponent as the adder's operands have it (:func:`_unpack`: 1 for zero and subnormals) in a
    :class:`LateExponent` (FP32: no carry; FP16: the rounding's carry), from the second half's
    inputs and not from the bits. ``register`` receives the first half's values and returns what
    the second half reads: themselves, or registers of them."""
    P = _pow2_at_least(sum_bits)               # bits of the normalised magnitude
    E, M = fmt.exp_bits, fmt.man_bits
    negative = x[-1]
    magnitude = _named(m, "magnitude", Mux(negative, -x, x)[:sum_bits], P)
    zero = _named(m, "zero", ~magnitude.any())
    # Biased exponent of the top bit: (P - 1 - zeros) + exp - 36 + bias = exp + offset - zeros.
    offset = P - 1 - PRODUCT_EXP_OFFSET + fmt.bias
    if conversion_is_exact(sum_bits, fmt):
        # FP32: exp + (offset - zeros), always normal, computed before the register so that the
        # loop's exponent differences with it start from a register; the mantissa is the
        # magnitude's other bits.
        # exp + offset is added beside the negation and the count, so one subtraction follows them.
        zeros = _count_leading_zeros(m, "lzc", magnitude)
        width = offset.bit_length() + 1      # 106: 8 bits, exp + offset and zeros fit
        assert width > max(EXP_SUM_BITS, len(zeros))
        # exp + offset modulo 2^width is written exp - (2^width - offset): that constant's top bit
        # is set, so Amaranth emits it at the full width (the lint rule WIDTHEXPAND, see _widen).
        assert offset < 1 << (width - 1)
        lifted = _named(m, "exp_lifted", _widen(m, "exp_wide", exp, width) - Const((1 << width) - offset, width),
                        width)
        v = register(negative=negative, zero=zero, field=magnitude, zeros=zeros,
                     exp_field=_named(m, "exp_field", lifted - _widen(m, "zeros_wide", zeros, width), E))
        norm = _shift_left(m, "normalise", v["field"], v["zeros"])          # hidden bit at P - 1
        finite = Cat(Const(0, M - (P - 1)), norm[:P - 1], v["exp_field"], v["negative"])
        base = _named(m, "base", Mux(v["zero"], 1, v["exp_field"]), E)         # as _unpack gives it
        return _named(m, "converted", Mux(v["zero"], 0, finite), fmt.width), LateExponent(base)
    # FP16. The negative offset (-6 at B = 32) becomes that many zeros above the magnitude, so that
    # the count includes it and the biased exponent is exp - zeros: no constant enters the
    # arithmetic. One more zero on top puts the subnormal place 2^(1 - bias - M) at a shift of
    # exactly `exp`, so a normal value is shifted left by zeros + 1 and a subnormal one by exp,
    # which is less: one left shift of all the magnitude's bits, and the rounding sees them all.
    assert offset < 0
    field = Cat(magnitude, Const(0, -offset))
    zeros = _count_leading_zeros(m, "lzc", field)
    width = max(EXP_SUM_BITS, len(zeros)) + 2
    biased = _named(m, "biased", _widen(m, "exp_wide", exp, width) - _widen(m, "zeros_wide", zeros, width), width)
    subnormal = _named(m, "subnormal", biased[-1] | ~biased[:-1].any())           # biased <= 0
    overflow = _named(m, "overflow", ~biased[-1] & (biased[E:-1].any() | biased[:E].all()))
    shift_bits = (len(field) + 1).bit_length()
    shift = _named(m, "shift", Mux(subnormal, exp, _named(m, "normal_shift", zeros + 1, shift_bits)), shift_bits)
    # The unpacked exponent before rounding: the field, 1 for zero and subnormals, all ones for Inf.
    base = _named(m, "base", Mux(zero | subnormal, 1, Mux(overflow, fmt.exp_all_ones, biased[:E])), E)
    v = register(negative=negative, zero=zero, subnormal=subnormal, overflow=overflow, field=field,
                 shift=shift, base=base)
    sig = _shift_left(m, "normalise", Cat(v["field"], Const(0, 1)), v["shift"])    # hidden bit on top
    exp_field = _named(m, "exp_field", Mux(v["subnormal"], 0, v["base"]), E)
    finite, carry = _round_pack(m, "finite", fmt, sig, exp_field, v["negative"], v["overflow"])
    # A subnormal rounded up to the smallest normal keeps the unpacked exponent 1.
    raised = _named(m, "raised", carry & ~(v["zero"] | v["subnormal"] | v["overflow"]))
    return _named(m, "converted", Mux(v["zero"], 0, finite), fmt.width), LateExponent(v["base"], raised)


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

    Latency 3: stage C registers the block sum's magnitude and leading-zero count, and the value's
    exponent field (FP16: the exponent before rounding, the subnormal and overflow flags and the
    one left shift that places the magnitude); stage T the block value converted to ``fmt`` (:class:`BlockToFloat`) and unpacked (sign,
    exponent, significand with its hidden bit, Inf) and the differences of its exponent and the
    running sum's; stage O adds it to the running sum, and on ``last`` registers the total and
    restarts at +0.0. Only the adder is in the loop: the running sum stays unpacked (packed once, at
    the output), the adder has a near and a far path and rounds by injection (:func:`_add`), and the
    exponent differences the next step starts from are chosen among candidates beside it, as its
    exponent is. In FP16 those differences are computed from the term's exponent before rounding
    and chosen by the rounding's carry into it last (:class:`LateExponent`), so that the
    conversion's rounding does not lie in front of them.

    In FP32 the loop's adder has no special cases and no subnormal logic, because none can occur:
    every block value and every running sum is a multiple of 2^-36 (so never subnormal), and
    ``|V_j| < 2^39`` while the running sum stays at most 2^63 (at 2^63 one place is 2^40, and adding
    less than half of it rounds back), far from FP32's overflow. FP16 keeps them all.
    """

    LATENCY = 3

    check = staticmethod(check_conversion)

    def __init__(self, sum_bits: int, fmt: FloatFormat = FP32):
        self.sum_bits, self.fmt = sum_bits, fmt
        self.ieee = not conversion_is_exact(sum_bits, fmt)   # FP16: Inf, NaN and subnormals occur
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
        fmt = self.fmt
        W = fmt.man_bits + 1
        c_valid, t_valid, o_valid = (Signal(name=f"{n}_valid") for n in "cto")
        c_last, t_last = (Signal(name=f"{n}_last", reset_less=True) for n in "ct")
        c_load, t_load, t_fire, o_load = (Signal(name=n) for n in ("c_load", "t_load", "t_fire", "o_load"))
        m.d.comb += [
            o_load.eq(~o_valid | self.o.ready),
            t_fire.eq(t_valid & (~t_last | o_load)),
            t_load.eq(~t_valid | t_fire),
            c_load.eq(~c_valid | t_load),
            self.i.ready.eq(c_load),
            self.o.valid.eq(o_valid),
        ]

        def operand(name, reset_less=True):
            """Registers of one operand form (:func:`_unpack`), named ``<name>_<field>``; the
            running sum's reset to +0.0 is sign 0, exponent 1, significand 0."""
            return dict(sign=Signal(name=f"{name}_sign", reset_less=reset_less),
                        exp=Signal(fmt.exp_bits, name=f"{name}_exp", init=1, reset_less=reset_less),
                        sig=Signal(W, name=f"{name}_sig", reset_less=reset_less),
                        inf=Signal(name=f"{name}_inf", reset_less=reset_less),
                        nan=Signal(name=f"{name}_nan", reset_less=reset_less))

        def register_c(**values):
            regs = {}
            for key, value in values.items():
                regs[key] = Signal(value.shape(), name=f"c_{key}", reset_less=True)
                with m.If(c_load & self.i.valid):
                    m.d.sync += regs[key].eq(value)
            return regs

        with m.If(c_load):
            m.d.sync += c_valid.eq(self.i.valid)
            with m.If(self.i.valid):
                m.d.sync += c_last.eq(self.i.payload.last)
        value, follow = _convert(m, self.sum_bits, fmt, self.i.payload.sum, self.i.payload.exp, register_c)
        t_value, running, total = operand("t"), operand("acc", reset_less=False), operand("o")
        # The running sum's exponent minus the term's, and the reverse, registered with the term, so
        # that the loop starts from them (see _add); `incoming` is the next term.
        E = fmt.exp_bits
        differences = (Signal(E + 1, name="acc_ahead", reset_less=True),
                       Signal(E + 1, name="acc_behind", reset_less=True))
        incoming = _unpack(m, "value", fmt, value)
        result = _add(m, fmt, running, t_value, self.ieee, differences=differences, follow=follow)
        # The running sum the incoming term will meet: the sum, +0.0 after a last beat, or as it is.
        restart = _late_differences(m, "restart", fmt, None, follow)
        hold = _late_differences(m, "hold", fmt, running["exp"], follow)
        meets = [Mux(t_fire, Mux(t_last, restart[n], result["differences"][n]), hold[n]) for n in (0, 1)]
        with m.If(t_load):
            m.d.sync += t_valid.eq(c_valid)
            with m.If(c_valid):
                m.d.sync += [t_value[k].eq(v) for k, v in incoming.items()]
                m.d.sync += [d.eq(v) for d, v in zip(differences, meets)]
                m.d.sync += t_last.eq(c_last)
        with m.If(o_load):
            m.d.sync += o_valid.eq(t_fire & t_last)
        with m.If(t_fire):
            with m.If(t_last):
                m.d.sync += [total[k].eq(result[k]) for k in total]
                m.d.sync += [running[k].eq(running[k].init) for k in running]
            with m.Else():
                m.d.sync += [running[k].eq(result[k]) for k in running]
        m.d.comb += self.o.payload.total.eq(_pack(m, "packed", fmt, total))
        return m
