"""A carry-save bit heap: the exact sum of many weighted bits, as ASIC dot-product units add their
partial products (Wallace's reduction).

:func:`heap_sum` takes bits with their weights (powers of two) and a constant, and reduces each
column of equal weight with full adders (three bits of weight ``2^w`` into one of ``2^w`` and one
of ``2^(w+1)``) and, where a column needs it, half adders, until no column holds more than two
bits; one carry-propagate adder then adds the two rows. Every adder output is a named signal
(``<name>_s<n>``, ``<name>_c<n>``), so no expression is emitted twice. Compared with a tree of
two-operand adders, each bit of the heap passes through carry-save adders only, and the single
carry chain comes last. :func:`signed_bits` turns a two's complement value into heap bits, and
:func:`signed_heap_sum` adds two's complement values (and loose bits) with one heap.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Signal, Value

__all__ = ["heap_sum", "signed_bits", "signed_heap_sum"]


def signed_bits(value) -> tuple[list, int]:
    """``(bits, constant)`` of a two's complement ``value`` of ``n`` bits for :func:`heap_sum`:
    bits ``0 .. n-2`` at their weights, and the sign bit, whose weight is ``-2^(n-1)``, as its
    complement at ``2^(n-1)`` with ``-2^(n-1)`` in the constant (``-x = ~x - 1`` for a bit)."""
    value = Value.cast(value)
    n = len(value)
    bits = [(value[i], i) for i in range(n - 1)] + [(~value[n - 1], n - 1)]
    return bits, -(1 << (n - 1))


def heap_sum(m: Module, bits, width: int, constant: int = 0, name: str = "heap") -> Signal:
    """``(sum of bit * 2^weight over bits + constant) mod 2^width`` as a ``width``-bit signal.

    ``bits``: ``(one-bit value, weight)`` pairs; weights of ``width`` or more are dropped (they do
    not change the result modulo ``2^width``).
    """
    columns: list[list] = [[] for _ in range(width)]
    for bit, weight in bits:
        if weight < width:
            columns[weight].append(bit)
    constant %= 1 << width
    for weight in range(width):
        if constant >> weight & 1:
            columns[weight].append(Const(1, 1))
    count = 0

    def adder(inputs, weight, nxt):
        nonlocal count
        s, c = Signal(name=f"{name}_s{count}"), Signal(name=f"{name}_c{count}")
        if len(inputs) == 3:
            a, b, cin = inputs
            half = Signal(name=f"{name}_x{count}")
            m.d.comb += [half.eq(a ^ b), s.eq(half ^ cin), c.eq((a & b) | (cin & half))]
        else:
            a, b = inputs
            m.d.comb += [s.eq(a ^ b), c.eq(a & b)]
        count += 1
        nxt[weight].append(s)
        if weight + 1 < width:
            nxt[weight + 1].append(c)

    while any(len(column) > 2 for column in columns):
        nxt: list[list] = [[] for _ in range(width)]
        for weight, column in enumerate(columns):
            full = len(column) // 3
            for i in range(full):
                adder(column[3 * i:3 * i + 3], weight, nxt)
            rest = column[3 * full:]
            # A pair left over in a column that is still being reduced is half-added, so that the
            # column shrinks by a bit more this round; a column of two is left for the final adder.
            if len(rest) == 2 and full:
                adder(rest, weight, nxt)
            else:
                nxt[weight].extend(rest)
        columns = nxt
    rows = [Cat(*[column[i] if len(column) > i else Const(0, 1) for column in columns])
            for i in range(2)]
    total = Signal(width, name=f"{name}_sum")
    m.d.comb += total.eq(rows[0] + rows[1])
    return total


def signed_heap_sum(m: Module, values, width: int, bits=(), name: str = "heap") -> Value:
    """The sum of the two's complement ``values`` and of the one-bit ``bits`` (``(bit, weight)``
    pairs) modulo ``2^width``, as a signed ``width``-bit value: every value's :func:`signed_bits`
    and the bits in one :func:`heap_sum`."""
    heap, constant = [], 0
    for value in values:
        value_bits, value_constant = signed_bits(value)
        heap += value_bits
        constant += value_constant
    return heap_sum(m, heap + list(bits), width, constant, name).as_signed()
