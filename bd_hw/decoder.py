"""``bd_decoder``: DialectFP4 code -> sign-magnitude half-units, all lanes in parallel (SPEC 6, SPEC 9).

Combinational. Ports (Verilog names equal the Python names):

- ``dialect`` in, 4 bits: the block's dialect.
- ``codes``   in, ``4B`` bits: lane k at ``[4k +: 4]``, ``code = sign << 3 | idx`` (SPEC 2).
- ``values``  out, ``5B`` bits: lane k at ``[5k +: 5]`` = ``{sign, h[3:0]}`` with
  ``h = FORMATBOOK[dialect][idx]`` (sign at bit 4 of the lane).

Two constructions of the same function (``decode``, :data:`~bd_hw.params.DECODES`); nothing here
retypes the formatbook:

- ``"mux"`` (the default): the dialect selects one formatbook row once (shared by all lanes; index
  positions whose value is the same in every dialect become constants), then each lane picks its
  entry with a 3-bit 8:1 selection.
- ``"anf"``: indices 0-4 decode to themselves in every dialect, so only indices 5-7 need the
  dialect. It selects, once per block, their magnitudes as three XOR coefficients
  (:func:`golden.formatbook.anf_coefficients`: ``h = c0 ^ c1 idx[1] ^ c2 idx[0]`` there); a lane
  then needs two ANDs and two XORs a bit and a 2:1 choice against its own index.

``"anf"`` is the smaller alone and in the block MACs of ``bench/hw/lane_products.py``, where the
decode and the multiply are one combinational cloud; inside ``bd_dot`` it is not, and the
default stays ``"mux"`` (``reports/synth/report.md``, "The decoder inside bd_dot").
"""
from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from golden.formatbook import FORMATBOOK_ROWS, IDENTITY_LEVELS, VARYING_COLUMNS, anf_coefficients
from golden.spec import CODE_BITS, DIALECT_BITS, H_BITS, IDX_BITS, LEVELS, NUM_DIALECTS

from .arith import pack_row
from .layouts import DECODED_BITS
from .params import DecoderParams, ParametrisedComponent

__all__ = ["FormatbookRow", "AnfCoefficients", "BDDecoder", "mux_lane", "anf_lane", "ANF_TERMS"]

ANF_TERMS = len(VARYING_COLUMNS)     # c0, c1, c2


def _per_dialect(m: Module, dialect, target, rows):
    """``target = rows[dialect]``, each row packed in 4-bit entries: one case per dialect assigning
    the whole row (entries equal in every dialect fold away in synthesis)."""
    with m.Switch(dialect):
        for d, values in enumerate(rows):
            with m.Case(d):
                m.d.comb += target.eq(pack_row(values, H_BITS))


class FormatbookRow(wiring.Component):
    """The 8 magnitudes (half-units) of one dialect: ``row[j] = FORMATBOOK[dialect][j]``.

    Ports: ``dialect`` in 4, ``row`` out, an array of 8 x 4 bits (entry j at ``[4j +: 4]``).
    """

    def __init__(self):
        super().__init__({
            "dialect": In(DIALECT_BITS),
            "row": Out(data.ArrayLayout(H_BITS, LEVELS)),
        })

    def elaborate(self, platform):
        m = Module()
        _per_dialect(m, self.dialect, self.row, FORMATBOOK_ROWS)
        return m


class AnfCoefficients(wiring.Component):
    """The dialect's index 5-7 magnitudes as XOR coefficients:
    ``coefficients[n] = anf_coefficients(dialect)[n]``.

    Ports: ``dialect`` in 4, ``coefficients`` out, an array of 3 x 4 bits (``c_n`` at ``[4n +: 4]``).
    """

    def __init__(self):
        super().__init__({
            "dialect": In(DIALECT_BITS),
            "coefficients": Out(data.ArrayLayout(H_BITS, ANF_TERMS)),
        })

    def elaborate(self, platform):
        m = Module()
        _per_dialect(m, self.dialect, self.coefficients,
                     [anf_coefficients(d) for d in range(NUM_DIALECTS)])
        return m


def mux_lane(m: Module, code, entries, name: str):
    """One lane's ``{sign, h}``: entry ``idx`` of the dialect's row ``entries`` (8 x 4 bits), as
    the row shifted right by 4 idx bits (a named signal) of which the lane keeps the low 4 (a
    full-width shift, so that no assignment narrows it; synthesis drops the unused upper bits)."""
    selected = Signal(H_BITS * LEVELS, name=name)
    m.d.comb += selected.eq(entries >> Cat(C(0, 2), code[:IDX_BITS]))
    return Cat(selected[:H_BITS], code[IDX_BITS])


def anf_lane(m: Module, code, coefficients, name: str):
    """One lane's ``{sign, h}`` from the block's three coefficients: ``h = idx`` below index 5,
    else ``c0 ^ c1 idx[1] ^ c2 idx[0]`` (its parts named ``<name>_wide`` and ``<name>_column``)."""
    idx, sign = code[:IDX_BITS], code[IDX_BITS]
    c0, c1, c2 = coefficients
    wide = Signal(name=f"{name}_wide")
    column = Signal(H_BITS, name=f"{name}_column")
    m.d.comb += [wide.eq(idx >= IDENTITY_LEVELS),
                 column.eq(c0 ^ (c1 & idx[1].replicate(H_BITS)) ^ (c2 & idx[0].replicate(H_BITS)))]
    return Cat(Mux(wide, column, idx), sign)


class BDDecoder(ParametrisedComponent):
    """``bd_decoder`` for block size ``B`` (16, 32 or 64), built as ``decode`` says: see the
    module docstring. Takes the arguments of :class:`~bd_hw.params.DecoderParams` (or one).

    Raises ``ValueError`` naming ``B`` for an unsupported block size, ``decode`` for an unknown
    construction.
    """

    Params = DecoderParams

    def __init__(self, *args, **kwargs):
        p = self.settle(*args, **kwargs)
        self.B, self.decode = p.B, p.decode
        super().__init__({
            "dialect": In(DIALECT_BITS),
            "codes": In(data.ArrayLayout(CODE_BITS, self.B)),
            "values": Out(data.ArrayLayout(DECODED_BITS, self.B)),
        })

    def elaborate(self, platform):
        m = Module()
        if self.decode == "anf":
            m.submodules.coefficients = anf = AnfCoefficients()
            m.d.comb += anf.dialect.eq(self.dialect)
            coefficients = [anf.coefficients[n] for n in range(ANF_TERMS)]
            for k in range(self.B):
                m.d.comb += self.values[k].eq(anf_lane(m, self.codes[k], coefficients, f"lane{k}"))
            return m
        m.submodules.formatbook = row = FormatbookRow()
        m.d.comb += row.dialect.eq(self.dialect)
        entries = Signal(H_BITS * LEVELS, name="entries")
        m.d.comb += entries.eq(row.row)
        for k in range(self.B):
            m.d.comb += self.values[k].eq(mux_lane(m, self.codes[k], entries, f"selected{k}"))
        return m
