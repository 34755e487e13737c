// post_neuron: one output neuron of a POST layer, written by hand from docs/arithmetic.md, to show how
// `post-accel vectors` checks RTL that is not post-accel's own engine (docs/vectors.md).
//
// Serial MAC: one (activation code x, POST weight code w) pair per cycle while in_valid is high; on the
// pair with in_last high it outputs, the next cycle (out_valid), the sum of products `acc` and the
// rescaled value  value = max((acc * mult + offset) >>> shift, relu_floor if relu).
//
// POST product (golden/arith.py post_product): w = {sign, m}; m = 0 is zero; k = m - 1, j = k >> 1;
// |product| = (k odd ? LUT[x] : x << FRAC) >> j, LUT[x] = round(x * 2**FRAC / sqrt 2) read from a
// $readmemh file named by the plusarg +LUT=<file> (the vectors' <layer>.lut.hex).
// A layer whose input came from an ASQ quantizer needs acc = (acc * in_beta) >>> 8 before the rescale;
// this example does not (the demo CNN's last layer has 8-bit LSQ inputs).
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
    input  wire signed [16:0]      mult,
    input  wire [5:0]              shift,
    input  wire signed [47:0]      offset,
    input  wire                    relu,
    input  wire signed [31:0]      relu_floor,
    output reg                     out_valid,
    output reg  signed [ACCW-1:0]  acc_out,
    output reg  signed [63:0]      value
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
    wire signed [63:0]     scaled = ($signed(sum) * $signed(mult) + $signed(offset)) >>> shift;

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
