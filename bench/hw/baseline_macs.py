"""MACs for the area comparison of the report (SPEC 6, SPEC 8; paper Table 5), in two framings.

**Block MAC** (:class:`BlockMac`): one exact integer block sum ``S = sum_k a_k * w_k`` over
``lanes`` element pairs per clock, the products added by a tree of two-operand adders
(``summation="tree"``, :func:`adder_tree`, the form FPGA carry chains suit) or by one carry-save
bit heap (``"heap"``, :func:`bench.hw.bit_heap.heap_sum`: every product bit into Wallace's
reduction, one carry-propagate adder at the end, the form ASIC dot products take). The shared
block scales are left out of every design alike (their cost is measured apart, in
``bench/hw/scale_paths.py``), so the comparison is of the part that grows with the lane count:
element decode, multipliers and the summation.

**Single MAC** (:class:`SingleMac`, the paper's framing): one lane and its accumulator,
``acc <= (clear ? 0 : acc) + a * w`` every clock, the accumulator as wide as the exact sum of one
block of :data:`SINGLE_MAC_BLOCK` products (the paper's MAC sums a block exactly before its scale is
applied). A BlockDialect single MAC decodes its own dialects: nothing is shared with other lanes.

Both frames register their inputs (``a``, ``w``, plus ``a_dialect``/``w_dialect`` for BlockDialect,
and ``clear`` for the single MAC) and their output (``sum``); the lane products come from
:class:`bench.hw.lane_products.ProductArray`, which builds each format in several constructions
(:data:`bench.hw.lane_products.CONSTRUCTIONS`); the report keeps the smallest of each format as its
baseline. The block MAC sums the products with one balanced adder tree (:func:`adder_tree`) and adds
the deferred +1 bits of ones'-complement constructions with a second tree (a popcount).

Formats: ``int4``/``int8`` two's complement; ``fp4`` E2M1 (the MXFP4/NVFP4 element) in half-units;
``fp6`` E2M3 (the MXFP6 element with 3 mantissa bits) in units of 1/8: inside a block-scaled format
the range of E3M2 buys nothing the shared scale does not already give, E2M3 is the more accurate of
the two and its fixed-point magnitude is 6 bits instead of E3M2's 9, so it is also the smaller
(conservative) baseline; ``bd`` BlockDialect codes (SPEC 6) in half-units.
"""
from __future__ import annotations

from amaranth.hdl import Module, Mux, Signal, Value, signed, unsigned
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from bd_hw.layouts import reject

from .bit_heap import signed_heap_sum
from .lane_products import (BLOCK_INPUT_BASES, CONSTRUCTIONS, ProductArray, check_construction,
                            element_value, max_abs_product, minifloat_value_units, product_inputs,
                            takes_block_inputs)

__all__ = ["adder_tree", "BlockMac", "SingleMac", "FORMATS", "SMALLEST", "SUMMATIONS", "make_mac",
           "construction_key", "split_construction",
           "reference_block_sum", "minifloat_value_units", "SINGLE_MAC_BLOCK", "sum_bits"]

FORMATS = tuple(CONSTRUCTIONS)
SUMMATIONS = ("tree", "heap")       # how a block MAC adds its lanes' products (see above)
HEAP_SUFFIX = "_heap"


def construction_key(construction: str, summation: str = "tree") -> str:
    """A block MAC's name in the report's construction tables: the lane construction, with
    ``_heap`` after it when a bit heap adds the products."""
    return construction + (HEAP_SUFFIX if summation == "heap" else "")


def split_construction(key: str) -> tuple[str, str]:
    """``(construction, summation)`` of a :func:`construction_key`."""
    if key.endswith(HEAP_SUFFIX):
        return key[:-len(HEAP_SUFFIX)], "heap"
    return key, "tree"


SINGLE_MAC_BLOCK = 32     # the paper's block size: the single MAC's accumulator sums 32 products
# The smallest block MAC of each format in two-input gates, at every block size, as its
# construction_key (reports/synth/report.md, "MACs: every construction"; the report finds the
# smallest of each framing from the figures, this copy chooses what a default synthesis run and the
# scale-path units build, and tests/bench/test_bench_baseline_macs.py checks it against the
# committed report's rows). The bit heap is the smaller summation in every format.
# The single MAC's smallest can differ: in one lane ABC folds decoder_lut's per-block formatbook
# row into the lane's selection, which anf_lut's per-block coefficients do not allow.
SMALLEST = {"bd": "anf_lut_heap", "int4": "baugh_wooley_heap", "fp4": "shift_heap",
            "fp6": "shift_heap", "int8": "booth_heap"}


def adder_tree(m: Module, terms, name: str = "tree"):
    """Sum ``terms`` (Amaranth values) with a balanced binary tree of two-input adders.

    Each level adds neighbouring pairs into a named signal one bit wider than its widest operand,
    so every sum is exact. The same builder is used by every MAC in this module.
    """
    level = list(terms)
    if not level:
        raise ValueError("terms must not be empty")
    depth = 0
    while len(level) > 1:
        nxt = []
        for j in range(0, len(level) - 1, 2):
            x, y = level[j], level[j + 1]
            shape_x, shape_y = x.shape(), y.shape()
            is_signed = shape_x.signed or shape_y.signed
            width = max(shape_x.width + (is_signed and not shape_x.signed),
                        shape_y.width + (is_signed and not shape_y.signed)) + 1
            s = Signal(signed(width) if is_signed else unsigned(width), name=f"{name}_l{depth}_{j // 2}")
            m.d.comb += s.eq(x + y)
            nxt.append(s)
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
        depth += 1
    return level[0]


def _check_lanes(lanes, owner=None) -> int:
    if isinstance(lanes, bool) or not isinstance(lanes, int) or lanes < 1:
        reject(owner)
        raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
    return lanes


def sum_bits(fmt: str, count: int) -> int:
    """Signed width of an exact sum of ``count`` products of ``fmt``."""
    return (max_abs_product(fmt) * count).bit_length() + 1


class _MacFrame(wiring.Component):
    """Ports and input registers shared by both frames."""

    def __init__(self, fmt: str, construction: str, lanes: int, count: int, extra: dict,
                 block_values_in: bool = False, summation: str = "tree"):
        if summation not in SUMMATIONS:
            reject(self)
            raise ValueError(f"summation must be one of {SUMMATIONS}, not {summation!r}")
        self.summation = summation
        check_construction(fmt, construction, self)
        self.lanes = _check_lanes(lanes, self)
        if block_values_in and not (fmt == "bd" and takes_block_inputs(construction)):
            reject(self)
            raise ValueError("block_values_in needs a bd construction with a per-block part "
                             f"({', '.join(BLOCK_INPUT_BASES)}), not {fmt} {construction!r}")
        self.fmt, self.construction, self.block_values_in = fmt, construction, block_values_in
        self.sum_shape = signed(sum_bits(fmt, count))     # exact for ``count`` products
        super().__init__(product_inputs(fmt, lanes, block_values_in, construction) | extra
                         | {"sum": Out(self.sum_shape)})

    def _registered_products(self, m: Module) -> ProductArray:
        """The product array, its inputs the frame's, registered."""
        m.submodules.products = arr = ProductArray(self.fmt, self.construction, self.lanes,
                                                   self.block_values_in)
        for name in product_inputs(self.fmt, self.lanes, self.block_values_in, self.construction):
            port = Value.cast(getattr(self, name))
            reg = Signal(len(port), name=f"{name}_reg")
            m.d.sync += reg.eq(port)
            m.d.comb += Value.cast(getattr(arr, name)).eq(reg)
        return arr


class BlockMac(_MacFrame):
    """``lanes``-lane block dot product of ``fmt`` built as ``construction``, its products added
    as ``summation`` says (:data:`SUMMATIONS`); latency 2."""

    def __init__(self, fmt: str, construction: str, lanes: int = 32, summation: str = "tree"):
        super().__init__(fmt, construction, lanes, lanes, {}, summation=summation)

    def elaborate(self, platform):
        m = Module()
        arr = self._registered_products(m)
        if self.summation == "heap":
            carries = [(arr.carries[k], 0) for k in range(self.lanes)] if arr.defers else []
            total = signed_heap_sum(m, [arr.products[k] for k in range(self.lanes)], len(self.sum),
                                    carries)
        else:
            total = adder_tree(m, [arr.products[k] for k in range(self.lanes)])
            if arr.defers:
                total = total + adder_tree(m, list(arr.carries), name="carries")
        m.d.sync += self.sum.eq(total)
        return m


class SingleMac(_MacFrame):
    """One lane of ``fmt`` built as ``construction`` and its accumulator (the paper's framing).

    Ports: ``a``, ``w`` (and dialects), ``clear`` in; ``sum`` out, signed :func:`sum_bits`
    (``fmt``, :data:`SINGLE_MAC_BLOCK`). Each clock ``acc <= (clear ? 0 : acc) + product`` of the
    inputs registered the clock before; ``sum`` is ``acc``. ``summation="heap"`` adds the product's
    bits, its deferred +1 and the accumulator's bits in one carry-save bit heap (the fused
    multiply-accumulate form) instead of two-operand adders.
    """

    def __init__(self, fmt: str, construction: str, block_values_in: bool = False,
                 summation: str = "tree"):
        super().__init__(fmt, construction, 1, SINGLE_MAC_BLOCK, {"clear": In(1)}, block_values_in,
                         summation)

    def elaborate(self, platform):
        m = Module()
        arr = self._registered_products(m)
        clear = Signal(name="clear_reg")
        m.d.sync += clear.eq(self.clear)
        base = Signal(self.sum_shape, name="base")
        m.d.comb += base.eq(Mux(clear, 0, self.sum))
        if self.summation == "heap":
            total = signed_heap_sum(m, [arr.products[0], base], len(self.sum),
                                    [(arr.carries[0], 0)])
        else:
            total = base + arr.products[0] + arr.carries[0]
        m.d.sync += self.sum.eq(total)
        return m


def make_mac(fmt: str, lanes: int = 32, construction: str | None = None) -> BlockMac:
    """The block MAC of format ``fmt`` (one of :data:`FORMATS`), built as ``construction`` (default:
    the format's first construction)."""
    if fmt not in CONSTRUCTIONS:
        raise ValueError(f"fmt must be one of {sorted(CONSTRUCTIONS)}, not {fmt!r}")
    construction = construction or next(iter(CONSTRUCTIONS[fmt]))
    check_construction(fmt, construction)
    _check_lanes(lanes)   # before construction, so a bad call leaves no unused component behind
    return BlockMac(fmt, construction, lanes)


def reference_block_sum(fmt: str, a_codes, w_codes, a_dialect: int = 0, w_dialect: int = 0) -> int:
    """Python reference of the block sum of ``fmt`` for lists of element codes (ints), in the
    units of the hardware (half-units squared for ``bd`` and ``fp4``, 1/64 for ``fp6``)."""
    if fmt not in CONSTRUCTIONS:
        raise ValueError(f"fmt must be one of {sorted(CONSTRUCTIONS)}, not {fmt!r}")
    return sum(element_value(fmt, a, a_dialect) * element_value(fmt, w, w_dialect)
               for a, w in zip(a_codes, w_codes))
