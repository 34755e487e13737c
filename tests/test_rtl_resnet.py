"""A trained residual network through the engine: the digits ResNet-8 (POST weights, ASQ activations,
identity and 1x1-conv shortcuts, global average pooling) exported as a DAG integer graph, compiled
(one engine layer per stage and distinct consumer quantizer) and run on the generated Verilog
(Verilator: Icarus takes ~2 minutes a sample of this model; the residual ops run on Icarus in
tests/test_hw_residual.py).
Every engine layer's outputs must equal the integer executor's, and the cycles the schedule."""

import numpy as np
import pytest

from flows.compile import compile_graph, expected_outputs
from golden.dagplan import copy_plan
from golden.data import load_digits_split
from golden.intdag import run_graph
from hw.program import predicted_cycles


@pytest.fixture(scope="module")
def compiled(trained_resnet8):
    _, _, x_test, y_test = load_digits_split()
    run = run_graph(trained_resnet8, x_test)
    return trained_resnet8, compile_graph(trained_resnet8), run, y_test


def _inputs(run, idx):
    codes = run.codes[0].reshape(len(run.codes[0]), -1)[idx]
    betas = None if run.betas[0] is None else [int(b) for b in np.asarray(run.betas[0])[idx]]
    return codes, betas


def test_compiled_resnet8_shape(compiled):
    graph, program, run, y = compiled
    names = [l.name for l in program.layers]
    assert names == [copy for _, _, copy, _ in copy_plan(graph)]
    # the block inputs read by a downsampling block's conv1 and its shortcut (different ASQ
    # quantizers) run twice; everything else once
    assert sorted(n for n in names if "~" in n) == ["layers.0.conv2~1", "layers.1.conv2~1"]
    assert len(names) == len(graph.stages) + 2
    assert program.params.value_bits == 16                    # v4: saturating values, fixed by golden.arith
    assert (run.predictions == y).mean() > 0.9


def test_engine_reference_equals_integer_executor_on_every_layer(compiled):
    """The compiler's mapping, on the whole test set: every engine layer (reference model) equals
    the integer executor's codes of the stage it feeds, and the logits."""
    graph, program, run, _ = compiled
    codes, betas = _inputs(run, slice(None))
    expected = expected_outputs(graph, program, run)
    for s in range(len(codes)):
        got = program.reference(codes[s], None if betas is None else betas[s])
        for layer, g, e in zip(program.layers, got, expected):
            np.testing.assert_array_equal(g, e[s], err_msg=f"sample {s}, layer {layer.name}")


@pytest.mark.parametrize("backend,samples", [("verilator", 24)])
def test_resnet8_on_rtl(compiled, backend, samples):
    from sim.rtl import run_rtl
    graph, program, run, _ = compiled
    idx = np.arange(samples) * 7                              # spread over the classes
    codes, betas = _inputs(run, idx)
    rtl = run_rtl(program, codes, backend=backend, betas=betas)
    expected = expected_outputs(graph, program, run)
    for k, s in enumerate(idx):
        for layer, got, exp in zip(program.layers, rtl.outputs[k], expected):
            np.testing.assert_array_equal(got, exp[s], err_msg=f"{backend}: sample {s}, layer {layer.name}")
        assert int(np.argmax(rtl.outputs[k][-1])) == run.predictions[s]
    assert rtl.cycles == [predicted_cycles(program.params, program)] * samples
