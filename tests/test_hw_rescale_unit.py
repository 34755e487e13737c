"""hw.rescale_unit.RescaleUnit alone in Amaranth's simulator against golden.arith.

Tiles of C random accumulators arrive as the array delivers them (one per output tile and pixel,
``max(N_IT, C)`` cycles apart, the pixel's last tile with only ``V_LAST`` valid lanes); every value
must leave numbered ``pixel * N_OUT + o`` and equal :func:`golden.arith.stage_value` (``ACC_SHIFT``,
the input factor with ``INPUT_BETA``) with the channel's CHAN entry at ``C_BASE + o``, plus
:func:`golden.arith.align_value` of the residual with ``ADD_RES``, then :func:`golden.arith.finish_value`
(saturation to 16 bits, the ReLU floor). The first
value must leave ``1 + RESCALE_LATENCY`` cycles after its tile is taken, tiles must be taken the
cycle they arrive, and ``idle`` must rise only when everything has left.
"""

import zlib

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, signed
from amaranth.lib.memory import Memory

from golden import arith
from hw.program import DescField, EngineParams, Flag
from hw.rescale import RESCALE_LATENCY, chan_layout
from hw.rescale_unit import RescaleUnit
from hw.sequencer import desc_const
from test_hw_rescale import chan_const, factor_word, run_sim, table_betas


class UnitHarness(Elaboratable):
    """The unit with its CHAN and residual memories (synchronous reads, as in the engine)."""

    def __init__(self, params, entries, residuals):
        self.dut = RescaleUnit(params)
        self.chan = [chan_const(*e) for e in entries]
        self.res = [int(v) for v in residuals]
        self.params = params

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        m.submodules.chan = chan = Memory(shape=chan_layout(), depth=len(self.chan), init=self.chan)
        m.submodules.res = res = Memory(shape=signed(arith.VALUE_BITS), depth=len(self.res), init=self.res)
        c_rd, r_rd = chan.read_port(), res.read_port()
        m.d.comb += [c_rd.addr.eq(dut.param_addr), c_rd.en.eq(dut.param_en), dut.param.eq(c_rd.data),
                     r_rd.addr.eq(dut.res_addr), r_rd.en.eq(dut.res_en), dut.res.eq(r_rd.data)]
        return m


def reference(accs, entries, cfg, residuals):
    """Values in element order: accs [pixels, n_out]."""
    out = []
    for p, row in enumerate(accs):
        for o, acc in enumerate(row):
            mult, shift, bias = entries[cfg["c_base"] + o]
            beta = [cfg["beta"]] if cfg["use_beta"] else None
            v = arith.stage_value(np.array([[acc]], dtype=np.int64), [mult], [shift], [bias], cfg["acc_shift"], beta)
            res = (arith.align_value(np.int64(residuals[p * len(row) + o]), cfg["res_mult"], cfg["res_shift"])
                   if cfg["add_res"] else None)
            out.append(int(arith.finish_value(v, res, cfg["relu_floor"] if cfg["relu"] else None)[0, 0]))
    return out


def run_unit(params, accs, entries, residuals, cfg, n_span):
    C = params.cols
    pixels, n_out = accs.shape
    n_ot = -(-n_out // C)
    tiles = []
    for p in range(pixels):
        for ot in range(n_ot):
            lanes = [int(v) for v in accs[p, ot * C:(ot + 1) * C]]
            tiles.append(lanes + [12345] * (C - len(lanes)))             # invalid lanes: any value
    top = UnitHarness(params, entries, residuals)
    dut = top.dut
    flags = ((Flag.INPUT_BETA if cfg["use_beta"] else 0) | (Flag.RELU if cfg["relu"] else 0)
             | (Flag.ADD_RES if cfg["add_res"] else 0))
    desc = {DescField.N_OT: n_ot, DescField.V_LAST: n_out - (n_ot - 1) * C, DescField.C_BASE: cfg["c_base"],
            DescField.FLAGS: int(flags), DescField.RELU_FLOOR: cfg["relu_floor"],
            DescField.RES_MULT: cfg["res_mult"], DescField.RES_SHIFT: cfg["res_shift"],
            DescField.ACC_SHIFT: cfg["acc_shift"]}
    got = {"values": [], "idle": []}

    async def tb(ctx):
        ctx.set(dut.desc.as_value(), desc_const(desc))
        ctx.set(dut.beta, factor_word(cfg["beta"]))
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.start, 1)
        await ctx.tick()
        ctx.set(dut.start, 0)
        cycle, pending = 0, []
        total = pixels * n_out
        while len(got["values"]) < total or cycle < 4 + len(tiles) * n_span:
            t, phase = divmod(cycle, n_span)
            ctx.set(dut.tile_in, t < len(tiles) and phase == 0)           # the last step enters the array
            t2, phase2 = divmod(cycle - 2, n_span)                         # ... and leaves it 2 cycles later
            arriving = 0 <= t2 < len(tiles) and phase2 == 0
            t = t2
            ctx.set(dut.i.valid, arriving)
            if arriving:
                ctx.set(dut.i.payload, tiles[t])
                assert ctx.get(dut.i.ready), f"tile {t} not taken on arrival"
                pending.append(cycle)
            if ctx.get(dut.o.valid):
                got["values"].append((int(ctx.get(dut.o.payload.addr)), int(ctx.get(dut.o.payload.value))))
                if len(got["values"]) == 1:
                    got["first_latency"] = cycle - pending[0]
            got["idle"].append(int(ctx.get(dut.idle)))
            await ctx.tick()
            cycle += 1
            assert cycle < 100000
        ctx.set(dut.tile_in, 0)
        ctx.set(dut.i.valid, 0)
        got["idle_after"] = int(ctx.get(dut.idle))

    run_sim(top, tb, max_cycles=200000)
    return got


@pytest.mark.parametrize("cols,n_out,pixels,n_it,use_beta,relu,add_res", [
    (2, 2, 3, 1, False, False, False),      # one tile a pixel, n_it < C (the drain sets the pace)
    (3, 7, 2, 5, True, True, False),        # 3 tiles a pixel, V_LAST 1
    (4, 4, 4, 4, False, True, True),        # n_it == C, residual add
    (1, 3, 2, 2, True, False, True),        # C = 1
    (8, 5, 2, 9, True, True, True),         # one partial tile
])
def test_rescale_unit_random(cols, n_out, pixels, n_it, use_beta, relu, add_res):
    rng = np.random.default_rng(zlib.crc32(repr((cols, n_out, pixels, n_it)).encode()))
    params = EngineParams(rows=2, cols=cols)
    c_base = int(rng.integers(0, 5))
    beta = int(rng.choice(table_betas() + [int(rng.integers(1, 1 << 20))]))
    # channel shifts that put the combined shift (with the factor's) in 18..42
    lo_sh = 18 + arith.FACTOR_MANT_BITS - factor_word(beta)["shift"] if use_beta else 18
    entries = [(int(rng.integers(-(1 << 15) + 1, 1 << 15)), int(rng.integers(max(1, lo_sh), min(63, lo_sh + 24))),
                int(rng.integers(-(1 << 12), 1 << 12))) for _ in range(c_base + n_out)]
    acc_shift = int(rng.integers(0, 4))
    accs = rng.integers(-(1 << 19), 1 << 19, size=(pixels, n_out))
    accs[0, 0] = -(1 << 19)
    residuals = rng.integers(-(1 << 15), 1 << 15, size=pixels * n_out)
    cfg = {"beta": beta, "use_beta": use_beta, "relu": relu, "acc_shift": acc_shift,
           "relu_floor": int(rng.integers(-100, 100)), "c_base": c_base, "add_res": add_res,
           "res_mult": int(rng.integers(1, 1 << 15)), "res_shift": int(rng.integers(1, 21))}
    if relu:                          # a floor inside the values, so that it both cuts and passes
        cfg["relu_floor"] = int(np.median(reference(accs, entries, {**cfg, "relu": False}, residuals)))
    n_span = max(n_it, cols)
    got = run_unit(params, accs, entries, residuals, cfg, n_span)
    exp = reference(accs, entries, cfg, residuals)
    assert [a for a, _ in got["values"]] == list(range(pixels * n_out))
    assert [v for _, v in got["values"]] == exp
    assert got["first_latency"] == 1 + RESCALE_LATENCY
    assert got["idle_after"] == 1 and 0 in got["idle"]
    if relu:
        assert any(v == cfg["relu_floor"] for v in exp) and any(v > cfg["relu_floor"] for v in exp)
