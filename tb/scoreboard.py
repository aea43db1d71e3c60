"""In-order scoreboard: every output beat against the golden model's answer for it.

The golden model (``golden.bd``) computes the expected payloads for a whole batch at once; the
scoreboard then checks the beats one by one, in order, so a lost, duplicated or reordered beat shows
up as a mismatch or as a count difference. On the first mismatch it logs the failing input in a
form that can be pasted into a Python prompt next to ``from golden import bd; import torch``.
"""
from __future__ import annotations

import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from bd_hw import layouts

__all__ = ["Expected", "Scoreboard", "quantizer_expectations", "dot_expectations",
           "fp16_repro", "dot_repro", "fp32_bits"]


@dataclass
class Expected:
    payload: int                 # the exact output payload the unit must produce
    fields: dict                 # the same, unpacked, for readable mismatch reports
    repro: str                   # Python that reproduces the golden answer for this beat
    tag: str = ""                # stimulus family, for the report


@dataclass
class Scoreboard:
    """Counts beats, matches and mismatches of one output stream."""

    name: str
    unpack: Callable[[int], dict]
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("tb.scoreboard"))
    max_reports: int = 3
    expected: deque = field(default_factory=deque)
    beats: int = 0
    matches: int = 0
    mismatches: int = 0
    unexpected: int = 0          # beats that arrived with nothing left to expect
    dropped_by_reset: int = 0
    failures: list = field(default_factory=list)
    tags: dict = field(default_factory=dict)

    def expect(self, item: Expected):
        self.expected.append(item)

    def expect_all(self, items):
        for item in items:
            self.expect(item)

    def compare(self, payload: int):
        """Checks one received beat against the oldest expectation."""
        self.beats += 1
        if not self.expected:
            self.unexpected += 1
            self.mismatches += 1
            self._report(f"{self.name}: beat {self.beats} was not expected: "
                         f"{self.unpack(payload)}")
            return
        item = self.expected.popleft()
        if payload == item.payload:
            self.matches += 1
            self.tags[item.tag] = self.tags.get(item.tag, 0) + 1
            return
        self.mismatches += 1
        got = self.unpack(payload)
        diff = {k: (got[k], v) for k, v in item.fields.items() if got.get(k) != v}
        self._report(
            f"{self.name}: mismatch at beat {self.beats} ({item.tag}); field: (rtl, golden) = {diff}\n"
            f"  rtl    {got}\n  golden {item.fields}\n"
            f"  reproduce with:\n{item.repro}")

    def flush(self) -> int:
        """Forgets every outstanding expectation (the unit was reset); returns how many."""
        n = len(self.expected)
        self.dropped_by_reset += n
        self.expected.clear()
        return n

    def _report(self, text: str):
        self.failures.append(text)
        if len(self.failures) <= self.max_reports:
            self.log.error(text)

    @property
    def pending(self) -> int:
        return len(self.expected)

    def ok(self) -> bool:
        return self.mismatches == 0 and not self.expected

    def summary(self) -> dict[str, Any]:
        return {"beats": self.beats, "matches": self.matches, "mismatches": self.mismatches,
                "unexpected": self.unexpected, "missing": len(self.expected),
                "dropped_by_reset": self.dropped_by_reset, "tags": dict(self.tags),
                "first_failure": self.failures[0] if self.failures else None}


# --- golden expectations ------------------------------------------------------------------------

def fp16_repro(bits, block: int, method: str = "two_stage") -> str:
    """Python that quantizes this block with the golden model exactly as the hardware does."""
    listed = ", ".join(f"0x{int(b):04x}" for b in bits)
    return (f"    x = torch.tensor([{listed}], dtype=torch.uint16).view(torch.float16)\n"
            f"    bd.quantize(x, block={block}, method=\"{method}\", nonfinite=\"flag\")")


def fp32_bits(values: torch.Tensor) -> list[int]:
    return [int(v) & 0xFFFFFFFF for v in values.to(torch.float32).contiguous().view(torch.int32).tolist()]


def quantizer_expectations(x16: torch.Tensor, tag: str = "",
                           method: str = "two_stage") -> tuple[list[int], list[Expected]]:
    """Input payloads and expected outputs for blocks ``x16`` (FP16, shape (n, B)) under the
    ``golden.bd.quantize`` method the unit reproduces (``BDQuantizer.method``)."""
    from golden import bd

    if x16.dtype != torch.float16 or x16.dim() != 2:
        raise ValueError(f"x16 must be an FP16 (n, B) tensor, got {x16.dtype} {tuple(x16.shape)}")
    block = x16.shape[1]
    q = bd.quantize(x16, block=block, method=method, nonfinite="flag")
    bits = (x16.view(torch.int16).to(torch.int32) & 0xFFFF).tolist()
    codes = q.codes[:, 0, :].tolist()
    dialect, exp, invalid = q.dialect[:, 0].tolist(), q.exp[:, 0].tolist(), q.invalid[:, 0].tolist()
    inputs, expected = [], []
    for row, c, d, e, bad in zip(bits, codes, dialect, exp, invalid):
        inputs.append(layouts.pack_quantizer_input(row))
        fields = {"codes": c, "dialect": d, "exp": e, "invalid": int(bad)}
        expected.append(Expected(layouts.pack_quantizer_output(c, d, e, int(bad)), fields,
                                 fp16_repro(row, block, method), tag))
    return inputs, expected


def _blocks_literal(codes, dialect, exp) -> str:
    shape = tuple(torch.tensor(exp).shape)
    return (f"bd.Blocks(exp=torch.tensor({exp}, dtype=torch.uint8), "
            f"dialect=torch.tensor({dialect}, dtype=torch.uint8), "
            f"codes=torch.tensor({codes}, dtype=torch.uint8), "
            f"invalid=torch.zeros({shape}, dtype=torch.bool))")


def dot_repro(a_codes, a_dialect, a_exp, w_codes, w_dialect, w_exp, accumulate: str = "exact") -> str:
    """Python that computes one dot product (lists over its blocks) with the golden model."""
    mode = "" if accumulate == "exact" else f", accumulate={accumulate!r}"
    return (f"    qa = {_blocks_literal(a_codes, a_dialect, a_exp)}\n"
            f"    qw = {_blocks_literal([w_codes], [w_dialect], [w_exp])}\n"
            f"    bd.linear(qa, qw{mode}).view(torch.int32)  # FP32 bits")


def dot_expectations(q_act, q_weight, tag: str = "", chunk: int = 128,
                     accumulate: str = "exact") -> tuple[list[int], list[Expected]]:
    """Input beats and expected results for dot products row by row.

    ``q_act`` and ``q_weight`` are ``bd.Blocks`` with codes shaped (n, K/B, B): dot product ``r``
    is activation row ``r`` against weight row ``r``. Every row becomes K/B beats, ``last`` on the
    final one, and one expected FP32 result from ``bd.linear`` (in SPEC 6.1 mode ``accumulate``).
    """
    from golden import bd

    n, nblocks, block = q_act.codes.shape
    if tuple(q_weight.codes.shape) != (n, nblocks, block):
        raise ValueError(f"q_weight codes shape {tuple(q_weight.codes.shape)} differs from "
                         f"q_act {tuple(q_act.codes.shape)}")
    results = []
    for start in range(0, n, chunk):
        rows = slice(start, start + chunk)
        qa = bd.Blocks(*(t[rows] for t in q_act))
        qw = bd.Blocks(*(t[rows] for t in q_weight))
        results.append(torch.diagonal(bd.linear(qa, qw, accumulate=accumulate)))   # row r against row r
    result_bits = fp32_bits(torch.cat(results))

    ac, ad, ae = q_act.codes.tolist(), q_act.dialect.tolist(), q_act.exp.tolist()
    wc, wd, we = q_weight.codes.tolist(), q_weight.dialect.tolist(), q_weight.exp.tolist()
    inputs, expected = [], []
    for r in range(n):
        for b in range(nblocks):
            inputs.append(layouts.pack_dot_input(ac[r][b], ad[r][b], ae[r][b],
                                                 wc[r][b], wd[r][b], we[r][b], b == nblocks - 1))
        bits = result_bits[r]
        repro = dot_repro(ac[r], ad[r], ae[r], wc[r], wd[r], we[r], accumulate)
        expected.append(Expected(layouts.pack_dot_output(bits),
                                 {"result": bits}, repro, tag))
    return inputs, expected
