"""golden.report.attention.attention_native: the report's float64 causal attention.

Against torch's scaled_dot_product_attention and an mpmath softmax; the quantized probabilities are
checked bit for bit against golden.baselines.fake_quantize of the kernel's own unquantized ones; the
bits must not depend on the thread count or the batch; every case the kernel does not serve must
come back as None, for the caller's reference to run.
"""
import math

import mpmath
import pytest
import torch

from golden import baselines, native
from golden.report import attention

FORMATS = [("bd_two_stage", 32), ("bd_two_stage_trunc", 16), ("bd_mse", 64), ("mxfp4", 32), ("int4", 16),
           ("fp16", None)]


def _served() -> bool:
    q = torch.zeros(1, 1, 1, 8, dtype=torch.float64)
    return native.native_available() and attention.attention_native(q, q, q, 1.0) is not None


pytestmark = pytest.mark.skipif(not _served(), reason="the attention kernel needs the native kernels on AVX2 and FMA")


def operands(batch, heads, kv_heads, length, dim, seed, spread=2.0):
    """Query in the (batch, length, heads, dim) memory layout that a projection's view and transpose
    give, key and value contiguous."""
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(batch, length, heads, dim, generator=g, dtype=torch.float64).transpose(1, 2)
    k = spread * torch.randn(batch, kv_heads, length, dim, generator=g, dtype=torch.float64)
    v = torch.randn(batch, kv_heads, length, dim, generator=g, dtype=torch.float64)
    return q, k, v


def reference_probabilities(q, k, scaling):
    groups = q.shape[1] // k.shape[1]
    scores = q @ k.repeat_interleave(groups, 1).transpose(2, 3) * scaling
    length = q.shape[2]
    return torch.softmax(scores.masked_fill(torch.ones(length, length, dtype=torch.bool).triu(1), -math.inf), -1)


@pytest.mark.parametrize("batch, heads, kv_heads, length, dim", [
    (1, 1, 1, 1, 8), (2, 6, 2, 7, 8), (1, 3, 3, 48, 16), (2, 9, 3, 49, 64), (1, 4, 1, 300, 64)])
def test_matches_torch_attention(batch, heads, kv_heads, length, dim):
    q, k, v = operands(batch, heads, kv_heads, length, dim, seed=length)
    got = attention.attention_native(q, k, v, dim ** -0.5, with_probabilities=True)
    groups = heads // kv_heads
    expected = torch.nn.functional.scaled_dot_product_attention(
        q, k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1), is_causal=True, scale=dim ** -0.5)
    assert got.output.shape == (batch, length, heads, dim)
    torch.testing.assert_close(got.output, expected.transpose(1, 2), rtol=0, atol=1e-13)
    probs = reference_probabilities(q, k, dim ** -0.5)
    torch.testing.assert_close(got.probabilities, probs, rtol=1e-13, atol=0)
    assert torch.equal(got.probabilities.triu(1), torch.zeros_like(probs))


def test_softmax_to_a_few_ulps_over_the_whole_exponent_range():
    """One query against keys whose scores run from 0 down to -760: exp over its whole range, the
    results below 2^-1021 flushed to zero."""
    scores = [0.0] + [-(i * 760.0 / 510) for i in range(1, 511)] + [-0.5]
    length = len(scores)
    q = torch.zeros(1, 1, length, 8, dtype=torch.float64)
    q[..., 0] = 1.0
    k = torch.zeros(1, 1, length, 8, dtype=torch.float64)
    k[0, 0, :, 0] = torch.tensor(scores, dtype=torch.float64)
    got = attention.attention_native(q, k, k, 1.0, with_probabilities=True).probabilities[0, 0, -1]
    mpmath.mp.prec = 200
    exps = [mpmath.exp(s) for s in scores]
    total = mpmath.fsum(exps)
    for s, e, p in zip(scores, exps, got.tolist()):
        exact = float(e / total)
        if s >= -708:
            assert abs(p - exact) <= 4 * math.ulp(exact), (s, p, exact)
        else:
            assert p == 0.0 and exact < 2.3e-308, (s, p, exact)


@pytest.mark.parametrize("fmt, block", [(None, None), ("bd_two_stage", 32)])
def test_same_bits_for_any_thread_count_and_batch(fmt, block):
    q, k, v = operands(3, 6, 2, 128, 64, seed=5)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = attention.attention_native(q, k, v, 0.125, fmt, block).output
        torch.set_num_threads(max(2, threads))
        many = attention.attention_native(q, k, v, 0.125, fmt, block).output
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(one, many)
    rows = [attention.attention_native(q[i:i + 1], k[i:i + 1], v[i:i + 1], 0.125, fmt, block).output for i in range(3)]
    assert torch.equal(torch.cat(rows), many)


@pytest.mark.parametrize("fmt, block", FORMATS)
def test_quantized_probabilities_are_the_format_of_the_kernels_own(fmt, block):
    """The probabilities come out as fake_quantize makes the kernel's unquantized ones, bit for bit,
    and the output is their product with V."""
    length = 192
    q, k, v = operands(2, 6, 2, length, 64, seed=11, spread=4.0)
    plain = attention.attention_native(q, k, v, 0.125, with_probabilities=True).probabilities
    got = attention.attention_native(q, k, v, 0.125, fmt, block, with_probabilities=True)
    expected = baselines.fake_quantize(plain, fmt, block, dtype=torch.float64)
    assert torch.equal(got.probabilities, expected)
    assert not torch.equal(expected, plain)
    assert torch.equal(got.probabilities.triu(1), torch.zeros_like(plain))
    product = expected @ v.repeat_interleave(3, 1)
    torch.testing.assert_close(got.output, product.transpose(1, 2), rtol=0, atol=1e-13)


def test_declines_what_it_does_not_serve():
    q, k, v = operands(1, 4, 2, 64, 64, seed=3)
    assert attention.attention_native(q, k, v, 0.125) is not None
    assert attention.attention_native(q.float(), k.float(), v.float(), 0.125) is None       # float32
    assert attention.attention_native(q[..., :12], k[..., :12], v[..., :12], 0.125) is None  # dim % 8
    assert attention.attention_native(q, k, v, 0.125, "nvfp4", 16) is None                   # tensor scale
    assert attention.attention_native(q, k, v, 0.125, "bd_mse", 24) is None                  # not a block size
    assert attention.attention_native(q[:, :, :40], k[:, :, :40], v[:, :, :40], 0.125, "bd_mse", 32) is None
    assert attention.attention_native(q[:, :3], k, v, 0.125) is None                         # 3 heads on 2
    with native.use("reference"):
        assert attention.attention_native(q, k, v, 0.125) is None
    for bad in (math.nan, math.inf):
        poisoned = q.clone()
        poisoned[0, 1, 17, 5] = bad
        assert attention.attention_native(poisoned, k, v, 0.125) is None
    huge = k.abs()
    huge[0, 0, 3] = 1e308                      # finite operands, an infinite score
    assert attention.attention_native(q.abs(), huge, v, 0.125) is None


def test_softmax_of_scores_beyond_the_exponent_range():
    """Scores from 1000 down to 240: exp of a score above about 709 overflows, so the softmax must
    subtract the row's maximum first. The probabilities equal mpmath's to a few ulps."""
    scores = [1000.0] + [1000.0 - i * 760.0 / 510 for i in range(1, 511)] + [999.5]
    length = len(scores)
    q = torch.zeros(1, 1, length, 8, dtype=torch.float64)
    q[..., 0] = 1.0
    k = torch.zeros(1, 1, length, 8, dtype=torch.float64)
    k[0, 0, :, 0] = torch.tensor(scores, dtype=torch.float64)
    got = attention.attention_native(q, k, k, 1.0, with_probabilities=True)
    assert got is not None and bool(torch.isfinite(got.output).all())
    probs = got.probabilities[0, 0]
    mpmath.mp.prec = 200
    for row in (0, 1, 300, length - 1):
        exps = [mpmath.exp(s) for s in scores[:row + 1]]
        total = mpmath.fsum(exps)
        for s, e, p in zip(scores, exps, probs[row, :row + 1].tolist()):
            exact = float(e / total)
            if s - max(scores[:row + 1]) >= -708:
                assert abs(p - exact) <= 4 * math.ulp(exact), (row, s, p, exact)
            else:
                assert p == 0.0 and exact < 2.3e-308, (row, s, p, exact)
