"""bd_decoder in both constructions and their per-block parts in the Amaranth simulator, exhaustively
(SPEC 2, 6, 9)."""
import pytest
import torch

from bd_hw.decoder import AnfCoefficients, BDDecoder, FormatbookRow
from bd_hw.params import DECODES
from bd_hw.layouts import pack_decoder_codes, unpack_decoder_values, unpack_lanes
from tests.hw.testing import run_comb
from golden import bd
from golden.formatbook import FORMATBOOK, FORMATBOOK_ROWS, VARYING_COLUMNS
from golden.spec import BLOCK_SIZES


def test_formatbook_row_all_dialects():
    results = run_comb(FormatbookRow(), [{"dialect": d} for d in range(16)], ["row"])
    for d, r in enumerate(results):
        assert unpack_lanes(r["row"], 4, 8) == list(FORMATBOOK_ROWS[d])


def test_anf_coefficients_give_every_dialect_column():
    """c0 ^ c1 idx[1] ^ c2 idx[0] is the formatbook's entry at indices 5-7 of every dialect, and
    those are the only indices whose entry depends on the dialect."""
    assert VARYING_COLUMNS == (5, 6, 7)
    assert all(row[:5] == (0, 1, 2, 3, 4) for row in FORMATBOOK_ROWS)
    results = run_comb(AnfCoefficients(), [{"dialect": d} for d in range(16)], ["coefficients"])
    for d, r in enumerate(results):
        c0, c1, c2 = unpack_lanes(r["coefficients"], 4, 3)
        for idx in VARYING_COLUMNS:
            assert c0 ^ (c1 if idx & 2 else 0) ^ (c2 if idx & 1 else 0) == FORMATBOOK_ROWS[d][idx]


@pytest.mark.parametrize("decode", DECODES)
@pytest.mark.parametrize("B", BLOCK_SIZES)
def test_decoder_exhaustive(B, decode):
    """16 dialects x 16 codes in every lane: lane k gets code (k + j) mod 16 for j = 0..15."""
    vectors, expected = [], []
    for d in range(16):
        for j in range(16):
            codes = [(k + j) % 16 for k in range(B)]
            vectors.append({"dialect": d, "codes": pack_decoder_codes(codes)})
            expected.append([(c >> 3, int(FORMATBOOK[d, c & 7])) for c in codes])
    results = run_comb(BDDecoder(B, decode=decode), vectors, ["values"])
    for v, e, r in zip(vectors, expected, results):
        assert unpack_decoder_values(r["values"], B) == e, f"dialect {v['dialect']}"

    # The same table through the golden model's decode.
    dialect = torch.tensor([v["dialect"] for v in vectors], dtype=torch.uint8)
    codes = torch.tensor([[(k + j) % 16 for k in range(B)] for _ in range(16) for j in range(16)],
                         dtype=torch.uint8)
    q = bd.Blocks(torch.ones_like(dialect), dialect, codes, torch.zeros_like(dialect, dtype=torch.bool))
    sign, h = bd.decode(q)
    for n, r in enumerate(results):
        assert unpack_decoder_values(r["values"], B) == list(zip(sign[n].tolist(), h[n].tolist()))


@pytest.mark.parametrize("decode", DECODES)
def test_decoder_lane_bit_positions(decode):
    """Lane k of values at [5k +: 5] = {sign, h}; a single code in lane 3 moves only lane 3."""
    B = 16
    codes = [0] * B
    codes[3] = 0b1111                     # -, idx 7
    r = run_comb(BDDecoder(B, decode=decode), [{"dialect": 0, "codes": pack_decoder_codes(codes)}],
                 ["values"])[0]
    assert r["values"] == (1 << 4 | 15) << (5 * 3)


@pytest.mark.parametrize("B", [0, 8, 31, 128, "32", 32.0, True])
def test_decoder_bad_block_size(B):
    with pytest.raises(ValueError, match="B"):
        BDDecoder(B)


@pytest.mark.parametrize("decode", ["lut", "ANF", None, 0])
def test_decoder_bad_decode(decode):
    with pytest.raises(ValueError, match="decode"):
        BDDecoder(16, decode=decode)
