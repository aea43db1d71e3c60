"""Payload layouts of SPEC 9 and the plain-int pack/unpack helpers used by tb/."""
import pytest

from bd_hw import layouts as L
from golden.spec import BLOCK_SIZES


def offsets(layout):
    return {name: (field.offset, field.width) for name, field in layout}


@pytest.mark.parametrize("B", BLOCK_SIZES)
def test_bit_positions(B):
    assert offsets(L.quantizer_input_layout(B)) == {"data": (0, 16 * B)}
    assert offsets(L.quantizer_output_layout(B)) == {
        "codes": (0, 4 * B), "dialect": (4 * B, 4), "exp": (4 * B + 4, 5), "invalid": (4 * B + 9, 1)}
    assert offsets(L.dot_input_layout(B)) == {
        "a_codes": (0, 4 * B), "a_dialect": (4 * B, 4), "a_exp": (4 * B + 4, 5),
        "w_codes": (4 * B + 9, 4 * B), "w_dialect": (8 * B + 9, 4), "w_exp": (8 * B + 13, 5),
        "last": (8 * B + 18, 1)}
    assert offsets(L.dot_output_layout()) == {"result": (0, 32)}


@pytest.mark.parametrize("B", BLOCK_SIZES)
def test_pack_unpack(B):
    elems = [(0x1234 * (k + 1)) & 0xFFFF for k in range(B)]
    v = L.pack_quantizer_input(elems)
    assert v == sum(e << (16 * k) for k, e in enumerate(elems))
    assert L.unpack_quantizer_input(v, B) == elems

    codes = [k % 16 for k in range(B)]
    v = L.pack_quantizer_output(codes, 13, 30, 1)
    assert v == sum(c << (4 * k) for k, c in enumerate(codes)) | 13 << 4 * B | 30 << 4 * B + 4 | 1 << 4 * B + 9
    assert L.unpack_quantizer_output(v, B) == {"codes": codes, "dialect": 13, "exp": 30, "invalid": 1}

    w = [(k * 7) % 16 for k in range(B)]
    v = L.pack_dot_input(codes, 3, 17, w, 9, 2, 1)
    assert v >> (8 * B + 18) == 1
    assert (v >> (4 * B + 9)) & ((1 << 4 * B) - 1) == L.pack_lanes(w, 4)
    assert L.unpack_dot_input(v, B) == {"a_codes": codes, "a_dialect": 3, "a_exp": 17, "w_codes": w,
                                        "w_dialect": 9, "w_exp": 2, "last": 1}
    assert L.unpack_dot_output(L.pack_dot_output(0xBF800000)) == {"result": 0xBF800000}
    assert L.unpack_decoder_values(L.pack_lanes([0b10011] * B, 5), B) == [(1, 3)] * B


def test_pack_errors():
    with pytest.raises(ValueError, match="block size"):
        L.pack_quantizer_input([0] * 24)
    with pytest.raises(ValueError, match="fit"):
        L.pack_quantizer_output([16] + [0] * 15, 0, 0, 0)
    with pytest.raises(ValueError, match="same length"):
        L.pack_dot_input([0] * 16, 0, 0, [0] * 32, 0, 0, 0)
    with pytest.raises(ValueError, match="block size"):
        L.pack_dot_input([0] * 24, 0, 0, [0] * 24, 0, 0, 0)
