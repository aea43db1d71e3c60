"""Benchmark-only hardware, registered like the product's units (:class:`bd_hw.units.Unit`).

:data:`BENCH_UNITS` lists the comparison hardware by the names the benchmark and synthesis reports
use; :data:`ALL_UNITS` is the product's registry followed by them, for command lines that accept
both (``--units bd_quantizer,bd_mse_quantizer``).

=========================== ======== ======================================================
name                        kind     builder
=========================== ======== ======================================================
``bd_mse_quantizer``        quantizer ``BDMseQuantizer(B)``: bd_quantizer's frame, MSE selection
``sel_two_stage``           selector ``RegisteredSelector("two_stage", B)`` (rounding stage 1)
``sel_two_stage_trunc``     selector ``RegisteredSelector("two_stage_trunc", B)``
``sel_mse``                 selector ``RegisteredSelector("mse", B)`` (16 dialects in parallel)
``sel_mse_shared``          selector ``RegisteredSelector("mse_shared", B)`` (shared terms)
``bd_mse_shared_quantizer`` quantizer ``BDSharedMseQuantizer(B)``: the frame, shared-term MSE
``mac_<fmt>_<construction>`` mac     ``BlockMac(fmt, construction, B)``: block MACs of BlockDialect
                            and the baselines, every construction of ``bench.hw.lane_products``
``mac_<fmt>_<c>_heap``       mac      the same, the products added by one carry-save bit heap
                            (``BlockMac(fmt, construction, B, "heap")``)
``mac1_<fmt>_<construction>`` mac    ``SingleMac(fmt, construction)``: one lane and its accumulator
                            (the paper's framing), built at B = 32 only
``mac1_<fmt>_<c>_heap``      mac      the same, product and accumulator added by one bit heap
``mac1_bd_<c>_lane``        mac      the same with the block's decoded index 5-7 columns as inputs
                            (``shared*``, ``sigshift_defer``, ``blockprod_defer``)
``scale_bd``, ``scale_mxfp4``, scale  ``ScaleDot(fmt, B)``: block dot product and its scale path
``scale_nvfp4``, ``scale_nvfp4_block`` (``bench/hw/scale_paths.py``; ``_block``: no tensor scale)
``bd_decoder_anf``          decoder  ``BDDecoder(B, decode="anf")``: the decoder's other construction
``bd_dot_anf``,             dot      ``BDDot(B, decode="anf")`` and at every cut point: ``bd_dot`` and
``bd_dot_fast_anf``                  ``bd_dot_fast`` with it (B = 32)
``bd_linear_fast_n<N>``     linear   ``BDLinear(LinearParams.fastest(B, N))`` for N = 1, 2, 8, 16 (the
                            product's registry has N = 4): how the engine's cost grows with N
``bd_linear_fast_dsp_n<N>`` linear   the same with ``products="dsp"``, and ``_packed_``
``bd_linear_fast_packed_n<N>``       ``products="dsp_packed"``, for N = 4 and 8: LUT / DSP / packed
=========================== ======== ======================================================

The ``_anf`` builds and the engine builds are measurements of the product's generator at other parameters (the scaling and
products tables of ``reports/synth/report.md``), not comparison hardware; nothing emits them.
"""
from __future__ import annotations

from bd_hw.params import DotParams, LinearParams
from bd_hw.units import UNITS, LinearUnit, Unit, fast_engine

from .baseline_macs import SINGLE_MAC_BLOCK
from .lane_products import CONSTRUCTIONS, takes_block_inputs

__all__ = ["BENCH_UNITS", "ALL_UNITS", "ENGINE_LANES", "ENGINE_PRODUCTS", "engine_unit_name"]

#: Lane counts of the engine-scaling table (SPEC 11 [revised]) and the products compared.
ENGINE_LANES = (1, 2, 4, 8, 16)
ENGINE_PRODUCTS = ("lut", "dsp", "dsp_packed")
ENGINE_PRODUCTS_LANES = (4, 8)


def engine_unit_name(N: int, products: str = "lut") -> str:
    """Unit of the engine at ``N`` lanes, the deepest pipeline and ``products``
    (``bd_linear_fast_n4`` is the product's own)."""
    infix = {"lut": "", "dsp": "_dsp", "dsp_packed": "_packed"}[products]
    return f"bd_linear_fast{infix}_n{N}"


def _linear(B, **params):
    from bd_hw.linear import BDLinear
    return BDLinear(B, **params)


def _engines():
    for N in ENGINE_LANES:
        for products in ENGINE_PRODUCTS:
            name = engine_unit_name(N, products)
            if name in UNITS or (products != "lut" and N not in ENGINE_PRODUCTS_LANES):
                continue
            params = fast_engine(N) | ({} if products == "lut" else {"products": products})
            yield LinearUnit(name, "linear", _linear, params, blocks=(32,), parameters=LinearParams,
                             summary=f"matrix-vector engine, {N} rows side by side, every pipeline "
                                     f"cut point taken, products={products!r}")


def _mse_quantizer(B):
    from .mse_selector import BDMseQuantizer
    return BDMseQuantizer(B)


def _mse_shared_quantizer(B):
    from .mse_shared import BDSharedMseQuantizer
    return BDSharedMseQuantizer(B)


def _decoder(B, **params):
    from bd_hw.decoder import BDDecoder
    return BDDecoder(B, **params)


def _dot(B, **params):
    from bd_hw.dot import BDDot
    return BDDot(B, **params)


def _selector(B, method):
    from .selectors import RegisteredSelector
    return RegisteredSelector(method, B)


def _scale_dot(B, fmt, tensor_scale=True):
    from .scale_paths import ScaleDot
    return ScaleDot(fmt, B, tensor_scale)


def _mac(B, fmt, construction, summation="tree"):
    from .baseline_macs import BlockMac
    return BlockMac(fmt, construction, B, summation)


def _single_mac(B, fmt, construction, block_values_in=False, summation="tree"):
    from .baseline_macs import SingleMac
    return SingleMac(fmt, construction, block_values_in, summation)


BENCH_UNITS: dict[str, Unit] = {u.name: u for u in (
    Unit("bd_mse_quantizer", "quantizer", _mse_quantizer,
         summary="bd_quantizer's frame with the exhaustive MSE selection (SPEC 5, method mse)"),
    Unit("sel_two_stage", "selector", _selector, {"method": "two_stage"},
         summary="two-stage dialect selector, rounding stage 1, registered in and out"),
    Unit("sel_two_stage_trunc", "selector", _selector, {"method": "two_stage_trunc"},
         summary="two-stage dialect selector, truncating stage 1, registered in and out"),
    Unit("sel_mse", "selector", _selector, {"method": "mse"},
         summary="MSE dialect selector (16 dialects in parallel), registered in and out"),
    Unit("sel_mse_shared", "selector", _selector, {"method": "mse_shared"},
         summary="MSE dialect selector from shared terms (bench/hw/mse_shared.py), registered in "
                 "and out"),
    Unit("bd_mse_shared_quantizer", "quantizer", _mse_shared_quantizer,
         summary="bd_quantizer's frame with the shared-term MSE selection (SPEC 5, method mse)"),
    *(Unit(f"mac_{fmt}_{c}", "mac", _mac, {"fmt": fmt, "construction": c},
           summary=f"{fmt} block MAC: {title}")
      for fmt, names in CONSTRUCTIONS.items() for c, title in names.items()),
    *(Unit(f"mac_{fmt}_{c}_heap", "mac", _mac, {"fmt": fmt, "construction": c, "summation": "heap"},
           summary=f"{fmt} block MAC, products added by a carry-save bit heap: {title}")
      for fmt, names in CONSTRUCTIONS.items() for c, title in names.items()),
    *(Unit(f"mac1_{fmt}_{c}", "mac", _single_mac, {"fmt": fmt, "construction": c},
           blocks=(SINGLE_MAC_BLOCK,), summary=f"{fmt} single MAC (one lane, accumulator): {title}")
      for fmt, names in CONSTRUCTIONS.items() for c, title in names.items()),
    *(Unit(f"mac1_{fmt}_{c}_heap", "mac", _single_mac,
           {"fmt": fmt, "construction": c, "summation": "heap"}, blocks=(SINGLE_MAC_BLOCK,),
           summary=f"{fmt} single MAC, product and accumulator added by one carry-save bit heap: "
                   f"{title}")
      for fmt, names in CONSTRUCTIONS.items() for c, title in names.items()),
    *(Unit(f"mac1_bd_{c}_lane", "mac", _single_mac,
           {"fmt": "bd", "construction": c, "block_values_in": True}, blocks=(SINGLE_MAC_BLOCK,),
           summary=f"bd single MAC, the block's decoded index 5-7 columns as inputs (decoded once "
                   f"per block outside): {title}")
      for c, title in CONSTRUCTIONS["bd"].items() if takes_block_inputs(c)),
    Unit("scale_bd", "scale", _scale_dot, {"fmt": "bd"},
         summary="BlockDialect block dot product with its 5-bit exponent add"),
    Unit("scale_mxfp4", "scale", _scale_dot, {"fmt": "mxfp4"}, blocks=(16, 32),
         summary="MXFP4 block dot product with its E8M0 scale add"),
    Unit("scale_nvfp4", "scale", _scale_dot, {"fmt": "nvfp4"}, blocks=(16,),
         summary="NVFP4 block dot product with its E4M3 x E4M3 scale product and the FP32 "
                 "tensor-scale product"),
    Unit("scale_nvfp4_block", "scale", _scale_dot, {"fmt": "nvfp4", "tensor_scale": False},
         blocks=(16,), summary="scale_nvfp4 without the tensor-scale multiplier (its per-block "
                               "part alone)"),
    Unit("bd_decoder_anf", "decoder", _decoder, {"decode": "anf"}, blocks=(32,),
         summary="bd_decoder with decode='anf' (per-block XOR coefficients, 2:1 choice per lane)"),
    Unit("bd_dot_anf", "dot", _dot, {"decode": "anf"}, blocks=(32,), parameters=DotParams,
         summary="bd_dot with decode='anf'"),
    Unit("bd_dot_fast_anf", "dot", _dot, {"pipeline": len(DotParams.CUT_POINTS), "decode": "anf"},
         blocks=(32,), parameters=DotParams, summary="bd_dot_fast with decode='anf'"),
    *_engines(),
)}

ALL_UNITS: dict[str, Unit] = {**UNITS, **BENCH_UNITS}
