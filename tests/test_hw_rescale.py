"""ChannelRescale and ActQuantizer (hw/rescale.py) in the Amaranth simulator against golden.arith.

ChannelRescale runs inside a small harness with a real synchronous CHAN memory (read port
``addr = param_addr``, ``en = param_en``, ``param = data``), as in the engine. Inputs are offered
with random gaps and the output is taken with random stalls; every output is compared with
``apply_beta`` / ``rescale`` / the ReLU floor (ChannelRescale) or
``clip(round_shift(v * inv, shift), lo, hi)`` (ActQuantizer).
"""

import gc
import math
import warnings

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, signed, unsigned
from amaranth.lib import data
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from golden import arith
from hw.program import CHAN_BITS, CHAN_MULT_BITS, CHAN_SHIFT_BITS, DESC_BITS, chan_word
from hw.rescale import QUANT_LATENCY, RESCALE_LATENCY, ActQuantizer, ChannelRescale, chan_layout
from sim.amaranth_sim import stream_get, stream_put

DROP = arith.ASQ_BETA_FRAC - arith.ASQ_ACC_FRAC
BETA_MAX = 2 ** arith.ASQ_TABLE_BITS - 1
MULT_MAX = 2 ** arith.MULT_BITS - 1
OFF_MIN, OFF_MAX = -2 ** (arith.OFFSET_BITS - 1), 2 ** (arith.OFFSET_BITS - 1) - 1
V_MIN, V_MAX = -2 ** (arith.VALUE_BITS - 1), 2 ** (arith.VALUE_BITS - 1) - 1
T_MIN, T_MAX = -2 ** 62, 2 ** 62 - 1
FLOOR_MIN, FLOOR_MAX = -2 ** (DESC_BITS - 1), 2 ** (DESC_BITS - 1) - 1
CODE_MAX = 2 ** (arith.ABITS_RANGE.stop - 1) - 1
INT64 = 2 ** 63


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


# --- ChannelRescale: reference and case generation ------------------------------------------------

def exact_rescale(acc, entry, cfg):
    """Python-int statement of the contract (no width limits): used where int64 cannot hold acc*beta."""
    mult, shift, offset = entry
    a = (acc * cfg["beta"]) >> DROP if cfg["use_beta"] else acc
    v = (a * mult + offset) >> shift
    return max(v, cfg["relu_floor"]) if cfg["relu"] else v


def expected_rescale(acc, entry, cfg):
    """golden.arith.apply_beta + rescale (+ ReLU floor); int64-exact while |acc * beta| < 2**63."""
    mult, shift, offset = entry
    if cfg["use_beta"] and abs(acc * cfg["beta"]) >= INT64:
        return exact_rescale(acc, entry, cfg)          # numpy int64 would wrap: same formula, exact ints
    a = int(arith.apply_beta(acc, cfg["beta"])) if cfg["use_beta"] else acc
    v = int(arith.rescale(a, mult, offset, shift))
    return max(v, cfg["relu_floor"]) if cfg["relu"] else v


def rescale_terms(acc, entry, cfg):
    """(t, v) before the ReLU: ``t = a * mult + offset``, ``v = t >> shift``."""
    mult, shift, offset = entry
    a = (acc * cfg["beta"]) >> DROP if cfg["use_beta"] else acc
    t = a * mult + offset
    return t, t >> shift


def in_contract(acc, entry, cfg):
    """The compiler's guarantee: t fits 63 bits signed, v fits VALUE_BITS signed."""
    t, v = rescale_terms(acc, entry, cfg)
    return T_MIN <= t <= T_MAX and V_MIN <= v <= V_MAX


def random_entries(rng, depth):
    """CHAN contents: signed mult incl. 0/±1/±max, shift 1..63, 48-bit signed offsets incl. extremes."""
    entries = []
    for _ in range(depth):
        r = rng.random()
        mult = (int(rng.choice([0, 1, -1, MULT_MAX, -MULT_MAX, 1 << 15, -(1 << 15)])) if r < 0.3
                else int(rng.integers(-MULT_MAX, MULT_MAX + 1)))
        shift = int(rng.choice([1, 2, 31, 32, 62, 63])) if rng.random() < 0.2 else int(rng.integers(1, 64))
        r = rng.random()
        if r < 0.15:                                   # offset alone puts v at an edge of VALUE_BITS
            shift = int(rng.integers(1, arith.OFFSET_BITS - arith.VALUE_BITS + 2))
            edge = V_MAX - int(rng.integers(0, 8)) if rng.random() < 0.5 else V_MIN + int(rng.integers(0, 8))
            offset = min(max((edge << shift) + int(rng.integers(0, 1 << shift)), OFF_MIN), OFF_MAX)
        elif r < 0.3:
            offset = int(rng.choice([0, OFF_MAX, OFF_MIN, 1 << (shift - 1) if shift < 48 else 0, -1]))
        elif r < 0.6:
            bits = int(rng.integers(0, arith.OFFSET_BITS))
            offset = int(rng.integers(-2 ** bits, 2 ** bits))
        else:
            offset = int(rng.integers(OFF_MIN, OFF_MAX + 1))
        entries.append((mult, shift, offset))
    return entries


def random_config(rng, use_beta, relu, c_base):
    r = rng.random()
    beta = int(rng.integers(BETA_MAX - 16, BETA_MAX + 1)) if r < 0.5 else int(rng.integers(1, BETA_MAX + 1))
    floor = int(rng.choice([0, -1, 1, FLOOR_MIN, FLOOR_MAX, int(rng.integers(FLOOR_MIN, FLOOR_MAX + 1))]))
    return {"beta": beta, "use_beta": use_beta, "relu": relu, "relu_floor": floor, "c_base": c_base}


def acc_for_value(rng, target, entry, cfg, acc_bits):
    """An accumulator whose rescaled value lands at (or next to) ``target``, clamped to acc_bits."""
    mult, shift, offset = entry
    amin, amax = -2 ** (acc_bits - 1), 2 ** (acc_bits - 1) - 1
    if mult == 0:
        return int(rng.integers(amin, amax + 1))
    num = (target << shift) + int(rng.integers(0, 1 << shift)) - offset
    a = num // mult
    if cfg["use_beta"]:
        a = ((a << DROP) + int(rng.integers(0, 1 << DROP))) // cfg["beta"]
    return min(max(a + int(rng.integers(-2, 3)), amin), amax)


def rescale_cases(rng, n, acc_bits, entries, cfg):
    """``n`` in-contract (acc, ch) pairs; about half aimed at the edges of the value range, at the ReLU
    floor, or at full-scale accumulators."""
    amin, amax = -2 ** (acc_bits - 1), 2 ** (acc_bits - 1) - 1
    nch = len(entries) - cfg["c_base"]
    cases = []
    while len(cases) < n:
        ch = int(rng.integers(0, nch))
        entry = entries[cfg["c_base"] + ch]
        r = rng.random()
        if r < 0.2:                                    # uniform accumulator
            acc = int(rng.integers(amin, amax + 1))
        elif r < 0.35:                                 # log-uniform magnitude
            bits = int(rng.integers(0, acc_bits))
            acc = int(rng.integers(-2 ** bits, 2 ** bits)) if bits else int(rng.integers(-1, 1))
        elif r < 0.45:                                 # full-scale accumulator, on a channel that allows it
            acc = int(rng.choice([amin, amax, amin + 1, amax - 1]))
            fits = [c for c in range(nch) if in_contract(acc, entries[cfg["c_base"] + c], cfg)]
            if fits:
                ch = int(rng.choice(fits))
                entry = entries[cfg["c_base"] + ch]
        else:                                          # aim at a value, on a channel that can reach it
            s = rng.random()
            if s < 0.3:
                target = V_MAX - int(rng.integers(0, 64))
            elif s < 0.6:
                target = V_MIN + int(rng.integers(0, 64))
            elif s < 0.8:
                target = cfg["relu_floor"] + int(rng.integers(-2, 3))
            else:
                target = int(rng.integers(V_MIN, V_MAX + 1))
            for c in [ch, *rng.permutation(nch)]:
                e = entries[cfg["c_base"] + int(c)]
                acc = acc_for_value(rng, target, e, cfg, acc_bits)
                if in_contract(acc, e, cfg) and abs(rescale_terms(acc, e, cfg)[1] - target) <= 64:
                    break
            ch, entry = int(c), e
        if in_contract(acc, entry, cfg):
            cases.append((acc, ch))
    return cases


# --- ChannelRescale: harness ----------------------------------------------------------------------

class RescaleHarness(Elaboratable):
    """ChannelRescale with the CHAN memory the engine connects to it (synchronous read, latency 1)."""

    def __init__(self, acc_bits, entries):
        self.dut = ChannelRescale(acc_bits)
        layout = chan_layout()
        self.init = [data.Const(layout, chan_word(*e)) for e in entries]

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        m.submodules.chan = mem = Memory(shape=chan_layout(), depth=len(self.init), init=self.init)
        rd = mem.read_port()
        m.d.comb += [rd.addr.eq(dut.param_addr), rd.en.eq(dut.param_en), dut.param.eq(rd.data)]
        return m


def set_config(ctx, dut, cfg):
    for name in ("beta", "use_beta", "relu", "relu_floor", "c_base"):
        ctx.set(getattr(dut, name), cfg[name])


def rescale_outputs(acc_bits, entries, cfg, cases, seed=0, in_gaps=0.0, out_stalls=0.0):
    top = RescaleHarness(acc_bits, entries)
    dut = top.dut
    rng = np.random.default_rng(seed)
    got = []

    async def producer(ctx):
        set_config(ctx, dut, cfg)
        for acc, ch in cases:
            while rng.random() < in_gaps:
                await ctx.tick()
            await stream_put(ctx, dut.i, {"acc": acc, "ch": ch})

    async def consumer(ctx):
        for _ in cases:
            while rng.random() < out_stalls:
                await ctx.tick()
            got.append(int(await stream_get(ctx, dut.o)))

    run_sim(top, producer, consumer)
    return got


def check_rescale(cases, got, entries, cfg):
    expected = [expected_rescale(acc, entries[cfg["c_base"] + ch], cfg) for acc, ch in cases]
    bad = [(c, entries[cfg["c_base"] + c[1]], g, e) for c, g, e in zip(cases, got, expected) if g != e]
    assert len(got) == len(cases), f"{len(got)} outputs for {len(cases)} inputs"
    assert not bad, f"{len(bad)} mismatches of {len(cases)} with {cfg}, first ((acc, ch), (mult, shift, offset), " \
                    f"got, expected): {bad[:3]}"


DEPTH = 48


@pytest.mark.parametrize("acc_bits,use_beta,relu,c_base", [
    (48, False, False, 0),
    (48, True, True, 5),
    (32, True, False, 17),
    (20, False, True, 3),
    (2, True, True, 40),
])
def test_channel_rescale_random(acc_bits, use_beta, relu, c_base):
    rng = np.random.default_rng(1000 * acc_bits + 10 * use_beta + relu)
    entries = random_entries(rng, DEPTH)
    cfg = random_config(rng, use_beta, relu, c_base)
    cases = rescale_cases(rng, 400, acc_bits, entries, cfg)
    got = rescale_outputs(acc_bits, entries, cfg, cases)
    check_rescale(cases, got, entries, cfg)
    # the cases do reach the edges they are meant to reach
    terms = [rescale_terms(acc, entries[c_base + ch], cfg) for acc, ch in cases]
    if acc_bits > 2:
        assert sum(abs(v) >= 2 ** 30 for _, v in terms) >= len(cases) // 10
        assert any(v >= V_MAX - 64 for _, v in terms) and any(v <= V_MIN + 64 for _, v in terms)
        assert sum(abs(acc) >= 2 ** (acc_bits - 2) for acc, _ in cases) >= len(cases) // 10
    if acc_bits + arith.MULT_BITS + (arith.ASQ_TABLE_BITS - DROP if use_beta else 0) > 62:    # t can reach 2**62
        assert sum(abs(t) >= 2 ** 58 for t, _ in terms) >= len(cases) // 20
    assert len({ch for _, ch in cases}) > (DEPTH - c_base) // 2
    if relu:
        assert any(g == cfg["relu_floor"] for g in got) and any(g > cfg["relu_floor"] for g in got)


def test_channel_rescale_relu_floors():
    """Negative, zero and positive floors with values just below, at and above each; relu off keeps
    negatives."""
    acc_bits = 24
    amin, amax = -2 ** (acc_bits - 1), 2 ** (acc_bits - 1) - 1
    entries = [(1, 1, 0), (-3, 2, 5), (MULT_MAX, 20, -(1 << 19)), (7, 1, 1)]
    for floor in (FLOOR_MIN, -100, 0, 1, 37, FLOOR_MAX):
        for relu in (True, False):
            cfg = {"beta": 1 << DROP, "use_beta": False, "relu": relu, "relu_floor": floor, "c_base": 0}
            cases = []
            for ch, (mult, shift, offset) in enumerate(entries):
                cases += [(acc, ch) for acc in (amin, -12345, -1, 0, 1, 999, amax)]
                for target in range(floor - 2, floor + 3):      # exact hits where the channel has one
                    num = (target << shift) - offset
                    if num % mult == 0 and amin <= num // mult <= amax:
                        cases.append((num // mult, ch))
            assert all(in_contract(acc, entries[ch], cfg) for acc, ch in cases)
            values = [rescale_terms(acc, entries[ch], cfg)[1] for acc, ch in cases]
            assert {floor - 1, floor, floor + 1} <= set(values)
            got = rescale_outputs(acc_bits, entries, cfg, cases)
            check_rescale(cases, got, entries, cfg)
            assert got == ([max(v, floor) for v in values] if relu else values)
            assert min(got) == (floor if relu else min(values)) and min(values) < 0


@pytest.mark.parametrize("in_gaps,out_stalls", [(0.5, 0.0), (0.0, 0.7), (0.3, 0.5)])
def test_channel_rescale_back_pressure(in_gaps, out_stalls):
    rng = np.random.default_rng(77 + int(10 * in_gaps) + int(100 * out_stalls))
    entries = random_entries(rng, DEPTH)
    cfg = random_config(rng, True, True, 9)
    cfg["relu_floor"] = -5000
    cases = rescale_cases(rng, 250, 40, entries, cfg)
    got = rescale_outputs(40, entries, cfg, cases, seed=5, in_gaps=in_gaps, out_stalls=out_stalls)
    check_rescale(cases, got, entries, cfg)


def test_channel_rescale_stall_holds_everything():
    """o.valid & ~o.ready freezes the pipe: i.ready and param_en drop, the output holds, nothing is lost.

    Different channels back to back with a stall in the middle: if the DUT read the memory while
    stalled (param_en high) the channel parameters would be shifted against the accumulators.
    """
    entries = [(3, 1, 0), (-5, 2, 100), (1000, 10, -7), (1, 1, 1), (-1, 3, 8)]
    cfg = {"beta": 1 << DROP, "use_beta": False, "relu": False, "relu_floor": 0, "c_base": 0}
    cases = [(10 * k + 1, k % len(entries)) for k in range(12)]
    expected = [expected_rescale(a, entries[c], cfg) for a, c in cases]
    top = RescaleHarness(16, entries)
    dut = top.dut
    got = []

    async def tb(ctx):
        set_config(ctx, dut, cfg)
        ctx.set(dut.o.ready, 0)
        sent = 0
        for cycle in range(80):
            if sent < len(cases):
                ctx.set(dut.i.valid, 1)
                ctx.set(dut.i.payload, {"acc": cases[sent][0], "ch": cases[sent][1]})
            else:
                ctx.set(dut.i.valid, 0)
            ready = cycle % 7 in (5, 6) or cycle > 60       # long stalls, released now and then
            ctx.set(dut.o.ready, ready)
            valid = ctx.get(dut.o.valid)
            assert ctx.get(dut.i.ready) == (not valid or ready)
            assert ctx.get(dut.param_en) == ctx.get(dut.i.ready)
            if sent < len(cases):
                assert ctx.get(dut.param_addr) == cases[sent][1]
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
    entries = [(3, 2, 1), (-7, 1, 0), (MULT_MAX, 40, OFF_MAX), (0, 5, -33)]
    cfg = {"beta": 123456, "use_beta": True, "relu": False, "relu_floor": 0, "c_base": 1}
    top = RescaleHarness(30, entries)
    dut = top.dut

    async def tb(ctx):
        set_config(ctx, dut, cfg)
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        # one input alone
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, {"acc": 1000, "ch": 1})
        assert ctx.get(dut.i.ready) and ctx.get(dut.param_en) and ctx.get(dut.param_addr) == 2
        await ctx.tick()                                # edge t: accepted
        ctx.set(dut.i.valid, 0)
        for _ in range(RESCALE_LATENCY - 2):            # edges t+1 .. t+LAT-2
            assert not ctx.get(dut.o.valid)
            await ctx.tick()
        assert not ctx.get(dut.o.valid)
        await ctx.tick()                                # edge t + LAT - 1
        assert ctx.get(dut.o.valid)
        assert ctx.get(dut.o.payload) == expected_rescale(1000, entries[2], cfg)
        await ctx.tick()
        assert not ctx.get(dut.o.valid)
        # a burst: accepted every cycle, outputs on consecutive cycles, LAT - 1 edges behind
        burst = [(5, 0), (-(2 ** 29), 1), (2 ** 29 - 1, 2), (77, 0), (-1, 1), (12, 2)]
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
        assert all(in_contract(a, entries[1 + c], cfg) for a, c in burst)
        exp = [expected_rescale(a, entries[1 + c], cfg) for a, c in burst]
        # input k is accepted at edge k, so its output is seen in cycle k + LAT (after edge k + LAT - 1)
        assert outs == [(k + RESCALE_LATENCY, e) for k, e in enumerate(exp)]

    run_sim(top, tb)


def test_rescale_reference_matches_exact_ints():
    """The golden functions the checks use agree with exact integer arithmetic wherever int64 holds, and
    the case generator also produces cases only exact integers can check (acc * beta >= 2**63)."""
    rng = np.random.default_rng(3)
    entries = random_entries(rng, DEPTH)
    wide = 0
    for use_beta in (False, True):
        for acc_bits in (48, 36, 12):
            cfg = random_config(rng, use_beta, True, 0)
            for acc, ch in rescale_cases(rng, 400, acc_bits, entries, cfg):
                e = entries[ch]
                assert in_contract(acc, e, cfg)
                if use_beta and abs(acc * cfg["beta"]) >= INT64:
                    wide += 1
                    continue
                assert expected_rescale(acc, e, cfg) == exact_rescale(acc, e, cfg)
    assert wide > 0


def test_chan_word_matches_layout():
    """hw.program.chan_word packs the fields where chan_layout() reads them."""
    layout = chan_layout()
    assert layout.size == CHAN_BITS
    assert layout["mult"].shape == signed(CHAN_MULT_BITS) and layout["shift"].shape == unsigned(CHAN_SHIFT_BITS)
    assert layout["offset"].shape == signed(arith.OFFSET_BITS)
    extremes = [(-MULT_MAX, 1, OFF_MIN), (MULT_MAX, 63, OFF_MAX), (0, 1, -1), (-1, 2 ** CHAN_SHIFT_BITS - 1, 0)]
    for mult, shift, offset in extremes:
        c = data.Const(layout, chan_word(mult, shift, offset))
        assert (c.mult, c.shift, c.offset) == (mult, shift, offset)


# --- ActQuantizer -----------------------------------------------------------------------------------

def expected_code(v, inv, shift, lo, hi):
    return int(np.clip(arith.round_shift(np.int64(v) * np.int64(inv), shift), lo, hi))


def quant_outputs(tag_bits, params, cases, seed=0, in_gaps=0.0, out_stalls=0.0):
    """``params``: (inv, shift, lo, hi); ``cases``: (v, tag). Returns [(code, tag)]."""
    dut = ActQuantizer(tag_bits)
    rng = np.random.default_rng(seed)
    inv, shift, lo, hi = params
    got = []

    async def producer(ctx):
        ctx.set(dut.inv, inv)
        ctx.set(dut.shift, shift)
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
    """Values over the whole VALUE_BITS range, at the extremes, and next to rounding boundaries
    ``(c + 1/2) * 2**shift / inv`` for codes c around [lo, hi] (exactly on them where one exists)."""
    inv, shift, lo, hi = params
    cases = []
    while len(cases) < n:
        r = rng.random()
        if r < 0.25:
            v = int(rng.integers(V_MIN, V_MAX + 1))
        elif r < 0.35:
            v = int(rng.choice([V_MIN, V_MAX, V_MIN + 1, V_MAX - 1, 0, 1, -1]))
        elif r < 0.65:
            c = int(rng.integers(lo - 3, hi + 4))
            half = (2 * c + 1) << (shift - 1)               # v * inv == half rounds up to c + 1
            v = half // inv + int(rng.integers(-2, 3))
        else:                                               # exactly on a tie, where there is one
            q = inv // math.gcd(inv, 1 << (shift - 1))      # v * inv == (2c + 1) * 2**(shift-1) needs q | 2c + 1
            odd = [m for m in range(2 * (lo - 3) + 1, 2 * (hi + 3) + 2, 2) if m % q == 0] if q % 2 else []
            if not odd:
                continue
            v = (int(rng.choice(odd)) << (shift - 1)) // inv
        if V_MIN <= v <= V_MAX:
            cases.append((v, int(rng.integers(0, 2 ** tag_bits))))
    return cases


def check_quant(cases, got, params):
    expected = [(expected_code(v, *params), tag) for v, tag in cases]
    bad = [(c, g, e) for c, g, e in zip(cases, got, expected) if g != e]
    assert len(got) == len(cases), f"{len(got)} outputs for {len(cases)} inputs"
    assert not bad, f"{len(bad)} mismatches of {len(cases)} with (inv, shift, lo, hi) = {params}, first " \
                    f"((v, tag), got, expected): {bad[:3]}"


QUANT_PARAMS = [
    # (inv, shift, lo, hi)
    (2 ** 28 - 1, 63, 0, 255),         # largest inv, largest shift: everything rounds to 0
    (2 ** 28 - 1, 44, 0, 255),
    (3 << 20, 30, 0, 255),             # small odd part: exact .5 points inside the code range
    (65536 * 5, 26, 3, 200),
    (1, 1, 0, 255),                    # shift 1: every odd v is an exact half
    (12345677, 40, 17, 17),            # lo == hi
    (98765, 24, 100, 130),
    (7, 3, 0, 15),
]


@pytest.mark.parametrize("params", QUANT_PARAMS, ids=[f"inv{p[0]}-sh{p[1]}-{p[2]}..{p[3]}" for p in QUANT_PARAMS])
def test_act_quantizer_random(params):
    inv, shift, lo, hi = params
    rng = np.random.default_rng(inv % 1000 + shift)
    cases = quant_cases(rng, 300, params, 7)
    got = quant_outputs(7, params, cases)
    check_quant(cases, got, params)
    halves = [v for v, _ in cases if (v * inv) % (1 << shift) == 1 << (shift - 1)
              and lo <= ((v * inv) >> shift) + 1 <= hi]
    if (inv, shift) in ((3 << 20, 30), (1, 1), (65536 * 5, 26), (7, 3)):
        assert len(halves) >= 10                         # exact ties resolved upward, unclipped
    codes = {g for g, _ in got}
    assert codes == {0} if shift == 63 else {lo, hi} <= codes   # both clip limits reached (or all round to 0)


def test_act_quantizer_is_asq_and_lsq():
    """The engine's two uses: ASQ (inv = inv_beta from the tables, shift = value_frac + 16, lo = 0)
    against asq_quantize, and plain quantization (inv = 2**16) against quantize_value."""
    rng = np.random.default_rng(11)
    _, inv_sig = arith.asq_tables("sigmoid")
    _, inv_exp = arith.asq_tables("exp")
    runs = []
    for inv, vf, qmax in [(int(inv_sig[0]), 8, 255), (int(inv_exp[-1]), 8, 15), (int(inv_exp[0]), 12, 255)]:
        assert 0 < inv < 2 ** arith.ASQ_TABLE_BITS
        params = (inv, vf + arith.ASQ_BETA_FRAC, 0, qmax)
        cases = quant_cases(rng, 60, params, 3)
        ref = [int(arith.asq_quantize(v, inv, vf, qmax)) for v, _ in cases]
        runs.append((params, cases, ref))
    for vf, lo, hi in [(8, 0, 255), (0, 2, 9), (arith.ASQ_VALUE_FRAC + 4, 0, 3)]:
        params = (1 << arith.ASQ_BETA_FRAC, vf + arith.ASQ_BETA_FRAC, lo, hi)
        cases = quant_cases(rng, 60, params, 3)
        ref = [int(arith.quantize_value(v, vf, lo, hi)) for v, _ in cases]
        runs.append((params, cases, ref))
    for params, cases, ref in runs:
        got = quant_outputs(3, params, cases)
        assert [g for g, _ in got] == ref, f"{params}"
        assert [t for _, t in got] == [t for _, t in cases]


def test_quant_reference_identities():
    """Torch-free: clip(round_shift(v * inv, shift), lo, hi) is asq_quantize with shift = value_frac + 16,
    and quantize_value with inv = 2**16; the RTL's folded rounding ((p >> (s-1)) + 1) >> 1 is round_shift."""
    rng = np.random.default_rng(5)
    n = 20000
    v = rng.integers(V_MIN, V_MAX + 1, size=n, dtype=np.int64)
    v[: n // 4] = rng.integers(-2 ** 12, 2 ** 12, size=n // 4)          # values that land in the code range
    for _ in range(20):
        inv = int(rng.integers(1, 2 ** arith.ASQ_TABLE_BITS))
        vf = int(rng.integers(0, 64 - arith.ASQ_BETA_FRAC))
        qmax = 2 ** int(rng.integers(2, 9)) - 1
        ours = np.clip(arith.round_shift(v * inv, vf + arith.ASQ_BETA_FRAC), 0, qmax)
        assert np.array_equal(ours, arith.asq_quantize(v, inv, vf, qmax))
        lo = int(rng.integers(0, CODE_MAX + 1))
        hi = int(rng.integers(lo, CODE_MAX + 1))
        ours = np.clip(arith.round_shift(v * (1 << arith.ASQ_BETA_FRAC), vf + arith.ASQ_BETA_FRAC), lo, hi)
        assert np.array_equal(ours, arith.quantize_value(v, vf, lo, hi))
    for _ in range(20):
        inv = int(rng.integers(1, 2 ** arith.ASQ_TABLE_BITS))
        s = int(rng.integers(1, 64))
        p = v * inv
        assert np.array_equal(((p >> (s - 1)) + 1) >> 1, arith.round_shift(p, s))
    # exact halves round up, also for negative products
    assert [int(arith.round_shift(x, 1)) for x in (-3, -1, 1, 3)] == [-1, 0, 1, 2]


@pytest.mark.parametrize("in_gaps,out_stalls", [(0.5, 0.0), (0.0, 0.7), (0.3, 0.5)])
def test_act_quantizer_back_pressure(in_gaps, out_stalls):
    rng = np.random.default_rng(int(10 * in_gaps) + int(100 * out_stalls))
    params = (3 << 20, 30, 5, 250)
    cases = quant_cases(rng, 150, params, 12)
    got = quant_outputs(12, params, cases, seed=9, in_gaps=in_gaps, out_stalls=out_stalls)
    check_quant(cases, got, params)
    assert len({t for _, t in got}) > 100                # tags really vary and stay attached


def test_act_quantizer_latency_and_stall():
    """Output valid after edge t + QUANT_LATENCY - 1; while o.valid & ~o.ready it holds and i.ready is low."""
    assert QUANT_LATENCY == 2
    dut = ActQuantizer(4)
    params = (1 << 16, 16 + 2, 0, 255)                   # code = round(v / 4)

    async def tb(ctx):
        for sig, val in zip((dut.inv, dut.shift, dut.lo, dut.hi), params):
            ctx.set(sig, val)
        ctx.set(dut.o.ready, 1)
        ctx.set(dut.i.valid, 1)
        ctx.set(dut.i.payload, {"v": 42, "tag": 9})
        assert ctx.get(dut.i.ready)
        await ctx.tick()                                 # edge t: accepted
        ctx.set(dut.i.valid, 0)
        for _ in range(QUANT_LATENCY - 2):
            assert not ctx.get(dut.o.valid)
            await ctx.tick()
        assert not ctx.get(dut.o.valid)
        await ctx.tick()                                 # edge t + LAT - 1
        assert ctx.get(dut.o.valid)
        assert (ctx.get(dut.o.payload.code), ctx.get(dut.o.payload.tag)) == (11, 9)    # 10.5 -> 11
        await ctx.tick()
        assert not ctx.get(dut.o.valid)
        # a stall: the output holds and i.ready drops while o.valid & ~o.ready
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
        ctx.set(dut.i.valid, 0)                          # v=1021 went in at the edge that raised o.valid
        ctx.set(dut.o.ready, 1)
        await ctx.tick()
        assert ctx.get(dut.o.valid)
        assert (ctx.get(dut.o.payload.code), ctx.get(dut.o.payload.tag)) == (255, 4)
        await ctx.tick()
        assert not ctx.get(dut.o.valid)

    run_sim(dut, tb)


# --- constructors -----------------------------------------------------------------------------------

def test_constructor_errors():
    for bad in (1, 0, -3, 49, 64, 2.0, "24", None):
        with pytest.raises(ValueError, match=r"acc_bits must be an integer in 2\.\.48"):
            ChannelRescale(bad)
    for bad in (0, -1, 1.0, "8", None):
        with pytest.raises(ValueError, match=r"tag_bits must be an integer >= 1"):
            ActQuantizer(bad)
    # rejected components are not reported as unused elaboratables
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for bad in (1, 49):
            with pytest.raises(ValueError):
                ChannelRescale(bad)
        with pytest.raises(ValueError):
            ActQuantizer(0)
        gc.collect()
    assert not [w for w in caught if "UnusedElaboratable" in w.category.__name__], [str(w.message) for w in caught]


def test_port_widths_and_extreme_widths_elaborate():
    """The documented port shapes, and the narrowest/widest accepted parameters elaborate."""
    for acc_bits in (2, 48):
        dut = ChannelRescale(acc_bits)
        assert dut.i.payload.acc.shape() == signed(acc_bits)
        assert dut.o.payload.shape().width == arith.VALUE_BITS and dut.o.payload.shape().signed
        assert len(dut.param_addr) == DESC_BITS and len(dut.beta) == arith.ASQ_TABLE_BITS
        Simulator(dut)
    q = ActQuantizer(1)
    assert len(q.o.payload.code) == CODE_MAX.bit_length() and len(q.o.payload.tag) == 1
    assert len(q.inv) == arith.ASQ_TABLE_BITS
    Simulator(q)
