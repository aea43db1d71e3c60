"""Small combinational building blocks shared by the units: balanced max and sum trees."""
from __future__ import annotations

from amaranth.hdl import Module, Mux
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .layouts import reject

__all__ = ["tree_sum", "tree_max", "MaxTree"]


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
