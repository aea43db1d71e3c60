"""golden.kernels and golden.exact give the same bits as golden.bd's eager reference.

Every corner and random family of golden/vectors.py, at every block size, with both stage-1 rules and
MSE, through the C kernels and through the eager reference; real SmolLM2 tensors when the capture
cache is present; the exact linear product against the reference loop and the rational reference,
including the sync-free window plan and the torch decode that non-CPU devices run. CUDA tests run
the same comparisons on a GPU and skip without one.
"""

import pytest
import torch

from golden import bd, exact, kernels, native, vectors

from .conftest import real_captures

METHODS = ("two_stage", "two_stage_trunc", "mse")
BLOCKS = (16, 32, 64)
CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

pytestmark = pytest.mark.skipif(not native.native_available(),
                                reason=f"native kernels unavailable: {native.native_error()}")


def reference(fn, *args, **kwargs):
    with native.use("reference"):
        return fn(*args, **kwargs)


def same_blocks(a: bd.Blocks, b: bd.Blocks) -> bool:
    return all(x.dtype == y.dtype and x.shape == y.shape and torch.equal(x, y) for x, y in zip(a, b))


def families(block: int) -> dict[str, torch.Tensor]:
    rows = dict(vectors.corner_blocks(block))
    for family in vectors.RANDOM_FAMILIES:
        rows[family] = vectors.random_blocks(500, block, family=family, seed=7)
    return rows


@pytest.mark.parametrize("block", BLOCKS)
@pytest.mark.parametrize("method", METHODS)
def test_quantize_and_dequantize_match_reference_on_every_family(block, method, bits_equal):
    for family, x in families(block).items():
        fast = bd.quantize(x, block, method, nonfinite="flag")
        slow = reference(bd.quantize, x, block, method, nonfinite="flag")
        assert same_blocks(fast, slow), (family, block, method)
        assert bits_equal(bd.dequantize(fast), reference(bd.dequantize, slow)), (family, block, method)


def test_every_stage1_rule_is_exercised_and_differs():
    """The families hold blocks on which the two rules pick different pairs, so the comparison above
    covers both rules rather than one twice."""
    x = torch.cat([vectors.corner_blocks(32)["odd_qmax"],
                   vectors.random_blocks(4000, 32, family="gaussian", seed=1)])
    rounded = bd.quantize(x, 32, "two_stage", nonfinite="flag").dialect
    truncated = bd.quantize(x, 32, "two_stage_trunc", nonfinite="flag").dialect
    assert (rounded != truncated).any()


@pytest.mark.parametrize("method", METHODS)
def test_real_shaped_tensors_with_padding_threads_and_lead_dims(method, bits_equal):
    """Outlier channels and a heavy-tailed body, (batch, tokens, K) with K not a multiple of 32
    (pad=True), big enough to be split across two threads."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(2, 140, 4000, generator=gen) * torch.exp(torch.randn(4000, generator=gen) * 2)
    x[..., 17] *= 500.0
    x = x.clamp(-6e4, 6e4)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fast = bd.quantize(x, 32, method, pad=True)
    finally:
        torch.set_num_threads(threads)
    slow = reference(bd.quantize, x, 32, method, pad=True)
    assert fast.codes.shape == (2, 140, 125, 32)
    assert kernels._threads(fast.exp.numel(), 32) == 2                   # two threads take part
    assert same_blocks(fast, slow)
    assert bits_equal(bd.dequantize(fast), reference(bd.dequantize, slow))


@pytest.mark.parametrize("method", METHODS)
def test_real_smollm2_tensors(method, bits_equal):
    for activation, weight in real_captures().values():
        for x in (activation[:64], weight[:128]):
            block = 32 if x.shape[-1] % 32 == 0 else 16
            fast = bd.quantize(x, block, method, nonfinite="flag")
            slow = reference(bd.quantize, x, block, method, nonfinite="flag")
            assert same_blocks(fast, slow)
            assert bits_equal(bd.dequantize(fast), reference(bd.dequantize, slow))


def test_real_smollm2_linear_matches_reference_and_rational(spec, bits_equal):
    activation, weight = next(iter(real_captures().values()))
    q_act = bd.quantize(activation[:64], method="two_stage")
    q_weight = bd.quantize(weight[:128], method="mse")
    got = bd.linear(q_act, q_weight)
    assert bits_equal(got, reference(bd.linear, q_act, q_weight))
    small_act = bd.Blocks(*(t[:3] for t in q_act))
    small_weight = bd.Blocks(*(t[:5] for t in q_weight))
    assert bits_equal(got[:3, :5], spec.linear_reference(small_act, small_weight))


def test_nonfinite_raise_names_the_same_index():
    x = torch.randn(4, 64)
    x[2, 37] = float("nan")
    with pytest.raises(ValueError, match=r"index \(2, 37\)"):
        bd.quantize(x)
    with pytest.raises(ValueError, match=r"index \(2, 37\)"):
        reference(bd.quantize, x)


def _linear_paths(q_act, q_weight):
    """Every way the exact product is computed: the native dispatch, the reference loop, and the
    window plan with the torch decode (the code non-CPU devices run), adaptive and sync-free."""
    lead, (nblocks, block) = q_act.codes.shape[:-2], q_act.codes.shape[-2:]
    args = (q_act.exp.reshape(-1, nblocks), q_act.dialect.reshape(-1, nblocks),
            q_act.codes.reshape(-1, nblocks, block), q_weight.exp, q_weight.dialect, q_weight.codes)
    outputs = {
        "dispatch": bd.linear(q_act, q_weight),
        "reference": reference(bd.linear, q_act, q_weight),
    }
    for sync_free in (False, True):
        for native in (False, True):
            out = exact.linear_exact(*args, sync_free=sync_free, native=native)
            outputs[f"windows sync_free={sync_free} native={native}"] = out.reshape(lead + out.shape[-1:])
    return outputs


def _blocks_with_exponents(exps: torch.Tensor, block: int, seed: int) -> bd.Blocks:
    """Random dialects and codes under the given block exponents (zero blocks kept valid)."""
    gen = torch.Generator().manual_seed(seed)
    dialect = torch.randint(16, exps.shape, generator=gen, dtype=torch.uint8)
    codes = torch.randint(16, exps.shape + (block,), generator=gen, dtype=torch.uint8)
    zero = exps == 0
    dialect[zero] = 0
    codes[zero] &= 8
    return bd.Blocks(exps.to(torch.uint8), dialect, codes, torch.zeros(exps.shape, dtype=torch.bool))


@pytest.mark.parametrize("case", ["narrow", "full_spread", "cancelling", "zero_rows", "lead_dims"])
def test_linear_paths_agree_with_the_rational_reference(case, spec, bits_equal):
    gen = torch.Generator().manual_seed(11)
    block = 16 if case == "lead_dims" else 32
    if case == "narrow":
        a_exp = torch.randint(12, 16, (5, 8), generator=gen)
        w_exp = torch.randint(13, 15, (6, 8), generator=gen)
    else:
        # Exponents 1..30 in one row need several windows on each side.
        a_exp = torch.randint(0, 31, (5, 8), generator=gen)
        w_exp = torch.randint(0, 31, (6, 8), generator=gen)
        a_exp[:, 0], w_exp[:, 0], a_exp[:, 1], w_exp[:, 1] = 30, 30, 1, 1
    if case == "zero_rows":
        a_exp[1] = 0
        w_exp[2] = 0
    q_act = _blocks_with_exponents(a_exp, block, 1)
    q_weight = _blocks_with_exponents(w_exp, block, 2)
    if case == "cancelling":
        # The top blocks cancel exactly (row 0 against every weight row), leaving the low blocks.
        q_weight.codes[:, 0] = q_weight.codes[0, 0]
        q_weight.dialect[:, 0] = q_weight.dialect[0, 0]
        q_act.codes[0, 2] = q_act.codes[0, 0] ^ 8
        q_act.dialect[0, 2] = q_act.dialect[0, 0]
        q_act.exp[0, 2] = 30
        q_weight.exp[:, 2] = 30
        q_weight.codes[:, 2] = q_weight.codes[0, 0]
        q_weight.dialect[:, 2] = q_weight.dialect[0, 0]
    expected = spec.linear_reference(q_act, q_weight)
    if case == "lead_dims":
        q_act = bd.Blocks(*(t.reshape((1, 5) + t.shape[1:]) for t in q_act))
        expected = expected.reshape(1, 5, 6)
    for name, got in _linear_paths(q_act, q_weight).items():
        assert bits_equal(got, expected), name


def test_linear_cancelling_to_zero_is_positive_zero(bits_equal):
    exps = torch.full((1, 2), 20)
    q_act = _blocks_with_exponents(exps, 32, 3)
    q_act.codes[0, 1] = q_act.codes[0, 0] ^ 8
    q_act.dialect[0, 1] = q_act.dialect[0, 0]
    q_weight = _blocks_with_exponents(exps, 32, 4)
    q_weight.codes[0, 1] = q_weight.codes[0, 0]
    q_weight.dialect[0, 1] = q_weight.dialect[0, 0]
    for name, got in _linear_paths(q_act, q_weight).items():
        assert bits_equal(got, torch.zeros(1, 1)), name


def test_linear_longer_than_one_window_chunk(bits_equal):
    """K beyond what one float64 product sums exactly: the product is cut along K."""
    block = 64
    nblocks = exact._CHUNK_ELEMENTS // block + 3
    gen = torch.Generator().manual_seed(5)
    q_act = _blocks_with_exponents(torch.randint(1, 31, (2, nblocks), generator=gen), block, 6)
    q_weight = _blocks_with_exponents(torch.randint(1, 31, (3, nblocks), generator=gen), block, 7)
    outputs = _linear_paths(q_act, q_weight)
    for name, got in outputs.items():
        assert bits_equal(got, outputs["reference"]), name


def test_linear_on_quantized_random_tensors(bits_equal):
    gen = torch.Generator().manual_seed(9)
    a = torch.randn(33, 1024, generator=gen) * torch.exp(torch.randn(1024, generator=gen) * 3)
    w = torch.randn(70, 1024, generator=gen) * torch.exp(torch.randn(70, 1, generator=gen))
    q_act = bd.quantize(a.clamp(-6e4, 6e4), method="two_stage")
    q_weight = bd.quantize(w, method="mse")
    outputs = _linear_paths(q_act, q_weight)
    for name, got in outputs.items():
        assert bits_equal(got, outputs["reference"]), name


def test_empty_inputs():
    x = torch.zeros(0, 64)
    q = bd.quantize(x)
    assert same_blocks(q, reference(bd.quantize, x))
    assert bd.dequantize(q).shape == (0, 64)


def test_reference_fallback_when_the_library_is_missing(monkeypatch, bits_equal):
    x = vectors.random_blocks(64, 32, family="gaussian", seed=2)
    expected = bd.quantize(x)
    monkeypatch.setattr(native, "library", lambda: None)
    assert not native.native_for(x)
    assert same_blocks(bd.quantize(x), expected)
    assert bits_equal(bd.dequantize(expected), reference(bd.dequantize, expected))


def test_use_selects_and_restores_the_path():
    assert native.path() == "native"
    with native.use("reference"):
        assert native.path() == "reference"
        assert not native.native_for(torch.zeros(1))
    assert native.path() == "native"
    with pytest.raises(ValueError, match="which"):
        native.use("fast")


def test_quantize_native_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="method"):
        kernels.quantize_native(torch.zeros(1, 32, dtype=torch.float16), 32, "two_stage_floor")


@CUDA
@pytest.mark.parametrize("method", METHODS)
def test_cuda_keeps_the_device_and_the_bits(method, bits_equal):
    x = vectors.random_blocks(4096, 32, family="heavy_tailed", seed=4).reshape(64, -1)
    q_cpu = bd.quantize(x, method=method)
    q_gpu = bd.quantize(x.cuda(), method=method)
    assert all(t.device.type == "cuda" for t in q_gpu)
    assert same_blocks(bd.Blocks(*(t.cpu() for t in q_gpu)), q_cpu)
    deq = bd.dequantize(q_gpu)
    assert deq.device.type == "cuda" and bits_equal(deq.cpu(), bd.dequantize(q_cpu))


@CUDA
def test_cuda_linear_keeps_the_device_and_the_bits(bits_equal):
    gen = torch.Generator().manual_seed(8)
    q_act = bd.quantize(torch.randn(16, 2048, generator=gen))
    q_weight = bd.quantize(torch.randn(40, 2048, generator=gen), method="mse")
    expected = bd.linear(q_act, q_weight)
    got = bd.linear(bd.Blocks(*(t.cuda() for t in q_act)), bd.Blocks(*(t.cuda() for t in q_weight)))
    assert got.device.type == "cuda" and bits_equal(got.cpu(), expected)


def test_invalid_blocks_give_nan_in_both_paths(bits_equal):
    x = vectors.random_blocks(8, 32, family="gaussian", seed=12).reshape(2, 128)
    x[1, 40] = float("inf")
    q = bd.quantize(x, nonfinite="flag")
    assert q.invalid.tolist() == [[False] * 4, [False, True, False, False]]
    assert bits_equal(bd.dequantize(q), reference(bd.dequantize, q))
    assert bd.dequantize(q)[1, 32:64].isnan().all()
    q_weight = bd.quantize(vectors.random_blocks(12, 32, family="uniform", seed=13).reshape(3, 128))
    got = bd.linear(q, q_weight)
    assert bits_equal(got, reference(bd.linear, q, q_weight))
    assert got[1].isnan().all() and not got[0].isnan().any()


def test_linear_window_sums_past_2_to_53_stay_exact(spec, bits_equal):
    """The window plan's budget is tight: one exponent step more and a float64 product of windows
    must hold partial sums past 2^53, which it cannot. Built so that exactly one step more would put
    everything in one product: 220 worst-case same-sign products at the top of both windows (their
    sum 3 * 2^52 in the window's units), one product at 2^29 that makes the FP32 rounding a tie, and
    one product of 1 at the bottom of both windows that breaks the tie upwards. The float64 sum of
    the one product would drop the 1 (its ulp is 2 there), land on the tie and round to even, down.
    """
    block, nblocks = 32, 9                          # K = 288: 225 K has 16 bits, budget 53 - 16 = 37
    a_exp = torch.tensor([[30] * 7 + [21, 1]])      # activation offsets 0 and 9, then 29 (spread 29)
    w_exp = torch.tensor([[30] * 7 + [30, 21]])     # weight offsets 0, then 9 (spread 9): 29 + 9 = 38
    q_act = _blocks_with_exponents(a_exp, block, 0)
    q_weight = _blocks_with_exponents(w_exp, block, 0)
    # Dialect 0 holds 15 (index 7) and 6 (5), 4 (4), 1 (1); dialect 1 holds 15 (7), 3 (3), 1 (1).
    q_act.dialect[:], q_weight.dialect[:] = 0, 1
    a_codes = torch.zeros(nblocks * block, dtype=torch.uint8)
    w_codes = torch.zeros(nblocks * block, dtype=torch.uint8)
    a_codes[:218], w_codes[:218] = 7, 7             # 218 x 225
    a_codes[218], w_codes[218] = 5, 7               # 6 x 15
    a_codes[219], w_codes[219] = 4, 3               # 4 x 3: 49152 = 3 * 2^14 in all
    a_codes[7 * block], w_codes[7 * block] = 1, 1   # 1 x 1 nine steps down: the tie bit
    a_codes[8 * block], w_codes[8 * block] = 1, 1   # 1 x 1 at the bottom of both windows
    q_act.codes[:] = a_codes.reshape(1, nblocks, block)
    q_weight.codes[:] = w_codes.reshape(1, nblocks, block)
    expected = spec.linear_reference(q_act, q_weight)
    tie = spec.linear_reference(q_act, bd.Blocks(q_weight.exp, q_weight.dialect,
                                                 torch.where(torch.arange(nblocks * block).reshape(1, nblocks, block)
                                                             == 8 * block, 0, q_weight.codes).to(torch.uint8),
                                                 q_weight.invalid))
    assert not bits_equal(expected, tie)            # the last product of 1 decides the rounding
    for name, got in _linear_paths(q_act, q_weight).items():
        assert bits_equal(got, expected), name
