// Self-checking testbench of bd_linear_b32_n4 for the FuseSoC `sim` target (blockdialect.core).
//
// Streams the activation vectors and packed weight matrices of bd_linear_b32_n4_vectors.vh (written
// by `python -m tb.linear_vectors` from the golden model: real SmolLM2 rows, a vector with Inf/NaN,
// a row group one block short) into the engine with pseudo-random pauses on all three AXI4-Stream
// ports, compares every m_axis_y beat with the golden one, and ends with $finish on success or
// $fatal on a mismatch or a timeout. It doubles as an instantiation example of the engine.
`default_nettype none

module bd_linear_tb;
  localparam integer B = 32;                    // block size
  localparam integer N = 4;                     // lanes (rows side by side)
  localparam integer XW = 16 * B;               // s_axis_x_tdata: B FP16 elements
  localparam integer WW = 8 * N * (2 + B / 2);  // s_axis_w_tdata: N packed blocks
  localparam integer YW = 32 * N;               // m_axis_y_tdata: N FP32 results
  localparam integer TIMEOUT = 20000;           // clock cycles

  `include "bd_linear_b32_n4_vectors.vh"

  // Time unit: the core's sim target passes --timescale 1ns/1ps.
  reg aclk = 1'b0;
  reg aresetn = 1'b0;
  always #5 aclk = ~aclk;

  reg  [XW-1:0] s_axis_x_tdata = {XW{1'b0}};
  reg           s_axis_x_tvalid = 1'b0;
  wire          s_axis_x_tready;
  reg           s_axis_x_tlast = 1'b0;
  reg  [WW-1:0] s_axis_w_tdata = {WW{1'b0}};
  reg           s_axis_w_tvalid = 1'b0;
  wire          s_axis_w_tready;
  reg           s_axis_w_tlast = 1'b0;
  reg           s_axis_w_tuser = 1'b0;
  wire [YW-1:0] m_axis_y_tdata;
  wire          m_axis_y_tvalid;
  reg           m_axis_y_tready = 1'b0;
  wire          m_axis_y_tlast;
  wire [1:0]    m_axis_y_tuser;

  bd_linear_b32_n4 dut (
    .aclk            (aclk),
    .aresetn         (aresetn),
    .s_axis_x_tdata  (s_axis_x_tdata),
    .s_axis_x_tvalid (s_axis_x_tvalid),
    .s_axis_x_tready (s_axis_x_tready),
    .s_axis_x_tlast  (s_axis_x_tlast),
    .s_axis_w_tdata  (s_axis_w_tdata),
    .s_axis_w_tvalid (s_axis_w_tvalid),
    .s_axis_w_tready (s_axis_w_tready),
    .s_axis_w_tlast  (s_axis_w_tlast),
    .s_axis_w_tuser  (s_axis_w_tuser),
    .m_axis_y_tdata  (m_axis_y_tdata),
    .m_axis_y_tvalid (m_axis_y_tvalid),
    .m_axis_y_tready (m_axis_y_tready),
    .m_axis_y_tlast  (m_axis_y_tlast),
    .m_axis_y_tuser  (m_axis_y_tuser)
  );

  // Pauses: a 32-bit xorshift; bit 0 pauses s_axis_x, bit 1 s_axis_w, bits 2-3 m_axis_y (half of
  // the cycles).
  reg [31:0] rnd = 32'h1234_5678;
  always @(posedge aclk) rnd <= rnd ^ (rnd << 13) ^ (rnd >> 17) ^ (rnd << 5);

  integer xi = 0;          // next activation beat to offer
  integer wi = 0;          // next weight beat to offer
  integer yi = 0;          // next result beat expected
  integer errors = 0;
  integer cycles = 0;

  always @(posedge aclk) begin
    if (aresetn) begin
      // s_axis_x: hold the offered beat until it is taken, then offer the next one or pause.
      if (!s_axis_x_tvalid || s_axis_x_tready) begin
        if (xi < X_BEATS && !rnd[0]) begin
          s_axis_x_tdata  <= x_data[xi];
          s_axis_x_tlast  <= x_last[xi];
          s_axis_x_tvalid <= 1'b1;
          xi <= xi + 1;
        end else begin
          s_axis_x_tvalid <= 1'b0;
        end
      end
      // s_axis_w, likewise.
      if (!s_axis_w_tvalid || s_axis_w_tready) begin
        if (wi < W_BEATS && !rnd[1]) begin
          s_axis_w_tdata  <= w_data[wi];
          s_axis_w_tlast  <= w_last[wi];
          s_axis_w_tuser  <= w_user[wi];
          s_axis_w_tvalid <= 1'b1;
          wi <= wi + 1;
        end else begin
          s_axis_w_tvalid <= 1'b0;
        end
      end
      // m_axis_y: check every beat taken.
      if (m_axis_y_tvalid && m_axis_y_tready) begin
        if (yi >= Y_BEATS) begin
          $display("bd_linear_tb: unexpected result beat %0d", yi);
          errors = errors + 1;
        end else if (m_axis_y_tuser != y_user[yi] || m_axis_y_tlast != y_last[yi]
                     || (y_check[yi] && m_axis_y_tdata != y_data[yi])) begin
          $display("bd_linear_tb: beat %0d: tdata %h tuser %0d tlast %0d, golden %h tuser %0d tlast %0d%s",
                   yi, m_axis_y_tdata, m_axis_y_tuser, m_axis_y_tlast, y_data[yi], y_user[yi],
                   y_last[yi], y_check[yi] ? "" : " (tdata undefined)");
          errors = errors + 1;
        end
        yi <= yi + 1;
      end
      m_axis_y_tready <= rnd[2] | rnd[3];
    end
  end

  initial begin
    repeat (4) @(posedge aclk);
    @(negedge aclk) aresetn = 1'b1;      // between edges: no race with the clocked blocks
    while (yi < Y_BEATS && cycles < TIMEOUT) begin
      @(posedge aclk);
      cycles = cycles + 1;
    end
    repeat (20) @(posedge aclk);         // anything beyond the expected beats counts as an error
    if (yi != Y_BEATS) begin
      $fatal(1, "bd_linear_tb: FAIL, %0d of %0d result beats after %0d cycles", yi, Y_BEATS, cycles);
    end else if (errors != 0) begin
      $fatal(1, "bd_linear_tb: FAIL, %0d of %0d result beats wrong", errors, Y_BEATS);
    end
    $display("bd_linear_tb: PASS, %0d result beats (%0d weight beats, %0d activation blocks) in %0d cycles",
             Y_BEATS, W_BEATS, X_BEATS, cycles);
    $finish;
  end
endmodule

`default_nettype wire
