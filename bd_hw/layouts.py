"""Stream payload layouts of SPEC 9, shared by every unit and by the cocotb testbenches.

Every layout is a :class:`amaranth.lib.data.StructLayout` whose fields are listed **from the least
significant bit**; element ``k`` of a vector field of ``w``-bit elements sits at bits ``[w*k +: w]``
(an :class:`~amaranth.lib.data.ArrayLayout`). The Verilog port ``i__payload`` / ``o__payload`` is the
flat bit vector of that layout, so a testbench can build or read it as a Python ``int`` with the
``pack_*`` / ``unpack_*`` helpers below (plain ints, no Amaranth needed at run time beyond import).

Bit positions (``B`` = block size = lane count; ``[lo +: w]``):

``bd_quantizer`` input (``16B`` bits)
    ``data``      ``[0 +: 16B]``, element k (FP16 bits) at ``[16k +: 16]``
``bd_quantizer`` output (``4B + 10`` bits)
    ``codes``     ``[0 +: 4B]``, element k at ``[4k +: 4]``, ``code = sign << 3 | idx``
    ``dialect``   ``[4B +: 4]``
    ``exp``       ``[4B + 4 +: 5]``
    ``invalid``   ``[4B + 9]``
``bd_dot`` input (``8B + 19`` bits)
    ``a_codes``   ``[0 +: 4B]``
    ``a_dialect`` ``[4B +: 4]``
    ``a_exp``     ``[4B + 4 +: 5]``
    ``w_codes``   ``[4B + 9 +: 4B]``
    ``w_dialect`` ``[8B + 9 +: 4]``
    ``w_exp``     ``[8B + 13 +: 5]``
    ``last``      ``[8B + 18]``
``bd_dot`` output (32 bits)
    ``result``    ``[0 +: 32]``, IEEE binary32 bits
``bd_decoder`` (plain ports, no stream)
    ``codes`` ``4B`` bits, lane k at ``[4k +: 4]``; ``dialect`` 4 bits;
    ``values`` ``5B`` bits, lane k at ``[5k +: 5]`` = ``{sign, h[3:0]}`` (sign at bit 4 of the lane)

Inside ``bd_linear`` (SPEC 11): :func:`block_layout` (one quantized block: the activation buffer's
word and an unpacked weight block), :func:`meta_layout` (a row group's flags) and
:func:`result_layout` (one ``m_axis_y`` beat).
"""
from __future__ import annotations

import re
import warnings
from collections.abc import Mapping, Sequence

from amaranth.hdl import Shape, UnusedElaboratable
from amaranth.lib import data

from golden.spec import (CODE_BITS, DIALECT_BITS, EXP_BITS, FP16_BITS, FP32_BITS, H_BITS, Y_USER_BITS,
                         check_block_size)

__all__ = [
    "FP16_BITS", "FP32_BITS", "DECODED_BITS",
    "unit_block_size", "reject",
    "quantizer_input_layout", "quantizer_output_layout", "dot_input_layout", "dot_output_layout",
    "block_layout", "meta_layout", "result_layout", "Y_USER_BITS",
    "pack", "unpack",
    "pack_quantizer_input", "unpack_quantizer_input",
    "pack_quantizer_output", "unpack_quantizer_output",
    "pack_dot_input", "unpack_dot_input", "pack_dot_output", "unpack_dot_output",
    "pack_lanes", "unpack_lanes", "pack_decoder_codes", "unpack_decoder_values",
]

DECODED_BITS = 1 + H_BITS  # decoder lane: {sign, h[3:0]} (SPEC 9)


def unit_block_size(B, owner=None) -> int:
    """The block-size check (``golden.spec.check_block_size``, naming ``B``) of a component that
    checks its arguments in ``__init__``; ``owner``, the component, is then :func:`reject`\\ ed.
    The units of ``bd_hw`` check theirs before they exist (:mod:`bd_hw.params`)."""
    try:
        return check_block_size(B, "B")
    except ValueError:
        reject(owner)
        raise


def reject(owner) -> None:
    """No "created but never used" warning for ``owner``, a component whose ``__init__`` rejected
    its arguments (it will never be elaborated): a filter on that warning for that object only.
    Components built on :class:`bd_hw.params.ParametrisedComponent` need none."""
    if owner is not None:
        warnings.filterwarnings("ignore", category=UnusedElaboratable,
                                message=re.escape(f"{owner!r} created but never used"))


def quantizer_input_layout(B: int) -> data.StructLayout:
    """``bd_quantizer`` input payload: ``data``, B FP16 elements, element k at ``[16k +: 16]``."""
    return data.StructLayout({"data": data.ArrayLayout(FP16_BITS, B)})


def quantizer_output_layout(B: int) -> data.StructLayout:
    """``bd_quantizer`` output payload: ``codes`` 4B, ``dialect`` 4, ``exp`` 5, ``invalid`` 1."""
    return data.StructLayout({
        "codes":   data.ArrayLayout(CODE_BITS, B),
        "dialect": DIALECT_BITS,
        "exp":     EXP_BITS,
        "invalid": 1,
    })


def dot_input_layout(B: int) -> data.StructLayout:
    """``bd_dot`` input payload: one activation block, one weight block and ``last``."""
    return data.StructLayout({
        "a_codes":   data.ArrayLayout(CODE_BITS, B),
        "a_dialect": DIALECT_BITS,
        "a_exp":     EXP_BITS,
        "w_codes":   data.ArrayLayout(CODE_BITS, B),
        "w_dialect": DIALECT_BITS,
        "w_exp":     EXP_BITS,
        "last":      1,
    })


def dot_output_layout() -> data.StructLayout:
    """``bd_dot`` output payload: ``result``, FP32 bits."""
    return data.StructLayout({"result": FP32_BITS})


def block_layout(B: int) -> data.StructLayout:
    """One quantized block: ``codes`` 4B (element k at ``[4k +: 4]``), ``dialect`` 4, ``exp`` 5.

    The field order of the quantizer's output without ``invalid``, and the bit order of a packed
    block's codes (SPEC 7: element 2i in the low nibble of byte i is element k at bit 4k).
    """
    return data.StructLayout({
        "codes":   data.ArrayLayout(CODE_BITS, B),
        "dialect": DIALECT_BITS,
        "exp":     EXP_BITS,
    })


def meta_layout() -> data.StructLayout:
    """What a row group's output beat carries besides its results (SPEC 11 ``tuser``, ``tlast``):
    ``invalid`` (tuser bit 0), ``mismatch`` (tuser bit 1), ``final`` (tlast)."""
    return data.StructLayout({"invalid": 1, "mismatch": 1, "final": 1})


def result_layout(N: int) -> data.StructLayout:
    """One ``m_axis_y`` beat: ``data`` N x FP32 (lane n at ``[32n +: 32]``), ``user`` 2, ``last`` 1."""
    return data.StructLayout({
        "data": data.ArrayLayout(FP32_BITS, N),
        "user": Y_USER_BITS,
        "last": 1,
    })


# --- plain-int packing, usable from cocotb ------------------------------------------------------

def _width(shape) -> int:
    if isinstance(shape, data.Layout):
        return shape.size
    return Shape.cast(shape).width


def pack(layout: data.Layout, value) -> int:
    """Pack a nested Python value into the integer of ``layout``.

    A :class:`~amaranth.lib.data.StructLayout` takes a mapping from field name to value, an
    :class:`~amaranth.lib.data.ArrayLayout` a sequence, a plain shape an ``int`` (masked check:
    a value that does not fit raises ``ValueError``).
    """
    if isinstance(layout, data.ArrayLayout):
        if len(value) != layout.length:
            raise ValueError(f"expected {layout.length} elements, got {len(value)}")
        w = _width(layout.elem_shape)
        out = 0
        for k, v in enumerate(value):
            out |= pack(layout.elem_shape, v) << (w * k)
        return out
    if isinstance(layout, data.StructLayout):
        if not isinstance(value, Mapping):
            raise TypeError(f"expected a mapping for {layout!r}")
        extra = set(value) - {name for name, _ in layout}
        if extra:
            raise ValueError(f"unknown fields {sorted(extra)}")
        out = 0
        for name, field in layout:
            out |= pack(field.shape, value[name]) << field.offset
        return out
    w = _width(layout)
    v = int(value)
    if v < 0 or v >> w:
        raise ValueError(f"value {v} does not fit in {w} unsigned bits")
    return v


def unpack(layout: data.Layout, value: int):
    """Inverse of :func:`pack`: dicts for structs, lists for arrays, ints for plain fields."""
    value = int(value)
    if isinstance(layout, data.ArrayLayout):
        w = _width(layout.elem_shape)
        return [unpack(layout.elem_shape, (value >> (w * k)) & ((1 << w) - 1))
                for k in range(layout.length)]
    if isinstance(layout, data.StructLayout):
        return {name: unpack(field.shape, (value >> field.offset) & ((1 << _width(field.shape)) - 1))
                for name, field in layout}
    return value & ((1 << _width(layout)) - 1)


def _block_of(seq: Sequence) -> int:
    """Block size of a packed vector: the boundary check of the plain-int helpers (SPEC 3)."""
    return check_block_size(len(seq), "block size (number of elements)")


def pack_quantizer_input(fp16_bits: Sequence[int]) -> int:
    """B FP16 bit patterns (ints 0..65535, element 0 first) -> ``bd_quantizer`` ``i__payload``."""
    return pack(quantizer_input_layout(_block_of(fp16_bits)), {"data": list(fp16_bits)})


def unpack_quantizer_input(value: int, B: int) -> list[int]:
    return unpack(quantizer_input_layout(B), value)["data"]


def pack_quantizer_output(codes: Sequence[int], dialect: int, exp: int, invalid: int) -> int:
    return pack(quantizer_output_layout(_block_of(codes)),
                {"codes": list(codes), "dialect": dialect, "exp": exp, "invalid": int(invalid)})


def unpack_quantizer_output(value: int, B: int) -> dict:
    """``bd_quantizer`` ``o__payload`` -> ``{"codes": [B ints], "dialect", "exp", "invalid"}``."""
    return unpack(quantizer_output_layout(B), value)


def pack_dot_input(a_codes: Sequence[int], a_dialect: int, a_exp: int,
                   w_codes: Sequence[int], w_dialect: int, w_exp: int, last: int) -> int:
    """One activation block and one weight block (plus ``last``) -> ``bd_dot`` ``i__payload``."""
    B = _block_of(a_codes)
    if len(w_codes) != B:
        raise ValueError("a_codes and w_codes must have the same length")
    return pack(dot_input_layout(B), {
        "a_codes": list(a_codes), "a_dialect": a_dialect, "a_exp": a_exp,
        "w_codes": list(w_codes), "w_dialect": w_dialect, "w_exp": w_exp, "last": int(last)})


def unpack_dot_input(value: int, B: int) -> dict:
    return unpack(dot_input_layout(B), value)


def pack_dot_output(result_bits: int) -> int:
    return pack(dot_output_layout(), {"result": result_bits})


def unpack_dot_output(value: int) -> dict:
    """``bd_dot`` ``o__payload`` -> ``{"result": FP32 bits}``."""
    return unpack(dot_output_layout(), value)


def pack_lanes(values: Sequence[int], width: int) -> int:
    """Lane k of ``width`` bits at ``[width*k +: width]``."""
    return pack(data.ArrayLayout(width, len(values)), list(values))


def unpack_lanes(value: int, width: int, count: int) -> list[int]:
    return unpack(data.ArrayLayout(width, count), value)


def pack_decoder_codes(codes: Sequence[int]) -> int:
    """B 4-bit codes -> ``bd_decoder`` ``codes`` port value."""
    return pack_lanes(codes, CODE_BITS)


def unpack_decoder_values(value: int, B: int) -> list[tuple[int, int]]:
    """``bd_decoder`` ``values`` port -> B ``(sign, h)`` pairs."""
    return [(lane >> 4, lane & 0xF) for lane in unpack_lanes(value, DECODED_BITS, B)]
