"""What the stream-protocol suite (``tb/test_stream.py``) needs to know about each clocked unit.

A model turns stimulus into input beats and golden expectations for one kind of unit (SPEC 9):

- ``QuantizerModel``: ``bd_quantizer`` and its variants; every beat is one block and gives one
  result, checked against ``golden.bd.quantize`` with the method the unit reproduces
  (``BDQuantizer.method``: ``two_stage`` for ``bd_quantizer``, ``two_stage_trunc`` for
  ``bd_quantizer_trunc``).
- ``DotModel``: ``bd_dot``; a beat is one block pair and only a beat with ``last`` gives a result,
  checked against ``golden.bd.linear``.

:func:`model_for` picks the model of the unit named by ``TB_UNIT`` from the registry
(:mod:`bd_hw.units`); the suite never names a unit itself.
"""
from __future__ import annotations

import torch

from bd_hw import layouts, units
from golden import vectors

from .harness import Params
from .scoreboard import Expected, Scoreboard, dot_expectations, quantizer_expectations
from .stimulus import (extreme_pairs, quantizer_sets, random_field_blocks, random_fp16_pairs,
                       raw_bit_blocks, real_dot_rows)

__all__ = ["Batch", "QuantizerModel", "DotModel", "model_for"]

class Batch:
    """Input beats, the expected results in order, and how many beats give a result."""

    def __init__(self, inputs: list[int], expected: list[Expected]):
        self.inputs, self.expected = inputs, expected

    def __add__(self, other: "Batch") -> "Batch":
        return Batch(self.inputs + other.inputs, self.expected + other.expected)

class QuantizerModel:
    """``bd_quantizer`` and its variants: one block per beat, one result per beat."""

    def __init__(self, p: Params):
        self.p = p
        params = units.get(p.unit).parameters_at(p.block)
        self.method = params.method
        self.latency = params.latency
        self.capacity = params.capacity      # one per register stage, one more with the "ready" skid buffer

    def scoreboard(self, log) -> Scoreboard:
        B = self.p.block
        return Scoreboard(self.p.unit, lambda v: layouts.unpack_quantizer_output(v, B), log)

    def _batch(self, x: torch.Tensor, tag: str) -> Batch:
        return Batch(*quantizer_expectations(x, tag, self.method))

    def golden_sets(self) -> Batch:
        """Every corner, every random family, raw FP16 bit patterns and real SmolLM2 blocks."""
        p = self.p
        sets = quantizer_sets(p, random_per_family=p.count(quick=24, full=5000, light=1000),
                              real_per_kind=p.count(quick=100, full=10000, light=2000))
        out = Batch([], [])
        for tag, x in sets:
            out += self._batch(x, tag)
        return out

    def traffic(self, n: int, seed: int, tag: str) -> Batch:
        """``n`` blocks drawn in turn from every random family and raw bit patterns."""
        B = self.p.block
        per = -(-n // (len(vectors.RANDOM_FAMILIES) + 1))
        parts = [vectors.random_blocks(per, B, f, seed=seed + i)
                 for i, f in enumerate(vectors.RANDOM_FAMILIES)]
        parts.append(raw_bit_blocks(per, B, seed + 50))
        x = torch.stack(parts, 1).reshape(-1, B)[:n]      # interleave the families
        return self._batch(x, tag)

    def traffic_size(self) -> int:
        return self.p.count(quick=16, full=1000, light=200)

    def single_results(self, n: int, seed: int, tag: str) -> Batch:
        """Beats that each give a result (every quantizer beat does)."""
        return self.traffic(n, seed, tag)

    def result_cycles(self, accepted: list[tuple[int, int]]) -> list[int]:
        """Cycles in which beats that give a result were taken."""
        return [cycle for cycle, _ in accepted]

class DotModel:
    """``bd_dot``: one block pair per beat, one result per beat with ``last``."""

    def __init__(self, p: Params):
        self.p = p
        params = units.get(p.unit).parameters_at(p.block)
        self.latency = params.latency
        self.capacity = params.capacity      # one more than the latency with the "ready" skid buffer
        self.max_blocks = params.max_blocks
        self.accumulate = params.accumulate          # SPEC 6.1: golden.bd.linear in the same mode

    def scoreboard(self, log) -> Scoreboard:
        return Scoreboard(self.p.unit, layouts.unpack_dot_output, log)

    def _batch(self, sets) -> Batch:
        out = Batch([], [])
        for tag, qa, qw in sets:
            out += Batch(*dot_expectations(qa, qw, tag, accumulate=self.accumulate))
        return out

    def golden_sets(self) -> Batch:
        """Single-block and multi-block dot products of every random family, arbitrary code
        fields up to ``max_blocks`` blocks, the extremes, and real SmolLM2 rows."""
        p = self.p
        pairs = p.count(quick=20, full=4000, light=800)
        sets = random_fp16_pairs(pairs, 1, p.block, seed=p.seed * 100)
        sets.append(("random/fields", *random_field_blocks(pairs * 3, 1, p.block, seed=p.seed * 100 + 50)))
        long = p.count(quick=4, full=150, light=30)
        for nblocks in (2, 7, 33):
            sets += [(f"{tag}/x{nblocks}", qa, qw) for tag, qa, qw
                     in random_fp16_pairs(long, nblocks, p.block, seed=p.seed * 100 + nblocks)]
        sets.append((f"random/fields/x{self.max_blocks}", *random_field_blocks(
            p.count(quick=2, full=16, light=4), self.max_blocks, p.block, seed=p.seed * 100 + 77)))
        sets += extreme_pairs(p.block, self.max_blocks)
        if p.real:
            sets += real_dot_rows(p, p.count(quick=6, full=400, light=80), seed=p.seed * 100 + 99)
        return self._batch(sets)

    def traffic(self, n: int, seed: int, tag: str) -> Batch:
        """About ``n`` beats: quantized random dot products of 1 to 5 blocks and arbitrary fields
        of 3 blocks, so stalls land in the middle of sums."""
        B = self.p.block
        sets = [(f"{tag}/{family}", qa, qw) for family, qa, qw
                in random_fp16_pairs(max(1, n // 15), 1 + seed % 5, B, seed=seed)]
        sets.append((f"{tag}/fields", *random_field_blocks(max(1, n // 6), 3, B, seed=seed + 1)))
        return self._batch(sets)

    def traffic_size(self) -> int:
        return self.p.count(quick=30, full=1200, light=240)

    def single_results(self, n: int, seed: int, tag: str) -> Batch:
        """``n`` single-block dot products: every beat has ``last`` and gives a result."""
        return self._batch([(tag, *random_field_blocks(n, 1, self.p.block, seed=seed))])

    def result_cycles(self, accepted: list[tuple[int, int]]) -> list[int]:
        last_bit = 1 << layouts.dot_input_layout(self.p.block)["last"].offset
        return [cycle for cycle, payload in accepted if payload & last_bit]

MODELS = {"quantizer": QuantizerModel, "dot": DotModel}

def model_for(p: Params):
    """The model of the registered unit ``p.unit`` (by its kind)."""
    kind = units.get(p.unit).kind
    if kind not in MODELS:
        raise ValueError(f"unit {p.unit} ({kind}) is not a clocked stream unit")
    return MODELS[kind](p)
