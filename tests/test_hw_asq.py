"""v2 layers on the engine: per-channel rescale, ReLU floors, max pooling, LSQ and ASQ quantizers.

Random v2 stacks in the v4 arithmetic (``LayerSpec`` with ``chan_mult``/``chan_shift``/``chan_bias``,
``acc_shift``, ``relu_floor``, ``pool``, ``value_frac``, ``AdapterSpec`` with ``h_shift``) run on the RTL in Amaranth's simulator; every output of
every layer must equal :meth:`hw.program.Program.reference_run` and the measured ``cycles`` must
equal :func:`hw.program.predicted_cycles`.

The parameters are calibrated on the samples themselves, like a compiler would from a trained
model (``flows/compile.py::graph_layer_specs`` gives the realistic ranges): per channel, a signed
15-bit mantissa ``mult`` and ``shift`` map the accumulators' 10..90 % range onto a little more than
the output code range (so codes saturate at both ends and take many values in between); some
multipliers are negative, some zero; a layer reading ASQ codes keeps its shifts large enough for the
largest factor of the table. ASQ adapters get 16-bit weights, the smallest ``h_shift`` that keeps the
hidden units in 16 bits for any 16-bit channel sums, large biases and a ``z_frac``
chosen so that ``z`` spreads over a few tenths (the betas differ between samples; one case drives
``z`` off both ends of the factor table, with ``z_frac`` 6, the grid itself); two-layer adapters
center each hidden unit so that its ReLU cuts about a third of the samples. The spread is asserted,
so a degenerate case (every code 0, every code saturated, one beta for all samples) fails.

ASQ prescale (``LayerSpec.pre_mult``/``pre_shift``, ``Flag.PRESCALE``): the layer's values are
calibrated in a unit ``1/pre`` of the quantizer's value unit (with sum pooling, per pooled position),
and the prescale ``golden.arith.prescale(v, pre_mult, 2**(pre_shift-1), pre_shift)`` (saturating)
brings the pooled value into the quantizer's unit before the channel sums, the adapter and the
quantizer -- the integer executor's input rescale of an ASQ stage. Every
program's :meth:`Program.reference_run` is also checked against an independent NumPy computation
(:func:`numpy_run`) written with :mod:`golden.arith` primitives.

:func:`hw.program.build_program` must refuse v2 programs that do not fit, naming the layer.
"""

from __future__ import annotations

import dataclasses
import math
import zlib
from dataclasses import dataclass

import numpy as np
import pytest

from golden import arith
from hw.program import AdapterSpec, DescField, EngineParams, Flag, LayerSpec, build_program, predicted_cycles
from sim.amaranth_sim import run_amaranth

MEM = dict(max_fan_in=128, act_words=128, weight_words=256, chan_words=64, result_words=32, max_layers=4,
           value_words=256, adapter_words=64, max_channels=16)


@dataclass(frozen=True)
class Spec:
    """Recipe of one layer (the test generator turns it into a calibrated :class:`LayerSpec`)."""

    out: int
    conv: tuple | None = None       #: (k, stride, pad); None: fully connected
    pool: tuple | None = None       #: (k, stride, pad) max pooling on v
    relu: float | None = None       #: ReLU floor as a fraction of the code range times 2**vf; None: no ReLU
    vf: int = 0                     #: value_frac
    lo: int = 0
    hi: int | None = None           #: None: 2**abits - 1
    asq: tuple | None = None        #: (factor, hidden units; 0: one-layer adapter)
    final: bool = False
    zero_mult: bool = True          #: one channel with multiplier 0
    neg: float = 0.35               #: fraction of negative multipliers
    zero_w_chan: bool = False       #: one output channel with all-zero weights
    z_frac: int | None = None       #: force the adapter's z_frac (else chosen from the sums' spread)
    z_range: tuple = (-0.3, 0.3)    #: range of the real z over the samples
    pool_mode: str = "max"          #: "max" or "sum" (sum over the window: global average pooling)
    pre: float | None = None        #: ASQ prescale: the quantizer's value unit over v's (per pooled position)
    residual: tuple | None = None   #: (earlier layer index, residual range as a fraction of the value range)
    acc_extra: int = 0              #: acc_shift beyond the smallest that fits the rescale operand


def _codes(rng, shape, w):
    """POST codes: 20 % zeros, 15 % largest magnitudes of either sign, the rest exponents 0..12 (a wide
    code's deeper exponents give products that shift to 0)."""
    k = rng.integers(0, min(arith.post_max_exponent(w), 12) + 1, size=shape)
    codes = ((rng.random(shape) < 0.5).astype(np.int64) << (w - 1)) | (k + 1)
    codes[rng.random(shape) < 0.2] = 0
    big = rng.random(shape) < 0.15
    codes[big] = np.where(rng.random(big.sum()) < 0.5, arith.post_code(0, 0, w), arith.post_code(1, 0, w))
    return codes


def _accumulators(p, x_chw, codes4, stride, pad):
    """``[out, oh, ow]`` accumulators of one sample, independently of hw.program (calibration only)."""
    c, h, w = x_chw.shape
    k = codes4.shape[2]
    xp = np.pad(x_chw, ((0, 0), (pad, pad), (pad, pad)))
    oh, ow = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    acc = np.empty((codes4.shape[0], oh, ow), dtype=np.int64)
    for y in range(oh):
        for x in range(ow):
            patch = xp[:, y * stride:y * stride + k, x * stride:x * stride + k]
            acc[:, y, x] = arith.post_product(patch[None], codes4, p.wbits, p.abits, p.frac_bits).sum(axis=(1, 2, 3))
    return acc


def _maxpool(v, k, s, pad):
    c, h, w = v.shape
    vp = np.pad(v, ((0, 0), (pad, pad), (pad, pad)), constant_values=np.iinfo(np.int64).min)
    oh, ow = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    return np.array([[[vp[ch, y * s:y * s + k, x * s:x * s + k].max() for x in range(ow)] for y in range(oh)]
                     for ch in range(c)], dtype=np.int64)


def _w16(rng, shape, lo_bits=11, hi_bits=13):
    """Signed adapter weights with magnitudes in [2**lo_bits, 2**hi_bits)."""
    mag = rng.integers(1 << lo_bits, 1 << hi_bits, size=shape)
    return np.where(rng.random(shape) < 0.5, -mag, mag).astype(np.int64)


def _h_shift(w1, b1, relu: bool) -> int:
    """The smallest h_shift that keeps ``h`` in 16 bits for any 16-bit channel sums (hw.program's check)."""
    s = 1 << (arith.VALUE_BITS - 1)
    top = int(np.abs(w1).sum(axis=1).max()) * s + int(np.abs(b1).max())
    bot = 0 if relu else -top
    need = 0
    while (top >> need) >= s or (bot >> need) < -s:
        need += 1
    return need


def _adapter(rng, spec: Spec, sums):
    """An adapter on the per-sample adapter inputs ``sums`` ``[N, C]`` (golden.arith.asq_sums) whose real
    z spans ``spec.z_range`` over the samples (the smallest pre-bias z maps to its low end); ``h_shift``
    the smallest that fits the hidden units in 16 bits."""
    factor, hidden = spec.asq
    z_lo, z_hi = spec.z_range
    w1 = _w16(rng, (max(hidden, 1), sums.shape[1]))
    if hidden == 0:                      # z = (S @ w1 + b1) >> h_shift: the bias is in H units
        forced = spec.z_frac is not None
        if forced:                       # one channel: 16-bit channel sums must stay within 16 bits of h
            w1[:, 1:] = 0
        unit = w1
        g_unit = (sums @ unit.T)[:, 0]
        for hs in range(32):             # the smallest h_shift that fits (weights scaled to a forced grid)
            w1 = unit
            if forced:
                span_u = max(int(g_unit.max() - g_unit.min()), 1)
                w1 = np.round(unit * ((z_hi - z_lo) * 2.0 ** (spec.z_frac + hs) / span_u)).astype(np.int64)
            g = (sums @ w1.T)[:, 0]
            span = max(int(g.max() - g.min()) >> hs, 1)
            zf = spec.z_frac if forced else max(arith.ASQ_Z_FRAC, round(math.log2(span / (z_hi - z_lo))))
            b1 = np.array([(int(np.floor(z_lo * 2.0 ** zf)) << hs) - int(g.min())])
            if np.any(w1 != 0) and _h_shift(w1, b1, relu=False) <= hs:
                break
        assert np.abs(w1).max() < 1 << 15 and np.any(w1 != 0), w1
        return AdapterSpec(w1=w1, b1=b1, w2=None, b2=None, z_frac=int(zf), factor=factor, h_shift=hs)
    u = sums @ w1.T                                              # [N, H]
    b1 = -np.floor(np.percentile(u, 35, axis=0)).astype(np.int64)  # ReLU cuts about a third of the samples
    hs = _h_shift(w1, b1, relu=True)
    w2 = _w16(rng, (1, hidden), lo_bits=9, hi_bits=13)
    g = ((np.maximum(u + b1, 0) >> hs) @ w2.T)[:, 0]
    span = max(int(g.max() - g.min()), 1)
    zf = max(arith.ASQ_Z_FRAC, round(math.log2(span / (z_hi - z_lo))))
    bias = np.array([int(np.floor(z_lo * 2.0 ** zf)) - int(g.min())])
    return AdapterSpec(w1=w1, b1=b1, w2=w2, b2=bias, z_frac=int(zf), factor=factor, h_shift=hs)


def _stage(layer, acc, b_in):
    """golden.arith's rescale of ``[out, oh, ow]`` accumulators, written per channel: ``(m, sh)`` from
    beta_multiplier for ASQ inputs, shift_round, the bias."""
    mult, shift, bias = layer.chan_params()
    a = acc >> layer.acc_shift
    m, sh = arith.beta_multiplier(mult, shift, b_in) if layer.input_beta else (mult, shift)
    return np.stack([arith.shift_round(a[o] * int(m[o]), int(sh[o])) + int(bias[o]) for o in range(len(mult))])


def numpy_run(p, layers, x, beta=None):
    """Every layer's outputs (CHW, flat), betas and pooled values, computed here with golden.arith primitives
    (independently of :meth:`hw.program.Program.reference_run`). The ASQ prescale is written as the integer
    executor writes it: ``prescale(v, pre_mult, rescale_offset(0.0, pre_shift), pre_shift)``."""
    outs, betas, saved = [], [], []
    names = {}
    for i, layer in enumerate(layers):
        src = i - 1 if layer.input_from is None else (-1 if layer.input_from == "input" else names[layer.input_from])
        inp, b_in = (np.asarray(x, dtype=np.int64), beta) if src < 0 else (outs[src], betas[src])
        if layer.is_conv:
            xi, codes4, stride, pad = inp.reshape(layer.in_chw), layer.dense_codes(), layer.stride, layer.pad
        else:
            xi, stride, pad = inp.reshape(-1, 1, 1), 1, 0
            codes4 = np.asarray(layer.codes, dtype=np.int64)[:, :, None, None]
        v = _stage(layer, _accumulators(p, xi, codes4, stride, pad), b_in)           # [out, oh, ow]
        res = None
        if layer.residual is not None:
            rname, rm, rs = layer.residual
            res = arith.align_value(saved[names[rname]], rm, rs)
        v = arith.finish_value(v, res, layer.relu_floor if layer.relu else None)
        if layer.pool_mode == "sum":
            v = arith.sum_pool(v[None])[0]
        elif layer.pool is not None:
            v = arith.pool2d(v, *layer.pool, mode="max")
        saved.append(v)
        b = None
        if layer.final:
            y = v
        elif layer.adapter is not None:
            a = layer.adapter
            vq = v
            if layer.pre_mult is not None:
                vq = arith.prescale(v, layer.pre_mult, arith.rescale_offset(0.0, layer.pre_shift), layer.pre_shift)
            z = arith.adapter_z(arith.asq_sums(vq[None]), a.w1, a.b1, a.w2, a.b2, a.h_shift)
            idx = int(arith.asq_z_index(z, a.z_frac)[0])
            beta_t, inv_t = arith.asq_tables(a.factor)
            b = int(beta_t[idx])
            y = np.clip(arith.asq_quantize(vq, int(inv_t[idx]), layer.value_frac, layer.out_hi), layer.out_lo,
                        layer.out_hi)
        else:
            lo, hi, vf = layer.quant_params()
            qm, qs = layer.quant_mult_shift()
            y = np.clip(arith.shift_round(v * qm, qs), lo, hi)
        outs.append(np.asarray(y, dtype=np.int64).reshape(-1))
        betas.append(b)
        names[layer.name] = i
    return outs, betas, saved


def build_stack(rng, params, in_shape, specs, samples, betas=None):
    """Calibrated layers for ``specs`` on ``samples`` (``betas``: the host's per-sample input factors)."""
    p = params
    layers = []
    for i, spec in enumerate(specs):
        shape = tuple(in_shape) if not layers else layers[-1].out_chw
        input_beta = betas is not None if i == 0 else layers[-1].adapter is not None
        # inputs and input betas of this layer for every sample (reference of the calibrated prefix)
        if layers:
            prefix = build_program(p, layers)
            runs = [prefix.reference_run(x, None if betas is None else int(betas[s])) for s, x in enumerate(samples)]
            xs = [r[0][-1].reshape(shape) for r in runs]
            bs = [r[1][-1] for r in runs] if input_beta else [None] * len(samples)
        else:
            xs = [x.reshape(shape) for x in samples]
            bs = [int(b) for b in betas] if input_beta else [None] * len(samples)
        if spec.conv is not None:
            k, stride, pad = spec.conv
            codes = _codes(rng, (spec.out, shape[0], k, k), p.wbits)
            codes4 = codes
        else:
            k, stride, pad = 1, 1, 0
            codes = _codes(rng, (spec.out, int(np.prod(shape))), p.wbits)
            codes4 = codes[:, :, None, None]
            xs = [x.reshape(-1, 1, 1) for x in xs]
        if spec.zero_w_chan:
            codes[spec.out // 2] = 0
            codes4 = codes if spec.conv is not None else codes[:, :, None, None]
        fan_in = int(np.prod(codes4.shape[1:]))
        if input_beta:              # the smallest beta_shift of the input factors
            bs_min = (int(arith.factor_words(layers[-1].adapter.factor)[1].min()) if layers else
                      min(int(arith.normalize_fixed(b, arith.ASQ_BETA_FRAC)[1]) for b in betas))
        acc_shift = arith.acc_shift_for(fan_in * arith.max_product_magnitude(p.abits, p.frac_bits)) + spec.acc_extra
        # the rescale operand a = acc >> acc_shift times the input factor (beta_multiplier), as floats
        acc = np.stack([_accumulators(p, x, codes4, stride, pad) / 2.0 ** acc_shift
                        * (1.0 if b is None else b / 2.0 ** arith.ASQ_BETA_FRAC) for x, b in zip(xs, bs)])
        calib = acc[2:]              # the random samples (the all-zero and all-largest ones may saturate)
        # per-channel rescale: accumulators' 10..90 % range -> a bit more than the code range
        hi = spec.hi if spec.hi is not None else 2 ** p.abits - 1
        if spec.final:
            t_lo, t_hi = -(1 << 12), 1 << 12
        else:
            width = (hi - spec.lo + 1) * 2 ** spec.vf
            t_lo, t_hi = spec.lo * 2 ** spec.vf - 0.15 * width, hi * 2 ** spec.vf + 0.15 * width
        # ASQ prescale: v in units 1/pre of the quantizer's (a sum-pooled value: per position); sum_pool's
        # value is sum / 2**pool_shift = mean * gain, and pre_mult / 2**pre_shift = pre / gain
        n_sum = spec.pool[0] ** 2 if spec.pool_mode == "sum" else 1
        gain = n_sum / 2 ** arith.sum_pool_shift(n_sum)
        pre_mult = pre_shift = None
        scale = 1.0
        if spec.pre is not None:
            assert spec.asq is not None
            pre_mult, pre_shift = arith.signed_multiplier(spec.pre / gain)
            assert 0 < pre_mult < 1 << 15
            scale = pre_mult / 2.0 ** pre_shift * gain
        t_lo, t_hi = t_lo / scale, t_hi / scale
        # a residual add: r = align_value(the source's pooled values), spanning a fraction of the value range
        res, res_r = None, None
        if spec.residual is not None:
            r_src, frac = spec.residual
            r_in = np.stack([numpy_run(p, layers, x, None if betas is None else int(betas[s]))[2][r_src]
                             for s, x in enumerate(samples)])                      # [N, C, H, W]
            r_span = max(float(np.percentile(r_in, 90) - np.percentile(r_in, 10)), 1.0)
            rm, rsh = arith.signed_multiplier(frac * (t_hi - t_lo) / r_span)
            res = (layers[r_src].name, rm, rsh)
            res_r = arith.align_value(r_in, rm, rsh)
        mult, bias, shift = (np.zeros(spec.out, dtype=np.int64) for _ in range(3))
        for o in range(spec.out):
            neg = rng.random() < spec.neg
            a = calib[:, o]                                   # [N - 2, oh, ow]
            if spec.pool is not None and spec.pool_mode == "sum":   # calibrate on the windows' means
                a = np.stack([arith.pool2d(x[None], *spec.pool, mode="sum")[0] / n_sum for x in a])
            elif spec.pool is not None:                       # calibrate on what the pooling keeps
                a = np.stack([(-1 if neg else 1) * _maxpool((-1 if neg else 1) * x[None], *spec.pool)[0] for x in a])
            a = a.reshape(-1)
            a_lo, a_hi = np.percentile(a, 10), np.percentile(a, 90)
            if a_hi - a_lo < 1e-3:                 # all-zero weights: a constant accumulator, any scale
                a_hi = a_lo + 1000.0
            o_lo, o_hi = t_lo, t_hi
            if res_r is not None:                  # room for the residual: center the sum on the range
                r_mid = float(np.median(res_r[:, o]))
                o_lo, o_hi = t_lo - r_mid, t_hi - r_mid
            if spec.zero_mult and o == spec.out - 1 and spec.out > 1:
                # multiplier 0: v = bias, a constant inside the range
                mult[o], shift[o] = 0, int(rng.integers(arith.FACTOR_MANT_BITS + 1 - bs_min if input_beta else 1, 40))
                bias[o] = int(round(rng.uniform(o_lo, o_hi)))
                continue
            ratio = (o_hi - o_lo) / (a_hi - a_lo)
            if input_beta:          # the largest input factor must leave a rescale shift >= 1 (hw.program)
                ratio = min(ratio, ((1 << 15) - 1) / 2.0 ** (arith.FACTOR_MANT_BITS + 1 - bs_min))
            m, s = arith.signed_multiplier((-1.0 if neg else 1.0) * ratio)
            r = m / 2.0 ** s
            mult[o], shift[o], bias[o] = m, s, int(round(o_lo - r * (a_hi if neg else a_lo)))
        layer = LayerSpec(
            codes=codes, name=f"l{i}", final=spec.final, in_shape=shape if spec.conv is not None else None,
            stride=stride, pad=pad, chan_mult=mult, chan_bias=bias, chan_shift=shift, acc_shift=acc_shift,
            input_beta=input_beta, relu=spec.relu is not None, pool=spec.pool, out_lo=0 if spec.final else spec.lo,
            out_hi=0 if spec.final else hi, value_frac=spec.vf, pool_mode=spec.pool_mode,
            pre_mult=pre_mult, pre_shift=pre_shift, residual=res,
            relu_floor=int(round(spec.relu * (hi - spec.lo) * 2 ** spec.vf / scale)) if spec.relu is not None else 0)
        if spec.asq is not None:             # the adapter sees the engine's channel sums of this layer
            vs = np.stack([numpy_run(p, layers + [dataclasses.replace(layer, adapter=None, out_hi=hi, pre_mult=None,
                                                                      pre_shift=None)], x,
                                     None if betas is None else int(betas[s]))[2][-1] for s, x in enumerate(samples)])
            vq = layer.prescale(vs) if layer.prescaled else vs
            layer.adapter = _adapter(rng, spec, arith.asq_sums(vq))
        layers.append(layer)
    return layers


def make_samples(rng, params, n_in, n=8):
    """All-zero and all-largest inputs, then uniform and sparse random ones."""
    top = 2 ** params.abits - 1
    xs = [np.zeros(n_in, dtype=np.int64), np.full(n_in, top, dtype=np.int64)]
    for i in range(n - 2):
        x = rng.integers(0, top + 1, n_in)
        xs.append(x * (rng.random(n_in) < 0.6) if i % 2 else x)
    return np.stack(xs).astype(np.int64)


def host_betas(rng, factor, n):
    """Distinct per-sample input betas from the factor table, z within about +-1."""
    beta_t, _ = arith.asq_tables(factor)
    half = len(beta_t) // 2
    idx = half + rng.choice(np.arange(-64, 64), size=n, replace=False)
    return [int(beta_t[i]) for i in idx]


CASES = {
    # name: (engine params, input CHW, [Spec], host-beta factor or None)
    # 3x2 array, a 4x6 input; conv -> pool (2,2,0) -> FC -> FC; LSQ value_frac 0 (ReLU floor 0, a channel
    # with zero weights) and 8 (negative floor, lo > 0); a final layer with a ReLU
    "lsq_conv_pool2_fc_3x2": (dict(rows=3, cols=2), (2, 4, 6), [
        Spec(out=5, conv=(3, 1, 1), pool=(2, 2, 0), relu=0.0, vf=0, zero_w_chan=True),
        Spec(out=6, relu=-0.1, vf=8, lo=2, hi=13),
        Spec(out=3, final=True, relu=0.0, zero_mult=False, neg=0.5)], None),
    # ASQ one-layer adapter (sigmoid), pool (3,2,1), then an input_beta conv with pool (3,1,1)
    "asq_sigmoid_1layer_pool3": (dict(rows=2, cols=2), (3, 4, 4), [
        Spec(out=4, conv=(3, 1, 1), pool=(3, 2, 1), relu=0.0, vf=8, asq=("sigmoid", 0)),
        Spec(out=3, conv=(2, 1, 1), pool=(3, 1, 1), relu=0.15, vf=8, lo=1),
        Spec(out=2, final=True)], None),
    # ASQ two-layer adapter (exp) on a 1x3 array after a stride-2 conv of a 5x6 input, pool (2,1,0), then
    # an input_beta FC (final)
    "asq_exp_2layer_1x3": (dict(rows=1, cols=3), (2, 5, 6), [
        Spec(out=5, conv=(3, 2, 1), pool=(2, 1, 0), vf=8, asq=("exp", 3)),
        Spec(out=3, final=True)], None),
    # the input itself is ASQ-quantized (host betas, exp table); two-layer exp ASQ; ASQ -> ASQ (sigmoid
    # would need a second table: one factor per program)
    "input_beta_asq_exp_2x3": (dict(rows=2, cols=3, wbits=5, abits=3), (5, 1, 1), [
        Spec(out=7, relu=0.0, vf=8, asq=("exp", 2)),
        Spec(out=6, vf=8, asq=("exp", 0), relu=-0.05),
        Spec(out=4, final=True)], "exp"),
    # C = 5 > n_it (1, 4 and 2): short tiles padded with idle cycles. A single-channel 1x1 conv with host
    # betas (sigmoid table, no ASQ layer before it); one-layer ASQ with value_frac 0 and z_frac 6 (the
    # table grid itself: no rounding shift) whose z leaves the table at both ends for some samples;
    # 7 channels = 2 output tiles of 5
    "cols5_single_channel_zfrac6": (dict(rows=2, cols=5), (2, 3, 5), [
        Spec(out=1, conv=(1, 1, 0), relu=0.0, vf=0, hi=12, zero_mult=False),
        Spec(out=3, conv=(2, 1, 1), pool=(2, 1, 0), vf=7, asq=("sigmoid", 0), z_frac=6, z_range=(-9.0, 9.0)),
        Spec(out=7, conv=(1, 1, 0), vf=8, relu=0.0),
        Spec(out=4, final=True)], "sigmoid"),
    # 8-bit weights and activations: largest codes, 255-level outputs, ASQ sigmoid two-layer adapter, then
    # LSQ with value_frac 6 (200 codes of 2**6 units: 16-bit values) and lo > 0; ACC_SHIFT 3 on the conv
    "w8a8_asq_sigmoid_2layer": (dict(rows=2, cols=2, wbits=8, abits=8), (2, 3, 3), [
        Spec(out=3, conv=(2, 1, 0), relu=0.0, vf=6, asq=("sigmoid", 2), acc_extra=3),
        Spec(out=4, vf=6, lo=3, hi=200),
        Spec(out=2, final=True)], None),
    # ASQ prescale (Flag.PRESCALE): a conv whose values are ~27x finer than the quantizer's unit (pre < 1:
    # a 15-bit mantissa with a large shift; value_frac 4 keeps 27x the code range inside 16 bits), max
    # pooling (3,2,1), two-layer sigmoid adapter; then an input_beta conv, ASQ again with a prescale > 1
    # (one-layer adapter) and a negative ReLU floor; final FC
    "asq_prescale_conv_maxpool": (dict(rows=2, cols=3), (3, 5, 5), [
        Spec(out=5, conv=(3, 1, 1), pool=(3, 2, 1), relu=0.0, vf=4, asq=("sigmoid", 2), pre=0.0371),
        Spec(out=4, conv=(2, 1, 0), relu=-0.05, vf=8, asq=("sigmoid", 0), pre=3.3),
        Spec(out=3, final=True)], None),
    # global average pooling as sum pooling over the whole 6x6 map (golden.arith.sum_pool: sum / 4,
    # sum_pool_shift(36) = 2; the rounding ties of sums = 2 mod 4 occur), then ASQ with a prescale of exactly
    # 1/2 (ties at every odd value), no ReLU (negative values round half up too); exp one-layer adapter;
    # then the input_beta FC. value_frac 4: the pooled value is 9 times the mean (guard bits), 16-bit
    "asq_prescale_global_sum_fc": (dict(rows=2, cols=2), (2, 6, 6), [
        Spec(out=6, conv=(3, 1, 1), pool=(6, 1, 0), pool_mode="sum", vf=4, asq=("exp", 0), pre=0.5,
             z_range=(-0.6, 0.6)),
        Spec(out=3, final=True)], None),
    # a prescaled ASQ layer (pre 1/2: ties at every odd value, a negative ReLU floor) whose pooled values a
    # later layer adds as its residual: the saved map must be the un-prescaled v (SAVE_RES)
    "asq_prescale_saved_residual": (dict(rows=2, cols=2), (2, 4, 4), [
        Spec(out=4, conv=(3, 1, 1), relu=-0.1, vf=8, asq=("sigmoid", 0), pre=0.5),
        Spec(out=4, conv=(3, 1, 1), relu=0.0, vf=0, residual=(0, 0.5)),
        Spec(out=3, final=True)], None),
}

PRESCALE_CASES = [c for c in CASES if any(spec.pre is not None for spec in CASES[c][2])]


def _check_spread(case, layers, refs, n):
    """Hidden codes take several values and saturate; ASQ betas differ between samples."""
    for l, layer in enumerate(layers):
        if layer.final:
            continue
        codes = np.concatenate([r[0][l] for r in refs])
        lo, hi, vf = layer.quant_params()
        assert len(np.unique(codes)) >= min(5, hi - lo + 1), f"{case} {layer.name}: codes {np.unique(codes)}"
        assert (codes == hi).any(), f"{case} {layer.name}: no code saturates at hi {hi}"
        floor_code = int(arith.round_shift(layer.relu_floor, vf)) if layer.adapter is None else layer.relu_floor
        if not layer.relu or floor_code <= lo:
            assert (codes == lo).any(), f"{case} {layer.name}: no code saturates at lo {lo}"
        assert ((codes > lo) & (codes < hi)).sum() >= len(codes) // 5, f"{case} {layer.name}: mostly saturated"
        if layer.adapter is not None:
            betas = [r[1][l] for r in refs]
            assert len(set(betas)) > n // 2, f"{case} {layer.name}: ASQ betas {betas}"


def _build_case(case):
    """Params, samples, host betas, calibrated layers, program and references of ``CASES[case]``."""
    shape, in_shape, specs, beta_factor = CASES[case]
    params = EngineParams(**shape, **MEM)
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    samples = make_samples(rng, params, int(np.prod(in_shape)))
    betas = host_betas(rng, beta_factor, len(samples)) if beta_factor else None
    layers = build_stack(rng, params, in_shape, specs, samples, betas)
    program = build_program(params, layers)
    refs = [program.reference_run(x, None if betas is None else betas[s]) for s, x in enumerate(samples)]
    return params, specs, samples, betas, layers, program, refs


@pytest.mark.parametrize("case", list(CASES))
def test_v2_engine_matches_reference(case):
    params, specs, samples, betas, layers, program, refs = _build_case(case)
    _check_spread(case, layers, refs, len(samples))
    for l, spec in enumerate(specs):                  # z beyond the table: both ends are looked up
        if spec.asq is not None and max(np.abs(spec.z_range)) > arith.ASQ_Z_LIMIT:
            beta_t, _ = arith.asq_tables(spec.asq[0])
            assert {int(beta_t[0]), int(beta_t[-1])} <= {r[1][l] for r in refs}, [r[1][l] for r in refs]
    run = run_amaranth(program, samples, betas=betas)
    for s in range(len(samples)):
        for layer, got, exp in zip(layers, run["outputs"][s], refs[s][0]):
            assert got.shape == exp.shape, f"{case} sample {s} layer {layer.name}: shape {got.shape} != {exp.shape}"
            bad = np.flatnonzero(got != exp)
            assert bad.size == 0, (f"{case} sample {s} layer {layer.name}: {bad.size}/{got.size} mismatches, first "
                                   f"at {bad[0]}: expected {exp[bad[0]]}, got {got[bad[0]]}")
    assert run["cycles"] == [predicted_cycles(params, program)] * len(samples)


@pytest.mark.parametrize("case", list(CASES))
def test_v2_reference_matches_numpy(case):
    """Program.reference_run equals the independent NumPy computation (every layer, output and beta)."""
    params, specs, samples, betas, layers, program, refs = _build_case(case)
    for s, x in enumerate(samples):
        outs, bs, _ = numpy_run(params, layers, x, None if betas is None else betas[s])
        assert bs == refs[s][1], f"{case} sample {s}: betas {refs[s][1]} != numpy {bs}"
        for layer, got, exp in zip(layers, refs[s][0], outs):
            assert np.array_equal(got, exp), f"{case} sample {s} layer {layer.name}: reference != numpy"


# --- the ASQ prescale ---------------------------------------------------------------------------

def test_prescale_rounding_trick_is_round_shift():
    """The engine's (((v * m) >> (s - 1)) + 1) >> 1 is round_shift(v * m, s), shift_round and the integer
    executor's rescale(v, m, rescale_offset(0, s), s), ties (round half up) and negative values included;
    golden.arith.prescale saturates it to 16 bits."""
    rng = np.random.default_rng(11)
    v = np.concatenate([rng.integers(-(1 << 15), 1 << 15, 4000), np.arange(-40, 41),
                        [-(1 << 15), (1 << 15) - 1]]).astype(np.int64)
    for m, s in [(1, 1), (16384, 15), (32767, 17), (1, 63), (32767, 63), (30000, 14)] + \
                [(int(rng.integers(1, 1 << 15)), int(rng.integers(1, 64))) for _ in range(30)]:
        hw = (((v * m) >> (min(s, arith.MAX_SHIFT) - 1)) + 1) >> 1
        assert np.array_equal(hw, arith.round_shift(v * m, s)), (m, s)
        assert np.array_equal(hw, arith.shift_round(v * m, s)), (m, s)
        assert np.array_equal(hw, arith.rescale(v, m, arith.rescale_offset(0.0, s), s)), (m, s)
        assert np.array_equal(arith.saturate(hw), arith.prescale(v, m, arith.rescale_offset(0.0, s), s)), (m, s)
    assert arith.prescale(np.array([(1 << 15) - 1, -(1 << 15)]), 30000, 1 << 13, 14).tolist() == [32767, -32768]
    # ties: half-way values round up, for negative values too
    assert list(arith.round_shift(np.array([-3, -1, 1, 3]) * 32768, 16)) == [-1, 0, 1, 2]


@pytest.mark.parametrize("case", PRESCALE_CASES)
def test_prescale_descriptor_and_effect(case):
    """PRESCALE layers carry pre_mult / pre_shift in q_mult_lo / q_mult_hi; dropping the prescale changes
    the layer's codes (the RTL comparison sees it); other layers keep their q_mult fields."""
    params, specs, samples, betas, layers, program, refs = _build_case(case)
    for l, (layer, lay) in enumerate(zip(layers, program.layouts)):
        if layer.pre_mult is None:
            assert not lay.flags & Flag.PRESCALE
            if not layer.final:
                qm, qs = layer.quant_mult_shift()
                assert (lay.q_mult_lo, lay.q_mult_hi, lay.q_shift) == (qm, 0, qs)
            continue
        assert lay.flags & Flag.PRESCALE and lay.flags & Flag.ASQ
        assert (lay.q_mult_lo, lay.q_mult_hi) == (layer.pre_mult, layer.pre_shift)
        assert lay.values[DescField.Q_MULT_LO] == layer.pre_mult
        plain = build_program(params, layers[:l] + [dataclasses.replace(layer, pre_mult=None, pre_shift=None)]
                              + layers[l + 1:])
        changed = sum(not np.array_equal(plain.reference_run(x, None if betas is None else betas[s])[0][l],
                                         refs[s][0][l]) for s, x in enumerate(samples))
        assert changed >= len(samples) // 2, f"{case} {layer.name}: the prescale changed {changed} samples"


def test_prescale_saved_residual_is_the_pooled_value():
    """The residual a later layer adds is the prescaled layer's pooled v, not the prescaled value: adding
    the prescaled one instead would change the consumer's codes (so the RTL comparison covers it)."""
    case = "asq_prescale_saved_residual"
    params, specs, samples, betas, layers, program, refs = _build_case(case)
    src, cons = layers[0], layers[1]
    assert src.pre_mult is not None and cons.residual[0] == src.name
    assert program.layouts[0].flags & Flag.SAVE_RES and program.layouts[0].flags & Flag.PRESCALE
    assert program.layouts[1].flags & Flag.ADD_RES
    differ = 0
    for s, x in enumerate(samples):
        outs, bs, saved = numpy_run(params, layers, x)
        assert np.array_equal(outs[1], refs[s][0][1])
        # the consumer by hand, from the source's codes/beta and its saved (un-prescaled) values
        xi = refs[s][0][0].reshape(cons.in_chw)
        acc = _accumulators(params, xi, cons.dense_codes(), cons.stride, cons.pad)
        mult, shift, bias = cons.chan_params()
        v_main = arith.stage_value(acc[None], mult, shift, bias, cons.acc_shift, np.array([refs[s][1][0]]))[0]
        _, rm, rs = cons.residual
        lo, hi, vf = cons.quant_params()
        def codes(r):
            v = arith.finish_value(v_main, arith.align_value(r, rm, rs), cons.relu_floor)
            return np.clip(arith.shift_round(v * (1 << 14), vf + 14), lo, hi).reshape(-1)
        assert np.array_equal(codes(saved[0]), refs[s][0][1])
        differ += not np.array_equal(codes(src.prescale(saved[0])), refs[s][0][1])
    assert differ >= len(samples) // 2, differ


@pytest.mark.parametrize("fields", [(32767, 17), (32767, 4), (1, 1), (32767, 63)])
def test_prescale_field_extremes_on_rtl(fields):
    """The largest multiplier (all 15 bits of q_mult_lo, unsigned; with shift 4 most values saturate), the
    shortest shift (1: no pre-shift
    in the rounding trick) and the longest (63: every value rounds to 0) run bit exact."""
    params, layers = _asq_pair()
    pm, ps = fields
    layers = [dataclasses.replace(layers[0], pre_mult=pm, pre_shift=ps), layers[1]]
    program = build_program(params, layers)
    rng = np.random.default_rng(12)
    samples = make_samples(rng, params, layers[0].in_size, n=3)
    run = run_amaranth(program, samples)
    for s, x in enumerate(samples):
        ref = program.reference_run(x)
        for layer, got, exp, num in zip(layers, run["outputs"][s], ref[0], numpy_run(params, layers, x)[0]):
            assert np.array_equal(got, exp) and np.array_equal(exp, num), (fields, s, layer.name)
    assert run["cycles"] == [predicted_cycles(params, program)] * len(samples)


def _pre(layer, pm, ps):
    return dataclasses.replace(layer, pre_mult=pm, pre_shift=ps)


@pytest.mark.parametrize("change,match", [
    (lambda L: [_pre(L[0], 0, 8), L[1]], r"layer l0: prescale multiplier pre_mult 0 must be an integer in 1\.\.32767"),
    (lambda L: [_pre(L[0], 32768, 8), L[1]], r"layer l0: prescale multiplier pre_mult 32768 .* 1\.\.32767"),
    (lambda L: [_pre(L[0], -5, 8), L[1]], r"layer l0: prescale multiplier pre_mult -5"),
    (lambda L: [_pre(L[0], 1.5, 8), L[1]], r"layer l0: prescale multiplier pre_mult 1\.5 must be an integer"),
    (lambda L: [_pre(L[0], True, 8), L[1]], r"layer l0: prescale multiplier pre_mult True must be an integer"),
    (lambda L: [_pre(L[0], 300, 0), L[1]], r"layer l0: prescale shift pre_shift 0 must be an integer in 1\.\.63"),
    (lambda L: [_pre(L[0], 300, 64), L[1]], r"layer l0: prescale shift pre_shift 64 must be an integer in 1\.\.63"),
    (lambda L: [_pre(L[0], 300, 8.0), L[1]], r"layer l0: prescale shift pre_shift 8\.0 must be an integer"),
    (lambda L: [_pre(L[0], 300, None), L[1]], r"layer l0: the ASQ prescale needs both pre_mult and pre_shift"),
    (lambda L: [_pre(L[0], None, 8), L[1]], r"layer l0: the ASQ prescale needs both pre_mult and pre_shift"),
    (lambda L: [_pre(dataclasses.replace(L[0], adapter=None), 300, 8), dataclasses.replace(L[1], input_beta=False)],
     r"layer l0: pre_mult/pre_shift prescale the input of an ASQ quantizer, but the layer has no adapter"),
    (lambda L: [L[0], _pre(L[1], 300, 8)],
     r"layer l1: pre_mult/pre_shift prescale .* has no quantizer \(final\)"),
])
def test_prescale_build_errors(change, match):
    params, layers = _asq_pair()
    with pytest.raises(ValueError, match=match):
        build_program(params, change(layers))


def test_prescale_gain_saturates_instead_of_refusing():
    """v4: a prescale gain of almost 2**15 is no longer refused (the value, channel-sum and adapter
    registers saturate or are proven from the 16-bit bound): the prescaled values and the channel sums
    pin at the 16-bit limits, and the reference equals the NumPy computation."""
    params, layers = _asq_pair()
    layers = [_pre(layers[0], 32767, 1), layers[1]]
    program = build_program(params, layers)
    rng = np.random.default_rng(13)
    pinned = 0
    for x in make_samples(rng, params, layers[0].in_size, n=4):
        ref = program.reference_run(x)
        outs, bs, saved = numpy_run(params, layers, x)
        assert bs == ref[1] and all(np.array_equal(a, b) for a, b in zip(outs, ref[0]))
        vq = layers[0].prescale(saved[0])
        pinned += int(np.sum(np.abs(vq) >= (1 << 15) - 1))
        assert np.abs(arith.asq_sums(vq[None])).max() < 1 << 15
    assert pinned > 0


# --- build_program errors -----------------------------------------------------------------------

def _asq_pair(params=None):
    """A small valid ASQ program: conv (ASQ, pooled) -> FC (input_beta, final)."""
    params = params or EngineParams(rows=2, cols=2, **MEM)
    rng = np.random.default_rng(7)
    samples = make_samples(rng, params, 2 * 4 * 4)
    layers = build_stack(rng, params, (2, 4, 4), [
        Spec(out=4, conv=(3, 1, 1), pool=(2, 2, 0), relu=0.0, vf=8, asq=("sigmoid", 2)),
        Spec(out=3, final=True)], samples)
    build_program(params, layers)
    return params, layers


def _adapt(layer, **kw):
    return dataclasses.replace(layer, adapter=dataclasses.replace(layer.adapter, **kw))


@pytest.mark.parametrize("change,match", [
    (lambda P, L: (P, [dataclasses.replace(L[0], adapter=None, out_hi=15), L[1]]),
     r"layer l1: input_beta must be set exactly when the previous layer's quantizer is ASQ"),
    (lambda P, L: (P, [L[0], dataclasses.replace(L[1], input_beta=False)]),
     r"layer l1: input_beta must be set exactly when the previous layer's quantizer is ASQ"),
    (lambda P, L: (P, [dataclasses.replace(L[0], final=True, adapter=None)]),
     r"layer l0: the final layer cannot pool"),
    (lambda P, L: (dataclasses.replace(P, max_channels=2), L),
     r"layer l0: 4 channels exceed max_channels 2 .*--max-channels 4"),
    (lambda P, L: (dataclasses.replace(P, value_words=63), L),
     r"layer l0: its 64 values .* exceed value_words 63.*--value-words 64"),
    (lambda P, L: (dataclasses.replace(P, adapter_words=12), L),
     r"layer l0: ASQ adapters need 13 words .*adapter_words 12.*--adapter-words 13"),
    (lambda P, L: (P, [_adapt(L[0], z_frac=5), L[1]]), r"layer l0: adapter z_frac 5 gives Z_SHIFT = z_frac - 6 "
                                                        r"outside 0\.\.63"),
    (lambda P, L: (P, [_adapt(L[0], h_shift=L[0].adapter.h_shift - 1), L[1]]),
     r"layer l0: adapter hidden units h = H >> h_shift .* leave the 16-bit multiplier operand"),
    (lambda P, L: (P, [_adapt(L[0], w1=np.where(np.arange(8).reshape(2, 4) == 3, 1 << 15, L[0].adapter.w1)), L[1]]),
     r"layer l0: adapter weights must be integers that fit 16-bit signed words"),
    (lambda P, L: (P, [_adapt(L[0], w2=np.array([[-(1 << 15) - 1, 5]])), L[1]]),
     r"layer l0: adapter weights must be integers that fit 16-bit signed words"),
    (lambda P, L: (P, [dataclasses.replace(L[0], out_hi=16), L[1]]),
     r"layer l0: output codes 0..16 do not fit the engine's unsigned 4-bit activations.*--abits"),
])
def test_v2_build_program_errors(change, match):
    params, layers = _asq_pair()
    params, layers = change(params, layers)
    with pytest.raises(ValueError, match=match):
        build_program(params, layers)


def test_v2_build_program_two_factors():
    params = EngineParams(rows=2, cols=2, **MEM)
    rng = np.random.default_rng(8)
    samples = make_samples(rng, params, 6)
    layers = build_stack(rng, params, (6, 1, 1), [Spec(out=4, vf=8, asq=("sigmoid", 0)),
                                                  Spec(out=3, vf=8, asq=("sigmoid", 0)),
                                                  Spec(out=2, final=True)], samples)
    build_program(params, layers)
    with pytest.raises(ValueError, match=r"ASQ layers use the factors \['exp', 'sigmoid'\]; .*one factor table"):
        build_program(params, [layers[0], _adapt(layers[1], factor="exp"), layers[2]])


def test_v2_corrupted_adapter_is_caught():
    """The comparison sees the adapter: moving z by 3 table steps in the ADAPT image changes outputs."""
    from hw.program import Sel
    params, layers = _asq_pair()
    program = build_program(params, layers)
    rng = np.random.default_rng(9)
    samples = make_samples(rng, params, layers[0].in_size, n=4)
    a = layers[0].adapter
    b2_addr = len(a.words()) - 1                       # layer l0's adapter starts at ADAPT word 0
    writes = list(program.config_writes)
    k = writes.index(next(w for w in writes if w[0] == Sel.ADAPT and w[1] == b2_addr))
    mask = (1 << arith.ADAPTER_ACC_BITS) - 1
    writes[k] = (Sel.ADAPT, b2_addr, (writes[k][2] + (3 << (a.z_frac - arith.ASQ_Z_FRAC))) & mask)
    run = run_amaranth(dataclasses.replace(program, config_writes=writes), samples)
    bad = {layer.name for s, x in enumerate(samples)
           for layer, got, exp in zip(layers, run["outputs"][s], program.reference_run(x)[0]) if np.any(got != exp)}
    assert "l1" in bad, bad                 # the next layer's input_beta scaling saw a different beta


def test_v2_input_beta_needs_host_beta():
    params = EngineParams(rows=2, cols=2, **MEM)
    rng = np.random.default_rng(10)
    samples = make_samples(rng, params, 6)
    betas = host_betas(rng, "exp", len(samples))
    layers = build_stack(rng, params, (6, 1, 1), [Spec(out=4, vf=8), Spec(out=2, final=True)], samples, betas)
    program = build_program(params, layers)
    assert program.needs_beta and layers[0].input_beta
    with pytest.raises(ValueError, match=r"layer l0 takes ASQ codes: pass the sample's beta"):
        program.reference_run(samples[0])
    with pytest.raises(ValueError, match=r"layer l0 takes ASQ codes"):
        program.input_writes(samples[0], beta=1 << arith.ASQ_TABLE_BITS)
