"""golden.bd against the independent scalar SPEC reference (conftest.py), bit for bit, on every
corner and on thousands of seeded random blocks of every family."""
from __future__ import annotations

import pytest
import torch

from golden import bd, vectors

METHODS = ("two_stage", "two_stage_trunc", "mse")
# Blocks compared per random family; MSE's reference tries 16 dialects per block, so fewer. The
# truncating stage 1 differs from the default only in the pair of odd maxima: fewer rows suffice.
RANDOM_ROWS = {"two_stage": 3200, "two_stage_trunc": 1600, "mse": 1600}


def test_methods_are_the_spec_methods():
    assert bd.METHODS == METHODS


def _describe_first_mismatch(x16, got, ref, spec) -> str:
    for row in range(x16.shape[0]):
        for field in ("exp", "dialect", "codes", "invalid"):
            if not torch.equal(getattr(got, field)[row], ref[field][row]):
                bits = [f"{b:04x}" for b in spec.fp16_bits(x16[row])]
                r = ref["rows"][row]
                return (f"row {row} field {field}: bd={getattr(got, field)[row].tolist()} "
                        f"ref={ref[field][row].tolist()}; ref E={r['exp']} qmax={r['qmax']} pair={r['pair']} "
                        f"counts={r['count_a']},{r['count_b']} costs={r['costs']}; input bits={bits}")
    return "no mismatch"


def _compare(x16: torch.Tensor, method: str, spec, nonfinite: str = "raise"):
    got = bd.quantize(x16, block=x16.shape[-1], method=method, nonfinite=nonfinite)
    ref = spec.quantize_rows(x16, method)
    # (n, B) input gives (n, 1) blocks.
    got = bd.Blocks(got.exp[:, 0], got.dialect[:, 0], got.codes[:, 0], got.invalid[:, 0])
    ok = all(torch.equal(getattr(got, f), ref[f]) for f in ("exp", "dialect", "codes", "invalid"))
    assert ok, _describe_first_mismatch(x16, got, ref, spec)
    return got, ref


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("block", (16, 32, 64))
def test_corners_match_reference(block, method, spec):
    for family, x16 in vectors.corner_blocks(block).items():
        mode = "flag" if family == "nonfinite" else "raise"
        _compare(x16, method, spec, nonfinite=mode)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", vectors.RANDOM_FAMILIES)
def test_random_blocks_match_reference(family, method, spec):
    n = RANDOM_ROWS[method]
    seed = 1000 + vectors.RANDOM_FAMILIES.index(family)
    # Mostly B = 32, with a share of 16 and 64 so every block size sees every family.
    for block, rows in ((32, n // 2), (16, n // 4), (64, n // 8)):
        _compare(vectors.random_blocks(rows, block, family, seed=seed + block), method, spec)


@pytest.mark.parametrize("method", METHODS)
def test_dequantize_matches_reference_values(method, spec, bits_equal):
    finite_corners = [x for family, x in vectors.corner_blocks(32).items() if family != "nonfinite"]
    x16 = torch.cat([vectors.random_blocks(100, 32, f, seed=5) for f in vectors.RANDOM_FAMILIES] + finite_corners)
    q = bd.quantize(x16, block=32, method=method)
    got = bd.dequantize(q)
    ref = spec.quantize_rows(x16, method)
    expected = torch.tensor([[spec.decode_value(r["exp"], r["dialect"], c) for c in r["codes"]]
                             for r in ref["rows"]], dtype=torch.float32)
    assert got.dtype == torch.float32
    assert bits_equal(got, expected)


def test_methods_differ_from_each_other_somewhere(spec):
    """Guards the comparisons above against a reference (or a model) that ignored `method`."""
    x16 = vectors.random_blocks(200, 32, "gaussian", seed=3)
    dialects = {m: spec.quantize_rows(x16, m)["dialect"] for m in METHODS}
    assert (dialects["two_stage"] != dialects["mse"]).any()
    assert (dialects["two_stage"] != dialects["two_stage_trunc"]).any()
    assert (dialects["two_stage_trunc"] != dialects["mse"]).any()
    for m in METHODS:
        assert torch.equal(bd.quantize(x16, method=m).dialect[:, 0], dialects[m]), m


def test_spec_cost_and_full_cost_pick_the_same_dialect(spec):
    """SPEC 5 leaves out elements with ex <= E - 2 because they cost the same in every dialect;
    check that claim: the full squared error differs from the printed cost by a constant."""
    x16 = torch.cat([vectors.random_blocks(60, 32, f, seed=11) for f in vectors.RANDOM_FAMILIES])
    for row in x16:
        bits = spec.fp16_bits(row)
        fields = [spec.element_fields(b) for b in bits]
        shared = max(f[1] for f in fields)
        if shared == 0:
            continue
        printed = [spec.spec_mse_cost(bits, d) for d in range(16)]
        full = [spec.mse_cost_full(fields, shared, d) for d in range(16)]
        # printed cost unit: 2^(E - 26) per element difference; full cost unit: 2^-24.
        scaled = [p * 4 ** (shared - 2) if shared >= 2 else p for p in printed]
        if shared >= 2:
            offsets = {f - s for f, s in zip(full, scaled)}
            assert len(offsets) == 1, offsets
        assert min(range(16), key=lambda d: (printed[d], d)) == min(range(16), key=lambda d: (full[d], d))
