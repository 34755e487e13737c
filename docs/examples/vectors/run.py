"""Check post_neuron.v against golden vectors on Icarus, as your own testbench would (docs/vectors.md).

    post-accel vectors MODEL --samples 4 --format hex --out out/vectors
    python docs/examples/vectors/run.py out/vectors [--samples 2]

Builds post_neuron.v with the widths of the vectors' last layer, runs post_neuron_tb.py (cocotb) and
prints the checker's summary; exit status 0 when every value matched.
"""

import argparse
import json
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent.parent.parent)]     # post_neuron_tb, and sim.vectors

from cocotb_tools.runner import get_runner

from sim.vectors import load_vectors


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("vectors", help="a directory written by `post-accel vectors --format hex`")
    ap.add_argument("--samples", type=int, default=None, help="samples to run (default: all)")
    args = ap.parse_args()
    vectors = Path(args.vectors).resolve()
    vec = load_vectors(vectors)
    layer = vec.layers[-1]
    rec, lut = vec.layer(layer), vec.info(layer, "lut")
    if "width" not in lut:
        ap.error(f"{vectors}: the DUT reads its LUT with $readmemh; write the vectors with --format hex")
    with tempfile.TemporaryDirectory() as tmp:
        runner = get_runner("icarus")
        runner.build(sources=[HERE / "post_neuron.v"], hdl_toplevel="post_neuron", build_dir=tmp, always=True,
                     timescale=("1ns", "1ps"), parameters={"ABITS": rec["abits"], "WBITS": rec["wbits"],
                                                           "FRAC": rec["frac_bits"], "LUTW": lut["width"]})
        report = Path(tmp) / "report.json"
        try:
            runner.test(test_module="post_neuron_tb", hdl_toplevel="post_neuron", build_dir=tmp, test_dir=tmp,
                        plusargs=[f"+LUT={vectors / lut['file']}"],
                        extra_env={"VECTORS": str(vectors), "VECTORS_LAYER": layer, "VECTORS_REPORT": str(report),
                                   "VECTORS_SAMPLES": str(args.samples or "")})
        except SystemExit:                     # the runner exits 1 when the cocotb test failed
            pass
        result = json.loads(report.read_text())
    print(f"{layer}: {result['checked']} values checked, {result['mismatches']} mismatches"
          + (f"; first: {result['first']}" if result["first"] else ""))
    return 0 if result["mismatches"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
