"""``bd_decoder``: DialectFP4 code -> sign-magnitude half-units, all lanes in parallel (SPEC 6, SPEC 9).

Combinational. Ports (Verilog names equal the Python names):

- ``dialect`` in, 4 bits: the block's dialect.
- ``codes``   in, ``4B`` bits: lane k at ``[4k +: 4]``, ``code = sign << 3 | idx`` (SPEC 2).
- ``values``  out, ``5B`` bits: lane k at ``[5k +: 5]`` = ``{sign, h[3:0]}`` with
  ``h = FORMATBOOK[dialect][idx]`` (sign at bit 4 of the lane).

The table comes from :data:`golden.formatbook.FORMATBOOK_ROWS`; nothing here retypes it. The
dialect selects one formatbook row once (shared by all lanes; index positions whose value is the
same in every dialect become constants), then each lane picks its entry with a 3-bit 8:1 mux.
"""
from __future__ import annotations

from amaranth.hdl import C, Cat, Module, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from golden.formatbook import FORMATBOOK_ROWS
from golden.spec import CODE_BITS, DIALECT_BITS, H_BITS, IDX_BITS, LEVELS

from .arith import pack_row
from .layouts import DECODED_BITS
from .params import DecoderParams, ParametrisedComponent

__all__ = ["FormatbookRow", "BDDecoder"]


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
        # One case per dialect assigning the whole row (constant columns fold away in synthesis).
        with m.Switch(self.dialect):
            for d, values in enumerate(FORMATBOOK_ROWS):
                with m.Case(d):
                    m.d.comb += self.row.eq(pack_row(values, H_BITS))
        return m


class BDDecoder(ParametrisedComponent):
    """``bd_decoder`` for block size ``B`` (16, 32 or 64): see the module docstring for the ports.
    Takes the arguments of :class:`~bd_hw.params.DecoderParams` (or one).

    Raises ``ValueError`` naming ``B`` for an unsupported block size.
    """

    Params = DecoderParams

    def __init__(self, *args, **kwargs):
        self.B = self.settle(*args, **kwargs).B
        super().__init__({
            "dialect": In(DIALECT_BITS),
            "codes": In(data.ArrayLayout(CODE_BITS, self.B)),
            "values": Out(data.ArrayLayout(DECODED_BITS, self.B)),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.formatbook = row = FormatbookRow()
        m.d.comb += row.dialect.eq(self.dialect)
        # One 8:1 selection per lane from the shared row: the row shifted right by 4 idx bits, of
        # which the lane keeps the low 4 (a full-width shift, so that no assignment narrows it;
        # synthesis drops the unused upper bits).
        entries = Signal(H_BITS * LEVELS, name="entries")
        m.d.comb += entries.eq(row.row)
        for k in range(self.B):
            code = self.codes[k]
            idx, sign = code[:IDX_BITS], code[IDX_BITS]
            selected = Signal(H_BITS * LEVELS, name=f"selected{k}")
            m.d.comb += [selected.eq(entries >> Cat(C(0, 2), idx)),
                         self.values[k].eq(Cat(selected[:H_BITS], sign))]
        return m
