"""Block dot-product MACs for the area comparison of the report (SPEC 6, SPEC 8; paper Table 5).

Each unit computes one exact integer block sum ``S = sum_k a_k * w_k`` over ``lanes`` element pairs
per clock. The shared block scales (E8M0, FP16 or the 5-bit BlockDialect exponent) only add a few
exponent bits after the sum and are left out of every design alike, so the comparison is of the part
that grows with the lane count: element decode, multipliers and adder tree.

Every unit has the same frame so that they are measured the same way:

- inputs ``a`` and ``w`` (lane k of ``bits`` bits at ``[bits*k +: bits]``), plus ``a_dialect`` and
  ``w_dialect`` for BlockDialect, are registered on the way in;
- each lane's product is a signed integer (:meth:`BlockMac.lane_product`);
- the products go through one balanced adder tree (:func:`adder_tree`, shared by all formats);
- the sum is registered on the way out (``sum``; latency 2 clocks).

Formats (the ``FORMATS`` table):

``int4``  signed 4-bit two's complement, 4x4 signed multiply.
``fp4``   FP4 E2M1 (the MXFP4 element): decoded to sign + 4-bit magnitude in units of 0.5
          ({0, 1, 2, 3, 4, 6, 8, 12}), 4x4 unsigned multiply, sign applied to the product.
``fp6``   FP6 E2M3 (the MXFP6 element with 3 mantissa bits): decoded to sign + 6-bit magnitude in
          units of 1/8 (up to 60), 6x6 unsigned multiply. E2M3 rather than E3M2 because inside a
          block-scaled format the range of E3M2 buys nothing the shared scale does not already give,
          E2M3 is the more accurate of the two, and its fixed-point magnitude is 6 bits instead of
          E3M2's 9, so it is also the smaller (conservative) baseline.
``int8``  signed 8-bit two's complement, 8x8 signed multiply.
``bd``    BlockDialect (SPEC 6): both operands decoded with :class:`bd_hw.decoder.BDDecoder` from
          their block's dialect to sign + 4-bit magnitude in half-units, 4x4 unsigned multiply,
          sign = XOR of the two signs.
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Module, Mux, Signal, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from golden.spec import CODE_BITS, DIALECT_BITS, MAX_HALF_UNITS

from bd_hw.decoder import BDDecoder

__all__ = ["adder_tree", "minifloat_magnitude", "BlockMac", "Int4Mac", "Int8Mac", "Fp4Mac", "Fp6Mac",
           "BlockDialectMac", "FORMATS", "MacFormat", "make_mac", "reference_block_sum",
           "minifloat_value_units"]


def adder_tree(m: Module, terms, name: str = "tree"):
    """Sum ``terms`` (Amaranth values) with a balanced binary tree of two-input adders.

    Each level adds neighbouring pairs into a named signal one bit wider than its widest operand,
    so every sum is exact. The same builder is used by every MAC in this module.
    """
    level = list(terms)
    if not level:
        raise ValueError("terms must not be empty")
    depth = 0
    while len(level) > 1:
        nxt = []
        for j in range(0, len(level) - 1, 2):
            x, y = level[j], level[j + 1]
            shape_x, shape_y = x.shape(), y.shape()
            is_signed = shape_x.signed or shape_y.signed
            width = max(shape_x.width + (is_signed and not shape_x.signed),
                        shape_y.width + (is_signed and not shape_y.signed)) + 1
            s = Signal(signed(width) if is_signed else unsigned(width), name=f"{name}_l{depth}_{j // 2}")
            m.d.comb += s.eq(x + y)
            nxt.append(s)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        depth += 1
    return level[0]


def minifloat_magnitude(bits, ebits: int, mbits: int):
    """Fixed-point magnitude of an unsigned minifloat ``{e[ebits], m[mbits]}`` with bias 1 (OCP MX
    element formats), in units of its smallest subnormal ``2^-mbits``: ``m`` when ``e == 0``, else
    ``(2^mbits + m) << (e - 1)``."""
    man = bits[:mbits]
    exp = bits[mbits:mbits + ebits]
    # (1.m) << (e - 1), written as a left shift by e then a fixed right shift (shift amounts are unsigned)
    normal = ((man | (1 << mbits)) << exp) >> 1
    return Mux(exp == 0, man, normal)


def minifloat_value_units(code: int, ebits: int, mbits: int) -> int:
    """Python reference of one signed minifloat code (sign at the top bit), in units of
    ``2^-mbits``, computed from the float value so it is independent of :func:`minifloat_magnitude`."""
    sign = (code >> (ebits + mbits)) & 1
    exp = (code >> mbits) & ((1 << ebits) - 1)
    man = code & ((1 << mbits) - 1)
    value = man / 2 ** mbits if exp == 0 else (1 + man / 2 ** mbits) * 2.0 ** (exp - 1)
    units = value * 2 ** mbits
    if units != int(units):
        raise AssertionError("minifloat value is not a whole number of units")
    return (-1) ** sign * int(units)


def _check_lanes(lanes) -> int:
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
        raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
    return lanes


@dataclass(frozen=True)
class MacFormat:
    """One element format of the comparison."""

    name: str       # short key
    title: str      # for reports
    bits: int       # bits per element code


class BlockMac(wiring.Component):
    """``lanes``-lane block dot product with registered inputs and output (see module docstring).

    Subclasses set ``FORMAT`` and implement :meth:`lane_product`; :meth:`extra_inputs` adds ports.
    """

    FORMAT: MacFormat

    def __init__(self, lanes: int = 32):
        self.lanes = _check_lanes(lanes)
        self.sum_shape = signed((self.max_abs_product() * lanes).bit_length() + 1)
        bits = self.FORMAT.bits
        super().__init__({
            "a": In(bits * lanes),
            "w": In(bits * lanes),
            **self.extra_inputs(),
            "sum": Out(self.sum_shape),
        })

    # --- per-format parts -------------------------------------------------------------------
    def extra_inputs(self) -> dict:
        return {}

    def max_abs_product(self) -> int:
        raise NotImplementedError

    def lane_product(self, m: Module, a_regs, w_regs, k: int):
        """Signed product of lane ``k`` from the registered inputs (``a_regs``/``w_regs`` are dicts
        of the registered ports)."""
        raise NotImplementedError

    # --- shared frame -------------------------------------------------------------------------
    def lane(self, vector, k: int):
        bits = self.FORMAT.bits
        return vector[bits * k: bits * (k + 1)]

    def elaborate(self, platform):
        m = Module()
        regs = {}
        for name in ["a", "w", *self.extra_inputs()]:
            port = getattr(self, name)
            reg = Signal(len(port), name=f"{name}_reg")
            m.d.sync += reg.eq(port)
            regs[name] = reg
        products = [self.lane_product(m, regs, k) for k in range(self.lanes)]
        total = adder_tree(m, products)
        m.d.sync += self.sum.eq(total)
        return m


class _IntMac(BlockMac):
    def max_abs_product(self) -> int:
        low = -(1 << (self.FORMAT.bits - 1))
        return low * low

    def lane_product(self, m, regs, k):
        p = Signal(signed(2 * self.FORMAT.bits), name=f"prod{k}")
        m.d.comb += p.eq(self.lane(regs["a"], k).as_signed() * self.lane(regs["w"], k).as_signed())
        return p


class Int4Mac(_IntMac):
    FORMAT = MacFormat("int4", "INT4 (signed 4x4)", 4)


class Int8Mac(_IntMac):
    FORMAT = MacFormat("int8", "INT8 (signed 8x8)", 8)


def _sign_magnitude_product(m: Module, k: int, sign, mag_a, mag_w, mag_bits: int):
    """Unsigned ``mag_bits`` x ``mag_bits`` multiply, then the sign applied: one signed product."""
    mag = Signal(2 * mag_bits, name=f"mag{k}")
    m.d.comb += mag.eq(mag_a * mag_w)
    p = Signal(signed(2 * mag_bits + 1), name=f"prod{k}")
    m.d.comb += p.eq(Mux(sign, -mag, mag))
    return p


class _MinifloatMac(BlockMac):
    EBITS: int
    MBITS: int

    def mag_bits(self) -> int:
        return self.max_magnitude().bit_length()

    def max_magnitude(self) -> int:
        return ((1 << (self.MBITS + 1)) - 1) << ((1 << self.EBITS) - 2)

    def max_abs_product(self) -> int:
        return self.max_magnitude() ** 2

    def lane_product(self, m, regs, k):
        a, w = self.lane(regs["a"], k), self.lane(regs["w"], k)
        n = self.EBITS + self.MBITS
        mb = self.mag_bits()
        mag_a = Signal(mb, name=f"a_mag{k}")
        mag_w = Signal(mb, name=f"w_mag{k}")
        m.d.comb += [mag_a.eq(minifloat_magnitude(a, self.EBITS, self.MBITS)),
                     mag_w.eq(minifloat_magnitude(w, self.EBITS, self.MBITS))]
        return _sign_magnitude_product(m, k, a[n] ^ w[n], mag_a, mag_w, mb)


class Fp4Mac(_MinifloatMac):
    FORMAT = MacFormat("fp4", "FP4 E2M1 (MXFP4 element)", 4)
    EBITS, MBITS = 2, 1


class Fp6Mac(_MinifloatMac):
    FORMAT = MacFormat("fp6", "FP6 E2M3 (MXFP6 element)", 6)
    EBITS, MBITS = 2, 3


class BlockDialectMac(BlockMac):
    """SPEC 6 block sum: ``a``/``w`` are 4-bit codes, ``a_dialect``/``w_dialect`` their dialects."""

    FORMAT = MacFormat("bd", "BlockDialect (DialectFP4)", CODE_BITS)

    def extra_inputs(self) -> dict:
        return {"a_dialect": In(DIALECT_BITS), "w_dialect": In(DIALECT_BITS)}

    def max_abs_product(self) -> int:
        return MAX_HALF_UNITS * MAX_HALF_UNITS   # SPEC 6: at most 225

    def elaborate(self, platform):
        self._decoded = {}
        return super().elaborate(platform)

    def _decode(self, m: Module, regs, side: str):
        if side not in self._decoded:
            dec = BDDecoder(self.lanes)
            m.submodules[f"{side}_decoder"] = dec
            m.d.comb += [dec.dialect.eq(regs[f"{side}_dialect"]), dec.codes.eq(regs[side])]
            self._decoded[side] = dec
        return self._decoded[side]

    def lane_product(self, m, regs, k):
        mag_bits = MAX_HALF_UNITS.bit_length()
        va = self._decode(m, regs, "a").values[k]
        vw = self._decode(m, regs, "w").values[k]
        return _sign_magnitude_product(m, k, va[mag_bits] ^ vw[mag_bits],
                                       va[:mag_bits], vw[:mag_bits], mag_bits)


FORMATS: dict[str, type[BlockMac]] = {
    cls.FORMAT.name: cls for cls in (BlockDialectMac, Int4Mac, Fp4Mac, Fp6Mac, Int8Mac)
}


def make_mac(fmt: str, lanes: int = 32) -> BlockMac:
    """The MAC of format ``fmt`` (a key of ``FORMATS``)."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {sorted(FORMATS)}, not {fmt!r}")
    _check_lanes(lanes)   # before construction, so a bad call leaves no unused component behind
    return FORMATS[fmt](lanes)


def reference_block_sum(fmt: str, a_codes, w_codes, a_dialect: int = 0, w_dialect: int = 0) -> int:
    """Python reference of the block sum of ``fmt`` for lists of element codes (ints), in the
    units of the hardware (half-units squared for ``bd`` and ``fp4``, 1/64 for ``fp6``)."""
    from golden.formatbook import FORMATBOOK_ROWS

    def value(code, dialect):
        if fmt in ("int4", "int8"):
            bits = FORMATS[fmt].FORMAT.bits
            return code - (1 << bits) if code >> (bits - 1) else code
        if fmt == "fp4":
            return minifloat_value_units(code, 2, 1)
        if fmt == "fp6":
            return minifloat_value_units(code, 2, 3)
        if fmt == "bd":
            return (-1) ** (code >> 3) * FORMATBOOK_ROWS[dialect][code & 7]
        raise ValueError(f"fmt must be one of {sorted(FORMATS)}, not {fmt!r}")

    return sum(value(a, a_dialect) * value(w, w_dialect) for a, w in zip(a_codes, w_codes))
