"""golden.baselines.fake_quantize: the fused C pass (golden.kernels) gives the reference's bits.

Every format and block size, FP16, float32 and float64 input, float32 and float64 output, on: every
finite FP16 value; float64 values around every FP16 tie (where rounding through float32 first goes
wrong); the corner and random families of golden/vectors.py; seeded tensors from 2^-150 to 2^127
with zero and negative-zero blocks; exact ties of the E2M1 and INT4 grids; tensors large enough to
be split across threads. Inputs the reference refuses raise the same error; NVFP4's underflowing
tensor scale is left to the reference.
"""
import numpy as np
import pytest
import torch

from golden import baselines, kernels, native, vectors

from .test_golden_fp16 import sweep

pytestmark = pytest.mark.skipif(not native.native_available(),
                                reason=f"native kernels unavailable: {native.native_error()}")

CASES = [("fp16", None), *((fmt, b) for fmt in baselines.BD_METHODS for b in (16, 32, 64)),
         ("mxfp4", 16), ("mxfp4", 32), ("nvfp4", None), ("int4", 16), ("int4", 32), ("int4", 64)]
DTYPES = (torch.float32, torch.float64)
INPUT_DTYPES = (torch.float16, torch.float32, torch.float64)


def case_id(case):
    fmt, block = case
    return fmt if block is None else f"{fmt}_b{block}"


def reference(x, fmt, block, dtype):
    with native.use("reference"):
        return baselines.fake_quantize(x, fmt, block, dtype=dtype)


def outcome(fn):
    try:
        return fn()
    except ValueError as err:
        return str(err)


def assert_same(x, fmt, block, dtype):
    """The native path serves x and returns the reference's bits (NaN where the reference has NaN)."""
    assert baselines._fake_native(x, fmt, baselines._fake_block(fmt, block), dtype) is not None
    fast = baselines.fake_quantize(x, fmt, block, dtype=dtype)
    slow = reference(x, fmt, block, dtype)
    assert fast.dtype == slow.dtype == dtype and fast.shape == slow.shape == x.shape
    ints = torch.int64 if dtype == torch.float64 else torch.int32
    differ = fast.view(ints) != slow.view(ints)
    assert not bool(differ.any()), (f"{int(differ.sum())} of {x.numel()} differ; first input "
                                    f"{x[differ][0].item()!r}: {fast[differ][0].item()!r} != {slow[differ][0].item()!r}")


def rows(values: torch.Tensor, width: int = 64, seed: int = 0) -> torch.Tensor:
    """values shuffled (seeded) into rows of `width`, the tail padded with zeros."""
    values = values[torch.randperm(values.numel(), generator=torch.Generator().manual_seed(seed))]
    pad = -values.numel() % width
    return torch.cat([values, values.new_zeros(pad)]).reshape(-1, width)


def every_fp16_value() -> torch.Tensor:
    values = torch.arange(1 << 16, dtype=torch.int32).to(torch.int16).view(torch.float16)
    return values[torch.isfinite(values)].to(torch.float64)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("in_dtype", INPUT_DTYPES, ids=str)
@pytest.mark.parametrize("out_dtype", DTYPES, ids=str)
def test_every_fp16_value(case, in_dtype, out_dtype):
    """Each finite FP16 value in a block with random neighbours, twice (two shuffles)."""
    x = torch.cat([rows(every_fp16_value(), seed=1), rows(every_fp16_value(), seed=2)]).to(in_dtype)
    assert_same(x, *case, out_dtype)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_float64_around_every_fp16_tie(case):
    """float64 values at, and a few ulps or relative steps around, every midpoint between FP16
    neighbours: SPEC 1's single rounding decides them. Values beyond FP16 are dropped here (the
    non-finite test covers them) for the FP16-based formats."""
    x = torch.from_numpy(sweep())
    x = x[torch.isfinite(x)]
    if case[0] == "fp16" or case[0] in baselines.BD_METHODS:
        x = x[x.abs() < 65520.0]
    else:
        x = x[x.abs() <= torch.finfo(torch.float32).max]
    for dtype in DTYPES:
        assert_same(rows(x, seed=3), *case, dtype)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_corner_and_random_families(case):
    block = case[1] or 32
    families = dict(vectors.corner_blocks(block))
    families.pop("nonfinite")
    for family in vectors.RANDOM_FAMILIES:
        families[family] = vectors.random_blocks(400, block, family=family, seed=11)
    for family, x16 in families.items():
        for in_dtype in INPUT_DTYPES:
            assert_same(x16.to(in_dtype), *case, torch.float64)


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_seeded_tensors_across_the_range_with_zero_blocks(case):
    """Row scales 2^-150 .. 2^127 (FP32 subnormals to near its top, FP16 overflow excluded for the
    FP16-based formats), zero and negative-zero blocks, and a float32 copy of each."""
    gen = torch.Generator().manual_seed(21)
    fp16_based = case[0] == "fp16" or case[0] in baselines.BD_METHODS
    top = 14 if fp16_based else 125
    x = torch.randn(512, 128, generator=gen, dtype=torch.float64)
    x *= torch.exp2(torch.randint(-150, top, (512, 1), generator=gen).to(torch.float64))
    x[::5, :64] = 0.0
    x[1::5, 32:] = -0.0
    x[2::5, 16:48] = -0.0
    for in_dtype in DTYPES:
        for out_dtype in DTYPES:
            assert_same(x.to(in_dtype), *case, out_dtype)


def test_grid_ties_round_half_to_even():
    """Exact midpoints of the E2M1 grid (MXFP4 with scale 1, NVFP4's quotient 1) and of INT4's
    levels (scale 1): ties go to the even neighbour on both paths."""
    e2m1_ties = torch.tensor([0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5.0, 7.0], dtype=torch.float64)
    mx = torch.cat([e2m1_ties, -e2m1_ties, torch.full((16,), 4.0)]).reshape(1, 32)  # amax 7: scale 2^0
    int4_ties = torch.arange(16, dtype=torch.float64).sub(7.5).abs()                 # 0.5 .. 7.5
    int4 = torch.cat([int4_ties, -int4_ties]).reshape(1, 32)
    int4[0, 0] = 7.0                                                                   # amax 7.5 -> scale 1.0713
    exact_int4 = torch.cat([torch.arange(8, dtype=torch.float64) + 0.5, torch.full((24,), 7.0)]).reshape(1, 32)
    for dtype in DTYPES:
        assert_same(mx, "mxfp4", 32, dtype)
        assert_same(int4, "int4", 32, dtype)
        assert_same(exact_int4, "int4", 32, dtype)
        assert_same(mx.reshape(2, 16), "nvfp4", None, dtype)
    # The ties really are ties on the reference path: half of them round down to the even value.
    out = reference(mx, "mxfp4", 32, torch.float64)[0, :8]
    assert out.tolist() == [0.0, 1.0, 1.0, 2.0, 2.0, 4.0, 4.0, 6.0]


def test_threads_split_large_tensors():
    """Tensors with more blocks than one thread takes: the split gives the same bits."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(1024, 2048, generator=gen, dtype=torch.float64) * torch.exp(torch.randn(2048, generator=gen))
    x[:, 1024:1536] = 0.0
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        assert kernels._threads(x.numel() // 64, 64) == 2
        for case in (("bd_two_stage", 32), ("bd_mse", 64), ("mxfp4", 32), ("nvfp4", None), ("int4", 16), ("fp16", None)):
            assert_same(x, *case, torch.float64)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("case", CASES, ids=case_id)
@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan"), 1e39, 70000.0])
def test_non_finite_input_raises_the_reference_error(case, bad):
    x = torch.randn(4, 64, dtype=torch.float64)
    x[2, 40] = bad
    fp16_based = case[0] == "fp16" or case[0] in baselines.BD_METHODS
    fast = outcome(lambda: baselines.fake_quantize(x, *case, dtype=torch.float64))
    slow = outcome(lambda: reference(x, *case, torch.float64))
    if bad == 70000.0 and not fp16_based:
        assert isinstance(fast, torch.Tensor) and torch.equal(fast, slow)   # finite in FP32
    else:
        assert isinstance(fast, str) and fast == slow and "(2, 40)" in fast
    if bad != 1e39:                                                        # the same in an FP16 tensor
        x16 = x.to(torch.float16)
        fast = outcome(lambda: baselines.fake_quantize(x16, *case))
        assert isinstance(fast, str) and fast == outcome(lambda: reference(x16, *case, torch.float32))


def test_nvfp4_underflowing_tensor_scale_is_left_to_the_reference():
    """amax / 2688 below the least FP32 subnormal: the kernel declines and the reference answers."""
    x = torch.zeros(2, 16, dtype=torch.float64)
    x[0, 3] = 2.0 ** -149
    assert kernels.fake_quantize_native(x, "nvfp4", 16, torch.float64) is None
    fast = baselines.fake_quantize(x, "nvfp4", dtype=torch.float64)
    slow = reference(x, "nvfp4", None, torch.float64)
    assert torch.equal(fast.isnan(), slow.isnan()) and torch.equal(fast.nan_to_num(), slow.nan_to_num())


def test_all_zero_nvfp4_tensor_and_other_paths():
    x = torch.zeros(3, 64, dtype=torch.float64)
    x[1, 5] = -0.0
    for case in CASES:
        assert_same(x, *case, torch.float64)
    # Not served natively: bfloat16 input, a last dimension that is not a whole number of blocks,
    # and empty tensors; they take the reference path with its results and errors.
    assert baselines._fake_native(x.to(torch.bfloat16), "bd_mse", 32, torch.float32) is None
    assert baselines._fake_native(torch.zeros(2, 40), "int4", 32, torch.float32) is None
    assert baselines._fake_native(torch.zeros(0, 32), "mxfp4", 32, torch.float32) is None
    assert "not a multiple" in outcome(lambda: baselines.fake_quantize(torch.zeros(2, 40), "int4", 32))


def test_dtype_argument_is_checked():
    with pytest.raises(ValueError, match="dtype"):
        baselines.fake_quantize(torch.zeros(1, 32), "mxfp4", 32, dtype=torch.float16)


def test_numpy_agrees_for_fp16():
    """An outside reference for the simplest format: numpy's float64 -> float16 cast."""
    x = sweep()
    x = x[np.isfinite(x) & (np.abs(x) < 65520.0)]
    x = x[: x.size - x.size % 8].reshape(-1, 8)
    got = baselines.fake_quantize(torch.from_numpy(x), "fp16", dtype=torch.float64).numpy()
    assert np.array_equal(got.view(np.uint64), x.astype(np.float16).astype(np.float64).view(np.uint64))


@pytest.fixture
def scalar_only_library(tmp_path, monkeypatch):
    """The kernels built without their AVX2 versions (what a CPU without AVX2 runs)."""
    monkeypatch.setattr(native.KERNELS, "lib", native.KERNELS.build(tmp_path, defines=("BD_SCALAR_ONLY",)))


@pytest.mark.parametrize("case", [c for c in CASES if c[1] in (None, 32)], ids=case_id)
def test_scalar_build_gives_the_same_bits(case, scalar_only_library):
    from golden import bd

    block = case[1] or 32
    families = dict(vectors.corner_blocks(block))
    families.pop("nonfinite")
    families["gaussian"] = vectors.random_blocks(4000, block, family="gaussian", seed=12)
    for family, x16 in families.items():
        x = x16.to(torch.float64)
        assert_same(x, *case, torch.float64)
        if case[0] in baselines.BD_METHODS:
            method = baselines.BD_METHODS[case[0]]
            fast = bd.quantize(x, block, method)
            with native.use("reference"):
                slow = bd.quantize(x, block, method)
            assert all(torch.equal(a, b) for a, b in zip(fast, slow)), family


def test_nvfp4_e4m3_block_scale_ties_round_to_even():
    """A tensor maximum of 2688 makes the FP32 tensor scale exactly 1, so a block's E4M3 scale is its
    maximum / 6: 51 / 6 = 8.5 lies exactly between the E4M3 values 8 and 9 and rounds to the even 8,
    57 / 6 = 9.5 between 9 and 10 rounds to the even 10. Both paths agree and the ties are real."""
    x = torch.zeros(3, 16, dtype=torch.float64)
    x[0, 0], x[1, 0], x[1, 1], x[2, 0], x[2, 1] = 2688.0, 51.0, 17.0, -57.0, 30.0
    for dtype in DTYPES:
        assert_same(x, "nvfp4", None, dtype)
    out = reference(x, "nvfp4", None, torch.float64)
    # Scale 8: 51 / 8 = 6.375 -> 6, 17 / 8 = 2.125 -> 2; scale 10: 57 / 10 = 5.7 -> 6, 30 / 10 = 3 -> 3.
    assert out[1, :2].tolist() == [48.0, 16.0] and out[2, :2].tolist() == [-60.0, 30.0]


@pytest.fixture
def library_without_openmp(tmp_path, monkeypatch):
    """The kernels built without OpenMP: large tensors are split across the Python thread pool."""
    lib = native.KERNELS.build(tmp_path, openmp=False)
    assert lib.bd_openmp() == 0
    monkeypatch.setattr(native.KERNELS, "lib", lib)
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    yield lib
    torch.set_num_threads(threads)


def test_thread_pool_without_openmp_covers_every_range(library_without_openmp):
    """Without OpenMP every kernel runs on ranges of the Python pool; every range, the last one
    included, is computed: the same bits as the reference, for every operation that splits."""
    from golden import bd, fp16

    gen = torch.Generator().manual_seed(8)
    x = torch.randn(96, 2048, generator=gen, dtype=torch.float64) * torch.exp(torch.randn(2048, generator=gen))
    assert kernels._threads(x.numel() // 64, 64) == 3
    for case in (("bd_two_stage", 32), ("bd_mse", 64), ("mxfp4", 32), ("nvfp4", None), ("int4", 16), ("fp16", None)):
        assert_same(x, *case, torch.float64)
    x16 = fp16.to_fp16(x)
    with native.use("reference"):
        assert torch.equal(fp16.to_fp16(x).view(torch.int16), x16.view(torch.int16))
    for method in ("two_stage", "mse"):
        fast = bd.quantize(x16, 32, method)
        with native.use("reference"):
            slow = bd.quantize(x16, 32, method)
            assert torch.equal(bd.dequantize(fast).view(torch.int32), bd.dequantize(slow).view(torch.int32))
        assert all(torch.equal(a, b) for a, b in zip(fast, slow)), method
        assert torch.equal(bd.dequantize(fast).view(torch.int32), bd.dequantize(slow).view(torch.int32))
