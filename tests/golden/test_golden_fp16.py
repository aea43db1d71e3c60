"""SPEC 1's single rounding of float64 input to FP16, on both paths of golden.fp16.to_fp16.

The outside reference is numpy's float64 -> float16 cast (one round-to-nearest-even). The sweep
holds every finite FP16 value, every midpoint between neighbours (the ties), values a few float64
ulps and relative steps of 2^-3 .. 2^-40 either side of each midpoint (where rounding through
float32 first goes wrong), the overflow threshold, the subnormal range, signed zeros, Inf and NaN.
"""
import numpy as np
import pytest
import torch

from golden import fp16, native

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def sweep() -> np.ndarray:
    values = np.unique(np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float64))
    values = values[np.isfinite(values)]
    mids = (values[:-1] + values[1:]) / 2
    parts = [values, mids, np.nextafter(mids, np.inf), np.nextafter(mids, -np.inf)]
    for k in (3, 20, 40):
        parts += [mids * (1 + 2.0 ** -k), mids * (1 - 2.0 ** -k)]
    parts.append(np.array([65504.0, 65519.999999, 65520.0, 3.4028235677973366e38, 3.5e38, 1e300, -1e300,
                           2.0 ** -24, 2.0 ** -25, 2.0 ** -25 * (1 + 2.0 ** -40), 2.0 ** -26, 5e-324, 0.0, -0.0,
                           np.inf, -np.inf, np.nan, -np.nan]))
    return np.concatenate(parts)


def numpy_fp16(x: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        return x.astype(np.float16)


def assert_same_fp16(got: torch.Tensor, want: np.ndarray):
    got = got.cpu().numpy()
    assert got.dtype == np.float16
    nan = np.isnan(want)
    assert np.array_equal(np.isnan(got), nan)
    mismatch = got[~nan].view(np.uint16) != want[~nan].view(np.uint16)
    assert not mismatch.any(), f"{int(mismatch.sum())} values differ, first input {want[~nan][mismatch][0]!r}"


@pytest.mark.parametrize("path", native.PATHS)
def test_float64_rounds_once_on_every_path(path):
    if path == "native" and not native.native_available():
        pytest.skip(f"native kernels unavailable: {native.native_error()}")
    x = sweep()
    with native.use(path):
        got = fp16.to_fp16(torch.from_numpy(x))
    assert_same_fp16(got, numpy_fp16(x))


@pytest.mark.parametrize("path", native.PATHS)
def test_float64_random_magnitudes_and_shapes(path):
    if path == "native" and not native.native_available():
        pytest.skip(f"native kernels unavailable: {native.native_error()}")
    gen = torch.Generator().manual_seed(5)
    # Spread over 2^-30 .. 2^20 so subnormal, normal and overflowing results all occur; a
    # non-contiguous view and a multi-dimensional shape go through the same call.
    x = torch.randn(3, 70000, dtype=torch.float64, generator=gen) * torch.exp2(
        torch.randint(-30, 21, (3, 70000), generator=gen).to(torch.float64))
    view = x.t()
    with native.use(path):
        got = fp16.to_fp16(view)
    assert got.shape == view.shape
    assert_same_fp16(got, numpy_fp16(view.numpy()))


def test_reference_path_is_the_device_generic_one():
    """Off the CPU to_fp16 runs float64_to_fp16_reference; the CPU proves it on the same sweep."""
    x = sweep()
    assert_same_fp16(fp16.float64_to_fp16_reference(torch.from_numpy(x)), numpy_fp16(x))


@CUDA
def test_float64_rounds_once_on_cuda():
    x = sweep()
    got = fp16.to_fp16(torch.from_numpy(x).cuda())
    assert got.device.type == "cuda"
    assert_same_fp16(got, numpy_fp16(x))
