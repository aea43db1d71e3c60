"""The place-and-route frame that gives a unit with hundreds of port bits four pins."""
from __future__ import annotations

from amaranth.hdl import Cat, ClockDomain, ClockSignal, DomainRenamer, Module, ResetSignal, Signal, Value
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

__all__ = ["PnrHarness", "XOR_FANIN", "STIMULUS_CHAIN_BITS", "CLOCK_PORTS"]

XOR_FANIN = 4                 # output reduction: one LUT4 per registered XOR
# Longest input shift register: the WebAssembly yosys 0.70 exhausts its call stack in synth_ecp5's
# techmap on a chain of about 2,800 flip-flops (2,500 map, 2,822, the 16-lane engine's input bits,
# do not), so wider units get several chains side by side.
STIMULUS_CHAIN_BITS = 2048
# A unit with its own clock and reset ports (the AXI4-Stream engine of SPEC 11: ``aclk``, and
# ``aresetn`` active low) runs on the harness's clock and reset: port name -> driver. Such a unit
# defines its own (local) ``sync`` domain, so the harness then clocks its registers in a domain of
# another name, :data:`FRAME_DOMAIN`.
CLOCK_PORTS = {"aclk": lambda domain: ClockSignal(domain),
               "aresetn": lambda domain: ~ResetSignal(domain)}
FRAME_DOMAIN = "pnr"


class PnrHarness(wiring.Component):
    """Place-and-route frame for a unit with more port bits than the FPGA has pins.

    ``din`` (1 bit) enters a registered shift register with feedback as long as all input bits of
    the unit together (over :data:`STIMULUS_CHAIN_BITS` bits, several such registers, each with its
    own feedback taps so that none duplicates another); its bits drive the unit's inputs. All output bits of the unit are registered,
    then XOR-reduced into ``dout`` (1 bit) by a tree of 4-input XORs with a register after each
    level. Nothing can be optimised away (every input bit is a distinct register and every output
    bit reaches the pin), and every harness path is at most one LUT deep, so the critical path runs
    through the unit. The unit is the submodule ``dut`` (Verilog module ``harness.dut``); its
    clock and reset ports, if it has them (:data:`CLOCK_PORTS`), take the harness's (then the
    harness's clock and reset ports are ``pnr_clk`` and ``pnr_rst``).
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
        ports = {"din": In(1), "dout": Out(1)}
        if self.clocks:
            ports |= {f"{FRAME_DOMAIN}_clk": In(1), f"{FRAME_DOMAIN}_rst": In(1)}
        super().__init__(ports)

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = self.dut
        frame = Module()
        chains = []
        for k, start in enumerate(range(0, max(self.in_bits, 1), STIMULUS_CHAIN_BITS)):
            width = max(min(STIMULUS_CHAIN_BITS, self.in_bits - start), 4 + k)
            chain = Signal(width, name="stimulus" if k == 0 else f"stimulus{k}")
            feedback = self.din ^ chain[-1] ^ chain[-2] ^ chain[-3 - k]
            frame.d.sync += chain.eq(Cat(feedback, chain[:-1]))
            chains.append(chain)
        stimulus = Cat(*chains) if len(chains) > 1 else chains[0]
        offset = 0
        for port in self.inputs:
            frame.d.comb += port.eq(stimulus[offset:offset + len(port)])
            offset += len(port)
        # Outputs are registered, then XOR-reduced by a tree of registered 4-input XORs (one LUT
        # per register), so no harness path is deeper than one LUT and Fmax is set by the unit.
        level = Signal(self.out_bits, name="captured")
        frame.d.sync += level.eq(Cat(*self.outputs))
        depth = 0
        while len(level) > 1:
            nxt = Signal((len(level) + XOR_FANIN - 1) // XOR_FANIN, name=f"xor_level{depth}")
            frame.d.sync += [nxt[j].eq(level[XOR_FANIN * j:XOR_FANIN * (j + 1)].xor())
                             for j in range(len(nxt))]
            level, depth = nxt, depth + 1
        frame.d.sync += self.dout.eq(level)
        if self.clocks:
            m.domains += ClockDomain(FRAME_DOMAIN, local=True)
            m.d.comb += [ClockSignal(FRAME_DOMAIN).eq(getattr(self, f"{FRAME_DOMAIN}_clk")),
                         ResetSignal(FRAME_DOMAIN).eq(getattr(self, f"{FRAME_DOMAIN}_rst"))]
            m.d.comb += [port.eq(driver(FRAME_DOMAIN)) for port, driver in self.clocks]
            m.submodules.frame = DomainRenamer(FRAME_DOMAIN)(frame)
        else:
            m.submodules.frame = frame
        return m
