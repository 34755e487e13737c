"""hw.program against the v4 hardware-sized stage arithmetic (V4SPEC, golden/arith.py), pure Python.

* :meth:`hw.program.Program.reference_run` equals a scalar transcription of the spec's per-value steps
  (Python integers, the engine's ``((a*m >> (sh-1)) + 1) >> 1`` rounding) on hand-built layers: values
  that saturate in both directions, input factors at both ends of the tables, sum pooling with
  rounding, ASQ prescales that saturate, adapters that need ``h_shift``, residual adds.
* The encoders: CHAN, TABLE, factor and ADAPT words round-trip, the descriptor's new fields.
* Every check of ``build_program`` that the saturating arithmetic still needs raises a one-line
  :class:`hw.program.EngineFitError` naming the layer and the fix.
"""

import dataclasses

import numpy as np
import pytest

from golden import arith
from hw.program import (CHAN_BITS, CHAN_MULT_BITS, CHAN_SHIFT_BITS, AdapterSpec, Ctrl, DescField, EngineFitError,
                        EngineParams, Flag, LayerSpec, Sel, _host_beta_max, adapt_word, build_program, chan_fields,
                        chan_word, factor_fields, factor_word, table_fields, table_word, table_words)

MEM = dict(max_fan_in=256, act_words=256, weight_words=512, chan_words=128, result_words=64, max_layers=8,
           value_words=512, adapter_words=128, max_channels=32, res_words=256)
VMIN, VMAX = -(1 << 15), (1 << 15) - 1
B = arith.FACTOR_MANT_BITS


# --- the spec, one value at a time ------------------------------------------------------------------

def _rhu(t: int, s: int) -> int:
    """round_half_up(t / 2**s) as the engine computes it (s >= 1), s clamped to MAX_SHIFT."""
    s = min(s, arith.MAX_SHIFT)
    return ((t >> (s - 1)) + 1) >> 1


def _sat(t: int) -> int:
    return max(VMIN, min(VMAX, t))


def _each(arr, f):
    """``f`` of every element (as a Python int), same shape, object dtype."""
    arr = np.asarray(arr)
    return np.array([f(int(t)) for t in arr.reshape(-1)], dtype=object).reshape(arr.shape)


def _norm(f: int) -> tuple[int, int]:
    m, s = arith.normalize_fixed(int(f), arith.ASQ_BETA_FRAC)
    return int(m), int(s)


def spec_run(p, layers, x, beta=None):
    """Every layer's outputs (CHW, flat) and betas, by V4SPEC's steps 1-11 in Python integers."""
    outs, betas, saved, names = [], [], {}, {}
    for i, L in enumerate(layers):
        src = i - 1 if L.input_from is None else (-1 if L.input_from == "input" else names[L.input_from])
        inp, b_in = (np.asarray(x), beta) if src < 0 else (outs[src], betas[src])
        img = np.asarray(inp, dtype=np.int64).reshape(L.in_chw)
        codes = L.dense_codes() if L.is_conv else np.asarray(L.codes)[:, :, None, None]
        k, st, pd = (L.k, L.stride, L.pad) if L.is_conv else (1, 1, 0)
        img = np.pad(img, ((0, 0), (pd, pd), (pd, pd)))
        O, oh, ow = L.conv_chw
        mult, shift, bias = (a.tolist() for a in L.chan_params())
        v = np.zeros((O, oh, ow), dtype=object)
        for o in range(O):
            m, sh = mult[o], shift[o]
            if L.input_beta:                                    # step 2
                bm, bs = _norm(b_in)
                m, sh = (m * bm) >> B, sh + bs - B
                assert sh >= 1
            for y in range(oh):
                for xx in range(ow):
                    patch = img[:, y * st:y * st + k, xx * st:xx * st + k]
                    acc = int(arith.post_product(patch, codes[o], p.wbits, p.abits, p.frac_bits).sum())
                    a = acc >> L.acc_shift                      # step 1
                    assert -(1 << 23) <= a < 1 << 23
                    t = _rhu(a * m, sh) + bias[o]               # step 3
                    if L.residual is not None:                  # step 4
                        rname, rm, rs = L.residual
                        t += _rhu(int(saved[names[rname]][o, y, xx]) * rm, rs)
                    t = _sat(t)                                 # step 5
                    if L.relu:
                        t = max(t, L.relu_floor)
                    v[o, y, xx] = t
        if L.pool_mode == "sum":                                # step 6
            n = oh * ow
            ps = max(0, (n - 1).bit_length() - arith.SUM_POOL_GUARD)
            v = np.array([[[_sat(_rhu(int(v[o].sum()), ps) if ps else int(v[o].sum()))]] for o in range(O)],
                         dtype=object)
        elif L.pool is not None:
            pk, pst, pp = L.pool_kspd
            _, ph, pw = L.out_chw
            pooled = np.zeros((O, ph, pw), dtype=object)
            for o in range(O):
                for y in range(ph):
                    for xx in range(pw):
                        pooled[o, y, xx] = max(int(v[o, yy, xc]) for yy in range(y * pst - pp, y * pst - pp + pk)
                                               for xc in range(xx * pst - pp, xx * pst - pp + pk)
                                               if 0 <= yy < oh and 0 <= xc < ow)
            v = pooled
        saved[i] = v
        b = None
        if L.final:
            y = v
        else:
            lo, hi, vf = L.quant_params()
            if L.adapter is not None:
                a = L.adapter
                vq = v
                if L.prescaled:                                 # step 7
                    vq = _each(v, lambda t, m=L.pre_mult, s=L.pre_shift: _sat(_rhu(t * m, s)))
                C, P = vq.shape[0], vq.shape[1] * vq.shape[2]
                ss = (P - 1).bit_length()                       # step 8
                S = [_sat(_rhu(int(vq[c].sum()), ss) if ss else int(vq[c].sum())) for c in range(C)]
                w1, b1 = np.asarray(a.w1).tolist(), np.asarray(a.b1).tolist()
                two = a.w2 is not None                          # step 9
                w2 = np.asarray(a.w2).reshape(-1).tolist() if two else [1]
                b2 = int(np.asarray(a.b2)[0]) if two else 0
                Z = b2
                for j in range(len(b1)):
                    H = b1[j] + sum(w1[j][c] * S[c] for c in range(C))
                    assert -(1 << 31) <= H < 1 << 31
                    h = (max(H, 0) if two else H) >> a.h_shift
                    assert VMIN <= h <= VMAX
                    Z += w2[j] * h
                assert -(1 << 31) <= Z < 1 << 31
                zs = a.z_frac - arith.ASQ_Z_FRAC
                n = arith.ASQ_Z_LIMIT << arith.ASQ_Z_FRAC
                idx = min(max(_rhu(Z, zs) if zs else Z, -n), n - 1) + n
                beta_t, inv_t = arith.asq_tables(a.factor)
                b = int(beta_t[idx])
                im, ish = _norm(int(inv_t[idx]))                # steps 10, 11
                y = _each(vq, lambda t, m=im, s=vf + ish, lo=lo, hi=hi: min(max(_rhu(t * m, s), lo), hi))
            else:
                qm, qs = L.quant_mult_shift()
                y = _each(v, lambda t, m=qm, s=qs, lo=lo, hi=hi: min(max(_rhu(t * m, s), lo), hi))
        outs.append(np.asarray(y, dtype=np.int64).reshape(-1))
        betas.append(b)
        names[L.name] = i
    return outs, betas


def _same(program, layers, x, beta=None):
    got, gb = program.reference_run(x, beta)
    exp, eb = spec_run(program.params, layers, x, beta)
    assert gb == eb
    for L, g, e in zip(layers, got, exp):
        np.testing.assert_array_equal(g, e, err_msg=L.name)
    return got, gb


# --- hand-built layers ----------------------------------------------------------------------------

def _codes(rng, shape, w=4):
    c = rng.integers(0, 2 ** w, size=shape)
    c[rng.random(shape) < 0.2] = 0
    return c


def _samples(rng, p, n_in, n=6):
    top = 2 ** p.abits - 1
    return [np.zeros(n_in, np.int64), np.full(n_in, top, np.int64)] + [rng.integers(0, top + 1, n_in)
                                                                        for _ in range(n - 2)]


def _chan(rng, n, lo_shift, hi_shift, bias=1000):
    mult = rng.integers(1 << 14, 1 << 15, n) * np.where(rng.random(n) < 0.4, -1, 1)
    return dict(chan_mult=mult.astype(np.int64), chan_shift=rng.integers(lo_shift, hi_shift + 1, n),
                chan_bias=rng.integers(-bias, bias + 1, n))


def _saturating_pair(rng, p):
    """conv (LSQ, ReLU with a negative floor, max pooling) -> FC (final) whose values saturate both ways."""
    c0 = LayerSpec(codes=_codes(rng, (4, 2, 3, 3)), name="c0", in_shape=(2, 5, 5), pad=1,
                   **_chan(rng, 4, 15, 17, bias=300),
                   relu=True, relu_floor=-300, pool=(2, 2, 1), out_hi=15, value_frac=6)
    fc = LayerSpec(codes=_codes(rng, (5, 36)), name="fc", final=True, **_chan(rng, 5, 1, 3, bias=20000))
    return [c0, fc]


def test_saturation_both_ways_and_max_pooling():
    p = EngineParams(rows=2, cols=2, **MEM)
    rng = np.random.default_rng(1)
    layers = _saturating_pair(rng, p)
    program = build_program(p, layers)
    seen, codes = set(), set()
    for x in _samples(rng, p, 50, n=10):
        outs, _ = _same(program, layers, x)
        seen |= {int(v) for v in outs[1]}
        codes |= {int(v) for v in outs[0]}
    assert {0, 15} <= codes and len(codes) > 5, codes
    assert VMIN in seen and VMAX in seen, "the logits never saturated"
    assert len(seen) >= 5, seen


def _beta_layer(rng, factor_shift):
    """An FC reading host ASQ codes: shifts large enough for every table entry."""
    return LayerSpec(codes=_codes(rng, (6, 10)), name="fc", final=True, input_beta=True,
                     **_chan(rng, 6, factor_shift, factor_shift + 6, bias=50))


@pytest.mark.parametrize("factor", arith.ASQ_FACTORS)
def test_input_beta_at_the_table_extremes(factor):
    p = EngineParams(rows=2, cols=2, **MEM)
    rng = np.random.default_rng(2)
    bs_min = int(arith.factor_words(factor)[1].min())
    layer = _beta_layer(rng, B + 1 - bs_min)                  # the smallest shift the largest beta allows
    program = build_program(p, [layer])
    beta_t, _ = arith.asq_tables(factor)
    distinct = set()
    for beta in (int(beta_t.min()), int(beta_t.max()), int(beta_t[len(beta_t) // 2])):
        for x in _samples(rng, p, 10, n=4):
            outs, _ = _same(program, [layer], x, beta)
            distinct.add(tuple(outs[0]))
        w = [d for s, a, d in program.input_writes(np.zeros(10, np.int64), beta) if s == Sel.CTRL]
        assert w == [factor_word(beta)] and factor_fields(w[0]) == _norm(beta)
    assert len(distinct) > 6


def test_host_beta_limit():
    """The largest host beta whose factor keeps layer 0's shifts >= 1 is accepted, the next refused."""
    p = EngineParams(rows=2, cols=2, **MEM)
    rng = np.random.default_rng(3)
    for s_min in (1, 3, 9, 15, 30):
        layer = dataclasses.replace(_beta_layer(rng, 20), chan_shift=np.array([s_min + 5] * 5 + [s_min]))
        program = build_program(p, [layer])
        top = _host_beta_max(layer)
        s = _norm(top)[1]
        assert s >= 1 and s_min + s - B >= 1
        try:
            assert s_min + _norm(top + 1)[1] - B < 1
        except arith.ArithError:                             # beyond any 6-bit shift
            assert s_min >= B
        _same(program, [layer], np.full(10, 15, np.int64), top)
        with pytest.raises(EngineFitError, match=rf"layer fc takes ASQ codes: .* integer in 1\.\.{top}, got {top + 1}"):
            program.reference_run(np.zeros(10, np.int64), top + 1)
    with pytest.raises(EngineFitError, match=r"got 0"):
        program.input_writes(np.zeros(10, np.int64), 0)
    with pytest.raises(EngineFitError, match=r"not ASQ-quantized; pass beta=None"):
        build_program(p, _saturating_pair(rng, p)).reference_run(np.zeros(50, np.int64), 65536)


def test_host_beta_limit_covers_every_layer_reading_the_input():
    """A second layer reading the network input (a branch) with smaller shifts lowers the largest host
    beta; a reader of the input must agree with layer 0 on input_beta."""
    p = EngineParams(rows=2, cols=2, **MEM)
    rng = np.random.default_rng(31)
    l0 = dataclasses.replace(_beta_layer(rng, 20), final=False, out_hi=15, name="a")
    l1 = dataclasses.replace(_beta_layer(rng, 20), chan_shift=np.full(6, 3), input_from="input", name="b")
    program = build_program(p, [l0, l1])
    top = _host_beta_max(l1)
    assert top < _host_beta_max(l0)
    _same(program, [l0, l1], np.full(10, 15, np.int64), top)
    with pytest.raises(EngineFitError, match=rf"layer a takes ASQ codes: .* 1\.\.{top}, got {top + 1}"):
        program.reference_run(np.zeros(10, np.int64), top + 1)
    with pytest.raises(EngineFitError, match=r"^layer b: reads the network input, so input_beta must be True like "
                                             r"layer a's$"):
        build_program(p, [l0, dataclasses.replace(l1, input_beta=False)])


@pytest.mark.parametrize("hw", [1, 4, 6, 9])
def test_sum_pooling_rounds_and_saturates(hw):
    """Global sum pooling over 1, 16, 36 and 81 positions (sum_pool_shift 0, 0, 2, 3): ties round half up,
    large sums saturate; POOL_SHIFT carries sum_pool_shift(positions)."""
    p = EngineParams(rows=2, cols=2, **MEM)
    rng = np.random.default_rng(4 + hw)
    c0 = LayerSpec(codes=_codes(rng, (6, 3, 3, 3)), name="c0", in_shape=(3, hw, hw), pad=1,
                   **_chan(rng, 6, 6, 12, bias=3000), pool=(hw, hw, 0), pool_mode="sum", out_hi=15, value_frac=7)
    fc = LayerSpec(codes=_codes(rng, (3, 6)), name="fc", final=True, **_chan(rng, 3, 4, 6))
    layers = [c0, fc]
    program = build_program(p, layers)
    lay = program.layouts[0]
    assert lay.pool_shift == arith.sum_pool_shift(hw * hw) == max(0, (hw * hw - 1).bit_length() - 4)
    assert lay.flags & Flag.POOL_SUM and lay.sum_shift == 0
    for x in _samples(rng, p, 3 * hw * hw, n=8):
        _same(program, layers, x)
    # ties: a pooled value of exactly k + 1/2 rounds up, for negative sums too (36 positions: shift 2)
    v = np.zeros((2, 6, 6), np.int64)
    v[0, 0, 0], v[1, 0, 0] = -6, 2
    assert arith.sum_pool(v[None])[0].reshape(-1).tolist() == [_rhu(-6, 2), _rhu(2, 2)] == [-1, 1]


def _adapter_layer(rng, hidden, h_shift, relu_floor=-200, pre=None, wscale=1 << 13):
    """conv (ASQ, max pooling (2, 2, 0) of a 4x4 map) whose adapter's hidden sums exceed 16 bits."""
    w1 = rng.integers(wscale // 2, wscale, (max(hidden, 1), 4)) * np.where(rng.random((max(hidden, 1), 4)) < .5, -1, 1)
    if hidden:
        a = AdapterSpec(w1=w1, b1=rng.integers(-(1 << 20), 1 << 20, hidden),
                        w2=rng.integers(-(1 << 12), 1 << 12, (1, hidden)), b2=np.array([12345]),
                        z_frac=26, factor="exp", h_shift=h_shift)
    else:
        a = AdapterSpec(w1=w1, b1=np.array([-777]), w2=None, b2=None, z_frac=13, factor="exp", h_shift=h_shift)
    pm, ps = pre if pre is not None else (None, None)
    return LayerSpec(codes=_codes(rng, (4, 2, 3, 3)), name="c0", in_shape=(2, 4, 4), pad=1,
                     **_chan(rng, 4, 7, 9, bias=2000), relu=True, relu_floor=relu_floor, pool=(2, 2, 0),
                     out_hi=15, value_frac=8, adapter=a, pre_mult=pm, pre_shift=ps)


def _adapter_program(rng, p, hidden, h_shift, **kw):
    c0 = _adapter_layer(rng, hidden, h_shift, **kw)
    fc = LayerSpec(codes=_codes(rng, (3, 16)), name="fc", final=True, input_beta=True, **_chan(rng, 3, 14, 18))
    return [c0, fc]


@pytest.mark.parametrize("hidden,pre", [(3, None), (0, None), (2, (30000, 14)), (1, (3, 1))])
def test_adapters_with_h_shift_and_prescale(hidden, pre):
    """Adapters whose hidden sums need h_shift >= 15 (the smallest that fits them in 16 bits), with and
    without a prescale (one that saturates: 30000/2**14 on values up to 2**15); descriptor H_SHIFT,
    SUM_SHIFT (4 pooled positions: 2), Q_SHIFT = value_frac, Q_MULT_LO/HI = the prescale."""
    p = EngineParams(rows=2, cols=2, **MEM)
    rng = np.random.default_rng(20 + hidden)
    probe = _adapter_program(rng, p, hidden, 31, pre=pre)
    with pytest.raises(EngineFitError, match=r"layer c0: adapter hidden units h = H >> h_shift .* use h_shift (\d+)") as e:
        build_program(p, [dataclasses.replace(probe[0], adapter=dataclasses.replace(probe[0].adapter, h_shift=0)),
                          probe[1]])
    need = int(e.value.args[0].rsplit(" ", 1)[1])
    assert need >= 15
    layers = _adapter_program(np.random.default_rng(20 + hidden), p, hidden, need, pre=pre)
    program = build_program(p, layers)
    lay = program.layouts[0]
    assert (lay.h_shift, lay.sum_shift, lay.pool_shift, lay.q_shift) == (need, 2, 0, 8)
    assert (lay.q_mult_lo, lay.q_mult_hi) == (pre if pre is not None else (0, 0))
    assert bool(lay.flags & Flag.PRESCALE) == (pre is not None)
    assert bool(lay.flags & Flag.ADAPTER_RELU) == (hidden > 0)
    betas = set()
    for x in _samples(rng, p, 32, n=10):
        betas.add(_same(program, layers, x)[1][0])
    assert len(betas) >= 3, betas
    if pre == (30000, 14):
        assert layers[0].prescale(np.array([VMAX, VMIN])).tolist() == [VMAX, VMIN]


def test_residual_add_saturates():
    """A residual whose aligned value pushes the sum past both ends: saturated, then the ReLU floor."""
    p = EngineParams(rows=2, cols=2, **MEM)
    rng = np.random.default_rng(6)
    base = dict(in_shape=(2, 4, 4), pad=1, out_hi=15, value_frac=10)
    layers = [
        LayerSpec(codes=_codes(rng, (2, 2, 3, 3)), name="c0", **_chan(rng, 2, 2, 4, bias=20000), **base),
        LayerSpec(codes=_codes(rng, (2, 2, 3, 3)), name="c1", **_chan(rng, 2, 2, 4, bias=20000),
                  residual=("c0", (1 << 15) - 1, 14), relu=True, relu_floor=-(1 << 15) + 5, **base),
        LayerSpec(codes=_codes(rng, (2, 32)), name="fc", final=True, **_chan(rng, 2, 8, 10)),
    ]
    program = build_program(p, layers)
    assert program.layouts[0].flags & Flag.SAVE_RES and program.layouts[1].flags & Flag.ADD_RES
    assert (program.layouts[1].res_mult, program.layouts[1].res_shift) == ((1 << 15) - 1, 14)
    for x in _samples(rng, p, 32, n=6):
        _same(program, layers, x)


# --- encoders -------------------------------------------------------------------------------------

def test_chan_word_round_trip():
    assert CHAN_BITS == CHAN_MULT_BITS + CHAN_SHIFT_BITS + arith.BIAS_BITS == 40
    rng = np.random.default_rng(7)
    lim, blim = 1 << arith.MULT_BITS, 1 << (arith.BIAS_BITS - 1)
    cases = [(m, s, b) for m in (-lim + 1, -1, 0, 1, lim - 1) for s in (1, 62, 63) for b in (-blim, -1, 0, blim - 1)]
    cases += [(int(rng.integers(-lim + 1, lim)), int(rng.integers(1, 64)), int(rng.integers(-blim, blim)))
              for _ in range(2000)]
    for m, s, b in cases:
        w = chan_word(m, s, b)
        assert 0 <= w < 1 << CHAN_BITS and chan_fields(w) == (m, s, b)
        assert w & 0xFFFF == m & 0xFFFF and (w >> 16) & 63 == s and w >> 22 == b & ((1 << 18) - 1)


@pytest.mark.parametrize("factor", arith.ASQ_FACTORS)
def test_table_and_factor_words(factor):
    words = table_words(factor)
    beta_t, inv_t = arith.asq_tables(factor)
    bm, bs, im, ish = arith.factor_words(factor)
    assert len(words) == arith.asq_table_index_count() == 1024
    for i, w in enumerate(words):
        assert 0 <= w < 1 << arith.ASQ_TABLE_BITS
        assert table_fields(w) == (bm[i], bs[i], im[i], ish[i]) == (*_norm(beta_t[i]), *_norm(inv_t[i]))
        assert w & ((1 << arith.FACTOR_BITS) - 1) == factor_word(int(beta_t[i]))   # the per-layer factor word
        assert w >> arith.FACTOR_BITS == factor_word(int(inv_t[i]))
        assert (1 << (B - 1)) <= bm[i] < 1 << B and 1 <= ish[i] < 64
    assert table_word(1, 2, 3, 4) == 1 | 2 << 15 | 3 << 21 | 4 << 36


def test_adapt_words_are_32_bit_twos_complement():
    for v in (0, 1, -1, (1 << 15) - 1, -(1 << 15), (1 << 31) - 1, -(1 << 31)):
        w = adapt_word(v)
        assert 0 <= w < 1 << 32 and (w - (1 << 32) if w >> 31 else w) == v
        if -(1 << 15) <= v < 1 << 15:                            # a weight: the low 16 bits, sign-extended
            lo = w & 0xFFFF
            assert (lo - (1 << 16) if lo >> 15 else lo) == v
    p = EngineParams(rows=2, cols=2, **MEM)
    layers = _adapter_program(np.random.default_rng(8), p, 2, 31)
    program = build_program(p, layers)
    image = [d for s, a, d in program.config_writes if s == Sel.ADAPT]
    assert image == [adapt_word(v) for v in layers[0].adapter.words()]
    assert len(image) == 2 * (4 + 2) + 1
    tables = [d for s, a, d in program.config_writes if s == Sel.TABLE]
    assert tables == table_words("exp")


def test_descriptor_fields_of_a_plain_layer():
    p = EngineParams(rows=2, cols=2, **MEM)
    rng = np.random.default_rng(9)
    layers = _saturating_pair(rng, p)
    layers[0] = dataclasses.replace(layers[0], acc_shift=3)
    program = build_program(p, layers)
    l0, l1 = program.layouts
    assert (l0.acc_shift, l0.pool_shift, l0.sum_shift, l0.h_shift) == (3, 0, 0, 0)
    assert (l0.q_mult_lo, l0.q_mult_hi, l0.q_shift) == (1 << 14, 0, 6 + 14)     # the identity quantizer
    assert (l1.q_mult_lo, l1.q_mult_hi, l1.q_shift) == (0, 0, 0)                # final: no quantizer
    assert DescField.V_LAST == 46 and l0.fields()[DescField.V_LAST] == l0.v_last
    q = build_program(p, [dataclasses.replace(layers[0], q_mult=12345, q_shift=33), layers[1]]).layouts[0]
    assert (q.q_mult_lo, q.q_mult_hi, q.q_shift) == (12345, 0, 33)
    assert Ctrl.BETA == 1


# --- the checks -----------------------------------------------------------------------------------

def _rep(layer, **kw):
    return dataclasses.replace(layer, **kw)


def _ad(layer, **kw):
    return dataclasses.replace(layer, adapter=dataclasses.replace(layer.adapter, **kw))


PAIR_ERRORS = [
    (lambda L: [_rep(L[0], chan_mult=np.full(4, -(1 << 15))), L[1]],
     r"^layer c0: output 0: rescale multiplier -32768 outside \+-32767 \(a 16-bit signed operand\)"),
    (lambda L: [_rep(L[0], chan_shift=np.zeros(4, np.int64)), L[1]], r"^layer c0: output 0: rescale shift 0 outside 1\.\.63"),
    (lambda L: [L[0], _rep(L[1], chan_bias=np.array([0, 0, 0, 0, -(1 << 17) - 1]))],
     r"^layer fc: output 4: bias -131073 does not fit the engine's 18-bit signed biases"),
    (lambda L: [_rep(L[0], chan_bias=None), L[1]], r"^layer c0: chan_bias must be an integer array of shape \(4,\)"),
    (lambda L: [_rep(L[0], acc_shift=-1), L[1]], r"^layer c0: acc_shift -1 must be an integer in 0\.\.63"),
    (lambda L: [_rep(L[0], relu_floor=1 << 15), L[1]], r"^layer c0: relu_floor 32768 does not fit a 16-bit signed"),
    (lambda L: [_rep(L[0], q_mult=1 << 15), L[1]], r"^layer c0: quantizer multiplier 32768 / shift 20 outside "
                                                     r"1\.\.32767 / 1\.\.63"),
    (lambda L: [_rep(L[0], q_shift=0), L[1]], r"^layer c0: quantizer multiplier 16384 / shift 0 outside"),
    (lambda L: [_rep(L[0], pool_mode="sum"), L[1]],
     r"^layer c0: pool_mode 'sum' is global sum pooling: it needs pool=\(5, 5, 0\) over the whole 5x5 map"),
    (lambda L: [_rep(L[0], value_frac=48), L[1]], r"^layer c0: value_frac 48 outside 0\.\.47"),
]


@pytest.mark.parametrize("change,match", PAIR_ERRORS)
def test_plain_layer_errors(change, match):
    p = EngineParams(rows=2, cols=2, **MEM)
    layers = _saturating_pair(np.random.default_rng(10), p)
    build_program(p, layers)
    with pytest.raises(EngineFitError, match=match) as e:
        build_program(p, change(layers))
    assert "\n" not in str(e.value)


def test_acc_shift_error_names_the_shift_that_fits():
    """A 256-input FC of 8-bit codes at the largest weight: accumulators up to +-256 * 255 * 2**8 need
    acc_shift >= 1; the error names the smallest (golden.arith.acc_shift_for), which then builds."""
    p = EngineParams(rows=2, cols=2, wbits=4, abits=8, **MEM)
    rng = np.random.default_rng(11)
    codes = np.full((2, 256), arith.post_code(0, 0, 4))
    codes[1] = arith.post_code(1, 0, 4)
    fc = LayerSpec(codes=codes, name="fc", final=True, **_chan(rng, 2, 20, 20))
    bound = 256 * arith.max_product_magnitude(8, p.frac_bits)
    need = arith.acc_shift_for(bound)
    assert need == 1 and bound >= 1 << 23
    with pytest.raises(EngineFitError, match=rf"^layer fc: accumulators up to \+-{bound} leave the rescale's 24-bit "
                                             rf"operand after acc_shift 0; use acc_shift {need}$"):
        build_program(p, [fc])
    program = build_program(p, [_rep(fc, acc_shift=need)])
    for x in (np.full(256, 255, np.int64), np.zeros(256, np.int64), rng.integers(0, 256, 256)):
        _same(program, [_rep(fc, acc_shift=need)], x)


def test_input_beta_shift_error():
    p = EngineParams(rows=2, cols=2, **MEM)
    rng = np.random.default_rng(12)
    bs_min = int(arith.factor_words("exp")[1].min())
    layers = _adapter_program(rng, p, 0, 31)
    low = B - bs_min                                          # combined shift 0 for the largest beta
    bad = [layers[0], _rep(layers[1], chan_shift=np.array([20, low, 20]))]
    with pytest.raises(EngineFitError, match=rf"^layer fc: output 1: rescale shift {low} plus the input factor's "
                                             rf"smallest shift {bs_min} less 15 is 0 < 1 \(the largest exp beta\)"):
        build_program(p, bad)
    build_program(p, [layers[0], _rep(layers[1], chan_shift=np.array([20, low + 1, 20]))])


ADAPTER_ERRORS = [
    (lambda L: [_ad(L[0], w1=L[0].adapter.w1 * 8), L[1]],
     r"^layer c0: adapter weights must be integers that fit 16-bit signed words"),
    (lambda L: [_ad(L[0], b2=np.array([1 << 31])), L[1]],
     r"^layer c0: adapter biases must be integers that fit 32-bit signed words"),
    (lambda L: [_ad(L[0], h_shift=32), L[1]], r"^layer c0: adapter h_shift 32 must be an integer in 0\.\.31"),
    (lambda L: [_ad(L[0], z_frac=5), L[1]], r"^layer c0: adapter z_frac 5 gives Z_SHIFT = z_frac - 6 outside 0\.\.63"),
    (lambda L: [_ad(L[0], w1=np.full((2, 4), (1 << 15) - 1), b1=np.array([(1 << 31) - 1, 0])), L[1]],
     r"^layer c0: adapter hidden sums H \(up to \+-\d+ for 16-bit channel sums\) can leave the engine's 32-bit "
     r"accumulators"),
    (lambda L: [_ad(L[0], h_shift=16, w2=np.full((1, 2), (1 << 15) - 1), b2=np.array([(1 << 31) - 1])), L[1]],
     r"^layer c0: adapter output z \(up to \+-\d+\) can leave the engine's 32-bit accumulator"),
    (lambda L: [_rep(L[0], pre_mult=1 << 15, pre_shift=4), L[1]],
     r"^layer c0: prescale multiplier pre_mult 32768 must be an integer in 1\.\.32767"),
    (lambda L: [_rep(L[0], q_mult=3), L[1]], r"^layer c0: an ASQ quantizer takes its multiplier from the factor table"),
]


@pytest.mark.parametrize("change,match", ADAPTER_ERRORS)
def test_adapter_layer_errors(change, match):
    p = EngineParams(rows=2, cols=2, **MEM)
    layers = _adapter_program(np.random.default_rng(13), p, 2, 31)
    build_program(p, layers)
    with pytest.raises(EngineFitError, match=match) as e:
        build_program(p, change(layers))
    assert "\n" not in str(e.value)


def test_residual_alignment_error():
    p = EngineParams(rows=2, cols=2, **MEM)
    base = dict(in_shape=(2, 4, 4), pad=1, out_hi=15, value_frac=10)
    rng = np.random.default_rng(14)
    layers = [LayerSpec(codes=_codes(rng, (2, 2, 3, 3)), name="c0", **_chan(rng, 2, 2, 4), **base),
              LayerSpec(codes=_codes(rng, (2, 2, 3, 3)), name="c1", **_chan(rng, 2, 2, 4),
                        residual=("c0", 1 << 15, 14), **base)]
    with pytest.raises(EngineFitError, match=r"^layer c1: residual alignment \(mult 32768, shift 14\) must have mult "
                                             r"in 1\.\.32767 and shift in 1\.\.63$"):
        build_program(p, layers)
