"""``bd_linear``: BlockDialect matrix-vector engine with AXI4-Stream ports (SPEC 11).

Computes ``y = W x`` for one FP16 activation vector ``x`` (``K`` elements, quantized online by
:class:`~bd_hw.quantizer.BDQuantizer`) and a packed weight matrix ``W`` (``R x K``, SPEC 7),
``N`` rows side by side on ``N`` :class:`~bd_hw.dot.BDDot` units: for every row the exact dot
product rounded once to FP32, the bits of ``bd.linear(bd.quantize(x, B), q_weight)``.

Ports (Verilog names; ``tdata`` bytes are the bytes of the data in memory, byte ``i`` at
``tdata[8i +: 8]``):

=================  ====  =====================================================================
port               bits  meaning
=================  ====  =====================================================================
``aclk``           1     clock, rising edge
``aresetn``        1     synchronous reset, active low
``s_axis_x_tdata`` 16B   one block of B FP16 elements, element k at ``[16k +: 16]``
``s_axis_x_tlast`` 1     final block of the vector
``s_axis_w_tdata`` 8NS   N packed blocks (S = 2 + B/2 bytes each), lane n from byte n S
``s_axis_w_tlast`` 1     final block of a row group
``s_axis_w_tuser`` 1     on the ``tlast`` beat of the matrix's final row group
``m_axis_y_tdata`` 32N   N FP32 results, lane n at ``[32n +: 32]``
``m_axis_y_tlast`` 1     the matrix's final row group
``m_axis_y_tuser`` 2     bit 0: the vector held Inf/NaN (results with those elements as 0);
                         bit 1: the group's block count differed from the vector's (undefined)
=================  ====  =====================================================================

plus ``tvalid``/``tready`` on each stream. Operation: (1) take activation beats up to ``tlast``
(at most ``max_blocks``; blocks beyond are dropped and every group of that vector is flagged with
``tuser`` bit 1) and quantize them into the activation buffer; (2) take weight beats, beat ``j`` of
a group being block ``j`` of its ``N`` rows, and after each group's ``tlast`` emit one result beat;
(3) after the group whose ``tlast`` beat has ``tuser = 1``, return to (1). The weight stream is not
taken while a vector loads, nor the activation stream while a matrix streams (one buffer). The
upper 7 bits of a packed header word are ignored.

Timing, in clock edges (the convention of SPEC 9, ``m_axis_y_tready`` held high), for the
``pipeline`` setting ``p`` (0 to 10, default 0; see :class:`BDLinear`):

- **Latency 8 + min(p, 4)** (:attr:`BDLinear.latency`, 12 at ``p`` >= 4): the ``tlast`` beat of a
  row group accepted at edge ``t`` gives its result beat, transferred at edge ``t + latency``: one
  stage that registers the beat with its activation block (read from the buffer one beat ahead,
  so the block RAM's output ends at a register) + :attr:`BDDot.latency` (6 + min(p, 4)) + the
  collector's output register (1).
- **Capacity latency + 1** (:attr:`BDLinear.capacity`, 13 at ``p`` >= 4): the row groups the
  engine may owe at once (``tlast`` beats accepted, results not yet transferred). A weight beat is
  taken only while fewer are owed; every owed result has a slot in the collector, so nothing
  between the weight input and the collector ever waits. With ``m_axis_y_tready`` low the engine
  takes row groups until it owes ``capacity`` of them, then holds ``s_axis_w_tready`` low until a
  result leaves; the slot frees at the clock after.
- **Vector turnaround 5 + p, 4 + p from p = 9** (:attr:`BDLinear.vector_latency`, 14 at
  ``p = 10``): the final activation beat accepted at edge ``t`` is in the buffer after
  :attr:`BDQuantizer.latency` (4 + p; the quantizer's ``ready`` cut adds no stage) edges; the first weight
  beat can be accepted at edge ``t + vector_latency``. The first activation beat of the next vector
  can be accepted at the edge after the final weight beat of a matrix.
- Sustained, at every setting: one weight beat (``N`` blocks) per clock while ``m_axis_y_tready``
  is high, row groups of one block included (``latency`` groups are then owed, one fewer than the
  capacity), one activation block per clock. A matrix of ``G`` row groups over a vector of ``K/B``
  blocks takes ``K/B + vector_latency + G K/B`` cycles from its first activation beat to its final
  weight beat.

``pipeline = p`` takes the first ``p`` cut points of the quantizer and of every dot unit
(:attr:`BDLinear.CUT_POINTS` pairs them: ``select``/``abs``, ``shift``/``lzc``, ``qmax``/``tree``,
``exp``/``decode``, ``exp8``/``negatives``, then the quantizer's ``count``, ``qmax8``,
``pair_rule``, ``ready`` and ``exp16``), so ``p = 0`` is the small low-latency build and ``p = 10``
the fast one (every cut point of both parts taken: the quantizer of ``bd_quantizer_fast``, whose
``ready`` skid buffer never fills here, as the engine takes a quantized block at every clock, and
so folds away; dot units at ``pipeline = 5``, whose ``negatives`` cut adds no stage).
:meth:`~bd_hw.params.LinearParams.fastest` is that setting with one activation copy per lane (the
``_fast`` builds). The dot units' last cut, ``ready``, is not taken: the engine never
holds them, so they are built
``stall_free`` (:class:`~bd_hw.params.DotParams`: no valid/ready chain, every stage's enable its
input's valid bit) and there is nothing for a skid buffer to cut.

No combinational path runs from an input to an output: the ``tready`` outputs depend on registers
(``s_axis_w_tready`` on the vector's state and the collector's credit, a register; not on
``m_axis_y_tready``, which reaches only the collector's output side), and ``m_axis_y`` comes from
registers. Every ``tready`` is low in reset.

``products`` says how the dot units' 4x4 products are built: ``"lut"`` (the default) or ``"dsp"``,
each unit its own, or ``"dsp_packed"``: lanes ``2j`` and ``2j + 1`` read the same activation
element, so one :class:`~bd_hw.dot.PackedMultiplierArray` forms both lanes' products of an element
with one multiply (one MULT18X18D on the ECP5 for two products); the dot units then take their
products through their ``mul_*`` ports. Results, latency and rate are the same in every case.

``activation_copies`` (a power of two up to ``N``, default 1) keeps that many copies of the
activation buffer, each with its own read register, lane ``n`` reading copy ``n * copies // N``:
every quantized block is written into all of them. All lanes read the same activation block, so
with one copy its register (and the decoded block after it, which synthesis shares between the
dot units, as their decoders see the same input) feeds all ``N`` units across the device; with more,
each group of ``N / copies`` units reads its own. Copies are separate memories, which synthesis
does not merge as it merges identical registers. The results, latency and rate are the same;
each copy costs one buffer of block RAM (4 DP16KD at ``B = 32`` on the ECP5).

Parts: :class:`~bd_hw.quantizer.BDQuantizer`, :class:`~bd_hw.linear_parts.VectorCounter`,
:class:`~bd_hw.linear_parts.ActivationBuffer` (:class:`amaranth.lib.memory.Memory` of
``max_blocks`` blocks; ``activation_copies`` of them), :class:`~bd_hw.linear_parts.PackedBlockUnpacker`,
:class:`~bd_hw.linear_parts.GroupCounter`, ``N`` :class:`~bd_hw.dot.BDDot` and
:class:`~bd_hw.linear_parts.LaneCollector`.
"""
from __future__ import annotations

from amaranth.hdl import ClockDomain, Module, Mux, ResetSignal, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .dot import BDDot, PackedMultiplierArray
from .layouts import Y_USER_BITS, block_layout
from .linear_parts import (ActivationBuffer, GroupCounter, LaneCollector, PackedBlockUnpacker,
                           VectorCounter)
from .params import LinearParams, ParametrisedComponent
from .quantizer import BDQuantizer

__all__ = ["BDLinear"]


class BDLinear(ParametrisedComponent):
    """``bd_linear`` for block size ``B`` (16, 32, 64), ``N`` lanes (1, 2, 4, 8, 16), vectors of up
    to ``max_blocks`` blocks, ``pipeline`` extra register stages in each of its clocked parts (0 to
    ``len(CUT_POINTS)``, default 0), the dot units' ``accumulate`` mode and ``products`` (see the
    module docstring): the arguments of
    :class:`~bd_hw.params.LinearParams` (or one). See the module docstring.

    ``pipeline = p`` is passed on as one integer: the quantizer and every dot unit take the first
    ``p`` of their own cut points (:data:`BDQuantizer.CUT_POINTS`, :data:`BDDot.CUT_POINTS`), a part
    with fewer cut points than ``p`` all of its own (``LinearParams.ENGINE_DEPTH`` = 10 steps take
    every cut point of both). :data:`CUT_POINTS` lists the pairs so taken, step by step;
    :attr:`latency` is ``8 + min(p, 4)``, :attr:`capacity` ``latency + 1`` and
    :attr:`vector_latency` ``5 + p`` (``4 + p`` from 9), from the parts' parameters. Raises ``ValueError`` naming ``B``, ``N``,
    ``max_blocks``, ``pipeline``, ``accumulate``, ``products`` or ``activation_copies``.

    The component defines its own ``sync`` clock domain, driven by the ``aclk`` port and reset while
    ``aresetn`` is low, so the emitted Verilog has exactly the SPEC 11 ports; the Amaranth simulator
    clocks it with ``add_clock(period, domain="sync")``.
    """

    Params = LinearParams
    #: Step ``p`` of ``pipeline``: (quantizer cut point, dot-unit cut point), None where a part has
    #: no more.
    CUT_POINTS = LinearParams.CUT_POINTS
    #: Stage between the weight input and the dot units: the beat's weights and its activation
    #: block (read from the buffer one beat ahead) registered.
    READ_STAGES = LinearParams.READ_STAGES

    def __init__(self, *args, **kwargs):
        p = self.settle(*args, **kwargs)
        self.B, self.N, self.max_blocks, self.pipeline, self.accumulate = \
            p.B, p.N, p.max_blocks, p.pipeline, p.accumulate
        self.x_bits, self.w_bits, self.y_bits = p.x_bits, p.w_bits, p.y_bits
        self.vector_latency, self.capacity = p.vector_latency, p.capacity
        super().__init__({
            "aclk": In(1),
            "aresetn": In(1),
            "s_axis_x_tdata": In(self.x_bits),
            "s_axis_x_tvalid": In(1),
            "s_axis_x_tready": Out(1),
            "s_axis_x_tlast": In(1),
            "s_axis_w_tdata": In(self.w_bits),
            "s_axis_w_tvalid": In(1),
            "s_axis_w_tready": Out(1),
            "s_axis_w_tlast": In(1),
            "s_axis_w_tuser": In(1),
            "m_axis_y_tdata": Out(self.y_bits),
            "m_axis_y_tvalid": Out(1),
            "m_axis_y_tready": In(1),
            "m_axis_y_tlast": Out(1),
            "m_axis_y_tuser": Out(Y_USER_BITS),
        })

    def elaborate(self, platform):
        m = Module()
        B, N = self.B, self.N
        sync = ClockDomain("sync", local=True)
        sync.clk = self.aclk
        m.domains.sync = sync
        m.d.comb += sync.rst.eq(~self.aresetn)

        m.submodules.quantizer = quantizer = BDQuantizer(self.params.quantizer)
        m.submodules.vector = vector = VectorCounter(self.max_blocks, quantizer.latency)
        copies = self.params.activation_copies
        # With one copy the names (buffer, a_activation) are those of the engine before copies
        # existed, so its Verilog, and every figure measured on it, stays the same.
        buffers = []
        for c in range(copies):
            buffer = ActivationBuffer(B, self.max_blocks)
            m.submodules["buffer" if copies == 1 else f"buffer{c}"] = buffer
            buffers.append(buffer)
        m.submodules.unpacker = unpacker = PackedBlockUnpacker(B, N)
        m.submodules.group = group = GroupCounter(self.max_blocks)
        m.submodules.collector = collector = LaneCollector(N, capacity=self.capacity)
        dots = []
        for n in range(N):
            dot = BDDot(self.params.dot)
            m.submodules[f"dot{n}"] = dot
            dots.append(dot)

        # --- activation side: s_axis_x -> quantizer -> buffer ------------------------------------
        x_take = Signal()
        m.d.comb += [
            quantizer.i.valid.eq(self.s_axis_x_tvalid & ~vector.closed),
            quantizer.i.payload.data.eq(self.s_axis_x_tdata),
            self.s_axis_x_tready.eq(quantizer.i.ready & ~vector.closed),
            x_take.eq(self.s_axis_x_tvalid & self.s_axis_x_tready),
            quantizer.o.ready.eq(1),            # the buffer takes a block every clock
            vector.take.eq(x_take),
            vector.last.eq(self.s_axis_x_tlast),
            vector.written.eq(quantizer.o.valid),
            vector.invalid.eq(quantizer.o.payload.invalid),
        ]
        for buffer in buffers:
            m.d.comb += [
                buffer.w_addr.eq(vector.w_addr),
                buffer.w_en.eq(vector.w_en),
                buffer.w_data.codes.eq(quantizer.o.payload.codes),
                buffer.w_data.dialect.eq(quantizer.o.payload.dialect),
                buffer.w_data.exp.eq(quantizer.o.payload.exp),
            ]

        # --- weight side: s_axis_w -> read stage -> N dot units ----------------------------------
        # Nothing after the weight input ever stalls: the weight take waits for the collector's
        # credit (fewer than `capacity` row groups owed, a register), which reserves every
        # result's slot, so the dot units are stall-free (no ready chain) and the read stage loads at
        # every clock. The read stage registers the beat's weight blocks and its activation block.
        # The buffer is read one beat ahead (the block the next weight beat needs: the next in the
        # group, or block 0 after a group's tlast and while no vector is loaded), so the block
        # RAM's slow clock-to-output (5.8 ns on the ECP5) ends at a register instead of running on
        # through the N dot units' activation decoders; latency unchanged.
        a_valid = Signal()
        a_blocks = Signal(unpacker.blocks.shape(), reset_less=True)
        a_activations = [Signal(block_layout(B), reset_less=True,
                                name="a_activation" if copies == 1 else f"a_activation{c}")
                         for c in range(copies)]
        a_last = Signal(reset_less=True)
        next_addr = Signal.like(buffers[0].r_addr)
        w_take = Signal()
        m.d.comb += [
            unpacker.tdata.eq(self.s_axis_w_tdata),
            self.s_axis_w_tready.eq(vector.loaded & collector.meta.ready & ~ResetSignal()),
            w_take.eq(self.s_axis_w_tvalid & self.s_axis_w_tready),
            group.take.eq(w_take),
            group.last.eq(self.s_axis_w_tlast),
            group.blocks.eq(vector.count),
            group.overflow.eq(vector.overflow),
            next_addr.eq(Mux(vector.loaded & ~self.s_axis_w_tlast, group.addr + 1, 0)),
        ]
        for buffer in buffers:
            m.d.comb += [buffer.r_addr.eq(next_addr), buffer.r_en.eq(w_take | ~vector.loaded)]
        m.d.comb += [
            # The group's flags go into the collector's FIFO when its tlast beat is taken.
            collector.meta.valid.eq(self.s_axis_w_tvalid & self.s_axis_w_tlast & vector.loaded
                                    & ~ResetSignal()),
            collector.meta.payload.invalid.eq(vector.any_invalid),
            collector.meta.payload.mismatch.eq(group.mismatch),
            collector.meta.payload.final.eq(self.s_axis_w_tuser),
            # The matrix's final beat frees the buffer for the next vector.
            vector.clear.eq(w_take & self.s_axis_w_tlast & self.s_axis_w_tuser),
        ]
        # A plain pipeline register: its data loads at every clock (no enable to fan out), the
        # valid bit says whether it holds a beat.
        m.d.sync += [a_valid.eq(w_take), a_blocks.eq(unpacker.blocks),
                     *(a.eq(buffer.r_data) for buffer, a in zip(buffers, a_activations)),
                     a_last.eq(self.s_axis_w_tlast)]

        for n, dot in enumerate(dots):
            activation = a_activations[n * copies // N]
            # Every dot unit takes the beat: with its output ready high its input ready is high
            # out of reset, and a_valid is low in reset.
            m.d.comb += [
                dot.i.valid.eq(a_valid),
                dot.i.payload.a_codes.eq(activation.codes),
                dot.i.payload.a_dialect.eq(activation.dialect),
                dot.i.payload.a_exp.eq(activation.exp),
                dot.i.payload.w_codes.eq(a_blocks[n].codes),
                dot.i.payload.w_dialect.eq(a_blocks[n].dialect),
                dot.i.payload.w_exp.eq(a_blocks[n].exp),
                dot.i.payload.last.eq(a_last),
            ]
            wiring.connect(m, dot.o, collector.results[n])
        if self.params.products == "dsp_packed":
            # Lanes 2j and 2j + 1 share one multiplier per element (their activation is the same
            # block): lane 2j's decoded activation and both lanes' decoded weights go in, each
            # lane's products come back in the cycle they left (the dot units' product stage).
            for j in range(0, N, 2):
                m.submodules[f"mul{j // 2}"] = pair = PackedMultiplierArray(B)
                m.d.comb += [pair.a.eq(dots[j].mul_a), pair.w0.eq(dots[j].mul_w),
                             dots[j].mul_products.eq(pair.products0),
                             dots[j].mul_carries.eq(pair.carries0)]
                if j + 1 < N:
                    m.d.comb += [pair.w1.eq(dots[j + 1].mul_w),
                                 dots[j + 1].mul_products.eq(pair.products1),
                                 dots[j + 1].mul_carries.eq(pair.carries1)]

        # --- output: collector -> m_axis_y --------------------------------------------------------
        m.d.comb += [
            self.m_axis_y_tvalid.eq(collector.o.valid),
            self.m_axis_y_tdata.eq(collector.o.payload.data),
            self.m_axis_y_tuser.eq(collector.o.payload.user),
            self.m_axis_y_tlast.eq(collector.o.payload.last),
            collector.o.ready.eq(self.m_axis_y_tready),
        ]
        return m
