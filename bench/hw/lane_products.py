"""Lane products of the MAC comparison: several constructions of each element format's product.

A MAC's cost is mostly its lane products, so each format is built in the ways a designer would
consider, and the report keeps the smallest as the format's baseline (``bench/hw/baseline_macs.py``).
:class:`ProductArray` is the combinational array of one construction; its lane k gives
``products[k] + carries[k]``, the exact signed product of lane k's two elements. Constructions that
apply the sign as a ones' complement leave the ``+1`` of each negative product in ``carries``; the
MAC adds those bits with one popcount instead of a negation per lane.

Constructions (:data:`CONSTRUCTIONS`, ``format -> name -> title``):

``int4``, ``int8`` (two's complement):
  ``mul``          Amaranth's signed ``*`` (yosys's signed multiplier);
  ``baugh_wooley`` unsigned partial-product array with complemented sign rows and two constants;
  ``booth``        radix-4 Booth: ``n / 2`` partial products from {0, +-a, +-2a};
  ``table``        (int4 only) the 256-entry product table, left to logic minimisation.
``fp4`` (E2M1) and ``fp6`` (E2M3), bias 1, sign on top:
  ``magnitude``    each element decoded to its fixed-point magnitude (4 bits for E2M1, 6 for E2M3),
                   unsigned multiply, negated product;
  ``shift``        the published minifloat dot-product way: significands ``{e != 0, m}`` multiplied
                   (2x2 or 4x4 bits), the sign applied to that short product, which is then shifted
                   left by the exponent sum ``max(e_a, 1) + max(e_w, 1) - 2``;
  ``shift_operand`` (fp6) as ``shift``, but one significand is negated before a signed multiply;
  ``table``        (fp4) the product of the two 3-bit magnitude codes from a 64-entry table.
``bd`` (SPEC 6; ``a_dialect``/``w_dialect`` select each operand's formatbook row):
  ``decoder``      two :class:`bd_hw.decoder.BDDecoder` (``decode="mux"``, theirs by default: the
                   dialect's formatbook row chosen once per block, an 8:1 selection per lane),
                   4x4 multiply;
  ``decoder_lut``  ``bd_dot``'s default: the decoders and :class:`bd_hw.dot.MultiplierArray` itself
                   (``products="lut"``: four gated copies of the activation's magnitude added, the
                   sign applied as a ones' complement whose +1 is left in ``carries``);
  ``shared``       the dialect-dependent columns of the formatbook (indices 5, 6, 7) decoded once
                   per block; per lane ``h = idx`` for ``idx < 5`` (every dialect), else the block's
                   value for ``idx``: one 3:1 choice of 4 bits; then the 4x4 multiply;
  ``shared_operand`` as ``shared``, the sign applied to one operand before a signed multiply;
  ``anf_lut``      ``decoder_lut`` with another decode: the dialect's index 5-7 magnitudes
                   ``v5, v6, v7`` turned once per block into XOR coefficients ``c0 = v5^v6^v7``,
                   ``c1 = v5^v7``, ``c2 = v6^v7``, so that ``v_idx = c0 ^ c1 idx[1] ^ c2 idx[0]``
                   for ``idx`` 5-7 (algebraic normal form over the two low index bits); per lane
                   ``h = idx >= 5 ? that : idx`` (two ANDs and two XORs a bit, then a 2:1 choice,
                   instead of the decoder's 8:1 selection), then bd_dot's MultiplierArray: the
                   decoders are :class:`bd_hw.decoder.BDDecoder` with ``decode="anf"``, so this is
                   ``bd_dot(decode="anf")``'s products;
  ``anf_defer``    the same decoders, a 4x4 multiply, the sign as a ones' complement whose +1 is
                   left in ``carries`` (``bd_dot(decode="anf", products="dsp")``'s);
  ``sigshift``     the significand/shift form of the minifloats' ``shift``: every magnitude as an
                   odd significand ``2t + 1`` (``t`` 3 bits) times ``2^sh`` (``sh`` 0-3), the
                   dialect-dependent columns' ``(t, sh)`` decoded once per block; per lane the
                   product of the odd significands (a 3x3 product of ``t``), shifted left by
                   ``sh_a + sh_w``, zero when either index is 0;
  ``blockprod``    the 9 products among the block pair's dialect-dependent magnitudes (indices
                   5-7 of each side) formed once per block pair; per lane, when both indices are
                   5-7 the product is selected from those 9, otherwise one side's index is 0-4 (its
                   own magnitude) and the product is that index times the other side's decoded
                   magnitude, a 3-bit by 4-bit product.

Constructions with a per-block part (:func:`takes_block_inputs`; for ``decoder_lut``, the
decoders' formatbook row) can take it as inputs instead
(``block_values_in``: the ``_lane`` single MACs), decoded once per block outside; what each takes is
:func:`block_input_layouts`, and :func:`block_input_values` gives its value for a dialect pair.

Sign handling suffix ``_defer`` (``magnitude``, ``table``, ``decoder`` and ``shared`` constructions,
and the only form of ``anf``, ``sigshift`` and ``blockprod``):
the product is complemented instead of negated and its ``+1`` is left in ``carries``
(``decoder_defer`` is ``bd_dot``'s ``products="dsp"``; the ``_lut`` constructions defer too).
"""
from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Shape, Signal, signed
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from golden.formatbook import (FORMATBOOK_ROWS, IDENTITY_LEVELS, VARYING_COLUMNS,
                               anf_coefficients)
from golden.spec import BLOCK_SIZES, CODE_BITS, DIALECT_BITS, H_BITS, IDX_BITS, LEVELS, MAX_HALF_UNITS

from bd_hw.decoder import ANF_TERMS, BDDecoder, anf_lane, mux_lane
from bd_hw.dot import MultiplierArray
from bd_hw.layouts import reject

__all__ = ["CONSTRUCTIONS", "FORMAT_BITS", "ProductArray", "product_inputs", "product_bits",
           "takes_block_inputs", "block_input_layouts", "block_input_values", "sigshift_entry",
           "max_abs_product",
           "element_value", "minifloat_magnitude", "minifloat_value_units", "check_construction"]

# Bits per element code of each format.
FORMAT_BITS = {"int4": 4, "int8": 8, "fp4": 4, "fp6": 6, "bd": CODE_BITS}
# (exponent bits, mantissa bits) of the minifloat formats (OCP MX element formats, bias 1).
MINIFLOAT = {"fp4": (2, 1), "fp6": (2, 3)}

CONSTRUCTIONS: dict[str, dict[str, str]] = {
    "int4": {"mul": "signed multiply (yosys)", "baugh_wooley": "Baugh-Wooley array",
             "booth": "radix-4 Booth", "table": "256-entry product table"},
    "int8": {"mul": "signed multiply (yosys)", "baugh_wooley": "Baugh-Wooley array",
             "booth": "radix-4 Booth"},
    "fp4": {"magnitude": "decoded 4-bit magnitudes, 4x4 multiply, negate",
            "magnitude_defer": "decoded 4-bit magnitudes, 4x4 multiply, ones' complement + popcount",
            "shift": "2x2 significand product, signed, shifted by the exponent sum",
            "table": "64-entry magnitude product table, negate",
            "table_defer": "64-entry magnitude product table, ones' complement + popcount"},
    "fp6": {"magnitude": "decoded 6-bit magnitudes, 6x6 multiply, negate",
            "shift": "4x4 significand product, signed, shifted by the exponent sum",
            "shift_operand": "signed 5x4 significand product, shifted by the exponent sum"},
    "bd": {"decoder": "two bd_decoders (formatbook row, 8:1 selection), 4x4 multiply, negate",
           "decoder_lut": "bd_dot's products: two bd_decoders, bd_hw.dot.MultiplierArray (products="
                          "'lut': four shifted partial products, ones' complement + popcount)",
           "decoder_defer": "two bd_decoders, 4x4 multiply, ones' complement + popcount",
           "shared": "indices 5-7 decoded once per block, 3:1 choice per lane, 4x4 multiply, negate",
           "shared_defer": "indices 5-7 decoded once per block, 4x4 multiply, ones' complement + "
                           "popcount",
           "shared_operand": "indices 5-7 decoded once per block, signed 5x4 multiply",
           "anf_lut": "index 5-7 magnitudes as per-block XOR coefficients (c0 ^ c1 idx1 ^ c2 idx0), "
                      "2:1 choice per lane against the index (bd_decoder's decode='anf'), "
                      "bd_dot's MultiplierArray (products='lut')",
           "anf_defer": "two bd_decoders with decode='anf', 4x4 multiply, ones' complement + "
                        "popcount",
           "sigshift_defer": "odd significand x 2^shift per element (indices 5-7 decoded once per "
                             "block), 3x3 significand product shifted by the shift sum, ones' "
                             "complement + popcount",
           "blockprod_defer": "the 9 products of the block pair's index 5-7 magnitudes formed once "
                              "per block pair and selected per lane, else index 0-4 x decoded "
                              "magnitude (3x4 bits), ones' complement + popcount"},
}
# Constructions of ``bd`` with a per-block part that the ``_lane`` single MACs take as inputs.
BLOCK_INPUT_BASES = ("decoder_lut", "anf_lut", "shared", "shared_operand", "sigshift", "blockprod")
SIGSHIFT_T_BITS, SIGSHIFT_SH_BITS = 3, 2      # odd significand 2t + 1 <= 15, shift 0..3


def check_construction(fmt: str, construction: str, owner=None) -> None:
    """ValueError naming ``fmt`` or ``construction`` (``owner``: a component left unbuilt)."""
    if fmt not in CONSTRUCTIONS:
        reject(owner)
        raise ValueError(f"fmt must be one of {sorted(CONSTRUCTIONS)}, not {fmt!r}")
    if construction not in CONSTRUCTIONS[fmt]:
        reject(owner)
        raise ValueError(f"construction must be one of {sorted(CONSTRUCTIONS[fmt])} for {fmt}, "
                         f"not {construction!r}")


# --- Python references (independent of the hardware constructions) ----------------------------

def minifloat_value_units(code: int, ebits: int, mbits: int) -> int:
    """One signed minifloat code (sign at the top bit, bias 1), in units of ``2^-mbits``, computed
    from the float value so it is independent of every construction here."""
    sign = (code >> (ebits + mbits)) & 1
    exp = (code >> mbits) & ((1 << ebits) - 1)
    man = code & ((1 << mbits) - 1)
    value = man / 2 ** mbits if exp == 0 else (1 + man / 2 ** mbits) * 2.0 ** (exp - 1)
    units = value * 2 ** mbits
    if units != int(units):
        raise AssertionError("minifloat value is not a whole number of units")
    return (-1) ** sign * int(units)


def element_value(fmt: str, code: int, dialect: int = 0) -> int:
    """Signed value of one element code in the hardware's units (half-units for ``bd``/``fp4``,
    1/8 for ``fp6``, integers for ``int4``/``int8``)."""
    bits = FORMAT_BITS[fmt]
    if fmt in ("int4", "int8"):
        return code - (1 << bits) if code >> (bits - 1) else code
    if fmt in MINIFLOAT:
        return minifloat_value_units(code, *MINIFLOAT[fmt])
    return (-1) ** (code >> IDX_BITS) * FORMATBOOK_ROWS[dialect][code & (LEVELS - 1)]


def max_abs_product(fmt: str) -> int:
    if fmt in ("int4", "int8"):
        return (1 << (FORMAT_BITS[fmt] - 1)) ** 2
    if fmt == "bd":
        return MAX_HALF_UNITS * MAX_HALF_UNITS            # SPEC 6: 225
    return max(abs(element_value(fmt, c)) for c in range(1 << FORMAT_BITS[fmt])) ** 2


def product_bits(fmt: str) -> int:
    """Signed width of one lane's product (and of its ones' complement)."""
    return (max_abs_product(fmt) + 1).bit_length() + 1


# --- hardware pieces -----------------------------------------------------------------------------

def minifloat_magnitude(bits, ebits: int, mbits: int):
    """Fixed-point magnitude of an unsigned minifloat ``{e[ebits], m[mbits]}`` with bias 1, in units
    of ``2^-mbits``: ``m`` when ``e == 0``, else ``(2^mbits + m) << (e - 1)``."""
    man = bits[:mbits]
    exp = bits[mbits:mbits + ebits]
    # (1.m) << (e - 1), written as a left shift by e then a fixed right shift (shift amounts are unsigned)
    normal = ((man | (1 << mbits)) << exp) >> 1
    return Mux(exp == 0, man, normal)


def _signed_magnitude(m: Module, name: str, sign, mag, defer: bool):
    """``(value, carry)`` with ``value + carry = (-1)^sign * mag``: a negation, or (``defer``) the
    ones' complement whose +1 is the carry."""
    value = Signal(signed(len(mag) + 1), name=name)
    if defer:
        m.d.comb += value.eq(Cat(mag ^ sign.replicate(len(mag)), sign).as_signed())
        return value, sign
    m.d.comb += value.eq(Mux(sign, -mag, mag))
    return value, None


def _baugh_wooley(a, b):
    """Signed ``n x n`` product of two's complement ``a``, ``b`` (Baugh-Wooley): the unsigned array
    of the magnitude bits, the sign rows complemented, plus ``2^n + 2^(2n-1)``, modulo ``2^(2n)``."""
    n = len(a)
    rows = []
    for i in range(n):
        bits = []
        for j in range(n):
            bit = a[i] & b[j]
            bits.append(~bit if (i == n - 1) != (j == n - 1) else bit)
        rows.append(Cat(*bits) << i)
    total = Const((1 << n) + (1 << (2 * n - 1)), 2 * n + 1)
    for row in rows:
        total = total + row
    return total[:2 * n].as_signed()


def _booth(m: Module, name: str, a, b):
    """Signed ``n x n`` product, radix-4 Booth on ``b`` (``n`` even): digit ``k`` is
    ``-2 b[2k+1] + b[2k] + b[2k-1]``; each partial product is ``{0, a, 2a}`` complemented when the
    digit is negative, with the +1 added as a carry bit."""
    n = len(a)
    a = a.as_signed()
    terms = []
    for k in range(n // 2):
        lo = b[2 * k - 1] if k else Const(0, 1)
        mid, hi = b[2 * k], b[2 * k + 1]
        one = mid ^ lo
        two = (hi & ~mid & ~lo) | (~hi & mid & lo)
        mag = Signal(signed(n + 2), name=f"{name}_pp{k}")
        m.d.comb += mag.eq(Mux(one, a, Mux(two, a << 1, 0)))
        pp = Signal(signed(n + 2), name=f"{name}_ppn{k}")
        m.d.comb += pp.eq(mag ^ hi.replicate(n + 2).as_signed())
        terms.append(pp << (2 * k))
        terms.append(hi << (2 * k))
    total = terms[0]
    for t in terms[1:]:
        total = total + t
    return total[:2 * n].as_signed()


def _table(m: Module, name: str, key, width: int, fn):
    """A ``width``-bit table of ``fn(key)`` over every value of ``key``, as one case statement."""
    out = Signal(width, name=name)
    with m.Switch(key):
        for v in range(1 << len(key)):
            with m.Case(v):
                m.d.comb += out.eq(fn(v) & ((1 << width) - 1))
    return out


def sigshift_entry(h: int) -> int:
    """``sigshift``'s code of one magnitude ``h = (2t + 1) * 2^sh``: ``t | sh << 3`` (0 for h = 0,
    whose product the lane forces to 0 from its index)."""
    if h == 0:
        return 0
    sh = (h & -h).bit_length() - 1
    t = ((h >> sh) - 1) // 2
    if t >> SIGSHIFT_T_BITS or sh >> SIGSHIFT_SH_BITS:
        raise AssertionError(f"magnitude {h} has no sigshift code")
    return t | sh << SIGSHIFT_T_BITS


def _column_values(m: Module, dialect, name: str, given=None, encode=lambda h: h, width=H_BITS):
    """Per-block decode of the formatbook: ``encode`` of entry ``j`` of the dialect's row, as a
    constant for a column equal in every dialect, else a signal chosen by ``dialect`` (once per
    block), or taken from ``given`` (the varying columns' codes, decoded outside)."""
    entries = []
    for j in range(LEVELS):
        column = [encode(row[j]) for row in FORMATBOOK_ROWS]
        if len(set(column)) == 1:
            entries.append(Const(column[0], width))
            continue
        if given is not None:
            entries.append(given[VARYING_COLUMNS.index(j)])
            continue
        v = Signal(width, name=f"{name}_v{j}")
        with m.Switch(dialect):
            for d, value in enumerate(column):
                with m.Case(d):
                    m.d.comb += v.eq(value)
        entries.append(v)
    return entries


def takes_block_inputs(construction: str) -> bool:
    """Whether a ``bd`` construction has a per-block part that can be given as inputs."""
    return construction.removesuffix("_defer") in BLOCK_INPUT_BASES


def block_input_layouts(construction: str) -> dict:
    """The per-block inputs of a ``bd`` construction built with ``block_values_in`` (port name ->
    layout): ``decoder_lut``, ``shared``, ``blockprod``: the magnitudes at
    :data:`~golden.formatbook.VARYING_COLUMNS`
    (``*_values``); ``anf_lut``: their :func:`~golden.formatbook.anf_coefficients` (``*_anf``);
    ``sigshift``: their :func:`sigshift_entry` codes (``*_sigshift``); ``blockprod`` also the
    products of every pair of them (``wide_products``, a-column major)."""
    base = construction.removesuffix("_defer")
    if base not in BLOCK_INPUT_BASES:
        raise ValueError(f"construction must be one of {BLOCK_INPUT_BASES} (or _defer), "
                         f"not {construction!r}")
    cols = len(VARYING_COLUMNS)
    if base == "sigshift":
        layout = data.ArrayLayout(SIGSHIFT_T_BITS + SIGSHIFT_SH_BITS, cols)
        return {"a_sigshift": layout, "w_sigshift": layout}
    if base == "anf_lut":
        layout = data.ArrayLayout(H_BITS, cols)
        return {"a_anf": layout, "w_anf": layout}
    ports = {"a_values": data.ArrayLayout(H_BITS, cols), "w_values": data.ArrayLayout(H_BITS, cols)}
    if base == "blockprod":
        ports["wide_products"] = data.ArrayLayout(2 * H_BITS, cols * cols)
    return ports


def block_input_values(construction: str, a_dialect: int, w_dialect: int) -> dict[str, int]:
    """The values of :func:`block_input_layouts`'s ports for a dialect pair, packed as integers
    (from the formatbook: what a per-block decode outside the lanes gives)."""
    layouts = block_input_layouts(construction)
    rows = {"a": FORMATBOOK_ROWS[a_dialect], "w": FORMATBOOK_ROWS[w_dialect]}
    cols = VARYING_COLUMNS
    out = {}
    for name, layout in layouts.items():
        side = name.split("_")[0]
        if name == "wide_products":
            entries = [rows["a"][i] * rows["w"][j] for i in cols for j in cols]
        elif name.endswith("_sigshift"):
            entries = [sigshift_entry(rows[side][j]) for j in cols]
        elif name.endswith("_anf"):
            entries = anf_coefficients(a_dialect if side == "a" else w_dialect)
        else:
            entries = [rows[side][j] for j in cols]
        width = Shape.cast(layout.elem_shape).width
        out[name] = sum(v << (width * n) for n, v in enumerate(entries))
    return out


def product_inputs(fmt: str, lanes: int, block_values_in: bool = False,
                   construction: str = "shared") -> dict:
    """The input ports of a :class:`ProductArray` (and of the MACs built on one); with
    ``block_values_in``, ``construction``'s per-block inputs (:func:`block_input_layouts`)."""
    bits = FORMAT_BITS[fmt]
    ports = {"a": In(bits * lanes), "w": In(bits * lanes)}
    if block_values_in:
        ports |= {name: In(layout) for name, layout in block_input_layouts(construction).items()}
    elif fmt == "bd":
        ports |= {"a_dialect": In(DIALECT_BITS), "w_dialect": In(DIALECT_BITS)}
    return ports


class ProductArray(wiring.Component):
    """``lanes`` lane products of one format and construction (combinational).

    Ports: ``a``, ``w`` in (lane k of ``bits`` bits at ``[bits*k +: bits]``), ``a_dialect`` and
    ``w_dialect`` in for ``bd`` (with ``block_values_in``, a construction with a per-block part,
    :func:`takes_block_inputs`, takes instead :func:`block_input_layouts`'s ports, decoded once per
    block outside); ``products`` out (signed :func:`product_bits`) and ``carries`` out
    (one bit per lane); ``products[k] + carries[k]`` is lane k's exact product. :attr:`defers` says
    whether the carries can be non-zero.
    """

    def __init__(self, fmt: str, construction: str, lanes: int, block_values_in: bool = False):
        check_construction(fmt, construction, self)
        if block_values_in and not (fmt == "bd" and takes_block_inputs(construction)):
            reject(self)
            raise ValueError("block_values_in needs a bd construction with a per-block part "
                             f"({', '.join(BLOCK_INPUT_BASES)}), not {fmt} {construction!r}")
        self.fmt, self.construction, self.lanes = fmt, construction, lanes
        self.block_values_in = block_values_in
        self.bits = FORMAT_BITS[fmt]
        self.defers = construction.endswith(("_defer", "_lut"))
        ports = product_inputs(fmt, lanes, block_values_in, construction)
        ports |= {"products": Out(data.ArrayLayout(signed(product_bits(fmt)), lanes)),
                  "carries": Out(lanes)}
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        base = self.construction.removesuffix("_defer")
        lane_fn = getattr(self, f"_{self.fmt if self.fmt != 'int8' else 'int4'}_{base}")
        block = self._per_block(m, base)
        for k in range(self.lanes):
            a = self.a[self.bits * k: self.bits * (k + 1)]
            w = self.w[self.bits * k: self.bits * (k + 1)]
            value, carry = lane_fn(m, k, a, w, block)
            m.d.comb += self.products[k].eq(value)
            if carry is not None:
                m.d.comb += self.carries[k].eq(carry)
        return m

    def _per_block(self, m: Module, base: str):
        if self.fmt != "bd":
            return None
        if base.startswith(("decoder", "anf")):
            decode = self._anf_decode if base.startswith("anf") else self._mux_decode
            decoded = {side: decode(m, side) for side in ("a", "w")}
            if base.endswith("_lut"):
                m.submodules.multipliers = mul = MultiplierArray(self.lanes, products="lut")
                for k in range(self.lanes):
                    m.d.comb += [mul.a[k].eq(decoded["a"][k]), mul.w[k].eq(decoded["w"][k])]
                decoded["products"], decoded["carries"] = mul.products, mul.carries
            return decoded
        given = (lambda name: getattr(self, name)) if self.block_values_in else (lambda name: None)
        dialect = (lambda side: None) if self.block_values_in else (
            lambda side: getattr(self, f"{side}_dialect"))
        if base == "sigshift":
            return {side: _column_values(m, dialect(side), side, given(f"{side}_sigshift"),
                                         sigshift_entry, SIGSHIFT_T_BITS + SIGSHIFT_SH_BITS)
                    for side in ("a", "w")}
        block = {side: _column_values(m, dialect(side), side, given(f"{side}_values"))
                 for side in ("a", "w")}
        if base == "blockprod":
            # The products of the two sides' dialect-dependent magnitudes, once per block pair.
            cols = VARYING_COLUMNS
            products = given("wide_products")
            wide = []
            for n, (i, j) in enumerate((i, j) for i in cols for j in cols):
                if products is not None:
                    wide.append(products[n])
                    continue
                p = Signal(2 * H_BITS, name=f"wide_a{i}_w{j}")
                m.d.comb += p.eq(block["a"][i] * block["w"][j])
                wide.append(p)
            block["wide"] = wide
        return block

    def _lane_codes(self, side: str) -> list:
        codes = getattr(self, side)
        return [codes[CODE_BITS * k: CODE_BITS * (k + 1)] for k in range(self.lanes)]

    def _decoder(self, m: Module, side: str, decode: str):
        """A :class:`~bd_hw.decoder.BDDecoder` built as ``decode`` says, on ``side``'s codes and
        dialect: the smallest that holds the lanes (a single MAC uses lane 0 of 16; synthesis
        removes the lanes nothing reads). Returns its lanes ``{sign, h}``."""
        codes = getattr(self, side)
        dec = BDDecoder(min(B for B in BLOCK_SIZES if B >= self.lanes), decode=decode)
        m.submodules[f"{side}_decoder"] = dec
        m.d.comb += [dec.dialect.eq(getattr(self, f"{side}_dialect")),
                     dec.codes.as_value()[:len(codes)].eq(codes)]
        return [dec.values[k] for k in range(self.lanes)]

    def _anf_decode(self, m: Module, side: str) -> list:
        """``side``'s lanes ``{sign, h}``: a :class:`~bd_hw.decoder.BDDecoder` with
        ``decode="anf"``, or (``block_values_in``) its per-lane part on the block's given
        coefficients."""
        if not self.block_values_in:
            return self._decoder(m, side, "anf")
        coefficients = [getattr(self, f"{side}_anf")[n] for n in range(ANF_TERMS)]
        return [self._lane_value(m, anf_lane(m, code, coefficients, f"{side}_lane{k}"), side, k)
                for k, code in enumerate(self._lane_codes(side))]

    def _mux_decode(self, m: Module, side: str) -> list:
        """``side``'s lanes ``{sign, h}``: a :class:`~bd_hw.decoder.BDDecoder` (``decode="mux"``),
        or (``block_values_in``) its per-lane selection from the given columns (its per-block
        formatbook row decoded outside)."""
        if not self.block_values_in:
            return self._decoder(m, side, "mux")
        entries = Signal(H_BITS * LEVELS, name=f"{side}_entries")
        m.d.comb += entries.eq(Cat(*_column_values(m, None, side, getattr(self, f"{side}_values"))))
        return [self._lane_value(m, mux_lane(m, code, entries, f"{side}_selected{k}"), side, k)
                for k, code in enumerate(self._lane_codes(side))]

    @staticmethod
    def _lane_value(m: Module, value, side: str, k: int):
        named = Signal(H_BITS + 1, name=f"{side}_value{k}")
        m.d.comb += named.eq(value)
        return named

    # --- integers ---------------------------------------------------------------------------
    def _int4_mul(self, m, k, a, w, block):
        return a.as_signed() * w.as_signed(), None

    def _int4_baugh_wooley(self, m, k, a, w, block):
        return _baugh_wooley(a, w), None

    def _int4_booth(self, m, k, a, w, block):
        return _booth(m, f"booth{k}", a, w), None

    def _int4_table(self, m, k, a, w, block):
        n = self.bits
        key = Cat(a, w)
        out = _table(m, f"table{k}", key, 2 * n, lambda v: element_value("int4", v & 15)
                     * element_value("int4", v >> 4))
        return out.as_signed(), None

    # --- minifloats ---------------------------------------------------------------------------
    def _split(self, code):
        ebits, mbits = MINIFLOAT[self.fmt]
        n = ebits + mbits
        return code[n], code[mbits:n], code[:mbits], code[:n]

    def _magnitude_lane(self, m, k, a, w):
        ebits, mbits = MINIFLOAT[self.fmt]
        sa, _, _, ma = self._split(a)
        sw, _, _, mw = self._split(w)
        width = (max(abs(element_value(self.fmt, c)) for c in range(1 << self.bits))).bit_length()
        mag_a, mag_w = Signal(width, name=f"a_mag{k}"), Signal(width, name=f"w_mag{k}")
        m.d.comb += [mag_a.eq(minifloat_magnitude(ma, ebits, mbits)),
                     mag_w.eq(minifloat_magnitude(mw, ebits, mbits))]
        mag = Signal(2 * width, name=f"mag{k}")
        m.d.comb += mag.eq(mag_a * mag_w)
        return _signed_magnitude(m, f"prod{k}", sa ^ sw, mag, self.defers)

    def _fp4_magnitude(self, m, k, a, w, block):
        return self._magnitude_lane(m, k, a, w)

    def _fp6_magnitude(self, m, k, a, w, block):
        return self._magnitude_lane(m, k, a, w)

    def _significand(self, m, name, code):
        """``(significand, shift)``: ``{e != 0, m}`` and ``max(e, 1) - 1``."""
        _, e, man, _ = self._split(code)
        normal = e.any()
        sig = Signal(len(man) + 1, name=f"{name}_sig")
        shift = Signal(len(e), name=f"{name}_sh")
        m.d.comb += [sig.eq(Cat(man, normal)), shift.eq(Mux(normal, e - 1, 0))]
        return sig, shift

    def _shift_lane(self, m, k, a, w, operand_sign: bool):
        sa, sw = a[self.bits - 1], w[self.bits - 1]
        sig_a, sh_a = self._significand(m, f"a{k}", a)
        sig_w, sh_w = self._significand(m, f"w{k}", w)
        width = 2 * len(sig_a)
        short = Signal(signed(width + 1), name=f"short{k}")
        if operand_sign:
            neg_w = Signal(signed(len(sig_w) + 1), name=f"w{k}_signed")
            m.d.comb += [neg_w.eq(Mux(sa ^ sw, -sig_w, sig_w)), short.eq(sig_a * neg_w)]
        else:
            mag = Signal(width, name=f"sigprod{k}")
            m.d.comb += [mag.eq(sig_a * sig_w), short.eq(Mux(sa ^ sw, -mag, mag))]
        shift = Signal(len(sh_a) + 1, name=f"shift{k}")
        m.d.comb += shift.eq(sh_a + sh_w)
        value = Signal(signed(product_bits(self.fmt)), name=f"prod{k}")
        m.d.comb += value.eq(short << shift)
        return value, None

    def _fp4_shift(self, m, k, a, w, block):
        return self._shift_lane(m, k, a, w, False)

    def _fp6_shift(self, m, k, a, w, block):
        return self._shift_lane(m, k, a, w, False)

    def _fp6_shift_operand(self, m, k, a, w, block):
        return self._shift_lane(m, k, a, w, True)

    def _fp4_table(self, m, k, a, w, block):
        n = self.bits - 1
        key = Cat(a[:n], w[:n])
        mag = _table(m, f"table{k}", key, 8,
                     lambda v: abs(element_value("fp4", v & 7) * element_value("fp4", v >> n)))
        return _signed_magnitude(m, f"prod{k}", a[n] ^ w[n], mag, self.defers)

    # --- BlockDialect -------------------------------------------------------------------------
    def _bd_decoder(self, m, k, a, w, block):
        va, vw = block["a"][k], block["w"][k]
        mag = Signal(2 * H_BITS, name=f"mag{k}")
        m.d.comb += mag.eq(va[:H_BITS] * vw[:H_BITS])
        return _signed_magnitude(m, f"prod{k}", va[H_BITS] ^ vw[H_BITS], mag, self.defers)

    def _bd_decoder_lut(self, m, k, a, w, block):
        return block["products"][k], block["carries"][k]

    _bd_anf_lut = _bd_decoder_lut
    _bd_anf = _bd_decoder

    def _bd_value(self, m, name, code, entries):
        """``h`` of one lane from its index and the block's per-column values."""
        idx = code[:IDX_BITS]
        low = IDENTITY_LEVELS
        rest = Array(entries[low:])
        h = Signal(H_BITS, name=name)
        m.d.comb += h.eq(Mux(idx < low, idx, rest[(idx - low)[:max(1, (LEVELS - low - 1).bit_length())]]))
        return h

    def _bd_shared(self, m, k, a, w, block):
        ha = self._bd_value(m, f"a_h{k}", a, block["a"])
        hw = self._bd_value(m, f"w_h{k}", w, block["w"])
        mag = Signal(2 * H_BITS, name=f"mag{k}")
        m.d.comb += mag.eq(ha * hw)
        return _signed_magnitude(m, f"prod{k}", a[IDX_BITS] ^ w[IDX_BITS], mag, self.defers)

    def _bd_sigshift(self, m, k, a, w, block):
        ia, iw = a[:IDX_BITS], w[:IDX_BITS]
        fields = []
        for side, idx in (("a", ia), ("w", iw)):
            code = Signal(SIGSHIFT_T_BITS + SIGSHIFT_SH_BITS, name=f"{side}_ss{k}")
            m.d.comb += code.eq(Array(block[side])[idx])
            fields.append((code[:SIGSHIFT_T_BITS], code[SIGSHIFT_T_BITS:]))
        (ta, sha), (tw, shw) = fields
        # (2 ta + 1)(2 tw + 1) = 4 ta tw + 2 (ta + tw) + 1
        tt = Signal(2 * SIGSHIFT_T_BITS, name=f"tt{k}")
        m.d.comb += tt.eq(ta * tw)
        odd = Signal(2 * H_BITS, name=f"odd{k}")
        m.d.comb += odd.eq(Cat(Const(1, 1), (ta + tw + (tt << 1))))
        shift = Signal(SIGSHIFT_SH_BITS + 1, name=f"shift{k}")
        m.d.comb += shift.eq(sha + shw)
        mag = Signal(2 * H_BITS, name=f"mag{k}")
        m.d.comb += mag.eq(Mux(ia.any() & iw.any(), odd << shift, 0))
        return _signed_magnitude(m, f"prod{k}", a[IDX_BITS] ^ w[IDX_BITS], mag, self.defers)

    def _bd_blockprod(self, m, k, a, w, block):
        ia, iw = a[:IDX_BITS], w[:IDX_BITS]
        low = IDENTITY_LEVELS
        wide = {}
        h = {}
        for side, idx in (("a", ia), ("w", iw)):
            wide[side] = Signal(name=f"{side}_wide{k}")
            h[side] = Signal(H_BITS, name=f"{side}_h{k}")
            m.d.comb += [wide[side].eq(idx >= low), h[side].eq(Array(block[side])[idx])]
        # One side's index is 0-4 unless both are wide: that index is its magnitude (<= 4, so
        # bit 2 set means 4 alone), times the other side's decoded magnitude.
        narrow = Signal(IDX_BITS, name=f"narrow{k}")
        other = Signal(H_BITS, name=f"other{k}")
        m.d.comb += [narrow.eq(Mux(wide["a"], iw, ia)), other.eq(Mux(wide["a"], h["a"], h["w"]))]
        small = Signal(2 * H_BITS, name=f"small{k}")
        m.d.comb += small.eq(Mux(narrow[2], other << 2, other * narrow[:2]))
        # Both wide: the block pair's product of the two columns.
        cols = len(VARYING_COLUMNS)
        table = Array(Array(block["wide"][cols * i: cols * (i + 1)]) for i in range(cols))
        column = (LEVELS - low - 1).bit_length()
        pick = Signal(2 * H_BITS, name=f"pick{k}")
        m.d.comb += pick.eq(table[(ia - low)[:column]][(iw - low)[:column]])
        mag = Signal(2 * H_BITS, name=f"mag{k}")
        m.d.comb += mag.eq(Mux(wide["a"] & wide["w"], pick, small))
        return _signed_magnitude(m, f"prod{k}", a[IDX_BITS] ^ w[IDX_BITS], mag, self.defers)

    def _bd_shared_operand(self, m, k, a, w, block):
        ha = self._bd_value(m, f"a_h{k}", a, block["a"])
        hw = self._bd_value(m, f"w_h{k}", w, block["w"])
        signed_w = Signal(signed(H_BITS + 1), name=f"w_signed{k}")
        m.d.comb += signed_w.eq(Mux(a[IDX_BITS] ^ w[IDX_BITS], -hw, hw))
        value = Signal(signed(product_bits("bd")), name=f"prod{k}")
        m.d.comb += value.eq(ha * signed_w)
        return value, None

