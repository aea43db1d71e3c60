"""The bd_linear engine's AXI4-Stream traffic and its golden answers (SPEC 11), as plain data.

A :class:`Job` is one activation vector and one weight matrix: the beats to send on ``s_axis_x``
and ``s_axis_w`` and the result beats to expect on ``m_axis_y``, all computed with ``golden.bd``.
``tdata`` values are the bytes of the data in memory (byte ``i`` at ``tdata[8i +: 8]``), so a
beat is both a ``bytes`` object (for cocotbext-axi frames) and a little-endian ``int`` (for the
Amaranth simulator).

The expected results are ``bd.linear(bd.quantize(x, B), q_weight)``; a vector with Inf/NaN is
quantized with ``nonfinite="flag"`` and its ``invalid`` flags cleared, because the engine computes
with those elements as 0 and reports them in ``tuser`` bit 0, where ``bd.linear`` would give NaN
(SPEC 10). Row groups whose block count is altered on purpose expect ``tuser`` bit 1 and their
results are not checked (SPEC 11: undefined).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from golden import bd
from golden.spec import FP16_BITS, block_bytes

__all__ = ["USER_INVALID", "USER_MISMATCH", "WBeat", "YBeat", "Job", "make_job", "reference",
           "fp32_words", "unpack_y"]

USER_INVALID = 1 << 0        # SPEC 11: m_axis_y tuser bit 0
USER_MISMATCH = 1 << 1       # SPEC 11: m_axis_y tuser bit 1
FP32_BYTES = 4


@dataclass(frozen=True)
class WBeat:
    data: bytes
    last: int
    user: int


@dataclass(frozen=True)
class YBeat:
    results: tuple[int, ...]     # FP32 bits per lane
    user: int
    last: int
    checked: bool = True         # False: a group with an altered block count, results undefined

    def matches(self, results, user: int, last: int) -> bool:
        return (user == self.user and last == self.last
                and (not self.checked or tuple(results) == self.results))


@dataclass
class Job:
    tag: str
    block: int
    lanes: int
    x16: torch.Tensor                       # (K,) float16
    x_beats: list[bytes]                    # K/B beats, tlast on the final one
    w_beats: list[WBeat]
    expected: list[YBeat]
    invalid: bool = False
    altered_groups: tuple[int, ...] = field(default_factory=tuple)

    @property
    def weight_blocks(self) -> int:
        return len(self.w_beats) * self.lanes

    def x_frame(self) -> bytes:
        return b"".join(self.x_beats)


def fp32_words(values: torch.Tensor) -> list[int]:
    return [v & 0xFFFFFFFF for v in values.to(torch.float32).contiguous().view(torch.int32).tolist()]


def reference(x16: torch.Tensor, q_weight: bd.Blocks) -> tuple[torch.Tensor, bool]:
    """The engine's results for vector ``x16`` (K,) and matrix ``q_weight`` (R rows), and whether
    ``x16`` held Inf/NaN: golden ``linear`` with the non-finite elements quantized as 0."""
    block = q_weight.codes.shape[-1]
    q_x = bd.quantize(x16, block=block, nonfinite="flag")
    invalid = bool(q_x.invalid.any())
    q_x = q_x._replace(invalid=torch.zeros_like(q_x.invalid))
    return bd.linear(q_x, q_weight), invalid


def unpack_y(data: int | bytes, lanes: int) -> tuple[int, ...]:
    """``m_axis_y_tdata`` -> FP32 bits per lane."""
    if not isinstance(data, int):
        data = int.from_bytes(bytes(data), "little")
    return tuple((data >> (32 * n)) & 0xFFFFFFFF for n in range(lanes))


def _x_beats(x16: torch.Tensor, block: int) -> list[bytes]:
    raw = x16.contiguous().view(torch.int16).to(torch.int32) & 0xFFFF
    beats = []
    for row in raw.reshape(-1, block).tolist():
        beats.append(b"".join(v.to_bytes(FP16_BITS // 8, "little") for v in row))
    return beats


def make_job(tag: str, x, q_weight: bd.Blocks, lanes: int, *, alter: dict[int, int] | None = None,
             user_noise: torch.Generator | None = None) -> Job:
    """Beats and expected results for vector ``x`` (K,) against ``q_weight`` (R, K/B, B).

    ``alter`` maps row groups to a block-count change (-2 drops the group's last two beats, +1
    repeats its first beat once more before ``tlast``); those groups expect ``tuser`` bit 1 only.
    ``user_noise`` sets ``tuser`` at random on weight beats without ``tlast``, which the engine
    must ignore.
    """
    block = q_weight.codes.shape[-1]
    x16 = torch.as_tensor(x).to(torch.float16).reshape(-1)
    y, invalid = reference(x16, q_weight)
    words = fp32_words(y)
    rows, nblocks = q_weight.exp.shape
    groups = bd.pack_rows(q_weight, lanes=lanes)                 # (G, K/B, N (2 + B/2))
    alter = dict(alter or {})
    w_beats, expected = [], []
    for g in range(groups.shape[0]):
        beats = [bytes(groups[g, j].tolist()) for j in range(nblocks)]
        change = alter.get(g, 0)
        if change < 0:
            if -change >= len(beats):
                raise ValueError(f"alter: group {g} has only {len(beats)} beats")
            beats = beats[:change]
        elif change > 0:
            beats = beats[:-1] + [beats[0]] * change + beats[-1:]
        final = g == groups.shape[0] - 1
        for j, beat in enumerate(beats):
            last = j == len(beats) - 1
            noise = 0
            if not last and user_noise is not None:
                noise = int(torch.randint(0, 4, (1,), generator=user_noise)) == 0
            w_beats.append(WBeat(beat, int(last), int(final) if last else int(noise)))
        lane_words = words[g * lanes:(g + 1) * lanes]
        lane_words += [0] * (lanes - len(lane_words))            # zero rows give +0.0
        user = (USER_INVALID if invalid else 0) | (USER_MISMATCH if change else 0)
        expected.append(YBeat(tuple(lane_words), user, int(final), checked=not change))
    return Job(tag, block, lanes, x16, _x_beats(x16, block), w_beats, expected, invalid,
               tuple(sorted(g for g, c in alter.items() if c)))


def check_sizes(job: Job) -> None:
    """Beat widths of a job (a wrong width is a testbench error, not a design error)."""
    x_bytes, w_bytes = job.block * FP16_BITS // 8, job.lanes * block_bytes(job.block)
    assert all(len(b) == x_bytes for b in job.x_beats)
    assert all(len(b.data) == w_bytes for b in job.w_beats)
