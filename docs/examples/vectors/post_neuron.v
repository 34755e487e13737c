// post_neuron: one output neuron of a POST layer, written by hand from docs/arithmetic.md, to show how
// `post-accel vectors` checks RTL that is not post-accel's own engine (docs/vectors.md).
//
// Serial MAC: one (activation code x, POST weight code w) pair per cycle while in_valid is high; on the
// pair with in_last high it outputs, the next cycle (out_valid), the sum of products `acc` and the
// rescaled value (golden/arith.py stage_value, finish_value):
//   a = acc >>> acc_shift;  t = round_half_up(a * mult / 2**shift) + bias;  value = saturate16(t),
//   then max(value, relu_floor) if relu.
//
// POST product (golden/arith.py post_product): w = {sign, m}; m = 0 is zero; k = m - 1, j = k >> 1;
// |product| = (k odd ? LUT[x] : x << FRAC) >> j, LUT[x] = round(x * 2**FRAC / sqrt 2) read from a
// $readmemh file named by the plusarg +LUT=<file> (the vectors' <layer>.lut.hex).
// A layer whose input came from an ASQ quantizer scales mult and shift by in_beta first
// (golden.arith.beta_multiplier); this example does not (the demo CNN's last layer has LSQ inputs).
module post_neuron #(
    parameter ABITS = 8,          // activation code bits
    parameter WBITS = 8,          // POST weight code bits
    parameter FRAC = 8,           // product fraction bits
    parameter LUTW = 16,          // LUT entry bits
    parameter ACCW = 32           // accumulator bits
) (
    input  wire                    clk,
    input  wire                    rst,
    input  wire                    in_valid,
    input  wire                    in_last,
    input  wire [ABITS-1:0]        x,
    input  wire [WBITS-1:0]        w,
    input  wire [5:0]              acc_shift,
    input  wire signed [15:0]      mult,
    input  wire [5:0]              shift,
    input  wire signed [17:0]      bias,
    input  wire                    relu,
    input  wire signed [15:0]      relu_floor,
    output reg                     out_valid,
    output reg  signed [ACCW-1:0]  acc_out,
    output reg  signed [15:0]      value
);
    reg [LUTW-1:0] lut [0:(1<<ABITS)-1];
    reg [8*512-1:0] lut_file;
    initial begin
        if (!$value$plusargs("LUT=%s", lut_file)) begin
            $display("post_neuron: give the LUT file with +LUT=<file>");
            $finish;
        end
        $readmemh(lut_file, lut);
    end

    wire                sign = w[WBITS-1];
    wire [WBITS-2:0]    m = w[WBITS-2:0];
    wire [WBITS-2:0]    k = m - 1'b1;
    wire [WBITS-2:0]    j = k >> 1;
    wire [ABITS+FRAC-1:0] base = k[0] ? lut[x] : (x << FRAC);   // both widened to ABITS+FRAC first
    wire [ABITS+FRAC-1:0] mag = (m == 0) ? 0 : (base >> j);
    wire signed [ACCW-1:0] product = sign ? -$signed({1'b0, mag}) : $signed({1'b0, mag});

    reg  signed [ACCW-1:0] acc;
    wire signed [ACCW-1:0] sum = acc + product;
    wire signed [ACCW-1:0]  a = sum >>> acc_shift;                  // |a| < 2**23 (export proves it)
    wire signed [ACCW+15:0] p = a * mult;
    wire [5:0]              sh = (shift > 6'd62) ? 6'd62 : shift;
    wire signed [ACCW+15:0] r = ((p >>> (sh - 6'd1)) + 1) >>> 1;      // round half up, shift >= 1
    wire signed [ACCW+17:0] t = r + bias;
    wire signed [15:0]      scaled = (t > 32767) ? 16'sd32767 : (t < -32768) ? -16'sd32768 : t[15:0];

    always @(posedge clk) begin
        out_valid <= 1'b0;
        if (rst) begin
            acc <= 0;
        end else if (in_valid) begin
            if (in_last) begin
                acc <= 0;
                acc_out <= sum;
                value <= (relu && scaled < relu_floor) ? relu_floor : scaled;
                out_valid <= 1'b1;
            end else begin
                acc <= sum;
            end
        end
    end
endmodule
