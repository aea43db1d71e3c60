"""Causal attention in float64 on the CPU for the report's forward passes (golden/report/perplexity.py).

Scores, softmax, the probabilities' optional fake quantization (golden/csrc's fake-quantize
kernels, row by row) and the product with V in one pass over tiles that stay in cache, only against
the keys up to each query; the C is ``attention.c`` beside this file, built by golden.native with
golden/csrc's fake quantization into a library of its own. Every output element is one fixed chain
of FMAs (AVX2 and FMA intrinsics, whatever the CPU picks for the rest), so the bits depend on neither
the thread count nor the batch nor the machine. Measured on 30 layers of SmolLM2's attention (4
windows of 512 tokens, 2 threads): 0.6 s against 1.3 s for torch's float64
scaled_dot_product_attention; quantized (BlockDialect, B = 32) 1.2 s, of which the probabilities'
quantization is about half.

It has no bit-exact reference (its exp and sums are its own): tests/golden/test_golden_attention.py
holds it to torch's attention and to an mpmath softmax. Anything it does not serve returns None and
the caller runs torch's attention.
"""
from __future__ import annotations

import ctypes
from pathlib import Path
from typing import NamedTuple

import torch

from golden.methods import BY_FORMAT
from golden.native import CSRC, Library, native_for
from golden.spec import BLOCK_SIZES

__all__ = ["ATTENTION_PROB_FORMATS", "Attention", "attention_native"]


def _declare(lib: ctypes.CDLL) -> None:
    p, i64, i32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int
    lib.bd_attention_f64.argtypes = [p, p, p, p, p, p, i64, i32, i32, i64, i32, ctypes.c_double, i32, i32, p, p, i32]
    lib.bd_attention_f64.restype = i64


_ATTENTION = Library("bd_attention", [Path(__file__).resolve().with_name("attention.c"), CSRC / "fake_quant.c"],
                     _declare)


# Formats bd_attention_f64 quantizes the probabilities to, by its prob_fmt code (golden.baselines names).
ATTENTION_PROB_FORMATS = {**{fmt: m.code for fmt, m in BY_FORMAT.items()}, "mxfp4": 3, "int4": 4, "fp16": 5}


class Attention(NamedTuple):
    output: torch.Tensor                # (batch, length, heads, dim)
    probabilities: torch.Tensor | None  # (batch, heads, length, length) when asked for


def attention_native(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float,
                     prob_fmt: str | None = None, block: int | None = None,
                     with_probabilities: bool = False) -> Attention | None:
    """Causal attention in float64 on the CPU: softmax(query key^T * scaling) value, each query
    attending to the keys up to its own position, heads of query (batch, heads, length, dim) sharing
    the key and value heads (batch, kv_heads, length, dim) in groups, as grouped-query attention does.
    With `prob_fmt` (a key of ATTENTION_PROB_FORMATS) the probabilities are fake-quantized in blocks of
    `block` along the key dimension before the product with value, as golden.baselines.fake_quantize
    would (the blocks past a query's position are zeros and stay zeros).

    Every output element is one chain of FMAs in index order and every softmax one fixed reduction
    (exp to within an ulp or two): the same bits for any thread count, batch or AVX2 CPU. Returns
    None when this kernel does not serve the call (not float64 CPU tensors, the native path not
    selected, no AVX2 and FMA, dim not a multiple of 8, a format or block it does not take, length
    not a multiple of the block, or a non-finite score): the caller runs its reference instead.
    """
    if not (native_for(query, key, value) and _ATTENTION.get() is not None
            and query.dtype == key.dtype == value.dtype == torch.float64
            and query.dim() == key.dim() == value.dim() == 4 and key.shape == value.shape
            and query.shape[0] == key.shape[0] and query.shape[2:] == key.shape[2:]
            and key.shape[1] > 0 and query.shape[1] % key.shape[1] == 0):
        return None
    if prob_fmt is None:
        code, width = -1, 1
    elif prob_fmt in ATTENTION_PROB_FORMATS and (prob_fmt == "fp16" or block in BLOCK_SIZES):
        code, width = ATTENTION_PROB_FORMATS[prob_fmt], 1 if prob_fmt == "fp16" else block
    else:
        return None
    batch, heads, length, dim = query.shape
    if length == 0:
        return None
    operands = [t if t.stride(-1) == 1 else t.contiguous() for t in (query, key, value)]
    strides = [(ctypes.c_int64 * 3)(*t.stride()[:3]) for t in operands]
    out = torch.empty(batch, length, heads, dim, dtype=torch.float64)
    probs = torch.zeros(batch, heads, length, length, dtype=torch.float64) if with_probabilities else None
    status = _ATTENTION.get().bd_attention_f64(
        operands[0].data_ptr(), strides[0], operands[1].data_ptr(), strides[1], operands[2].data_ptr(),
        strides[2], batch, heads, key.shape[1], length, dim, float(scaling), code, width, out.data_ptr(),
        None if probs is None else probs.data_ptr(), torch.get_num_threads())
    return Attention(out, probs) if status == 0 else None
