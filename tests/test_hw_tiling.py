"""Layers larger than the on-chip buffers: output-channel parts (value buffer, weight memory),
programs in passes (weights reloaded by the host between runs, activations kept on chip) and
activation regions reused once read (activation memory).

Every case must give the same outputs as the reference on every layer, and exactly the predicted
cycles (the sum over the passes)."""

import dataclasses
import zlib

import numpy as np
import pytest

from flows.compile import compile_graph, engine_params_for_graph, expected_outputs
from golden.data import load_digits_split
from golden.intdag import run_graph
from hw.program import Ctrl, EngineParams, Sel, build_program, predicted_cycles
from sim.amaranth_sim import run_amaranth
from test_hw_engine import mismatches, random_layers, samples_for

SMALL = dict(max_fan_in=16, act_words=16, chan_words=32, result_words=8, max_layers=8)

# (engine, layer sizes, buffers) -> (slots, passes)
CASES = {
    # 10 and 6 values in a 4-word value buffer: fc1 in parts of 4, 4, 2 channels, fc2 in 4, 2
    "values_2x2": (dict(rows=2, cols=2), [7, 10, 6, 3], dict(value_words=4, weight_words=64), (6, 1)),
    # 32 + 24 + 6 weight tiles in a 20-word weight memory: fc1 and fc2 in two parts each, four passes
    "weights_2x2": (dict(rows=2, cols=2), [7, 16, 6, 3], dict(value_words=64, weight_words=20), (5, 4)),
    # both at once on a 3x2 array: parts of lcm(3, 2) = 6 channels
    "both_3x2": (dict(rows=3, cols=2), [5, 13, 7, 3], dict(value_words=6, weight_words=16), (6, 3)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_parts_and_passes_match_reference(case):
    shape, sizes, buffers, (n_slots, n_passes) = CASES[case]
    params = EngineParams(**shape, **SMALL, **buffers)
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    layers = random_layers(rng, params, sizes)
    program = build_program(params, layers)
    assert (len(program.slots), len(program.passes)) == (n_slots, n_passes)
    assert [program.layers[l].name for l in program.slot_layer][0] == "fc1"
    if n_passes > 1:
        assert all(w[:2] == (int(Sel.CTRL), int(Ctrl.FIRST_LAYER)) for w in
                   [ps.writes[-2] for ps in program.passes])
        assert not any(w[0] == Sel.WEIGHT for w in program.config_writes)
    # the same layers on a roomy engine: one slot a layer, one pass, the same reference outputs
    roomy = build_program(dataclasses.replace(params, value_words=1024, weight_words=1024), layers)
    assert (len(roomy.slots), len(roomy.passes)) == (len(layers), 1)
    samples = samples_for(rng, params, sizes[0])
    run = run_amaranth(program, samples)
    bad = mismatches(program, samples, run["outputs"])
    assert not bad, f"{len(bad)} mismatches, first {bad[:5]}"
    assert run["cycles"] == [predicted_cycles(params, program)] * len(samples)
    assert predicted_cycles(params, program) > predicted_cycles(params, roomy)


def test_parts_and_passes_on_icarus():
    """The generated Verilog (cocotb on Icarus) with a program in passes and parts: the testbench
    reloads each pass's weights and restarts the engine."""
    from sim.rtl import run_rtl
    shape, sizes, buffers, _ = CASES["both_3x2"]
    params = EngineParams(**shape, **SMALL, **buffers)
    rng = np.random.default_rng(7)
    program = build_program(params, random_layers(rng, params, sizes))
    samples = samples_for(rng, params, sizes[0], n=3)
    rtl = run_rtl(program, samples, backend="icarus")
    assert not mismatches(program, samples, rtl.outputs)
    assert rtl.cycles == [predicted_cycles(params, program)] * 3


def test_trained_cnn_in_passes(trained_cnn):
    """The trained digits CNN with a 512-word weight memory: its 32 -> 64 convolution runs in
    output-channel parts, the program in four passes; the engine's reference equals the integer
    executor on every layer (the parts' addressing is what the RTL tests above check)."""
    params = dataclasses.replace(engine_params_for_graph(trained_cnn), weight_words=512, max_layers=8)
    program = compile_graph(trained_cnn, params)
    assert len(program.passes) == 4 and len(program.slots) == 6
    _, _, x_test, _ = load_digits_split()
    run = run_graph(trained_cnn, x_test[:20])
    expected = expected_outputs(trained_cnn, program, run)
    for s in range(20):
        got = program.reference(run.codes[0][s].reshape(-1), None if run.betas[0] is None else int(run.betas[0][s]))
        for layer, g, e in zip(program.layers, got, expected):
            np.testing.assert_array_equal(g, e[s], err_msg=layer.name)


def test_activation_regions_are_reused_when_they_do_not_fit_side_by_side():
    """Input 4 + 5 + 3 + 4 words of regions in a 9-word activation memory: fc2 takes the input's
    region once fc1 has read it, fc3 part of fc1's once fc2 has; fc1 is then not read back."""
    params = EngineParams(rows=2, cols=2, **{**SMALL, "act_words": 9}, value_words=64, weight_words=64)
    rng = np.random.default_rng(11)
    layers = random_layers(rng, params, [7, 10, 6, 8, 3])
    program = build_program(params, layers)
    assert program.kept == [False, True, True, True]
    assert [lay.out_base for lay in program.layouts[:3]] == [4, 0, 3]
    samples = samples_for(rng, params, 7)
    run = run_amaranth(program, samples)
    assert all(out[0] is None for out in run["outputs"])
    assert not mismatches(program, samples, run["outputs"])
    assert run["cycles"] == [predicted_cycles(params, program)] * len(samples)
    roomy = build_program(dataclasses.replace(params, act_words=16), layers)
    assert roomy.kept == [True] * 4 and predicted_cycles(params, roomy) == predicted_cycles(params, program)
    with pytest.raises(ValueError, match=r"layer fc1: its 5-word activation region does not fit act_words 8 next "
                                         r"to the regions still to be read \(input 4 words\); regenerate with "
                                         r"--act-words 9"):
        build_program(dataclasses.replace(params, act_words=8), layers)


def test_layers_that_cannot_be_split_name_the_reason(trained_cnn):
    params = engine_params_for_graph(trained_cnn)
    # features.3 (ASQ) holds 32 channels x 8 x 8 values
    with pytest.raises(ValueError, match=r"layer features.3: its 2048 values .* exceed value_words 1024, and it cannot "
                                         r"run in output-channel parts because its ASQ quantizer needs every "
                                         r"channel's sum; regenerate with --value-words 2048"):
        compile_graph(trained_cnn, dataclasses.replace(params, value_words=1024))
