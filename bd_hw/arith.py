"""Small combinational building blocks shared by the units: balanced sum, max and argmin trees,
a leading-zero count, and constant lane vectors.

Given a module ``m``, every node of a tree is a named Signal driven once (``<name>_l<level>_<i>``),
as ``amaranth/lib/fifo.py`` names its intermediates: a node used twice (a maximum tree's
compare-and-select uses both operands twice) is then a wire in the Verilog, not a copy of its whole
subtree, which otherwise doubles at every level. Without ``m`` the trees are plain expressions
(for callers that build a single small tree).
"""
from __future__ import annotations

from dataclasses import dataclass

from amaranth.hdl import Cat, Const, Module, Mux, Signal
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .params import Params, ParametrisedComponent, check_count

__all__ = ["tree_sum", "tree_max", "tree_argmin", "leading_zeros", "pack_row", "MaxTree", "MaxTreeParams"]


def _node(m, name, value):
    """``value`` as a named Signal driven in ``m`` (``value`` itself without ``m``)."""
    if m is None:
        return value
    node = Signal(value.shape(), name=name)
    m.d.comb += node.eq(value)
    return node


def _tree(values, combine, m=None, name="tree"):
    values = list(values)
    if not values:
        raise ValueError("empty tree")
    level = 0
    while len(values) > 1:
        level += 1
        nxt = [combine(values[i], values[i + 1], f"{name}_l{level}_{i // 2}")
               for i in range(0, len(values) - 1, 2)]
        if len(values) % 2:
            nxt.append(values[-1])
        values = nxt
    return values[0]


def tree_sum(values, *, m: Module | None = None, name: str = "sum"):
    """Sum of Amaranth values as a balanced adder tree (widths grow by one bit per level)."""
    return _tree(values, lambda a, b, n: _node(m, n, a + b), m, name)


def tree_max(values, *, m: Module | None = None, name: str = "max"):
    """Maximum of unsigned Amaranth values as a balanced tree of compare-and-select. The leaves
    should be signals or slices of them (each is used twice)."""
    return _tree(values, lambda a, b, n: _node(m, n, Mux(a >= b, a, b)), m, name)


def tree_argmin(values, *, m: Module | None = None, name: str = "argmin"):
    """Index of the smallest of unsigned Amaranth values, ties to the lowest index: a balanced tree
    that keeps the left (lower-index) candidate unless the right one is strictly smaller."""
    values = list(values)
    bits = max(1, (len(values) - 1).bit_length())

    def combine(left, right, n):
        take_right = _node(m, f"{n}_right", right[0] < left[0])
        return (_node(m, f"{n}_value", Mux(take_right, right[0], left[0])),
                _node(m, f"{n}_index", Mux(take_right, right[1], left[1])))
    return _tree([(v, Const(i, bits)) for i, v in enumerate(values)], combine, m, name)[1]


def leading_zeros(x, *, m: Module | None = None, name: str = "lzc"):
    """``(zero, count)`` of a value of power-of-two width ``n >= 2``: ``zero`` is 1 when ``x == 0``;
    otherwise ``count`` (``log2 n`` bits) is the number of zeros above the top one. A balanced tree:
    each level picks the upper half's count, or the lower half's with a 1 on top when the upper
    half is zero. With ``m``, node ``<name>_<lo>_<width>`` covers bits ``[lo +: width]``."""
    n = len(x)
    if n < 2 or n & (n - 1):
        raise ValueError(f"width must be a power of two >= 2, not {n}")

    def count(lo, width):
        if width == 2:
            bits = x[lo:lo + 2]
            zero, cnt = ~(bits[1] | bits[0]), ~bits[1]
        else:
            zh, ch = count(lo + width // 2, width // 2)
            zl, cl = count(lo, width // 2)
            zero, cnt = zh & zl, Cat(Mux(zh, cl, ch), zh)
        return (_node(m, f"{name}_{lo}_{width}_zero", zero),
                _node(m, f"{name}_{lo}_{width}_count", cnt))
    return count(0, n)


def pack_row(values, width: int) -> Const:
    """A constant holding ``values`` as ``width``-bit lanes, element j at ``[width*j +: width]``."""
    return Const(sum(v << (width * j) for j, v in enumerate(values)), width * len(values))


@dataclass(frozen=True)
class MaxTreeParams(Params):
    """:class:`MaxTree`: ``count`` values of ``width`` bits, both at least 1."""

    width: int
    count: int

    def __post_init__(self):
        check_count(self.width, "width")
        check_count(self.count, "count")


class MaxTree(ParametrisedComponent):
    """Maximum of ``count`` unsigned ``width``-bit values, a balanced comparator tree.

    Ports: ``values`` in, ``count`` x ``width`` bits (element k at ``[width*k +: width]``);
    ``max`` out, ``width`` bits.
    """

    Params = MaxTreeParams

    def __init__(self, *args, **kwargs):
        p = self.settle(*args, **kwargs)
        width, count = self.width, self.count = p.width, p.count
        super().__init__({
            "values": In(data.ArrayLayout(width, count)),
            "max": Out(width),
        })

    def elaborate(self, platform):
        m = Module()
        m.d.comb += self.max.eq(tree_max((self.values[k] for k in range(self.count)), m=m))
        return m
