"""ChannelRescale and ActQuantizer (hw/rescale.py) in the Amaranth simulator against golden.arith.

ChannelRescale runs inside a small harness with real synchronous CHAN and residual memories (read
ports ``addr = param_addr / res_addr``, ``en = param_en / res_en``), as in the engine. Inputs are
offered with random gaps and the output is taken with random stalls; every output is compared with
``golden.arith.stage_value`` (with the input factor: ``beta_multiplier``), ``align_value`` of the
residual and ``finish_value`` (saturation, ReLU floor). ActQuantizer is compared with
``clip(shift_round(v * mant, shift), lo, hi)`` = ``golden.arith.asq_quantize`` for the tables'
factors. The shared helpers (round_shift, saturate, clamp_shift) are checked exhaustively on small
widths.
"""

import gc
import itertools
import math
import warnings

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, Signal, signed, unsigned
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from golden import arith
from hw.program import CHAN_BITS, CHAN_MULT_BITS, CHAN_SHIFT_BITS, DESC_BITS
from hw.rescale import (QUANT_LATENCY, RESCALE_LATENCY, ActQuantizer, ChannelRescale, chan_layout, clamp_shift,
                        factor_layout, quant_layout, round_shift, saturate)
from sim.amaranth_sim import stream_get, stream_put

MULT_MAX = 2 ** arith.MULT_BITS - 1
BIAS_MIN, BIAS_MAX = -2 ** (arith.BIAS_BITS - 1), 2 ** (arith.BIAS_BITS - 1) - 1
A_MAX = 2 ** (arith.RESCALE_ACC_BITS - 1) - 1            # |a| <= A_MAX (golden.arith.stage_value's check)
V_MIN, V_MAX = -2 ** (arith.VALUE_BITS - 1), 2 ** (arith.VALUE_BITS - 1) - 1
FLOOR_MIN, FLOOR_MAX = V_MIN, V_MAX
CODE_MAX = 2 ** (arith.ABITS_RANGE.stop - 1) - 1
B = arith.FACTOR_MANT_BITS


def run_sim(top, *testbenches, max_cycles=20000):
    """Run until the testbenches finish; a DUT that loses or withholds an output fails instead of hanging."""
    sim = Simulator(top)
    sim.add_clock(1e-6)
    for tb in testbenches:
        sim.add_testbench(tb)
    for _ in range(4 * max_cycles):                    # a clock period is two simulator time steps
        if not sim.advance():
            return
    raise AssertionError(f"simulation still running after {max_cycles} cycles (an output lost or stuck?)")


def table_betas():
    """The fixed-point factors of both tables (``golden.arith.asq_tables``), their extremes first."""
    out = []
    for name in arith.ASQ_FACTORS:
        beta, _ = arith.asq_tables(name)
        out += [int(beta.min()), int(beta.max())]
    return out


def factor_word(beta_fixed):
    """The engine's factor ``{mant, shift}`` of a fixed-point factor (``normalize_fixed(beta, 16)``)."""
    mant, shift = arith.normalize_fixed(beta_fixed, arith.ASQ_BETA_FRAC)
    return {"mant": int(mant), "shift": int(shift)}


def chan_const(mult, shift, bias):
    return chan_layout().const({"mult": mult, "shift": shift, "bias": bias})


# --- ChannelRescale: reference and case generation ------------------------------------------------

def effective(entry, cfg):
    """``(m, sh)`` before the clamp: the channel's own, or ``golden.arith.beta_multiplier``'s."""
    mult, shift, _ = entry
    if not cfg["use_beta"]:
        return mult, shift
    m, sh = arith.beta_multiplier(mult, shift, cfg["beta"])
    return int(m), int(sh)


def pre_value(acc, res, entry, cfg):
    """``v`` before the saturation: ``stage_value`` + the aligned residual (golden.arith, int64)."""
    mult, shift, bias = entry
    beta = [cfg["beta"]] if cfg["use_beta"] else None
    v = int(arith.stage_value(np.array([[acc]], dtype=np.int64), [mult], [shift], [bias], cfg["acc_shift"], beta)[0, 0])
    if cfg["use_res"]:
        v += int(arith.align_value(np.int64(res), cfg["res_mult"], cfg["res_shift"]))
    return v


def expected_rescale(acc, res, entry, cfg):
    v = pre_value(acc, res, entry, cfg)
    return int(arith.finish_value(np.int64(v), None, cfg["relu_floor"] if cfg["relu"] else None))


def in_contract(acc, entry, cfg):
    """The compiler's guarantees: ``|acc >> ACC_SHIFT| < 2**23``, the combined shift ``>= 1``."""
    if abs(acc >> cfg["acc_shift"]) > A_MAX:
        return False
    try:
        effective(entry, cfg)
    except arith.ArithError:
        return False
    return True


def random_entries(rng, depth, min_shift=1):
    """CHAN contents: signed mult incl. 0/±1/±max, shift min_shift..63, 18-bit biases incl. 0 and extremes."""
    entries = []
    for _ in range(depth):
        mult = (int(rng.choice([0, 1, -1, MULT_MAX, -MULT_MAX, 1 << 14, -(1 << 14)])) if rng.random() < 0.3
                else int(rng.integers(-MULT_MAX, MULT_MAX + 1)))
        shift = (int(rng.choice([min_shift, 62, 63, 40, 24])) if rng.random() < 0.25
                 else int(rng.integers(min_shift, 64)))
        r = rng.random()
        bias = (int(rng.choice([0, BIAS_MIN, BIAS_MAX, V_MAX, V_MIN, -1])) if r < 0.35
                else int(rng.integers(BIAS_MIN, BIAS_MAX + 1)))
        entries.append((mult, shift, bias))
    return entries


def aligned_res(res, cfg):
    return int(arith.align_value(np.int64(res), cfg["res_mult"], cfg["res_shift"])) if cfg["use_res"] else 0


def acc_for_target(rng, target, res, entry, cfg, acc_bits):
    """An accumulator whose value (with the bias and the residual ``res``) lands next to ``target``."""
    m, sh = effective(entry, cfg)
    sh = min(sh, arith.MAX_SHIFT)
    if m == 0:
        return int(rng.integers(-A_MAX, A_MAX + 1)) << cfg["acc_shift"]
    a = ((target - entry[2] - aligned_res(res, cfg)) << sh) // m + int(rng.integers(-1, 2))
    a = max(-A_MAX, min(A_MAX, a))
    return clamp_acc((a << cfg["acc_shift"]) + int(rng.integers(0, 1 << cfg["acc_shift"])), acc_bits, cfg)


def clamp_acc(acc, acc_bits, cfg):
    lo, hi = -2 ** (acc_bits - 1), 2 ** (acc_bits - 1) - 1
    lo, hi = max(lo, -A_MAX << cfg["acc_shift"]), min(hi, ((A_MAX + 1) << cfg["acc_shift"]) - 1)
    return max(lo, min(hi, acc))


def rescale_cases(rng, n, acc_bits, entries, cfg):
    """``n`` in-contract (acc, ch, res) triples: uniform and log-uniform accumulators, full-scale
    ones, and ones aimed at both saturation edges, the ReLU floor and the rounding ties."""
    nch = len(entries) - cfg["c_base"]
    cases = []
    while len(cases) < n:
        ch = int(rng.integers(0, nch))
        entry = entries[cfg["c_base"] + ch]
        res = int(rng.choice([V_MIN, V_MAX, 0])) if rng.random() < 0.2 else int(rng.integers(V_MIN, V_MAX + 1))
        r = rng.random()
        if r < 0.2:
            acc = clamp_acc(int(rng.integers(-2 ** (acc_bits - 1), 2 ** (acc_bits - 1))), acc_bits, cfg)
        elif r < 0.35:
            bits = int(rng.integers(0, acc_bits))
            acc = clamp_acc(int(rng.integers(-2 ** bits, 2 ** bits)) if bits else int(rng.integers(-1, 1)), acc_bits, cfg)
        elif r < 0.45:
            acc = clamp_acc(int(rng.choice([-2 ** 62, 2 ** 62])), acc_bits, cfg)
        else:
            s = rng.random()
            target = (V_MAX + int(rng.integers(-3, 4)) if s < 0.3 else V_MIN + int(rng.integers(-3, 4)) if s < 0.6
                      else cfg["relu_floor"] + int(rng.integers(-2, 3)) if s < 0.8
                      else int(rng.integers(V_MIN, V_MAX + 1)))
            if not in_contract(0, entry, cfg):
                continue
            acc = acc_for_target(rng, target, res, entry, cfg, acc_bits)
        if in_contract(acc, entry, cfg):
            cases.append((acc, ch, res))
    return cases


# --- ChannelRescale: harness ----------------------------------------------------------------------

class RescaleHarness(Elaboratable):
    """ChannelRescale with the CHAN and residual memories the engine connects (synchronous reads)."""

    def __init__(self, acc_bits, entries, residuals):
        self.dut = ChannelRescale(acc_bits)
        self.init = [chan_const(*e) for e in entries]
        self.res = [int(v) for v in residuals] or [0]

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        m.submodules.chan = mem = Memory(shape=chan_layout(), depth=len(self.init), init=self.init)
        m.submodules.resm = resm = Memory(shape=signed(arith.VALUE_BITS), depth=len(self.res), init=self.res)
        rd, rr = mem.read_port(), resm.read_port()
        m.d.comb += [rd.addr.eq(dut.param_addr), rd.en.eq(dut.param_en), dut.param.eq(rd.data),
                     rr.addr.eq(dut.res_addr), rr.en.eq(dut.res_en), dut.res.eq(rr.data)]
        return m


def set_config(ctx, dut, cfg):
    for name in ("use_beta", "relu", "relu_floor", "c_base", "acc_shift", "use_res", "res_mult", "res_shift"):
        ctx.set(getattr(dut, name), cfg[name])
    ctx.set(dut.beta, factor_word(cfg["beta"]))


def base_config(**kw):
    cfg = {"beta": 1 << arith.ASQ_BETA_FRAC, "use_beta": False, "relu": False, "relu_floor": 0, "c_base": 0,
           "acc_shift": 0, "use_res": False, "res_mult": 1 << 14, "res_shift": 14}
    cfg.update(kw)
    return cfg


def rescale_outputs(acc_bits, entries, cfg, cases, seed=0, in_gaps=0.0, out_stalls=0.0):
    top = RescaleHarness(acc_bits, entries, [res for _, _, res in cases])
    dut = top.dut
    rng = np.random.default_rng(seed)
    got = []

    async def producer(ctx):
        set_config(ctx, dut, cfg)
        for k, (acc, ch, _) in enumerate(cases):
            while rng.random() < in_gaps:
                await ctx.tick()
            await stream_put(ctx, dut.i, {"acc": acc, "ch": ch, "idx": k})

    async def consumer(ctx):
        for _ in cases:
            while rng.random() < out_stalls:
                await ctx.tick()
            got.append(int(await stream_get(ctx, dut.o)))

    run_sim(top, producer, consumer)
    return got


def check_rescale(cases, got, entries, cfg):
    expected = [expected_rescale(acc, res, entries[cfg["c_base"] + ch], cfg) for acc, ch, res in cases]
    assert len(got) == len(cases), f"{len(got)} outputs for {len(cases)} inputs"
    bad = [(c, entries[cfg["c_base"] + c[1]], g, e) for c, g, e in zip(cases, got, expected) if g != e]
    assert not bad, f"{len(bad)} mismatches of {len(cases)} with {cfg}, first ((acc, ch, res), (mult, shift, bias), " \
                    f"got, expected): {bad[:3]}"
    return expected


DEPTH = 48
BETAS = table_betas()


@pytest.mark.parametrize("acc_bits,acc_shift,use_beta,relu,use_res,c_base,beta", [
    (48, 25, False, False, False, 0, None),
    (48, 25, True, True, True, 5, BETAS[0]),       # sigmoid's smallest factor
    (40, 17, True, False, True, 17, BETAS[1]),     # sigmoid's largest
    (32, 9, True, True, False, 3, BETAS[2]),       # exp's smallest (shifts past 62: the clamp)
    (24, 0, True, False, True, 3, BETAS[3]),       # exp's largest (needs channel shifts >= 13)
    (20, 0, False, True, True, 3, None),
    (30, 12, True, True, True, 7, 123457),         # an arbitrary factor
    (2, 0, True, True, False, 40, BETAS[0]),
])
def test_channel_rescale_random(acc_bits, acc_shift, use_beta, relu, use_res, c_base, beta):
    rng = np.random.default_rng(1000 * acc_bits + 10 * use_beta + relu + acc_shift)
    beta_fixed = beta if beta is not None else int(rng.integers(1, 1 << 20))
    # with the largest exp factor a combined shift >= 1 needs channel shifts >= 13 (beta_shift 3)
    min_shift = 1 - factor_word(beta_fixed)["shift"] + B if use_beta else 1
    entries = random_entries(rng, DEPTH, max(1, min_shift))
    entries[-1] = (entries[-1][0], entries[-1][1], 0)                   # a zero bias, for sure
    cfg = base_config(beta=beta_fixed, use_beta=use_beta, relu=relu, use_res=use_res, c_base=c_base,
                      acc_shift=acc_shift, relu_floor=int(rng.choice([0, -1, 1, FLOOR_MIN, -300, 37])),
                      res_mult=int(rng.integers(1, MULT_MAX + 1)), res_shift=int(rng.integers(1, 20)))
    cases = rescale_cases(rng, 400, acc_bits, entries, cfg)
    got = rescale_outputs(acc_bits, entries, cfg, cases)
    check_rescale(cases, got, entries, cfg)
    # the cases reach the corners they are meant to reach
    pre = [pre_value(acc, res, entries[c_base + ch], cfg) for acc, ch, res in cases]
    eff = [effective(entries[c_base + ch], cfg) for _, ch, _ in cases]
    assert len({ch for _, ch, _ in cases}) > (DEPTH - c_base) // 2
    assert any(m < 0 for m, _ in eff) and any(m > 0 for m, _ in eff)
    assert any(entries[c_base + ch][2] == 0 for _, ch, _ in cases)
    if acc_bits > 2:
        assert sum(v > V_MAX for v in pre) >= 10 and sum(v < V_MIN for v in pre) >= 10     # saturation both ways
        assert any(V_MAX - 64 <= v <= V_MAX for v in pre) and any(V_MIN <= v <= V_MIN + 64 for v in pre)
        if any(effective(e, cfg)[1] > arith.MAX_SHIFT for e in entries[c_base:]):
            assert any(sh > arith.MAX_SHIFT for _, sh in eff)                               # the clamp at 62
    if relu:
        assert any(g == cfg["relu_floor"] for g in got) and any(g > cfg["relu_floor"] for g in got)


def test_channel_rescale_shift_clamp_and_rounding():
    """Channel shifts 61, 62, 63 and combined shifts past 62 after the factor (clamped: taken modulo 64
    they would keep bits) round like golden; exact halves round up, also for negative products."""
    acc_bits = 48
    cfg = base_config(acc_shift=24)
    entries = [(MULT_MAX, 61, 0), (MULT_MAX, 62, 0), (MULT_MAX, 63, 0), (-MULT_MAX, 63, 5), (1, 1, 0), (-1, 1, 0),
               (3, 2, 0), (-3, 2, -7)]
    cases = []
    for ch in range(len(entries)):
        for a in (A_MAX, -A_MAX, 1, -1, 0, 2, -2, 3, -3, 5, -5, 1 << 22, -(1 << 22)):
            cases.append(((a << 24) + 12345, ch, 0))
    got = rescale_outputs(acc_bits, entries, cfg, cases)
    exp = check_rescale(cases, got, entries, cfg)
    assert exp[1 * 13] == 0 and exp[2 * 13] == 0      # 2**37.9 / 2**62 rounds to 0
    assert [exp[4 * 13 + k] for k in range(5, 9)] == [1, -1, 2, -1]   # 2/2, -2/2, 3/2 -> 2, -3/2 -> -1
    # with the smallest exp factor the combined shift passes 62 (clamped)
    small = BETAS[2]
    cfg = base_config(acc_shift=0, use_beta=True, beta=small)
    entries = [(MULT_MAX, 63, 0), (-MULT_MAX, 60, 3), (1 << 14, 40, 0)]
    assert all(effective(e, cfg)[1] > arith.MAX_SHIFT for e in entries[:2])
    cases = [(a, ch, 0) for ch in range(3) for a in (A_MAX, -A_MAX, 1 << 20, -(1 << 20), 0)]
    got = rescale_outputs(24, entries, cfg, cases)
    check_rescale(cases, got, entries, cfg)


def test_channel_rescale_relu_floors():
    """Negative, zero and positive floors with values just below, at and above each; relu off keeps
    negatives."""
    acc_bits = 24
    entries = [(1, 1, 0), (-3, 2, 5), (MULT_MAX, 20, -(1 << 15)), (7, 1, 1)]
    for floor in (FLOOR_MIN, -100, 0, 1, 37, FLOOR_MAX):
        for relu in (True, False):
            cfg = base_config(relu=relu, relu_floor=floor)
            cases = []
            for ch, (mult, shift, bias) in enumerate(entries):
                cases += [(a, ch, 0) for a in (-A_MAX, -12345, -1, 0, 1, 999, A_MAX)]
                for target in range(floor - 2, floor + 3):      # exact hits where the channel has one
                    num = (target - bias) << shift
                    if num % mult == 0 and -A_MAX <= num // mult <= A_MAX:
                        cases.append((num // mult, ch, 0))
            values = [int(arith.saturate(pre_value(a, r, entries[ch], cfg))) for a, ch, r in cases]
            assert {floor - 1, floor, floor + 1} & set(values)
            got = rescale_outputs(acc_bits, entries, cfg, cases)
            check_rescale(cases, got, entries, cfg)
            assert got == ([max(v, floor) for v in values] if relu else values)


@pytest.mark.parametrize("in_gaps,out_stalls", [(0.5, 0.0), (0.0, 0.7), (0.3, 0.5)])
def test_channel_rescale_back_pressure(in_gaps, out_stalls):
    rng = np.random.default_rng(77 + int(10 * in_gaps) + int(100 * out_stalls))
    entries = random_entries(rng, DEPTH, 5)
    cfg = base_config(beta=BETAS[1], use_beta=True, relu=True, relu_floor=-5000, c_base=9, acc_shift=17,
                      use_res=True, res_mult=20000, res_shift=15)
    cases = rescale_cases(rng, 250, 40, entries, cfg)
    got = rescale_outputs(40, entries, cfg, cases, seed=5, in_gaps=in_gaps, out_stalls=out_stalls)
    check_rescale(cases, got, entries, cfg)


def test_channel_rescale_stall_holds_everything():
    """o.valid & ~o.ready freezes the pipe: i.ready and param_en drop, the output holds, nothing is lost.

    Different channels back to back with a stall in the middle: if the DUT read the memories while
    stalled the channel parameters or residuals would be shifted against the accumulators.
    """
    entries = [(3, 1, 0), (-5, 2, 100), (1000, 10, -7), (1, 1, 1), (-1, 3, 8)]
    cfg = base_config(use_res=True, res_mult=3 << 13, res_shift=14)
    cases = [(10 * k + 1, k % len(entries), 7 * k - 40) for k in range(12)]
    expected = [expected_rescale(a, r, entries[c], cfg) for a, c, r in cases]
    top = RescaleHarness(16, entries, [r for _, _, r in cases])
    dut = top.dut
    got = []

    async def tb(ctx):
        set_config(ctx, dut, cfg)
        ctx.set(dut.o.ready, 0)
        sent = 0
        for cycle in range(80):
            if sent < len(cases):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"acc": cases[sent][0], "ch": cases[sent][1], "idx": sent})
            else:
                ctx.set(dut.i.valid, 0)
            ready = cycle % 7 in (5, 6) or cycle > 60       # long stalls, released now and then
            ctx.set(dut.o.ready, ready)
            valid = ctx.get(dut.o.valid)
            assert ctx.get(dut.i.ready) == (not valid or ready)
            assert ctx.get(dut.param_en) == ctx.get(dut.i.ready) == ctx.get(dut.res_en)
            if sent < len(cases):
                assert ctx.get(dut.param_addr) == cases[sent][1] and ctx.get(dut.res_addr) == sent
            held = ctx.get(dut.o.payload)
            took = ctx.get(dut.i.ready) and sent < len(cases)
            await ctx.tick()
            if valid and ready:
                got.append(held)
            elif valid:
                assert ctx.get(dut.o.valid) and ctx.get(dut.o.payload) == held
            sent += took

    run_sim(top, tb)
    assert got == expected


def test_channel_rescale_latency_and_throughput():
    """An input accepted at edge t is valid after edge t + RESCALE_LATENCY - 1 (with o.ready high), then
    one output per cycle for back-to-back inputs."""
    assert RESCALE_LATENCY == 4
    entries = [(3, 3, 1), (-7, 4, 0), (MULT_MAX, 40, BIAS_MAX), (0, 5, -33)]
    cfg = base_config(beta=123456, use_beta=True, c_base=1, acc_shift=3)
    top = RescaleHarness(30, entries, [0])
    dut = top.dut

    async def tb(ctx):
        set_config(ctx, dut, cfg)
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, {"acc": 1000, "ch": 1})
        assert ctx.get(dut.i.ready) and ctx.get(dut.param_en) and ctx.get(dut.param_addr) == 2
        await ctx.tick()                                # edge t: accepted
        ctx.set(dut.i.valid, 0)
        for _ in range(RESCALE_LATENCY - 1):            # edges t+1 .. t+LAT-1
            assert not ctx.get(dut.o.valid)
            await ctx.tick()
        assert ctx.get(dut.o.valid)
        assert ctx.get(dut.o.payload) == expected_rescale(1000, 0, entries[2], cfg)
        await ctx.tick()
        assert not ctx.get(dut.o.valid)
        burst = [(5, 0), (-(2 ** 25), 1), (2 ** 25 - 1, 2), (77, 0), (-1, 1), (12, 2)]
        outs = []
        for cycle in range(len(burst) + RESCALE_LATENCY + 2):
            if cycle < len(burst):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"acc": burst[cycle][0], "ch": burst[cycle][1]})
                assert ctx.get(dut.i.ready)
            else:
                ctx.set(dut.i.valid, 0)
            if ctx.get(dut.o.valid):
                outs.append((cycle, ctx.get(dut.o.payload)))
            await ctx.tick()
        exp = [expected_rescale(a, 0, entries[1 + c], cfg) for a, c in burst]
        assert outs == [(k + RESCALE_LATENCY, e) for k, e in enumerate(exp)]

    run_sim(top, tb)


def test_chan_and_factor_layouts():
    """chan_layout is the 40-bit CHAN word {mult: s16, shift: 6, bias: s18}; the factor words are
    {mant: 15, shift: 6} (21 bits, golden.arith.FACTOR_BITS) and {mant: 15, shift: 7}."""
    layout = chan_layout()
    assert layout.size == CHAN_BITS == 40
    assert layout["mult"].shape == signed(CHAN_MULT_BITS) and layout["shift"].shape == unsigned(CHAN_SHIFT_BITS)
    assert layout["bias"].shape == signed(arith.BIAS_BITS)
    for mult, shift, bias in [(-MULT_MAX, 1, BIAS_MIN), (MULT_MAX, 63, BIAS_MAX), (0, 1, -1), (-1, 63, 0)]:
        c = chan_const(mult, shift, bias)
        word = (mult & 0xFFFF) | shift << 16 | (bias & (2 ** 18 - 1)) << 22
        assert c.as_value().value == word and (c.mult, c.shift, c.bias) == (mult, shift, bias)
    assert factor_layout().size == arith.FACTOR_BITS and quant_layout().size == arith.MULT_BITS + 7
    f = factor_layout().const(factor_word(BETAS[3]))
    assert f.as_value().value == factor_word(BETAS[3])["mant"] | factor_word(BETAS[3])["shift"] << 15


# --- the shared helpers, exhaustive on small widths ------------------------------------------------

def test_helpers_exhaustive():
    """round_shift, saturate and clamp_shift against golden.arith for every 8-bit value and shift."""
    x, s = Signal(signed(8)), Signal(4)
    r_out, sat_out, cl_out = Signal(signed(9)), Signal(signed(4)), Signal(4)
    m = Module()
    m.d.comb += [r_out.eq(round_shift(x, s)), sat_out.eq(saturate(x, 4)), cl_out.eq(clamp_shift(s, 9))]

    async def tb(ctx):
        for xv, sv in itertools.product(range(-128, 128), range(16)):
            ctx.set(x, xv)
            ctx.set(s, sv)
            if sv >= 1:
                assert ctx.get(r_out) == int(arith.shift_round(xv, sv)), (xv, sv)
            assert ctx.get(sat_out) == int(arith.saturate(xv, 4))
            assert ctx.get(cl_out) == min(sv, 9)

    sim = Simulator(m)
    sim.add_testbench(tb)
    sim.run()


# --- ActQuantizer -----------------------------------------------------------------------------------

def expected_code(v, mant, shift, lo, hi):
    return int(np.clip(arith.shift_round(np.int64(v) * mant, shift), lo, hi))


def quant_outputs(tag_bits, params, cases, seed=0, in_gaps=0.0, out_stalls=0.0):
    """``params``: (mant, shift, lo, hi); ``cases``: (v, tag). Returns [(code, tag)]."""
    dut = ActQuantizer(tag_bits)
    rng = np.random.default_rng(seed)
    mant, shift, lo, hi = params
    got = []

    async def producer(ctx):
        ctx.set(dut.inv, {"mant": mant, "shift": shift})
        ctx.set(dut.lo, lo)
        ctx.set(dut.hi, hi)
        for v, tag in cases:
            while rng.random() < in_gaps:
                await ctx.tick()
            await stream_put(ctx, dut.i, {"v": v, "tag": tag})

    async def consumer(ctx):
        for _ in cases:
            while rng.random() < out_stalls:
                await ctx.tick()
            out = await stream_get(ctx, dut.o)
            got.append((int(out.code), int(out.tag)))

    run_sim(dut, producer, consumer)
    return got


def quant_cases(rng, n, params, tag_bits):
    """Values over the whole 16-bit range, at the extremes, and next to (or on) the rounding boundaries
    ``(c + 1/2) * 2**shift / mant`` for codes c around [lo, hi]."""
    mant, shift, lo, hi = params
    s = min(shift, arith.MAX_SHIFT)
    cases = []
    while len(cases) < n:
        r = rng.random()
        if r < 0.25:
            v = int(rng.integers(V_MIN, V_MAX + 1))
        elif r < 0.35:
            v = int(rng.choice([V_MIN, V_MAX, V_MIN + 1, V_MAX - 1, 0, 1, -1]))
        elif r < 0.65:
            c = int(rng.integers(lo - 3, hi + 4))
            v = ((2 * c + 1) << (s - 1)) // mant + int(rng.integers(-2, 3))
        else:                                               # exactly on a tie, where there is one
            q = mant // math.gcd(mant, 1 << (s - 1))
            odd = [k for k in range(2 * (lo - 3) + 1, 2 * (hi + 3) + 2, 2) if k % q == 0] if q % 2 else []
            if not odd:
                continue
            v = (int(rng.choice(odd)) << (s - 1)) // mant
        if V_MIN <= v <= V_MAX:
            cases.append((v, int(rng.integers(0, 2 ** tag_bits))))
    return cases


def check_quant(cases, got, params):
    expected = [(expected_code(v, *params), tag) for v, tag in cases]
    assert len(got) == len(cases), f"{len(got)} outputs for {len(cases)} inputs"
    bad = [(c, g, e) for c, g, e in zip(cases, got, expected) if g != e]
    assert not bad, f"{len(bad)} mismatches of {len(cases)} with (mant, shift, lo, hi) = {params}, first " \
                    f"((v, tag), got, expected): {bad[:3]}"


QUANT_PARAMS = [
    # (mant, shift, lo, hi)
    (MULT_MAX, 127, 0, 255),           # largest mant and shift (clamped to 62): everything rounds to 0
    (MULT_MAX, 62, 0, 255),
    (MULT_MAX, 74, 0, 255),            # 74 acts as 62 (its low 6 bits, 10, would not)
    (MULT_MAX, 16, 0, 255),
    (3 << 13, 20, 0, 255),             # small odd part: exact .5 points inside the code range
    (1 << 14, 18, 3, 200),
    (1, 1, 0, 255),                    # shift 1: every odd v is an exact half
    (12345, 30, 17, 17),               # lo == hi
    (1 << 14, 14, 100, 130),
    (7, 3, 0, 15),
]


@pytest.mark.parametrize("params", QUANT_PARAMS, ids=[f"m{p[0]}-sh{p[1]}-{p[2]}..{p[3]}" for p in QUANT_PARAMS])
def test_act_quantizer_random(params):
    mant, shift, lo, hi = params
    rng = np.random.default_rng(mant % 1000 + shift)
    cases = quant_cases(rng, 300, params, 7)
    got = quant_outputs(7, params, cases)
    check_quant(cases, got, params)
    s = min(shift, arith.MAX_SHIFT)
    halves = [v for v, _ in cases if (v * mant) % (1 << s) == 1 << (s - 1) and lo <= ((v * mant) >> s) + 1 <= hi]
    if (mant, shift) in ((3 << 13, 20), (1, 1), (1 << 14, 18), (7, 3)):
        assert len(halves) >= 10                         # exact ties resolved upward, unclipped
    codes = {g for g, _ in got}
    assert codes == {0} if shift >= 62 else {lo, hi} <= codes   # both clip limits reached (or all round to 0)


def test_act_quantizer_is_asq_quantize():
    """The engine's ASQ use: the tables' inv factors as {inv_mant, value_frac + inv_shift} against
    golden.arith.asq_quantize, at both ends of the sigmoid and exp tables."""
    rng = np.random.default_rng(11)
    for name in arith.ASQ_FACTORS:
        _, inv = arith.asq_tables(name)
        for inv_fixed, vf, qmax in [(int(inv.min()), 8, 255), (int(inv.max()), 8, 15), (int(inv[len(inv) // 2]), 12, 255)]:
            mant, ish = (int(x) for x in arith.normalize_fixed(inv_fixed, arith.ASQ_BETA_FRAC))
            params = (mant, vf + ish, 0, qmax)
            cases = quant_cases(rng, 60, params, 3)
            ref = [int(arith.asq_quantize(v, inv_fixed, vf, qmax)) for v, _ in cases]
            got = quant_outputs(3, params, cases)
            assert [g for g, _ in got] == ref, (name, params)
            assert [t for _, t in got] == [t for _, t in cases]


@pytest.mark.parametrize("in_gaps,out_stalls", [(0.5, 0.0), (0.0, 0.7), (0.3, 0.5)])
def test_act_quantizer_back_pressure(in_gaps, out_stalls):
    rng = np.random.default_rng(int(10 * in_gaps) + int(100 * out_stalls))
    params = (3 << 13, 20, 5, 250)
    cases = quant_cases(rng, 150, params, 12)
    got = quant_outputs(12, params, cases, seed=9, in_gaps=in_gaps, out_stalls=out_stalls)
    check_quant(cases, got, params)
    assert len({t for _, t in got}) > 100                # tags really vary and stay attached


def test_act_quantizer_latency_and_stall():
    """Output valid after edge t + QUANT_LATENCY - 1; while o.valid & ~o.ready it holds and i.ready is low."""
    assert QUANT_LATENCY == 2
    dut = ActQuantizer(4)

    async def tb(ctx):
        ctx.set(dut.inv, {"mant": 1 << 14, "shift": 14 + 2})       # code = round(v / 4)
        ctx.set(dut.lo, 0)
        ctx.set(dut.hi, 255)
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, {"v": 42, "tag": 9})
        assert ctx.get(dut.i.ready)
        await ctx.tick()                                 # edge t: accepted
        ctx.set(dut.i.valid, 0)
        assert not ctx.get(dut.o.valid)
        await ctx.tick()                                 # edge t + LAT - 1
        assert ctx.get(dut.o.valid)
        assert (ctx.get(dut.o.payload.code), ctx.get(dut.o.payload.tag)) == (11, 9)    # 10.5 -> 11
        await ctx.tick()
        assert not ctx.get(dut.o.valid)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, {"v": -6, "tag": 3})      # -1.5 -> -1 -> clipped to 0
        ctx.set(dut.o.ready, 0)
        await ctx.tick()
        ctx.set(dut.i.payload, {"v": 1021, "tag": 4})    # 255.25 -> 255
        await ctx.tick()
        assert ctx.get(dut.o.valid) and not ctx.get(dut.i.ready)
        for _ in range(3):
            await ctx.tick()
            assert ctx.get(dut.o.valid) and not ctx.get(dut.i.ready)
            assert (ctx.get(dut.o.payload.code), ctx.get(dut.o.payload.tag)) == (0, 3)
        ctx.set(dut.i.valid, 0)
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        assert ctx.get(dut.o.valid)
        assert (ctx.get(dut.o.payload.code), ctx.get(dut.o.payload.tag)) == (255, 4)
        await ctx.tick()
        assert not ctx.get(dut.o.valid)

    run_sim(dut, tb)


# --- constructors -----------------------------------------------------------------------------------

def test_constructor_errors():
    for bad in (1, 0, -3, 49, 64, 2.0, "24", None, True):
        with pytest.raises(ValueError, match=r"acc_bits must be an integer in 2\.\.48"):
            ChannelRescale(bad)
    for bad in (0, -1, 1.0, "8", None):
        with pytest.raises(ValueError, match=r"tag_bits must be an integer >= 1"):
            ActQuantizer(bad)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for bad in (1, 49):
            with pytest.raises(ValueError):
                ChannelRescale(bad)
        with pytest.raises(ValueError):
            ActQuantizer(0)
        gc.collect()
    assert not [w for w in caught if "UnusedElaboratable" in w.category.__name__], [str(w.message) for w in caught]


def test_port_widths():
    """The documented port shapes: 16-bit values, the 21-bit factor, 15-bit multipliers, a 7-bit shift."""
    for acc_bits in (2, 48):
        dut = ChannelRescale(acc_bits)
        assert dut.i.payload.acc.shape() == signed(acc_bits)
        assert dut.o.payload.shape() == signed(arith.VALUE_BITS) == signed(16)
        assert len(dut.param_addr) == DESC_BITS and len(dut.beta.as_value()) == arith.FACTOR_BITS == 21
        assert len(dut.res_mult) == 15 and len(dut.acc_shift) == 6 and dut.res.shape() == signed(16)
        Simulator(dut)
    q = ActQuantizer(1)
    assert len(q.o.payload.code) == CODE_MAX.bit_length() and len(q.o.payload.tag) == 1
    assert len(q.inv.mant) == 15 and len(q.inv.shift) == 7 and q.i.payload.v.shape() == signed(16)
    Simulator(q)
