"""The C kernels behind golden.bd, golden.fp16 and golden.baselines: the same bits as their eager
torch references, at memory speed.

Each function here calls one function of golden/csrc (built and loaded by :mod:`golden.native`) with
the tensors' data pointers, and splits large tensors across ``torch.get_num_threads()`` threads:

- **Quantize and dequantize on CPU**: one C function per operation (SPEC 3, 4 with either stage-1
  rule, 5), a single pass over the FP16 bits, block by block.
- **SPEC 1's rounding** of float64 to FP16, the path of golden.fp16.to_fp16 on the CPU.
- **Fake quantization on CPU** (``golden.baselines.fake_quantize``, every format): FP16, float32
  or float64 in, the dequantized values out in float32 or float64, in one pass per block (SPEC 1's
  rounding, the selection and the decode together), so a float64 model quantizes its operands
  without intermediate tensors.
- **The window decode** of golden.exact's exact linear product.

The callers check their arguments and choose this path once, at their top (golden.native.native_for).

Why this route. Measured on this project's 2-core x86-64 (AVX-512) build machine, one thread,
4096 x 4096 FP16, in one process per line (the machine was shared, so compare within a line):

- ``torch.compile`` (inductor, C++ on CPU) of a restructured two-stage kernel (the code of the
  C function, as torch operations): 82 s to compile cold, 14 s more for a second shape even
  with ``dynamic=True``, then 0.77 s per call against torchao's 3.3 s (4x; the target is 10x): the
  per-element table lookups defeat its vectoriser, and every fresh test run or user process would
  pay the compile (the on-disk cache only trims it). Not used.
- ``torch.utils.cpp_extension``: builds against the torch headers and needs ninja; a one-line
  ``load_inline`` extension took 283 s to build cold where the C files took 2.5 s (same load,
  a heavily shared machine). The C files have no torch headers and are called through ctypes with
  the tensors' data pointers, so that is what is used; a fresh process loads the cached library in
  milliseconds.
- Restructured eager torch (int32 fields, table gathers, one count per range): 3.7 s against the
  reference's 6.6 s; far short of the targets, so the eager reference stays as it is, readable next
  to the spec.
- The C kernels: two-stage 0.13 s, MSE 0.33 s, dequantize 0.02 s against torchao's 2.5 s (20x,
  7.6x, 120x); the figures of record are in reports/bench/ (``make bench``).
"""
from __future__ import annotations

import ctypes
from concurrent.futures import ThreadPoolExecutor

import torch

from . import methods
from .native import library

__all__ = ["quantize_native", "dequantize_native", "float64_to_fp16_native",
           "fake_quantize_native", "decode_window_native", "FAKE_QUANTIZE_DTYPES", "FAKE_QUANTIZE_INPUTS"]


# ---------------------------------------------------------------------------------------------------
# Threading, on torch's thread count. With OpenMP (torch's own runtime, see golden.native) a kernel
# splits its loop itself, on the threads torch's operations use. Without it, ctypes releases the
# GIL and block ranges run side by side on a Python pool. Measured in the report's float64 forward
# passes on 2 cores: with the pool, torch's OpenMP threads, still spinning after each operation,
# took the cores from the kernels, which ran at half speed (0.86 s against 0.43 s for a run's 200 M
# activations rounded to FP16).

# A thread takes at least this many elements (a fraction of a millisecond of work), counted in
# elements rather than blocks so that every block size splits alike.
_MIN_ELEMENTS_PER_THREAD = 1 << 15
_pool: ThreadPoolExecutor | None = None


def _threads(count: int, unit: int) -> int:
    """Threads for `count` units of `unit` elements each: torch's count, fewer for small work."""
    return max(1, min(torch.get_num_threads(), count * unit // _MIN_ELEMENTS_PER_THREAD))


def _parallel(count: int, run, unit: int = 1) -> list:
    """Calls run(start, stop) over [0, count) split among _threads(count, unit) Python threads;
    returns the calls' results in order."""
    global _pool
    threads = _threads(count, unit)
    if threads == 1:
        return [run(0, count)]
    if _pool is None or _pool._max_workers < threads:
        _pool = ThreadPoolExecutor(max_workers=threads)
    bounds = [count * i // threads for i in range(threads + 1)]
    return list(_pool.map(lambda i: run(bounds[i], bounds[i + 1]), range(threads)))


def _split(count: int, run, unit: int = 1) -> list:
    """Calls run(start, stop, threads) over [0, count) units of `unit` elements: once with every
    thread when the library runs OpenMP, else in ranges on the Python pool (one thread each).
    Returns the results."""
    if library().bd_openmp():
        return [run(0, count, _threads(count, unit))]
    return _parallel(count, lambda start, stop: run(start, stop, 1), unit)


def quantize_native(x16: torch.Tensor, block: int, method: str):
    """SPEC 3-5 on contiguous FP16 of shape (..., K), K a multiple of block, on the CPU.

    method: a golden.methods name ("two_stage", "two_stage_trunc", "mse").
    Returns (exp, dialect, codes, invalid) as golden.bd.Blocks fields.
    """
    selection = methods.method(method)
    lib = library()
    x16 = x16.contiguous()
    lead = x16.shape[:-1] + (x16.shape[-1] // block,)
    exp = torch.empty(lead, dtype=torch.uint8)
    dialect = torch.empty(lead, dtype=torch.uint8)
    codes = torch.empty(lead + (block,), dtype=torch.uint8)
    invalid = torch.empty(lead, dtype=torch.uint8)
    nblocks = exp.numel()
    ptrs = [t.data_ptr() for t in (x16, exp, dialect, codes, invalid)]
    if selection.selection == "mse":
        def run(start, stop, threads):
            lib.bd_quantize_mse(ptrs[0] + 2 * block * start, stop - start, block, ptrs[1] + start,
                                ptrs[2] + start, ptrs[3] + block * start, ptrs[4] + start, threads)
    else:
        rounding = int(selection.stage1 == "round")

        def run(start, stop, threads):
            lib.bd_quantize_two_stage(ptrs[0] + 2 * block * start, stop - start, block, rounding,
                                      ptrs[1] + start, ptrs[2] + start, ptrs[3] + block * start,
                                      ptrs[4] + start, threads)
    if nblocks:
        _split(nblocks, run, block)
    return exp, dialect, codes, invalid.bool()


def float64_to_fp16_native(x: torch.Tensor) -> torch.Tensor:
    """SPEC 1's single rounding of a float64 CPU tensor to FP16, same shape."""
    lib = library()
    x = x.contiguous()
    out = torch.empty(x.shape, dtype=torch.float16)
    src, dst = x.data_ptr(), out.data_ptr()

    def run(start, stop, threads):
        lib.bd_float64_to_fp16(src + 8 * start, stop - start, dst + 2 * start, threads)
    if x.numel():
        _split(x.numel(), run)
    return out


FAKE_QUANTIZE_DTYPES = (torch.float32, torch.float64)                     # output types
FAKE_QUANTIZE_INPUTS = {torch.float32: 0, torch.float64: 1, torch.float16: 2}   # input types: x_kind


def fake_quantize_native(x: torch.Tensor, fmt: str, block: int | None, dtype: torch.dtype,
                         tensor_amax: float | None = None) -> torch.Tensor | None:
    """golden.baselines.fake_quantize in one pass over an FP16, float32 or float64 CPU tensor (..., K),
    K a multiple of `block` (None for fp16; 16 for nvfp4): the same bits as the reference, written
    in `dtype` (float32 or float64, both exact for these formats' values). The caller has checked
    the arguments. Returns None when the reference must decide: an input that is not finite after
    the format's input conversion (the reference raises the error), or an NVFP4 tensor whose FP32
    tensor scale underflows to zero. `tensor_amax` (nvfp4): a static amax, checked by the caller,
    used instead of the tensor's own.
    """
    lib = library()
    x = x.contiguous()
    out = torch.empty(x.shape, dtype=dtype)
    src, dst = x.data_ptr(), out.data_ptr()
    x_kind, out_double = FAKE_QUANTIZE_INPUTS[x.dtype], int(dtype == torch.float64)
    # Byte strides of one block (one element for fp16) in and out.
    width = 1 if block is None else block
    step_in, step_out = x.element_size() * width, out.element_size() * width
    nblocks = x.numel() // width
    if fmt == "nvfp4":
        def amax(start, stop, threads):
            found = ctypes.c_float()
            bad = lib.bd_abs_max_fp32(src + x.element_size() * start, x_kind, stop - start,
                                      ctypes.byref(found), threads)
            return bad, found.value
        partial = _split(x.numel(), amax)
        if sum(bad for bad, _ in partial):
            return None
        if tensor_amax is None:
            tensor_amax = max(value for _, value in partial)
            if tensor_amax == 0.0:
                return out.zero_()

        def run(start, stop, threads):
            return lib.bd_fake_nvfp4(src + step_in * start, x_kind, stop - start, tensor_amax,
                                     dst + step_out * start, out_double, threads)
    elif fmt == "fp16":
        def run(start, stop, threads):
            return lib.bd_fake_fp16(src + step_in * start, x_kind, stop - start, dst + step_out * start,
                                    out_double, threads)
    elif fmt in methods.BY_FORMAT:
        method = methods.BY_FORMAT[fmt].code

        def run(start, stop, threads):
            return lib.bd_fake_blockdialect(src + step_in * start, x_kind, stop - start, width, method,
                                            dst + step_out * start, out_double, threads)
    else:
        kernel = {"mxfp4": lib.bd_fake_mxfp4, "int4": lib.bd_fake_int4}[fmt]

        def run(start, stop, threads):
            return kernel(src + step_in * start, x_kind, stop - start, width, dst + step_out * start,
                          out_double, threads)
    if nblocks and sum(_split(nblocks, run, width)):
        return None
    return out


def dequantize_native(exp, dialect, codes, invalid=None) -> torch.Tensor:
    """SPEC 3 decode to float32 (..., K) on the CPU; blocks flagged in `invalid` give NaN when
    `invalid` is given."""
    lib = library()
    block = codes.shape[-1]
    exp, dialect, codes = exp.contiguous(), dialect.contiguous(), codes.contiguous()
    flags = exp if invalid is None else invalid.contiguous().to(torch.uint8)
    out = torch.empty(codes.shape[:-2] + (codes.shape[-2] * block,), dtype=torch.float32)
    ptrs = [t.data_ptr() for t in (exp, dialect, codes, flags, out)]
    nan_invalid = int(invalid is not None)

    def run(start, stop, threads):
        lib.bd_dequantize(ptrs[0] + start, ptrs[1] + start, ptrs[2] + block * start, ptrs[3] + start,
                          nan_invalid, stop - start, block, ptrs[4] + 4 * block * start, threads)
    if exp.numel():
        _split(exp.numel(), run, block)
    return out


def decode_window_native(exp, dialect, codes, top, lo: int, width: int) -> torch.Tensor:
    """golden.exact's window decode on the CPU: (rows, nb, B) float64, (-1)^s h 2^(lo + width - 1 -
    (top - E)) for the blocks whose top - E lies in [lo, lo + width), else 0."""
    rows, nblocks, block = codes.shape
    out = torch.empty(codes.shape, dtype=torch.float64)
    top = top.contiguous()
    library().bd_decode_window(exp.data_ptr(), dialect.data_ptr(), codes.data_ptr(), top.data_ptr(),
                               rows, nblocks, block, lo, width, out.data_ptr())
    return out
