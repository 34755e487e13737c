"""The trained digits CNN (POST weights, ASQ activations) through the generated Verilog, bit for bit.

The exported integer graph is compiled to an engine program; real digits test samples go through
the RTL on Icarus and Verilator (cocotb, clock in HDL, Python only for host I/O), and every output
of every layer — the ASQ codes of the pooled feature maps included — must equal the integer
executor's (`golden.intdag.run_graph`), the measured cycles the schedule's. `make demo` runs
the whole test set; CI runs a slice on each simulator.
"""

import numpy as np
import pytest

from flows.compile import compile_graph
from golden.data import load_digits_split
from golden.intdag import run_graph
from hw.program import predicted_cycles
from sim.compare import compare_outputs
from sim.cycle_model import model_perf, program_shapes
from sim.rtl import run_rtl

SLICE = {"icarus": 2, "verilator": 40}


def _golden(graph, n):
    _, _, x_test, y_test = load_digits_split()
    run = run_graph(graph, x_test[:n])
    codes = run.codes[0].reshape(n, -1)
    expected = [run.codes[i + 1].reshape(n, -1) for i in range(len(graph.stages) - 1)] + [run.logits]
    return codes, run, expected, y_test[:n]


@pytest.mark.parametrize("backend", ["icarus", "verilator"])
def test_trained_cnn_bit_exact(backend, trained_cnn):
    n = SLICE[backend]
    program = compile_graph(trained_cnn)
    assert program.layers[1].input_beta and program.layers[0].adapter is not None     # ASQ in the RTL
    assert program.layers[1].pool == (2, 2, 0)
    codes, golden, expected, labels = _golden(trained_cnn, n)
    rtl = run_rtl(program, codes, backend=backend, betas=golden.betas[0])
    cmp = compare_outputs(expected, rtl.outputs, [st.name for st in trained_cnn.stages])
    assert cmp.ok, cmp.summary()
    assert cmp.values == n * sum(int(np.prod(l.out_chw)) for l in program.layers)
    assert rtl.cycles == [predicted_cycles(program.params, program)] * n
    assert rtl.cycles[0] == model_perf(program_shapes(program), 4, 4)["total_cycles"]    # the cycle model
    rtl_pred = np.array([int(np.argmax(o[-1])) for o in rtl.outputs])
    assert (rtl_pred == golden.predictions).all()
    if backend == "verilator":
        assert (rtl_pred == labels).mean() > 0.8                          # a trained model, not noise
        # the trained adapters adapt: every ASQ quantizer picks several betas over these samples, so the
        # RTL's per-sample beta path is checked against a trained model (docs/quantizers.md)
        asq = [b for b in golden.betas if b is not None]
        assert len(asq) == 2 and all(len(np.unique(b)) >= 3 for b in asq), [np.unique(b) for b in asq]


def test_trained_cnn_corrupted_adapter_is_caught(trained_cnn):
    """Shift the first adapter's output bias by a few table steps in the program the RTL runs: the
    comparison against the executor must name the layer whose codes changed."""
    from hw.program import Sel
    program = compile_graph(trained_cnn)
    codes, golden, expected, _ = _golden(trained_cnn, 2)
    a0 = program.layers[0].adapter
    words = a0.words()
    b2_index = len(words) - 1                        # b2 (one-layer adapters: b2 = 0 added last)
    step = 1 << (int(a0.z_frac) - 6)
    writes = list(program.config_writes)
    for i, (sel, addr, value) in enumerate(writes):
        if sel == Sel.ADAPT and addr == b2_index:
            writes[i] = (sel, addr, (words[-1] + 40 * step) & ((1 << 64) - 1))
    program.config_writes = writes
    rtl = run_rtl(program, codes, backend="verilator", betas=golden.betas[0])
    cmp = compare_outputs(expected, rtl.outputs, [st.name for st in trained_cnn.stages])
    assert not cmp.ok and cmp.per_layer[trained_cnn.stages[0].name] > 0


def test_perf_of_the_exported_file_is_the_engine_schedule(trained_cnn_path, trained_cnn):
    """`post-accel perf MODEL` (the cycle model on the file's shapes, pooling and ASQ included) predicts
    exactly the cycles the compiled program takes on the engine."""
    from sim.cycle_model import shapes_from_file
    shapes, unmodelled = shapes_from_file(trained_cnn_path)
    program = compile_graph(trained_cnn)
    assert unmodelled == {}
    assert model_perf(shapes, 4, 4)["total_cycles"] == predicted_cycles(program.params, program)
