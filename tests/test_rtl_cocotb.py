"""The generated Verilog, run by cocotb on Icarus and Verilator, against the golden integer executor.

A trained digits MLP (real QAT, exported to the one integer graph format) is compiled to an engine
program; real digits test samples go through the RTL, and every output of every layer must equal the
executor's (golden.intdag.run_graph).
The last tests prove the comparison can fail: a corrupted weight code and a corrupted expected
value must both be reported, naming the layer.
"""

import copy

import numpy as np
import pytest

from flows.compile import compile_graph, expected_outputs
from golden.data import load_digits_split
from golden.intdag import run_graph
from hw.program import predicted_cycles
from sim.compare import compare_outputs
from sim.cycle_model import model_perf, program_shapes
from sim.rtl import run_rtl

SLICE = {"icarus": 24, "verilator": 90}


def _expected(model, program, n):
    """What every engine layer must output for the first ``n`` digits test samples, and the golden run."""
    x_test = load_digits_split()[2]
    run = run_graph(model, x_test[:n])
    return expected_outputs(model, program, run), run


def _names(program):
    return [layer.name for layer in program.layers]


@pytest.mark.parametrize("backend", ["icarus", "verilator"])
def test_trained_mlp_bit_exact(backend, trained_model, digits_codes):
    codes, labels = digits_codes
    n = SLICE[backend]
    program = compile_graph(trained_model, rows=4, cols=4)
    expected, golden = _expected(trained_model, program, n)
    rtl = run_rtl(program, codes[:n], backend=backend)
    cmp = compare_outputs(expected, rtl.outputs, _names(program))
    assert cmp.ok, cmp.summary()
    assert cmp.values == n * sum(st.weights.shape[0] for st in trained_model.stages)
    # the engine's cycle count is deterministic and equals the documented schedule
    assert rtl.cycles == [predicted_cycles(program.params, program)] * n
    assert rtl.cycles[0] == model_perf(program_shapes(program), 4, 4)["total_cycles"]   # the cycle model
    rtl_pred = np.array([int(np.argmax(o[-1])) for o in rtl.outputs])
    assert (rtl_pred == golden.predictions).all()
    assert (rtl_pred == labels[:n]).mean() > 0.8          # a trained model, not noise


@pytest.mark.parametrize("rows,cols", [(3, 2), (8, 8)])
def test_other_array_shapes_verilator(rows, cols, trained_model, digits_codes):
    """Non-power-of-two rows and a wide array: tiling and bank addressing differ, results must not."""
    codes, _ = digits_codes
    program = compile_graph(trained_model, rows=rows, cols=cols)
    expected, _ = _expected(trained_model, program, 8)
    rtl = run_rtl(program, codes[:8], backend="verilator")
    cmp = compare_outputs(expected, rtl.outputs, _names(program))
    assert cmp.ok, cmp.summary()


def _corrupt_one_code(model, codes_in, layer_index=0):
    """Flip the sign of one large weight (m == 1: ±alpha) that meets a busy input pixel."""
    bad = copy.deepcopy(model)
    stage = bad.stages[layer_index]
    codes = stage.weights
    magnitude = codes & ((1 << (stage.wbits - 1)) - 1)
    busy = codes_in.mean(axis=0)                       # mean input code of each pixel
    candidates = np.argwhere(magnitude == 1)
    o, i = max(candidates, key=lambda oi: busy[oi[1]])
    codes[o, i] ^= 1 << (stage.wbits - 1)
    return bad, stage.name


def test_corrupted_weight_is_caught(trained_model, digits_codes):
    codes, _ = digits_codes
    n = 24
    bad_model, bad_layer = _corrupt_one_code(trained_model, codes[:n])
    program = compile_graph(bad_model, rows=4, cols=4)          # the RTL gets the corrupted code
    expected, _ = _expected(trained_model, program, n)         # the golden model keeps the right one
    rtl = run_rtl(program, codes[:n], backend="icarus")
    cmp = compare_outputs(expected, rtl.outputs, _names(program))
    assert not cmp.ok
    assert cmp.per_layer[bad_layer] > 0
    assert cmp.first[0].layer == bad_layer
    assert bad_layer in cmp.summary()


def test_corrupted_expected_value_is_caught(trained_model, digits_codes):
    codes, _ = digits_codes
    n = 4
    program = compile_graph(trained_model, rows=4, cols=4)
    expected, _ = _expected(trained_model, program, n)
    rtl = run_rtl(program, codes[:n], backend="icarus")
    names = _names(program)
    assert compare_outputs(expected, rtl.outputs, names).ok
    expected[0] = expected[0].copy()
    expected[0][2, 5] += 1
    cmp = compare_outputs(expected, rtl.outputs, names)
    assert cmp.mismatches == 1
    assert (cmp.first[0].layer, cmp.first[0].sample, cmp.first[0].index) == (names[0], 2, 5)


@pytest.mark.parametrize("backend", ["icarus", "verilator"])
def test_conv_stack_on_generated_verilog(backend):
    """A conv(3x3, pad 1) -> conv(3x3, stride 2) -> FC stack with random codes through the generated
    Verilog: every output of every layer equals the golden.arith reference, cycles equal the model."""
    import zlib

    from hw.program import EngineParams, build_program
    from test_hw_conv import SMALL, _shapes, conv_stack

    params = EngineParams(rows=2, cols=3, wbits=4, abits=4, **SMALL)
    rng = np.random.default_rng(zlib.crc32(b"rtl-conv"))
    layers = conv_stack(rng, params, (2, 6, 6), [(4, 3, 1, 1), (3, 3, 2, 1)], 4)
    program = build_program(params, layers)
    samples = np.stack([rng.integers(0, 16, 72) for _ in range(3 if backend == "icarus" else 8)])
    rtl = run_rtl(program, samples, backend=backend)
    for s, x in enumerate(samples):
        for layer, got, exp in zip(layers, rtl.outputs[s], program.reference(x)):
            assert (got == exp).all(), f"{backend} sample {s} layer {layer.name}"
    assert rtl.cycles == [model_perf(_shapes(layers), 2, 3)["total_cycles"]] * len(samples)


def test_depthwise_stack_on_icarus():
    """Depthwise convolutions through the generated Verilog: the engine's depthwise mode (8 channels on
    a 2x4 array: each output tile reads its own channel tiles) and the block-diagonal fallback (6
    channels, not a multiple of C), between dense convolutions, on Icarus."""
    import zlib

    from hw.program import EngineParams, build_program
    from test_hw_conv import SMALL, _shapes, conv_stack

    params = EngineParams(rows=2, cols=4, wbits=4, abits=4, **{**SMALL, "act_words": 256, "max_layers": 8})
    rng = np.random.default_rng(zlib.crc32(b"rtl-depthwise"))
    layers = conv_stack(rng, params, (2, 4, 4), [(8, 3, 1, 1), (8, 3, 1, 1, "dw"), (6, 1, 1, 0),
                                                 (6, 3, 2, 1, "dw")], 3)
    program = build_program(params, layers)
    assert program.layouts[1].ot_step == 2 and program.layouts[3].ot_step == 0      # fast path, fallback
    samples = np.stack([rng.integers(0, 16, 32) for _ in range(2)])
    rtl = run_rtl(program, samples, backend="icarus")
    for s, x in enumerate(samples):
        for layer, got, exp in zip(layers, rtl.outputs[s], program.reference(x)):
            assert (got == exp).all(), f"sample {s} layer {layer.name}"
    assert rtl.cycles == [model_perf(_shapes(layers), 2, 4)["total_cycles"]] * 2
