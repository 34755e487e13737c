"""hw.pool.PoolingWalk alone in Amaranth's simulator against golden.arith.

A random value buffer (``CONV_H x OUT_W x N_OUT``, HWC) is walked with random pooling windows
(max and sum, stride, padding, the 1x1 "no pooling" case, global pooling), with and without the
ASQ prescale; the summing walk must hand out :func:`golden.arith.pool2d` of every channel (sums:
``saturate(shift_round(sum, POOL_SHIFT))``), prescaled with :func:`golden.arith.prescale` (saturated),
the quantizing walk the codes ``clip(shift_round(q * mant, shift), LO, HI)`` at word
``OUT_BASE + pixel * OCT + c // R``, bank ``c % R``, and the residual writes (``SAVE_RES``) the
unprescaled pooled (saturated) values at ``pixel * N_OUT + c``. The walk must take exactly ``N_OUT * P_NPIX * PK**2`` cycles and its outputs must all leave
within ``WALK_FLUSH`` cycles after it.
"""

import zlib

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, signed
from amaranth.lib.memory import Memory

from golden import arith
from hw.pool import PoolingWalk
from hw.program import WALK_FLUSH, DescField, EngineParams, Flag
from hw.sequencer import desc_const
from test_hw_rescale import run_sim


class PoolHarness(Elaboratable):
    """The walk with a value buffer holding ``values`` (synchronous read, as in the engine)."""

    def __init__(self, params, values):
        self.dut = PoolingWalk(params)
        self.values = [int(v) for v in values]
        self.params = params

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        m.submodules.value = mem = Memory(shape=signed(arith.VALUE_BITS), depth=len(self.values),
                                          init=self.values)
        rd = mem.read_port()
        m.d.comb += [rd.addr.eq(dut.val_addr), rd.en.eq(dut.val_en), dut.val_data.eq(rd.data)]
        return m


def run_walk(params, v_chw, desc, sum_pass, inv):
    """One walk on the RTL: (walk cycles, sums outputs, codes, residual writes), each a list of tuples."""
    n_out, h, w = v_chw.shape
    hwc = v_chw.transpose(1, 2, 0).reshape(-1)
    top = PoolHarness(params, hwc)
    dut = top.dut
    got = {"sums": [], "codes": [], "res": []}

    async def tb(ctx):
        ctx.set(dut.desc.as_value(), desc_const(desc))
        ctx.set(dut.sum_pass, sum_pass)
        ctx.set(dut.inv, inv)
        ctx.set(dut.codes.ready, 1)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycles, after = 0, None
        while after is None or after < WALK_FLUSH:
            if after is None:
                cycles += 1
                if ctx.get(dut.end):
                    after = -1
            if ctx.get(dut.sums.valid):
                s = ctx.get(dut.sums.payload)
                got["sums"].append((int(s.ch), int(s.first_pix), int(s.end_ch), int(s.value)))
            if ctx.get(dut.codes.valid):
                c = ctx.get(dut.codes.payload)
                got["codes"].append((int(c.addr), int(c.bank), int(c.code)))
            if ctx.get(dut.res_en):
                got["res"].append((int(ctx.get(dut.res_addr)), int(ctx.get(dut.res_data))))
            await ctx.tick()
            if after is not None:
                after += 1
            assert cycles < 100000
        for _ in range(4):                            # nothing more comes after the flush
            assert not ctx.get(dut.sums.valid) and not ctx.get(dut.codes.valid) and not ctx.get(dut.res_en)
            await ctx.tick()
        got["cycles"] = cycles

    run_sim(top, tb, max_cycles=200000)
    return got


def geometry(n_out, h, w, pk, ps, pp):
    ph, pw = (h + 2 * pp - pk) // ps + 1, (w + 2 * pp - pk) // ps + 1
    return ph, pw


def make_desc(params, n_out, h, w, pk, ps, pp, flags, pre=(0, 0), q_shift=20, lo=0, hi=15, out_base=3,
              pool_shift=0):
    ph, pw = geometry(n_out, h, w, pk, ps, pp)
    oct_ = -(-n_out // params.rows)
    return {DescField.N_OUT: n_out, DescField.OUT_W: w, DescField.CONV_H: h, DescField.PK: pk,
            DescField.PS: ps, DescField.PP: pp, DescField.P_W: pw, DescField.P_NPIX: ph * pw,
            DescField.OUT_BASE: out_base, DescField.OCT: oct_, DescField.FLAGS: int(flags),
            DescField.Q_MULT_LO: pre[0], DescField.Q_MULT_HI: pre[1], DescField.Q_SHIFT: q_shift,
            DescField.LO: lo, DescField.HI: hi, DescField.POOL_SHIFT: pool_shift}


def pooled_values(v_chw, pk, ps, pp, mode, pool_shift):
    """golden.arith: max pooling exact; sum pooling saturate(round_half_up(sum / 2**POOL_SHIFT))."""
    pooled = arith.pool2d(v_chw, pk, ps, pp, mode)                  # [C, PH, PW]
    if mode == "sum":
        pooled = arith.saturate(arith.shift_round(pooled, pool_shift) if pool_shift else pooled)
    return pooled


def reference(params, v_chw, pk, ps, pp, mode, pre, inv, lo, hi, out_base, save_res, pool_shift):
    n_out = v_chw.shape[0]
    pooled = pooled_values(v_chw, pk, ps, pp, mode, pool_shift)
    q = arith.prescale(pooled, pre[0], 1 << (pre[1] - 1), pre[1]) if pre[1] else pooled
    npix = pooled.shape[1] * pooled.shape[2]
    flat, qflat = pooled.reshape(n_out, npix), q.reshape(n_out, npix)
    sums = [(c, int(p == 0), int(p == npix - 1), int(qflat[c, p])) for c in range(n_out) for p in range(npix)]
    oct_ = -(-n_out // params.rows)
    codes = [(out_base + p * oct_ + c // params.rows, c % params.rows,
              int(np.clip(arith.shift_round(np.int64(qflat[c, p]) * inv["mant"], inv["shift"]), lo, hi)))
             for c in range(n_out) for p in range(npix)]
    res = [(p * n_out + c, int(flat[c, p])) for c in range(n_out) for p in range(npix)] if save_res else []
    return sums, codes, res, npix


V_MIN, V_MAX = -2 ** (arith.VALUE_BITS - 1), 2 ** (arith.VALUE_BITS - 1) - 1

CASES = [
    # rows, n_out, h, w, pk, ps, pp, mode, prescale, save_res, pool_shift
    (2, 3, 4, 4, 2, 2, 0, "max", False, False, 0),      # 2x2/2 max pooling
    (3, 5, 5, 5, 3, 2, 1, "max", False, True, 0),       # padded 3x3/2, residual save
    (2, 4, 3, 3, 1, 1, 0, "max", False, True, 0),       # no pooling (PK 1)
    (4, 2, 4, 4, 4, 1, 0, "sum", True, False, 4),       # global sum pooling / 16, prescaled (avg pooling)
    (1, 1, 1, 1, 1, 1, 0, "max", True, False, 0),       # one value
    (2, 6, 5, 4, 2, 1, 1, "sum", False, True, 0),       # padded sum pooling, pad taps add 0, saturated sums
    (2, 3, 6, 6, 3, 3, 0, "sum", True, True, 2),        # windowed sums rounded (3x3 / 4), prescale, residual
    (2, 2, 4, 4, 2, 2, 0, "sum", False, True, 70),      # POOL_SHIFT past 62 acts as 62
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
@pytest.mark.parametrize("sum_pass", [1, 0])
def test_pooling_walk_random(case, sum_pass):
    rows, n_out, h, w, pk, ps, pp, mode, prescale, save_res, pool_shift = case
    params = EngineParams(rows=rows, cols=2, abits=4, act_words=256)
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()) + sum_pass)
    v = rng.integers(V_MIN, V_MAX + 1, size=(n_out, h, w))
    if not prescale and mode == "max":
        v[rng.random(v.shape) < 0.1] = V_MIN                # the most negative value (padded taps tie)
    v[rng.random(v.shape) < 0.1] = V_MAX
    v[rng.random(v.shape) < 0.05] = V_MIN
    shift = int(rng.integers(8, 17))
    # a prescale mult / 2**shift between 1/256 and 128: averages, and gains that saturate
    pre = (int(rng.integers(1, 1 << 15)), shift) if prescale else (0, 0)
    pooled = pooled_values(v, pk, ps, pp, mode, pool_shift)
    q = arith.prescale(pooled, pre[0], 1 << (pre[1] - 1), pre[1]) if prescale else pooled
    mant = min((1 << 15) - 1, max(1, (20 << 24) // max(1, int(q.max()))))
    inv, lo, hi = {"mant": mant, "shift": 24}, 0, 15          # codes spread over 0..20, clipped to 0..15
    flags = ((Flag.POOL_SUM if mode == "sum" else 0) | (Flag.PRESCALE if prescale else 0)
             | (Flag.SAVE_RES if save_res else 0))
    desc = make_desc(params, n_out, h, w, pk, ps, pp, flags, pre, 99, lo, hi, pool_shift=pool_shift)
    got = run_walk(params, v, desc, sum_pass, inv)
    sums, codes, res, npix = reference(params, v, pk, ps, pp, mode, pre, inv, lo, hi, 3, save_res, pool_shift)
    assert got["cycles"] == n_out * npix * pk * pk
    if sum_pass:
        assert got["sums"] == sums and got["codes"] == [] and got["res"] == []
    else:
        assert got["sums"] == [] and got["codes"] == codes and got["res"] == res
        if len(codes) >= 8 and pool_shift <= arith.MAX_SHIFT:
            assert len({c for _, _, c in codes}) >= 3                   # the codes are not degenerate
    # the corners are reached: saturated sums (POOL_SHIFT 0), saturated prescales
    raw = arith.pool2d(v, pk, ps, pp, mode)
    if mode == "sum" and pool_shift == 0:
        assert np.any(raw > V_MAX) and np.any(raw < V_MIN)


def test_pooling_walk_prescale_saturates_both_ways():
    """A prescale gain of 2**14 / 2**1: every non-zero pooled value saturates, in both directions."""
    params = EngineParams(rows=2, cols=2, abits=4)
    v = np.array([[[5, -5], [V_MAX, V_MIN]]], dtype=np.int64)
    pre = ((1 << 15) - 1, 1)
    inv = {"mant": 1 << 14, "shift": 62}
    desc = make_desc(params, 1, 2, 2, 1, 1, 0, Flag.PRESCALE | Flag.SAVE_RES, pre, 0, 0, 15)
    for sum_pass in (1, 0):
        got = run_walk(params, v, desc, sum_pass, inv)
        sums, codes, res, _ = reference(params, v, 1, 1, 0, "max", pre, inv, 0, 15, 3, True, 0)
        if sum_pass:
            assert got["sums"] == sums and [s for *_, s in sums] == [V_MAX, V_MIN, V_MAX, V_MIN]
        else:
            assert got["codes"] == codes and got["res"] == res and [r for _, r in res] == [5, -5, V_MAX, V_MIN]
