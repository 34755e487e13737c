"""cocotb test of post_neuron.v against `post-accel vectors` output (docs/vectors.md).

Environment: ``VECTORS`` (the vector directory, hex format so that the DUT can $readmemh its LUT),
``VECTORS_LAYER`` (a linear layer whose input does not come from ASQ, default: the last layer),
``VECTORS_SAMPLES`` (how many samples to run, default all), ``VECTORS_REPORT`` (optional: a JSON file
to write the checker's result to). The simulator must get ``+LUT=<dir>/<layer's lut file>``.

Every output channel of every sample: feed the layer's input codes and that channel's POST weight codes
one pair a cycle, then compare the DUT's sum of products with the vectors' ``acc`` and its rescaled
value with ``value``. The checker counts mismatches and names the first (layer, sample, index,
expected, got).
"""

import json
import os

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import FallingEdge

from sim.vectors import VectorChecker, load_vectors


@cocotb.test()
async def post_neuron_matches_vectors(dut):
    vec = load_vectors(os.environ["VECTORS"])
    layer = os.environ.get("VECTORS_LAYER") or vec.layers[-1]
    rec = vec.layer(layer)
    if rec["kind"] != "linear" or rec["input_beta"] or rec["weight_format"] != "post":
        raise ValueError(f"{layer}: post_neuron models a POST linear layer without an ASQ input")
    x_all = vec.array(layer, "in_codes")               # [N, K]
    weights = vec.array(layer, "weights")              # [O, K] POST codes
    mult, shift, bias = (vec.array(layer, n) for n in ("mult", "shift", "bias"))
    samples = int(os.environ.get("VECTORS_SAMPLES") or vec.samples)
    check = VectorChecker(vec)

    cocotb.start_soon(Clock(dut.clk, 10, unit="ns").start())
    dut.rst.value, dut.in_valid.value, dut.in_last.value = 1, 0, 0
    dut.relu.value, dut.relu_floor.value, dut.acc_shift.value = int(rec["relu"]), rec["relu_floor"], rec["acc_shift"]
    for _ in range(2):
        await FallingEdge(dut.clk)
    dut.rst.value = 0
    for s in range(samples):
        x = x_all[s].reshape(-1)
        for o in range(weights.shape[0]):
            dut.mult.value, dut.shift.value, dut.bias.value = int(mult[o]), int(shift[o]), int(bias[o])
            w = weights[o].reshape(-1)
            for i in range(len(x)):
                dut.x.value, dut.w.value = int(x[i]), int(w[i])
                dut.in_valid.value, dut.in_last.value = 1, int(i == len(x) - 1)
                await FallingEdge(dut.clk)
            dut.in_valid.value = 0
            assert dut.out_valid.value == 1, "post_neuron gave no result the cycle after in_last"
            check.compare(layer, dut.acc_out.value.to_signed(), array="acc", sample=s, index=(o,))
            check.compare(layer, dut.value.value.to_signed(), array="value", sample=s, index=(o,))
    dut._log.info("%s: %s", layer, check.summary())
    if os.environ.get("VECTORS_REPORT"):
        first = check.first
        with open(os.environ["VECTORS_REPORT"], "w") as f:
            json.dump({"checked": check.checked, "mismatches": check.mismatches,
                       "first": None if first is None else first._asdict()}, f)
    check.assert_ok()
