"""The small parts of ``bd_linear`` (SPEC 11) around the quantizer and the dot units.

- :class:`PackedBlockUnpacker`: one ``s_axis_w`` beat (``N`` packed blocks, SPEC 7) -> ``N`` blocks
  of fields (combinational wiring).
- :class:`ActivationBuffer`: the quantized activation vector, ``max_blocks`` blocks in an
  :class:`amaranth.lib.memory.Memory` with one write port and one synchronous read port.
- :class:`VectorCounter`: bookkeeping of the activation stream: block count, write address, blocks
  still inside the quantizer, the Inf/NaN flag of the vector.
- :class:`GroupCounter`: block index inside a row group and the block-count check at its ``tlast``.
- :class:`LaneCollector`: joins the ``N`` result streams and the group's flags into one output beat,
  with a reserved slot for every row group owed (the credit that lets the weight stream in), so
  the dot units never wait and the output's ``ready`` reaches nothing but the collector's output
  side.

The parts trust their arguments: :class:`~bd_hw.linear.BDLinear` checks its parameters once
(:class:`~bd_hw.params.LinearParams`). Their layouts are in :mod:`bd_hw.layouts`.
"""
from __future__ import annotations

from amaranth.hdl import Cat, Module, Signal
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

from golden.spec import CODE_BITS, DEFAULT_MAX_BLOCKS, DIALECT_BITS, EXP_BITS, HEADER_BYTES, block_bytes

from .layouts import block_layout, dot_output_layout, meta_layout, result_layout
from .params import LinearParams

__all__ = ["PackedBlockUnpacker", "ActivationBuffer", "VectorCounter", "GroupCounter",
           "LaneCollector", "HEADER_BITS"]

HEADER_BITS = 8 * HEADER_BYTES      # SPEC 7: little-endian word E << 4 | dialect


class PackedBlockUnpacker(wiring.Component):
    """``N`` packed blocks (SPEC 7) side by side -> ``N`` blocks of fields. Combinational.

    Ports: ``tdata`` in, ``8 N (2 + B/2)`` bits, lane ``n`` from byte ``n (2 + B/2)``; ``blocks`` out,
    ``N`` x :func:`block_layout`. Per lane: the little-endian header word gives ``dialect`` (bits
    3:0) and ``exp`` (bits 8:4); its upper 7 bits are ignored (SPEC 7 keeps them 0). The code bytes
    are already in the order of the ``codes`` field (element k at bit 4k), so they are wires.
    """

    def __init__(self, B: int = 32, N: int = 4):
        self.B, self.N = B, N
        self.lane_bits = 8 * block_bytes(self.B)
        super().__init__({
            "tdata": In(self.N * self.lane_bits),
            "blocks": Out(data.ArrayLayout(block_layout(self.B), self.N)),
        })

    def elaborate(self, platform):
        m = Module()
        codes_bits = CODE_BITS * self.B
        for n in range(self.N):
            lane = self.tdata[n * self.lane_bits:(n + 1) * self.lane_bits]
            m.d.comb += [
                self.blocks[n].dialect.eq(lane[:DIALECT_BITS]),
                self.blocks[n].exp.eq(lane[DIALECT_BITS:DIALECT_BITS + EXP_BITS]),
                self.blocks[n].codes.eq(lane[HEADER_BITS:HEADER_BITS + codes_bits]),
            ]
        return m


class ActivationBuffer(wiring.Component):
    """``max_blocks`` quantized blocks (:func:`block_layout`) in one memory.

    Ports: ``w_addr``, ``w_en``, ``w_data`` in: written at the clock edge while ``w_en`` is high;
    ``r_addr``, ``r_en`` in, ``r_data`` out: a synchronous read, ``r_data`` shows the block at the
    address given in a cycle with ``r_en`` high from the next cycle on, and holds while ``r_en`` is
    low. A read and a write of the same address at one edge return the new block (transparent: the
    engine reads a vector's first block ahead while that block may still be being written).
    """

    def __init__(self, B: int = 32, max_blocks: int = DEFAULT_MAX_BLOCKS):
        self.B, self.max_blocks = B, max_blocks
        self.addr_bits = max(1, ceil_log2(self.max_blocks))
        layout = block_layout(self.B)
        super().__init__({
            "w_addr": In(self.addr_bits),
            "w_en": In(1),
            "w_data": In(layout),
            "r_addr": In(self.addr_bits),
            "r_en": In(1),
            "r_data": Out(layout),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.memory = memory = Memory(shape=block_layout(self.B), depth=self.max_blocks, init=[])
        wr = memory.write_port()
        rd = memory.read_port(transparent_for=(wr,))
        m.d.comb += [
            wr.addr.eq(self.w_addr), wr.en.eq(self.w_en), wr.data.eq(self.w_data),
            rd.addr.eq(self.r_addr), rd.en.eq(self.r_en), self.r_data.eq(rd.data),
        ]
        return m


class VectorCounter(wiring.Component):
    """Bookkeeping of one activation vector on its way through the quantizer into the buffer.

    Ports (all in the ``sync`` domain):

    - ``take`` in: an activation beat is accepted at this edge; ``last`` in: it carries ``tlast``.
    - ``written`` in: a quantized block leaves the quantizer at this edge; ``invalid`` in: its flag.
    - ``clear`` in: forget the vector (the matrix that used it has been read).
    - ``w_addr``, ``w_en`` out: where the leaving block goes; blocks beyond ``max_blocks`` are not
      written.
    - ``closed`` out: ``tlast`` has been taken (no more activation beats until ``clear``).
    - ``loaded`` out: closed and no block is left inside the quantizer: the weights may stream.
    - ``count`` out: blocks taken, saturating at ``max_blocks + 1``; ``overflow`` out: more than
      ``max_blocks`` blocks were sent.
    - ``any_invalid`` out: some written block held Inf or NaN.

    ``max_in_flight`` bounds the blocks inside the quantizer (its latency).
    """

    def __init__(self, max_blocks: int = DEFAULT_MAX_BLOCKS, max_in_flight: int = 4):
        self.max_blocks, self.max_in_flight = max_blocks, max_in_flight
        self.addr_bits = max(1, ceil_log2(self.max_blocks))
        self.count_bits = (self.max_blocks + 1).bit_length()
        super().__init__({
            "take": In(1), "last": In(1), "written": In(1), "invalid": In(1), "clear": In(1),
            "w_addr": Out(self.addr_bits), "w_en": Out(1),
            "closed": Out(1), "loaded": Out(1),
            "count": Out(self.count_bits), "overflow": Out(1), "any_invalid": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        limit = self.max_blocks
        write_index = Signal(range(limit + 1))       # saturates at max_blocks: no more writes
        in_flight = Signal(range(self.max_in_flight + 1))
        m.d.comb += [
            self.w_addr.eq(write_index),
            self.w_en.eq(self.written & (write_index < limit)),
            self.loaded.eq(self.closed & ~in_flight.any()),
            self.overflow.eq(self.count > limit),
        ]
        with m.If(self.clear):
            m.d.sync += [self.count.eq(0), write_index.eq(0), self.closed.eq(0),
                         self.any_invalid.eq(0), in_flight.eq(0)]
        with m.Else():
            with m.If(self.take):
                with m.If(self.count <= limit):
                    m.d.sync += self.count.eq(self.count + 1)
                with m.If(self.last):
                    m.d.sync += self.closed.eq(1)
            with m.If(self.written):
                with m.If(write_index < limit):
                    m.d.sync += write_index.eq(write_index + 1)
                with m.If(self.invalid):
                    m.d.sync += self.any_invalid.eq(1)
            with m.If(self.take & ~self.written):
                m.d.sync += in_flight.eq(in_flight + 1)
            with m.Elif(~self.take & self.written):
                m.d.sync += in_flight.eq(in_flight - 1)
        return m


class GroupCounter(wiring.Component):
    """Block index inside a row group of the weight stream, and its block-count check (SPEC 11).

    Ports: ``take`` in (a weight beat is accepted at this edge), ``last`` in (it is the group's
    ``tlast``); ``blocks`` in, the vector's block count, and ``overflow`` in, the vector was too long
    (both from :class:`VectorCounter`); ``addr`` out, the index of the current beat in its group (the
    activation block to read); ``mismatch`` out, valid on a ``last`` beat: the group's block count
    differs from ``blocks``, or the vector was too long. The index saturates at ``max_blocks``, so a
    group of any length is flagged.
    """

    def __init__(self, max_blocks: int = DEFAULT_MAX_BLOCKS):
        self.max_blocks = max_blocks
        self.addr_bits = max(1, ceil_log2(self.max_blocks))
        self.count_bits = (self.max_blocks + 1).bit_length()
        super().__init__({
            "take": In(1), "last": In(1),
            "blocks": In(self.count_bits), "overflow": In(1),
            "addr": Out(self.addr_bits), "mismatch": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        index = Signal(range(self.max_blocks + 1))
        length = Signal(self.count_bits)           # blocks of the group so far, this beat included
        m.d.comb += [
            self.addr.eq(index),
            length.eq(index + 1),
            self.mismatch.eq(self.overflow | (length != self.blocks)),
        ]
        with m.If(self.take):
            with m.If(self.last):
                m.d.sync += index.eq(0)
            with m.Elif(index < self.max_blocks):
                m.d.sync += index.eq(index + 1)
        return m


class LaneCollector(wiring.Component):
    """``N`` result streams + the groups' flags -> one output beat (SPEC 11 ``m_axis_y``), with a
    reserved slot for every row group owed, so that the results never wait.

    Ports: ``meta`` in, a stream of :func:`meta_layout`, one entry per row group as its ``tlast``
    beat is taken (the engine's weight take waits for ``meta.ready``); ``results`` in, ``N`` streams
    of FP32 results (the dot units' outputs, which deliver in lockstep, in the order of the
    groups); ``o`` out, a stream of :func:`result_layout`.

    Credit: the collector counts the groups owed (``meta`` entries taken, output beats not yet
    transferred) and raises ``meta.ready`` only while fewer than ``capacity`` are owed; it is a
    register. The results have room: every ``results`` ready is constant 1, and a result enters
    the output register (if that is free and nothing waits) or a queue of ``capacity - 1``
    entries, which the owed count never overflows. The flags wait in a FIFO of ``capacity``
    entries (the groups between the weight input and the collector, never more than are owed) and
    join their results as those arrive.

    ``o.valid`` and ``o.payload`` are registers; ``o.ready`` reaches the output register, the
    queue's read side and the owed count only. Latency 1 (a result arriving at edge t is offered
    after it and transferred at t + 1 with ``o.ready`` high); one beat per clock.
    """

    LATENCY = LinearParams.COLLECTOR_LATENCY

    def __init__(self, N: int = 4, capacity: int = 9):
        self.N, self.capacity = N, capacity
        super().__init__({
            "results": In(stream.Signature(dot_output_layout())).array(self.N),
            "meta": In(stream.Signature(meta_layout())),
            "o": Out(stream.Signature(result_layout(self.N))),
        })

    @property
    def latency(self) -> int:
        return self.LATENCY

    def elaborate(self, platform):
        m = Module()
        N = self.N
        layout = result_layout(N)
        m.submodules.flags = flags = fifo.SyncFIFOBuffered(width=meta_layout().size,
                                                              depth=self.capacity)
        m.submodules.queue = queue = fifo.SyncFIFO(width=layout.size, depth=self.capacity - 1)
        meta = data.View(meta_layout(), flags.r_data)

        # The owed count and its registered comparison: ``room`` is ``owed < capacity``.
        owed = Signal(range(self.capacity + 1))
        owed_next = Signal.like(owed)
        room = Signal(init=1)
        meta_take = Signal()
        o_take = Signal()
        m.d.comb += [
            meta_take.eq(self.meta.valid & room),
            o_take.eq(self.o.valid & self.o.ready),
            owed_next.eq(owed + meta_take - o_take),
            self.meta.ready.eq(room),
            flags.w_data.eq(self.meta.payload.as_value()),
            flags.w_en.eq(meta_take),
        ]
        m.d.sync += [owed.eq(owed_next), room.eq(owed_next < self.capacity)]

        # A result arrives (every lane in lockstep, lane 0 stands for all) and meets its flags.
        arrive = self.results[0].valid
        incoming = Signal(layout)
        for n in range(N):
            m.d.comb += [incoming.data[n].eq(self.results[n].payload.result),
                         self.results[n].ready.eq(1)]
        m.d.comb += [
            incoming.user.eq(Cat(meta.invalid, meta.mismatch)),
            incoming.last.eq(meta.final),
            flags.r_en.eq(arrive),
        ]

        main_valid = Signal()
        main = Signal(layout, reset_less=True)
        main_free = Signal()                     # the output register loads at this edge
        bypass = Signal()                        # the arriving result goes straight to it
        m.d.comb += [
            main_free.eq(~main_valid | self.o.ready),
            bypass.eq(main_free & ~queue.r_rdy),
            queue.w_data.eq(incoming),
            queue.w_en.eq(arrive & ~bypass),
            queue.r_en.eq(main_free),
            self.o.valid.eq(main_valid),
            self.o.payload.eq(main),
        ]
        with m.If(main_free):
            with m.If(queue.r_rdy):
                m.d.sync += [main.eq(queue.r_data), main_valid.eq(1)]
            with m.Elif(arrive):
                m.d.sync += [main.eq(incoming), main_valid.eq(1)]
            with m.Else():
                m.d.sync += main_valid.eq(0)
        return m
