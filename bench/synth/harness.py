"""The place-and-route frame that gives a unit with hundreds of port bits four pins."""
from __future__ import annotations

from amaranth.hdl import Cat, ClockSignal, Module, ResetSignal, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PnrHarness", "XOR_FANIN", "CLOCK_PORTS"]

XOR_FANIN = 4                 # output reduction: one LUT4 per registered XOR
# A unit with its own clock and reset ports (the AXI4-Stream engine of SPEC 11: ``aclk``, and
# ``aresetn`` active low) runs on the harness's clock and reset: port name -> driver.
CLOCK_PORTS = {"aclk": lambda: ClockSignal(), "aresetn": lambda: ~ResetSignal()}


class PnrHarness(wiring.Component):
    """Place-and-route frame for a unit with more port bits than the FPGA has pins.

    ``din`` (1 bit) enters a registered shift register with feedback as long as all input bits of
    the unit together; its bits drive the unit's inputs. All output bits of the unit are registered,
    then XOR-reduced into ``dout`` (1 bit) by a tree of 4-input XORs with a register after each
    level. Nothing can be optimised away (every input bit is a distinct register and every output
    bit reaches the pin), and every harness path is at most one LUT deep, so the critical path runs
    through the unit. The unit is the submodule ``dut`` (Verilog module ``harness.dut``); its
    clock and reset ports, if it has them (:data:`CLOCK_PORTS`), take the harness's.
    """

    def __init__(self, dut: wiring.Component):
        self.dut = dut
        self.inputs, self.outputs, self.clocks = [], [], []
        for path, member, value in dut.signature.flatten(dut):
            if member.flow == In and path in {(name,) for name in CLOCK_PORTS}:
                self.clocks.append((Value.cast(value), CLOCK_PORTS[path[0]]))
            else:
                (self.inputs if member.flow == In else self.outputs).append(Value.cast(value))
        self.in_bits = sum(len(v) for v in self.inputs)
        self.out_bits = sum(len(v) for v in self.outputs)
        super().__init__({"din": In(1), "dout": Out(1)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        m.d.comb += [port.eq(driver()) for port, driver in self.clocks]
        chain = Signal(max(self.in_bits, 4), name="stimulus")
        feedback = self.din ^ chain[-1] ^ chain[-2] ^ chain[-3]
        m.d.sync += chain.eq(Cat(feedback, chain[:-1]))
        offset = 0
        for port in self.inputs:
            m.d.comb += port.eq(chain[offset:offset + len(port)])
            offset += len(port)
        # Outputs are registered, then XOR-reduced by a tree of registered 4-input XORs (one LUT
        # per register), so no harness path is deeper than one LUT and Fmax is set by the unit.
        level = Signal(self.out_bits, name="captured")
        m.d.sync += level.eq(Cat(*self.outputs))
        depth = 0
        while len(level) > 1:
            nxt = Signal((len(level) + XOR_FANIN - 1) // XOR_FANIN, name=f"xor_level{depth}")
            m.d.sync += [nxt[j].eq(level[XOR_FANIN * j:XOR_FANIN * (j + 1)].xor())
                         for j in range(len(nxt))]
            level, depth = nxt, depth + 1
        m.d.sync += self.dout.eq(level)
        return m
