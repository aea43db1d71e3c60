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
           "fp32_words", "unpack_y", "check_sizes", "real_jobs", "random_vector", "random_weights",
           "nonfinite_vector", "flag_every_group", "LinearScoreboard", "REAL_LAYERS"]

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


def reference(x16: torch.Tensor, q_weight: bd.Blocks, accumulate: str = "exact") -> tuple[torch.Tensor, bool]:
    """The engine's results for vector ``x16`` (K,) and matrix ``q_weight`` (R rows), and whether
    ``x16`` held Inf/NaN: golden ``linear`` (in SPEC 6.1 mode ``accumulate``) with the non-finite
    elements quantized as 0."""
    block = q_weight.codes.shape[-1]
    q_x = bd.quantize(x16, block=block, nonfinite="flag")
    invalid = bool(q_x.invalid.any())
    q_x = q_x._replace(invalid=torch.zeros_like(q_x.invalid))
    return bd.linear(q_x, q_weight, accumulate=accumulate), invalid


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
             user_noise: torch.Generator | None = None, accumulate: str = "exact") -> Job:
    """Beats and expected results for vector ``x`` (K,) against ``q_weight`` (R, K/B, B).

    ``alter`` maps row groups to a block-count change (-2 drops the group's last two beats, +1
    repeats its first beat once more before ``tlast``); those groups expect ``tuser`` bit 1 only.
    ``user_noise`` sets ``tuser`` at random on weight beats without ``tlast``, which the engine
    must ignore. ``accumulate``: the engine's SPEC 6.1 mode.
    """
    block = q_weight.codes.shape[-1]
    x16 = torch.as_tensor(x).to(torch.float16).reshape(-1)
    y, invalid = reference(x16, q_weight, accumulate)
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


# --- stimulus -------------------------------------------------------------------------------------

REAL_LAYERS = ("model.layers.3.self_attn.q_proj", "model.layers.7.mlp.down_proj")


def real_jobs(block: int, lanes: int, rows: int, vectors: int, seed: int,
              layers=REAL_LAYERS) -> list[Job]:
    """Real SmolLM2 matrix-vector products: for each layer, ``rows`` weight rows (MSE-quantized, a
    seeded random choice, so not a multiple of ``lanes`` unless asked) against ``vectors`` of the
    layer's captured input tokens (FP16), one job per vector. Uses the cached captures of
    :func:`golden.models.cached_linear_inputs`."""
    from golden import models

    captures = models.cached_linear_inputs()
    gen = torch.Generator().manual_seed(seed)
    jobs = []
    for name in layers:
        cap = captures[name]
        if cap.weight.shape[1] % block:
            continue
        picked = torch.randperm(cap.weight.shape[0], generator=gen)[:rows].sort().values
        q_weight = bd.quantize(cap.weight[picked].to(torch.float16), block=block, method="mse")
        tokens = torch.randperm(cap.activation.shape[0], generator=gen)[:vectors].tolist()
        short = name.split(".", 1)[-1]
        for t in tokens:
            jobs.append(make_job(f"real/{short}/token{t}", cap.activation[t], q_weight, lanes))
    return jobs


def random_vector(nblocks: int, block: int, family: str, seed: int) -> torch.Tensor:
    from golden import vectors
    return vectors.random_blocks(nblocks, block, family, seed=seed).reshape(-1)


def random_weights(rows: int, nblocks: int, block: int, seed: int, family: str = "gaussian") -> bd.Blocks:
    return bd.quantize(random_vector(rows * nblocks, block, family, seed).reshape(rows, -1),
                       block=block, method="mse")


def nonfinite_vector(nblocks: int, block: int, seed: int, count: int) -> torch.Tensor:
    """A random vector with ``count`` elements replaced by +Inf, -Inf or NaN at random places."""
    gen = torch.Generator().manual_seed(seed)
    x = random_vector(nblocks, block, "gaussian", seed)
    places = torch.randperm(x.numel(), generator=gen)[:count]
    specials = torch.tensor([float("inf"), float("-inf"), float("nan")], dtype=x.dtype)
    x[places] = specials[torch.randint(0, 3, (len(places),), generator=gen)]
    return x


def flag_every_group(job: Job) -> Job:
    """The job of a vector longer than ``max_blocks``: every group flagged, results undefined."""
    job.expected = [YBeat(e.results, e.user | USER_MISMATCH, e.last, checked=False)
                    for e in job.expected]
    return job


# --- scoreboard -----------------------------------------------------------------------------------

@dataclass
class LinearScoreboard:
    """Checks ``m_axis_y`` frames (one per matrix: beats up to ``tlast``) against the jobs' golden
    beats, in order. Counts beats, bit-exact results, lanes, undefined (flag-only) beats and
    mismatches per job tag family; logs the first mismatches with the job, group and lane."""

    lanes: int
    log: object = None
    max_reports: int = 5
    pending: list = field(default_factory=list)      # jobs not yet answered, oldest first
    frames: int = 0
    beats: int = 0
    exact: int = 0                # beats whose results were compared bit for bit (and matched)
    flag_only: int = 0            # beats of altered groups: tuser/tlast checked, results undefined
    mismatches: int = 0
    unexpected: int = 0
    dropped_by_reset: int = 0
    failures: list = field(default_factory=list)
    tags: dict = field(default_factory=dict)

    def expect(self, job: Job):
        self.pending.append(job)

    def flush(self) -> int:
        """Forget unanswered jobs (the engine was reset); returns how many result beats they held."""
        n = sum(len(j.expected) for j in self.pending)
        self.dropped_by_reset += n
        self.pending.clear()
        return n

    def check_frame(self, data: bytes, tuser) -> None:
        width = 4 * self.lanes
        if len(data) % width:
            self._fail(f"frame of {len(data)} bytes is not a whole number of {width}-byte beats")
            return
        count = len(data) // width
        users = [tuser] * len(data) if isinstance(tuser, int) else list(tuser)
        beats = [(unpack_y(data[k * width:(k + 1) * width], self.lanes), users[k * width],
                  int(k == count - 1)) for k in range(count)]
        self.frames += 1
        if not self.pending:
            self.unexpected += count
            self.mismatches += count
            self._fail(f"frame {self.frames} of {count} beats was not expected")
            return
        job = self.pending.pop(0)
        family = "/".join(job.tag.split("/")[:2])
        if count != len(job.expected):
            self.mismatches += max(count, len(job.expected))
            self._fail(f"{job.tag}: {count} result beats for {len(job.expected)} row groups")
            return
        for g, ((results, user, last), want) in enumerate(zip(beats, job.expected)):
            self.beats += 1
            if want.matches(results, user, last):
                if want.checked:
                    self.exact += 1
                else:
                    self.flag_only += 1
                self.tags[family] = self.tags.get(family, 0) + 1
                continue
            self.mismatches += 1
            bad = [n for n in range(self.lanes) if want.checked and results[n] != want.results[n]]
            self._fail(f"{job.tag}: row group {g} (rows {g * self.lanes}..{g * self.lanes + self.lanes - 1}): "
                       f"tuser {user} (golden {want.user}), tlast {last} (golden {want.last}); "
                       f"lanes {bad} differ: rtl {[f'{results[n]:#010x}' for n in bad]} golden "
                       f"{[f'{want.results[n]:#010x}' for n in bad]}; reproduce with "
                       f"tb.axis_linear.reference(x16, q_weight) for this job")

    def _fail(self, text: str):
        self.failures.append(text)
        if self.log is not None and len(self.failures) <= self.max_reports:
            self.log.error(text)

    def summary(self) -> dict:
        return {"frames": self.frames, "beats": self.beats, "exact": self.exact,
                "exact_lanes": self.exact * self.lanes, "flag_only": self.flag_only,
                "mismatches": self.mismatches, "unexpected": self.unexpected,
                "missing_beats": sum(len(j.expected) for j in self.pending),
                "dropped_by_reset": self.dropped_by_reset, "tags": dict(self.tags),
                "first_failure": self.failures[0] if self.failures else None}
