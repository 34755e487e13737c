"""hw.pool.PoolingWalk alone in Amaranth's simulator against golden.arith.

A random value buffer (``CONV_H x OUT_W x N_OUT``, HWC) is walked with random pooling windows
(max and sum, stride, padding, the 1x1 "no pooling" case, global pooling), with and without the
ASQ prescale; the summing walk must hand out :func:`golden.arith.pool2d` of every channel (then
prescaled with :func:`golden.arith.round_shift`), the quantizing walk the codes
``clip(round_shift(q * inv, Q_SHIFT), LO, HI)`` at word ``OUT_BASE + pixel * OCT + c // R``, bank
``c % R``, and the residual writes (``SAVE_RES``) the unprescaled pooled values at ``pixel * N_OUT +
c``. The walk must take exactly ``N_OUT * P_NPIX * PK**2`` cycles and its outputs must all leave
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
        m.submodules.value = mem = Memory(shape=signed(self.params.value_bits), depth=len(self.values),
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


def make_desc(params, n_out, h, w, pk, ps, pp, flags, pre=(0, 0), q_shift=20, lo=0, hi=15, out_base=3):
    ph, pw = geometry(n_out, h, w, pk, ps, pp)
    oct_ = -(-n_out // params.rows)
    return {DescField.N_OUT: n_out, DescField.OUT_W: w, DescField.CONV_H: h, DescField.PK: pk,
            DescField.PS: ps, DescField.PP: pp, DescField.P_W: pw, DescField.P_NPIX: ph * pw,
            DescField.OUT_BASE: out_base, DescField.OCT: oct_, DescField.FLAGS: int(flags),
            DescField.Q_MULT_LO: pre[0], DescField.Q_MULT_HI: pre[1], DescField.Q_SHIFT: q_shift,
            DescField.LO: lo, DescField.HI: hi}


def reference(params, v_chw, pk, ps, pp, mode, pre, inv, q_shift, lo, hi, out_base, save_res):
    n_out = v_chw.shape[0]
    pooled = arith.pool2d(v_chw, pk, ps, pp, mode)                  # [C, PH, PW]
    q = arith.round_shift(pooled * pre[0], pre[1]) if pre[1] else pooled
    npix = pooled.shape[1] * pooled.shape[2]
    flat, qflat = pooled.reshape(n_out, npix), q.reshape(n_out, npix)
    sums = [(c, int(p == 0), int(p == npix - 1), int(qflat[c, p])) for c in range(n_out) for p in range(npix)]
    oct_ = -(-n_out // params.rows)
    codes = [(out_base + p * oct_ + c // params.rows, c % params.rows,
              int(np.clip(arith.round_shift(np.int64(qflat[c, p]) * inv, q_shift), lo, hi)))
             for c in range(n_out) for p in range(npix)]
    res = [(p * n_out + c, int(flat[c, p])) for c in range(n_out) for p in range(npix)] if save_res else []
    return sums, codes, res, npix


CASES = [
    # rows, n_out, h, w, pk, ps, pp, mode, prescale, save_res
    (2, 3, 4, 4, 2, 2, 0, "max", False, False),      # 2x2/2 max pooling
    (3, 5, 5, 5, 3, 2, 1, "max", False, True),       # padded 3x3/2, residual save
    (2, 4, 3, 3, 1, 1, 0, "max", False, True),       # no pooling (PK 1)
    (4, 2, 4, 4, 4, 1, 0, "sum", True, False),       # global sum pooling, prescaled (avg pooling)
    (1, 1, 1, 1, 1, 1, 0, "max", True, False),       # one value
    (2, 6, 5, 4, 2, 1, 1, "sum", False, True),       # padded sum pooling, pad taps add 0
]


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
@pytest.mark.parametrize("sum_pass", [1, 0])
def test_pooling_walk_random(case, sum_pass):
    rows, n_out, h, w, pk, ps, pp, mode, prescale, save_res = case
    params = EngineParams(rows=rows, cols=2, abits=4)
    rng = np.random.default_rng(zlib.crc32(repr(case).encode()) + sum_pass)
    v = rng.integers(-(1 << 20), 1 << 20, size=(n_out, h, w))
    if not prescale and mode == "max":
        v[rng.random(v.shape) < 0.1] = -(1 << 31)             # the most negative value (padded taps tie)
    v[rng.random(v.shape) < 0.1] = (1 << 20)
    shift = int(rng.integers(8, 17))
    pre = (int(rng.integers(1, 1 << shift)), shift) if prescale else (0, 0)   # an average: mult / 2**shift < 1
    inv, q_shift, lo, hi = int(rng.integers(100, 600)), 24, 0, 15       # codes spread over 0..15 and clip
    flags = ((Flag.POOL_SUM if mode == "sum" else 0) | (Flag.PRESCALE if prescale else 0)
             | (Flag.SAVE_RES if save_res else 0))
    desc = make_desc(params, n_out, h, w, pk, ps, pp, flags, pre, q_shift, lo, hi)
    got = run_walk(params, v, desc, sum_pass, inv)
    sums, codes, res, npix = reference(params, v, pk, ps, pp, mode, pre, inv, q_shift, lo, hi, 3, save_res)
    assert got["cycles"] == n_out * npix * pk * pk
    if sum_pass:
        assert got["sums"] == sums and got["codes"] == [] and got["res"] == []
    else:
        assert got["sums"] == [] and got["codes"] == codes and got["res"] == res
        if len(codes) >= 8:
            assert len({c for _, _, c in codes}) >= 3                   # the codes are not degenerate
