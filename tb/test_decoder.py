"""cocotb tests of ``bd_decoder`` (combinational, SPEC 6 decode on every lane, SPEC 9 ports).

Exhaustive: every dialect with every code on every lane (16 rotations of the 16 codes across the
lanes per dialect), then seeded random code vectors. Each vector is checked against
``golden.bd.decode``.
"""
from __future__ import annotations

import random

import cocotb
import torch
from cocotb.triggers import Timer

from bd_hw import layouts
from golden import bd
from golden.spec import CODE_BITS, NUM_DIALECTS

from .harness import params, write_stats

SETTLE_NS = 1
CODES = 1 << CODE_BITS


def exhaustive_vectors(block: int) -> list[tuple[int, list[int]]]:
    """(dialect, codes): rotation j puts code (k + j) mod 16 on lane k, so each lane sees all 16."""
    return [(d, [(k + j) % CODES for k in range(block)])
            for d in range(NUM_DIALECTS) for j in range(CODES)]


def random_vectors(block: int, n: int, seed: int) -> list[tuple[int, list[int]]]:
    rng = random.Random(seed)
    return [(rng.randrange(NUM_DIALECTS), [rng.randrange(CODES) for _ in range(block)])
            for _ in range(n)]


def golden_values(vectors) -> list[list[tuple[int, int]]]:
    """(sign, h) per lane from bd.decode, for a batch of (dialect, codes) vectors."""
    n = len(vectors)
    q = bd.Blocks(exp=torch.ones(n, 1, dtype=torch.uint8),
                  dialect=torch.tensor([[d] for d, _ in vectors], dtype=torch.uint8),
                  codes=torch.tensor([[c] for _, c in vectors], dtype=torch.uint8),
                  invalid=torch.zeros(n, 1, dtype=torch.bool))
    sign, h = bd.decode(q)
    return [list(zip(s[0], m[0])) for s, m in zip(sign.tolist(), h.tolist())]


async def check_vectors(dut, vectors, block: int, log) -> tuple[int, int]:
    expected = golden_values(vectors)
    mismatches = 0
    for (dialect, codes), want in zip(vectors, expected):
        dut.dialect.value = dialect
        dut.codes.value = layouts.pack_decoder_codes(codes)
        await Timer(SETTLE_NS, unit="ns")
        got = layouts.unpack_decoder_values(dut.values.value.to_unsigned(), block)
        if got != want:
            mismatches += 1
            if mismatches == 1:
                lanes = [k for k in range(block) if got[k] != want[k]]
                log.error(f"decoder mismatch, dialect {dialect}, lanes {lanes}: "
                          f"rtl {[got[k] for k in lanes]} golden {[want[k] for k in lanes]}\n"
                          f"  reproduce with:\n"
                          f"    bd.decode(bd.Blocks(exp=torch.ones(1, dtype=torch.uint8), "
                          f"dialect=torch.tensor([{dialect}], dtype=torch.uint8), "
                          f"codes=torch.tensor([{codes}], dtype=torch.uint8), "
                          f"invalid=torch.zeros(1, dtype=torch.bool)))")
    return len(vectors), mismatches


@cocotb.test()
async def decoder_exhaustive(dut):
    """Every dialect x every code on every lane."""
    p = params()
    vectors = exhaustive_vectors(p.block)
    count, mismatches = await check_vectors(dut, vectors, p.block, dut._log)
    lanes_codes = {(k, c) for _, codes in vectors for k, c in enumerate(codes)}
    write_stats("decoder_exhaustive", vectors=count, mismatches=mismatches, cycles=0)
    assert len(lanes_codes) == p.block * CODES
    assert mismatches == 0, f"{mismatches} of {count} decoder vectors differ from golden"


@cocotb.test()
async def decoder_random(dut):
    """Seeded random dialects and codes."""
    p = params()
    vectors = random_vectors(p.block, p.count(quick=200, full=4000), p.seed)
    count, mismatches = await check_vectors(dut, vectors, p.block, dut._log)
    write_stats("decoder_random", vectors=count, mismatches=mismatches, cycles=0)
    assert mismatches == 0, f"{mismatches} of {count} decoder vectors differ from golden"
