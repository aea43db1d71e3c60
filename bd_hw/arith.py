"""Small combinational building blocks shared by the units: balanced sum, max and argmin trees,
and constant lane vectors."""
from __future__ import annotations

from amaranth.hdl import Const, Module, Mux
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .layouts import reject

__all__ = ["tree_sum", "tree_max", "tree_argmin", "pack_row", "MaxTree"]


def _tree(values, combine):
    values = list(values)
    if not values:
        raise ValueError("empty tree")
    while len(values) > 1:
        nxt = [combine(values[i], values[i + 1]) for i in range(0, len(values) - 1, 2)]
        if len(values) % 2:
            nxt.append(values[-1])
        values = nxt
    return values[0]


def tree_sum(values):
    """Sum of Amaranth values as a balanced adder tree (widths grow by one bit per level)."""
    return _tree(values, lambda a, b: a + b)


def tree_max(values):
    """Maximum of unsigned Amaranth values as a balanced tree of compare-and-select."""
    return _tree(values, lambda a, b: Mux(a >= b, a, b))


def tree_argmin(values):
    """Index of the smallest of unsigned Amaranth values, ties to the lowest index: a balanced tree
    that keeps the left (lower-index) candidate unless the right one is strictly smaller."""
    values = list(values)
    bits = max(1, (len(values) - 1).bit_length())

    def combine(left, right):
        take_right = right[0] < left[0]
        return Mux(take_right, right[0], left[0]), Mux(take_right, right[1], left[1])
    return _tree([(v, Const(i, bits)) for i, v in enumerate(values)], combine)[1]


def pack_row(values, width: int) -> Const:
    """A constant holding ``values`` as ``width``-bit lanes, element j at ``[width*j +: width]``."""
    return Const(sum(v << (width * j) for j, v in enumerate(values)), width * len(values))


class MaxTree(wiring.Component):
    """Maximum of ``count`` unsigned ``width``-bit values, a balanced comparator tree.

    Ports: ``values`` in, ``count`` x ``width`` bits (element k at ``[width*k +: width]``);
    ``max`` out, ``width`` bits.
    """

    def __init__(self, width: int, count: int):
        if width < 1:
            reject(self)
            raise ValueError(f"width must be at least 1, not {width!r}")
        if count < 1:
            reject(self)
            raise ValueError(f"count must be at least 1, not {count!r}")
        self.width, self.count = width, count
        super().__init__({
            "values": In(data.ArrayLayout(width, count)),
            "max": Out(width),
        })

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.max.eq(tree_max(self.values[k] for k in range(self.count)))
        return m
