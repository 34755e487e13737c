"""Convolutions on the layer engine: k x k kernels, stride, zero padding, conv -> FC, odd channel counts.

Random POST codes and inputs (corner cases included: zero weights, largest codes, all-zero and
all-max inputs), run on the RTL in Amaranth's simulator, compared value by value with the direct
golden.arith reference of hw.program.Program; the measured cycles must equal both the engine's
cycle formula and the cycle model (sim/cycle_model.py) for every shape.
"""

import zlib

import numpy as np
import pytest

from golden import arith
from hw.program import EngineParams, LayerSpec, build_program, predicted_cycles
from sim.amaranth_sim import run_amaranth
from sim.cycle_model import layer_spec_shapes, model_perf

SMALL = dict(max_fan_in=128, act_words=128, weight_words=1024, chan_words=128, result_words=64, max_layers=4)


def _codes(rng, shape, w):
    codes = rng.integers(0, 2 ** w, size=shape)
    codes[rng.random(shape) < 0.2] = 0
    big = rng.random(shape) < 0.1
    codes[big] = np.where(rng.random(big.sum()) < 0.5, arith.post_code(0, 0, w), arith.post_code(1, 0, w))
    return codes


def _rescale(rng, params, fan_in, n, top):
    """Per-channel ``chan_mult``/``chan_shift``/``chan_bias`` and the ``acc_shift`` for ``n`` outputs of
    fan-in ``fan_in`` so that typical values span about ``top`` (some clip, some are 0)."""
    limit = fan_in * arith.max_product_magnitude(params.abits, params.frac_bits)
    acc_shift = arith.acc_shift_for(limit)
    scale = 0.4 * np.sqrt(fan_in) * (2 ** params.abits) * (2 ** params.frac_bits) / 2 ** acc_shift
    mult, shift = (np.array(a, dtype=np.int64) for a in zip(*[arith.fixed_point_multiplier(top / scale * f)
                                                              for f in rng.uniform(0.7, 1.4, n)]))
    return dict(chan_mult=mult, chan_shift=shift, chan_bias=rng.integers(-top // 4, top // 4 + 1, size=n),
                acc_shift=acc_shift)


def conv_stack(rng, params, in_shape, convs, fc_out):
    """``convs``: list of (out_ch, k, stride, pad[, "dw"]); then a final FC with ``fc_out`` outputs.
    ``"dw"``: a depthwise convolution (``out_ch`` must equal the input channels). Hidden layers quantize
    with value_frac 0 (codes = values clipped); the logits span about +-2**12."""
    layers, shape = [], tuple(in_shape)
    for i, conv in enumerate(convs):
        oc, k, stride, pad = conv[:4]
        dw = len(conv) > 4 and conv[4] == "dw"
        c = shape[0]
        assert not dw or oc == c
        codes = _codes(rng, (oc, 1 if dw else c, k, k), params.wbits)
        fan_in = (1 if dw else c) * k * k
        layer = LayerSpec(codes=codes, **_rescale(rng, params, fan_in, oc, 2 ** params.abits),
                          out_hi=2 ** params.abits - 1, name=f"conv{i}", in_shape=shape, stride=stride, pad=pad,
                          groups=c if dw else 1)
        layers.append(layer)
        shape = layer.out_chw
    fan_in = int(np.prod(shape))
    layers.append(LayerSpec(codes=_codes(rng, (fc_out, fan_in), params.wbits),
                            **_rescale(rng, params, fan_in, fc_out, 1 << 12), final=True, name="fc"))
    return layers


def _shapes(layers):
    return layer_spec_shapes(layers)


CASES = {
    # name: (rows, cols, wbits, abits, input CHW, [(out_ch, k, stride, pad)], fc outputs)
    "3x3_pad1_2x2": (2, 2, 4, 4, (3, 5, 5), [(4, 3, 1, 1)], 3),
    "3x3_stride2": (2, 3, 4, 4, (2, 6, 6), [(5, 3, 2, 1)], 4),
    "1x1_conv": (4, 2, 4, 4, (6, 3, 3), [(3, 1, 1, 0)], 2),
    "two_convs_5x5_input": (3, 2, 4, 4, (1, 5, 5), [(4, 3, 1, 1), (3, 3, 2, 0)], 2),
    "odd_channels_no_pad": (4, 4, 4, 3, (5, 4, 4), [(6, 3, 1, 0)], 5),
    "single_channel_w8a8": (1, 3, 8, 8, (1, 4, 4), [(2, 2, 2, 0)], 3),
    "wide_array_narrow_layer": (8, 8, 4, 4, (3, 4, 4), [(2, 3, 1, 1)], 2),
    "2x2_kernel_pad1": (2, 2, 3, 4, (2, 3, 4), [(3, 2, 1, 1)], 2),
    # depthwise: C a multiple of R and of the channels (each output tile reads its own channel tiles) ...
    "depthwise_3x3_2x2": (2, 2, 4, 4, (2, 5, 5), [(4, 1, 1, 0), (4, 3, 1, 1, "dw")], 3),
    "depthwise_stride2_2x4": (2, 4, 4, 4, (8, 4, 5), [(8, 3, 2, 1, "dw"), (3, 1, 1, 0)], 2),
    # ... or not (block-diagonal dense fallback)
    "depthwise_fallback_3x2": (3, 2, 4, 4, (5, 4, 4), [(5, 3, 1, 1, "dw")], 2),
}


@pytest.mark.parametrize("case", list(CASES))
def test_conv_engine_matches_reference(case):
    rows, cols, w, a, in_shape, convs, fc_out = CASES[case]
    params = EngineParams(rows=rows, cols=cols, wbits=w, abits=a, **SMALL)
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    layers = conv_stack(rng, params, in_shape, convs, fc_out)
    program = build_program(params, layers)
    n_in = int(np.prod(in_shape))
    top = 2 ** a - 1
    samples = np.stack([np.zeros(n_in, dtype=np.int64), np.full(n_in, top, dtype=np.int64),
                        rng.integers(0, top + 1, n_in)])
    run = run_amaranth(program, samples)
    for s, x in enumerate(samples):
        for layer, got, exp in zip(layers, run["outputs"][s], program.reference(x)):
            bad = np.flatnonzero(got != exp)
            assert bad.size == 0, f"{case} sample {s} layer {layer.name}: {bad.size} mismatches, first at " \
                                  f"{bad[0]}: expected {exp[bad[0]]}, got {got[bad[0]]}"
    perf = model_perf(_shapes(layers), rows, cols)
    assert run["cycles"] == [predicted_cycles(params, program)] * len(samples) == [perf["total_cycles"]] * 3
    # the data exercised the requantiser's range: some outputs clip, some are zero
    hidden = np.concatenate([program.reference(x)[0] for x in samples])
    assert (hidden == 0).any() and (hidden > 0).any()


@pytest.mark.parametrize("case", list(CASES))
def test_conv_program_cycles_and_reference_spread(case):
    """Without a simulator: the cycle model equals the engine's cycle formula (47 descriptor fields a
    layer) and the reference's hidden codes both clip and are 0 for these layers."""
    rows, cols, w, a, in_shape, convs, fc_out = CASES[case]
    params = EngineParams(rows=rows, cols=cols, wbits=w, abits=a, **SMALL)
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    layers = conv_stack(rng, params, in_shape, convs, fc_out)
    program = build_program(params, layers)
    assert predicted_cycles(params, program) == model_perf(_shapes(layers), rows, cols)["total_cycles"]
    n_in, top = int(np.prod(in_shape)), 2 ** a - 1
    samples = [np.zeros(n_in, np.int64), np.full(n_in, top, np.int64)] + [rng.integers(0, top + 1, n_in)
                                                                          for _ in range(4)]
    hidden = np.concatenate([program.reference(x)[0] for x in samples])
    assert (hidden == 0).any() and (hidden > 0).any()


def test_depthwise_reference_is_per_channel():
    """Program.reference of a depthwise layer equals a direct per-channel convolution (it goes through
    the block-diagonal dense codes, which the engine's weight tiles also come from)."""
    params = EngineParams(rows=2, cols=2, **SMALL)
    rng = np.random.default_rng(5)
    layers = conv_stack(rng, params, (4, 5, 5), [(4, 3, 2, 1, "dw")], 2)
    program = build_program(params, layers)
    dw = layers[0]
    x = rng.integers(0, 16, size=4 * 5 * 5)
    xp = np.pad(x.reshape(4, 5, 5), ((0, 0), (1, 1), (1, 1)))
    mult, shift, bias = dw.chan_params()
    want = np.empty((4, 3, 3), dtype=np.int64)
    for ch in range(4):
        for y in range(3):
            for xx in range(3):
                acc = arith.post_product(xp[ch, 2 * y:2 * y + 3, 2 * xx:2 * xx + 3], dw.codes[ch, 0], 4, 4, 8).sum()
                v = arith.stage_value(np.array([[acc]]), mult[ch:ch + 1], shift[ch:ch + 1], bias[ch:ch + 1],
                                      dw.acc_shift)
                want[ch, y, xx] = arith.quantize_value(arith.finish_value(v), 0, 0, 15)[0, 0]
    assert np.array_equal(program.reference(x)[0], want.reshape(-1))
    assert program.layouts[0].ct == 1 and program.layouts[0].ot_step == 1 and program.layouts[0].n_it == 9


def test_grouped_conv_is_refused():
    params = EngineParams(rows=2, cols=2, **SMALL)
    rng = np.random.default_rng(1)
    layers = conv_stack(rng, params, (4, 4, 4), [(4, 3, 1, 1)], 2)
    grouped = LayerSpec(**{**layers[0].__dict__, "codes": layers[0].codes[:, :2], "groups": 2})
    with pytest.raises(ValueError, match=r"layer conv0: groups=2: the engine runs dense .* and depthwise"):
        build_program(params, [grouped, layers[1]])


def test_conv_layer_checks():
    params = EngineParams(rows=2, cols=2, **SMALL)
    rng = np.random.default_rng(1)
    layers = conv_stack(rng, params, (2, 4, 4), [(3, 3, 1, 1)], 2)
    bad = LayerSpec(**{**layers[0].__dict__, "in_shape": (3, 4, 4)})
    with pytest.raises(ValueError, match=r"in_shape \(3, 4, 4\) must be \(C_in=2"):
        build_program(params, [bad, layers[1]])
    big = LayerSpec(**{**layers[0].__dict__, "codes": _codes(rng, (3, 2, 5, 5), 4), "pad": 0})
    with pytest.raises(ValueError, match="does not fit"):
        build_program(params, [big, layers[1]])
    with pytest.raises(ValueError, match="act-words"):
        build_program(EngineParams(rows=2, cols=2, **{**SMALL, "act_words": 8}), layers)
