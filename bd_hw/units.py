"""The registry of hardware units: every place that lists, builds, emits or simulates units reads it.

A :class:`Unit` is a name, a builder with its generator parameters, the block sizes emitted to
``rtl/``, and what follows from them: the Verilog module and file name (SPEC 9 [revised]: the top
module of ``rtl/<name>_b<B>.v`` is ``<name>_b<B>``, its submodules ``<name>_b<B>.<path>``), the
component and its latency. :data:`UNITS` holds the units that ``make verilog`` emits:

==================== =============== ========================================= ===============
name                 block sizes     builder and parameters                    latency (edges)
==================== =============== ========================================= ===============
``bd_decoder``       16, 32, 64      ``BDDecoder(B)``                          combinational
``bd_quantizer``     16, 32, 64      ``BDQuantizer(B, stage1="round")``        4
``bd_quantizer_trunc`` 32            ``BDQuantizer(B, stage1="trunc")``        4
``bd_dot``           16, 32, 64      ``BDDot(B)``                              6
``bd_quantizer_fast`` 32             ``BDQuantizer(B, pipeline=10)``           13
``bd_dot_fast``      32              ``BDDot(B, pipeline=6)``                  10
``bd_dot_fp32``      32              ``BDDot(B, accumulate="fp32")``           5
``bd_dot_fp16``      32              ``BDDot(B, accumulate="fp16")``           6
``bd_dot_fp32_fast`` 32              ``BDDot(B, accumulate="fp32", pipeline=2)`` 7
``bd_dot_fp16_fast`` 32              ``BDDot(B, accumulate="fp16", pipeline=2)`` 8
``bd_linear_n4``     32              ``BDLinear(B, N=4)``                      8
``bd_linear_n8``     32              ``BDLinear(B, N=8)``                      8
``bd_linear_n2``     16              ``BDLinear(B, N=2)``                      8
``bd_linear_fast_n4`` 32             ``BDLinear(LinearParams.fastest(B, N=4))`` 12
``bd_linear_n16``    32 (on request) ``BDLinear(B, N=16)``                     8
==================== =============== ========================================= ===============

A unit marked ``on_request`` (``bd_linear_n16``, 2.2 MB of Verilog and twice the LUTs of the
N = 8 engine) is registered, built, tested and proved like the others, but emitted only when named
(``python -m bd_hw verilog --units bd_linear_n16 --out DIR``): ``make verilog``, ``rtl/`` and the
default simulation run leave it out (``python -m tb.runner --units bd_linear_n16`` simulates it).

The matrix-vector engine ``bd_linear`` (SPEC 11) is named by its lane count too: the registry keys
``<base>_n<N>`` (``bd_linear_n4``, ``bd_linear_fast_n4``) emit ``rtl/<base>_b<B>_n<N>.v`` with top
module ``<base>_b<B>_n<N>`` (:class:`LinearUnit`); its latency counts from a row group's final
weight beat to its result beat (its vector turnaround, 5 and 14, is ``BDLinear.vector_latency``).

The ``_fast`` units are the deepest setting of the ``pipeline`` parameter (every cut point taken,
the highest clock rate; ``reports/synth/timing.md``; ``bd_dot_fast``'s sixth cut and
``bd_quantizer_fast``'s ninth, ``"ready"``, are skid buffers that add no stage but hold one result
more, ``BDDot.capacity`` and ``BDQuantizer.capacity``; ``bd_dot_fast``'s fifth, ``"negatives"``, adds
no stage either; the engine's fastest build is :meth:`LinearParams.fastest`, which also keeps one
copy of the activation buffer per lane); the others use the default, 0. The
``bd_dot_fp32`` / ``bd_dot_fp16`` units accumulate as SPEC 6.1's ``"fp32"`` / ``"fp16"`` modes.

Benchmark-only hardware (baseline MACs, the MSE selector and quantizer) is registered the same way
in ``bench/hw/units.py``; :func:`parse_units` and :func:`parse_blocks` are the argument types of
every command line that takes ``--units a,b`` and ``--blocks 16,32``.
"""
from __future__ import annotations

import argparse
import gc
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from amaranth.hdl import UnusedElaboratable
from amaranth.lib import wiring

from golden.spec import BLOCK_SIZES, check_block_size

from .params import DecoderParams, DotParams, LinearParams, Params, QuantizerParams

__all__ = ["Unit", "LinearUnit", "UNITS", "fast_engine", "get", "build", "emitted", "parse_units", "parse_blocks"]


@dataclass(frozen=True, eq=False)
class Unit:
    """One hardware unit of the registry.

    ``kind`` says which SPEC 9 ports it has and so which testbench drives it (``decoder``,
    ``quantizer`` or ``dot``; benchmark units also use ``selector`` and ``mac``). ``builder`` is
    called as ``builder(B, **params)`` and validates ``B`` itself. ``parameters``, if given, is the
    unit's parameter class (:mod:`bd_hw.params`), called the same way: what follows from the
    parameters (the latency) is then read from it without building hardware.
    """

    name: str
    kind: str
    builder: Callable[..., wiring.Component]
    params: Mapping[str, object] = field(default_factory=dict)
    blocks: tuple[int, ...] = BLOCK_SIZES
    summary: str = ""
    parameters: Callable[..., Params] | None = None
    on_request: bool = False

    def __post_init__(self):
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))

    def module(self, B: int) -> str:
        """Verilog top module at block size ``B``, e.g. ``bd_quantizer_trunc_b32``."""
        return f"{self.name}_b{B}"

    def file_name(self, B: int) -> str:
        return f"{self.module(B)}.v"

    def build(self, B: int) -> wiring.Component:
        """A fresh component (Amaranth elaborates a component once)."""
        return self.builder(B, **self.params)

    def parameters_at(self, B: int) -> Params | None:
        """The unit's parameter value at block size ``B`` (None for a unit without a class)."""
        return None if self.parameters is None else self.parameters(B, **self.params)

    def latency(self, B: int) -> int | None:
        """Clock edges from accepting a beat to transferring its result; None if combinational."""
        if self.parameters is not None:
            return self.parameters_at(B).latency
        # A unit without a parameter class is built to be asked, and dropped unelaborated at once.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UnusedElaboratable)
            component = self.build(B)
            latency = getattr(component, "latency", None)
            del component
            gc.collect()
        return latency

    @property
    def clocked(self) -> bool:
        return self.kind != "decoder"

    def verilog(self, B: int) -> str:
        """Verilog text: top module :meth:`module`, submodules prefixed by it, no source paths."""
        from amaranth.back import verilog
        return verilog.convert(self.build(B), name=self.module(B), emit_src=False)


@dataclass(frozen=True, eq=False)
class LinearUnit(Unit):
    """``bd_linear`` at ``params["N"]`` lanes, registered as ``<base>_n<N>``: file and top module
    ``<base>_b<B>_n<N>`` (SPEC 11; ``bd_linear_b32_n4``, ``bd_linear_fast_b32_n4``)."""

    def __post_init__(self):
        super().__post_init__()
        if not self.name.endswith(self._lanes):
            raise ValueError(f"name must end in {self._lanes} (the lane count), not {self.name!r}")

    @property
    def _lanes(self) -> str:
        return f"_n{self.params['N']}"

    def module(self, B: int) -> str:
        return f"{self.name.removesuffix(self._lanes)}_b{B}{self._lanes}"


def fast_engine(N: int) -> dict:
    """Generator parameters of the engine's fastest build at ``N`` lanes
    (:meth:`LinearParams.fastest`), as a registry entry gives them."""
    p = LinearParams.fastest(N=N)
    return {"N": N, "pipeline": p.pipeline, "activation_copies": p.activation_copies}


def _decoder(B):
    from .decoder import BDDecoder
    return BDDecoder(B)


def _quantizer(B, **params):
    from .quantizer import BDQuantizer
    return BDQuantizer(B, **params)


def _dot(B, **params):
    from .dot import BDDot
    return BDDot(B, **params)


def _linear(B, **params):
    from .linear import BDLinear
    return BDLinear(B, **params)


UNITS: dict[str, Unit] = {u.name: u for u in (
    Unit("bd_decoder", "decoder", _decoder, parameters=DecoderParams,
         summary="SPEC 6 decode of all lanes (combinational)"),
    Unit("bd_quantizer", "quantizer", _quantizer, {"stage1": "round"}, parameters=QuantizerParams,
         summary="online two-stage quantizer, rounding stage 1 (SPEC 4, method two_stage)"),
    Unit("bd_quantizer_trunc", "quantizer", _quantizer, {"stage1": "trunc"}, blocks=(32,),
         parameters=QuantizerParams,
         summary="online two-stage quantizer, truncating stage 1 (SPEC 4.2, method two_stage_trunc)"),
    Unit("bd_dot", "dot", _dot, parameters=DotParams,
         summary="block dot product, exact accumulation, one FP32 rounding (SPEC 6)"),
    Unit("bd_quantizer_fast", "quantizer", _quantizer, {"stage1": "round", "pipeline": 10},
         blocks=(32,), parameters=QuantizerParams,
         summary="bd_quantizer with every pipeline cut point taken (latency 13)"),
    Unit("bd_dot_fast", "dot", _dot, {"pipeline": len(DotParams.CUT_POINTS)}, blocks=(32,),
         parameters=DotParams,
         summary="bd_dot with every pipeline cut point taken (latency 10)"),
    Unit("bd_dot_fp32", "dot", _dot, {"accumulate": "fp32"}, blocks=(32,), parameters=DotParams,
         summary="block dot product, block values added in FP32 in order (SPEC 6.1, latency 5)"),
    Unit("bd_dot_fp16", "dot", _dot, {"accumulate": "fp16"}, blocks=(32,), parameters=DotParams,
         summary="block dot product, block values added in FP16 in order, the paper's "
                 "(SPEC 6.1, latency 6)"),
    Unit("bd_dot_fp32_fast", "dot", _dot, {"accumulate": "fp32", "pipeline": 2}, blocks=(32,),
         parameters=DotParams, summary="bd_dot_fp32 with every pipeline cut point taken (latency 7)"),
    Unit("bd_dot_fp16_fast", "dot", _dot, {"accumulate": "fp16", "pipeline": 2}, blocks=(32,),
         parameters=DotParams, summary="bd_dot_fp16 with every pipeline cut point taken (latency 8)"),
    LinearUnit("bd_linear_n4", "linear", _linear, {"N": 4}, blocks=(32,), parameters=LinearParams,
               summary="matrix-vector engine, 4 rows side by side, AXI4-Stream ports (SPEC 11)"),
    LinearUnit("bd_linear_n8", "linear", _linear, {"N": 8}, blocks=(32,), parameters=LinearParams,
               summary="matrix-vector engine, 8 rows side by side, AXI4-Stream ports (SPEC 11)"),
    LinearUnit("bd_linear_n2", "linear", _linear, {"N": 2}, blocks=(16,), parameters=LinearParams,
               summary="matrix-vector engine, 2 rows side by side, AXI4-Stream ports (SPEC 11)"),
    LinearUnit("bd_linear_fast_n4", "linear", _linear, fast_engine(4), blocks=(32,),
               parameters=LinearParams,
               summary="bd_linear_n4 with every pipeline cut point taken in its quantizer and dot "
                       "units (latency 12)"),
    LinearUnit("bd_linear_n16", "linear", _linear, {"N": 16}, blocks=(32,), parameters=LinearParams,
               on_request=True,
               summary="matrix-vector engine, 16 rows side by side, AXI4-Stream ports (SPEC 11)"),
)}


def get(name: str, registry: Mapping[str, Unit] = UNITS) -> Unit:
    """The unit called ``name``; ``ValueError`` naming the argument otherwise."""
    try:
        return registry[name]
    except KeyError:
        raise ValueError(f"unit must be one of {', '.join(registry)}, got {name!r}") from None


def build(name: str, B: int) -> wiring.Component:
    """``get(name).build(B)``: the component of a registered unit at block size ``B``."""
    return get(name).build(B)


def emitted(units: Iterable[str] | None = None, blocks: Iterable[int] | None = None,
            registry: Mapping[str, Unit] = UNITS, *, on_request: bool = False
            ) -> list[tuple[Unit, int]]:
    """(unit, B) of every file to emit, in registry order, restricted to ``units`` and ``blocks``;
    units marked ``on_request`` only with ``on_request``."""
    names = list(registry) if units is None else [get(n, registry).name for n in units]
    sizes = BLOCK_SIZES if blocks is None else tuple(check_block_size(b, "blocks") for b in blocks)
    return [(registry[n], B) for n in names for B in registry[n].blocks
            if B in sizes and (on_request or not registry[n].on_request)]


def _csv(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def parse_units(registry: Mapping[str, Unit] = UNITS) -> Callable[[str], list[str]]:
    """argparse type of ``--units a,b``: names from ``registry``, in the order given."""
    def parse(text: str) -> list[str]:
        names = _csv(text)
        bad = [n for n in names if n not in registry]
        if bad:
            raise argparse.ArgumentTypeError(
                f"unknown unit {', '.join(bad)}; choose from {','.join(registry)}")
        return names
    return parse


def parse_blocks(text: str) -> list[int]:
    """argparse type of ``--blocks 16,32``: block sizes of SPEC 3."""
    try:
        return [check_block_size(int(t), "blocks") for t in _csv(text)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"choose block sizes from {','.join(map(str, BLOCK_SIZES))}, got {text!r}") from exc
