"""Residual adds, branches (a layer reading an earlier layer's output) and global average pooling on
the engine (Amaranth simulator) against Program.reference_run (golden.arith).

A small ResNet-like stack: conv → conv → conv + residual(first conv) → {1x1 stride-2 shortcut conv,
3x3 stride-2 conv, both reading the block output} → conv + residual(shortcut) → global average
pooling (golden.arith.sum_pool over the whole map, 2**pool_shift/positions in the quantizer's
multiplier) → FC. Every
layer's parameters are calibrated on the samples so that the codes spread over their range; every
output of every layer must equal the reference and the cycles the schedule.
"""

import dataclasses

import numpy as np
import pytest

from golden import arith
from hw.program import EngineParams, Flag, LayerSpec, build_program, predicted_cycles
from sim.amaranth_sim import run_amaranth
from sim.cycle_model import layer_spec_shapes, model_perf

PARAMS = EngineParams(rows=2, cols=2, wbits=4, abits=4, max_fan_in=64, act_words=256, weight_words=512,
                      chan_words=64, result_words=16, max_layers=8, value_words=256, res_words=128)


def _codes(rng, shape, w=4):
    codes = rng.integers(0, 2 ** w, size=shape)
    codes[rng.random(shape) < 0.2] = 0
    return codes


def _calibrate(layers, layer, samples, hi=15):
    """Per-channel mult/shift/bias (and the acc_shift the layer's accumulators need) mapping the layer's
    accumulators (on ``samples``, after the layers before it) to roughly ``-0.2*hi .. 1.2*hi`` codes
    (value_frac 0). The accumulators are measured by a final probe layer with the identity rescale
    (``2**14 / 2**14``) after a pre-shift that keeps them inside its 16-bit values."""
    bound = layer.fan_in * arith.max_product_magnitude(PARAMS.abits, PARAMS.frac_bits)
    s_probe, s_layer = max(0, bound.bit_length() - 15), arith.acc_shift_for(bound)
    n = layer.fan_out
    probe = dataclasses.replace(layer, final=True, residual=None, pool=None, pool_mode="max", relu=False,
                                chan_mult=np.full(n, 1 << 14), chan_bias=np.zeros(n, np.int64),
                                chan_shift=np.full(n, 14), acc_shift=s_probe, out_hi=0, q_mult=None, q_shift=None,
                                adapter=None)
    program = build_program(dataclasses.replace(PARAMS, result_words=1024), layers + [probe])
    acc = np.stack([program.reference(x)[-1].reshape(n, -1) for x in samples], axis=1)
    acc = acc.reshape(n, -1) * 2.0 ** (s_probe - s_layer)        # in units of acc >> s_layer
    mult, shift, bias = [], [], []
    for o in range(n):
        lo, hi_ = np.percentile(acc[o], 10), np.percentile(acc[o], 90)
        span = max(hi_ - lo, 1.0)
        m, s = arith.signed_multiplier(1.4 * hi / span)
        mult.append(m)
        shift.append(s)
        bias.append(int(round(-lo * m / 2 ** s - 0.2 * hi)))
    return dataclasses.replace(layer, chan_mult=np.array(mult), chan_bias=np.array(bias),
                               chan_shift=np.array(shift), acc_shift=s_layer)


def resnet_like(rng, samples):
    base = dict(relu=True, out_lo=0, out_hi=15, value_frac=0)
    al_m, al_s = arith.signed_multiplier(0.7)                   # residual alignment: 0.7 x the shortcut
    # sum_pool gives sum / 2**sum_pool_shift(9); the mean is sum / 9
    gap_m, gap_s = arith.fixed_point_multiplier(2 ** arith.sum_pool_shift(9) / 9)
    specs = [
        LayerSpec(codes=_codes(rng, (4, 2, 3, 3)), name="c0", in_shape=(2, 5, 5), pad=1, **base),
        LayerSpec(codes=_codes(rng, (4, 4, 3, 3)), name="c1", in_shape=(4, 5, 5), pad=1, **base),
        LayerSpec(codes=_codes(rng, (4, 4, 3, 3)), name="c2", in_shape=(4, 5, 5), pad=1,
                  residual=("c0", al_m, al_s), **base),
        LayerSpec(codes=_codes(rng, (6, 4, 1, 1)), name="short", in_shape=(4, 5, 5), stride=2,
                  **{**base, "relu": False}),
        LayerSpec(codes=_codes(rng, (6, 4, 3, 3)), name="c3", in_shape=(4, 5, 5), stride=2, pad=1,
                  input_from="c2", **base),
        LayerSpec(codes=_codes(rng, (6, 6, 3, 3)), name="c4", in_shape=(6, 3, 3), pad=1,
                  residual=("short", al_m, al_s), pool=(3, 1, 0), pool_mode="sum", q_mult=gap_m,
                  q_shift=gap_s, **base),                       # global average: golden.arith.sum_pool
        LayerSpec(codes=_codes(rng, (3, 6)), name="fc", final=True, chan_mult=np.full(3, 1 << 14),
                  chan_bias=np.zeros(3, np.int64), chan_shift=np.full(3, 14)),
    ]
    layers = []
    for spec in specs:
        if not spec.final:
            spec = _calibrate(layers, spec, samples)
        layers.append(spec)
    return layers


def test_resnet_like_stack_matches_reference():
    rng = np.random.default_rng(42)
    samples = np.concatenate([rng.integers(0, 16, size=(5, 50)), np.full((1, 50), 15), np.zeros((1, 50), int)])
    layers = resnet_like(rng, samples)
    program = build_program(PARAMS, layers)
    flags = {l.name: lay.flags for l, lay in zip(layers, program.layouts)}
    assert flags["c0"] & Flag.SAVE_RES and flags["short"] & Flag.SAVE_RES
    assert flags["c2"] & Flag.ADD_RES and flags["c4"] & Flag.ADD_RES and flags["c4"] & Flag.POOL_SUM
    assert program.layouts[4].in_base == program.layouts[3].in_base == program.layouts[2].out_base   # branch
    run = run_amaranth(program, samples)
    refs = [program.reference(x) for x in samples]
    for s in range(len(samples)):
        for l, layer in enumerate(layers):
            got, exp = run["outputs"][s][l], refs[s][l]
            bad = np.flatnonzero(got != exp)
            assert bad.size == 0, f"sample {s} layer {layer.name}: {bad.size} mismatches, first at {bad[0]}: " \
                                  f"expected {exp[bad[0]]}, got {got[bad[0]]}"
    assert run["cycles"] == [predicted_cycles(PARAMS, program)] * len(samples)
    assert run["cycles"][0] == model_perf(layer_spec_shapes(layers), 2, 2)["total_cycles"]
    for l, layer in enumerate(layers[:-1]):                   # the data used the codes' range
        codes = np.concatenate([r[l] for r in refs])
        assert len(np.unique(codes)) >= 4, (layer.name, np.unique(codes))


def test_resnet_like_program_without_simulator():
    """The stack's layout (saves, adds, the branch, POOL_SHIFT of the 9-position global sum), the cycle
    model against the schedule and the spread of the reference's codes."""
    rng = np.random.default_rng(42)
    samples = np.concatenate([rng.integers(0, 16, size=(5, 50)), np.full((1, 50), 15), np.zeros((1, 50), int)])
    layers = resnet_like(rng, samples)
    program = build_program(PARAMS, layers)
    lay = {l.name: x for l, x in zip(layers, program.layouts)}
    assert lay["c0"].flags & Flag.SAVE_RES and lay["c2"].flags & Flag.ADD_RES and lay["c4"].flags & Flag.POOL_SUM
    assert lay["c4"].pool_shift == arith.sum_pool_shift(9) and all(x.pool_shift == 0 for n, x in lay.items()
                                                                    if n != "c4")
    assert [x.acc_shift for x in program.layouts] == [l.acc_shift for l in layers]
    assert predicted_cycles(PARAMS, program) == model_perf(layer_spec_shapes(layers), 2, 2)["total_cycles"]
    refs = [program.reference(x) for x in samples]
    for l, layer in enumerate(layers[:-1]):
        codes = np.concatenate([r[l] for r in refs])
        assert len(np.unique(codes)) >= 4, (layer.name, np.unique(codes))


def test_residual_reference_is_the_integer_dag_add():
    """The reference's residual add is golden.arith.align_value on the saved (pooled) values, added
    before the saturation and the ReLU (golden.arith.finish_value) — recomputed here by hand for layer c2
    from c0's and c1's outputs."""
    rng = np.random.default_rng(7)
    samples = rng.integers(0, 16, size=(3, 50))
    layers = resnet_like(rng, samples)
    program = build_program(PARAMS, layers)
    c0, c1, c2 = layers[:3]
    for x in samples:
        outs = program.reference(x)
        # c0's values (it does not pool): rescale + ReLU of its accumulators
        def values(layer, inp):
            xp = np.pad(inp.reshape(layer.in_chw), ((0, 0), (1, 1), (1, 1)))
            acc = np.zeros((layer.fan_out, 5, 5), dtype=np.int64)
            for y in range(5):
                for xx in range(5):
                    acc[:, y, xx] = arith.post_product(xp[None, :, y:y + 3, xx:xx + 3], layer.codes, 4, 4, 8
                                                       ).sum(axis=(1, 2, 3))
            m, s, b = layer.chan_params()
            return arith.stage_value(acc[None], m, s, b, layer.acc_shift)[0]
        v0 = arith.finish_value(values(c0, x), None, 0)
        v2 = arith.finish_value(values(c2, outs[1]), arith.align_value(v0, *c2.residual[1:]), 0)
        want = arith.quantize_value(v2, 0, 0, 15)
        assert np.array_equal(outs[2], want.reshape(-1))


@pytest.mark.parametrize("change,match", [
    (lambda L: L[:2] + [dataclasses.replace(L[2], residual=("nope", 1, 1))] + L[3:], r"layer c2: residual 'nope'"),
    (lambda L: L[:2] + [dataclasses.replace(L[2], residual=("c0", 0, 1))] + L[3:],
     r"layer c2: residual alignment .* mult in 1\.\.32767"),
    (lambda L: L[:5] + [dataclasses.replace(L[5], residual=("c0", 100, 8))] + L[6:],
     r"layer c4: residual from layer c0 of shape \(4, 5, 5\) cannot be added"),
    (lambda L: L[:4] + [dataclasses.replace(L[4], input_from="later")] + L[5:],
     r"layer c3: input_from 'later' names no earlier layer"),
    (lambda L: L[:5] + [dataclasses.replace(L[5], pool_mode="mean")] + L[6:], r"pool_mode 'mean'"),
    (lambda L: L[:5] + [dataclasses.replace(L[5], q_mult=1 << 28)] + L[6:], r"layer c4: quantizer multiplier"),
])
def test_residual_and_branch_errors(change, match):
    rng = np.random.default_rng(1)
    samples = rng.integers(0, 16, size=(2, 50))
    layers = resnet_like(rng, samples)
    with pytest.raises(ValueError, match=match):
        build_program(PARAMS, change(layers))


def test_one_saved_map_at_a_time():
    """Two residual sources whose lifetimes overlap cannot share the engine's one residual memory."""
    rng = np.random.default_rng(3)
    samples = rng.integers(0, 16, size=(2, 50))
    L = resnet_like(rng, samples)
    # c2 adds c1 (saved after c0), then c2b adds c0: c1's save replaced c0's map in between
    c2 = dataclasses.replace(L[2], residual=("c1", 100, 8))
    c2b = dataclasses.replace(L[2], name="c2b", residual=("c0", 100, 8))
    with pytest.raises(ValueError, match=r"layer c2b: residual from layer c0, but layer c1 saves its values"):
        build_program(PARAMS, [L[0], L[1], c2, c2b, L[-1]])
    # without c2's use of c1 the same stack is fine (c0's map is kept until a layer saves another)
    ok = dataclasses.replace(L[-1], codes=L[-1].codes[:, :1].repeat(100, axis=1))
    build_program(dataclasses.replace(PARAMS, max_fan_in=128), [L[0], L[1], dataclasses.replace(c2, residual=None), c2b, ok])


def test_resnet_like_stack_on_icarus():
    """The same stack through the generated Verilog (cocotb on Icarus): residual adds, the branch and
    global average pooling bit exact there too."""
    from sim.rtl import run_rtl
    rng = np.random.default_rng(42)
    samples = rng.integers(0, 16, size=(2, 50))
    layers = resnet_like(rng, samples)
    program = build_program(PARAMS, layers)
    rtl = run_rtl(program, samples, backend="icarus")
    for s, x in enumerate(samples):
        for layer, got, exp in zip(layers, rtl.outputs[s], program.reference(x)):
            assert np.array_equal(got, exp), layer.name
    assert rtl.cycles == [predicted_cycles(PARAMS, program)] * 2
