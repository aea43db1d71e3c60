"""bd.pack_rows (SPEC 11): the byte order of the bd_linear weight stream, checked against bd.pack."""
from __future__ import annotations

import pytest
import torch

from golden import bd, vectors
from golden.spec import LINEAR_LANES, block_bytes


def _weights(rows: int, nblocks: int, block: int, seed: int) -> bd.Blocks:
    x = vectors.random_blocks(rows * nblocks, block, "gaussian", seed=seed).reshape(rows, -1)
    return bd.quantize(x, block=block, method="mse")


@pytest.mark.parametrize("block", (16, 32, 64))
@pytest.mark.parametrize("lanes", LINEAR_LANES)
@pytest.mark.parametrize("rows", (1, 5, 8, 13))
def test_pack_rows_matches_pack_row_by_row(block, lanes, rows):
    nblocks = 3
    q = _weights(rows, nblocks, block, seed=rows * 100 + lanes)
    out = bd.pack_rows(q, lanes=lanes)
    stride = block_bytes(block)
    groups = -(-rows // lanes)
    assert out.dtype == torch.uint8
    assert tuple(out.shape) == (groups, nblocks, lanes * stride)
    packed = bd.pack(q).reshape(rows, nblocks, stride)
    for r in range(groups * lanes):
        g, n = divmod(r, lanes)
        for j in range(nblocks):
            beat_bytes = out[g, j, n * stride:(n + 1) * stride]
            if r < rows:
                assert torch.equal(beat_bytes, packed[r, j]), (r, j)
            else:   # padding row: a zero block, header word 0 and codes 0
                assert not beat_bytes.any(), (r, j)


def test_pack_rows_beats_unpack_to_the_rows_blocks():
    """Each beat is N packed blocks in a row: bd.unpack of a beat gives block j of the group's rows."""
    block, lanes, rows, nblocks = 32, 4, 6, 5
    q = _weights(rows, nblocks, block, seed=7)
    out = bd.pack_rows(q, lanes=lanes)
    for g in range(out.shape[0]):
        for j in range(nblocks):
            beat = bd.unpack(out[g, j], block=block)
            for n in range(lanes):
                r = g * lanes + n
                if r < rows:
                    assert torch.equal(beat.codes[n], q.codes[r, j])
                    assert (int(beat.exp[n]), int(beat.dialect[n])) == (int(q.exp[r, j]), int(q.dialect[r, j]))
                else:
                    assert int(beat.exp[n]) == 0 and not beat.codes[n].any()


def test_pack_rows_header_is_little_endian_word():
    """SPEC 7 header: E << 4 | dialect, low byte first; lane n at byte n (2 + B/2)."""
    block, lanes = 16, 2
    codes = torch.arange(2 * block, dtype=torch.uint8).reshape(2, 1, block) % 16
    q = bd.Blocks(exp=torch.tensor([[30], [17]], dtype=torch.uint8),
                  dialect=torch.tensor([[11], [3]], dtype=torch.uint8),
                  codes=codes, invalid=torch.zeros(2, 1, dtype=torch.bool))
    beat = bd.pack_rows(q, lanes=lanes)[0, 0].tolist()
    stride = block_bytes(block)
    assert beat[0:2] == [(30 << 4 | 11) & 0xFF, (30 << 4 | 11) >> 8]
    assert beat[stride:stride + 2] == [(17 << 4 | 3) & 0xFF, (17 << 4 | 3) >> 8]
    # codes: element 2i in the low nibble of byte i
    assert beat[2] == int(codes[0, 0, 0]) | int(codes[0, 0, 1]) << 4
    assert beat[stride + 2 + 3] == int(codes[1, 0, 6]) | int(codes[1, 0, 7]) << 4


@pytest.mark.parametrize("lanes", (0, 3, 32, -4, 2.0, True, "4", None))
def test_pack_rows_rejects_bad_lanes(lanes):
    q = _weights(2, 1, 32, seed=1)
    with pytest.raises(ValueError, match="lanes"):
        bd.pack_rows(q, lanes=lanes)


def test_pack_rows_rejects_bad_weights():
    q = _weights(3, 2, 32, seed=2)
    with pytest.raises(ValueError, match="q_weight"):
        bd.pack_rows(bd.Blocks(*(t[0] for t in q)), lanes=2)          # a single row, not a matrix
    with pytest.raises(ValueError, match="q_weight"):
        bd.pack_rows((q.exp, q.dialect, q.codes, q.invalid), lanes=2)  # not a Blocks
    flagged = q._replace(invalid=torch.ones_like(q.invalid))
    with pytest.raises(ValueError, match="invalid"):
        bd.pack_rows(flagged, lanes=2)


def test_pack_rows_empty_matrix():
    q = _weights(3, 2, 32, seed=3)
    empty = bd.Blocks(*(t[:0] for t in q))
    assert tuple(bd.pack_rows(empty, lanes=4).shape) == (0, 2, 4 * block_bytes(32))
